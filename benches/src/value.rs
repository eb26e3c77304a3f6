//! The value-state workload every backend and every raw engine runs: get, update and
//! add-new-key on preloaded `u64` keys, with the same key bytes and value bytes everywhere.
//!
//! Keys are `u64`s serialized with [`SerdeCodec<u64>`] (postcard varints), as an engine's
//! typed state would; values are `u64`s in the same encoding. An engine computes a record's
//! [`KeyContext`] once per record; the workload computes them once up front, and the raw
//! baselines likewise compute their storage keys once up front, so neither side pays key
//! serialization inside the measured loop.
//!
//! Each store runs a whole batch of operations per call ([`ValueStore`]), so that a raw LMDB
//! baseline can keep one write transaction open across a batch, as a hand-written operator on
//! LMDB would.

use std::hint::black_box;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::typed::{SharedBackend, ValueState, ValueStateDescriptor};
use flowstate_api::{Codec, KeyContext, MaxParallelism, SerdeCodec, StateId};

use crate::error::{BenchError, Result};

/// Max parallelism of every workload (Flink's default for small jobs).
pub const MAX_PARALLELISM: u32 = 128;

/// Name of the value state every backend registers.
pub const VALUE_STATE: &str = "value";

/// The record key of workload key `index`.
pub fn record_key(index: usize) -> u64 {
    index as u64
}

/// The value preloaded under workload key `index`.
pub fn initial_value(index: usize) -> u64 {
    index as u64
}

/// Largest postcard encoding of a `u64`.
pub const MAX_VALUE_BYTES: usize = 10;

/// Encodes `value` as the typed layer's `SerdeCodec<u64>` does, into `buf`.
#[inline]
pub fn encode_value(value: u64, buf: &mut [u8; MAX_VALUE_BYTES]) -> Result<&[u8]> {
    postcard::to_slice(&value, buf)
        .map(|s| &*s)
        .map_err(BenchError::Value)
}

/// Decodes a value written by [`encode_value`] or by `SerdeCodec<u64>`.
#[inline]
pub fn decode_value(bytes: &[u8]) -> Result<u64> {
    postcard::from_bytes(bytes).map_err(BenchError::Value)
}

/// The keys of a workload: `preload` keys written before measuring, then `fresh` keys that
/// are never preloaded (what add-new-key inserts).
#[derive(Debug)]
pub struct Workload {
    max: MaxParallelism,
    contexts: Vec<KeyContext>,
    preload: usize,
}

impl Workload {
    pub fn new(preload: usize, fresh: usize) -> Result<Arc<Self>> {
        let max = MaxParallelism::new(MAX_PARALLELISM)?;
        let codec = SerdeCodec::<u64>::new();
        let contexts = (0..preload + fresh)
            .map(|i| KeyContext::for_key(&codec, &record_key(i), max))
            .collect::<flowstate_api::Result<Vec<_>>>()?;
        Ok(Arc::new(Self {
            max,
            contexts,
            preload,
        }))
    }

    pub fn max_parallelism(&self) -> MaxParallelism {
        self.max
    }

    pub fn preload(&self) -> usize {
        self.preload
    }

    pub fn fresh(&self) -> usize {
        self.contexts.len() - self.preload
    }

    /// Every key: the preloaded ones (`0..preload`), then the fresh ones.
    pub fn contexts(&self) -> &[KeyContext] {
        &self.contexts
    }

    /// Preloaded key `index`.
    #[inline]
    pub fn key(&self, index: usize) -> &KeyContext {
        &self.contexts[index]
    }

    /// Fresh key `index` (`0..fresh`).
    #[inline]
    pub fn fresh_key(&self, index: usize) -> &KeyContext {
        &self.contexts[self.preload + index]
    }

    /// A walk over the preloaded keys.
    pub fn walk(&self) -> KeyWalk {
        KeyWalk::new(self.preload)
    }
}

