//! One workload for every backend, through the typed API an engine uses, so that users can
//! compare backends: value get / update / add-new-key, list append, map get / put.
//!
//! Each key of the workload holds a value, a one-element list and a map of [`MAP_ENTRIES`]
//! entries. List appends are measured in chunks of distinct keys; after each chunk the lists
//! are reset to one element (untimed), so lists stay short however long criterion runs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::typed::{ListState, ListStateDescriptor, MapState, MapStateDescriptor};

use crate::error::{BenchError, Result};
use crate::value::{initial_value, BackendUnderTest, FlowstateValue, KeyWalk, Workload};

/// Entries of every key's map.
pub const MAP_ENTRIES: u32 = 4;
/// Names of the list and map states.
pub const LIST_STATE: &str = "list";
pub const MAP_STATE: &str = "map";

/// A backend holding the comparison workload.
pub struct CompareSubject {
    value: FlowstateValue,
    list: ListState<u64>,
    map: MapState<u32, u64>,
    version: u64,
}

impl std::fmt::Debug for CompareSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompareSubject")
            .field("backend", &self.name())
            .finish_non_exhaustive()
    }
}

/// The map user key workload key `index` reads and writes.
fn user_key(index: usize) -> u32 {
    (index % MAP_ENTRIES as usize) as u32
}

impl CompareSubject {
    /// Preloads every key's value, list and map, and settles the backend.
    pub fn preload(under_test: BackendUnderTest, workload: Arc<Workload>) -> Result<Self> {
        let backend = under_test.backend.clone();
        let value = FlowstateValue::preload(under_test, workload.clone())?;
        let list = ListStateDescriptor::<u64>::new(LIST_STATE).bind(backend.clone())?;
        let map = MapStateDescriptor::<u32, u64>::new(MAP_STATE).bind(backend)?;
        for i in 0..workload.preload() {
            let key = workload.key(i);
            list.add(key, &initial_value(i))?;
            for entry in 0..MAP_ENTRIES {
                map.put(key, &entry, &initial_value(i))?;
            }
        }
        value.settle()?;
        Ok(Self {
            value,
            list,
            map,
            version: 0,
        })
    }

    /// `heap`, `rocksdb` or `lmdb`.
    pub fn name(&self) -> &'static str {
        self.value.backend_name()
    }

    /// The value part of the workload (a [`crate::value::ValueStore`]).
    pub fn value(&mut self) -> &mut FlowstateValue {
        &mut self.value
    }

    fn workload(&self) -> &Workload {
        self.value.workload()
    }

    fn missing(&self, index: usize) -> BenchError {
        BenchError::MissingKey {
            subject: format!("{} ({MAP_STATE})", self.name()),
            index,
        }
    }

    /// Appends one element to the list of every key of `indices`.
    pub fn list_append(&mut self, indices: &[usize]) -> Result<()> {
        self.version += 1;
        for &i in indices {
            self.list
                .add(self.workload().key(i), &(initial_value(i) + self.version))?;
        }
        self.value.finish_writes()
    }

    /// Resets the lists of `indices` to their preloaded single element.
    pub fn list_reset(&mut self, indices: &[usize]) -> Result<()> {
        for &i in indices {
            self.list
                .update(self.workload().key(i), &[initial_value(i)])?;
        }
        self.value.finish_writes()
    }

    /// Reads one map entry of `count` keys; returns the sum of the values.
    pub fn map_get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let value = self
                .map
                .get(self.workload().key(i), &user_key(i))?
                .ok_or_else(|| self.missing(i))?;
            sum = sum.wrapping_add(value);
        }
        Ok(sum)
    }

    /// Overwrites one map entry of `count` keys.
    pub fn map_put_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<()> {
        self.version += 1;
        for _ in 0..count {
            let i = walk.next();
            self.map.put(
                self.workload().key(i),
                &user_key(i),
                &(initial_value(i) + self.version),
            )?;
        }
        self.value.finish_writes()
    }

    /// Checks a sample of keys: the list holds the preloaded element (plus appends not yet
    /// reset: none between measurements) and the map all its entries.
    pub fn check(&self) -> Result<()> {
        let workload = self.workload();
        let step = (workload.preload() / 100).max(1);
        for i in (0..workload.preload()).step_by(step) {
            let key = workload.key(i);
            let list = self.list.get(key)?.unwrap_or_default();
            if list.first() != Some(&initial_value(i)) {
                return Err(BenchError::Check(format!(
                    "{}: list of key #{i} is {list:?}, expected it to start with {}",
                    self.name(),
                    initial_value(i)
                )));
            }
            let entries = self.map.entries(key)?.len();
            if entries != MAP_ENTRIES as usize {
                return Err(BenchError::Check(format!(
                    "{}: map of key #{i} has {entries} entries, expected {MAP_ENTRIES}",
                    self.name()
                )));
            }
        }
        Ok(())
    }
}

