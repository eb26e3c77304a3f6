//! What every case needs: a runtime, and checkpoint / restore / rescale driven through the
//! public API exactly as an engine would drive it.
//!
//! A [`Subtask`] is one parallel instance of an operator: a keyed backend created by the
//! factory under test plus the subtask's [`OperatorStateStore`] (operator list and broadcast
//! state, which flowstate implements once for every backend). A checkpoint takes the
//! synchronous part of every subtask first (as at a barrier), then runs the uploads, then
//! writes the manifest; a restore builds every new subtask from a manifest at any
//! parallelism, keyed state by key-group range and operator state by the redistribution rules.
//!
//! The sequence itself is `flowstate-runtime`'s ([`Subtask::capture`],
//! [`CapturedSubtask::upload`], [`Subtask::notify`], restores): the suite holds backends to
//! the contract through the same code engines use. The runtime is used without backends (no
//! cargo features), so this crate still depends on no storage engine.

use std::future::Future;
use std::sync::Arc;

use flowstate_api::lifecycle::CheckpointLifecycle;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, MaxParallelism, OperatorStateStore,
    Parallelism, Result, SnapshotKind, StateBackend, StateBackendFactory,
};
use flowstate_runtime::{create_subtask_typed, restore_subtask_typed, CheckpointNotice};
pub use flowstate_runtime::{CapturedSubtask, Subtask};

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for a conformance case")
        .block_on(future)
}

/// A subtask over an existing backend (with empty operator state), for cases that build
/// their backend themselves.
pub fn subtask_of<B: StateBackend + 'static>(index: u32, backend: Arc<B>) -> Subtask<B> {
    Subtask::new(
        index,
        backend,
        Arc::new(OperatorStateStore::new()),
        "under-test",
    )
}

/// Creates the `parallelism` empty subtasks of an operator.
pub fn create_operator<F: StateBackendFactory>(
    factory: &F,
    max: MaxParallelism,
    parallelism: Parallelism,
) -> Result<Vec<Subtask<F::Backend>>> {
    (0..parallelism.get())
        .map(|index| create_subtask_typed(factory, max, parallelism, index))
        .collect()
}

/// Takes the synchronous part of a checkpoint of every subtask (keyed snapshot job and a copy
/// of the operator state). Nothing is uploaded yet: writes made after this call must not
/// appear in the checkpoint.
pub fn capture<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    id: CheckpointId,
    kind: SnapshotKind,
) -> Result<Vec<CapturedSubtask>> {
    subtasks.iter().map(|s| s.capture(id, kind)).collect()
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
    let acks = block_on(async {
        let mut acks = Vec::new();
        for c in captured {
            acks.push(c.upload(storage.clone()).await?);
        }
        Ok::<_, flowstate_api::Error>(acks)
    })?;
    let parallelism = Parallelism::new(subtasks.len() as u32)?;
    Ok(CheckpointManifest::new(
        id,
        max,
        parallelism,
        acks.into_iter().map(|ack| ack.state).collect(),
    ))
}

fn notify_all<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    notice: CheckpointNotice,
) -> Result<()> {
    subtasks.iter().try_for_each(|s| s.notify(notice))
}

/// Writes the manifest (the checkpoint becomes visible) and confirms completion to every
/// backend.
pub fn publish<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
) -> Result<()> {
    block_on(storage.write_manifest(manifest))?;
    notify_all(
        subtasks,
        CheckpointNotice::Completed(manifest.checkpoint_id),
    )
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
    notify_all(subtasks, CheckpointNotice::Completed(id))?;
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
    notify_all(subtasks, CheckpointNotice::Aborted(id))
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
    notify_all(subtasks, CheckpointNotice::Completed(id))?;
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
    notify_all(subtasks, CheckpointNotice::Aborted(id))?;
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
    block_on(restore_subtask_typed(
        factory,
        storage,
        manifest,
        parallelism,
        index,
    ))
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
