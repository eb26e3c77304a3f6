//! Value state, `get_with` against `get`, and zero-byte encodings that are present values.

use flowstate_api::typed::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_api::{Error, KeyContext, KeyedStateBackend, StateBackendFactory};

use super::{ids, set};
use crate::fixtures::{full_backend, key, shared};

/// `get_with` hands its reader exactly what `get` returns (absent, present, empty, per
/// namespace, after overwrites and removal), calls it once, passes the reader's error on, and
/// refuses a list state as `get` does.
pub fn get_with_agrees_with_get<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let state = ValueStateDescriptor::<String>::new("value")
        .bind(shared(&backend))
        .unwrap();
    let id = state.id();
    let read = |k: &KeyContext, ns: &[u8]| {
        let mut seen = Vec::new();
        backend
            .get_with(id, k, ns, &mut |bytes| {
                seen.push(bytes.map(<[u8]>::to_vec));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen.len(), 1, "get_with calls its reader exactly once");
        let got = seen.remove(0);
        assert_eq!(
            got,
            backend.get(id, k, ns).unwrap(),
            "get_with and get agree"
        );
        got
    };
    let (a, b) = (key(1), key(2));
    assert_eq!(read(&a, b""), None);
    backend.put(id, &a, b"", b"x").unwrap();
    backend.put(id, &a, b"ns", b"").unwrap();
    assert_eq!(read(&a, b""), Some(b"x".to_vec()));
    assert_eq!(
        read(&a, b"ns"),
        Some(Vec::new()),
        "an empty value is present"
    );
    assert_eq!(read(&b, b""), None, "another key is untouched");
    backend.put(id, &a, b"", b"y").unwrap();
    assert_eq!(
        read(&a, b""),
        Some(b"y".to_vec()),
        "the latest write is read"
    );
    backend.remove(id, &a, b"").unwrap();
    assert_eq!(read(&a, b""), None, "a removed value is absent");
    assert_eq!(read(&a, b"ns"), Some(Vec::new()), "other namespaces stay");
    let failed = backend.get_with(id, &a, b"ns", &mut |_| {
        Err(Error::Config("the reader failed".into()))
    });
    assert!(
        matches!(failed, Err(Error::Config(_))),
        "the reader's error is returned: {failed:?}"
    );
    let list = ListStateDescriptor::<String>::new("list")
        .bind(shared(&backend))
        .unwrap();
    let mut called = false;
    let refused = backend.get_with(list.id(), &a, b"", &mut |_| {
        called = true;
        Ok(())
    });
    assert!(
        refused.is_err() && !called,
        "a list state is not read as a value"
    );
}

/// Value state: absent until updated, overwritten by updates, absent again after clear.
pub fn value_state<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let state = ValueStateDescriptor::<String>::new("value")
        .bind(shared(&backend))
        .unwrap();
    let (a, b) = (key(1), key(2));
    assert_eq!(
        state.get(&a).unwrap(),
        None,
        "a fresh value state is absent"
    );
    state.update(&a, &"one".to_string()).unwrap();
    assert_eq!(state.get(&a).unwrap().as_deref(), Some("one"));
    assert_eq!(state.get(&b).unwrap(), None, "another key is untouched");
    state.update(&a, &"uno".to_string()).unwrap();
    assert_eq!(
        state.get(&a).unwrap().as_deref(),
        Some("uno"),
        "update overwrites"
    );
    state.update(&b, &String::new()).unwrap();
    assert_eq!(ids(state.keys()), set([1, 2]));
    state.clear(&a).unwrap();
    assert_eq!(state.get(&a).unwrap(), None, "clear removes the value");
    assert_eq!(
        ids(state.keys()),
        set([2]),
        "a cleared key is not enumerated"
    );
    state.clear(&a).unwrap();
    state.clear(&key(3)).unwrap();
    assert_eq!(
        state.get(&key(3)).unwrap(),
        None,
        "clearing an absent key is a no-op"
    );
    state.update(&a, &"again".to_string()).unwrap();
    assert_eq!(
        state.get(&a).unwrap().as_deref(),
        Some("again"),
        "a cleared key can be set again"
    );
}

/// Values whose encoding is zero bytes are present values, not absence: a value of `()`, list
/// elements of `()`, a map entry with an empty user key and an empty value, and raw empty
/// byte strings written through the trait.
pub fn empty_encodings_are_present<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let k = key(7);
    let unit = ValueStateDescriptor::<()>::new("unit")
        .bind(shared(&backend))
        .unwrap();
    assert_eq!(unit.get(&k).unwrap(), None);
    unit.update(&k, &()).unwrap();
    assert_eq!(
        unit.get(&k).unwrap(),
        Some(()),
        "a value encoded as zero bytes is present"
    );
    assert_eq!(ids(unit.keys()), set([7]));

    let units = ListStateDescriptor::<()>::new("units")
        .bind(shared(&backend))
        .unwrap();
    units.add_all(&k, &[(), (), ()]).unwrap();
    assert_eq!(
        units.get(&k).unwrap(),
        Some(vec![(), (), ()]),
        "a list of zero-byte elements keeps every element"
    );
    assert_eq!(ids(units.keys()), set([7]));

    let map = MapStateDescriptor::<(), ()>::new("unit-map")
        .bind(shared(&backend))
        .unwrap();
    map.put(&k, &(), &()).unwrap();
    assert!(map.contains(&k, &()).unwrap());
    assert!(!map.is_empty(&k).unwrap());
    assert_eq!(map.entries(&k).unwrap(), vec![((), ())]);
    assert_eq!(ids(map.keys()), set([7]));

    let raw = ValueStateDescriptor::<u8>::new("raw-empty")
        .bind(shared(&backend))
        .unwrap();
    backend.put(raw.id(), &k, &[], &[]).unwrap();
    assert_eq!(
        backend.get(raw.id(), &k, &[]).unwrap(),
        Some(Vec::new()),
        "put of an empty byte string stores a present, empty value"
    );
    assert_eq!(ids(backend.keys(raw.id(), &[])), set([7]));
}
