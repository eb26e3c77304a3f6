//! Operator list and broadcast state: typed handles, registration checks, the file format and
//! its corruption errors, union and broadcast redistribution, and checkpoint storage helpers.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate_api::operator::{
    operator_state_file_name, read_operator_state, redistribute, redistribute_for_subtask,
    restore_operator_state, write_operator_state, OperatorStateData, OperatorStateEntry,
    OPERATOR_STATE_FORMAT_VERSION,
};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, Error, FileRef, MaxParallelism,
    OperatorStateMetadata, OperatorStateMode, OperatorStateSnapshot, OperatorStateStore,
    Parallelism, Redistribution, SubtaskStateHandle,
};
use serde::Serialize;

fn p(n: u32) -> Parallelism {
    Parallelism::new(n).unwrap()
}

fn bytes_list(elements: &[&str]) -> Vec<Vec<u8>> {
    elements.iter().map(|e| e.as_bytes().to_vec()).collect()
}

fn strings(elements: Vec<Vec<u8>>) -> Vec<String> {
    elements
        .into_iter()
        .map(|e| String::from_utf8(e).unwrap())
        .collect()
}

/// A store with byte-level list states `(name, mode, elements)`.
fn store_with_lists(lists: &[(&str, Redistribution, &[&str])]) -> OperatorStateStore {
    let store = OperatorStateStore::new();
    for (name, mode, elements) in lists {
        let id = store
            .register(&OperatorStateMetadata::list(*name, *mode, "bytes"))
            .unwrap();
        store.list_add(id, bytes_list(elements)).unwrap();
    }
    store
}

fn list_in(store: &OperatorStateStore, name: &str) -> Vec<String> {
    strings(store.list_get(store.id_of(name).unwrap()).unwrap())
}

/// A store with one broadcast state `rules` holding `entries`.
fn store_with_broadcast(entries: &[(&str, &str)]) -> OperatorStateStore {
    let store = OperatorStateStore::new();
    let id = store
        .register(&OperatorStateMetadata::broadcast("rules", "bytes", "bytes"))
        .unwrap();
    for (k, v) in entries {
        store
            .broadcast_put(id, k.as_bytes().to_vec(), v.as_bytes().to_vec())
            .unwrap();
    }
    store
}

fn broadcast_in(store: &OperatorStateStore) -> Vec<(String, String)> {
    store
        .broadcast_entries(store.id_of("rules").unwrap())
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

// ---------------------------------------------------------------- typed handles

#[test]
fn typed_list_state_get_add_add_all_update_clear() {
    let store = Arc::new(OperatorStateStore::new());
    let offsets = store
        .list_state::<u64>("offsets", Redistribution::EvenSplit)
        .unwrap();
    assert_eq!(offsets.get().unwrap(), Vec::<u64>::new());
    offsets.add(&5).unwrap();
    offsets.add_all([6u64, 7]).unwrap();
    let more = [8u64];
    offsets.add_all(more.iter()).unwrap();
    assert_eq!(offsets.get().unwrap(), vec![5, 6, 7, 8]);
    // A second handle of the same name sees the same list.
    let again = store
        .list_state::<u64>("offsets", Redistribution::EvenSplit)
        .unwrap();
    assert_eq!(again.id(), offsets.id());
    again.update([1u64, 2]).unwrap();
    assert_eq!(offsets.get().unwrap(), vec![1, 2]);
    offsets.clear().unwrap();
    assert!(offsets.get().unwrap().is_empty());
    offsets.add(&9).unwrap();
    offsets.update(Vec::<u64>::new()).unwrap();
    assert!(offsets.get().unwrap().is_empty());
}

#[test]
fn typed_broadcast_state_get_put_remove_contains_entries_clear() {
    let store = Arc::new(OperatorStateStore::new());
    let rules = store.broadcast_state::<String, i32>("rules").unwrap();
    assert!(rules.is_empty().unwrap());
    assert_eq!(rules.get(&"a".into()).unwrap(), None);
    rules.put(&"b".into(), &2).unwrap();
    rules.put(&"a".into(), &1).unwrap();
    rules.put(&"b".into(), &-3).unwrap();
    assert_eq!(rules.get(&"b".into()).unwrap(), Some(-3));
    assert!(rules.contains(&"a".into()).unwrap());
    assert!(!rules.contains(&"z".into()).unwrap());
    assert_eq!(
        rules.entries().unwrap(),
        vec![("a".to_string(), 1), ("b".to_string(), -3)]
    );
    assert!(rules.remove(&"a".into()).unwrap());
    assert!(!rules.remove(&"a".into()).unwrap());
    assert_eq!(rules.entries().unwrap(), vec![("b".to_string(), -3)]);
    rules.clear().unwrap();
    assert!(rules.is_empty().unwrap());
}

#[test]
fn handles_are_usable_from_many_threads() {
    let store = Arc::new(OperatorStateStore::new());
    let list = store
        .list_state::<u32>("seen", Redistribution::Union)
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let list = list.clone();
            s.spawn(move || {
                for i in 0..100 {
                    list.add(&(t * 1000 + i)).unwrap();
                }
            });
        }
    });
    let mut all = list.get().unwrap();
    all.sort_unstable();
    let mut expected: Vec<u32> = (0..4)
        .flat_map(|t| (0..100).map(move |i| t * 1000 + i))
        .collect();
    expected.sort_unstable();
    assert_eq!(all, expected);
}

