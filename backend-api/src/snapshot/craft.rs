//! Snapshot files assembled from parts, with valid checksums around whatever content a test
//! needs (an index no writer produces, a row in the wrong key group, a non-canonical varint):
//! the conformance suite checks that every backend refuses them. Not a stable API.

use crate::backend::StateRow;
use crate::error::Result;
use crate::state::StateId;

use super::format::{
    encode_metadata, encode_row, finish_file, flags_of, header_bytes, FileRow, SnapshotMetadata,
    HEADER_LEN, SNAPSHOT_FORMAT_VERSION,
};

/// One index entry to write; its checksum is computed over the bytes it points at.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CraftedEntry {
    pub key_group: u32,
    pub offset: u64,
    pub length: u64,
}

/// A snapshot file to assemble.
#[derive(Clone, Debug)]
pub struct CraftedFile {
    /// Written in the header.
    pub header_version: u32,
    /// Written in the trailer; selects the metadata encoding (1: without lineage).
    pub version: u32,
    /// Header flags; [`CraftedFile::new`] sets them from the metadata's kind.
    pub flags: u32,
    pub metadata: SnapshotMetadata,
    /// Blocks in file order after the header: key group and bytes.
    pub blocks: Vec<(u32, Vec<u8>)>,
    /// The index to write; `None` writes the one the writer would (see [`Self::laid_out`]).
    pub index: Option<Vec<CraftedEntry>>,
}

impl CraftedFile {
    /// A well-formed file of the current version with `metadata` and no blocks yet.
    pub fn new(metadata: SnapshotMetadata) -> Self {
        Self {
            header_version: SNAPSHOT_FORMAT_VERSION,
            version: SNAPSHOT_FORMAT_VERSION,
            flags: flags_of(metadata.kind),
            metadata,
            blocks: Vec::new(),
            index: None,
        }
    }

    /// Appends a block of `rows` (encoded as the writer does) for `key_group`.
    pub fn with_block(mut self, key_group: u32, rows: &[FileRow<'_>]) -> Self {
        let mut bytes = Vec::new();
        for row in rows {
            let state_row = StateRow {
                state: StateId(row.state_index),
                key: row.key,
                namespace: row.namespace,
                value: row.value,
            };
            encode_row(&mut bytes, row.state_index, &state_row);
        }
        self.blocks.push((key_group, bytes));
        self
    }

    /// The index the writer would write for `blocks`: one entry per block, back to back.
    pub fn laid_out(&self) -> Vec<CraftedEntry> {
        let mut offset = HEADER_LEN;
        self.blocks
            .iter()
            .map(|(key_group, bytes)| {
                let entry = CraftedEntry {
                    key_group: *key_group,
                    offset,
                    length: bytes.len() as u64,
                };
                offset += bytes.len() as u64;
                entry
            })
            .collect()
    }

    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = header_bytes(self.header_version, self.flags).to_vec();
        for (_, bytes) in &self.blocks {
            out.extend_from_slice(bytes);
        }
        let meta = encode_metadata(&self.metadata, self.version)?;
        let entries = self.index.clone().unwrap_or_else(|| self.laid_out());
        let mut covered = out.clone();
        covered.extend_from_slice(&meta);
        let index: Vec<(u32, u64, u64, u32)> = entries
            .iter()
            .map(|e| {
                // An entry pointing outside blocks and metadata gets the checksum of nothing.
                let bytes = usize::try_from(e.offset)
                    .ok()
                    .zip(usize::try_from(e.length).ok())
                    .and_then(|(o, l)| covered.get(o..o.checked_add(l)?))
                    .unwrap_or_default();
                (e.key_group, e.offset, e.length, crc32c::crc32c(bytes))
            })
            .collect();
        finish_file(&mut out, &meta, &index, self.version);
        Ok(out)
    }
}
