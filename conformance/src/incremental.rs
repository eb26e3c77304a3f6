//! Incremental checkpoints and the checkpoint lifecycle: chains of incremental checkpoints
//! restored from every retained one (also rescaled), aborted checkpoints, retention deleting
//! exactly the unreferenced files (checked by listing the store), re-basing, a restart of the
//! registry, identical logical state from full and incremental restore, and how little an
//! incremental checkpoint uploads after a small change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flowstate_api::key_groups::operator_index_for_key_group;
use flowstate_api::lifecycle::CheckpointLifecycle;
use flowstate_api::typed::{
    ListState, ListStateDescriptor, MapState, MapStateDescriptor, ReducingState,
    ReducingStateDescriptor, ValueState, ValueStateDescriptor,
};
use flowstate_api::{
    CheckpointManifest, CheckpointStorage, KeyContext, KeyedStateBackend, KeyedStateHandle,
    MaxParallelism, SerdeCodec, SnapshotKind, StateBackend, StateBackendFactory,
};

use crate::fixtures::{max, open_lifecycle, parallelism as p, retained_paths, stored_paths};
use crate::harness::{
    abort_with_lifecycle, block_on, checkpoint_with_lifecycle, create_operator, restore_operator,
    Subtask,
};

/// The observable keyed state of the workload: per key, value / list / map / sum, in two
/// namespaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    values: BTreeMap<(u32, u8), u64>,
    lists: BTreeMap<(u32, u8), Vec<u32>>,
    maps: BTreeMap<(u32, u8), BTreeMap<u16, String>>,
    sums: BTreeMap<u32, u64>,
}

fn key_ctx(key: u32, max: MaxParallelism) -> KeyContext {
    KeyContext::for_key(&SerdeCodec::<u32>::new(), &key, max).expect("u32 keys encode")
}

/// The workload's states on the subtask owning `key`.
fn handles_for<B: StateBackend + 'static>(subtasks: &[Subtask<B>], key: &KeyContext) -> Handles {
    let max = subtasks[0].backend.max_parallelism();
    let index = operator_index_for_key_group(max, p(subtasks.len() as u32), key.key_group());
    Handles::bind(subtasks[index as usize].keyed())
}

/// The workload's four states, bound to one backend.
struct Handles {
    value: ValueState<u64, u8>,
    list: ListState<u32, u8>,
    map: MapState<u16, String, u8>,
    sum: ReducingState<u64>,
}

impl Handles {
    fn bind(backend: Arc<dyn KeyedStateBackend>) -> Self {
        Self {
            value: ValueStateDescriptor::<u64>::new("inc-value")
                .with_namespace::<u8>()
                .bind(backend.clone())
                .expect("bind value"),
            list: ListStateDescriptor::<u32>::new("inc-list")
                .with_namespace::<u8>()
                .bind(backend.clone())
                .expect("bind list"),
            map: MapStateDescriptor::<u16, String>::new("inc-map")
                .with_namespace::<u8>()
                .bind(backend.clone())
                .expect("bind map"),
            sum: ReducingStateDescriptor::<u64>::new("inc-sum", |a, b| a + b)
                .bind(backend)
                .expect("bind reducing"),
        }
    }
}

/// Applies one deterministic round of changes to `keys` (the round number varies them) to the
/// subtasks and the model.
fn apply_round<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    model: &mut Model,
    round: u32,
    keys: impl IntoIterator<Item = u32>,
) {
    let max = subtasks[0].backend.max_parallelism();
    for key in keys {
        let ctx = key_ctx(key, max);
        let ns = ((key + round) % 2) as u8;
        let Handles {
            value,
            list,
            map,
            sum,
        } = handles_for(subtasks, &ctx);
        match (key + round) % 5 {
            0 => {
                value.clear_in(&ctx, &ns).expect("clear");
                model.values.remove(&(key, ns));
                list.clear_in(&ctx, &ns).expect("clear");
                model.lists.remove(&(key, ns));
            }
            1 => {
                let user_key = (round % 7) as u16;
                map.remove_in(&ctx, &ns, &user_key).expect("map remove");
                if let Some(m) = model.maps.get_mut(&(key, ns)) {
                    m.remove(&user_key);
                    if m.is_empty() {
                        model.maps.remove(&(key, ns));
                    }
                }
            }
            _ => {
                let v = (key as u64) * 1000 + round as u64;
                value.update_in(&ctx, &ns, &v).expect("update");
                model.values.insert((key, ns), v);
                list.add_in(&ctx, &ns, &round).expect("list add");
                model.lists.entry((key, ns)).or_default().push(round);
                let user_key = (round % 7) as u16;
                let text = format!("k{key}r{round}");
                map.put_in(&ctx, &ns, &user_key, &text).expect("map put");
                model
                    .maps
                    .entry((key, ns))
                    .or_default()
                    .insert(user_key, text);
            }
        }
        sum.add(&ctx, round as u64 + 1).expect("reducing add");
        *model.sums.entry(key).or_default() += round as u64 + 1;
    }
}

