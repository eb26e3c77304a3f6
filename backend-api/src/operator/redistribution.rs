//! The rescale rules of operator state (`docs/key-groups.md`, the sections on even-split,
//! union and broadcast redistribution): what each new subtask restores from the old subtasks'
//! snapshots.

use std::collections::btree_map::Entry as BTreeEntry;
use std::collections::BTreeMap;
use std::ops::Range;

use super::format::SNAPSHOT_WHAT;
use super::metadata::{OperatorStateMetadata, OperatorStateMode, Redistribution};
use super::snapshot::{OperatorStateData, OperatorStateEntry, OperatorStateSnapshot};
use crate::error::{Error, Result};
use crate::key_groups::Parallelism;

/// The contiguous run of the concatenated elements that even-split gives to `target`, and
/// the `start` of the next state (`docs/key-groups.md`, "even-split redistribution").
fn even_split_range(total: usize, n: u32, start: u32, target: u32) -> (Range<usize>, u32) {
    let n_usize = n as usize;
    let base = total / n_usize;
    let rem = total % n_usize;
    // Targets are walked start, start + 1, ... (mod n); `k` is target's place in that walk.
    let k = ((target as u64 + n as u64 - start as u64) % n as u64) as usize;
    let len = base + usize::from(k < rem);
    let offset = k * base + k.min(rem);
    let next_start = ((start as u64 + rem as u64) % n as u64) as u32;
    (offset..offset + len, next_start)
}

/// Elements `range` of the concatenation of `lists`.
fn slice_of_concatenation(lists: &[&Vec<Vec<u8>>], range: Range<usize>) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(range.len());
    let mut list_start = 0usize;
    for list in lists {
        let list_end = list_start + list.len();
        let from = range.start.max(list_start);
        let to = range.end.min(list_end);
        if from < to {
            out.extend_from_slice(&list[from - list_start..to - list_start]);
        }
        if list_end >= range.end {
            break;
        }
        list_start = list_end;
    }
    out
}

