//! Key-group routing and a keyed stateful operator.
//!
//! [`key_group_exchange`] sends each record to the worker owning its key's key group, by
//! Flink's rule ([`operator_index_for_key_group`]), so every worker holds exactly the state of
//! its key-group range and a restore at another worker count finds every key where the
//! exchange sends it.
//!
//! [`keyed_stateful`] is the operator user logic runs in. It processes each epoch only once
//! the input frontier has passed it, epochs in order, so between two epochs the worker's
//! state is exactly "everything up to this epoch": the point an epoch-aligned checkpoint
//! captures. Errors from state access do not panic the worker: the first one is kept in an
//! [`ErrorSlot`] the driver checks between epochs, and the operator stops processing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use flowstate_api::key_groups::operator_index_for_key_group;
use flowstate_api::{KeyContext, MaxParallelism, Parallelism, SerdeCodec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

/// Where an operator keeps the first error it met, for the worker's driver to return.
#[derive(Clone, Default)]
pub struct ErrorSlot(Rc<RefCell<Option<flowstate_api::Error>>>);

impl ErrorSlot {
    /// Keeps `error` unless an earlier one is kept.
    pub fn set(&self, error: flowstate_api::Error) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(error);
        }
    }

    /// Whether an error is kept.
    pub fn is_set(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// The kept error, if any.
    pub fn take(&self) -> Option<flowstate_api::Error> {
        self.0.borrow_mut().take()
    }
}

/// Where keyed records go: the job's max parallelism and worker count.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KeyGroupRouting {
    /// The job's max parallelism: its number of key groups.
    pub max_parallelism: MaxParallelism,
    /// The number of workers (subtasks) the key groups are split over.
    pub parallelism: Parallelism,
}

impl KeyGroupRouting {
    /// The worker owning `key`'s key group.
    pub fn worker_for(&self, key: &KeyContext) -> u64 {
        u64::from(operator_index_for_key_group(
            self.max_parallelism,
            self.parallelism,
            key.key_group(),
        ))
    }
}

/// An exchange pact sending each record to the worker owning the key group of `key_of(record)`
/// (serialized with [`SerdeCodec`], as the state handles key it). A key that cannot be
/// serialized goes to worker 0, whose operator reports the error.
pub fn key_group_exchange<D, K, KF>(
    routing: KeyGroupRouting,
    key_of: KF,
) -> Exchange<D, impl FnMut(&D) -> u64 + 'static>
where
    D: ExchangeData,
    K: Serialize + DeserializeOwned + 'static,
    KF: Fn(&D) -> K + 'static,
{
    let codec = SerdeCodec::<K>::new();
    Exchange::new(move |record: &D| {
        KeyContext::for_key(&codec, &key_of(record), routing.max_parallelism)
            .map_or(0, |key| routing.worker_for(&key))
    })
}

/// A keyed stateful operator: records are routed by key group, then `logic` runs once per
/// record with the record's [`KeyContext`] (bind typed state handles to the worker's backend
/// and use them with it), epoch by epoch in epoch order, each epoch once it is complete.
/// Whenever the input frontier advances, `progress` runs with the first epoch not yet
/// complete (`u64::MAX` once the input is exhausted), after every earlier epoch's records:
/// the place to fire windows that end there. Both may push outputs.
pub fn keyed_stateful<'scope, D, K, O, KF, L, P>(
    stream: StreamVec<'scope, u64, D>,
    name: &str,
    routing: KeyGroupRouting,
    errors: ErrorSlot,
    key_of: KF,
    mut logic: L,
    mut progress: P,
) -> StreamVec<'scope, u64, O>
where
    D: ExchangeData,
    K: Serialize + DeserializeOwned + 'static,
    O: Clone + 'static,
    KF: Fn(&D) -> K + Clone + 'static,
    L: FnMut(&KeyContext, D, &mut Vec<O>) -> flowstate_api::Result<()> + 'static,
    P: FnMut(u64, &mut Vec<O>) -> flowstate_api::Result<()> + 'static,
{
    let pact = key_group_exchange(routing, key_of.clone());
    let codec = SerdeCodec::<K>::new();
    stream.unary_frontier::<CapacityContainerBuilder<Vec<O>>, _, _, _>(
        pact,
        name,
        move |initial, _info| {
            // Held at the first incomplete epoch: outputs of `progress` are emitted at it.
            let mut held = Some(initial);
            // Capabilities for the epochs holding records not processed yet.
            let mut stash: BTreeMap<u64, (Capability<u64>, Vec<D>)> = BTreeMap::new();
            let mut out: Vec<O> = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|time, data| {
                    let Some(capability) = time.retain_least(output.output_index()) else {
                        return;
                    };
                    let epoch = *capability.time();
                    let entry = stash
                        .entry(epoch)
                        .or_insert_with(|| (capability, Vec::new()));
                    entry.1.append(data);
                });
                let complete_before = frontier
                    .frontier()
                    .iter()
                    .copied()
                    .min()
                    .unwrap_or(u64::MAX);
                while let Some(entry) = stash.first_entry() {
                    if *entry.key() >= complete_before {
                        break; // this epoch may still receive records
                    }
                    let (capability, records) = entry.remove();
                    if errors.is_set() {
                        continue; // stopped: the driver returns the error
                    }
                    let result = records.into_iter().try_for_each(|record| {
                        let key =
                            KeyContext::for_key(&codec, &key_of(&record), routing.max_parallelism)?;
                        logic(&key, record, &mut out)
                    });
                    match result {
                        Ok(()) if !out.is_empty() => {
                            output.session(&capability).give_iterator(out.drain(..));
                        }
                        Ok(()) => {}
                        Err(error) => errors.set(error),
                    }
                }
                let Some(capability) = held.as_mut() else {
                    return;
                };
                if *capability.time() >= complete_before {
                    return;
                }
                if !errors.is_set() {
                    match progress(complete_before, &mut out) {
                        Ok(()) if !out.is_empty() => {
                            output.session(&*capability).give_iterator(out.drain(..));
                        }
                        Ok(()) => {}
                        Err(error) => errors.set(error),
                    }
                }
                if complete_before == u64::MAX {
                    held = None;
                } else {
                    capability.downgrade(&complete_before);
                }
            }
        },
    )
}
