//! Checkpoints and restores at an unchanged parallelism: round trips of every state kind,
//! chains of full and incremental checkpoints (with aborted and unconfirmed ones), snapshot
//! isolation (writes after the synchronous part never reach the checkpoint), consistency of a
//! snapshot taken while writers run, empty backends, ranged reads on restore, the layout of
//! canonical files, and retention of what incremental checkpoints share.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use flowstate_api::key_groups::key_group_for_key_bytes;
use flowstate_api::lifecycle::{CheckpointLifecycle, RetentionPolicy};
use flowstate_api::snapshot::{read_blocks, read_info, SnapshotFileKind};
use flowstate_api::typed::{ListStateDescriptor, ValueStateDescriptor};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, FileRef, KeyedStateBackend,
    KeyedStateHandle, RowValue, SnapshotKind, StateBackendFactory, StateMetadata,
};
use object_store::memory::InMemory;

use crate::dataset::{dataset_metadata, Job, Model, NAMESPACES};
use crate::fixtures::{
    enumerated_ids, full_backend, key, max_parallelism, parallelism, shared, CountingStore, Rng,
};
use crate::harness::{
    abort_with_lifecycle, block_on, capture, checkpoint, checkpoint_aborted, checkpoint_pending,
    checkpoint_with_lifecycle, create_operator, publish, restore_operator, upload,
};

/// Key space of the random datasets: a few hundred keys spread over every key group.
const KEY_SPACE: u64 = 800;

fn new_job<F: StateBackendFactory>(factory: &F, p: u32) -> Job<F::Backend> {
    Job::new(create_operator(factory, max_parallelism(), parallelism(p)).unwrap()).unwrap()
}

/// Restores `manifest` at parallelism `p` and binds the dataset's states.
pub(crate) fn restore_job<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    p: u32,
) -> Job<F::Backend> {
    let subtasks =
        restore_operator(factory, storage, manifest, parallelism(p)).unwrap_or_else(|e| {
            panic!(
                "restoring checkpoint {} at parallelism {p} failed: {e}",
                manifest.checkpoint_id
            )
        });
    Job::new(subtasks).unwrap()
}

fn assert_registered_dataset<B: KeyedStateBackend>(backend: &B, what: &str) {
    let registered: Vec<StateMetadata> = backend
        .registered_states()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    for meta in dataset_metadata() {
        assert!(
            registered.contains(&meta),
            "{what}: the restored backend does not know state '{}' as it was written ({meta:?}); it knows {registered:?}",
            meta.name
        );
    }
}

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

fn ranged_restore<F: StateBackendFactory>(factory: &F, kind: SnapshotKind) {
    const KEYS: u64 = 20_000;
    let counting = Arc::new(CountingStore::new(InMemory::new()));
    let storage = CheckpointStorage::new(counting.clone(), "root");
    let backend = full_backend(factory);
    let subtasks = vec![crate::harness::subtask_of(0, backend.clone())];
    let payload = ValueStateDescriptor::<String>::new("payload");
    let state = payload.bind(shared(&backend)).unwrap();
    let value_of = |k: u64, round: u64| format!("{k:>12}-{round}-{}", "x".repeat(90));
    for k in 0..KEYS {
        state.update(&key(k), &value_of(k, 0)).unwrap();
    }
    let mut manifest = checkpoint(&subtasks, &storage, CheckpointId(1), kind).unwrap();
    if kind == SnapshotKind::Incremental {
        for k in (0..KEYS).step_by(50) {
            state.update(&key(k), &value_of(k, 1)).unwrap();
        }
        manifest = checkpoint(&subtasks, &storage, CheckpointId(2), kind).unwrap();
    }
    let total: u64 = manifest
        .keyed_handles()
        .iter()
        .map(KeyedStateHandle::total_size)
        .sum();
    // Native snapshots (e.g. RocksDB SST files) are compressed and restored by whole files:
    // the byte-range bounds below are a property of the canonical key-group-ordered format.
    let native = manifest
        .keyed_handles()
        .iter()
        .any(|h| matches!(h, KeyedStateHandle::Native { .. }));
    if !native {
        assert!(
            total > 2_000_000,
            "the checkpoint holds the data ({total} bytes)"
        );
    }

    let p = parallelism(8);
    let index = 3;
    counting.reset();
    let restored = crate::harness::restore_subtask(factory, &storage, &manifest, p, index).unwrap();
    let (read, requests) = (counting.bytes_read(), counting.reads());
    let share = total / 8;
    eprintln!(
        "{kind:?} ranged restore of subtask {index} of 8: read {read} bytes in {requests} requests of {total} bytes stored (share {share})"
    );
    if native {
        assert!(
            read <= total + 64 * 1024,
            "a native restore read {read} bytes, more than the {total} bytes of its files: each file must be read at most once"
        );
    }
    assert!(
        native || read <= share + share / 2 + 64 * 1024,
        "restoring 1/8 of the key groups read {read} of {total} bytes: more than its share ({share}); restore must read only the target key groups' bytes"
    );
    assert!(
        native || read >= share / 2,
        "restoring 1/8 of the key groups read only {read} of {total} bytes, well below its share ({share})"
    );

    let range = restored.backend.key_group_range();
    let state = payload.bind(restored.keyed()).unwrap();
    let max = max_parallelism();
    let expected: BTreeSet<u64> = (0..KEYS)
        .filter(|k| range.contains(key(*k).key_group()))
        .collect();
    assert_eq!(
        enumerated_ids(state.keys().unwrap(), max, range, "payload"),
        expected
    );
    for &k in &expected {
        let round = u64::from(kind == SnapshotKind::Incremental && k % 50 == 0);
        assert_eq!(state.get(&key(k)).unwrap(), Some(value_of(k, round)));
    }
}

