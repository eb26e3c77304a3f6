//! Checkpoints and restores at an unchanged parallelism: round trips of every state kind,
//! chains of full and incremental checkpoints (with aborted and unconfirmed ones), snapshot
//! isolation (writes after the synchronous part never reach the checkpoint), consistency of a
//! snapshot taken while writers run, empty backends, ranged reads on restore, the layout of
//! canonical files, and retention of what incremental checkpoints share.
//!
//! One file per theme: `round_trip` (round trips and empty backends), `chains` (chains of
//! checkpoints and retention), `isolation` (writes after the synchronous part, snapshots
//! during writes), `ranged` (ranged reads on restore) and `layout` (canonical files).

use flowstate_api::{
    CheckpointManifest, CheckpointStorage, KeyedStateBackend, StateBackendFactory, StateMetadata,
};

use crate::dataset::{dataset_metadata, Job};
use crate::fixtures::{max_parallelism, parallelism};
use crate::harness::{create_operator, restore_operator};

mod chains;
mod isolation;
mod layout;
mod ranged;
mod round_trip;

pub use chains::{
    checkpoint_chain_full, checkpoint_chain_incremental, retention_keeps_needed_files,
};
pub use isolation::{
    isolation_full, isolation_incremental, snapshot_during_writes_full,
    snapshot_during_writes_incremental,
};
pub use layout::canonical_files_are_key_group_ordered;
pub use ranged::{ranged_restore_full, ranged_restore_incremental};
pub use round_trip::{
    empty_backend_full, empty_backend_incremental, round_trip_full, round_trip_incremental,
};

/// Key space of the random datasets: a few hundred keys spread over every key group.
const KEY_SPACE: u64 = 800;

fn new_job<F: StateBackendFactory>(factory: &F, p: u32) -> Job<F::Backend> {
    Job::new(create_operator(factory, max_parallelism(), parallelism(p)).unwrap()).unwrap()
}

/// Restores `manifest` at parallelism `p` and binds the dataset's states.
pub(crate) fn restore_job<F: StateBackendFactory>(
    factory: &F,
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    p: u32,
) -> Job<F::Backend> {
    let subtasks =
        restore_operator(factory, storage, manifest, parallelism(p)).unwrap_or_else(|e| {
            panic!(
                "restoring checkpoint {} at parallelism {p} failed: {e}",
                manifest.checkpoint_id
            )
        });
    Job::new(subtasks).unwrap()
}

fn assert_registered_dataset<B: KeyedStateBackend>(backend: &B, what: &str) {
    let registered: Vec<StateMetadata> = backend
        .registered_states()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    for meta in dataset_metadata() {
        assert!(
            registered.contains(&meta),
            "{what}: the restored backend does not know state '{}' as it was written ({meta:?}); it knows {registered:?}",
            meta.name
        );
    }
}
