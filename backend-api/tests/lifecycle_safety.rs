//! The lifecycle's safety promises, one test per defect of issue 10 it fixed: canonical
//! manifest paths (#2), validated and checksummed manifests (#3), one writer per root and
//! every referenced file checked (#4), durability and torn manifests (#5), `Err` only when
//! not published (#6), and no leaks (#10).

mod support;

use bytes::Bytes;
use flowstate_api::checkpoint::{CheckpointStorage, FileRef, KeyedStateHandle};
use flowstate_api::lifecycle::{CheckpointLifecycle, CompletionReport, RetentionPolicy};
use flowstate_api::{CheckpointId, CheckpointManifest, Error, KeyGroupRange, MaxParallelism};
use support::{block_on, flaky_storage, listed, storage, upload, write_checkpoint_files};

fn retain(n: usize) -> RetentionPolicy {
    RetentionPolicy {
        retained_checkpoints: n,
    }
}

async fn open(storage: &CheckpointStorage, retained: usize) -> CheckpointLifecycle {
    CheckpointLifecycle::open(storage.clone(), retain(retained))
        .await
        .unwrap()
}

fn base_of(manifest: &mut CheckpointManifest) -> &mut FileRef {
    match &mut manifest.subtasks[0].keyed {
        Some(KeyedStateHandle::Changelog { base, .. }) => base,
        other => panic!("a changelog handle, not {other:?}"),
    }
}

fn invalid(result: &Result<CompletionReport, Error>) -> bool {
    matches!(
        result,
        Err(Error::CheckpointState {
            state: "invalid",
            ..
        })
    )
}

/// #2: a path the store would normalise differently from the registry never gets published,
/// so the sweep never deletes a referenced file.
#[test]
fn non_canonical_manifest_paths_are_refused() {
    block_on(async {
        let (storage, _) = storage();
        let mut lc = open(&storage, 1).await;
        for spelling in [
            "shared//base",
            "/shared/base",
            "shared/base/",
            "shared/./base",
            "shared/x/../base",
        ] {
            let id = lc.begin();
            let mut manifest = write_checkpoint_files(&storage, id, &["base"]).await;
            base_of(&mut manifest).path = spelling.into();
            let result = lc.complete(manifest).await;
            assert!(invalid(&result), "{spelling}: {result:?}");
            lc.abort(id).await.unwrap();
        }
        // `shared: true` outside shared/, and an exclusive file of another checkpoint.
        let id = lc.begin();
        let mut manifest = write_checkpoint_files(&storage, id, &["base"]).await;
        if let Some(op) = &mut manifest.subtasks[0].operator {
            op.shared = true;
        }
        assert!(invalid(&lc.complete(manifest).await));
        let mut manifest = write_checkpoint_files(&storage, id, &["base"]).await;
        if let Some(op) = &mut manifest.subtasks[0].operator {
            op.path = CheckpointStorage::exclusive_path(CheckpointId(1), "op.bin");
        }
        assert!(invalid(&lc.complete(manifest).await));
        assert!(storage.list_checkpoints().await.unwrap().is_empty());
        // The canonical spelling publishes, and the sweep keeps what it references.
        let manifest = write_checkpoint_files(&storage, id, &["base"]).await;
        lc.complete(manifest).await.unwrap();
        let mut report = CompletionReport::default();
        lc.collect_garbage(&mut report).await.unwrap();
        assert!(listed(&storage).await.contains("shared/base"));
    });
}

/// #3: overlapping, missing or foreign key-group ranges and subtask indices are refused.
#[test]
fn manifests_with_inconsistent_subtasks_are_refused() {
    block_on(async {
        let (storage, _) = storage();
        let mut lc = open(&storage, 1).await;
        let id = lc.begin();
        let good = write_checkpoint_files(&storage, id, &["base"]).await;
        let range = |a, b| KeyGroupRange::new(a, b).unwrap();
        let two = flowstate_api::Parallelism::new(2).unwrap();
        let mut broken: Vec<CheckpointManifest> = Vec::new();
        // Two subtasks both claiming every key group.
        let mut m = good.clone();
        m.parallelism = two;
        m.subtasks.push(m.subtasks[0].clone());
        m.subtasks[1].subtask_index = 1;
        broken.push(m.clone());
        // The same subtask twice.
        m.subtasks[1].subtask_index = 0;
        broken.push(m);
        // A keyed handle covering less than its subtask.
        let mut m = good.clone();
        if let Some(KeyedStateHandle::Changelog {
            key_group_range, ..
        }) = &mut m.subtasks[0].keyed
        {
            *key_group_range = range(0, 63);
        }
        broken.push(m);
        // A subtask claiming part of the key groups at parallelism 1.
        let mut m = good.clone();
        m.subtasks[0].key_group_range = range(0, 63);
        broken.push(m);
        // A native handle of another max parallelism.
        let mut m = good.clone();
        m.subtasks[0].keyed = Some(KeyedStateHandle::Native {
            backend: "x".into(),
            key_group_range: range(0, 127),
            max_parallelism: MaxParallelism::new(256).unwrap(),
            files: Vec::new(),
            metadata: serde_json::Value::Null,
        });
        broken.push(m);
        for manifest in broken {
            let result = lc.complete(manifest.clone()).await;
            assert!(invalid(&result), "{manifest:?}: {result:?}");
        }
        assert!(storage.list_checkpoints().await.unwrap().is_empty());
        lc.complete(good).await.unwrap();
    });
}

