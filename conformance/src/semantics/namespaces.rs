//! Namespaces: isolation per kind, byte boundaries between key, namespace and user key, and
//! `merge_namespaces` of list, reducing and aggregating state.

use flowstate_api::typed::{
    AggregatingStateDescriptor, ListStateDescriptor, ReducingStateDescriptor,
};
use flowstate_api::{KeyContext, KeyedStateBackend, StateBackendFactory};

use super::{ids, set};
use crate::dataset::{AllStates, Mean};
use crate::fixtures::{full_backend, key, max_parallelism, shared};

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

/// Key and namespace bytes are kept apart: (key `[1]`, namespace `[2, 3]`), (key `[1, 2]`,
/// namespace `[3]`) and (key `[1, 2, 3]`, namespace `[]`) are three entries, in every layout,
/// and map user keys do not bleed into namespaces either. Ordered stores that concatenate
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
