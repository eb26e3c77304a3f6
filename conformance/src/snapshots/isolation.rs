//! Snapshot isolation: writes after a checkpoint's synchronous part are not in it, and a
//! snapshot taken while threads write is one point in time.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use flowstate_api::typed::{ListStateDescriptor, ValueStateDescriptor};
use flowstate_api::{CheckpointId, CheckpointStorage, SnapshotKind, StateBackendFactory};

use super::{new_job, restore_job, KEY_SPACE};
use crate::dataset::{Job, Model, NAMESPACES};
use crate::fixtures::{enumerated_ids, key, max_parallelism, parallelism, Rng};
use crate::harness::{capture, checkpoint, create_operator, publish, restore_operator, upload};

fn isolation<F: StateBackendFactory>(factory: &F, kind: SnapshotKind) {
    let storage = CheckpointStorage::in_memory();
    let job = new_job(factory, 2);
    let mut model = Model::default();
    let mut rng = Rng::new(31);
    job.run_random(&mut model, &mut rng, 1500, KEY_SPACE);
    // Incremental: make the isolated checkpoint a delta on a completed base.
    checkpoint(&job.subtasks, &storage, CheckpointId(1), kind).unwrap();
    job.run_random(&mut model, &mut rng, 300, KEY_SPACE);

    let captured = capture(&job.subtasks, CheckpointId(2), kind).unwrap();
    let at_snapshot = model.clone();

    // After the synchronous part: overwrite, clear and extend everything.
    job.run_random(&mut model, &mut rng, 1500, KEY_SPACE);
    let ns = NAMESPACES[0];
    for &k in &at_snapshot.touched {
        for op in [
            crate::dataset::Action::ValueClear,
            crate::dataset::Action::ListUpdate(Vec::new()),
            crate::dataset::Action::MapPut("after".into(), 1),
            crate::dataset::Action::ReduceAdd(1_000_000),
            crate::dataset::Action::AggClear,
        ] {
            let op = crate::dataset::Op {
                key: k,
                ns,
                action: op,
            };
            job.apply(&op).unwrap();
            model.apply(&op);
        }
    }

    let manifest = upload(&job.subtasks, captured, &storage, CheckpointId(2)).unwrap();
    publish(&job.subtasks, &storage, &manifest).unwrap();
    restore_job(factory, &storage, &manifest, 2).assert_matches(
        &at_snapshot,
        &format!("{kind:?} checkpoint taken before the writes"),
    );
    job.assert_matches(&model, "the live backends after the checkpoint");

    // The writes made during the upload belong to the next checkpoint.
    let manifest = checkpoint(&job.subtasks, &storage, CheckpointId(3), kind).unwrap();
    restore_job(factory, &storage, &manifest, 2).assert_matches(
        &model,
        &format!("{kind:?} checkpoint after the isolated one"),
    );
}

/// Writes, clears and removals made after a checkpoint's synchronous part (but before its
/// upload runs) do not appear in it; they appear in the next checkpoint.
pub fn isolation_full<F: StateBackendFactory>(factory: &F) {
    isolation(factory, SnapshotKind::Full);
}

/// As [`isolation_full`] for an incremental checkpoint (a delta on a completed base).
pub fn isolation_incremental<F: StateBackendFactory>(factory: &F) {
    isolation(factory, SnapshotKind::Incremental);
}

const COUNTER_KEY: u64 = u64::MAX;
const LOG_KEY: u64 = u64::MAX - 1;

