//! Snapshots and checkpoint bookkeeping of a [`HeapBackend`]: views opened and released,
//! snapshot plans (full, or a changelog base or delta), pending and completed incremental
//! checkpoints and their epochs, the changelog chain, and when change records are dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate_api::changelog::{ChangelogChain, ChangelogPlan, ChangelogSnapshotJob};
use flowstate_api::snapshot::CanonicalSnapshotJob;
use flowstate_api::{
    CheckpointId, Error, Result, SnapshotJob, SnapshotKind, SnapshotRequest, StateBackend,
};

use crate::backend::{HeapBackend, Inner};
use crate::cell::{LiveSnapshots, Versioned};
use crate::table::{KgTables, Storage};
use crate::view::HeapSnapshotView;

/// Change records are never a reason to re-base below this many (small states churn).
const MIN_RECORDS_BEFORE_REBASE: usize = 4096;

/// Incremental checkpoint bookkeeping: which snapshot epoch each checkpoint captured.
#[derive(Debug, Default)]
pub(crate) struct Checkpoints {
    /// Incremental checkpoints taken and neither completed nor aborted yet.
    pending: BTreeMap<CheckpointId, u64>,
    /// The last completed checkpoint of the changelog chain and its epoch.
    completed: Option<(CheckpointId, u64)>,
    /// Change records of epochs up to this one have been dropped.
    forgotten_through: u64,
    /// `since` epochs of live delta views: their changes are kept until the view is dropped.
    delta_floors: BTreeMap<u64, usize>,
}

impl HeapBackend {
    /// A consistent point-in-time view of all keyed state, taken in O(1) (it pins an epoch)
    /// and readable while writers go on. Writers keep the versions it reads until it is
    /// dropped.
    pub fn snapshot_view(&self) -> HeapSnapshotView {
        HeapSnapshotView::full(self.inner.clone())
    }

    /// A view of what changed since completed incremental checkpoint `since`: for every
    /// changed (state, key, namespace) a tombstone row, then its current rows (as of the
    /// view), in the canonical delta form. Fails when `since` is not the last completed
    /// checkpoint of the backend's changelog chain or change tracking is off.
    pub fn delta_view(&self, since: CheckpointId) -> Result<HeapSnapshotView> {
        let mut checkpoints = self.inner.checkpoints.lock();
        let since_epoch = self.inner.delta_base_epoch(&checkpoints, since)?;
        Ok(HeapSnapshotView::delta(
            self.inner.clone(),
            &mut checkpoints,
            since_epoch,
        ))
    }

    /// The changelog chain of this backend's incremental checkpoints.
    pub fn changelog_chain(&self) -> &Arc<ChangelogChain> {
        &self.inner.chain
    }
}

impl Inner {
    /// The epoch of `since`, if a delta since it can be produced.
    fn delta_base_epoch(&self, checkpoints: &Checkpoints, since: CheckpointId) -> Result<u64> {
        if !self.config.change_tracking {
            return Err(Error::Config(
                "change tracking is off in this heap backend's HeapConfig: take a full snapshot or turn it on".into(),
            ));
        }
        match checkpoints.completed {
            Some((id, epoch)) if id == since && epoch >= checkpoints.forgotten_through => Ok(epoch),
            _ => Err(Error::CheckpointState {
                id: since.0,
                state: "not a delta base",
                reason: "only the last completed incremental checkpoint of this backend can be the base of a delta: write a full base".into(),
            }),
        }
    }

    /// The view and plan of an incremental checkpoint: a delta on the chain's base when this
    /// backend still holds the changes since it, a full base otherwise.
    fn plan_view(
        self: &Arc<Self>,
        checkpoints: &mut Checkpoints,
        id: CheckpointId,
    ) -> (HeapSnapshotView, ChangelogPlan) {
        if self.changes_outgrow_state() {
            self.chain.reset(id);
            self.sync_with_chain(checkpoints);
        }
        let plan = self.chain.plan();
        match plan {
            ChangelogPlan::Delta { since, .. } => match self.delta_base_epoch(checkpoints, since) {
                Ok(since_epoch) => (
                    HeapSnapshotView::delta(self.clone(), checkpoints, since_epoch),
                    plan,
                ),
                // The chain and this backend disagree on the base: start a new chain.
                Err(_) => (HeapSnapshotView::full(self.clone()), ChangelogPlan::Base),
            },
            ChangelogPlan::Base => (HeapSnapshotView::full(self.clone()), plan),
        }
    }

    /// Follows the chain after a notice or a re-base: without a completed base no delta can
    /// be written, so no change needs to be kept (see `ChangelogChain` for when a chain ends).
    fn sync_with_chain(&self, checkpoints: &mut Checkpoints) {
        let base = self.chain.last_completed();
        if checkpoints
            .completed
            .is_some_and(|(id, _)| Some(id) != base)
        {
            checkpoints.completed = None;
        }
        self.forget_changes(checkpoints);
    }

