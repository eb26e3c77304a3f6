//! The restore path on a live backend: `apply_rows` applies rows in order.

use flowstate_api::{
    list_encoding, KeyContext, KeyedStateBackend, RowValue, StateBackendFactory, StateRow,
};

use super::set;
use crate::dataset::AllStates;
use crate::fixtures::{encoded, enumerated_ids, full_backend, key, max_parallelism, shared};

/// The restore path: `apply_rows` applies rows in order: `Value` sets, `List` replaces the
/// whole list, `MapEntry` puts one entry (keeping others), `Tombstone` clears (key, namespace).
pub fn apply_rows_in_order<F: StateBackendFactory>(factory: &F) {
    let max = max_parallelism();
    let backend = full_backend(factory);
    let states = AllStates::bind(shared(&backend)).unwrap();
    let (v, l, m) = (states.value.id(), states.list.id(), states.map.id());
    // Three keys of one key group: apply_rows takes one key group at a time.
    let kg = key(0).key_group();
    let same_group: Vec<u64> = (0..)
        .filter(|k| key(*k).key_group() == kg)
        .take(3)
        .collect();
    let (k1, k2, k3) = (key(same_group[0]), key(same_group[1]), key(same_group[2]));
    let ns = encoded(&1u32);
    // Existing state the rows must replace, keep or clear.
    states.list.add_all_in(&k1, &1, &[1, 2]).unwrap();
    states.map.put_in(&k1, &1, &"keep".into(), &1).unwrap();
    states.value.update_in(&k3, &1, &"gone".into()).unwrap();

    let list = list_encoding::encode([encoded(&7u32).as_slice(), encoded(&8u32).as_slice()]);
    let (s_first, s_second) = (
        encoded(&"first".to_string()),
        encoded(&"second".to_string()),
    );
    let (uk_new, uk_keep, uk_late) = (
        encoded(&"new".to_string()),
        encoded(&"keep".to_string()),
        encoded(&"late".to_string()),
    );
    let (n5, n6) = (encoded(&5u64), encoded(&6u64));
    fn row<'a>(
        state: flowstate_api::StateId,
        key: &'a KeyContext,
        namespace: &'a [u8],
        value: RowValue<'a>,
    ) -> StateRow<'a> {
        StateRow {
            state,
            key: key.key(),
            namespace,
            value,
        }
    }
    // Every row names a key of key group `kg`.
    let rows = [
        row(v, &k1, &ns, RowValue::Value(&s_first)),
        row(v, &k1, &ns, RowValue::Value(&s_second)),
        row(l, &k1, &ns, RowValue::List(&list)),
        row(
            m,
            &k1,
            &ns,
            RowValue::MapEntry {
                user_key: &uk_new,
                value: &n5,
            },
        ),
        row(
            m,
            &k2,
            &ns,
            RowValue::MapEntry {
                user_key: &uk_keep,
                value: &n5,
            },
        ),
        row(m, &k2, &ns, RowValue::Tombstone),
        row(
            m,
            &k2,
            &ns,
            RowValue::MapEntry {
                user_key: &uk_late,
                value: &n6,
            },
        ),
        row(v, &k3, &ns, RowValue::Tombstone),
        row(l, &k3, &ns, RowValue::Tombstone),
    ];
    backend.apply_rows(kg, &rows).unwrap();
    assert_eq!(
        states.value.get_in(&k1, &1).unwrap().as_deref(),
        Some("second"),
        "the last Value row wins"
    );
    assert_eq!(
        states.list.get_in(&k1, &1).unwrap(),
        Some(vec![7, 8]),
        "a List row replaces the list"
    );
    let mut entries = states.map.entries_in(&k1, &1).unwrap();
    entries.sort();
    assert_eq!(
        entries,
        vec![("keep".into(), 1), ("new".into(), 5)],
        "a MapEntry row adds one entry"
    );
    assert_eq!(
        states.map.entries_in(&k2, &1).unwrap(),
        vec![("late".into(), 6)],
        "a Tombstone clears what came before it, rows after it apply"
    );
    assert_eq!(
        states.value.get_in(&k3, &1).unwrap(),
        None,
        "a Tombstone clears a value"
    );
    assert_eq!(
        states.list.get_in(&k3, &1).unwrap(),
        None,
        "a Tombstone of an absent entry is a no-op"
    );
    assert_eq!(
        enumerated_ids(
            states.value.keys_in(&1).unwrap(),
            max,
            max.full_range(),
            "value"
        ),
        set([same_group[0]])
    );
}