/// Reads back everything the workload can have written for `keys`, plus the enumerated keys.
fn observe<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    keys: impl IntoIterator<Item = u32>,
) -> Model {
    let max = subtasks[0].backend.max_parallelism();
    let mut model = Model::default();
    for key in keys {
        let ctx = key_ctx(key, max);
        let h = handles_for(subtasks, &ctx);
        for ns in [0u8, 1] {
            if let Some(v) = h.value.get_in(&ctx, &ns).expect("get") {
                model.values.insert((key, ns), v);
            }
            if let Some(l) = h.list.get_in(&ctx, &ns).expect("list get") {
                model.lists.insert((key, ns), l);
            }
            let entries: BTreeMap<u16, String> = h
                .map
                .entries_in(&ctx, &ns)
                .expect("entries")
                .into_iter()
                .collect();
            if !entries.is_empty() {
                model.maps.insert((key, ns), entries);
            }
        }
        if let Some(s) = h.sum.get(&ctx).expect("sum get") {
            model.sums.insert(key, s);
        }
    }
    model
}

/// Every key any subtask enumerates for the value state, per namespace: nothing duplicated.
fn enumerated_value_keys<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
) -> BTreeSet<(u32, u8)> {
    let codec = SerdeCodec::<u32>::new();
    let mut out = BTreeSet::new();
    for s in subtasks {
        let value = Handles::bind(s.keyed()).value;
        for ns in [0u8, 1] {
            for k in value.keys_in(&ns).expect("keys") {
                let key: u32 = k.decode_key(&codec).expect("decode key");
                assert!(
                    out.insert((key, ns)),
                    "key {key} enumerated twice after restore"
                );
            }
        }
    }
    out
}

fn assert_restores_to<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    parallelism: u32,
    expected: &Model,
    keys: std::ops::Range<u32>,
) {
    let restored = restore_operator(factory, storage, manifest, p(parallelism))
        .expect("restore from an incremental checkpoint");
    let seen = observe(&restored, keys);
    assert_eq!(
        &seen, expected,
        "checkpoint {} restored at parallelism {parallelism} differs from the state it captured",
        manifest.checkpoint_id
    );
    let expected_keys: BTreeSet<(u32, u8)> = expected.values.keys().copied().collect();
    assert_eq!(enumerated_value_keys(&restored), expected_keys);
}

const KEYS: std::ops::Range<u32> = 0..300;

/// A fresh case: in-memory storage, a lifecycle on it keeping `retained` checkpoints, an
/// operator of `parallelism` subtasks, and an empty model.
fn start<F: StateBackendFactory>(
    factory: &F,
    retained: usize,
    parallelism: u32,
) -> (
    CheckpointStorage,
    CheckpointLifecycle,
    Vec<Subtask<F::Backend>>,
    Model,
) {
    let storage = CheckpointStorage::in_memory();
    let lifecycle = open_lifecycle(&storage, retained);
    let subtasks = create_operator(factory, max(), p(parallelism)).expect("create");
    (storage, lifecycle, subtasks, Model::default())
}

/// Every key in round 0, then the keys `k` with `k % every == round`.
fn spread(every: u32) -> impl Fn(u32) -> Vec<u32> {
    move |round| KEYS.filter(|k| round == 0 || k % every == round).collect()
}

/// Runs `rounds`, each applying a round of changes to `keys(round)` and taking an incremental
/// checkpoint; returns every checkpoint with the model it captured.
fn incremental_rounds<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    lifecycle: &mut CheckpointLifecycle,
    model: &mut Model,
    rounds: std::ops::Range<u32>,
    keys: impl Fn(u32) -> Vec<u32>,
) -> Vec<(CheckpointManifest, Model)> {
    rounds
        .map(|round| {
            apply_round(subtasks, model, round, keys(round));
            let manifest =
                checkpoint_with_lifecycle(subtasks, lifecycle, SnapshotKind::Incremental)
                    .unwrap_or_else(|e| panic!("incremental checkpoint of round {round}: {e}"));
            (manifest, model.clone())
        })
        .collect()
}

