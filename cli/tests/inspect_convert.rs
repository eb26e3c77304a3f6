//! `flowstate inspect` and `flowstate convert`, end to end as processes, against real
//! checkpoints the demo wrote on every backend of this build (changelog handles for heap and
//! LMDB, native SST handles for RocksDB), on local disk and on S3 when the local server runs.
//!
//! The expected state is computed here, independently of the CLI: the demo's records are a
//! fixed function of (partition, offset), so the count of every key in its last checkpoint
//! is known exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{backends, fails, local_demo, ok, path_str, s3_location};
use flowstate_api::key_groups::{
    key_group_for_key_bytes, key_group_range_for_operator, operator_index_for_key_group,
};
use flowstate_api::operator::Redistribution;
use flowstate_api::typed::ValueStateDescriptor;
use flowstate_api::{
    CheckpointId, CheckpointStorage, Codec, KeyContext, KeyedStateHandle, MaxParallelism,
    Parallelism, SerdeCodec,
};
use flowstate_runtime::{restore_subtask, BackendConfig};
use serde_json::Value;

// ---- The demo's records, as `cli/src/demo.rs` defines them, with the arguments
// `common::demo_checkpoints` passes (`--keys 300 --batch 60`, default 6 partitions and max
// parallelism 128). Its last checkpoint is taken after round 13, at parallelism 1.

const KEYS: u32 = 300;
const PARTITIONS: u32 = 6;
const BATCH: u64 = 60;
const FINAL_ROUND: u64 = 13;
const MAX_PARALLELISM: u32 = 128;
const KINDS: [&str; 3] = ["view", "click", "buy"];
const RULES: [(u64, &str, u64); 4] = [
    (0, "view", 1),
    (0, "click", 2),
    (0, "buy", 5),
    (7, "click", 3),
];

fn record(partition: u32, offset: u64, keys: u32) -> (String, &'static str) {
    let mut z = (u64::from(partition) << 40 ^ offset).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let key = format!("user-{}", z % u64::from(keys));
    (key, KINDS[((z >> 32) % 3) as usize])
}

fn weight_at(round: u64, kind: &str) -> u64 {
    RULES
        .iter()
        .filter(|(r, k, _)| *r <= round && *k == kind)
        .map(|(_, _, w)| *w)
        .next_back()
        .unwrap_or(0)
}

/// The count of every key after rounds `[0, rounds)`.
fn reference(rounds: u64) -> BTreeMap<String, u64> {
    let mut expected = BTreeMap::new();
    for partition in 0..PARTITIONS {
        for offset in 0..rounds * BATCH {
            let (key, kind) = record(partition, offset, KEYS);
            *expected.entry(key).or_default() += weight_at(offset / BATCH, kind);
        }
    }
    expected
}

fn max() -> MaxParallelism {
    MaxParallelism::new(MAX_PARALLELISM).unwrap()
}

fn key_codec() -> SerdeCodec<String> {
    SerdeCodec::new()
}

// ---- Reading inspect's JSON.

