//! Overlapping and cancelled snapshots (Flink's `testParallelAsyncSnapshots`): a second
//! checkpoint captured while the first one's asynchronous job has not run; jobs run in either
//! order, or a checkpoint completes while the next one's job is still to run; the first
//! checkpoint completed, aborted, or cancelled (its job dropped without running). Each
//! completed checkpoint restores to the state at its own synchronous part, the next
//! checkpoints (full and incremental) are correct, and after garbage collection the storage
//! holds nothing but what the retained checkpoints reference.

use flowstate_api::lifecycle::{CheckpointLifecycle, CompletionReport};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, SnapshotKind, StateBackend,
    StateBackendFactory,
};
use flowstate_runtime::CheckpointNotice;

use crate::dataset::{Job, Model};
use crate::fixtures::{
    max_parallelism, open_lifecycle, parallelism, retained_paths, stored_paths, Rng,
};
use crate::harness::{
    block_on, capture, checkpoint_with_lifecycle, create_operator, upload, CapturedSubtask,
};
use crate::snapshots::restore_job;

const KEY_SPACE: u64 = 800;

/// In what order the two checkpoints' asynchronous jobs run and the first one is settled.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// B's job, A's job, then A and B settled in id order.
    BThenA,
    /// A's job, B's job, then A and B settled in id order.
    AThenB,
    /// A's job and A settled (backends notified) before B's job runs, as when a checkpoint
    /// completes while the next one still uploads.
    ASettledFirst,
}

/// What becomes of the first checkpoint, A.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Completed,
    Aborted,
    /// Its job is dropped without running (the task was cancelled), then it is aborted.
    Cancelled,
}

/// A job of two subtasks with a checkpoint lifecycle on in-memory storage. Retention keeps
/// every checkpoint, so each stays restorable and the leak check covers them all.
struct Setup<B> {
    storage: CheckpointStorage,
    lifecycle: CheckpointLifecycle,
    job: Job<B>,
    model: Model,
    rng: Rng,
}

fn setup<F: StateBackendFactory>(factory: &F, kind: SnapshotKind, seed: u64) -> Setup<F::Backend> {
    let storage = CheckpointStorage::in_memory();
    let lifecycle = open_lifecycle(&storage, 100);
    let job = Job::new(create_operator(factory, max_parallelism(), parallelism(2)).unwrap())
        .expect("bind the dataset");
    let mut s = Setup {
        storage,
        lifecycle,
        job,
        model: Model::default(),
        rng: Rng::new(seed),
    };
    s.job.run_random(&mut s.model, &mut s.rng, 1500, KEY_SPACE);
    // A completed first checkpoint: incremental A and B are then deltas on a base.
    checkpoint_with_lifecycle(&s.job.subtasks, &mut s.lifecycle, kind).expect("the base");
    s
}

fn notify<B: StateBackend + 'static>(job: &Job<B>, notice: CheckpointNotice) {
    for s in &job.subtasks {
        s.notify(notice)
            .unwrap_or_else(|e| panic!("notifying subtask {} of {notice:?}: {e}", s.index));
    }
}

