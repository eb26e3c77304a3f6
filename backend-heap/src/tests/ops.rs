//! Every operation of `KeyedStateBackend`, its edge cases and its errors.

use std::collections::BTreeSet;
use std::sync::Arc;

use flowstate_api::key_groups::key_group_for_key_bytes;
use flowstate_api::{
    Error, KeyContext, KeyGroup, KeyGroupRange, KeyedStateBackend, RowValue, SnapshotKind, StateId,
    StateKind,
};

use super::*;

#[test]
fn value_put_get_overwrite_remove_per_namespace() {
    let b = backend();
    let s = b.register_state(&meta("v", StateKind::Value)).unwrap();
    let k = key("alice");
    assert_eq!(b.get(s, &k, b"n1").unwrap(), None);
    b.put(s, &k, b"n1", b"one").unwrap();
    b.put(s, &k, b"n2", b"two").unwrap();
    assert_eq!(b.get(s, &k, b"n1").unwrap(), Some(b"one".to_vec()));
    b.put(s, &k, b"n1", b"uno, longer than before").unwrap();
    assert_eq!(
        b.get(s, &k, b"n1").unwrap(),
        Some(b"uno, longer than before".to_vec())
    );
    b.put(s, &k, b"n1", b"1").unwrap();
    assert_eq!(b.get(s, &k, b"n1").unwrap(), Some(b"1".to_vec()));
    // An empty value is a value, not an absence.
    b.put(s, &key("bob"), b"n1", b"").unwrap();
    assert_eq!(b.get(s, &key("bob"), b"n1").unwrap(), Some(vec![]));
    b.remove(s, &k, b"n1").unwrap();
    assert_eq!(b.get(s, &k, b"n1").unwrap(), None);
    assert_eq!(b.get(s, &k, b"n2").unwrap(), Some(b"two".to_vec()));
    // Removing what is absent is fine.
    b.remove(s, &k, b"n1").unwrap();
    b.remove(s, &key("nobody"), b"").unwrap();
    // Key and namespace boundaries are exact: ("ab","c") is not ("a","bc").
    let ab = KeyContext::new(b"ab".to_vec(), max());
    let a = KeyContext::new(b"a".to_vec(), max());
    b.put(s, &ab, b"c", b"x").unwrap();
    assert_eq!(b.get(s, &a, b"bc").unwrap(), None);
    assert_eq!(b.stats().entries, 3, "alice/n2, bob/n1, ab/c");
}

#[test]
fn reducing_and_aggregating_states_hold_one_value() {
    let b = backend();
    for kind in [StateKind::Reducing, StateKind::Aggregating] {
        let s = b.register_state(&meta(&format!("{kind}"), kind)).unwrap();
        b.put(s, &key("k"), b"", b"acc").unwrap();
        assert_eq!(b.get(s, &key("k"), b"").unwrap(), Some(b"acc".to_vec()));
        b.remove(s, &key("k"), b"").unwrap();
        assert_eq!(b.get(s, &key("k"), b"").unwrap(), None);
    }
}

#[test]
fn lists_keep_order_and_empty_is_absent() {
    let b = backend();
    let s = b.register_state(&meta("l", StateKind::List)).unwrap();
    let k = key("k");
    assert!(b.list_get(s, &k, b"").unwrap().is_empty());
    b.list_append(s, &k, b"", &[]).unwrap();
    assert!(
        b.keys(s, b"").unwrap().is_empty(),
        "appending nothing creates nothing"
    );
    assert_eq!(b.stats().entries, 0);
    b.list_append(s, &k, b"", &[b"a", b""]).unwrap();
    b.list_append(s, &k, b"", &[b"c"]).unwrap();
    assert_eq!(
        b.list_get(s, &k, b"").unwrap(),
        vec![b"a".to_vec(), vec![], b"c".to_vec()]
    );
    b.list_replace(s, &k, b"", &[b"x", b"y"]).unwrap();
    assert_eq!(
        b.list_get(s, &k, b"").unwrap(),
        vec![b"x".to_vec(), b"y".to_vec()]
    );
    b.list_append(s, &k, b"", &[b"z"]).unwrap();
    assert_eq!(b.list_get(s, &k, b"").unwrap().len(), 3);
    b.list_replace(s, &k, b"", &[]).unwrap();
    assert!(b.list_get(s, &k, b"").unwrap().is_empty());
    assert!(b.keys(s, b"").unwrap().is_empty());
    assert_eq!(b.stats().entries, 0, "a cleared list leaves nothing behind");
    b.list_replace(s, &k, b"", &[b"again"]).unwrap();
    b.remove(s, &k, b"").unwrap();
    assert!(b.list_get(s, &k, b"").unwrap().is_empty());
}