/// #2, #3: what is read back is checked too: checksum, version, paths, structure.
#[test]
fn manifests_read_back_are_validated() {
    block_on(async {
        let (storage, _) = storage();
        let id = CheckpointId(4);
        let mut manifest = write_checkpoint_files(&storage, id, &["base"]).await;
        let path = CheckpointStorage::manifest_path(id);
        let write_raw = |value: serde_json::Value| {
            let storage = storage.clone();
            let path = path.clone();
            async move {
                storage
                    .put(
                        &path,
                        Bytes::from(serde_json::to_vec(&value).unwrap()),
                        false,
                    )
                    .await
                    .unwrap();
            }
        };
        storage.write_manifest(&manifest).await.unwrap();
        assert_eq!(storage.read_manifest(id).await.unwrap(), manifest);
        let stored: serde_json::Value =
            serde_json::from_slice(&storage.get(&path).await.unwrap()).unwrap();

        // A changed value under an intact checksum: the checksum's own error, naming the
        // manifest.
        let mut damaged = stored.clone();
        damaged["subtasks"][0]["operator"]["size"] = 99.into();
        write_raw(damaged).await;
        assert!(matches!(
            storage.read_manifest(id).await,
            Err(Error::ChecksumMismatch { what, .. }) if what == "manifest of checkpoint 4"
        ));

        // Format version 0 and versions from the future.
        for version in [0, 3] {
            let mut future = stored.clone();
            future["format_version"] = version.into();
            write_raw(future).await;
            assert!(matches!(
                storage.read_manifest(id).await,
                Err(Error::UnsupportedFormatVersion { .. })
            ));
        }

        // Version 1 (no checksum) stays readable, and is validated.
        manifest.format_version = 1;
        let v1 = serde_json::to_value(&manifest).unwrap();
        write_raw(v1.clone()).await;
        assert_eq!(storage.read_manifest(id).await.unwrap(), manifest);
        let mut bad_path = v1.clone();
        bad_path["subtasks"][0]["keyed"]["Changelog"]["base"]["path"] = "shared//base".into();
        write_raw(bad_path).await;
        assert!(matches!(
            storage.read_manifest(id).await,
            Err(Error::Corrupt { .. })
        ));
        let mut overlapping = v1;
        let subtask = overlapping["subtasks"][0].clone();
        let mut second = subtask.clone();
        second["subtask_index"] = 1.into();
        overlapping["subtasks"] = serde_json::json!([subtask, second]);
        overlapping["parallelism"] = 2.into();
        write_raw(overlapping).await;
        assert!(matches!(
            storage.read_manifest(id).await,
            Err(Error::Corrupt { .. })
        ));
    });
}

/// #4: the second of two lifecycles on one root fences the first (local disk; the S3 test
/// runs the same scenario).
#[test]
fn a_second_lifecycle_fences_the_first_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::local(dir.path()).unwrap();
    block_on(support::two_lifecycles_on_one_root(storage));
}

/// #4: every referenced file must exist with its recorded size, exclusive ones too; a
/// manifest slot taken by another writer is never overwritten.
#[test]
fn complete_checks_every_file_and_never_overwrites_a_manifest() {
    block_on(async {
        let (storage, _) = storage();
        let mut lc = open(&storage, 2).await;
        let id = lc.begin();
        let manifest = write_checkpoint_files(&storage, id, &["base"]).await;
        let own = CheckpointStorage::exclusive_path(id, "op.bin");
        storage.delete(&own).await.unwrap();
        let refused = lc.complete(manifest.clone()).await;
        assert!(
            matches!(
                refused,
                Err(Error::CheckpointState {
                    state: "broken",
                    ..
                })
            ),
            "{refused:?}"
        );
        storage
            .put(&own, Bytes::from_static(b"other size"), false)
            .await
            .unwrap();
        assert!(lc.complete(manifest.clone()).await.is_err());
        upload(&storage, &own, false).await;
        // Another writer published this id meanwhile.
        let mut other = manifest.clone();
        other.subtasks[0].operator = None;
        storage.write_manifest(&other).await.unwrap();
        assert!(lc.complete(manifest.clone()).await.is_err());
        assert_eq!(storage.read_manifest(id).await.unwrap(), other);
        assert!(lc.completed().is_empty());
    });
}

