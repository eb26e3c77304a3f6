//! The checkpoint manifest: what it records, how it is validated, and its JSON encoding with
//! a checksum.
//!
//! Version 2 (written by this build) is a JSON object with the fields of
//! [`CheckpointManifest`] plus `checksum`: the CRC32C of the canonical JSON of every other
//! field (object keys sorted, no whitespace; see [`canonical_json`]). Version 1 (no checksum)
//! is still read: its structure is validated like version 2's but damage that keeps it valid
//! JSON of the right shape goes unnoticed. A checksum that does not match is
//! `ChecksumMismatch`; a version 1 manifest carrying a checksum or a version 2 manifest
//! without one are `Corrupt`; version 0 or above [`MANIFEST_FORMAT_VERSION`] is
//! `UnsupportedFormatVersion`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CheckpointId, FileRef, KeyedStateHandle, SubtaskStateHandle};
use crate::error::{Error, Result};
use crate::key_groups::{MaxParallelism, Parallelism};

mod structure;

/// The version of the manifest JSON this build writes (2: with a checksum). This build reads
/// versions 1 and 2.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;

/// The oldest manifest version this build reads.
const OLDEST_READABLE_VERSION: u32 = 1;

/// The field of the JSON object that holds the checksum (not a field of the struct).
const CHECKSUM_FIELD: &str = "checksum";

/// The record of a checkpoint; written last, after every file it references.
///
/// A valid manifest ([`CheckpointManifest::validate`]) names exactly `parallelism`
/// subtasks, indices `0..parallelism` once each, subtask `i` owning the key-group range
/// Flink's arithmetic gives it (`key_group_range_for_operator(max, parallelism, i)`), so the
/// subtasks' ranges are disjoint and cover `[0, max - 1]`: the runtime always publishes every
/// subtask of a job. A subtask's keyed handle covers exactly its subtask's range, a native
/// handle has the manifest's max parallelism, and every file lies where retention expects it
/// ([`super::check_file_placement`]), named with one size and one `shared` flag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    /// The manifest JSON version it was written with ([`MANIFEST_FORMAT_VERSION`] for new
    /// ones).
    pub format_version: u32,
    /// The checkpoint it records.
    pub checkpoint_id: CheckpointId,
    /// The job's max parallelism (number of key groups), fixed for the life of its state.
    pub max_parallelism: MaxParallelism,
    /// The number of subtasks that took the checkpoint.
    pub parallelism: Parallelism,
    /// Subtasks in subtask-index order.
    pub subtasks: Vec<SubtaskStateHandle>,
}