    /// True when the change records outgrow the live entries: a delta would carry more
    /// than a base, and records of keys created and deleted since the base would otherwise
    /// pile up for as long as no incremental checkpoint completes.
    fn changes_outgrow_state(&self) -> bool {
        fn add<V>(tables: &KgTables<V>, records: &mut usize, entries: &mut usize) {
            for (_, table) in tables.created() {
                *records += table.changes().lock().len();
                *entries += table.map.len();
            }
        }
        let (mut records, mut entries) = (0, 0);
        for (_, table) in self.tables.iter() {
            match &table.storage {
                Storage::Bytes(t) => add(t, &mut records, &mut entries),
                Storage::Map(t) => add(t, &mut records, &mut entries),
            }
        }
        records > MIN_RECORDS_BEFORE_REBASE.max(2 * entries)
    }

    /// Drops change records every possible delta base already holds (all of them when there
    /// is no base), except what a live delta view still reads.
    fn forget_changes(&self, checkpoints: &mut Checkpoints) {
        let completed = match checkpoints.completed {
            Some((_, epoch)) => epoch,
            None => self.epochs.newest_sealed(),
        };
        let floor = checkpoints
            .delta_floors
            .keys()
            .next()
            .map_or(completed, |f| (*f).min(completed));
        if floor <= checkpoints.forgotten_through {
            return;
        }
        checkpoints.forgotten_through = floor;
        fn forget<V>(tables: &KgTables<V>, floor: u64) {
            for (_, table) in tables.created() {
                table.changes().lock().forget_through(floor);
            }
        }
        for (_, table) in self.tables.iter() {
            match &table.storage {
                Storage::Bytes(t) => forget(t, floor),
                Storage::Map(t) => forget(t, floor),
            }
        }
    }

    pub(crate) fn add_delta_floor(checkpoints: &mut Checkpoints, since: u64) {
        *checkpoints.delta_floors.entry(since).or_default() += 1;
    }

    /// A delta view with base epoch `since` was dropped.
    pub(crate) fn release_delta_floor(&self, since: u64) {
        let mut checkpoints = self.checkpoints.lock();
        if let Some(count) = checkpoints.delta_floors.get_mut(&since) {
            *count -= 1;
            if *count == 0 {
                checkpoints.delta_floors.remove(&since);
            }
        }
        self.forget_changes(&mut checkpoints);
    }

    /// A snapshot view of `epoch` was dropped: prune what only it needed.
    pub(crate) fn release_snapshot(&self, epoch: u64) {
        let live = self.epochs.unpin(epoch);
        fn sweep<V: Versioned>(tables: &KgTables<V>, live: &LiveSnapshots) {
            for (_, table) in tables.created() {
                table.sweep(live);
            }
        }
        for (_, table) in self.tables.iter() {
            match &table.storage {
                Storage::Bytes(t) => sweep(t, &live),
                Storage::Map(t) => sweep(t, &live),
            }
        }
    }
}

impl StateBackend for HeapBackend {
    fn snapshot(&self, request: &SnapshotRequest) -> Result<Box<dyn SnapshotJob>> {
        let inner = &self.inner;
        if request.kind == SnapshotKind::Incremental && inner.config.change_tracking {
            let mut checkpoints = inner.checkpoints.lock();
            inner.epochs.start_tracking();
            let (view, plan) = inner.plan_view(&mut checkpoints, request.checkpoint_id);
            checkpoints
                .pending
                .insert(request.checkpoint_id, view.epoch());
            return Ok(Box::new(ChangelogSnapshotJob::new(
                Box::new(view),
                plan,
                inner.chain.clone(),
                request.checkpoint_id,
                "heap",
                request.subtask_index,
            )));
        }
        let view = HeapSnapshotView::full(inner.clone());
        inner.chain.record_full(request.checkpoint_id);
        Ok(Box::new(CanonicalSnapshotJob::for_request(
            Box::new(view),
            "heap",
            request,
        )))
    }

    fn notify_checkpoint_complete(&self, id: CheckpointId) -> Result<()> {
        let inner = &self.inner;
        let mut checkpoints = inner.checkpoints.lock();
        let epoch = checkpoints.pending.remove(&id);
        // Older pending checkpoints are subsumed: they will never complete.
        checkpoints.pending.retain(|p, _| *p > id);
        // A chain checkpoint becomes the base; a completed full one ends the chain.
        if inner.chain.complete(id) {
            if let Some(epoch) = epoch {
                if checkpoints.completed.is_none_or(|(c, _)| c < id) {
                    checkpoints.completed = Some((id, epoch));
                }
            }
        }
        inner.sync_with_chain(&mut checkpoints);
        Ok(())
    }

    fn notify_checkpoint_aborted(&self, id: CheckpointId) -> Result<()> {
        let mut checkpoints = self.inner.checkpoints.lock();
        checkpoints.pending.remove(&id);
        self.inner.chain.abort(id);
        self.inner.sync_with_chain(&mut checkpoints);
        Ok(())
    }
}
