//! Checkpoints of a [`RocksDbBackend`]: the [`StateBackend`] hooks, and the native
//! incremental snapshot job.
//!
//! A full snapshot is the canonical format written from a [`crate::RocksDbSnapshotView`]. An
//! incremental one is native: a RocksDB checkpoint (flush, then hard links) taken in the
//! instance directory, whose SST files are uploaded unless the last completed checkpoint
//! already uploaded them ([`CheckpointTracker`]). Its handle's metadata
//! ([`NativeMetadata`]) lists the states, every SST's key-group span and the checksum of
//! every file; [`crate::restore`] reads it back.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use flowstate_api::backend::{
    BoxFuture, KeyedStateBackend, SnapshotJob, SnapshotKind, SnapshotRequest, StateBackend,
};
use flowstate_api::checkpoint::NativeFile;
use flowstate_api::snapshot::CanonicalSnapshotJob;
use flowstate_api::{
    CheckpointId, CheckpointStorage, Error, FileRef, KeyGroupRange, KeyedStateHandle,
    MaxParallelism, Result,
};
use parking_lot::Mutex;
use rocksdb::Options;
use serde::{Deserialize, Serialize};

use crate::backend::RocksDbBackend;
use crate::db::{open_read_only, OpenDb, StoredState};
use crate::error::{engine, RocksDbError};
use crate::key_layout::key_group_of;
use crate::BACKEND_NAME;

/// Version of the metadata JSON of native handles this build writes and reads.
pub const NATIVE_METADATA_VERSION: u32 = 1;

impl StateBackend for RocksDbBackend {
    fn snapshot(&self, request: &SnapshotRequest) -> Result<Box<dyn SnapshotJob>> {
        match request.kind {
            SnapshotKind::Incremental => Ok(Box::new(NativeSnapshotJob::capture(self, request)?)),
            // Full, and any kind this backend does not know: a full snapshot, which every
            // restore reads.
            _ => Ok(Box::new(CanonicalSnapshotJob::for_request(
                Box::new(self.snapshot_view()),
                "rocksdb",
                request,
            ))),
        }
    }

    fn notify_checkpoint_complete(&self, id: CheckpointId) -> Result<()> {
        self.checkpoints.lock().complete(id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&self, id: CheckpointId) -> Result<()> {
        self.checkpoints.lock().abort(id);
        Ok(())
    }
}

/// An uploaded SST with the checksum restore verifies it against.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UploadedFile {
    pub(crate) file: FileRef,
    pub(crate) crc32c: u32,
}

/// Which uploaded SST files a new incremental checkpoint may reference instead of uploading.
///
/// Only the files of the last *completed* checkpoint qualify (an aborted or pending
/// checkpoint's files may be deleted by the coordinator at any time).
#[derive(Debug, Default)]
pub(crate) struct CheckpointTracker {
    /// Local SST name -> uploaded file, for the last completed checkpoint.
    confirmed: Arc<HashMap<String, UploadedFile>>,
    confirmed_id: Option<CheckpointId>,
    /// SSTs referenced by checkpoints whose upload finished but which are not confirmed yet.
    pending: BTreeMap<CheckpointId, HashMap<String, UploadedFile>>,
}

impl CheckpointTracker {
    pub(crate) fn base(&self) -> Arc<HashMap<String, UploadedFile>> {
        self.confirmed.clone()
    }

    fn record(&mut self, id: CheckpointId, files: HashMap<String, UploadedFile>) {
        self.pending.insert(id, files);
    }

    /// Checkpoint `id` completed: its files become the base. A completed checkpoint without a
    /// native record (a full canonical one) empties the base: the files of the checkpoint
    /// before it may now be dropped by retention.
    pub(crate) fn complete(&mut self, id: CheckpointId) {
        if self.confirmed_id.is_none_or(|c| id > c) {
            self.confirmed = Arc::new(self.pending.remove(&id).unwrap_or_default());
            self.confirmed_id = Some(id);
        }
        self.pending.retain(|pending, _| *pending > id);
    }

    /// Checkpoint `id` was aborted. One newer than the base empties the base, the rule of
    /// `flowstate_api::changelog::ChangelogChain::abort`: the coordinator may have refused it
    /// because a file of the base is gone (e.g. after a lost completion notice).
    pub(crate) fn abort(&mut self, id: CheckpointId) {
        self.pending.remove(&id);
        if self.confirmed_id.is_none_or(|c| c < id) {
            self.confirmed = Arc::default();
        }
    }

    /// After a restore: the restored checkpoint (completed) is the base of the next one.
    pub(crate) fn seed(&mut self, files: HashMap<String, UploadedFile>) {
        self.confirmed = Arc::new(files);
    }
}

