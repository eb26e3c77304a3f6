//! Round trips of every kind through one checkpoint, and empty backends.

use flowstate_api::{
    CheckpointId, CheckpointStorage, KeyedStateBackend, SnapshotKind, StateBackendFactory,
};

use super::{assert_registered_dataset, new_job, KEY_SPACE};
use crate::dataset::{Job, Model, NAMESPACES};
use crate::fixtures::{max_parallelism, parallelism, Rng};
use crate::harness::{block_on, checkpoint, create_operator, restore_operator};

fn round_trip<F: StateBackendFactory>(factory: &F, kind: SnapshotKind) {
    let storage = CheckpointStorage::in_memory();
    let job = new_job(factory, 2);
    let mut model = Model::default();
    let mut rng = Rng::new(11);
    job.run_random(&mut model, &mut rng, 3000, KEY_SPACE);
    assert!(model.entry_count() > 1000, "the dataset is not trivial");
    let manifest = checkpoint(&job.subtasks, &storage, CheckpointId(1), kind).unwrap();
    assert_eq!(
        block_on(storage.list_checkpoints()).unwrap(),
        vec![CheckpointId(1)]
    );
    let restored = restore_operator(factory, &storage, &manifest, parallelism(2)).unwrap();
    for s in &restored {
        assert_registered_dataset(s.backend.as_ref(), "round trip");
    }
    let restored = Job::new(restored).unwrap();
    restored.assert_matches(&model, &format!("{kind:?} round trip"));
    job.assert_matches(&model, "the live backends after the checkpoint");
}

/// Every state kind, in three namespaces, survives a full checkpoint and restore at the same
/// parallelism; the restored backends know every state's metadata before it is bound again.
pub fn round_trip_full<F: StateBackendFactory>(factory: &F) {
    round_trip(factory, SnapshotKind::Full);
}

/// As [`round_trip_full`], with an incremental checkpoint (the first one: a base).
pub fn round_trip_incremental<F: StateBackendFactory>(factory: &F) {
    round_trip(factory, SnapshotKind::Incremental);
}

fn empty_backend<F: StateBackendFactory>(factory: &F, kind: SnapshotKind) {
    let storage = CheckpointStorage::in_memory();
    // Nothing registered at all.
    let subtasks = create_operator(factory, max_parallelism(), parallelism(2)).unwrap();
    let manifest = checkpoint(&subtasks, &storage, CheckpointId(1), kind).unwrap();
    let restored = restore_operator(factory, &storage, &manifest, parallelism(3)).unwrap();
    for s in &restored {
        assert!(
            s.backend.registered_states().is_empty(),
            "a backend restored from an empty snapshot knows no state"
        );
    }
    Job::new(restored)
        .unwrap()
        .assert_matches(&Model::default(), "restored from an empty snapshot");

    // States registered, written, then emptied again: nothing to restore but the metadata.
    let job = new_job(factory, 2);
    let mut model = Model::default();
    let mut rng = Rng::new(5);
    job.run_random(&mut model, &mut rng, 500, 200);
    checkpoint(&job.subtasks, &storage, CheckpointId(2), kind).unwrap();
    for &k in &model.touched.clone() {
        for ns in NAMESPACES {
            for action in [
                crate::dataset::Action::ValueClear,
                crate::dataset::Action::ListClear,
                crate::dataset::Action::MapClear,
                crate::dataset::Action::ReduceClear,
                crate::dataset::Action::AggClear,
            ] {
                let op = crate::dataset::Op { key: k, ns, action };
                job.apply(&op).unwrap();
                model.apply(&op);
            }
        }
    }
    assert_eq!(model.entry_count(), 0);
    let manifest = checkpoint(&job.subtasks, &storage, CheckpointId(3), kind).unwrap();
    for p in [1, 2] {
        let restored = restore_operator(factory, &storage, &manifest, parallelism(p)).unwrap();
        for s in &restored {
            assert_registered_dataset(s.backend.as_ref(), "restored from emptied states");
        }
        Job::new(restored).unwrap().assert_matches(
            &model,
            &format!("emptied states restored at parallelism {p}"),
        );
    }
}

/// A backend without state checkpoints and restores (at another parallelism too) to a
/// backend without state; states emptied after an earlier checkpoint restore empty, with
/// their metadata.
pub fn empty_backend_full<F: StateBackendFactory>(factory: &F) {
    empty_backend(factory, SnapshotKind::Full);
}

/// As [`empty_backend_full`] with incremental checkpoints (emptying is a delta of tombstones).
pub fn empty_backend_incremental<F: StateBackendFactory>(factory: &F) {
    empty_backend(factory, SnapshotKind::Incremental);
}
