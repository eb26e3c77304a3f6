//! What every case needs: a runtime, and checkpoint / restore / rescale driven through the
//! public API exactly as an engine would drive it.
//!
//! A [`Subtask`] is one parallel instance of an operator: a keyed backend created by the
//! factory under test plus the subtask's [`OperatorStateStore`] (operator list and broadcast
//! state, which flowstate implements once for every backend). A checkpoint takes the
//! synchronous part of every subtask first (as at a barrier), then runs the uploads, then
//! writes the manifest; a restore builds every new subtask from a manifest at any
//! parallelism, keyed state by key-group range and operator state by the redistribution rules.

use std::future::Future;
use std::sync::Arc;

use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::lifecycle::CheckpointLifecycle;
use flowstate_api::operator::{restore_operator_state, write_operator_state};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, KeyedStateBackend, MaxParallelism,
    OperatorStateSnapshot, OperatorStateStore, Parallelism, Result, SnapshotJob, SnapshotKind,
    SnapshotRequest, StateBackend, StateBackendFactory, SubtaskStateHandle,
};

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for a conformance case")
        .block_on(future)
}

/// One subtask of an operator under test.
pub struct Subtask<B> {
    pub index: u32,
    pub backend: Arc<B>,
    /// The subtask's operator list and broadcast state.
    pub operator: Arc<OperatorStateStore>,
}

impl<B: StateBackend + 'static> Subtask<B> {
    /// The backend as typed state handles take it.
    pub fn shared(&self) -> Arc<dyn KeyedStateBackend> {
        self.backend.clone()
    }
}

/// Creates the `parallelism` empty subtasks of an operator.
pub fn create_operator<F: StateBackendFactory>(
    factory: &F,
    max: MaxParallelism,
    parallelism: Parallelism,
) -> Result<Vec<Subtask<F::Backend>>> {
    (0..parallelism.get())
        .map(|index| {
            let range = key_group_range_for_operator(max, parallelism, index)?;
            Ok(Subtask {
                index,
                backend: Arc::new(factory.create(max, range)?),
                operator: Arc::new(OperatorStateStore::new()),
            })
        })
        .collect()
}

/// The synchronous part of a checkpoint of one subtask: what its barrier captured.
pub struct CapturedSubtask {
    pub subtask_index: u32,
    keyed: Box<dyn SnapshotJob>,
    operator: OperatorStateSnapshot,
}

/// Takes the synchronous part of a checkpoint of every subtask (keyed snapshot job and a copy
/// of the operator state). Nothing is uploaded yet: writes made after this call must not
/// appear in the checkpoint.
pub fn capture<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    id: CheckpointId,
    kind: SnapshotKind,
) -> Result<Vec<CapturedSubtask>> {
    subtasks
        .iter()
        .map(|s| {
            let keyed = s.backend.snapshot(&SnapshotRequest {
                checkpoint_id: id,
                subtask_index: s.index,
                kind,
            })?;
            Ok(CapturedSubtask {
                subtask_index: s.index,
                keyed,
                operator: s.operator.snapshot(),
            })
        })
        .collect()
}

