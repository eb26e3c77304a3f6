//! Raw RocksDB baselines of the list, map and reducing workloads (see the parent module for
//! what each stores and why).

use std::sync::Arc;

use flowstate_rocksdb::key_layout::prefix_successor;
use flowstate_rocksdb::{map_entry_key, read_options, value_key, write_options};
use rocksdb::{ReadOptions, WriteOptions};

use super::RawDb;
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

/// Visits every (key, value) under `prefix` with a bounded iterator, as the backend lists a
/// map.
fn for_each_with_prefix(
    raw: &RawDb,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let cf = raw.cf()?;
    let mut options = ReadOptions::default();
    options.set_iterate_lower_bound(prefix.to_vec());
    if let Some(upper) = prefix_successor(prefix) {
        options.set_iterate_upper_bound(upper);
    }
    let mut it = raw.db().raw_iterator_cf_opt(cf, options);
    it.seek(prefix);
    while let Some((k, v)) = it.item() {
        visit(k, v)?;
        it.next();
    }
    Ok(it.status()?)
}

/// Raw RocksDB baseline of the list workload: one `list_encoding` value per key; appends are
/// merges with the backend's list-append merge operator.
pub struct RawRocksDbList {
    raw: Arc<RawDb>,
    keys: Arc<[Vec<u8>]>,
    read: ReadOptions,
    write: WriteOptions,
    versions: Versions,
}

impl std::fmt::Debug for RawRocksDbList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRocksDbList")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

impl RawRocksDbList {
    /// A database preloaded with every key's list, flushed and compacted.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let this = Self {
            raw: RawDb::open()?,
            keys: value_keys(workload),
            read: read_options(),
            write: write_options(),
            versions: Versions::default(),
        };
        this.put_preloaded(0..workload.preload())?;
        this.raw.settle()?;
        Ok(this)
    }

    fn put_preloaded(&self, indices: impl IntoIterator<Item = usize>) -> Result<()> {
        let cf = self.raw.cf()?;
        for i in indices {
            self.raw
                .db()
                .put_cf_opt(cf, &self.keys[i], encoded_preload(i)?, &self.write)?;
        }
        Ok(())
    }
}

impl ListStore for RawRocksDbList {
    fn name(&self) -> &str {
        "raw_rocksdb"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let cf = self.raw.cf()?;
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let (list_sum, len) =
                match self
                    .raw
                    .db()
                    .get_pinned_cf_opt(cf, &self.keys[i], &self.read)?
                {
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
        let cf = self.raw.cf()?;
        let mut operand = Vec::with_capacity(4 + MAX_VALUE_BYTES);
        for &i in indices {
            operand.clear();
            push_encoded(&mut operand, appended_element(i, version))?;
            self.raw
                .db()
                .merge_cf_opt(cf, &self.keys[i], &operand, &self.write)?;
        }
        Ok(version)
    }

    fn reset(&mut self, indices: &[usize]) -> Result<()> {
        self.put_preloaded(indices.iter().copied())
    }

    fn list(&mut self, index: usize) -> Result<Vec<u64>> {
        let cf = self.raw.cf()?;
        match self
            .raw
            .db()
            .get_pinned_cf_opt(cf, &self.keys[index], &self.read)?
        {
            Some(bytes) => decode_encoded(&bytes),
            None => Ok(Vec::new()),
        }
    }

    fn fork(&self) -> Result<Box<dyn ListStore>> {
        Ok(Box::new(Self {
            raw: self.raw.clone(),
            keys: self.keys.clone(),
            read: read_options(),
            write: write_options(),
            versions: self.versions.clone(),
        }))
    }
}

/// Raw RocksDB baseline of the map workload: one entry per composite key, maps read with a
/// bounded iterator over their prefix.
pub struct RawRocksDbMap {
    raw: Arc<RawDb>,
    /// Every key's map prefix.
    prefixes: Arc<[Vec<u8>]>,
    /// The composite key of entry [`user_key`]`(i)` of every key `i` (what gets and puts use).
    entry_keys: Arc<[Vec<u8>]>,
    read: ReadOptions,
    write: WriteOptions,
    versions: Versions,
}

impl std::fmt::Debug for RawRocksDbMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRocksDbMap")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

impl RawRocksDbMap {
    /// A database preloaded with every key's entries, flushed and compacted.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let user_keys = user_key_bytes()?;
        let this = Self {
            raw: RawDb::open()?,
            prefixes: value_keys(workload),
            entry_keys: workload
                .contexts()
                .iter()
                .enumerate()
                .map(|(i, c)| map_entry_key(c, &[], &user_keys[user_key(i) as usize]))
                .collect(),
            read: read_options(),
            write: write_options(),
            versions: Versions::default(),
        };
        let cf = this.raw.cf()?;
        let mut buf = [0u8; MAX_VALUE_BYTES];
        for i in 0..workload.preload() {
            for k in 0..MAP_ENTRIES {
                let key = map_entry_key(workload.key(i), &[], &user_keys[k as usize]);
                let value = encode_value(map_value(i, k), &mut buf)?;
                this.raw.db().put_cf_opt(cf, key, value, &this.write)?;
            }
        }
        this.raw.settle()?;
        Ok(this)
    }
}

