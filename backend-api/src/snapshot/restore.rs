//! The restore driver: reads canonical files by key-group range and validates everything a
//! backend is handed, so every backend restores under one contract.
//!
//! Before any row reaches [`KeyedStateBackend::apply_rows`] the driver has checked:
//! - the handles: disjoint ranges within the max parallelism, together covering the target
//!   range (a key group in no handle would silently restore empty), natives at the right max
//!   parallelism;
//! - each file against its handle: same max parallelism, the handle's range exactly the file's,
//!   a canonical handle's file and a chain's base full, a chain's deltas deltas, each delta
//!   building on the file before it (format 2 lineage);
//! - each row: its key group owned by the backend, its key hashing to that key group, a state
//!   of the file whose kind matches the row (a tombstone only in a delta), a well-formed list.

use crate::backend::{KeyedStateBackend, RowValue, StateRow};
use crate::checkpoint::{CheckpointStorage, FileRef, KeyedStateHandle};
use crate::error::{Error, Result};
use crate::key_groups::{key_group_for_key_bytes, KeyGroup, KeyGroupRange, MaxParallelism};
use crate::list_encoding;
use crate::state::{StateId, StateKind, StorageLayout};

use super::format::{
    check_crc, decode_block, parse_ends, parse_meta_and_index, FileRow, SnapshotFileInfo,
    SnapshotFileKind,
};
use super::reads::{blocks_read, ends_reads, metadata_read, PlannedRead};

fn short_read(what: &str, expected: u64, got: usize) -> Error {
    Error::corrupt(
        what,
        format!("read {got} of {expected} bytes: the file is shorter than its handle records"),
    )
}

/// Reads one planned range of `file`, checking the store returned all of it.
async fn fetch(
    storage: &CheckpointStorage,
    file: &FileRef,
    read: &PlannedRead,
    what: &str,
) -> Result<bytes::Bytes> {
    let bytes = storage.get_range(&file.path, read.range.clone()).await?;
    if bytes.len() as u64 != read.len() {
        return Err(short_read(what, read.len(), bytes.len()));
    }
    Ok(bytes)
}

/// Reads header, trailer, metadata and index of a stored snapshot file: header and trailer
/// first, then metadata and index. Header and trailer are two calls issued together, not one
/// call of two ranges, which S3, GCS and Azure stores would serve by downloading every file
/// under 1 MiB whole. [`super::info_reads`] plans these calls.
pub async fn read_info(storage: &CheckpointStorage, file: &FileRef) -> Result<SnapshotFileInfo> {
    let what = format!("snapshot file {}", file.path);
    let [header, trailer] = ends_reads(file.size, &what)?;
    let (header, trailer) = futures::try_join!(
        fetch(storage, file, &header, &what),
        fetch(storage, file, &trailer, &what)
    )?;
    let ends = parse_ends(&header, &trailer, file.size, &what)?;
    let span = fetch(
        storage,
        file,
        &metadata_read(ends.meta_offset, file.size, &what)?,
        &what,
    )
    .await?;
    parse_meta_and_index(&ends, &span, &what)
}

/// Reads and verifies the blocks of the key groups in `range` (one ranged read) and hands each
/// block's decoded rows to `apply`.
pub async fn read_blocks(
    storage: &CheckpointStorage,
    file: &FileRef,
    info: &SnapshotFileInfo,
    range: &KeyGroupRange,
    mut apply: impl FnMut(KeyGroup, Vec<FileRow<'_>>) -> Result<()>,
) -> Result<()> {
    let Some(read) = blocks_read(info, range, &file.path)? else {
        return Ok(());
    };
    let span = fetch(storage, file, &read, &file.path).await?;
    // `info` is public and may not come from `read_info`: no arithmetic is trusted here.
    let out_of_span = || Error::corrupt(&file.path, "block outside the file's blocks");
    let span_start = read.range.start;
    for entry in info.blocks_in(range) {
        let block = entry
            .offset
            .checked_sub(span_start)
            .and_then(|start| usize::try_from(start).ok())
            .zip(usize::try_from(entry.length).ok())
            .and_then(|(start, len)| span.get(start..start.checked_add(len)?))
            .ok_or_else(out_of_span)?;
        check_crc(
            format!("{} key group {}", file.path, entry.key_group),
            block,
            entry.crc32c,
        )?;
        apply(entry.key_group, decode_block(block)?)?;
    }
    Ok(())
}

/// Checks one decoded row before a backend sees it (see the module docs).
pub(super) fn check_row<'a>(
    row: &FileRow<'a>,
    key_group: KeyGroup,
    max: MaxParallelism,
    states: &[(StateId, StateKind)],
    kind: SnapshotFileKind,
    what: &str,
) -> Result<StateRow<'a>> {
    let bad = |detail: String| {
        Err(Error::corrupt(
            format!("{what} key group {key_group}"),
            detail,
        ))
    };
    let Some(&(state, state_kind)) = states.get(row.state_index as usize) else {
        return bad(format!(
            "a row names state {} of {}",
            row.state_index,
            states.len()
        ));
    };
    let actual = key_group_for_key_bytes(row.key, max);
    if actual != key_group {
        return bad(format!("a row's key belongs to key group {actual}"));
    }
    let fits = match (row.value, state_kind.layout()) {
        (RowValue::Value(_), StorageLayout::Value)
        | (RowValue::MapEntry { .. }, StorageLayout::Map) => true,
        (RowValue::List(list), StorageLayout::List) => {
            list_encoding::iter(list).try_for_each(|e| e.map(drop))?;
            true
        }
        (RowValue::Tombstone, _) => kind == SnapshotFileKind::Delta,
        _ => false,
    };
    if !fits {
        return bad(format!(
            "a {} row for {state_kind} state {} in a {kind:?} file",
            row.value.kind_name(),
            row.state_index
        ));
    }
    Ok(StateRow {
        state,
        key: row.key,
        namespace: row.namespace,
        value: row.value,
    })
}

