//! The states under test: one of every kind, their descriptors, and the typed handles of one
//! subtask with the per-kind dispatch the run needs.

use flowstate_api::typed::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    ValueState, ValueStateDescriptor,
};
use flowstate_api::{KeyContext, StateBackend};
use serde::{Deserialize, Serialize};

use super::ops::StateSel;
use super::Namespace;
use crate::harness::Subtask;

/// Sum and count: the accumulator of the mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Mean {
    pub(super) sum: u64,
    pub(super) count: u64,
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

pub(super) struct Descriptors {
    pub(super) value: ValueStateDescriptor<u64, Namespace>,
    pub(super) list: ListStateDescriptor<u32, Namespace>,
    pub(super) map: MapStateDescriptor<u8, u32, Namespace>,
    pub(super) sum: ReducingStateDescriptor<i64, Namespace>,
    pub(super) mean: AggregatingStateDescriptor<u32, Mean, u64, Namespace>,
}

impl Descriptors {
    pub(super) fn new() -> Self {
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
pub(super) struct Handles {
    pub(super) value: ValueState<u64, Namespace>,
    pub(super) list: ListState<u32, Namespace>,
    pub(super) map: MapState<u8, u32, Namespace>,
    pub(super) sum: ReducingState<i64, Namespace>,
    pub(super) mean: AggregatingState<u32, Mean, u64, Namespace>,
}

impl Handles {
    pub(super) fn bind<B: StateBackend + 'static>(
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

    pub(super) fn keys_in(
        &self,
        state: StateSel,
        ns: Namespace,
    ) -> flowstate_api::Result<Vec<KeyContext>> {
        match state {
            StateSel::Value => self.value.keys_in(&ns),
            StateSel::List => self.list.keys_in(&ns),
            StateSel::Map => self.map.keys_in(&ns),
            StateSel::Sum => self.sum.keys_in(&ns),
            StateSel::Mean => self.mean.keys_in(&ns),
        }
    }

    pub(super) fn clear(
        &self,
        state: StateSel,
        key: &KeyContext,
        ns: Namespace,
    ) -> flowstate_api::Result<()> {
        match state {
            StateSel::Value => self.value.clear_in(key, &ns),
            StateSel::List => self.list.clear_in(key, &ns),
            StateSel::Map => self.map.clear_in(key, &ns),
            StateSel::Sum => self.sum.clear_in(key, &ns),
            StateSel::Mean => self.mean.clear_in(key, &ns),
        }
    }

    pub(super) fn clear_every_key(
        &self,
        state: StateSel,
        ns: Namespace,
    ) -> flowstate_api::Result<()> {
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
