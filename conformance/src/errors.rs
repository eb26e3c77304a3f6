//! Error cases: another max parallelism on restore, a state re-registered with another kind or
//! codec (live and after a restore), and damaged snapshot files (flipped bytes, truncation, an
//! unknown format version). Every one must come back as the documented error, never as a
//! panic and never as a silently wrong restore.

use bytes::Bytes;
use flowstate_api::snapshot::{read_info_from_bytes, TRAILER_LEN};
use flowstate_api::typed::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, Error, FileRef, KeyGroupRange,
    KeyedStateBackend, KeyedStateHandle, MaxParallelism, SerdeCodec, SnapshotKind,
    StateBackendFactory, StateKind,
};

use crate::dataset::{map_descriptor, Job, Mean, Model, Ns};
use crate::fixtures::{
    full_backend, key, max_parallelism, parallelism, shared, split_files, try_restore,
    with_file_size, Rng,
};
use crate::harness::{block_on, checkpoint, create_operator, restore_operator};

/// A parallelism-1 job with the dataset, checkpointed (full) once.
fn stored_checkpoint<F: StateBackendFactory>(
    factory: &F,
) -> (CheckpointStorage, CheckpointManifest) {
    let storage = CheckpointStorage::in_memory();
    let job =
        Job::new(create_operator(factory, max_parallelism(), parallelism(1)).unwrap()).unwrap();
    let mut model = Model::default();
    job.run_random(&mut model, &mut Rng::new(71), 2000, 600);
    let manifest =
        checkpoint(&job.subtasks, &storage, CheckpointId(1), SnapshotKind::Full).unwrap();
    (storage, manifest)
}

/// [`try_restore`] into a backend owning every key group at the default max parallelism.
fn restore_whole<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    what: &str,
) -> flowstate_api::Result<F::Backend> {
    let max = max_parallelism();
    try_restore(factory, max, max.full_range(), storage, handles, what)
}

fn expect_error<T>(
    result: flowstate_api::Result<T>,
    accept: impl Fn(&Error) -> bool,
    what: &str,
) -> Error {
    match result {
        Ok(_) => panic!("{what}: restore succeeded on damaged input"),
        Err(e) if accept(&e) => e,
        Err(e) => panic!("{what}: unexpected error kind: {e:?}"),
    }
}

/// Restoring with another max parallelism than the snapshot's is refused with
/// `MaxParallelismMismatch` naming both values, whichever subtask restores.
pub fn max_parallelism_mismatch<F: StateBackendFactory>(factory: &F) {
    let (storage, manifest) = stored_checkpoint(factory);
    let handles = manifest.keyed_handles();
    let cases = [
        (256, KeyGroupRange::new(0, 255).unwrap()),
        (64, KeyGroupRange::new(0, 31).unwrap()),
        (64, KeyGroupRange::new(32, 63).unwrap()),
    ];
    for (configured, range) in cases {
        let max = MaxParallelism::new(configured).unwrap();
        let what = format!("restore at max parallelism {configured}, range {range}");
        let result = try_restore(factory, max, range, &storage, &handles, &what);
        let err = expect_error(
            result,
            |e| matches!(e, Error::MaxParallelismMismatch { .. }),
            &what,
        );
        match &err {
            Error::MaxParallelismMismatch {
                snapshot,
                configured: c,
            } => {
                assert_eq!((*snapshot, *c), (128, configured), "{what}: {err}")
            }
            _ => unreachable!(),
        }
        let message = err.to_string();
        assert!(
            message.contains("128") && message.contains(&configured.to_string()),
            "{what}: the message names both values: {message}"
        );
    }
}

fn assert_kind_mismatch<T: std::fmt::Debug>(
    result: flowstate_api::Result<T>,
    name: &str,
    existing: StateKind,
    requested: StateKind,
) {
    match result {
        Err(Error::StateKindMismatch {
            name: n,
            existing: e,
            requested: r,
        }) => assert_eq!((n.as_str(), e, r), (name, existing, requested)),
        other => panic!("registering '{name}' as {requested} over {existing} returned {other:?}, not StateKindMismatch"),
    }
}

