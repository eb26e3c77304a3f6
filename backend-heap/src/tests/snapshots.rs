//! Snapshot isolation, concurrent writers, version garbage, and snapshot -> restore (also
//! rescaled) through checkpoint storage.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::key_groups::{key_group_for_key_bytes, key_group_range_for_operator};
use flowstate_api::snapshot::{self, SnapshotFileKind};
use flowstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedStateBackend, KeyedStateHandle, Parallelism,
    SnapshotKind, StateBackendFactory, StateKind,
};

use super::*;
use crate::HeapBackendFactory;

/// States of every kind, filled with `n` keys in two namespaces; returns the state ids.
fn fill(b: &HeapBackend, n: usize) -> [StateId; 4] {
    let [v, l, m] = register(b, VLM);
    let [r] = register(b, [("r", StateKind::Reducing)]);
    for i in 0..n {
        let k = key(&format!("k{i}"));
        for ns in [&b"a"[..], b"b"] {
            b.put(v, &k, ns, format!("v{i}").as_bytes()).unwrap();
            b.list_append(l, &k, ns, &[format!("e{i}").as_bytes(), b"x"])
                .unwrap();
            b.map_put(m, &k, ns, b"u1", format!("m{i}").as_bytes())
                .unwrap();
            b.map_put(m, &k, ns, b"u2", b"w").unwrap();
            b.put(r, &k, ns, &(i as u64).to_le_bytes()).unwrap();
        }
    }
    [v, l, m, r]
}

