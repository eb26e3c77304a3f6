//! Incremental checkpoints of the "change log on a base" family, for backends without
//! immutable files to share (heap, LMDB).
//!
//! A backend embeds one [`ChangelogChain`]. At an incremental checkpoint it asks the chain for
//! a [`ChangelogPlan`]: either a new full **base**, or a **delta** holding what changed since
//! the last *completed* checkpoint (a pending or aborted checkpoint is never a base, Flink's
//! rule). The backend supplies the matching [`KeyedSnapshotView`]: the full view for a base;
//! for a delta, a view that emits, for every (state, key, namespace) changed since that
//! checkpoint, a [`crate::RowValue::Tombstone`] row followed by the current rows, if any.
//! [`ChangelogSnapshotJob`] writes it in the canonical format under `shared/` and returns a
//! [`KeyedStateHandle::Changelog`] naming the base and every delta of the chain so far.
//! Restore (with or without rescaling) applies base then deltas, each read by key-group range.
//!
//! The chain is re-based (a new full base) when it has [`ChangelogPolicy::max_deltas`] deltas
//! or the deltas together exceed [`ChangelogPolicy::max_delta_bytes_ratio`] of the base, which
//! bounds both restore time and the space old bases pin.
//!
//! Change tracking is the backend's: it must know, per checkpoint, which (state, key group,
//! key, namespace) changed, and keep the changes of pending and aborted checkpoints until a
//! later checkpoint completes. [`ChangeLog`] is a ready implementation.
//!
//! ## When a chain ends (the same rule for every backend)
//!
//! A delta is only as good as the files it builds on, and the coordinator's retention deletes
//! shared files no retained checkpoint references. Notices can be lost, late, duplicated or
//! reordered, so the chain never trusts its base longer than it must:
//! - A **completed full checkpoint** ends the chain (its files are not the chain's, and once it
//!   completes, retention may drop every checkpoint that referenced the old base). Register
//!   full checkpoints with [`ChangelogChain::record_full`]; a backend whose full checkpoint is
//!   itself a base (written with [`ChangelogPlan::Base`]) needs nothing more.
//! - An **aborted checkpoint newer than the base** ends the chain: the coordinator may have
//!   refused it because a file of the chain is gone (e.g. after a lost completion notice).
//! - Before a delta is uploaded, [`ChangelogSnapshotJob`] checks that every file of its chain
//!   still exists with its size; if one is gone, the chain ends and the checkpoint fails with
//!   [`Error::CheckpointState`]. Shared files are deleted only while no checkpoint is pending
//!   ([`crate::lifecycle`]), so a check made after the checkpoint began cannot be overtaken.
//!
//! So whatever happens to notices, at most one checkpoint attempt fails before the next
//! writes a new base.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{BoxFuture, KeyedSnapshotView, SnapshotJob};
use crate::checkpoint::{CheckpointId, CheckpointStorage, FileRef, KeyedStateHandle};
use crate::error::{Error, Result};
use crate::key_groups::{KeyGroup, KeyGroupRange};
use crate::snapshot::{
    keyed_file_name, lineage_name, write_and_upload_with, FileLineage, KeyedFileRole,
    SnapshotFileKind,
};
use crate::state::StateId;

/// When to write a new base instead of another delta.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangelogPolicy {
    /// Re-base once the chain holds this many deltas.
    pub max_deltas: usize,
    /// Re-base once the deltas' bytes exceed this multiple of the base's bytes.
    pub max_delta_bytes_ratio: f64,
}

impl Default for ChangelogPolicy {
    fn default() -> Self {
        Self {
            max_deltas: 8,
            max_delta_bytes_ratio: 1.0,
        }
    }
}

/// What the next incremental checkpoint writes.
///
/// Exhaustive on purpose: the backend must capture the view that matches the plan (full for a
/// base, changes for a delta), so a new plan must be a compile error in each backend.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangelogPlan {
    /// A full base; the chain restarts.
    Base,
    /// The changes since `since` (the last completed checkpoint) on top of its chain.
    Delta {
        /// The last completed checkpoint, whose state the delta builds on.
        since: CheckpointId,
        /// The files of `since`'s chain, which the new delta extends.
        chain: ChainFiles,
    },
}

