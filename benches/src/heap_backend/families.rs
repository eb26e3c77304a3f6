//! Raw `DashMap` baselines of the list, map and reducing workloads (see the parent module for
//! what each stores and why).

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use super::{Hasher, RawMap};
use crate::error::{BenchError, Result};
use crate::list::{
    appended_element, decode_encoded, encoded_preload, push_encoded, sum_encoded, ListStore,
};
use crate::map::{
    decode_user_key, entry_sum, map_value, put_value, user_key, user_key_bytes, MapStore,
    MAP_ENTRIES,
};
use crate::reducing::{reduce, AddCount, ReducingStore, ADDEND};
use crate::workload::{
    decode_value, encode_value, initial_value, key_bytes, KeyWalk, Versions, Workload,
    MAX_VALUE_BYTES,
};

fn missing(subject: &str, index: usize) -> BenchError {
    BenchError::MissingKey {
        subject: subject.into(),
        index,
    }
}

/// Overwrites `slot` with the encoding of `value`, in place.
#[inline]
fn overwrite(slot: &mut Vec<u8>, value: u64) -> Result<()> {
    let mut buf = [0u8; MAX_VALUE_BYTES];
    let bytes = encode_value(value, &mut buf)?;
    slot.clear();
    slot.extend_from_slice(bytes);
    Ok(())
}

/// Raw `DashMap` baseline of the list workload: one `list_encoding` value per key.
#[derive(Clone)]
pub struct RawDashMapList {
    map: Arc<RawMap>,
    keys: Arc<[Vec<u8>]>,
    versions: Versions,
}

impl std::fmt::Debug for RawDashMapList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDashMapList")
            .field("entries", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl RawDashMapList {
    /// A map preloaded with every key's list.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let map = RawMap::with_hasher(Hasher::default());
        let keys: Arc<[Vec<u8>]> = key_bytes(workload).into();
        for (i, key) in keys.iter().take(workload.preload()).enumerate() {
            map.insert(key.clone(), encoded_preload(i)?);
        }
        Ok(Self {
            map: Arc::new(map),
            keys,
            versions: Versions::default(),
        })
    }
}

impl ListStore for RawDashMapList {
    fn name(&self) -> &str {
        "raw_dashmap"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let (list_sum, len) = match self.map.get(self.keys[i].as_slice()) {
                Some(bytes) => sum_encoded(&bytes)?,
                None => (0, 0),
            };
            if len == 0 {
                return Err(missing(self.name(), i));
            }
            sum = sum.wrapping_add(list_sum);
        }
        Ok(sum)
    }

    fn append(&mut self, indices: &[usize]) -> Result<u64> {
        let version = self.versions.next();
        for &i in indices {
            let element = appended_element(i, version);
            let key = &self.keys[i];
            if let Some(mut list) = self.map.get_mut(key.as_slice()) {
                push_encoded(&mut list, element)?;
            } else {
                let mut list = Vec::new();
                push_encoded(&mut list, element)?;
                self.map.insert(key.clone(), list);
            }
        }
        Ok(version)
    }

    fn reset(&mut self, indices: &[usize]) -> Result<()> {
        for &i in indices {
            let preloaded = encoded_preload(i)?;
            match self.map.get_mut(self.keys[i].as_slice()) {
                Some(mut list) => {
                    list.clear();
                    list.extend_from_slice(&preloaded);
                }
                None => {
                    self.map.insert(self.keys[i].clone(), preloaded);
                }
            }
        }
        Ok(())
    }

    fn list(&mut self, index: usize) -> Result<Vec<u64>> {
        match self.map.get(self.keys[index].as_slice()) {
            Some(bytes) => decode_encoded(&bytes),
            None => Ok(Vec::new()),
        }
    }

    fn fork(&self) -> Result<Box<dyn ListStore>> {
        Ok(Box::new(self.clone()))
    }
}

/// One key's map: user-key bytes to value bytes.
type InnerMap = HashMap<Vec<u8>, Vec<u8>, Hasher>;

/// Raw `DashMap` baseline of the map workload: a `HashMap` of entries per key.
#[derive(Clone)]
pub struct RawDashMapMap {
    map: Arc<DashMap<Vec<u8>, InnerMap, Hasher>>,
    keys: Arc<[Vec<u8>]>,
    user_keys: Arc<[Vec<u8>]>,
    versions: Versions,
}

