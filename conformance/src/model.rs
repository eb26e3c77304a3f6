//! Model-based property test: random sequences of state operations, checkpoints, aborted
//! checkpoints and restores (with rescaling) run against a backend and against a plain
//! in-memory model (`BTreeMap`s); the backend's whole observable state must match the model's.
//!
//! Each case owns one operator of 1..=5 subtasks (max parallelism 16 or 128) with one state of
//! every kind (value, list, map, reducing with a sum, aggregating with a mean), two namespaces
//! and 40 keys (three operations in four on keys 0..4, so they meet on the same key). Every
//! record is routed to the subtask owning its key group. After every write the touched key is
//! compared in both namespaces (map entries also by point reads); after every checkpoint step,
//! restore, "clear every key" walk and at the end, every key of every state is compared, and
//! so are the `keys_in` enumerations of every subtask (no duplicates, right key groups).
//!
//! Checkpoints are full or incremental, complete, aborted, or split at the barrier (writes
//! between the synchronous part and the upload belong to the next checkpoint). A case drives
//! them either with every file kept or through a `CheckpointLifecycle` retaining 1..=3
//! checkpoints, whose retention and aborts delete files a backend must no longer need. A
//! restore (fail-over, possibly at another parallelism) starts from the last completed
//! checkpoint, and the model rolls back to its state at that checkpoint; with no completed
//! checkpoint yet the operator starts empty.
//!
//! Environment:
//! - `FLOWSTATE_PROPTEST_CASES`: number of random cases (default 256).
//! - `PROPTEST_RNG_SEED`: replays a run; a failure prints the seed it ran with.
//!
//! Hand-written sequences worth keeping (the cases proptest's file persistence would keep, but
//! a library used from other crates has no source tree to write them into) are in
//! `REGRESSIONS` and run before the random cases.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::panic::{self, AssertUnwindSafe};

use flowstate_api::key_groups::{key_group_for_key_bytes, operator_index_for_key_group};
use flowstate_api::lifecycle::{CheckpointLifecycle, RetentionPolicy};
use flowstate_api::typed::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    ValueState, ValueStateDescriptor,
};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, KeyContext, KeyedStateBackend,
    MaxParallelism, Parallelism, SerdeCodec, SnapshotKind, StateBackend, StateBackendFactory,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde::{Deserialize, Serialize};

use crate::harness::{self, CapturedSubtask, Subtask};
use Op::*;
use SnapshotKind::{Full, Incremental};

/// Environment variable with the number of random cases to run.
pub const CASES_ENV: &str = "FLOWSTATE_PROPTEST_CASES";
/// Number of random cases when [`CASES_ENV`] is not set.
pub const DEFAULT_CASES: u32 = 256;

/// Keys are `0..KEYS`: few enough that operations collide on them.
const KEYS: u32 = 40;
/// Keys `0..HOT_KEYS` get most operations.
const HOT_KEYS: u32 = 4;
/// Namespaces are `0..NAMESPACES`.
const NAMESPACES: u8 = 2;
/// Map user keys are `0..USER_KEYS`.
const USER_KEYS: u8 = 6;
/// Longest generated sequence: keeps a case cheap on disk-backed backends in debug builds.
const MAX_OPS: usize = 40;
/// Most restores in one case (each one rebuilds every subtask).
const MAX_RESTORES: usize = 3;
/// Most elements in one list operation.
const MAX_ELEMENTS: usize = 3;
/// Shrinking stops after this many attempts: a disk-backed case takes tens of milliseconds.
const MAX_SHRINK_ITERS: u32 = 4096;

type Namespace = u8;

/// Up to [`MAX_ELEMENTS`] list elements, inline so operations are `Copy` and regressions can
/// be `const`. Prints as a list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Elements {
    len: u8,
    items: [u32; MAX_ELEMENTS],
}

impl Elements {
    /// At most [`MAX_ELEMENTS`] values (checked at compile time for constants).
    pub const fn of(values: &[u32]) -> Self {
        assert!(values.len() <= MAX_ELEMENTS, "too many list elements");
        let mut items = [0; MAX_ELEMENTS];
        let mut i = 0;
        while i < values.len() {
            items[i] = values[i];
            i += 1;
        }
        Self {
            len: values.len() as u8,
            items,
        }
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.items[..self.len as usize]
    }
}

impl fmt::Debug for Elements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// One state of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateSel {
    Value,
    List,
    Map,
    Sum,
    Mean,
}

impl StateSel {
    const ALL: [StateSel; 5] = [
        StateSel::Value,
        StateSel::List,
        StateSel::Map,
        StateSel::Sum,
        StateSel::Mean,
    ];
}

/// The states that support `merge_namespaces`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mergeable {
    List,
    Sum,
    Mean,
}

