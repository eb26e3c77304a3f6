//! Ranged reads on restore: one subtask of eight reads about an eighth of the bytes.

use std::collections::BTreeSet;
use std::sync::Arc;

use flowstate_api::typed::ValueStateDescriptor;
use flowstate_api::{
    CheckpointId, CheckpointStorage, KeyedStateBackend, KeyedStateHandle, SnapshotKind,
    StateBackendFactory,
};
use object_store::memory::InMemory;

use crate::fixtures::{
    enumerated_ids, full_backend, key, max_parallelism, parallelism, shared, CountingStore,
};
use crate::harness::checkpoint;

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
