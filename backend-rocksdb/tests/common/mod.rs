//! Helpers shared by the integration tests: a deterministic data set of every state kind,
//! checkpoints driven as an engine drives them, and exact comparison against the data set.
#![allow(dead_code)]

use std::collections::BTreeSet;

use flowstate_api::{
    CheckpointId, CheckpointStorage, KeyContext, KeyGroupRange, KeyedStateBackend,
    KeyedStateHandle, SnapshotKind, SnapshotRequest, StateBackend, StateBackendFactory, StateId,
    StateKind,
};
pub use flowstate_conformance::fixtures::{max, meta};
use flowstate_conformance::fixtures::{range_of, raw_key};
use flowstate_rocksdb::{RocksDbBackend, RocksDbBackendFactory};

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Key `i` of the data set: the bytes `key-{i}`, at the fixtures' max parallelism (128).
pub fn key_of(i: usize) -> KeyContext {
    raw_key(format!("key-{i}"))
}

/// The states of the data set, registered in this order.
pub struct States {
    pub value: StateId,
    pub list: StateId,
    pub map: StateId,
}

pub fn register(b: &RocksDbBackend) -> States {
    States {
        value: b.register_state(&meta("value", StateKind::Value)).unwrap(),
        list: b.register_state(&meta("list", StateKind::List)).unwrap(),
        map: b.register_state(&meta("map", StateKind::Map)).unwrap(),
    }
}

pub const NAMESPACES: [&[u8]; 2] = [b"ns-a", b"ns-b"];

/// Writes keys `0..n` (those the backend owns) in both namespaces, every kind; `round`
/// changes the values so that a later round is distinguishable.
pub fn load(b: &RocksDbBackend, s: &States, n: usize, round: u32) {
    for i in 0..n {
        let k = key_of(i);
        if !b.key_group_range().contains(k.key_group()) {
            continue;
        }
        for ns in NAMESPACES {
            b.put(s.value, &k, ns, &value_of(i, ns, round)).unwrap();
            b.list_replace(s.list, &k, ns, &[]).unwrap();
            let elements = list_of(i, ns, round);
            let refs: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
            b.list_append(s.list, &k, ns, &refs[..1]).unwrap();
            b.list_append(s.list, &k, ns, &refs[1..]).unwrap();
            b.remove(s.map, &k, ns).unwrap();
            for (uk, v) in map_of(i, ns, round) {
                b.map_put(s.map, &k, ns, &uk, &v).unwrap();
            }
        }
    }
}

pub fn value_of(i: usize, ns: &[u8], round: u32) -> Vec<u8> {
    format!("v{i}-{}-{round}", String::from_utf8_lossy(ns)).into_bytes()
}

pub fn list_of(i: usize, ns: &[u8], round: u32) -> Vec<Vec<u8>> {
    (0..(i % 3 + 2))
        .map(|j| format!("e{i}-{j}-{}-{round}", ns.len()).into_bytes())
        .collect()
}

pub fn map_of(i: usize, ns: &[u8], round: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries: Vec<_> = (0..(i % 4 + 1))
        .map(|j| {
            (
                format!("u{j}").into_bytes(),
                format!("m{i}-{j}-{}-{round}", ns[3]).into_bytes(),
            )
        })
        .collect();
    entries.sort();
    entries
}

/// Checks that `b` holds exactly the data set's keys of its range, with round `round`'s
/// contents, and nothing else.
pub fn verify(b: &RocksDbBackend, s: &States, n: usize, round: u32) {
    let max = b.max_parallelism();
    let range = b.key_group_range();
    let owned: Vec<usize> = (0..n)
        .filter(|i| range.contains(key_of(*i).key_group()))
        .collect();
    let expected_keys: BTreeSet<Vec<u8>> =
        owned.iter().map(|i| key_of(*i).key().to_vec()).collect();
    for ns in NAMESPACES {
        for state in [s.value, s.list, s.map] {
            let got: Vec<KeyContext> = b.keys(state, ns).unwrap();
            for k in &got {
                assert_eq!(
                    k.key_group(),
                    KeyContext::new(k.key().to_vec(), max).key_group(),
                    "enumerated key carries its key group"
                );
            }
            let got: BTreeSet<Vec<u8>> = got.iter().map(|k| k.key().to_vec()).collect();
            assert_eq!(
                got, expected_keys,
                "keys of state {state:?} in {ns:?} for {range}"
            );
        }
        for &i in &owned {
            let k = key_of(i);
            assert_eq!(
                b.get(s.value, &k, ns).unwrap(),
                Some(value_of(i, ns, round))
            );
            assert_eq!(b.list_get(s.list, &k, ns).unwrap(), list_of(i, ns, round));
            let mut entries = b.map_entries(s.map, &k, ns).unwrap();
            entries.sort();
            assert_eq!(entries, map_of(i, ns, round));
        }
    }
}

/// Snapshot, upload, complete: one checkpoint of one backend.
pub fn checkpoint(
    b: &RocksDbBackend,
    storage: &CheckpointStorage,
    id: u64,
    subtask: u32,
    kind: SnapshotKind,
) -> KeyedStateHandle {
    let job = b
        .snapshot(&SnapshotRequest {
            checkpoint_id: CheckpointId(id),
            subtask_index: subtask,
            kind,
        })
        .unwrap();
    let handle = block_on(job.run(storage.clone())).unwrap();
    b.notify_checkpoint_complete(CheckpointId(id)).unwrap();
    handle
}

/// The key-group ranges of `p` subtasks at the fixtures' max parallelism.
pub fn ranges(p: u32) -> Vec<KeyGroupRange> {
    (0..p).map(|i| range_of(p, i)).collect()
}

/// Creates `p` subtasks, loads the data set, checkpoints each (checkpoint `id`).
pub fn loaded_operator(
    factory: &RocksDbBackendFactory,
    storage: &CheckpointStorage,
    p: u32,
    n: usize,
    kind: SnapshotKind,
) -> Vec<KeyedStateHandle> {
    ranges(p)
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let b = factory.create(max(), range).unwrap();
            let s = register(&b);
            load(&b, &s, n, 1);
            checkpoint(&b, storage, 1, i as u32, kind)
        })
        .collect()
}

/// Restores `p` new subtasks from `handles` and checks each holds exactly its key groups.
pub fn restore_and_verify(
    factory: &RocksDbBackendFactory,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    p: u32,
    n: usize,
) -> Vec<RocksDbBackend> {
    ranges(p)
        .into_iter()
        .map(|range| {
            let b = block_on(factory.restore(max(), range, storage, handles)).unwrap();
            let s = register(&b);
            verify(&b, &s, n, 1);
            b
        })
        .collect()
}
