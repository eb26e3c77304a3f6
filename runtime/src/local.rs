//! Checkpoints of subtasks that live in the coordinator's own process: a single-process job,
//! a tool that rewrites checkpoints, a test. The sequence is the one a distributed engine
//! runs over the network (trigger, capture at the barrier, upload, acknowledge, tell every
//! subtask the verdict), written once here so that such callers do not each repeat it and
//! each get its failure paths right.
//!
//! [`CheckpointCoordinator::checkpoint_subtasks`] takes an aligned checkpoint of every subtask
//! at once. A caller that cannot hold every subtask at the same time (one restored, written
//! and dropped after the other) drives a [`LocalCheckpoint`] itself:
//! [`CheckpointCoordinator::begin_local`], then [`LocalCheckpoint::take`] (or its own capture
//! and upload, then [`LocalCheckpoint::acknowledge`]) for each, then
//! [`LocalCheckpoint::finish`]. Whatever fails on the way declines the checkpoint: the
//! coordinator aborts it and deletes what it uploaded, and the error is returned.
//!
//! ```
//! use flowstate_api::{CheckpointStorage, MaxParallelism, Parallelism, SnapshotKind};
//! use flowstate_runtime::{create_subtask, BackendConfig, CheckpointCoordinator, CoordinatorConfig};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let factory = "heap".parse::<BackendConfig>()?.build()?;
//! let (max, two) = (MaxParallelism::new(128)?, Parallelism::new(2)?);
//! let dir = tempfile::tempdir().unwrap();
//! let storage = CheckpointStorage::local(dir.path())?;
//! let mut coordinator = CheckpointCoordinator::open(storage, CoordinatorConfig::new(max, two)).await?;
//! let subtasks = (0..2).map(|i| create_subtask(factory.as_ref(), max, two, i)).collect::<Result<Vec<_>, _>>()?;
//!
//! let completed = coordinator.checkpoint_subtasks(&subtasks, SnapshotKind::Incremental).await?;
//! assert_eq!(completed.manifest.subtasks.len(), 2);
//! assert_eq!(coordinator.latest().map(|m| m.checkpoint_id), Some(completed.manifest.checkpoint_id));
//! # Ok::<(), flowstate_runtime::Error>(())
//! # }).unwrap();
//! ```

use flowstate_api::backend::StateBackend;
use flowstate_api::{CheckpointId, SnapshotKind};

use crate::coordinator::{CheckpointCoordinator, CompletedCheckpoint, Outcome};
use crate::error::{Error, Result};
use crate::subtask::{CapturedSubtask, CheckpointNotice, Subtask, SubtaskAck, SubtaskReport};

/// A subtask in the coordinator's process: what [`LocalCheckpoint`] needs of it. Implemented
/// by every [`Subtask`]; a caller holding subtasks of several backend types implements it for
/// its own wrapper.
pub trait LocalSubtask {
    /// The subtask's index in its operator.
    fn index(&self) -> u32;
    /// The synchronous half of checkpoint `id` (see [`Subtask::capture`]).
    fn capture(
        &self,
        id: CheckpointId,
        kind: SnapshotKind,
    ) -> flowstate_api::Result<CapturedSubtask>;
    /// Hands the coordinator's verdict to the backend (see [`Subtask::notify`]).
    fn notify(&self, notice: CheckpointNotice) -> flowstate_api::Result<()>;
}

impl<B: StateBackend + ?Sized> LocalSubtask for Subtask<B> {
    fn index(&self) -> u32 {
        self.index
    }

    fn capture(
        &self,
        id: CheckpointId,
        kind: SnapshotKind,
    ) -> flowstate_api::Result<CapturedSubtask> {
        Subtask::capture(self, id, kind)
    }

    fn notify(&self, notice: CheckpointNotice) -> flowstate_api::Result<()> {
        Subtask::notify(self, notice)
    }
}

/// Subtasks borrowed from the structures that hold them (an operator instance with its state
/// handles): `&[&Subtask]`.
impl<T: LocalSubtask + ?Sized> LocalSubtask for &T {
    fn index(&self) -> u32 {
        (**self).index()
    }

