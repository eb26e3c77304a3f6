//! [`ReferenceSnapshotView`] and the checkpoint hooks ([`StateBackend`]) that capture it.

use flowstate_api::changelog::{ChangeLog, ChangedKey, ChangelogPlan, ChangelogSnapshotJob};
use flowstate_api::key_layout::{decode_key, key_group_bounds};
use flowstate_api::snapshot::CanonicalSnapshotJob;
use flowstate_api::state::StorageLayout;
use flowstate_api::{
    CheckpointId, Error, KeyGroup, KeyGroupRange, KeyedSnapshotView, MaxParallelism, Result,
    RowValue, SnapshotJob, SnapshotKind, SnapshotRequest, StateBackend, StateId, StateMetadata,
    StateRow,
};

use super::backend::{prefix_of, under, Inner, ReferenceBackend, Table};

/// A point-in-time copy of a [`ReferenceBackend`]'s keyed state: everything, or (a delta)
/// what changed since the base of the incremental chain.
pub struct ReferenceSnapshotView {
    max: MaxParallelism,
    range: KeyGroupRange,
    states: Vec<(StateId, StateMetadata)>,
    tables: Vec<Table>,
    /// `Some` for a delta: the changed (state, key, namespace)s, sorted by key group.
    changed: Option<Vec<ChangedKey>>,
}

impl ReferenceBackend {
    /// Copies the state; call under the lock (`inner` is its guard's content), so that the
    /// copy, the registered states and any sealed changes are of one instant.
    fn capture(&self, inner: &Inner, changed: Option<Vec<ChangedKey>>) -> ReferenceSnapshotView {
        ReferenceSnapshotView {
            max: self.max,
            range: self.range,
            states: self.registry.all(),
            tables: inner.tables.clone(),
            changed,
        }
    }
}

impl StateBackend for ReferenceBackend {
    fn snapshot(&self, request: &SnapshotRequest) -> Result<Box<dyn SnapshotJob>> {
        let id = request.checkpoint_id;
        // Writers wait for the copy, never for the upload (the job runs later).
        let mut inner = self.lock();
        if request.kind == SnapshotKind::Full {
            let view = self.capture(&inner, None);
            self.chain.record_full(id);
            let job = CanonicalSnapshotJob::for_request(Box::new(view), "reference", request);
            return Ok(Box::new(job));
        }
        // Planned and sealed under the lock completion takes: the delta's changes are exactly
        // those since the base the plan names.
        let plan = self.chain.plan();
        let changed = inner.changes.get_or_insert_with(ChangeLog::new).seal(id);
        let view = match plan {
            ChangelogPlan::Base => self.capture(&inner, None),
            ChangelogPlan::Delta { .. } => self.capture(&inner, Some(changed)),
        };
        drop(inner);
        let chain = self.chain.clone();
        let index = request.subtask_index;
        let job = ChangelogSnapshotJob::new(Box::new(view), plan, chain, id, "reference", index);
        Ok(Box::new(job))
    }

    fn notify_checkpoint_complete(&self, id: CheckpointId) -> Result<()> {
        let inner = self.lock();
        // Only a checkpoint of the chain becomes a base; its changes are then in a file.
        if self.chain.complete(id) {
            if let Some(changes) = &inner.changes {
                changes.complete(id);
            }
        }
        Ok(())
    }

    fn notify_checkpoint_aborted(&self, id: CheckpointId) -> Result<()> {
        // Its changes stay in the change log and go into the next delta.
        self.chain.abort(id);
        Ok(())
    }
}

/// The snapshot row of one stored entry of a state stored as `layout`.
fn row<'a>(
    state: StateId,
    layout: StorageLayout,
    stored: &'a [u8],
    value: &'a [u8],
) -> Result<StateRow<'a>> {
    let decoded = decode_key(stored)?;
    let value = match layout {
        StorageLayout::Value => RowValue::Value(value),
        StorageLayout::List => RowValue::List(value),
        StorageLayout::Map => RowValue::MapEntry {
            user_key: decoded.user_key,
            value,
        },
    };
    Ok(StateRow {
        state,
        key: decoded.key,
        namespace: decoded.namespace,
        value,
    })
}

impl KeyedSnapshotView for ReferenceSnapshotView {
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
        // A view covers exactly its range: asking for another key group is a caller's bug.
        self.range.check_owns(key_group)?;
        let Some(changed) = &self.changed else {
            // The key layout makes each key group one contiguous key range.
            let (lower, upper) = key_group_bounds(&KeyGroupRange::single(key_group));
            for ((state, _), table) in self.states.iter().zip(&self.tables) {
                for (k, v) in table.rows.range(lower.clone()..upper.clone()) {
                    visit(row(*state, table.layout, k, v)?)?;
                }
            }
            return Ok(());
        };
        // A delta: per changed (state, key, namespace), a tombstone, then what it holds now.
        let first = changed.partition_point(|c| c.key_group < key_group);
        let of_group = changed[first..]
            .iter()
            .take_while(|c| c.key_group == key_group);
        for c in of_group {
            let table = (self.tables.get(c.state.index()))
                .ok_or(Error::UnknownStateId { id: c.state.0 })?;
            visit(StateRow {
                state: c.state,
                key: &c.key,
                namespace: &c.namespace,
                value: RowValue::Tombstone,
            })?;
            for (k, v) in under(&table.rows, &prefix_of(key_group, &c.key, &c.namespace)) {
                visit(row(c.state, table.layout, k, v)?)?;
            }
        }
        Ok(())
    }
}