/// One step of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    ValuePut {
        key: u32,
        ns: Namespace,
        value: u64,
    },
    ListAdd {
        key: u32,
        ns: Namespace,
        value: u32,
    },
    /// `add_all`; an empty slice is a no-op.
    ListAddAll {
        key: u32,
        ns: Namespace,
        values: Elements,
    },
    /// Replaces the list; an empty slice clears it.
    ListUpdate {
        key: u32,
        ns: Namespace,
        values: Elements,
    },
    MapPut {
        key: u32,
        ns: Namespace,
        user_key: u8,
        value: u32,
    },
    MapRemove {
        key: u32,
        ns: Namespace,
        user_key: u8,
    },
    SumAdd {
        key: u32,
        ns: Namespace,
        value: i64,
    },
    MeanAdd {
        key: u32,
        ns: Namespace,
        value: u32,
    },
    Clear {
        state: StateSel,
        key: u32,
        ns: Namespace,
    },
    /// Walks `keys_in(ns)` with `apply_to_all_keys_in` and clears every key while walking.
    ClearEveryKey {
        state: StateSel,
        ns: Namespace,
    },
    /// Merges the other namespace into `target`; with `target_in_sources` the sources are
    /// `[target, other]` (the target must be skipped).
    MergeNamespaces {
        state: Mergeable,
        key: u32,
        target: Namespace,
        target_in_sources: bool,
    },
    /// A checkpoint confirmed complete: the point later restores start from.
    Checkpoint(SnapshotKind),
    /// A checkpoint taken, then aborted: it must not change state nor later checkpoints.
    AbortedCheckpoint(SnapshotKind),
    /// Only the synchronous part of a checkpoint: writes until [`Op::CompleteCaptured`] must
    /// not appear in it (but must appear in the next one). Any other checkpoint step completes
    /// an outstanding capture first; a restore abandons it.
    CaptureCheckpoint(SnapshotKind),
    /// Uploads and completes the outstanding captured checkpoint (no-op when there is none).
    CompleteCaptured,
    /// Drops every subtask and restores the last completed checkpoint at `parallelism`.
    Restore {
        parallelism: u32,
    },
}

impl Op {
    /// The key a per-key write touches (`None` for operator-wide steps).
    fn touched_key(&self) -> Option<u32> {
        match *self {
            Op::ValuePut { key, .. }
            | Op::ListAdd { key, .. }
            | Op::ListAddAll { key, .. }
            | Op::ListUpdate { key, .. }
            | Op::MapPut { key, .. }
            | Op::MapRemove { key, .. }
            | Op::SumAdd { key, .. }
            | Op::MeanAdd { key, .. }
            | Op::Clear { key, .. }
            | Op::MergeNamespaces { key, .. } => Some(key),
            Op::ClearEveryKey { .. }
            | Op::Checkpoint(_)
            | Op::AbortedCheckpoint(_)
            | Op::CaptureCheckpoint(_)
            | Op::CompleteCaptured
            | Op::Restore { .. } => None,
        }
    }
}

/// Who drives checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coordinator {
    /// `harness::checkpoint`, and `harness::checkpoint_pending` then
    /// `notify_checkpoint_aborted` for aborts: every file stays in storage.
    KeepEverything,
    /// A [`CheckpointLifecycle`] keeping `retained` completed checkpoints: retention and
    /// aborts delete files, so a restore fails if a backend still needs a deleted one.
    Lifecycle { retained: usize },
}

/// One generated (or hand-written) case.
#[derive(Clone, PartialEq, Eq)]
pub struct Case {
    pub max_parallelism: u32,
    pub parallelism: u32,
    pub coordinator: Coordinator,
    pub ops: Vec<Op>,
}

impl fmt::Debug for Case {
    // One numbered op per line: failure reports name the failing step by its number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "max parallelism {}, initial parallelism {}, {:?}, {} ops:",
            self.max_parallelism,
            self.parallelism,
            self.coordinator,
            self.ops.len()
        )?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:>2}: {op:?}")?;
        }
        Ok(())
    }
}

/// A hand-written case run before the random ones.
struct Regression {
    name: &'static str,
    max_parallelism: u32,
    parallelism: u32,
    ops: &'static [Op],
}

