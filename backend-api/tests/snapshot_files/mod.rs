//! Snapshot files for the tests of the read plan and the file checks: a canonical handle and
//! a chain with lineage, over max parallelism 8, and a backend that counts restored rows.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use flowstate_api::checkpoint::{CheckpointStorage, FileRef, KeyedStateHandle};
use flowstate_api::key_groups::key_group_for_key_bytes;
use flowstate_api::snapshot::craft::CraftedFile;
use flowstate_api::snapshot::{FileLineage, FileRow, SnapshotFileKind, SnapshotMetadata};
use flowstate_api::state::{KeyContext, StateId, StateKind, StateMetadata};
use flowstate_api::{
    CheckpointId, Error, KeyGroup, KeyGroupRange, KeyedStateBackend, MaxParallelism, Result,
    RowValue, StateRow,
};
use parking_lot::Mutex;

pub fn max() -> MaxParallelism {
    MaxParallelism::new(8).unwrap()
}

pub fn range(a: u32, b: u32) -> KeyGroupRange {
    KeyGroupRange::new(a, b).unwrap()
}

/// A key of each key group of max parallelism 8.
pub fn keys() -> BTreeMap<u32, Vec<u8>> {
    let mut keys = BTreeMap::new();
    for i in 0u32.. {
        let key = format!("key-{i}").into_bytes();
        keys.entry(key_group_for_key_bytes(&key, max()).get())
            .or_insert(key);
        if keys.len() == 8 {
            return keys;
        }
    }
    unreachable!("eight key groups have keys")
}

pub fn metadata(
    file_range: KeyGroupRange,
    kind: SnapshotFileKind,
    lineage: Option<FileLineage>,
) -> SnapshotMetadata {
    SnapshotMetadata {
        max_parallelism: max(),
        key_group_range: file_range,
        kind,
        states: vec![StateMetadata {
            name: "counts".into(),
            kind: StateKind::Value,
            namespace_codec: "ns".into(),
            value_codec: "u64".into(),
            user_key_codec: None,
        }],
        lineage,
    }
}

/// A file of `metadata` with one value row in each of `groups`, under key `key_of(group)`.
pub fn file_bytes(
    metadata: SnapshotMetadata,
    groups: &[u32],
    key_of: impl Fn(u32) -> Vec<u8>,
) -> Vec<u8> {
    let keys: Vec<(u32, Vec<u8>)> = groups.iter().map(|g| (*g, key_of(*g))).collect();
    let mut crafted = CraftedFile::new(metadata);
    for (group, key) in &keys {
        let row = FileRow {
            state_index: 0,
            key,
            namespace: b"",
            value: RowValue::Value(b"a value long enough to make blocks of some size"),
        };
        crafted = crafted.with_block(*group, &[row]);
    }
    crafted.encode().unwrap()
}

pub fn lineage(checkpoint: u64, previous: Option<&str>) -> Option<FileLineage> {
    Some(FileLineage {
        checkpoint_id: CheckpointId(checkpoint),
        previous: previous.map(str::to_string),
    })
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn put(storage: &CheckpointStorage, path: &str, bytes: Vec<u8>) -> FileRef {
    block_on(storage.put(path, Bytes::from(bytes), true)).unwrap()
}

/// A canonical handle of key groups [0, 3] (blocks 0, 1, 3) and a chain of [4, 7] (a base
/// with every block, a delta of 5 and 7), written at checkpoints 1 and 2.
pub fn checkpoint(storage: &CheckpointStorage) -> Vec<KeyedStateHandle> {
    let keys = keys();
    let key_of = |g: u32| keys[&g].clone();
    let canonical = put(
        storage,
        "shared/canonical.fsnap",
        file_bytes(
            metadata(range(0, 3), SnapshotFileKind::Full, lineage(1, None)),
            &[0, 1, 3],
            key_of,
        ),
    );
    let base = put(
        storage,
        "shared/base.fsnap",
        file_bytes(
            metadata(range(4, 7), SnapshotFileKind::Full, lineage(1, None)),
            &[4, 5, 6, 7],
            key_of,
        ),
    );
    let delta = put(
        storage,
        "shared/delta.fsnap",
        file_bytes(
            metadata(
                range(4, 7),
                SnapshotFileKind::Delta,
                lineage(2, Some("base.fsnap")),
            ),
            &[5, 7],
            key_of,
        ),
    );
    vec![
        KeyedStateHandle::Canonical {
            key_group_range: range(0, 3),
            file: canonical,
        },
        KeyedStateHandle::Changelog {
            key_group_range: range(4, 7),
            base,
            deltas: vec![delta],
        },
    ]
}

/// Owns `range` and counts the rows applied to it; nothing else.
pub struct RowCounter {
    range: KeyGroupRange,
    states: Mutex<Vec<StateMetadata>>,
    /// Rows applied, by key group.
    pub rows: Mutex<BTreeMap<u32, usize>>,
}

impl RowCounter {
    pub fn new(range: KeyGroupRange) -> Self {
        Self {
            range,
            states: Mutex::new(Vec::new()),
            rows: Mutex::new(BTreeMap::new()),
        }
    }
}

pub fn unused<T>() -> Result<T> {
    Err(Error::Config("not used by restore".into()))
}

impl KeyedStateBackend for RowCounter {
    fn max_parallelism(&self) -> MaxParallelism {
        max()
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
    fn register_state(&self, meta: &StateMetadata) -> Result<StateId> {
        let mut states = self.states.lock();
        let index = match states.iter().position(|s| s == meta) {
            Some(index) => index,
            None => {
                states.push(meta.clone());
                states.len() - 1
            }
        };
        Ok(StateId(index as u32))
    }
    fn registered_states(&self) -> Vec<(StateId, StateMetadata)> {
        (0u32..)
            .map(StateId)
            .zip(self.states.lock().clone())
            .collect()
    }
    fn get(&self, _: StateId, _: &KeyContext, _: &[u8]) -> Result<Option<Vec<u8>>> {
        unused()
    }
    fn put(&self, _: StateId, _: &KeyContext, _: &[u8], _: &[u8]) -> Result<()> {
        unused()
    }
    fn remove(&self, _: StateId, _: &KeyContext, _: &[u8]) -> Result<()> {
        unused()
    }
    fn list_get(&self, _: StateId, _: &KeyContext, _: &[u8]) -> Result<Vec<Vec<u8>>> {
        unused()
    }
    fn list_append(&self, _: StateId, _: &KeyContext, _: &[u8], _: &[&[u8]]) -> Result<()> {
        unused()
    }
    fn list_replace(&self, _: StateId, _: &KeyContext, _: &[u8], _: &[&[u8]]) -> Result<()> {
        unused()
    }
    fn map_get(&self, _: StateId, _: &KeyContext, _: &[u8], _: &[u8]) -> Result<Option<Vec<u8>>> {
        unused()
    }
    fn map_put(&self, _: StateId, _: &KeyContext, _: &[u8], _: &[u8], _: &[u8]) -> Result<()> {
        unused()
    }
    fn map_remove(&self, _: StateId, _: &KeyContext, _: &[u8], _: &[u8]) -> Result<()> {
        unused()
    }
    fn map_entries(&self, _: StateId, _: &KeyContext, _: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        unused()
    }
    fn keys(&self, _: StateId, _: &[u8]) -> Result<Vec<KeyContext>> {
        unused()
    }
    fn apply_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()> {
        *self.rows.lock().entry(key_group.get()).or_default() += rows.len();
        Ok(())
    }
}
