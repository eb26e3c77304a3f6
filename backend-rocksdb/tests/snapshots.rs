//! Full (canonical) snapshots: isolation, round trips and rescaling restores.

mod common;

use common::*;
use flowstate_api::{
    CheckpointStorage, KeyedSnapshotView, KeyedStateBackend, RowValue, SnapshotKind,
    StateBackendFactory, StateKind,
};
use flowstate_rocksdb::RocksDbBackendFactory;

#[test]
fn snapshot_view_is_a_point_in_time() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let max = max();
    let b = factory.create(max, max.full_range()).unwrap();
    let s = register(&b);
    load(&b, &s, 300, 1);
    let view = b.snapshot_view();
    // Writes after the view: overwrite, delete, append, new keys.
    load(&b, &s, 400, 2);
    let k0 = key_of(0);
    b.remove(s.map, &k0, NAMESPACES[0]).unwrap();
    drop(b); // The view keeps the database open on its own.

    let mut rows = 0;
    let mut values = 0;
    for kg in max.full_range().iter() {
        view.for_each_row(kg, &mut |row| {
            rows += 1;
            assert!(row.key.starts_with(b"key-"));
            let i: usize = std::str::from_utf8(&row.key[4..]).unwrap().parse().unwrap();
            assert!(i < 300, "key {i} was written after the view");
            if let RowValue::Value(v) = row.value {
                values += 1;
                assert_eq!(v, value_of(i, row.namespace, 1).as_slice());
            }
            if let RowValue::List(l) = row.value {
                let decoded = flowstate_api::list_encoding::decode(l).unwrap();
                assert_eq!(decoded, list_of(i, row.namespace, 1));
            }
            Ok(())
        })
        .unwrap();
    }
    assert_eq!(values, 600);
    let map_rows: usize = (0..300).map(|i| 2 * map_of(i, b"ns-a", 1).len()).sum();
    assert_eq!(rows, 600 + 600 + map_rows);
    assert_eq!(view.states().len(), 3);
}

#[test]
fn full_checkpoint_round_trip_and_state_metadata() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let handles = loaded_operator(&factory, &storage, 1, 500, SnapshotKind::Full);
    assert!(matches!(
        handles[0],
        flowstate_api::KeyedStateHandle::Canonical { .. }
    ));
    let restored = restore_and_verify(&factory, &storage, &handles, 1, 500);
    // The restored backend knows the states before the user registers them.
    let names: Vec<_> = restored[0]
        .registered_states()
        .into_iter()
        .map(|(_, m)| m.name)
        .collect();
    assert_eq!(names, ["value", "list", "map"]);
    assert!(matches!(
        restored[0].register_state(&meta("value", StateKind::List)),
        Err(flowstate_api::Error::StateKindMismatch { .. })
    ));
}

#[test]
fn canonical_restores_rescale_1_to_2_and_2_to_1() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let one = loaded_operator(&factory, &storage, 1, 800, SnapshotKind::Full);
    let two = restore_and_verify(&factory, &storage, &one, 2, 800);
    let storage2 = CheckpointStorage::in_memory();
    let handles: Vec<_> = two
        .iter()
        .enumerate()
        .map(|(i, b)| checkpoint(b, &storage2, 2, i as u32, SnapshotKind::Full))
        .collect();
    restore_and_verify(&factory, &storage2, &handles, 1, 800);
}

#[test]
fn empty_backend_snapshots_and_restores() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let max = max();
    for kind in [SnapshotKind::Full, SnapshotKind::Incremental] {
        let b = factory.create(max, max.full_range()).unwrap();
        let handle = checkpoint(&b, &storage, 1, 0, kind);
        let r = block_on(factory.restore(max, max.full_range(), &storage, &[handle])).unwrap();
        assert!(r.registered_states().is_empty());
    }
}