// ---------------------------------------------------------------- registration checks

#[test]
fn one_name_has_one_mode() {
    let store = Arc::new(OperatorStateStore::new());
    store
        .list_state::<u64>("s", Redistribution::EvenSplit)
        .unwrap();
    let err = store
        .list_state::<u64>("s", Redistribution::Union)
        .unwrap_err();
    match err {
        Error::OperatorStateModeMismatch {
            name,
            existing,
            requested,
        } => {
            assert_eq!(name, "s");
            assert_eq!(existing, "even-split list state");
            assert_eq!(requested, "union list state");
        }
        other => panic!("expected a mode mismatch, got {other}"),
    }
    assert!(matches!(
        store.broadcast_state::<u64, u64>("s"),
        Err(Error::OperatorStateModeMismatch { .. })
    ));
    store.broadcast_state::<u64, u64>("b").unwrap();
    assert!(matches!(
        store.list_state::<u64>("b", Redistribution::EvenSplit),
        Err(Error::OperatorStateModeMismatch { .. })
    ));
    assert!(matches!(
        store.list_state::<u64>("b", Redistribution::Union),
        Err(Error::OperatorStateModeMismatch { .. })
    ));
    // Byte-level access of the wrong kind is the same error.
    let list_id = store.id_of("s").unwrap();
    let broadcast_id = store.id_of("b").unwrap();
    assert!(matches!(
        store.broadcast_get(list_id, b"k"),
        Err(Error::OperatorStateModeMismatch { .. })
    ));
    assert!(matches!(
        store.list_add(broadcast_id, vec![b"x".to_vec()]),
        Err(Error::OperatorStateModeMismatch { .. })
    ));
}

#[test]
fn codecs_are_checked_on_reregistration_and_after_restore() {
    let store = Arc::new(OperatorStateStore::new());
    let list = store
        .list_state::<u64>("s", Redistribution::EvenSplit)
        .unwrap();
    list.add(&1).unwrap();
    assert!(matches!(
        store.list_state::<String>("s", Redistribution::EvenSplit),
        Err(Error::StateCodecMismatch {
            what: "element",
            ..
        })
    ));
    store.broadcast_state::<u64, u64>("b").unwrap();
    assert!(matches!(
        store.broadcast_state::<String, u64>("b"),
        Err(Error::StateCodecMismatch { what: "key", .. })
    ));
    assert!(matches!(
        store.broadcast_state::<u64, String>("b"),
        Err(Error::StateCodecMismatch { what: "value", .. })
    ));

    let restored =
        Arc::new(OperatorStateStore::restore(&[Some(store.snapshot())], 0, p(1)).unwrap());
    assert!(matches!(
        restored.list_state::<i8>("s", Redistribution::EvenSplit),
        Err(Error::StateCodecMismatch { .. })
    ));
    assert!(matches!(
        restored.list_state::<u64>("s", Redistribution::Union),
        Err(Error::OperatorStateModeMismatch { .. })
    ));
    let list = restored
        .list_state::<u64>("s", Redistribution::EvenSplit)
        .unwrap();
    assert_eq!(list.get().unwrap(), vec![1]);
}

