//! The store calls of a restore, as byte ranges of snapshot files. The restore driver issues
//! its reads from the ranges computed here ([`super::read_info`], [`super::read_blocks`]),
//! and tools report a restore's reads before running it (`flowstate plan`) from the same
//! functions, so the report is what the restore does.
//!
//! Every call asks for one range: header and trailer are two calls issued together, not one
//! call with two ranges, because stores that coalesce the ranges of one call (S3, GCS and
//! Azure merge ranges less than 1 MiB apart) would download every file under 1 MiB whole to
//! read its 80 bytes of header and trailer.

use std::ops::Range;

use crate::checkpoint::{FileRef, KeyedStateHandle};
use crate::error::{Error, Result};
use crate::key_groups::{KeyGroup, KeyGroupRange};

use super::format::{SnapshotFileInfo, HEADER_LEN, TRAILER_LEN};
use super::restore::native_refused;

/// Which part of a snapshot file a read fetches.
///
/// `#[non_exhaustive]`: another way of reading may fetch other parts (a file's tail at once,
/// say); reports show [`FilePart::name`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilePart {
    /// The fixed header: magic, format version, flags.
    Header,
    /// The fixed trailer: where metadata and index lie, their checksums, the version.
    Trailer,
    /// Metadata and index, adjacent, from the end of the blocks to the trailer.
    MetadataAndIndex,
    /// The one contiguous span of the blocks of the key groups restored.
    Blocks,
}

impl FilePart {
    /// A short name for reports: `header`, `trailer`, `metadata+index` or `blocks`.
    pub fn name(self) -> &'static str {
        match self {
            FilePart::Header => "header",
            FilePart::Trailer => "trailer",
            FilePart::MetadataAndIndex => "metadata+index",
            FilePart::Blocks => "blocks",
        }
    }
}

/// One store call reading one byte range of a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRead {
    /// Which part of the file the call reads.
    pub part: FilePart,
    /// The bytes `[start, end)` of the file.
    pub range: Range<u64>,
    /// For [`FilePart::Blocks`]: the key groups of the first and the last block read.
    pub key_groups: Option<(KeyGroup, KeyGroup)>,
}

impl PlannedRead {
    /// The bytes asked for.
    pub fn len(&self) -> u64 {
        self.range.end.saturating_sub(self.range.start)
    }

    /// True when no byte is asked for (never so for a read of a valid file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Header and trailer of a file of `size` bytes, read together first; `what` names the file
/// in the error when it is too short to hold them.
pub(crate) fn ends_reads(size: u64, what: &str) -> Result<[PlannedRead; 2]> {
    if size < TRAILER_LEN + HEADER_LEN {
        return Err(Error::corrupt(what, "shorter than header and trailer"));
    }
    let read = |part, range| PlannedRead {
        part,
        range,
        key_groups: None,
    };
    Ok([
        read(FilePart::Header, 0..HEADER_LEN),
        read(FilePart::Trailer, size - TRAILER_LEN..size),
    ])
}

/// Metadata and index of a file of `size` bytes whose metadata starts at `meta_offset`.
pub(crate) fn metadata_read(meta_offset: u64, size: u64, what: &str) -> Result<PlannedRead> {
    let tail = size
        .checked_sub(TRAILER_LEN)
        .filter(|tail| *tail > meta_offset)
        .ok_or_else(|| Error::corrupt(what, "the metadata starts inside the trailer"))?;
    Ok(PlannedRead {
        part: FilePart::MetadataAndIndex,
        range: meta_offset..tail,
        key_groups: None,
    })
}

/// The one span of blocks of the key groups of `range` in a file of `info`; `None` when it
/// holds none of them. `info` is public and may be hand-built: no arithmetic is trusted.
pub(crate) fn blocks_read(
    info: &SnapshotFileInfo,
    range: &KeyGroupRange,
    what: &str,
) -> Result<Option<PlannedRead>> {
    let blocks = info.blocks_in(range);
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
        return Ok(None);
    };
    let end = last
        .offset
        .checked_add(last.length)
        .filter(|end| *end >= first.offset)
        .ok_or_else(|| Error::corrupt(what, "block outside the file's blocks"))?;
    Ok(Some(PlannedRead {
        part: FilePart::Blocks,
        range: first.offset..end,
        key_groups: Some((first.key_group, last.key_group)),
    }))
}

/// The store calls reading the info of `file` ([`super::read_info`]): header and trailer
/// (issued together), then metadata and index.
pub fn info_reads(file: &FileRef, info: &SnapshotFileInfo) -> Result<Vec<PlannedRead>> {
    let what = format!("snapshot file {}", file.path);
    let mut reads = ends_reads(file.size, &what)?.to_vec();
    reads.push(metadata_read(info.blocks_end(), file.size, &what)?);
    Ok(reads)
}

