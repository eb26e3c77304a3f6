//! Every workload family behind one type, so that a harness can time any operation of any
//! family on any store, on one thread or several: [`Family`], [`Op`] and [`Store`].

use std::sync::Arc;
use std::time::Duration;

use crate::error::{BenchError, Result};
use crate::list::{check_lists, time_list_appends, time_list_gets, FlowstateList, ListStore};
use crate::map::{
    check_maps, time_map_entries, time_map_gets, time_map_puts, FlowstateMap, MapStore,
};
use crate::reducing::{check_reduced, time_reducing_adds, FlowstateReducing, ReducingStore};
use crate::subject::{BackendUnderTest, Layer};
use crate::value::{
    check_preloaded, time_gets, time_inserts, time_updates, FlowstateValue, ValueStore,
};
use crate::workload::{KeyWalk, Part, Workload};

/// A family of workloads: one kind of state and its operations.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Value,
    List,
    Map,
    Reducing,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Value, Family::List, Family::Map, Family::Reducing];

    pub fn name(self) -> &'static str {
        match self {
            Family::Value => "value",
            Family::List => "list",
            Family::Map => "map",
            Family::Reducing => "reducing",
        }
    }

    /// The operations measured on this family, in report order.
    pub fn ops(self) -> &'static [Op] {
        match self {
            Family::Value => &[Op::ValueGet, Op::ValueUpdate, Op::ValueAddNewKey],
            Family::List => &[Op::ListAppend, Op::ListGet],
            Family::Map => &[Op::MapGet, Op::MapPut, Op::MapEntries],
            Family::Reducing => &[Op::ReducingAdd],
        }
    }
}

/// One measured operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    ValueGet,
    ValueUpdate,
    ValueAddNewKey,
    ListAppend,
    ListGet,
    MapGet,
    MapPut,
    MapEntries,
    ReducingAdd,
}

impl Op {
    /// The name reports and criterion groups use (`value_get`, `list_append`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::ValueGet => "value_get",
            Op::ValueUpdate => "value_update",
            Op::ValueAddNewKey => "value_add_new_key",
            Op::ListAppend => "list_append",
            Op::ListGet => "list_get",
            Op::MapGet => "map_get",
            Op::MapPut => "map_put",
            Op::MapEntries => "map_entries",
            Op::ReducingAdd => "reducing_add",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Op::ValueGet | Op::ValueUpdate | Op::ValueAddNewKey => Family::Value,
            Op::ListAppend | Op::ListGet => Family::List,
            Op::MapGet | Op::MapPut | Op::MapEntries => Family::Map,
            Op::ReducingAdd => Family::Reducing,
        }
    }
}

/// A store of any family: a flowstate backend through one layer, or a raw engine.
pub enum Store {
    Value(Box<dyn ValueStore>),
    List(Box<dyn ListStore>),
    Map(Box<dyn MapStore>),
    Reducing(Box<dyn ReducingStore>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store").field(&self.name()).finish()
    }
}

impl Store {
    pub fn family(&self) -> Family {
        match self {
            Store::Value(_) => Family::Value,
            Store::List(_) => Family::List,
            Store::Map(_) => Family::Map,
            Store::Reducing(_) => Family::Reducing,
        }
    }

    /// What the reports call it (`flowstate_heap_typed`, `raw_heed`, ...).
    pub fn name(&self) -> &str {
        match self {
            Store::Value(s) => s.name(),
            Store::List(s) => s.name(),
            Store::Map(s) => s.name(),
            Store::Reducing(s) => s.name(),
        }
    }

    /// Another handle on the same data, for another thread.
    pub fn fork(&self) -> Result<Store> {
        Ok(match self {
            Store::Value(s) => Store::Value(s.fork()?),
            Store::List(s) => Store::List(s.fork()?),
            Store::Map(s) => Store::Map(s.fork()?),
            Store::Reducing(s) => Store::Reducing(s.fork()?),
        })
    }

    /// Times `ops` operations `op` on the keys of `part` (a walk from its start; for
    /// add-new-key, its fresh keys; list appends go in chunks of as many keys as the part has
    /// fresh keys). Only the operations are timed, not the checks and clean-ups around them.
    pub fn time(&mut self, op: Op, part: &Part, ops: u64) -> Result<Duration> {
        self.time_walk(op, &mut part.walk(), part.fresh(), ops)
    }

    /// [`Store::time`] going on with `walk` (criterion calls a benchmark many times and each
    /// call should visit new keys) and inserting the fresh keys `fresh`.
    pub fn time_walk(
        &mut self,
        op: Op,
        walk: &mut KeyWalk,
        fresh: &[usize],
        ops: u64,
    ) -> Result<Duration> {
        match (self, op) {
            (Store::Value(s), Op::ValueGet) => time_gets(s.as_mut(), walk, ops),
            (Store::Value(s), Op::ValueUpdate) => time_updates(s.as_mut(), walk, ops),
            (Store::Value(s), Op::ValueAddNewKey) => time_inserts(s.as_mut(), ops, fresh),
            (Store::List(s), Op::ListAppend) => {
                time_list_appends(s.as_mut(), walk, ops, fresh.len())
            }
            (Store::List(s), Op::ListGet) => time_list_gets(s.as_mut(), walk, ops),
            (Store::Map(s), Op::MapGet) => time_map_gets(s.as_mut(), walk, ops),
            (Store::Map(s), Op::MapPut) => time_map_puts(s.as_mut(), walk, ops),
            (Store::Map(s), Op::MapEntries) => time_map_entries(s.as_mut(), walk, ops),
            (Store::Reducing(s), Op::ReducingAdd) => time_reducing_adds(s.as_mut(), walk, ops),
            (store, op) => Err(BenchError::Config(format!(
                "{} is a {} store: it cannot run {}",
                store.name(),
                store.family().name(),
                op.name()
            ))),
        }
    }