/// The files of one chain: a base and its deltas, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainFiles {
    /// The key groups the files hold.
    pub key_group_range: KeyGroupRange,
    /// The full base file, under `shared/`.
    pub base: FileRef,
    /// The delta files on the base, oldest first, under `shared/`.
    pub deltas: Vec<FileRef>,
}

impl ChainFiles {
    fn handle(&self) -> KeyedStateHandle {
        KeyedStateHandle::Changelog {
            key_group_range: self.key_group_range,
            base: self.base.clone(),
            deltas: self.deltas.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct ChainState {
    completed: Option<(CheckpointId, ChainFiles)>,
    pending: BTreeMap<CheckpointId, ChainFiles>,
    /// Full checkpoints outside the chain, taken and neither completed nor aborted.
    pending_full: BTreeSet<CheckpointId>,
}

impl ChainState {
    /// True when `id` is newer than the chain's base (or there is no base).
    fn newer_than_base(&self, id: CheckpointId) -> bool {
        self.completed.as_ref().is_none_or(|(base, _)| *base < id)
    }

    /// Ends the chain because of checkpoint `at`: checkpoints taken before it were planned
    /// on the old base, so a late completion notice of one must not revive it.
    fn end(&mut self, at: CheckpointId) {
        self.completed = None;
        self.pending.retain(|p, _| *p > at);
    }
}

/// Tracks the chain of completed and pending incremental checkpoints of one backend.
#[derive(Debug, Default)]
pub struct ChangelogChain {
    policy: ChangelogPolicy,
    state: Mutex<ChainState>,
}

impl ChangelogChain {
    /// A chain with no base yet: the first incremental checkpoint writes one.
    pub fn new(policy: ChangelogPolicy) -> Self {
        Self {
            policy,
            state: Mutex::default(),
        }
    }

    /// When the chain re-bases.
    pub fn policy(&self) -> &ChangelogPolicy {
        &self.policy
    }

    /// Decides what the next incremental checkpoint writes.
    pub fn plan(&self) -> ChangelogPlan {
        let state = self.state.lock();
        let Some((since, chain)) = &state.completed else {
            return ChangelogPlan::Base;
        };
        let delta_bytes: u64 = chain.deltas.iter().map(|d| d.size).sum();
        let too_long = chain.deltas.len() >= self.policy.max_deltas;
        let too_big =
            delta_bytes as f64 > chain.base.size as f64 * self.policy.max_delta_bytes_ratio;
        if too_long || too_big {
            ChangelogPlan::Base
        } else {
            ChangelogPlan::Delta {
                since: *since,
                chain: chain.clone(),
            }
        }
    }

    /// The last completed checkpoint, if any.
    pub fn last_completed(&self) -> Option<CheckpointId> {
        self.state.lock().completed.as_ref().map(|(id, _)| *id)
    }

    fn record_pending(&self, id: CheckpointId, files: ChainFiles) {
        self.state.lock().pending.insert(id, files);
    }

    /// Records that the backend took full checkpoint `id` outside the chain: if it
    /// completes, the chain ends (see the module docs).
    pub fn record_full(&self, id: CheckpointId) {
        self.state.lock().pending_full.insert(id);
    }

    /// Checkpoint `id` completed. A chain checkpoint becomes the base of later deltas (true
    /// is returned); a full checkpoint newer than the base ends the chain. Pending checkpoints
    /// older than `id` are dropped (they can no longer complete usefully). Duplicated, late
    /// and unknown notices change nothing and return false.
    pub fn complete(&self, id: CheckpointId) -> bool {
        let mut state = self.state.lock();
        let full = state.pending_full.remove(&id);
        state.pending_full.retain(|p| *p > id);
        if full {
            if state.newer_than_base(id) {
                state.end(id);
            }
            return false;
        }
        let Some(files) = state.pending.remove(&id) else {
            return false;
        };
        if state.newer_than_base(id) {
            state.completed = Some((id, files));
        }
        state.pending.retain(|p, _| *p > id);
        true
    }

    /// Checkpoint `id` was aborted: it never becomes a base, and if it is newer than the base
    /// (other than a full checkpoint), the chain ends: the coordinator may have refused it
    /// because a file of the chain is gone.
    pub fn abort(&self, id: CheckpointId) {
        let mut state = self.state.lock();
        state.pending.remove(&id);
        let full = state.pending_full.remove(&id);
        if !full && state.newer_than_base(id) {
            state.end(id);
        }
    }

    /// Ends the chain because checkpoint `at` could not build on it: the next incremental
    /// checkpoint writes a new base, and checkpoints taken before `at` never become bases.
    pub fn reset(&self, at: CheckpointId) {
        self.state.lock().end(at);
    }
}

/// Fails (and ends the chain) unless every file of `chain` exists with the size it had.
async fn check_chain_files(
    storage: &CheckpointStorage,
    chain: &ChainFiles,
    owner: &ChangelogChain,
    checkpoint_id: CheckpointId,
) -> Result<()> {
    for file in std::iter::once(&chain.base).chain(chain.deltas.iter()) {
        let found = storage.size_of(&file.path).await?;
        if found != Some(file.size) {
            owner.reset(checkpoint_id);
            let what = match found {
                None => "is gone".to_string(),
                Some(size) => format!("has {size} bytes instead of {}", file.size),
            };
            return Err(Error::CheckpointState {
                id: checkpoint_id.0,
                state: "not written",
                reason: format!(
                    "its incremental base file {} {what} (retention deleted it after a completion notice this backend did not receive); the next checkpoint writes a new base",
                    file.path
                ),
            });
        }
    }
    Ok(())
}

/// The async half of an incremental changelog checkpoint.
pub struct ChangelogSnapshotJob {
    view: Box<dyn KeyedSnapshotView>,
    plan: ChangelogPlan,
    chain: Arc<ChangelogChain>,
    checkpoint_id: CheckpointId,
    file_name: String,
}

impl ChangelogSnapshotJob {
    /// `view` must be the full view for [`ChangelogPlan::Base`] and the delta view (changes
    /// since the plan's `since`) for [`ChangelogPlan::Delta`]. The file is named by
    /// [`crate::snapshot::keyed_file_name`] from the backend's name and the subtask index.
    pub fn new(
        view: Box<dyn KeyedSnapshotView>,
        plan: ChangelogPlan,
        chain: Arc<ChangelogChain>,
        checkpoint_id: CheckpointId,
        backend: &str,
        subtask_index: u32,
    ) -> Self {
        let role = match plan {
            ChangelogPlan::Base => KeyedFileRole::Base,
            ChangelogPlan::Delta { .. } => KeyedFileRole::Delta,
        };
        let file_name = keyed_file_name(backend, subtask_index, checkpoint_id, role);
        Self {
            view,
            plan,
            chain,
            checkpoint_id,
            file_name,
        }
    }
}

impl SnapshotJob for ChangelogSnapshotJob {
    fn run(
        self: Box<Self>,
        storage: CheckpointStorage,
    ) -> BoxFuture<'static, Result<KeyedStateHandle>> {
        Box::pin(async move {
            let path = CheckpointStorage::shared_path(&self.file_name);
            let range = self.view.key_group_range();
            let files = match self.plan {
                ChangelogPlan::Base => {
                    // Lineage lets restore detect a missing or reordered delta.
                    let lineage = FileLineage {
                        checkpoint_id: self.checkpoint_id,
                        previous: None,
                    };
                    let base = write_and_upload_with(
                        &storage,
                        self.view.as_ref(),
                        SnapshotFileKind::Full,
                        Some(lineage),
                        &path,
                        true,
                    )
                    .await?;
                    ChainFiles {
                        key_group_range: range,
                        base,
                        deltas: Vec::new(),
                    }
                }
                ChangelogPlan::Delta { chain, .. } => {
                    check_chain_files(&storage, &chain, &self.chain, self.checkpoint_id).await?;
                    let previous = chain.deltas.last().unwrap_or(&chain.base);
                    let lineage = FileLineage {
                        checkpoint_id: self.checkpoint_id,
                        previous: Some(lineage_name(previous).to_string()),
                    };
                    let delta = write_and_upload_with(
                        &storage,
                        self.view.as_ref(),
                        SnapshotFileKind::Delta,
                        Some(lineage),
                        &path,
                        true,
                    )
                    .await?;
                    let mut files = chain;
                    files.deltas.push(delta);
                    files
                }
            };
            let handle = files.handle();
            self.chain.record_pending(self.checkpoint_id, files);
            Ok(handle)
        })
    }
}

/// One changed (state, key group, key, namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChangedKey {
    /// The key's key group; the first field, so changes sort by key group, the order a delta
    /// is written in.
    pub key_group: KeyGroup,
    /// The state written.
    pub state: StateId,
    /// The key's canonical serialized bytes.
    pub key: Box<[u8]>,
    /// The namespace's serialized bytes.
    pub namespace: Box<[u8]>,
}

/// A ready change tracker: the keys changed in the current epoch, and sealed sets of the
/// checkpoints taken since the last completed one.
#[derive(Debug, Default)]
pub struct ChangeLog {
    inner: Mutex<ChangeLogState>,
}

#[derive(Debug, Default)]
struct ChangeLogState {
    current: HashSet<ChangedKey>,
    sealed: BTreeMap<CheckpointId, HashSet<ChangedKey>>,
}

impl ChangeLog {
    /// A tracker with no change recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a change. Called on every write while incremental checkpoints are on.
    pub fn record(&self, state: StateId, key_group: KeyGroup, key: &[u8], namespace: &[u8]) {
        let changed = ChangedKey {
            key_group,
            state,
            key: key.into(),
            namespace: namespace.into(),
        };
        self.inner.lock().current.insert(changed);
    }

