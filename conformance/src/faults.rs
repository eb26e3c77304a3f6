//! Storage faults: every call to the object store fails once, in turn, over a whole cycle
//! (checkpoints with shared files, retention, an aborted checkpoint, a restore, a reopen of
//! the lifecycle), both before the call takes effect and after (a lost response). Whatever
//! fails, the checkpoint `complete` last confirmed stays the newest one, every file a retained
//! checkpoint references exists with its size, and the newest restores exactly; a restore
//! that succeeds during the faults is exact too.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate_api::lifecycle::{CheckpointLifecycle, RetentionPolicy};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, SnapshotKind, StateBackend,
    StateBackendFactory,
};
use flowstate_runtime::CheckpointNotice;
use object_store::memory::InMemory;

use crate::dataset::{Job, Model};
use crate::fixtures::{max_parallelism, parallelism, FaultMode, FaultyStore, Rng, StoreOp};
use crate::harness::{block_on, capture, create_operator, restore_operator, upload};

const KEY_SPACE: u64 = 60;
const OPS_PER_ROUND: usize = 40;

/// What one cycle observed.
struct Cycle {
    /// The checkpoint `complete` confirmed last, with the model at that point.
    last_completed: Option<(CheckpointId, Model)>,
    /// Store calls the cycle made.
    calls: u64,
}

fn notify<B: StateBackend + 'static>(job: &Job<B>, notice: CheckpointNotice) {
    for s in &job.subtasks {
        s.notify(notice)
            .unwrap_or_else(|e| panic!("notifying {notice:?} failed: {e}"));
    }
}

/// Opens the lifecycle; a failure (the injected one) is retried once.
fn open(storage: &CheckpointStorage, what: &str) -> CheckpointLifecycle {
    let policy = RetentionPolicy {
        retained_checkpoints: 2,
    };
    block_on(CheckpointLifecycle::open(storage.clone(), policy.clone()))
        .or_else(|_| block_on(CheckpointLifecycle::open(storage.clone(), policy)))
        .unwrap_or_else(|e| panic!("{what}: opening the lifecycle failed twice: {e}"))
}

/// One checkpoint attempt: on any failure it is aborted (which may fail too) and the backends
/// are told so. Returns the id if `complete` confirmed it.
fn attempt<B: StateBackend + 'static>(
    job: &Job<B>,
    lifecycle: &mut CheckpointLifecycle,
    kind: SnapshotKind,
    abort_anyway: bool,
) -> Option<CheckpointId> {
    let id = lifecycle.begin();
    let captured = capture(&job.subtasks, id, kind).expect("capture touches no storage");
    let uploaded = upload(&job.subtasks, captured, lifecycle.storage(), id);
    let completed = match uploaded {
        Ok(manifest) if !abort_anyway => block_on(lifecycle.complete(manifest)).is_ok(),
        _ => false,
    };
    if completed {
        notify(job, CheckpointNotice::Completed(id));
        return Some(id);
    }
    // Err from complete means not published: abort it (failures are the injected fault).
    let _ = block_on(lifecycle.abort(id));
    notify(job, CheckpointNotice::Aborted(id));
    None
}

/// Restores `manifest` at parallelism 2 and checks it holds exactly `model`; a failing
/// restore is fine while faults are injected (`must_succeed` false).
fn check_restore<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    model: &Model,
    must_succeed: bool,
    what: &str,
) {
    match restore_operator(factory, storage, manifest, parallelism(2)) {
        Ok(subtasks) => Job::new(subtasks)
            .unwrap_or_else(|e| panic!("{what}: binding states after a restore failed: {e}"))
            .assert_matches(model, what),
        Err(e) if must_succeed => panic!("{what}: restoring the newest checkpoint failed: {e}"),
        Err(_) => {}
    }
}

