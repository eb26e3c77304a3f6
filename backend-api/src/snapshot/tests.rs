use bytes::Bytes;

use super::craft::{CraftedEntry, CraftedFile};
use super::*;
use crate::backend::{KeyedSnapshotView, RowValue, StateRow};
use crate::checkpoint::CheckpointId;
use crate::error::Error;
use crate::key_groups::{key_group_for_key_bytes, KeyGroup, KeyGroupRange, MaxParallelism};
use crate::state::{StateId, StateKind, StateMetadata};

/// Written by format-1 flowstate (before lineage): max parallelism 8, states value, list,
/// map, reducing; keys alpha, beta, gamma, delta.
const V1_FULL: &[u8] = include_bytes!("../../tests/data/snapshot-v1-full.fsnap");
/// A format-1 delta of the same: the values again and a tombstone for alpha's list.
const V1_DELTA: &[u8] = include_bytes!("../../tests/data/snapshot-v1-delta.fsnap");

fn max() -> MaxParallelism {
    MaxParallelism::new(8).unwrap()
}

fn meta(name: &str, kind: StateKind) -> StateMetadata {
    StateMetadata {
        name: name.into(),
        kind,
        namespace_codec: "ns".into(),
        value_codec: "v".into(),
        user_key_codec: (kind == StateKind::Map).then(|| "uk".into()),
    }
}

fn metadata(kind: SnapshotFileKind) -> SnapshotMetadata {
    SnapshotMetadata {
        max_parallelism: max(),
        key_group_range: max().full_range(),
        kind,
        states: vec![meta("v", StateKind::Value), meta("l", StateKind::List)],
        lineage: None,
    }
}

