//! [`CheckpointStorage`]: an `object_store` and a root prefix, with the reads and writes
//! checkpoints need.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{
    check_relative_path, CheckpointId, CheckpointManifest, FileRef, CHECKPOINT_DIR_PREFIX,
    MANIFEST_NAME, SHARED_DIR,
};
use crate::error::{Error, Result};

/// Where checkpoints live: any `object_store` (local disk by default, in memory for tests, S3
/// by URL) plus a root prefix. Cheap to clone.
///
/// The store must support create-only writes (`PutMode::Create`): manifests and the
/// coordinator's fencing epochs are written with them (local disk, memory, S3, GCS and Azure
/// do; an S3-compatible store must honour `If-None-Match`). Without them the lifecycle fails
/// with [`Error::ConditionalPutUnsupported`].
#[derive(Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    description: String,
    /// Where the storage is, as a user would type it again (`file:///abs/dir`,
    /// `s3://bucket/prefix`, `memory:///`): for messages and tools.
    location: String,
    /// The directory on local disk, when the store is [`CheckpointStorage::local`]'s.
    local_dir: Option<PathBuf>,
}

impl fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStorage")
            .field("store", &self.description)
            .field("root", &self.root.as_ref())
            .finish()
    }
}

/// The storage's location as a URL ([`CheckpointStorage::location`]).
impl fmt::Display for CheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location)
    }
}

impl CheckpointStorage {
    /// Any object store, with every path under `root`.
    pub fn new(store: Arc<dyn ObjectStore>, root: impl Into<Path>) -> Self {
        let description = store.to_string();
        let root = root.into();
        let location = format!("{description}/{root}");
        Self {
            store,
            root,
            location,
            description,
            local_dir: None,
        }
    }

    /// Where the storage is, as a URL a user can pass back to [`CheckpointStorage::open`]:
    /// `file:///abs/dir` for local disk, the URL it was opened from otherwise (`s3://…`,
    /// `memory:///`). Stores built with [`CheckpointStorage::new`] describe the store and root.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The local directory `location` names, as [`CheckpointStorage::open`] reads it: a plain
    /// path as given, a `file://` URL decoded (`%20`, `file://localhost/...`); `None` for other
    /// stores and for what is not a valid location. Tools compare locations with it.
    pub fn local_path_of(location: &str) -> Option<PathBuf> {
        if location.contains("://") {
            match url::Url::parse(location) {
                Ok(url) if url.scheme() == "file" => url.to_file_path().ok(),
                _ => None,
            }
        } else if location.trim().is_empty() {
            None
        } else {
            Some(PathBuf::from(location))
        }
    }

    /// Like [`CheckpointStorage::open`], for tools that only read: a local directory (plain
    /// path or `file://` URL) must exist already, and is never created;
    /// [`Error::StorageNotFound`] otherwise. Remote stores are opened as they are (a missing
    /// bucket shows on the first request).
    pub fn open_existing(location: &str) -> Result<Self> {
        if let Some(dir) = Self::local_path_of(location) {
            if !dir.is_dir() {
                return Err(Error::StorageNotFound {
                    location: location.to_string(),
                    reason: if dir.exists() {
                        "it is not a directory".into()
                    } else {
                        "no such directory".into()
                    },
                });
            }
        }
        Self::open(location)
    }

