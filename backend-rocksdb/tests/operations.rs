//! Every keyed-state operation of the RocksDB backend, one test per operation family.

mod common;

use common::*;
use flowstate_api::{
    Error, KeyContext, KeyGroupRange, KeyedStateBackend, RowValue, StateBackendFactory, StateId,
    StateKind, StateRow,
};
use flowstate_conformance::fixtures::key;
use flowstate_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbResources};

fn backend() -> (RocksDbBackendFactory, flowstate_rocksdb::RocksDbBackend) {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let max = max();
    let b = factory.create(max, max.full_range()).unwrap();
    (factory, b)
}

#[test]
fn value_put_get_overwrite_remove() {
    let (_f, b) = backend();
    let s = b.register_state(&meta("v", StateKind::Value)).unwrap();
    let k = key(1);
    assert_eq!(b.get(s, &k, b"n").unwrap(), None);
    b.put(s, &k, b"n", b"one").unwrap();
    b.put(s, &k, b"n", b"two").unwrap();
    b.put(s, &k, b"m", b"").unwrap();
    assert_eq!(b.get(s, &k, b"n").unwrap(), Some(b"two".to_vec()));
    assert_eq!(
        b.get(s, &k, b"m").unwrap(),
        Some(Vec::new()),
        "empty value is present"
    );
    b.remove(s, &k, b"n").unwrap();
    assert_eq!(b.get(s, &k, b"n").unwrap(), None);
    assert_eq!(b.get(s, &k, b"m").unwrap(), Some(Vec::new()));
}

#[test]
fn list_appends_merge_in_order_through_flush_and_compaction() {
    let (_f, b) = backend();
    let s = b.register_state(&meta("l", StateKind::List)).unwrap();
    let k = key(2);
    assert!(b.list_get(s, &k, b"").unwrap().is_empty());
    b.list_append(s, &k, b"", &[b"a", b"b"]).unwrap();
    b.flush().unwrap();
    b.list_append(s, &k, b"", &[b""]).unwrap();
    b.list_append(s, &k, b"", &[]).unwrap();
    b.flush().unwrap();
    b.list_append(s, &k, b"", &[b"d"]).unwrap();
    let expected = vec![b"a".to_vec(), b"b".to_vec(), Vec::new(), b"d".to_vec()];
    assert_eq!(b.list_get(s, &k, b"").unwrap(), expected);
    b.compact().unwrap();
    assert_eq!(
        b.list_get(s, &k, b"").unwrap(),
        expected,
        "merge operands survive compaction"
    );
    b.list_replace(s, &k, b"", &[b"x"]).unwrap();
    assert_eq!(b.list_get(s, &k, b"").unwrap(), vec![b"x".to_vec()]);
    b.list_replace(s, &k, b"", &[]).unwrap();
    assert!(b.list_get(s, &k, b"").unwrap().is_empty());
    assert!(
        b.keys(s, b"").unwrap().is_empty(),
        "an empty list is absent"
    );
    b.list_append(s, &k, b"", &[b"y"]).unwrap();
    b.remove(s, &k, b"").unwrap();
    assert!(b.list_get(s, &k, b"").unwrap().is_empty());
}

#[test]
fn map_entries_contains_is_empty_and_clear() {
    let (_f, b) = backend();
    let s = b.register_state(&meta("m", StateKind::Map)).unwrap();
    let k = key(3);
    // A key whose bytes extend k's: its entries must never show up in k's map.
    let longer = KeyContext::with_key_group([k.key(), b"x".as_slice()].concat(), k.key_group());
    assert!(b.map_is_empty(s, &k, b"n").unwrap());
    b.map_put(s, &k, b"n", b"u1", b"v1").unwrap();
    b.map_put(s, &k, b"n", b"u2", b"").unwrap();
    b.map_put(s, &k, b"n", b"u1", b"v1b").unwrap();
    b.map_put(s, &longer, b"n", b"u9", b"other").unwrap();
    b.map_put(s, &k, b"n2", b"u1", b"elsewhere").unwrap();
    assert_eq!(
        b.map_get(s, &k, b"n", b"u1").unwrap(),
        Some(b"v1b".to_vec())
    );
    assert!(b.map_contains(s, &k, b"n", b"u2").unwrap());
    assert!(!b.map_contains(s, &k, b"n", b"u3").unwrap());
    let mut entries = b.map_entries(s, &k, b"n").unwrap();
    entries.sort();
    assert_eq!(
        entries,
        vec![
            (b"u1".to_vec(), b"v1b".to_vec()),
            (b"u2".to_vec(), Vec::new())
        ]
    );
    b.map_remove(s, &k, b"n", b"u1").unwrap();
    assert_eq!(b.map_get(s, &k, b"n", b"u1").unwrap(), None);
    b.remove(s, &k, b"n").unwrap();
    assert!(b.map_is_empty(s, &k, b"n").unwrap());
    assert_eq!(b.map_entries(s, &longer, b"n").unwrap().len(), 1);
    assert_eq!(b.map_entries(s, &k, b"n2").unwrap().len(), 1);
}

