//! The canonical snapshot format: key-group ordered, indexed, checksummed per key group.
//!
//! Every backend can write it (from a [`KeyedSnapshotView`]) and read it (through
//! [`KeyedStateBackend::apply_rows`]), so a canonical snapshot taken by one backend restores
//! into any other. Format version 1:
//!
//! ```text
//! header   "FLOWSNAP" | version u32 LE | flags u32 LE (bit 0: delta with tombstones)
//! blocks   one per non-empty key group, ascending; a block is a sequence of rows
//! metadata postcard(SnapshotMetadata): max parallelism, key-group range, states
//! index    count u32 | count x (key group u32, offset u64, length u64, crc32c u32)
//! trailer  metadata offset u64 | metadata length u64 | metadata crc32c u32 |
//!          index offset u64 | index length u64 | index crc32c u32 | version u32 | "FLOWSNAP"
//! ```
//!
//! A row is `tag u8 | state varint | key len varint | key | namespace len varint | namespace |
//! payload`, where the payload is `len varint | bytes` for value (tag 0) and list (tag 1, the
//! list in [`crate::list_encoding`] form), `user key len | user key | value len | value` for a
//! map entry (tag 2), and nothing for a tombstone (tag 3). `state` indexes the metadata's
//! state list. All integers little-endian; varints are unsigned LEB128.
//!
//! Restoring key-group range `[a, b]` reads the trailer, the metadata and index (adjacent),
//! then the one contiguous span of blocks of the key groups in `[a, b]`: three ranged reads,
//! each block verified by its own checksum.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::BoxFuture;
use crate::backend::{KeyedSnapshotView, KeyedStateBackend, RowValue, SnapshotJob, StateRow};
use crate::checkpoint::{CheckpointStorage, FileRef, KeyedStateHandle};
use crate::error::{Error, Result};
use crate::key_groups::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::key_layout::{push_varint as put_varint, read_varint};
use crate::state::{StateId, StateMetadata};

/// The snapshot format version this build writes and the newest it reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"FLOWSNAP";
const HEADER_LEN: usize = 16;
/// Size of the fixed trailer at the end of every snapshot file.
pub const TRAILER_LEN: u64 = 8 + 8 + 4 + 8 + 8 + 4 + 4 + 8;
const INDEX_ENTRY_LEN: usize = 4 + 8 + 8 + 4;
const FLAG_DELTA: u32 = 1;

const TAG_VALUE: u8 = 0;
const TAG_LIST: u8 = 1;
const TAG_MAP_ENTRY: u8 = 2;
const TAG_TOMBSTONE: u8 = 3;

/// Whether a file holds everything (a base) or changes with tombstones (a delta).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotFileKind {
    Full,
    Delta,
}

/// The metadata section of a snapshot file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMetadata {
    pub max_parallelism: MaxParallelism,
    pub key_group_range: KeyGroupRange,
    pub kind: SnapshotFileKind,
    /// States in file-index order: rows name a state by its position here.
    pub states: Vec<StateMetadata>,
}

/// Where one key group's block lies in a snapshot file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BlockIndexEntry {
    pub key_group: KeyGroup,
    pub offset: u64,
    pub length: u64,
    pub crc32c: u32,
}

/// What writing a snapshot produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub rows: u64,
    pub key_groups: u32,
    pub bytes: u64,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends one row in file form; `state_index` is the row's position in the metadata.
pub fn encode_row(out: &mut Vec<u8>, state_index: u32, row: &StateRow<'_>) {
    let tag = match row.value {
        RowValue::Value(_) => TAG_VALUE,
        RowValue::List(_) => TAG_LIST,
        RowValue::MapEntry { .. } => TAG_MAP_ENTRY,
        RowValue::Tombstone => TAG_TOMBSTONE,
    };
    out.push(tag);
    put_varint(out, state_index as u64);
    put_bytes(out, row.key);
    put_bytes(out, row.namespace);
    match row.value {
        RowValue::Value(v) | RowValue::List(v) => put_bytes(out, v),
        RowValue::MapEntry { user_key, value } => {
            put_bytes(out, user_key);
            put_bytes(out, value);
        }
        RowValue::Tombstone => {}
    }
}

/// A bounds-checked reader over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'a str) -> Self {
        Self { bytes, what }
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(Error::corrupt(
                self.what,
                format!("needed {n} bytes, {} remain", self.bytes.len()),
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn varint(&mut self) -> Result<u64> {
        read_varint(&mut self.bytes)
            .ok_or_else(|| Error::corrupt(self.what, "truncated or overlong varint"))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len)
            .map_err(|_| Error::corrupt(self.what, format!("length {len} too large")))?;
        self.take(len)
    }
}