/// The parts of one state found in the old subtasks, in old-subtask order.
enum OldParts<'a> {
    Lists(Vec<&'a Vec<Vec<u8>>>),
    Maps(Vec<&'a BTreeMap<Vec<u8>, Vec<u8>>>),
}

/// The operator state of new subtask `new_index` of `new_parallelism`, from the old subtasks'
/// snapshots in old-subtask order (`None`: that old subtask had no operator state).
///
/// Every state found in any old subtask is present in the result (possibly empty), with its
/// metadata, so re-registration checks modes and codecs. Per `docs/key-groups.md`:
/// - even-split list states, in ascending name order: the old subtasks' lists are
///   concatenated in old-subtask order and dealt out in contiguous runs of `base + 1` (to the
///   first `rem` targets walked from the rotating `start`) or `base` elements;
/// - union list states: every new subtask gets every element, in old-subtask order;
/// - broadcast states: new subtask `i` takes copy `i % c` of the `c` old subtasks that hold
///   the state (in old-subtask order). When every old subtask holds it, as a running job
///   guarantees, that is old subtask `i % old_n`; an old subtask without the state (no file,
///   or the state registered only elsewhere) has no copy to give, so it is skipped rather
///   than handing an empty map to the new subtasks that would have mapped to it.
///
/// Old subtasks that disagree on a state's mode or codecs are an error.
pub fn redistribute_for_subtask(
    old_subtasks: &[Option<OperatorStateSnapshot>],
    new_index: u32,
    new_parallelism: Parallelism,
) -> Result<OperatorStateSnapshot> {
    let n = new_parallelism.get();
    if new_index >= n {
        return Err(Error::OperatorIndexOutOfBounds {
            operator_index: new_index,
            parallelism: n,
        });
    }
    let mut by_name: BTreeMap<&str, (&OperatorStateMetadata, OldParts<'_>)> = BTreeMap::new();
    for snapshot in old_subtasks.iter().flatten() {
        for state in &snapshot.states {
            let (_, parts) = match by_name.entry(state.metadata.name.as_str()) {
                BTreeEntry::Vacant(v) => {
                    let parts = match state.metadata.mode {
                        OperatorStateMode::List(_) => OldParts::Lists(Vec::new()),
                        OperatorStateMode::Broadcast => OldParts::Maps(Vec::new()),
                    };
                    v.insert((&state.metadata, parts))
                }
                BTreeEntry::Occupied(o) => {
                    o.get().0.check_compatible(&state.metadata)?;
                    o.into_mut()
                }
            };
            match (parts, &state.data) {
                (OldParts::Lists(lists), OperatorStateData::List(l)) => lists.push(l),
                (OldParts::Maps(maps), OperatorStateData::Broadcast(m)) => maps.push(m),
                _ => {
                    return Err(Error::corrupt(
                        SNAPSHOT_WHAT,
                        format!(
                            "state '{}' holds contents of another kind than its metadata",
                            state.metadata.name
                        ),
                    ))
                }
            }
        }
    }

    let mut start = 0u32;
    let mut states = Vec::with_capacity(by_name.len());
    for (metadata, parts) in by_name.into_values() {
        let data = match (metadata.mode, parts) {
            (OperatorStateMode::List(Redistribution::EvenSplit), OldParts::Lists(lists)) => {
                let total = lists.iter().map(|l| l.len()).sum();
                let (range, next_start) = even_split_range(total, n, start, new_index);
                start = next_start;
                OperatorStateData::List(slice_of_concatenation(&lists, range))
            }
            (OperatorStateMode::List(Redistribution::Union), OldParts::Lists(lists)) => {
                OperatorStateData::List(lists.into_iter().flatten().cloned().collect())
            }
            (OperatorStateMode::Broadcast, OldParts::Maps(maps)) => {
                // Non-empty: a state is only listed once some old subtask held it.
                let copy = maps
                    .get(new_index as usize % maps.len().max(1))
                    .map(|m| (*m).clone())
                    .unwrap_or_default();
                OperatorStateData::Broadcast(copy)
            }
            _ => {
                return Err(Error::corrupt(
                    SNAPSHOT_WHAT,
                    format!(
                        "state '{}' holds contents of another kind than its metadata",
                        metadata.name
                    ),
                ))
            }
        };
        states.push(OperatorStateEntry {
            metadata: metadata.clone(),
            data,
        });
    }
    Ok(OperatorStateSnapshot { states })
}

/// [`redistribute_for_subtask`] for every new subtask, in new-subtask order.
pub fn redistribute(
    old_subtasks: &[Option<OperatorStateSnapshot>],
    new_parallelism: Parallelism,
) -> Result<Vec<OperatorStateSnapshot>> {
    (0..new_parallelism.get())
        .map(|i| redistribute_for_subtask(old_subtasks, i, new_parallelism))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_range_walks_from_start() {
        // total 2 over 3 targets starting at 2: targets 2 and 0 take one element each.
        assert_eq!(even_split_range(2, 3, 2, 2), (0..1, 1));
        assert_eq!(even_split_range(2, 3, 2, 0), (1..2, 1));
        assert_eq!(even_split_range(2, 3, 2, 1), (2..2, 1));
        // [a..e] over 2 from 0: [a,b,c] then [d,e].
        assert_eq!(even_split_range(5, 2, 0, 0).0, 0..3);
        assert_eq!(even_split_range(5, 2, 0, 1).0, 3..5);
    }

    #[test]
    fn slice_spans_list_boundaries() {
        let a = vec![vec![1u8], vec![2]];
        let b: Vec<Vec<u8>> = Vec::new();
        let c = vec![vec![3u8], vec![4], vec![5]];
        let lists = [&a, &b, &c];
        assert_eq!(
            slice_of_concatenation(&lists, 1..4),
            vec![vec![2], vec![3], vec![4]]
        );
        assert_eq!(slice_of_concatenation(&lists, 4..5), vec![vec![5]]);
        assert!(slice_of_concatenation(&lists, 2..2).is_empty());
    }
}
