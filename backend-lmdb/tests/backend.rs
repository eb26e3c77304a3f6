//! Tests of the LMDB backend's own machinery: every operation against the write buffer and
//! committed data, map growth, snapshot isolation (also while the map cannot grow), restores
//! with rescaling, and incremental checkpoints.

use std::collections::BTreeMap;

use flowstate_api::{
    CheckpointId, CheckpointStorage, Error, KeyContext, KeyGroup, KeyGroupRange, KeyedSnapshotView,
    KeyedStateBackend, KeyedStateHandle, RowValue, SnapshotJob, SnapshotKind, SnapshotRequest,
    StateBackend, StateBackendFactory, StateId, StateKind, StateMetadata, StateRow,
};
use flowstate_conformance::fixtures::{key, max_parallelism, range_of};
use flowstate_lmdb::{LmdbBackend, LmdbBackendFactory, LmdbConfig, LmdbError};

fn meta(name: &str, kind: StateKind) -> StateMetadata {
    StateMetadata {
        name: name.into(),
        kind,
        namespace_codec: "bytes".into(),
        value_codec: "bytes".into(),
        user_key_codec: (kind == StateKind::Map).then(|| "bytes".into()),
    }
}

fn factory(config: LmdbConfig) -> LmdbBackendFactory {
    LmdbBackendFactory::temporary(config).unwrap()
}

fn backend(config: LmdbConfig) -> (LmdbBackendFactory, LmdbBackend) {
    let f = factory(config);
    let b = f
        .create(max_parallelism(), max_parallelism().full_range())
        .unwrap();
    (f, b)
}

/// A backend with one value state, "v".
fn value_backend(config: LmdbConfig) -> (LmdbBackendFactory, LmdbBackend, StateId) {
    let (f, b) = backend(config);
    let v = b.register_state(&meta("v", StateKind::Value)).unwrap();
    (f, b, v)
}

