//! Checkpoint lifecycle and shared-state registry, checked by listing the store, with a
//! fault-injecting store for failed deletes.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use flowstate_api::checkpoint::{CheckpointStorage, FileRef, KeyedStateHandle, SubtaskStateHandle};
use flowstate_api::lifecycle::{CheckpointLifecycle, RetentionPolicy};
use flowstate_api::{CheckpointId, CheckpointManifest, KeyGroupRange, MaxParallelism, Parallelism};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parking_lot::Mutex;

/// Delegates to an in-memory store; deletes of paths in `fail_deletes` fail.
#[derive(Debug)]
struct FlakyStore {
    inner: InMemory,
    fail_deletes: Arc<Mutex<BTreeSet<String>>>,
}

impl fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlakyStore")
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let failing = self.fail_deletes.clone();
        let inner_stream = self.inner.delete_stream(
            locations
                .map(move |p| {
                    let p = p?;
                    if failing.lock().contains(p.as_ref()) {
                        return Err(object_store::Error::Generic {
                            store: "FlakyStore",
                            source: "injected delete failure".into(),
                        });
                    }
                    Ok(p)
                })
                .boxed(),
        );
        inner_stream
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn storage() -> (CheckpointStorage, Arc<Mutex<BTreeSet<String>>>) {
    let fail = Arc::new(Mutex::new(BTreeSet::new()));
    let store = FlakyStore {
        inner: InMemory::new(),
        fail_deletes: fail.clone(),
    };
    (CheckpointStorage::new(Arc::new(store), ""), fail)
}

async fn upload(storage: &CheckpointStorage, path: &str, shared: bool) -> FileRef {
    storage
        .put(path, Bytes::from(path.as_bytes().to_vec()), shared)
        .await
        .unwrap()
}

/// A checkpoint whose one subtask references the given shared files plus one exclusive file.
async fn write_checkpoint_files(
    storage: &CheckpointStorage,
    id: CheckpointId,
    shared: &[&str],
) -> CheckpointManifest {
    let mut files = Vec::new();
    for name in shared {
        let path = CheckpointStorage::shared_path(name);
        files.push(match storage.size_of(&path).await.unwrap() {
            Some(size) => FileRef {
                path,
                size,
                shared: true,
            },
            None => upload(storage, &path, true).await,
        });
    }
    let own = upload(
        storage,
        &CheckpointStorage::exclusive_path(id, "op.bin"),
        false,
    )
    .await;
    let range = KeyGroupRange::new(0, 127).unwrap();
    let keyed = KeyedStateHandle::Changelog {
        key_group_range: range,
        base: files[0].clone(),
        deltas: files[1..].to_vec(),
    };
    CheckpointManifest::new(
        id,
        MaxParallelism::new(128).unwrap(),
        Parallelism::new(1).unwrap(),
        vec![SubtaskStateHandle {
            subtask_index: 0,
            key_group_range: range,
            keyed: Some(keyed),
            operator: Some(own),
        }],
    )
}

async fn listed(storage: &CheckpointStorage) -> BTreeSet<String> {
    storage
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.starts_with('_'))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

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
        let listing = listed(&storage).await;
        assert!(!listing.contains("shared/orphan"));
        assert!(!listing
            .iter()
            .any(|p| p.starts_with("chk-00000000000000000003")));
        let next = reopened.begin();
        assert!(next > crashed, "ids never repeat across restarts");
        // retention keeps working across the restart
        reopened
            .complete(write_checkpoint_files(&storage, next, &["b2"]).await)
            .await
            .unwrap();
        let listing = listed(&storage).await;
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
