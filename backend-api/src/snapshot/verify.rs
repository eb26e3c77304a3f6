//! Checking a checkpoint's files whole, for tools that verify checkpoints (`flowstate
//! verify`): every problem of every file is reported, not the first. Built from the restore
//! driver's own checks, so a file the driver would refuse has a problem here.

use crate::checkpoint::{CheckpointId, CheckpointStorage, FileRef, KeyedStateHandle};
use crate::error::Error;
use crate::key_groups::MaxParallelism;
use crate::state::StateId;

use super::format::SnapshotFileInfo;
use super::restore::{check_link, check_row, handle_files, handle_mismatches};
use super::{read_blocks, read_info};

/// What kind of problem a file has.
///
/// Exhaustive on purpose: a tool reporting problems places each kind (what to do differs:
/// a missing file against damage against a storage that could not be read), so a new kind
/// must make it decide rather than fall under another.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FileProblemKind {
    /// The storage does not hold it.
    Missing,
    /// The storage holds another size than recorded (truncated, extended or replaced).
    SizeMismatch,
    /// The storage could not be asked or read (network, permissions): not necessarily damage.
    Unreadable,
    /// Its bytes fail their checks: checksums, format, rows.
    Corrupt,
    /// It is not what its handle says: another max parallelism, key-group range or kind (base
    /// or delta), or written by a checkpoint after the one referencing it.
    HandleMismatch,
    /// A delta does not build on the file before it in its chain.
    Chain,
}

/// One problem of one file.
#[derive(Debug)]
pub struct FileProblem {
    /// The file, as recorded.
    pub path: String,
    /// What class of problem it is.
    pub kind: FileProblemKind,
    /// What is wrong, with the storage's error as the source where there is one.
    pub error: Error,
}

impl FileProblem {
    /// A failure reading or decoding the file at `path`: the storage's errors are
    /// `Unreadable`, a file written at another max parallelism is a `HandleMismatch`, every
    /// other error `Corrupt`.
    pub fn reading(path: &str, error: Error) -> Self {
        let kind = match &error {
            Error::Storage { .. } | Error::Io { .. } => FileProblemKind::Unreadable,
            Error::MaxParallelismMismatch { .. } => FileProblemKind::HandleMismatch,
            _ => FileProblemKind::Corrupt,
        };
        Self {
            path: path.to_string(),
            kind,
            error,
        }
    }

    fn new(file: &FileRef, kind: FileProblemKind, error: Error) -> Self {
        Self {
            path: file.path.clone(),
            kind,
            error,
        }
    }
}

/// Checks that the storage holds `file` with the size recorded for it.
pub async fn check_stored(storage: &CheckpointStorage, file: &FileRef) -> Result<(), FileProblem> {
    let what = || format!("checkpoint file {}", file.path);
    let (kind, detail) = match storage.size_of(&file.path).await {
        Ok(Some(size)) if size == file.size => return Ok(()),
        Ok(Some(size)) => (
            FileProblemKind::SizeMismatch,
            format!(
                "it has {size} bytes where the manifest records {} (truncated, extended or replaced)",
                file.size
            ),
        ),
        Ok(None) => (
            FileProblemKind::Missing,
            format!(
                "missing: the manifest references it ({} bytes) but it is not in the storage (deleted, or never uploaded)",
                file.size
            ),
        ),
        Err(e) => return Err(FileProblem::reading(&file.path, e)),
    };
    Err(FileProblem::new(file, kind, Error::corrupt(what(), detail)))
}

/// Checks every file of `handle`, referenced by checkpoint `checkpoint` of max parallelism
/// `max`, and returns every problem found (empty when the restore driver would accept them
/// all):
/// - each file stored with its recorded size ([`check_stored`]); a native handle's files
///   (read only by their backend) are checked for that alone;
/// - each canonical or changelog file read whole: header, trailer, metadata and index, every
///   block's checksum, every row as the driver checks it before a backend sees it;
/// - each file against the handle: the max parallelism, the handle's key-group range, full
///   or delta as its place in the handle needs, and not written after `checkpoint`;
/// - each delta of a chain against the file before it (lineage), where both could be read.
pub async fn verify_handle(
    storage: &CheckpointStorage,
    checkpoint: CheckpointId,
    max: MaxParallelism,
    handle: &KeyedStateHandle,
) -> Vec<FileProblem> {
    let mut problems = Vec::new();
    if let KeyedStateHandle::Native { files, .. } = handle {
        for native in files {
            if let Err(problem) = check_stored(storage, &native.file).await {
                problems.push(problem);
            }
        }
        return problems;
    }
    let range = handle.key_group_range();
    let files = handle_files(handle);
    let mut infos: Vec<Option<SnapshotFileInfo>> = Vec::with_capacity(files.len());
    for (file, kind, role) in &files {
        if let Err(problem) = check_stored(storage, file).await {
            problems.push(problem);
            infos.push(None);
            continue;
        }
        let info = match read_info(storage, file).await {
            Ok(info) => info,
            Err(e) => {
                problems.push(FileProblem::reading(&file.path, e));
                infos.push(None);
                continue;
            }
        };
        if let Err(e) = read_rows(storage, file, &info).await {
            problems.push(FileProblem::reading(&file.path, e));
        }
        for mismatch in handle_mismatches(&info, file, max, range, *kind, role) {
            problems.push(FileProblem::new(
                file,
                FileProblemKind::HandleMismatch,
                mismatch,
            ));
        }
        if let Some(lineage) = info
            .metadata
            .lineage
            .as_ref()
            .filter(|l| l.checkpoint_id > checkpoint)
        {
            let error = Error::corrupt(
                format!("snapshot file {}", file.path),
                format!(
                    "written at checkpoint {}, after checkpoint {checkpoint} that references it: the manifest does not describe this file",
                    lineage.checkpoint_id
                ),
            );
            problems.push(FileProblem::new(
                file,
                FileProblemKind::HandleMismatch,
                error,
            ));
        }
        infos.push(Some(info));
    }
    for i in 1..files.len().min(infos.len()) {
        let (file, prev_file) = (files[i].0, files[i - 1].0);
        if let (Some(info), Some(prev)) = (&infos[i], &infos[i - 1]) {
            if let Err(e) = check_link(i, (file, info), (prev_file, prev)) {
                problems.push(FileProblem::new(file, FileProblemKind::Chain, e));
            }
        }
    }
    problems
}

/// Reads every block of a file and checks each row as the restore driver does, against the
/// file's own states and max parallelism (a mismatch with the handle is reported apart).
async fn read_rows(
    storage: &CheckpointStorage,
    file: &FileRef,
    info: &SnapshotFileInfo,
) -> crate::Result<()> {
    let meta = &info.metadata;
    // Ids standing in for a backend's: rows name states by their position in the file.
    let states: Vec<_> = (0u32..)
        .zip(&meta.states)
        .map(|(i, state)| (StateId(i), state.kind))
        .collect();
    read_blocks(
        storage,
        file,
        info,
        &meta.key_group_range,
        |key_group, rows| {
            for row in &rows {
                check_row(
                    row,
                    key_group,
                    meta.max_parallelism,
                    &states,
                    meta.kind,
                    &file.path,
                )?;
            }
            Ok(())
        },
    )
    .await
}
