//! The heap backend and its raw baseline, a `DashMap`.
//!
//! The baseline is the plainest fast use of the engine the heap backend is built on: one
//! `DashMap<Vec<u8>, Vec<u8>>` keyed by the same serialized key bytes the backend keys its
//! entries by (the namespace is empty), holding the same value bytes, with the same hasher
//! (foldhash; dashmap's default SipHash would make the baseline slower than it need be).
//! Reads decode the value in place, updates rewrite the value buffer in place (as the backend
//! does), inserts clone the precomputed key into the map.
//!
//! The list, map and reducing baselines ([`families`]) use the same map type and hasher:
//! - list: one value per key in `list_encoding` form, appended to in place through one
//!   `get_mut` (the backend appends in place too);
//! - map: a map per key (`DashMap<key, HashMap<user key, value>>`, foldhash both). A hash map
//!   cannot list the entries under a key prefix, so a composite-key map (key ‖ user key) could
//!   not serve "all entries of a map"; a map per key is what a hand-written operator on a hash
//!   map would use, and what the heap backend does;
//! - reducing: read, fold and write back in place through one `get_mut`.

pub mod families;

use std::sync::Arc;

use dashmap::DashMap;
use flowstate_api::{MaxParallelism, StateBackendFactory};
use flowstate_heap::HeapBackendFactory;

pub use families::{RawDashMapList, RawDashMapMap, RawDashMapReducing};

use crate::error::{BenchError, Result};
use crate::store::{Family, Store};
use crate::value::{
    decode_value, encode_value, initial_value, key_bytes, BackendUnderTest, FlowstateValue,
    KeyWalk, ValueStore, Versions, Workload, MAX_VALUE_BYTES,
};

/// An empty heap backend (default configuration) owning every key group of `max`.
pub fn open(max: MaxParallelism) -> Result<BackendUnderTest> {
    let backend = HeapBackendFactory::new().create(max, max.full_range())?;
    Ok(BackendUnderTest {
        name: "heap",
        backend: Arc::new(backend),
        after_writes: None,
        settle: None,
        keep_alive: Vec::new(),
    })
}

/// A heap backend preloaded with the workload.
pub fn flowstate(workload: Arc<Workload>) -> Result<FlowstateValue> {
    FlowstateValue::preload(open(workload.max_parallelism())?, workload)
}

/// The raw baseline of `family`, preloaded with `workload`.
pub fn raw(family: Family, workload: &Arc<Workload>) -> Result<Store> {
    Ok(match family {
        Family::Value => Store::Value(Box::new(RawDashMap::preload(workload)?)),
        Family::List => Store::List(Box::new(RawDashMapList::preload(workload)?)),
        Family::Map => Store::Map(Box::new(RawDashMapMap::preload(workload)?)),
        Family::Reducing => Store::Reducing(Box::new(RawDashMapReducing::preload(workload)?)),
    })
}

type Hasher = foldhash::fast::RandomState;
type RawMap = DashMap<Vec<u8>, Vec<u8>, Hasher>;

/// Raw `DashMap` baseline of the heap backend.
#[derive(Clone)]
pub struct RawDashMap {
    map: Arc<RawMap>,
    keys: Arc<[Vec<u8>]>,
    preload: usize,
    versions: Versions,
}

impl std::fmt::Debug for RawDashMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDashMap")
            .field("entries", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl RawDashMap {
    /// A map preloaded with the workload's keys and values.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let map = RawMap::with_hasher(Hasher::default());
        let keys: Arc<[Vec<u8>]> = key_bytes(workload).into();
        let mut buf = [0u8; MAX_VALUE_BYTES];
        for (i, key) in keys.iter().take(workload.preload()).enumerate() {
            map.insert(
                key.clone(),
                encode_value(initial_value(i), &mut buf)?.to_vec(),
            );
        }
        Ok(Self {
            map: Arc::new(map),
            keys,
            preload: workload.preload(),
            versions: Versions::default(),
        })
    }

    #[inline]
    fn put(&self, index: usize, value: u64) -> Result<()> {
        let mut buf = [0u8; MAX_VALUE_BYTES];
        let bytes = encode_value(value, &mut buf)?;
        let key = &self.keys[index];
        if let Some(mut slot) = self.map.get_mut(key.as_slice()) {
            slot.clear();
            slot.extend_from_slice(bytes);
        } else {
            self.map.insert(key.clone(), bytes.to_vec());
        }
        Ok(())
    }
}

impl ValueStore for RawDashMap {
    fn name(&self) -> &str {
        "raw_dashmap"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = match self.map.get(self.keys[i].as_slice()) {
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
        for _ in 0..count {
            let i = walk.next();
            self.put(i, initial_value(i) + version)?;
        }
        Ok(())
    }

    fn insert_fresh(&mut self, fresh: &[usize]) -> Result<()> {
        for &j in fresh {
            self.put(self.preload + j, j as u64)?;
        }
        Ok(())
    }

    fn remove_fresh(&mut self, fresh: &[usize]) -> Result<()> {
        for &j in fresh {
            self.map.remove(self.keys[self.preload + j].as_slice());
        }
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
        let mut raw = RawDashMap::preload(&workload).unwrap();
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