#[test]
fn maps_get_put_remove_entries_and_empty_is_absent() {
    let b = backend();
    let s = b.register_state(&meta("m", StateKind::Map)).unwrap();
    let k = key("k");
    assert!(b.map_is_empty(s, &k, b"").unwrap());
    assert!(b.map_entries(s, &k, b"").unwrap().is_empty());
    b.map_put(s, &k, b"", b"u1", b"v1").unwrap();
    b.map_put(s, &k, b"", b"u2", b"v2").unwrap();
    b.map_put(s, &k, b"", b"u1", b"v1b").unwrap();
    assert_eq!(b.map_get(s, &k, b"", b"u1").unwrap(), Some(b"v1b".to_vec()));
    assert!(b.map_contains(s, &k, b"", b"u2").unwrap());
    assert!(!b.map_contains(s, &k, b"", b"u3").unwrap());
    assert!(!b.map_is_empty(s, &k, b"").unwrap());
    assert_eq!(
        sorted_entries(&b, s, &k, b""),
        pairs(&[("u1", "v1b"), ("u2", "v2")])
    );
    b.map_remove(s, &k, b"", b"u1").unwrap();
    b.map_remove(s, &k, b"", b"missing").unwrap();
    assert_eq!(b.map_get(s, &k, b"", b"u1").unwrap(), None);
    b.map_remove(s, &k, b"", b"u2").unwrap();
    assert!(b.map_is_empty(s, &k, b"").unwrap());
    assert!(b.keys(s, b"").unwrap().is_empty());
    assert_eq!(b.stats().entries, 0, "an emptied map leaves nothing behind");
    b.map_put(s, &k, b"", b"u", b"v").unwrap();
    b.map_put(s, &k, b"other-ns", b"u", b"v").unwrap();
    b.remove(s, &k, b"").unwrap();
    assert!(b.map_is_empty(s, &k, b"").unwrap());
    assert_eq!(
        b.map_get(s, &k, b"other-ns", b"u").unwrap(),
        Some(b"v".to_vec())
    );
}

#[test]
fn keys_lists_non_empty_entries_of_a_namespace_with_their_key_groups() {
    let b = backend();
    let [v, l, m] = register(&b, VLM);
    let names: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        let ns: &[u8] = if i % 2 == 0 { b"even" } else { b"odd" };
        b.put(v, &key(n), ns, b"x").unwrap();
        b.list_append(l, &key(n), ns, &[b"e"]).unwrap();
        b.map_put(m, &key(n), ns, b"u", b"x").unwrap();
    }
    // Emptied entries are not reported.
    b.list_replace(l, &key("key-0"), b"even", &[]).unwrap();
    b.map_remove(m, &key("key-2"), b"even", b"u").unwrap();
    for state in [v, l, m] {
        let got = b.keys(state, b"even").unwrap();
        for ctx in &got {
            assert_eq!(ctx.key_group(), key_group_for_key_bytes(ctx.key(), max()));
        }
        let got: BTreeSet<Vec<u8>> = got.iter().map(|c| c.key().to_vec()).collect();
        let mut want: BTreeSet<Vec<u8>> = names
            .iter()
            .step_by(2)
            .map(|n| n.as_bytes().to_vec())
            .collect();
        if state == l {
            want.remove(b"key-0".as_slice());
        }
        if state == m {
            want.remove(b"key-2".as_slice());
        }
        assert_eq!(got, want, "state {state:?}");
    }
    assert!(b.keys(v, b"none").unwrap().is_empty());
    // An owned copy: remove every key while walking the list.
    for ctx in b.keys(v, b"odd").unwrap() {
        b.remove(v, &ctx, b"odd").unwrap();
        b.put(v, &ctx, b"moved", b"y").unwrap();
    }
    assert!(b.keys(v, b"odd").unwrap().is_empty());
    assert_eq!(b.keys(v, b"moved").unwrap().len(), 100);
}