impl std::fmt::Debug for RawDashMapMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDashMapMap")
            .field("maps", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl RawDashMapMap {
    /// A map preloaded with every key's entries.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let map = DashMap::with_hasher(Hasher::default());
        let keys: Arc<[Vec<u8>]> = key_bytes(workload).into();
        let user_keys = user_key_bytes()?;
        let mut buf = [0u8; MAX_VALUE_BYTES];
        for (i, key) in keys.iter().take(workload.preload()).enumerate() {
            let mut entries = InnerMap::with_hasher(Hasher::default());
            for k in 0..MAP_ENTRIES {
                let value = encode_value(map_value(i, k), &mut buf)?;
                entries.insert(user_keys[k as usize].clone(), value.to_vec());
            }
            map.insert(key.clone(), entries);
        }
        Ok(Self {
            map: Arc::new(map),
            keys,
            user_keys,
            versions: Versions::default(),
        })
    }
}

impl MapStore for RawDashMapMap {
    fn name(&self) -> &str {
        "raw_dashmap"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let uk = self.user_keys[user_key(i) as usize].as_slice();
            let value = match self.map.get(self.keys[i].as_slice()) {
                Some(entries) => match entries.get(uk) {
                    Some(bytes) => decode_value(bytes)?,
                    None => return Err(missing(self.name(), i)),
                },
                None => return Err(missing(self.name(), i)),
            };
            sum = sum.wrapping_add(value);
        }
        Ok(sum)
    }

    fn put_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let version = self.versions.next();
        for _ in 0..count {
            let i = walk.next();
            let value = put_value(i, version);
            let uk = &self.user_keys[user_key(i) as usize];
            let key = &self.keys[i];
            if let Some(mut entries) = self.map.get_mut(key.as_slice()) {
                if let Some(slot) = entries.get_mut(uk.as_slice()) {
                    overwrite(slot, value)?;
                } else {
                    let mut slot = Vec::new();
                    overwrite(&mut slot, value)?;
                    entries.insert(uk.clone(), slot);
                }
            } else {
                let mut slot = Vec::new();
                overwrite(&mut slot, value)?;
                let mut entries = InnerMap::with_hasher(Hasher::default());
                entries.insert(uk.clone(), slot);
                self.map.insert(key.clone(), entries);
            }
        }
        Ok(version)
    }

    fn entries_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let mut len = 0;
            if let Some(entries) = self.map.get(self.keys[i].as_slice()) {
                for (k, v) in entries.iter() {
                    sum = sum.wrapping_add(entry_sum(decode_user_key(k)?, decode_value(v)?));
                    len += 1;
                }
            }
            if len == 0 {
                return Err(missing(self.name(), i));
            }
        }
        Ok(sum)
    }

    fn entries(&mut self, index: usize) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        if let Some(entries) = self.map.get(self.keys[index].as_slice()) {
            for (k, v) in entries.iter() {
                out.push((decode_user_key(k)?, decode_value(v)?));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn fork(&self) -> Result<Box<dyn MapStore>> {
        Ok(Box::new(self.clone()))
    }
}

/// Raw `DashMap` baseline of the reducing workload: read, fold and write back in place.
#[derive(Clone)]
pub struct RawDashMapReducing {
    map: Arc<RawMap>,
    keys: Arc<[Vec<u8>]>,
    adds: AddCount,
}

impl std::fmt::Debug for RawDashMapReducing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDashMapReducing")
            .field("entries", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl RawDashMapReducing {
    /// A map preloaded with every key's value.
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
            adds: AddCount::default(),
        })
    }
}

impl ReducingStore for RawDashMapReducing {
    fn name(&self) -> &str {
        "raw_dashmap"
    }

    fn add_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()> {
        for _ in 0..count {
            let key = &self.keys[walk.next()];
            if let Some(mut slot) = self.map.get_mut(key.as_slice()) {
                let folded = reduce(decode_value(&slot)?, ADDEND);
                overwrite(&mut slot, folded)?;
            } else {
                let mut slot = Vec::new();
                overwrite(&mut slot, ADDEND)?;
                self.map.insert(key.clone(), slot);
            }
        }
        self.adds.record(count);
        Ok(())
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            match self.map.get(self.keys[i].as_slice()) {
                Some(bytes) => sum = sum.wrapping_add(decode_value(&bytes)?),
                None => return Err(missing(self.name(), i)),
            }
        }
        Ok(sum)
    }

    fn adds(&self) -> u64 {
        self.adds.get()
    }

    fn fork(&self) -> Result<Box<dyn ReducingStore>> {
        Ok(Box::new(self.clone()))
    }
}
