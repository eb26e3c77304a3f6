//! `flowstate plan` end to end as a process, against checkpoints the demo wrote with every
//! backend, on local disk and on the local S3 server: every byte range planned is checked
//! against the checkpoint's files, read here through `flowstate_api` (`common::truth`), as the
//! restore of each backend reads them.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::truth::{distinct_files, Truth};
use common::{
    array, assert_help_has_examples, assert_refuses_missing_storage, backends, fails, json,
    local_demo, ok, path_str, run, s3_demo, str_of, tree, u64_of,
};
use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::snapshot::{SnapshotFileInfo, HEADER_LEN, TRAILER_LEN};
use flowstate_api::{FileRef, KeyedStateHandle, Parallelism};
use serde_json::Value;

/// One read of a plan: path, part, purpose, ranges.
type Read = (String, String, String, Vec<(u64, u64)>);

/// The reads of one subtask in a plan.
fn reads_of(subtask: &Value) -> Vec<Read> {
    array(&subtask["reads"])
        .iter()
        .map(|r| {
            (
                str_of(&r["path"]).to_string(),
                str_of(&r["part"]).to_string(),
                str_of(&r["purpose"]).to_string(),
                array(&r["ranges"])
                    .iter()
                    .map(|b| (u64_of(&b["start"]), u64_of(&b["end"])))
                    .collect(),
            )
        })
        .collect()
}

/// Where the blocks of a snapshot file end (its metadata starts).
fn blocks_end(info: &SnapshotFileInfo) -> u64 {
    info.index
        .last()
        .map_or(HEADER_LEN, |e| e.offset + e.length)
}

/// The three reads `read_info` issues for `file`: header, trailer, metadata and index.
fn info_reads(file: &FileRef, info: &SnapshotFileInfo) -> [(u64, u64); 3] {
    let tail = file.size - TRAILER_LEN;
    [(0, HEADER_LEN), (tail, file.size), (blocks_end(info), tail)]
}

