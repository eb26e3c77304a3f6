//! Operator-state files in a checkpoint: their names, and writing, reading and restoring them
//! through [`CheckpointStorage`]. A file that does not have the size its checkpoint records is
//! reported before decoding, with its path.

use bytes::Bytes;

use super::snapshot::OperatorStateSnapshot;
use super::store::OperatorStateStore;
use crate::checkpoint::{CheckpointId, CheckpointStorage, FileRef};
use crate::error::{Error, Result};
use crate::key_groups::Parallelism;

/// The name of subtask `subtask_index`'s operator-state file within a checkpoint directory.
pub fn operator_state_file_name(subtask_index: u32) -> String {
    format!("op-{subtask_index}.bin")
}

/// Encodes `snapshot` and writes it as subtask `subtask_index`'s operator-state file of
/// checkpoint `checkpoint_id` (an exclusive file). Take the snapshot synchronously
/// ([`OperatorStateStore::snapshot`]) and run this in the async half of the checkpoint.
pub async fn write_operator_state(
    storage: &CheckpointStorage,
    checkpoint_id: CheckpointId,
    subtask_index: u32,
    snapshot: &OperatorStateSnapshot,
) -> Result<FileRef> {
    let bytes = snapshot.encode()?;
    let path =
        CheckpointStorage::exclusive_path(checkpoint_id, &operator_state_file_name(subtask_index));
    storage.put(&path, Bytes::from(bytes), false).await
}

/// Reads and decodes one operator-state file.
pub async fn read_operator_state(
    storage: &CheckpointStorage,
    file: &FileRef,
) -> Result<OperatorStateSnapshot> {
    let bytes = storage.get(&file.path).await?;
    let what = format!("operator state file {}", file.path);
    if bytes.len() as u64 != file.size {
        return Err(Error::corrupt(
            what,
            format!(
                "the checkpoint records {} bytes but the file has {}",
                file.size,
                bytes.len()
            ),
        ));
    }
    OperatorStateSnapshot::decode_described(&bytes, &what)
}

/// Reads the old subtasks' operator-state files (in old-subtask order, as
/// [`crate::CheckpointManifest::operator_files`] returns them) and builds the store of new
/// subtask `new_index` of `new_parallelism`.
pub async fn restore_operator_state(
    storage: &CheckpointStorage,
    old_files: &[Option<FileRef>],
    new_index: u32,
    new_parallelism: Parallelism,
) -> Result<OperatorStateStore> {
    if new_index >= new_parallelism.get() {
        return Err(Error::OperatorIndexOutOfBounds {
            operator_index: new_index,
            parallelism: new_parallelism.get(),
        });
    }
    let old = futures::future::try_join_all(old_files.iter().map(|file| async move {
        match file {
            Some(file) => read_operator_state(storage, file).await.map(Some),
            None => Ok(None),
        }
    }))
    .await?;
    OperatorStateStore::restore(&old, new_index, new_parallelism)
}
