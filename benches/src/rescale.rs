//! Rescaling restore of the RocksDB backend from native incremental checkpoints, against a
//! naive scan-and-filter restore.
//!
//! The fixture writes the same keys once at parallelism 1 and once at parallelism 2 (each key
//! in the backend owning its key group), takes a native incremental checkpoint of every
//! backend into local checkpoint storage, and drops the backends. Then:
//!
//! - **flowstate native**: `RocksDbBackendFactory::restore` of every new subtask's key-group
//!   range from the old subtasks' native handles (download, open, `delete_range` what lies
//!   outside the range; link in as they are the SST files of other handles that lie inside
//!   the range, copy the rest of what they hold into a new SST file and ingest it).
//! - **naive scan**: for every new subtask, download every old handle's files, open each old
//!   database read-only with raw RocksDB, read every key of every column family, and write the
//!   keys whose key group (the first two bytes) lies in the new range into a fresh database
//!   (same options, write batches, no WAL). It leaves the restored data in memtables rather
//!   than flushing it, so the comparison errs in the naive restore's favour.
//!
//! Both restore the same key-group ranges from the same files in the same storage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowstate_api::key_groups::{key_group_range_for_operator, operator_index_for_key_group};
use flowstate_api::typed::{SharedBackend, ValueStateDescriptor};
use flowstate_api::{
    CheckpointId, CheckpointStorage, KeyContext, KeyGroupRange, KeyedStateBackend,
    KeyedStateHandle, MaxParallelism, Parallelism, SerdeCodec, SnapshotKind, SnapshotRequest,
    StateBackend, StateBackendFactory,
};
use flowstate_rocksdb::{
    value_key, write_options, RocksDbBackend, RocksDbBackendFactory, RocksDbResources,
};
use rocksdb::{ColumnFamilyDescriptor, DBWithThreadMode, SingleThreaded, WriteBatch};

/// Raw RocksDB with plain column-family references.
type DB = DBWithThreadMode<SingleThreaded>;

use crate::error::{BenchError, Result};
use crate::rocksdb_backend::{resources, RAW_COLUMN_FAMILY};
use crate::value::{
    decode_value, encode_value, initial_value, record_key, temp_dir, MAX_PARALLELISM,
    MAX_VALUE_BYTES, VALUE_STATE,
};

/// Keys per write batch of the naive restore.
const NAIVE_BATCH: usize = 10_000;

/// A rescale the benchmark measures.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Rescale {
    OneToTwo,
    TwoToOne,
}

impl Rescale {
    pub const ALL: [Rescale; 2] = [Rescale::OneToTwo, Rescale::TwoToOne];

    /// `1_to_2` or `2_to_1`.
    pub fn label(self) -> &'static str {
        match self {
            Rescale::OneToTwo => "1_to_2",
            Rescale::TwoToOne => "2_to_1",
        }
    }

    pub fn old_parallelism(self) -> u32 {
        match self {
            Rescale::OneToTwo => 1,
            Rescale::TwoToOne => 2,
        }
    }

    pub fn new_parallelism(self) -> u32 {
        match self {
            Rescale::OneToTwo => 2,
            Rescale::TwoToOne => 1,
        }
    }
}

/// What a naive restore of one new subtask produced.
pub struct NaiveRestore {
    db: DB,
    range: KeyGroupRange,
    /// Keys written into the new database.
    pub keys: u64,
    /// Keys read from the old snapshots (the work the scan did).
    pub scanned: u64,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for NaiveRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NaiveRestore")
            .field("range", &self.range)
            .field("keys", &self.keys)
            .field("scanned", &self.scanned)
            .finish_non_exhaustive()
    }
}

/// Native checkpoints of the same keys at parallelism 1 and 2, ready to be restored.
pub struct RescaleFixture {
    runtime: tokio::runtime::Runtime,
    storage: CheckpointStorage,
    factory: RocksDbBackendFactory,
    resources: Arc<RocksDbResources>,
    max: MaxParallelism,
    keys: usize,
    one: Vec<KeyedStateHandle>,
    two: Vec<KeyedStateHandle>,
    scratch: PathBuf,
    // Last: removed after everything that lives in them.
    _dirs: Vec<tempfile::TempDir>,
}

