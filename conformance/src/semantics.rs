//! Flink's semantics of each keyed state kind, namespaces, enumeration, state identity and
//! key-group ownership, on a live backend (no checkpoint involved).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowstate_api::typed::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use flowstate_api::{
    list_encoding, Error, KeyContext, KeyedStateBackend, RowValue, StateBackendFactory, StateKind,
    StateRow,
};

use crate::dataset::{dataset_metadata, AllStates, Mean};
use crate::fixtures::{
    backend_for, encoded, enumerated_ids, full_backend, key, keys_in_range, keys_outside_range,
    max_parallelism, range_of, shared,
};

fn ids(keys: flowstate_api::Result<Vec<KeyContext>>) -> BTreeSet<u64> {
    let max = max_parallelism();
    enumerated_ids(keys.unwrap(), max, max.full_range(), "enumeration")
}

fn set(keys: impl IntoIterator<Item = u64>) -> BTreeSet<u64> {
    keys.into_iter().collect()
}

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

/// List state: insertion order, `add_all`, `update` replaces, and an empty list (after
/// `update(&[])`, `clear`, or a raw empty append/replace) reads as absent and is not
/// enumerated.
pub fn list_state<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let list = ListStateDescriptor::<u32>::new("list")
        .bind(shared(&backend))
        .unwrap();
    let (a, b, c) = (key(1), key(2), key(3));
    assert_eq!(list.get(&a).unwrap(), None, "a fresh list is absent");
    list.add(&a, &5).unwrap();
    list.add(&a, &3).unwrap();
    list.add_all(&a, &[9, 3, 1]).unwrap();
    assert_eq!(
        list.get(&a).unwrap(),
        Some(vec![5, 3, 9, 3, 1]),
        "insertion order, duplicates kept"
    );
    list.update(&b, &[7, 8]).unwrap();
    assert_eq!(list.get(&b).unwrap(), Some(vec![7, 8]));
    list.update(&a, &[2]).unwrap();
    assert_eq!(
        list.get(&a).unwrap(),
        Some(vec![2]),
        "update replaces the whole list"
    );
    assert_eq!(ids(list.keys()), set([1, 2]));

    list.update(&a, &[]).unwrap();
    assert_eq!(
        list.get(&a).unwrap(),
        None,
        "update with no elements clears"
    );
    assert_eq!(
        ids(list.keys()),
        set([2]),
        "an empty list is not enumerated"
    );
    list.clear(&b).unwrap();
    assert_eq!(list.get(&b).unwrap(), None, "clear removes the list");
    assert!(list.keys().unwrap().is_empty());
    list.add(&b, &4).unwrap();
    assert_eq!(
        list.get(&b).unwrap(),
        Some(vec![4]),
        "a cleared list starts afresh"
    );

    // Raw trait: appending nothing or replacing with nothing leaves the list absent.
    let id = list.id();
    backend.list_append(id, &c, &[], &[]).unwrap();
    assert!(backend.list_get(id, &c, &[]).unwrap().is_empty());
    assert_eq!(
        ids(list.keys()),
        set([2]),
        "an append of no elements creates no list"
    );
    backend.list_replace(id, &b, &[], &[]).unwrap();
    assert!(
        backend.list_get(id, &b, &[]).unwrap().is_empty(),
        "list_replace(&[]) clears"
    );
    assert!(
        list.keys().unwrap().is_empty(),
        "list_replace(&[]) leaves nothing to enumerate"
    );
    let e1 = encoded(&1u32);
    let e2 = encoded(&2u32);
    backend.list_append(id, &c, &[], &[&e1, &e2]).unwrap();
    backend.list_append(id, &c, &[], &[&e1]).unwrap();
    assert_eq!(
        backend.list_get(id, &c, &[]).unwrap(),
        vec![e1.clone(), e2.clone(), e1.clone()],
        "raw appends keep order across calls"
    );
    assert_eq!(list.get(&c).unwrap(), Some(vec![1, 2, 1]));
}

