//! Crafted snapshot files: valid checksums around content no writer produces, and handles
//! that disagree with their files (see the parent module).

use std::panic::AssertUnwindSafe;

use flowstate_api::list_encoding;
use flowstate_api::snapshot::craft::{CraftedEntry, CraftedFile};
use flowstate_api::snapshot::{FileLineage, FileRow, SnapshotFileKind, SnapshotMetadata};
use flowstate_api::{
    CheckpointId, CheckpointStorage, Error, FileRef, KeyContext, KeyGroupRange, KeyedStateBackend,
    KeyedStateHandle, MaxParallelism, RowValue, StateBackendFactory, StateKind,
};

use super::{dump, state};
use crate::fixtures::{key, max, try_restore};
use crate::harness::block_on;

fn range(start: u32, end: u32) -> KeyGroupRange {
    KeyGroupRange::new(start, end).unwrap()
}

fn crafted_metadata(kind: SnapshotFileKind, range: KeyGroupRange) -> SnapshotMetadata {
    SnapshotMetadata {
        max_parallelism: max(),
        key_group_range: range,
        kind,
        states: vec![
            state("v", StateKind::Value),
            state("l", StateKind::List),
            state("m", StateKind::Map),
        ],
        lineage: None,
    }
}

fn row<'a>(state_index: u32, key: &'a [u8], value: RowValue<'a>) -> FileRow<'a> {
    FileRow {
        state_index,
        key,
        namespace: b"",
        value,
    }
}

/// Two keys of the first half of the key groups, in different key groups (ascending), and
/// one of the second half.
fn crafted_keys() -> (KeyContext, KeyContext, KeyContext) {
    let low = |k: &KeyContext| k.key_group().get() < 64;
    let mut keys = (0..).map(key);
    let a = keys.find(low).unwrap();
    let b = keys
        .find(|k| low(k) && k.key_group() != a.key_group())
        .unwrap();
    let c = (0..).map(key).find(|k| !low(k)).unwrap();
    if a.key_group() < b.key_group() {
        (a, b, c)
    } else {
        (b, a, c)
    }
}

struct Crafting {
    storage: CheckpointStorage,
    keys: (KeyContext, KeyContext, KeyContext),
    list: Vec<u8>,
}

impl Crafting {
    fn new() -> Self {
        Self {
            storage: CheckpointStorage::in_memory(),
            keys: crafted_keys(),
            list: list_encoding::encode([b"e1".as_slice(), b"e2"]),
        }
    }

    /// A full file of `[0, 127]`: key a with a value, a list and a map entry; key b with a
    /// value; key c (second half) with a value.
    fn full(&self) -> CraftedFile {
        let (a, b, c) = &self.keys;
        CraftedFile::new(crafted_metadata(SnapshotFileKind::Full, max().full_range()))
            .with_block(
                a.key_group().get(),
                &[
                    row(0, a.key(), RowValue::Value(b"va")),
                    row(1, a.key(), RowValue::List(&self.list)),
                    row(
                        2,
                        a.key(),
                        RowValue::MapEntry {
                            user_key: b"uk",
                            value: b"mv",
                        },
                    ),
                ],
            )
            .with_block(
                b.key_group().get(),
                &[row(0, b.key(), RowValue::Value(b"vb"))],
            )
            .with_block(
                c.key_group().get(),
                &[row(0, c.key(), RowValue::Value(b"vc"))],
            )
    }

    /// A delta on top of [`Self::full`]: a's list cleared, b's value changed.
    fn delta(&self, checkpoint: u64, previous: &FileRef) -> CraftedFile {
        let (a, b, _) = &self.keys;
        let mut meta = crafted_metadata(SnapshotFileKind::Delta, max().full_range());
        meta.lineage = Some(FileLineage {
            checkpoint_id: CheckpointId(checkpoint),
            previous: Some(flowstate_api::snapshot::lineage_name(previous).to_string()),
        });
        CraftedFile::new(meta)
            .with_block(a.key_group().get(), &[row(1, a.key(), RowValue::Tombstone)])
            .with_block(
                b.key_group().get(),
                &[
                    row(0, b.key(), RowValue::Tombstone),
                    row(0, b.key(), RowValue::Value(b"vb2")),
                ],
            )
    }

