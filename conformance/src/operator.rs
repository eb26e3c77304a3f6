//! Operator state (list state with even-split or union redistribution, broadcast state)
//! checkpointed beside the backend's keyed state and restored across rescales per
//! `docs/key-groups.md`. Operator state is implemented once in `flowstate_api::operator`; these
//! cases check it end to end through the harness (one operator-state file per subtask, keyed
//! and operator state restored together) and that one name cannot be registered in two modes.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate_api::{
    CheckpointId, CheckpointStorage, Error, OperatorStateStore, Redistribution, SnapshotKind,
    StateBackendFactory,
};

use crate::dataset::{Job, Model};
use crate::fixtures::{max_parallelism, parallelism, Rng};
use crate::harness::{checkpoint, create_operator, restore_operator, Subtask};

/// Per new subtask, per state name: the elements even-split redistribution gives it, computed
/// from the rule in `docs/key-groups.md` independently of the implementation under test.
fn even_split_expected(
    old: &BTreeMap<String, Vec<Vec<u64>>>,
    n: usize,
) -> Vec<BTreeMap<String, Vec<u64>>> {
    let mut out = vec![BTreeMap::new(); n];
    let mut start = 0usize;
    for (name, lists) in old {
        let all: Vec<u64> = lists.concat();
        let (base, rem) = (all.len() / n, all.len() % n);
        let mut offset = 0;
        for step in 0..n {
            let target = (start + step) % n;
            let len = base + usize::from(step < rem);
            out[target].insert(name.clone(), all[offset..offset + len].to_vec());
            offset += len;
        }
        start = (start + rem) % n;
    }
    out
}

fn list_contents<B>(
    subtasks: &[Subtask<B>],
    names: &[&str],
    mode: Redistribution,
) -> Vec<BTreeMap<String, Vec<u64>>> {
    subtasks
        .iter()
        .map(|s| {
            names
                .iter()
                .map(|name| {
                    let state = s.operator.list_state::<u64>(name, mode).unwrap();
                    (name.to_string(), state.get().unwrap())
                })
                .collect()
        })
        .collect()
}

/// Even-split list state across 3 -> 5 -> 2 -> 1 -> 4, with three states of different sizes,
/// a subtask without any operator state, and writes between rescales: each new subtask gets
/// exactly the contiguous run the rule assigns (state names ascending, rotating start), so
/// nothing is lost or duplicated and order is kept. Keyed state rides along unharmed.
pub fn even_split_list_state<F: StateBackendFactory>(factory: &F) {
    let storage = CheckpointStorage::in_memory();
    let names = ["a-offsets", "b-offsets", "c-offsets"];
    let subtasks = create_operator(factory, max_parallelism(), parallelism(3)).unwrap();
    let mut next = 0u64;
    let mut fill = |subtasks: &[Subtask<F::Backend>], skip: Option<usize>| {
        for (i, s) in subtasks.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            for (j, name) in names.iter().enumerate() {
                let state = s
                    .operator
                    .list_state::<u64>(name, Redistribution::EvenSplit)
                    .unwrap();
                for _ in 0..(i + 2 * j + 1) {
                    state.add(&next).unwrap();
                    next += 1;
                }
            }
        }
    };
    // Subtask 1 holds no operator state at all: it writes no operator file.
    fill(&subtasks, Some(1));
    let mut job = Job::new(subtasks).unwrap();
    let mut model = Model::default();
    let mut rng = Rng::new(83);
    job.run_random(&mut model, &mut rng, 600, 400);
    let mut id = 1;
    for to in [5usize, 2, 1, 4] {
        let manifest = checkpoint(
            &job.subtasks,
            &storage,
            CheckpointId(id),
            SnapshotKind::Full,
        )
        .unwrap();
        id += 1;
        let files = manifest.operator_files();
        if id == 2 {
            assert!(
                files[1].is_none(),
                "a subtask without operator state writes no operator file"
            );
        }
        let before = list_contents(&job.subtasks, &names, Redistribution::EvenSplit);
        let mut old: BTreeMap<String, Vec<Vec<u64>>> = BTreeMap::new();
        for subtask in &before {
            for (name, elements) in subtask {
                old.entry(name.clone()).or_default().push(elements.clone());
            }
        }
        let restored =
            restore_operator(factory, &storage, &manifest, parallelism(to as u32)).unwrap();
        let after = list_contents(&restored, &names, Redistribution::EvenSplit);
        assert_eq!(
            after,
            even_split_expected(&old, to),
            "even-split redistribution {} -> {to}",
            before.len()
        );
        let mut all_before: Vec<u64> = old.values().flatten().flatten().copied().collect();
        let mut all_after: Vec<u64> = after
            .iter()
            .flat_map(|m| m.values().flatten().copied())
            .collect();
        all_before.sort_unstable();
        all_after.sort_unstable();
        assert_eq!(all_before, all_after, "nothing lost, nothing duplicated");
        job = Job::new(restored).unwrap();
        job.assert_matches(
            &model,
            &format!(
                "keyed state beside operator state, {} -> {to}",
                before.len()
            ),
        );
        fill(&job.subtasks, None);
        job.run_random(&mut model, &mut rng, 200, 400);
    }
}

