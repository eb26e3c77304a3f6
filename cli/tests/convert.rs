//! `flowstate convert` end to end as a process: a canonical copy of the demo's checkpoints
//! (native RocksDB ones too) at another parallelism holds the same rows, shares nothing, and
//! restores on another backend; bad targets and arguments are refused before anything is
//! written; and `inspect` and `convert` on S3 when the local server runs.

mod common;

use std::collections::BTreeMap;

use common::demo::{
    check_operator_state, check_states, final_counts, key_codec, max, rows_of, ALL_ROWS, BATCH,
};
use common::{
    array, fails, json, local_demo, ok, path_str, rocksdb_or_lmdb, s3_demo, s3_location, str_of,
    tree, u64_of,
};
use flowstate_api::key_groups::operator_index_for_key_group;
use flowstate_api::operator::Redistribution;
use flowstate_api::typed::ValueStateDescriptor;
use flowstate_api::{CheckpointId, CheckpointStorage, KeyContext, KeyedStateHandle, Parallelism};
use flowstate_cli::demo::workload::{DEFAULT_MAX_PARALLELISM, DEFAULT_PARTITIONS, FINAL_ROUND};
use flowstate_runtime::{restore_subtask, BackendConfig};
use serde_json::Value;

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
    let all: Vec<(u32, u64)> = (0..DEFAULT_PARTITIONS)
        .map(|p| (p, FINAL_ROUND * BATCH))
        .collect();
    assert_eq!(partitions, all);
}

/// RocksDB native (or, without RocksDB, LMDB changelog) -> canonical at parallelism 2: the
/// same rows, canonical handles only, restorable on LMDB at yet another parallelism; the
/// source untouched.
#[test]
fn convert_writes_a_canonical_checkpoint_any_backend_restores() {
    let expected = final_counts();
    let backend = rocksdb_or_lmdb();
    let source = local_demo(backend);
    let source_str = path_str(source.path());
    let before = tree(source.path());
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
        u64::from(DEFAULT_MAX_PARALLELISM)
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
    assert_eq!(tree(source.path()), before, "convert changed its source");

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
    let before = tree(source.path());
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
        err.contains("checkpoint 9 has no manifest") && err.contains("3, 4"),
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
    // A URL with a host (or percent-encoding): the directory the URL names is compared, not
    // its text.
    let with_host = format!("file://localhost{}/shared/copy", canonical_source.display());
    let err = convert(&with_host, &[]);
    assert!(
        err.contains("lies inside the source storage"),
        "{with_host}: {err}"
    );
    assert!(!source.path().join("shared/copy").exists());
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
    let other_before = tree(other.path());
    let err = convert(&path_str(other.path()), &[]);
    assert!(
        err.contains("is not empty") && err.contains("checkpoints 3, 4"),
        "{err}"
    );
    assert_eq!(
        tree(other.path()),
        other_before,
        "a refused target was changed"
    );

    assert_eq!(tree(source.path()), before, "convert changed its source");
}

/// The same on S3 (the local server scripts/test.sh starts): inspect reads a demo's
/// checkpoints there, convert writes a canonical copy to another prefix and refuses the
/// source's prefix and one inside it.
#[test]
fn inspect_and_convert_on_s3() {
    let Some(source) = s3_demo("inspect-convert", rocksdb_or_lmdb()) else {
        return;
    };
    let expected = final_counts();
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