    fn with_lineage(mut file: CraftedFile, checkpoint: u64) -> CraftedFile {
        file.metadata.lineage = Some(FileLineage {
            checkpoint_id: CheckpointId(checkpoint),
            previous: None,
        });
        file
    }

    fn put(&self, name: &str, file: &CraftedFile) -> FileRef {
        let bytes = file.encode().unwrap();
        block_on(
            self.storage
                .put(&format!("shared/{name}.fsnap"), bytes.into(), true),
        )
        .unwrap()
    }
}

fn canonical(range: KeyGroupRange, file: &FileRef) -> KeyedStateHandle {
    KeyedStateHandle::Canonical {
        key_group_range: range,
        file: file.clone(),
    }
}

fn chain(base: &FileRef, deltas: &[&FileRef]) -> KeyedStateHandle {
    KeyedStateHandle::Changelog {
        key_group_range: max().full_range(),
        base: base.clone(),
        deltas: deltas.iter().map(|d| (*d).clone()).collect(),
    }
}

/// Well-formed crafted files restore on every backend, with exactly their rows: the cases
/// below differ from them in one respect each.
fn crafted_files_restore<F: StateBackendFactory>(factory: &F, c: &Crafting) {
    let (a, b, cc) = &c.keys;
    let full = c.put("good-full", &Crafting::with_lineage(c.full(), 1));
    let delta = c.put("good-delta", &c.delta(2, &full));
    let restore = |handle: KeyedStateHandle, what: &str| {
        try_restore(
            factory,
            max(),
            max().full_range(),
            &c.storage,
            &[handle],
            what,
        )
        .unwrap_or_else(|e| panic!("a well-formed {what} restores: {e}"))
    };
    let restored = restore(canonical(max().full_range(), &full), "crafted full file");
    let states = crafted_metadata(SnapshotFileKind::Full, max().full_range()).states;
    let [v, l, m] = [0, 1, 2].map(|i| restored.register_state(&states[i]).unwrap());
    assert_eq!(
        restored.get(v, a, b"").unwrap().as_deref(),
        Some(&b"va"[..])
    );
    assert_eq!(
        restored.list_get(l, a, b"").unwrap(),
        vec![b"e1".to_vec(), b"e2".to_vec()]
    );
    assert_eq!(
        restored.map_get(m, a, b"", b"uk").unwrap().as_deref(),
        Some(&b"mv"[..])
    );
    assert_eq!(
        restored.get(v, b, b"").unwrap().as_deref(),
        Some(&b"vb"[..])
    );
    assert_eq!(
        restored.get(v, cc, b"").unwrap().as_deref(),
        Some(&b"vc"[..])
    );

    let restored = restore(chain(&full, &[&delta]), "crafted chain");
    let dumped = dump(&restored).unwrap();
    let get = |state: &str, k: &KeyContext| {
        dumped
            .entries
            .get(&(state.to_string(), Vec::new(), k.key().to_vec()))
            .cloned()
    };
    assert_eq!(
        get("v", b),
        Some(vec![b"vb2".to_vec()]),
        "the delta's value"
    );
    assert_eq!(get("l", a), None, "the delta's tombstone");
    assert_eq!(get("m", a), Some(vec![b"uk".to_vec(), b"mv".to_vec()]));
    assert_eq!(dumped.entries.len(), 4);
}

/// One crafted case: handles, the range restored, and a phrase the error names.
struct Case {
    what: &'static str,
    handles: Vec<KeyedStateHandle>,
    target: KeyGroupRange,
    says: &'static str,
}

