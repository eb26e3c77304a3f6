//! [`CheckpointCoordinator`]: a job's checkpoints from trigger to publication.
//!
//! The coordinator runs in one place per job (a thread, a process, a designated worker). It
//! hands out checkpoint ids ([`trigger`](CheckpointCoordinator::trigger)), collects the
//! subtasks' [`SubtaskReport`]s (serde values: they may come from any thread or process),
//! and once all `parallelism` subtasks acknowledged, publishes the manifest through the
//! job's [`CheckpointLifecycle`] (retention and garbage collection included). A declined,
//! failed or timed-out checkpoint is aborted and its files deleted. Every verdict comes back
//! as an [`Outcome`] whose [`notice`](Outcome::notice) the engine sends to every subtask.
//!
//! An acknowledgement arriving after its checkpoint was aborted (a slow upload) is a late
//! ack: the lifecycle's garbage collection runs at once, which sweeps the directories of
//! aborted checkpoints and (with nothing pending) unreferenced shared files. A coordinator
//! fenced off by a newer one on the same storage gets [`flowstate_api::Error::Fenced`]
//! (as [`Error::State`]) from the publication: the job must stop.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::lifecycle::{CheckpointLifecycle, CompletionReport, RetentionPolicy};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, MaxParallelism, Parallelism,
};

use crate::error::{Error, Result};
use crate::metrics as m;
use crate::subtask::{CheckpointNotice, SubtaskAck, SubtaskReport};

/// How a job checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Number of key groups, fixed for the life of the job's state; `parallelism` may not
    /// exceed it.
    pub max_parallelism: MaxParallelism,
    /// Number of subtasks: a checkpoint completes when this many acknowledged.
    pub parallelism: Parallelism,
    /// How many completed checkpoints to keep.
    pub retention: RetentionPolicy,
    /// A checkpoint not complete this long after its trigger is aborted by
    /// [`CheckpointCoordinator::abort_expired`].
    pub timeout: Duration,
}

impl CoordinatorConfig {
    /// Default retention (3) and timeout (10 minutes, Flink's default).
    pub fn new(max_parallelism: MaxParallelism, parallelism: Parallelism) -> Self {
        Self {
            max_parallelism,
            parallelism,
            retention: RetentionPolicy::default(),
            timeout: Duration::from_secs(600),
        }
    }
}

/// A checkpoint the coordinator published.
#[derive(Clone, Debug)]
pub struct CompletedCheckpoint {
    /// The published manifest: what a restore reads.
    pub manifest: CheckpointManifest,
    /// What publishing it did: checkpoints dropped or subsumed, files deleted, warnings.
    pub report: CompletionReport,
    /// Bytes of files this checkpoint referenced first (written for it).
    pub bytes_uploaded: u64,
    /// Bytes of shared files it took over from earlier checkpoints.
    pub bytes_reused: u64,
    /// Trigger to publication.
    pub duration: Duration,
}

impl CompletedCheckpoint {
    /// Bytes of every file the checkpoint references.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_uploaded + self.bytes_reused
    }
}

/// The coordinator's verdict on one checkpoint.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The checkpoint was published.
    Completed(Box<CompletedCheckpoint>),
    /// The checkpoint was aborted (declined, timed out, subsumed, or its publication failed)
    /// and will not be published.
    Aborted {
        /// The aborted checkpoint.
        id: CheckpointId,
        /// Why it was aborted.
        reason: String,
    },
}

impl Outcome {
    /// The checkpoint this verdict is about.
    pub fn id(&self) -> CheckpointId {
        match self {
            Outcome::Completed(c) => c.manifest.checkpoint_id,
            Outcome::Aborted { id, .. } => *id,
        }
    }

    /// What every subtask must be told.
    pub fn notice(&self) -> CheckpointNotice {
        match self {
            Outcome::Completed(c) => CheckpointNotice::Completed(c.manifest.checkpoint_id),
            Outcome::Aborted { id, .. } => CheckpointNotice::Aborted(*id),
        }
    }
}