/// Registers the file's states in `backend` and applies the checked rows of the key groups
/// of `target` the file holds.
async fn apply_file<B: KeyedStateBackend + ?Sized>(
    backend: &B,
    storage: &CheckpointStorage,
    file: &FileRef,
    info: &SnapshotFileInfo,
    target: &KeyGroupRange,
) -> Result<()> {
    let states = info
        .metadata
        .states
        .iter()
        .map(|m| Ok((backend.register_state(m)?, m.kind)))
        .collect::<Result<Vec<_>>>()?;
    let Some(range) = info.metadata.key_group_range.intersection(target) else {
        return Ok(());
    };
    let max = backend.max_parallelism();
    let owned = backend.key_group_range();
    let kind = info.metadata.kind;
    read_blocks(storage, file, info, &range, |key_group, rows| {
        owned.check_owns(key_group)?;
        let rows = rows
            .iter()
            .map(|r| check_row(r, key_group, max, &states, kind, &file.path))
            .collect::<Result<Vec<_>>>()?;
        backend.apply_rows(key_group, &rows)
    })
    .await
}

/// Restores into `backend` the key groups of its range found in one snapshot file: registers
/// the file's states, then applies the checked rows of the overlapping blocks. The file's own
/// range is trusted; [`restore_into`] also checks files against their handles.
pub async fn restore_file<B: KeyedStateBackend + ?Sized>(
    backend: &B,
    storage: &CheckpointStorage,
    file: &FileRef,
) -> Result<()> {
    let info = read_info(storage, file).await?;
    check_file_max(&info, backend.max_parallelism())?;
    apply_file(backend, storage, file, &info, &backend.key_group_range()).await
}

fn check_file_max(info: &SnapshotFileInfo, max: MaxParallelism) -> Result<()> {
    if info.metadata.max_parallelism != max {
        return Err(Error::MaxParallelismMismatch {
            snapshot: info.metadata.max_parallelism.get(),
            configured: max.get(),
        });
    }
    Ok(())
}

/// The files of a canonical or changelog handle in restore order, each with the kind its
/// handle needs and its role, for messages (none for a native handle).
pub(super) fn handle_files(
    handle: &KeyedStateHandle,
) -> Vec<(&FileRef, SnapshotFileKind, &'static str)> {
    match handle {
        KeyedStateHandle::Canonical { file, .. } => {
            vec![(file, SnapshotFileKind::Full, "canonical")]
        }
        KeyedStateHandle::Changelog { base, deltas, .. } => {
            std::iter::once((base, SnapshotFileKind::Full, "the base of a chain"))
                .chain(
                    deltas
                        .iter()
                        .map(|d| (d, SnapshotFileKind::Delta, "a delta of a chain")),
                )
                .collect()
        }
        KeyedStateHandle::Native { .. } => Vec::new(),
    }
}

/// Everything that makes a file other than its handle says: written at another max
/// parallelism, holding another key-group range, or of another kind (`role` names its place
/// in the handle). The restore stops at the first; `verify_handle` reports them all.
pub(super) fn handle_mismatches(
    info: &SnapshotFileInfo,
    file: &FileRef,
    max: MaxParallelism,
    handle_range: KeyGroupRange,
    kind: SnapshotFileKind,
    role: &str,
) -> Vec<Error> {
    let mut out = Vec::new();
    if let Err(e) = check_file_max(info, max) {
        out.push(e);
    }
    let what = || format!("snapshot file {}", file.path);
    if info.metadata.key_group_range != handle_range {
        out.push(Error::corrupt(
            what(),
            format!(
                "it holds key groups {} but its handle claims {handle_range}: the manifest does not describe this file",
                info.metadata.key_group_range
            ),
        ));
    }
    if info.metadata.kind != kind {
        out.push(Error::corrupt(
            what(),
            format!(
                "a {:?} file where the handle needs a {kind:?} file ({role})",
                info.metadata.kind
            ),
        ));
    }
    out
}

