//! Restores into a [`RocksDbBackend`]: the rescaling restore from native handles (download,
//! open and clip the base, ingest or copy the key groups of the others), and the write path
//! of canonical and changelog rows ([`KeyedStateBackend::apply_rows`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use flowstate_api::backend::{KeyedStateBackend, RowValue, StateRow};
use flowstate_api::checkpoint::NativeFile;
use flowstate_api::list_encoding;
use flowstate_api::state::StorageLayout;
use flowstate_api::{
    CheckpointStorage, Error, KeyGroup, KeyGroupRange, KeyedStateHandle, MaxParallelism, Result,
    StateId,
};
use rocksdb::{BoundColumnFamily, Options, WriteBatch, DB};

use crate::backend::RocksDbBackend;
use crate::checkpoint::{NativeMetadata, UploadedFile};
use crate::db::{missing_column_family, open_read_only, scan_options, OpenDb, StoredState};
use crate::error::{engine, RocksDbError};
use crate::ingest;
use crate::key_layout::{self, key_group_of};
use crate::BACKEND_NAME;

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
    let old = open_read_only(&options, &old_dir)?;
    for (i, state) in meta.states.iter().enumerate() {
        let id = backend.register_state(&state.metadata)?;
        let cf = old
            .cf_handle(&state.column_family)
            .ok_or_else(|| missing_column_family(&state.column_family))?;
        if everything_in_ssts && ingest_as_is(backend, id, &old, &cf, state, overlap)? {
            continue;
        }
        let sst = scratch.path().join(format!("ingest-{i}.sst"));
        if copy_keys(&old, &cf, overlap, &options, &sst)? {
            backend.ingest(id, &sst)?;
        }
    }
    Ok(())
}

/// Ingests the SST files of `state` in `old` into state `id` as they are, when every one
/// lies inside `overlap`. True when nothing is left to copy (ingested, or no files).
fn ingest_as_is(
    backend: &RocksDbBackend,
    id: StateId,
    old: &DB,
    cf: &Arc<BoundColumnFamily<'_>>,
    state: &StoredState,
    overlap: KeyGroupRange,
) -> Result<bool> {
    let lsm = ingest::files_for_ingestion(old, cf);
    let (first, last) = (overlap.start().get(), overlap.end().get());
    let inside = |key: &[u8]| key_group_of(key).is_some_and(|kg| first <= kg && kg <= last);
    if !lsm
        .iter()
        .all(|f| inside(&f.smallest_key) && inside(&f.largest_key))
    {
        return Ok(false);
    }
    if lsm.is_empty() {
        return Ok(true);
    }
    let paths: Vec<PathBuf> = lsm.into_iter().map(|f| f.path).collect();
    match backend.ingest_db_generated(id, &paths)? {
        Ok(()) => Ok(true),
        Err(refused) => {
            tracing::debug!(
                column_family = %state.column_family,
                %refused,
                "RocksDB refused the files as they are; copying their keys"
            );
            Ok(false)
        }
    }
}