/// A chain of incremental checkpoints: every retained one restores exactly, at the same
/// parallelism and rescaled (2 -> 3 and 2 -> 1).
pub fn chain_restores_from_every_retained_checkpoint<F: StateBackendFactory>(factory: &F) {
    let (storage, mut lifecycle, subtasks, mut model) = start(factory, 3, 2);
    // round 0 writes every key, later rounds a tenth of them
    let taken = incremental_rounds(&subtasks, &mut lifecycle, &mut model, 0..6, spread(10));
    let retained = lifecycle.completed();
    assert_eq!(retained.len(), 3);
    for (manifest, expected) in taken
        .iter()
        .filter(|(m, _)| retained.contains(&m.checkpoint_id))
    {
        for parallelism in [2, 3, 1] {
            assert_restores_to(factory, &storage, manifest, parallelism, expected, KEYS);
        }
    }
}

/// An aborted checkpoint never becomes a base: the next checkpoint still holds the changes
/// made before the aborted one.
pub fn aborted_checkpoints_are_never_bases<F: StateBackendFactory>(factory: &F) {
    let (storage, mut lifecycle, subtasks, mut model) = start(factory, 3, 2);
    apply_round(&subtasks, &mut model, 0, KEYS);
    checkpoint_with_lifecycle(&subtasks, &mut lifecycle, SnapshotKind::Incremental).expect("first");
    apply_round(&subtasks, &mut model, 1, KEYS.filter(|k| k % 3 == 0));
    let aborted = abort_with_lifecycle(&subtasks, &mut lifecycle, SnapshotKind::Incremental)
        .expect("aborted checkpoint");
    apply_round(&subtasks, &mut model, 2, KEYS.filter(|k| k % 7 == 0));
    let manifest = checkpoint_with_lifecycle(&subtasks, &mut lifecycle, SnapshotKind::Incremental)
        .expect("after abort");
    assert!(manifest.checkpoint_id > aborted);
    let visible = block_on(storage.list_checkpoints()).expect("list");
    assert!(
        !visible.contains(&aborted),
        "an aborted checkpoint must never be visible"
    );
    let aborted_dir = CheckpointStorage::checkpoint_dir(aborted);
    let leftovers: Vec<_> = block_on(storage.list(&aborted_dir)).expect("list");
    assert!(
        leftovers.is_empty(),
        "aborted checkpoint left files: {leftovers:?}"
    );
    assert_restores_to(factory, &storage, &manifest, 2, &model, KEYS);
}

/// After many checkpoints under retention, the store holds exactly the files the retained
/// manifests reference (plus the manifests and the registry copy).
pub fn retention_deletes_exactly_unreferenced_files<F: StateBackendFactory>(factory: &F) {
    let (storage, mut lifecycle, subtasks, mut model) = start(factory, 2, 2);
    for round in 0..12u32 {
        apply_round(&subtasks, &mut model, round, spread(12)(round));
        let kind = if round == 6 {
            SnapshotKind::Full
        } else {
            SnapshotKind::Incremental
        };
        checkpoint_with_lifecycle(&subtasks, &mut lifecycle, kind).expect("checkpoint");
        assert_eq!(
            stored_paths(&storage),
            retained_paths(&lifecycle),
            "after checkpoint round {round}"
        );
    }
    let latest = lifecycle.latest().expect("a completed checkpoint").clone();
    assert_restores_to(factory, &storage, &latest, 3, &model, KEYS);
}

/// Changelog chains are re-based: over many small incremental checkpoints the base changes
/// and no chain grows without bound. (Backends with shared immutable files pass trivially:
/// their handles have no chain.)
pub fn chains_are_rebased<F: StateBackendFactory>(factory: &F) {
    let (storage, mut lifecycle, subtasks, mut model) = start(factory, 3, 1);
    let mut bases = BTreeSet::new();
    let mut longest = 0;
    for (manifest, _) in
        incremental_rounds(&subtasks, &mut lifecycle, &mut model, 0..40, spread(40))
    {
        for handle in manifest.keyed_handles() {
            if let KeyedStateHandle::Changelog { base, deltas, .. } = handle {
                bases.insert(base.path.clone());
                longest = longest.max(deltas.len());
            }
        }
    }
    if !bases.is_empty() {
        assert!(
            bases.len() >= 2,
            "40 incremental checkpoints never re-based"
        );
        assert!(
            longest < 40,
            "the delta chain grew without bound ({longest} deltas)"
        );
    }
    let latest = lifecycle.latest().expect("completed").clone();
    assert_restores_to(factory, &storage, &latest, 2, &model, KEYS);
}