const MAX_REMEMBERED_ABORTS: usize = 1024;

struct PendingCheckpoint {
    triggered: Instant,
    acks: BTreeMap<u32, SubtaskAck>,
}

/// See the module docs.
pub struct CheckpointCoordinator {
    lifecycle: CheckpointLifecycle,
    config: CoordinatorConfig,
    pending: BTreeMap<CheckpointId, PendingCheckpoint>,
    /// Checkpoints this coordinator aborted: acks for them are late acks.
    aborted: BTreeSet<CheckpointId>,
}

impl CheckpointCoordinator {
    /// Opens the job's checkpoint storage (see [`CheckpointLifecycle::open`]). The latest
    /// completed checkpoint, if any, must have the configured max parallelism: it is fixed
    /// for the life of a job's state.
    pub async fn open(storage: CheckpointStorage, config: CoordinatorConfig) -> Result<Self> {
        config
            .max_parallelism
            .check(config.parallelism)
            .map_err(Error::State)?;
        if config.timeout.is_zero() {
            return Err(Error::InvalidCoordinatorConfig {
                reason: "timeout must be above zero: every checkpoint needs time to upload".into(),
            });
        }
        let lifecycle = CheckpointLifecycle::open(storage, config.retention.clone()).await?;
        if let Some(latest) = lifecycle.latest() {
            if latest.max_parallelism != config.max_parallelism {
                return Err(Error::State(flowstate_api::Error::MaxParallelismMismatch {
                    snapshot: latest.max_parallelism.get(),
                    configured: config.max_parallelism.get(),
                }));
            }
        }
        Ok(Self {
            lifecycle,
            config,
            pending: BTreeMap::new(),
            aborted: BTreeSet::new(),
        })
    }

    /// The configuration the coordinator was opened with.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The job's checkpoint lifecycle: completed checkpoints, retention, garbage collection.
    pub fn lifecycle(&self) -> &CheckpointLifecycle {
        &self.lifecycle
    }

    /// The job's checkpoint storage.
    pub fn storage(&self) -> &CheckpointStorage {
        self.lifecycle.storage()
    }

    /// The newest completed checkpoint: what a (re)started job restores from.
    pub fn latest(&self) -> Option<&CheckpointManifest> {
        self.lifecycle.latest()
    }

    /// Retained completed checkpoints, ascending.
    pub fn completed(&self) -> Vec<CheckpointId> {
        self.lifecycle.completed()
    }

    /// The id the next [`trigger`](CheckpointCoordinator::trigger) returns.
    pub fn next_id(&self) -> CheckpointId {
        self.lifecycle.next_id()
    }

    /// Checkpoints triggered and not yet completed or aborted.
    pub fn pending(&self) -> Vec<CheckpointId> {
        self.pending.keys().copied().collect()
    }

    /// Starts a checkpoint; the engine sends its barrier (with this id) to every subtask.
    pub fn trigger(&mut self) -> CheckpointId {
        let id = self.lifecycle.begin();
        tracing::info!(checkpoint = id.get(), "checkpoint triggered");
        self.pending.insert(
            id,
            PendingCheckpoint {
                triggered: Instant::now(),
                acks: BTreeMap::new(),
            },
        );
        id
    }

    /// Takes a subtask's report. Returns the verdicts reached by it: a completion (plus the
    /// older pending checkpoints it subsumed), an abort (declined, or publication failed),
    /// or nothing yet.
    pub async fn report(&mut self, report: SubtaskReport) -> Result<Vec<Outcome>> {
        match report {
            SubtaskReport::Acknowledged(ack) => self.acknowledge(ack).await,
            SubtaskReport::Declined {
                checkpoint_id,
                subtask_index,
                reason,
            } => {
                if !self.pending.contains_key(&checkpoint_id) {
                    return Ok(Vec::new());
                }
                let reason = format!("subtask {subtask_index} declined: {reason}");
                Ok(vec![self.abort(checkpoint_id, reason).await?])
            }
        }
    }