/// Visits the indices `0..n` in a scattered order that repeats only after all `n` were
/// visited (a stride coprime with `n`), so that reads and updates hit the whole key space,
/// not a cache-friendly run of neighbours, and both sides of a comparison see the same order.
#[derive(Clone, Debug)]
pub struct KeyWalk {
    position: usize,
    stride: usize,
    n: usize,
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl KeyWalk {
    /// A walk over `0..n`; `n` must be positive.
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        // Near the golden ratio of n: consecutive steps land far apart.
        let mut stride = ((n as f64 * 0.618_033_988_75) as usize).max(1);
        while gcd(stride, n) != 1 {
            stride += 1;
        }
        Self {
            position: 0,
            stride: stride % n,
            n,
        }
    }

    /// The next index.
    #[inline]
    #[allow(clippy::should_implement_trait)] // an endless walk, not a finite iterator
    pub fn next(&mut self) -> usize {
        let index = self.position;
        self.position += self.stride;
        if self.position >= self.n {
            self.position -= self.n;
        }
        index
    }
}

/// A store the value workload runs against: a flowstate backend or a raw engine.
pub trait ValueStore {
    /// What the reports call it (`flowstate_typed`, `raw_rocksdb`, ...).
    fn name(&self) -> &str;
    /// Reads `count` preloaded keys in `walk`'s order; returns the sum of the values read.
    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64>;
    /// Overwrites `count` preloaded keys in `walk`'s order. When it returns, the writes are
    /// where the store keeps them (for LMDB: committed).
    fn update_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()>;
    /// Writes fresh keys `fresh` (none of which exists).
    fn insert_fresh(&mut self, fresh: Range<usize>) -> Result<()>;
    /// Removes fresh keys `fresh` again (untimed clean-up of [`ValueStore::insert_fresh`]).
    fn remove_fresh(&mut self, fresh: Range<usize>) -> Result<()>;
}

/// Which layer of flowstate a [`FlowstateValue`] drives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `ValueState<u64>` with a precomputed `KeyContext`: what an engine calls.
    Typed,
    /// `KeyedStateBackend::get/put` on bytes (the typed layer minus its codec calls).
    Bytes,
}

/// Work a backend needs after a batch of writes or after a preload.
pub type Hook = Box<dyn Fn() -> Result<()>>;

/// A flowstate backend ready for a workload, with what the harness must do around writes.
pub struct BackendUnderTest {
    /// `heap`, `rocksdb` or `lmdb`.
    pub name: &'static str,
    pub backend: SharedBackend,
    /// Runs after every measured batch of writes: the LMDB backend flushes its write buffer,
    /// as raw LMDB commits its transaction.
    pub after_writes: Option<Hook>,
    /// Runs once after a preload: RocksDB flushes and compacts (as its baseline does), LMDB
    /// flushes.
    pub settle: Option<Hook>,
    /// Directories and factories the backend lives in, dropped after it.
    pub keep_alive: Vec<Box<dyn std::any::Any>>,
}

impl std::fmt::Debug for BackendUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendUnderTest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn run_hook(hook: &Option<Hook>) -> Result<()> {
    match hook {
        Some(f) => f(),
        None => Ok(()),
    }
}

/// A flowstate backend running the value workload, through the typed or the byte layer.
pub struct FlowstateValue {
    name: String,
    backend_name: &'static str,
    typed: ValueState<u64>,
    id: StateId,
    layer: Layer,
    workload: Arc<Workload>,
    version: u64,
    // Declared last: the backend (held by `typed` and the hooks) is dropped before the
    // directories it lives in.
    under_test: BackendUnderTest,
}

