//! The structure of a manifest, problem by problem: what [`CheckpointManifest::validate`]
//! refuses (the first problem) and tools that report every problem list.

use std::collections::BTreeMap;

use super::CheckpointManifest;
use crate::checkpoint::{check_file_placement, FileRef, KeyedStateHandle};
use crate::key_groups::{key_group_range_for_operator, KeyGroupRange};

impl CheckpointManifest {
    /// Every structural problem of the manifest (see the type's docs), each with the subtask
    /// it concerns when one does; empty when the structure is valid. The first is the one
    /// [`CheckpointManifest::validate`] reports. Tools that report all of a manifest's
    /// problems (`flowstate verify`) list these; the format version is not among them.
    ///
    /// After the checks `validate` makes come, when subtasks claim other key groups than
    /// their own, which subtasks overlap and which key groups no subtask claims: never the
    /// first problem, they say what the range mismatches before them amount to.
    pub fn problems(&self) -> Vec<(Option<u32>, String)> {
        let (max, p, id) = (self.max_parallelism, self.parallelism, self.checkpoint_id);
        let mut out: Vec<(Option<u32>, String)> = Vec::new();
        // Without a valid parallelism no subtask owns a range: its problem says it once.
        let parallelism_valid = match max.check(p) {
            Ok(()) => true,
            Err(e) => {
                out.push((None, e.to_string()));
                false
            }
        };
        if self.subtasks.len() != p.get() as usize {
            out.push((
                None,
                format!(
                    "it has {} subtasks but parallelism {p}: a checkpoint records every subtask",
                    self.subtasks.len()
                ),
            ));
        }
        let mut files: BTreeMap<&str, &FileRef> = BTreeMap::new();
        for (position, subtask) in self.subtasks.iter().enumerate() {
            let index = subtask.subtask_index;
            let mut problem = |detail: String| out.push((Some(index), detail));
            if index as usize != position {
                problem(format!(
                    "subtask {index} is at position {position}: subtasks are 0..{p}, each once, in order"
                ));
            }
            let expected = if parallelism_valid {
                match key_group_range_for_operator(max, p, index) {
                    Ok(expected) => Some(expected),
                    Err(e) => {
                        problem(format!("subtask {index}: {e}"));
                        None
                    }
                }
            } else {
                None
            };
            if let Some(expected) = expected.filter(|e| *e != subtask.key_group_range) {
                problem(format!(
                    "subtask {index} claims key groups {} but owns {expected} at parallelism {p} and max parallelism {max}",
                    subtask.key_group_range,
                    max = max.get()
                ));
            }
            if let Some(keyed) = &subtask.keyed {
                if let Some(expected) = expected.filter(|e| *e != keyed.key_group_range()) {
                    problem(format!(
                        "the keyed state of subtask {index} covers key groups {} but the subtask owns {expected}",
                        keyed.key_group_range()
                    ));
                }
                if let KeyedStateHandle::Native {
                    max_parallelism, ..
                } = keyed
                {
                    if *max_parallelism != max {
                        problem(format!(
                            "the native keyed state of subtask {index} has max parallelism {} but the checkpoint {}",
                            max_parallelism.get(),
                            max.get()
                        ));
                    }
                }
            }
            let referenced = subtask.keyed.iter().flat_map(|k| k.files());
            for file in referenced.chain(subtask.operator.iter()) {
                if let Err(e) = check_file_placement(file, id) {
                    problem(e.to_string());
                }
                if let Some(seen) = files.insert(&file.path, file) {
                    if seen.size != file.size || seen.shared != file.shared {
                        problem(format!(
                            "file '{}' is referenced with two sizes or sharing flags",
                            file.path
                        ));
                    }
                }
            }
        }
        let claims: Vec<(u32, KeyGroupRange)> = self
            .subtasks
            .iter()
            .map(|s| (s.subtask_index, s.key_group_range))
            .collect();
        out.extend(overlaps_and_gaps(&claims, max.get()));
        out
    }
}