/// Checks a plan of checkpoint `id` at `parallelism` against the checkpoint's files, as the
/// restore of `backend`'s checkpoints reads them; returns the plan.
fn check_plan(backend: &str, location: &str, id: u64, parallelism: u32) -> Value {
    let truth = Truth::read(location);
    let manifest = truth.manifest(id);
    let max = manifest.max_parallelism;
    let p = Parallelism::new(parallelism).expect("parallelism");
    let id_arg = id.to_string();
    let p_arg = parallelism.to_string();
    let plan = json(&[
        "plan",
        location,
        "--checkpoint",
        &id_arg,
        "--parallelism",
        &p_arg,
        "--json",
    ]);
    assert_eq!(u64_of(&plan["checkpoint_id"]), id);
    assert_eq!(u64_of(&plan["parallelism"]), u64::from(parallelism));
    assert_eq!(u64_of(&plan["max_parallelism"]), u64::from(max.get()));
    let files = distinct_files(manifest);
    let checkpoint_bytes: u64 = files.values().map(|f| f.size).sum();
    assert_eq!(u64_of(&plan["checkpoint_bytes"]), checkpoint_bytes);
    let local = !location.starts_with("s3://");
    if local {
        assert!(plan["coalesce_gap"].is_null());
    } else {
        assert_eq!(u64_of(&plan["coalesce_gap"]), 1024 * 1024);
    }

    let handles = manifest.keyed_handles();
    let infos: BTreeMap<String, SnapshotFileInfo> = handles
        .iter()
        .filter(|h| !matches!(h, KeyedStateHandle::Native { .. }))
        .flat_map(|h| h.files())
        .map(|f| (f.path.clone(), truth.snapshot_info(f)))
        .collect();

    let subtasks = array(&plan["subtasks"]);
    assert_eq!(subtasks.len(), parallelism as usize);
    let mut covered: Vec<u32> = Vec::new();
    let mut total = 0;
    // Per file, the byte ranges of blocks read by all subtasks together.
    let mut blocks_read: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for (index, subtask) in subtasks.iter().enumerate() {
        let target = key_group_range_for_operator(max, p, index as u32).expect("a range");
        assert_eq!(u64_of(&subtask["subtask_index"]), index as u64);
        let (start, end) = (
            u64_of(&subtask["key_groups"]["start"]) as u32,
            u64_of(&subtask["key_groups"]["end"]) as u32,
        );
        assert_eq!((start, end), (target.start().get(), target.end().get()));
        covered.extend(start..=end);

        // Every range inside its file, sizes as the manifest (and the store) record them,
        // byte counts adding up.
        let mut bytes = 0;
        for r in array(&subtask["reads"]) {
            let file = files
                .get(str_of(&r["path"]))
                .unwrap_or_else(|| panic!("{} is not a file of checkpoint {id}", r["path"]));
            assert_eq!(u64_of(&r["file_size"]), file.size);
            assert_eq!(truth.files.get(&file.path), Some(&file.size));
            let mut read = 0;
            for b in array(&r["ranges"]) {
                let (start, end) = (u64_of(&b["start"]), u64_of(&b["end"]));
                assert!(
                    start <= end && end <= file.size,
                    "{r:#} outside {}",
                    file.size
                );
                read += end - start;
            }
            assert_eq!(u64_of(&r["bytes"]), read);
            // One range per call: even a store that coalesces the ranges of a call transfers
            // what is asked (header and trailer are two calls, not a download of the file).
            assert_eq!(array(&r["ranges"]).len(), 1, "{r:#}");
            assert_eq!(u64_of(&r["transferred_bytes"]), read, "{r:#}");
            bytes += read;
        }
        assert_eq!(u64_of(&subtask["bytes_read"]), bytes);
        total += bytes;

        let reads = reads_of(subtask);
        // Operator state: every old subtask's operator file, whole, by every new subtask.
        let operator: BTreeSet<(String, Vec<(u64, u64)>)> = reads
            .iter()
            .filter(|r| r.2 == "operator state")
            .map(|r| (r.0.clone(), r.3.clone()))
            .collect();
        let expected: BTreeSet<(String, Vec<(u64, u64)>)> = manifest
            .operator_files()
            .into_iter()
            .flatten()
            .map(|f| (f.path.clone(), vec![(0, f.size)]))
            .collect();
        assert_eq!(operator, expected);

        let overlapping: Vec<&KeyedStateHandle> = handles
            .iter()
            .filter(|h| h.key_group_range().intersection(&target).is_some())
            .collect();
        if backend == "rocksdb" {
            // Native handles: every file of each overlapping handle, whole; nothing else.
            let native: BTreeSet<(String, Vec<(u64, u64)>)> = reads
                .iter()
                .filter(|r| r.2 != "operator state")
                .map(|r| {
                    assert_eq!((r.1.as_str(), r.2.as_str()), ("whole file", "native state"));
                    (r.0.clone(), r.3.clone())
                })
                .collect();
            let expected: BTreeSet<(String, Vec<(u64, u64)>)> = overlapping
                .iter()
                .flat_map(|h| h.files())
                .map(|f| (f.path.clone(), vec![(0, f.size)]))
                .collect();
            assert_eq!(native, expected);
            continue;
        }

        // Canonical and changelog handles through the restore driver: the max-parallelism
        // check on the first handle's first file, then header, trailer and metadata+index of
        // every other file of each overlapping handle (the checked file's are reused) and the
        // one span of blocks of the subtask's key groups per file, computed here from the
        // files' own indexes.
        let first = match &handles[0] {
            KeyedStateHandle::Canonical { file, .. }
            | KeyedStateHandle::Changelog { base: file, .. } => file,
            other => panic!("{}", other.describe()),
        };
        let mut expected: Vec<Read> = Vec::new();
        let push_info = |expected: &mut Vec<_>, file: &FileRef, purpose: &str| {
            let [h, t, m] = info_reads(file, &infos[&file.path]);
            for (part, range) in [("header", h), ("trailer", t), ("metadata+index", m)] {
                expected.push((
                    file.path.clone(),
                    part.to_string(),
                    purpose.to_string(),
                    vec![range],
                ));
            }
        };
        push_info(&mut expected, first, "max-parallelism check");
        for handle in &overlapping {
            let files = handle.files();
            for file in files.iter().filter(|f| f.path != first.path) {
                push_info(&mut expected, file, "keyed state");
            }
            for file in &files {
                let info = &infos[&file.path];
                let own = info
                    .metadata
                    .key_group_range
                    .intersection(&target)
                    .expect("overlapping");
                let blocks: Vec<_> = info
                    .index
                    .iter()
                    .filter(|e| own.contains(e.key_group))
                    .collect();
                if let (Some(a), Some(b)) = (blocks.first(), blocks.last()) {
                    assert!(target.contains(a.key_group) && target.contains(b.key_group));
                    expected.push((
                        file.path.clone(),
                        "blocks".to_string(),
                        "keyed state".to_string(),
                        vec![(a.offset, b.offset + b.length)],
                    ));
                }
            }
        }
        let keyed: Vec<_> = reads
            .iter()
            .filter(|r| r.2 != "operator state")
            .cloned()
            .collect();
        assert_eq!(keyed, expected, "subtask {index}");
        for r in array(&subtask["reads"])
            .iter()
            .filter(|r| r["part"] == "blocks")
        {
            let (a, b) = (
                u64_of(&r["key_groups"]["start"]) as u32,
                u64_of(&r["key_groups"]["end"]) as u32,
            );
            assert!(start <= a && a <= b && b <= end, "{r:#}");
            blocks_read
                .entry(str_of(&r["path"]).to_string())
                .or_default()
                .push((
                    u64_of(&r["ranges"][0]["start"]),
                    u64_of(&r["ranges"][0]["end"]),
                ));
        }
        // Less than the whole state: a subtask reads only its key groups' blocks.
        let blocks: u64 = reads
            .iter()
            .filter(|r| r.1 == "blocks")
            .flat_map(|r| r.3.iter().map(|(a, b)| b - a))
            .sum();
        let keyed_bytes: u64 = handles.iter().map(|h| h.total_size()).sum();
        if parallelism > 1 {
            assert!(
                blocks < keyed_bytes,
                "subtask {index}: {blocks} of {keyed_bytes}"
            );
        }
    }
    // The new subtasks own every key group once.
    assert_eq!(covered, (0..max.get()).collect::<Vec<_>>());
    assert_eq!(u64_of(&plan["bytes_read"]), total);

    if backend != "rocksdb" {
        // Together the subtasks read every block of every file exactly once: the block spans
        // of a file tile [HEADER_LEN, end of blocks) without overlap.
        for (path, info) in &infos {
            let mut spans = blocks_read.remove(path).unwrap_or_default();
            spans.sort();
            let mut next = HEADER_LEN;
            for (a, b) in spans {
                assert_eq!(a, next, "{path}: blocks read twice or skipped");
                next = b;
            }
            assert_eq!(next, blocks_end(info), "{path}: not every block read");
        }
        // So the total is the blocks plus what each subtask reads to find them (headers,
        // trailers, metadata and indexes) and the operator state.
        let blocks_total: u64 = infos.values().map(|i| blocks_end(i) - HEADER_LEN).sum();
        let overhead: u64 = subtasks
            .iter()
            .flat_map(|st| array(&st["reads"]).iter())
            .filter(|r| r["part"] != "blocks")
            .map(|r| u64_of(&r["bytes"]))
            .sum();
        assert_eq!(total, blocks_total + overhead);
        assert!(blocks_total <= checkpoint_bytes);
    }
    plan
}