impl std::fmt::Debug for FlowstateValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowstateValue")
            .field("name", &self.name)
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl FlowstateValue {
    /// Registers the value state in the backend, preloads the workload's keys through the
    /// typed layer and settles the backend.
    pub fn preload(under_test: BackendUnderTest, workload: Arc<Workload>) -> Result<Self> {
        let typed =
            ValueStateDescriptor::<u64>::new(VALUE_STATE).bind(under_test.backend.clone())?;
        for i in 0..workload.preload() {
            typed.update(workload.key(i), &initial_value(i))?;
        }
        let this = Self {
            name: format!("flowstate_{}_typed", under_test.name),
            backend_name: under_test.name,
            id: typed.id(),
            typed,
            layer: Layer::Typed,
            workload,
            version: 0,
            under_test,
        };
        this.settle()?;
        Ok(this)
    }

    /// Switches the layer the next operations go through.
    pub fn set_layer(&mut self, layer: Layer) {
        self.name = match layer {
            Layer::Typed => format!("flowstate_{}_typed", self.backend_name),
            Layer::Bytes => format!("flowstate_{}_bytes", self.backend_name),
        };
        self.layer = layer;
    }

    pub fn layer(&self) -> Layer {
        self.layer
    }

    /// `heap`, `rocksdb` or `lmdb`.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    pub fn backend(&self) -> &SharedBackend {
        &self.under_test.backend
    }

    pub fn workload(&self) -> &Arc<Workload> {
        &self.workload
    }

    /// The typed handle of the value state.
    pub fn state(&self) -> &ValueState<u64> {
        &self.typed
    }

    /// Brings the backend to its settled shape after a preload (see [`BackendUnderTest`]).
    pub fn settle(&self) -> Result<()> {
        run_hook(&self.under_test.settle)
    }

    /// Ends a batch of writes (see [`BackendUnderTest::after_writes`]).
    pub fn finish_writes(&self) -> Result<()> {
        run_hook(&self.under_test.after_writes)
    }

    fn missing(&self, index: usize) -> BenchError {
        BenchError::MissingKey {
            subject: self.name.clone(),
            index,
        }
    }

    #[inline]
    fn read(&self, key: &KeyContext) -> Result<Option<u64>> {
        match self.layer {
            Layer::Typed => Ok(self.typed.get(key)?),
            Layer::Bytes => match self.under_test.backend.get(self.id, key, &[])? {
                Some(bytes) => Ok(Some(decode_value(&bytes)?)),
                None => Ok(None),
            },
        }
    }

    #[inline]
    fn write(&self, key: &KeyContext, value: u64) -> Result<()> {
        match self.layer {
            Layer::Typed => Ok(self.typed.update(key, &value)?),
            Layer::Bytes => {
                let mut buf = [0u8; MAX_VALUE_BYTES];
                let bytes = encode_value(value, &mut buf)?;
                Ok(self.under_test.backend.put(self.id, key, &[], bytes)?)
            }
        }
    }
}

impl ValueStore for FlowstateValue {
    fn name(&self) -> &str {
        &self.name
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = self
                .read(self.workload.key(i))?
                .ok_or_else(|| self.missing(i))?;
            sum = sum.wrapping_add(value);
        }
        Ok(sum)
    }

    fn update_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()> {
        self.version += 1;
        for _ in 0..count {
            let i = walk.next();
            self.write(self.workload.key(i), initial_value(i) + self.version)?;
        }
        self.finish_writes()
    }

    fn insert_fresh(&mut self, fresh: Range<usize>) -> Result<()> {
        for j in fresh {
            self.write(self.workload.fresh_key(j), j as u64)?;
        }
        self.finish_writes()
    }

    fn remove_fresh(&mut self, fresh: Range<usize>) -> Result<()> {
        for j in fresh {
            self.typed.clear(self.workload.fresh_key(j))?;
        }
        self.finish_writes()
    }
}

/// A fresh temporary directory (removed when dropped).
pub(crate) fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| BenchError::io("creating a temporary directory", e))
}

/// Times `count` reads.
pub fn time_gets(store: &mut dyn ValueStore, walk: &mut KeyWalk, count: u64) -> Result<Duration> {
    let start = Instant::now();
    let sum = store.get_many(walk, count)?;
    let elapsed = start.elapsed();
    black_box(sum);
    Ok(elapsed)
}

/// Times `count` updates.
pub fn time_updates(
    store: &mut dyn ValueStore,
    walk: &mut KeyWalk,
    count: u64,
) -> Result<Duration> {
    let start = Instant::now();
    store.update_many(walk, count)?;
    Ok(start.elapsed())
}

