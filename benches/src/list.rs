//! The list-state workload: append one element to a preloaded list, and read a whole list.
//!
//! Every preloaded key holds a list of [`LIST_LEN`] `u64` elements. Appends are measured in
//! chunks of distinct keys; after each chunk the harness checks (untimed) that the first and
//! last lists of the chunk end with the appended element, then resets the chunk's lists to
//! their preloaded elements, so lists keep their length however long a run goes and a list
//! read always decodes the same [`LIST_LEN`] elements.
//!
//! Raw baselines keep each list as one value in [`flowstate_api::list_encoding`] form (each
//! element a `u32` little-endian length, then its bytes, here a postcard `u64`): the form every
//! flowstate backend stores, and the natural one for a hand-written operator on a key-value
//! engine. How each raw engine appends is documented with its baseline.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::list_encoding;
use flowstate_api::typed::{ListState, ListStateDescriptor};
use flowstate_api::{KeyContext, StateId};

use crate::error::{BenchError, Result};
use crate::subject::{BackendUnderTest, Layer, Subject};
use crate::workload::{
    decode_value, encode_value, initial_value, KeyWalk, Versions, Workload, MAX_VALUE_BYTES,
};

/// Name of the list state.
pub const LIST_STATE: &str = "list";
/// Elements of every preloaded list.
pub const LIST_LEN: usize = 4;

/// Element `e` of the list preloaded under workload key `index`.
pub fn list_element(index: usize, e: usize) -> u64 {
    initial_value(index) * LIST_LEN as u64 + e as u64
}

/// The list preloaded under workload key `index`.
pub fn preloaded_list(index: usize) -> Vec<u64> {
    (0..LIST_LEN).map(|e| list_element(index, e)).collect()
}

/// The element an append call numbered `version` appends to the list of key `index`.
pub fn appended_element(index: usize, version: u64) -> u64 {
    initial_value(index).wrapping_add(version << 40)
}

/// Appends `value` (postcard-encoded) as one element in list-encoding form to `out`.
#[inline]
pub fn push_encoded(out: &mut Vec<u8>, value: u64) -> Result<()> {
    let mut buf = [0u8; MAX_VALUE_BYTES];
    list_encoding::push_element(out, encode_value(value, &mut buf)?);
    Ok(())
}

/// The list preloaded under key `index` in list-encoding form (what raw baselines store).
pub fn encoded_preload(index: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(LIST_LEN * (4 + MAX_VALUE_BYTES));
    for value in preloaded_list(index) {
        push_encoded(&mut out, value)?;
    }
    // Exactly sized, as a list written once is.
    out.shrink_to_fit();
    Ok(out)
}

/// Decodes every element of a list in list-encoding form; returns the sum of the elements
/// and their number.
#[inline]
pub fn sum_encoded(bytes: &[u8]) -> Result<(u64, usize)> {
    let mut sum = 0u64;
    let mut len = 0;
    for element in list_encoding::iter(bytes) {
        sum = sum.wrapping_add(decode_value(element?)?);
        len += 1;
    }
    Ok((sum, len))
}

/// Decodes a list in list-encoding form (untimed checks).
pub fn decode_encoded(bytes: &[u8]) -> Result<Vec<u64>> {
    list_encoding::iter(bytes)
        .map(|e| decode_value(e?))
        .collect()
}

/// A store the list workload runs against: a flowstate backend or a raw engine.
pub trait ListStore: Send {
    /// What the reports call it.
    fn name(&self) -> &str;
    /// Reads the whole list of `count` keys in `walk`'s order, decoding every element;
    /// returns the sum of the elements. A key without a list is an error.
    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64>;
    /// Appends [`appended_element`]`(i, version)` to the list of every key `i` of `indices`
    /// (distinct keys), where `version` is new for this call; returns `version`. When it
    /// returns, the writes are where the store keeps them (for LMDB: committed).
    fn append(&mut self, indices: &[usize]) -> Result<u64>;
    /// Resets the lists of `indices` to their preloaded elements (untimed clean-up).
    fn reset(&mut self, indices: &[usize]) -> Result<()>;
    /// The list of key `index` (untimed checks); empty when absent.
    fn list(&mut self, index: usize) -> Result<Vec<u64>>;
    /// Another handle on the same data, for another thread (which works on other keys).
    fn fork(&self) -> Result<Box<dyn ListStore>>;
}