    /// Takes a subtask's acknowledgement (see [`CheckpointCoordinator::report`]).
    pub async fn acknowledge(&mut self, ack: SubtaskAck) -> Result<Vec<Outcome>> {
        let id = ack.checkpoint_id;
        let Some(pending) = self.pending.get_mut(&id) else {
            if self.aborted.contains(&id) {
                self.discard_late_ack(&ack).await;
                return Ok(Vec::new());
            }
            if id < self.lifecycle.next_id() {
                // Completed (a redelivered ack) or from before this coordinator opened: its
                // files may be published; never delete them.
                tracing::info!(
                    checkpoint = id.get(),
                    subtask = ack.state.subtask_index,
                    "acknowledgement for a checkpoint no longer pending ignored"
                );
                return Ok(Vec::new());
            }
            return Err(Error::UnknownCheckpoint { id });
        };
        let index = ack.state.subtask_index;
        let invalid = |reason: String| Error::InvalidAck {
            id,
            subtask_index: index,
            reason,
        };
        if index >= self.config.parallelism.get() {
            return Err(invalid(format!(
                "the job has {} subtasks",
                self.config.parallelism
            )));
        }
        let expected = key_group_range_for_operator(
            self.config.max_parallelism,
            self.config.parallelism,
            index,
        )?;
        if ack.state.key_group_range != expected {
            return Err(invalid(format!(
                "it covers key groups {} but subtask {index} of {} owns {expected}",
                ack.state.key_group_range, self.config.parallelism
            )));
        }
        if let Some(keyed) = &ack.state.keyed {
            if keyed.key_group_range() != expected {
                return Err(invalid(format!(
                    "its keyed state covers key groups {} but the subtask owns {expected}",
                    keyed.key_group_range()
                )));
            }
        }
        // Files must lie where retention and garbage collection look for them: a file of
        // this checkpoint alone in its directory, a shared file under shared/, each at a
        // canonical path (the lifecycle checks the manifest again on complete).
        let files = ack.state.keyed.iter().flat_map(|k| k.files());
        for file in files.chain(ack.state.operator.iter()) {
            if let Err(error) = flowstate_api::checkpoint::check_file_placement(file, id) {
                return Err(invalid(error.to_string()));
            }
        }
        if let Some(previous) = pending.acks.get(&index) {
            if *previous == ack {
                return Ok(Vec::new()); // a redelivered ack
            }
            return Err(invalid(
                "the subtask already acknowledged this checkpoint with other state".into(),
            ));
        }
        pending.acks.insert(index, ack);
        if pending.acks.len() < self.config.parallelism.get() as usize {
            return Ok(Vec::new());
        }
        self.publish(id).await
    }