/// Map state: put/get/contains/remove/entries/user_keys/values/is_empty; removing the last
/// entry makes the map absent; user keys that prefix one another stay distinct.
pub fn map_state<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let map = MapStateDescriptor::<String, u64>::new("map")
        .bind(shared(&backend))
        .unwrap();
    let (a, b) = (key(10), key(11));
    let s = |x: &str| x.to_string();
    assert!(map.is_empty(&a).unwrap(), "a fresh map is empty");
    assert_eq!(map.get(&a, &s("x")).unwrap(), None);
    assert!(!map.contains(&a, &s("x")).unwrap());
    assert!(map.entries(&a).unwrap().is_empty());
    for (k, v) in [("", 0), ("a", 1), ("ab", 2), ("abc", 3), ("b", 4)] {
        map.put(&a, &s(k), &v).unwrap();
    }
    map.put(&a, &s("ab"), &20).unwrap();
    map.put(&b, &s("a"), &100).unwrap();
    assert_eq!(
        map.get(&a, &s("ab")).unwrap(),
        Some(20),
        "put overwrites an entry"
    );
    assert_eq!(
        map.get(&a, &s("")).unwrap(),
        Some(0),
        "the empty user key is a key"
    );
    assert!(map.contains(&a, &s("abc")).unwrap());
    assert!(!map.contains(&a, &s("abcd")).unwrap());
    assert!(!map.is_empty(&a).unwrap());
    let mut entries = map.entries(&a).unwrap();
    entries.sort();
    assert_eq!(
        entries,
        vec![
            (s(""), 0),
            (s("a"), 1),
            (s("ab"), 20),
            (s("abc"), 3),
            (s("b"), 4)
        ]
    );
    let mut user_keys = map.user_keys(&a).unwrap();
    user_keys.sort();
    assert_eq!(user_keys, vec![s(""), s("a"), s("ab"), s("abc"), s("b")]);
    let mut values = map.values(&a).unwrap();
    values.sort();
    assert_eq!(values, vec![0, 1, 3, 4, 20]);
    assert_eq!(
        map.entries(&b).unwrap(),
        vec![(s("a"), 100)],
        "maps of two keys are apart"
    );

    map.remove(&a, &s("ab")).unwrap();
    map.remove(&a, &s("not-there")).unwrap();
    assert_eq!(
        map.get(&a, &s("ab")).unwrap(),
        None,
        "remove drops one entry"
    );
    assert_eq!(
        map.get(&a, &s("abc")).unwrap(),
        Some(3),
        "and only that entry"
    );
    assert_eq!(map.entries(&a).unwrap().len(), 4);
    assert_eq!(ids(map.keys()), set([10, 11]));

    map.remove(&b, &s("a")).unwrap();
    assert!(
        map.is_empty(&b).unwrap(),
        "removing the last entry empties the map"
    );
    assert_eq!(ids(map.keys()), set([10]), "an empty map is not enumerated");

    map.clear(&a).unwrap();
    assert!(map.is_empty(&a).unwrap(), "clear removes every entry");
    assert!(map.entries(&a).unwrap().is_empty());
    assert!(map.keys().unwrap().is_empty());
    map.put(&a, &s("z"), &26).unwrap();
    assert_eq!(
        map.entries(&a).unwrap(),
        vec![(s("z"), 26)],
        "a cleared map starts afresh"
    );
}

/// Reducing state: `add` folds into the stored value as `reduce(stored, new)`.
pub fn reducing_state<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let sum = ReducingStateDescriptor::<i64>::new("sum", |a, b| a + b)
        .bind(shared(&backend))
        .unwrap();
    let k = key(4);
    assert_eq!(sum.get(&k).unwrap(), None);
    sum.add(&k, 5).unwrap();
    assert_eq!(
        sum.get(&k).unwrap(),
        Some(5),
        "the first add stores the value as is"
    );
    sum.add(&k, -2).unwrap();
    sum.add(&k, 10).unwrap();
    assert_eq!(sum.get(&k).unwrap(), Some(13), "later adds fold");
    sum.clear(&k).unwrap();
    assert_eq!(sum.get(&k).unwrap(), None);
    sum.add(&k, 1).unwrap();
    assert_eq!(
        sum.get(&k).unwrap(),
        Some(1),
        "after clear the fold restarts"
    );

    // Concatenation is associative but not commutative: the fold order is visible.
    let concat = ReducingStateDescriptor::<String>::new("concat", |a, b| a + &b)
        .bind(shared(&backend))
        .unwrap();
    for part in ["x", "y", "z"] {
        concat.add(&k, part.to_string()).unwrap();
    }
    assert_eq!(concat.get(&k).unwrap().as_deref(), Some("xyz"));
    assert_eq!(ids(concat.keys()), set([4]));
}