/// A name registered as one kind cannot be registered as another, live or after a restore
/// (where the snapshot's metadata is registered first); the failed attempt changes nothing.
pub fn state_kind_mismatch<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let value = ValueStateDescriptor::<u64>::new("s")
        .bind(shared(&backend))
        .unwrap();
    value.update(&key(1), &5).unwrap();
    assert_kind_mismatch(
        ListStateDescriptor::<u64>::new("s").bind(shared(&backend)),
        "s",
        StateKind::Value,
        StateKind::List,
    );
    assert_kind_mismatch(
        MapStateDescriptor::<u64, u64>::new("s").bind(shared(&backend)),
        "s",
        StateKind::Value,
        StateKind::Map,
    );
    assert_kind_mismatch(
        ReducingStateDescriptor::<u64>::new("s", |a, b| a + b).bind(shared(&backend)),
        "s",
        StateKind::Value,
        StateKind::Reducing,
    );
    assert_kind_mismatch(
        AggregatingStateDescriptor::<i64, (i64, u64), i64>::new("s", Mean).bind(shared(&backend)),
        "s",
        StateKind::Value,
        StateKind::Aggregating,
    );
    assert_eq!(
        backend.registered_states().len(),
        1,
        "failed registrations register nothing"
    );
    assert_eq!(
        value.get(&key(1)).unwrap(),
        Some(5),
        "failed registrations change nothing"
    );

    let (storage, manifest) = stored_checkpoint(factory);
    let restored = restore_operator(factory, &storage, &manifest, parallelism(2)).unwrap();
    for s in &restored {
        // "dataset-map" was written as a map; nothing was bound on the restored backend yet.
        assert_kind_mismatch(
            ValueStateDescriptor::<String>::new("dataset-map")
                .with_namespace::<Ns>()
                .bind(s.keyed()),
            "dataset-map",
            StateKind::Map,
            StateKind::Value,
        );
        assert!(
            map_descriptor().bind(s.keyed()).is_ok(),
            "the right kind still binds"
        );
    }
}

fn assert_codec_mismatch<T: std::fmt::Debug>(
    result: flowstate_api::Result<T>,
    what: &str,
    existing: &str,
    requested: &str,
) {
    match result {
        Err(Error::StateCodecMismatch {
            what: w,
            existing: e,
            requested: r,
            ..
        }) => assert_eq!((w, e.as_str(), r.as_str()), (what, existing, requested)),
        other => panic!("a {what} codec '{requested}' over '{existing}' returned {other:?}, not StateCodecMismatch"),
    }
}

