//! Key enumeration: exactly the keys holding state across key groups, and
//! `apply_to_all_keys` while the callback clears and adds keys.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowstate_api::typed::{ListStateDescriptor, ValueStateDescriptor};
use flowstate_api::{KeyContext, StateBackendFactory};

use super::{ids, set};
use crate::dataset::AllStates;
use crate::fixtures::{
    backend_for, enumerated_ids, full_backend, key, key_id, keys_in_range, max_parallelism,
    range_of, shared,
};

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
            let k = key_id(ctx);
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
