//! The map-state workload: get and put one entry of a preloaded map, and read all entries of
//! a map.
//!
//! Every preloaded key holds a map of [`MAP_ENTRIES`] entries, `u32` user keys `0..MAP_ENTRIES`
//! to `u64` values, both postcard-encoded as the typed layer's `SerdeCodec` encodes them.
//! Gets and puts on key `i` touch user key [`user_key`]`(i)`. A put writes
//! [`put_value`]`(i, version)`, whose low 40 bits are the preloaded value, so the harness can
//! check after a run that every map holds exactly its entries and that puts landed.
//!
//! Raw baselines store the same user-key and value bytes. The ordered engines (RocksDB, LMDB)
//! store one entry per composite key (the backend's exact key bytes, `map_entry_key`: key
//! group, key, namespace, user key) and list a map with a prefix scan, as the backends do. The
//! raw `DashMap` cannot scan a prefix, so its natural map is a map per key: see
//! [`crate::heap_backend`].

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::typed::{MapState, MapStateDescriptor};
use flowstate_api::{Codec, KeyContext, SerdeCodec, StateId};

use crate::error::{BenchError, Result};
use crate::subject::{BackendUnderTest, Layer, Subject};
use crate::workload::{
    decode_value, encode_value, initial_value, KeyWalk, Versions, Workload, MAX_VALUE_BYTES,
};

/// Name of the map state.
pub const MAP_STATE: &str = "map";
/// Entries of every key's map.
pub const MAP_ENTRIES: u32 = 4;
/// Bits of a put value below the put's version.
const VERSION_SHIFT: u32 = 40;

/// The user key that gets and puts on workload key `index` touch.
pub fn user_key(index: usize) -> u32 {
    (index % MAP_ENTRIES as usize) as u32
}

/// The value preloaded under user key `entry` of workload key `index`.
pub fn map_value(index: usize, entry: u32) -> u64 {
    initial_value(index) * MAP_ENTRIES as u64 + entry as u64
}

/// The value a put call numbered `version` writes under [`user_key`]`(index)`.
pub fn put_value(index: usize, version: u64) -> u64 {
    map_value(index, user_key(index)).wrapping_add(version << VERSION_SHIFT)
}

/// The encodings of user keys `0..MAP_ENTRIES` (`SerdeCodec<u32>`), indexed by user key.
pub fn user_key_bytes() -> Result<Arc<[Vec<u8>]>> {
    let codec = SerdeCodec::<u32>::new();
    (0..MAP_ENTRIES)
        .map(|k| Ok(codec.to_bytes(&k)?))
        .collect::<Result<Vec<_>>>()
        .map(Into::into)
}

/// Decodes a user key written by `SerdeCodec<u32>`.
#[inline]
pub fn decode_user_key(bytes: &[u8]) -> Result<u32> {
    postcard::from_bytes(bytes).map_err(BenchError::Value)
}

/// The checksum a map read adds for one entry.
#[inline]
pub fn entry_sum(user_key: u32, value: u64) -> u64 {
    value.wrapping_add(user_key as u64)
}

/// A store the map workload runs against: a flowstate backend or a raw engine.
pub trait MapStore: Send {
    /// What the reports call it.
    fn name(&self) -> &str;
    /// Reads entry [`user_key`]`(i)` of `count` keys `i` in `walk`'s order; returns the sum of
    /// the values. A missing entry is an error.
    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64>;
    /// Writes [`put_value`]`(i, version)` under entry [`user_key`]`(i)` of `count` keys `i` in
    /// `walk`'s order, where `version` is new for this call; returns `version`. When it
    /// returns, the writes are where the store keeps them (for LMDB: committed).
    fn put_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64>;
    /// Reads every entry of `count` maps in `walk`'s order, decoding user keys and values;
    /// returns the sum of [`entry_sum`] over them. An empty map is an error.
    fn entries_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64>;
    /// The entries of the map of key `index`, sorted by user key (untimed checks).
    fn entries(&mut self, index: usize) -> Result<Vec<(u32, u64)>>;
    /// Another handle on the same data, for another thread (which works on other keys).
    fn fork(&self) -> Result<Box<dyn MapStore>>;
}

/// A flowstate backend running the map workload, through the typed or the byte layer.
#[derive(Clone)]
pub struct FlowstateMap {
    typed: MapState<u32, u64>,
    id: StateId,
    user_keys: Arc<[Vec<u8>]>,
    versions: Versions,
    // Declared last: the state handle goes before the backend's directories.
    subject: Subject,
}

