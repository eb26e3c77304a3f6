//! One state of every kind, with namespaces, beside a plain `BTreeMap` model of what they
//! should hold: the snapshot and rescale cases write random operations to both and then
//! compare every key of every state, namespace and subtask.

use std::collections::{BTreeMap, BTreeSet};

use flowstate_api::key_groups::operator_index_for_key_group;
use flowstate_api::typed::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    SharedBackend, ValueState, ValueStateDescriptor,
};
use flowstate_api::{
    KeyContext, KeyGroupRange, MaxParallelism, Parallelism, Result, StateBackend, StateMetadata,
};

use crate::fixtures::{enumerated_ids, key_at, Rng};
use crate::harness::Subtask;

/// The namespace type of the dataset's states.
pub type Ns = u32;

/// The namespaces the dataset writes; 70 000 encodes to several bytes, so namespaces of
/// different lengths meet in one state.
pub const NAMESPACES: [Ns; 3] = [0, 1, 70_000];

/// The aggregate function of the dataset: the mean of the inputs, kept as (sum, count).
#[derive(Clone, Copy, Debug, Default)]
pub struct Mean;

impl AggregateFunction<i64, (i64, u64), i64> for Mean {
    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, value: i64, (sum, count): (i64, u64)) -> (i64, u64) {
        (sum + value, count + 1)
    }
    fn get_result(&self, &(sum, count): &(i64, u64)) -> i64 {
        if count == 0 {
            0
        } else {
            sum / count as i64
        }
    }
    fn merge(&self, a: (i64, u64), b: (i64, u64)) -> (i64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

pub fn value_descriptor() -> ValueStateDescriptor<String, Ns> {
    ValueStateDescriptor::<String>::new("dataset-value").with_namespace::<Ns>()
}
pub fn list_descriptor() -> ListStateDescriptor<u32, Ns> {
    ListStateDescriptor::<u32>::new("dataset-list").with_namespace::<Ns>()
}
pub fn map_descriptor() -> MapStateDescriptor<String, u64, Ns> {
    MapStateDescriptor::<String, u64>::new("dataset-map").with_namespace::<Ns>()
}
pub fn reducing_descriptor() -> ReducingStateDescriptor<i64, Ns> {
    ReducingStateDescriptor::<i64>::new("dataset-reducing", |a, b| a + b).with_namespace::<Ns>()
}
pub fn aggregating_descriptor() -> AggregatingStateDescriptor<i64, (i64, u64), i64, Ns> {
    AggregatingStateDescriptor::<i64, (i64, u64), i64>::new("dataset-aggregating", Mean)
        .with_namespace::<Ns>()
}

/// The metadata of the dataset's five states, in the order [`AllStates::bind`] registers them.
pub fn dataset_metadata() -> Vec<StateMetadata> {
    vec![
        value_descriptor().metadata(),
        list_descriptor().metadata(),
        map_descriptor().metadata(),
        reducing_descriptor().metadata(),
        aggregating_descriptor().metadata(),
    ]
}

/// Typed handles of the five states on one backend.
pub struct AllStates {
    pub value: ValueState<String, Ns>,
    pub list: ListState<u32, Ns>,
    pub map: MapState<String, u64, Ns>,
    pub reducing: ReducingState<i64, Ns>,
    pub aggregating: AggregatingState<i64, (i64, u64), i64, Ns>,
}

impl AllStates {
    /// Registers (or, after a restore, re-binds) the five states.
    pub fn bind(backend: SharedBackend) -> Result<Self> {
        Ok(Self {
            value: value_descriptor().bind(backend.clone())?,
            list: list_descriptor().bind(backend.clone())?,
            map: map_descriptor().bind(backend.clone())?,
            reducing: reducing_descriptor().bind(backend.clone())?,
            aggregating: aggregating_descriptor().bind(backend)?,
        })
    }
}

/// What one operation does to one (key, namespace) of one state.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    ValuePut(String),
    ValueClear,
    ListAdd(u32),
    ListAddAll(Vec<u32>),
    /// Replaces the list; empty clears it.
    ListUpdate(Vec<u32>),
    ListClear,
    /// Merges the given namespaces into the op's namespace.
    ListMerge(Vec<Ns>),
    MapPut(String, u64),
    MapRemove(String),
    MapClear,
    ReduceAdd(i64),
    ReduceClear,
    ReduceMerge(Vec<Ns>),
    AggAdd(i64),
    AggClear,
    AggMerge(Vec<Ns>),
}