#[rustfmt::skip]
const REGRESSIONS: &[Regression] = &[
    Regression {
        name: "clear then add starts from nothing",
        max_parallelism: 128,
        parallelism: 2,
        ops: &[
            ListAdd { key: 1, ns: 0, value: 7 },
            SumAdd { key: 1, ns: 0, value: 5 },
            MeanAdd { key: 1, ns: 0, value: 10 },
            MapPut { key: 1, ns: 0, user_key: 2, value: 3 },
            Checkpoint(Incremental),
            Clear { state: StateSel::List, key: 1, ns: 0 },
            Clear { state: StateSel::Sum, key: 1, ns: 0 },
            Clear { state: StateSel::Mean, key: 1, ns: 0 },
            Clear { state: StateSel::Map, key: 1, ns: 0 },
            ListAdd { key: 1, ns: 0, value: 8 },
            SumAdd { key: 1, ns: 0, value: -2 },
            MeanAdd { key: 1, ns: 0, value: 4 },
            MapPut { key: 1, ns: 0, user_key: 5, value: 6 },
            Checkpoint(Incremental),
            Restore { parallelism: 3 },
        ],
    },
    Regression {
        name: "merge into an absent target",
        max_parallelism: 16,
        parallelism: 1,
        ops: &[
            ListAddAll { key: 4, ns: 1, values: Elements::of(&[1, 2, 3]) },
            SumAdd { key: 4, ns: 1, value: 9 },
            MeanAdd { key: 4, ns: 1, value: 3 },
            MergeNamespaces { state: Mergeable::List, key: 4, target: 0, target_in_sources: false },
            MergeNamespaces { state: Mergeable::Sum, key: 4, target: 0, target_in_sources: true },
            MergeNamespaces { state: Mergeable::Mean, key: 4, target: 0, target_in_sources: false },
            // Both sides present, then an absent source.
            ListAdd { key: 4, ns: 1, value: 4 },
            MergeNamespaces { state: Mergeable::List, key: 4, target: 0, target_in_sources: true },
            MergeNamespaces { state: Mergeable::Sum, key: 4, target: 0, target_in_sources: false },
            Checkpoint(Full),
            Restore { parallelism: 4 },
        ],
    },
    Regression {
        name: "rescale after removing everything",
        max_parallelism: 128,
        parallelism: 3,
        ops: &[
            ValuePut { key: 0, ns: 0, value: 1 },
            ValuePut { key: 17, ns: 1, value: 2 },
            ListAdd { key: 5, ns: 0, value: 1 },
            MapPut { key: 9, ns: 1, user_key: 0, value: 1 },
            MapPut { key: 9, ns: 1, user_key: 1, value: 2 },
            SumAdd { key: 30, ns: 0, value: 3 },
            MeanAdd { key: 31, ns: 1, value: 3 },
            Checkpoint(Incremental),
            Clear { state: StateSel::Value, key: 0, ns: 0 },
            ClearEveryKey { state: StateSel::Value, ns: 1 },
            ListUpdate { key: 5, ns: 0, values: Elements::of(&[]) },
            MapRemove { key: 9, ns: 1, user_key: 0 },
            MapRemove { key: 9, ns: 1, user_key: 1 },
            ClearEveryKey { state: StateSel::Sum, ns: 0 },
            Clear { state: StateSel::Mean, key: 31, ns: 1 },
            Checkpoint(Incremental),
            Restore { parallelism: 5 },
            Checkpoint(Full),
            Restore { parallelism: 1 },
        ],
    },
    Regression {
        name: "an aborted checkpoint's changes stay in the next delta",
        max_parallelism: 128,
        parallelism: 2,
        ops: &[
            ValuePut { key: 1, ns: 0, value: 1 },
            Checkpoint(Incremental),
            ValuePut { key: 2, ns: 0, value: 2 },
            Clear { state: StateSel::Value, key: 1, ns: 0 },
            AbortedCheckpoint(Incremental),
            ValuePut { key: 3, ns: 0, value: 3 },
            Checkpoint(Incremental),
            Restore { parallelism: 2 },
        ],
    },
    Regression {
        name: "restore without a completed checkpoint starts empty",
        max_parallelism: 16,
        parallelism: 2,
        ops: &[
            ValuePut { key: 1, ns: 0, value: 1 },
            AbortedCheckpoint(Full),
            Restore { parallelism: 3 },
            ListAdd { key: 1, ns: 1, value: 1 },
            Checkpoint(Incremental),
            Restore { parallelism: 1 },
        ],
    },
    Regression {
        name: "writes after a restore do not leak into the checkpoint restored again",
        max_parallelism: 16,
        parallelism: 5,
        ops: &[
            ListAddAll { key: 2, ns: 0, values: Elements::of(&[1, 2]) },
            MapPut { key: 3, ns: 1, user_key: 1, value: 1 },
            Checkpoint(Incremental),
            ListAdd { key: 2, ns: 0, value: 3 },
            Restore { parallelism: 4 },
            ListAdd { key: 2, ns: 0, value: 4 },
            MapRemove { key: 3, ns: 1, user_key: 1 },
            Checkpoint(Incremental),
            ValuePut { key: 8, ns: 0, value: 8 },
            Restore { parallelism: 2 },
            ListUpdate { key: 2, ns: 0, values: Elements::of(&[9]) },
            Restore { parallelism: 1 },
        ],
    },
    Regression {
        name: "writes after the synchronous part are in the next checkpoint, not this one",
        max_parallelism: 128,
        parallelism: 2,
        ops: &[
            ValuePut { key: 1, ns: 0, value: 1 },
            ListAdd { key: 2, ns: 1, value: 1 },
            MapPut { key: 3, ns: 0, user_key: 0, value: 1 },
            CaptureCheckpoint(Incremental),
            ValuePut { key: 1, ns: 0, value: 2 },
            ListAdd { key: 2, ns: 1, value: 2 },
            MapRemove { key: 3, ns: 0, user_key: 0 },
            CompleteCaptured,
            Restore { parallelism: 3 },
            SumAdd { key: 4, ns: 0, value: 1 },
            CaptureCheckpoint(Incremental),
            SumAdd { key: 4, ns: 0, value: 2 },
            Clear { state: StateSel::List, key: 2, ns: 1 },
            Checkpoint(Incremental),
            Restore { parallelism: 1 },
        ],
    },
    Regression {
        // Found on the heap backend: its next incremental checkpoint still built on the
        // chain of checkpoint 1, whose base retention had deleted once checkpoint 2 completed.
        name: "incremental after a completed full checkpoint",
        max_parallelism: 16,
        parallelism: 1,
        ops: &[
            ValuePut { key: 1, ns: 0, value: 1 },
            Checkpoint(Incremental),
            ValuePut { key: 2, ns: 0, value: 2 },
            Checkpoint(Full),
            ValuePut { key: 3, ns: 0, value: 3 },
            Checkpoint(Incremental),
            Restore { parallelism: 2 },
        ],
    },
    Regression {
        name: "list update: empty on absent, replace, clear, append",
        max_parallelism: 128,
        parallelism: 1,
        ops: &[
            ListUpdate { key: 6, ns: 0, values: Elements::of(&[]) },
            ListUpdate { key: 6, ns: 0, values: Elements::of(&[1, 2]) },
            ListAddAll { key: 6, ns: 0, values: Elements::of(&[]) },
            Checkpoint(Incremental),
            ListUpdate { key: 6, ns: 0, values: Elements::of(&[]) },
            ListAdd { key: 6, ns: 0, value: 3 },
            Checkpoint(Incremental),
            ListUpdate { key: 6, ns: 0, values: Elements::of(&[4, 5, 6]) },
            AbortedCheckpoint(Incremental),
            Restore { parallelism: 2 },
        ],
    },
];

// ---------------------------------------------------------------------------------------------
// The states under test

/// Sum and count: the accumulator of the mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Mean {
    sum: u64,
    count: u64,
}

/// Integer mean of the added values.
struct MeanFunction;