impl MapStore for RawRocksDbMap {
    fn name(&self) -> &str {
        "raw_rocksdb"
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let cf = self.raw.cf()?;
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value =
                match self
                    .raw
                    .db()
                    .get_pinned_cf_opt(cf, &self.entry_keys[i], &self.read)?
                {
                    Some(bytes) => decode_value(&bytes)?,
                    None => return Err(missing(self.name(), i)),
                };
            sum = sum.wrapping_add(value);
        }
        Ok(sum)
    }

    fn put_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let version = self.versions.next();
        let cf = self.raw.cf()?;
        let mut buf = [0u8; MAX_VALUE_BYTES];
        for _ in 0..count {
            let i = walk.next();
            let value = encode_value(put_value(i, version), &mut buf)?;
            self.raw
                .db()
                .put_cf_opt(cf, &self.entry_keys[i], value, &self.write)?;
        }
        Ok(version)
    }

    fn entries_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let prefix = self.prefixes[i].as_slice();
            let mut len = 0;
            for_each_with_prefix(&self.raw, prefix, |k, v| {
                let uk = decode_user_key(&k[prefix.len()..])?;
                sum = sum.wrapping_add(entry_sum(uk, decode_value(v)?));
                len += 1;
                Ok(())
            })?;
            if len == 0 {
                return Err(missing(self.name(), i));
            }
        }
        Ok(sum)
    }

    fn entries(&mut self, index: usize) -> Result<Vec<(u32, u64)>> {
        let prefix = self.prefixes[index].as_slice();
        let mut out = Vec::new();
        for_each_with_prefix(&self.raw, prefix, |k, v| {
            out.push((decode_user_key(&k[prefix.len()..])?, decode_value(v)?));
            Ok(())
        })?;
        out.sort_unstable();
        Ok(out)
    }

    fn fork(&self) -> Result<Box<dyn MapStore>> {
        Ok(Box::new(Self {
            raw: self.raw.clone(),
            prefixes: self.prefixes.clone(),
            entry_keys: self.entry_keys.clone(),
            read: read_options(),
            write: write_options(),
            versions: self.versions.clone(),
        }))
    }
}

/// Raw RocksDB baseline of the reducing workload: get, fold, put.
pub struct RawRocksDbReducing {
    raw: Arc<RawDb>,
    keys: Arc<[Vec<u8>]>,
    read: ReadOptions,
    write: WriteOptions,
    adds: AddCount,
}

impl std::fmt::Debug for RawRocksDbReducing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRocksDbReducing")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

impl RawRocksDbReducing {
    /// A database preloaded with every key's value, flushed and compacted.
    pub fn preload(workload: &Workload) -> Result<Self> {
        let this = Self {
            raw: RawDb::open()?,
            keys: value_keys(workload),
            read: read_options(),
            write: write_options(),
            adds: AddCount::default(),
        };
        let cf = this.raw.cf()?;
        let mut buf = [0u8; MAX_VALUE_BYTES];
        for i in 0..workload.preload() {
            let value = encode_value(initial_value(i), &mut buf)?;
            this.raw
                .db()
                .put_cf_opt(cf, &this.keys[i], value, &this.write)?;
        }
        this.raw.settle()?;
        Ok(this)
    }
}

impl ReducingStore for RawRocksDbReducing {
    fn name(&self) -> &str {
        "raw_rocksdb"
    }

    fn add_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()> {
        let cf = self.raw.cf()?;
        let db = self.raw.db();
        let mut buf = [0u8; MAX_VALUE_BYTES];
        for _ in 0..count {
            let key = &self.keys[walk.next()];
            let folded = match db.get_pinned_cf_opt(cf, key, &self.read)? {
                Some(bytes) => reduce(decode_value(&bytes)?, ADDEND),
                None => ADDEND,
            };
            db.put_cf_opt(cf, key, encode_value(folded, &mut buf)?, &self.write)?;
        }
        self.adds.record(count);
        Ok(())
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let cf = self.raw.cf()?;
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            match self
                .raw
                .db()
                .get_pinned_cf_opt(cf, &self.keys[i], &self.read)?
            {
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
        Ok(Box::new(Self {
            raw: self.raw.clone(),
            keys: self.keys.clone(),
            read: read_options(),
            write: write_options(),
            adds: self.adds.clone(),
        }))
    }
}
