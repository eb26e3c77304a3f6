//! Change tracking and changelog deltas.

use std::collections::BTreeMap;

use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::snapshot::{self, SnapshotFileKind};
use flowstate_api::{
    CheckpointId, CheckpointStorage, Error, FileRef, KeyedStateBackend, KeyedStateHandle,
    Parallelism, SnapshotKind, StateBackend, StateBackendFactory,
};

use super::*;
use crate::HeapBackendFactory;

struct Fixture {
    b: HeapBackend,
    v: StateId,
    l: StateId,
    m: StateId,
    storage: CheckpointStorage,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new(config: HeapConfig) -> Self {
        let b = HeapBackend::new(max(), max().full_range(), config).unwrap();
        let [v, l, m] = register(&b, VLM);
        for i in 0..20 {
            let k = key(&format!("k{i}"));
            b.put(v, &k, b"a", format!("v{i}").as_bytes()).unwrap();
            b.list_append(l, &k, b"a", &[b"e"]).unwrap();
            b.map_put(m, &k, b"a", b"u1", b"x").unwrap();
            b.map_put(m, &k, b"a", b"u2", b"w").unwrap();
        }
        Self {
            b,
            v,
            l,
            m,
            storage: CheckpointStorage::in_memory(),
            rt: runtime(),
        }
    }

    /// A fixture whose first incremental checkpoint (a base) is taken and completed.
    fn with_base() -> Self {
        let f = Self::new(HeapConfig::default());
        f.checkpoint(1, SnapshotKind::Incremental);
        f.complete(1);
        f
    }

    fn checkpoint(&self, id: u64, kind: SnapshotKind) -> KeyedStateHandle {
        let job = take(&self.b, id, 0, kind);
        self.rt.block_on(job.run(self.storage.clone())).unwrap()
    }

    fn complete(&self, id: u64) {
        self.b.notify_checkpoint_complete(CheckpointId(id)).unwrap();
    }

    /// Rows of a delta file grouped by (state, key, namespace), in file order.
    fn delta_rows(&self, file: &FileRef) -> BTreeMap<RowKey, Vec<Owned>> {
        let info = self
            .rt
            .block_on(snapshot::read_info(&self.storage, file))
            .unwrap();
        assert_eq!(info.metadata.kind, SnapshotFileKind::Delta);
        let ids: Vec<StateId> = info
            .metadata
            .states
            .iter()
            .map(|m| self.b.register_state(m).unwrap())
            .collect();
        let mut out: BTreeMap<RowKey, Vec<Owned>> = BTreeMap::new();
        let range = info.metadata.key_group_range;
        self.rt
            .block_on(snapshot::read_blocks(
                &self.storage,
                file,
                &info,
                &range,
                |_, rows| {
                    for row in rows {
                        let (k, v) = owned(&StateRow {
                            state: ids[row.state_index as usize],
                            key: row.key,
                            namespace: row.namespace,
                            value: row.value,
                        });
                        out.entry(k).or_default().push(v);
                    }
                    Ok(())
                },
            ))
            .unwrap();
        out
    }

    /// The (state, key, namespace) of every entry a delta file changes.
    fn changed_keys(&self, file: &FileRef) -> Vec<RowKey> {
        self.delta_rows(file).into_keys().collect()
    }

    fn restore(&self, handles: &[KeyedStateHandle], parallelism: u32) -> Vec<HeapBackend> {
        let p = Parallelism::new(parallelism).unwrap();
        (0..parallelism)
            .map(|i| {
                let range = key_group_range_for_operator(max(), p, i).unwrap();
                self.rt
                    .block_on(HeapBackendFactory::new().restore(
                        max(),
                        range,
                        &self.storage,
                        handles,
                    ))
                    .unwrap()
            })
            .collect()
    }
}

fn chain(handle: &KeyedStateHandle) -> (FileRef, Vec<FileRef>) {
    match handle {
        KeyedStateHandle::Changelog { base, deltas, .. } => (base.clone(), deltas.clone()),
        other => panic!("expected a changelog handle: {other:?}"),
    }
}

