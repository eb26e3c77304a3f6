//! The LMDB backend and its raw baseline, `heed` used directly.
//!
//! Both sides open their environment with the options the backend exports
//! ([`LmdbConfig::env_open_options`] of the default configuration: map size, `NO_SYNC`,
//! `NO_META_SYNC`, `NO_READ_AHEAD`, no TLS readers) and keep their data in a named database
//! (`state-0`, the backend's name for its first state) under exactly the key bytes the backend
//! stores ([`flowstate_lmdb::key_layout::value_key`]), computed once per key up front.
//!
//! Batching is the same on both sides: the backend buffers writes and commits one write
//! transaction per [`LmdbConfig::write_buffer_entries`] writes; the baseline keeps one write
//! transaction open and commits it after as many puts. Each measured batch of writes ends
//! committed on both sides (the backend is flushed, the baseline commits). Reads go through one
//! read transaction per batch on the baseline, through the backend's cached one on ours.
//!
//! The list, map and reducing baselines ([`families`]) open their environment the same way:
//! - list: one value per key in `list_encoding` form, the backend's layout. LMDB has no merge,
//!   so an append reads the list inside the write transaction and writes it back one element
//!   longer (what the backend's flush does with its buffered appends);
//! - map: one entry per composite key ([`flowstate_lmdb::key_layout::map_entry_key`]: key
//!   group, key, namespace, user key), read with a prefix scan, the backend's layout;
//! - reducing: get, fold, put inside the write transaction.
//!
//! With several threads, each fork of a baseline opens its own read transactions, and write
//! transactions wait for one another on LMDB's writer lock, as they would in any program.

pub mod families;

use std::sync::Arc;

use flowstate_api::{MaxParallelism, StateBackendFactory};
use flowstate_lmdb::key_layout::value_key;
use flowstate_lmdb::{LmdbBackendFactory, LmdbConfig};
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, RwTxn, WithoutTls};

pub use families::{RawHeedList, RawHeedMap, RawHeedReducing};

use crate::error::{BenchError, Result};
use crate::store::{Family, Store};
use crate::value::{
    decode_value, encode_value, initial_value, temp_dir, BackendUnderTest, FlowstateValue, KeyWalk,
    ValueStore, Versions, Workload, MAX_VALUE_BYTES,
};

/// The database the backend creates for its first registered state; the baseline uses the
/// same name.
pub const RAW_DATABASE: &str = "state-0";

/// An empty LMDB backend (default configuration) owning every key group of `max`; its write
/// buffer is flushed after every batch of writes and when settling.
pub fn open(max: MaxParallelism) -> Result<BackendUnderTest> {
    let factory = LmdbBackendFactory::temporary(LmdbConfig::default())?;
    let backend = Arc::new(factory.create(max, max.full_range())?);
    let flushed = backend.clone();
    let settled = backend.clone();
    Ok(BackendUnderTest {
        name: "lmdb",
        backend,
        after_writes: Some(Box::new(move || Ok(flushed.flush()?))),
        settle: Some(Box::new(move || Ok(settled.flush()?))),
        keep_alive: vec![Box::new(factory)],
    })
}

/// An LMDB backend preloaded with the workload.
pub fn flowstate(workload: Arc<Workload>) -> Result<FlowstateValue> {
    FlowstateValue::preload(open(workload.max_parallelism())?, workload)
}

/// The raw baseline of `family`, preloaded with `workload`.
pub fn raw(family: Family, workload: &Arc<Workload>) -> Result<Store> {
    Ok(match family {
        Family::Value => Store::Value(Box::new(RawHeed::preload(workload)?)),
        Family::List => Store::List(Box::new(RawHeedList::preload(workload)?)),
        Family::Map => Store::Map(Box::new(RawHeedMap::preload(workload)?)),
        Family::Reducing => Store::Reducing(Box::new(RawHeedReducing::preload(workload)?)),
    })
}

/// A raw environment with the backend's options and one database named like the backend's
/// first state's; clones share it (the directory goes with the last).
#[derive(Clone)]
pub struct RawEnv {
    env: Env<WithoutTls>,
    db: Database<'static, Bytes, Bytes>,
    /// Puts per write transaction (the backend's write-buffer size).
    batch: usize,
    _dir: Arc<tempfile::TempDir>,
}