/// One operation on key `key` in namespace `ns`.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub key: u64,
    pub ns: Ns,
    pub action: Action,
}

const USER_KEYS: [&str; 6] = ["", "a", "ab", "b", "user-key-4", "user-key-5"];

impl Op {
    /// A random operation on a key in `0..key_space`.
    pub fn random(rng: &mut Rng, key_space: u64) -> Op {
        let key = rng.below(key_space);
        let ns = *rng.pick(&NAMESPACES);
        let sources = |rng: &mut Rng| -> Vec<Ns> {
            NAMESPACES
                .iter()
                .copied()
                .filter(|_| rng.chance(60))
                .collect()
        };
        let roll = rng.below(100);
        let action = match rng.below(5) {
            0 => match roll {
                0..=84 => {
                    let len = rng.below(40) as usize;
                    let s: String = (0..len)
                        .map(|i| char::from(b'a' + ((key as usize + i) % 26) as u8))
                        .collect();
                    Action::ValuePut(format!("{s}{}", rng.below(1000)))
                }
                _ => Action::ValueClear,
            },
            1 => match roll {
                0..=49 => Action::ListAdd(rng.next_u64() as u32),
                50..=69 => {
                    Action::ListAddAll((0..rng.below(5)).map(|_| rng.next_u64() as u32).collect())
                }
                70..=84 => {
                    Action::ListUpdate((0..rng.below(4)).map(|_| rng.next_u64() as u32).collect())
                }
                85..=92 => Action::ListClear,
                _ => Action::ListMerge(sources(rng)),
            },
            2 => match roll {
                0..=69 => Action::MapPut(rng.pick(&USER_KEYS).to_string(), rng.next_u64()),
                70..=89 => Action::MapRemove(rng.pick(&USER_KEYS).to_string()),
                _ => Action::MapClear,
            },
            3 => match roll {
                0..=84 => Action::ReduceAdd(rng.below(200) as i64 - 100),
                85..=92 => Action::ReduceClear,
                _ => Action::ReduceMerge(sources(rng)),
            },
            _ => match roll {
                0..=84 => Action::AggAdd(rng.below(1000) as i64 - 300),
                85..=92 => Action::AggClear,
                _ => Action::AggMerge(sources(rng)),
            },
        };
        Op { key, ns, action }
    }

    /// Applies the operation to the typed states of the backend owning the key.
    pub fn apply_to(&self, states: &AllStates, ctx: &KeyContext) -> Result<()> {
        let ns = &self.ns;
        match &self.action {
            Action::ValuePut(v) => states.value.update_in(ctx, ns, v),
            Action::ValueClear => states.value.clear_in(ctx, ns),
            Action::ListAdd(e) => states.list.add_in(ctx, ns, e),
            Action::ListAddAll(es) => states.list.add_all_in(ctx, ns, es),
            Action::ListUpdate(es) => states.list.update_in(ctx, ns, es),
            Action::ListClear => states.list.clear_in(ctx, ns),
            Action::ListMerge(sources) => states.list.merge_namespaces(ctx, ns, sources),
            Action::MapPut(k, v) => states.map.put_in(ctx, ns, k, v),
            Action::MapRemove(k) => states.map.remove_in(ctx, ns, k),
            Action::MapClear => states.map.clear_in(ctx, ns),
            Action::ReduceAdd(v) => states.reducing.add_in(ctx, ns, *v),
            Action::ReduceClear => states.reducing.clear_in(ctx, ns),
            Action::ReduceMerge(sources) => states.reducing.merge_namespaces(ctx, ns, sources),
            Action::AggAdd(v) => states.aggregating.add_in(ctx, ns, *v),
            Action::AggClear => states.aggregating.clear_in(ctx, ns),
            Action::AggMerge(sources) => states.aggregating.merge_namespaces(ctx, ns, sources),
        }
    }
}

/// What the five states should hold, as plain maps keyed by (key, namespace). Lists and maps
/// that become empty are removed, as an empty list or map reads as absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub value: BTreeMap<(u64, Ns), String>,
    pub list: BTreeMap<(u64, Ns), Vec<u32>>,
    pub map: BTreeMap<(u64, Ns), BTreeMap<String, u64>>,
    pub reducing: BTreeMap<(u64, Ns), i64>,
    pub aggregating: BTreeMap<(u64, Ns), (i64, u64)>,
    /// Every key ever written, so reads of cleared keys are checked too.
    pub touched: BTreeSet<u64>,
}

