//! The file checks: `verify_handle` passes what the restore accepts and reports every problem
//! of a handle's files, each of its kind.

mod snapshot_files;

use flowstate_api::checkpoint::{CheckpointStorage, FileRef, KeyedStateHandle, NativeFile};
use flowstate_api::snapshot::{
    restore_into, verify_handle, FileProblemKind, SnapshotFileKind, HEADER_LEN,
};
use flowstate_api::{CheckpointId, Error, MaxParallelism};
use snapshot_files::{
    block_on, checkpoint, file_bytes, keys, lineage, max, metadata, put, range, RowCounter,
};

/// The kinds of the problems `verify_handle` finds in `handle` of checkpoint 2, by file name.
fn problems(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
) -> Vec<(String, FileProblemKind)> {
    let found = block_on(verify_handle(storage, CheckpointId(2), max(), handle));
    found
        .into_iter()
        .map(|p| {
            let name = p.path.rsplit('/').next().unwrap_or_default().to_string();
            (name, p.kind)
        })
        .collect()
}

fn chain_of(handle: &KeyedStateHandle) -> (FileRef, Vec<FileRef>) {
    match handle {
        KeyedStateHandle::Changelog { base, deltas, .. } => (base.clone(), deltas.clone()),
        other => panic!("not a chain: {other:?}"),
    }
}

fn changelog(base: FileRef, deltas: Vec<FileRef>) -> KeyedStateHandle {
    KeyedStateHandle::Changelog {
        key_group_range: range(4, 7),
        base,
        deltas,
    }
}

#[test]
fn verify_handle_passes_what_the_restore_accepts() {
    let storage = CheckpointStorage::in_memory();
    for handle in checkpoint(&storage) {
        assert_eq!(problems(&storage, &handle), Vec::new(), "{handle:?}");
    }
}

#[test]
fn verify_handle_reports_missing_short_and_damaged_files_each() {
    let storage = CheckpointStorage::in_memory();
    let handles = checkpoint(&storage);
    let (base, deltas) = chain_of(&handles[1]);
    // The base is missing and the delta's block damaged: both are found.
    block_on(storage.delete(&base.path)).unwrap();
    let mut damaged = block_on(storage.get(&deltas[0].path)).unwrap().to_vec();
    damaged[HEADER_LEN as usize + 2] ^= 0x40;
    put(&storage, &deltas[0].path, damaged);
    assert_eq!(
        problems(&storage, &handles[1]),
        vec![
            ("base.fsnap".to_string(), FileProblemKind::Missing),
            ("delta.fsnap".to_string(), FileProblemKind::Corrupt),
        ]
    );
    let found = block_on(verify_handle(&storage, CheckpointId(2), max(), &handles[1]));
    assert!(
        matches!(found[1].error, Error::ChecksumMismatch { .. }),
        "{:?}",
        found[1]
    );
    // A file of another size than its handle records is not read.
    let mut short = match &handles[0] {
        KeyedStateHandle::Canonical { file, .. } => file.clone(),
        other => panic!("{other:?}"),
    };
    short.size += 1;
    let handle = KeyedStateHandle::Canonical {
        key_group_range: range(0, 3),
        file: short,
    };
    assert_eq!(
        problems(&storage, &handle),
        vec![("canonical.fsnap".to_string(), FileProblemKind::SizeMismatch)]
    );
    let native = KeyedStateHandle::Native {
        backend: "rocksdb".into(),
        key_group_range: range(0, 7),
        max_parallelism: max(),
        files: vec![NativeFile {
            local_name: "000001.sst".into(),
            file: base,
        }],
        metadata: serde_json::Value::Null,
    };
    assert_eq!(
        problems(&storage, &native),
        vec![("base.fsnap".to_string(), FileProblemKind::Missing)]
    );
}