impl std::fmt::Debug for FlowstateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowstateMap")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl FlowstateMap {
    /// Registers the map state, preloads every key's map through the typed layer and settles
    /// the backend.
    pub fn preload(under_test: BackendUnderTest, workload: Arc<Workload>) -> Result<Self> {
        let typed =
            MapStateDescriptor::<u32, u64>::new(MAP_STATE).bind(under_test.backend.clone())?;
        for i in 0..workload.preload() {
            for entry in 0..MAP_ENTRIES {
                typed.put(workload.key(i), &entry, &map_value(i, entry))?;
            }
        }
        let this = Self {
            id: typed.id(),
            typed,
            user_keys: user_key_bytes()?,
            versions: Versions::default(),
            subject: Subject::new(under_test, workload),
        };
        this.subject.settle()?;
        Ok(this)
    }

    /// A handle on the same backend through `layer`.
    pub fn with_layer(&self, layer: Layer) -> Self {
        let mut other = self.clone();
        other.subject.set_layer(layer);
        other
    }

    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    #[inline]
    fn read(&self, key: &KeyContext, index: usize) -> Result<Option<u64>> {
        let uk = user_key(index);
        match self.subject.layer() {
            Layer::Typed => Ok(self.typed.get(key, &uk)?),
            Layer::Bytes => {
                let bytes = self.user_keys[uk as usize].as_slice();
                match self.subject.backend().map_get(self.id, key, &[], bytes)? {
                    Some(value) => Ok(Some(decode_value(&value)?)),
                    None => Ok(None),
                }
            }
        }
    }

    /// Checksum of every entry of the map of `key`, and the number of entries.
    #[inline]
    fn read_all(&self, key: &KeyContext) -> Result<(u64, usize)> {
        let mut sum = 0u64;
        match self.subject.layer() {
            Layer::Typed => {
                let entries = self.typed.entries(key)?;
                for (k, v) in &entries {
                    sum = sum.wrapping_add(entry_sum(*k, *v));
                }
                Ok((sum, entries.len()))
            }
            Layer::Bytes => {
                let entries = self.subject.backend().map_entries(self.id, key, &[])?;
                for (k, v) in &entries {
                    sum = sum.wrapping_add(entry_sum(decode_user_key(k)?, decode_value(v)?));
                }
                Ok((sum, entries.len()))
            }
        }
    }
}

impl MapStore for FlowstateMap {
    fn name(&self) -> &str {
        self.subject.name()
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let workload = self.subject.workload();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = self
                .read(workload.key(i), i)?
                .ok_or_else(|| self.subject.missing(i))?;
            sum = sum.wrapping_add(value);
        }
        Ok(sum)
    }

    fn put_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let version = self.versions.next();
        let workload = self.subject.workload();
        match self.subject.layer() {
            Layer::Typed => {
                for _ in 0..count {
                    let i = walk.next();
                    self.typed
                        .put(workload.key(i), &user_key(i), &put_value(i, version))?;
                }
            }
            Layer::Bytes => {
                let backend = self.subject.backend();
                let mut buf = [0u8; MAX_VALUE_BYTES];
                for _ in 0..count {
                    let i = walk.next();
                    let value = encode_value(put_value(i, version), &mut buf)?;
                    let uk = self.user_keys[user_key(i) as usize].as_slice();
                    backend.map_put(self.id, workload.key(i), &[], uk, value)?;
                }
            }
        }
        self.subject.finish_writes()?;
        Ok(version)
    }

    fn entries_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let workload = self.subject.workload();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let (map_sum, len) = self.read_all(workload.key(i))?;
            if len == 0 {
                return Err(self.subject.missing(i));
            }
            sum = sum.wrapping_add(map_sum);
        }
        Ok(sum)
    }

    fn entries(&mut self, index: usize) -> Result<Vec<(u32, u64)>> {
        let mut entries = self.typed.entries(self.subject.workload().key(index))?;
        entries.sort_unstable();
        Ok(entries)
    }

    fn fork(&self) -> Result<Box<dyn MapStore>> {
        Ok(Box::new(self.clone()))
    }
}

