//! What the demo's checkpoints hold, and reading it back from `inspect --json`: the demo's own
//! workload (`flowstate_cli::demo::workload`) run with the arguments
//! [`super::demo_checkpoints`] passes gives the exact count of every key in its last
//! checkpoint; the readers check every row against where it must be on the way.

use std::collections::{BTreeMap, BTreeSet};

use flowstate_api::key_groups::key_group_for_key_bytes;
use flowstate_api::{Codec, MaxParallelism, SerdeCodec};
use flowstate_cli::demo::workload::{
    Workload, DEFAULT_MAX_PARALLELISM, DEFAULT_PARTITIONS, FINAL_ROUND,
};
use serde_json::Value;

use super::{array, hex, str_of, u64_of};

/// `--keys` and `--batch` of [`super::demo_checkpoints`]: a small run.
pub const KEYS: u32 = 300;
pub const BATCH: u64 = 60;

/// `inspect --rows` showing every row.
pub const ALL_ROWS: &str = "1000000";

/// The records [`super::demo_checkpoints`] runs over.
pub fn workload() -> Workload {
    Workload {
        partitions: DEFAULT_PARTITIONS,
        keys: KEYS,
        batch: BATCH,
    }
}

/// The count of every key in the demo's last checkpoint.
pub fn final_counts() -> BTreeMap<String, u64> {
    workload().expected_counts(FINAL_ROUND)
}

pub fn max() -> MaxParallelism {
    MaxParallelism::new(DEFAULT_MAX_PARALLELISM).unwrap()
}

pub fn key_codec() -> SerdeCodec<String> {
    SerdeCodec::new()
}

/// One decoded row of the `count` state, as `inspect --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub key: String,
    pub count: u64,
    pub key_hex: String,
    pub value_hex: String,
}

/// Every row of an `inspect --rows <all> --json` report, checked for consistency on the
/// way: each key group's rows all shown and counted, each key in the key group its bytes hash
/// to, each key group in its subtask's range, hex and decoded forms agreeing.
pub fn rows_of(report: &Value) -> BTreeMap<String, Row> {
    let max = MaxParallelism::new(u64_of(&report["max_parallelism"]) as u32).unwrap();
    let mut rows = BTreeMap::new();
    let mut total = 0;
    for subtask in array(&report["subtasks"]) {
        let (start, end) = (
            u64_of(&subtask["key_groups"]["start"]) as u32,
            u64_of(&subtask["key_groups"]["end"]) as u32,
        );
        let mut subtask_rows = 0;
        for kg in array(&subtask["key_group_stats"]) {
            let key_group = u64_of(&kg["key_group"]) as u32;
            assert!((start..=end).contains(&key_group), "{kg}");
            let shown = array(&kg["rows_shown"]);
            assert_eq!(shown.len() as u64, u64_of(&kg["rows"]), "{kg}");
            assert_eq!(shown.is_empty(), u64_of(&kg["bytes"]) == 0, "{kg}");
            subtask_rows += shown.len() as u64;
            for row in shown {
                assert_eq!(str_of(&row["state"]), "count", "{row}");
                assert_eq!(str_of(&row["kind"]), "value", "{row}");
                assert_eq!(str_of(&row["namespace_hex"]), "", "{row}");
                let key = str_of(&row["key"]).to_string();
                let key_bytes = key_codec().to_bytes(&key).unwrap();
                assert_eq!(str_of(&row["key_hex"]), hex(&key_bytes), "{row}");
                assert_eq!(
                    key_group_for_key_bytes(&key_bytes, max).get(),
                    key_group,
                    "{key} is listed in a key group it does not hash to"
                );
                let count = u64_of(&row["value"]);
                let value_hex = str_of(&row["value_hex"]).to_string();
                assert_eq!(
                    value_hex,
                    hex(&SerdeCodec::<u64>::new().to_bytes(&count).unwrap()),
                    "{row}"
                );
                let row = Row {
                    key: key.clone(),
                    count,
                    key_hex: str_of(&row["key_hex"]).to_string(),
                    value_hex,
                };
                assert!(rows.insert(key, row).is_none(), "a key listed twice");
            }
        }
        assert_eq!(
            subtask_rows,
            u64_of(&subtask["rows"]),
            "{}",
            subtask["index"]
        );
        total += subtask_rows;
    }
    assert_eq!(total, u64_of(&report["rows"]));
    rows
}

/// The operator states of every subtask: (subtask, name) -> the state's JSON.
pub fn operator_states(report: &Value) -> BTreeMap<(u64, String), Value> {
    let mut out = BTreeMap::new();
    for subtask in array(&report["subtasks"]) {
        for state in array(&subtask["operator_states"]) {
            out.insert(
                (
                    u64_of(&subtask["index"]),
                    str_of(&state["name"]).to_string(),
                ),
                state.clone(),
            );
        }
    }
    out
}

/// Checks the operator state a demo checkpoint at `parallelism` holds: the six partition
/// offsets (all at the final round's end) split evenly, and the three weights on every subtask.
pub fn check_operator_state(report: &Value, parallelism: u64) {
    let states = operator_states(report);
    let mut partitions = BTreeSet::new();
    for subtask in 0..parallelism {
        let offsets = &states[&(subtask, "partition-offsets".to_string())];
        assert_eq!(str_of(&offsets["mode"]), "even-split", "{offsets}");
        assert_eq!(str_of(&offsets["value_codec"]), "postcard/(u32, u64)");
        assert_eq!(offsets["key_codec"], Value::Null);
        assert_eq!(
            u64_of(&offsets["entries"]),
            u64::from(DEFAULT_PARTITIONS) / parallelism,
            "{offsets}"
        );
        for entry in array(&offsets["entries_shown"]) {
            let pair = array(&entry["value"]);
            assert_eq!(u64_of(&pair[1]), FINAL_ROUND * BATCH, "{entry}");
            assert!(partitions.insert(u64_of(&pair[0])), "{entry}");
        }
        let weights = &states[&(subtask, "weights".to_string())];
        assert_eq!(str_of(&weights["mode"]), "broadcast", "{weights}");
        assert_eq!(
            weights["key_codec"].as_str(),
            Some(SerdeCodec::<String>::new().id())
        );
        let rules: BTreeMap<&str, u64> = array(&weights["entries_shown"])
            .iter()
            .map(|e| (str_of(&e["key"]), u64_of(&e["value"])))
            .collect();
        assert_eq!(
            rules,
            BTreeMap::from([("buy", 5), ("click", 3), ("view", 1)]),
            "{weights}"
        );
    }
    assert_eq!(partitions, (0..u64::from(DEFAULT_PARTITIONS)).collect());
}

pub fn check_states(report: &Value, rows: u64) {
    let states = array(&report["states"]);
    assert_eq!(states.len(), 1, "{states:?}");
    let count = &states[0];
    assert_eq!(str_of(&count["name"]), "count");
    assert_eq!(str_of(&count["kind"]), "value");
    assert_eq!(str_of(&count["value_codec"]), SerdeCodec::<u64>::new().id());
    assert_eq!(str_of(&count["namespace_codec"]), "void-namespace");
    assert_eq!(count["user_key_codec"], Value::Null);
    assert_eq!(count["ttl"], Value::Null);
    assert_eq!(u64_of(&count["rows"]), rows);
    assert_eq!(count["bytes"], report["bytes"]);
}