/// The registry is rebuilt from the manifests after a restart of the coordinator: retention
/// goes on deleting exactly what no retained checkpoint needs, and the backends' incremental
/// checkpoints (still based on files registered before the restart) keep restoring.
pub fn registry_survives_restart<F: StateBackendFactory>(factory: &F) {
    let (storage, mut lifecycle, subtasks, mut model) = start(factory, 2, 2);
    incremental_rounds(&subtasks, &mut lifecycle, &mut model, 0..3, spread(5));
    let before = lifecycle.registry().files.clone();
    drop(lifecycle);
    let mut reopened = open_lifecycle(&storage, 2);
    assert_eq!(
        reopened.registry().files,
        before,
        "registry rebuilt from manifests"
    );
    incremental_rounds(&subtasks, &mut reopened, &mut model, 3..6, |round| {
        KEYS.filter(|k| k % 5 == round % 5).collect()
    });
    let latest = reopened.latest().expect("completed").clone();
    assert_restores_to(factory, &storage, &latest, 2, &model, KEYS);
    assert_restores_to(factory, &storage, &latest, 1, &model, KEYS);
}

/// A full and an incremental checkpoint of the same state restore to identical logical state.
pub fn full_and_incremental_restore_agree<F: StateBackendFactory>(factory: &F) {
    let (storage, mut lifecycle, subtasks, mut model) = start(factory, 10, 3);
    incremental_rounds(&subtasks, &mut lifecycle, &mut model, 0..4, spread(4));
    let incremental = lifecycle.latest().expect("completed").clone();
    let full =
        checkpoint_with_lifecycle(&subtasks, &mut lifecycle, SnapshotKind::Full).expect("full");
    for parallelism in [3, 2] {
        let a = restore_operator(factory, &storage, &incremental, p(parallelism)).expect("restore");
        let b = restore_operator(factory, &storage, &full, p(parallelism)).expect("restore");
        assert_eq!(observe(&a, KEYS), observe(&b, KEYS));
        assert_eq!(enumerated_value_keys(&a), enumerated_value_keys(&b));
    }
    assert_eq!(observe(&subtasks, KEYS), model);
}

/// After changing 1% of 100,000 keys, an incremental checkpoint uploads under 5% of the bytes
/// of a full checkpoint of the same state.
pub fn small_change_uploads_little<F: StateBackendFactory>(factory: &F) {
    const N: u32 = 100_000;
    let (storage, mut lifecycle, subtasks, _) = start(factory, 3, 1);
    let backend = subtasks[0].keyed();
    let value = ValueStateDescriptor::<u64>::new("bytes-value")
        .bind(backend)
        .expect("bind");
    let max = max();
    let contexts: Vec<KeyContext> = (0..N).map(|k| key_ctx(k, max)).collect();
    for (k, ctx) in contexts.iter().enumerate() {
        value.update(ctx, &(k as u64 * 7)).expect("update");
    }
    let full =
        checkpoint_with_lifecycle(&subtasks, &mut lifecycle, SnapshotKind::Full).expect("full");
    let full_bytes: u64 = full.files().iter().map(|f| f.size).sum();
    checkpoint_with_lifecycle(&subtasks, &mut lifecycle, SnapshotKind::Incremental).expect("base");
    let before: BTreeMap<String, u64> = block_on(storage.list(""))
        .expect("list")
        .into_iter()
        .collect();
    for ctx in contexts.iter().step_by(100) {
        value.update(ctx, &1).expect("update");
    }
    let incremental =
        checkpoint_with_lifecycle(&subtasks, &mut lifecycle, SnapshotKind::Incremental)
            .expect("incremental");
    let uploaded: u64 = incremental
        .files()
        .iter()
        .filter(|f| !before.contains_key(&f.path))
        .map(|f| f.size)
        .sum();
    assert!(
        (uploaded as f64) < full_bytes as f64 * 0.05,
        "incremental checkpoint after changing 1% of keys uploaded {uploaded} bytes, full is {full_bytes}"
    );
    let restored = restore_operator(factory, &storage, &incremental, p(1)).expect("restore");
    let restored_value = ValueStateDescriptor::<u64>::new("bytes-value")
        .bind(restored[0].keyed())
        .expect("bind");
    for (k, ctx) in contexts.iter().enumerate().step_by(37) {
        let expected = if k % 100 == 0 { 1 } else { k as u64 * 7 };
        assert_eq!(restored_value.get(ctx).expect("get"), Some(expected));
    }
}