/// A name registered with one codec id (value, namespace or map user key) cannot be
/// registered with another, live or after a restore (the restored metadata comes first).
pub fn state_codec_mismatch<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let v1 = ValueStateDescriptor::<u64>::new("c")
        .with_value_codec(SerdeCodec::<u64>::with_id("count/v1"));
    v1.bind(shared(&backend)).unwrap();
    let v2 = ValueStateDescriptor::<u64>::new("c")
        .with_value_codec(SerdeCodec::<u64>::with_id("count/v2"));
    assert_codec_mismatch(v2.bind(shared(&backend)), "value", "count/v1", "count/v2");
    let ns = ValueStateDescriptor::<u64>::new("c")
        .with_value_codec(SerdeCodec::<u64>::with_id("count/v1"))
        .with_namespace_codec(SerdeCodec::<u32>::with_id("window/v9"));
    assert_codec_mismatch(
        ns.bind(shared(&backend)),
        "namespace",
        "void-namespace",
        "window/v9",
    );
    MapStateDescriptor::<String, u64>::new("m")
        .with_user_key_codec(SerdeCodec::<String>::with_id("name/v1"))
        .bind(shared(&backend))
        .unwrap();
    assert_codec_mismatch(
        MapStateDescriptor::<String, u64>::new("m")
            .with_user_key_codec(SerdeCodec::<String>::with_id("name/v2"))
            .bind(shared(&backend)),
        "user key",
        "name/v1",
        "name/v2",
    );

    // After a restore, at another parallelism.
    let storage = CheckpointStorage::in_memory();
    let subtasks = create_operator(factory, max_parallelism(), parallelism(1)).unwrap();
    let state = v1.bind(subtasks[0].keyed()).unwrap();
    for k in 0..300 {
        state.update(&key(k), &(k * 3)).unwrap();
    }
    let manifest = checkpoint(&subtasks, &storage, CheckpointId(1), SnapshotKind::Full).unwrap();
    let restored = restore_operator(factory, &storage, &manifest, parallelism(2)).unwrap();
    for s in &restored {
        assert_codec_mismatch(v2.bind(s.keyed()), "value", "count/v1", "count/v2");
        let state = v1.bind(s.keyed()).unwrap();
        let range = s.backend.key_group_range();
        for k in (0..300).filter(|k| range.contains(key(*k).key_group())) {
            assert_eq!(state.get(&key(k)).unwrap(), Some(k * 3));
        }
    }
}