    /// Seals the changes up to checkpoint `id` (call in the synchronous part, under the same
    /// exclusion as taking the view) and returns every change since the last completed
    /// checkpoint, sorted by key group: the rows a delta must carry.
    pub fn seal(&self, id: CheckpointId) -> Vec<ChangedKey> {
        let mut inner = self.inner.lock();
        let current = std::mem::take(&mut inner.current);
        inner.sealed.entry(id).or_default().extend(current);
        let mut all: Vec<ChangedKey> = inner
            .sealed
            .values()
            .flat_map(|set| set.iter().cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        all.sort();
        all
    }

    /// Checkpoint `id` completed: its changes and older ones are in a completed checkpoint.
    /// Call it only when [`ChangelogChain::complete`] returned true for `id`: a checkpoint the
    /// chain does not know (a full snapshot) is no base, so its changes must stay tracked.
    pub fn complete(&self, id: CheckpointId) {
        self.inner.lock().sealed.retain(|c, _| *c > id);
    }

    /// Number of keys changed since the last completed checkpoint (sealed or not).
    pub fn pending_changes(&self) -> usize {
        let inner = self.inner.lock();
        inner.current.len() + inner.sealed.values().map(HashSet::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> FileRef {
        FileRef {
            path: name.into(),
            size,
            shared: true,
        }
    }

    #[test]
    fn only_completed_checkpoints_are_bases_and_chains_rebase() {
        let chain = ChangelogChain::new(ChangelogPolicy {
            max_deltas: 2,
            max_delta_bytes_ratio: 10.0,
        });
        let range = KeyGroupRange::new(0, 3).unwrap();
        assert_eq!(chain.plan(), ChangelogPlan::Base);
        let base = ChainFiles {
            key_group_range: range,
            base: file("b", 100),
            deltas: vec![],
        };
        chain.record_pending(CheckpointId(1), base.clone());
        assert_eq!(chain.plan(), ChangelogPlan::Base, "pending is no base");
        chain.abort(CheckpointId(1));
        assert!(!chain.complete(CheckpointId(1)));
        chain.record_pending(CheckpointId(2), base.clone());
        assert!(chain.complete(CheckpointId(2)));
        let ChangelogPlan::Delta { since, chain: c } = chain.plan() else {
            panic!("expected a delta")
        };
        assert_eq!(since, CheckpointId(2));
        let mut one = c.clone();
        one.deltas.push(file("d1", 5));
        chain.record_pending(CheckpointId(3), one.clone());
        chain.complete(CheckpointId(3));
        let mut two = one.clone();
        two.deltas.push(file("d2", 5));
        chain.record_pending(CheckpointId(4), two);
        chain.complete(CheckpointId(4));
        assert_eq!(chain.plan(), ChangelogPlan::Base, "two deltas: re-base");
    }

    fn base_of(chain: &ChangelogChain) -> Option<CheckpointId> {
        match chain.plan() {
            ChangelogPlan::Base => None,
            ChangelogPlan::Delta { since, .. } => Some(since),
        }
    }

    #[test]
    fn full_completions_and_newer_aborts_end_the_chain() {
        let chain = ChangelogChain::new(ChangelogPolicy::default());
        let files = ChainFiles {
            key_group_range: KeyGroupRange::new(0, 3).unwrap(),
            base: file("b", 100),
            deltas: vec![],
        };
        chain.record_pending(CheckpointId(1), files.clone());
        assert!(chain.complete(CheckpointId(1)));
        assert_eq!(base_of(&chain), Some(CheckpointId(1)));

        // A full checkpoint that completes ends the chain; its duplicate notice is harmless.
        chain.record_full(CheckpointId(2));
        assert!(!chain.complete(CheckpointId(2)));
        assert_eq!(base_of(&chain), None);
        assert!(!chain.complete(CheckpointId(2)));

        // An aborted full checkpoint does not end it.
        chain.record_pending(CheckpointId(3), files.clone());
        assert!(chain.complete(CheckpointId(3)));
        chain.record_full(CheckpointId(4));
        chain.abort(CheckpointId(4));
        assert_eq!(base_of(&chain), Some(CheckpointId(3)));

        // A late notice of an older full checkpoint does not end the newer chain.
        chain.record_full(CheckpointId(5));
        chain.record_pending(CheckpointId(6), files.clone());
        assert!(chain.complete(CheckpointId(6)));
        assert!(!chain.complete(CheckpointId(5)));
        assert_eq!(base_of(&chain), Some(CheckpointId(6)));

        // An abort older than the base (subsumed, or a duplicate) changes nothing; a newer
        // one (a delta the coordinator refused) ends the chain.
        chain.abort(CheckpointId(5));
        chain.abort(CheckpointId(6));
        assert_eq!(base_of(&chain), Some(CheckpointId(6)));
        chain.abort(CheckpointId(7));
        assert_eq!(base_of(&chain), None);

        // A checkpoint taken before the chain ended never becomes a base, even if its
        // completion notice arrives late: it was planned on the old base.
        chain.record_pending(CheckpointId(8), files.clone());
        chain.abort(CheckpointId(9));
        assert!(!chain.complete(CheckpointId(8)));
        assert_eq!(base_of(&chain), None);
        chain.record_pending(CheckpointId(10), files.clone());
        chain.record_full(CheckpointId(11));
        assert!(!chain.complete(CheckpointId(11)));
        assert!(
            !chain.complete(CheckpointId(10)),
            "subsumed by the full checkpoint"
        );
        assert_eq!(base_of(&chain), None);
    }

    #[test]
    fn a_delta_on_a_deleted_base_fails_once_and_the_chain_restarts() {
        let storage = CheckpointStorage::in_memory();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let base = rt
            .block_on(storage.put("shared/base", bytes::Bytes::from_static(b"0123"), true))
            .unwrap();
        let chain = ChangelogChain::new(ChangelogPolicy::default());
        let files = ChainFiles {
            key_group_range: KeyGroupRange::new(0, 3).unwrap(),
            base,
            deltas: vec![],
        };
        chain.record_pending(CheckpointId(1), files.clone());
        assert!(chain.complete(CheckpointId(1)));
        rt.block_on(check_chain_files(&storage, &files, &chain, CheckpointId(2)))
            .unwrap();
        assert_eq!(base_of(&chain), Some(CheckpointId(1)));
        rt.block_on(storage.delete("shared/base")).unwrap();
        let err = rt
            .block_on(check_chain_files(&storage, &files, &chain, CheckpointId(2)))
            .unwrap_err();
        assert!(matches!(err, Error::CheckpointState { id: 2, .. }), "{err}");
        assert_eq!(base_of(&chain), None, "the next checkpoint writes a base");
    }

    #[test]
    fn change_log_keeps_changes_of_uncompleted_checkpoints() {
        let log = ChangeLog::new();
        let kg = KeyGroup::from_validated(1).unwrap();
        log.record(StateId(0), kg, b"a", b"");
        assert_eq!(log.seal(CheckpointId(1)).len(), 1);
        log.record(StateId(0), kg, b"b", b"");
        // checkpoint 1 was never completed: its change is still in the next delta
        assert_eq!(log.seal(CheckpointId(2)).len(), 2);
        log.complete(CheckpointId(2));
        assert_eq!(log.pending_changes(), 0);
        log.record(StateId(0), kg, b"c", b"");
        assert_eq!(log.seal(CheckpointId(3)).len(), 1);
    }
}