    /// A directory on local disk (created if missing): the embedded default. Durable: every
    /// write is fsynced, with its directory, before it returns (a published manifest survives
    /// a power loss), and deleting a directory's last file removes the directory.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating checkpoint dir {}", dir.display()), e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::storage(dir.display(), e))?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let canonical = std::fs::canonicalize(dir)
            .map_err(|e| Error::io(format!("resolving checkpoint dir {}", dir.display()), e))?;
        let mut storage = Self::new(Arc::new(fs), Path::default());
        storage.location = url::Url::from_directory_path(&canonical)
            .map(|url| url.to_string().trim_end_matches('/').to_string())
            .unwrap_or_else(|()| canonical.display().to_string());
        storage.local_dir = Some(canonical);
        Ok(storage)
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
        let mut storage = Self::new(Arc::new(InMemory::new()), Path::default());
        storage.location = "memory:///".into();
        storage
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
        let mut storage = Self::new(Arc::from(store), root);
        storage.location = url.to_string();
        Ok(storage)
    }

    /// The underlying object store. It addresses paths from the store's own root, not from
    /// this storage's root prefix.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The directory on local disk this storage writes to, for [`CheckpointStorage::local`]
    /// (and `file://` URLs, and plain paths); `None` for other stores.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    /// `relative` under the root; refused unless canonical (see
    /// [`super::check_relative_path`]).
    fn full_path(&self, relative: &str) -> Result<Path> {
        check_relative_path(relative)?;
        let mut path = self.root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        Ok(path)
    }

    /// The directory (relative path) of checkpoint `id`'s own files.
    pub fn checkpoint_dir(id: CheckpointId) -> String {
        format!("{CHECKPOINT_DIR_PREFIX}{:020}", id.0)
    }

    /// The checkpoint whose own directory is `dir` (`chk-<digits>`), if it is one.
    pub fn parse_checkpoint_dir(dir: &str) -> Option<CheckpointId> {
        let digits = dir.strip_prefix(CHECKPOINT_DIR_PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u64>().ok().map(CheckpointId)
    }

    /// Relative path of a file owned by checkpoint `id` alone.
    pub fn exclusive_path(id: CheckpointId, name: &str) -> String {
        format!("{}/{name}", Self::checkpoint_dir(id))
    }

    /// Relative path of a file later checkpoints may share.
    pub fn shared_path(name: &str) -> String {
        format!("{SHARED_DIR}/{name}")
    }

    /// Relative path of checkpoint `id`'s manifest.
    pub fn manifest_path(id: CheckpointId) -> String {
        Self::exclusive_path(id, MANIFEST_NAME)
    }

    /// Writes a whole file.
    pub async fn put(&self, relative: &str, bytes: Bytes, shared: bool) -> Result<FileRef> {
        let size = bytes.len() as u64;
        let path = self.full_path(relative)?;
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

    /// Writes a whole file only if none exists at `relative` (`PutMode::Create`). An existing
    /// file is `Error::Storage` with source `object_store::Error::AlreadyExists`; a store
    /// without create-only writes is [`Error::ConditionalPutUnsupported`].
    pub async fn put_if_absent(&self, relative: &str, bytes: Bytes) -> Result<FileRef> {
        let size = bytes.len() as u64;
        let path = self.full_path(relative)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(bytes), opts)
            .await
        {
            Ok(_) => Ok(FileRef {
                path: relative.to_string(),
                size,
                shared: false,
            }),
            Err(
                e @ (object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. }),
            ) => Err(Error::ConditionalPutUnsupported {
                store: self.description.clone(),
                source: e,
            }),
            Err(e) => Err(Error::storage(&path, e)),
        }
    }

    /// Reads a whole file.
    pub async fn get(&self, relative: &str) -> Result<Bytes> {
        let path = self.full_path(relative)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| Error::storage(&path, e))?;
        result.bytes().await.map_err(|e| Error::storage(&path, e))
    }

    /// Reads a whole file, or `None` if it does not exist.
    pub async fn get_if_exists(&self, relative: &str) -> Result<Option<Bytes>> {
        match self.get(relative).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::Storage {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads bytes `range` of a file.
    pub async fn get_range(&self, relative: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.full_path(relative)?;
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        self.store
            .get_range(&path, range)
            .await
            .map_err(|e| Error::storage(&path, e))
    }

    /// Reads several byte ranges of a file in one store call (the store may coalesce them
    /// into one request). Like `get_range`, a range past the end comes back short.
    pub async fn get_ranges(&self, relative: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.full_path(relative)?;
        self.store
            .get_ranges(&path, ranges)
            .await
            .map_err(|e| Error::storage(&path, e))
    }

    /// Size of a file, or `None` if it does not exist.
    pub async fn size_of(&self, relative: &str) -> Result<Option<u64>> {
        let path = self.full_path(relative)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(&path, e)),
        }
    }

    /// Size and last modification time of a file, or `None` if it does not exist.
    pub async fn head(&self, relative: &str) -> Result<Option<object_store::ObjectMeta>> {
        let path = self.full_path(relative)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(&path, e)),
        }
    }

    /// Deletes a file; deleting a missing file succeeds (deletes are retried after failures).
    pub async fn delete(&self, relative: &str) -> Result<()> {
        let path = self.full_path(relative)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(&path, e)),
        }
    }

    /// Every file under `prefix` (relative), with sizes, sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let full = self.full_path(prefix)?;
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

    /// The names of the directories directly under the root (one delimited listing).
    pub async fn list_top_dirs(&self) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| Error::storage(&self.root, e))?;
        let mut dirs: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// Writes the manifest of a checkpoint, create-only: the checkpoint becomes visible here,
    /// so call it last. It is validated first ([`CheckpointManifest::validate`]). A manifest
    /// for its id that exists already is never overwritten: if it is byte-identical (a retried
    /// write that had landed) this succeeds, otherwise it is `CheckpointState` "already
    /// published". When the write fails, the manifest is read back: present and identical
    /// means the write landed (success); absent means not published (the error).
    pub async fn write_manifest(&self, manifest: &CheckpointManifest) -> Result<FileRef> {
        manifest.validate()?;
        let json = Bytes::from(manifest.to_json()?);
        let id = manifest.checkpoint_id;
        let path = Self::manifest_path(id);
        let error = match self.put_if_absent(&path, json.clone()).await {
            Ok(file) => return Ok(file),
            Err(e @ Error::ConditionalPutUnsupported { .. }) => return Err(e),
            Err(e) => e,
        };
        // The write failed, or found a manifest: find out which manifest is there.
        match self.get_if_exists(&path).await {
            Ok(Some(existing)) if existing == json => Ok(FileRef {
                path,
                size: json.len() as u64,
                shared: false,
            }),
            Ok(Some(_)) => Err(Error::CheckpointState {
                id: id.0,
                state: "already published",
                reason: "another manifest for this id exists (written by another coordinator of the same storage root); it was left as it is: give each job its own storage root".into(),
            }),
            Ok(None) | Err(_) => Err(error),
        }
    }

    /// Reads and checks checkpoint `id`'s manifest (checksum, version, structure: see
    /// [`CheckpointManifest::from_json`]).
    pub async fn read_manifest(&self, id: CheckpointId) -> Result<CheckpointManifest> {
        let path = Self::manifest_path(id);
        match self.get_if_exists(&path).await? {
            Some(bytes) => CheckpointManifest::from_json(&bytes, id),
            None => Err(Error::CheckpointNotFound { id: id.0 }),
        }
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
                Self::parse_checkpoint_dir(dir)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes the staging files an interrupted write left on local disk (`<name>#<digits>`,
    /// which listings never show), anywhere under the root; returns their paths relative to
    /// the root. A no-op for other stores (S3, GCS and Azure publish uploads atomically;
    /// abandoned multipart uploads are a bucket lifecycle rule's job). Only call it while no
    /// upload to this storage is running: a running upload's staging file would go too.
    pub fn remove_local_staging_files(&self) -> Result<Vec<String>> {
        let Some(dir) = &self.local_dir else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(current) = stack.pop() {
            let entries = match std::fs::read_dir(&current) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("listing {}", current.display()), e)),
            };
            for entry in entries {
                let entry =
                    entry.map_err(|e| Error::io(format!("listing {}", current.display()), e))?;
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name();
                let is_staging =
                    name.to_str()
                        .and_then(|n| n.rsplit_once('#'))
                        .is_some_and(|(_, suffix)| {
                            !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
                        });
                if !is_staging {
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
                }
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                removed.push(relative.display().to_string());
            }
        }
        removed.sort();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