/// One SST file of a native checkpoint, as the handle's metadata lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SstInfo {
    /// File name in the checkpoint directory, e.g. `000123.sst`.
    pub local_name: String,
    /// Name of the column family (one per state) the file belongs to.
    pub column_family: String,
    /// LSM level of the file.
    pub level: i32,
    /// Number of entries in the file, as RocksDB reports it.
    pub entries: u64,
    /// File size, in bytes.
    pub size: u64,
    /// Smallest key group of the file's keys (`None` when RocksDB reported no key range).
    pub smallest_key_group: Option<u32>,
    /// Largest key group of the file's keys (`None` when RocksDB reported no key range).
    pub largest_key_group: Option<u32>,
}

/// The `metadata` of a [`KeyedStateHandle::Native`] written by this backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct NativeMetadata {
    pub(crate) format_version: u32,
    pub(crate) instance: String,
    pub(crate) states: Vec<StoredState>,
    pub(crate) sst_files: Vec<SstInfo>,
    /// CRC-32C of every file of the handle, by local name: restore verifies each download.
    pub(crate) checksums: BTreeMap<String, u32>,
}

impl NativeMetadata {
    pub(crate) fn parse(value: &serde_json::Value) -> Result<Self> {
        let meta: NativeMetadata =
            serde_json::from_value(value.clone()).map_err(|e| RocksDbError::Metadata {
                detail: e.to_string(),
            })?;
        if meta.format_version > NATIVE_METADATA_VERSION {
            return Err(Error::UnsupportedFormatVersion {
                what: "rocksdb native checkpoint metadata",
                found: meta.format_version,
                supported: NATIVE_METADATA_VERSION,
            });
        }
        Ok(meta)
    }
}

/// Removes a local checkpoint directory when the job is done with it (or dropped unrun).
struct LocalCheckpointDir(PathBuf);

impl Drop for LocalCheckpointDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a local RocksDB checkpoint");
        }
    }
}

/// The async half of a native incremental checkpoint: uploads the SSTs of a hard-linked
/// RocksDB checkpoint that the base does not have, and the small per-checkpoint files.
pub(crate) struct NativeSnapshotJob {
    // Keeps the instance directory (which holds `dir`) alive until the upload is done.
    _db: Arc<OpenDb>,
    dir: LocalCheckpointDir,
    request: SnapshotRequest,
    instance_id: String,
    max: MaxParallelism,
    range: KeyGroupRange,
    states: Vec<StoredState>,
    base: Arc<HashMap<String, UploadedFile>>,
    tracker: Arc<Mutex<CheckpointTracker>>,
    options: Options,
}

impl NativeSnapshotJob {
    /// The synchronous part: a RocksDB checkpoint (flush, then hard links) in the instance
    /// directory. Writers wait only for the memtable flush.
    pub(crate) fn capture(backend: &RocksDbBackend, request: &SnapshotRequest) -> Result<Self> {
        let open = backend.open_db().clone();
        let parent = open.checkpoints_path();
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        let dir = parent.join(format!(
            "chk-{:020}-{}",
            request.checkpoint_id.get(),
            uuid::Uuid::new_v4().simple()
        ));
        {
            let checkpoint = rocksdb::checkpoint::Checkpoint::new(&open.db)
                .map_err(engine("preparing a RocksDB checkpoint"))?;
            checkpoint
                .create_checkpoint(&dir)
                .map_err(engine("creating a RocksDB checkpoint"))?;
        }
        let dir = LocalCheckpointDir(dir);
        Ok(Self {
            _db: open,
            dir,
            request: request.clone(),
            instance_id: backend.instance_id().to_string(),
            max: backend.max_parallelism(),
            range: backend.key_group_range(),
            states: backend.stored_states(),
            base: backend.checkpoints.lock().base(),
            tracker: backend.checkpoints.clone(),
            options: backend.resources.db_options(),
        })
    }

    /// The key-group span of every SST of the checkpoint, read from its MANIFEST.
    fn sst_infos(&self) -> Result<HashMap<String, SstInfo>> {
        let db = open_read_only(&self.options, &self.dir.0)?;
        let files = db
            .live_files()
            .map_err(engine("listing the SST files of a checkpoint"))?;
        Ok(files
            .into_iter()
            .map(|f| {
                let local_name = f.name.trim_start_matches('/').to_string();
                let info = SstInfo {
                    local_name: local_name.clone(),
                    column_family: f.column_family_name,
                    level: f.level,
                    entries: f.num_entries,
                    size: f.size as u64,
                    smallest_key_group: f.start_key.as_deref().and_then(key_group_of),
                    largest_key_group: f.end_key.as_deref().and_then(key_group_of),
                };
                (local_name, info)
            })
            .collect())
    }