/// A decoded row, naming its state by file index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRow<'a> {
    pub state_index: u32,
    pub key: &'a [u8],
    pub namespace: &'a [u8],
    pub value: RowValue<'a>,
}

/// Decodes every row of one block.
pub fn decode_block(block: &[u8]) -> Result<Vec<FileRow<'_>>> {
    let mut r = Reader::new(block, "snapshot block");
    let mut rows = Vec::new();
    while !r.is_empty() {
        let tag = r.u8()?;
        let state_index = u32::try_from(r.varint()?)
            .map_err(|_| Error::corrupt("snapshot block", "state index too large"))?;
        let key = r.bytes()?;
        let namespace = r.bytes()?;
        let value = match tag {
            TAG_VALUE => RowValue::Value(r.bytes()?),
            TAG_LIST => RowValue::List(r.bytes()?),
            TAG_MAP_ENTRY => {
                let user_key = r.bytes()?;
                let value = r.bytes()?;
                RowValue::MapEntry { user_key, value }
            }
            TAG_TOMBSTONE => RowValue::Tombstone,
            other => {
                return Err(Error::corrupt(
                    "snapshot block",
                    format!("unknown row tag {other}"),
                ))
            }
        };
        rows.push(FileRow {
            state_index,
            key,
            namespace,
            value,
        });
    }
    Ok(rows)
}

/// Writes a whole snapshot file of `view` into memory.
///
/// Rows of each key group are buffered per key group only, so memory beyond the output is
/// bounded by the largest key group.
pub fn write_snapshot(
    view: &dyn KeyedSnapshotView,
    kind: SnapshotFileKind,
) -> Result<(Vec<u8>, SnapshotStats)> {
    let states = view.states();
    let index_of: HashMap<StateId, u32> = states
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i as u32))
        .collect();
    let metadata = SnapshotMetadata {
        max_parallelism: view.max_parallelism(),
        key_group_range: view.key_group_range(),
        kind,
        states: states.into_iter().map(|(_, m)| m).collect(),
    };

    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    let flags = if kind == SnapshotFileKind::Delta {
        FLAG_DELTA
    } else {
        0
    };
    out.extend_from_slice(&flags.to_le_bytes());

    let mut stats = SnapshotStats::default();
    let mut index = Vec::new();
    for key_group in view.key_group_range().iter() {
        let start = out.len();
        view.for_each_row(key_group, &mut |row| {
            let state_index = *index_of
                .get(&row.state)
                .ok_or(Error::UnknownStateId { id: row.state.0 })?;
            encode_row(&mut out, state_index, &row);
            stats.rows += 1;
            Ok(())
        })?;
        if out.len() > start {
            index.push(BlockIndexEntry {
                key_group,
                offset: start as u64,
                length: (out.len() - start) as u64,
                crc32c: crc32c::crc32c(&out[start..]),
            });
        }
    }
    stats.key_groups = index.len() as u32;

    let meta_bytes = postcard::to_allocvec(&metadata)
        .map_err(|e| Error::corrupt("snapshot metadata", e.to_string()))?;
    let meta_offset = out.len() as u64;
    out.extend_from_slice(&meta_bytes);
    let index_offset = out.len() as u64;
    out.extend_from_slice(&(index.len() as u32).to_le_bytes());
    for e in &index {
        out.extend_from_slice(&e.key_group.get().to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.crc32c.to_le_bytes());
    }
    let index_len = out.len() as u64 - index_offset;
    let index_crc = crc32c::crc32c(&out[index_offset as usize..]);
    out.extend_from_slice(&meta_offset.to_le_bytes());
    out.extend_from_slice(&(meta_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&meta_bytes).to_le_bytes());
    out.extend_from_slice(&index_offset.to_le_bytes());
    out.extend_from_slice(&index_len.to_le_bytes());
    out.extend_from_slice(&index_crc.to_le_bytes());
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(MAGIC);
    stats.bytes = out.len() as u64;
    Ok((out, stats))
}

/// Trailer, metadata and index of a snapshot file: everything but the blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotFileInfo {
    pub version: u32,
    pub metadata: SnapshotMetadata,
    pub index: Vec<BlockIndexEntry>,
}

impl SnapshotFileInfo {
    /// Index entries of the key groups in `range`, ascending.
    pub fn blocks_in(&self, range: &KeyGroupRange) -> &[BlockIndexEntry] {
        let first = self.index.partition_point(|e| e.key_group < range.start());
        let last = self.index.partition_point(|e| e.key_group <= range.end());
        &self.index[first..last.max(first)]
    }
}