fn snapshot_during_writes<F: StateBackendFactory>(factory: &F, kind: SnapshotKind) {
    let storage = CheckpointStorage::in_memory();
    let job =
        Job::new(create_operator(factory, max_parallelism(), parallelism(1)).unwrap()).unwrap();
    let backend = job.subtasks[0].keyed();
    let items = ValueStateDescriptor::<u64>::new("items");
    let counter = ValueStateDescriptor::<u64>::new("counter");
    let log = ListStateDescriptor::<u64>::new("log");
    {
        // A base holding some of the items already.
        let items = items.bind(backend.clone()).unwrap();
        for i in 0..200 {
            items.update(&key(1_000_000 + i), &i).unwrap();
        }
        checkpoint(&job.subtasks, &storage, CheckpointId(1), kind).unwrap();
    }

    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let appended = AtomicU64::new(0);
    let captured = std::thread::scope(|scope| {
        // Writer 1: item i, then the counter says i. Writer 2: appends i to one list.
        scope.spawn(|| {
            let items = items.bind(backend.clone()).unwrap();
            let counter = counter.bind(backend.clone()).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                items.update(&key(i), &i).unwrap();
                counter.update(&key(COUNTER_KEY), &i).unwrap();
                i += 1;
                written.store(i, Ordering::SeqCst);
            }
        });
        scope.spawn(|| {
            let log = log.bind(backend.clone()).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                log.add(&key(LOG_KEY), &i).unwrap();
                i += 1;
                appended.store(i, Ordering::SeqCst);
            }
        });
        // A writer that failed stops counting: give up (and stop the other) after a while
        // instead of waiting forever.
        let wait_for = |counter: &AtomicU64, at_least: u64| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while counter.load(Ordering::SeqCst) < at_least {
                if std::time::Instant::now() > deadline {
                    stop.store(true, Ordering::SeqCst);
                    panic!("the writers stopped making progress (did a write fail?)");
                }
                std::thread::yield_now();
            }
        };
        wait_for(&written, 500);
        wait_for(&appended, 500);
        let captured = capture(&job.subtasks, CheckpointId(2), kind);
        let (w, a) = (
            written.load(Ordering::SeqCst),
            appended.load(Ordering::SeqCst),
        );
        wait_for(&written, w + 500);
        wait_for(&appended, a + 500);
        stop.store(true, Ordering::SeqCst);
        captured
    });
    let captured = captured.unwrap();
    let manifest = upload(&job.subtasks, captured, &storage, CheckpointId(2)).unwrap();
    publish(&job.subtasks, &storage, &manifest).unwrap();
    let restored = restore_operator(factory, &storage, &manifest, parallelism(1)).unwrap();
    let restored = restored[0].keyed();
    let items = items.bind(restored.clone()).unwrap();
    let counter = counter.bind(restored.clone()).unwrap();
    let log = log.bind(restored).unwrap();

    let c = counter
        .get(&key(COUNTER_KEY))
        .unwrap()
        .expect("the writer had set the counter before the snapshot");
    let max = max_parallelism();
    let present: BTreeSet<u64> =
        enumerated_ids(items.keys().unwrap(), max, max.full_range(), "items")
            .into_iter()
            .filter(|k| *k < 1_000_000)
            .collect();
    let upto_c: BTreeSet<u64> = (0..=c).collect();
    let upto_next: BTreeSet<u64> = (0..=c + 1).collect();
    assert!(
        present == upto_c || present == upto_next,
        "{kind:?} snapshot taken during writes is not a point in time: the counter says {c} but items {:?}..{:?} ({} of them) are present",
        present.first(),
        present.last(),
        present.len()
    );
    for k in &present {
        assert_eq!(items.get(&key(*k)).unwrap(), Some(*k));
    }
    for i in 0..200 {
        assert_eq!(
            items.get(&key(1_000_000 + i)).unwrap(),
            Some(i),
            "items of the base"
        );
    }
    let total = written.load(Ordering::SeqCst);
    assert!(
        total > c + 2,
        "writes made after the snapshot ({total} items by the end) must not appear in it (counter {c})"
    );
    let logged = log.get(&key(LOG_KEY)).unwrap().unwrap_or_default();
    let n = logged.len() as u64;
    assert_eq!(
        logged,
        (0..n).collect::<Vec<_>>(),
        "the list is a prefix of the appends"
    );
    assert!(
        n < appended.load(Ordering::SeqCst),
        "appends made after the snapshot must not appear in it"
    );
}

/// A full checkpoint whose synchronous part is taken while two threads write: the restored
/// state is one point in time (a writer's items 0..=c are present when its counter says c;
/// a list holds a prefix of its appends) and holds nothing written after.
pub fn snapshot_during_writes_full<F: StateBackendFactory>(factory: &F) {
    snapshot_during_writes(factory, SnapshotKind::Full);
}

/// As [`snapshot_during_writes_full`] for an incremental checkpoint on a completed base.
pub fn snapshot_during_writes_incremental<F: StateBackendFactory>(factory: &F) {
    snapshot_during_writes(factory, SnapshotKind::Incremental);
}
