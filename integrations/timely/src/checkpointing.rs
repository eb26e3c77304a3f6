//! [`WorkerCheckpoints`]: a worker's side of epoch-aligned checkpoints.
//!
//! Each timely worker is one subtask of the job (its index is the subtask index, `peers` the
//! parallelism). The job checkpoints at epochs every worker knows in advance: once the
//! job's probe shows every epoch up to a checkpoint epoch processed, and before any later
//! epoch is, the worker captures its subtask synchronously and hands the upload to a tokio
//! runtime, so the dataflow goes on while the files upload. The upload's report travels to
//! worker 0, which runs the [`CheckpointCoordinator`] and tells every worker which
//! checkpoints completed or aborted.
//!
//! Checkpoint ids: worker 0 opens the coordinator at start and tells every worker where
//! to restore from and the id of this run's first checkpoint; the k-th checkpoint epoch of
//! the run then has id `first + k` on every worker, and worker 0 triggers the same ids in
//! the same order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use flowstate_api::lifecycle::RetentionPolicy;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, MaxParallelism, Parallelism, SnapshotKind,
};
use flowstate_runtime::{
    create_subtask, restore_subtask, CheckpointCoordinator, CheckpointNotice, CoordinatorConfig,
    DynStateBackendFactory, Outcome, Subtask, SubtaskReport,
};
use timely::worker::Worker;

use crate::control::{ControlPlane, ToWorkers};
use crate::error::{Error, Result};

/// What every worker of a job needs to checkpoint and restore.
#[derive(Clone)]
pub struct CheckpointSettings {
    /// Where checkpoints are written and restored from.
    pub storage: CheckpointStorage,
    /// Builds this worker's keyed state backend.
    pub factory: Arc<dyn DynStateBackendFactory>,
    /// The job's max parallelism: its number of key groups.
    pub max_parallelism: MaxParallelism,
    /// How many completed checkpoints to keep.
    pub retention: RetentionPolicy,
    /// Worker 0's coordinator aborts a checkpoint not complete this long after it triggered
    /// it; the other workers give up waiting for a verdict a little after that.
    pub timeout: Duration,
    /// Runs the uploads (and the coordinator's storage calls).
    pub runtime: tokio::runtime::Handle,
}

/// A completed checkpoint as the coordinating worker saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// The checkpoint's id.
    pub id: CheckpointId,
    /// Bytes of files this checkpoint referenced first (written for it).
    pub bytes_uploaded: u64,
    /// Bytes of shared files it took over from earlier checkpoints.
    pub bytes_reused: u64,
    /// From the coordinator's trigger to publication.
    pub duration: Duration,
}

/// See the module docs.
pub struct WorkerCheckpoints {
    subtask: Rc<Subtask>,
    settings: CheckpointSettings,
    control: ControlPlane,
    coordinator: Option<CheckpointCoordinator>,
    /// Reports for checkpoints worker 0 has not triggered yet.
    early_reports: Vec<SubtaskReport>,
    uploads_done: mpsc::Receiver<SubtaskReport>,
    uploads_tx: mpsc::Sender<SubtaskReport>,
    next_id: CheckpointId,
    completed: BTreeSet<CheckpointId>,
    aborted: BTreeMap<CheckpointId, String>,
    records: Vec<CheckpointRecord>,
    restored_from: Option<CheckpointId>,
    restore_time: Duration,
    /// Messages from worker 0 received but not handled yet.
    inbox: VecDeque<ToWorkers>,
    startup_error: Option<Error>,
}