#[test]
fn malformed_metadata_is_rejected() {
    let store = OperatorStateStore::new();
    let mut meta = OperatorStateMetadata::list("s", Redistribution::EvenSplit, "bytes");
    meta.key_codec = Some("bytes".into());
    assert!(matches!(store.register(&meta), Err(Error::Config(_))));
}

#[test]
fn old_subtasks_that_disagree_on_a_mode_are_an_error() {
    let a = store_with_lists(&[("s", Redistribution::EvenSplit, &["x"])]);
    let b = store_with_lists(&[("s", Redistribution::Union, &["y"])]);
    let old = [Some(a.snapshot()), Some(b.snapshot())];
    assert!(matches!(
        OperatorStateStore::restore(&old, 0, p(2)),
        Err(Error::OperatorStateModeMismatch { .. })
    ));
}

// ---------------------------------------------------------------- redistribution

#[test]
fn union_gives_every_subtask_every_element_in_old_subtask_order() {
    let old = [
        Some(store_with_lists(&[("u", Redistribution::Union, &["a", "b"])]).snapshot()),
        None,
        Some(store_with_lists(&[("u", Redistribution::Union, &[])]).snapshot()),
        Some(store_with_lists(&[("u", Redistribution::Union, &["c"])]).snapshot()),
    ];
    // Down, up, and unchanged parallelism.
    for n in [1, 4, 6] {
        for i in 0..n {
            let store = OperatorStateStore::restore(&old, i, p(n)).unwrap();
            assert_eq!(list_in(&store, "u"), ["a", "b", "c"], "subtask {i} of {n}");
        }
    }
}

#[test]
fn union_states_do_not_move_the_even_split_start() {
    // "e1" puts x on subtask 0 and moves start to 1, so "e2" puts y on subtask 1. The union
    // state "m" between them (3 elements; rem 1 at n = 2) must not shift start back to 0.
    let old = [Some(
        store_with_lists(&[
            ("e1", Redistribution::EvenSplit, &["x"]),
            ("m", Redistribution::Union, &["u1", "u2", "u3"]),
            ("e2", Redistribution::EvenSplit, &["y"]),
        ])
        .snapshot(),
    )];
    let s0 = OperatorStateStore::restore(&old, 0, p(2)).unwrap();
    let s1 = OperatorStateStore::restore(&old, 1, p(2)).unwrap();
    assert_eq!(list_in(&s0, "e1"), ["x"]);
    assert!(list_in(&s0, "e2").is_empty());
    assert!(list_in(&s1, "e1").is_empty());
    assert_eq!(list_in(&s1, "e2"), ["y"]);
    assert_eq!(list_in(&s0, "m"), ["u1", "u2", "u3"]);
    assert_eq!(list_in(&s1, "m"), ["u1", "u2", "u3"]);
}

#[test]
fn broadcast_new_subtask_i_takes_old_copy_i_mod_old_n() {
    // Copies differ only so that the test can see which one was taken.
    let old: Vec<Option<OperatorStateSnapshot>> = ["c0", "c1", "c2"]
        .iter()
        .map(|c| Some(store_with_broadcast(&[("copy", c), ("k", "v")]).snapshot()))
        .collect();
    let copy_taken = |store: &OperatorStateStore| broadcast_in(store)[0].1.clone();
    // Up: 3 -> 5 reuses copies round-robin.
    let up: Vec<String> = (0..5)
        .map(|i| copy_taken(&OperatorStateStore::restore(&old, i, p(5)).unwrap()))
        .collect();
    assert_eq!(up, ["c0", "c1", "c2", "c0", "c1"]);
    // Down: 3 -> 2 drops copy 2.
    let down: Vec<String> = (0..2)
        .map(|i| copy_taken(&OperatorStateStore::restore(&old, i, p(2)).unwrap()))
        .collect();
    assert_eq!(down, ["c0", "c1"]);
    let full = OperatorStateStore::restore(&old, 1, p(2)).unwrap();
    assert_eq!(
        broadcast_in(&full),
        [
            ("copy".to_string(), "c1".to_string()),
            ("k".to_string(), "v".to_string())
        ]
    );
}