/// The asynchronous part: runs every captured subtask's upload and returns the manifest of
/// the checkpoint (not written: see [`publish`]). Operator state is written only for subtasks
/// that hold some, as an engine would.
pub fn upload<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    captured: Vec<CapturedSubtask>,
    storage: &CheckpointStorage,
    id: CheckpointId,
) -> Result<CheckpointManifest> {
    let first = subtasks
        .first()
        .ok_or_else(|| flowstate_api::Error::Config("no subtasks to checkpoint".into()))?;
    let max = first.backend.max_parallelism();
    let handles = block_on(async {
        let mut out = Vec::new();
        for c in captured {
            let keyed = c.keyed.run(storage.clone()).await?;
            let operator = if c.operator.is_empty() {
                None
            } else {
                Some(write_operator_state(storage, id, c.subtask_index, &c.operator).await?)
            };
            out.push((c.subtask_index, keyed, operator));
        }
        Ok::<_, flowstate_api::Error>(out)
    })?;
    let subtask_handles = handles
        .into_iter()
        .map(|(index, keyed, operator)| {
            let range = subtasks
                .iter()
                .find(|s| s.index == index)
                .map(|s| s.backend.key_group_range())
                .ok_or_else(|| {
                    flowstate_api::Error::Config(format!("no subtask with index {index}"))
                })?;
            Ok(SubtaskStateHandle {
                subtask_index: index,
                key_group_range: range,
                keyed: Some(keyed),
                operator,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let parallelism = Parallelism::new(subtasks.len() as u32)?;
    Ok(CheckpointManifest::new(
        id,
        max,
        parallelism,
        subtask_handles,
    ))
}

/// Writes the manifest (the checkpoint becomes visible) and confirms completion to every
/// backend.
pub fn publish<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
) -> Result<()> {
    block_on(storage.write_manifest(manifest))?;
    for s in subtasks {
        s.backend
            .notify_checkpoint_complete(manifest.checkpoint_id)?;
    }
    Ok(())
}

/// Checkpoints every subtask (synchronous parts first, as at a barrier, then the uploads) and
/// writes the manifest last. The checkpoint is then confirmed complete to every backend.
pub fn checkpoint<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    storage: &CheckpointStorage,
    id: CheckpointId,
    kind: SnapshotKind,
) -> Result<CheckpointManifest> {
    let manifest = checkpoint_pending(subtasks, storage, id, kind)?;
    for s in subtasks {
        s.backend.notify_checkpoint_complete(id)?;
    }
    Ok(manifest)
}

/// Like [`checkpoint`] but without confirming completion: the manifest is written, the
/// backends are not told.
pub fn checkpoint_pending<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    storage: &CheckpointStorage,
    id: CheckpointId,
    kind: SnapshotKind,
) -> Result<CheckpointManifest> {
    let captured = capture(subtasks, id, kind)?;
    let manifest = upload(subtasks, captured, storage, id)?;
    block_on(storage.write_manifest(&manifest))?;
    Ok(manifest)
}

/// A checkpoint that uploads but is then given up on: no manifest is written and every
/// backend is told it was aborted, so it must never serve as the base of a later one.
pub fn checkpoint_aborted<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    storage: &CheckpointStorage,
    id: CheckpointId,
    kind: SnapshotKind,
) -> Result<()> {
    let captured = capture(subtasks, id, kind)?;
    upload(subtasks, captured, storage, id)?;
    for s in subtasks {
        s.backend.notify_checkpoint_aborted(id)?;
    }
    Ok(())
}

/// A checkpoint run through the job's [`CheckpointLifecycle`] (ids, retention, deletion of
/// files no retained checkpoint needs), confirmed complete to every backend.
pub fn checkpoint_with_lifecycle<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    lifecycle: &mut CheckpointLifecycle,
    kind: SnapshotKind,
) -> Result<CheckpointManifest> {
    let id = lifecycle.begin();
    let captured = capture(subtasks, id, kind)?;
    let manifest = upload(subtasks, captured, lifecycle.storage(), id)?;
    block_on(lifecycle.complete(manifest.clone()))?;
    for s in subtasks {
        s.backend.notify_checkpoint_complete(id)?;
    }
    Ok(manifest)
}

/// A checkpoint started through the job's [`CheckpointLifecycle`] that uploads and is then
/// aborted: the lifecycle deletes its files and every backend is told.
pub fn abort_with_lifecycle<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    lifecycle: &mut CheckpointLifecycle,
    kind: SnapshotKind,
) -> Result<CheckpointId> {
    let id = lifecycle.begin();
    let captured = capture(subtasks, id, kind)?;
    upload(subtasks, captured, lifecycle.storage(), id)?;
    block_on(lifecycle.abort(id))?;
    for s in subtasks {
        s.backend.notify_checkpoint_aborted(id)?;
    }
    Ok(id)
}

/// Restores new subtask `index` of `parallelism` from `manifest`: keyed state of its
/// key-group range, operator state per the redistribution rules.
pub fn restore_subtask<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    parallelism: Parallelism,
    index: u32,
) -> Result<Subtask<F::Backend>> {
    let max = manifest.max_parallelism;
    let range = key_group_range_for_operator(max, parallelism, index)?;
    let handles = manifest.keyed_handles();
    let backend = block_on(factory.restore(max, range, storage, &handles))?;
    let operator = block_on(restore_operator_state(
        storage,
        &manifest.operator_files(),
        index,
        parallelism,
    ))?;
    Ok(Subtask {
        index,
        backend: Arc::new(backend),
        operator: Arc::new(operator),
    })
}

/// Restores the state of `manifest` at `parallelism` new subtasks.
pub fn restore_operator<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    parallelism: Parallelism,
) -> Result<Vec<Subtask<F::Backend>>> {
    (0..parallelism.get())
        .map(|index| restore_subtask(factory, storage, manifest, parallelism, index))
        .collect()
}
