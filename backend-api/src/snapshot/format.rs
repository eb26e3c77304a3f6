//! Encoding and decoding of snapshot files. Everything read here comes from storage: every
//! length, offset and count is checked before it is used, so damaged or crafted bytes give
//! [`Error::Corrupt`], [`Error::ChecksumMismatch`] or [`Error::UnsupportedFormatVersion`],
//! never a panic, an overflow or an allocation sized by an untrusted field.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::backend::{KeyedSnapshotView, RowValue, StateRow};
use crate::checkpoint::CheckpointId;
use crate::error::{Error, Result};
use crate::key_groups::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::key_layout::{push_varint as put_varint, read_varint};
use crate::state::{StateId, StateMetadata};

/// The snapshot format version this build writes and the newest it reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// The oldest snapshot format version this build reads.
pub const OLDEST_SNAPSHOT_FORMAT_VERSION: u32 = 1;
pub(crate) const MAGIC: &[u8; 8] = b"FLOWSNAP";
/// Size of the fixed header at the start of every snapshot file.
pub const HEADER_LEN: u64 = 16;
/// Size of the fixed trailer at the end of every snapshot file.
pub const TRAILER_LEN: u64 = 8 + 8 + 4 + 8 + 8 + 4 + 4 + 8;
pub(crate) const INDEX_ENTRY_LEN: usize = 4 + 8 + 8 + 4;
pub(crate) const FLAG_DELTA: u32 = 1;
const KNOWN_FLAGS: u32 = FLAG_DELTA;

const TAG_VALUE: u8 = 0;
const TAG_LIST: u8 = 1;
const TAG_MAP_ENTRY: u8 = 2;
const TAG_TOMBSTONE: u8 = 3;

/// Whether a file holds everything (a base) or changes with tombstones (a delta).
///
/// Exhaustive on purpose: a new kind needs a new format version, and every reader must then
/// decide what it means for a restore.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotFileKind {
    /// Every row of the file's key groups: a full snapshot or a changelog base.
    Full,
    /// The changes since the file it applies on, with tombstones for cleared (key,
    /// namespace) pairs.
    Delta,
}

/// Where a file sits in a checkpoint history (format 2): restore checks that each delta of a
/// chain builds on the file the handle puts before it, so a missing or reordered delta is
/// detected instead of restoring wrong state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLineage {
    /// The checkpoint that wrote the file.
    pub checkpoint_id: CheckpointId,
    /// For a delta: the file name (last path segment) of the file it applies on, the chain's
    /// base or previous delta. `None` for a full file.
    pub previous: Option<String>,
}

/// The metadata section of a snapshot file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMetadata {
    /// Max parallelism the snapshot was taken with; a restore must use the same.
    pub max_parallelism: MaxParallelism,
    /// The key groups of the subtask that wrote the file; every block lies in it.
    pub key_group_range: KeyGroupRange,
    /// Full or delta; matches the header's flag.
    pub kind: SnapshotFileKind,
    /// States in file-index order: rows name a state by its position here.
    pub states: Vec<StateMetadata>,
    /// `None` in version-1 files and in files written without a checkpoint history.
    pub lineage: Option<FileLineage>,
}

/// The metadata of version-1 files: the same fields without the lineage.
#[derive(Deserialize, Serialize)]
pub(crate) struct MetadataV1 {
    max_parallelism: MaxParallelism,
    key_group_range: KeyGroupRange,
    kind: SnapshotFileKind,
    states: Vec<StateMetadata>,
}

/// Encodes `metadata` as format `version` writes it (lineage is dropped for version 1).
pub(crate) fn encode_metadata(metadata: &SnapshotMetadata, version: u32) -> Result<Vec<u8>> {
    let encoded = if version == 1 {
        postcard::to_allocvec(&MetadataV1 {
            max_parallelism: metadata.max_parallelism,
            key_group_range: metadata.key_group_range,
            kind: metadata.kind,
            states: metadata.states.clone(),
        })
    } else {
        postcard::to_allocvec(metadata)
    };
    encoded.map_err(|e| Error::corrupt("snapshot metadata", e.to_string()))
}