#[test]
fn broadcast_copies_come_only_from_old_subtasks_that_hold_the_state() {
    // Old subtask 1 has no file, old subtask 2 has only a list state: the holders are old
    // subtasks 0 and 3, so new subtasks take copies c0, c3, c0.
    let only_list = store_with_lists(&[("l", Redistribution::EvenSplit, &["z"])]);
    let old = [
        Some(store_with_broadcast(&[("copy", "c0")]).snapshot()),
        None,
        Some(only_list.snapshot()),
        Some(store_with_broadcast(&[("copy", "c3")]).snapshot()),
    ];
    let taken: Vec<String> = (0..3)
        .map(|i| {
            broadcast_in(&OperatorStateStore::restore(&old, i, p(3)).unwrap())[0]
                .1
                .clone()
        })
        .collect();
    assert_eq!(taken, ["c0", "c3", "c0"]);
}

#[test]
fn every_old_state_is_present_after_restore_even_when_empty() {
    let old = [Some(
        store_with_lists(&[("one", Redistribution::EvenSplit, &["x"])]).snapshot(),
    )];
    let s2 = OperatorStateStore::restore(&old, 1, p(2)).unwrap();
    let names: Vec<String> = s2
        .registered_states()
        .into_iter()
        .map(|(_, m)| m.name)
        .collect();
    assert_eq!(names, ["one"]);
    assert!(list_in(&s2, "one").is_empty());
}

#[test]
fn restore_checks_the_new_index() {
    assert!(matches!(
        OperatorStateStore::restore(&[], 2, p(2)),
        Err(Error::OperatorIndexOutOfBounds {
            operator_index: 2,
            parallelism: 2
        })
    ));
    assert!(matches!(
        redistribute_for_subtask(&[], 5, p(1)),
        Err(Error::OperatorIndexOutOfBounds { .. })
    ));
    let none = OperatorStateStore::restore(&[None, None], 0, p(1)).unwrap();
    assert!(none.snapshot().is_empty());
}

#[test]
fn redistribute_matches_per_subtask_restore() {
    let old = [
        Some(
            store_with_lists(&[
                ("a", Redistribution::EvenSplit, &["1", "2", "3"]),
                ("b", Redistribution::Union, &["u"]),
            ])
            .snapshot(),
        ),
        Some(store_with_lists(&[("a", Redistribution::EvenSplit, &["4", "5"])]).snapshot()),
    ];
    let all = redistribute(&old, p(3)).unwrap();
    assert_eq!(all.len(), 3);
    let lists: Vec<Vec<u8>> = all
        .iter()
        .map(|s| match &s.get("a").unwrap().data {
            OperatorStateData::List(l) => l.iter().map(|e| e[0] - b'0').collect(),
            _ => panic!("a is a list"),
        })
        .collect();
    // 5 elements over 3: base 1, rem 2 -> [1,2] [3,4] [5].
    assert_eq!(lists, [vec![1, 2], vec![3, 4], vec![5]]);
    for (i, s) in all.iter().enumerate() {
        assert_eq!(
            *s,
            OperatorStateStore::restore(&old, i as u32, p(3))
                .unwrap()
                .snapshot()
        );
    }
}

// ---------------------------------------------------------------- file format

fn sample_store() -> Arc<OperatorStateStore> {
    let store = Arc::new(OperatorStateStore::new());
    let offsets = store
        .list_state::<u64>("offsets", Redistribution::EvenSplit)
        .unwrap();
    offsets.add_all([1u64, 2, 3]).unwrap();
    let seen = store
        .list_state::<String>("seen", Redistribution::Union)
        .unwrap();
    seen.add(&"hello".to_string()).unwrap();
    let rules = store.broadcast_state::<String, u32>("rules").unwrap();
    rules.put(&"a".into(), &1).unwrap();
    store
        .list_state::<u8>("empty", Redistribution::EvenSplit)
        .unwrap();
    store
}