/// Restoring one subtask of 8 from a parallelism-1 full checkpoint of 20 000 keys reads only
/// about its share of the file (ranged reads through a counting object store).
pub fn ranged_restore_full<F: StateBackendFactory>(factory: &F) {
    ranged_restore(factory, SnapshotKind::Full);
}

/// As [`ranged_restore_full`] from an incremental checkpoint (base plus a delta).
pub fn ranged_restore_incremental<F: StateBackendFactory>(factory: &F) {
    ranged_restore(factory, SnapshotKind::Incremental);
}

/// The files of canonical-format handles (Native handles have none).
fn canonical_files(handle: &KeyedStateHandle) -> Vec<FileRef> {
    match handle {
        KeyedStateHandle::Canonical { file, .. } => vec![file.clone()],
        KeyedStateHandle::Changelog { base, deltas, .. } => std::iter::once(base.clone())
            .chain(deltas.iter().cloned())
            .collect(),
        KeyedStateHandle::Native { .. } => Vec::new(),
    }
}

/// Per state name: rows counted in the full files of one checkpoint.
type RowCounts = HashMap<String, usize>;

fn check_canonical_file(
    storage: &CheckpointStorage,
    file: &FileRef,
    handle_range: flowstate_api::KeyGroupRange,
    counts: &mut RowCounts,
    group_of_full: &mut BTreeSet<u32>,
) -> SnapshotFileKind {
    let max = max_parallelism();
    let info = block_on(read_info(storage, file))
        .unwrap_or_else(|e| panic!("reading the index of {}: {e}", file.path));
    assert_eq!(info.metadata.max_parallelism, max, "{}", file.path);
    assert_eq!(
        info.metadata.key_group_range, handle_range,
        "{}: range of the file",
        file.path
    );
    for meta in dataset_metadata() {
        assert!(
            info.metadata.states.contains(&meta),
            "{}: the metadata lacks state {meta:?}",
            file.path
        );
    }
    for pair in info.index.windows(2) {
        assert!(
            pair[0].key_group < pair[1].key_group,
            "{}: index not in key-group order",
            file.path
        );
        assert!(
            pair[0].offset + pair[0].length <= pair[1].offset,
            "{}: the block of key group {} does not come after the block of key group {}",
            file.path,
            pair[1].key_group,
            pair[0].key_group
        );
    }
    for entry in &info.index {
        assert!(handle_range.contains(entry.key_group));
        assert!(
            entry.length > 0,
            "{}: an empty block for key group {}",
            file.path,
            entry.key_group
        );
    }
    let kind = info.metadata.kind;
    let names: Vec<String> = info
        .metadata
        .states
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let mut list_rows = BTreeSet::new();
    block_on(read_blocks(
        storage,
        file,
        &info,
        &handle_range,
        |kg, rows| {
            assert!(
                !rows.is_empty(),
                "{}: key group {kg} has a block without rows",
                file.path
            );
            for row in rows {
                assert_eq!(
                    key_group_for_key_bytes(row.key, max),
                    kg,
                    "{}: a row of key group {} sits in the block of key group {kg}",
                    file.path,
                    key_group_for_key_bytes(row.key, max)
                );
                let name = names.get(row.state_index as usize).unwrap_or_else(|| {
                    panic!("{}: row names state {}", file.path, row.state_index)
                });
                if kind == SnapshotFileKind::Full {
                    assert!(
                        !matches!(row.value, RowValue::Tombstone),
                        "{}: a tombstone in a full file",
                        file.path
                    );
                    *counts.entry(name.clone()).or_default() += 1;
                    group_of_full.insert(kg.get());
                    if matches!(row.value, RowValue::List(_)) {
                        assert!(
                            list_rows.insert((
                                row.state_index,
                                row.key.to_vec(),
                                row.namespace.to_vec()
                            )),
                            "{}: two List rows for one (state, key, namespace)",
                            file.path
                        );
                    }
                }
            }
            Ok(())
        },
    ))
    .unwrap_or_else(|e| panic!("reading the blocks of {}: {e}", file.path));
    kind
}

