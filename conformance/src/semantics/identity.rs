//! State identity and key-group ownership: states never see each other's entries,
//! re-registration returns the same state, and keys of another range are refused.

use flowstate_api::typed::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_api::{Error, KeyedStateBackend, RowValue, StateBackendFactory, StateKind, StateRow};

use super::{ids, set};
use crate::dataset::{dataset_metadata, AllStates};
use crate::fixtures::{
    backend_for, full_backend, key, keys_outside_range, max_parallelism, range_of, shared,
};

/// Two states (of the same or different kinds) never see each other's entries, even under
/// the same key and namespace, and clearing one leaves the other.
pub fn states_are_isolated<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let a = ValueStateDescriptor::<u32>::new("a")
        .bind(shared(&backend))
        .unwrap();
    let b = ValueStateDescriptor::<u32>::new("b")
        .bind(shared(&backend))
        .unwrap();
    let l = ListStateDescriptor::<u32>::new("l")
        .bind(shared(&backend))
        .unwrap();
    let m = MapStateDescriptor::<u32, u32>::new("m")
        .bind(shared(&backend))
        .unwrap();
    assert_ne!(a.id(), b.id(), "two names are two states");
    let k = key(1);
    a.update(&k, &1).unwrap();
    assert_eq!(b.get(&k).unwrap(), None, "b does not see a");
    b.update(&k, &2).unwrap();
    l.add(&k, &3).unwrap();
    m.put(&k, &4, &4).unwrap();
    a.update(&key(2), &9).unwrap();
    assert_eq!(a.get(&k).unwrap(), Some(1));
    assert_eq!(b.get(&k).unwrap(), Some(2));
    assert_eq!(ids(a.keys()), set([1, 2]));
    assert_eq!(ids(b.keys()), set([1]));
    a.clear(&k).unwrap();
    assert_eq!(b.get(&k).unwrap(), Some(2), "clearing a leaves b");
    assert_eq!(l.get(&k).unwrap(), Some(vec![3]));
    assert_eq!(m.get(&k, &4).unwrap(), Some(4));
    l.clear(&k).unwrap();
    assert_eq!(m.entries(&k).unwrap(), vec![(4, 4)], "clearing l leaves m");
    assert_eq!(ids(m.keys()), set([1]));
    assert!(l.keys().unwrap().is_empty());
}

/// Binding a descriptor twice gives the same state (same id, shared entries); the registry
/// lists every state once, in id order, with the descriptor's metadata.
pub fn reregistering_returns_same_state<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let first = AllStates::bind(shared(&backend)).unwrap();
    let again = AllStates::bind(shared(&backend)).unwrap();
    assert_eq!(first.value.id(), again.value.id());
    assert_eq!(first.list.id(), again.list.id());
    assert_eq!(first.map.id(), again.map.id());
    assert_eq!(first.reducing.id(), again.reducing.id());
    assert_eq!(first.aggregating.id(), again.aggregating.id());
    let k = key(3);
    first.value.update_in(&k, &0, &"x".into()).unwrap();
    assert_eq!(again.value.get_in(&k, &0).unwrap().as_deref(), Some("x"));
    again.reducing.add_in(&k, &0, 2).unwrap();
    first.reducing.add_in(&k, &0, 3).unwrap();
    assert_eq!(again.reducing.get_in(&k, &0).unwrap(), Some(5));

    let registered = backend.registered_states();
    assert_eq!(
        registered.len(),
        5,
        "each name is registered once: {registered:?}"
    );
    assert!(
        registered.windows(2).all(|w| w[0].0 < w[1].0),
        "registered states are in id order"
    );
    let metadata: Vec<_> = registered.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(metadata, dataset_metadata());
    let kinds: Vec<StateKind> = metadata.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        vec![
            StateKind::Value,
            StateKind::List,
            StateKind::Map,
            StateKind::Reducing,
            StateKind::Aggregating
        ]
    );
    assert_eq!(
        backend.register_state(&dataset_metadata()[2]).unwrap(),
        first.map.id()
    );
}

fn assert_not_owned<T: std::fmt::Debug>(result: flowstate_api::Result<T>, op: &str, kg: u32) {
    match result {
        Err(Error::KeyGroupNotOwned { key_group, .. }) => {
            assert_eq!(key_group, kg, "{op}: the error names the key group")
        }
        other => panic!("{op} on key group {kg}, outside the backend's range, returned {other:?} instead of KeyGroupNotOwned"),
    }
}

/// Every access with a key whose key group lies outside the backend's range fails with
/// `KeyGroupNotOwned` (the record was routed to the wrong subtask), and changes nothing.
pub fn key_group_not_owned<F: StateBackendFactory>(factory: &F) {
    let max = max_parallelism();
    let range = range_of(2, 0);
    let backend = backend_for(factory, range);
    let states = AllStates::bind(shared(&backend)).unwrap();
    let (v, l, m) = (states.value.id(), states.list.id(), states.map.id());
    let foreign = keys_outside_range(range, max, 0, 3);
    for k in foreign {
        let ctx = key(k);
        let kg = ctx.key_group().get();
        assert!(!range.contains(ctx.key_group()));
        assert_not_owned(backend.get(v, &ctx, &[]), "get", kg);
        assert_not_owned(
            backend.get_with(v, &ctx, &[], &mut |_| Ok(())),
            "get_with",
            kg,
        );
        assert_not_owned(backend.put(v, &ctx, &[], b"x"), "put", kg);
        assert_not_owned(backend.remove(v, &ctx, &[]), "remove", kg);
        assert_not_owned(backend.list_get(l, &ctx, &[]), "list_get", kg);
        assert_not_owned(
            backend.list_append(l, &ctx, &[], &[b"x"]),
            "list_append",
            kg,
        );
        assert_not_owned(
            backend.list_replace(l, &ctx, &[], &[b"x"]),
            "list_replace",
            kg,
        );
        assert_not_owned(backend.map_get(m, &ctx, &[], b"u"), "map_get", kg);
        assert_not_owned(backend.map_put(m, &ctx, &[], b"u", b"x"), "map_put", kg);
        assert_not_owned(backend.map_remove(m, &ctx, &[], b"u"), "map_remove", kg);
        assert_not_owned(backend.map_entries(m, &ctx, &[]), "map_entries", kg);
        assert_not_owned(backend.map_contains(m, &ctx, &[], b"u"), "map_contains", kg);
        assert_not_owned(backend.map_is_empty(m, &ctx, &[]), "map_is_empty", kg);
        assert_not_owned(states.reducing.add_in(&ctx, &0, 1), "reducing add", kg);
        assert_not_owned(states.aggregating.get_in(&ctx, &0), "aggregating get", kg);
        let row = StateRow {
            state: v,
            key: ctx.key(),
            namespace: &[],
            value: RowValue::Value(b"x"),
        };
        assert_not_owned(
            backend.apply_rows(ctx.key_group(), &[row]),
            "apply_rows",
            kg,
        );
    }
    for state in [v, l, m, states.reducing.id(), states.aggregating.id()] {
        assert!(
            backend.keys(state, &[]).unwrap().is_empty(),
            "rejected writes left nothing behind"
        );
    }
}
