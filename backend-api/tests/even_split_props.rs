//! Properties of even-split redistribution for random element counts and parallelisms: it
//! loses and duplicates nothing, deals near-equal contiguous runs, and N -> M -> N keeps the
//! multiset of every state.

use flowstate_api::operator::{redistribute, OperatorStateData};
use flowstate_api::{
    OperatorStateMetadata, OperatorStateSnapshot, OperatorStateStore, Parallelism, Redistribution,
};
use proptest::prelude::*;

/// `counts[state][old subtask]` elements, each unique: `"<state>/<subtask>/<i>"`.
fn old_subtasks(counts: &[Vec<usize>]) -> Vec<Option<OperatorStateSnapshot>> {
    let old_n = counts.iter().map(Vec::len).max().unwrap_or(0);
    (0..old_n)
        .map(|subtask| {
            let store = OperatorStateStore::new();
            for (state, per_subtask) in counts.iter().enumerate() {
                if let Some(&count) = per_subtask.get(subtask) {
                    let id = store
                        .register(&OperatorStateMetadata::list(
                            format!("s{state}"),
                            Redistribution::EvenSplit,
                            "bytes",
                        ))
                        .unwrap();
                    let elements = (0..count)
                        .map(|i| format!("{state}/{subtask}/{i}").into_bytes())
                        .collect();
                    store.list_add(id, elements).unwrap();
                }
            }
            // Through the file format, as a restore reads it.
            Some(OperatorStateSnapshot::decode(&store.snapshot_bytes().unwrap()).unwrap())
        })
        .collect()
}

fn list<'a>(snapshot: &'a OperatorStateSnapshot, name: &str) -> &'a [Vec<u8>] {
    match snapshot.get(name).map(|s| &s.data) {
        Some(OperatorStateData::List(l)) => l,
        Some(_) => panic!("{name} is not a list"),
        None => &[],
    }
}

/// State name -> all elements, concatenated in subtask order.
fn concatenated(subtasks: &[Option<OperatorStateSnapshot>], states: usize) -> Vec<Vec<Vec<u8>>> {
    (0..states)
        .map(|s| {
            let name = format!("s{s}");
            subtasks
                .iter()
                .flatten()
                .flat_map(|snap| list(snap, &name).iter().cloned())
                .collect()
        })
        .collect()
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

fn counts_strategy() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1usize..=8).prop_flat_map(|old_n| {
        prop::collection::vec(prop::collection::vec(0usize..=12, 1..=old_n), 1..=4)
    })
}

proptest! {
    #[test]
    fn even_split_loses_and_duplicates_nothing(
        counts in counts_strategy(),
        new_n in 1u32..=12,
    ) {
        let old = old_subtasks(&counts);
        let before = concatenated(&old, counts.len());
        let new: Vec<Option<OperatorStateSnapshot>> = redistribute(&old, Parallelism::new(new_n).unwrap())
            .unwrap()
            .into_iter()
            .map(Some)
            .collect();
        prop_assert_eq!(new.len(), new_n as usize);
        for (s, all) in before.iter().enumerate() {
            let name = format!("s{s}");
            // Every element exactly once (elements are unique, so equal sorted vectors mean
            // nothing lost and nothing duplicated).
            let after: Vec<Vec<u8>> = new
                .iter()
                .flatten()
                .flat_map(|snap| list(snap, &name).iter().cloned())
                .collect();
            prop_assert_eq!(sorted(after), sorted(all.clone()));
            // Near-equal shares, each a contiguous run of the concatenation, in order.
            let total = all.len();
            for snap in new.iter().flatten() {
                let part = list(snap, &name);
                let base = total / new_n as usize;
                prop_assert!(part.len() == base || part.len() == base + 1);
                if let Some(first) = part.first() {
                    let at = all.iter().position(|e| e == first).unwrap();
                    prop_assert_eq!(&all[at..at + part.len()], part);
                }
            }
        }
    }

    #[test]
    fn n_to_m_to_n_keeps_the_multiset(
        counts in counts_strategy(),
        m in 1u32..=12,
    ) {
        let old = old_subtasks(&counts);
        let n = Parallelism::new(old.len() as u32).unwrap();
        let m = Parallelism::new(m).unwrap();
        let mid: Vec<Option<OperatorStateSnapshot>> = (0..m.get())
            .map(|i| {
                let store = OperatorStateStore::restore(&old, i, m).unwrap();
                Some(OperatorStateSnapshot::decode(&store.snapshot_bytes().unwrap()).unwrap())
            })
            .collect();
        let back: Vec<Option<OperatorStateSnapshot>> = (0..n.get())
            .map(|i| Some(OperatorStateStore::restore(&mid, i, n).unwrap().snapshot()))
            .collect();
        let before = concatenated(&old, counts.len());
        let after = concatenated(&back, counts.len());
        for (b, a) in before.into_iter().zip(after) {
            prop_assert_eq!(sorted(a), sorted(b));
        }
    }
}