impl<B: StateBackend + 'static> Setup<B> {
    fn run_job(&self, captured: Vec<CapturedSubtask>, id: CheckpointId) -> CheckpointManifest {
        upload(&self.job.subtasks, captured, &self.storage, id)
            .unwrap_or_else(|e| panic!("the job of checkpoint {id} failed: {e}"))
    }

    /// Completes (`Some`) or aborts checkpoint `id` and tells the backends.
    fn settle(&mut self, id: CheckpointId, manifest: Option<CheckpointManifest>) {
        match manifest {
            Some(manifest) => {
                block_on(self.lifecycle.complete(manifest))
                    .unwrap_or_else(|e| panic!("completing checkpoint {id}: {e}"));
                notify(&self.job, CheckpointNotice::Completed(id));
            }
            None => {
                block_on(self.lifecycle.abort(id))
                    .unwrap_or_else(|e| panic!("aborting checkpoint {id}: {e}"));
                notify(&self.job, CheckpointNotice::Aborted(id));
            }
        }
    }

    /// Checkpoints of `kinds` after more writes each: every one restores to the live model.
    fn checkpoints_go_on<F: StateBackendFactory<Backend = B>>(
        &mut self,
        factory: &F,
        kinds: &[SnapshotKind],
        what: &str,
    ) {
        for &kind in kinds {
            self.job
                .run_random(&mut self.model, &mut self.rng, 300, KEY_SPACE);
            let manifest = checkpoint_with_lifecycle(&self.job.subtasks, &mut self.lifecycle, kind)
                .unwrap_or_else(|e| panic!("{what}: the next {kind:?} checkpoint failed: {e}"));
            restore_job(factory, &self.storage, &manifest, 3).assert_matches(
                &self.model,
                &format!(
                    "{what}: {kind:?} checkpoint {} taken afterwards",
                    manifest.checkpoint_id
                ),
            );
        }
    }

    /// With nothing pending, garbage collection leaves exactly the retained checkpoints'
    /// files and manifests (and the lifecycle's own `_` objects).
    fn assert_nothing_leaks(&mut self, what: &str) {
        assert!(self.lifecycle.pending().is_empty(), "{what}: still pending");
        block_on(
            self.lifecycle
                .collect_garbage(&mut CompletionReport::default()),
        )
        .unwrap_or_else(|e| panic!("{what}: collecting garbage failed: {e}"));
        let referenced = retained_paths(&self.lifecycle);
        let stored = stored_paths(&self.storage);
        let leaked: Vec<&String> = stored.difference(&referenced).collect();
        let missing: Vec<&String> = referenced.difference(&stored).collect();
        assert!(
            leaked.is_empty() && missing.is_empty(),
            "{what}: files no retained checkpoint references: {leaked:?}; referenced files missing: {missing:?}"
        );
    }
}

fn overlapping<F: StateBackendFactory>(factory: &F, kind: SnapshotKind) {
    let orders = [Order::BThenA, Order::AThenB, Order::ASettledFirst];
    let fates = [Fate::Completed, Fate::Aborted, Fate::Cancelled];
    for (i, (order, fate)) in orders
        .iter()
        .flat_map(|o| fates.iter().map(move |f| (*o, *f)))
        .enumerate()
    {
        let what = format!("{kind:?} checkpoints A and B overlapping, {order:?}, A {fate:?}");
        let mut s = setup(factory, kind, 100 + i as u64);
        s.job.run_random(&mut s.model, &mut s.rng, 300, KEY_SPACE);
        let a = s.lifecycle.begin();
        let captured_a = capture(&s.job.subtasks, a, kind).expect("capture A");
        let model_a = s.model.clone();
        // B is captured while A's job has not run.
        s.job.run_random(&mut s.model, &mut s.rng, 300, KEY_SPACE);
        let b = s.lifecycle.begin();
        let captured_b = capture(&s.job.subtasks, b, kind).expect("capture B");
        let model_b = s.model.clone();
        // Writes after both synchronous parts belong to neither.
        s.job.run_random(&mut s.model, &mut s.rng, 300, KEY_SPACE);

        // A's job, unless cancelled: then it is dropped where it would have run.
        let run_a = |s: &Setup<F::Backend>, captured: Vec<CapturedSubtask>| match fate {
            Fate::Cancelled => {
                drop(captured);
                None
            }
            _ => Some(s.run_job(captured, a)),
        };
        let settle_a = |s: &mut Setup<F::Backend>, manifest: Option<CheckpointManifest>| {
            let completed = manifest.filter(|_| fate == Fate::Completed);
            s.settle(a, completed);
        };
        let manifest_b = match order {
            Order::BThenA => {
                let manifest_b = s.run_job(captured_b, b);
                let manifest_a = run_a(&s, captured_a);
                settle_a(&mut s, manifest_a);
                manifest_b
            }
            Order::AThenB => {
                let manifest_a = run_a(&s, captured_a);
                let manifest_b = s.run_job(captured_b, b);
                settle_a(&mut s, manifest_a);
                manifest_b
            }
            Order::ASettledFirst => {
                let manifest_a = run_a(&s, captured_a);
                settle_a(&mut s, manifest_a);
                s.run_job(captured_b, b)
            }
        };
        s.settle(b, Some(manifest_b.clone()));

        let visible = block_on(s.storage.list_checkpoints()).expect("list checkpoints");
        assert_eq!(
            visible.contains(&a),
            fate == Fate::Completed,
            "{what}: visibility of A"
        );
        if fate == Fate::Completed {
            let manifest_a = s.lifecycle.manifest(a).expect("A is retained").clone();
            restore_job(factory, &s.storage, &manifest_a, 2)
                .assert_matches(&model_a, &format!("{what}: A restored"));
        }
        for p in [2, 3] {
            restore_job(factory, &s.storage, &manifest_b, p)
                .assert_matches(&model_b, &format!("{what}: B restored at parallelism {p}"));
        }
        s.checkpoints_go_on(factory, &[kind, SnapshotKind::Incremental], &what);
        s.assert_nothing_leaks(&what);
    }
}