/// A key whose group is outside `range`.
fn foreign_key(range: KeyGroupRange) -> KeyContext {
    (0..)
        .map(|i| key(&format!("probe-{i}")))
        .find(|k| !range.contains(k.key_group()))
        .unwrap()
}

#[test]
fn every_operation_checks_key_group_ownership() {
    let range = KeyGroupRange::new(0, 63).unwrap();
    let b = backend_with(range);
    let [v, l, m] = register(&b, VLM);
    let k = foreign_key(range);
    let not_owned = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::KeyGroupNotOwned { key_group, .. }) if key_group == k.key_group().get()),
            "{r:?}"
        )
    };
    not_owned(b.get(v, &k, b"").map(drop));
    not_owned(b.put(v, &k, b"", b"x"));
    not_owned(b.remove(v, &k, b""));
    not_owned(b.list_get(l, &k, b"").map(drop));
    not_owned(b.list_append(l, &k, b"", &[b"x"]));
    not_owned(b.list_append(l, &k, b"", &[]));
    not_owned(b.list_replace(l, &k, b"", &[b"x"]));
    not_owned(b.map_get(m, &k, b"", b"u").map(drop));
    not_owned(b.map_put(m, &k, b"", b"u", b"x"));
    not_owned(b.map_remove(m, &k, b"", b"u"));
    not_owned(b.map_entries(m, &k, b"").map(drop));
    not_owned(b.map_contains(m, &k, b"", b"u").map(drop));
    not_owned(b.map_is_empty(m, &k, b"").map(drop));
    let value = row(v, k.key(), RowValue::Value(b"x"));
    not_owned(b.apply_rows(k.key_group(), &[value]));
    assert_eq!(b.stats().entries, 0);
    let view = b.snapshot_view();
    assert!(view
        .for_each_row(KeyGroup::new(100, max()).unwrap(), &mut |_| Ok(()))
        .is_err());
}

#[test]
fn wrong_kinds_unknown_ids_and_registration() {
    let b = backend();
    let [v, l, m] = register(&b, VLM);
    let k = key("k");
    let unsupported = |r: Result<(), Error>, op: &str| {
        assert!(
            matches!(&r, Err(Error::UnsupportedOperation { operation, .. }) if *operation == op),
            "{op}: {r:?}"
        )
    };
    unsupported(b.put(l, &k, b"", b"x"), "put");
    unsupported(b.get(m, &k, b"").map(drop), "get");
    unsupported(b.list_append(v, &k, b"", &[b"x"]), "list_append");
    unsupported(b.list_get(m, &k, b"").map(drop), "list_get");
    unsupported(b.map_put(v, &k, b"", b"u", b"x"), "map_put");
    unsupported(b.map_get(l, &k, b"", b"u").map(drop), "map_get");
    let ghost = StateId(99);
    assert!(matches!(
        b.get(ghost, &k, b""),
        Err(Error::UnknownStateId { id: 99 })
    ));
    assert!(matches!(
        b.remove(ghost, &k, b""),
        Err(Error::UnknownStateId { id: 99 })
    ));
    assert!(matches!(
        b.keys(ghost, b""),
        Err(Error::UnknownStateId { id: 99 })
    ));
    // Registration is idempotent for compatible metadata and strict otherwise.
    assert_eq!(b.register_state(&meta("v", StateKind::Value)).unwrap(), v);
    assert!(matches!(
        b.register_state(&meta("v", StateKind::List)),
        Err(Error::StateKindMismatch { .. })
    ));
    let mut other_codec = meta("v", StateKind::Value);
    other_codec.value_codec = "other".into();
    assert!(matches!(
        b.register_state(&other_codec),
        Err(Error::StateCodecMismatch { .. })
    ));
    let names: Vec<String> = b
        .registered_states()
        .into_iter()
        .map(|(_, m)| m.name)
        .collect();
    assert_eq!(names, vec!["v", "l", "m"]);
}