/// Writes the keys of `overlap` in `cf` of `old`, in key order, into a new SST file at
/// `sst`. False when there were none (no file is written then).
fn copy_keys(
    old: &DB,
    cf: &Arc<BoundColumnFamily<'_>>,
    overlap: KeyGroupRange,
    options: &Options,
    sst: &Path,
) -> Result<bool> {
    let (lower, upper) = key_layout::key_group_bounds(&overlap);
    let mut it = old.raw_iterator_cf_opt(cf, scan_options(lower.clone(), upper));
    it.seek(&lower);
    let mut writer = rocksdb::SstFileWriter::create(options);
    let mut opened = false;
    while let Some((k, v)) = it.item() {
        if !opened {
            writer
                .open(sst)
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
    }
    Ok(opened)
}

impl RocksDbBackend {
    /// [`KeyedStateBackend::apply_rows`]: the rows of one key group as one write batch.
    pub(crate) fn apply_rows_in_one_batch(
        &self,
        key_group: KeyGroup,
        rows: &[StateRow<'_>],
    ) -> Result<()> {
        self.check_key_group(key_group)?;
        if rows.is_empty() {
            return Ok(());
        }
        self.cell.with_dependent(|open, table| {
            let table = table.read();
            let mut batch = WriteBatch::default();
            let mut raw = Vec::new();
            for row in rows {
                let entry = table
                    .get(row.state.index())
                    .ok_or_else(|| Error::UnknownStateId { id: row.state.0 })?;
                let cf = &entry.handle;
                raw.clear();
                key_layout::push_prefix(&mut raw, key_group, row.key, row.namespace);
                let layout = entry.kind.layout();
                match (row.value, layout) {
                    (RowValue::Value(v), StorageLayout::Value) => batch.put_cf(cf, &raw, v),
                    (RowValue::List(v), StorageLayout::List) => {
                        if v.is_empty() {
                            batch.delete_cf(cf, &raw);
                        } else {
                            // Reject a malformed list now rather than at its first read.
                            for element in list_encoding::iter(v) {
                                element?;
                            }
                            batch.put_cf(cf, &raw, v);
                        }
                    }
                    (RowValue::MapEntry { user_key, value }, StorageLayout::Map) => {
                        raw.extend_from_slice(user_key);
                        batch.put_cf(cf, &raw, value);
                    }
                    (RowValue::Tombstone, StorageLayout::Value | StorageLayout::List) => {
                        batch.delete_cf(cf, &raw)
                    }
                    (RowValue::Tombstone, StorageLayout::Map) => {
                        // Later puts in this batch get later sequence numbers, so rows after
                        // the tombstone survive it.
                        let upper = key_layout::prefix_successor(&raw).ok_or_else(|| {
                            Error::corrupt("restored row", "key prefix has no successor")
                        })?;
                        batch.delete_range_cf(cf, &raw, &upper);
                    }
                    (value, _) => {
                        return Err(Error::corrupt(
                            "restored row",
                            format!(
                                "a {} row for {} state #{}",
                                value.kind_name(),
                                entry.kind,
                                row.state.0
                            ),
                        ))
                    }
                }
            }
            open.db
                .write_opt(batch, &self.write_opts)
                .map_err(engine("applying restored rows"))
        })
    }

    /// Deletes every key outside the backend's key-group range, in every column family: two
    /// range tombstones per state, plus dropping the SST files that lie wholly outside.
    fn clip_to_range(&self) -> Result<()> {
        let (lower, upper) = key_layout::key_group_bounds(&self.range);
        let below = (vec![0u8, 0u8], lower);
        let above = (upper, key_layout::all_keys_upper_bound());
        self.cell.with_dependent(|open, table| {
            for state in table.read().iter() {
                for (from, to) in [&below, &above] {
                    if from >= to {
                        continue;
                    }
                    open.db
                        .delete_range_cf_opt(&state.handle, from, to, &self.write_opts)
                        .map_err(engine("deleting key groups outside the restored range"))?;
                    open.db
                        .delete_file_in_range_cf(&state.handle, from, to)
                        .map_err(engine("dropping SST files outside the restored range"))?;
                }
            }
            Ok(())
        })
    }

    /// Ingests an SST file (written with this backend's key layout) into `state`'s column
    /// family, moving it into the database.
    fn ingest(&self, state: StateId, sst: &Path) -> Result<()> {
        self.with_state(state, |db, cf, _| {
            let mut opts = rocksdb::IngestExternalFileOptions::default();
            opts.set_move_files(true);
            db.ingest_external_file_cf_opts(cf, &opts, vec![sst])
                .map_err(engine("ingesting restored key groups"))
        })
    }

    /// Ingests SST files of another instance of this backend into `state`'s column family as
    /// they are (see [`crate::ingest`]). The inner error is RocksDB's refusal (for example,
    /// an overlap with data already here); nothing was ingested then.
    fn ingest_db_generated(
        &self,
        state: StateId,
        files: &[PathBuf],
    ) -> Result<std::result::Result<(), String>> {
        self.with_state(state, |db, cf, _| {
            let outcome = ingest::ingest_db_generated(db, cf, files);
            if outcome.is_ok() {
                self.files_ingested_as_is
                    .fetch_add(files.len() as u64, AtomicOrdering::Relaxed);
            }
            Ok(outcome)
        })
    }

    /// SST files of other instances that rescaling restores ingested as they are, without
    /// reading their keys (the rest of a restore copies keys; see the crate docs).
    pub fn files_ingested_as_is(&self) -> u64 {
        self.files_ingested_as_is.load(AtomicOrdering::Relaxed)
    }
}
