//! [`LmdbSnapshotView`]: a point-in-time view on an LMDB read transaction, and the backend's
//! `StateBackend` side (capturing views for snapshot jobs, checkpoint notifications).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowstate_api::changelog::{ChangelogPlan, ChangelogSnapshotJob};
use flowstate_api::snapshot::CanonicalSnapshotJob;
use flowstate_api::state::StorageLayout;
use flowstate_api::{
    CheckpointId, Error, KeyGroup, KeyGroupRange, KeyedSnapshotView, MaxParallelism, Result,
    RowValue, SnapshotJob, SnapshotKind, SnapshotRequest, StateBackend, StateId, StateMetadata,
    StateRow,
};
use heed::{Env, RoTxn, WithoutTls};
use parking_lot::Mutex;

use crate::backend::LmdbBackend;
use crate::changes::ChangeSet;
use crate::env::{db_of, layouts, Inner, StateDb, WriteOutcome};
use crate::error::LmdbError;
use crate::key_layout::decode_key;
use crate::overlay::{scan_merged, Overlay};

/// A read transaction owned by a snapshot view, counted so that the map is never resized
/// under it.
struct PinnedRead {
    // `RoTxn<WithoutTls>` is `Send` but not `Sync`; the mutex makes the view `Sync`.
    txn: Mutex<Option<RoTxn<'static, WithoutTls>>>,
    active_readers: Arc<AtomicUsize>,
}

impl PinnedRead {
    /// Call under the backend mutex (see `Inner::grow_map`).
    fn begin(env: &Env<WithoutTls>, active_readers: &Arc<AtomicUsize>) -> Result<Self> {
        active_readers.fetch_add(1, Ordering::SeqCst);
        match env.clone().static_read_txn() {
            Ok(txn) => Ok(Self {
                txn: Mutex::new(Some(txn)),
                active_readers: active_readers.clone(),
            }),
            Err(e) => {
                active_readers.fetch_sub(1, Ordering::SeqCst);
                Err(LmdbError::heed("opening a snapshot's read transaction", e).into())
            }
        }
    }
}

impl Drop for PinnedRead {
    fn drop(&mut self) {
        // Close the transaction before the count says it is gone.
        drop(self.txn.get_mut().take());
        self.active_readers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A consistent view of an [`LmdbBackend`]: an LMDB read transaction taken right after the
/// write buffer was flushed (or, when the map was full and could not grow, a frozen copy of
/// the buffer on top of it). Writers go on while it is read.
pub struct LmdbSnapshotView {
    read: PinnedRead,
    max: MaxParallelism,
    range: KeyGroupRange,
    states: Vec<(StateId, StateMetadata)>,
    dbs: Vec<StateDb>,
    /// Buffered writes not in LMDB at capture (only when the flush had to be postponed).
    frozen: Option<Arc<Overlay>>,
    max_key_size: usize,
    /// `Some`: a delta view of these changes; `None`: everything.
    changes: Option<Arc<ChangeSet>>,
}

impl LmdbSnapshotView {
    /// Visits the current rows of `db` under `prefix`.
    fn visit_prefix(
        &self,
        txn: &RoTxn<'static, WithoutTls>,
        state: StateId,
        db: StateDb,
        prefix: &[u8],
        visit: &mut dyn FnMut(StateRow<'_>) -> Result<()>,
    ) -> Result<()> {
        let buffered = self.frozen.as_ref().and_then(|o| o.state(state));
        scan_merged(
            txn,
            db.db,
            buffered,
            prefix,
            self.max_key_size,
            &mut |k, v| {
                visit(row(state, db.layout, k, v)?)?;
                Ok(ControlFlow::Continue(()))
            },
        )
    }
}

/// The snapshot row of one stored entry.
fn row<'a>(
    state: StateId,
    layout: StorageLayout,
    stored_key: &'a [u8],
    value: &'a [u8],
) -> Result<StateRow<'a>> {
    let decoded = decode_key(stored_key)?;
    let value = match layout {
        StorageLayout::Map => RowValue::MapEntry {
            user_key: decoded.user_key,
            value,
        },
        _ if !decoded.user_key.is_empty() => {
            return Err(LmdbError::CorruptKey(format!(
                "a {layout:?} entry has {} trailing bytes",
                decoded.user_key.len()
            ))
            .into())
        }
        StorageLayout::List => RowValue::List(value),
        StorageLayout::Value => RowValue::Value(value),
    };
    Ok(StateRow {
        state,
        key: decoded.key,
        namespace: decoded.namespace,
        value,
    })
}

impl KeyedSnapshotView for LmdbSnapshotView {
    fn max_parallelism(&self) -> MaxParallelism {
        self.max
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn states(&self) -> Vec<(StateId, StateMetadata)> {
        self.states.clone()
    }

    fn for_each_row(
        &self,
        key_group: KeyGroup,
        visit: &mut dyn FnMut(StateRow<'_>) -> Result<()>,
    ) -> Result<()> {
        self.range.check_owns(key_group)?;
        let guard = self.read.txn.lock();
        let txn = guard.as_ref().ok_or_else(|| Error::InvalidUse {
            detail: "the snapshot view's read transaction was already released".into(),
        })?;
        match &self.changes {
            None => {
                let prefix = key_group.to_be_bytes();
                for (state, _) in &self.states {
                    self.visit_prefix(txn, *state, db_of(&self.dbs, *state)?, &prefix, visit)?;
                }
            }
            Some(changes) => {
                for (state, prefix) in changes.of_key_group(key_group) {
                    let decoded = decode_key(prefix)?;
                    visit(StateRow {
                        state,
                        key: decoded.key,
                        namespace: decoded.namespace,
                        value: RowValue::Tombstone,
                    })?;
                    self.visit_prefix(txn, state, db_of(&self.dbs, state)?, prefix, visit)?;
                }
            }
        }
        Ok(())
    }
}

/// What a capture takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Capture {
    /// Everything; change tracking untouched (full snapshots without change tracking).
    Full,
    /// Everything, as the new base of the incremental chain: seals the checkpoint's changes.
    Base(CheckpointId),
    /// The changes since the last completed checkpoint: seals the checkpoint's changes.
    Delta(CheckpointId),
}

impl LmdbBackend {
    /// Captures a consistent view under the backend mutex: flushes the write buffer, then
    /// opens a read transaction (MVCC: later commits do not disturb it).
    fn capture(&self, inner: &mut Inner, capture: Capture) -> Result<LmdbSnapshotView> {
        let frozen = match inner.flush(&self.config, &self.active_readers)? {
            WriteOutcome::Committed => None,
            // The map is full and other snapshots pin it: keep the buffer on top of LMDB.
            WriteOutcome::Deferred => {
                let changes = inner.changes.prepare(&inner.overlay, layouts(&inner.dbs))?;
                inner.changes.record(changes);
                Some(Arc::new(inner.overlay.clone()))
            }
        };
        let read = PinnedRead::begin(&inner.env, &self.active_readers)?;
        let changes = match capture {
            Capture::Full => None,
            Capture::Base(id) => {
                inner.changes.seal(id);
                None
            }
            Capture::Delta(id) => {
                let changes = inner.changes.seal(id);
                tracing::debug!(checkpoint = id.0, changed = changes.len(), "delta snapshot");
                Some(changes)
            }
        };
        let states = self
            .registry
            .all()
            .into_iter()
            .filter(|(id, _)| id.index() < inner.dbs.len())
            .collect();
        Ok(LmdbSnapshotView {
            read,
            max: self.max,
            range: self.range,
            states,
            dbs: inner.dbs.clone(),
            frozen,
            max_key_size: self.max_key_size,
            changes,
        })
    }