impl CheckpointManifest {
    /// A manifest of the current format version, with `subtasks` sorted by subtask index. It
    /// is not validated: see [`CheckpointManifest::validate`].
    pub fn new(
        checkpoint_id: CheckpointId,
        max_parallelism: MaxParallelism,
        parallelism: Parallelism,
        mut subtasks: Vec<SubtaskStateHandle>,
    ) -> Self {
        subtasks.sort_by_key(|s| s.subtask_index);
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint_id,
            max_parallelism,
            parallelism,
            subtasks,
        }
    }

    /// Keyed handles of every subtask.
    pub fn keyed_handles(&self) -> Vec<KeyedStateHandle> {
        self.subtasks
            .iter()
            .filter_map(|s| s.keyed.clone())
            .collect()
    }

    /// Operator-state files of every subtask, in subtask order (`None` where a subtask had
    /// none).
    pub fn operator_files(&self) -> Vec<Option<FileRef>> {
        self.subtasks.iter().map(|s| s.operator.clone()).collect()
    }

    /// Every file referenced by the checkpoint.
    pub fn files(&self) -> Vec<&FileRef> {
        let mut out = Vec::new();
        for s in &self.subtasks {
            if let Some(k) = &s.keyed {
                out.extend(k.files());
            }
            if let Some(o) = &s.operator {
                out.push(o);
            }
        }
        out
    }

    /// Checks the manifest's structure (see the type's docs): `Corrupt` naming the first
    /// problem [`CheckpointManifest::problems`] lists, or `UnsupportedFormatVersion`. Checked
    /// when a manifest is written, read, and by the lifecycle's `complete`; restore drivers
    /// given a manifest from elsewhere call it.
    pub fn validate(&self) -> Result<()> {
        if !(OLDEST_READABLE_VERSION..=MANIFEST_FORMAT_VERSION).contains(&self.format_version) {
            return Err(unsupported(self.format_version));
        }
        match self.problems().into_iter().next() {
            None => Ok(()),
            Some((_, detail)) => Err(Error::corrupt(
                format!("manifest of checkpoint {}", self.checkpoint_id),
                detail,
            )),
        }
    }

    /// The manifest as stored: version-2 JSON with its checksum.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let encode_error = |e: serde_json::Error| {
            Error::corrupt(
                format!("manifest of checkpoint {}", self.checkpoint_id),
                format!("it cannot be encoded as JSON: {e}"),
            )
        };
        let mut current = self.clone();
        current.format_version = MANIFEST_FORMAT_VERSION;
        let mut value = serde_json::to_value(&current).map_err(encode_error)?;
        // The checksum covers what a reader parses back: numbers as their text reads.
        let text = serde_json::to_vec(&value).map_err(encode_error)?;
        let reparsed: Value = serde_json::from_slice(&text).map_err(encode_error)?;
        let checksum = crc32c::crc32c(&canonical_json(&reparsed));
        match &mut value {
            Value::Object(map) => {
                map.insert(CHECKSUM_FIELD.into(), Value::from(checksum));
            }
            _ => {
                return Err(Error::corrupt(
                    "checkpoint manifest",
                    "it does not encode as a JSON object",
                ))
            }
        }
        serde_json::to_vec_pretty(&value).map_err(encode_error)
    }

    /// Parses and checks a stored manifest of checkpoint `id`: version, checksum, structure
    /// ([`CheckpointManifest::validate`]) and that it names checkpoint `id`. A checksum that
    /// does not match is [`Error::ChecksumMismatch`] (`what`: `manifest of checkpoint <id>`);
    /// a checksum missing or where version 1 has none, like other damage, is `Corrupt`.
    pub fn from_json(bytes: &[u8], id: CheckpointId) -> Result<Self> {
        let what = || format!("manifest of checkpoint {id}");
        let (mut value, version) = parse_object(bytes, id)?;
        let stored = remove_checksum(&mut value);
        match (version, stored) {
            (1, None) => {}
            (1, Some(_)) => {
                return Err(Error::corrupt(
                    what(),
                    "it says format version 1, which has no checksum, but carries one",
                ))
            }
            (_, None) => {
                return Err(Error::corrupt(
                    what(),
                    format!("format version {version} carries a checksum but it is missing"),
                ))
            }
            (_, Some(stored)) => {
                let expected = stored
                    .as_u64()
                    .and_then(|c| u32::try_from(c).ok())
                    .ok_or_else(|| Error::corrupt(what(), "its checksum is not a u32"))?;
                let actual = crc32c::crc32c(&canonical_json(&value));
                if expected != actual {
                    return Err(Error::ChecksumMismatch {
                        what: what(),
                        expected,
                        actual,
                    });
                }
            }
        }
        let manifest = decode(value, id)?;
        if manifest.checkpoint_id != id {
            return Err(Error::corrupt(
                what(),
                format!("it names checkpoint {}", manifest.checkpoint_id),
            ));
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Decodes a stored manifest without checking its checksum, its structure or the
    /// checkpoint it names: what a damaged manifest still says, for tools that report every
    /// problem of a manifest [`CheckpointManifest::from_json`] refuses (and never for a
    /// restore). Fails only when the bytes are not a JSON object of a readable format version
    /// that decodes as a manifest; `id` (the checkpoint the manifest is read as) only names
    /// it in errors.
    pub fn from_json_unchecked(bytes: &[u8], id: CheckpointId) -> Result<Self> {
        let (mut value, _) = parse_object(bytes, id)?;
        remove_checksum(&mut value);
        decode(value, id)
    }
}

/// The JSON object of a stored manifest of checkpoint `id`, and its format version (one this
/// build reads).
fn parse_object(bytes: &[u8], id: CheckpointId) -> Result<(Value, u32)> {
    let what = || format!("manifest of checkpoint {id}");
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(what(), format!("it is not JSON (torn or damaged): {e}")))?;
    let Value::Object(map) = &value else {
        return Err(Error::corrupt(what(), "it is not a JSON object"));
    };
    let version = map
        .get("format_version")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::corrupt(what(), "it has no numeric format_version"))?;
    let version = u32::try_from(version).unwrap_or(u32::MAX);
    if !(OLDEST_READABLE_VERSION..=MANIFEST_FORMAT_VERSION).contains(&version) {
        return Err(unsupported(version));
    }
    Ok((value, version))
}