struct Trailer {
    meta_offset: u64,
    meta_len: u64,
    meta_crc: u32,
    index_offset: u64,
    index_len: u64,
    index_crc: u32,
    version: u32,
}

fn parse_trailer(bytes: &[u8], what: &str) -> Result<Trailer> {
    let mut r = Reader::new(bytes, what);
    let t = Trailer {
        meta_offset: r.u64()?,
        meta_len: r.u64()?,
        meta_crc: r.u32()?,
        index_offset: r.u64()?,
        index_len: r.u64()?,
        index_crc: r.u32()?,
        version: r.u32()?,
    };
    if r.take(8)? != MAGIC {
        return Err(Error::corrupt(what, "not a flowstate snapshot (bad magic)"));
    }
    if t.version == 0 || t.version > SNAPSHOT_FORMAT_VERSION {
        return Err(Error::UnsupportedFormatVersion {
            what: "snapshot file",
            found: t.version,
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    Ok(t)
}

fn check_crc(what: String, bytes: &[u8], expected: u32) -> Result<()> {
    let actual = crc32c::crc32c(bytes);
    if actual != expected {
        return Err(Error::ChecksumMismatch {
            what,
            expected,
            actual,
        });
    }
    Ok(())
}

fn parse_meta_and_index(
    trailer: &Trailer,
    span: &[u8],
    span_start: u64,
    what: &str,
) -> Result<SnapshotFileInfo> {
    let slice = |offset: u64, len: u64| -> Result<&[u8]> {
        let start = offset
            .checked_sub(span_start)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| Error::corrupt(what, "metadata offset out of range"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e <= span.len())
            .ok_or_else(|| Error::corrupt(what, "metadata length out of range"))?;
        Ok(&span[start..end])
    };
    let meta_bytes = slice(trailer.meta_offset, trailer.meta_len)?;
    check_crc(format!("{what} metadata"), meta_bytes, trailer.meta_crc)?;
    let metadata: SnapshotMetadata = postcard::from_bytes(meta_bytes)
        .map_err(|e| Error::corrupt(format!("{what} metadata"), e.to_string()))?;
    let index_bytes = slice(trailer.index_offset, trailer.index_len)?;
    check_crc(format!("{what} index"), index_bytes, trailer.index_crc)?;
    let mut r = Reader::new(index_bytes, what);
    let count = r.u32()? as usize;
    if count.checked_mul(INDEX_ENTRY_LEN) != Some(index_bytes.len() - 4) {
        return Err(Error::corrupt(
            what,
            "index length does not match its count",
        ));
    }
    let mut index = Vec::with_capacity(count);
    for _ in 0..count {
        let kg = r.u32()?;
        let entry = BlockIndexEntry {
            key_group: KeyGroup::new(kg, metadata.max_parallelism)?,
            offset: r.u64()?,
            length: r.u64()?,
            crc32c: r.u32()?,
        };
        let in_bounds = entry
            .offset
            .checked_add(entry.length)
            .is_some_and(|end| entry.offset >= HEADER_LEN as u64 && end <= trailer.meta_offset);
        let ascending = index
            .last()
            .is_none_or(|p: &BlockIndexEntry| p.key_group < entry.key_group);
        if !in_bounds || !ascending || !metadata.key_group_range.contains(entry.key_group) {
            return Err(Error::corrupt(
                what,
                format!("index entry for key group {kg} is out of order or out of bounds"),
            ));
        }
        index.push(entry);
    }
    Ok(SnapshotFileInfo {
        version: trailer.version,
        metadata,
        index,
    })
}

/// Parses a whole snapshot file held in memory.
pub fn read_info_from_bytes(bytes: &[u8]) -> Result<SnapshotFileInfo> {
    let what = "snapshot file";
    if (bytes.len() as u64) < TRAILER_LEN + HEADER_LEN as u64 {
        return Err(Error::corrupt(what, "shorter than header and trailer"));
    }
    let trailer = parse_trailer(&bytes[bytes.len() - TRAILER_LEN as usize..], what)?;
    parse_meta_and_index(&trailer, bytes, 0, what)
}

/// Reads trailer, metadata and index of a stored snapshot file (two ranged reads).
pub async fn read_info(storage: &CheckpointStorage, file: &FileRef) -> Result<SnapshotFileInfo> {
    let what = format!("snapshot file {}", file.path);
    if file.size < TRAILER_LEN + HEADER_LEN as u64 {
        return Err(Error::corrupt(what, "shorter than header and trailer"));
    }
    let trailer_bytes = storage
        .get_range(&file.path, file.size - TRAILER_LEN..file.size)
        .await?;
    let trailer = parse_trailer(&trailer_bytes, &what)?;
    let start = trailer.meta_offset;
    let end = trailer
        .index_offset
        .checked_add(trailer.index_len)
        .filter(|e| *e <= file.size - TRAILER_LEN && start <= trailer.index_offset)
        .ok_or_else(|| Error::corrupt(&what, "metadata/index offsets out of range"))?;
    let span = storage.get_range(&file.path, start..end).await?;
    parse_meta_and_index(&trailer, &span, start, &what)
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
    let span_start = first.offset;
    let span = storage
        .get_range(&file.path, span_start..last.offset + last.length)
        .await?;
    for entry in blocks {
        let start = (entry.offset - span_start) as usize;
        let block = span
            .get(start..start + entry.length as usize)
            .ok_or_else(|| Error::corrupt(&file.path, "block beyond the read span"))?;
        check_crc(
            format!("{} key group {}", file.path, entry.key_group),
            block,
            entry.crc32c,
        )?;
        apply(entry.key_group, decode_block(block)?)?;
    }
    Ok(())
}

/// Restores into `backend` the key groups of its range found in one snapshot file: registers
/// the file's states, then applies the rows of the overlapping blocks.
pub async fn restore_file<B: KeyedStateBackend + ?Sized>(
    backend: &B,
    storage: &CheckpointStorage,
    file: &FileRef,
) -> Result<()> {
    let info = read_info(storage, file).await?;
    if info.metadata.max_parallelism != backend.max_parallelism() {
        return Err(Error::MaxParallelismMismatch {
            snapshot: info.metadata.max_parallelism.get(),
            configured: backend.max_parallelism().get(),
        });
    }
    let ids = info
        .metadata
        .states
        .iter()
        .map(|m| backend.register_state(m))
        .collect::<Result<Vec<StateId>>>()?;
    let Some(range) = info
        .metadata
        .key_group_range
        .intersection(&backend.key_group_range())
    else {
        return Ok(());
    };
    read_blocks(storage, file, &info, &range, |key_group, rows| {
        let rows = rows
            .into_iter()
            .map(|r| {
                let state = *ids.get(r.state_index as usize).ok_or_else(|| {
                    Error::corrupt(&file.path, format!("row names state {}", r.state_index))
                })?;
                Ok(StateRow {
                    state,
                    key: r.key,
                    namespace: r.namespace,
                    value: r.value,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        backend.apply_rows(key_group, &rows)
    })
    .await
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

/// Restores every canonical or changelog handle into `backend`, reading only the key groups
/// of the backend's range. Handles whose range does not overlap are not read at all.
pub async fn restore_into<B: KeyedStateBackend + ?Sized>(
    backend: &B,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
) -> Result<()> {
    let target = backend.key_group_range();
    check_max_parallelism(backend.max_parallelism(), storage, handles).await?;
    for handle in handles {
        let overlaps = handle.key_group_range().intersection(&target).is_some();
        match handle {
            KeyedStateHandle::Canonical { file, .. } => {
                if overlaps {
                    restore_file(backend, storage, file).await?;
                }
            }
            KeyedStateHandle::Changelog { base, deltas, .. } => {
                if overlaps {
                    restore_file(backend, storage, base).await?;
                    for delta in deltas {
                        restore_file(backend, storage, delta).await?;
                    }
                }
            }
            KeyedStateHandle::Native { backend: name, .. } => {
                return Err(Error::UnsupportedHandle {
                    handle: handle.describe(),
                    reason: format!(
                        "it is a native {name} snapshot; restore it with the {name} backend or take a canonical (savepoint) snapshot"
                    ),
                })
            }
        }
    }
    Ok(())
}

/// The async half of a full canonical snapshot: writes the view and uploads it.
pub struct CanonicalSnapshotJob {
    view: Box<dyn KeyedSnapshotView>,
    path: String,
    kind: SnapshotFileKind,
}

impl CanonicalSnapshotJob {
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

/// Writes a view in the canonical format and uploads it to `path`.
pub async fn write_and_upload(
    storage: &CheckpointStorage,
    view: &dyn KeyedSnapshotView,
    kind: SnapshotFileKind,
    path: &str,
    shared: bool,
) -> Result<FileRef> {
    let (bytes, _stats) = write_snapshot(view, kind)?;
    storage.put(path, Bytes::from(bytes), shared).await
}
