//! [`Subtask`]: one parallel instance of an operator, its keyed backend and its operator
//! state, checkpointed and restored the way an engine does it.
//!
//! A checkpoint of a subtask has two halves:
//! 1. at the barrier, [`Subtask::capture`] takes a consistent view of the keyed state and a
//!    copy of the operator state, synchronously (state access waits only for this);
//! 2. [`CapturedSubtask::upload`] is a `Send + 'static` future that writes both and yields the
//!    subtask's [`SubtaskAck`], a serde value the engine sends to the job's
//!    [`crate::CheckpointCoordinator`] from whatever thread or process it runs on.
//!
//! The coordinator answers with [`CheckpointNotice`]s, which [`Subtask::notify`] hands to the
//! backend (so only completed checkpoints become bases of incremental ones).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::backend::BoxFuture;
use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::operator::{restore_operator_state, write_operator_state};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, KeyGroupRange, KeyedStateBackend,
    KeyedStateHandle, MaxParallelism, OperatorStateSnapshot, OperatorStateStore, Parallelism,
    Result, SnapshotJob, SnapshotKind, SnapshotRequest, StateBackend, StateBackendFactory,
    SubtaskStateHandle,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::factory::DynStateBackendFactory;
use crate::metrics as m;

/// One parallel instance of an operator: its keyed backend (of type `B`, by default chosen
/// at run time) and its operator list and broadcast state.
pub struct Subtask<B: ?Sized = dyn StateBackend> {
    /// The subtask's index in its operator, `0..parallelism`.
    pub index: u32,
    /// The keyed state backend, over the key groups this subtask owns.
    pub backend: Arc<B>,
    /// The operator list and broadcast state.
    pub operator: Arc<OperatorStateStore>,
    backend_name: Arc<str>,
}

impl<B: StateBackend + 'static> Subtask<B> {
    /// The backend as typed state handles take it.
    pub fn keyed(&self) -> Arc<dyn KeyedStateBackend> {
        self.backend.clone()
    }
}

impl Subtask<dyn StateBackend> {
    /// The backend as typed state handles take it.
    pub fn keyed(&self) -> Arc<dyn KeyedStateBackend> {
        self.backend.clone()
    }
}

impl<B: StateBackend + ?Sized> Subtask<B> {
    /// A subtask over an existing backend and operator state store. `backend_name` labels
    /// its metrics and spans.
    pub fn new(
        index: u32,
        backend: Arc<B>,
        operator: Arc<OperatorStateStore>,
        backend_name: &str,
    ) -> Self {
        Self {
            index,
            backend,
            operator,
            backend_name: Arc::from(backend_name),
        }
    }

    /// The backend's name, as labelled in metrics and spans.
    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    /// The key groups this subtask's backend owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.backend.key_group_range()
    }

    /// The synchronous half of checkpoint `id`: captures the keyed state (the backend's
    /// copy-on-write, MVCC or hard-link view) and a copy of the operator state. Writes after
    /// this call are not in the checkpoint.
    pub fn capture(&self, id: CheckpointId, kind: SnapshotKind) -> Result<CapturedSubtask> {
        let span = tracing::info_span!(
            "flowstate.checkpoint.sync",
            subtask = self.index,
            checkpoint = id.get(),
            backend = %self.backend_name,
        );
        let _entered = span.enter();
        let started = Instant::now();
        let keyed = self.backend.snapshot(&SnapshotRequest {
            checkpoint_id: id,
            subtask_index: self.index,
            kind,
        })?;
        let operator = self.operator.snapshot();
        let sync_duration = started.elapsed();
        m::record_sync(&self.backend_name, sync_duration);
        tracing::debug!(micros = sync_duration.as_micros() as u64, "captured");
        Ok(CapturedSubtask {
            checkpoint_id: id,
            subtask_index: self.index,
            key_group_range: self.backend.key_group_range(),
            keyed,
            operator,
            backend_name: self.backend_name.clone(),
            sync_duration,
        })
    }

    /// Hands the coordinator's verdict on a checkpoint to the backend.
    pub fn notify(&self, notice: CheckpointNotice) -> Result<()> {
        match notice {
            CheckpointNotice::Completed(id) => self.backend.notify_checkpoint_complete(id),
            CheckpointNotice::Aborted(id) => self.backend.notify_checkpoint_aborted(id),
        }
    }
}

/// What a subtask's barrier captured: the input of the asynchronous half.
pub struct CapturedSubtask {
    checkpoint_id: CheckpointId,
    subtask_index: u32,
    key_group_range: KeyGroupRange,
    keyed: Box<dyn SnapshotJob>,
    operator: OperatorStateSnapshot,
    backend_name: Arc<str>,
    sync_duration: Duration,
}

