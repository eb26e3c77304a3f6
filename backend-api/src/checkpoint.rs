//! Checkpoint storage on `object_store`, checkpoint ids, snapshot handles and manifests.
//!
//! Layout under the storage root (every path is relative to it):
//!
//! ```text
//! chk-00000000000000000042/_manifest.json     written last: the checkpoint exists once it does
//! chk-00000000000000000042/<files of this checkpoint only>
//! shared/<files that later checkpoints may reuse>
//! ```

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key_groups::{KeyGroupRange, MaxParallelism, Parallelism};

/// Checkpoint ids increase over the life of a job.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct CheckpointId(pub u64);

impl CheckpointId {
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn next(self) -> Self {
        CheckpointId(self.0 + 1)
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A file in checkpoint storage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the storage root.
    pub path: String,
    /// Size in bytes: restore reads trailers by offset without a `head` call.
    pub size: u64,
    /// True when later checkpoints may reference the file (incremental checkpoints): such
    /// files live under `shared/` and are deleted only when no retained checkpoint uses them.
    pub shared: bool,
}

/// A file of a backend-native snapshot (e.g. a RocksDB SST), with the name it must have in
/// the backend's local directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NativeFile {
    pub local_name: String,
    pub file: FileRef,
}

/// What one subtask's keyed state snapshot consists of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyedStateHandle {
    /// One file in the canonical key-group-ordered format.
    Canonical {
        key_group_range: KeyGroupRange,
        file: FileRef,
    },
    /// A canonical base plus canonical deltas (with tombstones), applied in order.
    Changelog {
        key_group_range: KeyGroupRange,
        base: FileRef,
        deltas: Vec<FileRef>,
    },
    /// A backend-native snapshot (e.g. RocksDB SST files): only that backend restores it.
    Native {
        backend: String,
        key_group_range: KeyGroupRange,
        max_parallelism: MaxParallelism,
        files: Vec<NativeFile>,
        /// Backend-specific metadata (e.g. the key range of each file, state metadata).
        metadata: serde_json::Value,
    },
}

impl KeyedStateHandle {
    pub fn key_group_range(&self) -> KeyGroupRange {
        match self {
            KeyedStateHandle::Canonical {
                key_group_range, ..
            }
            | KeyedStateHandle::Changelog {
                key_group_range, ..
            }
            | KeyedStateHandle::Native {
                key_group_range, ..
            } => *key_group_range,
        }
    }

    /// Every file the handle references.
    pub fn files(&self) -> Vec<&FileRef> {
        match self {
            KeyedStateHandle::Canonical { file, .. } => vec![file],
            KeyedStateHandle::Changelog { base, deltas, .. } => {
                std::iter::once(base).chain(deltas.iter()).collect()
            }
            KeyedStateHandle::Native { files, .. } => files.iter().map(|f| &f.file).collect(),
        }
    }

    /// Total bytes of the referenced files.
    pub fn total_size(&self) -> u64 {
        self.files().iter().map(|f| f.size).sum()
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            KeyedStateHandle::Canonical {
                key_group_range,
                file,
            } => format!("canonical {} {}", key_group_range, file.path),
            KeyedStateHandle::Changelog {
                key_group_range,
                base,
                deltas,
            } => format!(
                "changelog {} base {} + {} deltas",
                key_group_range,
                base.path,
                deltas.len()
            ),
            KeyedStateHandle::Native {
                backend,
                key_group_range,
                files,
                ..
            } => format!(
                "{backend} native {} ({} files)",
                key_group_range,
                files.len()
            ),
        }
    }
}

/// One subtask's part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskStateHandle {
    pub subtask_index: u32,
    pub key_group_range: KeyGroupRange,
    pub keyed: Option<KeyedStateHandle>,
    /// Operator list and broadcast state, in the operator-state format.
    pub operator: Option<FileRef>,
}

/// The version of the manifest JSON this build writes.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// The record of a checkpoint; written last, after every file it references.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    pub format_version: u32,
    pub checkpoint_id: CheckpointId,
    pub max_parallelism: MaxParallelism,
    pub parallelism: Parallelism,
    /// Subtasks in subtask-index order.
    pub subtasks: Vec<SubtaskStateHandle>,
}