impl std::fmt::Debug for RawEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEnv")
            .field("path", &self.env.path())
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl RawEnv {
    /// A new environment in a new temporary directory.
    pub fn open() -> Result<Self> {
        let config = LmdbConfig::default();
        let dir = temp_dir("flowstate-bench-raw-lmdb-")?;
        // SAFETY: the directory is new, so no other environment has it open; the flags only
        // relax durability of a disposable benchmark database.
        let env = unsafe { config.env_open_options().open(dir.path()) }?;
        let wtxn = env.write_txn()?;
        let db = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                opener
                    .database_options()
                    .types::<Bytes, Bytes>()
                    .name(RAW_DATABASE)
                    .create(wtxn)
                    .map(CommitOrAbort::<_, ()>::Commit)
            })?
            .unwrap_commit();
        Ok(Self {
            env,
            db,
            batch: config.write_buffer_entries,
            _dir: Arc::new(dir),
        })
    }

    pub fn env(&self) -> &Env<WithoutTls> {
        &self.env
    }

    pub fn db(&self) -> Database<'static, Bytes, Bytes> {
        self.db
    }

    /// Calls `write` for every item, in write transactions of `batch` items; commits every
    /// `batch` items and at the end.
    pub fn write_batched<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut RwTxn<'_>, Database<'static, Bytes, Bytes>, T) -> Result<()>,
    ) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        let mut pending = 0;
        for item in items {
            write(&mut wtxn, self.db, item)?;
            pending += 1;
            if pending == self.batch {
                wtxn.commit()?;
                wtxn = self.env.write_txn()?;
                pending = 0;
            }
        }
        wtxn.commit()?;
        Ok(())
    }
}

/// Raw heed baseline of the LMDB backend.
#[derive(Clone, Debug)]
pub struct RawHeed {
    raw: RawEnv,
    keys: Arc<[Vec<u8>]>,
    preload: usize,
    versions: Versions,
}

impl RawHeed {
    /// An environment preloaded with the workload's keys and values.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let keys = workload
            .contexts()
            .iter()
            .map(|c| value_key(c, &[]))
            .collect();
        let mut this = Self {
            raw: RawEnv::open()?,
            keys,
            preload: workload.preload(),
            versions: Versions::default(),
        };
        this.write_all(0..workload.preload(), initial_value)?;
        Ok(this)
    }

    /// Puts `value(index)` under every key of `indices`, committing every `batch` puts and at
    /// the end.
    fn write_all(
        &mut self,
        indices: impl Iterator<Item = usize>,
        value: impl Fn(usize) -> u64,
    ) -> Result<()> {
        let mut buf = [0u8; MAX_VALUE_BYTES];
        let keys = &self.keys;
        self.raw.write_batched(indices, |wtxn, db, i| {
            let bytes = encode_value(value(i), &mut buf)?;
            Ok(db.put(wtxn, &keys[i], bytes)?)
        })
    }
}

impl ValueStore for RawHeed {
    fn name(&self) -> &str {
        "raw_heed"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let rtxn = self.raw.env.read_txn()?;
        let db = self.raw.db;
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = match db.get(&rtxn, &self.keys[i])? {
                Some(bytes) => decode_value(bytes)?,
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
        self.write_all((0..count).map(|_| walk.next()), |i| {
            initial_value(i) + version
        })
    }

    fn insert_fresh(&mut self, fresh: &[usize]) -> Result<()> {
        let preload = self.preload;
        self.write_all(fresh.iter().map(|j| preload + j), |i| (i - preload) as u64)
    }

    fn remove_fresh(&mut self, fresh: &[usize]) -> Result<()> {
        let mut wtxn = self.raw.env.write_txn()?;
        for &j in fresh {
            self.raw
                .db
                .delete(&mut wtxn, &self.keys[self.preload + j])?;
        }
        wtxn.commit()?;
        Ok(())
    }

    fn fork(&self) -> Result<Box<dyn ValueStore>> {
        Ok(Box::new(self.clone()))
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
        let mut raw = RawHeed::preload(&workload).unwrap();
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
