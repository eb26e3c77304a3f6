//! Unit tests of the whole backend: operations, snapshots, restores, incremental checkpoints.

mod incremental;
mod ops;
mod snapshots;

use std::collections::BTreeMap;

use flowstate_api::{
    CheckpointId, KeyContext, KeyGroupRange, KeyedSnapshotView, KeyedStateBackend, RowValue,
    SnapshotJob, SnapshotKind, SnapshotRequest, StateBackend, StateId, StateKind, StateMetadata,
    StateRow,
};

use flowstate_conformance::fixtures::max_parallelism as max;

use crate::{HeapBackend, HeapConfig};

fn meta(name: &str, kind: StateKind) -> StateMetadata {
    StateMetadata {
        name: name.into(),
        kind,
        namespace_codec: "raw".into(),
        value_codec: "raw".into(),
        user_key_codec: (kind == StateKind::Map).then(|| "raw".into()),
    }
}

/// A value, a list and a map state, as most tests register them.
const VLM: [(&str, StateKind); 3] = [
    ("v", StateKind::Value),
    ("l", StateKind::List),
    ("m", StateKind::Map),
];

/// Registers `states` (name, kind) in order.
fn register<const N: usize>(b: &HeapBackend, states: [(&str, StateKind); N]) -> [StateId; N] {
    states.map(|(name, kind)| b.register_state(&meta(name, kind)).unwrap())
}

fn key(k: &str) -> KeyContext {
    KeyContext::new(k.as_bytes().to_vec(), max())
}

/// A row of `state` for `key` in the empty namespace.
fn row<'a>(state: StateId, key: &'a [u8], value: RowValue<'a>) -> StateRow<'a> {
    StateRow {
        state,
        key,
        namespace: b"",
        value,
    }
}

/// The entries of a map state's (key, namespace), sorted.
fn sorted_entries(
    b: &HeapBackend,
    state: StateId,
    key: &KeyContext,
    namespace: &[u8],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries = b.map_entries(state, key, namespace).unwrap();
    entries.sort();
    entries
}

/// (user key, value) pairs as `map_entries` returns them.
fn pairs(entries: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let bytes = |s: &str| s.as_bytes().to_vec();
    entries.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()
}

fn backend_with(range: KeyGroupRange) -> HeapBackend {
    HeapBackend::new(max(), range, HeapConfig::default()).unwrap()
}

fn backend() -> HeapBackend {
    backend_with(max().full_range())
}

/// Takes checkpoint `id`'s snapshot of subtask `subtask`.
fn take(b: &HeapBackend, id: u64, subtask: u32, kind: SnapshotKind) -> Box<dyn SnapshotJob> {
    b.snapshot(&SnapshotRequest {
        checkpoint_id: CheckpointId(id),
        subtask_index: subtask,
        kind,
    })
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A row with owned bytes, comparable.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Owned {
    Value(Vec<u8>),
    List(Vec<u8>),
    MapEntry(Vec<u8>, Vec<u8>),
    Tombstone,
}

type RowKey = (StateId, Vec<u8>, Vec<u8>);

fn owned(row: &StateRow<'_>) -> (RowKey, Owned) {
    let value = match row.value {
        RowValue::Value(v) => Owned::Value(v.to_vec()),
        RowValue::List(l) => Owned::List(l.to_vec()),
        RowValue::MapEntry { user_key, value } => {
            Owned::MapEntry(user_key.to_vec(), value.to_vec())
        }
        RowValue::Tombstone => Owned::Tombstone,
        other => panic!("a row kind the heap backend does not write: {other:?}"),
    };
    ((row.state, row.key.to_vec(), row.namespace.to_vec()), value)
}

/// Every row of a view, in visiting order, with the key group it came from.
fn rows_in_order(view: &dyn KeyedSnapshotView) -> Vec<(u32, RowKey, Owned)> {
    let mut out = Vec::new();
    for kg in view.key_group_range().iter() {
        view.for_each_row(kg, &mut |row| {
            let (k, v) = owned(&row);
            out.push((kg.get(), k, v));
            Ok(())
        })
        .unwrap();
    }
    out
}

/// The rows of a full view as a sorted multiset keyed by (state, key, namespace).
fn dump(view: &dyn KeyedSnapshotView) -> BTreeMap<RowKey, Vec<Owned>> {
    let mut out: BTreeMap<RowKey, Vec<Owned>> = BTreeMap::new();
    for (kg, k, v) in rows_in_order(view) {
        assert_eq!(
            flowstate_api::key_groups::key_group_for_key_bytes(&k.1, view.max_parallelism()).get(),
            kg,
            "row emitted under the wrong key group"
        );
        out.entry(k).or_default().push(v);
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn list(elements: &[&[u8]]) -> Vec<u8> {
    flowstate_api::list_encoding::encode(elements.iter().copied())
}