impl CheckpointManifest {
    pub fn new(
        checkpoint_id: CheckpointId,
        max_parallelism: MaxParallelism,
        parallelism: Parallelism,
        mut subtasks: Vec<SubtaskStateHandle>,
    ) -> Self {
        subtasks.sort_by_key(|s| s.subtask_index);
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint_id,
            max_parallelism,
            parallelism,
            subtasks,
        }
    }

    /// Keyed handles of every subtask.
    pub fn keyed_handles(&self) -> Vec<KeyedStateHandle> {
        self.subtasks
            .iter()
            .filter_map(|s| s.keyed.clone())
            .collect()
    }

    /// Operator-state files of every subtask, in subtask order (`None` where a subtask had
    /// none).
    pub fn operator_files(&self) -> Vec<Option<FileRef>> {
        self.subtasks.iter().map(|s| s.operator.clone()).collect()
    }

    /// Every file referenced by the checkpoint.
    pub fn files(&self) -> Vec<&FileRef> {
        let mut out = Vec::new();
        for s in &self.subtasks {
            if let Some(k) = &s.keyed {
                out.extend(k.files());
            }
            if let Some(o) = &s.operator {
                out.push(o);
            }
        }
        out
    }
}

const MANIFEST_NAME: &str = "_manifest.json";
const CHECKPOINT_DIR_PREFIX: &str = "chk-";

/// Where checkpoints live: any `object_store` (local disk by default, in memory for tests, S3
/// by URL) plus a root prefix. Cheap to clone.
#[derive(Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    description: String,
}

impl fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStorage")
            .field("store", &self.description)
            .field("root", &self.root.as_ref())
            .finish()
    }
}

impl CheckpointStorage {
    /// Any object store, with every path under `root`.
    pub fn new(store: Arc<dyn ObjectStore>, root: impl Into<Path>) -> Self {
        let description = store.to_string();
        Self {
            store,
            root: root.into(),
            description,
        }
    }

