//! Map state: every operation on entries, and a map emptied by removals that reads as absent.

use flowstate_api::typed::MapStateDescriptor;
use flowstate_api::StateBackendFactory;

use super::{ids, set};
use crate::fixtures::{full_backend, key, shared};

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
