//! What every case needs: a runtime, and checkpoint / restore / rescale driven through the
//! public API exactly as an engine would drive it.

use std::future::Future;
use std::sync::Arc;

use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, KeyedStateBackend, MaxParallelism,
    Parallelism, Result, SnapshotKind, SnapshotRequest, StateBackend, StateBackendFactory,
    SubtaskStateHandle,
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
            })
        })
        .collect()
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

/// Like [`checkpoint`] but without confirming completion.
pub fn checkpoint_pending<B: StateBackend + 'static>(
    subtasks: &[Subtask<B>],
    storage: &CheckpointStorage,
    id: CheckpointId,
    kind: SnapshotKind,
) -> Result<CheckpointManifest> {
    let first = subtasks
        .first()
        .ok_or_else(|| flowstate_api::Error::Config("no subtasks to checkpoint".into()))?;
    let max = first.backend.max_parallelism();
    let jobs = subtasks
        .iter()
        .map(|s| {
            s.backend.snapshot(&SnapshotRequest {
                checkpoint_id: id,
                subtask_index: s.index,
                kind,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let handles = block_on(async {
        let mut out = Vec::new();
        for job in jobs {
            out.push(job.run(storage.clone()).await?);
        }
        Ok::<_, flowstate_api::Error>(out)
    })?;
    let subtask_handles = subtasks
        .iter()
        .zip(handles)
        .map(|(s, h)| SubtaskStateHandle {
            subtask_index: s.index,
            key_group_range: s.backend.key_group_range(),
            keyed: Some(h),
            operator: None,
        })
        .collect();
    let parallelism = Parallelism::new(subtasks.len() as u32)?;
    let manifest = CheckpointManifest::new(id, max, parallelism, subtask_handles);
    block_on(storage.write_manifest(&manifest))?;
    Ok(manifest)
}

/// Restores the keyed state of `manifest` at `parallelism` new subtasks.
pub fn restore_operator<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    parallelism: Parallelism,
) -> Result<Vec<Subtask<F::Backend>>> {
    let max = manifest.max_parallelism;
    let handles = manifest.keyed_handles();
    (0..parallelism.get())
        .map(|index| {
            let range = key_group_range_for_operator(max, parallelism, index)?;
            let backend = block_on(factory.restore(max, range, storage, &handles))?;
            Ok(Subtask {
                index,
                backend: Arc::new(backend),
            })
        })
        .collect()
}
