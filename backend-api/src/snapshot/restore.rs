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
    SnapshotFileKind, HEADER_LEN, TRAILER_LEN,
};

fn short_read(what: &str, expected: u64, got: usize) -> Error {
    Error::corrupt(
        what,
        format!("read {got} of {expected} bytes: the file is shorter than its handle records"),
    )
}

/// Reads header, trailer, metadata and index of a stored snapshot file: two ranged reads, the
/// header riding along with the trailer in one store call.
pub async fn read_info(storage: &CheckpointStorage, file: &FileRef) -> Result<SnapshotFileInfo> {
    let what = format!("snapshot file {}", file.path);
    if file.size < TRAILER_LEN + HEADER_LEN {
        return Err(Error::corrupt(what, "shorter than header and trailer"));
    }
    let tail = file.size - TRAILER_LEN;
    let parts = storage
        .get_ranges(&file.path, &[0..HEADER_LEN, tail..file.size])
        .await?;
    let [header, trailer] = parts.as_slice() else {
        return Err(Error::corrupt(
            &what,
            "the store returned other ranges than asked",
        ));
    };
    if trailer.len() as u64 != TRAILER_LEN {
        return Err(short_read(&what, TRAILER_LEN, trailer.len()));
    }
    let ends = parse_ends(header, trailer, file.size, &what)?;
    let span = storage
        .get_range(&file.path, ends.meta_offset..tail)
        .await?;
    if span.len() as u64 != tail - ends.meta_offset {
        return Err(short_read(&what, tail - ends.meta_offset, span.len()));
    }
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
    let blocks = info.blocks_in(range);
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
        return Ok(());
    };
    // `info` is public and may not come from `read_info`: no arithmetic is trusted here.
    let out_of_span = || Error::corrupt(&file.path, "block outside the file's blocks");
    let span_start = first.offset;
    let span_end = last
        .offset
        .checked_add(last.length)
        .filter(|end| *end >= span_start)
        .ok_or_else(out_of_span)?;
    let span = storage.get_range(&file.path, span_start..span_end).await?;
    if span.len() as u64 != span_end - span_start {
        return Err(short_read(&file.path, span_end - span_start, span.len()));
    }
    for entry in blocks {
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
fn check_row<'a>(
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
            row_kind(&row.value),
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

fn row_kind(value: &RowValue<'_>) -> &'static str {
    match value {
        RowValue::Value(_) => "value",
        RowValue::List(_) => "list",
        RowValue::MapEntry { .. } => "map entry",
        RowValue::Tombstone => "tombstone",
    }
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

/// Reads a file's info and checks it against what its handle says it is.
async fn read_for_handle(
    storage: &CheckpointStorage,
    file: &FileRef,
    max: MaxParallelism,
    handle_range: KeyGroupRange,
    kind: SnapshotFileKind,
    role: &str,
) -> Result<SnapshotFileInfo> {
    let info = read_info(storage, file).await?;
    check_file_max(&info, max)?;
    let what = || format!("snapshot file {}", file.path);
    if info.metadata.key_group_range != handle_range {
        return Err(Error::corrupt(
            what(),
            format!(
                "it holds key groups {} but its handle claims {handle_range}: the manifest does not describe this file",
                info.metadata.key_group_range
            ),
        ));
    }
    if info.metadata.kind != kind {
        return Err(Error::corrupt(
            what(),
            format!(
                "a {:?} file where the handle needs a {kind:?} file ({role})",
                info.metadata.kind
            ),
        ));
    }
    Ok(info)
}

/// The file name a delta's lineage names its predecessor by: the last path segment.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// Checks that each delta builds on the file before it: a missing, extra or reordered delta
/// would otherwise apply changes to the wrong state. Files without lineage (format 1, or
/// written without history) are checked only for order of checkpoints where known; once a
/// chain records lineage, every later file must.
fn check_chain(files: &[&FileRef], infos: &[SnapshotFileInfo]) -> Result<()> {
    for (i, (file, info)) in files.iter().zip(infos).enumerate().skip(1) {
        let (prev_file, prev) = (files[i - 1], &infos[i - 1]);
        let bad = |detail: String| {
            Err(Error::corrupt(
                format!("incremental chain at delta {i} ({})", file.path),
                format!("{detail}: a delta of the chain is missing, extra or out of order"),
            ))
        };
        match (&info.metadata.lineage, &prev.metadata.lineage) {
            (None, Some(_)) => {
                return bad(format!(
                    "it records no lineage but follows {}, which does",
                    prev_file.path
                ))
            }
            (None, None) => {}
            (Some(lineage), prev_lineage) => {
                let wanted = file_name(&prev_file.path);
                if lineage.previous.as_deref() != Some(wanted) {
                    return bad(format!(
                        "it builds on '{}', not on '{wanted}' before it",
                        lineage.previous.as_deref().unwrap_or_default()
                    ));
                }
                if let Some(p) = prev_lineage {
                    if p.checkpoint_id >= lineage.checkpoint_id {
                        return bad(format!(
                            "written at checkpoint {}, not after checkpoint {} of the file before it",
                            lineage.checkpoint_id, p.checkpoint_id
                        ));
                    }
                }
            }
        }
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
    let found = match handles.first() {
        None => return Ok(()),
        Some(KeyedStateHandle::Native {
            max_parallelism, ..
        }) => *max_parallelism,
        Some(KeyedStateHandle::Canonical { file, .. })
        | Some(KeyedStateHandle::Changelog { base: file, .. }) => {
            read_info(storage, file).await?.metadata.max_parallelism
        }
    };
    if found != max {
        return Err(Error::MaxParallelismMismatch {
            snapshot: found.get(),
            configured: max.get(),
        });
    }
    Ok(())
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
    check_max_parallelism(max, storage, handles).await?;
    check_handles(max, target, handles)?;
    for handle in handles {
        let range = handle.key_group_range();
        if range.intersection(&target).is_none() {
            continue;
        }
        match handle {
            KeyedStateHandle::Canonical { file, .. } => {
                let info = read_for_handle(
                    storage,
                    file,
                    max,
                    range,
                    SnapshotFileKind::Full,
                    "canonical",
                )
                .await?;
                apply_file(backend, storage, file, &info, &target).await?;
            }
            KeyedStateHandle::Changelog { base, deltas, .. } => {
                let files: Vec<&FileRef> = std::iter::once(base).chain(deltas).collect();
                // Every file is checked before any row is applied.
                let infos =
                    futures::future::try_join_all(files.iter().enumerate().map(|(i, file)| {
                        let (kind, role) = if i == 0 {
                            (SnapshotFileKind::Full, "the base of a chain")
                        } else {
                            (SnapshotFileKind::Delta, "a delta of a chain")
                        };
                        read_for_handle(storage, file, max, range, kind, role)
                    }))
                    .await?;
                check_chain(&files, &infos)?;
                for (file, info) in files.iter().zip(&infos) {
                    apply_file(backend, storage, file, info, &target).await?;
                }
            }
            KeyedStateHandle::Native { backend: name, .. } => {
                if skip_native {
                    continue;
                }
                return Err(Error::UnsupportedHandle {
                    handle: handle.describe(),
                    reason: format!(
                        "it is a native {name} snapshot; restore it with the {name} backend or take a canonical (savepoint) snapshot"
                    ),
                });
            }
        }
    }
    Ok(())
}
