//! Native incremental checkpoints (RocksDB checkpoints whose SST files are shared between
//! flowstate checkpoints) and the rescaling restore from them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use flowstate_api::backend::{BoxFuture, KeyedStateBackend, SnapshotJob, SnapshotRequest};
use flowstate_api::checkpoint::NativeFile;
use flowstate_api::{
    CheckpointId, CheckpointStorage, Error, FileRef, KeyGroupRange, KeyedStateHandle,
    MaxParallelism, Result,
};
use parking_lot::Mutex;
use rocksdb::{ColumnFamilyDescriptor, DBWithThreadMode, Options, SingleThreaded, DB};
use serde::{Deserialize, Serialize};

use crate::backend::{OpenDb, RocksDbBackend, StoredState};
use crate::error::{engine, RocksDbError};
use crate::ingest;
use crate::BACKEND_NAME;

/// Version of the metadata JSON of native handles this build writes and reads.
pub const NATIVE_METADATA_VERSION: u32 = 1;

/// Which uploaded SST files a new incremental checkpoint may reference instead of uploading.
///
/// Only the files of the last *completed* checkpoint qualify (an aborted or pending
/// checkpoint's files may be deleted by the coordinator at any time).
/// An uploaded SST with the checksum restore verifies it against.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UploadedFile {
    pub(crate) file: FileRef,
    pub(crate) crc32c: u32,
}

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
    pub local_name: String,
    pub column_family: String,
    pub level: i32,
    pub entries: u64,
    pub size: u64,
    /// Key-group span of the file's keys (`None` when RocksDB reported no key range).
    pub smallest_key_group: Option<u32>,
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
    fn parse(value: &serde_json::Value) -> Result<Self> {
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
        let path = &self.dir.0;
        let cfs = DBWithThreadMode::<SingleThreaded>::list_cf(&self.options, path)
            .map_err(engine("listing column families of a checkpoint"))?;
        let descriptors = cfs
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, self.options.clone()));
        let db = DBWithThreadMode::<SingleThreaded>::open_cf_descriptors_read_only(
            &self.options,
            path,
            descriptors,
            false,
        )
        .map_err(engine("opening a local checkpoint read-only"))?;
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
                        let bytes = read_local(&entry.path())?;
                        let crc32c = crc32c::crc32c(&bytes);
                        let file = storage.put(&path, bytes, true).await?;
                        UploadedFile { file, crc32c }
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
                let bytes = read_local(&entry.path())?;
                let crc32c = crc32c::crc32c(&bytes);
                let file = storage.put(&path, bytes, false).await?;
                UploadedFile { file, crc32c }
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

fn read_local(path: &Path) -> Result<Bytes> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// The key group of a stored key (its first two bytes), if it has them.
fn key_group_of(key: &[u8]) -> Option<u32> {
    key.first_chunk::<2>()
        .map(|kg| u16::from_be_bytes(*kg) as u32)
}

impl SnapshotJob for NativeSnapshotJob {
    fn run(
        self: Box<Self>,
        storage: CheckpointStorage,
    ) -> BoxFuture<'static, Result<KeyedStateHandle>> {
        Box::pin(async move { self.upload(storage).await })
    }
}