/// Two keys of different key groups, ascending by key group.
fn two_keys() -> [(&'static [u8], u32); 2] {
    let mut keys: Vec<(&'static [u8], u32)> = [b"alpha".as_slice(), b"beta", b"gamma", b"delta"]
        .into_iter()
        .map(|k| (k, key_group_for_key_bytes(k, max()).get()))
        .collect();
    keys.sort_by_key(|(_, kg)| *kg);
    keys.dedup_by_key(|(_, kg)| *kg);
    [keys[0], keys[1]]
}

fn value_row(key: &[u8]) -> FileRow<'_> {
    FileRow {
        state_index: 0,
        key,
        namespace: b"",
        value: RowValue::Value(b"value"),
    }
}

/// A well-formed two-block file as the crafting builder lays it out.
fn crafted() -> CraftedFile {
    let [(a, kga), (b, kgb)] = two_keys();
    CraftedFile::new(metadata(SnapshotFileKind::Full))
        .with_block(kga, &[value_row(a)])
        .with_block(kgb, &[value_row(b), value_row(b)])
}

fn corrupt_detail(result: Result<SnapshotFileInfo>) -> String {
    match result {
        Err(Error::Corrupt { detail, .. }) => detail,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Stores `bytes` and reads them back through the ranged-read path restore uses.
fn read_stored(bytes: Vec<u8>) -> (Result<SnapshotFileInfo>, CheckpointStorage, FileRef) {
    let storage = CheckpointStorage::in_memory();
    let rt = runtime();
    let file = rt
        .block_on(storage.put("f.fsnap", Bytes::from(bytes), false))
        .unwrap();
    let info = rt.block_on(read_info(&storage, &file));
    (info, storage, file)
}

#[test]
fn crafted_well_formed_file_reads_like_a_written_one() {
    let bytes = crafted().encode().unwrap();
    let info = read_info_from_bytes(&bytes).unwrap();
    assert_eq!(info.version, SNAPSHOT_FORMAT_VERSION);
    assert_eq!(info.index.len(), 2);
    let (stored, storage, file) = read_stored(bytes);
    assert_eq!(stored.unwrap(), info);
    let mut rows = 0;
    runtime()
        .block_on(read_blocks(
            &storage,
            &file,
            &info,
            &max().full_range(),
            |_, r| {
                rows += r.len();
                Ok(())
            },
        ))
        .unwrap();
    assert_eq!(rows, 3);
}

#[test]
fn index_offsets_must_tile_the_blocks() {
    let file = crafted();
    let laid = file.laid_out();
    let (first, second) = (laid[0], laid[1]);
    let entries = |e: [CraftedEntry; 2]| {
        let mut f = file.clone();
        f.index = Some(e.to_vec());
        f.encode().unwrap()
    };
    let cases = [
        (
            "offsets backwards",
            [
                CraftedEntry {
                    offset: second.offset,
                    length: second.length,
                    ..first
                },
                CraftedEntry {
                    offset: first.offset,
                    length: first.length,
                    ..second
                },
            ],
        ),
        (
            "overlapping",
            [
                first,
                CraftedEntry {
                    offset: second.offset - 1,
                    ..second
                },
            ],
        ),
        (
            "zero-length block",
            [
                CraftedEntry { length: 0, ..first },
                CraftedEntry {
                    offset: first.offset,
                    length: first.length + second.length,
                    ..second
                },
            ],
        ),
        (
            "a gap",
            [
                CraftedEntry {
                    length: first.length - 1,
                    ..first
                },
                second,
            ],
        ),
        (
            "past the metadata",
            [
                first,
                CraftedEntry {
                    length: second.length + 1,
                    ..second
                },
            ],
        ),
        (
            "key groups not ascending",
            [
                CraftedEntry {
                    key_group: second.key_group,
                    ..first
                },
                CraftedEntry {
                    key_group: first.key_group,
                    ..second
                },
            ],
        ),
        (
            "key group beyond the file's range",
            [
                first,
                CraftedEntry {
                    key_group: 8,
                    ..second
                },
            ],
        ),
    ];
    for (what, case) in cases {
        let bytes = entries(case);
        let detail = corrupt_detail(read_info_from_bytes(&bytes));
        assert!(detail.contains("index entry"), "{what}: {detail}");
        // Before the check, "offsets backwards" panicked in read_blocks (debug builds).
        let (stored, _, _) = read_stored(bytes);
        corrupt_detail(stored);
    }
}

#[test]
fn read_blocks_never_trusts_a_hand_built_index() {
    let bytes = crafted().encode().unwrap();
    let mut info = read_info_from_bytes(&bytes).unwrap();
    let (_, storage, file) = read_stored(bytes);
    info.index.swap(0, 1);
    info.index[0].key_group = KeyGroup::new(0, max()).unwrap();
    info.index[1].key_group = KeyGroup::new(1, max()).unwrap();
    info.index[1].length = u64::MAX;
    let result = runtime().block_on(read_blocks(
        &storage,
        &file,
        &info,
        &max().full_range(),
        |_, _| Ok(()),
    ));
    assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
}

#[test]
fn header_is_read_and_agrees_with_the_trailer() {
    let good = crafted();
    let patched = |f: &dyn Fn(&mut CraftedFile)| {
        let mut file = good.clone();
        f(&mut file);
        file.encode().unwrap()
    };
    let mut bad_magic = good.encode().unwrap();
    bad_magic[0] ^= 0x20;
    let cases = [
        ("bad magic in the header", bad_magic),
        (
            "header version 1, trailer 2",
            patched(&|f| f.header_version = 1),
        ),
        ("unknown flag", patched(&|f| f.flags = 0x10)),
        ("delta flag on a full file", patched(&|f| f.flags = 1)),
        (
            "no delta flag on a delta",
            patched(&|f| {
                f.metadata.kind = SnapshotFileKind::Delta;
                f.flags = 0;
            }),
        ),
    ];
    for (what, bytes) in cases {
        let detail = corrupt_detail(read_info_from_bytes(&bytes));
        assert!(
            detail.contains("header") || detail.contains("flags"),
            "{what}: {detail}"
        );
        let (stored, _, _) = read_stored(bytes);
        corrupt_detail(stored);
    }
    for version in [0, 3, 99] {
        let bytes = patched(&|f| {
            f.header_version = version;
            f.version = version;
        });
        match read_info_from_bytes(&bytes) {
            Err(Error::UnsupportedFormatVersion { found, .. }) => assert_eq!(found, version),
            other => panic!("version {version}: {other:?}"),
        }
    }
}

#[test]
fn metadata_is_checked() {
    type Patch = dyn Fn(&mut CraftedFile);
    let cases: [(&str, &Patch); 4] = [
        ("range beyond max parallelism", &|f| {
            f.metadata.key_group_range = KeyGroupRange::new(0, 8).unwrap()
        }),
        ("duplicate state", &|f| {
            f.metadata.states[1].name = "v".into()
        }),
        ("a full file naming a previous file", &|f| {
            f.metadata.lineage = Some(FileLineage {
                checkpoint_id: CheckpointId(3),
                previous: Some("base".into()),
            })
        }),
        ("a delta naming none", &|f| {
            f.metadata.kind = SnapshotFileKind::Delta;
            f.flags = 1;
            f.metadata.lineage = Some(FileLineage {
                checkpoint_id: CheckpointId(3),
                previous: None,
            })
        }),
    ];
    for (what, patch) in cases {
        let mut file = CraftedFile::new(metadata(SnapshotFileKind::Full));
        patch(&mut file);
        let detail = corrupt_detail(read_info_from_bytes(&file.encode().unwrap()));
        assert!(!detail.is_empty(), "{what}");
    }
    // Version-2 metadata under a version-1 trailer leaves the lineage bytes unread.
    let mut file = CraftedFile::new(metadata(SnapshotFileKind::Full));
    file.metadata.lineage = Some(FileLineage {
        checkpoint_id: CheckpointId(1),
        previous: None,
    });
    let mut bytes = file.encode().unwrap();
    let len = bytes.len();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    bytes[len - 12..len - 8].copy_from_slice(&1u32.to_le_bytes());
    corrupt_detail(read_info_from_bytes(&bytes));
}

#[test]
fn non_canonical_varints_are_corrupt() {
    let [(key, _), _] = two_keys();
    let mut block = vec![0u8, 0x80, 0x00]; // value row, state index 0 in two bytes
    block.push(key.len() as u8);
    block.extend_from_slice(key);
    block.extend_from_slice(&[0, 1, b'x']);
    assert!(matches!(decode_block(&block), Err(Error::Corrupt { .. })));
    block[1..3].copy_from_slice(&[0x00, 0x00]);
    block.remove(2);
    assert_eq!(decode_block(&block).unwrap().len(), 1);
}

#[test]
fn version_1_files_stay_readable() {
    for (bytes, kind, rows) in [
        (V1_FULL, SnapshotFileKind::Full, 16),
        (V1_DELTA, SnapshotFileKind::Delta, 5),
    ] {
        let info = read_info_from_bytes(bytes).unwrap();
        assert_eq!(info.version, 1);
        assert_eq!(info.metadata.kind, kind);
        assert_eq!(info.metadata.max_parallelism, max());
        assert_eq!(info.metadata.lineage, None);
        let names: Vec<&str> = info
            .metadata
            .states
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["value", "list", "map", "reducing"]);
        let (stored, storage, file) = read_stored(bytes.to_vec());
        assert_eq!(stored.unwrap(), info);
        let mut seen = Vec::new();
        runtime()
            .block_on(read_blocks(
                &storage,
                &file,
                &info,
                &max().full_range(),
                |kg, block| {
                    for row in block {
                        assert_eq!(key_group_for_key_bytes(row.key, max()), kg);
                        seen.push(kind_name(&row.value));
                    }
                    Ok(())
                },
            ))
            .unwrap();
        assert_eq!(seen.len(), rows);
        assert_eq!(seen.contains(&"tombstone"), kind == SnapshotFileKind::Delta);
    }
}

fn kind_name(value: &RowValue<'_>) -> &'static str {
    match value {
        RowValue::Value(_) => "value",
        RowValue::List(_) => "list",
        RowValue::MapEntry { .. } => "map",
        RowValue::Tombstone => "tombstone",
    }
}

/// A view over fixed rows, for the writer.
struct View(Vec<(KeyGroup, Vec<u8>)>);

impl KeyedSnapshotView for View {
    fn max_parallelism(&self) -> MaxParallelism {
        max()
    }
    fn key_group_range(&self) -> KeyGroupRange {
        max().full_range()
    }
    fn states(&self) -> Vec<(StateId, StateMetadata)> {
        vec![(StateId(7), meta("v", StateKind::Value))]
    }
    fn for_each_row(
        &self,
        key_group: KeyGroup,
        visit: &mut dyn FnMut(StateRow<'_>) -> Result<()>,
    ) -> Result<()> {
        for (kg, key) in &self.0 {
            if *kg == key_group {
                visit(StateRow {
                    state: StateId(7),
                    key,
                    namespace: b"n",
                    value: RowValue::Value(b"v"),
                })?;
            }
        }
        Ok(())
    }
}

#[test]
fn written_files_record_lineage_and_survive_every_flip_and_cut() {
    let view = View(
        two_keys()
            .iter()
            .map(|(k, kg)| (KeyGroup::new(*kg, max()).unwrap(), k.to_vec()))
            .collect(),
    );
    let lineage = FileLineage {
        checkpoint_id: CheckpointId(9),
        previous: Some("base.fsnap".into()),
    };
    let (bytes, stats) =
        write_snapshot_with(&view, SnapshotFileKind::Delta, Some(lineage.clone())).unwrap();
    assert_eq!((stats.rows, stats.key_groups), (2, 2));
    let info = read_info_from_bytes(&bytes).unwrap();
    assert_eq!(info.metadata.lineage, Some(lineage));
    assert_eq!(
        &bytes[8..16],
        &[2, 0, 0, 0, 1, 0, 0, 0],
        "version 2, delta flag"
    );

    let rows_of = |bytes: &[u8], info: &SnapshotFileInfo| -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for e in &info.index {
            let block = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            format::check_crc(String::new(), block, e.crc32c)?;
            out.extend(decode_block(block)?.iter().map(|r| r.key.to_vec()));
        }
        Ok(out)
    };
    let original = rows_of(&bytes, &info).unwrap();
    let mut damaged_variants = Vec::new();
    for at in 0..bytes.len() {
        for pattern in [0x01u8, 0xff] {
            let mut d = bytes.clone();
            d[at] ^= pattern;
            damaged_variants.push(d);
        }
    }
    damaged_variants.extend((0..bytes.len()).map(|cut| bytes[..cut].to_vec()));
    for d in damaged_variants {
        // Every damaged variant is refused: header, trailer, metadata, index and blocks are
        // all covered by a check.
        let result = read_info_from_bytes(&d).and_then(|i| rows_of(&d, &i));
        match result {
            Err(
                Error::Corrupt { .. }
                | Error::ChecksumMismatch { .. }
                | Error::UnsupportedFormatVersion { .. },
            ) => {}
            Ok(rows) => panic!("damage went unnoticed (rows {rows:?}, original {original:?})"),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
}
