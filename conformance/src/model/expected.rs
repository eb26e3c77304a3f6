//! The model: what the backend should hold, in plain `BTreeMap`s, and how every operation
//! changes it under Flink's semantics.

use std::collections::{BTreeMap, BTreeSet};

use super::ops::Op::*;
use super::ops::{Mergeable, Op, StateSel};
use super::states::Mean;
use super::{Namespace, NAMESPACES};

/// (key, namespace).
type Cell = (u32, Namespace);

/// What the backend should hold. Lists and maps are never stored empty: empty reads as absent.
#[derive(Clone, Debug, Default)]
pub(super) struct Model {
    pub(super) values: BTreeMap<Cell, u64>,
    pub(super) lists: BTreeMap<Cell, Vec<u32>>,
    pub(super) maps: BTreeMap<Cell, BTreeMap<u8, u32>>,
    pub(super) sums: BTreeMap<Cell, i64>,
    pub(super) means: BTreeMap<Cell, Mean>,
}

pub(super) fn other_namespace(ns: Namespace) -> Namespace {
    (ns + 1) % NAMESPACES
}

impl Model {
    pub(super) fn apply(&mut self, op: &Op) {
        match *op {
            ValuePut { key, ns, value } => {
                self.values.insert((key, ns), value);
            }
            ListAdd { key, ns, value } => self.lists.entry((key, ns)).or_default().push(value),
            ListAddAll { key, ns, values } => {
                if !values.as_slice().is_empty() {
                    let list = self.lists.entry((key, ns)).or_default();
                    list.extend_from_slice(values.as_slice());
                }
            }
            ListUpdate { key, ns, values } => {
                if values.as_slice().is_empty() {
                    self.lists.remove(&(key, ns));
                } else {
                    self.lists.insert((key, ns), values.as_slice().to_vec());
                }
            }
            MapPut {
                key,
                ns,
                user_key,
                value,
            } => {
                self.maps
                    .entry((key, ns))
                    .or_default()
                    .insert(user_key, value);
            }
            MapRemove { key, ns, user_key } => {
                if let Some(map) = self.maps.get_mut(&(key, ns)) {
                    map.remove(&user_key);
                    if map.is_empty() {
                        self.maps.remove(&(key, ns));
                    }
                }
            }
            SumAdd { key, ns, value } => *self.sums.entry((key, ns)).or_insert(0) += value,
            MeanAdd { key, ns, value } => {
                let mean = self.means.entry((key, ns)).or_default();
                mean.sum += u64::from(value);
                mean.count += 1;
            }
            Clear { state, key, ns } => self.clear(state, |cell| *cell == (key, ns)),
            ClearEveryKey { state, ns } => self.clear(state, |cell| cell.1 == ns),
            MergeNamespaces {
                state, key, target, ..
            } => {
                // Whether or not the target is among the sources, only the other one moves.
                let source = (key, other_namespace(target));
                let target = (key, target);
                match state {
                    Mergeable::List => {
                        if let Some(moved) = self.lists.remove(&source) {
                            self.lists.entry(target).or_default().extend(moved);
                        }
                    }
                    Mergeable::Sum => {
                        if let Some(moved) = self.sums.remove(&source) {
                            *self.sums.entry(target).or_insert(0) += moved;
                        }
                    }
                    Mergeable::Mean => {
                        if let Some(moved) = self.means.remove(&source) {
                            let mean = self.means.entry(target).or_default();
                            mean.sum += moved.sum;
                            mean.count += moved.count;
                        }
                    }
                }
            }
            Checkpoint(_)
            | AbortedCheckpoint(_)
            | CaptureCheckpoint(_)
            | CompleteCaptured
            | Restore { .. } => {}
        }
    }

    fn clear(&mut self, state: StateSel, remove: impl Fn(&Cell) -> bool) {
        match state {
            StateSel::Value => self.values.retain(|c, _| !remove(c)),
            StateSel::List => self.lists.retain(|c, _| !remove(c)),
            StateSel::Map => self.maps.retain(|c, _| !remove(c)),
            StateSel::Sum => self.sums.retain(|c, _| !remove(c)),
            StateSel::Mean => self.means.retain(|c, _| !remove(c)),
        }
    }

    /// Keys holding `state` in `ns`.
    pub(super) fn keys(&self, state: StateSel, ns: Namespace) -> BTreeSet<u32> {
        fn of<V>(map: &BTreeMap<Cell, V>, ns: Namespace) -> BTreeSet<u32> {
            map.keys().filter(|c| c.1 == ns).map(|c| c.0).collect()
        }
        match state {
            StateSel::Value => of(&self.values, ns),
            StateSel::List => of(&self.lists, ns),
            StateSel::Map => of(&self.maps, ns),
            StateSel::Sum => of(&self.sums, ns),
            StateSel::Mean => of(&self.means, ns),
        }
    }
}