fn rk(state: StateId, k: &str) -> RowKey {
    (state, k.as_bytes().to_vec(), b"a".to_vec())
}

/// The whole content of backends (restored subtasks together), as full-view rows.
fn content(backends: &[HeapBackend]) -> BTreeMap<RowKey, Vec<Owned>> {
    let mut out = BTreeMap::new();
    for b in backends {
        out.extend(dump(&b.snapshot_view()));
    }
    out
}

#[test]
fn a_delta_holds_a_tombstone_and_the_current_rows_of_each_changed_entry_only() {
    let f = Fixture::new(HeapConfig::default());
    let (v, l, m) = (f.v, f.l, f.m);
    assert_eq!(
        f.b.stats().change_records,
        0,
        "nothing is recorded before the first incremental checkpoint"
    );
    let first = f.checkpoint(1, SnapshotKind::Incremental);
    let (base, deltas) = chain(&first);
    assert!(
        deltas.is_empty(),
        "the first incremental checkpoint is a base"
    );
    assert!(base.shared && base.path.starts_with("shared/"));
    f.complete(1);
    assert_eq!(
        f.b.stats().change_records,
        0,
        "a completed base holds every change"
    );

    let b = &f.b;
    b.put(v, &key("k0"), b"a", b"new").unwrap();
    b.remove(v, &key("k1"), b"a").unwrap();
    b.list_append(l, &key("k2"), b"a", &[b"more"]).unwrap();
    b.map_remove(m, &key("k3"), b"a", b"u1").unwrap();
    b.remove(m, &key("k4"), b"a").unwrap();
    b.put(v, &key("fresh"), b"a", b"f").unwrap();
    b.put(v, &key("k5"), b"a", b"tmp").unwrap();
    b.put(v, &key("k5"), b"a", b"v5").unwrap();
    b.put(v, &key("gone"), b"a", b"g").unwrap();
    b.remove(v, &key("gone"), b"a").unwrap();
    // Absent things removed: no change.
    b.remove(v, &key("never"), b"a").unwrap();
    b.map_remove(m, &key("k6"), b"a", b"no-such-user-key")
        .unwrap();

    let second = f.checkpoint(2, SnapshotKind::Incremental);
    let (base2, deltas) = chain(&second);
    assert_eq!(base2, base);
    assert_eq!(deltas.len(), 1);
    use Owned::*;
    let expected = BTreeMap::from([
        (rk(v, "k0"), vec![Tombstone, Value(b"new".to_vec())]),
        (rk(v, "k1"), vec![Tombstone]),
        (rk(l, "k2"), vec![Tombstone, List(list(&[b"e", b"more"]))]),
        (
            rk(m, "k3"),
            vec![Tombstone, MapEntry(b"u2".to_vec(), b"w".to_vec())],
        ),
        (rk(m, "k4"), vec![Tombstone]),
        (rk(v, "fresh"), vec![Tombstone, Value(b"f".to_vec())]),
        (rk(v, "k5"), vec![Tombstone, Value(b"v5".to_vec())]),
        (rk(v, "gone"), vec![Tombstone]),
    ]);
    assert_eq!(f.delta_rows(&deltas[0]), expected);

    // base + delta restores the current state, at any parallelism.
    let now = content(std::slice::from_ref(&f.b));
    for parallelism in [1, 3] {
        assert_eq!(
            content(&f.restore(std::slice::from_ref(&second), parallelism)),
            now
        );
    }
}