/// Files with valid checksums that no writer produces, and handles that disagree with their
/// files, are refused with the same `Corrupt` error on every backend (the API's restore
/// driver checks them before any row reaches the backend).
pub fn crafted_files_are_refused<F: StateBackendFactory>(factory: &F) {
    let c = Crafting::new();
    crafted_files_restore(factory, &c);
    let (a, b, _) = &c.keys;
    let full = c.full();
    let laid = full.laid_out();
    let with_index = |name: &str, entries: Vec<CraftedEntry>| {
        let mut f = full.clone();
        f.index = Some(entries);
        c.put(name, &f)
    };
    let whole = max().full_range();
    let one = |what, file: FileRef, says| Case {
        what,
        handles: vec![canonical(whole, &file)],
        target: whole,
        says,
    };
    let with_row = |name: &str, kind: SnapshotFileKind, rows: &[FileRow<'_>]| {
        let meta = crafted_metadata(kind, whole);
        c.put(
            name,
            &CraftedFile::new(meta).with_block(a.key_group().get(), rows),
        )
    };
    let (e0, e1, e2) = (laid[0], laid[1], laid[2]);
    let mut raw_varint = full.clone();
    // a's value row with its key length as a two-byte varint.
    let mut block = vec![0u8, 0, 0x80 | a.key().len() as u8, 0x00];
    block.extend_from_slice(a.key());
    block.extend_from_slice(&[0, 1, b'x']);
    raw_varint.blocks[0].1 = block;

    let base = c.put("good-base", &Crafting::with_lineage(c.full(), 1));
    let d1 = c.put("d1", &c.delta(2, &base));
    let d2 = c.put("d2", &c.delta(3, &d1));
    let delta_as_full = c.put("delta-as-full", &c.delta(2, &base));
    let low_file = c.put(
        "low",
        &CraftedFile::new(crafted_metadata(SnapshotFileKind::Full, range(0, 63))).with_block(
            a.key_group().get(),
            &[row(0, a.key(), RowValue::Value(b"va"))],
        ),
    );
    let mut outside = CraftedFile::new(crafted_metadata(SnapshotFileKind::Full, range(0, 63)))
        .with_block(
            a.key_group().get(),
            &[row(0, a.key(), RowValue::Value(b"va"))],
        );
    outside.blocks.push((100, outside.blocks[0].1.clone()));
    let high_file = c.put(
        "high",
        &CraftedFile::new(crafted_metadata(SnapshotFileKind::Full, range(64, 127))),
    );
    let whole_file = c.put("whole", &c.full());

    let cases = vec![
        one(
            "block offsets backwards",
            with_index(
                "backwards",
                vec![
                    CraftedEntry {
                        offset: e1.offset,
                        length: e1.length,
                        ..e0
                    },
                    CraftedEntry {
                        offset: e0.offset,
                        length: e0.length,
                        ..e1
                    },
                    e2,
                ],
            ),
            "index entry",
        ),
        one(
            "overlapping blocks",
            with_index(
                "overlapping",
                vec![
                    e0,
                    CraftedEntry {
                        offset: e1.offset - 1,
                        ..e1
                    },
                    e2,
                ],
            ),
            "index entry",
        ),
        one(
            "a zero-length block",
            with_index(
                "zero-length",
                vec![
                    CraftedEntry { length: 0, ..e0 },
                    CraftedEntry {
                        offset: e0.offset,
                        length: e0.length + e1.length,
                        ..e1
                    },
                    e2,
                ],
            ),
            "index entry",
        ),
        one(
            "a row whose key hashes to another key group",
            with_row(
                "foreign-key",
                SnapshotFileKind::Full,
                &[row(0, b.key(), RowValue::Value(b"x"))],
            ),
            "belongs to key group",
        ),
        Case {
            what: "a block of a key group outside the file's range",
            handles: vec![canonical(range(0, 63), &c.put("outside", &outside))],
            target: range(0, 63),
            says: "outside the file's range",
        },
        one(
            "a non-canonical varint",
            c.put("varint", &raw_varint),
            "varint",
        ),
        one(
            "a row naming a state the file does not have",
            with_row(
                "state-9",
                SnapshotFileKind::Full,
                &[row(9, a.key(), RowValue::Value(b"x"))],
            ),
            "names state 9",
        ),
        one(
            "a map entry row for a value state",
            with_row(
                "kind",
                SnapshotFileKind::Full,
                &[row(
                    0,
                    a.key(),
                    RowValue::MapEntry {
                        user_key: b"k",
                        value: b"v",
                    },
                )],
            ),
            "map entry row for value state",
        ),
        one(
            "a tombstone in a full file",
            with_row(
                "tombstone",
                SnapshotFileKind::Full,
                &[row(0, a.key(), RowValue::Tombstone)],
            ),
            "tombstone row",
        ),
        one(
            "a list row that is no list",
            with_row(
                "list",
                SnapshotFileKind::Full,
                &[row(1, a.key(), RowValue::List(&[9, 0, 0, 0, 1]))],
            ),
            "element",
        ),
        Case {
            what: "a full file given as a delta",
            handles: vec![chain(&base, &[&whole_file])],
            target: whole,
            says: "a Full file where the handle needs a Delta file",
        },
        one(
            "a delta file as a canonical handle",
            delta_as_full.clone(),
            "a Delta file where the handle needs a Full file",
        ),
        Case {
            what: "a delta file as a chain's base",
            handles: vec![chain(&delta_as_full, &[&d1])],
            target: whole,
            says: "a Delta file where the handle needs a Full file",
        },
        Case {
            what: "a chain missing its first delta",
            handles: vec![chain(&base, &[&d2])],
            target: whole,
            says: "missing, extra or out of order",
        },
        Case {
            what: "a chain with its deltas swapped",
            handles: vec![chain(&base, &[&d2, &d1])],
            target: whole,
            says: "missing, extra or out of order",
        },
        Case {
            what: "a handle wider than its file",
            handles: vec![canonical(whole, &low_file)],
            target: whole,
            says: "but its handle claims",
        },
        Case {
            what: "a handle narrower than its file",
            handles: vec![
                canonical(range(0, 63), &whole_file),
                canonical(range(64, 127), &high_file),
            ],
            target: whole,
            says: "but its handle claims",
        },
        Case {
            what: "a handle claiming [0, 63] of a [0, 127] file, restored into [64, 127]",
            handles: vec![canonical(range(0, 63), &whole_file)],
            target: range(64, 127),
            says: "is in no handle",
        },
        Case {
            what: "two handles holding the same key groups",
            handles: vec![
                canonical(whole, &whole_file),
                canonical(range(64, 127), &high_file),
            ],
            target: whole,
            says: "both hold key groups",
        },
    ];
    // Every case runs; the failure lists all that were not refused for their reason.
    let mut failures = Vec::new();
    for case in cases {
        let what = format!("{}: {}", factory.name(), case.what);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            try_restore(
                factory,
                max(),
                case.target,
                &c.storage,
                &case.handles,
                &what,
            )
        }));
        match result {
            Err(_) => failures.push(format!("{what}: panicked")),
            Ok(Ok(_)) => failures.push(format!("{what}: restored without an error")),
            Ok(Err(e @ Error::Corrupt { .. })) if e.to_string().contains(case.says) => {}
            Ok(Err(e)) => failures.push(format!(
                "{what}: {e:?}, not Corrupt for the crafted reason ('{}')",
                case.says
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A file of another max parallelism behind the first handle is caught as well.
    let mut meta = crafted_metadata(SnapshotFileKind::Full, range(64, 127));
    meta.max_parallelism = MaxParallelism::new(256).unwrap();
    let other_max = c.put("max-256", &CraftedFile::new(meta));
    let handles = [
        canonical(range(0, 63), &low_file),
        canonical(range(64, 127), &other_max),
    ];
    let what = "a second file of max parallelism 256";
    match try_restore(factory, max(), whole, &c.storage, &handles, what) {
        Err(Error::MaxParallelismMismatch {
            snapshot: 256,
            configured: 128,
        }) => {}
        other => panic!("{what}: {:?}", other.map(|_| ())),
    }
}
