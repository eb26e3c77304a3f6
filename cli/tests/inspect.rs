//! `flowstate inspect` end to end as a process, against real checkpoints the demo wrote on
//! every backend of this build (changelog handles for heap and LMDB, native SST handles for
//! RocksDB): the rows shown are the demo's exact counts (`common::demo`), each where it must
//! be; the filters narrow what is shown; bad input is refused and nothing is changed.

mod common;

use std::collections::BTreeMap;

use common::demo::{
    check_operator_state, check_states, final_counts, key_codec, max, operator_states, rows_of,
    ALL_ROWS,
};
use common::{
    array, assert_refuses_missing_storage, backends, fails, hex, json, local_demo, ok, path_str,
    rocksdb_or_lmdb, str_of, tree, u64_of,
};
use flowstate_api::key_groups::{key_group_for_key_bytes, key_group_range_for_operator};
use flowstate_api::{Codec, Parallelism};
use flowstate_cli::demo::workload::DEFAULT_MAX_PARALLELISM;
use serde_json::Value;

/// Every backend's last demo checkpoint: the `count` state with its codecs, one row per key
/// with exactly the reference count, each in the key group it hashes to; the operator
/// states; in JSON and for people.
#[test]
fn inspect_shows_every_backends_states_rows_and_operator_state() {
    let expected = final_counts();
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
            u64::from(DEFAULT_MAX_PARALLELISM)
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
    let expected = final_counts();
    let backend = rocksdb_or_lmdb();
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
    assert_refuses_missing_storage("inspect", &[]);
    let empty = tempfile::tempdir().unwrap();
    let err = fails(&["inspect", &path_str(empty.path())]);
    assert!(err.contains("no completed checkpoints in"), "{err}");

    let dir = local_demo("heap");
    let location = path_str(dir.path());
    let before = tree(dir.path());
    for (args, expected) in [
        (vec!["--checkpoint", "1"], "checkpoint 1 has no manifest"),
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
    assert_eq!(tree(dir.path()), before, "inspect changed the storage");
}