    /// A directory on local disk (created if missing): the embedded default.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating checkpoint dir {}", dir.display()), e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::storage(dir.display(), e))?;
        Ok(Self::new(Arc::new(fs), Path::default()))
    }

    /// From what a user types: a URL (`file://`, `memory://`, `s3://`, and `gs://` or
    /// `az://` when those features are on) or a local directory path (relative to the current
    /// directory; created if missing).
    pub fn open(location: &str) -> Result<Self> {
        if location.contains("://") {
            return Self::from_url(location, Vec::<(String, String)>::new());
        }
        if location.trim().is_empty() {
            return Err(Error::InvalidStorageUrl {
                url: location.to_string(),
                reason: "it is empty: give a directory or a URL such as s3://bucket/prefix".into(),
            });
        }
        Self::local(location)
    }

    /// In memory: for tests and benchmarks.
    pub fn in_memory() -> Self {
        Self::new(Arc::new(InMemory::new()), Path::default())
    }

    /// From a URL: `file:///abs/dir`, `memory:///`, `s3://bucket/prefix` (S3 options such as
    /// `aws_endpoint`, `aws_access_key_id`, `aws_region`, `aws_allow_http` come from `options`
    /// and, for S3, from the standard `AWS_*` environment variables).
    pub fn from_url<I, K, V>(url: &str, options: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let parsed = url::Url::parse(url).map_err(|e| Error::InvalidStorageUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if parsed.scheme() == "file" {
            let dir = parsed
                .to_file_path()
                .map_err(|()| Error::InvalidStorageUrl {
                    url: url.to_string(),
                    reason: "not an absolute local path".into(),
                })?;
            return Self::local(dir);
        }
        let mut opts: Vec<(String, String)> = options
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.into()))
            .collect();
        // Each cloud store reads its standard environment variables, as its own CLI does;
        // options given explicitly win.
        let env_prefix = match parsed.scheme() {
            "s3" | "s3a" => Some("AWS_"),
            "gs" => Some("GOOGLE_"),
            "az" | "adl" | "azure" | "abfs" | "abfss" => Some("AZURE_"),
            _ => None,
        };
        if let Some(prefix) = env_prefix {
            for (key, value) in std::env::vars() {
                if key.starts_with(prefix) {
                    let key = key.to_ascii_lowercase();
                    if !opts.iter().any(|(k, _)| *k == key) {
                        opts.push((key, value));
                    }
                }
            }
        }
        let (store, root) =
            object_store::parse_url_opts(&parsed, opts).map_err(|e| Error::InvalidStorageUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self::new(Arc::from(store), root))
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn full_path(&self, relative: &str) -> Path {
        let mut path = self.root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// The directory (relative path) of checkpoint `id`'s own files.
    pub fn checkpoint_dir(id: CheckpointId) -> String {
        format!("{CHECKPOINT_DIR_PREFIX}{:020}", id.0)
    }

    /// Relative path of a file owned by checkpoint `id` alone.
    pub fn exclusive_path(id: CheckpointId, name: &str) -> String {
        format!("{}/{name}", Self::checkpoint_dir(id))
    }

    /// Relative path of a file later checkpoints may share.
    pub fn shared_path(name: &str) -> String {
        format!("shared/{name}")
    }

    /// Writes a whole file.
    pub async fn put(&self, relative: &str, bytes: Bytes, shared: bool) -> Result<FileRef> {
        let size = bytes.len() as u64;
        let path = self.full_path(relative);
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| Error::storage(&path, e))?;
        Ok(FileRef {
            path: relative.to_string(),
            size,
            shared,
        })
    }

    /// Reads a whole file.
    pub async fn get(&self, relative: &str) -> Result<Bytes> {
        let path = self.full_path(relative);
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| Error::storage(&path, e))?;
        result.bytes().await.map_err(|e| Error::storage(&path, e))
    }

    /// Reads bytes `range` of a file.
    pub async fn get_range(&self, relative: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.full_path(relative);
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        self.store
            .get_range(&path, range)
            .await
            .map_err(|e| Error::storage(&path, e))
    }

    /// Size of a file, or `None` if it does not exist.
    pub async fn size_of(&self, relative: &str) -> Result<Option<u64>> {
        let path = self.full_path(relative);
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(&path, e)),
        }
    }

    /// Deletes a file; deleting a missing file succeeds (deletes are retried after failures).
    pub async fn delete(&self, relative: &str) -> Result<()> {
        let path = self.full_path(relative);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(&path, e)),
        }
    }

    /// Every file under `prefix` (relative), with sizes, sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let full = self.full_path(prefix);
        let listed: Vec<_> = self
            .store
            .list(Some(&full))
            .try_collect()
            .await
            .map_err(|e| Error::storage(&full, e))?;
        let root_parts = self.root.parts().count();
        let mut out: Vec<(String, u64)> = listed
            .into_iter()
            .map(|meta| {
                let rel: Vec<String> = meta
                    .location
                    .parts()
                    .skip(root_parts)
                    .map(|p| p.as_ref().to_string())
                    .collect();
                (rel.join("/"), meta.size)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Writes the manifest of a checkpoint. Call it last: the checkpoint becomes visible here.
    pub async fn write_manifest(&self, manifest: &CheckpointManifest) -> Result<FileRef> {
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::corrupt("checkpoint manifest", e.to_string()))?;
        let path = Self::exclusive_path(manifest.checkpoint_id, MANIFEST_NAME);
        self.put(&path, Bytes::from(json), false).await
    }

    /// Reads checkpoint `id`'s manifest.
    pub async fn read_manifest(&self, id: CheckpointId) -> Result<CheckpointManifest> {
        let path = Self::exclusive_path(id, MANIFEST_NAME);
        let bytes = match self.get(&path).await {
            Ok(b) => b,
            Err(Error::Storage {
                source: object_store::Error::NotFound { .. },
                ..
            }) => return Err(Error::CheckpointNotFound { id: id.0 }),
            Err(e) => return Err(e),
        };
        let manifest: CheckpointManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("manifest of checkpoint {id}"), e.to_string()))?;
        if manifest.format_version > MANIFEST_FORMAT_VERSION {
            return Err(Error::UnsupportedFormatVersion {
                what: "checkpoint manifest",
                found: manifest.format_version,
                supported: MANIFEST_FORMAT_VERSION,
            });
        }
        if manifest.checkpoint_id != id {
            return Err(Error::corrupt(
                format!("manifest of checkpoint {id}"),
                format!("it names checkpoint {}", manifest.checkpoint_id),
            ));
        }
        Ok(manifest)
    }

    /// Ids of every checkpoint whose manifest exists (visible checkpoints), ascending.
    pub async fn list_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        let mut ids: Vec<CheckpointId> = self
            .list("")
            .await?
            .into_iter()
            .filter_map(|(path, _)| {
                let (dir, name) = path.split_once('/')?;
                if name != MANIFEST_NAME {
                    return None;
                }
                dir.strip_prefix(CHECKPOINT_DIR_PREFIX)?
                    .parse::<u64>()
                    .ok()
                    .map(CheckpointId)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
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
            let max = MaxParallelism::new(128).unwrap();
            let manifest =
                CheckpointManifest::new(id, max, Parallelism::new(1).unwrap(), Vec::new());
            storage.write_manifest(&manifest).await.unwrap();
            assert_eq!(storage.list_checkpoints().await.unwrap(), vec![id]);
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
    fn url_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        assert!(CheckpointStorage::from_url(&url, Vec::<(String, String)>::new()).is_ok());
        assert!(CheckpointStorage::from_url("memory:///", Vec::<(String, String)>::new()).is_ok());
        assert!(matches!(
            CheckpointStorage::from_url("nope", Vec::<(String, String)>::new()),
            Err(Error::InvalidStorageUrl { .. })
        ));
    }
}
