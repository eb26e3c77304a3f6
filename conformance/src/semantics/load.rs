//! A backend under load: large values, long lists and wide maps, and concurrent writers.

use std::collections::BTreeSet;
use std::sync::Arc;

use flowstate_api::typed::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_api::StateBackendFactory;

use super::ids;
use crate::dataset::AllStates;
use crate::fixtures::{full_backend, key, shared};

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
