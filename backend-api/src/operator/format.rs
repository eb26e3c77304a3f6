//! The operator-state file format: one file per subtask per checkpoint,
//!
//! ```text
//! "FLOWOPST" | format version u32 LE | body length u64 LE | crc32c(body) u32 LE | body
//! ```
//!
//! where the body is the postcard encoding of an [`OperatorStateSnapshot`]. The file is read
//! whole (operator state is small), so one checksum over the body is enough; the magic, version
//! and length catch a foreign, newer or truncated file with an error that says which.

use super::snapshot::OperatorStateSnapshot;
use crate::error::{Error, Result};

/// The operator-state file format version this build writes and the newest it reads.
pub const OPERATOR_STATE_FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"FLOWOPST";
/// magic | version u32 | body length u64 | crc32c u32
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// How errors name a snapshot that is not (yet) a file.
pub(super) const SNAPSHOT_WHAT: &str = "operator state snapshot";

impl OperatorStateSnapshot {
    /// Encodes the snapshot in the operator-state file format (see the module docs).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&OPERATOR_STATE_FORMAT_VERSION.to_le_bytes());
        // Length and checksum are patched in once the body is written behind them.
        out.extend_from_slice(&[0u8; 12]);
        let mut out = postcard::to_extend(self, out).map_err(|e| Error::Encode {
            codec: SNAPSHOT_WHAT.into(),
            message: e.to_string(),
        })?;
        let body = &out[HEADER_LEN..];
        let body_len = (body.len() as u64).to_le_bytes();
        let crc = crc32c::crc32c(body).to_le_bytes();
        out[12..20].copy_from_slice(&body_len);
        out[20..24].copy_from_slice(&crc);
        Ok(out)
    }

    /// Decodes bytes written by [`OperatorStateSnapshot::encode`]. Damaged or foreign bytes
    /// give an error ([`Error::Corrupt`], [`Error::ChecksumMismatch`] or
    /// [`Error::UnsupportedFormatVersion`]), never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_described(bytes, SNAPSHOT_WHAT)
    }

    /// [`OperatorStateSnapshot::decode`], naming the bytes `what` in errors (a file path when
    /// they were read from storage).
    pub(super) fn decode_described(bytes: &[u8], what: &str) -> Result<Self> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(Error::corrupt(
                what,
                "it does not start with the operator-state magic \"FLOWOPST\": it is not an operator state file",
            ));
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::corrupt(
                what,
                format!(
                    "the file is {} bytes, shorter than its {HEADER_LEN}-byte header",
                    bytes.len()
                ),
            ));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version > OPERATOR_STATE_FORMAT_VERSION {
            return Err(Error::UnsupportedFormatVersion {
                what: "operator state file",
                found: version,
                supported: OPERATOR_STATE_FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(Error::corrupt(what, "format version 0 was never written"));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[12..20]);
        let body_len = u64::from_le_bytes(len_bytes);
        let expected_crc = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        let body = &bytes[HEADER_LEN..];
        if body.len() as u64 != body_len {
            return Err(Error::corrupt(
                what,
                format!(
                    "the header announces a {body_len}-byte body but {} bytes follow it (truncated or overwritten)",
                    body.len()
                ),
            ));
        }
        let actual_crc = crc32c::crc32c(body);
        if actual_crc != expected_crc {
            return Err(Error::ChecksumMismatch {
                what: what.to_string(),
                expected: expected_crc,
                actual: actual_crc,
            });
        }
        let (snapshot, rest): (Self, &[u8]) = postcard::take_from_bytes(body)
            .map_err(|e| Error::corrupt(what, format!("undecodable body: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::corrupt(
                what,
                format!("{} unexpected bytes after the body", rest.len()),
            ));
        }
        snapshot.validate(what)?;
        Ok(snapshot)
    }
}