/// A 1 MiB map (it fills after about a MB of writes) flushed every `write_buffer_bytes`.
fn small_map(write_buffer_bytes: usize) -> LmdbConfig {
    LmdbConfig {
        initial_map_size: 1 << 20,
        write_buffer_bytes,
        ..LmdbConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run(job: Box<dyn SnapshotJob>, storage: &CheckpointStorage) -> KeyedStateHandle {
    runtime().block_on(job.run(storage.clone())).unwrap()
}

fn request(id: u64, kind: SnapshotKind) -> SnapshotRequest {
    SnapshotRequest {
        checkpoint_id: CheckpointId(id),
        subtask_index: 0,
        kind,
    }
}

/// Every row of a view, as owned tuples, in view order.
type OwnedRow = (u32, Vec<u8>, Vec<u8>, String);
fn rows_of(view: &dyn KeyedSnapshotView) -> Vec<OwnedRow> {
    let mut out = Vec::new();
    for kg in view.key_group_range().iter() {
        view.for_each_row(kg, &mut |row| {
            let payload = match row.value {
                RowValue::Value(v) => format!("value {v:?}"),
                RowValue::List(l) => format!("list {l:?}"),
                RowValue::MapEntry { user_key, value } => format!("entry {user_key:?}={value:?}"),
                other => format!("{other:?}"),
            };
            out.push((
                row.state.0,
                row.key.to_vec(),
                row.namespace.to_vec(),
                payload,
            ));
            Ok(())
        })
        .unwrap();
    }
    out
}

#[test]
fn value_operations_on_buffered_and_committed_data() {
    let (_f, b, s) = value_backend(LmdbConfig::default());
    let k = key(1);
    assert_eq!(b.get(s, &k, b"n").unwrap(), None);
    b.put(s, &k, b"n", b"one").unwrap();
    b.put(s, &k, b"m", b"").unwrap();
    assert_eq!(b.get(s, &k, b"n").unwrap(), Some(b"one".to_vec()));
    assert_eq!(
        b.get(s, &k, b"m").unwrap(),
        Some(vec![]),
        "empty value is present"
    );
    b.flush().unwrap();
    assert_eq!(b.committed_entries(s).unwrap(), 2);
    b.put(s, &k, b"n", b"two").unwrap();
    assert_eq!(b.get(s, &k, b"n").unwrap(), Some(b"two".to_vec()));
    b.remove(s, &k, b"n").unwrap();
    assert_eq!(
        b.get(s, &k, b"n").unwrap(),
        None,
        "buffered delete shadows LMDB"
    );
    b.flush().unwrap();
    assert_eq!(b.committed_entries(s).unwrap(), 1);
    assert_eq!(b.get(s, &k, b"m").unwrap(), Some(vec![]));

    // Operations of another kind, unknown ids, and re-registration.
    assert!(matches!(
        b.list_get(s, &k, b"m"),
        Err(Error::UnsupportedOperation { .. })
    ));
    assert!(matches!(
        b.get(StateId(9), &k, b""),
        Err(Error::UnknownStateId { id: 9 })
    ));
    assert_eq!(b.register_state(&meta("v", StateKind::Value)).unwrap(), s);
    assert!(matches!(
        b.register_state(&meta("v", StateKind::List)),
        Err(Error::StateKindMismatch { .. })
    ));
}

#[test]
fn list_appends_need_no_read_and_merge_with_committed_lists() {
    let (_f, b) = backend(LmdbConfig::default());
    let s = b.register_state(&meta("l", StateKind::List)).unwrap();
    let k = key(7);
    assert!(b.list_get(s, &k, b"").unwrap().is_empty());
    b.list_append(s, &k, b"", &[b"a", b"b"]).unwrap();
    b.flush().unwrap();
    // Buffered as an append on top of the committed list, merged on read and at flush.
    b.list_append(s, &k, b"", &[b"c"]).unwrap();
    b.list_append(s, &k, b"", &[]).unwrap();
    assert_eq!(
        b.list_get(s, &k, b"").unwrap(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    b.flush().unwrap();
    assert_eq!(b.list_get(s, &k, b"").unwrap().len(), 3);
    b.list_replace(s, &k, b"", &[b"x", b""]).unwrap();
    b.list_append(s, &k, b"", &[b"y"]).unwrap();
    assert_eq!(
        b.list_get(s, &k, b"").unwrap(),
        vec![b"x".to_vec(), vec![], b"y".to_vec()]
    );
    b.list_replace(s, &k, b"", &[]).unwrap();
    assert!(b.list_get(s, &k, b"").unwrap().is_empty());
    assert!(
        b.keys(s, b"").unwrap().is_empty(),
        "an empty list is absent"
    );
    b.list_append(s, &k, b"", &[b"z"]).unwrap();
    assert_eq!(b.list_get(s, &k, b"").unwrap(), vec![b"z".to_vec()]);
    b.remove(s, &k, b"").unwrap();
    b.flush().unwrap();
    assert_eq!(b.committed_entries(s).unwrap(), 0);
}

#[test]
fn map_operations_and_clear_across_buffer_and_lmdb() {
    let (_f, b) = backend(LmdbConfig::default());
    let s = b.register_state(&meta("m", StateKind::Map)).unwrap();
    let k = key(3);
    assert!(b.map_is_empty(s, &k, b"ns").unwrap());
    b.map_put(s, &k, b"ns", b"a", b"1").unwrap();
    b.map_put(s, &k, b"ns", b"b", b"2").unwrap();
    b.flush().unwrap();
    b.map_put(s, &k, b"ns", b"c", b"3").unwrap();
    b.map_remove(s, &k, b"ns", b"a").unwrap();
    b.map_put(s, &k, b"other", b"a", b"9").unwrap();
    let mut entries = b.map_entries(s, &k, b"ns").unwrap();
    entries.sort();
    assert_eq!(
        entries,
        vec![
            (b"b".to_vec(), b"2".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ]
    );
    assert!(b.map_contains(s, &k, b"ns", b"b").unwrap());
    assert!(!b.map_contains(s, &k, b"ns", b"a").unwrap());
    assert_eq!(
        b.map_get(s, &k, b"other", b"a").unwrap(),
        Some(b"9".to_vec())
    );
    // Clearing the map removes committed and buffered entries, not the other namespace.
    b.remove(s, &k, b"ns").unwrap();
    assert!(b.map_is_empty(s, &k, b"ns").unwrap());
    assert!(b.map_entries(s, &k, b"ns").unwrap().is_empty());
    b.flush().unwrap();
    assert_eq!(b.committed_entries(s).unwrap(), 1);
    assert!(matches!(
        b.put(s, &k, b"ns", b"v"),
        Err(Error::UnsupportedOperation { .. })
    ));
}

#[test]
fn keys_merge_buffer_and_lmdb_without_duplicates() {
    let (_f, b, v) = value_backend(LmdbConfig::default());
    let m = b.register_state(&meta("m", StateKind::Map)).unwrap();
    for i in 0..200 {
        b.put(v, &key(i), if i % 2 == 0 { b"even" } else { b"odd" }, b"x")
            .unwrap();
        b.map_put(m, &key(i), b"", b"u1", b"x").unwrap();
        b.map_put(m, &key(i), b"", b"u2", b"x").unwrap();
    }
    b.flush().unwrap();
    for i in 200..300 {
        b.put(v, &key(i), b"even", b"x").unwrap();
    }
    b.remove(v, &key(0), b"even").unwrap();
    b.remove(m, &key(5), b"").unwrap();
    let mut even: Vec<KeyContext> = b.keys(v, b"even").unwrap();
    even.sort_by(|a, c| a.key().cmp(c.key()));
    let mut expected: Vec<KeyContext> = (2..200).step_by(2).chain(200..300).map(key).collect();
    expected.sort_by(|a, c| a.key().cmp(c.key()));
    assert_eq!(even, expected, "keys carry their key group and appear once");
    assert_eq!(b.keys(m, b"").unwrap().len(), 199);
    assert!(b.keys(v, b"none").unwrap().is_empty());
}

#[test]
fn keys_of_other_key_groups_are_rejected() {
    let f = factory(LmdbConfig::default());
    let range = KeyGroupRange::new(0, 9).unwrap();
    let b = f.create(max_parallelism(), range).unwrap();
    let s = b.register_state(&meta("v", StateKind::Value)).unwrap();
    let outside = (0..)
        .map(key)
        .find(|k| !range.contains(k.key_group()))
        .unwrap();
    assert!(matches!(
        b.put(s, &outside, b"", b"x"),
        Err(Error::KeyGroupNotOwned { .. })
    ));
    assert!(matches!(
        b.get(s, &outside, b""),
        Err(Error::KeyGroupNotOwned { .. })
    ));
    assert!(matches!(
        b.apply_rows(KeyGroup::new(100, max_parallelism()).unwrap(), &[]),
        Err(Error::KeyGroupNotOwned { .. })
    ));
}

#[test]
fn oversized_keys_are_rejected_with_a_clear_error() {
    let (_f, b, s) = value_backend(LmdbConfig::default());
    let big = KeyContext::new(vec![1u8; 600], max_parallelism());
    let err = b.put(s, &big, b"", b"x").unwrap_err();
    assert!(err.to_string().contains("exceeds LMDB's limit"), "{err}");
    // A limit the operator acts on, with LMDB's own error as the source.
    match &err {
        Error::LimitReached { backend, source } => {
            assert_eq!(*backend, "lmdb");
            assert!(matches!(
                source.downcast_ref::<LmdbError>(),
                Some(LmdbError::KeyTooLarge { len, .. }) if *len > 600
            ));
        }
        other => panic!("expected LimitReached, got {other:?}"),
    }
    assert_eq!(b.get(s, &big, b"").unwrap(), None);
    b.remove(s, &big, b"").unwrap();
}

#[test]
fn reads_see_uncommitted_writes_until_the_buffer_flushes_itself() {
    let config = LmdbConfig {
        write_buffer_entries: 100,
        ..LmdbConfig::default()
    };
    let (_f, b, s) = value_backend(config);
    for i in 0..99 {
        b.put(s, &key(i), b"", &i.to_le_bytes()).unwrap();
    }
    assert_eq!(b.committed_entries(s).unwrap(), 0, "nothing committed yet");
    assert_eq!(b.stats().buffered_entries, 99);
    for i in 0..99 {
        assert_eq!(
            b.get(s, &key(i), b"").unwrap(),
            Some(i.to_le_bytes().to_vec())
        );
    }
    b.put(s, &key(99), b"", b"last").unwrap();
    assert_eq!(
        b.committed_entries(s).unwrap(),
        100,
        "the 100th entry flushed the buffer"
    );
    assert_eq!(b.stats().buffered_entries, 0);
    for i in 100..1000 {
        b.put(s, &key(i), b"", b"x").unwrap();
    }
    let stats = b.stats();
    assert!(stats.commits >= 10, "{stats:?}");
    assert!(stats.buffered_entries < 100);
}

#[test]
fn the_map_grows_instead_of_failing() {
    let (_f, b, s) = value_backend(small_map(256 << 10));
    let value = vec![0xabu8; 1000];
    // 20 MiB into a 1 MiB map.
    for i in 0..20_000u64 {
        b.put(s, &key(i), b"", &value).unwrap();
    }
    b.flush().unwrap();
    let stats = b.stats();
    assert!(stats.map_resizes >= 4, "{stats:?}");
    assert!(stats.map_size >= 20 << 20, "{stats:?}");
    assert_eq!(b.committed_entries(s).unwrap(), 20_000);
    for i in (0..20_000u64).step_by(997) {
        assert_eq!(
            b.get(s, &key(i), b"").unwrap().as_deref(),
            Some(value.as_slice())
        );
    }
}

#[test]
fn max_map_size_stops_growth_with_an_actionable_error() {
    let config = LmdbConfig {
        max_map_size: Some(2 << 20),
        ..small_map(256 << 10)
    };
    let (_f, b, s) = value_backend(config);
    let value = vec![1u8; 1000];
    let err = (0..10_000u64)
        .find_map(|i| b.put(s, &key(i), b"", &value).err())
        .expect("10 MB cannot fit in a 2 MiB map");
    assert!(err.to_string().contains("max_map_size"), "{err}");
    assert!(
        matches!(
            err,
            Error::LimitReached {
                backend: "lmdb",
                ..
            }
        ),
        "{err:?}"
    );
    // Nothing was lost: the data that did not fit is still readable from the buffer.
    assert_eq!(
        b.get(s, &key(0), b"").unwrap().as_deref(),
        Some(value.as_slice())
    );
}

#[test]
fn a_full_snapshot_is_a_point_in_time_while_writers_go_on() {
    let (f, b, v) = value_backend(LmdbConfig::default());
    let l = b.register_state(&meta("l", StateKind::List)).unwrap();
    let m = b.register_state(&meta("m", StateKind::Map)).unwrap();
    for i in 0..500 {
        b.put(v, &key(i), b"", b"before").unwrap();
        b.list_append(l, &key(i), b"", &[b"e1"]).unwrap();
        b.map_put(m, &key(i), b"", b"u", b"before").unwrap();
    }
    let job = b.snapshot(&request(1, SnapshotKind::Full)).unwrap();
    // After the synchronous part: overwrite, delete, append, add, and commit all of it.
    for i in 0..500 {
        b.put(v, &key(i), b"", b"after").unwrap();
        b.list_append(l, &key(i), b"", &[b"e2"]).unwrap();
        b.map_remove(m, &key(i), b"", b"u").unwrap();
    }
    b.put(v, &key(10_000), b"", b"new").unwrap();
    b.register_state(&meta("later", StateKind::Value)).unwrap();
    b.flush().unwrap();

    let storage = CheckpointStorage::in_memory();
    let handle = run(job, &storage);
    assert!(
        matches!(&handle, KeyedStateHandle::Changelog { deltas, .. } if deltas.is_empty()),
        "{handle:?}"
    );
    let restored = restore(&f, &storage, &[handle], max_parallelism().full_range());
    assert_eq!(
        restored.registered_states().len(),
        3,
        "a state registered later is not in it"
    );
    for i in 0..500 {
        assert_eq!(
            restored.get(v, &key(i), b"").unwrap(),
            Some(b"before".to_vec())
        );
        assert_eq!(
            restored.list_get(l, &key(i), b"").unwrap(),
            vec![b"e1".to_vec()]
        );
        assert_eq!(
            restored.map_get(m, &key(i), b"", b"u").unwrap(),
            Some(b"before".to_vec())
        );
    }
    assert_eq!(restored.get(v, &key(10_000), b"").unwrap(), None);
    // The live backend has the later writes.
    assert_eq!(b.get(v, &key(3), b"").unwrap(), Some(b"after".to_vec()));
}

#[test]
fn while_a_snapshot_pins_a_full_map_writes_go_on_and_the_map_grows_afterwards() {
    let (_f, b, s) = value_backend(small_map(128 << 10));
    let value = vec![7u8; 1000];
    b.put(s, &key(0), b"", b"first").unwrap();
    let first_view = b.full_view().unwrap();
    // 4 MB while the first view's read transaction forbids growing the 1 MiB map.
    for i in 1..4000u64 {
        b.put(s, &key(i), b"", &value).unwrap();
    }
    let stats = b.stats();
    assert!(stats.deferred_flushes > 0, "{stats:?}");
    assert_eq!(stats.map_resizes, 0, "{stats:?}");
    assert!(stats.buffered_entries > 0);
    assert_eq!(
        b.get(s, &key(3999), b"").unwrap().as_deref(),
        Some(value.as_slice())
    );
    // A second snapshot cannot flush either: it freezes the buffer on top of its transaction.
    let second_view = b.full_view().unwrap();
    b.put(s, &key(0), b"", b"changed after the second view")
        .unwrap();
    let first_rows = rows_of(&first_view);
    assert_eq!(first_rows.len(), 1);
    let second_rows = rows_of(&second_view);
    assert_eq!(second_rows.len(), 4000);
    assert!(second_rows
        .iter()
        .any(|r| r.1 == key(0).key() && r.3 == format!("value {:?}", b"first")));
    // Restore rows cannot go to LMDB either: they are buffered.
    let row_key = key(50_000);
    b.apply_rows(
        row_key.key_group(),
        &[StateRow {
            state: s,
            key: row_key.key(),
            namespace: b"",
            value: RowValue::Value(b"restored"),
        }],
    )
    .unwrap();
    assert_eq!(b.get(s, &row_key, b"").unwrap(), Some(b"restored".to_vec()));
    drop(first_view);
    drop(second_view);
    let commits_before = b.stats().commits;
    b.flush().unwrap();
    let stats = b.stats();
    assert!(stats.map_resizes >= 2, "{stats:?}");
    assert!(
        stats.commits - commits_before >= 20,
        "a 4 MB buffer flushes in 128 KiB transactions: {stats:?}"
    );
    assert_eq!(stats.buffered_entries, 0);
    assert_eq!(b.committed_entries(s).unwrap(), 4001);
}

#[test]
fn views_move_between_threads() {
    let (_f, b, s) = value_backend(LmdbConfig::default());
    b.put(s, &key(1), b"", b"x").unwrap();
    let view = b.full_view().unwrap();
    b.put(s, &key(2), b"", b"y").unwrap();
    let rows = std::thread::spawn(move || rows_of(&view)).join().unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn apply_rows_applies_in_order_with_tombstones() {
    let (_f, b, v) = value_backend(LmdbConfig::default());
    let l = b.register_state(&meta("l", StateKind::List)).unwrap();
    let m = b.register_state(&meta("m", StateKind::Map)).unwrap();
    let k = key(11);
    let kg = k.key_group();
    let list = flowstate_api::list_encoding::encode([b"a".as_slice(), b"b".as_slice()]);
    b.map_put(m, &k, b"", b"old", b"1").unwrap(); // buffered: flushed before the batch
    let row = |state, value| StateRow {
        state,
        key: k.key(),
        namespace: b"",
        value,
    };
    b.apply_rows(
        kg,
        &[
            row(v, RowValue::Value(b"1")),
            row(v, RowValue::Value(b"2")),
            row(l, RowValue::List(&list)),
            row(m, RowValue::Tombstone),
            row(
                m,
                RowValue::MapEntry {
                    user_key: b"new",
                    value: b"2",
                },
            ),
            row(l, RowValue::Tombstone),
            row(l, RowValue::List(&list)),
        ],
    )
    .unwrap();
    assert_eq!(b.get(v, &k, b"").unwrap(), Some(b"2".to_vec()));
    assert_eq!(
        b.list_get(l, &k, b"").unwrap(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        b.map_entries(m, &k, b"").unwrap(),
        vec![(b"new".to_vec(), b"2".to_vec())]
    );
    assert_eq!(
        b.stats().buffered_entries,
        0,
        "restore rows go straight to LMDB"
    );
    // A row whose kind does not match its state is corrupt input, and nothing is written.
    let err = b
        .apply_rows(
            kg,
            &[row(v, RowValue::Value(b"3")), row(v, RowValue::List(&list))],
        )
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(b.get(v, &k, b"").unwrap(), Some(b"2".to_vec()));
    let err = b
        .apply_rows(kg, &[row(l, RowValue::List(&[1, 0]))])
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn large_restore_blocks_are_split_into_several_transactions() {
    let config = LmdbConfig {
        write_buffer_bytes: 4096,
        ..LmdbConfig::default()
    };
    let (_f, b, v) = value_backend(config);
    let group = key(0).key_group();
    let keys: Vec<KeyContext> = (0..)
        .map(key)
        .filter(|k| k.key_group() == group)
        .take(300)
        .collect();
    let value = [5u8; 100];
    let rows: Vec<StateRow<'_>> = keys
        .iter()
        .map(|k| StateRow {
            state: v,
            key: k.key(),
            namespace: b"",
            value: RowValue::Value(&value),
        })
        .collect();
    let before = b.stats().commits;
    b.apply_rows(group, &rows).unwrap();
    let commits = b.stats().commits - before;
    assert!(
        commits >= 8,
        "300 rows of ~120 bytes in 4 KiB transactions: {commits} commits"
    );
    assert_eq!(b.committed_entries(v).unwrap(), 300);
    assert_eq!(b.keys(v, b"").unwrap().len(), 300);
}

/// Puts `value` as key `i`'s value, its list's one element and its map's entry "u", and
/// tracks it in a model.
fn put_all(b: &LmdbBackend, ids: [StateId; 3], i: u64, value: String, model: &mut Model) {
    b.put(ids[0], &key(i), b"", value.as_bytes()).unwrap();
    b.list_replace(ids[1], &key(i), b"", &[value.as_bytes()])
        .unwrap();
    b.map_put(ids[2], &key(i), b"", b"u", value.as_bytes())
        .unwrap();
    model.insert(i, value);
}

/// What each key's states hold.
type Model = BTreeMap<u64, String>;

fn register_all(b: &LmdbBackend) -> [StateId; 3] {
    [
        b.register_state(&meta("v", StateKind::Value)).unwrap(),
        b.register_state(&meta("l", StateKind::List)).unwrap(),
        b.register_state(&meta("m", StateKind::Map)).unwrap(),
    ]
}

fn assert_subtasks_hold(subtasks: &[LmdbBackend], model: &Model) {
    for b in subtasks {
        let ids = register_all(b);
        let owned: Vec<u64> = model
            .keys()
            .copied()
            .filter(|i| b.key_group_range().contains(key(*i).key_group()))
            .collect();
        assert_eq!(b.keys(ids[0], b"").unwrap().len(), owned.len());
        assert_eq!(b.keys(ids[2], b"").unwrap().len(), owned.len());
        for i in owned {
            let expected = model[&i].as_bytes().to_vec();
            assert_eq!(b.get(ids[0], &key(i), b"").unwrap(), Some(expected.clone()));
            assert_eq!(
                b.list_get(ids[1], &key(i), b"").unwrap(),
                vec![expected.clone()]
            );
            assert_eq!(
                b.map_get(ids[2], &key(i), b"", b"u").unwrap(),
                Some(expected)
            );
        }
    }
}

/// A backend owning `range`, restored from `handles`.
fn restore(
    f: &LmdbBackendFactory,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    range: KeyGroupRange,
) -> LmdbBackend {
    runtime()
        .block_on(f.restore(max_parallelism(), range, storage, handles))
        .unwrap()
}

fn restore_at(
    f: &LmdbBackendFactory,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    parallelism: u32,
) -> Vec<LmdbBackend> {
    (0..parallelism)
        .map(|i| restore(f, storage, handles, range_of(parallelism, i)))
        .collect()
}

fn checkpoint_all(
    subtasks: &[LmdbBackend],
    storage: &CheckpointStorage,
    id: u64,
    kind: SnapshotKind,
) -> Vec<KeyedStateHandle> {
    let jobs: Vec<_> = subtasks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            b.snapshot(&SnapshotRequest {
                checkpoint_id: CheckpointId(id),
                subtask_index: i as u32,
                kind,
            })
            .unwrap()
        })
        .collect();
    let handles = jobs.into_iter().map(|j| run(j, storage)).collect();
    for b in subtasks {
        b.notify_checkpoint_complete(CheckpointId(id)).unwrap();
    }
    handles
}

#[test]
fn restores_round_trip_through_rescaling() {
    let f = factory(LmdbConfig::default());
    let storage = CheckpointStorage::in_memory();
    let one = f
        .create(max_parallelism(), max_parallelism().full_range())
        .unwrap();
    let ids = register_all(&one);
    let mut model = BTreeMap::new();
    for i in 0..1000 {
        put_all(&one, ids, i, format!("a-{i}"), &mut model);
    }
    let handles = checkpoint_all(&[one], &storage, 1, SnapshotKind::Full);

    // 1 -> 3: each subtask holds exactly its key groups.
    let three = restore_at(&f, &storage, &handles, 3);
    assert_subtasks_hold(&three, &model);
    // Change some keys on the three, checkpoint incrementally twice (base, then delta).
    let handles = checkpoint_all(&three, &storage, 2, SnapshotKind::Incremental);
    assert!(matches!(handles[0], KeyedStateHandle::Changelog { .. }));
    for b in &three {
        let ids = register_all(b);
        for i in (0..1000).step_by(7) {
            if b.key_group_range().contains(key(i).key_group()) {
                put_all(b, ids, i, format!("b-{i}"), &mut model);
            }
        }
    }
    let handles = checkpoint_all(&three, &storage, 3, SnapshotKind::Incremental);
    let KeyedStateHandle::Changelog { deltas, .. } = &handles[0] else {
        panic!("expected a changelog handle, got {handles:?}")
    };
    assert_eq!(deltas.len(), 1);
    // 3 -> 2 from base + delta, then 2 -> 1 from full.
    let two = restore_at(&f, &storage, &handles, 2);
    assert_subtasks_hold(&two, &model);
    let handles = checkpoint_all(&two, &storage, 4, SnapshotKind::Full);
    let single = restore_at(&f, &storage, &handles, 1);
    assert_subtasks_hold(&single, &model);
}

#[test]
fn incremental_checkpoint_after_changing_one_percent_uploads_little() {
    let (f, b) = backend(LmdbConfig::default());
    let [v, l, m] = register_all(&b);
    let storage = CheckpointStorage::in_memory();
    let n = 20_000u64;
    for i in 0..n {
        b.put(v, &key(i), b"", &[i as u8; 64]).unwrap();
        b.list_append(l, &key(i), b"", &[b"element"]).unwrap();
        b.map_put(m, &key(i), b"", b"entry", &[1; 16]).unwrap();
    }
    let base = run(
        b.snapshot(&request(1, SnapshotKind::Incremental)).unwrap(),
        &storage,
    );
    b.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    assert_eq!(b.outstanding_changes().unwrap(), 0);

    // Change 1% of the keys: overwrite, append, remove map entries.
    for i in (0..n).step_by(100) {
        b.put(v, &key(i), b"", b"changed").unwrap();
        b.list_append(l, &key(i), b"", &[b"more"]).unwrap();
        b.map_remove(m, &key(i), b"", b"entry").unwrap();
    }
    assert_eq!(b.outstanding_changes().unwrap(), 3 * (n as usize / 100));
    let delta = run(
        b.snapshot(&request(2, SnapshotKind::Incremental)).unwrap(),
        &storage,
    );
    b.notify_checkpoint_complete(CheckpointId(2)).unwrap();

    let KeyedStateHandle::Changelog {
        base: base_file,
        deltas,
        ..
    } = &delta
    else {
        panic!("expected a changelog handle, got {delta:?}")
    };
    let KeyedStateHandle::Changelog {
        base: first_base,
        deltas: no_deltas,
        ..
    } = &base
    else {
        panic!("expected a changelog base, got {base:?}")
    };
    assert!(no_deltas.is_empty());
    assert_eq!(base_file, first_base, "the delta reuses the uploaded base");
    // The base is a full snapshot of the same state.
    let full = first_base.clone();
    let uploaded = deltas[0].size;
    let full_size = full.size;
    println!("full checkpoint {full_size} bytes, delta after changing 1% of keys {uploaded} bytes");
    assert!(
        uploaded * 20 < full_size,
        "delta of {uploaded} bytes is not a small fraction of the full {full_size} bytes"
    );

    // The chain restores to the state after the change.
    let restored = restore(&f, &storage, &[delta], max_parallelism().full_range());
    for i in [0u64, 1, 100, 19_900, 19_999] {
        let changed = i % 100 == 0;
        let value = restored.get(v, &key(i), b"").unwrap().unwrap();
        assert_eq!(value == b"changed", changed, "key {i}");
        assert_eq!(
            restored.list_get(l, &key(i), b"").unwrap().len(),
            if changed { 2 } else { 1 }
        );
        assert_eq!(
            restored.map_is_empty(m, &key(i), b"").unwrap(),
            changed,
            "key {i}"
        );
    }
}

#[test]
fn pending_changes_reach_the_next_delta_and_a_newer_abort_rebases() {
    let (f, b, v) = value_backend(LmdbConfig::default());
    let storage = CheckpointStorage::in_memory();
    b.put(v, &key(1), b"", b"1").unwrap();
    run(
        b.snapshot(&request(1, SnapshotKind::Incremental)).unwrap(),
        &storage,
    );
    b.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    b.put(v, &key(2), b"", b"2").unwrap();
    // Checkpoint 2 never hears back: its changes stay tracked.
    run(
        b.snapshot(&request(2, SnapshotKind::Incremental)).unwrap(),
        &storage,
    );
    b.remove(v, &key(1), b"").unwrap();
    let job = b.snapshot(&request(3, SnapshotKind::Incremental)).unwrap();
    b.put(v, &key(4), b"", b"after the barrier").unwrap();
    let handle = run(job, &storage);
    let KeyedStateHandle::Changelog { deltas, .. } = &handle else {
        panic!("expected a delta, got {handle:?}")
    };
    assert_eq!(deltas.len(), 1, "a delta on base 1: 2 never completed");
    let restored = restore(&f, &storage, &[handle], max_parallelism().full_range());
    assert_eq!(
        restored.get(v, &key(1), b"").unwrap(),
        None,
        "tombstone applied"
    );
    assert_eq!(restored.get(v, &key(2), b"").unwrap(), Some(b"2".to_vec()));
    assert_eq!(restored.get(v, &key(4), b"").unwrap(), None);

    // An abort newer than the base (the coordinator may have refused it because a file of
    // the chain is gone) ends the chain: the next checkpoint is a new base holding everything.
    b.notify_checkpoint_aborted(CheckpointId(3)).unwrap();
    let handle = run(
        b.snapshot(&request(4, SnapshotKind::Incremental)).unwrap(),
        &storage,
    );
    let KeyedStateHandle::Changelog { deltas, .. } = &handle else {
        panic!("expected a changelog handle, got {handle:?}")
    };
    assert!(deltas.is_empty(), "a new base after the abort");
    let restored = restore(&f, &storage, &[handle], max_parallelism().full_range());
    assert_eq!(restored.get(v, &key(1), b"").unwrap(), None);
    assert_eq!(restored.get(v, &key(2), b"").unwrap(), Some(b"2".to_vec()));
    assert_eq!(
        restored.get(v, &key(4), b"").unwrap(),
        Some(b"after the barrier".to_vec())
    );
}

#[test]
fn a_full_checkpoint_is_the_base_later_deltas_build_on() {
    let (f, b, v) = value_backend(LmdbConfig::default());
    let storage = CheckpointStorage::in_memory();
    b.put(v, &key(1), b"", b"1").unwrap();
    let first = run(
        b.snapshot(&request(1, SnapshotKind::Incremental)).unwrap(),
        &storage,
    );
    b.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    b.put(v, &key(2), b"", b"2").unwrap();
    let full = run(
        b.snapshot(&request(2, SnapshotKind::Full)).unwrap(),
        &storage,
    );
    b.notify_checkpoint_complete(CheckpointId(2)).unwrap();
    b.put(v, &key(3), b"", b"3").unwrap();
    let third = run(
        b.snapshot(&request(3, SnapshotKind::Incremental)).unwrap(),
        &storage,
    );
    let (
        KeyedStateHandle::Changelog { base: b1, .. },
        KeyedStateHandle::Changelog {
            base: b2,
            deltas: d2,
            ..
        },
        KeyedStateHandle::Changelog {
            base: b3,
            deltas: d3,
            ..
        },
    ) = (&first, &full, &third)
    else {
        panic!("expected changelog handles: {first:?} {full:?} {third:?}")
    };
    assert_ne!(
        b1, b2,
        "the full checkpoint is a new base, complete on its own"
    );
    assert!(d2.is_empty());
    // Checkpoint 1's base may be gone once checkpoint 2 completed: 3 builds on 2.
    assert_eq!(b3, b2);
    assert_eq!(d3.len(), 1);
    // The full checkpoint alone restores its point in time.
    let restored = restore(&f, &storage, &[full], max_parallelism().full_range());
    assert_eq!(restored.get(v, &key(2), b"").unwrap(), Some(b"2".to_vec()));
    assert_eq!(restored.get(v, &key(3), b"").unwrap(), None);
}

#[test]
fn change_tracking_off_makes_incremental_requests_full() {
    let config = LmdbConfig {
        track_changes: false,
        ..LmdbConfig::default()
    };
    let (_f, b, v) = value_backend(config);
    b.put(v, &key(1), b"", b"1").unwrap();
    assert_eq!(b.outstanding_changes().unwrap(), 0);
    let storage = CheckpointStorage::in_memory();
    for (id, kind) in [(1, SnapshotKind::Incremental), (2, SnapshotKind::Full)] {
        let handle = run(b.snapshot(&request(id, kind)).unwrap(), &storage);
        assert!(
            matches!(handle, KeyedStateHandle::Canonical { .. }),
            "{handle:?}"
        );
    }
}

#[test]
fn working_directories_are_fresh_and_removed_on_drop() {
    let base = tempfile::tempdir().unwrap();
    let f = LmdbBackendFactory::new(base.path().join("lmdb"), LmdbConfig::default());
    assert_eq!(f.name(), "lmdb");
    let a = f
        .create(max_parallelism(), max_parallelism().full_range())
        .unwrap();
    let b = f
        .create(max_parallelism(), max_parallelism().full_range())
        .unwrap();
    assert_ne!(a.path(), b.path());
    let path = a.path().to_path_buf();
    assert!(path.join("data.mdb").exists());
    drop(a);
    assert!(!path.exists());

    // An explicit directory must be empty and is left in place.
    let dir = base.path().join("explicit");
    let c = LmdbBackend::open(
        &dir,
        max_parallelism(),
        max_parallelism().full_range(),
        LmdbConfig::default(),
    )
    .unwrap();
    drop(c);
    assert!(dir.join("data.mdb").exists());
    let err = LmdbBackend::open(
        &dir,
        max_parallelism(),
        max_parallelism().full_range(),
        LmdbConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let bad = LmdbConfig {
        write_buffer_entries: 0,
        ..LmdbConfig::default()
    };
    assert!(matches!(
        LmdbBackend::open(
            base.path().join("bad"),
            max_parallelism(),
            max_parallelism().full_range(),
            bad
        ),
        Err(Error::Config(_))
    ));
}

#[test]
fn too_many_states_is_an_actionable_error() {
    let config = LmdbConfig {
        max_states: 2,
        ..LmdbConfig::default()
    };
    let (_f, b) = backend(config);
    b.register_state(&meta("a", StateKind::Value)).unwrap();
    b.register_state(&meta("b", StateKind::Value)).unwrap();
    let err = b.register_state(&meta("c", StateKind::Value)).unwrap_err();
    assert!(err.to_string().contains("max_states"), "{err}");
}

/// A view covers exactly its backend's range: asking it for another key group is the
/// caller's bug and an error, as in every backend (not an empty key group).
#[test]
fn a_view_refuses_key_groups_outside_its_range() {
    let f = factory(LmdbConfig::default());
    let range = KeyGroupRange::new(0, 63).unwrap();
    let b = f.create(max_parallelism(), range).unwrap();
    let s = b.register_state(&meta("v", StateKind::Value)).unwrap();
    let owned = (0..10_000u64)
        .map(key)
        .find(|k| range.contains(k.key_group()))
        .unwrap();
    b.put(s, &owned, b"", b"x").unwrap();
    let view = b.full_view().unwrap();
    let mut rows = 0;
    view.for_each_row(owned.key_group(), &mut |_| {
        rows += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(rows, 1);
    let foreign = KeyGroup::new(64, max_parallelism()).unwrap();
    match view.for_each_row(foreign, &mut |_| Ok(())) {
        Err(Error::KeyGroupNotOwned {
            key_group: 64,
            range,
        }) => assert_eq!(range, "[0, 63]"),
        other => panic!("expected KeyGroupNotOwned, got {other:?}"),
    }
}