/// Aggregating state: `add` folds inputs into the accumulator, `get` reads the result.
pub fn aggregating_state<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let mean = AggregatingStateDescriptor::<i64, (i64, u64), i64>::new("mean", Mean)
        .bind(shared(&backend))
        .unwrap();
    let k = key(5);
    assert_eq!(mean.get(&k).unwrap(), None, "nothing added reads as absent");
    assert_eq!(
        mean.accumulator_in(&k, &flowstate_api::VoidNamespace)
            .unwrap(),
        None
    );
    for v in [10, 20, 60] {
        mean.add(&k, v).unwrap();
    }
    assert_eq!(mean.get(&k).unwrap(), Some(30));
    assert_eq!(
        mean.accumulator_in(&k, &flowstate_api::VoidNamespace)
            .unwrap(),
        Some((90, 3))
    );
    assert_eq!(ids(mean.keys()), set([5]));
    mean.clear(&k).unwrap();
    assert_eq!(mean.get(&k).unwrap(), None);
    mean.add(&k, 7).unwrap();
    assert_eq!(
        mean.get(&k).unwrap(),
        Some(7),
        "after clear a new accumulator starts"
    );
}

/// The same key in two namespaces holds two independent entries, for every kind; clearing
/// one leaves the other; enumeration is per namespace.
pub fn namespaces_isolate<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let states = AllStates::bind(shared(&backend)).unwrap();
    let (k, other) = (key(1), key(2));
    let (n1, n2) = (1u32, 70_000u32);
    states.value.update_in(&k, &n1, &"one".into()).unwrap();
    states.value.update_in(&k, &n2, &"two".into()).unwrap();
    states.list.add_all_in(&k, &n1, &[1, 1]).unwrap();
    states.list.add_in(&k, &n2, &2).unwrap();
    states.map.put_in(&k, &n1, &"k".into(), &1).unwrap();
    states.map.put_in(&k, &n2, &"k".into(), &2).unwrap();
    states.reducing.add_in(&k, &n1, 1).unwrap();
    states.reducing.add_in(&k, &n2, 2).unwrap();
    states.aggregating.add_in(&k, &n1, 10).unwrap();
    states.aggregating.add_in(&k, &n2, 20).unwrap();
    states
        .value
        .update_in(&other, &n2, &"other".into())
        .unwrap();

    assert_eq!(
        states.value.get_in(&k, &n1).unwrap().as_deref(),
        Some("one")
    );
    assert_eq!(
        states.value.get_in(&k, &n2).unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(
        states.value.get_in(&k, &0).unwrap(),
        None,
        "an unused namespace is empty"
    );
    assert_eq!(states.list.get_in(&k, &n1).unwrap(), Some(vec![1, 1]));
    assert_eq!(states.list.get_in(&k, &n2).unwrap(), Some(vec![2]));
    assert_eq!(
        states.map.entries_in(&k, &n1).unwrap(),
        vec![("k".into(), 1)]
    );
    assert_eq!(
        states.map.entries_in(&k, &n2).unwrap(),
        vec![("k".into(), 2)]
    );
    assert_eq!(states.reducing.get_in(&k, &n1).unwrap(), Some(1));
    assert_eq!(states.reducing.get_in(&k, &n2).unwrap(), Some(2));
    assert_eq!(states.aggregating.get_in(&k, &n1).unwrap(), Some(10));
    assert_eq!(states.aggregating.get_in(&k, &n2).unwrap(), Some(20));
    assert_eq!(ids(states.value.keys_in(&n1)), set([1]));
    assert_eq!(ids(states.value.keys_in(&n2)), set([1, 2]));
    assert!(states.value.keys_in(&0).unwrap().is_empty());

    states.value.clear_in(&k, &n1).unwrap();
    states.list.clear_in(&k, &n1).unwrap();
    states.map.clear_in(&k, &n1).unwrap();
    states.reducing.clear_in(&k, &n1).unwrap();
    states.aggregating.clear_in(&k, &n1).unwrap();
    assert_eq!(states.value.get_in(&k, &n1).unwrap(), None);
    assert_eq!(
        states.value.get_in(&k, &n2).unwrap().as_deref(),
        Some("two"),
        "clear is per namespace"
    );
    assert_eq!(states.list.get_in(&k, &n2).unwrap(), Some(vec![2]));
    assert_eq!(
        states.map.entries_in(&k, &n2).unwrap(),
        vec![("k".into(), 2)]
    );
    assert_eq!(states.reducing.get_in(&k, &n2).unwrap(), Some(2));
    assert_eq!(states.aggregating.get_in(&k, &n2).unwrap(), Some(20));
    for keys in [
        states.value.keys_in(&n1),
        states.list.keys_in(&n1),
        states.map.keys_in(&n1),
        states.reducing.keys_in(&n1),
        states.aggregating.keys_in(&n1),
    ] {
        assert!(
            keys.unwrap().is_empty(),
            "nothing is left in the cleared namespace"
        );
    }
    assert_eq!(ids(states.list.keys_in(&n2)), set([1]));
}