    /// Checks that the store holds what the workload wrote (see the family's check).
    pub fn check(&mut self, workload: &Workload) -> Result<()> {
        match self {
            Store::Value(s) => check_preloaded(s.as_mut(), workload),
            Store::List(s) => check_lists(s.as_mut(), workload),
            Store::Map(s) => check_maps(s.as_mut(), workload),
            Store::Reducing(s) => check_reduced(s.as_mut(), workload),
        }
    }
}

/// Preloads `family`'s state into `under_test`; returns our typed layer and our byte layer
/// on it (two handles on one backend).
pub fn flowstate_layers(
    family: Family,
    under_test: BackendUnderTest,
    workload: Arc<Workload>,
) -> Result<[Store; 2]> {
    Ok(match family {
        Family::Value => {
            let typed = FlowstateValue::preload(under_test, workload)?;
            let bytes = typed.with_layer(Layer::Bytes);
            [Store::Value(Box::new(typed)), Store::Value(Box::new(bytes))]
        }
        Family::List => {
            let typed = FlowstateList::preload(under_test, workload)?;
            let bytes = typed.with_layer(Layer::Bytes);
            [Store::List(Box::new(typed)), Store::List(Box::new(bytes))]
        }
        Family::Map => {
            let typed = FlowstateMap::preload(under_test, workload)?;
            let bytes = typed.with_layer(Layer::Bytes);
            [Store::Map(Box::new(typed)), Store::Map(Box::new(bytes))]
        }
        Family::Reducing => {
            let typed = FlowstateReducing::preload(under_test, workload)?;
            let bytes = typed.with_layer(Layer::Bytes);
            [
                Store::Reducing(Box::new(typed)),
                Store::Reducing(Box::new(bytes)),
            ]
        }
    })
}

/// Runs every family on our typed layer, our byte layer and the raw baseline (fresh stores
/// each time) and checks that ours and the baseline behave alike.
#[cfg(test)]
pub(crate) fn assert_families_match(
    workload: &Arc<Workload>,
    open: impl Fn() -> Result<BackendUnderTest>,
    raw: impl Fn(Family) -> Result<Store>,
) {
    for family in Family::ALL {
        for layer in 0..2 {
            let layers = flowstate_layers(family, open().unwrap(), workload.clone()).unwrap();
            let [ours, _] = if layer == 0 {
                layers
            } else {
                let [typed, bytes] = layers;
                [bytes, typed]
            };
            match (ours, raw(family).unwrap()) {
                (Store::Value(mut ours), Store::Value(mut raw)) => {
                    crate::value::assert_same_behaviour(ours.as_mut(), raw.as_mut(), workload)
                }
                (Store::List(mut ours), Store::List(mut raw)) => {
                    crate::list::assert_same_list_behaviour(ours.as_mut(), raw.as_mut(), workload)
                }
                (Store::Map(mut ours), Store::Map(mut raw)) => {
                    crate::map::assert_same_map_behaviour(ours.as_mut(), raw.as_mut(), workload)
                }
                (Store::Reducing(mut ours), Store::Reducing(mut raw)) => {
                    crate::reducing::assert_same_reducing_behaviour(
                        ours.as_mut(),
                        raw.as_mut(),
                        workload,
                    )
                }
                (ours, raw) => panic!(
                    "{} and {} are of different families",
                    ours.name(),
                    raw.name()
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_belongs_to_its_family_and_others_refuse_it() {
        let workload = Workload::new(2_000, 1_000).unwrap();
        let max = workload.max_parallelism();
        for family in Family::ALL {
            assert!(family.ops().iter().all(|op| op.family() == family));
            let [mut typed, mut bytes] = flowstate_layers(
                family,
                crate::heap_backend::open(max).unwrap(),
                workload.clone(),
            )
            .unwrap();
            assert_eq!(typed.name(), "flowstate_heap_typed");
            assert_eq!(bytes.name(), "flowstate_heap_bytes");
            let whole = workload.whole();
            for &op in family.ops() {
                for store in [&mut typed, &mut bytes] {
                    store.time(op, &whole, 3_000).unwrap();
                    store.check(&workload).unwrap();
                }
            }
            let other = Family::ALL.into_iter().find(|f| *f != family).unwrap();
            let err = typed.time(other.ops()[0], &whole, 1).unwrap_err();
            assert!(err.to_string().contains("cannot run"), "{err}");
        }
    }
}