/// Restores a backend owning `range` from the handles of old subtasks (see the crate docs):
/// the native handle overlapping `range` most becomes the database (downloaded, opened,
/// clipped with `delete_range`); the target key groups of other native handles are copied in
/// as freshly written SST files (ingested, not inserted key by key); canonical and changelog
/// handles are applied through ranged reads.
pub(crate) async fn restore(
    factory: &crate::RocksDbBackendFactory,
    max: MaxParallelism,
    range: KeyGroupRange,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
) -> Result<RocksDbBackend> {
    // The handles together (natives too) before anything is downloaded: disjoint, covering
    // `range`, at `max`.
    flowstate_api::snapshot::check_max_parallelism(max, storage, handles).await?;
    flowstate_api::snapshot::check_handles(max, range, handles)?;
    let mut natives = Vec::new();
    for handle in handles {
        if let KeyedStateHandle::Native {
            backend,
            max_parallelism,
            ..
        } = handle
        {
            if backend != BACKEND_NAME {
                return Err(Error::UnsupportedHandle {
                    handle: handle.describe(),
                    reason: format!(
                        "it is a native {backend} snapshot; restore it with the {backend} backend or take a canonical (savepoint) snapshot"
                    ),
                });
            }
            if *max_parallelism != max {
                return Err(Error::MaxParallelismMismatch {
                    snapshot: max_parallelism.get(),
                    configured: max.get(),
                });
            }
            if handle.key_group_range().intersection(&range).is_some() {
                natives.push(handle);
            }
        }
    }
    let overlap = |h: &KeyedStateHandle| {
        h.key_group_range()
            .intersection(&range)
            .map_or(0, |r| r.len())
    };
    // The first of the handles with the largest overlap: the least data to clip and copy.
    let base_index = natives
        .iter()
        .enumerate()
        .max_by_key(|(i, h)| (overlap(h), std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    let backend = match base_index {
        Some(i) => restore_base(factory, max, range, storage, natives[i]).await?,
        None => flowstate_api::StateBackendFactory::create(factory, max, range)?,
    };
    for (i, handle) in natives.iter().enumerate() {
        if Some(i) != base_index {
            copy_from_handle(&backend, storage, handle).await?;
        }
    }
    flowstate_api::snapshot::restore_canonical_into(&backend, storage, handles).await?;
    Ok(backend)
}

fn native_parts(
    handle: &KeyedStateHandle,
) -> Result<(KeyGroupRange, &[NativeFile], NativeMetadata)> {
    match handle {
        KeyedStateHandle::Native {
            key_group_range,
            files,
            metadata,
            ..
        } => Ok((*key_group_range, files, NativeMetadata::parse(metadata)?)),
        other => Err(Error::UnsupportedHandle {
            handle: other.describe(),
            reason: "not a native rocksdb handle".into(),
        }),
    }
}

/// Downloads a native handle's files into `dir` under their local names.
async fn download(
    storage: &CheckpointStorage,
    files: &[NativeFile],
    checksums: &BTreeMap<String, u32>,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for f in files {
        let name = &f.local_name;
        // Names come from a stored handle: never let one escape the directory.
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
        if !plain {
            return Err(RocksDbError::Metadata {
                detail: format!("file name '{name}' is not a plain file name"),
            }
            .into());
        }
        let bytes = storage.get(&f.file.path).await?;
        if bytes.len() as u64 != f.file.size {
            return Err(Error::corrupt(
                &f.file.path,
                format!(
                    "{} bytes where the handle records {}",
                    bytes.len(),
                    f.file.size
                ),
            ));
        }
        let expected = *checksums.get(name).ok_or_else(|| RocksDbError::Metadata {
            detail: format!("no checksum recorded for file '{name}'"),
        })?;
        let actual = crc32c::crc32c(&bytes);
        if actual != expected {
            return Err(Error::ChecksumMismatch {
                what: f.file.path.clone(),
                expected,
                actual,
            });
        }
        let target = dir.join(name);
        std::fs::write(&target, &bytes)
            .map_err(|e| Error::io(format!("writing {}", target.display()), e))?;
    }
    Ok(())
}

async fn restore_base(
    factory: &crate::RocksDbBackendFactory,
    max: MaxParallelism,
    range: KeyGroupRange,
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
) -> Result<RocksDbBackend> {
    let (old_range, files, meta) = native_parts(handle)?;
    let dir = factory.new_instance_dir()?;
    download(
        storage,
        files,
        &meta.checksums,
        &OpenDb::db_path(dir.path()),
    )
    .await?;
    let backend = RocksDbBackend::open(factory.resources().clone(), dir, max, range, &meta.states)?;
    if !range.contains_range(&old_range) {
        backend.clip_to_range()?;
    }
    // The restored checkpoint completed: its SSTs still in this database need no new upload.
    let reusable = files
        .iter()
        .filter(|f| f.file.shared && f.local_name.ends_with(".sst"))
        .filter_map(|f| {
            let crc32c = *meta.checksums.get(&f.local_name)?;
            Some((
                f.local_name.clone(),
                UploadedFile {
                    file: f.file.clone(),
                    crc32c,
                },
            ))
        })
        .collect();
    backend.checkpoints.lock().seed(reusable);
    Ok(backend)
}

/// Copies the key groups of `backend`'s range held by another native handle. The old
/// database is opened read-only. A column family whose SST files all lie inside the target
/// (the usual case when scaling in: every key group of the old subtask moves here) is ingested
/// file by file as it is ([`crate::ingest`]); otherwise, or when RocksDB refuses (an overlap),
/// the target range is read in key order into one new SST file that RocksDB ingests.
async fn copy_from_handle(
    backend: &RocksDbBackend,
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
) -> Result<()> {
    let (old_range, files, meta) = native_parts(handle)?;
    let Some(overlap) = old_range.intersection(&backend.key_group_range()) else {
        return Ok(());
    };
    let scratch = tempfile::Builder::new()
        .prefix("restore-")
        .tempdir_in(backend.instance_dir())
        .map_err(|e| Error::io("creating a restore directory", e))?;
    let old_dir = scratch.path().join("db");
    download(storage, files, &meta.checksums, &old_dir).await?;
    // Writes are not logged (the WAL is off), so the SST files hold everything; a handle
    // with a non-empty log would also have data in the read-only instance's memtables.
    let everything_in_ssts = files
        .iter()
        .filter(|f| f.local_name.ends_with(".log"))
        .all(|f| f.file.size == 0);
    let options = backend.resources.db_options();
    let cfs = DB::list_cf(&options, &old_dir)
        .map_err(engine("listing column families of a restored checkpoint"))?;
    let old = DB::open_cf_descriptors_read_only(
        &options,
        &old_dir,
        cfs.iter()
            .map(|name| ColumnFamilyDescriptor::new(name, options.clone())),
        false,
    )
    .map_err(engine("opening a restored checkpoint read-only"))?;
    let (lower, upper) = crate::keys::key_group_bounds(&overlap);
    for (i, state) in meta.states.iter().enumerate() {
        let id = flowstate_api::KeyedStateBackend::register_state(backend, &state.metadata)?;
        let cf = old.cf_handle(&state.column_family).ok_or_else(|| {
            Error::from(RocksDbError::Metadata {
                detail: format!("column family '{}' is missing", state.column_family),
            })
        })?;
        if everything_in_ssts {
            let lsm = ingest::files_for_ingestion(&old, &cf);
            let (first, last) = (overlap.start().get(), overlap.end().get());
            let inside = |key: &[u8]| key_group_of(key).is_some_and(|kg| first <= kg && kg <= last);
            if lsm
                .iter()
                .all(|f| inside(&f.smallest_key) && inside(&f.largest_key))
            {
                if lsm.is_empty() {
                    continue;
                }
                let paths: Vec<PathBuf> = lsm.into_iter().map(|f| f.path).collect();
                match backend.ingest_db_generated(id, &paths)? {
                    Ok(()) => continue,
                    Err(refused) => tracing::debug!(
                        column_family = %state.column_family,
                        %refused,
                        "RocksDB refused the files as they are; copying their keys"
                    ),
                }
            }
        }
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_lower_bound(lower.clone());
        ro.set_iterate_upper_bound(upper.clone());
        ro.fill_cache(false);
        let mut it = old.raw_iterator_cf_opt(&cf, ro);
        it.seek(&lower);
        let sst = scratch.path().join(format!("ingest-{i}.sst"));
        let mut writer = rocksdb::SstFileWriter::create(&options);
        let mut opened = false;
        while let Some((k, v)) = it.item() {
            if !opened {
                writer
                    .open(&sst)
                    .map_err(engine("creating an SST file for ingestion"))?;
                opened = true;
            }
            writer
                .put(k, v)
                .map_err(engine("writing an SST file for ingestion"))?;
            it.next();
        }
        it.status()
            .map_err(engine("reading a restored checkpoint"))?;
        if opened {
            writer
                .finish()
                .map_err(engine("finishing an SST file for ingestion"))?;
            backend.ingest(id, &sst)?;
        }
    }
    Ok(())
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
