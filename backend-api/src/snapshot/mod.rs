//! The canonical snapshot format: key-group ordered, indexed, checksummed per key group.
//!
//! Every backend can write it (from a [`KeyedSnapshotView`]) and read it (through
//! [`crate::KeyedStateBackend::apply_rows`]), so a canonical snapshot taken by one backend
//! restores into any other. Format version 2 (version 1 is read too):
//!
//! ```text
//! header   "FLOWSNAP" | version u32 LE | flags u32 LE (bit 0: delta with tombstones)
//! blocks   one per non-empty key group, ascending and back to back; a block is rows
//! metadata postcard(SnapshotMetadata): max parallelism, key-group range, kind, states,
//!          and (version 2) the lineage: checkpoint id and, for a delta, the file it builds on
//! index    count u32 | count x (key group u32, offset u64, length u64, crc32c u32)
//! trailer  metadata offset u64 | metadata length u64 | metadata crc32c u32 |
//!          index offset u64 | index length u64 | index crc32c u32 | version u32 | "FLOWSNAP"
//! ```
//!
//! A row is `tag u8 | state varint | key len varint | key | namespace len varint | namespace |
//! payload`, where the payload is `len varint | bytes` for value (tag 0) and list (tag 1, the
//! list in [`crate::list_encoding`] form), `user key len | user key | value len | value` for a
//! map entry (tag 2), and nothing for a tombstone (tag 3, only in deltas). `state` indexes the
//! metadata's state list. All integers little-endian; varints are unsigned LEB128 in their
//! shortest form.
//!
//! Readers accept exactly this layout: header and trailer agree (magic, version, the delta
//! flag and the metadata's kind), blocks tile the bytes between header and metadata, and
//! metadata, index and trailer end the file. Anything else is [`crate::Error::Corrupt`].
//!
//! Restoring key-group range `[a, b]` reads the header and the trailer (two store calls issued
//! together), the metadata and index (adjacent), then the one contiguous span of blocks of the
//! key groups in `[a, b]`; each block is verified by its own checksum and each row checked
//! before a backend sees it ([`restore_into`]). [`restore_reads`] lists those store calls
//! without making them; [`verify_handle`] checks a handle's files whole with the driver's
//! checks, reporting every problem.

use bytes::Bytes;

use crate::backend::BoxFuture;
use crate::backend::{KeyedSnapshotView, SnapshotJob, SnapshotRequest};
use crate::checkpoint::{CheckpointId, CheckpointStorage, FileRef, KeyedStateHandle};
use crate::error::Result;

#[doc(hidden)]
pub mod craft;
mod format;
mod reads;
mod restore;
#[cfg(test)]
mod tests;
mod verify;

pub use format::{
    decode_block, encode_row, read_info_from_bytes, write_snapshot, write_snapshot_with,
    BlockIndexEntry, FileLineage, FileRow, SnapshotFileInfo, SnapshotFileKind, SnapshotMetadata,
    SnapshotStats, HEADER_LEN, OLDEST_SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION,
    TRAILER_LEN,
};
pub use reads::{
    info_reads, max_parallelism_check_reads, planned_reads, restore_reads, FilePart, PlannedRead,
    ReadPurpose, RestoreRead,
};
pub use restore::{
    check_handles, check_max_parallelism, read_blocks, read_handle_infos, read_info,
    restore_canonical_into, restore_file, restore_into,
};
pub use verify::{check_stored, verify_handle, FileProblem, FileProblemKind};

/// What a keyed snapshot file is, as its name says.
///
/// Exhaustive on purpose: the roles are the file names the canonical format writes; a new one
/// comes with a format change.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KeyedFileRole {
    /// A full snapshot, complete on its own.
    Full,
    /// The base of an incremental chain (a full snapshot later deltas build on).
    Base,
    /// A delta of an incremental chain.
    Delta,
}

impl KeyedFileRole {
    fn as_str(self) -> &'static str {
        match self {
            KeyedFileRole::Full => "full",
            KeyedFileRole::Base => "base",
            KeyedFileRole::Delta => "delta",
        }
    }
}

/// The name (last path segment) of a keyed snapshot file, one scheme for every backend:
/// `keyed-<subtask, 5 digits>-<backend>-chk<checkpoint id, 20 digits>-<role>-<16 hex
/// digits>.fsnap`. Listings sort a storage's files by subtask, then backend, then checkpoint.
/// The hex digits (time, process id and a process-wide counter) keep apart the files of two
/// attempts of one checkpoint, or of two backend instances, which must never share a path.
pub fn keyed_file_name(
    backend: &str,
    subtask_index: u32,
    checkpoint_id: CheckpointId,
    role: KeyedFileRole,
) -> String {
    format!(
        "keyed-{subtask_index:05}-{backend}-chk{:020}-{}-{:016x}.fsnap",
        checkpoint_id.get(),
        role.as_str(),
        unique_suffix()
    )
}

/// Time, process id and a process-wide counter, mixed.
fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 48) ^ (u64::from(std::process::id()) << 32)
}

/// The file name a delta's [`FileLineage::previous`] names a file by: its path's last
/// segment.
pub fn lineage_name(file: &FileRef) -> &str {
    restore::file_name(&file.path)
}

/// The async half of a full canonical snapshot: writes the view and uploads it.
pub struct CanonicalSnapshotJob {
    view: Box<dyn KeyedSnapshotView>,
    path: String,
    kind: SnapshotFileKind,
}

impl CanonicalSnapshotJob {
    /// The full snapshot a backend named `backend` takes for `request`: `view` written to
    /// the checkpoint's own directory under [`keyed_file_name`].
    pub fn for_request(
        view: Box<dyn KeyedSnapshotView>,
        backend: &str,
        request: &SnapshotRequest,
    ) -> Self {
        let id = request.checkpoint_id;
        let name = keyed_file_name(backend, request.subtask_index, id, KeyedFileRole::Full);
        Self::new(view, CheckpointStorage::exclusive_path(id, &name))
    }

    /// Writes `view` as a full snapshot to `path` (relative to the storage root).
    pub fn new(view: Box<dyn KeyedSnapshotView>, path: String) -> Self {
        Self {
            view,
            path,
            kind: SnapshotFileKind::Full,
        }
    }
}

impl SnapshotJob for CanonicalSnapshotJob {
    fn run(
        self: Box<Self>,
        storage: CheckpointStorage,
    ) -> BoxFuture<'static, Result<KeyedStateHandle>> {
        Box::pin(async move {
            let range = self.view.key_group_range();
            let file = write_and_upload(&storage, self.view.as_ref(), self.kind, &self.path, false)
                .await?;
            Ok(KeyedStateHandle::Canonical {
                key_group_range: range,
                file,
            })
        })
    }
}

/// Writes a view in the canonical format (without lineage) and uploads it to `path`.
pub async fn write_and_upload(
    storage: &CheckpointStorage,
    view: &dyn KeyedSnapshotView,
    kind: SnapshotFileKind,
    path: &str,
    shared: bool,
) -> Result<FileRef> {
    write_and_upload_with(storage, view, kind, None, path, shared).await
}

/// Writes a view in the canonical format recording `lineage` and uploads it to `path`.
pub async fn write_and_upload_with(
    storage: &CheckpointStorage,
    view: &dyn KeyedSnapshotView,
    kind: SnapshotFileKind,
    lineage: Option<FileLineage>,
    path: &str,
    shared: bool,
) -> Result<FileRef> {
    let (bytes, _stats) = write_snapshot_with(view, kind, lineage)?;
    storage.put(path, Bytes::from(bytes), shared).await
}