/// Union list state across 3 -> 2 -> 5 -> 5: every new subtask gets every element of every
/// old subtask, in old-subtask order, at any parallelism including an unchanged one.
pub fn union_list_state<F: StateBackendFactory>(factory: &F) {
    let storage = CheckpointStorage::in_memory();
    let mut subtasks = create_operator(factory, max_parallelism(), parallelism(3)).unwrap();
    let mut next = 0u64;
    for (id, to) in (1u64..).zip([2u32, 5, 5]) {
        for s in &subtasks {
            let state = s
                .operator
                .list_state::<u64>("union", Redistribution::Union)
                .unwrap();
            for _ in 0..(s.index + 1) {
                state.add(&next).unwrap();
                next += 1;
            }
        }
        let expected: Vec<u64> = subtasks
            .iter()
            .flat_map(|s| {
                s.operator
                    .list_state::<u64>("union", Redistribution::Union)
                    .unwrap()
                    .get()
                    .unwrap()
            })
            .collect();
        let manifest = checkpoint(
            &subtasks,
            &storage,
            CheckpointId(id),
            SnapshotKind::Incremental,
        )
        .unwrap();
        subtasks = restore_operator(factory, &storage, &manifest, parallelism(to)).unwrap();
        for s in &subtasks {
            let state = s
                .operator
                .list_state::<u64>("union", Redistribution::Union)
                .unwrap();
            assert_eq!(
                state.get().unwrap(),
                expected,
                "union list of new subtask {} of {to}",
                s.index
            );
        }
    }
}

/// Broadcast state across 3 -> 5 -> 2 -> 2: new subtask `i` holds the copy of old subtask
/// `i % old_n` (copies are made distinguishable here to see which one arrived).
pub fn broadcast_state<F: StateBackendFactory>(factory: &F) {
    let storage = CheckpointStorage::in_memory();
    let mut subtasks = create_operator(factory, max_parallelism(), parallelism(3)).unwrap();
    for (id, to) in (1u64..).zip([5u32, 2, 2]) {
        let old_n = subtasks.len() as u32;
        for s in &subtasks {
            let rules = s.operator.broadcast_state::<String, u64>("rules").unwrap();
            rules.put(&"shared".to_string(), &42).unwrap();
            rules
                .put(
                    &format!("written-by-{}-of-{old_n}", s.index),
                    &(s.index as u64),
                )
                .unwrap();
            rules.remove(&"removed".to_string()).unwrap();
        }
        let copies: Vec<Vec<(String, u64)>> = subtasks
            .iter()
            .map(|s| {
                s.operator
                    .broadcast_state::<String, u64>("rules")
                    .unwrap()
                    .entries()
                    .unwrap()
            })
            .collect();
        let manifest =
            checkpoint(&subtasks, &storage, CheckpointId(id), SnapshotKind::Full).unwrap();
        subtasks = restore_operator(factory, &storage, &manifest, parallelism(to)).unwrap();
        for s in &subtasks {
            let rules = s.operator.broadcast_state::<String, u64>("rules").unwrap();
            assert_eq!(
                rules.entries().unwrap(),
                copies[(s.index % old_n) as usize],
                "new subtask {} of {to} holds the copy of old subtask {} of {old_n}",
                s.index,
                s.index % old_n
            );
            assert_eq!(rules.get(&"shared".to_string()).unwrap(), Some(42));
        }
        // From here on the copies are identical again, as in a running job.
        for s in &subtasks {
            let rules = s.operator.broadcast_state::<String, u64>("rules").unwrap();
            rules.clear().unwrap();
        }
    }
}

fn assert_mode_mismatch<T: std::fmt::Debug>(result: flowstate_api::Result<T>, what: &str) {
    match result {
        Err(Error::OperatorStateModeMismatch { name, .. }) => assert_eq!(name, "offsets", "{what}"),
        other => panic!("{what}: returned {other:?}, not OperatorStateModeMismatch"),
    }
}

/// One operator state name has one mode: registering it again as union, as even-split or as
/// broadcast state is refused, live and after a restore.
pub fn operator_state_mode_mismatch<F: StateBackendFactory>(factory: &F) {
    let store = Arc::new(OperatorStateStore::new());
    let offsets = store
        .list_state::<u64>("offsets", Redistribution::EvenSplit)
        .unwrap();
    offsets.add(&1).unwrap();
    assert_mode_mismatch(
        store.list_state::<u64>("offsets", Redistribution::Union),
        "union over even-split",
    );
    assert_mode_mismatch(
        store.broadcast_state::<u64, u64>("offsets"),
        "broadcast over even-split",
    );
    let union = Arc::new(OperatorStateStore::new());
    union
        .list_state::<u64>("offsets", Redistribution::Union)
        .unwrap();
    assert_mode_mismatch(
        union.list_state::<u64>("offsets", Redistribution::EvenSplit),
        "even-split over union",
    );
    let broadcast = Arc::new(OperatorStateStore::new());
    broadcast.broadcast_state::<u64, u64>("offsets").unwrap();
    assert_mode_mismatch(
        broadcast.list_state::<u64>("offsets", Redistribution::Union),
        "list over broadcast",
    );
    assert_eq!(
        offsets.get().unwrap(),
        vec![1],
        "failed registrations change nothing"
    );

    let storage = CheckpointStorage::in_memory();
    let subtasks = create_operator(factory, max_parallelism(), parallelism(2)).unwrap();
    for s in &subtasks {
        s.operator
            .list_state::<u64>("offsets", Redistribution::EvenSplit)
            .unwrap()
            .add(&(s.index as u64))
            .unwrap();
    }
    let manifest = checkpoint(&subtasks, &storage, CheckpointId(1), SnapshotKind::Full).unwrap();
    let restored = restore_operator(factory, &storage, &manifest, parallelism(3)).unwrap();
    for s in &restored {
        assert_mode_mismatch(
            s.operator
                .list_state::<u64>("offsets", Redistribution::Union),
            "union over a restored even-split state",
        );
    }
}