fn json(args: &[&str]) -> Value {
    let stdout = ok(args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{stdout}"))
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn array(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

/// One decoded row of the `count` state, as `inspect --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    key: String,
    count: u64,
    key_hex: String,
    value_hex: String,
}

/// Every row of an `inspect --rows <all> --json` report, checked for consistency on the
/// way: each key group's rows all shown and counted, each key in the key group its bytes hash
/// to, each key group in its subtask's range, hex and decoded forms agreeing.
fn rows_of(report: &Value) -> BTreeMap<String, Row> {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The operator states of every subtask: (subtask, name) -> the state's JSON.
fn operator_states(report: &Value) -> BTreeMap<(u64, String), Value> {
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
fn check_operator_state(report: &Value, parallelism: u64) {
    let states = operator_states(report);
    let mut partitions = BTreeSet::new();
    for subtask in 0..parallelism {
        let offsets = &states[&(subtask, "partition-offsets".to_string())];
        assert_eq!(str_of(&offsets["mode"]), "even-split", "{offsets}");
        assert_eq!(str_of(&offsets["value_codec"]), "postcard/(u32, u64)");
        assert_eq!(offsets["key_codec"], Value::Null);
        assert_eq!(
            u64_of(&offsets["entries"]),
            u64::from(PARTITIONS) / parallelism,
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
    assert_eq!(partitions, (0..u64::from(PARTITIONS)).collect());
}

fn check_states(report: &Value, rows: u64) {
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

const ALL_ROWS: &str = "1000000";

/// Every backend's last demo checkpoint: the `count` state with its codecs, one row per key
/// with exactly the reference count, each in the key group it hashes to; the operator
/// states; in JSON and for people.
#[test]
fn inspect_shows_every_backends_states_rows_and_operator_state() {
    let expected = reference(FINAL_ROUND);
    for backend in backends() {
        let dir = local_demo(backend);
        let location = path_str(dir.path());
        let report = json(&["inspect", &location, "--rows", ALL_ROWS, "--json"]);
        assert_eq!(u64_of(&report["checkpoint_id"]), 4, "{backend}");
        assert_eq!(
            report["checkpoints"],
            serde_json::json!([3, 4]),
            "{backend}"
        );
        assert_eq!(u64_of(&report["parallelism"]), 1);
        assert_eq!(
            u64_of(&report["max_parallelism"]),
            u64::from(MAX_PARALLELISM)
        );
        check_states(&report, expected.len() as u64);
        let rows = rows_of(&report);
        let counts: BTreeMap<String, u64> =
            rows.values().map(|r| (r.key.clone(), r.count)).collect();
        assert_eq!(
            counts, expected,
            "{backend}: the rows are not the demo's counts"
        );
        check_operator_state(&report, 1);
        let handle = &report["subtasks"][0]["handle"];
        if backend == "rocksdb" {
            assert_eq!(str_of(&handle["kind"]), "native", "{handle}");
            assert_eq!(str_of(&handle["backend"]), "rocksdb", "{handle}");
        } else {
            assert_ne!(str_of(&handle["kind"]), "native", "{backend}: {handle}");
        }

        // The older checkpoint, at parallelism 3: every key in its subtask's key groups,
        // counts never above the final ones.
        let older = json(&[
            "inspect",
            &location,
            "--checkpoint",
            "3",
            "--rows",
            ALL_ROWS,
            "--json",
        ]);
        assert_eq!(u64_of(&older["parallelism"]), 3);
        assert_eq!(array(&older["subtasks"]).len(), 3);
        let three = Parallelism::new(3).unwrap();
        for subtask in array(&older["subtasks"]) {
            let index = u64_of(&subtask["index"]) as u32;
            let range = key_group_range_for_operator(max(), three, index).unwrap();
            assert_eq!(
                u64_of(&subtask["key_groups"]["start"]) as u32,
                range.start().get()
            );
            assert_eq!(
                u64_of(&subtask["key_groups"]["end"]) as u32,
                range.end().get()
            );
            assert_eq!(array(&subtask["key_group_stats"]).len() as u32, range.len());
        }
        let older_rows = rows_of(&older);
        assert!(!older_rows.is_empty());
        for (key, row) in &older_rows {
            assert!(
                row.count <= expected[key] && row.count > 0,
                "{key}: {row:?}"
            );
        }
        assert!(older_rows.values().map(|r| r.count).sum::<u64>() < expected.values().sum::<u64>());

        // For people: the state table, the handle, the operator states, decoded rows.
        let human = ok(&["inspect", &location]);
        assert!(human.starts_with("checkpoint 4 of file://"), "{human}");
        assert!(
            human.contains("count  value  void-namespace  postcard/u64  -        none  300"),
            "{human}"
        );
        assert!(
            human.contains("partition-offsets: even-split list state"),
            "{human}"
        );
        assert!(human.contains("weights: broadcast state"), "{human}");
        assert!(
            !human.contains("user-"),
            "no rows unless asked for:\n{human}"
        );
    }
}

/// `--key-group` shows that key group's rows decoded (string keys, u64 counts) and hex;
/// `--subtask`, `--state` and `--rows` narrow what is shown.
#[test]
fn inspect_filters_by_key_group_subtask_and_state() {
    let expected = reference(FINAL_ROUND);
    let backend = if cfg!(feature = "rocksdb") {
        "rocksdb"
    } else {
        "lmdb"
    };
    let dir = local_demo(backend);
    let location = path_str(dir.path());

    // The key group of user-1, and every key of it.
    let key_bytes = key_codec().to_bytes(&"user-1".to_string()).unwrap();
    let kg = key_group_for_key_bytes(&key_bytes, max());
    let in_kg: BTreeMap<&String, &u64> = expected
        .iter()
        .filter(|(k, _)| key_group_for_key_bytes(&key_codec().to_bytes(*k).unwrap(), max()) == kg)
        .collect();
    let kg = kg.get().to_string();
    let human = ok(&["inspect", &location, "--key-group", &kg]);
    assert!(
        human.contains(&format!("showing only key group {kg}")),
        "{human}"
    );
    assert!(
        human.contains(&format!("key group {kg}: {} row", in_kg.len())),
        "{human}"
    );
    for (key, count) in &in_kg {
        let line = human
            .lines()
            .find(|l| l.contains(&format!("\"{key}\" ")))
            .unwrap_or_else(|| panic!("{key} missing:\n{human}"));
        assert!(line.contains(&format!("=  {count} ")), "{line}");
        let key_hex = hex(&key_codec().to_bytes(*key).unwrap());
        assert!(line.contains(&format!("key 0x{key_hex}")), "{line}");
    }

    let report = json(&[
        "inspect",
        &location,
        "--key-group",
        &kg,
        "--rows",
        "1",
        "--json",
    ]);
    assert_eq!(report["key_group_filter"], kg.parse::<u64>().unwrap());
    let stats = array(&report["subtasks"][0]["key_group_stats"]);
    assert_eq!(stats.len(), 1);
    assert_eq!(u64_of(&stats[0]["rows"]), in_kg.len() as u64);
    assert_eq!(array(&stats[0]["rows_shown"]).len(), 1);
    assert_eq!(u64_of(&report["rows"]), in_kg.len() as u64);

    // --key-type hex decodes no key.
    let report = json(&[
        "inspect",
        &location,
        "--key-group",
        &kg,
        "--key-type",
        "hex",
        "--json",
    ]);
    for row in array(&report["subtasks"][0]["key_group_stats"][0]["rows_shown"]) {
        assert_eq!(row["key"], Value::Null, "{row}");
        assert!(row["value"].is_u64(), "{row}");
    }

    // --state of an operator state: no keyed rows counted, that one operator state only.
    let report = json(&["inspect", &location, "--state", "weights", "--json"]);
    assert_eq!(array(&report["states"]).len(), 0);
    assert_eq!(u64_of(&report["rows"]), 0);
    let states = operator_states(&report);
    assert_eq!(
        states.keys().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
        ["weights"]
    );
    // --state count: every key counted.
    let report = json(&["inspect", &location, "--state", "count", "--json"]);
    check_states(&report, expected.len() as u64);
    assert!(operator_states(&report).is_empty());

    // --subtask of the older checkpoint at parallelism 3: that subtask only.
    let report = json(&[
        "inspect",
        &location,
        "--checkpoint",
        "3",
        "--subtask",
        "2",
        "--json",
    ]);
    let subtasks = array(&report["subtasks"]);
    assert_eq!(subtasks.len(), 1);
    assert_eq!(u64_of(&subtasks[0]["index"]), 2);
    assert_eq!(report["subtask_filter"], 2);
}

/// Bad input is an error naming it, exit code 1, never a panic, and nothing is created.
#[test]
fn inspect_refuses_bad_input_clearly() {
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("no-such-dir");
    let missing_str = path_str(&missing);
    let err = fails(&["inspect", &missing_str]);
    assert!(
        err.contains("does not exist") && err.contains("no-such-dir"),
        "{err}"
    );
    let err = fails(&["inspect", &format!("file://{missing_str}")]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists(), "inspect must not create the storage");

    let err = fails(&["inspect", &path_str(scratch.path())]);
    assert!(err.contains("holds no checkpoints"), "{err}");

    let dir = local_demo("heap");
    let location = path_str(dir.path());
    let before = listing(dir.path());
    for (args, expected) in [
        (vec!["--checkpoint", "1"], "checkpoint 1 does not exist"),
        (vec!["--checkpoint", "1"], "it holds checkpoints 3, 4"),
        (
            vec!["--subtask", "1"],
            "--subtask 1: checkpoint 4 has 1 subtask",
        ),
        (
            vec!["--checkpoint", "3", "--subtask", "3"],
            "has 3 subtasks (0 to 2)",
        ),
        (
            vec!["--key-group", "128"],
            "--key-group 128: checkpoint 4 has max parallelism 128",
        ),
        (
            vec!["--checkpoint", "3", "--subtask", "0", "--key-group", "127"],
            "--key-group 127: subtask 0 of checkpoint 3 owns key groups 0 to 42",
        ),
        (
            vec!["--state", "nope"],
            "--state nope: checkpoint 4 has no state of that name",
        ),
        (
            vec!["--state", "nope"],
            "operator states: partition-offsets, weights",
        ),
    ] {
        let mut full = vec!["inspect", location.as_str()];
        full.extend(args.iter().copied());
        let err = fails(&full);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(listing(dir.path()), before, "inspect changed the storage");
}

/// Every file under `dir` with its size, sorted.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let size = entry.metadata().unwrap().len();
                out.push((path_str(path.strip_prefix(dir).unwrap()), size));
            }
        }
    }
    out.sort();
    out
}

/// The converted checkpoint's manifest: every keyed handle canonical, no shared file.
fn check_canonical_manifest(storage: &CheckpointStorage, id: u64, parallelism: u32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let manifest = rt
        .block_on(storage.read_manifest(CheckpointId(id)))
        .unwrap();
    assert_eq!(manifest.parallelism.get(), parallelism);
    assert_eq!(manifest.max_parallelism, max());
    for subtask in &manifest.subtasks {
        assert!(
            matches!(subtask.keyed, Some(KeyedStateHandle::Canonical { .. })),
            "{:?}",
            subtask.keyed
        );
        assert!(subtask.operator.is_some());
    }
    assert!(manifest.files().iter().all(|f| !f.shared));
}

/// Restores every subtask of checkpoint `id` at `parallelism` on LMDB, in this process, and
/// checks the `count` of every key (in the subtask owning it), that no other key exists, and
/// the operator state.
fn check_restores_on_lmdb(
    storage: &CheckpointStorage,
    id: u64,
    parallelism: u32,
    expected: &BTreeMap<String, u64>,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let manifest = rt
        .block_on(storage.read_manifest(CheckpointId(id)))
        .unwrap();
    let factory = "lmdb".parse::<BackendConfig>().unwrap().build().unwrap();
    let p = Parallelism::new(parallelism).unwrap();
    let mut keys = 0;
    let mut partitions = Vec::new();
    for index in 0..parallelism {
        let subtask = rt
            .block_on(restore_subtask(
                factory.as_ref(),
                storage,
                &manifest,
                p,
                index,
            ))
            .unwrap();
        let counts = ValueStateDescriptor::<u64>::new("count")
            .bind(subtask.keyed())
            .unwrap();
        keys += counts.keys().unwrap().len();
        for (key, count) in expected {
            let ctx = KeyContext::for_key(&key_codec(), key, max()).unwrap();
            if operator_index_for_key_group(max(), p, ctx.key_group()) == index {
                assert_eq!(counts.get(&ctx).unwrap(), Some(*count), "{key} on LMDB");
            }
        }
        let offsets = subtask
            .operator
            .list_state::<(u32, u64)>("partition-offsets", Redistribution::EvenSplit)
            .unwrap();
        partitions.extend(offsets.get().unwrap());
        let weights = subtask
            .operator
            .broadcast_state::<String, u64>("weights")
            .unwrap();
        assert_eq!(weights.get(&"click".to_string()).unwrap(), Some(3));
    }
    assert_eq!(keys, expected.len(), "keys restored on LMDB");
    partitions.sort();
    let all: Vec<(u32, u64)> = (0..PARTITIONS).map(|p| (p, FINAL_ROUND * BATCH)).collect();
    assert_eq!(partitions, all);
}

/// RocksDB native (or, without RocksDB, LMDB changelog) -> canonical at parallelism 2: the
/// same rows, canonical handles only, restorable on LMDB at yet another parallelism; the
/// source untouched.
#[test]
fn convert_writes_a_canonical_checkpoint_any_backend_restores() {
    let expected = reference(FINAL_ROUND);
    let backend = if cfg!(feature = "rocksdb") {
        "rocksdb"
    } else {
        "lmdb"
    };
    let source = local_demo(backend);
    let source_str = path_str(source.path());
    let before = listing(source.path());
    let source_report = json(&["inspect", &source_str, "--rows", ALL_ROWS, "--json"]);
    let source_rows = rows_of(&source_report);
    assert_eq!(source_rows.len(), expected.len());

    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("portable").join("job");
    let target_str = path_str(&target);
    let report = json(&[
        "convert",
        &source_str,
        "--checkpoint",
        "4",
        "--to",
        &target_str,
        "--parallelism",
        "2",
        "--json",
    ]);
    assert_eq!(u64_of(&report["source_checkpoint_id"]), 4);
    assert_eq!(u64_of(&report["source_parallelism"]), 1);
    let kinds = array(&report["source_handles"]);
    if backend == "rocksdb" {
        assert_eq!(kinds, &vec![Value::from("native rocksdb")]);
    }
    assert_eq!(u64_of(&report["checkpoint_id"]), 1, "{report}");
    assert_eq!(u64_of(&report["parallelism"]), 2);
    assert_eq!(
        u64_of(&report["max_parallelism"]),
        u64::from(MAX_PARALLELISM)
    );
    assert_eq!(
        u64_of(&report["files"]),
        4,
        "two keyed and two operator files"
    );
    let subtasks = array(&report["subtasks"]);
    assert_eq!(subtasks.len(), 2);
    let mut bytes = 0;
    for s in subtasks {
        let keyed = &s["keyed_file"];
        let path = str_of(&keyed["path"]);
        assert!(path.starts_with("chk-00000000000000000001/"), "{path}");
        let on_disk = std::fs::metadata(target.join(path)).unwrap().len();
        assert_eq!(on_disk, u64_of(&keyed["bytes"]));
        bytes += on_disk + u64_of(&s["operator_file"]["bytes"]);
    }
    assert_eq!(bytes, u64_of(&report["bytes"]));
    assert!(str_of(&report["target"]).starts_with("file://"));
    assert!(
        !target.join("shared").exists(),
        "a canonical checkpoint shares nothing"
    );
    assert_eq!(listing(source.path()), before, "convert changed its source");

    let storage = CheckpointStorage::local(&target).unwrap();
    check_canonical_manifest(&storage, 1, 2);

    // Row by row the same state, now split over two subtasks.
    let converted = json(&["inspect", &target_str, "--rows", ALL_ROWS, "--json"]);
    assert_eq!(u64_of(&converted["parallelism"]), 2);
    for s in array(&converted["subtasks"]) {
        assert_eq!(str_of(&s["handle"]["kind"]), "canonical");
    }
    check_states(&converted, expected.len() as u64);
    assert_eq!(rows_of(&converted), source_rows);
    check_operator_state(&converted, 2);

    // Any backend restores it, at any parallelism: LMDB at 3.
    check_restores_on_lmdb(&storage, 1, 3, &expected);

    // Back to parallelism 1 from the canonical one, for people.
    let again = scratch.path().join("again");
    let human = ok(&[
        "convert",
        &target_str,
        "--checkpoint",
        "1",
        "--to",
        &path_str(&again),
    ]);
    assert!(human.contains("wrote checkpoint 1 to file://"), "{human}");
    assert!(
        human.contains("parallelism 2, max parallelism 128, canonical handles"),
        "{human}"
    );
    let again_report = json(&["inspect", &path_str(&again), "--rows", ALL_ROWS, "--json"]);
    assert_eq!(
        u64_of(&again_report["parallelism"]),
        2,
        "the default keeps the parallelism"
    );
    assert_eq!(rows_of(&again_report), source_rows);
}

/// What convert refuses, before writing anything: an unknown checkpoint, a parallelism of 0
/// or above the max, a missing source, the source itself (however spelled), a place inside
/// or around it, a target that is not empty.
#[test]
fn convert_refuses_bad_targets_and_arguments() {
    let source = local_demo("heap");
    let source_str = path_str(source.path());
    let before = listing(source.path());
    let scratch = tempfile::tempdir().unwrap();
    let fresh = scratch.path().join("fresh");
    let fresh_str = path_str(&fresh);
    let convert = |to: &str, extra: &[&str]| {
        let mut args = vec!["convert", source_str.as_str(), "--to", to];
        if !extra.contains(&"--checkpoint") {
            args.extend(["--checkpoint", "4"]);
        }
        args.extend(extra.iter().copied());
        fails(&args)
    };

    let err = convert(&fresh_str, &["--checkpoint", "9"]);
    assert!(
        err.contains("checkpoint 9 does not exist") && err.contains("3, 4"),
        "{err}"
    );
    let err = convert(&fresh_str, &["--parallelism", "0"]);
    assert!(err.contains("--parallelism 0"), "{err}");
    let err = convert(&fresh_str, &["--parallelism", "129"]);
    assert!(
        err.contains("--parallelism 129") && err.contains("max parallelism 128"),
        "{err}"
    );
    let missing = path_str(&scratch.path().join("missing"));
    let err = fails(&["convert", &missing, "--checkpoint", "4", "--to", &fresh_str]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!scratch.path().join("missing").exists());
    assert!(!fresh.exists(), "a refused convert must create nothing");

    let canonical_source = std::fs::canonicalize(source.path()).unwrap();
    for target in [
        source_str.clone(),
        format!("{source_str}/"),
        format!("file://{}", canonical_source.display()),
        format!(
            "{source_str}/../{}",
            source.path().file_name().unwrap().to_str().unwrap()
        ),
    ] {
        let err = convert(&target, &[]);
        assert!(err.contains("is the source storage"), "{target}: {err}");
    }
    let inside = format!("{source_str}/portable");
    let err = convert(&inside, &[]);
    assert!(err.contains("lies inside the source storage"), "{err}");
    assert!(!source.path().join("portable").exists());
    let around = path_str(source.path().parent().unwrap());
    let err = convert(&around, &[]);
    assert!(err.contains("contains the source storage"), "{err}");

    // Not empty: a stray file, or checkpoints of another job.
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("notes.txt"), b"mine").unwrap();
    let err = convert(&fresh_str, &[]);
    assert!(
        err.contains("is not empty") && err.contains("notes.txt"),
        "{err}"
    );
    assert_eq!(std::fs::read(fresh.join("notes.txt")).unwrap(), b"mine");
    let other = local_demo("lmdb");
    let other_before = listing(other.path());
    let err = convert(&path_str(other.path()), &[]);
    assert!(
        err.contains("is not empty") && err.contains("checkpoints 3, 4"),
        "{err}"
    );
    assert_eq!(
        listing(other.path()),
        other_before,
        "a refused target was changed"
    );

    assert_eq!(listing(source.path()), before, "convert changed its source");
}

/// The same on S3 (the local server scripts/test.sh starts): inspect reads a demo's
/// checkpoints there, convert writes a canonical copy to another prefix and refuses the
/// source's prefix and one inside it.
#[test]
fn inspect_and_convert_on_s3() {
    let Some(source) = s3_location("inspect-convert") else {
        return;
    };
    let backend = if cfg!(feature = "rocksdb") {
        "rocksdb"
    } else {
        "lmdb"
    };
    common::demo_checkpoints(backend, &source);
    let expected = reference(FINAL_ROUND);
    let report = json(&["inspect", &source, "--rows", ALL_ROWS, "--json"]);
    assert_eq!(report["storage"], Value::from(source.as_str()));
    let source_rows = rows_of(&report);
    let counts: BTreeMap<String, u64> = source_rows
        .values()
        .map(|r| (r.key.clone(), r.count))
        .collect();
    assert_eq!(counts, expected);
    check_operator_state(&report, 1);

    let err = fails(&["convert", &source, "--checkpoint", "4", "--to", &source]);
    assert!(err.contains("is the source storage"), "{err}");
    let err = fails(&[
        "convert",
        &source,
        "--checkpoint",
        "4",
        "--to",
        &format!("{source}/x"),
    ]);
    assert!(err.contains("lies inside the source storage"), "{err}");

    let target = s3_location("converted").unwrap();
    let written = json(&[
        "convert",
        &source,
        "--checkpoint",
        "4",
        "--to",
        &target,
        "--parallelism",
        "2",
        "--json",
    ]);
    assert_eq!(u64_of(&written["checkpoint_id"]), 1);
    let converted = json(&["inspect", &target, "--rows", ALL_ROWS, "--json"]);
    assert_eq!(u64_of(&converted["parallelism"]), 2);
    assert_eq!(rows_of(&converted), source_rows);
    let err = fails(&["convert", &source, "--checkpoint", "4", "--to", &target]);
    assert!(
        err.contains("is not empty") && err.contains("checkpoint 1"),
        "{err}"
    );
}
