//! Reading a checkpoint's state back, for the tools that look at rows (`inspect`), check them
//! (`verify`) or rewrite them (`convert`): every subtask is restored through the runtime, as
//! an engine would, into a backend that can hold it: the heap for canonical and changelog
//! handles, RocksDB (in a temporary directory) when the checkpoint holds native RocksDB
//! handles, which only RocksDB reads.

use anyhow::{bail, Result};
use flowstate_api::backend::KeyedSnapshotView;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, KeyedStateHandle, Parallelism,
    SnapshotKind,
};
use flowstate_heap::{HeapBackend, HeapBackendFactory};
use flowstate_runtime::{
    restore_subtask_typed, CapturedSubtask, CheckpointNotice, LocalSubtask, Subtask,
};

/// The backend a checkpoint's native handles need, if it has any: `Some("rocksdb")`.
pub fn native_backend(manifest: &CheckpointManifest) -> Option<&str> {
    manifest.subtasks.iter().find_map(|s| match &s.keyed {
        Some(KeyedStateHandle::Native { backend, .. }) => Some(backend.as_str()),
        _ => None,
    })
}

/// One subtask restored for reading.
pub enum Restored {
    /// Restored on the heap backend (portable handles: canonical or changelog).
    Heap(Subtask<HeapBackend>),
    /// Restored on RocksDB (native RocksDB handles).
    #[cfg(feature = "rocksdb")]
    RocksDb(Subtask<flowstate_rocksdb::RocksDbBackend>),
}

impl Restored {
    /// A point-in-time view of the subtask's keyed state, key group by key group.
    pub fn view(&self) -> Box<dyn KeyedSnapshotView> {
        match self {
            Restored::Heap(s) => Box::new(s.backend.snapshot_view()),
            #[cfg(feature = "rocksdb")]
            Restored::RocksDb(s) => Box::new(s.backend.snapshot_view()),
        }
    }

    /// The subtask, whatever its backend, to the runtime's checkpoints.
    fn local(&self) -> &dyn LocalSubtask {
        match self {
            Restored::Heap(s) => s,
            #[cfg(feature = "rocksdb")]
            Restored::RocksDb(s) => s,
        }
    }
}

/// A restored subtask is checkpointed like any other (`convert` writes it to its target).
impl LocalSubtask for Restored {
    fn index(&self) -> u32 {
        self.local().index()
    }

    fn capture(
        &self,
        id: CheckpointId,
        kind: SnapshotKind,
    ) -> flowstate_api::Result<CapturedSubtask> {
        self.local().capture(id, kind)
    }

    fn notify(&self, notice: CheckpointNotice) -> flowstate_api::Result<()> {
        self.local().notify(notice)
    }
}

/// Restores subtasks of checkpoints; RocksDB instances (when needed) live in a temporary
/// directory removed with the reader.
#[derive(Default)]
pub struct Reader {
    heap: HeapBackendFactory,
    #[cfg(feature = "rocksdb")]
    rocksdb: Option<flowstate_rocksdb::RocksDbBackendFactory>,
}

impl Reader {
    /// A reader with no backend instance yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// New subtask `index` of `parallelism` restored from `manifest` (any parallelism: the
    /// runtime's rescaling rules). Every file it reads is checked (checksums, rows).
    pub async fn restore(
        &mut self,
        storage: &CheckpointStorage,
        manifest: &CheckpointManifest,
        parallelism: Parallelism,
        index: u32,
    ) -> Result<Restored> {
        match native_backend(manifest) {
            None => Ok(Restored::Heap(
                restore_subtask_typed(&self.heap, storage, manifest, parallelism, index).await?,
            )),
            Some(backend) => {
                self.restore_native(backend, storage, manifest, parallelism, index)
                    .await
            }
        }
    }

    #[cfg(feature = "rocksdb")]
    async fn restore_native(
        &mut self,
        backend: &str,
        storage: &CheckpointStorage,
        manifest: &CheckpointManifest,
        parallelism: Parallelism,
        index: u32,
    ) -> Result<Restored> {
        if backend != "rocksdb" {
            bail!(unreadable_native(manifest.checkpoint_id, backend));
        }
        let factory = match &mut self.rocksdb {
            Some(factory) => factory,
            slot => slot.insert(flowstate_rocksdb::RocksDbBackendFactory::temporary()?),
        };
        Ok(Restored::RocksDb(
            restore_subtask_typed(&*factory, storage, manifest, parallelism, index).await?,
        ))
    }

    #[cfg(not(feature = "rocksdb"))]
    async fn restore_native(
        &mut self,
        backend: &str,
        _storage: &CheckpointStorage,
        manifest: &CheckpointManifest,
        _parallelism: Parallelism,
        _index: u32,
    ) -> Result<Restored> {
        bail!(unreadable_native(manifest.checkpoint_id, backend))
    }
}

fn unreadable_native(id: CheckpointId, backend: &str) -> String {
    if backend == "rocksdb" && !cfg!(feature = "rocksdb") {
        format!("checkpoint {id} holds native RocksDB state, and this flowstate was built without RocksDB: build it with `--features rocksdb` to read it (or convert the checkpoint to canonical with such a build)")
    } else {
        format!("checkpoint {id} holds native state of backend '{backend}', which this flowstate cannot read")
    }
}