#[test]
fn concurrent_registration_gives_usable_distinct_ids() {
    let b = Arc::new(backend());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        // Half the names are shared between threads.
                        let name = if i % 2 == 0 {
                            format!("shared-{i}")
                        } else {
                            format!("t{t}-{i}")
                        };
                        let id = b.register_state(&meta(&name, StateKind::Value)).unwrap();
                        b.put(id, &key("k"), b"", name.as_bytes()).unwrap();
                        (name, id)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_name = std::collections::BTreeMap::new();
    for t in threads {
        for (name, id) in t.join().unwrap() {
            assert_eq!(*by_name.entry(name.clone()).or_insert(id), id, "{name}");
        }
    }
    assert_eq!(by_name.len(), 25 + 4 * 25);
    for (name, id) in by_name {
        assert_eq!(b.get(id, &key("k"), b"").unwrap(), Some(name.into_bytes()));
    }
}

#[test]
fn apply_rows_applies_every_row_kind_in_order() {
    let b = backend();
    let [v, l, m] = register(&b, VLM);
    let k = key("k");
    let kg = k.key_group();
    // Start change tracking (an incremental checkpoint captured, its job dropped).
    drop(take(&b, 1, 0, SnapshotKind::Incremental));
    b.list_append(l, &k, b"", &[b"old"]).unwrap();
    b.map_put(m, &k, b"", b"stale", b"x").unwrap();
    let ab = list(&[b"a", b"b"]);
    let row = |state, value| super::row(state, k.key(), value);
    b.apply_rows(
        kg,
        &[
            row(v, RowValue::Value(b"1")),
            row(v, RowValue::Tombstone),
            row(v, RowValue::Value(b"2")),
            row(l, RowValue::List(&ab)),
            row(m, RowValue::Tombstone),
            row(
                m,
                RowValue::MapEntry {
                    user_key: b"u1",
                    value: b"x1",
                },
            ),
            row(
                m,
                RowValue::MapEntry {
                    user_key: b"u2",
                    value: b"x2",
                },
            ),
        ],
    )
    .unwrap();
    assert_eq!(b.get(v, &k, b"").unwrap(), Some(b"2".to_vec()));
    assert_eq!(
        b.list_get(l, &k, b"").unwrap(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        sorted_entries(&b, m, &k, b""),
        pairs(&[("u1", "x1"), ("u2", "x2")])
    );
    // An empty list row clears.
    b.apply_rows(kg, &[row(l, RowValue::List(&[]))]).unwrap();
    assert!(b.list_get(l, &k, b"").unwrap().is_empty());
    // Restore writes are not changes: they are the base.
    assert_eq!(
        b.stats().change_records,
        2,
        "only the list append and map put before it"
    );
}

#[test]
fn apply_rows_rejects_damaged_rows() {
    let b = backend();
    let [v, l] = register(&b, [("v", StateKind::Value), ("l", StateKind::List)]);
    let k = key("k");
    let kg = k.key_group();
    let truncated = [5u8, 0, 0, 0, b'a'];
    let r = b.apply_rows(kg, &[row(l, k.key(), RowValue::List(&truncated))]);
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    let r = b.apply_rows(kg, &[row(l, k.key(), RowValue::Value(b"x"))]);
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "value row for a list: {r:?}"
    );
    let elsewhere = (0..)
        .map(|i| key(&format!("other-{i}")))
        .find(|o| o.key_group() != kg)
        .unwrap();
    let r = b.apply_rows(kg, &[row(v, elsewhere.key(), RowValue::Value(b"x"))]);
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "key of another group: {r:?}"
    );
    assert!(b.list_get(l, &k, b"").unwrap().is_empty());
    assert_eq!(b.get(v, &elsewhere, b"").unwrap(), None);
}