#[test]
fn keys_lists_each_non_empty_key_once_per_namespace() {
    let (_f, b) = backend();
    let m = b.register_state(&meta("m", StateKind::Map)).unwrap();
    let l = b.register_state(&meta("l", StateKind::List)).unwrap();
    for i in 0..200 {
        let k = key(i);
        b.map_put(m, &k, b"a", b"x", b"1").unwrap();
        b.map_put(m, &k, b"a", b"y", b"2").unwrap();
        if i % 2 == 0 {
            b.map_put(m, &k, b"b", b"x", b"1").unwrap();
            b.list_append(l, &k, b"a", &[b"e"]).unwrap();
        }
    }
    let a = b.keys(m, b"a").unwrap();
    assert_eq!(a.len(), 200);
    let distinct: std::collections::BTreeSet<_> = a.iter().map(|k| k.key().to_vec()).collect();
    assert_eq!(distinct.len(), 200);
    assert_eq!(b.keys(m, b"b").unwrap().len(), 100);
    assert_eq!(b.keys(m, b"c").unwrap().len(), 0);
    let lists = b.keys(l, b"a").unwrap();
    assert_eq!(lists.len(), 100);
    // The copy is owned: clearing while walking it is allowed.
    for k in &lists {
        b.remove(l, k, b"a").unwrap();
    }
    assert!(b.keys(l, b"a").unwrap().is_empty());
}

#[test]
fn every_operation_checks_the_key_group() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let max = max();
    let b = factory
        .create(max, KeyGroupRange::new(0, 63).unwrap())
        .unwrap();
    let v = b.register_state(&meta("v", StateKind::Value)).unwrap();
    let l = b.register_state(&meta("l", StateKind::List)).unwrap();
    let m = b.register_state(&meta("m", StateKind::Map)).unwrap();
    let foreign = (0..).map(key).find(|k| k.key_group().get() > 63).unwrap();
    let not_owned = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::KeyGroupNotOwned { .. })),
            "expected KeyGroupNotOwned, got {r:?}"
        )
    };
    not_owned(b.get(v, &foreign, b"").map(drop));
    not_owned(b.put(v, &foreign, b"", b"x"));
    not_owned(b.remove(v, &foreign, b""));
    not_owned(b.list_get(l, &foreign, b"").map(drop));
    not_owned(b.list_append(l, &foreign, b"", &[b"x"]));
    not_owned(b.list_replace(l, &foreign, b"", &[b"x"]));
    not_owned(b.map_get(m, &foreign, b"", b"u").map(drop));
    not_owned(b.map_put(m, &foreign, b"", b"u", b"x"));
    not_owned(b.map_remove(m, &foreign, b"", b"u"));
    not_owned(b.map_entries(m, &foreign, b"").map(drop));
    not_owned(b.map_contains(m, &foreign, b"", b"u").map(drop));
    not_owned(b.map_is_empty(m, &foreign, b"").map(drop));
    not_owned(b.apply_rows(foreign.key_group(), &[]));
}

#[test]
fn wrong_kind_and_unknown_state_are_errors() {
    let (_f, b) = backend();
    let v = b.register_state(&meta("v", StateKind::Value)).unwrap();
    let k = key(0);
    assert!(matches!(
        b.list_get(v, &k, b""),
        Err(Error::UnsupportedOperation {
            operation: "list_get",
            ..
        })
    ));
    assert!(matches!(
        b.map_put(v, &k, b"", b"u", b"x"),
        Err(Error::UnsupportedOperation { .. })
    ));
    assert!(matches!(
        b.get(StateId(9), &k, b""),
        Err(Error::UnknownStateId { id: 9 })
    ));
}

