//! Raw heed baselines of the list, map and reducing workloads (see the parent module for what
//! each stores and why).

use std::sync::Arc;

use flowstate_lmdb::key_layout::{map_entry_key, value_key};

use super::RawEnv;
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
    decode_value, encode_value, initial_value, KeyWalk, Versions, Workload, MAX_VALUE_BYTES,
};

fn missing(subject: &str, index: usize) -> BenchError {
    BenchError::MissingKey {
        subject: subject.into(),
        index,
    }
}

/// The backend's value key (also a map's prefix) of every workload key.
fn value_keys(workload: &Workload) -> Arc<[Vec<u8>]> {
    workload
        .contexts()
        .iter()
        .map(|c| value_key(c, &[]))
        .collect()
}

/// Raw heed baseline of the list workload: one `list_encoding` value per key; appends read
/// and rewrite it inside the write transaction.
#[derive(Clone, Debug)]
pub struct RawHeedList {
    raw: RawEnv,
    keys: Arc<[Vec<u8>]>,
    versions: Versions,
}

impl RawHeedList {
    /// An environment preloaded with every key's list.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let this = Self {
            raw: RawEnv::open()?,
            keys: value_keys(workload),
            versions: Versions::default(),
        };
        this.put_preloaded(0..workload.preload())?;
        Ok(this)
    }

    fn put_preloaded(&self, indices: impl IntoIterator<Item = usize>) -> Result<()> {
        let keys = &self.keys;
        self.raw.write_batched(indices, |wtxn, db, i| {
            Ok(db.put(wtxn, &keys[i], &encoded_preload(i)?)?)
        })
    }
}

impl ListStore for RawHeedList {
    fn name(&self) -> &str {
        "raw_heed"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let rtxn = self.raw.env().read_txn()?;
        let db = self.raw.db();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let (list_sum, len) = match db.get(&rtxn, &self.keys[i])? {
                Some(bytes) => sum_encoded(bytes)?,
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
        let keys = &self.keys;
        let mut list = Vec::new();
        self.raw.write_batched(indices, |wtxn, db, &i| {
            list.clear();
            if let Some(stored) = db.get(wtxn, &keys[i])? {
                list.extend_from_slice(stored);
            }
            push_encoded(&mut list, appended_element(i, version))?;
            Ok(db.put(wtxn, &keys[i], &list)?)
        })?;
        Ok(version)
    }

    fn reset(&mut self, indices: &[usize]) -> Result<()> {
        self.put_preloaded(indices.iter().copied())
    }

    fn list(&mut self, index: usize) -> Result<Vec<u64>> {
        let rtxn = self.raw.env().read_txn()?;
        match self.raw.db().get(&rtxn, &self.keys[index])? {
            Some(bytes) => decode_encoded(bytes),
            None => Ok(Vec::new()),
        }
    }

    fn fork(&self) -> Result<Box<dyn ListStore>> {
        Ok(Box::new(self.clone()))
    }
}

/// Raw heed baseline of the map workload: one entry per composite key, maps read with a
/// prefix scan.
#[derive(Clone, Debug)]
pub struct RawHeedMap {
    raw: RawEnv,
    /// Every key's map prefix.
    prefixes: Arc<[Vec<u8>]>,
    /// The composite key of entry [`user_key`]`(i)` of every key `i` (what gets and puts use).
    entry_keys: Arc<[Vec<u8>]>,
    versions: Versions,
}

impl RawHeedMap {
    /// An environment preloaded with every key's entries.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let user_keys = user_key_bytes()?;
        let this = Self {
            raw: RawEnv::open()?,
            prefixes: value_keys(workload),
            entry_keys: workload
                .contexts()
                .iter()
                .enumerate()
                .map(|(i, c)| map_entry_key(c, &[], &user_keys[user_key(i) as usize]))
                .collect(),
            versions: Versions::default(),
        };
        let mut buf = [0u8; MAX_VALUE_BYTES];
        let entries = (0..workload.preload()).flat_map(|i| (0..MAP_ENTRIES).map(move |k| (i, k)));
        this.raw.write_batched(entries, |wtxn, db, (i, k)| {
            let key = map_entry_key(workload.key(i), &[], &user_keys[k as usize]);
            Ok(db.put(wtxn, &key, encode_value(map_value(i, k), &mut buf)?)?)
        })?;
        Ok(this)
    }
}