#[test]
fn snapshot_bytes_round_trip() {
    let store = sample_store();
    let bytes = store.snapshot_bytes().unwrap();
    assert_eq!(&bytes[..8], b"FLOWOPST");
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        OPERATOR_STATE_FORMAT_VERSION
    );
    let decoded = OperatorStateSnapshot::decode(&bytes).unwrap();
    assert_eq!(decoded, store.snapshot());
    let names: Vec<&str> = decoded
        .states()
        .iter()
        .map(|s| s.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["empty", "offsets", "rules", "seen"]);
    assert_eq!(
        decoded.get("rules").unwrap().metadata.mode,
        OperatorStateMode::Broadcast
    );
    // Same parallelism: the subtask gets its own state back.
    let restored = Arc::new(OperatorStateStore::restore(&[Some(decoded)], 0, p(1)).unwrap());
    assert_eq!(restored.snapshot(), store.snapshot());
    let offsets = restored
        .list_state::<u64>("offsets", Redistribution::EvenSplit)
        .unwrap();
    assert_eq!(offsets.get().unwrap(), vec![1, 2, 3]);
    // An empty store round-trips too.
    let empty = OperatorStateStore::new().snapshot_bytes().unwrap();
    assert!(OperatorStateSnapshot::decode(&empty).unwrap().is_empty());
}

#[test]
fn snapshot_is_a_copy() {
    let store = sample_store();
    let before = store.snapshot();
    let offsets = store
        .list_state::<u64>("offsets", Redistribution::EvenSplit)
        .unwrap();
    offsets.add(&99).unwrap();
    assert_eq!(
        before.get("offsets").unwrap().data,
        OperatorStateData::List(vec![vec![1], vec![2], vec![3]])
    );
}