    async fn publish(&mut self, id: CheckpointId) -> Result<Vec<Outcome>> {
        let Some(pending) = self.pending.remove(&id) else {
            return Ok(Vec::new());
        };
        let subtasks = pending.acks.into_values().map(|a| a.state).collect();
        let manifest = CheckpointManifest::new(
            id,
            self.config.max_parallelism,
            self.config.parallelism,
            subtasks,
        );
        let known: BTreeSet<String> = self.lifecycle.registry().files.keys().cloned().collect();
        // `Err` from complete means not published and nothing deleted; failures after the
        // manifest was written are warnings in the report.
        let report = match self.lifecycle.complete(manifest.clone()).await {
            Ok(report) => report,
            Err(error @ flowstate_api::Error::Fenced { .. }) => {
                // A newer coordinator owns the storage: this job must stop.
                tracing::error!(checkpoint = id.get(), %error, "checkpoint not published: fenced off");
                return Err(error.into());
            }
            Err(error) => {
                tracing::warn!(checkpoint = id.get(), %error, "publishing the checkpoint failed");
                // Not published: drop it like any aborted checkpoint.
                self.pending
                    .insert(id, pending_placeholder(pending.triggered));
                let reason = format!("publishing the manifest failed: {error}");
                return Ok(vec![self.abort(id, reason).await?]);
            }
        };
        let mut outcomes = Vec::new();
        for old in &report.subsumed {
            if self.pending.remove(old).is_some() {
                self.remember_aborted(*old);
                m::record_aborted();
                outcomes.push(Outcome::Aborted {
                    id: *old,
                    reason: format!("subsumed by checkpoint {id}"),
                });
            }
        }
        let (mut uploaded, mut reused) = (0, 0);
        for file in manifest.files() {
            if file.shared && known.contains(&file.path) {
                reused += file.size;
            } else {
                uploaded += file.size;
            }
        }
        let duration = pending.triggered.elapsed();
        m::record_completed(duration, uploaded, reused, uploaded + reused);
        tracing::info!(
            checkpoint = id.get(),
            bytes_uploaded = uploaded,
            bytes_reused = reused,
            millis = duration.as_millis() as u64,
            "checkpoint completed"
        );
        outcomes.push(Outcome::Completed(Box::new(CompletedCheckpoint {
            manifest,
            report,
            bytes_uploaded: uploaded,
            bytes_reused: reused,
            duration,
        })));
        Ok(outcomes)
    }

    /// Aborts pending checkpoint `id` and deletes its files.
    pub async fn abort(&mut self, id: CheckpointId, reason: String) -> Result<Outcome> {
        if self.pending.remove(&id).is_none() {
            return Err(Error::UnknownCheckpoint { id });
        }
        self.remember_aborted(id);
        // The checkpoint is not visible whatever happens here; files a failed delete leaves
        // are retried by the lifecycle.
        if let Err(error) = self.lifecycle.abort(id).await {
            tracing::warn!(checkpoint = id.get(), %error, "cleaning up the aborted checkpoint failed");
        }
        m::record_aborted();
        tracing::warn!(checkpoint = id.get(), %reason, "checkpoint aborted");
        Ok(Outcome::Aborted { id, reason })
    }

    /// Aborts every pending checkpoint triggered longer than the timeout ago.
    pub async fn abort_expired(&mut self) -> Result<Vec<Outcome>> {
        let timeout = self.config.timeout;
        let expired: Vec<CheckpointId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.triggered.elapsed() >= timeout)
            .map(|(id, _)| *id)
            .collect();
        let mut outcomes = Vec::new();
        for id in expired {
            let reason = format!("not complete after {timeout:?}");
            outcomes.push(self.abort(id, reason).await?);
        }
        Ok(outcomes)
    }

    /// Remembers an aborted checkpoint, so its late acks are cleaned up. Bounded: an ack
    /// later than the last thousand aborts is ignored (the lifecycle sweeps the directories
    /// of aborted checkpoints on its own).
    fn remember_aborted(&mut self, id: CheckpointId) {
        self.aborted.insert(id);
        while self.aborted.len() > MAX_REMEMBERED_ABORTS {
            self.aborted.pop_first();
        }
    }

    /// Collects what a late ack uploaded: the lifecycle sweeps the directories of aborted
    /// checkpoints and, with nothing pending, unreferenced shared files (all fenced).
    async fn discard_late_ack(&mut self, ack: &SubtaskAck) {
        m::record_late_ack();
        tracing::info!(
            checkpoint = ack.checkpoint_id.get(),
            subtask = ack.state.subtask_index,
            "late acknowledgement discarded"
        );
        let mut report = CompletionReport::default();
        if let Err(error) = self.lifecycle.collect_garbage(&mut report).await {
            tracing::warn!(%error, "collecting a late ack's files failed");
        }
    }
}

fn pending_placeholder(triggered: Instant) -> PendingCheckpoint {
    PendingCheckpoint {
        triggered,
        acks: BTreeMap::new(),
    }
}
