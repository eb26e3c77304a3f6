//! Change tracking for changelog-incremental checkpoints.
//!
//! A change is the `(state, key group, key, namespace)` a write touched, kept as the LMDB
//! prefix of that `(key, namespace)` (`[key group][key][namespace]`, see
//! [`crate::key_layout`]). A snapshot seals the changes made since the previous snapshot
//! under its checkpoint id; the delta of a checkpoint is every change not yet covered by a
//! *completed* checkpoint: the sealed sets of pending or aborted checkpoints plus the changes
//! since the last snapshot. A completed checkpoint drops its set and every older one. These
//! are the semantics of [`flowstate_api::changelog::ChangeLog`].
//!
//! Why not a hash set filled on every write: with many distinct keys between checkpoints, a
//! hash-set insert per write (hash, a cache miss or two, an allocation) cost about as much as
//! the LMDB write itself (measured with the `ratios` bench). Changes are recorded instead when
//! a batch of buffered writes commits: the batch is already in key order, so its prefixes form
//! a sorted run for free, appended to one contiguous arena. Runs of a state are merged
//! pairwise as they accumulate (each merge a sequential two-way merge, sizes kept geometric,
//! so a change is merged O(log n) times) and fully at each snapshot.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use flowstate_api::state::StorageLayout;
use flowstate_api::{CheckpointId, KeyGroup, Result, StateId};

use crate::overlay::Overlay;

/// Sorted, distinct byte strings stored back to back in one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SortedRun {
    bytes: Vec<u8>,
    /// End offset of each item in `bytes`.
    ends: Vec<usize>,
}

impl SortedRun {
    /// A run of `items`, sorted and deduplicated here if they are not already.
    pub(crate) fn from_items<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut items: Vec<&[u8]> = items.into_iter().collect();
        if !items.is_sorted() {
            items.sort_unstable();
        }
        let mut run = Self::default();
        for item in items {
            run.push_sorted(item);
        }
        run
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(crate) fn get(&self, index: usize) -> &[u8] {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        &self.bytes[start..self.ends[index]]
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    fn last(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// Appends `item`, which sorts at or after the last item (a repeat is dropped).
    fn push_sorted(&mut self, item: &[u8]) {
        if let Some(last) = self.last() {
            debug_assert!(last <= item, "items of a run must come in order");
            if last == item {
                return;
            }
        }
        self.bytes.extend_from_slice(item);
        self.ends.push(self.bytes.len());
    }

    /// Every item of `a` and `b`, once.
    pub(crate) fn union(a: &SortedRun, b: &SortedRun) -> SortedRun {
        let mut out = SortedRun {
            bytes: Vec::with_capacity(a.bytes.len() + b.bytes.len()),
            ends: Vec::with_capacity(a.len() + b.len()),
        };
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (x, y) = (a.get(i), b.get(j));
            if x <= y {
                out.push_sorted(x);
                i += 1;
                if x == y {
                    j += 1;
                }
            } else {
                out.push_sorted(y);
                j += 1;
            }
        }
        (i..a.len()).for_each(|i| out.push_sorted(a.get(i)));
        (j..b.len()).for_each(|j| out.push_sorted(b.get(j)));
        out
    }

    /// The index of the first item for which `before` is false (`before` must hold for a
    /// prefix of the items).
    fn partition_point(&self, before: impl Fn(&[u8]) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if before(self.get(mid)) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// The indices of the items that start with `key_group` (every item starts with its key
    /// group, big-endian, so these are contiguous).
    pub(crate) fn key_group_range(&self, key_group: KeyGroup) -> Range<usize> {
        let group = key_group.to_be_bytes();
        let start = self.partition_point(|item| item[..2] < group[..]);
        let end = self.partition_point(|item| item[..2] <= group[..]);
        start..end
    }
}

/// The runs recorded for one state since the last snapshot, largest first. Each run is more
/// than twice the size of the next, so there are O(log n) of them.
#[derive(Clone, Debug, Default)]
struct RunStack {
    runs: Vec<SortedRun>,
}

impl RunStack {
    fn push(&mut self, run: SortedRun) {
        if run.is_empty() {
            return;
        }
        self.runs.push(run);
        while let [.., older, newer] = self.runs.as_slice() {
            if newer.len() * 2 < older.len() {
                break;
            }
            let merged = SortedRun::union(older, newer);
            self.runs.truncate(self.runs.len() - 2);
            self.runs.push(merged);
        }
    }

    fn merged(&self) -> SortedRun {
        self.runs
            .iter()
            .fold(SortedRun::default(), |acc, run| SortedRun::union(&acc, run))
    }
}

/// The changes a delta covers: per state (by index), the sorted prefixes that changed.
#[derive(Debug, Default)]
pub(crate) struct ChangeSet {
    states: Vec<SortedRun>,
}

impl ChangeSet {
    /// Number of changed `(state, key, namespace)`.
    pub(crate) fn len(&self) -> usize {
        self.states.iter().map(SortedRun::len).sum()
    }

    /// The changes of `key_group`: state by state, each state's prefixes in key order (the
    /// order a full snapshot writes rows in).
    pub(crate) fn of_key_group(
        &self,
        key_group: KeyGroup,
    ) -> impl Iterator<Item = (StateId, &[u8])> + '_ {
        self.states
            .iter()
            .enumerate()
            .flat_map(move |(index, run)| {
                run.key_group_range(key_group)
                    .map(move |i| (StateId(index as u32), run.get(i)))
            })
    }
}

/// The changes of one batch of writes, by state index (see [`ChangeTracker::prepare`]).
#[derive(Debug, Default)]
pub(crate) struct PreparedChanges(Vec<SortedRun>);

/// Which keys changed since the last completed checkpoint, per checkpoint.
#[derive(Debug, Default)]
pub(crate) struct ChangeTracker {
    enabled: bool,
    /// Changes committed since the last snapshot, by state index.
    current: Vec<RunStack>,
    /// Changes sealed by snapshots of checkpoints not (yet) known complete, by state index.
    sealed: BTreeMap<CheckpointId, Vec<SortedRun>>,
}

/// Per state, the union of the runs of `sets` (each indexed by state).
fn union_by_state<'a>(sets: impl IntoIterator<Item = &'a [SortedRun]>) -> Vec<SortedRun> {
    let mut out: Vec<SortedRun> = Vec::new();
    for set in sets {
        if out.len() < set.len() {
            out.resize_with(set.len(), SortedRun::default);
        }
        for (acc, run) in out.iter_mut().zip(set) {
            if !run.is_empty() {
                *acc = SortedRun::union(acc, run);
            }
        }
    }
    out
}