/// Takes the checksum out of a manifest's JSON object: what is left is what it covers.
fn remove_checksum(value: &mut Value) -> Option<Value> {
    match value {
        Value::Object(map) => map.remove(CHECKSUM_FIELD),
        _ => None,
    }
}

fn decode(value: Value, id: CheckpointId) -> Result<CheckpointManifest> {
    serde_json::from_value(value).map_err(|e| {
        Error::corrupt(
            format!("manifest of checkpoint {id}"),
            format!("it does not decode: {e}"),
        )
    })
}

fn unsupported(found: u32) -> Error {
    Error::UnsupportedFormatVersion {
        what: "checkpoint manifest",
        found,
        supported: MANIFEST_FORMAT_VERSION,
    }
}

/// The canonical form of a JSON value the checksum covers: object keys sorted (by their
/// UTF-8 bytes), no whitespace, strings and numbers as `serde_json` prints them.
pub(crate) fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::from(key.as_str()).to_string().as_bytes());
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointStorage;
    use crate::key_groups::key_group_range_for_operator;

    pub(super) fn file(path: &str, shared: bool) -> FileRef {
        FileRef {
            path: path.into(),
            size: 10,
            shared,
        }
    }

    /// Parallelism 2 at max parallelism 8, each subtask with a keyed file and operator file.
    pub(super) fn manifest() -> CheckpointManifest {
        let max = MaxParallelism::new(8).unwrap();
        let p = Parallelism::new(2).unwrap();
        let id = CheckpointId(5);
        let subtasks = (0..2)
            .map(|i| {
                let range = key_group_range_for_operator(max, p, i).unwrap();
                SubtaskStateHandle {
                    subtask_index: i,
                    key_group_range: range,
                    keyed: Some(KeyedStateHandle::Changelog {
                        key_group_range: range,
                        base: file(&format!("shared/base-{i}"), true),
                        deltas: vec![file(&format!("shared/delta-{i}"), true)],
                    }),
                    operator: Some(file(
                        &CheckpointStorage::exclusive_path(id, "op.bin"),
                        false,
                    )),
                }
            })
            .collect();
        CheckpointManifest::new(id, max, p, subtasks)
    }

    pub(super) fn invalid(change: impl FnOnce(&mut CheckpointManifest)) -> String {
        let mut m = manifest();
        change(&mut m);
        match m.validate() {
            Err(Error::Corrupt { detail, .. }) => detail,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_with_checksum() {
        let m = manifest();
        m.validate().unwrap();
        let json = m.to_json().unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"checksum\""), "{text}");
        assert!(text.contains("\"format_version\": 2"), "{text}");
        assert_eq!(
            CheckpointManifest::from_json(&json, CheckpointId(5)).unwrap(),
            m
        );
        assert!(matches!(
            CheckpointManifest::from_json(&json, CheckpointId(6)),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_is_an_error_never_a_wrong_manifest() {
        let m = manifest();
        let json = m.to_json().unwrap();
        for i in 0..json.len() {
            for pattern in [0x01u8, 0x20, 0xff] {
                let mut damaged = json.clone();
                damaged[i] ^= pattern;
                match CheckpointManifest::from_json(&damaged, CheckpointId(5)) {
                    Err(
                        Error::Corrupt { .. }
                        | Error::ChecksumMismatch { .. }
                        | Error::UnsupportedFormatVersion { .. },
                    ) => {}
                    // Whitespace turned into other whitespace changes nothing the checksum
                    // covers; the manifest must then be exactly the original.
                    Ok(read) => assert_eq!(read, m, "byte {i} ^ {pattern:#x}"),
                    Err(other) => panic!("byte {i} ^ {pattern:#x}: {other}"),
                }
            }
        }
        for len in 0..json.len() {
            assert!(
                CheckpointManifest::from_json(&json[..len], CheckpointId(5)).is_err(),
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn versions() {
        let m = manifest();
        let mut value: Value = serde_json::from_slice(&m.to_json().unwrap()).unwrap();
        // Version 1: no checksum, still read.
        let mut v1 = value.clone();
        v1.as_object_mut().unwrap().remove("checksum");
        v1["format_version"] = 1.into();
        let read =
            CheckpointManifest::from_json(&serde_json::to_vec(&v1).unwrap(), m.checkpoint_id)
                .unwrap();
        assert_eq!(read.format_version, 1);
        assert_eq!(read.subtasks, m.subtasks);
        // Version 1 with a checksum: a damaged version 2.
        let mut v1_sum = value.clone();
        v1_sum["format_version"] = 1.into();
        assert!(matches!(
            CheckpointManifest::from_json(&serde_json::to_vec(&v1_sum).unwrap(), m.checkpoint_id),
            Err(Error::Corrupt { .. })
        ));
        for version in [0u32, 3, 1000] {
            value["format_version"] = version.into();
            assert!(matches!(
                CheckpointManifest::from_json(&serde_json::to_vec(&value).unwrap(), m.checkpoint_id),
                Err(Error::UnsupportedFormatVersion { found, .. }) if found == version
            ));
        }
        // A version 2 manifest without its checksum.
        let mut bare = serde_json::to_value(&m).unwrap();
        bare["format_version"] = 2.into();
        assert!(matches!(
            CheckpointManifest::from_json(&serde_json::to_vec(&bare).unwrap(), m.checkpoint_id),
            Err(Error::Corrupt { .. })
        ));
    }

    /// A changed value under an intact checksum: `ChecksumMismatch` naming the manifest and
    /// both checksums, while what the JSON still says decodes unchecked.
    #[test]
    fn a_changed_value_is_a_checksum_mismatch() {
        let m = manifest();
        let mut value: Value = serde_json::from_slice(&m.to_json().unwrap()).unwrap();
        let stored = value["checksum"].as_u64().unwrap() as u32;
        value["subtasks"][0]["operator"]["size"] = 11.into();
        let bytes = serde_json::to_vec(&value).unwrap();
        match CheckpointManifest::from_json(&bytes, CheckpointId(5)) {
            Err(Error::ChecksumMismatch {
                what,
                expected,
                actual,
            }) => {
                assert_eq!(what, "manifest of checkpoint 5");
                assert_eq!(expected, stored);
                value.as_object_mut().unwrap().remove("checksum");
                assert_eq!(actual, crc32c::crc32c(&canonical_json(&value)));
            }
            other => panic!("expected ChecksumMismatch, got {other:?}"),
        }
        let unchecked = CheckpointManifest::from_json_unchecked(&bytes, CheckpointId(5)).unwrap();
        assert_eq!(unchecked.subtasks[0].operator.as_ref().unwrap().size, 11);
        assert_eq!(unchecked.subtasks[1], m.subtasks[1]);
        // Unchecked is not unparsed: torn JSON and unknown versions are still refused.
        assert!(matches!(
            CheckpointManifest::from_json_unchecked(&bytes[..bytes.len() / 2], CheckpointId(5)),
            Err(Error::Corrupt { .. })
        ));
        value["format_version"] = 3.into();
        assert!(matches!(
            CheckpointManifest::from_json_unchecked(
                &serde_json::to_vec(&value).unwrap(),
                CheckpointId(5)
            ),
            Err(Error::UnsupportedFormatVersion { found: 3, .. })
        ));
    }
}