/// Overlapping claims (`subtasks a and b both claim ...`), key groups no subtask claims, and
/// claims beyond the `max` key groups `[0, max - 1]`, from the subtasks' `(index, range)`.
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::tests::{file, invalid, manifest};
    use super::*;
    use crate::error::Error;
    use crate::key_groups::{MaxParallelism, Parallelism};

    /// `problems` lists every problem where `validate` stops at the first, which it names.
    #[test]
    fn every_problem_is_listed_and_validate_names_the_first() {
        assert!(manifest().problems().is_empty());
        let range = |a, b| KeyGroupRange::new(a, b).unwrap();
        let mut m = manifest();
        // Subtask 1 also claims subtask 0's key groups; subtask 0's operator file is misplaced.
        m.subtasks[1].key_group_range = range(0, 7);
        m.subtasks[0].operator = Some(file("shared/op.bin", false));
        let problems = m.problems();
        let details: Vec<&str> = problems.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(problems.len(), 3, "{details:#?}");
        assert_eq!(problems[0].0, Some(0));
        assert!(details[0].contains("shared/op.bin"), "{}", details[0]);
        assert_eq!(problems[1].0, Some(1));
        assert!(
            details[1].contains("subtask 1 claims key groups [0, 7] but owns [4, 7]"),
            "{}",
            details[1]
        );
        assert_eq!(
            problems[2],
            (
                Some(1),
                "subtasks 0 and 1 both claim key groups [0, 3]: a checkpoint's key-group ranges are disjoint (overlapping ranges)".to_string()
            )
        );
        match m.validate() {
            Err(Error::Corrupt { what, detail }) => {
                assert_eq!(what, "manifest of checkpoint 5");
                assert_eq!(detail, details[0]);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // A parallelism above the max: said once, not once per subtask.
        let mut m = manifest();
        m.parallelism = Parallelism::new(9).unwrap();
        let problems = m.problems();
        assert!(
            problems[0].1.contains("exceeds max parallelism"),
            "{problems:?}"
        );
        assert!(
            problems[1].1.contains("2 subtasks but parallelism 9"),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .filter(|(_, d)| d.contains("exceeds"))
                .count()
                == 1,
            "{problems:?}"
        );
    }

    #[test]
    fn overlaps_gaps_and_excess_are_each_reported() {
        let range = |a, b| KeyGroupRange::new(a, b).unwrap();
        let ok = [(0, range(0, 42)), (1, range(43, 85)), (2, range(86, 127))];
        assert!(overlaps_and_gaps(&ok, 128).is_empty());
        let overlap = [(0, range(0, 42)), (1, range(0, 85)), (2, range(86, 127))];
        let found = overlaps_and_gaps(&overlap, 128);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Some(1));
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

    #[test]
    fn structure_is_validated() {
        let set_path = |m: &mut CheckpointManifest, path: &str| {
            if let Some(KeyedStateHandle::Changelog { base, .. }) = &mut m.subtasks[0].keyed {
                base.path = path.into();
            }
        };
        for path in [
            "shared//base-0",
            "/shared/base-0",
            "shared/base-0/",
            "shared/./base-0",
            "shared/../shared/base-0",
            "shared/base#1",
            "shared/a%2Fb",
            "elsewhere/base-0",
            "chk-00000000000000000005/base-0",
            "base-0",
        ] {
            let detail = invalid(|m| set_path(m, path));
            assert!(detail.contains(path), "{path}: {detail}");
        }
        // An exclusive file in another checkpoint's directory, or the manifest itself.
        invalid(|m| {
            m.subtasks[0].operator = Some(file("chk-00000000000000000004/op.bin", false));
        });
        invalid(|m| {
            m.subtasks[0].operator = Some(file("chk-00000000000000000005/_manifest.json", false));
        });
        invalid(|m| {
            m.subtasks[0].operator = Some(file("shared/op.bin", false));
        });
        // Ranges: overlapping, not covering, not the subtask's.
        let range = |a, b| KeyGroupRange::new(a, b).unwrap();
        invalid(|m| m.subtasks[1].key_group_range = range(0, 7));
        invalid(|m| m.subtasks[1].key_group_range = range(5, 7));
        invalid(|m| {
            if let Some(KeyedStateHandle::Changelog {
                key_group_range, ..
            }) = &mut m.subtasks[1].keyed
            {
                *key_group_range = range(0, 7);
            }
        });
        // Subtasks: missing, duplicated, out of range.
        invalid(|m| {
            m.subtasks.pop();
        });
        invalid(|m| m.subtasks[1].subtask_index = 0);
        invalid(|m| m.subtasks[1].subtask_index = 2);
        // The same file with two sizes.
        invalid(|m| {
            if let Some(KeyedStateHandle::Changelog { deltas, .. }) = &mut m.subtasks[1].keyed {
                deltas.push(FileRef {
                    size: 11,
                    ..file("shared/base-0", true)
                });
            }
        });
        // A native handle of another max parallelism.
        invalid(|m| {
            m.subtasks[0].keyed = Some(KeyedStateHandle::Native {
                backend: "x".into(),
                key_group_range: m.subtasks[0].key_group_range,
                max_parallelism: MaxParallelism::new(16).unwrap(),
                files: Vec::new(),
                metadata: Value::Null,
            });
        });
    }
}