/// Times `count` inserts of new keys: chunks of at most `pool` fresh keys are inserted
/// (timed) and removed again (untimed), so that every insert creates a key and the store
/// keeps its preloaded size however long criterion runs.
pub fn time_inserts(store: &mut dyn ValueStore, count: u64, pool: usize) -> Result<Duration> {
    let pool = pool.max(1) as u64;
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < count {
        let chunk = (count - done).min(pool) as usize;
        let start = Instant::now();
        store.insert_fresh(0..chunk)?;
        total += start.elapsed();
        store.remove_fresh(0..chunk)?;
        done += chunk as u64;
    }
    Ok(total)
}

/// Checks that `store` holds every preloaded key (one full walk), so a benchmark never
/// measures a store that lost or never received its data.
pub fn check_preloaded(store: &mut dyn ValueStore, workload: &Workload) -> Result<()> {
    let mut walk = workload.walk();
    store.get_many(&mut walk, workload.preload() as u64)?;
    Ok(())
}

/// The serialized key bytes of every workload key (what the heap backend keys its maps by,
/// and what the raw dashmap stores).
pub fn key_bytes(workload: &Workload) -> Vec<Vec<u8>> {
    workload
        .contexts()
        .iter()
        .map(|c| c.key().to_vec())
        .collect()
}

/// `SerdeCodec<u64>` and [`encode_value`] agree (the raw baselines store what flowstate
/// stores).
pub fn codec_matches(value: u64) -> Result<bool> {
    let mut buf = [0u8; MAX_VALUE_BYTES];
    let raw = encode_value(value, &mut buf)?.to_vec();
    Ok(SerdeCodec::<u64>::new().to_bytes(&value)? == raw)
}

/// Runs the same operations on `ours` and `raw` and checks that both hold the same values
/// afterwards: the baseline does the work flowstate does, no more and no less.
#[cfg(test)]
pub(crate) fn assert_same_behaviour(
    ours: &mut (dyn ValueStore + 'static),
    raw: &mut (dyn ValueStore + 'static),
    workload: &Workload,
) {
    let n = workload.preload() as u64;
    for store in [&mut *ours, &mut *raw] {
        check_preloaded(store, workload).unwrap();
        // Every key twice and a bit: versions differ per call, as they would per record.
        store.update_many(&mut workload.walk(), n).unwrap();
        store.update_many(&mut workload.walk(), n + n / 3).unwrap();
        store.insert_fresh(0..workload.fresh()).unwrap();
    }
    let sums = [&mut *ours, &mut *raw].map(|s| s.get_many(&mut workload.walk(), n).unwrap());
    assert_eq!(
        sums[0],
        sums[1],
        "{} and {} differ",
        ours.name(),
        raw.name()
    );
    for store in [&mut *ours, &mut *raw] {
        store.remove_fresh(0..workload.fresh()).unwrap();
        // Inserting again creates the keys again.
        let elapsed = time_inserts(store, workload.fresh() as u64 * 2, workload.fresh()).unwrap();
        assert!(elapsed > Duration::ZERO);
        check_preloaded(store, workload).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_visits_every_index_once_per_round() {
        for n in [1usize, 2, 7, 10, 1000, 20_000] {
            let mut walk = KeyWalk::new(n);
            let mut seen = vec![false; n];
            for _ in 0..n {
                let i = walk.next();
                assert!(!seen[i], "n={n}: {i} twice");
                seen[i] = true;
            }
            assert!(seen.iter().all(|s| *s));
        }
    }

    #[test]
    fn raw_value_bytes_are_the_codec_bytes() {
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            assert!(codec_matches(v).unwrap());
            let mut buf = [0u8; MAX_VALUE_BYTES];
            let bytes = encode_value(v, &mut buf).unwrap().to_vec();
            assert_eq!(decode_value(&bytes).unwrap(), v);
        }
        assert!(decode_value(&[0xff]).is_err());
    }
}
