//! Reading and checking one checkpoint's manifest, reporting every problem rather than the
//! first: the readers' own verdict ([`CheckpointManifest::from_json`]) decides whether the
//! manifest is accepted; when it is not, the API says why: its checksum error, and what the
//! manifest still says read unchecked ([`CheckpointManifest::from_json_unchecked`]) with each
//! of its structural problems ([`CheckpointManifest::problems`]), or, when it does not even
//! decode, the files its raw JSON names.

use std::collections::BTreeMap;

use flowstate_api::{CheckpointId, CheckpointManifest, CheckpointStorage, Error, FileRef};
use serde_json::Value;

use super::{error_text, Problem, ProblemKind};

/// What reading a checkpoint's manifest found.
pub struct ManifestCheck {
    pub id: CheckpointId,
    /// The manifest's path, relative to the storage root.
    pub path: String,
    /// The manifest as decoded, accepted or not; `None` when it does not decode.
    pub manifest: Option<CheckpointManifest>,
    /// True when the readers accept it (checksum, version, structure): a restore would use it.
    pub accepted: bool,
    pub problems: Vec<Problem>,
    /// For a manifest that does not decode: the files its raw JSON names (objects with
    /// `path`, `size` and `shared`), checked for presence and size only.
    pub loose_files: Vec<FileRef>,
}

impl ManifestCheck {
    fn problem(&mut self, kind: ProblemKind, subtask: Option<u32>, message: String) {
        self.problems.push(Problem {
            checkpoint_id: self.id.get(),
            kind,
            subtask,
            file: Some(self.path.clone()),
            message,
        });
    }
}

/// Reads checkpoint `id`'s manifest and checks it (see the module docs).
pub async fn check(storage: &CheckpointStorage, id: CheckpointId) -> ManifestCheck {
    let mut check = ManifestCheck {
        id,
        path: CheckpointStorage::manifest_path(id),
        manifest: None,
        accepted: false,
        problems: Vec::new(),
        loose_files: Vec::new(),
    };
    let bytes = match storage.get(&check.path).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let message = format!("the manifest cannot be read: {}", error_text(e));
            check.problem(ProblemKind::Storage, None, message);
            return check;
        }
    };
    match CheckpointManifest::from_json(&bytes, id) {
        Ok(manifest) => {
            check.manifest = Some(manifest);
            check.accepted = true;
        }
        Err(verdict) => explain_refusal(&mut check, &bytes, verdict),
    }
    check
}

/// Finds why the readers refused the manifest `bytes` with `verdict`: its checksum, and the
/// problems of what it still says. A refusal none of them explains (another checkpoint's id,
/// a checksum missing or misplaced) is reported in the readers' words.
fn explain_refusal(check: &mut ManifestCheck, bytes: &[u8], verdict: Error) {
    let checksum = matches!(verdict, Error::ChecksumMismatch { .. });
    let verdict_text = error_text(verdict);
    if checksum {
        check.problem(ProblemKind::ManifestChecksum, None, verdict_text.clone());
    }
    let mut explained = checksum;
    match CheckpointManifest::from_json_unchecked(bytes, check.id) {
        Ok(manifest) => {
            // The readers stop at the first structural problem, as `validate` words it.
            let first = manifest.validate().err().map(error_text);
            explained |= first.as_deref() == Some(verdict_text.as_str());
            for (subtask, message) in manifest.problems() {
                check.problem(ProblemKind::Structure, subtask, message);
            }
            check.manifest = Some(manifest);
        }
        Err(e) => {
            let message = error_text(e);
            explained |= message == verdict_text;
            check.problem(ProblemKind::Manifest, None, message);
            // Still JSON: the files it names are checked for presence and size.
            if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
                let mut files = BTreeMap::new();
                collect_file_refs(&value, &mut files);
                check.loose_files = files.into_values().collect();
            }
        }
    }
    if !explained {
        check.problem(ProblemKind::Manifest, None, verdict_text);
    }
}

/// Objects of the raw JSON that look like file references (`path`, `size`, `shared`).
fn collect_file_refs(value: &Value, out: &mut BTreeMap<String, FileRef>) {
    match value {
        Value::Object(map) => {
            let file = (
                map.get("path").and_then(Value::as_str),
                map.get("size").and_then(Value::as_u64),
                map.get("shared").and_then(Value::as_bool),
            );
            if let (Some(path), Some(size), Some(shared)) = file {
                out.entry(path.to_string()).or_insert_with(|| FileRef {
                    path: path.to_string(),
                    size,
                    shared,
                });
            }
            map.values().for_each(|v| collect_file_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_file_refs(v, out)),
        _ => {}
    }
}
