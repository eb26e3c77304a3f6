//! Tests of [`super::CheckpointStorage`]: paths, durability, locations, staging files.

use super::*;
use crate::key_groups::{MaxParallelism, Parallelism};
use crate::SubtaskStateHandle;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn single_subtask_manifest(id: CheckpointId, operator: Option<FileRef>) -> CheckpointManifest {
    let max = MaxParallelism::new(128).unwrap();
    CheckpointManifest::new(
        id,
        max,
        Parallelism::new(1).unwrap(),
        vec![SubtaskStateHandle {
            subtask_index: 0,
            key_group_range: max.full_range(),
            keyed: None,
            operator,
        }],
    )
}

#[test]
fn open_existing_never_creates_a_local_directory() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("no-such-dir");
    let location = missing.to_str().unwrap();
    for attempt in [location.to_string(), format!("file://{location}")] {
        match CheckpointStorage::open_existing(&attempt) {
            Err(Error::StorageNotFound { location, .. }) => assert_eq!(location, attempt),
            other => panic!("{attempt}: expected StorageNotFound, got {other:?}"),
        }
        assert!(!missing.exists(), "{attempt} created the directory");
    }
    let file = parent.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        CheckpointStorage::open_existing(file.to_str().unwrap()),
        Err(Error::StorageNotFound { reason, .. }) if reason.contains("not a directory")
    ));
    let existing = CheckpointStorage::open_existing(parent.path().to_str().unwrap()).unwrap();
    assert_eq!(
        existing.local_dir(),
        Some(std::fs::canonicalize(parent.path()).unwrap().as_path())
    );
}

#[test]
fn location_is_a_url_to_open_again() {
    let dir = tempfile::tempdir().unwrap();
    let local = CheckpointStorage::local(dir.path()).unwrap();
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(local.location(), format!("file://{}", canonical.display()));
    assert_eq!(local.to_string(), local.location());
    let again = CheckpointStorage::open(local.location()).unwrap();
    assert_eq!(again.local_dir(), local.local_dir());
    assert_eq!(CheckpointStorage::in_memory().location(), "memory:///");
    let memory = CheckpointStorage::open("memory:///").unwrap();
    assert_eq!(memory.location(), "memory:///");
}

#[test]
fn checkpoint_is_visible_only_after_its_manifest() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::local(dir.path()).unwrap();
        let id = CheckpointId(7);
        let f = storage
            .put(
                &CheckpointStorage::exclusive_path(id, "a.bin"),
                Bytes::from_static(b"abc"),
                false,
            )
            .await
            .unwrap();
        assert_eq!(f.size, 3);
        assert!(storage.list_checkpoints().await.unwrap().is_empty());
        assert!(matches!(
            storage.read_manifest(id).await,
            Err(Error::CheckpointNotFound { id: 7 })
        ));
        let manifest = single_subtask_manifest(id, Some(f.clone()));
        storage.write_manifest(&manifest).await.unwrap();
        assert_eq!(storage.list_checkpoints().await.unwrap(), vec![id]);
        assert_eq!(storage.read_manifest(id).await.unwrap(), manifest);
        // Writing the same manifest again is a retried write: fine. Another one is not.
        storage.write_manifest(&manifest).await.unwrap();
        let other = single_subtask_manifest(id, None);
        assert!(matches!(
            storage.write_manifest(&other).await,
            Err(Error::CheckpointState {
                state: "already published",
                ..
            })
        ));
        assert_eq!(storage.read_manifest(id).await.unwrap(), manifest);
        assert_eq!(
            storage.get_range(&f.path, 1..3).await.unwrap().as_ref(),
            b"bc"
        );
        storage.delete(&f.path).await.unwrap();
        storage.delete(&f.path).await.unwrap();
        assert_eq!(storage.size_of(&f.path).await.unwrap(), None);
    });
}

#[test]
fn local_storage_is_durable_and_cleans_up_directories() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::local(dir.path()).unwrap();
        let debug = format!("{:?}", storage.object_store());
        assert!(debug.contains("fsync: true"), "{debug}");
        assert!(debug.contains("automatic_cleanup: true"), "{debug}");
        let path = CheckpointStorage::exclusive_path(CheckpointId(3), "x");
        storage
            .put(&path, Bytes::from_static(b"x"), false)
            .await
            .unwrap();
        assert!(dir.path().join("chk-00000000000000000003").is_dir());
        storage.delete(&path).await.unwrap();
        assert!(!dir.path().join("chk-00000000000000000003").exists());
    });
}

#[test]
fn non_canonical_paths_are_refused() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory();
        for path in [
            "shared//x",
            "/shared/x",
            "shared/x/",
            "shared/../x",
            "./x",
            "x#1",
        ] {
            assert!(
                matches!(
                    storage.put(path, Bytes::new(), true).await,
                    Err(Error::InvalidPath { .. })
                ),
                "{path}"
            );
        }
    });
}

#[test]
fn staging_files_of_interrupted_writes_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::local(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("shared")).unwrap();
    std::fs::write(dir.path().join("shared/a.fsnap#12"), b"torn").unwrap();
    std::fs::write(dir.path().join("shared/b#c"), b"kept").unwrap();
    std::fs::write(dir.path().join("keep.bin"), b"kept").unwrap();
    let removed = storage.remove_local_staging_files().unwrap();
    assert_eq!(removed, vec!["shared/a.fsnap#12".to_string()]);
    assert!(dir.path().join("shared/b#c").exists());
    assert!(dir.path().join("keep.bin").exists());
    assert!(CheckpointStorage::in_memory()
        .remove_local_staging_files()
        .unwrap()
        .is_empty());
}

#[test]
fn url_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let storage = CheckpointStorage::from_url(&url, Vec::<(String, String)>::new()).unwrap();
    assert!(storage.local_dir().is_some());
    assert!(CheckpointStorage::from_url("memory:///", Vec::<(String, String)>::new()).is_ok());
    assert!(matches!(
        CheckpointStorage::from_url("nope", Vec::<(String, String)>::new()),
        Err(Error::InvalidStorageUrl { .. })
    ));
}
