//! Checkpoint lifecycle and shared-state registry, checked by listing the store, with a
//! fault-injecting store for failed deletes.

mod support;

use flowstate_api::lifecycle::{CheckpointLifecycle, RetentionPolicy};
use flowstate_api::CheckpointId;
use support::{block_on, listed, set, storage, write_checkpoint_files};

#[test]
fn retention_deletes_exactly_the_unreferenced_files() {
    block_on(async {
        let (storage, _) = storage();
        let policy = RetentionPolicy {
            retained_checkpoints: 2,
        };
        let mut lc = CheckpointLifecycle::open(storage.clone(), policy)
            .await
            .unwrap();
        let c1 = lc.begin();
        let m1 = write_checkpoint_files(&storage, c1, &["base1", "d1"]).await;
        lc.complete(m1).await.unwrap();
        let c2 = lc.begin();
        let m2 = write_checkpoint_files(&storage, c2, &["base1", "d1", "d2"]).await;
        lc.complete(m2).await.unwrap();
        let c3 = lc.begin();
        let m3 = write_checkpoint_files(&storage, c3, &["base3"]).await;
        let report = lc.complete(m3).await.unwrap();
        assert_eq!(report.dropped, vec![c1]);
        // base1 and d1 are still used by checkpoint 2.
        assert_eq!(
            listed(&storage).await,
            set(&[
                "chk-00000000000000000002/_manifest.json",
                "chk-00000000000000000002/op.bin",
                "chk-00000000000000000003/_manifest.json",
                "chk-00000000000000000003/op.bin",
                "shared/base1",
                "shared/base3",
                "shared/d1",
                "shared/d2",
            ])
        );
        assert_eq!(lc.registry().files["shared/base1"].created_by, c1);
        let c4 = lc.begin();
        let m4 = write_checkpoint_files(&storage, c4, &["base3", "d4"]).await;
        lc.complete(m4).await.unwrap();
        assert_eq!(
            listed(&storage).await,
            set(&[
                "chk-00000000000000000003/_manifest.json",
                "chk-00000000000000000003/op.bin",
                "chk-00000000000000000004/_manifest.json",
                "chk-00000000000000000004/op.bin",
                "shared/base3",
                "shared/d4",
            ])
        );
        assert_eq!(storage.list_checkpoints().await.unwrap(), vec![c3, c4]);
    });
}

#[test]
fn aborted_checkpoints_never_appear_and_leave_nothing() {
    block_on(async {
        let (storage, _) = storage();
        let mut lc = CheckpointLifecycle::open(storage.clone(), RetentionPolicy::default())
            .await
            .unwrap();
        let c1 = lc.begin();
        write_checkpoint_files(&storage, c1, &["a"]).await;
        lc.abort(c1).await.unwrap();
        assert!(storage.list_checkpoints().await.unwrap().is_empty());
        // the shared file the aborted checkpoint uploaded is garbage once nothing is pending
        assert!(listed(&storage).await.is_empty());
        let c2 = lc.begin();
        assert!(c2 > c1);
        assert!(lc
            .complete(write_checkpoint_files(&storage, c1, &["a"]).await)
            .await
            .is_err());
    });
}

#[test]
fn a_pending_checkpoint_keeps_files_of_older_bases_alive() {
    block_on(async {
        let (storage, _) = storage();
        let policy = RetentionPolicy {
            retained_checkpoints: 1,
        };
        let mut lc = CheckpointLifecycle::open(storage.clone(), policy)
            .await
            .unwrap();
        let c1 = lc.begin();
        lc.complete(write_checkpoint_files(&storage, c1, &["b1"]).await)
            .await
            .unwrap();
        let c2 = lc.begin();
        let m2 = write_checkpoint_files(&storage, c2, &["b2"]).await;
        // checkpoint 3 starts before 2 completes: its backend still builds on checkpoint 1.
        let c3 = lc.begin();
        let m3 = write_checkpoint_files(&storage, c3, &["b1", "d3"]).await;
        lc.complete(m2).await.unwrap();
        assert!(listed(&storage).await.contains("shared/b1"), "3 is pending");
        lc.complete(m3).await.unwrap();
        assert!(listed(&storage).await.contains("shared/b1"), "3 uses it");
        assert!(!listed(&storage).await.contains("shared/b2"));
    });
}