/// Reads the info of every file of a canonical or changelog handle (a chain's files
/// concurrently) and checks each against the handle and each delta against the file before
/// it: what the restore driver does before it applies any row of the handle. Empty for a
/// native handle. Tools that need the files' indexes as the restore sees them (`flowstate
/// plan`, with [`super::restore_reads`]) read them so.
pub async fn read_handle_infos(
    storage: &CheckpointStorage,
    max: MaxParallelism,
    handle: &KeyedStateHandle,
) -> Result<Vec<SnapshotFileInfo>> {
    read_handle_infos_reusing(storage, max, handle, None).await
}

/// [`read_handle_infos`], taking the info of one file (`known`: its path and info) as read
/// already instead of reading it again.
async fn read_handle_infos_reusing(
    storage: &CheckpointStorage,
    max: MaxParallelism,
    handle: &KeyedStateHandle,
    known: Option<&(String, SnapshotFileInfo)>,
) -> Result<Vec<SnapshotFileInfo>> {
    let files = handle_files(handle);
    let range = handle.key_group_range();
    let infos = futures::future::try_join_all(files.iter().map(|(file, kind, role)| async move {
        let info = match known {
            Some((path, info)) if *path == file.path => info.clone(),
            _ => read_info(storage, file).await?,
        };
        match handle_mismatches(&info, file, max, range, *kind, role)
            .into_iter()
            .next()
        {
            Some(mismatch) => Err(mismatch),
            None => Ok(info),
        }
    }))
    .await?;
    let files: Vec<&FileRef> = files.into_iter().map(|(file, _, _)| file).collect();
    check_chain(&files, &infos)?;
    Ok(infos)
}

/// The file name a delta's lineage names its predecessor by: the last path segment.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// Checks that delta `i` of a chain, `file`, builds on the file before it: a missing, extra
/// or reordered delta would otherwise apply changes to the wrong state. Files without
/// lineage (format 1, or written without history) are checked only for order of checkpoints
/// where known; once a chain records lineage, every later file must.
pub(super) fn check_link(
    i: usize,
    (file, info): (&FileRef, &SnapshotFileInfo),
    (prev_file, prev): (&FileRef, &SnapshotFileInfo),
) -> Result<()> {
    let bad = |detail: String| {
        Err(Error::corrupt(
            format!("incremental chain at delta {i} ({})", file.path),
            format!("{detail}: a delta of the chain is missing, extra or out of order"),
        ))
    };
    match (&info.metadata.lineage, &prev.metadata.lineage) {
        (None, Some(_)) => bad(format!(
            "it records no lineage but follows {}, which does",
            prev_file.path
        )),
        (None, None) => Ok(()),
        (Some(lineage), prev_lineage) => {
            let wanted = file_name(&prev_file.path);
            if lineage.previous.as_deref() != Some(wanted) {
                return bad(format!(
                    "it builds on '{}', not on '{wanted}' before it",
                    lineage.previous.as_deref().unwrap_or_default()
                ));
            }
            match prev_lineage {
                Some(p) if p.checkpoint_id >= lineage.checkpoint_id => bad(format!(
                    "written at checkpoint {}, not after checkpoint {} of the file before it",
                    lineage.checkpoint_id, p.checkpoint_id
                )),
                _ => Ok(()),
            }
        }
    }
}

/// [`check_link`] for every delta of a chain: `files` (base first) and their infos.
fn check_chain(files: &[&FileRef], infos: &[SnapshotFileInfo]) -> Result<()> {
    let linked: Vec<_> = files.iter().copied().zip(infos).collect();
    for (i, pair) in linked.windows(2).enumerate() {
        check_link(i + 1, pair[1], pair[0])?;
    }
    Ok(())
}

/// Fails with [`Error::MaxParallelismMismatch`] unless the handles were written at `max`.
/// Checked on the first handle even when no handle overlaps the target range: a job restored
/// with another max parallelism must fail loudly, not come up empty.
pub async fn check_max_parallelism(
    max: MaxParallelism,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
) -> Result<()> {
    checked_first_info(max, storage, handles).await.map(drop)
}

