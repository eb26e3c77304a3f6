//! Reading and checking one checkpoint's manifest, reporting every problem rather than the
//! first: the readers' own verdict ([`CheckpointManifest::from_json`]) decides whether the
//! manifest is accepted; when it is not, the raw JSON is read again to say why (checksum,
//! decoding, each structural problem) and to find the files it names.

use std::collections::BTreeMap;

use flowstate_api::checkpoint::{check_file_placement, MANIFEST_FORMAT_VERSION};
use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, FileRef, KeyGroupRange, KeyedStateHandle,
};
use serde_json::Value;

use super::{error_text, Problem, ProblemKind};

/// The oldest manifest format version flowstate reads (see `CheckpointManifest`).
const OLDEST_READABLE_VERSION: u32 = 1;

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
    let verdict = match CheckpointManifest::from_json(&bytes, id) {
        Ok(manifest) => {
            check.manifest = Some(manifest);
            check.accepted = true;
            return check;
        }
        Err(e) => error_text(e),
    };
    explain_refusal(&mut check, &bytes, &verdict);
    if check.problems.is_empty() {
        // Whatever the readers refused, this check did not find: their word stands.
        check.problem(ProblemKind::Manifest, None, verdict);
    }
    check
}

/// Finds why the readers refused the manifest `bytes` (their `verdict`): checksum, decoding,
/// structure.
///
/// Whether the checksum holds is the readers' call too, without a second implementation of
/// it: the readers check the checksum before anything else, so the checksum fails exactly
/// when the verdict differs from theirs on the same manifest without a checksum (format
/// version 1, which has none).
fn explain_refusal(check: &mut ManifestCheck, bytes: &[u8], verdict: &str) {
    let mut value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => {
            let message = format!(
                "the manifest is not JSON (torn or damaged): {e}; restore from another checkpoint"
            );
            check.problem(ProblemKind::Manifest, None, message);
            return;
        }
    };
    let Value::Object(map) = &mut value else {
        check.problem(
            ProblemKind::Manifest,
            None,
            "the manifest is not a JSON object".into(),
        );
        return;
    };
    map.remove("checksum");
    let readable = map
        .get("format_version")
        .and_then(Value::as_u64)
        .is_some_and(|v| {
            (u64::from(OLDEST_READABLE_VERSION)..=u64::from(MANIFEST_FORMAT_VERSION)).contains(&v)
        });
    if readable {
        let mut unsummed = map.clone();
        unsummed.insert("format_version".into(), OLDEST_READABLE_VERSION.into());
        let without_checksum = serde_json::to_vec(&Value::Object(unsummed))
            .ok()
            .map(|bytes| {
                CheckpointManifest::from_json(&bytes, check.id)
                    .err()
                    .map(error_text)
            });
        if without_checksum.is_some_and(|other| other.as_deref() != Some(verdict)) {
            check.problem(ProblemKind::ManifestChecksum, None, verdict.to_string());
        }
    } else {
        // An unknown or missing version: the readers' verdict says which.
        check.problem(ProblemKind::Manifest, None, verdict.to_string());
    }
    match serde_json::from_value::<CheckpointManifest>(value.clone()) {
        Ok(manifest) => {
            for (subtask, message) in structure_problems(&manifest, check.id) {
                check.problem(ProblemKind::Structure, subtask, message);
            }
            check.manifest = Some(manifest);
        }
        Err(e) => {
            check.problem(
                ProblemKind::Manifest,
                None,
                format!("the manifest does not decode: {e}"),
            );
            let mut files = BTreeMap::new();
            collect_file_refs(&value, &mut files);
            check.loose_files = files.into_values().collect();
        }
    }
}