impl MapStore for RawHeedMap {
    fn name(&self) -> &str {
        "raw_heed"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let rtxn = self.raw.env().read_txn()?;
        let db = self.raw.db();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = match db.get(&rtxn, &self.entry_keys[i])? {
                Some(bytes) => decode_value(bytes)?,
                None => return Err(missing(self.name(), i)),
            };
            sum = sum.wrapping_add(value);
        }
        Ok(sum)
    }

    fn put_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let version = self.versions.next();
        let keys = &self.entry_keys;
        let mut buf = [0u8; MAX_VALUE_BYTES];
        self.raw
            .write_batched((0..count).map(|_| walk.next()), |wtxn, db, i| {
                Ok(db.put(
                    wtxn,
                    &keys[i],
                    encode_value(put_value(i, version), &mut buf)?,
                )?)
            })?;
        Ok(version)
    }

    fn entries_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let rtxn = self.raw.env().read_txn()?;
        let db = self.raw.db();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let prefix = self.prefixes[i].as_slice();
            let mut len = 0;
            for entry in db.prefix_iter(&rtxn, prefix)? {
                let (k, v) = entry?;
                let uk = decode_user_key(&k[prefix.len()..])?;
                sum = sum.wrapping_add(entry_sum(uk, decode_value(v)?));
                len += 1;
            }
            if len == 0 {
                return Err(missing(self.name(), i));
            }
        }
        Ok(sum)
    }

    fn entries(&mut self, index: usize) -> Result<Vec<(u32, u64)>> {
        let rtxn = self.raw.env().read_txn()?;
        let prefix = self.prefixes[index].as_slice();
        let mut out = Vec::new();
        for entry in self.raw.db().prefix_iter(&rtxn, prefix)? {
            let (k, v) = entry?;
            out.push((decode_user_key(&k[prefix.len()..])?, decode_value(v)?));
        }
        out.sort_unstable();
        Ok(out)
    }

    fn fork(&self) -> Result<Box<dyn MapStore>> {
        Ok(Box::new(self.clone()))
    }
}

/// Raw heed baseline of the reducing workload: get, fold, put inside the write transaction.
#[derive(Clone, Debug)]
pub struct RawHeedReducing {
    raw: RawEnv,
    keys: Arc<[Vec<u8>]>,
    adds: AddCount,
}

impl RawHeedReducing {
    /// An environment preloaded with every key's value.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let this = Self {
            raw: RawEnv::open()?,
            keys: value_keys(workload),
            adds: AddCount::default(),
        };
        let mut buf = [0u8; MAX_VALUE_BYTES];
        let keys = &this.keys;
        this.raw
            .write_batched(0..workload.preload(), |wtxn, db, i| {
                Ok(db.put(wtxn, &keys[i], encode_value(initial_value(i), &mut buf)?)?)
            })?;
        Ok(this)
    }
}

impl ReducingStore for RawHeedReducing {
    fn name(&self) -> &str {
        "raw_heed"
    }

    fn add_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()> {
        let keys = &self.keys;
        let mut buf = [0u8; MAX_VALUE_BYTES];
        self.raw
            .write_batched((0..count).map(|_| walk.next()), |wtxn, db, i| {
                let folded = match db.get(wtxn, &keys[i])? {
                    Some(bytes) => reduce(decode_value(bytes)?, ADDEND),
                    None => ADDEND,
                };
                Ok(db.put(wtxn, &keys[i], encode_value(folded, &mut buf)?)?)
            })?;
        self.adds.record(count);
        Ok(())
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let rtxn = self.raw.env().read_txn()?;
        let db = self.raw.db();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            match db.get(&rtxn, &self.keys[i])? {
                Some(bytes) => sum = sum.wrapping_add(decode_value(bytes)?),
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
