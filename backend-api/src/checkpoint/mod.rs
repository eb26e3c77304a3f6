//! Checkpoint storage on `object_store`, checkpoint ids, snapshot handles and manifests.
//!
//! Layout under the storage root (every path is relative to it):
//!
//! ```text
//! chk-00000000000000000042/_manifest.json     written last (create-only): the checkpoint exists once it does
//! chk-00000000000000000042/<files of this checkpoint only>
//! shared/<files that later checkpoints may reuse>
//! _coordinator/epoch-00000000000000000007    the fencing epoch of the coordinator (see lifecycle)
//! _shared_registry.json                       a copy of the shared-state registry, for tools
//! ```
//!
//! Every path a manifest names is canonical ([`check_file_placement`]): `shared/<name>` for a
//! shared file, `chk-<id>/<name>` (its own checkpoint's directory) for any other, with no
//! empty, `.` or `..` segment and no character the object store would escape, so the path
//! in the manifest, the registry's key and the store's listing are one string.

mod manifest;
mod storage;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key_groups::KeyGroupRange;

pub use manifest::{CheckpointManifest, MANIFEST_FORMAT_VERSION};
pub use storage::CheckpointStorage;

/// Checkpoint ids increase over the life of a job.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct CheckpointId(pub u64);

impl CheckpointId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
    /// The id one above this one: the next checkpoint's.
    pub fn next(self) -> Self {
        CheckpointId(self.0 + 1)
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A file in checkpoint storage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the storage root.
    pub path: String,
    /// Size in bytes: restore reads trailers by offset without a `head` call.
    pub size: u64,
    /// True when later checkpoints may reference the file (incremental checkpoints): such
    /// files live under `shared/` and are deleted only when no retained checkpoint uses them.
    pub shared: bool,
}

/// A file of a backend-native snapshot (e.g. a RocksDB SST), with the name it must have in
/// the backend's local directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NativeFile {
    /// The file's name in the backend's local directory (e.g. `000042.sst`).
    pub local_name: String,
    /// Where the file is in checkpoint storage.
    pub file: FileRef,
}

/// What one subtask's keyed state snapshot consists of.
///
/// `#[non_exhaustive]`: new handle kinds are foreseeable (other native formats, tiered
/// storage); code that restores or inspects handles answers one it does not know with
/// [`Error::UnsupportedHandle`] or says so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyedStateHandle {
    /// One file in the canonical key-group-ordered format.
    Canonical {
        /// The key groups the file holds.
        key_group_range: KeyGroupRange,
        /// The snapshot file.
        file: FileRef,
    },
    /// A canonical base plus canonical deltas (with tombstones), applied in order.
    Changelog {
        /// The key groups the files hold.
        key_group_range: KeyGroupRange,
        /// A full canonical snapshot, shared with the checkpoints after it.
        base: FileRef,
        /// Canonical deltas with tombstones, oldest first.
        deltas: Vec<FileRef>,
    },
    /// A backend-native snapshot (e.g. RocksDB SST files): only that backend restores it.
    Native {
        /// Name of the backend that wrote it and alone restores it (its factory's `name`).
        backend: String,
        /// The key groups the files hold.
        key_group_range: KeyGroupRange,
        /// Max parallelism the snapshot was taken with: native keys embed key groups.
        max_parallelism: crate::key_groups::MaxParallelism,
        /// The backend's files.
        files: Vec<NativeFile>,
        /// Backend-specific metadata (e.g. the key range of each file, state metadata).
        metadata: serde_json::Value,
    },
}

impl KeyedStateHandle {
    /// The key groups the handle holds, whatever its kind.
    pub fn key_group_range(&self) -> KeyGroupRange {
        match self {
            KeyedStateHandle::Canonical {
                key_group_range, ..
            }
            | KeyedStateHandle::Changelog {
                key_group_range, ..
            }
            | KeyedStateHandle::Native {
                key_group_range, ..
            } => *key_group_range,
        }
    }