#[test]
fn pending_checkpoints_keep_their_changes_and_a_newer_abort_rebases() {
    let f = Fixture::with_base();
    let v = f.v;
    f.b.put(v, &key("A"), b"a", b"a").unwrap();
    f.checkpoint(2, SnapshotKind::Incremental); // stays pending, then is subsumed
    f.b.put(v, &key("B"), b"a", b"b").unwrap();
    let third = f.checkpoint(3, SnapshotKind::Incremental);
    let (_, deltas) = chain(&third);
    assert_eq!(deltas.len(), 1, "a delta on base 1: 2 never completed");
    assert_eq!(f.changed_keys(&deltas[0]), vec![rk(v, "A"), rk(v, "B")]);
    f.complete(3);
    // A late abort of the subsumed checkpoint 2 leaves the chain alone.
    f.b.notify_checkpoint_aborted(CheckpointId(2)).unwrap();
    f.b.put(v, &key("C"), b"a", b"c").unwrap();
    let fourth = f.checkpoint(4, SnapshotKind::Incremental);
    let (_, deltas) = chain(&fourth);
    assert_eq!(deltas.len(), 2);
    assert_eq!(f.changed_keys(&deltas[1]), vec![rk(v, "C")]);
    // An abort newer than the base (the coordinator may have refused it because a file of
    // the chain is gone) ends the chain: the next checkpoint is a base, and no change record
    // is kept without a base to be a delta of.
    f.b.notify_checkpoint_aborted(CheckpointId(4)).unwrap();
    assert_eq!(f.b.stats().change_records, 0);
    f.b.put(v, &key("D"), b"a", b"d").unwrap();
    let fifth = f.checkpoint(5, SnapshotKind::Incremental);
    let (_, deltas) = chain(&fifth);
    assert!(deltas.is_empty(), "a new base after the abort");
    f.complete(5);
    f.b.put(v, &key("E"), b"a", b"e").unwrap();
    let sixth = f.checkpoint(6, SnapshotKind::Incremental);
    let (_, deltas) = chain(&sixth);
    assert_eq!(f.changed_keys(&deltas[0]), vec![rk(v, "E")]);
    assert_eq!(
        content(&f.restore(&[sixth], 2)),
        content(std::slice::from_ref(&f.b))
    );
}

#[test]
fn change_records_of_churned_keys_stay_bounded_without_completions() {
    let f = Fixture::with_base();
    let v = f.v;
    // 10k keys created and deleted per round, no checkpoint ever completes: the records of
    // keys that no longer exist must not pile up.
    let mut most = 0;
    for round in 0..8u32 {
        for i in 0..10_000u32 {
            let k = key(&format!("r{round}-{i}"));
            f.b.put(v, &k, b"a", b"x").unwrap();
            f.b.remove(v, &k, b"a").unwrap();
        }
        f.checkpoint(2 + u64::from(round), SnapshotKind::Incremental);
        most = most.max(f.b.stats().change_records);
    }
    assert!(
        most <= 2 * (10_000 + 4096),
        "change records grew to {most} with no live key"
    );
}

#[test]
fn a_full_checkpoint_is_no_delta_base() {
    let f = Fixture::with_base();
    let v = f.v;
    f.b.put(v, &key("A"), b"a", b"a").unwrap();
    let full = f.checkpoint(2, SnapshotKind::Full);
    assert!(matches!(full, KeyedStateHandle::Canonical { .. }));
    f.complete(2);
    f.b.put(v, &key("B"), b"a", b"b").unwrap();
    // Retention may have deleted the chain's base once the full checkpoint completed: the
    // next incremental checkpoint is a new base.
    let third = f.checkpoint(3, SnapshotKind::Incremental);
    let (_, deltas) = chain(&third);
    assert!(
        deltas.is_empty(),
        "a completed full checkpoint forces a new base"
    );
    f.complete(3);
    f.b.put(v, &key("C"), b"a", b"c").unwrap();
    let fourth = f.checkpoint(4, SnapshotKind::Incremental);
    let (_, deltas) = chain(&fourth);
    assert_eq!(f.changed_keys(&deltas[0]), vec![rk(v, "C")]);
}

#[test]
fn a_pending_full_checkpoint_changes_nothing_in_the_chain() {
    let f = Fixture::with_base();
    let v = f.v;
    f.b.put(v, &key("A"), b"a", b"a").unwrap();
    // A full checkpoint that is aborted (or never completes) is neither a base nor a reason
    // to re-base; its changes stay in the next delta.
    f.checkpoint(2, SnapshotKind::Full);
    f.b.notify_checkpoint_aborted(CheckpointId(2)).unwrap();
    f.b.put(v, &key("B"), b"a", b"b").unwrap();
    let third = f.checkpoint(3, SnapshotKind::Incremental);
    let (_, deltas) = chain(&third);
    assert_eq!(f.changed_keys(&deltas[0]), vec![rk(v, "A"), rk(v, "B")]);
}