impl Model {
    pub fn apply(&mut self, op: &Op) {
        let at = (op.key, op.ns);
        self.touched.insert(op.key);
        let merge_sources = |sources: &[Ns]| -> Vec<(u64, Ns)> {
            sources
                .iter()
                .filter(|s| **s != op.ns)
                .map(|s| (op.key, *s))
                .collect()
        };
        match &op.action {
            Action::ValuePut(v) => {
                self.value.insert(at, v.clone());
            }
            Action::ValueClear => {
                self.value.remove(&at);
            }
            Action::ListAdd(e) => self.list.entry(at).or_default().push(*e),
            Action::ListAddAll(es) => {
                if !es.is_empty() {
                    self.list.entry(at).or_default().extend(es);
                }
            }
            Action::ListUpdate(es) => {
                if es.is_empty() {
                    self.list.remove(&at);
                } else {
                    self.list.insert(at, es.clone());
                }
            }
            Action::ListClear => {
                self.list.remove(&at);
            }
            Action::ListMerge(sources) => {
                for source in merge_sources(sources) {
                    if let Some(elements) = self.list.remove(&source) {
                        self.list.entry(at).or_default().extend(elements);
                    }
                }
            }
            Action::MapPut(k, v) => {
                self.map.entry(at).or_default().insert(k.clone(), *v);
            }
            Action::MapRemove(k) => {
                if let Some(m) = self.map.get_mut(&at) {
                    m.remove(k);
                    if m.is_empty() {
                        self.map.remove(&at);
                    }
                }
            }
            Action::MapClear => {
                self.map.remove(&at);
            }
            Action::ReduceAdd(v) => *self.reducing.entry(at).or_insert(0) += v,
            Action::ReduceClear => {
                self.reducing.remove(&at);
            }
            Action::ReduceMerge(sources) => {
                for source in merge_sources(sources) {
                    if let Some(v) = self.reducing.remove(&source) {
                        *self.reducing.entry(at).or_insert(0) += v;
                    }
                }
            }
            Action::AggAdd(v) => {
                let acc = self.aggregating.entry(at).or_insert((0, 0));
                *acc = Mean.add(*v, *acc);
            }
            Action::AggClear => {
                self.aggregating.remove(&at);
            }
            Action::AggMerge(sources) => {
                for source in merge_sources(sources) {
                    if let Some(acc) = self.aggregating.remove(&source) {
                        let merged = match self.aggregating.get(&at) {
                            Some(current) => Mean.merge(*current, acc),
                            None => acc,
                        };
                        self.aggregating.insert(at, merged);
                    }
                }
            }
        }
    }

    /// Number of (key, namespace) entries over all five states.
    pub fn entry_count(&self) -> usize {
        self.value.len()
            + self.list.len()
            + self.map.len()
            + self.reducing.len()
            + self.aggregating.len()
    }
}

fn keys_with<T>(
    map: &BTreeMap<(u64, Ns), T>,
    ns: Ns,
    owned: &impl Fn(u64) -> bool,
) -> BTreeSet<u64> {
    map.keys()
        .filter(|(k, n)| *n == ns && owned(*k))
        .map(|(k, _)| *k)
        .collect()
}