/// Key and namespace bytes are kept apart: (key [1], namespace [2, 3]), (key [1, 2],
/// namespace [3]) and (key [1, 2, 3], namespace []) are three entries, in every layout, and
/// map user keys do not bleed into namespaces either. Ordered stores that concatenate
/// key, namespace and user key without lengths fail here.
pub fn key_namespace_boundaries<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let max = max_parallelism();
    let states = AllStates::bind(shared(&backend)).unwrap();
    let splits: [(&[u8], &[u8]); 3] = [(&[1], &[2, 3]), (&[1, 2], &[3]), (&[1, 2, 3], &[])];
    let (value, list, map) = (states.value.id(), states.list.id(), states.map.id());
    for (i, (k, ns)) in splits.iter().enumerate() {
        let ctx = KeyContext::new(k.to_vec(), max);
        let tag = [i as u8];
        backend.put(value, &ctx, ns, &tag).unwrap();
        backend.list_append(list, &ctx, ns, &[&tag]).unwrap();
        backend.map_put(map, &ctx, ns, &[9], &tag).unwrap();
    }
    for (i, (k, ns)) in splits.iter().enumerate() {
        let ctx = KeyContext::new(k.to_vec(), max);
        let tag = vec![i as u8];
        assert_eq!(
            backend.get(value, &ctx, ns).unwrap(),
            Some(tag.clone()),
            "value of split {i}"
        );
        assert_eq!(
            backend.list_get(list, &ctx, ns).unwrap(),
            vec![tag.clone()],
            "list of split {i}"
        );
        assert_eq!(
            backend.map_entries(map, &ctx, ns).unwrap(),
            vec![(vec![9], tag.clone())],
            "map of split {i}"
        );
        let keys = backend.keys(value, ns).unwrap();
        assert_eq!(keys.len(), 1, "one key in namespace {ns:?}");
        assert_eq!(keys[0].key(), *k);
    }
    // A map entry (ns [5], user key [6, 7]) is not the entry (ns [5, 6], user key [7]).
    let ctx = KeyContext::new(vec![4], max);
    backend.map_put(map, &ctx, &[5], &[6, 7], b"a").unwrap();
    backend.map_put(map, &ctx, &[5, 6], &[7], b"b").unwrap();
    assert_eq!(
        backend.map_entries(map, &ctx, &[5]).unwrap(),
        vec![(vec![6, 7], b"a".to_vec())]
    );
    assert_eq!(
        backend.map_entries(map, &ctx, &[5, 6]).unwrap(),
        vec![(vec![7], b"b".to_vec())]
    );
    backend.remove(map, &ctx, &[5]).unwrap();
    assert!(backend.map_entries(map, &ctx, &[5]).unwrap().is_empty());
    assert_eq!(
        backend.map_get(map, &ctx, &[5, 6], &[7]).unwrap(),
        Some(b"b".to_vec()),
        "removing (key, [5]) leaves (key, [5, 6])"
    );
}

fn assert_merge_cleared_sources(keys: Vec<Vec<KeyContext>>, what: &str) {
    for k in keys {
        assert!(
            k.is_empty(),
            "{what}: a merged source namespace is still enumerated"
        );
    }
}

