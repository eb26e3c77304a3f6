//! Unit tests of the whole backend: operations, snapshots, restores, incremental checkpoints.

mod incremental;
mod ops;
mod snapshots;

use std::collections::BTreeMap;

use flowstate_api::{
    KeyContext, KeyGroupRange, KeyedSnapshotView, MaxParallelism, RowValue, StateId, StateKind,
    StateMetadata, StateRow,
};

use crate::{HeapBackend, HeapConfig};

fn max() -> MaxParallelism {
    MaxParallelism::new(128).unwrap()
}

fn meta(name: &str, kind: StateKind) -> StateMetadata {
    StateMetadata {
        name: name.into(),
        kind,
        namespace_codec: "raw".into(),
        value_codec: "raw".into(),
        user_key_codec: (kind == StateKind::Map).then(|| "raw".into()),
    }
}

fn key(k: &str) -> KeyContext {
    KeyContext::new(k.as_bytes().to_vec(), max())
}

fn backend_with(range: KeyGroupRange) -> HeapBackend {
    HeapBackend::new(max(), range, HeapConfig::default()).unwrap()
}

fn backend() -> HeapBackend {
    backend_with(max().full_range())
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