#[test]
fn verify_handle_reports_every_way_a_file_differs_from_its_handle() {
    let storage = CheckpointStorage::in_memory();
    let keys = keys();
    let key_of = |g: u32| keys[&g].clone();
    // A delta of key groups [4, 5] where the canonical handle of [4, 7] needs a full file:
    // two mismatches of one file, both reported.
    let file = put(
        &storage,
        "shared/odd.fsnap",
        file_bytes(
            metadata(range(4, 5), SnapshotFileKind::Delta, lineage(1, Some("x"))),
            &[4],
            key_of,
        ),
    );
    let handle = KeyedStateHandle::Canonical {
        key_group_range: range(4, 7),
        file,
    };
    let found = block_on(verify_handle(&storage, CheckpointId(2), max(), &handle));
    let details: Vec<String> = found.iter().map(|p| p.error.to_string()).collect();
    assert_eq!(found.len(), 2, "{details:#?}");
    assert!(found
        .iter()
        .all(|p| p.kind == FileProblemKind::HandleMismatch));
    assert!(details[0].contains("holds key groups [4, 5] but its handle claims [4, 7]"));
    assert!(details[1].contains("a Delta file where the handle needs a Full file"));
    // Another max parallelism, and written after the checkpoint referencing it.
    let mut other_max = metadata(range(4, 7), SnapshotFileKind::Full, lineage(3, None));
    other_max.max_parallelism = MaxParallelism::new(16).unwrap();
    let late = put(
        &storage,
        "shared/late.fsnap",
        file_bytes(other_max, &[], key_of),
    );
    let handle = KeyedStateHandle::Canonical {
        key_group_range: range(4, 7),
        file: late,
    };
    let found = block_on(verify_handle(&storage, CheckpointId(2), max(), &handle));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found
        .iter()
        .all(|p| p.kind == FileProblemKind::HandleMismatch));
    assert!(matches!(
        found[0].error,
        Error::MaxParallelismMismatch {
            snapshot: 16,
            configured: 8
        }
    ));
    assert!(found[1]
        .error
        .to_string()
        .contains("written at checkpoint 3, after checkpoint 2"));
    // A row in the wrong key group, under valid checksums: the restore's row check.
    let misplaced = put(
        &storage,
        "shared/misplaced.fsnap",
        file_bytes(
            metadata(range(4, 7), SnapshotFileKind::Full, None),
            &[4],
            |_| keys[&5].clone(),
        ),
    );
    let handle = KeyedStateHandle::Canonical {
        key_group_range: range(4, 7),
        file: misplaced,
    };
    assert_eq!(
        problems(&storage, &handle),
        vec![("misplaced.fsnap".to_string(), FileProblemKind::Corrupt)]
    );
}

#[test]
fn verify_handle_checks_every_link_of_a_chain() {
    let storage = CheckpointStorage::in_memory();
    let handles = checkpoint(&storage);
    let (base, deltas) = chain_of(&handles[1]);
    let keys = keys();
    let key_of = |g: u32| keys[&g].clone();
    // A second delta building on the base, not on the delta before it; a third without
    // lineage after files with lineage. Each link is reported.
    let stray = put(
        &storage,
        "shared/stray.fsnap",
        file_bytes(
            metadata(
                range(4, 7),
                SnapshotFileKind::Delta,
                lineage(2, Some("base.fsnap")),
            ),
            &[6],
            key_of,
        ),
    );
    let bare = put(
        &storage,
        "shared/bare.fsnap",
        file_bytes(
            metadata(range(4, 7), SnapshotFileKind::Delta, None),
            &[6],
            key_of,
        ),
    );
    let handle = changelog(base.clone(), vec![deltas[0].clone(), stray, bare]);
    let found = block_on(verify_handle(&storage, CheckpointId(2), max(), &handle));
    let kinds: Vec<(String, FileProblemKind)> =
        found.iter().map(|p| (p.path.clone(), p.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("shared/stray.fsnap".to_string(), FileProblemKind::Chain),
            ("shared/bare.fsnap".to_string(), FileProblemKind::Chain),
        ]
    );
    assert!(found[0]
        .error
        .to_string()
        .contains("builds on 'base.fsnap', not on 'delta.fsnap'"));
    assert!(found[1].error.to_string().contains("records no lineage"));
    // The restore refuses the same chain (at its first broken link).
    let restored = block_on(restore_into(
        &RowCounter::new(range(4, 7)),
        &storage,
        std::slice::from_ref(&handle),
    ));
    assert!(
        matches!(&restored, Err(Error::Corrupt { what, .. }) if what.contains("stray.fsnap")),
        "{restored:?}"
    );
    // A link whose file cannot be read is not judged: the missing file is the problem.
    block_on(storage.delete(&deltas[0].path)).unwrap();
    let handle = changelog(base, deltas);
    assert_eq!(
        problems(&storage, &handle),
        vec![("delta.fsnap".to_string(), FileProblemKind::Missing)]
    );
}