impl AggregateFunction<u32, Mean, u64> for MeanFunction {
    fn create_accumulator(&self) -> Mean {
        Mean::default()
    }
    fn add(&self, value: u32, acc: Mean) -> Mean {
        Mean {
            sum: acc.sum + u64::from(value),
            count: acc.count + 1,
        }
    }
    fn get_result(&self, acc: &Mean) -> u64 {
        acc.sum.checked_div(acc.count).unwrap_or(0)
    }
    fn merge(&self, a: Mean, b: Mean) -> Mean {
        Mean {
            sum: a.sum + b.sum,
            count: a.count + b.count,
        }
    }
}

struct Descriptors {
    value: ValueStateDescriptor<u64, Namespace>,
    list: ListStateDescriptor<u32, Namespace>,
    map: MapStateDescriptor<u8, u32, Namespace>,
    sum: ReducingStateDescriptor<i64, Namespace>,
    mean: AggregatingStateDescriptor<u32, Mean, u64, Namespace>,
}

impl Descriptors {
    fn new() -> Self {
        Self {
            value: ValueStateDescriptor::<u64>::new("model-value").with_namespace(),
            list: ListStateDescriptor::<u32>::new("model-list").with_namespace(),
            map: MapStateDescriptor::<u8, u32>::new("model-map").with_namespace(),
            sum: ReducingStateDescriptor::<i64>::new("model-sum", |a: i64, b: i64| a + b)
                .with_namespace(),
            mean: AggregatingStateDescriptor::<u32, Mean, u64>::new("model-mean", MeanFunction)
                .with_namespace(),
        }
    }
}

/// The typed handles of one subtask.
struct Handles {
    value: ValueState<u64, Namespace>,
    list: ListState<u32, Namespace>,
    map: MapState<u8, u32, Namespace>,
    sum: ReducingState<i64, Namespace>,
    mean: AggregatingState<u32, Mean, u64, Namespace>,
}