/// The stored checkpoint's single handle and the file to damage: its (first) canonical file,
/// or its largest native file.
fn target_file(manifest: &CheckpointManifest) -> (KeyedStateHandle, FileRef, bool) {
    let handles = manifest.keyed_handles();
    assert_eq!(
        handles.len(),
        1,
        "a parallelism-1 checkpoint has one keyed handle"
    );
    let handle = handles[0].clone();
    let (canonical, native) = split_files(&handle);
    match canonical.first() {
        Some(f) => (handle, f.clone(), true),
        None => {
            let f = native
                .iter()
                .max_by_key(|f| f.size)
                .cloned()
                .expect("a native handle names its files");
            (handle, f, false)
        }
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn is_damage_error(e: &Error) -> bool {
    matches!(e, Error::ChecksumMismatch { .. } | Error::Corrupt { .. })
}

fn is_native_damage_error(e: &Error) -> bool {
    is_damage_error(e) || matches!(e, Error::Backend { .. })
}

/// A byte flipped inside a key-group block, the metadata, the index or the trailer's offsets
/// of a stored snapshot file makes restore fail with `ChecksumMismatch` or `Corrupt` (for a
/// native snapshot file: those or a `Backend` error), never a panic or a wrong restore.
pub fn corrupt_bytes_are_detected<F: StateBackendFactory>(factory: &F) {
    let (storage, manifest) = stored_checkpoint(factory);
    let (handle, file, canonical) = target_file(&manifest);
    let original = block_on(storage.get(&file.path)).unwrap();
    let mut positions: Vec<(String, usize)> = Vec::new();
    if canonical {
        let info = read_info_from_bytes(&original).unwrap();
        let len = original.len();
        let trailer = len - TRAILER_LEN as usize;
        let (meta_offset, meta_len) = (u64_at(&original, trailer), u64_at(&original, trailer + 8));
        let (index_offset, index_len) = (
            u64_at(&original, trailer + 20),
            u64_at(&original, trailer + 28),
        );
        for entry in [
            info.index.first(),
            info.index.get(info.index.len() / 2),
            info.index.last(),
        ]
        .into_iter()
        .flatten()
        {
            positions.push((
                format!("block of key group {}", entry.key_group),
                (entry.offset + entry.length / 2) as usize,
            ));
        }
        positions.push(("metadata".into(), (meta_offset + meta_len / 2) as usize));
        positions.push(("index".into(), (index_offset + index_len / 2) as usize));
        positions.push(("trailer metadata offset".into(), trailer));
        positions.push(("trailer index length".into(), trailer + 28));
        positions.push(("trailer metadata checksum".into(), trailer + 16));
    } else {
        positions.push(("middle of a native file".into(), original.len() / 2));
    }
    for (region, at) in positions {
        let mut damaged = original.to_vec();
        damaged[at] ^= 0x5a;
        block_on(storage.put(&file.path, Bytes::from(damaged), file.shared)).unwrap();
        let what = format!(
            "{} with a flipped byte in the {region} (offset {at})",
            file.path
        );
        let result = restore_whole(factory, &storage, std::slice::from_ref(&handle), &what);
        if canonical {
            expect_error(result, is_damage_error, &what);
        } else {
            expect_error(result, is_native_damage_error, &what);
        }
    }
    block_on(storage.put(&file.path, original, file.shared)).unwrap();
    assert!(
        restore_whole(factory, &storage, &[handle], "the repaired file").is_ok(),
        "the undamaged file restores"
    );
}

/// A truncated snapshot file fails to restore: with `Corrupt` when the handle records the
/// truncated length (cut in the blocks, by one byte, below header plus trailer); and with an
/// error, not a panic, when the object is shorter than the handle says.
pub fn truncated_file_is_corrupt<F: StateBackendFactory>(factory: &F) {
    let (storage, manifest) = stored_checkpoint(factory);
    let (handle, file, canonical) = target_file(&manifest);
    let original = block_on(storage.get(&file.path)).unwrap();
    let len = original.len();
    for cut in [len / 2, len - 1, 10] {
        block_on(storage.put(&file.path, original.slice(..cut), file.shared)).unwrap();
        let recorded = with_file_size(&handle, &file.path, cut as u64);
        let what = format!("{} truncated to {cut} of {len} bytes", file.path);
        let result = restore_whole(factory, &storage, &[recorded], &what);
        if canonical {
            expect_error(result, |e| matches!(e, Error::Corrupt { .. }), &what);
        } else {
            expect_error(result, is_native_damage_error, &what);
        }
        // The handle still records the full length: the object store cannot serve it.
        let what = format!("{what} (handle records {len})");
        let result = restore_whole(factory, &storage, std::slice::from_ref(&handle), &what);
        expect_error(
            result,
            |e| is_native_damage_error(e) || matches!(e, Error::Storage { .. }),
            &what,
        );
    }
}

/// A snapshot file claiming a newer format version (header and trailer) is refused with
/// `UnsupportedFormatVersion` naming the version found.
pub fn unknown_format_version<F: StateBackendFactory>(factory: &F) {
    let (storage, manifest) = stored_checkpoint(factory);
    let (handle, file, canonical) = target_file(&manifest);
    if !canonical {
        eprintln!(
            "{}: native snapshot files only; format version of canonical files not checked",
            factory.name()
        );
        return;
    }
    let mut bytes = block_on(storage.get(&file.path)).unwrap().to_vec();
    let len = bytes.len();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    bytes[len - 12..len - 8].copy_from_slice(&99u32.to_le_bytes());
    block_on(storage.put(&file.path, Bytes::from(bytes), file.shared)).unwrap();
    let what = format!("{} patched to format version 99", file.path);
    let result = restore_whole(factory, &storage, &[handle], &what);
    match expect_error(
        result,
        |e| matches!(e, Error::UnsupportedFormatVersion { .. }),
        &what,
    ) {
        Error::UnsupportedFormatVersion { found, .. } => assert_eq!(found, 99, "{what}"),
        _ => unreachable!(),
    }
}

/// A snapshot file deleted from storage makes restore fail (not panic, not restore empty).
pub fn missing_file_is_an_error<F: StateBackendFactory>(factory: &F) {
    let (storage, manifest) = stored_checkpoint(factory);
    let (handle, file, _) = target_file(&manifest);
    block_on(storage.delete(&file.path)).unwrap();
    let what = format!("{} deleted", file.path);
    let result = restore_whole(factory, &storage, &[handle], &what);
    assert!(
        result.is_err(),
        "{what}: restore succeeded without its file"
    );
}
