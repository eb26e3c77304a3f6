//! Chains of checkpoints: aborted and unconfirmed ones in a chain, and retention under a
//! lifecycle deleting only what no retained checkpoint needs.

use std::collections::BTreeMap;

use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, SnapshotKind, StateBackendFactory,
};

use super::{new_job, restore_job, KEY_SPACE};
use crate::dataset::Model;
use crate::fixtures::{open_lifecycle, Rng};
use crate::harness::{
    abort_with_lifecycle, block_on, checkpoint, checkpoint_aborted, checkpoint_pending,
    checkpoint_with_lifecycle,
};

fn checkpoint_chain<F: StateBackendFactory>(factory: &F, kind: SnapshotKind) {
    let storage = CheckpointStorage::in_memory();
    let job = new_job(factory, 2);
    let mut model = Model::default();
    let mut rng = Rng::new(23);
    let mut completed: Vec<(CheckpointManifest, Model)> = Vec::new();
    for round in 1..=8u64 {
        job.run_random(&mut model, &mut rng, 400, KEY_SPACE);
        let id = CheckpointId(round);
        match round {
            // Taken and uploaded, then aborted: never a base.
            3 => checkpoint_aborted(&job.subtasks, &storage, id, kind).unwrap(),
            // Published but never confirmed to the backends: not a base either, though it
            // stays restorable.
            5 => {
                let manifest = checkpoint_pending(&job.subtasks, &storage, id, kind).unwrap();
                completed.push((manifest, model.clone()));
            }
            _ => {
                let manifest = checkpoint(&job.subtasks, &storage, id, kind).unwrap();
                completed.push((manifest, model.clone()));
            }
        }
    }
    assert!(matches!(
        block_on(storage.read_manifest(CheckpointId(3))),
        Err(flowstate_api::Error::CheckpointNotFound { id: 3 })
    ));
    // Every checkpoint restores to the state at its own time, the oldest included.
    for (manifest, expected) in &completed {
        let restored = restore_job(factory, &storage, manifest, 2);
        restored.assert_matches(
            expected,
            &format!("{kind:?} chain, checkpoint {}", manifest.checkpoint_id),
        );
    }
    // A restored job continues the chain: its next checkpoints restore too.
    let (last, expected) = completed.last().unwrap();
    let mut model = expected.clone();
    let restored = restore_job(factory, &storage, last, 2);
    for round in 9..=10u64 {
        restored.run_random(&mut model, &mut rng, 300, KEY_SPACE);
        let manifest = checkpoint(&restored.subtasks, &storage, CheckpointId(round), kind).unwrap();
        restore_job(factory, &storage, &manifest, 2).assert_matches(
            &model,
            &format!("{kind:?} chain continued after a restore, checkpoint {round}"),
        );
    }
}

/// Eight full checkpoints with changes between them (one aborted after its upload, one never
/// confirmed): each completed checkpoint restores to the state at its own time, and a
/// restored job checkpoints on.
pub fn checkpoint_chain_full<F: StateBackendFactory>(factory: &F) {
    checkpoint_chain(factory, SnapshotKind::Full);
}

/// As [`checkpoint_chain_full`] with incremental checkpoints: deltas must carry every change
/// since the last *completed* checkpoint, including those of aborted or unconfirmed ones.
pub fn checkpoint_chain_incremental<F: StateBackendFactory>(factory: &F) {
    checkpoint_chain(factory, SnapshotKind::Incremental);
}

/// Incremental checkpoints under a retention of one and of two, with aborted checkpoints and
/// full ones in between: the files the lifecycle deletes (those no retained checkpoint
/// references) are never ones a later checkpoint builds on, so every checkpoint completes and
/// every retained checkpoint restores after every round. A backend whose incremental chain
/// outlives the checkpoints that reference it (e.g. deltas planned on a base only an expired
/// checkpoint referenced) fails here.
pub fn retention_keeps_needed_files<F: StateBackendFactory>(factory: &F) {
    for retained in [1, 2] {
        let storage = CheckpointStorage::in_memory();
        let mut lifecycle = open_lifecycle(&storage, retained);
        let job = new_job(factory, 2);
        let mut model = Model::default();
        let mut rng = Rng::new(59 + retained as u64);
        let mut models: BTreeMap<CheckpointId, Model> = BTreeMap::new();
        for round in 1..=12 {
            job.run_random(&mut model, &mut rng, 250, KEY_SPACE);
            if round % 4 == 0 {
                abort_with_lifecycle(&job.subtasks, &mut lifecycle, SnapshotKind::Incremental)
                    .unwrap();
                continue;
            }
            let kind = if round == 3 || round == 7 {
                SnapshotKind::Full
            } else {
                SnapshotKind::Incremental
            };
            let manifest = checkpoint_with_lifecycle(&job.subtasks, &mut lifecycle, kind)
                .unwrap_or_else(|e| {
                    panic!("retention {retained}: the {kind:?} checkpoint of round {round} failed: {e}")
                });
            models.insert(manifest.checkpoint_id, model.clone());
            for id in lifecycle.completed() {
                let manifest = lifecycle.manifest(id).unwrap().clone();
                restore_job(factory, &storage, &manifest, 2).assert_matches(
                    &models[&id],
                    &format!("retention {retained}: retained checkpoint {id} after round {round}"),
                );
            }
        }
    }
}