impl ChangeTracker {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The changed prefixes of `overlay`'s writes, by state index. `layout_of` gives each
    /// state's layout: a map entry's LMDB key is its prefix plus the user key.
    fn runs_of(
        overlay: &Overlay,
        layout_of: impl Fn(usize) -> Option<StorageLayout>,
    ) -> Result<Vec<SortedRun>> {
        let mut out = Vec::new();
        for (index, writes) in overlay.states() {
            let run = match layout_of(index) {
                Some(StorageLayout::Map) => {
                    let prefixes = writes
                        .keys()
                        .map(|key| {
                            crate::key_layout::decode_key(key)
                                .map(|decoded| &key[..decoded.prefix_len])
                        })
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    SortedRun::from_items(prefixes)
                }
                // A value or list key is its prefix. Writes of a state whose database does
                // not exist are never committed, so they are not changes.
                Some(_) => SortedRun::from_items(writes.keys().map(|key| key.as_slice())),
                None => continue,
            };
            if out.len() <= index {
                out.resize_with(index + 1, SortedRun::default);
            }
            out[index] = run;
        }
        Ok(out)
    }

    /// The changes the writes of `batch` make, ready to [`ChangeTracker::record`]. Computed
    /// before the batch is committed: once it is, recording cannot fail.
    pub(crate) fn prepare(
        &self,
        batch: &Overlay,
        layout_of: impl Fn(usize) -> Option<StorageLayout>,
    ) -> Result<PreparedChanges> {
        Ok(PreparedChanges(if self.enabled {
            Self::runs_of(batch, layout_of)?
        } else {
            Vec::new()
        }))
    }