/// `merge_namespaces` of a list state: the target (absent before) gets the sources' elements
/// in source order, appended after its own once it has some; sources are cleared; a source
/// equal to the target and absent sources are ignored.
pub fn merge_namespaces_list<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let list = ListStateDescriptor::<u32>::new("windows")
        .with_namespace::<u32>()
        .bind(shared(&backend))
        .unwrap();
    let k = key(3);
    list.add_all_in(&k, &1, &[1, 2]).unwrap();
    list.add_all_in(&k, &2, &[3]).unwrap();
    assert_eq!(list.get_in(&k, &9).unwrap(), None);
    list.merge_namespaces(&k, &9, &[1, 5, 2]).unwrap();
    assert_eq!(
        list.get_in(&k, &9).unwrap(),
        Some(vec![1, 2, 3]),
        "target holds the sources in order"
    );
    assert_eq!(list.get_in(&k, &1).unwrap(), None, "source 1 is cleared");
    assert_eq!(list.get_in(&k, &2).unwrap(), None, "source 2 is cleared");
    assert_merge_cleared_sources(
        vec![list.keys_in(&1).unwrap(), list.keys_in(&2).unwrap()],
        "list",
    );
    list.add_in(&k, &4, &4).unwrap();
    list.merge_namespaces(&k, &9, &[9, 4]).unwrap();
    assert_eq!(
        list.get_in(&k, &9).unwrap(),
        Some(vec![1, 2, 3, 4]),
        "appended after the target's own"
    );
    assert_eq!(ids(list.keys_in(&9)), set([3]));
}

/// `merge_namespaces` of a reducing state folds the sources into the target and clears them.
pub fn merge_namespaces_reducing<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let sum = ReducingStateDescriptor::<i64>::new("window-sums", |a, b| a + b)
        .with_namespace::<u32>()
        .bind(shared(&backend))
        .unwrap();
    let k = key(8);
    sum.add_in(&k, &1, 10).unwrap();
    sum.add_in(&k, &2, 5).unwrap();
    sum.merge_namespaces(&k, &3, &[1, 2, 7]).unwrap();
    assert_eq!(
        sum.get_in(&k, &3).unwrap(),
        Some(15),
        "an absent target gets the fold of the sources"
    );
    assert_eq!(sum.get_in(&k, &1).unwrap(), None);
    assert_eq!(sum.get_in(&k, &2).unwrap(), None);
    assert_merge_cleared_sources(
        vec![sum.keys_in(&1).unwrap(), sum.keys_in(&2).unwrap()],
        "reducing",
    );
    sum.add_in(&k, &4, 1).unwrap();
    sum.merge_namespaces(&k, &3, &[4, 3]).unwrap();
    assert_eq!(
        sum.get_in(&k, &3).unwrap(),
        Some(16),
        "a present target folds the sources in"
    );
    assert_eq!(ids(sum.keys_in(&3)), set([8]));
}

/// `merge_namespaces` of an aggregating state merges the accumulators and clears the sources.
pub fn merge_namespaces_aggregating<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let mean = AggregatingStateDescriptor::<i64, (i64, u64), i64>::new("window-means", Mean)
        .with_namespace::<u32>()
        .bind(shared(&backend))
        .unwrap();
    let k = key(9);
    mean.add_in(&k, &1, 10).unwrap();
    mean.add_in(&k, &1, 20).unwrap();
    mean.add_in(&k, &2, 60).unwrap();
    assert_eq!(mean.accumulator_in(&k, &5).unwrap(), None);
    mean.merge_namespaces(&k, &5, &[1, 2]).unwrap();
    assert_eq!(mean.accumulator_in(&k, &5).unwrap(), Some((90, 3)));
    assert_eq!(mean.get_in(&k, &5).unwrap(), Some(30));
    assert_eq!(mean.accumulator_in(&k, &1).unwrap(), None);
    assert_eq!(mean.accumulator_in(&k, &2).unwrap(), None);
    assert_merge_cleared_sources(
        vec![mean.keys_in(&1).unwrap(), mean.keys_in(&2).unwrap()],
        "aggregating",
    );
    mean.add_in(&k, &6, 30).unwrap();
    mean.merge_namespaces(&k, &5, &[6]).unwrap();
    assert_eq!(mean.accumulator_in(&k, &5).unwrap(), Some((120, 4)));
}