/// Rewrites the header's length and checksum to fit `body`, so only the body is at fault.
fn with_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"FLOWOPST");
    out.extend_from_slice(&OPERATOR_STATE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Same shape as the snapshot (postcard encodes a struct as its fields in order), but free to
/// break the invariants the real type keeps.
#[derive(Serialize)]
struct RawSnapshot {
    states: Vec<OperatorStateEntry>,
}

fn entry(name: &str, mode: OperatorStateMode, data: OperatorStateData) -> OperatorStateEntry {
    OperatorStateEntry {
        metadata: OperatorStateMetadata {
            name: name.into(),
            mode,
            value_codec: "bytes".into(),
            key_codec: matches!(mode, OperatorStateMode::Broadcast).then(|| "bytes".to_string()),
        },
        data,
    }
}

#[test]
fn raw_snapshot_mirrors_the_real_encoding() {
    // Guards the corruption tests below: a well-formed raw snapshot decodes.
    let raw = RawSnapshot {
        states: vec![entry(
            "a",
            OperatorStateMode::List(Redistribution::EvenSplit),
            OperatorStateData::List(vec![b"x".to_vec()]),
        )],
    };
    let bytes = with_body(&postcard::to_stdvec(&raw).unwrap());
    let decoded = OperatorStateSnapshot::decode(&bytes).unwrap();
    assert_eq!(decoded.states(), raw.states.as_slice());
}

fn assert_corrupt(result: Result<OperatorStateSnapshot, Error>, needle: &str) {
    match result {
        Err(Error::Corrupt { detail, .. }) => {
            assert!(
                detail.contains(needle),
                "detail {detail:?} lacks {needle:?}"
            )
        }
        Err(other) => panic!("expected Corrupt({needle}), got {other}"),
        Ok(_) => panic!("expected Corrupt({needle}), decoded fine"),
    }
}

#[test]
fn bad_magic_is_corrupt() {
    let mut bytes = sample_store().snapshot_bytes().unwrap();
    bytes[0] ^= 0x20;
    assert_corrupt(OperatorStateSnapshot::decode(&bytes), "magic");
    assert_corrupt(OperatorStateSnapshot::decode(b""), "magic");
    assert_corrupt(OperatorStateSnapshot::decode(b"FLOW"), "magic");
    assert_corrupt(
        OperatorStateSnapshot::decode(b"FLOWSNAP\x01\0\0\0"),
        "magic",
    );
}

#[test]
fn unknown_version_is_reported() {
    let mut bytes = sample_store().snapshot_bytes().unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    match OperatorStateSnapshot::decode(&bytes) {
        Err(Error::UnsupportedFormatVersion {
            found, supported, ..
        }) => {
            assert_eq!(found, 2);
            assert_eq!(supported, OPERATOR_STATE_FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedFormatVersion, got {other:?}"),
    }
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert_corrupt(OperatorStateSnapshot::decode(&bytes), "version 0");
}

#[test]
fn damaged_body_is_a_checksum_mismatch() {
    let good = sample_store().snapshot_bytes().unwrap();
    let mut bytes = good.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    match OperatorStateSnapshot::decode(&bytes) {
        Err(Error::ChecksumMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(
                expected,
                u32::from_le_bytes(good[20..24].try_into().unwrap())
            );
            assert_eq!(actual, crc32c::crc32c(&bytes[24..]));
            assert_ne!(expected, actual);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    // A damaged checksum field is the same error.
    let mut bytes = good;
    bytes[21] ^= 0xff;
    assert!(matches!(
        OperatorStateSnapshot::decode(&bytes),
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[test]
fn truncated_or_extended_files_are_corrupt() {
    let good = sample_store().snapshot_bytes().unwrap();
    assert_corrupt(OperatorStateSnapshot::decode(&good[..20]), "header");
    assert_corrupt(
        OperatorStateSnapshot::decode(&good[..good.len() - 1]),
        "truncated",
    );
    let mut longer = good.clone();
    longer.push(0);
    assert_corrupt(OperatorStateSnapshot::decode(&longer), "truncated");
}

#[test]
fn corrupt_bodies_with_valid_checksums_are_corrupt() {
    // Not postcard of a snapshot at all.
    assert_corrupt(
        OperatorStateSnapshot::decode(&with_body(&[0xff; 7])),
        "undecodable",
    );
    // A valid snapshot followed by junk inside the body.
    let mut body = postcard::to_stdvec(&RawSnapshot { states: vec![] }).unwrap();
    body.push(42);
    assert_corrupt(
        OperatorStateSnapshot::decode(&with_body(&body)),
        "after the body",
    );
    // Names out of order, and a duplicate name.
    let list = |name: &str| {
        entry(
            name,
            OperatorStateMode::List(Redistribution::Union),
            OperatorStateData::List(vec![]),
        )
    };
    for states in [vec![list("b"), list("a")], vec![list("a"), list("a")]] {
        let body = postcard::to_stdvec(&RawSnapshot { states }).unwrap();
        assert_corrupt(
            OperatorStateSnapshot::decode(&with_body(&body)),
            "ascending",
        );
    }
    // List contents under broadcast metadata, and a list with a key codec.
    let mut wrong_data = entry(
        "a",
        OperatorStateMode::Broadcast,
        OperatorStateData::List(vec![]),
    );
    let mut keyed_list = list("a");
    keyed_list.metadata.key_codec = Some("bytes".into());
    for bad in [wrong_data.clone(), keyed_list] {
        let body = postcard::to_stdvec(&RawSnapshot { states: vec![bad] }).unwrap();
        assert_corrupt(
            OperatorStateSnapshot::decode(&with_body(&body)),
            "another kind",
        );
    }
    wrong_data.data = OperatorStateData::Broadcast(BTreeMap::new());
    let body = postcard::to_stdvec(&RawSnapshot {
        states: vec![wrong_data],
    })
    .unwrap();
    assert!(OperatorStateSnapshot::decode(&with_body(&body)).is_ok());
}

#[test]
fn no_truncation_or_single_byte_flip_decodes_or_panics() {
    let good = sample_store().snapshot_bytes().unwrap();
    for len in 0..good.len() {
        assert!(
            OperatorStateSnapshot::decode(&good[..len]).is_err(),
            "prefix of {len} bytes decoded"
        );
    }
    for i in 0..good.len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = good.clone();
            bytes[i] ^= bit;
            assert!(
                OperatorStateSnapshot::decode(&bytes).is_err(),
                "flip {bit:#x} at {i} decoded"
            );
        }
    }
}

// ---------------------------------------------------------------- checkpoint storage

#[tokio::test]
async fn write_read_and_restore_through_checkpoint_storage() {
    let storage = CheckpointStorage::in_memory();
    let id = CheckpointId(5);
    let old0 = store_with_lists(&[
        ("even", Redistribution::EvenSplit, &["a", "b", "c"]),
        ("all", Redistribution::Union, &["u0"]),
    ]);
    let old2 = store_with_lists(&[
        ("even", Redistribution::EvenSplit, &["d"]),
        ("all", Redistribution::Union, &["u2"]),
    ]);
    let file0 = write_operator_state(&storage, id, 0, &old0.snapshot())
        .await
        .unwrap();
    let file2 = write_operator_state(&storage, id, 2, &old2.snapshot())
        .await
        .unwrap();
    assert_eq!(
        file0.path,
        CheckpointStorage::exclusive_path(id, &operator_state_file_name(0))
    );
    assert!(file2.path.ends_with("/op-2.bin"));
    assert!(!file0.shared);
    assert_eq!(
        read_operator_state(&storage, &file0).await.unwrap(),
        old0.snapshot()
    );

    // Through a manifest, as an engine restores: old subtask 1 wrote no operator state.
    let max = MaxParallelism::new(8).unwrap();
    let subtask = |i: u32, operator: Option<FileRef>| SubtaskStateHandle {
        subtask_index: i,
        key_group_range: flowstate_api::key_groups::key_group_range_for_operator(max, p(3), i)
            .unwrap(),
        keyed: None,
        operator,
    };
    let manifest = CheckpointManifest::new(
        id,
        max,
        p(3),
        vec![
            subtask(0, Some(file0.clone())),
            subtask(1, None),
            subtask(2, Some(file2)),
        ],
    );
    storage.write_manifest(&manifest).await.unwrap();
    let files = storage.read_manifest(id).await.unwrap().operator_files();
    let mut evens = Vec::new();
    for i in 0..2 {
        let store = restore_operator_state(&storage, &files, i, p(2))
            .await
            .unwrap();
        assert_eq!(list_in(&store, "all"), ["u0", "u2"]);
        evens.push(list_in(&store, "even"));
    }
    assert_eq!(evens, [vec!["a", "b"], vec!["c", "d"]]);

    assert!(matches!(
        restore_operator_state(&storage, &files, 2, p(2)).await,
        Err(Error::OperatorIndexOutOfBounds { .. })
    ));
}

#[tokio::test]
async fn damaged_files_in_storage_are_reported_with_their_path() {
    let storage = CheckpointStorage::in_memory();
    let id = CheckpointId(9);
    let file = write_operator_state(&storage, id, 0, &sample_store().snapshot())
        .await
        .unwrap();

    // The checkpoint records another size than the stored file has.
    let mut wrong_size = file.clone();
    wrong_size.size += 1;
    match read_operator_state(&storage, &wrong_size).await {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains(&file.path)),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // Overwrite the file with a damaged copy of the same size.
    let mut bytes = storage.get(&file.path).await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    storage.put(&file.path, bytes.into(), false).await.unwrap();
    match restore_operator_state(&storage, &[Some(file.clone())], 0, p(1)).await {
        Err(Error::ChecksumMismatch { what, .. }) => assert!(what.contains(&file.path)),
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }

    // A missing file is a storage error, not a silently empty subtask.
    let missing = FileRef {
        path: CheckpointStorage::exclusive_path(id, "op-7.bin"),
        size: 10,
        shared: false,
    };
    assert!(matches!(
        read_operator_state(&storage, &missing).await,
        Err(Error::Storage { .. })
    ));
}