#[test]
fn failed_deletes_are_retried_and_never_fail_a_checkpoint() {
    block_on(async {
        let (storage, fail) = storage();
        let policy = RetentionPolicy {
            retained_checkpoints: 1,
        };
        let mut lc = CheckpointLifecycle::open(storage.clone(), policy)
            .await
            .unwrap();
        let c1 = lc.begin();
        lc.complete(write_checkpoint_files(&storage, c1, &["b1"]).await)
            .await
            .unwrap();
        fail.lock().insert("shared/b1".into());
        let c2 = lc.begin();
        let report = lc
            .complete(write_checkpoint_files(&storage, c2, &["b2"]).await)
            .await
            .unwrap();
        assert_eq!(report.failed_deletes, vec!["shared/b1".to_string()]);
        assert!(listed(&storage).await.contains("shared/b1"));
        fail.lock().clear();
        let c3 = lc.begin();
        let report = lc
            .complete(write_checkpoint_files(&storage, c3, &["b2"]).await)
            .await
            .unwrap();
        assert!(report.deleted_files.contains(&"shared/b1".to_string()));
        assert!(!listed(&storage).await.contains("shared/b1"));
    });
}

#[test]
fn registry_survives_a_restart_and_leftovers_are_removed() {
    block_on(async {
        let (storage, _) = storage();
        let policy = RetentionPolicy {
            retained_checkpoints: 2,
        };
        let mut lc = CheckpointLifecycle::open(storage.clone(), policy.clone())
            .await
            .unwrap();
        for names in [&["b", "d1"][..], &["b", "d1", "d2"][..]] {
            let id = lc.begin();
            lc.complete(write_checkpoint_files(&storage, id, names).await)
                .await
                .unwrap();
        }
        // a crash in the middle of checkpoint 3: files uploaded, no manifest
        let crashed = lc.begin();
        write_checkpoint_files(&storage, crashed, &["b", "orphan"]).await;
        let registry_before = lc.registry().clone();
        drop(lc);

        let mut reopened = CheckpointLifecycle::open(storage.clone(), policy)
            .await
            .unwrap();
        assert_eq!(reopened.registry().files, registry_before.files);
        assert_eq!(reopened.completed(), vec![CheckpointId(1), CheckpointId(2)]);
        // The leftovers may be a fenced coordinator's last checkpoint: they stay until the
        // reopened lifecycle has completed one of its own.
        let listing = listed(&storage).await;
        assert!(listing.contains("shared/orphan"));
        let next = reopened.begin();
        assert!(next > crashed, "ids never repeat across restarts");
        // retention keeps working across the restart
        reopened
            .complete(write_checkpoint_files(&storage, next, &["b2"]).await)
            .await
            .unwrap();
        let listing = listed(&storage).await;
        assert!(!listing.contains("shared/orphan"));
        assert!(!listing
            .iter()
            .any(|p| p.starts_with("chk-00000000000000000003")));
        assert!(listing.contains("shared/b") && listing.contains("shared/d2"));
        assert!(!listing
            .iter()
            .any(|p| p.starts_with("chk-00000000000000000001")));
    });
}

#[test]
fn a_checkpoint_referencing_a_deleted_shared_file_is_refused() {
    block_on(async {
        let (storage, _) = storage();
        let mut lc = CheckpointLifecycle::open(storage.clone(), RetentionPolicy::default())
            .await
            .unwrap();
        let id = lc.begin();
        let manifest = write_checkpoint_files(&storage, id, &["gone"]).await;
        storage.delete("shared/gone").await.unwrap();
        assert!(lc.complete(manifest).await.is_err());
        assert!(storage.list_checkpoints().await.unwrap().is_empty());
    });
}
