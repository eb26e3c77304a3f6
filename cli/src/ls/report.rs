//! `ls`'s report: what `--json` prints, field by field. The field names are part of the
//! CLI's interface.

use serde::Serialize;

use crate::output::KeyGroupSpan;

/// The JSON output of `flowstate ls --json`. Field names are stable.
#[derive(Serialize, Debug)]
pub struct LsReport {
    /// The storage listed, as a URL (`file:///abs/dir`, `s3://bucket/prefix`, ...).
    pub storage: String,
    /// Every checkpoint directory (`chk-<id>/`), by ascending id: completed checkpoints and
    /// directories without a manifest.
    pub checkpoints: Vec<CheckpointReport>,
    /// The shared files retained checkpoints use, and the registry copy's state.
    pub registry: RegistryReport,
    /// Files under `shared/` that no retained checkpoint references: left by aborted or still
    /// pending checkpoints (the coordinator deletes them once nothing is pending).
    pub unreferenced_shared_files: Vec<StoredFile>,
}

/// One checkpoint directory.
#[derive(Serialize, Debug)]
pub struct CheckpointReport {
    /// The checkpoint id.
    pub id: u64,
    /// `retained`: its manifest exists and reads back (a completed checkpoint retention kept:
    /// restorable); `incomplete`: a directory without a manifest (a pending or aborted
    /// checkpoint, or a leftover the coordinator removes); `unreadable`: its manifest exists but
    /// cannot be read (see `problem`).
    pub status: &'static str,
    /// True for `retained`.
    pub retained: bool,
    /// Why the manifest cannot be read (`unreadable` only).
    pub problem: Option<String>,
    /// When the manifest was written (the checkpoint completed), RFC 3339 in UTC; `null` when
    /// there is no manifest.
    pub time: Option<String>,
    /// The parallelism it was taken at (from the manifest).
    pub parallelism: Option<u32>,
    /// The max parallelism (number of key groups) of its state.
    pub max_parallelism: Option<u32>,
    /// Every subtask's part, by subtask index (empty without a readable manifest).
    pub subtasks: Vec<SubtaskReport>,
    /// Number of distinct state files the checkpoint references (without a manifest: the
    /// files in its directory).
    pub files: usize,
    /// Bytes of those files (the manifest itself not counted).
    pub total_bytes: u64,
    /// Bytes of those that are shared files (under `shared/`, possibly used by other
    /// checkpoints too).
    pub shared_bytes: u64,
    /// Bytes of those in the checkpoint's own directory.
    pub exclusive_bytes: u64,
}

/// One subtask's part of a checkpoint.
#[derive(Serialize, Debug)]
pub struct SubtaskReport {
    /// The subtask's index.
    pub subtask_index: u32,
    /// The key groups it owned.
    pub key_groups: KeyGroupSpan,
    /// Its keyed state handle: `canonical` (one portable file), `changelog` (a canonical base
    /// plus `deltas` delta files), `native` (backend files, see `native_backend`) or `none`.
    pub kind: &'static str,
    /// The backend of a native handle (`rocksdb`).
    pub native_backend: Option<String>,
    /// The number of delta files of a changelog handle (0 otherwise).
    pub deltas: usize,
    /// Files of the keyed state handle.
    pub keyed_files: usize,
    /// Bytes of the keyed state handle.
    pub keyed_bytes: u64,
    /// Bytes of the operator-state file (0 without one).
    pub operator_bytes: u64,
    /// Bytes of its files that are shared.
    pub shared_bytes: u64,
}

/// The shared-state registry: derived from the retained checkpoints' manifests (the source
/// of truth), with who created each file from the registry copy, and how the copy compares.
#[derive(Serialize, Debug)]
pub struct RegistryReport {
    /// The registry copy `_shared_registry.json`: `present`, `missing` or `unreadable`.
    pub stored_copy: &'static str,
    /// Why the copy cannot be read (`unreadable` only).
    pub stored_copy_problem: Option<String>,
    /// Every shared file a retained checkpoint references, by path.
    pub files: Vec<SharedFileReport>,
    /// Shared files the copy lists as unreferenced and waiting to be deleted.
    pub deferred_deletes: Vec<String>,
    /// Where the copy disagrees with the manifests (it is rewritten at every completed
    /// checkpoint; a difference means it is stale or a manifest could not be read).
    pub discrepancies: Vec<String>,
}

/// One shared file of the registry.
#[derive(Serialize, Debug)]
pub struct SharedFileReport {
    /// Path relative to the storage root (`shared/...`).
    pub path: String,
    /// Size in bytes, as the manifests record it.
    pub size: u64,
    /// The first checkpoint that referenced it (from the copy when it knows an older one,
    /// which retention may have dropped since).
    pub created_by: u64,
    /// The retained checkpoints that reference it, ascending.
    pub used_by: Vec<u64>,
    /// False when the storage listing does not show the file: a retained checkpoint
    /// references a missing file (run `flowstate verify`).
    pub present: bool,
}

/// A file of the storage and its size.
#[derive(Serialize, Debug)]
pub struct StoredFile {
    /// The file's path, relative to the storage root.
    pub path: String,
    /// The file's size, in bytes.
    pub size: u64,
}
