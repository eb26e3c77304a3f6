//! Change tracking for changelog-incremental checkpoints.
//!
//! Every write records the `(state, key group, key, namespace)` it touched. A snapshot seals
//! the changes made since the previous snapshot under its checkpoint id; the delta of a
//! checkpoint is every change not yet covered by a *completed* checkpoint: the sealed sets of
//! pending or aborted checkpoints plus the changes since the last snapshot. A completed
//! checkpoint drops its set and every older one.
//!
//! These are the semantics of [`flowstate_api::changelog::ChangeLog`]; this tracker lives
//! under the backend's mutex instead of taking its own, and stores a change as one byte string
//! looked up before it is copied, so re-writing a key already recorded allocates nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use flowstate_api::{CheckpointId, KeyGroup, StateId};

/// One tracked change in byte form:
/// `[key group: 2 bytes BE] [state: 4 bytes BE] [len(key)] [key] [len(namespace)] [namespace]`.
/// Sorting these sorts by key group first, the order deltas are written in.
pub(crate) type ChangeKey = Box<[u8]>;

/// The key group and state of a change key, and the LMDB prefix of its `(key, namespace)`.
pub(crate) fn split_change_key(change: &[u8]) -> Option<(StateId, Vec<u8>)> {
    let (group, rest) = change.split_first_chunk::<2>()?;
    let (state, rest) = rest.split_first_chunk::<4>()?;
    let mut prefix = Vec::with_capacity(2 + rest.len());
    prefix.extend_from_slice(group);
    prefix.extend_from_slice(rest);
    Some((StateId(u32::from_be_bytes(*state)), prefix))
}

/// The changes a delta covers, sorted (hence grouped by key group).
#[derive(Debug, Default)]
pub(crate) struct ChangeSet {
    sorted: Vec<ChangeKey>,
}

impl ChangeSet {
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The changes of `key_group`.
    pub(crate) fn of_key_group(&self, key_group: KeyGroup) -> &[ChangeKey] {
        let group = key_group.to_be_bytes();
        let start = self.sorted.partition_point(|c| c[..2] < group[..]);
        let end = self.sorted.partition_point(|c| c[..2] <= group[..]);
        &self.sorted[start..end]
    }
}

/// Which keys changed since the last completed checkpoint, per checkpoint.
#[derive(Debug, Default)]
pub(crate) struct ChangeTracker {
    enabled: bool,
    /// Changes since the last snapshot.
    current: HashSet<ChangeKey>,
    /// Changes sealed by snapshots of checkpoints not (yet) known complete.
    sealed: BTreeMap<CheckpointId, HashSet<ChangeKey>>,
    scratch: Vec<u8>,
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

    /// Records a write to `(state, key, namespace)`.
    pub(crate) fn record(&mut self, state: StateId, key_group: KeyGroup, key: &[u8], ns: &[u8]) {
        if !self.enabled {
            return;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&key_group.to_be_bytes());
        self.scratch.extend_from_slice(&state.0.to_be_bytes());
        crate::keys::push_key_and_namespace(&mut self.scratch, key, ns);
        if !self.current.contains(self.scratch.as_slice()) {
            self.current.insert(self.scratch.as_slice().into());
        }
    }

    /// Seals the changes since the last snapshot under `id` and returns every change since the
    /// last completed checkpoint.
    pub(crate) fn seal(&mut self, id: CheckpointId) -> Arc<ChangeSet> {
        let current = std::mem::take(&mut self.current);
        self.sealed.entry(id).or_default().extend(current);
        let mut union: HashSet<&ChangeKey> = HashSet::new();
        for set in self.sealed.values() {
            union.extend(set.iter());
        }
        let mut sorted: Vec<ChangeKey> = union.into_iter().cloned().collect();
        sorted.sort_unstable();
        Arc::new(ChangeSet { sorted })
    }

    /// Checkpoint `id` completed: its changes and all older ones are in a completed
    /// checkpoint now.
    pub(crate) fn complete(&mut self, id: CheckpointId) {
        self.sealed.retain(|sealed, _| *sealed > id);
    }

    /// Number of distinct changes not yet covered by a completed checkpoint (for tests and
    /// diagnostics).
    pub(crate) fn outstanding(&self) -> usize {
        let mut union: HashSet<&ChangeKey> = self.current.iter().collect();
        for set in self.sealed.values() {
            union.extend(set.iter());
        }
        union.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kg(v: u32) -> KeyGroup {
        KeyGroup::from_validated(v).unwrap()
    }

    #[test]
    fn pending_and_aborted_changes_stay_until_a_later_completion() {
        let mut t = ChangeTracker::new(true);
        t.record(StateId(0), kg(3), b"a", b"");
        t.record(StateId(0), kg(3), b"a", b"");
        let c1 = t.seal(CheckpointId(1));
        assert_eq!(c1.len(), 1);
        // Checkpoint 1 is aborted (nothing to do): its change is still in checkpoint 2.
        t.record(StateId(1), kg(1), b"b", b"n");
        let c2 = t.seal(CheckpointId(2));
        assert_eq!(c2.len(), 2);
        assert_eq!(c2.of_key_group(kg(1)).len(), 1);
        assert_eq!(c2.of_key_group(kg(2)).len(), 0);
        let (state, prefix) = split_change_key(&c2.of_key_group(kg(3))[0]).unwrap();
        assert_eq!(state, StateId(0));
        let decoded = crate::keys::decode_key(&prefix).unwrap();
        assert_eq!((decoded.key, decoded.namespace), (&b"a"[..], &b""[..]));
        t.record(StateId(1), kg(1), b"c", b"");
        t.complete(CheckpointId(2));
        assert_eq!(t.outstanding(), 1);
        assert_eq!(t.seal(CheckpointId(3)).len(), 1);
    }

    #[test]
    fn disabled_tracker_records_nothing() {
        let mut t = ChangeTracker::new(false);
        t.record(StateId(0), kg(0), b"a", b"");
        assert_eq!(t.outstanding(), 0);
    }
}