fn decode_metadata(bytes: &[u8], version: u32, what: &str) -> Result<SnapshotMetadata> {
    let corrupt = |e: postcard::Error| Error::corrupt(format!("{what} metadata"), e.to_string());
    let (metadata, rest) = if version == 1 {
        let (m, rest) = postcard::take_from_bytes::<MetadataV1>(bytes).map_err(corrupt)?;
        let metadata = SnapshotMetadata {
            max_parallelism: m.max_parallelism,
            key_group_range: m.key_group_range,
            kind: m.kind,
            states: m.states,
            lineage: None,
        };
        (metadata, rest)
    } else {
        postcard::take_from_bytes::<SnapshotMetadata>(bytes).map_err(corrupt)?
    };
    let fail = |detail: String| Err(Error::corrupt(format!("{what} metadata"), detail));
    if !rest.is_empty() {
        return fail(format!("{} bytes after the metadata", rest.len()));
    }
    if metadata.key_group_range.end().get() >= metadata.max_parallelism.get() {
        return fail(format!(
            "key-group range {} lies beyond max parallelism {}",
            metadata.key_group_range, metadata.max_parallelism
        ));
    }
    let mut names = HashSet::new();
    if let Some(dup) = metadata.states.iter().find(|s| !names.insert(&s.name)) {
        return fail(format!("state '{}' is listed twice", dup.name));
    }
    if let Some(lineage) = &metadata.lineage {
        let delta = metadata.kind == SnapshotFileKind::Delta;
        if delta != lineage.previous.is_some() {
            return fail(format!(
                "a {:?} file that {} a previous file",
                metadata.kind,
                if delta { "does not name" } else { "names" }
            ));
        }
    }
    Ok(metadata)
}

/// Where one key group's block lies in a snapshot file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BlockIndexEntry {
    /// The key group whose rows the block holds.
    pub key_group: KeyGroup,
    /// Offset of the block from the start of the file, in bytes.
    pub offset: u64,
    /// Length of the block in bytes; never 0 (key groups without rows have no block).
    pub length: u64,
    /// CRC32C of the block's bytes.
    pub crc32c: u32,
}

/// What writing a snapshot produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Rows written, over every key group.
    pub rows: u64,
    /// Key groups with at least one row (blocks written).
    pub key_groups: u32,
    /// Size of the whole file in bytes.
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
        let Some((head, tail)) = self.bytes.split_at_checked(n) else {
            return Err(Error::corrupt(
                self.what,
                format!("needed {n} bytes, {} remain", self.bytes.len()),
            ));
        };
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn varint(&mut self) -> Result<u64> {
        read_varint(&mut self.bytes)
            .ok_or_else(|| Error::corrupt(self.what, "truncated, overlong or non-canonical varint"))
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
    /// The row's state, as a position in [`SnapshotMetadata::states`].
    pub state_index: u32,
    /// The key's canonical serialized bytes.
    pub key: &'a [u8],
    /// The namespace's serialized bytes.
    pub namespace: &'a [u8],
    /// What the row holds for (key, namespace).
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

/// Writes a whole snapshot file of `view` into memory, without lineage.
pub fn write_snapshot(
    view: &dyn KeyedSnapshotView,
    kind: SnapshotFileKind,
) -> Result<(Vec<u8>, SnapshotStats)> {
    write_snapshot_with(view, kind, None)
}

/// Writes a whole snapshot file of `view` into memory, recording `lineage` (chains of
/// incremental checkpoints record it so restore can check the order of their files).
///
/// Rows of each key group are buffered per key group only, so memory beyond the output is
/// bounded by the largest key group.
pub fn write_snapshot_with(
    view: &dyn KeyedSnapshotView,
    kind: SnapshotFileKind,
    lineage: Option<FileLineage>,
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
        lineage,
    };

    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(&header_bytes(SNAPSHOT_FORMAT_VERSION, flags_of(kind)));
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
    let meta_bytes = encode_metadata(&metadata, SNAPSHOT_FORMAT_VERSION)?;
    let index: Vec<_> = index
        .iter()
        .map(|e| (e.key_group.get(), e.offset, e.length, e.crc32c))
        .collect();
    finish_file(&mut out, &meta_bytes, &index, SNAPSHOT_FORMAT_VERSION);
    stats.bytes = out.len() as u64;
    Ok((out, stats))
}

pub(crate) fn flags_of(kind: SnapshotFileKind) -> u32 {
    match kind {
        SnapshotFileKind::Full => 0,
        SnapshotFileKind::Delta => FLAG_DELTA,
    }
}

pub(crate) fn header_bytes(version: u32, flags: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..].copy_from_slice(&flags.to_le_bytes());
    h
}