impl std::fmt::Debug for RescaleFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RescaleFixture")
            .field("keys", &self.keys)
            .field("checkpoint_bytes_p1", &total_size(&self.one))
            .field("checkpoint_bytes_p2", &total_size(&self.two))
            .finish_non_exhaustive()
    }
}

fn total_size(handles: &[KeyedStateHandle]) -> u64 {
    handles.iter().map(KeyedStateHandle::total_size).sum()
}

fn ranges(max: MaxParallelism, parallelism: u32) -> Result<Vec<KeyGroupRange>> {
    let p = Parallelism::new(parallelism)?;
    (0..parallelism)
        .map(|i| Ok(key_group_range_for_operator(max, p, i)?))
        .collect()
}

fn key_context(index: usize, max: MaxParallelism) -> Result<KeyContext> {
    Ok(KeyContext::for_key(
        &SerdeCodec::<u64>::new(),
        &record_key(index),
        max,
    )?)
}

fn owner(max: MaxParallelism, parallelism: u32, key: &KeyContext) -> Result<usize> {
    Ok(operator_index_for_key_group(max, Parallelism::new(parallelism)?, key.key_group()) as usize)
}

impl RescaleFixture {
    /// Writes `keys` keys at parallelism 1 and at parallelism 2 and checkpoints every backend
    /// (native incremental checkpoints into local checkpoint storage).
    pub fn build(keys: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BenchError::io("starting a tokio runtime", e))?;
        let storage_dir = temp_dir("flowstate-bench-checkpoints-")?;
        let base_dir = temp_dir("flowstate-bench-rescale-")?;
        let scratch_dir = temp_dir("flowstate-bench-naive-")?;
        let storage = CheckpointStorage::local(storage_dir.path())?;
        let resources = resources()?;
        let factory = RocksDbBackendFactory::new(base_dir.path(), resources.clone())?;
        let max = MaxParallelism::new(MAX_PARALLELISM)?;
        let mut fixture = Self {
            runtime,
            storage,
            factory,
            resources,
            max,
            keys,
            one: Vec::new(),
            two: Vec::new(),
            scratch: scratch_dir.path().to_path_buf(),
            _dirs: vec![scratch_dir, base_dir, storage_dir],
        };
        fixture.one = fixture.checkpoint_at(1)?;
        fixture.two = fixture.checkpoint_at(2)?;
        Ok(fixture)
    }

    fn checkpoint_at(&self, parallelism: u32) -> Result<Vec<KeyedStateHandle>> {
        let backends = ranges(self.max, parallelism)?
            .into_iter()
            .map(|range| Ok(Arc::new(self.factory.create(self.max, range)?)))
            .collect::<Result<Vec<Arc<RocksDbBackend>>>>()?;
        let states = backends
            .iter()
            .map(|b| {
                let shared: SharedBackend = b.clone();
                Ok(ValueStateDescriptor::<u64>::new(VALUE_STATE).bind(shared)?)
            })
            .collect::<Result<Vec<_>>>()?;
        for i in 0..self.keys {
            let key = key_context(i, self.max)?;
            states[owner(self.max, parallelism, &key)?].update(&key, &initial_value(i))?;
        }
        let mut handles = Vec::with_capacity(backends.len());
        for (index, backend) in backends.iter().enumerate() {
            let job = backend.snapshot(&SnapshotRequest {
                checkpoint_id: CheckpointId(parallelism as u64),
                subtask_index: index as u32,
                kind: SnapshotKind::Incremental,
            })?;
            let handle = self.runtime.block_on(job.run(self.storage.clone()))?;
            if !matches!(handle, KeyedStateHandle::Native { .. }) {
                return Err(BenchError::Check(format!(
                    "an incremental RocksDB checkpoint produced {}, not a native handle",
                    handle.describe()
                )));
            }
            handles.push(handle);
        }
        Ok(handles)
    }

    /// Keys the checkpoints hold.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Total bytes of the checkpoints `rescale` restores from.
    pub fn checkpoint_bytes(&self, rescale: Rescale) -> u64 {
        total_size(self.handles(rescale))
    }

    fn handles(&self, rescale: Rescale) -> &[KeyedStateHandle] {
        match rescale.old_parallelism() {
            1 => &self.one,
            _ => &self.two,
        }
    }

    /// Restores every new subtask of `rescale` with the backend's native restore.
    pub fn restore_native(&self, rescale: Rescale) -> Result<Vec<RocksDbBackend>> {
        let handles = self.handles(rescale);
        ranges(self.max, rescale.new_parallelism())?
            .into_iter()
            .map(|range| {
                Ok(self.runtime.block_on(self.factory.restore(
                    self.max,
                    range,
                    &self.storage,
                    handles,
                ))?)
            })
            .collect()
    }

    /// Restores every new subtask of `rescale` by scanning every old key and filtering.
    pub fn restore_naive(&self, rescale: Rescale) -> Result<Vec<NaiveRestore>> {
        let handles = self.handles(rescale);
        ranges(self.max, rescale.new_parallelism())?
            .into_iter()
            .map(|range| self.naive_restore(handles, range))
            .collect()
    }

    fn naive_restore(
        &self,
        handles: &[KeyedStateHandle],
        range: KeyGroupRange,
    ) -> Result<NaiveRestore> {
        let options = self.resources.db_options();
        let dir = tempfile::Builder::new()
            .prefix("naive-")
            .tempdir_in(&self.scratch)
            .map_err(|e| BenchError::io("creating a naive restore directory", e))?;
        // Opened with the default column family named, so that `cf_handle` finds it like
        // any other when the old databases have data there.
        let mut target = DB::open_cf_descriptors(
            &options,
            dir.path().join("db"),
            [ColumnFamilyDescriptor::new(
                rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
                options.clone(),
            )],
        )?;
        let (low, high) = (range.start().get(), range.end().get());
        let mut keys = 0u64;
        let mut scanned = 0u64;
        for (n, handle) in handles.iter().enumerate() {
            let KeyedStateHandle::Native { files, .. } = handle else {
                return Err(BenchError::Check(format!(
                    "the naive restore reads native handles only, got {}",
                    handle.describe()
                )));
            };
            let old_dir = dir.path().join(format!("old-{n}"));
            std::fs::create_dir_all(&old_dir)
                .map_err(|e| BenchError::io(format!("creating {}", old_dir.display()), e))?;
            for file in files {
                download(
                    &self.runtime,
                    &self.storage,
                    &file.file.path,
                    &old_dir,
                    &file.local_name,
                )?;
            }
            let column_families = DB::list_cf(&options, &old_dir)?;
            let old = DB::open_cf_descriptors_read_only(
                &options,
                &old_dir,
                column_families
                    .iter()
                    .map(|name| ColumnFamilyDescriptor::new(name, options.clone())),
                false,
            )?;
            for name in &column_families {
                if target.cf_handle(name).is_none() {
                    target.create_cf(name, &options)?;
                }
                let (Some(from), Some(to)) = (old.cf_handle(name), target.cf_handle(name)) else {
                    return Err(BenchError::Check(format!("column family {name} vanished")));
                };
                let mut batch = WriteBatch::default();
                let mut it = old.raw_iterator_cf(from);
                it.seek_to_first();
                while let Some((k, v)) = it.item() {
                    scanned += 1;
                    // The key group is the first two bytes, big-endian (the documented layout).
                    if let Some(kg) = k.first_chunk::<2>() {
                        let kg = u16::from_be_bytes(*kg) as u32;
                        if (low..=high).contains(&kg) {
                            batch.put_cf(to, k, v);
                            keys += 1;
                            if batch.len() >= NAIVE_BATCH {
                                target.write_opt(std::mem::take(&mut batch), &write_options())?;
                            }
                        }
                    }
                    it.next();
                }
                it.status()?;
                if !batch.is_empty() {
                    target.write_opt(batch, &write_options())?;
                }
            }
        }
        Ok(NaiveRestore {
            db: target,
            range,
            keys,
            scanned,
            _dir: dir,
        })
    }

    /// Restores both rescales both ways and checks that every key arrived exactly once, in the
    /// subtask owning it, with its value; also checks that the key bytes the naive restore
    /// copied are the ones `flowstate_rocksdb::value_key` documents.
    pub fn verify(&self) -> Result<()> {
        let sample_step = (self.keys / 200).max(1);
        for rescale in Rescale::ALL {
            let p = rescale.new_parallelism();
            let label = rescale.label();

            let native = self.restore_native(rescale)?;
            let meta = ValueStateDescriptor::<u64>::new(VALUE_STATE).metadata();
            let mut restored = 0usize;
            let mut ids = Vec::with_capacity(native.len());
            for backend in &native {
                let id = backend.register_state(&meta)?;
                let keys = backend.keys(id, &[])?;
                if let Some(stray) = keys
                    .iter()
                    .find(|k| !backend.key_group_range().contains(k.key_group()))
                {
                    return Err(BenchError::Check(format!(
                        "{label} native: key group {} restored into {}",
                        stray.key_group().get(),
                        backend.key_group_range()
                    )));
                }
                restored += keys.len();
                ids.push(id);
            }
            if restored != self.keys {
                return Err(BenchError::Check(format!(
                    "{label} native: restored {restored} keys, expected {}",
                    self.keys
                )));
            }

            let naive = self.restore_naive(rescale)?;
            let naive_keys: u64 = naive.iter().map(|n| n.keys).sum();
            if naive_keys != self.keys as u64 {
                return Err(BenchError::Check(format!(
                    "{label} naive: restored {naive_keys} keys, expected {}",
                    self.keys
                )));
            }

            let mut buf = [0u8; MAX_VALUE_BYTES];
            for i in (0..self.keys).step_by(sample_step) {
                let key = key_context(i, self.max)?;
                let o = owner(self.max, p, &key)?;
                let expected = initial_value(i);
                let got = native[o]
                    .get(ids[o], &key, &[])?
                    .map(|b| decode_value(&b))
                    .transpose()?;
                if got != Some(expected) {
                    return Err(BenchError::Check(format!(
                        "{label} native: key #{i} reads {got:?}, expected {expected}"
                    )));
                }
                let db = &naive[o].db;
                let cf = db.cf_handle(RAW_COLUMN_FAMILY).ok_or_else(|| {
                    BenchError::Check(format!(
                        "{label} naive: no column family {RAW_COLUMN_FAMILY}"
                    ))
                })?;
                let raw = db.get_pinned_cf(cf, value_key(&key, &[]))?;
                if raw.as_deref() != Some(encode_value(expected, &mut buf)?) {
                    return Err(BenchError::Check(format!(
                        "{label} naive: key #{i} is not stored under flowstate_rocksdb::value_key with its value"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn download(
    runtime: &tokio::runtime::Runtime,
    storage: &CheckpointStorage,
    path: &str,
    dir: &Path,
    local_name: &str,
) -> Result<()> {
    if local_name.is_empty() || local_name.contains(['/', '\\']) || local_name.starts_with('.') {
        return Err(BenchError::Check(format!(
            "native file name '{local_name}' is not a plain file name"
        )));
    }
    let bytes = runtime.block_on(storage.get(path))?;
    let target = dir.join(local_name);
    std::fs::write(&target, &bytes)
        .map_err(|e| BenchError::io(format!("writing {}", target.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_naive_restores_agree_on_every_key() {
        let fixture = RescaleFixture::build(2_000).unwrap();
        assert!(fixture.checkpoint_bytes(Rescale::OneToTwo) > 0);
        assert!(fixture.checkpoint_bytes(Rescale::TwoToOne) > 0);
        fixture.verify().unwrap();
        // Each new subtask of 1 -> 2 scans the whole old snapshot and keeps its share.
        let naive = fixture.restore_naive(Rescale::OneToTwo).unwrap();
        assert_eq!(naive.len(), 2);
        assert!(naive.iter().all(|n| n.scanned >= 2_000 && n.keys > 0));
        assert_eq!(naive.iter().map(|n| n.keys).sum::<u64>(), 2_000);
    }
}