    /// Every file the handle references.
    pub fn files(&self) -> Vec<&FileRef> {
        match self {
            KeyedStateHandle::Canonical { file, .. } => vec![file],
            KeyedStateHandle::Changelog { base, deltas, .. } => {
                std::iter::once(base).chain(deltas.iter()).collect()
            }
            KeyedStateHandle::Native { files, .. } => files.iter().map(|f| &f.file).collect(),
        }
    }

    /// Total bytes of the referenced files.
    pub fn total_size(&self) -> u64 {
        self.files().iter().map(|f| f.size).sum()
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            KeyedStateHandle::Canonical {
                key_group_range,
                file,
            } => format!("canonical {} {}", key_group_range, file.path),
            KeyedStateHandle::Changelog {
                key_group_range,
                base,
                deltas,
            } => format!(
                "changelog {} base {} + {} deltas",
                key_group_range,
                base.path,
                deltas.len()
            ),
            KeyedStateHandle::Native {
                backend,
                key_group_range,
                files,
                ..
            } => format!(
                "{backend} native {} ({} files)",
                key_group_range,
                files.len()
            ),
        }
    }
}

/// One subtask's part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskStateHandle {
    /// The subtask's index, in `0..parallelism`.
    pub subtask_index: u32,
    /// The key groups the subtask owns.
    pub key_group_range: KeyGroupRange,
    /// The subtask's keyed state snapshot; `None` when it has no keyed state.
    pub keyed: Option<KeyedStateHandle>,
    /// Operator list and broadcast state, in the operator-state format.
    pub operator: Option<FileRef>,
}

pub(crate) const MANIFEST_NAME: &str = "_manifest.json";
pub(crate) const CHECKPOINT_DIR_PREFIX: &str = "chk-";
pub(crate) const SHARED_DIR: &str = "shared";

/// Checks that `path` is a canonical relative path: segments separated by single `/`, none
/// empty, `.` or `..`, and none containing a character the object store escapes (such as
/// `%`, `#`, `\`, control characters): what a manifest, the registry and a listing of the
/// store spell identically. The empty path (the storage root) is accepted.
pub fn check_relative_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Ok(());
    }
    let invalid = |reason: String| Error::InvalidPath {
        path: path.to_string(),
        reason,
    };
    for segment in path.split('/') {
        match segment {
            "" => {
                return Err(invalid(
                    "it has an empty segment (a leading, trailing or doubled '/')".into(),
                ))
            }
            "." | ".." => return Err(invalid(format!("it has a '{segment}' segment"))),
            _ => {}
        }
        let stored = object_store::path::PathPart::from(segment);
        if stored.as_ref() != segment {
            return Err(invalid(format!(
                "segment '{segment}' has characters the object store escapes (it would be stored as '{}')",
                stored.as_ref()
            )));
        }
    }
    Ok(())
}

/// Checks where a file referenced by checkpoint `owner` lies: a shared file under `shared/`,
/// any other in `chk-<owner>/` (never the manifest itself), each at a canonical path (see
/// [`check_relative_path`]). Retention and garbage collection rely on it: a file outside
/// these places would never be collected, one spelled non-canonically would be collected
/// while still referenced.
pub fn check_file_placement(file: &FileRef, owner: CheckpointId) -> Result<()> {
    check_relative_path(&file.path)?;
    let invalid = |reason: String| Error::InvalidPath {
        path: file.path.clone(),
        reason,
    };
    let own_dir = CheckpointStorage::checkpoint_dir(owner);
    let (dir, rest) = file
        .path
        .split_once('/')
        .ok_or_else(|| invalid("a checkpoint's files lie in a directory".into()))?;
    if file.shared {
        if dir != SHARED_DIR {
            return Err(invalid(format!(
                "it is marked shared but is not under {SHARED_DIR}/, where shared files live"
            )));
        }
    } else if dir != own_dir {
        return Err(invalid(format!(
            "it is not under {own_dir}/: a file of checkpoint {owner} alone lies in its own directory (one later checkpoints may use lies under {SHARED_DIR}/, marked shared)"
        )));
    } else if rest == MANIFEST_NAME {
        return Err(invalid(
            "a checkpoint cannot reference its own manifest".into(),
        ));
    }
    Ok(())
}