impl WorkerCheckpoints {
    /// Builds the control plane, agrees with every worker on where to restore from, and
    /// restores (or creates) this worker's subtask. Every worker calls it at the same point
    /// of its dataflow construction.
    pub fn start(worker: &mut Worker, settings: CheckpointSettings) -> Result<Self> {
        let mut control = ControlPlane::build(worker);
        let parallelism = Parallelism::new(worker.peers() as u32)?;
        let mut coordinator = None;
        if control.is_coordinator() {
            let config = CoordinatorConfig {
                retention: settings.retention.clone(),
                timeout: settings.timeout,
                ..CoordinatorConfig::new(settings.max_parallelism, parallelism)
            };
            let opened = settings.runtime.block_on(CheckpointCoordinator::open(
                settings.storage.clone(),
                config,
            ));
            match opened {
                Ok(opened) => {
                    control.broadcast(&ToWorkers::Start {
                        restore: opened.latest().map(|m| m.checkpoint_id),
                        first_checkpoint: opened.next_id(),
                    })?;
                    coordinator = Some(opened);
                }
                Err(error) => {
                    control.broadcast(&ToWorkers::Failed(error.to_string()))?;
                    return Err(error.into());
                }
            }
        }
        let mut inbox = VecDeque::new();
        let (restore, first_checkpoint) = 'agreed: loop {
            worker.step_or_park(Some(Duration::from_millis(10)));
            let mut messages = control.take_messages()?.into_iter();
            while let Some(message) = messages.next() {
                match message {
                    ToWorkers::Start {
                        restore,
                        first_checkpoint,
                    } => {
                        inbox.extend(messages);
                        break 'agreed (restore, first_checkpoint);
                    }
                    ToWorkers::Failed(reason) => return Err(Error::PeerFailed(reason)),
                    ToWorkers::Notice(_) => {}
                }
            }
        };
        let index = worker.index() as u32;
        let started = Instant::now();
        let restored = match restore {
            Some(id) => {
                let storage = &settings.storage;
                let factory = settings.factory.as_ref();
                settings.runtime.block_on(async {
                    let manifest: CheckpointManifest = storage.read_manifest(id).await?;
                    if manifest.max_parallelism != settings.max_parallelism {
                        return Err(Error::State(flowstate_api::Error::MaxParallelismMismatch {
                            snapshot: manifest.max_parallelism.get(),
                            configured: settings.max_parallelism.get(),
                        }));
                    }
                    Ok(restore_subtask(factory, storage, &manifest, parallelism, index).await?)
                })
            }
            None => create_subtask(
                settings.factory.as_ref(),
                settings.max_parallelism,
                parallelism,
                index,
            )
            .map_err(Error::from),
        };
        // A failed restore fails the job, but only once this worker has built the job's
        // dataflow like every other worker (timely waits for every worker's part of a
        // dataflow); until then it stands on an empty subtask.
        let (subtask, startup_error) = match restored {
            Ok(subtask) => (subtask, None),
            Err(error) => {
                let empty = create_subtask(
                    settings.factory.as_ref(),
                    settings.max_parallelism,
                    parallelism,
                    index,
                )?;
                (empty, Some(error))
            }
        };
        let restore_time = started.elapsed();
        let (uploads_tx, uploads_done) = mpsc::channel();
        Ok(Self {
            subtask: Rc::new(subtask),
            settings,
            control,
            coordinator,
            early_reports: Vec::new(),
            uploads_done,
            uploads_tx,
            next_id: first_checkpoint,
            completed: BTreeSet::new(),
            aborted: BTreeMap::new(),
            records: Vec::new(),
            restored_from: restore,
            restore_time,
            inbox,
            startup_error,
        })
    }

    /// The error the start met restoring this worker's subtask, if any: call it once the
    /// job's dataflow is built, and stop with it.
    pub fn take_startup_error(&mut self) -> Option<Error> {
        self.startup_error.take()
    }

    /// Tells every worker this one failed with `error`, so they stop instead of waiting for
    /// it; returns the error.
    pub fn fail(&mut self, error: Error) -> Error {
        let reason = format!("worker {} failed: {error}", self.subtask.index);
        if let Err(send) = self.control.broadcast(&ToWorkers::Failed(reason)) {
            tracing::warn!(%send, "could not tell the other workers about a failure");
        }
        error
    }

    /// This worker's subtask: bind state handles to [`Subtask::keyed`], operator state to
    /// [`Subtask::operator`].
    pub fn subtask(&self) -> &Rc<Subtask> {
        &self.subtask
    }

    /// The checkpoint this run restored from.
    pub fn restored_from(&self) -> Option<CheckpointId> {
        self.restored_from
    }

    /// How long restoring (or creating) this worker's subtask took.
    pub fn restore_time(&self) -> Duration {
        self.restore_time
    }

    /// Completed checkpoints as the coordinator saw them (worker 0 only; empty elsewhere).
    pub fn records(&self) -> &[CheckpointRecord] {
        &self.records
    }

    /// Starts the next checkpoint of the run: call it on every worker, in the same order,
    /// before the input moves past the checkpoint's epoch. Worker 0 triggers it in the
    /// coordinator now, so it is pending before any worker can upload for it (the
    /// coordinator's sweeps never take its files for leftovers).
    pub fn prepare(&mut self) -> Result<CheckpointId> {
        let id = self.next_id;
        if let Some(coordinator) = &mut self.coordinator {
            let triggered = coordinator.trigger();
            if triggered != id {
                return Err(Error::Inconsistent(format!(
                    "the coordinator triggered checkpoint {triggered} where the workers expect {id}"
                )));
            }
        }
        self.next_id = id.next();
        Ok(id)
    }

    /// Takes prepared checkpoint `id`: call it once every epoch up to the checkpoint's is
    /// processed and no later one is. Captures synchronously and uploads in the background.
    /// A failed capture is declined (the coordinator aborts the checkpoint at once) and
    /// returned.
    pub fn capture(&mut self, id: CheckpointId, kind: SnapshotKind) -> Result<()> {
        let captured = match self.subtask.capture(id, kind) {
            Ok(captured) => captured,
            Err(error) => {
                let declined = SubtaskReport::declined(id, self.subtask.index, &error);
                self.control.send_report(&declined)?;
                return Err(error.into());
            }
        };
        let storage = self.settings.storage.clone();
        let done = self.uploads_tx.clone();
        self.settings.runtime.spawn(async move {
            let report = captured.upload_and_report(storage).await;
            // The worker may have stopped meanwhile; nobody is left to tell.
            let _ = done.send(report);
        });
        Ok(())
    }

    /// Moves checkpoint traffic along: finished uploads go to worker 0, worker 0 feeds the
    /// coordinator and broadcasts its verdicts, every worker hands verdicts to its backend.
    /// Call it between epochs; it never blocks on the dataflow.
    pub fn pump(&mut self) -> Result<()> {
        while let Ok(report) = self.uploads_done.try_recv() {
            self.control.send_report(&report)?;
        }
        if let Some(coordinator) = &mut self.coordinator {
            let mut reports = std::mem::take(&mut self.early_reports);
            reports.extend(self.control.take_reports()?);
            let mut outcomes = Vec::new();
            let mut failure = None;
            for report in reports {
                if report.checkpoint_id() >= coordinator.next_id() {
                    self.early_reports.push(report);
                    continue;
                }
                match self.settings.runtime.block_on(coordinator.report(report)) {
                    Ok(reached) => outcomes.extend(reached),
                    // A report the coordinator refuses changes nothing: the job goes on.
                    Err(
                        error @ (flowstate_runtime::Error::InvalidAck { .. }
                        | flowstate_runtime::Error::UnknownCheckpoint { .. }),
                    ) => tracing::warn!(%error, "report refused"),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            if failure.is_none() {
                match self.settings.runtime.block_on(coordinator.abort_expired()) {
                    Ok(expired) => outcomes.extend(expired),
                    Err(error) => failure = Some(error),
                }
            }
            // Verdicts reached go out even when a later report failed the coordinator.
            for outcome in outcomes {
                if let Outcome::Completed(done) = &outcome {
                    self.records.push(CheckpointRecord {
                        id: done.manifest.checkpoint_id,
                        bytes_uploaded: done.bytes_uploaded,
                        bytes_reused: done.bytes_reused,
                        duration: done.duration,
                    });
                }
                if let Outcome::Aborted { id, reason } = &outcome {
                    self.aborted.insert(*id, reason.clone());
                }
                self.control
                    .broadcast(&ToWorkers::Notice(outcome.notice()))?;
            }
            if let Some(error) = failure {
                return Err(error.into());
            }
        }
        let received = self.control.take_messages()?;
        self.inbox.extend(received);
        while let Some(message) = self.inbox.pop_front() {
            match message {
                ToWorkers::Notice(notice) => {
                    self.subtask.notify(notice)?;
                    match notice {
                        CheckpointNotice::Completed(id) => {
                            self.completed.insert(id);
                        }
                        CheckpointNotice::Aborted(id) => {
                            self.aborted
                                .entry(id)
                                .or_insert_with(|| "aborted by the coordinator".into());
                        }
                    }
                }
                ToWorkers::Failed(reason) => return Err(Error::PeerFailed(reason)),
                ToWorkers::Start { .. } => {
                    return Err(Error::Inconsistent(
                        "a second start message arrived: two coordinators run on one job".into(),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Steps the worker until checkpoint `id` completed (on every worker's word from the
    /// coordinator); an abort is an error.
    pub fn wait_for(&mut self, worker: &mut Worker, id: CheckpointId) -> Result<()> {
        // The coordinator aborts the checkpoint after its timeout; past that and a margin,
        // the verdict is not coming (worker 0 is gone).
        let deadline = Instant::now() + self.settings.timeout + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                return Err(Error::FinalCheckpointAborted {
                    id: id.get(),
                    reason: "no verdict from the coordinating worker in time".into(),
                });
            }
            self.pump()?;
            if self.completed.contains(&id) {
                return Ok(());
            }
            if let Some(reason) = self.aborted.get(&id) {
                return Err(Error::FinalCheckpointAborted {
                    id: id.get(),
                    reason: reason.clone(),
                });
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
    }
}
