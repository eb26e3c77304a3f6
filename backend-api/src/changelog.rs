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

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{BoxFuture, KeyedSnapshotView, SnapshotJob};
use crate::checkpoint::{CheckpointId, CheckpointStorage, FileRef, KeyedStateHandle};
use crate::error::Result;
use crate::key_groups::{KeyGroup, KeyGroupRange};
use crate::snapshot::{write_and_upload, SnapshotFileKind};
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
#[derive(Clone, Debug, PartialEq)]
pub enum ChangelogPlan {
    /// A full base; the chain restarts.
    Base,
    /// The changes since `since` (the last completed checkpoint) on top of its chain.
    Delta {
        since: CheckpointId,
        chain: ChainFiles,
    },
}

/// The files of one chain: a base and its deltas, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainFiles {
    pub key_group_range: KeyGroupRange,
    pub base: FileRef,
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
}

/// Tracks the chain of completed and pending incremental checkpoints of one backend.
#[derive(Debug, Default)]
pub struct ChangelogChain {
    policy: ChangelogPolicy,
    state: Mutex<ChainState>,
}

impl ChangelogChain {
    pub fn new(policy: ChangelogPolicy) -> Self {
        Self {
            policy,
            state: Mutex::default(),
        }
    }

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

    /// Checkpoint `id` completed: its chain becomes the base of later deltas. Pending
    /// checkpoints older than `id` are dropped (they can no longer complete usefully).
    /// Returns false when `id` was not a pending checkpoint of this chain.
    pub fn complete(&self, id: CheckpointId) -> bool {
        let mut state = self.state.lock();
        let Some(files) = state.pending.remove(&id) else {
            return false;
        };
        if state.completed.as_ref().is_none_or(|(c, _)| *c < id) {
            state.completed = Some((id, files));
        }
        state.pending.retain(|p, _| *p > id);
        true
    }

    /// Checkpoint `id` was aborted: it never becomes a base.
    pub fn abort(&self, id: CheckpointId) {
        self.state.lock().pending.remove(&id);
    }
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
    /// since the plan's `since`) for [`ChangelogPlan::Delta`]. `owner` names the writer
    /// uniquely among the job's subtasks (e.g. `sub-3`), so file names never collide.
    pub fn new(
        view: Box<dyn KeyedSnapshotView>,
        plan: ChangelogPlan,
        chain: Arc<ChangelogChain>,
        checkpoint_id: CheckpointId,
        owner: &str,
    ) -> Self {
        let kind = match plan {
            ChangelogPlan::Base => "base",
            ChangelogPlan::Delta { .. } => "delta",
        };
        let file_name = format!(
            "{owner}-chk{:020}-{kind}-{:016x}.fsnap",
            checkpoint_id.0,
            unique_suffix()
        );
        Self {
            view,
            plan,
            chain,
            checkpoint_id,
            file_name,
        }
    }
}

/// Distinguishes files written by different backend instances in one storage (e.g. two
/// attempts of one checkpoint): time and a process-wide counter.
fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 48) ^ (std::process::id() as u64) << 32
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
                    let base = write_and_upload(
                        &storage,
                        self.view.as_ref(),
                        SnapshotFileKind::Full,
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
                    let delta = write_and_upload(
                        &storage,
                        self.view.as_ref(),
                        SnapshotFileKind::Delta,
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
    pub key_group: KeyGroup,
    pub state: StateId,
    pub key: Box<[u8]>,
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