    /// Records prepared changes: their batch was committed to LMDB (or, for a snapshot taken
    /// while a flush was postponed, captured by it).
    pub(crate) fn record(&mut self, prepared: PreparedChanges) {
        for (index, run) in prepared.0.into_iter().enumerate() {
            if run.is_empty() {
                continue;
            }
            if self.current.len() <= index {
                self.current.resize_with(index + 1, RunStack::default);
            }
            self.current[index].push(run);
        }
    }

    /// [`ChangeTracker::prepare`] then [`ChangeTracker::record`].
    #[cfg(test)]
    fn record_batch(
        &mut self,
        batch: &Overlay,
        layout_of: impl Fn(usize) -> Option<StorageLayout>,
    ) -> Result<()> {
        let prepared = self.prepare(batch, layout_of)?;
        self.record(prepared);
        Ok(())
    }

    /// Seals the changes since the last snapshot under `id` and returns every change since the
    /// last completed checkpoint.
    pub(crate) fn seal(&mut self, id: CheckpointId) -> Arc<ChangeSet> {
        let current: Vec<SortedRun> = std::mem::take(&mut self.current)
            .iter()
            .map(RunStack::merged)
            .collect();
        let sealed = self.sealed.entry(id).or_default();
        *sealed = union_by_state([sealed.as_slice(), current.as_slice()]);
        let states = union_by_state(self.sealed.values().map(Vec::as_slice));
        Arc::new(ChangeSet { states })
    }

    /// Checkpoint `id` completed: its changes and all older ones are in a completed
    /// checkpoint now.
    pub(crate) fn complete(&mut self, id: CheckpointId) {
        self.sealed.retain(|sealed, _| *sealed > id);
    }

