//! The keys every workload family runs on, the order it visits them in, and how threads split
//! them.
//!
//! Keys are `u64`s serialized with [`SerdeCodec<u64>`] (postcard varints), as an engine's
//! typed state would; values are `u64`s in the same encoding. An engine computes a record's
//! [`KeyContext`] once per record; the workload computes them once up front, and the raw
//! baselines likewise compute their storage keys once up front, so neither side pays key
//! serialization inside the measured loop.
//!
//! A multi-threaded run splits the keys into [`Part`]s the way an engine splits them between
//! subtasks: by key group, in Flink's contiguous key-group ranges
//! ([`operator_index_for_key_group`]). Two threads on one backend then never touch the same
//! key, nor the same key group, as two operator threads of one process sharing a backend
//! would not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flowstate_api::key_groups::operator_index_for_key_group;
use flowstate_api::{Codec, KeyContext, MaxParallelism, Parallelism, SerdeCodec};

use crate::error::{BenchError, Result};

/// Max parallelism of every workload (Flink's default for small jobs).
pub const MAX_PARALLELISM: u32 = 128;

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

    /// All keys, for one thread: its walk visits workload indices directly.
    pub fn whole(&self) -> Part {
        Part {
            index: 0,
            of: 1,
            keys: None,
            preload: self.preload,
            fresh: (0..self.fresh()).collect::<Vec<_>>().into(),
        }
    }

    /// The keys split between `threads` threads by key group, as `threads` subtasks would
    /// own them. One thread gets [`Workload::whole`].
    pub fn parts(&self, threads: usize) -> Result<Vec<Part>> {
        if threads <= 1 {
            return Ok(vec![self.whole()]);
        }
        let parallelism = u32::try_from(threads)
            .map_err(|_| BenchError::Config(format!("{threads} threads is too many")))
            .and_then(|n| Ok(Parallelism::new(n)?))?;
        if threads > self.max.get() as usize {
            return Err(BenchError::Config(format!(
                "{threads} threads cannot split {} key groups",
                self.max.get()
            )));
        }
        let owner =
            |c: &KeyContext| operator_index_for_key_group(self.max, parallelism, c.key_group());
        let mut keys = vec![Vec::new(); threads];
        let mut fresh = vec![Vec::new(); threads];
        for (i, context) in self.contexts.iter().enumerate() {
            let part = owner(context) as usize;
            if i < self.preload {
                keys[part].push(i as u32);
            } else {
                fresh[part].push(i - self.preload);
            }
        }
        let parts: Vec<Part> = keys
            .into_iter()
            .zip(fresh)
            .enumerate()
            .map(|(index, (keys, fresh))| Part {
                index,
                of: threads,
                preload: keys.len(),
                keys: Some(keys.into()),
                fresh: fresh.into(),
            })
            .collect();
        if let Some(empty) = parts.iter().find(|p| p.preload == 0 || p.fresh.is_empty()) {
            return Err(BenchError::Config(format!(
                "part {} of {threads} has no keys: preload more keys",
                empty.index
            )));
        }
        Ok(parts)
    }
}

/// The keys one thread works on: preloaded keys to walk, fresh keys to insert.
#[derive(Clone, Debug)]
pub struct Part {
    index: usize,
    of: usize,
    /// Workload indices of the part's preloaded keys; `None`: all of them, in index order.
    keys: Option<Arc<[u32]>>,
    preload: usize,
    /// Fresh-key numbers (`0..fresh` of the workload) of the part.
    fresh: Arc<[usize]>,
}

impl Part {
    /// This part's number, `0..of`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of parts the workload was split into.
    pub fn of(&self) -> usize {
        self.of
    }

    /// Preloaded keys of the part.
    pub fn len(&self) -> usize {
        self.preload
    }

    pub fn is_empty(&self) -> bool {
        self.preload == 0
    }

    /// A walk over the part's preloaded keys, yielding workload indices.
    pub fn walk(&self) -> KeyWalk {
        match &self.keys {
            None => KeyWalk::new(self.preload),
            Some(keys) => KeyWalk::over(keys.clone()),
        }
    }

    /// The part's fresh-key numbers (arguments of [`crate::value::ValueStore::insert_fresh`]).
    pub fn fresh(&self) -> &[usize] {
        &self.fresh
    }
}

/// Visits the indices `0..n` in a scattered order that repeats only after all `n` were
/// visited (a stride coprime with `n`), so that reads and updates hit the whole key space,
/// not a cache-friendly run of neighbours, and both sides of a comparison see the same order.
/// A walk over a [`Part`] maps each position to the part's workload index.
#[derive(Clone, Debug)]
pub struct KeyWalk {
    position: usize,
    stride: usize,
    n: usize,
    keys: Option<Arc<[u32]>>,
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
            keys: None,
        }
    }

    /// A walk over the workload indices `keys` (not empty).
    pub fn over(keys: Arc<[u32]>) -> Self {
        Self {
            keys: Some(keys.clone()),
            ..Self::new(keys.len())
        }
    }

    /// Number of distinct indices before the walk repeats.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The next index.
    #[inline]
    #[allow(clippy::should_implement_trait)] // an endless walk, not a finite iterator
    pub fn next(&mut self) -> usize {
        let position = self.position;
        self.position += self.stride;
        if self.position >= self.n {
            self.position -= self.n;
        }
        match &self.keys {
            None => position,
            Some(keys) => keys[position] as usize,
        }
    }
}

/// Numbers write calls: a store and its forks share one counter, so every call writes values
/// no earlier call wrote, and a check that reads a call's values back cannot be fooled by an
/// earlier call's.
#[derive(Clone, Debug, Default)]
pub struct Versions(Arc<AtomicU64>);

impl Versions {
    /// The next version (the first is 1).
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A fresh temporary directory (removed when dropped).
pub(crate) fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| BenchError::io("creating a temporary directory", e))
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
    fn parts_split_keys_by_key_group_without_overlap() {
        let workload = Workload::new(5_000, 1_000).unwrap();
        let whole = workload.whole();
        assert_eq!(whole.len(), 5_000);
        assert_eq!(whole.fresh().len(), 1_000);
        let parts = workload.parts(2).unwrap();
        assert_eq!(parts.len(), 2);
        let mut owner = vec![None; 5_000];
        for part in &parts {
            let mut walk = part.walk();
            for _ in 0..part.len() {
                let i = walk.next();
                assert_eq!(owner[i], None, "key #{i} in two parts or twice in one");
                owner[i] = Some(part.index());
            }
            // Key groups are split in contiguous ranges: part 0 the lower half.
            let (lo, hi) = (part.index() as u32 * 64, part.index() as u32 * 64 + 63);
            for _ in 0..part.len() {
                let kg = workload.key(walk.next()).key_group().get();
                assert!((lo..=hi).contains(&kg), "{kg} outside {lo}..={hi}");
            }
            for &j in part.fresh() {
                let kg = workload.fresh_key(j).key_group().get();
                assert!((lo..=hi).contains(&kg));
            }
        }
        assert!(owner.iter().all(Option::is_some));
        assert_eq!(parts.iter().map(|p| p.fresh().len()).sum::<usize>(), 1_000);
        assert!(workload.parts(129).is_err());
        assert!(Workload::new(1, 1_000).unwrap().parts(2).is_err());
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
