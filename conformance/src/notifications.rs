//! Completion and abort notices as a real deployment delivers them: lost, late, duplicated
//! and reordered, under retention of 1 to 3 checkpoints and random mixes of full and
//! incremental checkpoints. The contract: whatever happens to notices, at most one checkpoint
//! attempt fails in a row (the next writes a new base), and every completed checkpoint
//! restores exactly the state it captured.
//!
//! Checkpoints go through the job's
//! [`CheckpointLifecycle`](flowstate_api::lifecycle::CheckpointLifecycle), so retention really
//! deletes the files of dropped checkpoints, as it does in production; a backend that builds
//! an incremental checkpoint on files that are gone is caught either by its own check before
//! uploading or by `complete()`, which refuses a manifest naming a missing file.

use std::collections::BTreeMap;

use flowstate_api::{CheckpointId, CheckpointStorage, SnapshotKind, StateBackendFactory};
use flowstate_runtime::CheckpointNotice;

use crate::dataset::{Job, Model};
use crate::fixtures::{max_parallelism, open_lifecycle, parallelism, Rng};
use crate::harness::{block_on, capture, create_operator, restore_operator, upload};

const KEY_SPACE: u64 = 300;
const ATTEMPTS: u64 = 18;

/// What happens to one notice on its way to the subtasks.
#[derive(Clone, Copy, Debug)]
enum Delivery {
    OnTime,
    Lost,
    /// Delivered at a later step, in random order with other late notices.
    Late,
    /// Delivered now and again later.
    Duplicated,
}

fn delivery(rng: &mut Rng) -> Delivery {
    match rng.below(10) {
        0..=3 => Delivery::OnTime,
        4..=5 => Delivery::Lost,
        6..=8 => Delivery::Late,
        _ => Delivery::Duplicated,
    }
}

/// Lost, late, duplicated and reordered notices never make more than one checkpoint attempt
/// in a row fail, and every retained checkpoint restores exactly (also at another
/// parallelism).
pub fn lost_and_reordered_notices_cost_at_most_one_attempt<F: StateBackendFactory>(factory: &F) {
    for retained in 1..=3usize {
        for seed in 0..3u64 {
            run_scenario(factory, retained, seed);
        }
    }
}

fn run_scenario<F: StateBackendFactory>(factory: &F, retained: usize, seed: u64) {
    let scenario = format!("retention {retained}, seed {seed}");
    let mut rng = Rng::new(0x6e07_1ce5 ^ (seed << 8) ^ retained as u64);
    let max = max_parallelism();
    let storage = CheckpointStorage::in_memory();
    let mut lifecycle = open_lifecycle(&storage, retained);
    let job = Job::new(create_operator(factory, max, parallelism(2)).expect("create operator"))
        .expect("bind states");
    let mut model = Model::default();
    let mut captured_models: BTreeMap<CheckpointId, Model> = BTreeMap::new();
    let mut late: Vec<CheckpointNotice> = Vec::new();
    let mut previous_failed: Option<CheckpointId> = None;
    let mut completed = 0;

    for _ in 0..ATTEMPTS {
        job.run_random(&mut model, &mut rng, 60, KEY_SPACE);
        // Some late notices arrive now, in random order.
        let mut still_late = Vec::new();
        while !late.is_empty() {
            let notice = late.swap_remove(rng.below(late.len() as u64) as usize);
            if rng.chance(50) {
                notify(&job, notice, &scenario);
            } else {
                still_late.push(notice);
            }
        }
        late = still_late;

        let kind = if rng.chance(30) {
            SnapshotKind::Full
        } else {
            SnapshotKind::Incremental
        };
        let id = lifecycle.begin();
        let outcome = capture(&job.subtasks, id, kind)
            .and_then(|captured| upload(&job.subtasks, captured, &storage, id))
            .and_then(|manifest| block_on(lifecycle.complete(manifest)));
        let notice = match outcome {
            Ok(_) => {
                captured_models.insert(id, model.clone());
                completed += 1;
                previous_failed = None;
                CheckpointNotice::Completed(id)
            }
            Err(e) => {
                if let Some(before) = previous_failed {
                    panic!(
                        "{scenario}: checkpoint {id} ({kind:?}) failed right after checkpoint {before} failed: {e}; a failed attempt must make the next one start a new base"
                    );
                }
                previous_failed = Some(id);
                block_on(lifecycle.abort(id))
                    .unwrap_or_else(|e| panic!("{scenario}: aborting checkpoint {id}: {e}"));
                CheckpointNotice::Aborted(id)
            }
        };
        match delivery(&mut rng) {
            Delivery::OnTime => notify(&job, notice, &scenario),
            Delivery::Lost => {}
            Delivery::Late => late.push(notice),
            Delivery::Duplicated => {
                notify(&job, notice, &scenario);
                notify(&job, notice, &scenario);
                late.push(notice);
            }
        }
    }
    assert!(
        completed >= ATTEMPTS / 2,
        "{scenario}: only {completed} of {ATTEMPTS} checkpoints completed"
    );

    // Every retained checkpoint restores exactly what it captured.
    for id in lifecycle.completed() {
        let manifest = lifecycle
            .manifest(id)
            .unwrap_or_else(|e| panic!("{scenario}: manifest of {id}: {e}"))
            .clone();
        let expected = &captured_models[&id];
        for p in [2, 3] {
            let restored = restore_operator(factory, &storage, &manifest, parallelism(p))
                .unwrap_or_else(|e| {
                    panic!("{scenario}: restoring retained checkpoint {id} at {p}: {e}")
                });
            let restored = Job::new(restored).expect("bind states");
            restored.assert_matches(
                expected,
                &format!("{scenario}: checkpoint {id} restored at parallelism {p}"),
            );
        }
    }
}

fn notify<B: flowstate_api::StateBackend + 'static>(
    job: &Job<B>,
    notice: CheckpointNotice,
    scenario: &str,
) {
    for subtask in &job.subtasks {
        subtask
            .notify(notice)
            .unwrap_or_else(|e| panic!("{scenario}: delivering {notice:?}: {e}"));
    }
}