/// Appends metadata, index (key group, offset, length, crc32c) and trailer to the header and
/// blocks in `out`.
pub(crate) fn finish_file(
    out: &mut Vec<u8>,
    meta_bytes: &[u8],
    index: &[(u32, u64, u64, u32)],
    version: u32,
) {
    let meta_offset = out.len() as u64;
    out.extend_from_slice(meta_bytes);
    let index_offset = out.len() as u64;
    out.extend_from_slice(&(index.len() as u32).to_le_bytes());
    for (key_group, offset, length, crc) in index {
        out.extend_from_slice(&key_group.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let index_len = out.len() as u64 - index_offset;
    let index_crc = crc32c::crc32c(&out[index_offset as usize..]);
    out.extend_from_slice(&meta_offset.to_le_bytes());
    out.extend_from_slice(&(meta_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(meta_bytes).to_le_bytes());
    out.extend_from_slice(&index_offset.to_le_bytes());
    out.extend_from_slice(&index_len.to_le_bytes());
    out.extend_from_slice(&index_crc.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(MAGIC);
}

/// Trailer, metadata and index of a snapshot file: everything but the blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotFileInfo {
    /// The file's format version, between [`OLDEST_SNAPSHOT_FORMAT_VERSION`] and
    /// [`SNAPSHOT_FORMAT_VERSION`].
    pub version: u32,
    /// The file's metadata section.
    pub metadata: SnapshotMetadata,
    /// One entry per block, in ascending key-group order.
    pub index: Vec<BlockIndexEntry>,
}

impl SnapshotFileInfo {
    /// Index entries of the key groups in `range`, ascending.
    pub fn blocks_in(&self, range: &KeyGroupRange) -> &[BlockIndexEntry] {
        let first = self.index.partition_point(|e| e.key_group < range.start());
        let last = self.index.partition_point(|e| e.key_group <= range.end());
        &self.index[first..last.max(first)]
    }

    /// Where the blocks end and the metadata begins: after the last block, or right after the
    /// header in a file without blocks (readers check that blocks tile the file up to the
    /// metadata, so in an info [`super::read_info`] returned this is the metadata's offset).
    pub fn blocks_end(&self) -> u64 {
        self.index
            .last()
            .map_or(HEADER_LEN, |last| last.offset.saturating_add(last.length))
    }
}

/// Header and trailer of a file, checked against each other and the file's size.
pub(crate) struct Ends {
    flags: u32,
    pub(crate) meta_offset: u64,
    meta_len: u64,
    meta_crc: u32,
    index_len: u64,
    index_crc: u32,
    version: u32,
}

/// Parses and cross-checks the 16 header bytes and the trailer of a file of `size` bytes:
/// magic, supported version, the same version in both, known flags, and the canonical
/// layout (metadata, index and trailer adjacent, ending the file).
pub(crate) fn parse_ends(header: &[u8], trailer: &[u8], size: u64, what: &str) -> Result<Ends> {
    let mut t = Reader::new(trailer, what);
    let (meta_offset, meta_len, meta_crc) = (t.u64()?, t.u64()?, t.u32()?);
    let (index_offset, index_len, index_crc) = (t.u64()?, t.u64()?, t.u32()?);
    let version = t.u32()?;
    if t.take(MAGIC.len())? != MAGIC {
        return Err(Error::corrupt(
            what,
            "not a flowstate snapshot (bad magic in the trailer)",
        ));
    }
    if !(OLDEST_SNAPSHOT_FORMAT_VERSION..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(Error::UnsupportedFormatVersion {
            what: "snapshot file",
            found: version,
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    let mut h = Reader::new(header, what);
    if h.take(MAGIC.len())? != MAGIC {
        return Err(Error::corrupt(
            what,
            "not a flowstate snapshot (bad magic in the header)",
        ));
    }
    let (header_version, flags) = (h.u32()?, h.u32()?);
    if header_version != version {
        return Err(Error::corrupt(
            what,
            format!("the header says format version {header_version}, the trailer {version}"),
        ));
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::corrupt(
            what,
            format!("unknown header flags {flags:#x}"),
        ));
    }
    let index_end = index_offset.checked_add(index_len);
    let canonical = meta_offset >= HEADER_LEN
        && meta_offset.checked_add(meta_len) == Some(index_offset)
        && size
            .checked_sub(TRAILER_LEN)
            .is_some_and(|t| index_end == Some(t))
        && index_len >= 4;
    if !canonical {
        return Err(Error::corrupt(
            what,
            format!(
                "metadata at {meta_offset} (+{meta_len}) and index at {index_offset} (+{index_len}) do not end a file of {size} bytes"
            ),
        ));
    }
    Ok(Ends {
        flags,
        meta_offset,
        meta_len,
        meta_crc,
        index_len,
        index_crc,
        version,
    })
}

pub(crate) fn check_crc(what: String, bytes: &[u8], expected: u32) -> Result<()> {
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

/// Parses metadata and index from `span`, the bytes between the end of the blocks and the
/// trailer. Blocks must tile the file from the header to the metadata in ascending key-group
/// order, each non-empty and inside the metadata's range: the writer lays them out so, and
/// restore's offset arithmetic relies on it.
pub(crate) fn parse_meta_and_index(
    ends: &Ends,
    span: &[u8],
    what: &str,
) -> Result<SnapshotFileInfo> {
    let (meta_bytes, index_bytes) = usize::try_from(ends.meta_len)
        .ok()
        .and_then(|m| span.split_at_checked(m))
        .filter(|(_, index)| index.len() as u64 == ends.index_len)
        .ok_or_else(|| Error::corrupt(what, "metadata and index do not fill their span"))?;
    check_crc(format!("{what} metadata"), meta_bytes, ends.meta_crc)?;
    check_crc(format!("{what} index"), index_bytes, ends.index_crc)?;
    let metadata = decode_metadata(meta_bytes, ends.version, what)?;
    let is_delta = ends.flags & FLAG_DELTA != 0;
    if is_delta != (metadata.kind == SnapshotFileKind::Delta) {
        return Err(Error::corrupt(
            what,
            format!(
                "the header flags {:#x} disagree with the metadata's kind {:?}",
                ends.flags, metadata.kind
            ),
        ));
    }

    let mut r = Reader::new(index_bytes, what);
    let count = r.u32()? as usize;
    if count.checked_mul(INDEX_ENTRY_LEN) != Some(index_bytes.len() - 4) {
        return Err(Error::corrupt(
            what,
            "index length does not match its count",
        ));
    }
    let mut index: Vec<BlockIndexEntry> = Vec::with_capacity(count);
    let mut next_offset = HEADER_LEN;
    for _ in 0..count {
        let (kg, offset, length, crc32c) = (r.u32()?, r.u64()?, r.u64()?, r.u32()?);
        let bad = |detail: String| {
            Err(Error::corrupt(
                what,
                format!("index entry of key group {kg}: {detail}"),
            ))
        };
        if index.last().is_some_and(|p| p.key_group.get() >= kg) {
            return bad("key groups are not strictly ascending".into());
        }
        let key_group = match KeyGroup::from_validated(kg) {
            Ok(g) if metadata.key_group_range.contains(g) => g,
            _ => {
                return bad(format!(
                    "outside the file's range {}",
                    metadata.key_group_range
                ))
            }
        };
        if offset != next_offset {
            return bad(format!(
                "block at offset {offset} where the previous one ends at {next_offset} (blocks out of order, overlapping or apart)"
            ));
        }
        match offset.checked_add(length) {
            Some(end) if length > 0 && end <= ends.meta_offset => next_offset = end,
            _ => {
                return bad(format!(
                    "block of {length} bytes at {offset} is empty or runs past the blocks"
                ))
            }
        }
        index.push(BlockIndexEntry {
            key_group,
            offset,
            length,
            crc32c,
        });
    }
    if next_offset != ends.meta_offset {
        return Err(Error::corrupt(
            what,
            format!(
                "blocks end at {next_offset} but the metadata starts at {}",
                ends.meta_offset
            ),
        ));
    }
    Ok(SnapshotFileInfo {
        version: ends.version,
        metadata,
        index,
    })
}

/// Parses a whole snapshot file held in memory (header, trailer, metadata and index; the
/// blocks are checked when read).
pub fn read_info_from_bytes(bytes: &[u8]) -> Result<SnapshotFileInfo> {
    let what = "snapshot file";
    let size = bytes.len() as u64;
    if size < HEADER_LEN + TRAILER_LEN {
        return Err(Error::corrupt(what, "shorter than header and trailer"));
    }
    let (rest, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN as usize);
    let ends = parse_ends(&bytes[..HEADER_LEN as usize], trailer, size, what)?;
    // parse_ends checked HEADER_LEN <= meta_offset <= size - TRAILER_LEN.
    let span = usize::try_from(ends.meta_offset)
        .ok()
        .and_then(|start| rest.get(start..))
        .ok_or_else(|| Error::corrupt(what, "metadata offset out of range"))?;
    parse_meta_and_index(&ends, span, what)
}
