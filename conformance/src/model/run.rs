//! Running a case: one operator under test beside its model, every step applied to both and
//! compared (per key after a write, everything after operator-wide steps).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use flowstate_api::key_groups::{key_group_for_key_bytes, operator_index_for_key_group};
use flowstate_api::lifecycle::{CheckpointLifecycle, RetentionPolicy};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, KeyContext, KeyedStateBackend,
    MaxParallelism, Parallelism, SerdeCodec, StateBackend, StateBackendFactory,
};

use super::expected::{other_namespace, Model};
use super::ops::Op::*;
use super::ops::{Case, Coordinator, Mergeable, Op, StateSel};
use super::states::{Descriptors, Handles};
use super::{Namespace, KEYS, NAMESPACES, USER_KEYS};
use crate::harness::{self, CapturedSubtask, Subtask};

/// Why a case failed, with the step it failed at.
pub(super) type Failure = String;

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
pub(super) fn run_case<F: StateBackendFactory>(factory: &F, case: &Case) -> Result<(), Failure> {
    let mut run = Run::start(factory, case)?;
    for (i, op) in case.ops.iter().enumerate() {
        run.step(op)
            .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
    }
    run.check_all().map_err(|e| format!("at the end: {e}"))
}
