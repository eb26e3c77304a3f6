//! The value-state workload every backend and every raw engine runs: get, update and
//! add-new-key on preloaded `u64` keys, with the same key bytes and value bytes everywhere
//! (see [`crate::workload`] for the keys, the walk and how threads split them).
//!
//! Each store runs a whole batch of operations per call ([`ValueStore`]), so that a raw LMDB
//! baseline can keep one write transaction open across a batch, as a hand-written operator on
//! LMDB would. The list, map and reducing families ([`crate::list`], [`crate::map`],
//! [`crate::reducing`]) follow the same pattern.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::typed::{SharedBackend, ValueState, ValueStateDescriptor};
use flowstate_api::{KeyContext, StateId};

use crate::error::Result;
pub use crate::subject::{BackendUnderTest, Hook, Layer, Subject};
pub(crate) use crate::workload::temp_dir;
pub use crate::workload::{
    codec_matches, decode_value, encode_value, initial_value, key_bytes, record_key, KeyWalk, Part,
    Versions, Workload, MAX_PARALLELISM, MAX_VALUE_BYTES,
};

/// Name of the value state every backend registers.
pub const VALUE_STATE: &str = "value";

/// A store the value workload runs against: a flowstate backend or a raw engine.
pub trait ValueStore: Send {
    /// What the reports call it (`flowstate_typed`, `raw_rocksdb`, ...).
    fn name(&self) -> &str;
    /// Reads `count` preloaded keys in `walk`'s order; returns the sum of the values read.
    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64>;
    /// Overwrites `count` preloaded keys in `walk`'s order. When it returns, the writes are
    /// where the store keeps them (for LMDB: committed).
    fn update_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()>;
    /// Writes the fresh keys numbered `fresh` (none of which exists).
    fn insert_fresh(&mut self, fresh: &[usize]) -> Result<()>;
    /// Removes fresh keys `fresh` again (untimed clean-up of [`ValueStore::insert_fresh`]).
    fn remove_fresh(&mut self, fresh: &[usize]) -> Result<()>;
    /// Another handle on the same data, for another thread (which works on other keys).
    fn fork(&self) -> Result<Box<dyn ValueStore>>;
}

/// A flowstate backend running the value workload, through the typed or the byte layer.
#[derive(Clone)]
pub struct FlowstateValue {
    typed: ValueState<u64>,
    id: StateId,
    versions: Versions,
    // Declared last: the state handle goes before the backend's directories.
    subject: Subject,
}

impl std::fmt::Debug for FlowstateValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowstateValue")
            .field("subject", &self.subject)
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
            id: typed.id(),
            typed,
            versions: Versions::default(),
            subject: Subject::new(under_test, workload),
        };
        this.settle()?;
        Ok(this)
    }

    /// Switches the layer the next operations go through.
    pub fn set_layer(&mut self, layer: Layer) {
        self.subject.set_layer(layer);
    }

    /// A handle on the same backend through `layer`.
    pub fn with_layer(&self, layer: Layer) -> Self {
        let mut other = self.clone();
        other.set_layer(layer);
        other
    }

    pub fn layer(&self) -> Layer {
        self.subject.layer()
    }

    /// `heap`, `rocksdb` or `lmdb`.
    pub fn backend_name(&self) -> &'static str {
        self.subject.backend_name()
    }

    pub fn backend(&self) -> &SharedBackend {
        self.subject.backend()
    }

    pub fn workload(&self) -> &Arc<Workload> {
        self.subject.workload()
    }

    /// The typed handle of the value state.
    pub fn state(&self) -> &ValueState<u64> {
        &self.typed
    }

    /// Brings the backend to its settled shape after a preload (see [`BackendUnderTest`]).
    pub fn settle(&self) -> Result<()> {
        self.subject.settle()
    }

    /// Ends a batch of writes (see [`BackendUnderTest::after_writes`]).
    pub fn finish_writes(&self) -> Result<()> {
        self.subject.finish_writes()
    }

    #[inline]
    fn read(&self, key: &KeyContext) -> Result<Option<u64>> {
        match self.subject.layer() {
            Layer::Typed => Ok(self.typed.get(key)?),
            Layer::Bytes => match self.subject.backend().get(self.id, key, &[])? {
                Some(bytes) => Ok(Some(decode_value(&bytes)?)),
                None => Ok(None),
            },
        }
    }

    #[inline]
    fn write(&self, key: &KeyContext, value: u64) -> Result<()> {
        match self.subject.layer() {
            Layer::Typed => Ok(self.typed.update(key, &value)?),
            Layer::Bytes => {
                let mut buf = [0u8; MAX_VALUE_BYTES];
                let bytes = encode_value(value, &mut buf)?;
                Ok(self.subject.backend().put(self.id, key, &[], bytes)?)
            }
        }
    }
}

