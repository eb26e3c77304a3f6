//! Checks flowstate's arithmetic against the golden vectors of `docs/key-groups.md` (in
//! `tests/data/`): every row of every file.

use std::collections::BTreeMap;

use flowstate_api::key_groups::{
    default_max_parallelism, key_group_for_hash, key_group_for_key_bytes,
    key_group_range_for_operator, murmur3_x86_32, operator_index_for_key_group,
};
use flowstate_api::operator::redistribute;
use flowstate_api::{
    MaxParallelism, OperatorStateMetadata, OperatorStateSnapshot, OperatorStateStore, Parallelism,
    Redistribution,
};
use serde::Deserialize;

/// The golden vector files, compiled into the test binary: the tests then read the copy of
/// the checkout they were built from, wherever they run (a shared target directory may hold
/// binaries built in another checkout).
fn data_file(name: &str) -> &'static str {
    match name {
        "key_groups.tsv" => include_str!("data/key_groups.tsv"),
        "key_group_ranges.tsv" => include_str!("data/key_group_ranges.tsv"),
        "default_max_parallelism.tsv" => include_str!("data/default_max_parallelism.tsv"),
        "even_split.json" => include_str!("data/even_split.json"),
        other => panic!("no golden vector file named {other}"),
    }
}

/// The data rows of a TSV file, split on tabs, after checking the header. Lines are not
/// trimmed: an empty first column (the empty key) is a leading tab.
fn tsv_rows(name: &str, header: &[&str]) -> Vec<Vec<String>> {
    let text = data_file(name);
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
    let head: Vec<&str> = lines.next().expect("header line").split('\t').collect();
    assert_eq!(head, header, "{name}: unexpected header");
    let rows: Vec<Vec<String>> = lines
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
            assert_eq!(
                fields.len(),
                header.len(),
                "{name} line {}: {line:?} has {} fields",
                i + 2,
                fields.len()
            );
            fields
        })
        .collect();
    assert!(!rows.is_empty(), "{name} has no rows");
    rows
}

fn parse_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn num(field: &str) -> u32 {
    field
        .parse()
        .unwrap_or_else(|e| panic!("not a number: {field:?}: {e}"))
}

#[test]
fn key_groups_tsv_every_row() {
    let rows = tsv_rows(
        "key_groups.tsv",
        &["key_hex", "murmur3_x86_32", "max_parallelism", "key_group"],
    );
    let mut empty_key_rows = 0;
    for row in &rows {
        let key = parse_hex(&row[0]);
        if key.is_empty() {
            empty_key_rows += 1;
        }
        let hash = num(&row[1]);
        let max = MaxParallelism::new(num(&row[2])).unwrap();
        let expected_group = num(&row[3]);
        assert_eq!(murmur3_x86_32(&key, 0), hash, "murmur3 of key {:?}", row[0]);
        assert_eq!(
            key_group_for_hash(hash as i32, max).get(),
            expected_group,
            "key group of hash {hash} at max parallelism {max}"
        );
        assert_eq!(
            key_group_for_key_bytes(&key, max).get(),
            expected_group,
            "key group of key {:?} at max parallelism {max}",
            row[0]
        );
    }
    // The empty key's rows start with a tab: make sure the parser kept them.
    assert!(empty_key_rows > 0, "no row for the empty key was parsed");
}

#[test]
fn key_group_ranges_tsv_every_row() {
    let rows = tsv_rows(
        "key_group_ranges.tsv",
        &[
            "max_parallelism",
            "parallelism",
            "operator_index",
            "start",
            "end",
        ],
    );
    for row in &rows {
        let max = MaxParallelism::new(num(&row[0])).unwrap();
        let p = Parallelism::new(num(&row[1])).unwrap();
        let index = num(&row[2]);
        let range = key_group_range_for_operator(max, p, index).unwrap();
        assert_eq!(
            (range.start().get(), range.end().get()),
            (num(&row[3]), num(&row[4])),
            "range of operator {index} at max {max}, parallelism {p}"
        );
        // Routing agrees with the ranges at both ends.
        assert_eq!(operator_index_for_key_group(max, p, range.start()), index);
        assert_eq!(operator_index_for_key_group(max, p, range.end()), index);
    }
}

#[test]
fn default_max_parallelism_tsv_every_row() {
    let rows = tsv_rows(
        "default_max_parallelism.tsv",
        &["parallelism", "default_max_parallelism"],
    );
    for row in &rows {
        let p = Parallelism::new(num(&row[0])).unwrap();
        assert_eq!(
            default_max_parallelism(p).get(),
            num(&row[1]),
            "default max parallelism of {p}"
        );
    }
}

#[derive(Deserialize)]
struct EvenSplitCase {
    /// State name -> one list per old subtask (a state may be listed for fewer subtasks).
    old: BTreeMap<String, Vec<Vec<String>>>,
    new_parallelism: u32,
    /// Per new subtask: state name -> its list.
    expected: Vec<BTreeMap<String, Vec<String>>>,
}

/// The old subtasks' operator state as the real store writes and reads it: every list state
/// registered as even-split, snapshotted to bytes and decoded. A subtask with no state has no
/// file (`None`).
fn old_subtasks(case: &EvenSplitCase) -> Vec<Option<OperatorStateSnapshot>> {
    let old_n = case.old.values().map(Vec::len).max().unwrap_or(0);
    (0..old_n)
        .map(|subtask| {
            let store = OperatorStateStore::new();
            for (name, lists) in &case.old {
                if let Some(list) = lists.get(subtask) {
                    let id = store
                        .register(&OperatorStateMetadata::list(
                            name.as_str(),
                            Redistribution::EvenSplit,
                            "bytes",
                        ))
                        .unwrap();
                    store
                        .list_add(id, list.iter().map(|e| e.as_bytes().to_vec()).collect())
                        .unwrap();
                }
            }
            let snapshot = store.snapshot();
            if snapshot.is_empty() {
                None
            } else {
                Some(OperatorStateSnapshot::decode(&store.snapshot_bytes().unwrap()).unwrap())
            }
        })
        .collect()
}

fn lists_of(store: &OperatorStateStore) -> BTreeMap<String, Vec<String>> {
    store
        .registered_states()
        .into_iter()
        .map(|(id, meta)| {
            let elements = store
                .list_get(id)
                .unwrap()
                .into_iter()
                .map(|e| String::from_utf8(e).unwrap())
                .collect();
            (meta.name, elements)
        })
        .collect()
}

#[test]
fn even_split_json_every_case() {
    let cases: Vec<EvenSplitCase> = serde_json::from_str(data_file("even_split.json")).unwrap();
    assert!(!cases.is_empty());
    for (case_index, case) in cases.iter().enumerate() {
        let n = Parallelism::new(case.new_parallelism).unwrap();
        assert_eq!(case.expected.len(), n.get() as usize, "case {case_index}");
        let old = old_subtasks(case);
        let all = redistribute(&old, n).unwrap();
        for (i, expected) in case.expected.iter().enumerate() {
            let store = OperatorStateStore::restore(&old, i as u32, n).unwrap();
            assert_eq!(
                &lists_of(&store),
                expected,
                "case {case_index}: new subtask {i} of {n}"
            );
            assert_eq!(all[i], store.snapshot(), "case {case_index}: subtask {i}");
        }
    }
}