    /// A full view of the current state (what a full snapshot writes).
    pub fn full_view(&self) -> Result<LmdbSnapshotView> {
        self.capture(&mut self.inner.lock(), Capture::Full)
    }
}

impl StateBackend for LmdbBackend {
    fn snapshot(&self, request: &SnapshotRequest) -> Result<Box<dyn SnapshotJob>> {
        let id = request.checkpoint_id;
        let mut inner = self.inner.lock();
        if !inner.changes.enabled() {
            let view = self.capture(&mut inner, Capture::Full)?;
            drop(inner);
            return Ok(Box::new(CanonicalSnapshotJob::for_request(
                Box::new(view),
                "lmdb",
                request,
            )));
        }
        // With change tracking, a full snapshot is written as the base of a new chain: it is
        // complete on its own, and later incremental checkpoints build on it instead of on an
        // older base that retention may delete once this checkpoint completes. The plan is
        // made under the mutex that completion also takes, so base and sealed changes agree.
        let plan = match request.kind {
            SnapshotKind::Incremental => self.chain.plan(),
            // Full, and kinds this backend does not know: a full snapshot.
            _ => ChangelogPlan::Base,
        };
        let capture = match plan {
            ChangelogPlan::Base => Capture::Base(id),
            ChangelogPlan::Delta { .. } => Capture::Delta(id),
        };
        let view = self.capture(&mut inner, capture)?;
        drop(inner);
        Ok(Box::new(ChangelogSnapshotJob::new(
            Box::new(view),
            plan,
            self.chain.clone(),
            id,
            "lmdb",
            request.subtask_index,
        )))
    }

    fn notify_checkpoint_complete(&self, id: CheckpointId) -> Result<()> {
        let mut inner = self.inner.lock();
        // The chain knows every checkpoint this backend wrote while tracking changes.
        if self.chain.complete(id) {
            inner.changes.complete(id);
        }
        Ok(())
    }

    fn notify_checkpoint_aborted(&self, id: CheckpointId) -> Result<()> {
        // Its changes stay tracked: they go into the next delta.
        self.chain.abort(id);
        Ok(())
    }
}
