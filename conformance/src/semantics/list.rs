//! List state: order, `add_all`, `update`, and empty lists that read as absent.

use flowstate_api::typed::ListStateDescriptor;
use flowstate_api::{KeyedStateBackend, StateBackendFactory};

use super::{ids, set};
use crate::fixtures::{encoded, full_backend, key, shared};

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