    fn capture(
        &self,
        id: CheckpointId,
        kind: SnapshotKind,
    ) -> flowstate_api::Result<CapturedSubtask> {
        (**self).capture(id, kind)
    }

    fn notify(&self, notice: CheckpointNotice) -> flowstate_api::Result<()> {
        (**self).notify(notice)
    }
}

impl CheckpointCoordinator {
    /// An aligned checkpoint of `subtasks`, every subtask of the job, all in this process:
    /// each is captured (as at a barrier: writes after this call are not in it), the uploads
    /// run concurrently on the caller's task, the coordinator publishes the manifest once all
    /// acknowledged, and every subtask is told the verdict.
    ///
    /// An error means the checkpoint did not complete: a failed capture or upload declined it
    /// (it is aborted, its files deleted, the subtasks told), or the coordinator refused an
    /// acknowledgement or aborted it ([`Error::NotCompleted`]).
    pub async fn checkpoint_subtasks<S: LocalSubtask>(
        &mut self,
        subtasks: &[S],
        kind: SnapshotKind,
    ) -> Result<Box<CompletedCheckpoint>> {
        let mut checkpoint = self.begin_local();
        checkpoint.take(subtasks, kind).await?;
        checkpoint.finish(subtasks).await
    }

    /// Triggers a checkpoint of subtasks in this process, taken subtask by subtask.
    pub fn begin_local(&mut self) -> LocalCheckpoint<'_> {
        let id = self.trigger();
        LocalCheckpoint {
            coordinator: self,
            id,
            acknowledged: 0,
            outcomes: Vec::new(),
        }
    }
}

/// A triggered checkpoint whose subtasks are in this process (see the module docs). Dropped
/// without [`finish`](LocalCheckpoint::finish) or [`decline`](LocalCheckpoint::decline), it
/// stays pending until [`CheckpointCoordinator::abort_expired`] times it out.
pub struct LocalCheckpoint<'c> {
    coordinator: &'c mut CheckpointCoordinator,
    id: CheckpointId,
    acknowledged: u32,
    /// The coordinator's verdicts so far: the completion comes with the last acknowledgement.
    outcomes: Vec<Outcome>,
}