/// [`check_max_parallelism`], returning the info it read (the first handle's first file, by
/// path) so that the restore reuses it instead of reading it again.
async fn checked_first_info(
    max: MaxParallelism,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
) -> Result<Option<(String, SnapshotFileInfo)>> {
    let (found, info) = match handles.first() {
        None => return Ok(None),
        Some(KeyedStateHandle::Native {
            max_parallelism, ..
        }) => (*max_parallelism, None),
        Some(KeyedStateHandle::Canonical { file, .. })
        | Some(KeyedStateHandle::Changelog { base: file, .. }) => {
            let info = read_info(storage, file).await?;
            (
                info.metadata.max_parallelism,
                Some((file.path.clone(), info)),
            )
        }
    };
    if found != max {
        return Err(Error::MaxParallelismMismatch {
            snapshot: found.get(),
            configured: max.get(),
        });
    }
    Ok(info)
}

/// Checks the handles of one restore without reading a file: native handles at `max`, every
/// range within `max`'s key groups, no two ranges overlapping, and (when there are handles)
/// every key group of `target` in one of them. Run it before restoring anything; a backend
/// with its own restore of native handles calls it with all handles.
pub fn check_handles(
    max: MaxParallelism,
    target: KeyGroupRange,
    handles: &[KeyedStateHandle],
) -> Result<()> {
    let corrupt = |detail: String| Err(Error::corrupt("keyed state handles", detail));
    let mut ranges = Vec::with_capacity(handles.len());
    for handle in handles {
        if let KeyedStateHandle::Native {
            max_parallelism, ..
        } = handle
        {
            if *max_parallelism != max {
                return Err(Error::MaxParallelismMismatch {
                    snapshot: max_parallelism.get(),
                    configured: max.get(),
                });
            }
        }
        let range = handle.key_group_range();
        if range.end().get() >= max.get() {
            return corrupt(format!(
                "{} covers key groups beyond max parallelism {max}",
                handle.describe()
            ));
        }
        ranges.push((range, handle));
    }
    if ranges.is_empty() {
        return Ok(());
    }
    ranges.sort_by_key(|(r, _)| r.start());
    for pair in ranges.windows(2) {
        let ((a, ha), (b, hb)) = (&pair[0], &pair[1]);
        if let Some(both) = a.intersection(b) {
            return corrupt(format!(
                "{} and {} both hold key groups {both}: a checkpoint's handles are disjoint; the manifest is damaged or mixes checkpoints",
                ha.describe(),
                hb.describe()
            ));
        }
    }
    // Sorted and disjoint: walk the target's key groups through the ranges.
    let mut next = target.start().get();
    for (range, _) in &ranges {
        if range.end().get() < next {
            continue;
        }
        if range.start().get() > next {
            break;
        }
        next = range.end().get() + 1;
        if next > target.end().get() {
            return Ok(());
        }
    }
    corrupt(format!(
        "key group {next} of the restored range {target} is in no handle: the manifest misses a subtask's state or a handle claims less than it holds"
    ))
}

/// Restores every canonical or changelog handle into `backend`, reading only the key groups
/// of the backend's range. Handles whose range does not overlap are not read at all; native
/// handles are refused with [`Error::UnsupportedHandle`].
pub async fn restore_into<B: KeyedStateBackend + ?Sized>(
    backend: &B,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
) -> Result<()> {
    restore_handles(backend, storage, handles, false).await
}

/// As [`restore_into`], but skips native handles: for a backend that restores its own native
/// handles and hands every handle here for the canonical ones (all handles, so the checks
/// of [`check_handles`] see the whole restore).
pub async fn restore_canonical_into<B: KeyedStateBackend + ?Sized>(
    backend: &B,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
) -> Result<()> {
    restore_handles(backend, storage, handles, true).await
}

async fn restore_handles<B: KeyedStateBackend + ?Sized>(
    backend: &B,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    skip_native: bool,
) -> Result<()> {
    let target = backend.key_group_range();
    let max = backend.max_parallelism();
    let first = checked_first_info(max, storage, handles).await?;
    check_handles(max, target, handles)?;
    for handle in handles {
        if handle.key_group_range().intersection(&target).is_none() {
            continue;
        }
        // A canonical file or a chain: every file is checked before any row is applied.
        // `restore_reads` plans these reads in this order: change both together.
        if let KeyedStateHandle::Native { .. } = handle {
            if skip_native {
                continue;
            }
            return Err(native_refused(handle));
        }
        let infos = read_handle_infos_reusing(storage, max, handle, first.as_ref()).await?;
        for (file, info) in handle.files().into_iter().zip(&infos) {
            apply_file(backend, storage, file, info, &target).await?;
        }
    }
    Ok(())
}

/// The error restoring a native handle through the driver: its backend restores it.
pub(super) fn native_refused(handle: &KeyedStateHandle) -> Error {
    let name = match handle {
        KeyedStateHandle::Native { backend, .. } => backend.as_str(),
        _ => "native",
    };
    Error::UnsupportedHandle {
        handle: handle.describe(),
        reason: format!(
            "it is a native {name} snapshot; restore it with the {name} backend or take a canonical (savepoint) snapshot"
        ),
    }
}