    /// Number of distinct changes not yet covered by a completed checkpoint, counting the
    /// writes still in `buffer` (for tests and diagnostics; it merges everything).
    pub(crate) fn outstanding(
        &self,
        buffer: &Overlay,
        layout_of: impl Fn(usize) -> Option<StorageLayout>,
    ) -> Result<usize> {
        if !self.enabled {
            return Ok(0);
        }
        let current: Vec<SortedRun> = self.current.iter().map(RunStack::merged).collect();
        let buffered = Self::runs_of(buffer, layout_of)?;
        let all = union_by_state(
            self.sealed
                .values()
                .map(Vec::as_slice)
                .chain([current.as_slice(), buffered.as_slice()]),
        );
        Ok(all.iter().map(SortedRun::len).sum())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::key_layout::{decode_key, push_prefix};
    use crate::overlay::Pending;

    fn kg(v: u32) -> KeyGroup {
        KeyGroup::from_validated(v).unwrap()
    }

    fn prefix(group: u32, key: &[u8], ns: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_prefix(&mut out, kg(group), key, ns);
        out
    }

    /// Commits one batch writing `(state, key group, key, namespace)`, all value states.
    fn commit(t: &mut ChangeTracker, writes: &[(u32, u32, &[u8], &[u8])]) {
        let mut batch = Overlay::default();
        for &(state, group, key, ns) in writes {
            batch.set(StateId(state), &prefix(group, key, ns), Pending::Delete);
        }
        t.record_batch(&batch, |_| Some(StorageLayout::Value))
            .unwrap();
    }

    fn outstanding(t: &ChangeTracker) -> usize {
        t.outstanding(&Overlay::default(), |_| Some(StorageLayout::Value))
            .unwrap()
    }

    #[test]
    fn pending_and_aborted_changes_stay_until_a_later_completion() {
        let mut t = ChangeTracker::new(true);
        commit(&mut t, &[(0, 3, b"a", b"")]);
        commit(&mut t, &[(0, 3, b"a", b"")]);
        let c1 = t.seal(CheckpointId(1));
        assert_eq!(c1.len(), 1);
        // Checkpoint 1 is aborted (nothing to do): its change is still in checkpoint 2.
        commit(&mut t, &[(1, 1, b"b", b"n")]);
        let c2 = t.seal(CheckpointId(2));
        assert_eq!(c2.len(), 2);
        assert_eq!(c2.of_key_group(kg(1)).count(), 1);
        assert_eq!(c2.of_key_group(kg(2)).count(), 0);
        let (state, change) = c2.of_key_group(kg(3)).next().unwrap();
        assert_eq!(state, StateId(0));
        let decoded = decode_key(change).unwrap();
        assert_eq!((decoded.key, decoded.namespace), (&b"a"[..], &b""[..]));
        commit(&mut t, &[(1, 1, b"c", b"")]);
        t.complete(CheckpointId(2));
        assert_eq!(outstanding(&t), 1);
        assert_eq!(t.seal(CheckpointId(3)).len(), 1);
    }

    #[test]
    fn map_entries_are_tracked_by_their_key_and_namespace() {
        let mut t = ChangeTracker::new(true);
        let mut batch = Overlay::default();
        for user_key in [&b"x"[..], b"y", b"z"] {
            let mut key = prefix(5, b"k", b"ns");
            key.extend_from_slice(user_key);
            batch.set(
                StateId(0),
                &key,
                Pending::Put(crate::overlay::BufferValue::from_slice(&[1])),
            );
        }
        t.record_batch(&batch, |_| Some(StorageLayout::Map))
            .unwrap();
        let set = t.seal(CheckpointId(1));
        let changes: Vec<_> = set.of_key_group(kg(5)).collect();
        assert_eq!(
            changes,
            vec![(StateId(0), prefix(5, b"k", b"ns").as_slice())]
        );
        // A state without a database is skipped.
        t.record_batch(&batch, |_| None).unwrap();
        assert_eq!(t.seal(CheckpointId(2)).len(), 1);
    }

    #[test]
    fn many_batches_merge_to_the_set_of_every_change() {
        // Batches of pseudo-random keys against a plain set: same content, order and key
        // group ranges however the runs were merged.
        let mut t = ChangeTracker::new(true);
        let mut model: BTreeSet<(u32, Vec<u8>)> = BTreeSet::new();
        let mut seed = 7u64;
        for batch in 0..200usize {
            let mut writes = Vec::new();
            for _ in 0..(batch % 37 + 1) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (state, group) = ((seed >> 60) as u32 % 3, (seed >> 40) as u32 % 16);
                let key = ((seed >> 20) % 500).to_be_bytes();
                writes.push((state, group, key));
                model.insert((state, prefix(group, &key, b"")));
            }
            let refs: Vec<(u32, u32, &[u8], &[u8])> = writes
                .iter()
                .map(|(s, g, k)| (*s, *g, &k[..], &b""[..]))
                .collect();
            commit(&mut t, &refs);
            for stack in &t.current {
                assert!(stack.runs.len() <= 12, "runs must merge as they pile up");
            }
        }
        assert_eq!(outstanding(&t), model.len());
        let set = t.seal(CheckpointId(1));
        let mut seen = Vec::new();
        for group in 0..16 {
            for (state, change) in set.of_key_group(kg(group)) {
                assert_eq!(decode_key(change).unwrap().key_group, group);
                seen.push((state.0, change.to_vec()));
            }
        }
        let mut expected: Vec<_> = model.into_iter().collect();
        // Rows come key group by key group, then state by state.
        expected.sort_by(|(sa, pa), (sb, pb)| (&pa[..2], sa, pa).cmp(&(&pb[..2], sb, pb)));
        assert_eq!(seen, expected);
    }

    #[test]
    fn unsorted_items_are_sorted_and_deduplicated() {
        let run = SortedRun::from_items([&b"b"[..], b"a", b"b", b"c"]);
        assert_eq!(run.iter().collect::<Vec<_>>(), vec![&b"a"[..], b"b", b"c"]);
        let other = SortedRun::from_items([&b"0"[..], b"b", b"d"]);
        let union = SortedRun::union(&run, &other);
        assert_eq!(
            union.iter().collect::<Vec<_>>(),
            vec![&b"0"[..], b"a", b"b", b"c", b"d"]
        );
    }

    #[test]
    fn disabled_tracker_records_nothing() {
        let mut t = ChangeTracker::new(false);
        commit(&mut t, &[(0, 0, b"a", b"")]);
        assert_eq!(outstanding(&t), 0);
        assert_eq!(t.seal(CheckpointId(1)).len(), 0);
    }
}