/// #5: a torn newest manifest does not stop `open`: it falls back to the newest readable
/// checkpoint and deletes nothing the torn one may reference.
#[test]
fn a_torn_newest_manifest_is_skipped_and_its_files_kept() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::local(dir.path()).unwrap();
    block_on(async {
        let mut lc = open(&storage, 2).await;
        for names in [&["a"][..], &["a", "b"][..]] {
            let id = lc.begin();
            lc.complete(write_checkpoint_files(&storage, id, names).await)
                .await
                .unwrap();
        }
        drop(lc);
        let torn = CheckpointStorage::manifest_path(CheckpointId(2));
        let bytes = storage.get(&torn).await.unwrap();
        storage
            .put(&torn, bytes.slice(..bytes.len() / 2), false)
            .await
            .unwrap();

        let mut lc = open(&storage, 1).await;
        assert_eq!(lc.latest().unwrap().checkpoint_id, CheckpointId(1));
        assert!(lc.skipped().contains_key(&CheckpointId(2)));
        let id = lc.begin();
        let report = lc
            .complete(write_checkpoint_files(&storage, id, &["c"]).await)
            .await
            .unwrap();
        assert_eq!(report.dropped, vec![CheckpointId(1)]);
        assert!(
            !report.warnings.is_empty(),
            "kept shared files are reported"
        );
        let listing = listed(&storage).await;
        for kept in [
            "chk-00000000000000000002/_manifest.json",
            "chk-00000000000000000002/op.bin",
            "shared/a",
            "shared/b",
        ] {
            assert!(listing.contains(kept), "{kept} was deleted: {listing:?}");
        }
        assert!(!listing.contains("chk-00000000000000000001/op.bin"));

        // The newest manifest referencing a missing file is skipped too; nothing is deleted.
        drop(lc);
        storage.delete("shared/c").await.unwrap();
        let lc = open(&storage, 1).await;
        assert!(lc.skipped().contains_key(&id));
        assert!(lc.latest().is_none());
        assert!(listed(&storage)
            .await
            .contains("chk-00000000000000000003/op.bin"));
    });
}

/// #6: a failure after the manifest is written (here the registry copy) does not turn a
/// published checkpoint into an error.
#[test]
fn failures_after_publication_are_warnings() {
    block_on(async {
        let (storage, _, fail_puts) = flaky_storage();
        let mut lc = open(&storage, 1).await;
        fail_puts.lock().insert("_shared_registry.json".into());
        let id = lc.begin();
        let report = lc
            .complete(write_checkpoint_files(&storage, id, &["a"]).await)
            .await
            .unwrap();
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("_shared_registry.json")),
            "{report:?}"
        );
        assert_eq!(storage.list_checkpoints().await.unwrap(), vec![id]);
        assert_eq!(lc.completed(), vec![id]);
        // A failed manifest write is an error and publishes nothing.
        let next = lc.begin();
        let manifest = write_checkpoint_files(&storage, next, &["a"]).await;
        fail_puts
            .lock()
            .insert(CheckpointStorage::manifest_path(next));
        assert!(lc.complete(manifest.clone()).await.is_err());
        assert_eq!(storage.list_checkpoints().await.unwrap(), vec![id]);
        assert_eq!(lc.pending(), vec![next]);
        fail_puts.lock().clear();
        lc.complete(manifest).await.unwrap();
    });
}

/// #10: on local disk, retention leaves no empty checkpoint directory and `open` removes
/// the staging files of interrupted writes.
#[test]
fn local_disk_keeps_no_empty_directories_or_staging_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::local(dir.path()).unwrap();
    block_on(async {
        let mut lc = open(&storage, 1).await;
        for names in [&["a"][..], &["b"][..]] {
            let id = lc.begin();
            lc.complete(write_checkpoint_files(&storage, id, names).await)
                .await
                .unwrap();
        }
        assert!(!dir.path().join("chk-00000000000000000001").exists());
        assert!(dir.path().join("chk-00000000000000000002").is_dir());
        drop(lc);
        let staging = [
            dir.path().join("shared/x.fsnap#3"),
            dir.path().join("chk-00000000000000000002/op.bin#1"),
        ];
        for file in &staging {
            std::fs::write(file, b"torn").unwrap();
        }
        let _lc = open(&storage, 1).await;
        for file in &staging {
            assert!(!file.exists(), "{} was left", file.display());
        }
    });
}

/// #10: a file uploaded into an aborted checkpoint's directory after the abort is collected
/// at the next complete, abort or collect_garbage.
#[test]
fn uploads_landing_after_an_abort_are_collected() {
    block_on(async {
        let (storage, _) = storage();
        let mut lc = open(&storage, 1).await;
        let aborted = lc.begin();
        lc.abort(aborted).await.unwrap();
        let late = CheckpointStorage::exclusive_path(aborted, "late.bin");
        upload(&storage, &late, false).await;
        let id = lc.begin();
        lc.complete(write_checkpoint_files(&storage, id, &["a"]).await)
            .await
            .unwrap();
        assert!(!listed(&storage).await.contains(&late));

        let aborted = lc.begin();
        lc.abort(aborted).await.unwrap();
        let late = CheckpointStorage::exclusive_path(aborted, "late.bin");
        upload(&storage, &late, false).await;
        let mut report = CompletionReport::default();
        lc.collect_garbage(&mut report).await.unwrap();
        assert!(report.deleted_files.contains(&late), "{report:?}");
    });
}
