//! The RocksDB backend and its raw baseline, the `rocksdb` crate used directly.
//!
//! Both sides open their database with the options the backend exports
//! ([`RocksDbResources::db_options`] of a default [`RocksDbConfig`], each side with resources
//! of its own so neither warms the other's block cache), write with
//! [`flowstate_rocksdb::write_options`] (no WAL) and read with
//! [`flowstate_rocksdb::read_options`]. The baseline keeps its data in a column family named
//! like the backend's first state's (`s0`) and stores under exactly the key bytes the backend
//! stores ([`flowstate_rocksdb::value_key`]), computed once per key up front. After the
//! preload both sides flush and compact, so measurements start from the same on-disk shape.

use std::ops::Range;
use std::sync::Arc;

use flowstate_api::{MaxParallelism, StateBackendFactory};
use flowstate_rocksdb::{
    read_options, value_key, write_options, RocksDbBackendFactory, RocksDbConfig, RocksDbResources,
};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, ReadOptions, SingleThreaded,
    WriteOptions,
};

/// Raw RocksDB with plain column-family references (the backend itself is multi-threaded).
type DB = DBWithThreadMode<SingleThreaded>;

use crate::error::{BenchError, Result};
use crate::value::{
    decode_value, encode_value, initial_value, temp_dir, BackendUnderTest, FlowstateValue, KeyWalk,
    ValueStore, Workload, MAX_VALUE_BYTES,
};

/// The column family the backend creates for its first registered state (`s<state id>`, see
/// the `flowstate_rocksdb` crate docs); the baseline uses the same name.
pub const RAW_COLUMN_FAMILY: &str = "s0";

/// Fresh process resources with the backend's default configuration.
pub fn resources() -> Result<Arc<RocksDbResources>> {
    Ok(Arc::new(RocksDbResources::new(RocksDbConfig::default())?))
}

/// An empty RocksDB backend owning every key group of `max`, with resources of its own;
/// settling flushes and compacts it.
pub fn open(max: MaxParallelism) -> Result<BackendUnderTest> {
    let dir = temp_dir("flowstate-bench-rocksdb-")?;
    let factory = RocksDbBackendFactory::new(dir.path(), resources()?)?;
    let backend = Arc::new(factory.create(max, max.full_range())?);
    let settled = backend.clone();
    Ok(BackendUnderTest {
        name: "rocksdb",
        backend,
        after_writes: None,
        settle: Some(Box::new(move || {
            settled.flush()?;
            settled.compact()?;
            Ok(())
        })),
        // The factory before its base directory.
        keep_alive: vec![Box::new(factory), Box::new(dir)],
    })
}

/// A RocksDB backend preloaded with the workload, flushed and compacted.
pub fn flowstate(workload: Arc<Workload>) -> Result<FlowstateValue> {
    FlowstateValue::preload(open(workload.max_parallelism())?, workload)
}

/// Raw RocksDB baseline of the RocksDB backend.
pub struct RawRocksDb {
    // Declared first: the database closes before its directory is removed.
    db: DB,
    keys: Vec<Vec<u8>>,
    preload: usize,
    read: ReadOptions,
    write: WriteOptions,
    version: u64,
    _resources: Arc<RocksDbResources>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for RawRocksDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRocksDb")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl RawRocksDb {
    /// A database preloaded with the workload's keys and values, flushed and compacted.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let resources = resources()?;
        let options = resources.db_options();
        let dir = temp_dir("flowstate-bench-raw-rocksdb-")?;
        let db = DB::open_cf_descriptors(
            &options,
            dir.path().join("db"),
            [ColumnFamilyDescriptor::new(
                RAW_COLUMN_FAMILY,
                options.clone(),
            )],
        )?;
        let keys = workload
            .contexts()
            .iter()
            .map(|c| value_key(c, &[]))
            .collect();
        let this = Self {
            db,
            keys,
            preload: workload.preload(),
            read: read_options(),
            write: write_options(),
            version: 0,
            _resources: resources,
            _dir: dir,
        };
        let cf = this.cf()?;
        let mut buf = [0u8; MAX_VALUE_BYTES];
        for (i, key) in this.keys.iter().take(this.preload).enumerate() {
            let value = encode_value(initial_value(i), &mut buf)?;
            this.db.put_cf_opt(cf, key, value, &this.write)?;
        }
        this.db.flush_cf(cf)?;
        this.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(this)
    }

    fn cf(&self) -> Result<&ColumnFamily> {
        self.db.cf_handle(RAW_COLUMN_FAMILY).ok_or_else(|| {
            BenchError::Check(format!(
                "column family {RAW_COLUMN_FAMILY} vanished from the raw database"
            ))
        })
    }

    fn put(&self, cf: &ColumnFamily, index: usize, value: u64) -> Result<()> {
        let mut buf = [0u8; MAX_VALUE_BYTES];
        let bytes = encode_value(value, &mut buf)?;
        Ok(self
            .db
            .put_cf_opt(cf, &self.keys[index], bytes, &self.write)?)
    }
}

impl ValueStore for RawRocksDb {
    fn name(&self) -> &str {
        "raw_rocksdb"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let cf = self.cf()?;
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = match self.db.get_pinned_cf_opt(cf, &self.keys[i], &self.read)? {
                Some(bytes) => decode_value(&bytes)?,
                None => {
                    return Err(BenchError::MissingKey {
                        subject: self.name().into(),
                        index: i,
                    })
                }
            };
            sum = sum.wrapping_add(value);
        }
        Ok(sum)
    }

    fn update_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()> {
        self.version += 1;
        let cf = self.cf()?;
        for _ in 0..count {
            let i = walk.next();
            self.put(cf, i, initial_value(i) + self.version)?;
        }
        Ok(())
    }

    fn insert_fresh(&mut self, fresh: Range<usize>) -> Result<()> {
        let cf = self.cf()?;
        for j in fresh {
            self.put(cf, self.preload + j, j as u64)?;
        }
        Ok(())
    }

    fn remove_fresh(&mut self, fresh: Range<usize>) -> Result<()> {
        let cf = self.cf()?;
        for j in fresh {
            self.db
                .delete_cf_opt(cf, &self.keys[self.preload + j], &self.write)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::assert_same_behaviour;

    #[test]
    fn the_baseline_does_what_the_backend_does() {
        let workload = Workload::new(3_000, 300).unwrap();
        let mut ours = flowstate(workload.clone()).unwrap();
        let mut raw = RawRocksDb::preload(&workload).unwrap();
        assert_same_behaviour(&mut ours, &mut raw, &workload);
        ours.set_layer(crate::value::Layer::Bytes);
        assert_same_behaviour(&mut ours, &mut raw, &workload);
    }
}