/// `keys`/`keys_in` return exactly the keys holding state, across many key groups of a
/// backend owning a middle range, each with its key group; cleared and emptied keys are gone;
/// a state's enumeration ignores other states and other namespaces.
pub fn keys_enumeration<F: StateBackendFactory>(factory: &F) {
    let max = max_parallelism();
    let range = range_of(3, 1);
    let backend = backend_for(factory, range);
    let states = AllStates::bind(shared(&backend)).unwrap();
    let keys = keys_in_range(range, max, 0, 1500);
    let groups: BTreeSet<u32> = keys.iter().map(|k| key(*k).key_group().get()).collect();
    assert_eq!(
        groups.len() as u32,
        range.len(),
        "the keys cover every key group of the range"
    );

    let mut expected_value = BTreeSet::new();
    let mut expected_list = BTreeSet::new();
    let mut expected_map = BTreeSet::new();
    let mut expected_reducing = BTreeSet::new();
    let mut expected_aggregating_ns1 = BTreeSet::new();
    for (i, &k) in keys.iter().enumerate() {
        let ctx = key(k);
        states.value.update_in(&ctx, &0, &format!("v{k}")).unwrap();
        expected_value.insert(k);
        if i % 2 == 0 {
            states.list.add_in(&ctx, &0, &(i as u32)).unwrap();
            expected_list.insert(k);
        }
        if i % 3 == 0 {
            states.map.put_in(&ctx, &0, &"m".into(), &1).unwrap();
            expected_map.insert(k);
        }
        if i < keys.len() / 2 {
            states.reducing.add_in(&ctx, &0, 1).unwrap();
            expected_reducing.insert(k);
        }
        if i % 5 == 0 {
            states.aggregating.add_in(&ctx, &1, 1).unwrap();
            expected_aggregating_ns1.insert(k);
        }
    }
    // Take some away by every route: clear, update to empty, removing the last map entry.
    for (i, &k) in keys.iter().enumerate().filter(|(i, _)| i % 7 == 0) {
        let ctx = key(k);
        states.value.clear_in(&ctx, &0).unwrap();
        expected_value.remove(&k);
        states.list.update_in(&ctx, &0, &[]).unwrap();
        expected_list.remove(&k);
        states.map.remove_in(&ctx, &0, &"m".into()).unwrap();
        expected_map.remove(&k);
        if i % 2 == 0 {
            states.reducing.clear_in(&ctx, &0).unwrap();
            expected_reducing.remove(&k);
        }
    }
    let got = |keys: flowstate_api::Result<Vec<KeyContext>>, what: &str| {
        enumerated_ids(keys.unwrap(), max, range, what)
    };
    assert_eq!(got(states.value.keys_in(&0), "value"), expected_value);
    assert_eq!(got(states.list.keys_in(&0), "list"), expected_list);
    assert_eq!(got(states.map.keys_in(&0), "map"), expected_map);
    assert_eq!(
        got(states.reducing.keys_in(&0), "reducing"),
        expected_reducing
    );
    assert_eq!(
        got(states.aggregating.keys_in(&1), "aggregating"),
        expected_aggregating_ns1
    );
    assert!(
        states.aggregating.keys_in(&0).unwrap().is_empty(),
        "no aggregating state in namespace 0"
    );
    assert!(
        states.value.keys_in(&1).unwrap().is_empty(),
        "no value state in namespace 1"
    );
}