impl ValueStore for FlowstateValue {
    fn name(&self) -> &str {
        self.subject.name()
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let workload = self.subject.workload();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = self
                .read(workload.key(i))?
                .ok_or_else(|| self.subject.missing(i))?;
            sum = sum.wrapping_add(value);
        }
        Ok(sum)
    }

    fn update_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()> {
        let version = self.versions.next();
        let workload = self.subject.workload();
        for _ in 0..count {
            let i = walk.next();
            self.write(workload.key(i), initial_value(i) + version)?;
        }
        self.finish_writes()
    }

    fn insert_fresh(&mut self, fresh: &[usize]) -> Result<()> {
        let workload = self.subject.workload();
        for &j in fresh {
            self.write(workload.fresh_key(j), j as u64)?;
        }
        self.finish_writes()
    }

    fn remove_fresh(&mut self, fresh: &[usize]) -> Result<()> {
        let workload = self.subject.workload();
        for &j in fresh {
            self.typed.clear(workload.fresh_key(j))?;
        }
        self.finish_writes()
    }

    fn fork(&self) -> Result<Box<dyn ValueStore>> {
        Ok(Box::new(self.clone()))
    }
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

/// Times `count` inserts of new keys: chunks of the fresh keys `pool` are inserted (timed)
/// and removed again (untimed), so that every insert creates a key and the store keeps its
/// preloaded size however long criterion runs.
pub fn time_inserts(store: &mut dyn ValueStore, count: u64, pool: &[usize]) -> Result<Duration> {
    if pool.is_empty() {
        return Err(crate::BenchError::Config(
            "add-new-key needs fresh keys: the pool is empty".into(),
        ));
    }
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < count {
        let chunk = &pool[..(count - done).min(pool.len() as u64) as usize];
        let start = Instant::now();
        store.insert_fresh(chunk)?;
        total += start.elapsed();
        store.remove_fresh(chunk)?;
        done += chunk.len() as u64;
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

/// Runs the same operations on `ours` and `raw` and checks that both hold the same values
/// afterwards: the baseline does the work flowstate does, no more and no less.
#[cfg(test)]
pub(crate) fn assert_same_behaviour(
    ours: &mut (dyn ValueStore + 'static),
    raw: &mut (dyn ValueStore + 'static),
    workload: &Workload,
) {
    let n = workload.preload() as u64;
    let whole = workload.whole();
    for store in [&mut *ours, &mut *raw] {
        check_preloaded(store, workload).unwrap();
        // Every key twice and a bit: versions differ per call, as they would per record.
        store.update_many(&mut workload.walk(), n).unwrap();
        store.update_many(&mut workload.walk(), n + n / 3).unwrap();
        store.insert_fresh(whole.fresh()).unwrap();
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
        store.remove_fresh(whole.fresh()).unwrap();
        // Inserting again creates the keys again.
        let elapsed = time_inserts(store, workload.fresh() as u64 * 2, whole.fresh()).unwrap();
        assert!(elapsed > Duration::ZERO);
        check_preloaded(store, workload).unwrap();
    }
    // Forks on two parts write disjoint keys of the same data.
    let parts = workload.parts(2).unwrap();
    for store in [&mut *ours, &mut *raw] {
        let mut forks = [store.fork().unwrap(), store.fork().unwrap()];
        for (fork, part) in forks.iter_mut().zip(&parts) {
            fork.update_many(&mut part.walk(), part.len() as u64)
                .unwrap();
            time_inserts(fork.as_mut(), part.fresh().len() as u64, part.fresh()).unwrap();
        }
        check_preloaded(store, workload).unwrap();
    }
    let sums = [&mut *ours, &mut *raw].map(|s| s.get_many(&mut workload.walk(), n).unwrap());
    assert_eq!(
        sums[0],
        sums[1],
        "forks of {} and {}",
        ours.name(),
        raw.name()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_name_the_subject_and_forks_share_the_data() {
        let workload = Workload::new(500, 100).unwrap();
        let mut ours = crate::heap_backend::flowstate(workload.clone()).unwrap();
        assert_eq!(ours.name(), "flowstate_heap_typed");
        let mut bytes = ours.with_layer(Layer::Bytes);
        assert_eq!(bytes.name(), "flowstate_heap_bytes");
        bytes.update_many(&mut workload.walk(), 500).unwrap();
        let sum = ours.get_many(&mut workload.walk(), 500).unwrap();
        assert_eq!(sum, (0..500u64).map(|i| i + 1).sum::<u64>());
    }
}