    async fn upload(self, storage: CheckpointStorage) -> Result<KeyedStateHandle> {
        let id = self.request.checkpoint_id;
        // List before opening the checkpoint read-only: opening adds an info LOG file.
        let mut entries: Vec<_> = std::fs::read_dir(&self.dir.0)
            .map_err(|e| Error::io(format!("listing {}", self.dir.0.display()), e))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io(format!("listing {}", self.dir.0.display()), e))?;
        entries.sort_by_key(|e| e.file_name());
        let mut infos = self.sst_infos()?;
        let mut files = Vec::with_capacity(entries.len());
        let mut ssts = HashMap::new();
        let mut sst_files = Vec::new();
        let mut checksums = BTreeMap::new();
        for entry in entries {
            let local_name = entry.file_name().to_string_lossy().into_owned();
            let uploaded = if local_name.ends_with(".sst") {
                // A base file is reused only while it still exists: retention may have deleted
                // it after a completion notice this backend did not receive. Shared files are
                // deleted only while no checkpoint is pending, so the check cannot be
                // overtaken; it costs one HEAD per reused file.
                let reusable = match self.base.get(&local_name) {
                    Some(reused)
                        if storage.size_of(&reused.file.path).await? == Some(reused.file.size) =>
                    {
                        Some(reused)
                    }
                    _ => None,
                };
                let uploaded = match reusable {
                    Some(reused) => reused.clone(),
                    None => {
                        // The checkpoint id makes every upload's name unique: a file an
                        // aborted checkpoint uploaded may be deleted by the coordinator while
                        // a later checkpoint uploads the same SST again.
                        let path = CheckpointStorage::shared_path(&format!(
                            "rocksdb-{}-{:020}-{local_name}",
                            self.instance_id,
                            id.get()
                        ));
                        upload_file(&storage, &path, &entry.path(), true).await?
                    }
                };
                ssts.insert(local_name.clone(), uploaded.clone());
                if let Some(info) = infos.remove(&local_name) {
                    sst_files.push(info);
                }
                uploaded
            } else {
                let path = CheckpointStorage::exclusive_path(
                    id,
                    &format!(
                        "rocksdb-{:05}-{}/{local_name}",
                        self.request.subtask_index, self.instance_id
                    ),
                );
                upload_file(&storage, &path, &entry.path(), false).await?
            };
            checksums.insert(local_name.clone(), uploaded.crc32c);
            files.push(NativeFile {
                local_name,
                file: uploaded.file,
            });
        }
        let metadata = NativeMetadata {
            format_version: NATIVE_METADATA_VERSION,
            instance: self.instance_id.clone(),
            states: self.states.clone(),
            sst_files,
            checksums,
        };
        let metadata = serde_json::to_value(&metadata).map_err(|e| RocksDbError::Metadata {
            detail: e.to_string(),
        })?;
        self.tracker.lock().record(id, ssts);
        Ok(KeyedStateHandle::Native {
            backend: BACKEND_NAME.to_string(),
            key_group_range: self.range,
            max_parallelism: self.max,
            files,
            metadata,
        })
    }
}

/// Uploads the local file `local` to `path`, with its checksum.
async fn upload_file(
    storage: &CheckpointStorage,
    path: &str,
    local: &Path,
    shared: bool,
) -> Result<UploadedFile> {
    let bytes = std::fs::read(local)
        .map(Bytes::from)
        .map_err(|e| Error::io(format!("reading {}", local.display()), e))?;
    let crc32c = crc32c::crc32c(&bytes);
    let file = storage.put(path, bytes, shared).await?;
    Ok(UploadedFile { file, crc32c })
}

impl SnapshotJob for NativeSnapshotJob {
    fn run(
        self: Box<Self>,
        storage: CheckpointStorage,
    ) -> BoxFuture<'static, Result<KeyedStateHandle>> {
        Box::pin(async move { self.upload(storage).await })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn uploaded(path: &str) -> UploadedFile {
        UploadedFile {
            file: FileRef {
                path: path.into(),
                size: 1,
                shared: true,
            },
            crc32c: 0,
        }
    }

    fn files(names: &[&str]) -> HashMap<String, UploadedFile> {
        names.iter().map(|n| (n.to_string(), uploaded(n))).collect()
    }

    #[test]
    fn only_the_last_completed_checkpoint_is_a_base() {
        let mut t = CheckpointTracker::default();
        t.record(CheckpointId(1), files(&["a.sst"]));
        assert!(t.base().is_empty(), "pending is not a base");
        t.complete(CheckpointId(1));
        assert_eq!(t.base().len(), 1);

        t.record(CheckpointId(2), files(&["a.sst", "b.sst"]));
        t.abort(CheckpointId(2));
        t.complete(CheckpointId(2));
        assert!(
            t.base().is_empty(),
            "an aborted checkpoint leaves no files to reuse"
        );

        t.record(CheckpointId(3), files(&["c.sst"]));
        t.record(CheckpointId(4), files(&["d.sst"]));
        t.complete(CheckpointId(4));
        assert!(t.base().contains_key("d.sst"));
        // A late notice for an older checkpoint changes nothing; its record is gone.
        t.complete(CheckpointId(3));
        assert!(t.base().contains_key("d.sst"));
        assert!(t.pending.is_empty());
        // An abort older than the base changes nothing; a newer one (maybe refused because
        // a base file is gone) empties the base.
        t.abort(CheckpointId(3));
        assert!(t.base().contains_key("d.sst"));
        t.abort(CheckpointId(5));
        assert!(t.base().is_empty(), "a newer abort ends the base");
    }
}