/// `apply_to_all_keys` visits every key that held state when it started, exactly once, while
/// the callback clears the visited key, clears a key not yet visited, and adds new keys.
pub fn apply_to_all_keys_tolerates_changes<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let value = ValueStateDescriptor::<u64>::new("visited")
        .bind(shared(&backend))
        .unwrap();
    let list = ListStateDescriptor::<u64>::new("visited-list")
        .bind(shared(&backend))
        .unwrap();
    let initial: Vec<u64> = (0..600).collect();
    for &k in &initial {
        value.update(&key(k), &k).unwrap();
        list.add(&key(k), &k).unwrap();
    }
    let visits = AtomicUsize::new(0);
    let mut visited = BTreeSet::new();
    value
        .apply_to_all_keys(|ctx, state| {
            visits.fetch_add(1, Ordering::Relaxed);
            let k = crate::fixtures::key_id(ctx);
            visited.insert(k);
            // The visited key may hold state cleared by an earlier visit (its partner).
            let current = state.get(ctx)?;
            assert!(current.is_none() || current == Some(k));
            state.clear(ctx)?;
            // Clear another key, possibly not visited yet, and add a new one.
            state.clear(&key(k ^ 1))?;
            state.update(&key(10_000 + k), &k)?;
            // Touch another state of the same key through the callback too.
            list.update(ctx, &[])?;
            Ok(())
        })
        .unwrap();
    assert_eq!(
        visits.load(Ordering::Relaxed),
        initial.len(),
        "each initial key is visited once"
    );
    assert_eq!(visited, set(initial.iter().copied()));
    assert_eq!(
        ids(value.keys()),
        set(initial.iter().map(|k| 10_000 + k)),
        "only the keys added during the walk remain"
    );
    assert!(
        list.keys().unwrap().is_empty(),
        "lists emptied during the walk are gone"
    );

    // The same on a list state, clearing through update(&[]).
    for &k in &initial[..100] {
        list.add(&key(k), &k).unwrap();
    }
    let mut walked = 0;
    list.apply_to_all_keys(|ctx, state| {
        walked += 1;
        state.update(ctx, &[])?;
        Ok(())
    })
    .unwrap();
    assert_eq!(walked, 100);
    assert!(list.keys().unwrap().is_empty());
}

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

/// Large values and long lists and maps round-trip unchanged.
pub fn large_entries<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let blob = ValueStateDescriptor::<Vec<u8>>::new("blob")
        .bind(shared(&backend))
        .unwrap();
    let list = ListStateDescriptor::<u64>::new("long-list")
        .bind(shared(&backend))
        .unwrap();
    let map = MapStateDescriptor::<u64, String>::new("wide-map")
        .bind(shared(&backend))
        .unwrap();
    let k = key(1);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    blob.update(&k, &big).unwrap();
    assert_eq!(blob.get(&k).unwrap(), Some(big));
    for chunk in (0..2000u64).collect::<Vec<_>>().chunks(100) {
        list.add_all(&k, chunk).unwrap();
    }
    assert_eq!(list.get(&k).unwrap(), Some((0..2000).collect()));
    for i in 0..2000u64 {
        map.put(&k, &i, &format!("value-{i}")).unwrap();
    }
    let mut entries = map.entries(&k).unwrap();
    entries.sort();
    assert_eq!(entries.len(), 2000);
    assert!(entries.iter().all(|(i, v)| *v == format!("value-{i}")));
}

/// Several threads use one backend at once, each with its own keys (as the threads of one
/// subtask would); every write lands.
pub fn concurrent_access<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let threads = 4u64;
    let per_thread = 500u64;
    let shared_backend = shared(&backend);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let backend = Arc::clone(&shared_backend);
            scope.spawn(move || {
                let states = AllStates::bind(backend).unwrap();
                for i in 0..per_thread {
                    let k = key(t * 1_000_000 + i);
                    states.value.update_in(&k, &0, &format!("{t}-{i}")).unwrap();
                    states.list.add_in(&k, &0, &(i as u32)).unwrap();
                    states.list.add_in(&k, &0, &(i as u32 + 1)).unwrap();
                    states.map.put_in(&k, &0, &"t".into(), &t).unwrap();
                    states.reducing.add_in(&k, &0, 2).unwrap();
                    states.reducing.add_in(&k, &0, 3).unwrap();
                }
            });
        }
    });
    let states = AllStates::bind(shared(&backend)).unwrap();
    let expected: BTreeSet<u64> = (0..threads)
        .flat_map(|t| (0..per_thread).map(move |i| t * 1_000_000 + i))
        .collect();
    assert_eq!(ids(states.value.keys_in(&0)), expected);
    assert_eq!(ids(states.list.keys_in(&0)), expected);
    for &k in &expected {
        let (t, i) = (k / 1_000_000, k % 1_000_000);
        let ctx = key(k);
        assert_eq!(
            states.value.get_in(&ctx, &0).unwrap(),
            Some(format!("{t}-{i}"))
        );
        assert_eq!(
            states.list.get_in(&ctx, &0).unwrap(),
            Some(vec![i as u32, i as u32 + 1])
        );
        assert_eq!(states.map.get_in(&ctx, &0, &"t".into()).unwrap(), Some(t));
        assert_eq!(states.reducing.get_in(&ctx, &0).unwrap(), Some(5));
    }
}
