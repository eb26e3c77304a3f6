//! The reducing-state workload: `add`, i.e. read the stored value, fold the new one into it
//! with the reduce function, write the result.
//!
//! Every preloaded key holds [`initial_value`]; each add folds [`ADDEND`] into it with
//! [`reduce`] (wrapping addition, the commonest reduce function: a running sum). Stores count
//! their adds (forks share the count), so the harness checks after a run that the values sum
//! to exactly what the preload and the adds make: an add that does not read, fold and write
//! cannot go unnoticed.
//!
//! Raw baselines do the same bytes work: read, decode, fold, encode, write back, in the
//! engine's natural way (the `DashMap` in place through one `get_mut`, heed inside a write
//! transaction, RocksDB with a get and a put: a merge operator cannot run the user's fold,
//! see `flowstate_rocksdb`'s docs).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::typed::{ReducingState, ReducingStateDescriptor};
use flowstate_api::{Codec, KeyContext, SerdeCodec, StateId};

use crate::error::{BenchError, Result};
use crate::subject::{BackendUnderTest, Layer, Subject};
use crate::workload::{encode_value, initial_value, KeyWalk, Workload, MAX_VALUE_BYTES};

/// Name of the reducing state.
pub const REDUCING_STATE: &str = "reducing";
/// What every add folds in.
pub const ADDEND: u64 = 1;

/// The reduce function.
#[inline]
pub fn reduce(stored: u64, added: u64) -> u64 {
    stored.wrapping_add(added)
}

/// Adds done by a store and its forks.
#[derive(Clone, Debug, Default)]
pub struct AddCount(Arc<AtomicU64>);

impl AddCount {
    pub fn record(&self, adds: u64) {
        self.0.fetch_add(adds, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A store the reducing workload runs against: a flowstate backend or a raw engine.
pub trait ReducingStore: Send {
    /// What the reports call it.
    fn name(&self) -> &str;
    /// Folds [`ADDEND`] into the value of `count` keys in `walk`'s order. When it returns, the
    /// writes are where the store keeps them (for LMDB: committed).
    fn add_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()>;
    /// Reads `count` keys in `walk`'s order; returns the sum of the values (untimed checks).
    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64>;
    /// Adds done so far by this store and every fork of it.
    fn adds(&self) -> u64;
    /// Another handle on the same data, for another thread (which works on other keys).
    fn fork(&self) -> Result<Box<dyn ReducingStore>>;
}

/// A flowstate backend running the reducing workload, through the typed or the byte layer.
#[derive(Clone)]
pub struct FlowstateReducing {
    typed: ReducingState<u64>,
    id: StateId,
    codec: Arc<SerdeCodec<u64>>,
    adds: AddCount,
    // Declared last: the state handle goes before the backend's directories.
    subject: Subject,
}

impl std::fmt::Debug for FlowstateReducing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowstateReducing")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl FlowstateReducing {
    /// Registers the reducing state, preloads every key's value (a first add) and settles the
    /// backend.
    pub fn preload(under_test: BackendUnderTest, workload: Arc<Workload>) -> Result<Self> {
        let typed = ReducingStateDescriptor::<u64>::new(REDUCING_STATE, reduce)
            .bind(under_test.backend.clone())?;
        for i in 0..workload.preload() {
            typed.add(workload.key(i), initial_value(i))?;
        }
        let this = Self {
            id: typed.id(),
            typed,
            codec: Arc::new(SerdeCodec::new()),
            adds: AddCount::default(),
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

    /// The byte layer's add: what the typed layer does, with the codec calls inlined.
    #[inline]
    fn add_bytes(&self, key: &KeyContext) -> Result<()> {
        let backend = self.subject.backend();
        let mut stored = None;
        backend.get_with(self.id, key, &[], &mut |bytes| {
            if let Some(bytes) = bytes {
                stored = Some(self.codec.decode(bytes)?);
            }
            Ok(())
        })?;
        let folded = match stored {
            Some(stored) => reduce(stored, ADDEND),
            None => ADDEND,
        };
        let mut buf = [0u8; MAX_VALUE_BYTES];
        let bytes = encode_value(folded, &mut buf)?;
        Ok(backend.put(self.id, key, &[], bytes)?)
    }
}

impl ReducingStore for FlowstateReducing {
    fn name(&self) -> &str {
        self.subject.name()
    }

    fn add_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()> {
        let workload = self.subject.workload();
        match self.subject.layer() {
            Layer::Typed => {
                for _ in 0..count {
                    self.typed.add(workload.key(walk.next()), ADDEND)?;
                }
            }
            Layer::Bytes => {
                for _ in 0..count {
                    self.add_bytes(workload.key(walk.next()))?;
                }
            }
        }
        self.subject.finish_writes()?;
        self.adds.record(count);
        Ok(())
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let workload = self.subject.workload();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = self
                .typed
                .get(workload.key(i))?
                .ok_or_else(|| self.subject.missing(i))?;
            sum = sum.wrapping_add(value);
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

/// Times `count` read-fold-writes.
pub fn time_reducing_adds(
    store: &mut dyn ReducingStore,
    walk: &mut KeyWalk,
    count: u64,
) -> Result<Duration> {
    let start = Instant::now();
    store.add_many(walk, count)?;
    let elapsed = start.elapsed();
    black_box(&*store);
    Ok(elapsed)
}

/// Checks that the values sum to what the preload and every add counted so far make.
pub fn check_reduced(store: &mut dyn ReducingStore, workload: &Workload) -> Result<()> {
    let n = workload.preload();
    let sum = store.get_many(&mut workload.walk(), n as u64)?;
    let preloaded = (0..n).map(initial_value).fold(0u64, u64::wrapping_add);
    let expected = preloaded.wrapping_add(store.adds().wrapping_mul(ADDEND));
    if sum != expected {
        return Err(BenchError::Check(format!(
            "{}: the values sum to {sum}, expected {expected} ({} adds of {ADDEND} on the preload)",
            store.name(),
            store.adds()
        )));
    }
    Ok(())
}

/// Runs the same operations on `ours` and `raw` and checks that both reduce alike.
#[cfg(test)]
pub(crate) fn assert_same_reducing_behaviour(
    ours: &mut (dyn ReducingStore + 'static),
    raw: &mut (dyn ReducingStore + 'static),
    workload: &Workload,
) {
    let n = workload.preload() as u64;
    let parts = workload.parts(2).unwrap();
    for store in [&mut *ours, &mut *raw] {
        check_reduced(store, workload).unwrap();
        let before = store.adds();
        time_reducing_adds(store, &mut workload.walk(), n + n / 3).unwrap();
        assert_eq!(store.adds(), before + n + n / 3);
        check_reduced(store, workload).unwrap();
        for part in &parts {
            let mut fork = store.fork().unwrap();
            fork.add_many(&mut part.walk(), part.len() as u64 * 2)
                .unwrap();
        }
        assert_eq!(store.adds(), before + n + n / 3 + 2 * n);
        check_reduced(store, workload).unwrap();
    }
    if ours.adds() == raw.adds() {
        let sums = [&mut *ours, &mut *raw].map(|s| s.get_many(&mut workload.walk(), n).unwrap());
        assert_eq!(
            sums[0],
            sums[1],
            "{} and {} differ",
            ours.name(),
            raw.name()
        );
    }
}