impl CapturedSubtask {
    /// The checkpoint this capture belongs to.
    pub fn checkpoint_id(&self) -> CheckpointId {
        self.checkpoint_id
    }

    /// The index of the subtask captured.
    pub fn subtask_index(&self) -> u32 {
        self.subtask_index
    }

    /// The asynchronous half: uploads the keyed snapshot and (when the subtask holds any) its
    /// operator state, and yields the acknowledgement. Run it on any executor; it owns
    /// everything it needs.
    pub fn upload(self, storage: CheckpointStorage) -> BoxFuture<'static, Result<SubtaskAck>> {
        let span = tracing::info_span!(
            "flowstate.checkpoint.async",
            subtask = self.subtask_index,
            checkpoint = self.checkpoint_id.get(),
            backend = %self.backend_name,
            bytes = tracing::field::Empty,
        );
        let future = async move {
            let started = Instant::now();
            let keyed = self.keyed.run(storage.clone()).await?;
            let operator = if self.operator.is_empty() {
                None
            } else {
                Some(
                    write_operator_state(
                        &storage,
                        self.checkpoint_id,
                        self.subtask_index,
                        &self.operator,
                    )
                    .await?,
                )
            };
            let async_duration = started.elapsed();
            let state = SubtaskStateHandle {
                subtask_index: self.subtask_index,
                key_group_range: self.key_group_range,
                keyed: Some(keyed),
                operator,
            };
            let bytes = state_bytes(&state);
            tracing::Span::current().record("bytes", bytes);
            m::record_async(&self.backend_name, async_duration, bytes);
            Ok(SubtaskAck {
                checkpoint_id: self.checkpoint_id,
                state,
                sync_micros: duration_micros(self.sync_duration),
                async_micros: duration_micros(async_duration),
            })
        };
        Box::pin(future.instrument(span))
    }

    /// Like [`CapturedSubtask::upload`], but a failed upload becomes a decline: what an engine
    /// sends to the coordinator either way.
    pub fn upload_and_report(
        self,
        storage: CheckpointStorage,
    ) -> BoxFuture<'static, SubtaskReport> {
        let (checkpoint_id, subtask_index) = (self.checkpoint_id, self.subtask_index);
        let upload = self.upload(storage);
        Box::pin(async move {
            match upload.await {
                Ok(ack) => SubtaskReport::Acknowledged(ack),
                Err(error) => {
                    tracing::warn!(checkpoint = checkpoint_id.get(), subtask = subtask_index, %error, "checkpoint upload failed");
                    SubtaskReport::declined(checkpoint_id, subtask_index, &error)
                }
            }
        })
    }
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Bytes of every file a subtask's state references (shared files included).
pub fn state_bytes(state: &SubtaskStateHandle) -> u64 {
    state.keyed.as_ref().map_or(0, KeyedStateHandle::total_size)
        + state.operator.as_ref().map_or(0, |f| f.size)
}

/// A subtask's part of a completed upload, sent to the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskAck {
    /// The checkpoint acknowledged.
    pub checkpoint_id: CheckpointId,
    /// Handles to the uploaded state: what a restore of this subtask reads.
    pub state: SubtaskStateHandle,
    /// How long the synchronous half blocked the subtask.
    pub sync_micros: u64,
    /// How long the upload took.
    pub async_micros: u64,
}

/// What a subtask tells the coordinator about a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SubtaskReport {
    /// The subtask uploaded its part.
    Acknowledged(SubtaskAck),
    /// The subtask could not take or upload its part: the checkpoint is aborted.
    Declined {
        /// The checkpoint declined.
        checkpoint_id: CheckpointId,
        /// The index of the declining subtask.
        subtask_index: u32,
        /// Why it declined.
        reason: String,
    },
}

impl SubtaskReport {
    /// The report of a subtask that could not take its part of checkpoint `id` (e.g. its
    /// capture failed): the coordinator aborts the checkpoint at once instead of waiting
    /// for its timeout.
    pub fn declined(id: CheckpointId, subtask_index: u32, error: &dyn std::error::Error) -> Self {
        SubtaskReport::Declined {
            checkpoint_id: id,
            subtask_index,
            reason: error.to_string(),
        }
    }

    /// The checkpoint the report is about.
    pub fn checkpoint_id(&self) -> CheckpointId {
        match self {
            SubtaskReport::Acknowledged(ack) => ack.checkpoint_id,
            SubtaskReport::Declined { checkpoint_id, .. } => *checkpoint_id,
        }
    }
}