/// Full checkpoints A and B, B captured while A's job has not run: every order of the two
/// jobs, A completed, aborted or cancelled; each restores to its own point in time and the
/// next checkpoints are correct; nothing leaks.
pub fn overlapping_snapshots_full<F: StateBackendFactory>(factory: &F) {
    overlapping(factory, SnapshotKind::Full);
}

/// As [`overlapping_snapshots_full`] with incremental checkpoints: B's delta must not build
/// on A, which may never complete.
pub fn overlapping_snapshots_incremental<F: StateBackendFactory>(factory: &F) {
    overlapping(factory, SnapshotKind::Incremental);
}

fn cancelled<F: StateBackendFactory>(factory: &F, kind: SnapshotKind) {
    for (i, polled_never) in [false, true].into_iter().enumerate() {
        let what = if polled_never {
            format!("{kind:?} checkpoint whose upload future was dropped unpolled")
        } else {
            format!("{kind:?} checkpoint whose job was dropped without running")
        };
        let mut s = setup(factory, kind, 200 + i as u64);
        s.job.run_random(&mut s.model, &mut s.rng, 300, KEY_SPACE);
        let id = s.lifecycle.begin();
        let captured = capture(&s.job.subtasks, id, kind).expect("capture");
        if polled_never {
            let futures: Vec<_> = captured
                .into_iter()
                .map(|c| c.upload(s.storage.clone()))
                .collect();
            drop(futures);
        } else {
            drop(captured);
        }
        s.settle(id, None);
        // Both kinds next: an incremental one must not build on the cancelled checkpoint.
        s.checkpoints_go_on(
            factory,
            &[
                SnapshotKind::Incremental,
                SnapshotKind::Full,
                SnapshotKind::Incremental,
            ],
            &what,
        );
        assert!(
            !block_on(s.storage.list_checkpoints())
                .expect("list checkpoints")
                .contains(&id),
            "{what}: the cancelled checkpoint is visible"
        );
        s.assert_nothing_leaks(&what);
    }
}

/// A full checkpoint cancelled (its job dropped without running, or its upload future dropped
/// before its first poll) and aborted: the next full and incremental checkpoints restore
/// exactly and nothing leaks.
pub fn cancelled_snapshot_full<F: StateBackendFactory>(factory: &F) {
    cancelled(factory, SnapshotKind::Full);
}

/// As [`cancelled_snapshot_full`] for an incremental checkpoint (a delta on a completed base).
pub fn cancelled_snapshot_incremental<F: StateBackendFactory>(factory: &F) {
    cancelled(factory, SnapshotKind::Incremental);
}