impl Handles {
    fn bind<B: StateBackend + 'static>(
        descriptors: &Descriptors,
        subtask: &Subtask<B>,
    ) -> flowstate_api::Result<Self> {
        let backend = subtask.keyed();
        Ok(Self {
            value: descriptors.value.bind(backend.clone())?,
            list: descriptors.list.bind(backend.clone())?,
            map: descriptors.map.bind(backend.clone())?,
            sum: descriptors.sum.bind(backend.clone())?,
            mean: descriptors.mean.bind(backend)?,
        })
    }

    fn keys_in(&self, state: StateSel, ns: Namespace) -> flowstate_api::Result<Vec<KeyContext>> {
        match state {
            StateSel::Value => self.value.keys_in(&ns),
            StateSel::List => self.list.keys_in(&ns),
            StateSel::Map => self.map.keys_in(&ns),
            StateSel::Sum => self.sum.keys_in(&ns),
            StateSel::Mean => self.mean.keys_in(&ns),
        }
    }

    fn clear(&self, state: StateSel, key: &KeyContext, ns: Namespace) -> flowstate_api::Result<()> {
        match state {
            StateSel::Value => self.value.clear_in(key, &ns),
            StateSel::List => self.list.clear_in(key, &ns),
            StateSel::Map => self.map.clear_in(key, &ns),
            StateSel::Sum => self.sum.clear_in(key, &ns),
            StateSel::Mean => self.mean.clear_in(key, &ns),
        }
    }

    fn clear_every_key(&self, state: StateSel, ns: Namespace) -> flowstate_api::Result<()> {
        match state {
            StateSel::Value => self
                .value
                .apply_to_all_keys_in(&ns, |k, s| s.clear_in(k, &ns)),
            StateSel::List => self
                .list
                .apply_to_all_keys_in(&ns, |k, s| s.clear_in(k, &ns)),
            StateSel::Map => self
                .map
                .apply_to_all_keys_in(&ns, |k, s| s.clear_in(k, &ns)),
            StateSel::Sum => self
                .sum
                .apply_to_all_keys_in(&ns, |k, s| s.clear_in(k, &ns)),
            StateSel::Mean => self
                .mean
                .apply_to_all_keys_in(&ns, |k, s| s.clear_in(k, &ns)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model

/// (key, namespace).
type Cell = (u32, Namespace);

/// What the backend should hold. Lists and maps are never stored empty: empty reads as absent.
#[derive(Clone, Debug, Default)]
struct Model {
    values: BTreeMap<Cell, u64>,
    lists: BTreeMap<Cell, Vec<u32>>,
    maps: BTreeMap<Cell, BTreeMap<u8, u32>>,
    sums: BTreeMap<Cell, i64>,
    means: BTreeMap<Cell, Mean>,
}

fn other_namespace(ns: Namespace) -> Namespace {
    (ns + 1) % NAMESPACES
}

impl Model {
    fn apply(&mut self, op: &Op) {
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
    fn keys(&self, state: StateSel, ns: Namespace) -> BTreeSet<u32> {
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

// ---------------------------------------------------------------------------------------------
// Running a case

/// Why a case failed, with the step it failed at.
type Failure = String;

fn backend_err(what: &str) -> impl FnOnce(flowstate_api::Error) -> Failure + '_ {
    move |e| format!("{what} failed: {e}")
}

fn expect_eq<T: PartialEq + fmt::Debug>(
    what: impl FnOnce() -> String,
    backend: T,
    model: T,
) -> Result<(), Failure> {
    if backend == model {
        Ok(())
    } else {
        Err(format!(
            "{}: the backend has {backend:?}, the model {model:?}",
            what()
        ))
    }
}

/// One operator under test, its model, and the checkpoint a restore starts from.
struct Run<'a, F: StateBackendFactory> {
    factory: &'a F,
    descriptors: Descriptors,
    storage: CheckpointStorage,
    max: MaxParallelism,
    parallelism: Parallelism,
    subtasks: Vec<Subtask<F::Backend>>,
    handles: Vec<Handles>,
    /// Key contexts of `0..KEYS`, computed once.
    contexts: Vec<KeyContext>,
    model: Model,
    last_completed: Option<(CheckpointManifest, Model)>,
    /// Ids for [`Coordinator::KeepEverything`]; a lifecycle hands out its own.
    next_checkpoint: CheckpointId,
    lifecycle: Option<CheckpointLifecycle>,
    /// The synchronous part of a checkpoint not uploaded yet, and the model when it was taken.
    captured: Option<(CheckpointId, Vec<CapturedSubtask>, Model)>,
}

impl<'a, F: StateBackendFactory> Run<'a, F> {
    fn start(factory: &'a F, case: &Case) -> Result<Self, Failure> {
        let max =
            MaxParallelism::new(case.max_parallelism).map_err(backend_err("max parallelism"))?;
        let parallelism = Parallelism::new(case.parallelism).map_err(backend_err("parallelism"))?;
        let storage = CheckpointStorage::in_memory();
        let lifecycle = match case.coordinator {
            Coordinator::KeepEverything => None,
            Coordinator::Lifecycle { retained } => {
                let policy = RetentionPolicy {
                    retained_checkpoints: retained,
                };
                let opened = harness::block_on(CheckpointLifecycle::open(storage.clone(), policy))
                    .map_err(backend_err("opening the checkpoint lifecycle"))?;
                Some(opened)
            }
        };
        let codec = SerdeCodec::<u32>::new();
        let contexts = (0..KEYS)
            .map(|k| KeyContext::for_key(&codec, &k, max))
            .collect::<flowstate_api::Result<Vec<_>>>()
            .map_err(backend_err("encoding keys"))?;
        let subtasks = harness::create_operator(factory, max, parallelism)
            .map_err(backend_err("creating the operator"))?;
        let mut run = Self {
            factory,
            descriptors: Descriptors::new(),
            storage,
            max,
            parallelism,
            subtasks,
            handles: Vec::new(),
            contexts,
            model: Model::default(),
            last_completed: None,
            next_checkpoint: CheckpointId(1),
            lifecycle,
            captured: None,
        };
        run.bind()?;
        Ok(run)
    }

    fn bind(&mut self) -> Result<(), Failure> {
        self.handles = self
            .subtasks
            .iter()
            .map(|s| Handles::bind(&self.descriptors, s))
            .collect::<flowstate_api::Result<Vec<_>>>()
            .map_err(backend_err("registering the states"))?;
        Ok(())
    }

    fn context(&self, key: u32) -> &KeyContext {
        &self.contexts[key as usize]
    }

    /// The handles of the subtask owning `key`'s key group.
    fn owner(&self, key: u32) -> &Handles {
        let group = self.context(key).key_group();
        let index = operator_index_for_key_group(self.max, self.parallelism, group);
        &self.handles[index as usize]
    }

    fn step(&mut self, op: &Op) -> Result<(), Failure> {
        match *op {
            Checkpoint(kind) => {
                self.complete_captured()?;
                let manifest = match &mut self.lifecycle {
                    Some(lifecycle) => {
                        harness::checkpoint_with_lifecycle(&self.subtasks, lifecycle, kind)
                    }
                    None => {
                        let id = self.take_checkpoint_id();
                        harness::checkpoint(&self.subtasks, &self.storage, id, kind)
                    }
                }
                .map_err(backend_err("the checkpoint"))?;
                self.last_completed = Some((manifest, self.model.clone()));
                self.check_all()
            }
            AbortedCheckpoint(kind) => {
                self.complete_captured()?;
                match &mut self.lifecycle {
                    Some(lifecycle) => {
                        harness::abort_with_lifecycle(&self.subtasks, lifecycle, kind)
                            .map_err(backend_err("the aborted checkpoint"))?;
                    }
                    None => {
                        let id = self.take_checkpoint_id();
                        harness::checkpoint_pending(&self.subtasks, &self.storage, id, kind)
                            .map_err(backend_err("the aborted checkpoint"))?;
                        for s in &self.subtasks {
                            s.backend
                                .notify_checkpoint_aborted(id)
                                .map_err(backend_err("notify_checkpoint_aborted"))?;
                        }
                    }
                }
                self.check_all()
            }
            CaptureCheckpoint(kind) => {
                self.complete_captured()?;
                let id = match &mut self.lifecycle {
                    Some(lifecycle) => lifecycle.begin(),
                    None => self.take_checkpoint_id(),
                };
                let captured = harness::capture(&self.subtasks, id, kind)
                    .map_err(backend_err("the synchronous part of the checkpoint"))?;
                self.captured = Some((id, captured, self.model.clone()));
                self.check_all()
            }
            CompleteCaptured => {
                self.complete_captured()?;
                self.check_all()
            }
            Restore { parallelism } => {
                self.restore(parallelism)?;
                self.check_all()
            }
            ClearEveryKey { state, ns } => {
                for h in &self.handles {
                    h.clear_every_key(state, ns)
                        .map_err(backend_err("clearing while walking the keys"))?;
                }
                self.model.apply(op);
                self.check_all()
            }
            _ => {
                self.write(op).map_err(backend_err("the operation"))?;
                self.model.apply(op);
                match op.touched_key() {
                    Some(key) => self.check_key(key, true),
                    None => self.check_all(),
                }
            }
        }
    }

    /// Uploads and completes the outstanding captured checkpoint, if any.
    fn complete_captured(&mut self) -> Result<(), Failure> {
        let Some((id, captured, model)) = self.captured.take() else {
            return Ok(());
        };
        let manifest = harness::upload(&self.subtasks, captured, &self.storage, id)
            .map_err(backend_err("the upload of the captured checkpoint"))?;
        match &mut self.lifecycle {
            Some(lifecycle) => {
                harness::block_on(lifecycle.complete(manifest.clone()))
                    .map_err(backend_err("completing the captured checkpoint"))?;
                for s in &self.subtasks {
                    s.backend
                        .notify_checkpoint_complete(id)
                        .map_err(backend_err("notify_checkpoint_complete"))?;
                }
            }
            None => harness::publish(&self.subtasks, &self.storage, &manifest)
                .map_err(backend_err("completing the captured checkpoint"))?,
        }
        self.last_completed = Some((manifest, model));
        Ok(())
    }

    fn take_checkpoint_id(&mut self) -> CheckpointId {
        let id = self.next_checkpoint;
        self.next_checkpoint = id.next();
        id
    }

    fn write(&self, op: &Op) -> flowstate_api::Result<()> {
        let Some(key) = op.touched_key() else {
            return Ok(());
        };
        let h = self.owner(key);
        let k = self.context(key);
        match *op {
            ValuePut { ns, value, .. } => h.value.update_in(k, &ns, &value),
            ListAdd { ns, value, .. } => h.list.add_in(k, &ns, &value),
            ListAddAll { ns, values, .. } => h.list.add_all_in(k, &ns, values.as_slice()),
            ListUpdate { ns, values, .. } => h.list.update_in(k, &ns, values.as_slice()),
            MapPut {
                ns,
                user_key,
                value,
                ..
            } => h.map.put_in(k, &ns, &user_key, &value),
            MapRemove { ns, user_key, .. } => h.map.remove_in(k, &ns, &user_key),
            SumAdd { ns, value, .. } => h.sum.add_in(k, &ns, value),
            MeanAdd { ns, value, .. } => h.mean.add_in(k, &ns, value),
            Clear { state, ns, .. } => h.clear(state, k, ns),
            MergeNamespaces {
                state,
                target,
                target_in_sources,
                ..
            } => {
                let other = other_namespace(target);
                let sources: &[Namespace] = if target_in_sources {
                    &[target, other]
                } else {
                    &[other]
                };
                match state {
                    Mergeable::List => h.list.merge_namespaces(k, &target, sources),
                    Mergeable::Sum => h.sum.merge_namespaces(k, &target, sources),
                    Mergeable::Mean => h.mean.merge_namespaces(k, &target, sources),
                }
            }
            ClearEveryKey { .. }
            | Checkpoint(_)
            | AbortedCheckpoint(_)
            | CaptureCheckpoint(_)
            | CompleteCaptured
            | Restore { .. } => Ok(()),
        }
    }

    /// Fail-over: every subtask is dropped, then the operator is restored at `parallelism`
    /// from the last completed checkpoint (or created empty when there is none).
    fn restore(&mut self, parallelism: u32) -> Result<(), Failure> {
        let parallelism = Parallelism::new(parallelism).map_err(backend_err("parallelism"))?;
        if let Some(lifecycle) = &self.lifecycle {
            let latest = lifecycle.latest().map(|m| m.checkpoint_id);
            let ours = self.last_completed.as_ref().map(|(m, _)| m.checkpoint_id);
            expect_eq(|| "the lifecycle's latest checkpoint".into(), latest, ours)?;
        }
        // A checkpoint in flight at a fail-over never completes.
        if let Some((id, _, _)) = self.captured.take() {
            if let Some(lifecycle) = &mut self.lifecycle {
                harness::block_on(lifecycle.abort(id))
                    .map_err(backend_err("aborting the checkpoint in flight"))?;
            }
        }
        self.handles.clear();
        self.subtasks.clear();
        match &self.last_completed {
            Some((manifest, model)) => {
                self.subtasks =
                    harness::restore_operator(self.factory, &self.storage, manifest, parallelism)
                        .map_err(backend_err("the restore"))?;
                self.model = model.clone();
            }
            None => {
                self.subtasks = harness::create_operator(self.factory, self.max, parallelism)
                    .map_err(backend_err("creating the operator"))?;
                self.model = Model::default();
            }
        }
        self.parallelism = parallelism;
        self.bind()
    }

    /// Compares every state of `key` in every namespace; `point_reads` adds a `get` and a
    /// `contains` per map user key.
    fn check_key(&self, key: u32, point_reads: bool) -> Result<(), Failure> {
        let h = self.owner(key);
        let k = self.context(key);
        let m = &self.model;
        for ns in 0..NAMESPACES {
            let cell = (key, ns);
            let at =
                |state: &'static str| move || format!("{state} of key {key} in namespace {ns}");

            let value = h.value.get_in(k, &ns).map_err(backend_err("value get"))?;
            expect_eq(at("value"), value, m.values.get(&cell).copied())?;

            let list = h.list.get_in(k, &ns).map_err(backend_err("list get"))?;
            expect_eq(at("list"), list, m.lists.get(&cell).cloned())?;

            let entries = h
                .map
                .entries_in(k, &ns)
                .map_err(backend_err("map entries"))?;
            let count = entries.len();
            let entries: BTreeMap<u8, u32> = entries.into_iter().collect();
            if entries.len() != count {
                return Err(format!(
                    "{}: entries returned a user key twice ({count} entries, {} distinct)",
                    at("map")(),
                    entries.len()
                ));
            }
            let expected = m.maps.get(&cell).cloned().unwrap_or_default();
            expect_eq(at("map entries"), &entries, &expected)?;
            let empty = h
                .map
                .is_empty_in(k, &ns)
                .map_err(backend_err("map is_empty"))?;
            expect_eq(at("map is_empty"), empty, expected.is_empty())?;
            if point_reads {
                for user_key in 0..USER_KEYS {
                    let what = || format!("map entry {user_key} of key {key} in namespace {ns}");
                    let got = h
                        .map
                        .get_in(k, &ns, &user_key)
                        .map_err(backend_err("map get"))?;
                    expect_eq(what, got, expected.get(&user_key).copied())?;
                    let contains = h
                        .map
                        .contains_in(k, &ns, &user_key)
                        .map_err(backend_err("map contains"))?;
                    let what = || format!("map contains {user_key} of key {key} in namespace {ns}");
                    expect_eq(what, contains, expected.contains_key(&user_key))?;
                }
            }

            let sum = h.sum.get_in(k, &ns).map_err(backend_err("reducing get"))?;
            expect_eq(at("sum"), sum, m.sums.get(&cell).copied())?;

            let mean = m.means.get(&cell).copied();
            let acc = h
                .mean
                .accumulator_in(k, &ns)
                .map_err(backend_err("aggregating accumulator"))?;
            expect_eq(at("mean accumulator"), acc, mean)?;
            let result = h
                .mean
                .get_in(k, &ns)
                .map_err(backend_err("aggregating get"))?;
            let expected = mean.map(|a| a.sum.checked_div(a.count).unwrap_or(0));
            expect_eq(at("mean"), result, expected)?;
        }
        Ok(())
    }

    /// Compares every key of every state, and the key enumerations of every subtask.
    fn check_all(&self) -> Result<(), Failure> {
        for key in 0..KEYS {
            self.check_key(key, false)?;
        }
        let codec = SerdeCodec::<u32>::new();
        for ns in 0..NAMESPACES {
            for state in StateSel::ALL {
                let mut seen = BTreeSet::new();
                for (subtask, h) in self.subtasks.iter().zip(&self.handles) {
                    let range = subtask.backend.key_group_range();
                    let keys = h.keys_in(state, ns).map_err(backend_err("keys_in"))?;
                    for k in keys {
                        let key: u32 = k
                            .decode_key(&codec)
                            .map_err(backend_err("decoding a key"))?;
                        let actual_group = key_group_for_key_bytes(k.key(), self.max);
                        if k.key_group() != actual_group || !range.contains(actual_group) {
                            return Err(format!(
                                "keys_in({state:?}, namespace {ns}) of subtask {} (key groups {range}) returned key {key} with key group {}, but its key group is {actual_group}",
                                subtask.index,
                                k.key_group()
                            ));
                        }
                        if !seen.insert(key) {
                            return Err(format!(
                                "keys_in({state:?}, namespace {ns}) returned key {key} twice"
                            ));
                        }
                    }
                }
                let what = || format!("keys_in({state:?}, namespace {ns})");
                expect_eq(what, seen, self.model.keys(state, ns))?;
            }
        }
        Ok(())
    }
}

/// Runs one case from a fresh operator; the error names the failing step.
fn run_case<F: StateBackendFactory>(factory: &F, case: &Case) -> Result<(), Failure> {
    let mut run = Run::start(factory, case)?;
    for (i, op) in case.ops.iter().enumerate() {
        run.step(op)
            .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
    }
    run.check_all().map_err(|e| format!("at the end: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Generation

fn kind_strategy() -> impl Strategy<Value = SnapshotKind> {
    prop_oneof![Just(Full), Just(Incremental)]
}

fn state_strategy() -> impl Strategy<Value = StateSel> {
    prop::sample::select(StateSel::ALL.to_vec())
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // Most operations hit a few hot keys so that they meet on the same (key, namespace); the
    // rest spread over every key (and so over many key groups and subtasks).
    let key = || prop_oneof![3 => 0..HOT_KEYS, 1 => 0..KEYS];
    let ns = || 0..NAMESPACES;
    let elements =
        || prop::collection::vec(0..100u32, 0..=MAX_ELEMENTS).prop_map(|v| Elements::of(&v));
    let mergeable = prop_oneof![
        Just(Mergeable::List),
        Just(Mergeable::Sum),
        Just(Mergeable::Mean)
    ];
    // Writes first, operator-wide steps last: shrinking moves towards earlier alternatives.
    prop_oneof![
        8 => (key(), ns(), 0..1000u64).prop_map(|(key, ns, value)| ValuePut { key, ns, value }),
        8 => (key(), ns(), 0..100u32).prop_map(|(key, ns, value)| ListAdd { key, ns, value }),
        4 => (key(), ns(), elements()).prop_map(|(key, ns, values)| ListAddAll { key, ns, values }),
        4 => (key(), ns(), elements()).prop_map(|(key, ns, values)| ListUpdate { key, ns, values }),
        10 => (key(), ns(), 0..USER_KEYS, 0..100u32).prop_map(|(key, ns, user_key, value)| {
            MapPut { key, ns, user_key, value }
        }),
        6 => (key(), ns(), 0..USER_KEYS).prop_map(|(key, ns, user_key)| MapRemove { key, ns, user_key }),
        8 => (key(), ns(), -50..50i64).prop_map(|(key, ns, value)| SumAdd { key, ns, value }),
        8 => (key(), ns(), 0..100u32).prop_map(|(key, ns, value)| MeanAdd { key, ns, value }),
        8 => (state_strategy(), key(), ns()).prop_map(|(state, key, ns)| Clear { state, key, ns }),
        6 => (mergeable, key(), ns(), any::<bool>()).prop_map(
            |(state, key, target, target_in_sources)| MergeNamespaces {
                state,
                key,
                target,
                target_in_sources,
            }
        ),
        1 => (state_strategy(), ns()).prop_map(|(state, ns)| ClearEveryKey { state, ns }),
        5 => kind_strategy().prop_map(Checkpoint),
        2 => kind_strategy().prop_map(AbortedCheckpoint),
        3 => kind_strategy().prop_map(CaptureCheckpoint),
        3 => Just(CompleteCaptured),
        4 => (1..=5u32).prop_map(|parallelism| Restore { parallelism }),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(16u32), Just(128u32)],
        1..=5u32,
        prop_oneof![
            Just(Coordinator::KeepEverything),
            (1..=3usize).prop_map(|retained| Coordinator::Lifecycle { retained }),
        ],
        prop::collection::vec(op_strategy(), 0..=MAX_OPS),
    )
        .prop_filter(
            "at most MAX_RESTORES restores per case",
            |(_, _, _, ops)| {
                ops.iter().filter(|op| matches!(op, Restore { .. })).count() <= MAX_RESTORES
            },
        )
        .prop_map(|(max_parallelism, parallelism, coordinator, ops)| Case {
            max_parallelism,
            parallelism,
            coordinator,
            ops,
        })
}

fn panic_message(payload: &Box<dyn Any + Send>) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}

fn cases_from_env() -> u32 {
    match std::env::var(CASES_ENV) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{CASES_ENV} must be a positive integer, found {text:?}"),
        },
        Err(_) => DEFAULT_CASES,
    }
}

/// Runs the [`REGRESSIONS`], then [`CASES_ENV`] random cases (default [`DEFAULT_CASES`]);
/// panics with the minimal failing sequence (after shrinking) and the seed to replay it.
pub fn random_operations_match_model<F: StateBackendFactory>(factory: &F) {
    // Each regression runs under both coordinators; the tightest retention deletes the most.
    let coordinators = [
        Coordinator::KeepEverything,
        Coordinator::Lifecycle { retained: 1 },
    ];
    for r in REGRESSIONS {
        for coordinator in coordinators {
            let case = Case {
                max_parallelism: r.max_parallelism,
                parallelism: r.parallelism,
                coordinator,
                ops: r.ops.to_vec(),
            };
            // A backend panic is reported like a mismatch: with the sequence that caused it.
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_case(factory, &case)))
                .unwrap_or_else(|payload| Err(format!("panicked: {}", panic_message(&payload))));
            if let Err(reason) = outcome {
                panic!(
                    "{} backend fails the regression case '{}': {reason}\n{case:?}",
                    factory.name(),
                    r.name
                );
            }
        }
    }

    // Regressions live in REGRESSIONS: no file next to a source tree this library lacks.
    let mut config = Config {
        cases: cases_from_env(),
        failure_persistence: None,
        max_shrink_iters: MAX_SHRINK_ITERS,
        ..Config::default()
    };
    if config.rng_seed == RngSeed::Random {
        // Chosen here rather than by proptest so a failure can print it for replay.
        let seed = RandomState::new().hash_one(std::time::SystemTime::now());
        config.rng_seed = RngSeed::Fixed(seed);
    }
    let seed = config.rng_seed;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case_strategy(), |case| {
        run_case(factory, &case).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            let seed = match seed {
                RngSeed::Fixed(s) => format!("PROPTEST_RNG_SEED={s}"),
                RngSeed::Random => "a random seed".to_string(),
            };
            panic!(
                "{} backend disagrees with the model: {reason}\nminimal failing case (found with {seed}):\n{case:?}",
                factory.name()
            );
        }
        Err(TestError::Abort(reason)) => {
            panic!("the model-based test gave up: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn model_follows_flink_semantics() {
        let mut m = Model::default();
        m.apply(&ListUpdate {
            key: 1,
            ns: 0,
            values: Elements::of(&[]),
        });
        assert!(m.lists.is_empty());
        m.apply(&ListAddAll {
            key: 1,
            ns: 1,
            values: Elements::of(&[1, 2]),
        });
        m.apply(&ListAdd {
            key: 1,
            ns: 0,
            value: 0,
        });
        m.apply(&MergeNamespaces {
            state: Mergeable::List,
            key: 1,
            target: 0,
            target_in_sources: true,
        });
        assert_eq!(m.lists.get(&(1, 0)), Some(&vec![0, 1, 2]));
        assert!(!m.lists.contains_key(&(1, 1)));
        m.apply(&MapPut {
            key: 2,
            ns: 0,
            user_key: 1,
            value: 5,
        });
        m.apply(&MapRemove {
            key: 2,
            ns: 0,
            user_key: 1,
        });
        assert!(m.keys(StateSel::Map, 0).is_empty());
        m.apply(&MeanAdd {
            key: 3,
            ns: 1,
            value: 4,
        });
        m.apply(&MeanAdd {
            key: 3,
            ns: 0,
            value: 1,
        });
        m.apply(&MergeNamespaces {
            state: Mergeable::Mean,
            key: 3,
            target: 0,
            target_in_sources: false,
        });
        assert_eq!(m.means.get(&(3, 0)), Some(&Mean { sum: 5, count: 2 }));
        m.apply(&ClearEveryKey {
            state: StateSel::Mean,
            ns: 0,
        });
        assert!(m.means.is_empty());
    }

    #[test]
    fn generated_cases_respect_the_limits() {
        let mut runner = TestRunner::deterministic();
        let strategy = case_strategy();
        for _ in 0..200 {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            assert!(case.ops.len() <= MAX_OPS);
            assert!(
                case.ops
                    .iter()
                    .filter(|o| matches!(o, Restore { .. }))
                    .count()
                    <= MAX_RESTORES
            );
        }
    }

    #[test]
    fn elements_print_as_a_list() {
        assert_eq!(format!("{:?}", Elements::of(&[3, 4])), "[3, 4]");
    }
}