/// The store calls reading `file` to restore the key groups of `target`: its info
/// ([`info_reads`]), then the one span of blocks of the key groups of `target` it holds (none
/// when it holds none).
pub fn planned_reads(
    file: &FileRef,
    info: &SnapshotFileInfo,
    target: &KeyGroupRange,
) -> Result<Vec<PlannedRead>> {
    let mut reads = info_reads(file, info)?;
    if let Some(range) = info.metadata.key_group_range.intersection(target) {
        reads.extend(blocks_read(info, &range, &file.path)?);
    }
    Ok(reads)
}

/// Why the restore driver reads a file.
///
/// `#[non_exhaustive]`: the driver may come to read for other checks; reports show
/// [`ReadPurpose::name`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadPurpose {
    /// [`super::check_max_parallelism`]: the info of the first handle's first file, before
    /// anything else (the restore reuses it when it reads that file).
    MaxParallelismCheck,
    /// Restoring keyed state from a handle overlapping the target range.
    KeyedState,
}

impl ReadPurpose {
    /// A short name for reports: `max-parallelism check` or `keyed state`.
    pub fn name(self) -> &'static str {
        match self {
            ReadPurpose::MaxParallelismCheck => "max-parallelism check",
            ReadPurpose::KeyedState => "keyed state",
        }
    }
}

/// One store call of a restore through the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRead<'a> {
    /// The file read, as the handle names it.
    pub file: &'a FileRef,
    /// Which step of the restore reads it.
    pub purpose: ReadPurpose,
    /// The part and byte range read.
    pub read: PlannedRead,
}

/// The info of `file` from `info_of`, or an error saying the plan needs it.
fn info_for<'i>(
    file: &FileRef,
    info_of: &impl Fn(&FileRef) -> Option<&'i SnapshotFileInfo>,
) -> Result<&'i SnapshotFileInfo> {
    info_of(file).ok_or_else(|| Error::InvalidUse {
        detail: format!(
            "planning a restore's reads needs the info of {}: read it first (read_handle_infos)",
            file.path
        ),
    })
}

/// The store calls of [`super::check_max_parallelism`] for `handles`: the info of the first
/// handle's first file (none for a native handle, whose max parallelism is in the manifest).
/// `info_of` gives each file's info (from [`super::read_handle_infos`]).
pub fn max_parallelism_check_reads<'a, 'i>(
    handles: &'a [KeyedStateHandle],
    info_of: impl Fn(&FileRef) -> Option<&'i SnapshotFileInfo>,
) -> Result<Vec<RestoreRead<'a>>> {
    let file = match handles.first() {
        Some(KeyedStateHandle::Canonical { file, .. })
        | Some(KeyedStateHandle::Changelog { base: file, .. }) => file,
        Some(KeyedStateHandle::Native { .. }) | None => return Ok(Vec::new()),
    };
    Ok(info_reads(file, info_for(file, &info_of)?)?
        .into_iter()
        .map(|read| RestoreRead {
            file,
            purpose: ReadPurpose::MaxParallelismCheck,
            read,
        })
        .collect())
}

/// The store calls of [`super::restore_into`] (with `skip_native`,
/// [`super::restore_canonical_into`]) restoring the key groups of `target` from `handles`, in
/// the order the driver issues them: the max-parallelism check, then for each handle
/// overlapping `target` the info of each of its files (a chain's all before any block, as
/// every file is checked before a row is applied; the file the check read is not read
/// again), then per file its span of blocks.
///
/// Kept beside the driver's own sequence (`restore_handles`), which the tests check it
/// against call by call. `info_of` gives each canonical or changelog file's info (from
/// [`super::read_handle_infos`]). Fails where the restore would on an overlapping native
/// handle without `skip_native` ([`Error::UnsupportedHandle`]).
pub fn restore_reads<'a, 'i>(
    handles: &'a [KeyedStateHandle],
    target: &KeyGroupRange,
    skip_native: bool,
    info_of: impl Fn(&FileRef) -> Option<&'i SnapshotFileInfo>,
) -> Result<Vec<RestoreRead<'a>>> {
    let mut out = max_parallelism_check_reads(handles, &info_of)?;
    // The file whose info the check read: the driver reuses it.
    let checked = out.first().map(|r| r.file.path.clone());
    let mut push = |file: &'a FileRef, reads: Vec<PlannedRead>| {
        out.extend(reads.into_iter().map(|read| RestoreRead {
            file,
            purpose: ReadPurpose::KeyedState,
            read,
        }))
    };
    for handle in handles {
        if handle.key_group_range().intersection(target).is_none() {
            continue;
        }
        if let KeyedStateHandle::Native { .. } = handle {
            if skip_native {
                continue;
            }
            return Err(native_refused(handle));
        }
        let files = handle.files();
        for file in &files {
            if checked.as_deref() == Some(file.path.as_str()) {
                continue;
            }
            push(file, info_reads(file, info_for(file, &info_of)?)?);
        }
        for file in files {
            let info = info_for(file, &info_of)?;
            if let Some(own) = info.metadata.key_group_range.intersection(target) {
                push(
                    file,
                    blocks_read(info, &own, &file.path)?.into_iter().collect(),
                );
            }
        }
    }
    Ok(out)
}
