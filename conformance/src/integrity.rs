//! Integrity of restores: a checkpoint restores exactly, or fails with an error that says the
//! stored bytes are damaged. Never a panic, never a silently different state.
//!
//! - Every byte of every file of a small checkpoint flipped (two patterns) and every
//!   truncation, for a full file and for the base and the delta of an incremental chain (for
//!   native handles: sampled positions of every native file): the restore fails with
//!   `Corrupt`, `ChecksumMismatch` or `UnsupportedFormatVersion` (native files: `Corrupt`,
//!   `ChecksumMismatch` or `Backend`, or exactly the checkpoint's state).
//! - Crafted files with valid checksums (blocks out of order, overlapping or empty, a row in
//!   the wrong key group or of the wrong kind, a non-canonical varint, a full file as a
//!   delta, a missing or reordered delta, handles that disagree with their files or overlap):
//!   the same `Corrupt` error on every backend, because the API's restore driver checks them
//!   before a backend sees a row.

use std::collections::BTreeMap;

use bytes::Bytes;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, Error, KeyContext, KeyedStateBackend,
    KeyedStateHandle, SnapshotKind, StateBackendFactory, StateKind, StateMetadata,
};

use crate::fixtures::{
    key, max_parallelism, parallelism, split_files, try_restore, with_file_size,
};
use crate::harness::{block_on, checkpoint, create_operator};

mod crafted;
pub use crafted::crafted_files_are_refused;

/// The namespaces the small checkpoint writes.
const NAMESPACES: [&[u8]; 2] = [b"", b"w"];

/// Short names and codec ids keep the files (and the number of damaged variants) small.
fn state(name: &str, kind: StateKind) -> StateMetadata {
    StateMetadata {
        name: name.into(),
        kind,
        namespace_codec: "n".into(),
        value_codec: "c".into(),
        user_key_codec: (kind == StateKind::Map).then(|| "u".into()),
    }
}

fn all_kinds() -> Vec<StateMetadata> {
    vec![
        state("v", StateKind::Value),
        state("l", StateKind::List),
        state("m", StateKind::Map),
        state("r", StateKind::Reducing),
        state("a", StateKind::Aggregating),
    ]
}

/// (state name, namespace, key).
type Entry = (String, Vec<u8>, Vec<u8>);

/// Everything a backend holds, by state name: what a restore must reproduce exactly.
#[derive(Debug, PartialEq)]
pub struct Dump {
    states: Vec<StateMetadata>,
    entries: BTreeMap<Entry, Vec<Vec<u8>>>,
}

/// Reads every entry of every registered state in the small checkpoint's namespaces.
pub fn dump<B: KeyedStateBackend + ?Sized>(backend: &B) -> flowstate_api::Result<Dump> {
    let mut states = Vec::new();
    let mut entries = BTreeMap::new();
    for (id, meta) in backend.registered_states() {
        for ns in NAMESPACES {
            for ctx in backend.keys(id, ns)? {
                let entry = match meta.kind {
                    StateKind::List => backend.list_get(id, &ctx, ns)?,
                    StateKind::Map => {
                        let mut map = backend.map_entries(id, &ctx, ns)?;
                        map.sort();
                        map.into_iter().flat_map(|(k, v)| [k, v]).collect()
                    }
                    _ => backend.get(id, &ctx, ns)?.into_iter().collect(),
                };
                entries.insert((meta.name.clone(), ns.to_vec(), ctx.key().to_vec()), entry);
            }
        }
        states.push(meta);
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Dump { states, entries })
}

/// Two keys of two key groups.
fn small_keys() -> [KeyContext; 2] {
    let first = key(1);
    let second = (2..)
        .map(key)
        .find(|k| k.key_group() != first.key_group())
        .unwrap();
    [first, second]
}

/// A small checkpoint of every state kind: a full one, then incremental ones until one holds
/// a delta (with tombstones) or, for a backend without deltas, two of them. Returns the
/// storage and each manifest with the state it must restore to.
fn small_checkpoints<F: StateBackendFactory>(
    factory: &F,
) -> (CheckpointStorage, Vec<(CheckpointManifest, Dump)>) {
    let storage = CheckpointStorage::in_memory();
    let subtasks = create_operator(factory, max_parallelism(), parallelism(1)).unwrap();
    let b = subtasks[0].backend.clone();
    let ids: Vec<_> = all_kinds()
        .iter()
        .map(|m| b.register_state(m).unwrap())
        .collect();
    let [v, l, m, r, a] = ids[..] else {
        unreachable!()
    };
    let keys = small_keys();
    for (i, k) in keys.iter().enumerate() {
        let i = i as u8;
        b.put(v, k, b"", &[b'x', i]).unwrap();
        b.list_append(l, k, b"", &[b"a", &[i]]).unwrap();
        b.map_put(m, k, b"", b"uk", &[i]).unwrap();
        b.put(r, k, b"", &[i]).unwrap();
        b.put(a, k, b"w", &[i, i]).unwrap();
    }
    let full = checkpoint(&subtasks, &storage, CheckpointId(1), SnapshotKind::Full).unwrap();
    let mut out = vec![(full, dump(b.as_ref()).unwrap())];
    for round in 0..2u8 {
        b.put(v, &keys[0], b"", &[b'y', round]).unwrap();
        b.remove([l, r][round as usize], &keys[1], b"").unwrap();
        b.map_put(m, &keys[0], b"w", b"uk2", &[round]).unwrap();
        let id = CheckpointId(2 + round as u64);
        let manifest = checkpoint(&subtasks, &storage, id, SnapshotKind::Incremental).unwrap();
        let has_delta = manifest
            .keyed_handles()
            .iter()
            .any(|h| matches!(h, KeyedStateHandle::Changelog { deltas, .. } if !deltas.is_empty()));
        out.push((manifest, dump(b.as_ref()).unwrap()));
        if has_delta {
            break;
        }
    }
    (storage, out)
}