/// A flowstate backend running the list workload, through the typed or the byte layer.
#[derive(Clone)]
pub struct FlowstateList {
    typed: ListState<u64>,
    id: StateId,
    versions: Versions,
    // Declared last: the state handle goes before the backend's directories.
    subject: Subject,
}

impl std::fmt::Debug for FlowstateList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowstateList")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl FlowstateList {
    /// Registers the list state, preloads every key's list through the typed layer and
    /// settles the backend.
    pub fn preload(under_test: BackendUnderTest, workload: Arc<Workload>) -> Result<Self> {
        let typed = ListStateDescriptor::<u64>::new(LIST_STATE).bind(under_test.backend.clone())?;
        for i in 0..workload.preload() {
            typed.add_all(workload.key(i), &preloaded_list(i))?;
        }
        let this = Self {
            id: typed.id(),
            typed,
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

    /// Sum of the elements of the list of `key`, and their number.
    #[inline]
    fn read(&self, key: &KeyContext) -> Result<(u64, usize)> {
        match self.subject.layer() {
            Layer::Typed => {
                let list = self.typed.get(key)?.unwrap_or_default();
                Ok((
                    list.iter().fold(0u64, |s, v| s.wrapping_add(*v)),
                    list.len(),
                ))
            }
            Layer::Bytes => {
                let list = self.subject.backend().list_get(self.id, key, &[])?;
                let mut sum = 0u64;
                for element in &list {
                    sum = sum.wrapping_add(decode_value(element)?);
                }
                Ok((sum, list.len()))
            }
        }
    }
}

impl ListStore for FlowstateList {
    fn name(&self) -> &str {
        self.subject.name()
    }

    fn get_many(&mut self, walk: &mut KeyWalk, count: u64) -> Result<u64> {
        let workload = self.subject.workload();
        let mut sum = 0u64;
        for _ in 0..count {
            let i = walk.next();
            let (list_sum, len) = self.read(workload.key(i))?;
            if len == 0 {
                return Err(self.subject.missing(i));
            }
            sum = sum.wrapping_add(list_sum);
        }
        Ok(sum)
    }

    fn append(&mut self, indices: &[usize]) -> Result<u64> {
        let version = self.versions.next();
        let workload = self.subject.workload();
        match self.subject.layer() {
            Layer::Typed => {
                for &i in indices {
                    self.typed
                        .add(workload.key(i), &appended_element(i, version))?;
                }
            }
            Layer::Bytes => {
                let backend = self.subject.backend();
                let mut buf = [0u8; MAX_VALUE_BYTES];
                for &i in indices {
                    let element = encode_value(appended_element(i, version), &mut buf)?;
                    backend.list_append(self.id, workload.key(i), &[], &[element])?;
                }
            }
        }
        self.subject.finish_writes()?;
        Ok(version)
    }

    fn reset(&mut self, indices: &[usize]) -> Result<()> {
        let workload = self.subject.workload();
        for &i in indices {
            self.typed.update(workload.key(i), &preloaded_list(i))?;
        }
        self.subject.finish_writes()
    }

    fn list(&mut self, index: usize) -> Result<Vec<u64>> {
        Ok(self
            .typed
            .get(self.subject.workload().key(index))?
            .unwrap_or_default())
    }

    fn fork(&self) -> Result<Box<dyn ListStore>> {
        Ok(Box::new(self.clone()))
    }
}

/// Checks that the list of key `index` is its preloaded list followed by `appended`.
fn check_list(store: &mut dyn ListStore, index: usize, appended: Option<u64>) -> Result<()> {
    let list = store.list(index)?;
    let mut expected = preloaded_list(index);
    expected.extend(appended);
    if list != expected {
        return Err(BenchError::Check(format!(
            "{}: list of key #{index} is {list:?}, expected {expected:?}",
            store.name()
        )));
    }
    Ok(())
}

/// Times `count` list appends in chunks of at most `chunk` distinct keys from `walk`,
/// checking the chunk's first and last lists and resetting the chunk after each (untimed).
pub fn time_list_appends(
    store: &mut dyn ListStore,
    walk: &mut KeyWalk,
    count: u64,
    chunk: usize,
) -> Result<Duration> {
    // A chunk never repeats a key: the walk visits every key once before repeating.
    let chunk = chunk.clamp(1, walk.len()) as u64;
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    let mut indices = Vec::with_capacity(chunk as usize);
    while done < count {
        let n = (count - done).min(chunk);
        indices.clear();
        indices.extend((0..n).map(|_| walk.next()));
        let start = Instant::now();
        let version = store.append(&indices)?;
        total += start.elapsed();
        for &i in [indices.first(), indices.last()].into_iter().flatten() {
            check_list(store, i, Some(appended_element(i, version)))?;
        }
        store.reset(&indices)?;
        done += n;
    }
    Ok(total)
}

/// Times `count` whole-list reads.
pub fn time_list_gets(
    store: &mut dyn ListStore,
    walk: &mut KeyWalk,
    count: u64,
) -> Result<Duration> {
    let start = Instant::now();
    let sum = store.get_many(walk, count)?;
    let elapsed = start.elapsed();
    black_box(sum);
    Ok(elapsed)
}

/// Checks that every preloaded key holds exactly its preloaded list (one full walk whose
/// checksum must match), so a benchmark never measures a store that lost its data or kept
/// appends it should have reset.
pub fn check_lists(store: &mut dyn ListStore, workload: &Workload) -> Result<()> {
    let n = workload.preload();
    let sum = store.get_many(&mut workload.walk(), n as u64)?;
    let expected = (0..n)
        .flat_map(|i| (0..LIST_LEN).map(move |e| list_element(i, e)))
        .fold(0u64, u64::wrapping_add);
    if sum != expected {
        return Err(BenchError::Check(format!(
            "{}: the lists' elements sum to {sum}, the preloaded ones to {expected}",
            store.name()
        )));
    }
    check_list(store, 0, None)
}

/// Runs the same operations on `ours` and `raw` and checks that both hold the same lists
/// afterwards.
#[cfg(test)]
pub(crate) fn assert_same_list_behaviour(
    ours: &mut (dyn ListStore + 'static),
    raw: &mut (dyn ListStore + 'static),
    workload: &Workload,
) {
    let n = workload.preload() as u64;
    for store in [&mut *ours, &mut *raw] {
        check_lists(store, workload).unwrap();
        let elapsed = time_list_appends(store, &mut workload.walk(), n + n / 2, 700).unwrap();
        assert!(elapsed > Duration::ZERO);
        check_lists(store, workload).unwrap();
        // Two appends in a row, left in place.
        store.append(&[0, 1]).unwrap();
        let version = store.append(&[1]).unwrap();
        assert_eq!(store.list(1).unwrap().len(), LIST_LEN + 2);
        check_list(store, 0, Some(appended_element(0, version - 1))).unwrap();
    }
    let sums = [&mut *ours, &mut *raw].map(|s| s.get_many(&mut workload.walk(), n).unwrap());
    assert_eq!(
        sums[0],
        sums[1],
        "{} and {} differ",
        ours.name(),
        raw.name()
    );
    let parts = workload.parts(2).unwrap();
    for store in [&mut *ours, &mut *raw] {
        store.reset(&[0, 1]).unwrap();
        for part in &parts {
            let mut fork = store.fork().unwrap();
            time_list_appends(fork.as_mut(), &mut part.walk(), part.len() as u64, 300).unwrap();
        }
        check_lists(store, workload).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_lists_decode_to_the_preloaded_elements() {
        let bytes = encoded_preload(7).unwrap();
        assert_eq!(decode_encoded(&bytes).unwrap(), preloaded_list(7));
        let (sum, len) = sum_encoded(&bytes).unwrap();
        assert_eq!(len, LIST_LEN);
        assert_eq!(sum, preloaded_list(7).iter().sum::<u64>());
        let mut longer = bytes.clone();
        push_encoded(&mut longer, appended_element(7, 3)).unwrap();
        assert_eq!(
            decode_encoded(&longer).unwrap().last(),
            Some(&appended_element(7, 3))
        );
        assert!(sum_encoded(&bytes[..bytes.len() - 1]).is_err());
    }
}