fn run_cycle<F: StateBackendFactory>(
    factory: &F,
    store: &Arc<FaultyStore<InMemory>>,
    storage: &CheckpointStorage,
    what: &str,
) -> Cycle {
    let job = Job::new(create_operator(factory, max_parallelism(), parallelism(2)).unwrap())
        .unwrap_or_else(|e| panic!("{what}: binding states failed: {e}"));
    let mut model = Model::default();
    let mut rng = Rng::new(0xfa017);
    let mut lifecycle = open(storage, what);
    let mut last: Option<(CheckpointId, Model)> = None;
    let mut models: BTreeMap<CheckpointId, Model> = BTreeMap::new();
    let rounds = [
        (SnapshotKind::Incremental, false),
        (SnapshotKind::Incremental, false),
        (SnapshotKind::Incremental, true),
        (SnapshotKind::Full, false),
        (SnapshotKind::Incremental, false),
    ];
    for (round, (kind, abort)) in rounds.into_iter().enumerate() {
        job.run_random(&mut model, &mut rng, OPS_PER_ROUND, KEY_SPACE);
        if let Some(id) = attempt(&job, &mut lifecycle, kind, abort) {
            models.insert(id, model.clone());
            last = Some((id, model.clone()));
        }
        if round == 1 {
            if let Some(latest) = lifecycle.latest().cloned() {
                let id = latest.checkpoint_id;
                let expected = models.get(&id).unwrap_or_else(|| {
                    panic!(
                        "{what}: checkpoint {id} is the newest but complete() did not confirm it"
                    )
                });
                let at = format!("{what}: restore during the cycle");
                check_restore(factory, storage, &latest, expected, false, &at);
            }
        }
        if round == 3 {
            // A restart of the coordinator.
            drop(lifecycle);
            lifecycle = open(storage, what);
        }
    }
    Cycle {
        last_completed: last,
        calls: store.calls(),
    }
}

/// Checks the storage after a cycle, with faults off (see the module docs).
fn verify<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    cycle: &Cycle,
    what: &str,
) {
    let lifecycle = open(storage, what);
    assert!(
        lifecycle.skipped().is_empty(),
        "{what}: checkpoints became unreadable: {:?}",
        lifecycle.skipped()
    );
    let latest = lifecycle.latest().map(|m| m.checkpoint_id);
    let expected = cycle.last_completed.as_ref().map(|(id, _)| *id);
    assert_eq!(
        latest, expected,
        "{what}: the newest checkpoint is not the one complete() confirmed last"
    );
    for id in lifecycle.completed() {
        let manifest = block_on(storage.read_manifest(id))
            .unwrap_or_else(|e| panic!("{what}: the manifest of retained checkpoint {id}: {e}"));
        for file in manifest.files() {
            let size =
                block_on(storage.size_of(&file.path)).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                size,
                Some(file.size),
                "{what}: file {} of retained checkpoint {id} is gone or changed",
                file.path
            );
        }
    }
    if let (Some(manifest), Some((_, model))) = (lifecycle.latest(), &cycle.last_completed) {
        check_restore(factory, storage, manifest, model, true, what);
    }
}

/// Every store call of a cycle fails once, in turn, before and after taking effect: the
/// newest confirmed checkpoint survives intact and restores exactly (see the module docs).
pub fn storage_faults_never_lose_the_latest_checkpoint<F: StateBackendFactory>(factory: &F) {
    let fresh = || {
        let store = Arc::new(FaultyStore::new(InMemory::new()));
        let storage = CheckpointStorage::new(store.clone(), "root");
        (store, storage)
    };
    let (store, storage) = fresh();
    store.count(&StoreOp::ALL);
    let clean = run_cycle(factory, &store, &storage, "clean cycle");
    store.disarm();
    assert!(
        clean.last_completed.is_some(),
        "the clean cycle completed no checkpoint"
    );
    verify(factory, &storage, &clean, "clean cycle");
    for mode in [FaultMode::Before, FaultMode::After] {
        for k in 1..=clean.calls {
            let (store, storage) = fresh();
            store.fail_nth(k, &StoreOp::ALL, mode);
            let what = format!("store call {k} of {} failing {mode:?}", clean.calls);
            let cycle = run_cycle(factory, &store, &storage, &what);
            // A backend's call count may vary from run to run (RocksDB's background
            // compactions change which SST files a checkpoint uploads), so a cycle may end
            // before call k; a call the cycle did make must have failed.
            assert!(
                store.injected() == 1 || cycle.calls < k,
                "{what}: the cycle made {} store calls but the fault was never injected",
                cycle.calls
            );
            store.disarm();
            verify(factory, &storage, &cycle, &what);
        }
    }
}