/// The coordinator's verdict on a checkpoint, for every subtask.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointNotice {
    /// The checkpoint was published.
    Completed(CheckpointId),
    /// The checkpoint was aborted.
    Aborted(CheckpointId),
}

impl CheckpointNotice {
    /// The checkpoint the verdict is about.
    pub fn checkpoint_id(&self) -> CheckpointId {
        match self {
            CheckpointNotice::Completed(id) | CheckpointNotice::Aborted(id) => *id,
        }
    }
}

/// A new, empty subtask `index` of `parallelism`, its backend from `factory`.
pub fn create_subtask(
    factory: &dyn DynStateBackendFactory,
    max: MaxParallelism,
    parallelism: Parallelism,
    index: u32,
) -> Result<Subtask> {
    let range = key_group_range_for_operator(max, parallelism, index)?;
    let backend = factory.create_shared(max, range)?;
    Ok(Subtask::new(
        index,
        backend,
        Arc::new(OperatorStateStore::new()),
        factory.name(),
    ))
}

/// Like [`create_subtask`], for a factory known at compile time.
pub fn create_subtask_typed<F: StateBackendFactory>(
    factory: &F,
    max: MaxParallelism,
    parallelism: Parallelism,
    index: u32,
) -> Result<Subtask<F::Backend>> {
    let range = key_group_range_for_operator(max, parallelism, index)?;
    Ok(Subtask::new(
        index,
        Arc::new(factory.create(max, range)?),
        Arc::new(OperatorStateStore::new()),
        factory.name(),
    ))
}

/// Restores new subtask `index` of `parallelism` from `manifest` (taken at any parallelism):
/// keyed state of the subtask's key-group range, operator state by the redistribution rules.
pub async fn restore_subtask(
    factory: &dyn DynStateBackendFactory,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    parallelism: Parallelism,
    index: u32,
) -> Result<Subtask> {
    let (range, handles) = restore_plan(manifest, parallelism, index)?;
    let keyed = factory.restore_shared(manifest.max_parallelism, range, storage, &handles);
    restored(keyed, factory.name(), storage, manifest, parallelism, index).await
}

/// Like [`restore_subtask`], for a factory known at compile time.
pub async fn restore_subtask_typed<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    parallelism: Parallelism,
    index: u32,
) -> Result<Subtask<F::Backend>> {
    let (range, handles) = restore_plan(manifest, parallelism, index)?;
    let keyed = async {
        let backend = factory
            .restore(manifest.max_parallelism, range, storage, &handles)
            .await?;
        Ok(Arc::new(backend))
    };
    restored(keyed, factory.name(), storage, manifest, parallelism, index).await
}

fn restore_plan(
    manifest: &CheckpointManifest,
    parallelism: Parallelism,
    index: u32,
) -> Result<(KeyGroupRange, Vec<KeyedStateHandle>)> {
    manifest.max_parallelism.check(parallelism)?;
    let range = key_group_range_for_operator(manifest.max_parallelism, parallelism, index)?;
    Ok((range, manifest.keyed_handles()))
}

async fn restored<B: StateBackend + ?Sized>(
    keyed: impl Future<Output = Result<Arc<B>>>,
    backend_name: &str,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    parallelism: Parallelism,
    index: u32,
) -> Result<Subtask<B>> {
    let range = key_group_range_for_operator(manifest.max_parallelism, parallelism, index)?;
    // What the restore draws on: the handles overlapping the range (a canonical restore
    // reads only its key groups' share of each).
    let handle_bytes: u64 = manifest
        .keyed_handles()
        .iter()
        .filter(|h| h.key_group_range().intersection(&range).is_some())
        .map(KeyedStateHandle::total_size)
        .sum();
    let span = tracing::info_span!(
        "flowstate.restore",
        subtask = index,
        parallelism = parallelism.get(),
        checkpoint = manifest.checkpoint_id.get(),
        backend = backend_name,
        handle_bytes,
    );
    async move {
        let started = Instant::now();
        let operator_files = manifest.operator_files();
        let (backend, operator) = futures::try_join!(
            keyed,
            restore_operator_state(storage, &operator_files, index, parallelism)
        )?;
        let elapsed = started.elapsed();
        m::record_restore(backend_name, elapsed, handle_bytes);
        tracing::info!(millis = elapsed.as_millis() as u64, "restored");
        Ok(Subtask::new(
            index,
            backend,
            Arc::new(operator),
            backend_name,
        ))
    }
    .instrument(span)
    .await
}