#[test]
fn writes_after_the_capture_are_not_in_the_delta_but_in_the_next() {
    let f = Fixture::with_base();
    let v = f.v;
    f.b.put(v, &key("A"), b"a", b"1").unwrap();
    let job = take(&f.b, 2, 0, SnapshotKind::Incremental);
    f.b.put(v, &key("A"), b"a", b"2").unwrap();
    f.b.put(v, &key("N"), b"a", b"n").unwrap();
    f.b.remove(v, &key("k0"), b"a").unwrap();
    let second = f.rt.block_on(job.run(f.storage.clone())).unwrap();
    let (_, deltas) = chain(&second);
    use Owned::*;
    let expected = BTreeMap::from([(rk(v, "A"), vec![Tombstone, Value(b"1".to_vec())])]);
    assert_eq!(f.delta_rows(&deltas[0]), expected);
    f.complete(2);
    let third = f.checkpoint(3, SnapshotKind::Incremental);
    let (_, deltas) = chain(&third);
    let expected = BTreeMap::from([
        (rk(v, "A"), vec![Tombstone, Value(b"2".to_vec())]),
        (rk(v, "N"), vec![Tombstone, Value(b"n".to_vec())]),
        (rk(v, "k0"), vec![Tombstone]),
    ]);
    assert_eq!(f.delta_rows(&deltas[1]), expected);
}

#[test]
fn change_records_are_dropped_on_completion_but_kept_for_a_live_delta_view() {
    let f = Fixture::with_base();
    let v = f.v;
    f.b.put(v, &key("A"), b"a", b"a").unwrap();
    let view = f.b.delta_view(CheckpointId(1)).unwrap();
    assert!(view.is_delta());
    f.checkpoint(2, SnapshotKind::Incremental);
    f.complete(2);
    // The live view is a delta since 1: A's record must survive checkpoint 2's completion.
    assert_eq!(f.b.stats().change_records, 1);
    let rows = dump(&view);
    assert_eq!(rows.keys().cloned().collect::<Vec<_>>(), vec![rk(v, "A")]);
    drop(view);
    assert_eq!(f.b.stats().change_records, 0);
    assert!(matches!(
        f.b.delta_view(CheckpointId(1)),
        Err(Error::CheckpointState { id: 1, .. })
    ));
    assert!(f.b.delta_view(CheckpointId(2)).is_ok());
}

#[test]
fn without_change_tracking_incremental_checkpoints_are_full() {
    let f = Fixture::new(HeapConfig {
        change_tracking: false,
        ..HeapConfig::default()
    });
    assert_eq!(f.b.stats().change_records, 0);
    let handle = f.checkpoint(1, SnapshotKind::Incremental);
    assert!(
        matches!(handle, KeyedStateHandle::Canonical { .. }),
        "{handle:?}"
    );
    f.complete(1);
    assert!(matches!(
        f.b.delta_view(CheckpointId(1)),
        Err(Error::Config(_))
    ));
}

#[test]
fn chains_rebase_after_the_policy_limit() {
    let f = Fixture::new(HeapConfig {
        changelog: flowstate_api::changelog::ChangelogPolicy {
            max_deltas: 2,
            max_delta_bytes_ratio: 100.0,
        },
        ..HeapConfig::default()
    });
    let mut bases = Vec::new();
    for id in 1..=6u64 {
        f.b.put(f.v, &key("k0"), b"a", &id.to_le_bytes()).unwrap();
        let handle = f.checkpoint(id, SnapshotKind::Incremental);
        f.complete(id);
        let (base, deltas) = chain(&handle);
        bases.push((base.path, deltas.len()));
        assert_eq!(
            content(&f.restore(&[handle], 1)),
            content(std::slice::from_ref(&f.b))
        );
    }
    let lengths: Vec<usize> = bases.iter().map(|(_, n)| *n).collect();
    assert_eq!(lengths, vec![0, 1, 2, 0, 1, 2]);
    assert_ne!(bases[0].0, bases[3].0);
}