#[test]
fn registration_is_idempotent_and_checked() {
    let (_f, b) = backend();
    let a = b.register_state(&meta("a", StateKind::Value)).unwrap();
    let c = b.register_state(&meta("c", StateKind::Reducing)).unwrap();
    assert_eq!(b.register_state(&meta("a", StateKind::Value)).unwrap(), a);
    assert_ne!(a, c);
    assert!(matches!(
        b.register_state(&meta("a", StateKind::List)),
        Err(Error::StateKindMismatch { .. })
    ));
    let mut other_codec = meta("a", StateKind::Value);
    other_codec.value_codec = "postcard/u64".into();
    assert!(matches!(
        b.register_state(&other_codec),
        Err(Error::StateCodecMismatch { .. })
    ));
    assert_eq!(
        b.registered_states()
            .into_iter()
            .map(|(id, m)| (id, m.name))
            .collect::<Vec<_>>(),
        vec![(a, "a".to_string()), (c, "c".to_string())]
    );
    // Reducing state stores one value like value state.
    let k = key(5);
    b.put(c, &k, b"", b"acc").unwrap();
    assert_eq!(b.get(c, &k, b"").unwrap(), Some(b"acc".to_vec()));
}

#[test]
fn apply_rows_applies_in_order_with_tombstones() {
    let (_f, b) = backend();
    let v = b.register_state(&meta("v", StateKind::Value)).unwrap();
    let l = b.register_state(&meta("l", StateKind::List)).unwrap();
    let m = b.register_state(&meta("m", StateKind::Map)).unwrap();
    let k = key(7);
    b.map_put(m, &k, b"n", b"old", b"gone").unwrap();
    b.put(v, &k, b"n", b"old").unwrap();
    let list = flowstate_api::list_encoding::encode([b"p".as_slice(), b"q".as_slice()]);
    let row = |state, value| StateRow {
        state,
        key: k.key(),
        namespace: b"n",
        value,
    };
    b.apply_rows(
        k.key_group(),
        &[
            row(v, RowValue::Tombstone),
            row(l, RowValue::List(&list)),
            row(m, RowValue::Tombstone),
            row(
                m,
                RowValue::MapEntry {
                    user_key: b"new",
                    value: b"1",
                },
            ),
            row(v, RowValue::Value(b"first")),
            row(v, RowValue::Value(b"second")),
        ],
    )
    .unwrap();
    assert_eq!(b.get(v, &k, b"n").unwrap(), Some(b"second".to_vec()));
    assert_eq!(
        b.list_get(l, &k, b"n").unwrap(),
        vec![b"p".to_vec(), b"q".to_vec()]
    );
    assert_eq!(
        b.map_entries(m, &k, b"n").unwrap(),
        vec![(b"new".to_vec(), b"1".to_vec())]
    );
    // A row of the wrong kind is a corruption error; a malformed list too.
    assert!(matches!(
        b.apply_rows(k.key_group(), &[row(v, RowValue::List(&list))]),
        Err(Error::Corrupt { .. })
    ));
    assert!(b
        .apply_rows(k.key_group(), &[row(l, RowValue::List(&[9, 0, 0, 0]))])
        .is_err());
}

#[test]
fn backends_share_one_memory_budget_and_own_unique_directories() {
    let dir = tempfile::tempdir().unwrap();
    let resources = std::sync::Arc::new(
        RocksDbResources::new(RocksDbConfig {
            memory_bytes: 64 << 20,
            ..Default::default()
        })
        .unwrap(),
    );
    let factory = RocksDbBackendFactory::new(dir.path(), resources.clone()).unwrap();
    let max = max();
    let a = factory.create(max, max.full_range()).unwrap();
    let b = factory.create(max, max.full_range()).unwrap();
    assert_ne!(a.instance_dir(), b.instance_dir());
    assert!(a.instance_dir().starts_with(dir.path()));
    for backend in [&a, &b] {
        let s = backend
            .register_state(&meta("v", StateKind::Value))
            .unwrap();
        for i in 0..2000 {
            backend.put(s, &key(i), b"", &[7u8; 100]).unwrap();
        }
    }
    assert!(
        resources.write_buffer_usage() > 0,
        "memtables are charged to the shared manager"
    );
    assert!(resources.block_cache_usage() >= resources.write_buffer_usage());
    let a_dir = a.instance_dir().to_path_buf();
    drop(a);
    assert!(
        !a_dir.exists(),
        "the instance directory goes with the backend"
    );
    assert!(b.instance_dir().exists());
}
