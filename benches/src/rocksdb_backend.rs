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
//!
//! The list, map and reducing baselines ([`families`]) open their database the same way:
//! - list: one value per key in `list_encoding` form; an append is a RocksDB **merge** of the
//!   encoded element with the list-append merge operator the backend's options carry
//!   (concatenation, which is append in that encoding). That is the engine's natural append
//!   and what the backend does; a read-modify-write baseline would be slower than any
//!   sensible hand-written operator, so it would flatter ours;
//! - map: one entry per composite key ([`flowstate_rocksdb::map_entry_key`]: key group, key,
//!   namespace, user key), read with a bounded iterator over the map's prefix, as the backend
//!   does;
//! - reducing: get, fold, put (a merge operator cannot run the user's fold).
//!
//! With several threads, forks of a baseline share the database (RocksDB is thread-safe) and
//! each has its own read and write options.

pub mod families;

use std::sync::Arc;

use flowstate_api::{MaxParallelism, StateBackendFactory};
use flowstate_rocksdb::{
    read_options, value_key, write_options, RocksDbBackendFactory, RocksDbConfig, RocksDbResources,
};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, ReadOptions, SingleThreaded,
    WriteOptions,
};

pub use families::{RawRocksDbList, RawRocksDbMap, RawRocksDbReducing};

/// Raw RocksDB with plain column-family references (the backend itself is multi-threaded).
type DB = DBWithThreadMode<SingleThreaded>;

use crate::error::{BenchError, Result};
use crate::store::{Family, Store};
use crate::value::{
    decode_value, encode_value, initial_value, temp_dir, BackendUnderTest, FlowstateValue, KeyWalk,
    ValueStore, Versions, Workload, MAX_VALUE_BYTES,
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

/// The raw baseline of `family`, preloaded with `workload`, flushed and compacted.
pub fn raw(family: Family, workload: &Arc<Workload>) -> Result<Store> {
    Ok(match family {
        Family::Value => Store::Value(Box::new(RawRocksDb::preload(workload)?)),
        Family::List => Store::List(Box::new(RawRocksDbList::preload(workload)?)),
        Family::Map => Store::Map(Box::new(RawRocksDbMap::preload(workload)?)),
        Family::Reducing => Store::Reducing(Box::new(RawRocksDbReducing::preload(workload)?)),
    })
}

/// A raw database with the backend's options and one column family named like the backend's
/// first state's, shared by a baseline and its forks.
pub struct RawDb {
    // Declared first: the database closes before its directory is removed.
    db: DB,
    _resources: Arc<RocksDbResources>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for RawDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDb")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl RawDb {
    /// A new database in a new temporary directory, with resources of its own.
    pub fn open() -> Result<Arc<Self>> {
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
        Ok(Arc::new(Self {
            db,
            _resources: resources,
            _dir: dir,
        }))
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    /// The column family everything is stored in.
    pub fn cf(&self) -> Result<&ColumnFamily> {
        self.db.cf_handle(RAW_COLUMN_FAMILY).ok_or_else(|| {
            BenchError::Check(format!(
                "column family {RAW_COLUMN_FAMILY} vanished from the raw database"
            ))
        })
    }

    /// Flushes and compacts, as the backend settles after its preload.
    pub fn settle(&self) -> Result<()> {
        let cf = self.cf()?;
        self.db.flush_cf(cf)?;
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }
}

/// Raw RocksDB baseline of the RocksDB backend.
pub struct RawRocksDb {
    raw: Arc<RawDb>,
    keys: Arc<[Vec<u8>]>,
    preload: usize,
    read: ReadOptions,
    write: WriteOptions,
    versions: Versions,
}

impl std::fmt::Debug for RawRocksDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRocksDb")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

impl RawRocksDb {
    /// A database preloaded with the workload's keys and values, flushed and compacted.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let keys = workload
            .contexts()
            .iter()
            .map(|c| value_key(c, &[]))
            .collect();
        let this = Self {
            raw: RawDb::open()?,
            keys,
            preload: workload.preload(),
            read: read_options(),
            write: write_options(),
            versions: Versions::default(),
        };
        let cf = this.raw.cf()?;
        let mut buf = [0u8; MAX_VALUE_BYTES];
        for (i, key) in this.keys.iter().take(this.preload).enumerate() {
            let value = encode_value(initial_value(i), &mut buf)?;
            this.raw.db.put_cf_opt(cf, key, value, &this.write)?;
        }
        this.raw.settle()?;
        Ok(this)
    }

    fn put(&self, cf: &ColumnFamily, index: usize, value: u64) -> Result<()> {
        let mut buf = [0u8; MAX_VALUE_BYTES];
        let bytes = encode_value(value, &mut buf)?;
        Ok(self
            .raw
            .db
            .put_cf_opt(cf, &self.keys[index], bytes, &self.write)?)
    }
}

impl ValueStore for RawRocksDb {
    fn name(&self) -> &str {
        "raw_rocksdb"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let cf = self.raw.cf()?;
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = match self
                .raw
                .db
                .get_pinned_cf_opt(cf, &self.keys[i], &self.read)?
            {
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
        let version = self.versions.next();
        let cf = self.raw.cf()?;
        for _ in 0..count {
            let i = walk.next();
            self.put(cf, i, initial_value(i) + version)?;
        }
        Ok(())
    }

    fn insert_fresh(&mut self, fresh: &[usize]) -> Result<()> {
        let cf = self.raw.cf()?;
        for &j in fresh {
            self.put(cf, self.preload + j, j as u64)?;
        }
        Ok(())
    }

    fn remove_fresh(&mut self, fresh: &[usize]) -> Result<()> {
        let cf = self.raw.cf()?;
        for &j in fresh {
            self.raw
                .db
                .delete_cf_opt(cf, &self.keys[self.preload + j], &self.write)?;
        }
        Ok(())
    }

    fn fork(&self) -> Result<Box<dyn ValueStore>> {
        Ok(Box::new(Self {
            raw: self.raw.clone(),
            keys: self.keys.clone(),
            preload: self.preload,
            read: read_options(),
            write: write_options(),
            versions: self.versions.clone(),
        }))
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

    #[test]
    fn the_family_baselines_do_what_the_backend_does() {
        let workload = Workload::new(3_000, 300).unwrap();
        crate::store::assert_families_match(
            &workload,
            || open(workload.max_parallelism()),
            |family| raw(family, &workload),
        );
    }
}