#[test]
fn plan_ranges_are_what_the_restore_reads_on_local_disk() {
    for backend in backends() {
        let dir = local_demo(backend);
        let location = path_str(dir.path());
        let before = tree(dir.path());
        let truth = Truth::read(&location);
        let latest = truth.manifests.last().expect("a checkpoint");
        assert_eq!(
            latest.parallelism.get(),
            1,
            "the demo ends at parallelism 1"
        );
        let id = latest.checkpoint_id.get();
        // Rescale 1 -> 2, 1 -> 3 and restore at the same parallelism; and from parallelism 3
        // (several handles, each subtask reading only those overlapping its key groups).
        for p in [2, 3, 1] {
            check_plan(backend, &location, id, p);
        }
        let older = truth.manifests[0].checkpoint_id.get();
        assert_eq!(truth.manifest(older).parallelism.get(), 3);
        check_plan(backend, &location, older, 2);
        if backend == "rocksdb" {
            // Natives are read whole: each new subtask downloads the old handle entirely.
            let plan = check_plan(backend, &location, id, 2);
            let keyed: u64 = latest.keyed_handles().iter().map(|h| h.total_size()).sum();
            for st in array(&plan["subtasks"]) {
                assert!(u64_of(&st["bytes_read"]) >= keyed);
            }
        }
        // The latest checkpoint is the default.
        let default = json(&["plan", &location, "--parallelism", "2", "--json"]);
        assert_eq!(u64_of(&default["checkpoint_id"]), id);
        let expected_backend = if backend == "rocksdb" {
            "rocksdb"
        } else {
            "heap"
        };
        assert_eq!(str_of(&default["backend"]), expected_backend);
        // The table names every file read, each subtask and the total.
        let human = ok(&["plan", &location, "--parallelism", "2"]);
        assert!(human.contains("subtask 0, key groups [0, 63]"), "{human}");
        assert!(human.contains("subtask 1, key groups [64, 127]"), "{human}");
        assert!(human.contains("in total:"), "{human}");
        for f in latest.files() {
            assert!(human.contains(&f.path), "{} missing:\n{human}", f.path);
        }
        assert_eq!(tree(dir.path()), before, "plan changed the storage");
    }
}