impl LocalCheckpoint<'_> {
    /// The checkpoint's id, for subtasks captured by the caller.
    pub fn id(&self) -> CheckpointId {
        self.id
    }

    /// Captures every one of `subtasks` first (the barrier), then uploads them concurrently
    /// and acknowledges each. A failure declines the checkpoint (see
    /// [`decline`](LocalCheckpoint::decline)), tells `subtasks` it aborted, and is returned:
    /// the checkpoint is over then, drop it.
    pub async fn take<S: LocalSubtask>(
        &mut self,
        subtasks: &[S],
        kind: SnapshotKind,
    ) -> Result<()> {
        let mut captured = Vec::with_capacity(subtasks.len());
        for subtask in subtasks {
            match subtask.capture(self.id, kind) {
                Ok(c) => captured.push(c),
                Err(error) => return Err(self.fail(subtasks, subtask.index(), error.into()).await),
            }
        }
        let storage = self.coordinator.storage().clone();
        let indexes: Vec<u32> = captured
            .iter()
            .map(CapturedSubtask::subtask_index)
            .collect();
        let uploads = captured.into_iter().map(|c| c.upload(storage.clone()));
        let results = futures::future::join_all(uploads).await;
        for (index, result) in indexes.into_iter().zip(results) {
            let acknowledged = match result {
                Ok(ack) => self.acknowledge(ack).await,
                Err(error) => Err(error.into()),
            };
            if let Err(error) = acknowledged {
                return Err(self.fail(subtasks, index, error).await);
            }
        }
        Ok(())
    }

    /// Hands the coordinator the acknowledgement of a subtask the caller captured (with
    /// [`id`](LocalCheckpoint::id)) and uploaded itself. An error (the coordinator refused
    /// it) leaves the checkpoint pending: decline it.
    pub async fn acknowledge(&mut self, ack: SubtaskAck) -> Result<()> {
        let outcomes = self.coordinator.acknowledge(ack).await?;
        self.acknowledged += 1;
        self.outcomes.extend(outcomes);
        Ok(())
    }

    /// Gives the checkpoint up because subtask `subtask_index` could not take its part: the
    /// coordinator aborts it and deletes what was uploaded for it.
    pub async fn decline(mut self, subtask_index: u32, reason: &str) -> Result<()> {
        self.report_decline(subtask_index, reason).await
    }

    async fn report_decline(&mut self, subtask_index: u32, reason: &str) -> Result<()> {
        let outcomes = self
            .coordinator
            .report(SubtaskReport::Declined {
                checkpoint_id: self.id,
                subtask_index,
                reason: reason.to_string(),
            })
            .await?;
        self.outcomes.extend(outcomes);
        Ok(())
    }

    /// The verdict, once every subtask of the job acknowledged: the completed checkpoint,
    /// after `subtasks` (those still running; none for subtasks already dropped) were told it
    /// and the aborts of older pending checkpoints it subsumed. [`Error::NotCompleted`] when
    /// the coordinator aborted it, or when subtasks are missing: then the checkpoint is
    /// declined (aborted, its files deleted, `subtasks` told) rather than left pending, where
    /// it would hold back the deletion of shared files until it timed out. Every subtask is
    /// told every verdict even if one fails to take it; that failure is returned afterwards
    /// (a completed checkpoint is published regardless).
    pub async fn finish<S: LocalSubtask>(
        mut self,
        subtasks: &[S],
    ) -> Result<Box<CompletedCheckpoint>> {
        let parallelism = self.coordinator.config().parallelism.get();
        let decided = self
            .outcomes
            .iter()
            .any(|o| o.notice().checkpoint_id() == self.id);
        if self.acknowledged < parallelism && !decided {
            let error = Error::NotCompleted {
                id: self.id,
                reason: format!(
                    "only {} of {parallelism} subtasks acknowledged it; it was declined",
                    self.acknowledged
                ),
            };
            // Any subtask index names the decline; the reason says what happened.
            return Err(self.fail(subtasks, self.acknowledged, error).await);
        }
        let mut first_failure = None;
        for outcome in &self.outcomes {
            for subtask in subtasks {
                if let Err(e) = subtask.notify(outcome.notice()) {
                    first_failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_failure {
            return Err(e.into());
        }
        let id = self.id;
        let mut verdict = None;
        for outcome in self.outcomes {
            match outcome {
                Outcome::Completed(completed) if completed.manifest.checkpoint_id == id => {
                    return Ok(completed)
                }
                Outcome::Aborted {
                    id: aborted,
                    reason,
                } if aborted == id => verdict = Some(reason),
                _ => {}
            }
        }
        let reason = match verdict {
            Some(reason) => format!("aborted: {reason}"),
            None => format!(
                "{} of {} subtasks acknowledged it",
                self.acknowledged,
                self.coordinator.config().parallelism
            ),
        };
        Err(Error::NotCompleted { id, reason })
    }

    /// Declines the checkpoint for subtask `index` after `error`, tells `subtasks` it aborted
    /// and returns `error`: the failure the caller sees is the first one; the clean-up's own
    /// failures are logged.
    async fn fail<S: LocalSubtask>(&mut self, subtasks: &[S], index: u32, error: Error) -> Error {
        let id = self.id;
        if let Err(cleanup) = self.report_decline(index, &error.to_string()).await {
            tracing::warn!(checkpoint = id.get(), %cleanup, "declining the checkpoint failed");
        }
        for subtask in subtasks {
            if let Err(notify) = subtask.notify(CheckpointNotice::Aborted(id)) {
                tracing::warn!(checkpoint = id.get(), subtask = subtask.index(), %notify, "telling a subtask of the abort failed");
            }
        }
        error
    }
}
