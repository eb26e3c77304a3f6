//! What the lifecycle tests share: a store whose deletes and writes of chosen paths fail,
//! checkpoints of a few files, and listings.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use flowstate_api::checkpoint::{CheckpointStorage, FileRef, KeyedStateHandle, SubtaskStateHandle};
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

/// Delegates to an in-memory store; deletes of paths in `fail_deletes` fail, and so do
/// writes of paths in `fail_puts`.
#[derive(Debug)]
pub struct FlakyStore {
    inner: InMemory,
    fail_deletes: Arc<Mutex<BTreeSet<String>>>,
    fail_puts: Arc<Mutex<BTreeSet<String>>>,
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
        if self.fail_puts.lock().contains(location.as_ref()) {
            return Err(object_store::Error::Generic {
                store: "FlakyStore",
                source: "injected put failure".into(),
            });
        }
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

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn storage() -> (CheckpointStorage, Arc<Mutex<BTreeSet<String>>>) {
    let (storage, fail_deletes, _) = flaky_storage();
    (storage, fail_deletes)
}

pub type FailSet = Arc<Mutex<BTreeSet<String>>>;

/// Storage whose deletes and writes of chosen paths fail.
pub fn flaky_storage() -> (CheckpointStorage, FailSet, FailSet) {
    let fail_deletes = Arc::new(Mutex::new(BTreeSet::new()));
    let fail_puts = Arc::new(Mutex::new(BTreeSet::new()));
    let store = FlakyStore {
        inner: InMemory::new(),
        fail_deletes: fail_deletes.clone(),
        fail_puts: fail_puts.clone(),
    };
    (
        CheckpointStorage::new(Arc::new(store), ""),
        fail_deletes,
        fail_puts,
    )
}

pub async fn upload(storage: &CheckpointStorage, path: &str, shared: bool) -> FileRef {
    storage
        .put(path, Bytes::from(path.as_bytes().to_vec()), shared)
        .await
        .unwrap()
}

/// A checkpoint whose one subtask references the given shared files plus one exclusive file.
pub async fn write_checkpoint_files(
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

pub async fn listed(storage: &CheckpointStorage) -> BTreeSet<String> {
    storage
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.starts_with('_'))
        .collect()
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Two lifecycles on one storage root: the second fences the first, which from then on
/// publishes and deletes nothing; the second deletes the first's leftovers only once it has
/// completed a checkpoint of its own. Runs on any storage (local disk, S3).
pub async fn two_lifecycles_on_one_root(storage: CheckpointStorage) {
    use flowstate_api::lifecycle::{CheckpointLifecycle, CompletionReport, RetentionPolicy};
    use flowstate_api::Error;

    let policy = RetentionPolicy {
        retained_checkpoints: 1,
    };
    let mut first = CheckpointLifecycle::open(storage.clone(), policy.clone())
        .await
        .unwrap();
    let c1 = first.begin();
    first
        .complete(write_checkpoint_files(&storage, c1, &["a"]).await)
        .await
        .unwrap();
    // Two checkpoints in flight: files uploaded, not yet completed.
    let c2 = first.begin();
    let m2 = write_checkpoint_files(&storage, c2, &["a", "b"]).await;
    let c3 = first.begin();
    write_checkpoint_files(&storage, c3, &["c"]).await;

    let mut second = CheckpointLifecycle::open(storage.clone(), policy)
        .await
        .unwrap();
    assert!(second.epoch() > first.epoch());
    assert_eq!(second.completed(), vec![c1]);
    let before = listed(&storage).await;
    for path in [
        "chk-00000000000000000002/op.bin",
        "chk-00000000000000000003/op.bin",
        "shared/b",
        "shared/c",
    ] {
        assert!(
            before.contains(path),
            "open deleted {path} of a checkpoint in flight"
        );
    }

    let fenced = |r: Result<CompletionReport, Error>| matches!(r, Err(Error::Fenced { .. }));
    assert!(
        fenced(first.complete(m2.clone()).await),
        "a fenced lifecycle published"
    );
    assert!(fenced(first.abort(c3).await));
    let mut report = CompletionReport::default();
    assert!(matches!(
        first.collect_garbage(&mut report).await,
        Err(Error::Fenced { .. })
    ));
    assert!(report.deleted_files.is_empty());
    assert_eq!(
        listed(&storage).await,
        before,
        "a fenced lifecycle deleted files"
    );
    assert_eq!(storage.list_checkpoints().await.unwrap(), vec![c1]);

    // The second carries on; once its own checkpoint is complete, the first's leftovers go.
    let c4 = second.begin();
    assert!(c4 > c3, "ids never collide with directories the second saw");
    second
        .complete(write_checkpoint_files(&storage, c4, &["a", "d"]).await)
        .await
        .unwrap();
    let after = listed(&storage).await;
    assert_eq!(
        after,
        set(&[
            "chk-00000000000000000004/_manifest.json",
            "chk-00000000000000000004/op.bin",
            "shared/a",
            "shared/d",
        ])
    );
    assert!(fenced(first.complete(m2).await));
    assert_eq!(storage.list_checkpoints().await.unwrap(), vec![c4]);
}