fn count_owned<T>(m: &BTreeMap<(u64, u32), T>, owned: &impl Fn(&u64) -> bool) -> usize {
    m.keys().filter(|(k, _)| owned(k)).count()
}

/// Canonical files are key-group ordered and indexed: ascending, non-empty blocks inside the
/// handle's range, each holding only rows of its own key group; the metadata names every
/// state; a full file has one row per value, one List row per (key, namespace) and one row per
/// map entry, and a block for exactly the key groups that hold state. Deltas are marked as
/// such.
pub fn canonical_files_are_key_group_ordered<F: StateBackendFactory>(factory: &F) {
    let storage = CheckpointStorage::in_memory();
    let job = new_job(factory, 2);
    let mut model = Model::default();
    let mut rng = Rng::new(47);
    job.run_random(&mut model, &mut rng, 2500, KEY_SPACE);
    let mut checked_files = 0;
    for (id, kind) in [
        (1, SnapshotKind::Full),
        (2, SnapshotKind::Incremental),
        (3, SnapshotKind::Incremental),
    ] {
        if id > 1 {
            job.run_random(&mut model, &mut rng, 300, KEY_SPACE);
        }
        let manifest = checkpoint(&job.subtasks, &storage, CheckpointId(id), kind).unwrap();
        for (subtask, handle) in manifest.subtasks.iter().zip(manifest.keyed_handles()) {
            let range = subtask.key_group_range;
            assert_eq!(
                handle.key_group_range(),
                range,
                "the handle covers its subtask's range"
            );
            let mut counts = RowCounts::new();
            let mut groups = BTreeSet::new();
            let mut full_files = 0;
            for file in canonical_files(&handle) {
                if check_canonical_file(&storage, &file, range, &mut counts, &mut groups)
                    == SnapshotFileKind::Full
                {
                    full_files += 1;
                }
                checked_files += 1;
            }
            if id != 1 {
                continue;
            }
            // Checkpoint 1 is a full checkpoint: its one full file is the whole state.
            assert_eq!(
                full_files, 1,
                "a full checkpoint has one full file per subtask"
            );
            let owned = |k: &u64| range.contains(key(*k).key_group());
            let count = |name: &str| counts.get(name).copied().unwrap_or(0);
            assert_eq!(
                count("dataset-value"),
                count_owned(&model.value, &owned),
                "value rows"
            );
            assert_eq!(
                count("dataset-list"),
                count_owned(&model.list, &owned),
                "one List row per (key, namespace)"
            );
            let map_entries: usize = model
                .map
                .iter()
                .filter(|((k, _), _)| owned(k))
                .map(|(_, m)| m.len())
                .sum();
            assert_eq!(count("dataset-map"), map_entries, "one row per map entry");
            assert_eq!(
                count("dataset-reducing"),
                count_owned(&model.reducing, &owned),
                "reducing rows"
            );
            assert_eq!(
                count("dataset-aggregating"),
                count_owned(&model.aggregating, &owned),
                "aggregating rows"
            );
            let mut expected_groups = BTreeSet::new();
            for (k, _) in model
                .value
                .keys()
                .chain(model.list.keys())
                .chain(model.map.keys())
                .chain(model.reducing.keys())
                .chain(model.aggregating.keys())
            {
                if owned(k) {
                    expected_groups.insert(key(*k).key_group().get());
                }
            }
            assert_eq!(
                groups, expected_groups,
                "a block for exactly the key groups holding state"
            );
        }
    }
    if checked_files == 0 {
        eprintln!(
            "{}: no canonical-format handles were written (native snapshots only); file layout not checked",
            factory.name()
        );
    }
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
        let mut lifecycle = block_on(CheckpointLifecycle::open(
            storage.clone(),
            RetentionPolicy {
                retained_checkpoints: retained,
            },
        ))
        .unwrap();
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