/// Times `count` list appends in chunks of at most `chunk` distinct keys, resetting the
/// lists after each chunk (untimed).
pub fn time_list_appends(
    subject: &mut CompareSubject,
    walk: &mut KeyWalk,
    count: u64,
    chunk: usize,
) -> Result<Duration> {
    // A chunk never repeats a key: the walk visits every key once before repeating.
    let chunk = chunk.clamp(1, subject.workload().preload().max(1)) as u64;
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    let mut indices = Vec::with_capacity(chunk as usize);
    while done < count {
        let n = (count - done).min(chunk);
        indices.clear();
        indices.extend((0..n).map(|_| walk.next()));
        let start = Instant::now();
        subject.list_append(&indices)?;
        total += start.elapsed();
        subject.list_reset(&indices)?;
        done += n;
    }
    Ok(total)
}

/// Times `count` map reads.
pub fn time_map_gets(
    subject: &mut CompareSubject,
    walk: &mut KeyWalk,
    count: u64,
) -> Result<Duration> {
    let start = Instant::now();
    let sum = subject.map_get_many(walk, count)?;
    let elapsed = start.elapsed();
    black_box(sum);
    Ok(elapsed)
}

/// Times `count` map writes.
pub fn time_map_puts(
    subject: &mut CompareSubject,
    walk: &mut KeyWalk,
    count: u64,
) -> Result<Duration> {
    let start = Instant::now();
    subject.map_put_many(walk, count)?;
    Ok(start.elapsed())
}

/// Every backend built in (heap, RocksDB with the `rocksdb` feature, LMDB), each preloaded
/// with `workload`.
pub fn all_backends(workload: &Arc<Workload>) -> Result<Vec<CompareSubject>> {
    let max = workload.max_parallelism();
    Ok(vec![
        CompareSubject::preload(crate::heap_backend::open(max)?, workload.clone())?,
        #[cfg(feature = "rocksdb")]
        CompareSubject::preload(crate::rocksdb_backend::open(max)?, workload.clone())?,
        CompareSubject::preload(crate::lmdb_backend::open(max)?, workload.clone())?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_runs_the_comparison_and_keeps_its_state() {
        let workload = Workload::new(2_000, 200).unwrap();
        let mut subjects = all_backends(&workload).unwrap();
        let mut sums = Vec::new();
        for subject in &mut subjects {
            subject.check().unwrap();
            let mut walk = workload.walk();
            time_list_appends(subject, &mut walk, 5_000, 700).unwrap();
            subject.list_append(&[0, 1]).unwrap();
            let list = subject
                .list
                .get(workload.key(0))
                .unwrap()
                .unwrap_or_default();
            assert_eq!(list.len(), 2, "{}: {list:?}", subject.name());
            subject.list_reset(&[0, 1]).unwrap();
            time_map_puts(subject, &mut workload.walk(), 2_000).unwrap();
            sums.push(subject.map_get_many(&mut workload.walk(), 2_000).unwrap());
            subject.check().unwrap();
        }
        // Same operations, same values, whatever the backend.
        assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
    }
}