/// Checks that the backend behind `states`, owning `range`, holds exactly the part of `model`
/// whose keys fall in `range`: the same keys enumerated per state and namespace (each with its
/// right key group, none twice), the same value for every key the model ever touched, and
/// absence where the model has nothing.
pub fn assert_states_match(
    states: &AllStates,
    max: MaxParallelism,
    range: KeyGroupRange,
    model: &Model,
    what: &str,
) {
    let owned = |k: u64| range.contains(key_at(k, max).key_group());
    for ns in NAMESPACES {
        let at =
            |kind: &str| format!("{what}: {kind} state, namespace {ns}, subtask owning {range}");
        let enumerated = |keys: Result<Vec<KeyContext>>, kind: &str| {
            let keys = keys.unwrap_or_else(|e| panic!("{}: keys_in failed: {e}", at(kind)));
            enumerated_ids(keys, max, range, &at(kind))
        };
        let enumerations = [
            states.value.keys_in(&ns),
            states.list.keys_in(&ns),
            states.map.keys_in(&ns),
            states.reducing.keys_in(&ns),
            states.aggregating.keys_in(&ns),
        ];
        let expected = [
            keys_with(&model.value, ns, &owned),
            keys_with(&model.list, ns, &owned),
            keys_with(&model.map, ns, &owned),
            keys_with(&model.reducing, ns, &owned),
            keys_with(&model.aggregating, ns, &owned),
        ];
        let kinds = ["value", "list", "map", "reducing", "aggregating"];
        for ((kind, keys), expected) in kinds.into_iter().zip(enumerations).zip(expected) {
            assert_eq!(
                enumerated(keys, kind),
                expected,
                "{}: enumerated keys differ from the model",
                at(kind)
            );
        }

        for &k in model.touched.iter().filter(|k| owned(**k)) {
            let ctx = key_at(k, max);
            let e = (k, ns);
            assert_eq!(
                states.value.get_in(&ctx, &ns).unwrap(),
                model.value.get(&e).cloned(),
                "{}: key {k}",
                at("value")
            );
            assert_eq!(
                states.list.get_in(&ctx, &ns).unwrap(),
                model.list.get(&e).cloned(),
                "{}: key {k}",
                at("list")
            );
            let mut entries = states.map.entries_in(&ctx, &ns).unwrap();
            entries.sort();
            let expected: Vec<(String, u64)> = model
                .map
                .get(&e)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            assert_eq!(entries, expected, "{}: key {k}", at("map"));
            assert_eq!(
                states.map.is_empty_in(&ctx, &ns).unwrap(),
                expected.is_empty(),
                "{}: is_empty of key {k}",
                at("map")
            );
            assert_eq!(
                states.reducing.get_in(&ctx, &ns).unwrap(),
                model.reducing.get(&e).copied(),
                "{}: key {k}",
                at("reducing")
            );
            let acc = model.aggregating.get(&e).copied();
            assert_eq!(
                states.aggregating.accumulator_in(&ctx, &ns).unwrap(),
                acc,
                "{}: accumulator of key {k}",
                at("aggregating")
            );
            assert_eq!(
                states.aggregating.get_in(&ctx, &ns).unwrap(),
                acc.map(|a| Mean.get_result(&a)),
                "{}: result of key {k}",
                at("aggregating")
            );
        }
    }
}

/// An operator under test: its subtasks with the dataset's states bound on each, and routing
/// of keys to the subtask owning their key group.
pub struct Job<B> {
    pub max: MaxParallelism,
    pub subtasks: Vec<Subtask<B>>,
    pub states: Vec<AllStates>,
}

impl<B: StateBackend + 'static> Job<B> {
    /// Binds the dataset's states on every subtask.
    pub fn new(subtasks: Vec<Subtask<B>>) -> Result<Self> {
        let max = subtasks
            .first()
            .map(|s| s.backend.max_parallelism())
            .ok_or_else(|| flowstate_api::Error::Config("a job needs a subtask".into()))?;
        let states = subtasks
            .iter()
            .map(|s| AllStates::bind(s.keyed()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            max,
            subtasks,
            states,
        })
    }

    pub fn parallelism(&self) -> Parallelism {
        Parallelism::new(self.subtasks.len() as u32).expect("a job has at least one subtask")
    }

    /// The position of the subtask owning key `k`.
    pub fn owner_of(&self, k: u64) -> usize {
        let kg = key_at(k, self.max).key_group();
        operator_index_for_key_group(self.max, self.parallelism(), kg) as usize
    }

    /// Applies `op` at the subtask owning its key.
    pub fn apply(&self, op: &Op) -> Result<()> {
        let owner = self.owner_of(op.key);
        op.apply_to(&self.states[owner], &key_at(op.key, self.max))
    }

    /// Applies `count` random operations on keys `0..key_space` to the job and the model.
    pub fn run_random(&self, model: &mut Model, rng: &mut Rng, count: usize, key_space: u64) {
        for _ in 0..count {
            let op = Op::random(rng, key_space);
            self.apply(&op)
                .unwrap_or_else(|e| panic!("applying {op:?} failed: {e}"));
            model.apply(&op);
        }
    }

    /// Every subtask holds exactly the model's entries of its key groups (so every entry is
    /// held by exactly one subtask: nothing lost, nothing duplicated).
    pub fn assert_matches(&self, model: &Model, what: &str) {
        for (subtask, states) in self.subtasks.iter().zip(&self.states) {
            assert_states_match(
                states,
                self.max,
                subtask.backend.key_group_range(),
                model,
                &format!(
                    "{what} (subtask {} of {})",
                    subtask.index,
                    self.subtasks.len()
                ),
            );
        }
    }
}