/// Damaged copies of `bytes`: (description, bytes, size the handle records).
fn damaged(bytes: &Bytes, exhaustive: bool) -> Vec<(String, Bytes, u64)> {
    let len = bytes.len();
    let positions: Vec<usize> = if exhaustive {
        (0..len).collect()
    } else {
        // Native files are large and each restore opens an engine: the ends, where formats
        // keep their headers and footers, and a spread over the middle.
        let mut p: Vec<usize> = [0, 1, len.saturating_sub(8), len.saturating_sub(1)]
            .into_iter()
            .chain((1..8).map(|i| len * i / 8))
            .filter(|at| *at < len)
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let mut out = Vec::new();
    for at in positions {
        for pattern in [0x01u8, 0xff] {
            let mut d = bytes.to_vec();
            d[at] ^= pattern;
            out.push((
                format!("byte {at} xor {pattern:#04x}"),
                d.into(),
                len as u64,
            ));
        }
    }
    let cuts: Vec<usize> = if exhaustive {
        (0..len).collect()
    } else {
        vec![0, len / 2, len.saturating_sub(1)]
    };
    for cut in cuts.into_iter().filter(|c| *c < len) {
        out.push((
            format!("cut to {cut} bytes"),
            bytes.slice(..cut),
            cut as u64,
        ));
    }
    out
}

fn is_canonical_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. }
            | Error::ChecksumMismatch { .. }
            | Error::UnsupportedFormatVersion { .. }
    )
}

fn is_native_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. } | Error::ChecksumMismatch { .. } | Error::Backend { .. }
    )
}

/// Every file of a small checkpoint, damaged every way (canonical files: every byte with two
/// patterns and every truncation; native files: sampled), fails to restore with an error that
/// reports damage (a native file may also restore exactly the checkpoint's state, where its
/// format leaves a byte unchecked); never a panic. Covers a full file, and the base and the
/// delta of an incremental chain.
pub fn every_damaged_byte_is_detected<F: StateBackendFactory>(factory: &F) {
    let (storage, checkpoints) = small_checkpoints(factory);
    let range = max_parallelism().full_range();
    // Kinds of files damaged: full (canonical or chain base), delta, native.
    let mut kinds = BTreeMap::<&str, usize>::new();
    let mut done = std::collections::BTreeSet::new();
    let mut sizes = Vec::new();
    for (manifest, expected) in &checkpoints {
        let handles = manifest.keyed_handles();
        let restored = try_restore(
            factory,
            max_parallelism(),
            range,
            &storage,
            &handles,
            "undamaged",
        )
        .unwrap();
        assert_eq!(
            &dump(&restored).unwrap(),
            expected,
            "the undamaged checkpoint restores"
        );
        for handle in &handles {
            let (canonical, opaque) = split_files(handle);
            let files = canonical
                .iter()
                .enumerate()
                .map(|(i, f)| (if i == 0 { "full" } else { "delta" }, f, true))
                .chain(opaque.iter().map(|f| ("native", f, false)));
            // A file shared by two checkpoints is damaged once, under the first.
            for (kind, file, canonical) in files.filter(|f| done.insert(f.1.path.clone())) {
                *kinds.entry(kind).or_default() += 1;
                let original = block_on(storage.get(&file.path)).unwrap();
                sizes.push(original.len());
                for (how, bytes, size) in damaged(&original, canonical) {
                    block_on(storage.put(&file.path, bytes, file.shared)).unwrap();
                    let what = format!(
                        "checkpoint {}, {kind} file {} ({} bytes) with {how}",
                        manifest.checkpoint_id,
                        file.path,
                        original.len()
                    );
                    let recorded: Vec<_> = handles
                        .iter()
                        .map(|h| with_file_size(h, &file.path, size))
                        .collect();
                    match try_restore(
                        factory,
                        max_parallelism(),
                        range,
                        &storage,
                        &recorded,
                        &what,
                    ) {
                        // Every byte of a canonical file is under a check (header fields,
                        // trailer, checksums): no damage may go unnoticed.
                        Ok(_) if canonical => {
                            panic!("{what}: restored without an error")
                        }
                        Ok(backend) => assert_eq!(
                            &dump(&backend).unwrap(),
                            expected,
                            "{what}: restored without an error but not to the checkpoint's state"
                        ),
                        Err(e) if canonical && is_canonical_damage(&e) => {}
                        Err(e) if !canonical && is_native_damage(&e) => {}
                        Err(e) => panic!("{what}: an error that does not report damage: {e:?}"),
                    }
                }
                block_on(storage.put(&file.path, original, file.shared)).unwrap();
            }
        }
    }
    eprintln!(
        "{}: damaged {kinds:?} files of {sizes:?} bytes",
        factory.name()
    );
    assert!(
        kinds.contains_key("full") && (kinds.contains_key("delta") || kinds.contains_key("native")),
        "{}: the checkpoints hold a full file and a delta or native files: {kinds:?}",
        factory.name()
    );
}