#[test]
fn a_view_does_not_see_writes_or_removals_made_after_it() {
    let b = backend();
    let [v, l, m, r] = fill(&b, 50);
    let view = b.snapshot_view();
    let before = dump(&view);
    assert_eq!(before.len(), 4 * 50 * 2);

    let k = |i: usize| key(&format!("k{i}"));
    b.put(v, &k(0), b"a", b"changed").unwrap();
    b.remove(v, &k(1), b"a").unwrap();
    b.put(v, &key("new"), b"a", b"new").unwrap();
    b.list_append(l, &k(2), b"a", &[b"appended"]).unwrap();
    b.list_append(l, &k(2), b"a", &[b"again"]).unwrap();
    b.list_replace(l, &k(3), b"a", &[b"replaced"]).unwrap();
    b.list_replace(l, &k(4), b"a", &[]).unwrap();
    b.list_append(l, &k(5), b"a", &[b"then"]).unwrap();
    b.list_replace(l, &k(5), b"a", &[b"rewritten"]).unwrap();
    b.map_put(m, &k(6), b"a", b"u3", b"added").unwrap();
    b.map_put(m, &k(7), b"a", b"u1", b"overwritten").unwrap();
    b.map_remove(m, &k(8), b"a", b"u1").unwrap();
    b.remove(m, &k(9), b"a").unwrap();
    b.remove(m, &k(10), b"a").unwrap();
    b.map_put(m, &k(10), b"a", b"u9", b"recreated").unwrap();
    b.put(r, &k(11), b"a", b"acc").unwrap();
    let late = b.register_state(&meta("late", StateKind::Value)).unwrap();
    b.put(late, &k(0), b"a", b"late").unwrap();

    assert_eq!(dump(&view), before, "the view changed under writes");
    assert!(view.states().iter().all(|(id, _)| *id != late));
    let stats = b.stats();
    assert!(stats.old_versions > 0 && stats.tombstones > 0, "{stats:?}");

    // A new view sees the writes.
    let after = dump(&b.snapshot_view());
    assert_eq!(
        after[&(v, b"k0".to_vec(), b"a".to_vec())],
        vec![Owned::Value(b"changed".to_vec())]
    );
    assert!(!after.contains_key(&(v, b"k1".to_vec(), b"a".to_vec())));
    assert_eq!(
        after[&(l, b"k2".to_vec(), b"a".to_vec())],
        vec![Owned::List(list(&[b"e2", b"x", b"appended", b"again"]))]
    );
    assert!(!after.contains_key(&(l, b"k4".to_vec(), b"a".to_vec())));
    assert!(!after.contains_key(&(m, b"k9".to_vec(), b"a".to_vec())));
    assert_eq!(
        after[&(m, b"k10".to_vec(), b"a".to_vec())],
        vec![Owned::MapEntry(b"u9".to_vec(), b"recreated".to_vec())]
    );

    // Dropping the view releases every kept version and tombstone.
    drop(view);
    let stats = b.stats();
    assert_eq!(
        (
            stats.old_versions,
            stats.tombstones,
            stats.retained_entries,
            stats.live_snapshots
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(dump(&b.snapshot_view()), after);
}

#[test]
fn overlapping_views_each_keep_their_own_epoch() {
    let b = backend();
    let [s, m] = register(&b, [("l", StateKind::List), ("m", StateKind::Map)]);
    let k = key("k");
    let mut views = Vec::new();
    let mut expected = Vec::new();
    for round in 0..6u8 {
        match round % 3 {
            0 => b.list_append(s, &k, b"", &[&[round]]).unwrap(),
            1 => b.list_replace(s, &k, b"", &[&[round], &[round]]).unwrap(),
            _ => b.remove(s, &k, b"").unwrap(),
        }
        b.map_put(m, &k, b"", &[round % 2], &[round]).unwrap();
        if round == 4 {
            b.map_remove(m, &k, b"", &[0]).unwrap();
        }
        let view = b.snapshot_view();
        expected.push(dump(&view));
        views.push(Some(view));
    }
    // Release in a scrambled order; after each release every remaining view is unchanged.
    for i in [2usize, 0, 5, 3, 1, 4] {
        views[i] = None;
        for (j, view) in views.iter().enumerate() {
            if let Some(view) = view {
                assert_eq!(dump(view), expected[j], "view {j} after releasing {i}");
            }
        }
    }
    let stats = b.stats();
    assert_eq!(
        (stats.old_versions, stats.tombstones, stats.retained_entries),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn writers_run_while_a_view_is_read_and_the_view_is_a_consistent_cut() {
    const KEYS: usize = 64;
    let b = Arc::new(backend());
    let [v, l] = register(&b, [("v", StateKind::Value), ("l", StateKind::List)]);
    let writes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer rewrites its keys in order, round after round: value = round, and appends
    // the round to the key's list. Any consistent cut shows, per writer, keys 0..=j at round
    // R and keys after j at round R - 1.
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (b, writes, stop) = (b.clone(), writes.clone(), stop.clone());
            std::thread::spawn(move || {
                let keys: Vec<KeyContext> = (0..KEYS).map(|i| key(&format!("w{t}-{i}"))).collect();
                let mut round = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    for k in &keys {
                        b.put(v, k, b"", &round.to_le_bytes()).unwrap();
                        b.list_append(l, k, b"", &[&round.to_le_bytes()]).unwrap();
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while writes.load(Ordering::Relaxed) < 5_000 {
        std::thread::yield_now();
    }
    for _ in 0..3 {
        let view = b.snapshot_view();
        let mut first_row = true;
        let mut values: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        let mut lists: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
        for kg in view.key_group_range().iter() {
            view.for_each_row(kg, &mut |row| {
                if first_row {
                    // The view holds no lock while its consumer runs: writers make progress.
                    first_row = false;
                    let seen = writes.load(Ordering::Relaxed);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while writes.load(Ordering::Relaxed) < seen + 1_000 {
                        assert!(
                            Instant::now() < deadline,
                            "writers are blocked while the view is read"
                        );
                        std::thread::yield_now();
                    }
                }
                match row.value {
                    RowValue::Value(bytes) => {
                        values.insert(
                            row.key.to_vec(),
                            u32::from_le_bytes(bytes.try_into().unwrap()),
                        );
                    }
                    RowValue::List(bytes) => {
                        let rounds = flowstate_api::list_encoding::decode(bytes)
                            .unwrap()
                            .into_iter()
                            .map(|e| u32::from_le_bytes(e.as_slice().try_into().unwrap()))
                            .collect();
                        lists.insert(row.key.to_vec(), rounds);
                    }
                    other => panic!("unexpected row {other:?}"),
                }
                Ok(())
            })
            .unwrap();
        }
        for t in 0..2 {
            // Writer t's operations form one sequence: round r, key i: put is operation
            // 2 * ((r - 1) * KEYS + i), append the one after. A consistent cut shows exactly a
            // prefix of it: every operation up to the last one seen, none after.
            let op = |round: u32, i: usize, append: bool| -> i64 {
                2 * ((round as i64 - 1) * KEYS as i64 + i as i64) + i64::from(append)
            };
            let mut observed = Vec::new();
            for i in 0..KEYS {
                let name = format!("w{t}-{i}");
                let round = values.get(name.as_bytes()).copied().unwrap_or(0);
                let list = lists.get(name.as_bytes()).cloned().unwrap_or_default();
                let appended = list.len() as u32;
                assert_eq!(
                    list,
                    (1..=appended).collect::<Vec<_>>(),
                    "writer {t} key {i}: list"
                );
                observed.push((round, appended));
            }
            let last_seen = observed
                .iter()
                .enumerate()
                .flat_map(|(i, (round, appended))| [op(*round, i, false), op(*appended, i, true)])
                .max()
                .unwrap();
            for (i, (round, appended)) in observed.iter().enumerate() {
                assert!(
                    op(round + 1, i, false) > last_seen && op(appended + 1, i, true) > last_seen,
                    "writer {t}: not a consistent cut at key {i}: {observed:?}"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let stats = b.stats();
    assert_eq!(
        (stats.old_versions, stats.live_snapshots),
        (0, 0),
        "{stats:?}"
    );
}

/// What `b` holds, read through the public API, for every key of `fill`.
fn observe(
    b: &HeapBackend,
    states: [StateId; 4],
    n: usize,
) -> BTreeMap<(usize, &'static str, Vec<u8>), Vec<u8>> {
    let [v, l, m, r] = states;
    let mut out = BTreeMap::new();
    for i in 0..n {
        let k = key(&format!("k{i}"));
        if !b.key_group_range().contains(k.key_group()) {
            continue;
        }
        for ns in [&b"a"[..], b"b"] {
            if let Some(x) = b.get(v, &k, ns).unwrap() {
                out.insert((i, "v", ns.to_vec()), x);
            }
            let items = b.list_get(l, &k, ns).unwrap();
            if !items.is_empty() {
                out.insert((i, "l", ns.to_vec()), items.concat());
            }
            let entries = sorted_entries(b, m, &k, ns);
            if !entries.is_empty() {
                out.insert(
                    (i, "m", ns.to_vec()),
                    entries
                        .into_iter()
                        .flat_map(|(a, b)| [a, b])
                        .flatten()
                        .collect(),
                );
            }
            if let Some(x) = b.get(r, &k, ns).unwrap() {
                out.insert((i, "r", ns.to_vec()), x);
            }
        }
    }
    out
}

#[test]
fn snapshot_restores_into_the_same_and_other_ranges() {
    const N: usize = 300;
    let rt = runtime();
    let storage = CheckpointStorage::in_memory();
    let factory = HeapBackendFactory::new();
    let p2 = Parallelism::new(2).unwrap();
    // Two old subtasks.
    let old: Vec<HeapBackend> = (0..2)
        .map(|i| {
            factory
                .create(max(), key_group_range_for_operator(max(), p2, i).unwrap())
                .unwrap()
        })
        .collect();
    let whole = backend();
    let states = fill(&whole, N);
    for b in &old {
        // No keys: only the states, with the ids `whole` gave them.
        assert_eq!(fill(b, 0), states);
        // Copy the owned part of `whole` through apply_rows-free public writes.
        let view = whole.snapshot_view();
        for kg in b.key_group_range().iter() {
            view.for_each_row(kg, &mut |row| {
                let k = KeyContext::with_key_group(row.key, kg);
                match row.value {
                    RowValue::Value(x) => b.put(row.state, &k, row.namespace, x),
                    RowValue::List(x) => {
                        let items = flowstate_api::list_encoding::decode(x)?;
                        let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
                        b.list_replace(row.state, &k, row.namespace, &refs)
                    }
                    RowValue::MapEntry { user_key, value } => {
                        b.map_put(row.state, &k, row.namespace, user_key, value)
                    }
                    other => unreachable!("a full view has no {other:?} row"),
                }
            })
            .unwrap();
        }
    }
    let expected = observe(&whole, states, N);
    assert_eq!(expected.len(), N * 2 * 4);
    let handles: Vec<KeyedStateHandle> = old
        .iter()
        .enumerate()
        .map(|(i, b)| {
            rt.block_on(take(b, 1, i as u32, SnapshotKind::Full).run(storage.clone()))
                .unwrap()
        })
        .collect();
    // Writes after the snapshots are not in them.
    for b in &old {
        let k = key("k0");
        if b.key_group_range().contains(k.key_group()) {
            b.put(states[0], &k, b"a", b"after").unwrap();
        }
    }
    for parallelism in [1u32, 2, 3, 5] {
        let p = Parallelism::new(parallelism).unwrap();
        let mut seen = BTreeMap::new();
        for i in 0..parallelism {
            let range = key_group_range_for_operator(max(), p, i).unwrap();
            let restored = rt
                .block_on(factory.restore(max(), range, &storage, &handles))
                .unwrap();
            assert_eq!(restored.key_group_range(), range);
            let names: Vec<String> = restored
                .registered_states()
                .into_iter()
                .map(|(_, m)| m.name)
                .collect();
            assert_eq!(names, vec!["v", "l", "m", "r"]);
            let got = observe(&restored, states, N);
            for (key_index, _, _) in got.keys() {
                let kg = key(&format!("k{key_index}")).key_group();
                assert!(range.contains(kg), "restored a key outside its range");
            }
            seen.extend(got);
            // Nothing else was restored either.
            let rows = dump(&restored.snapshot_view());
            assert_eq!(rows.len(), observe(&restored, states, N).len());
        }
        assert_eq!(seen, expected, "parallelism {parallelism}");
    }
}

#[test]
fn snapshot_files_are_in_key_group_order_and_carry_only_their_groups() {
    let rt = runtime();
    let storage = CheckpointStorage::in_memory();
    let range = KeyGroupRange::new(10, 90).unwrap();
    let b = backend_with(range);
    let [v, ..] = fill_owned(&b, 400);
    let job = take(&b, 7, 3, SnapshotKind::Full);
    let handle = rt.block_on(job.run(storage.clone())).unwrap();
    let KeyedStateHandle::Canonical {
        key_group_range,
        file,
    } = &handle
    else {
        panic!("full snapshots are canonical: {handle:?}")
    };
    assert_eq!(*key_group_range, range);
    assert!(
        file.path.starts_with("chk-00000000000000000007/"),
        "{}",
        file.path
    );
    let info = rt.block_on(snapshot::read_info(&storage, file)).unwrap();
    assert_eq!(info.metadata.key_group_range, range);
    assert_eq!(info.metadata.kind, SnapshotFileKind::Full);
    assert_eq!(info.metadata.states.len(), 4);
    let groups: Vec<u32> = info.index.iter().map(|e| e.key_group.get()).collect();
    assert!(
        groups.windows(2).all(|w| w[0] < w[1]),
        "blocks not ascending: {groups:?}"
    );
    let mut with_data: Vec<u32> = b
        .keys(v, b"a")
        .unwrap()
        .iter()
        .map(|k| k.key_group().get())
        .collect();
    with_data.sort();
    with_data.dedup();
    assert_eq!(groups, with_data);
    // Every block's rows belong to its key group.
    let mut rows = 0;
    rt.block_on(snapshot::read_blocks(
        &storage,
        file,
        &info,
        &range,
        |kg, block| {
            for row in block {
                assert_eq!(key_group_for_key_bytes(row.key, max()), kg);
                rows += 1;
            }
            Ok(())
        },
    ))
    .unwrap();
    assert_eq!(
        rows as usize,
        dump(&b.snapshot_view())
            .values()
            .map(Vec::len)
            .sum::<usize>()
    );
}

/// Like `fill`, with only the keys the backend owns.
fn fill_owned(b: &HeapBackend, n: usize) -> [StateId; 4] {
    let whole = backend();
    let states = fill(&whole, n);
    for (_, meta) in whole.registered_states() {
        b.register_state(&meta).unwrap();
    }
    let view = whole.snapshot_view();
    for kg in b.key_group_range().iter() {
        let mut rows = Vec::new();
        view.for_each_row(kg, &mut |row| {
            rows.push(owned(&row));
            Ok(())
        })
        .unwrap();
        let borrowed: Vec<StateRow<'_>> = rows
            .iter()
            .map(|((state, k, ns), value)| StateRow {
                state: *state,
                key: k,
                namespace: ns,
                value: match value {
                    Owned::Value(x) => RowValue::Value(x),
                    Owned::List(x) => RowValue::List(x),
                    Owned::MapEntry(u, x) => RowValue::MapEntry {
                        user_key: u,
                        value: x,
                    },
                    Owned::Tombstone => RowValue::Tombstone,
                },
            })
            .collect();
        b.apply_rows(kg, &borrowed).unwrap();
    }
    states
}