/// Every structural problem of a decoded manifest of checkpoint `id`: what
/// [`CheckpointManifest::validate`] checks but the format version (checked from the raw JSON),
/// each problem reported (it stops at the first), plus whether it names checkpoint `id`, which
/// subtasks overlap and which key groups no subtask owns. `(subtask, message)`.
pub fn structure_problems(m: &CheckpointManifest, id: CheckpointId) -> Vec<(Option<u32>, String)> {
    let mut out: Vec<(Option<u32>, String)> = Vec::new();
    let (max, p) = (m.max_parallelism, m.parallelism);
    if m.checkpoint_id != id {
        out.push((
            None,
            format!(
                "it names checkpoint {} but lies in the directory of checkpoint {id}",
                m.checkpoint_id
            ),
        ));
    }
    if let Err(e) = max.check(p) {
        out.push((None, e.to_string()));
    }
    if m.subtasks.len() != p.get() as usize {
        out.push((
            None,
            format!(
                "it has {} subtasks but parallelism {p}: a checkpoint records every subtask",
                m.subtasks.len(),
                p = p.get()
            ),
        ));
    }
    let mut files: BTreeMap<&str, &FileRef> = BTreeMap::new();
    for (position, subtask) in m.subtasks.iter().enumerate() {
        let index = subtask.subtask_index;
        let at = Some(index);
        if index as usize != position {
            out.push((
                at,
                format!(
                    "subtask {index} is at position {position}: subtasks are 0..{}, each once, in order",
                    p.get()
                ),
            ));
        }
        match key_group_range_for_operator(max, p, index) {
            Ok(owned) if owned != subtask.key_group_range => out.push((
                at,
                format!(
                    "subtask {index} claims key groups {} but owns {owned} at parallelism {} and max parallelism {}",
                    subtask.key_group_range,
                    p.get(),
                    max.get()
                ),
            )),
            Ok(_) => {}
            Err(e) => out.push((at, format!("subtask {index}: {e}"))),
        }
        if let Some(keyed) = &subtask.keyed {
            if keyed.key_group_range() != subtask.key_group_range {
                out.push((
                    at,
                    format!(
                        "the keyed state of subtask {index} covers key groups {} but the subtask claims {}",
                        keyed.key_group_range(),
                        subtask.key_group_range
                    ),
                ));
            }
            if let KeyedStateHandle::Native {
                max_parallelism, ..
            } = keyed
            {
                if *max_parallelism != max {
                    out.push((
                        at,
                        format!(
                            "the native keyed state of subtask {index} has max parallelism {} but the checkpoint {}",
                            max_parallelism.get(),
                            max.get()
                        ),
                    ));
                }
            }
        }
        let referenced = subtask.keyed.iter().flat_map(|k| k.files());
        for file in referenced.chain(subtask.operator.iter()) {
            if let Err(e) = check_file_placement(file, id) {
                out.push((at, e.to_string()));
            }
            if let Some(seen) = files.insert(&file.path, file) {
                if seen.size != file.size || seen.shared != file.shared {
                    out.push((
                        at,
                        format!(
                            "file '{}' is referenced with two sizes or sharing flags",
                            file.path
                        ),
                    ));
                }
            }
        }
    }
    let claims: Vec<(u32, KeyGroupRange)> = m
        .subtasks
        .iter()
        .map(|s| (s.subtask_index, s.key_group_range))
        .collect();
    out.extend(overlaps_and_gaps(&claims, max.get()));
    out
}

/// Overlapping claims (`subtasks a and b both claim ...`), key groups nobody claims, and
/// claims beyond the max parallelism's key groups `[0, max - 1]`.
fn overlaps_and_gaps(claims: &[(u32, KeyGroupRange)], max: u32) -> Vec<(Option<u32>, String)> {
    let mut out = Vec::new();
    let mut sorted = claims.to_vec();
    sorted.sort_by_key(|(index, range)| (range.start(), *index));
    // The claim reaching furthest so far: an overlap is reported against it.
    let mut reach: Option<(u32, KeyGroupRange)> = None;
    let mut next = 0u32;
    for &(index, range) in &sorted {
        let (start, end) = (range.start().get(), range.end().get());
        if start > next && next < max {
            let last = (start - 1).min(max - 1);
            out.push((
                None,
                format!(
                    "key groups [{next}, {last}] belong to no subtask: a checkpoint's subtasks cover every key group"
                ),
            ));
        }
        if let Some((other, reached)) = reach {
            if let Some(both) = reached.intersection(&range) {
                out.push((
                    Some(index),
                    format!(
                        "subtasks {other} and {index} both claim key groups {both}: a checkpoint's key-group ranges are disjoint (overlapping ranges)"
                    ),
                ));
            }
        }
        if end >= max {
            out.push((
                Some(index),
                format!(
                    "subtask {index} claims key groups {range}, beyond the {max} key groups of the max parallelism"
                ),
            ));
        }
        if reach.is_none_or(|(_, r)| end > r.end().get()) {
            reach = Some((index, range));
        }
        next = next.max(end.saturating_add(1));
    }
    if next < max && !sorted.is_empty() {
        out.push((
            None,
            format!(
                "key groups [{next}, {}] belong to no subtask: a checkpoint's subtasks cover every key group",
                max - 1
            ),
        ));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(a: u32, b: u32) -> KeyGroupRange {
        KeyGroupRange::new(a, b).unwrap()
    }

    #[test]
    fn overlaps_gaps_and_excess_are_each_reported() {
        let ok = [(0, range(0, 42)), (1, range(43, 85)), (2, range(86, 127))];
        assert!(overlaps_and_gaps(&ok, 128).is_empty());
        let overlap = [(0, range(0, 42)), (1, range(0, 85)), (2, range(86, 127))];
        let found = overlaps_and_gaps(&overlap, 128);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0]
            .1
            .contains("subtasks 0 and 1 both claim key groups [0, 42]"));
        let gaps = [(0, range(2, 10)), (1, range(20, 200))];
        let found: Vec<String> = overlaps_and_gaps(&gaps, 128)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("[0, 1] belong to no subtask"));
        assert!(found[1].contains("[11, 19] belong to no subtask"));
        assert!(found[2].contains("beyond the 128 key groups"));
    }
}