/// Checks the map of key `index`: exactly the user keys `0..MAP_ENTRIES`, each with its
/// preloaded value or, under [`user_key`]`(index)`, a put value; `put` names the version whose
/// value that entry must hold.
fn check_map(store: &mut dyn MapStore, index: usize, put: Option<u64>) -> Result<()> {
    let entries = store.entries(index)?;
    let low = |v: u64| v & ((1u64 << VERSION_SHIFT) - 1);
    let keys_ok = entries.len() == MAP_ENTRIES as usize
        && entries.iter().enumerate().all(|(n, (k, _))| *k == n as u32);
    let values_ok = entries.iter().all(|&(k, v)| {
        low(v) == map_value(index, k) && (v == map_value(index, k) || k == user_key(index))
    });
    let put_ok = put.is_none_or(|version| {
        entries
            .iter()
            .any(|&(k, v)| k == user_key(index) && v == put_value(index, version))
    });
    if !(keys_ok && values_ok && put_ok) {
        return Err(BenchError::Check(format!(
            "{}: map of key #{index} is {entries:?}{}",
            store.name(),
            match put {
                Some(version) => format!(
                    ", expected the entries 0..{MAP_ENTRIES} with {} under {}",
                    put_value(index, version),
                    user_key(index)
                ),
                None => format!(", expected the entries 0..{MAP_ENTRIES}"),
            }
        )));
    }
    Ok(())
}

/// Times `count` map-entry reads.
pub fn time_map_gets(store: &mut dyn MapStore, walk: &mut KeyWalk, count: u64) -> Result<Duration> {
    let start = Instant::now();
    let sum = store.get_many(walk, count)?;
    let elapsed = start.elapsed();
    black_box(sum);
    Ok(elapsed)
}

/// Times `count` map-entry writes, then checks (untimed) that the first one landed.
pub fn time_map_puts(store: &mut dyn MapStore, walk: &mut KeyWalk, count: u64) -> Result<Duration> {
    let first = walk.clone().next();
    let start = Instant::now();
    let version = store.put_many(walk, count)?;
    let elapsed = start.elapsed();
    if count > 0 {
        check_map(store, first, Some(version))?;
    }
    Ok(elapsed)
}

/// Times `count` whole-map reads.
pub fn time_map_entries(
    store: &mut dyn MapStore,
    walk: &mut KeyWalk,
    count: u64,
) -> Result<Duration> {
    let start = Instant::now();
    let sum = store.entries_many(walk, count)?;
    let elapsed = start.elapsed();
    black_box(sum);
    Ok(elapsed)
}

/// Checks that every preloaded key's map holds exactly its entries, each with its preloaded
/// value, except that the entry puts touch may hold a put value (the preloaded value in the
/// low 40 bits, a version above them), and that an entry read finds every key.
pub fn check_maps(store: &mut dyn MapStore, workload: &Workload) -> Result<()> {
    for i in 0..workload.preload() {
        check_map(store, i, None)?;
    }
    store.get_many(&mut workload.walk(), workload.preload() as u64)?;
    Ok(())
}

/// Runs the same operations on `ours` and `raw` and checks that both hold the same maps
/// afterwards.
#[cfg(test)]
pub(crate) fn assert_same_map_behaviour(
    ours: &mut (dyn MapStore + 'static),
    raw: &mut (dyn MapStore + 'static),
    workload: &Workload,
) {
    let n = workload.preload() as u64;
    let sums = [&mut *ours, &mut *raw].map(|s| {
        check_maps(s, workload).unwrap();
        let sum = s.entries_many(&mut workload.walk(), n).unwrap();
        time_map_puts(s, &mut workload.walk(), n).unwrap();
        time_map_puts(s, &mut workload.walk(), n / 3).unwrap();
        check_maps(s, workload).unwrap();
        sum
    });
    let expected = (0..workload.preload())
        .flat_map(|i| (0..MAP_ENTRIES).map(move |k| entry_sum(k, map_value(i, k))))
        .fold(0u64, u64::wrapping_add);
    assert_eq!(sums, [expected; 2]);
    let gets = [&mut *ours, &mut *raw].map(|s| s.get_many(&mut workload.walk(), n).unwrap());
    assert_eq!(
        gets[0],
        gets[1],
        "{} and {} differ",
        ours.name(),
        raw.name()
    );
    let all = [&mut *ours, &mut *raw].map(|s| s.entries_many(&mut workload.walk(), n).unwrap());
    assert_eq!(all[0], all[1], "{} and {} differ", ours.name(), raw.name());
    let parts = workload.parts(2).unwrap();
    for store in [&mut *ours, &mut *raw] {
        for part in &parts {
            let mut fork = store.fork().unwrap();
            time_map_puts(fork.as_mut(), &mut part.walk(), part.len() as u64).unwrap();
        }
        check_maps(store, workload).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_and_values_are_the_codec_bytes() {
        let keys = user_key_bytes().unwrap();
        assert_eq!(keys.len(), MAP_ENTRIES as usize);
        for (k, bytes) in keys.iter().enumerate() {
            assert_eq!(decode_user_key(bytes).unwrap(), k as u32);
        }
        assert_eq!(put_value(9, 0), map_value(9, user_key(9)));
        assert_ne!(put_value(9, 1), put_value(9, 2));
    }
}