#[test]
fn plan_subtasks_read_less_than_the_checkpoint_when_state_outweighs_indexes() {
    // The demo's default size: blocks outweigh each file's index (24 bytes per key group), so
    // a new subtask of a rescale 1 -> 2 reads well under the whole checkpoint.
    for backend in backends().into_iter().filter(|b| *b != "rocksdb") {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = path_str(dir.path());
        let out = ok(&["demo", "--backend", backend, "--storage", &location]);
        assert!(out.contains("OK: every count equals"), "{out}");
        let plan = json(&["plan", &location, "--parallelism", "2", "--json"]);
        let checkpoint = u64_of(&plan["checkpoint_bytes"]);
        for st in array(&plan["subtasks"]) {
            let read = u64_of(&st["bytes_read"]);
            assert!(
                read * 10 < checkpoint * 7,
                "{backend}: {read} of {checkpoint}"
            );
        }
    }
}

#[test]
fn plan_on_s3() {
    for backend in backends() {
        let Some(location) = s3_demo("plan", backend) else {
            return;
        };
        let truth = Truth::read(&location);
        for manifest in &truth.manifests {
            check_plan(backend, &location, manifest.checkpoint_id.get(), 2);
        }
    }
}

/// Bad arguments are errors naming them, exit code 1 (2 for the argument parser's), and
/// nothing changes.
#[test]
fn plan_refuses_bad_arguments_clearly_and_changes_nothing() {
    assert_refuses_missing_storage("plan", &["--parallelism", "2"]);
    assert_refuses_missing_storage("plan", &["--parallelism", "2", "--json"]);
    let dir = local_demo("heap");
    let location = path_str(dir.path());
    let before = tree(dir.path());
    let truth = Truth::read(&location);
    let ids: Vec<String> = truth
        .manifests
        .iter()
        .map(|m| m.checkpoint_id.to_string())
        .collect();

    // Parallelism 0: refused by the argument parser (a usage error, exit 2), before any read.
    let out = run(&["plan", &location, "--parallelism", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'0'") && err.contains("--parallelism"),
        "{err}"
    );
    // Above the checkpoint's max parallelism.
    let err = fails(&["plan", &location, "--parallelism", "129"]);
    assert!(
        err.contains("129") && err.contains("max parallelism 128") && err.contains("1..=128"),
        "{err}"
    );
    // An unknown checkpoint: the ones that exist are named.
    let err = fails(&[
        "plan",
        &location,
        "--checkpoint",
        "77",
        "--parallelism",
        "2",
    ]);
    assert!(err.contains("checkpoint 77 has no manifest"), "{err}");
    for id in &ids {
        assert!(err.contains(id.as_str()), "{err}");
    }
    // An empty storage has nothing to plan.
    let err = fails(&["plan", "memory://", "--parallelism", "1"]);
    assert!(
        err.contains("no completed checkpoints in memory://"),
        "{err}"
    );
    assert_eq!(
        tree(dir.path()),
        before,
        "a failed command changed the storage"
    );
}

/// Changelog state plans for any backend (RocksDB's restore reads it through the driver).
#[test]
fn changelog_checkpoints_are_planned_for_every_backend() {
    let dir = local_demo("heap");
    let location = path_str(dir.path());
    let heap = json(&["plan", &location, "--parallelism", "2", "--json"]);
    for backend in ["lmdb", "rocksdb"] {
        let plan = json(&[
            "plan",
            &location,
            "--parallelism",
            "2",
            "--backend",
            backend,
            "--json",
        ]);
        assert_eq!(str_of(&plan["backend"]), backend);
        for (a, b) in array(&heap["subtasks"])
            .iter()
            .zip(array(&plan["subtasks"]))
        {
            let (a, b) = (reads_of(a), reads_of(b));
            if backend == "lmdb" {
                assert_eq!(a, b, "LMDB restores through the same driver as the heap");
            } else {
                // RocksDB checks the max parallelism itself, then runs the driver (which
                // checks it again) for the canonical and changelog handles.
                let check = a
                    .iter()
                    .take_while(|r| r.2 == "max-parallelism check")
                    .count();
                assert!(check > 0, "{a:?}");
                assert_eq!(b.len(), a.len() + check);
                assert_eq!(b[..check], a[..check]);
                assert_eq!(b[check..], a[..]);
            }
        }
    }
}

#[test]
fn rocksdb_checkpoints_are_planned_for_rocksdb_only() {
    if !backends().contains(&"rocksdb") {
        return;
    }
    let dir = local_demo("rocksdb");
    let location = path_str(dir.path());
    let err = fails(&["plan", &location, "--parallelism", "2", "--backend", "heap"]);
    assert!(
        err.contains("native rocksdb state") && err.contains("--backend rocksdb"),
        "{err}"
    );
}

#[test]
fn help_has_examples() {
    assert_help_has_examples("plan");
}
