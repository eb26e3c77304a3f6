//! `flowstate ls` end to end as a process, against checkpoints the demo wrote with every
//! backend, on local disk and on the local S3 server: what it lists is checked against what the
//! storage holds, read here through `flowstate_api` (`common::truth`) and, on local disk, the
//! file system itself.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::truth::{distinct_files, Truth};
use common::{
    array, assert_help_has_examples, assert_refuses_missing_storage, backends, json, local_demo,
    ok, path_str, s3_demo, str_of, tree, u64_of,
};
use flowstate_api::{CheckpointStorage, KeyedStateHandle};
use serde_json::Value;

/// Checks `flowstate ls --json` of demo checkpoints written by `backend` at `location`.
fn check_ls(backend: &str, location: &str) {
    let truth = Truth::read(location);
    let report = json(&["ls", location, "--json"]);
    let checkpoints = array(&report["checkpoints"]);

    // Exactly the retained checkpoints: the demo keeps its last two.
    let retained: Vec<u64> = checkpoints
        .iter()
        .filter(|c| c["retained"] == Value::Bool(true))
        .map(|c| u64_of(&c["id"]))
        .collect();
    let expected: Vec<u64> = truth
        .manifests
        .iter()
        .map(|m| m.checkpoint_id.get())
        .collect();
    assert_eq!(retained, expected, "{backend} at {location}");
    assert_eq!(retained.len(), 2, "the demo retains two checkpoints");
    assert!(
        checkpoints
            .iter()
            .all(|c| c["retained"] == Value::Bool(true)),
        "the demo leaves no incomplete directory: {report:#}"
    );

    let mut any_shared = false;
    for c in checkpoints {
        let manifest = truth.manifest(u64_of(&c["id"]));
        assert_eq!(str_of(&c["status"]), "retained");
        assert_eq!(
            u64_of(&c["parallelism"]),
            u64::from(manifest.parallelism.get())
        );
        assert_eq!(
            u64_of(&c["max_parallelism"]),
            u64::from(manifest.max_parallelism.get())
        );
        let time = str_of(&c["time"]);
        assert!(
            time.len() == 20 && time.starts_with("20") && time.ends_with('Z'),
            "{time}"
        );

        // Bytes: every distinct file once, shared ones apart; each file exists with its size.
        let files = distinct_files(manifest);
        let total: u64 = files.values().map(|f| f.size).sum();
        let shared: u64 = files.values().filter(|f| f.shared).map(|f| f.size).sum();
        for f in files.values() {
            assert_eq!(truth.files.get(&f.path), Some(&f.size), "{}", f.path);
        }
        assert_eq!(u64_of(&c["files"]), files.len() as u64);
        assert_eq!(u64_of(&c["total_bytes"]), total);
        assert_eq!(u64_of(&c["shared_bytes"]), shared);
        assert_eq!(u64_of(&c["exclusive_bytes"]), total - shared);
        if files.values().any(|f| f.shared) {
            any_shared = true;
            assert!(u64_of(&c["shared_bytes"]) > 0);
        }

        // Kinds per subtask, as the backend writes incremental checkpoints.
        let subtasks = array(&c["subtasks"]);
        assert_eq!(subtasks.len(), manifest.subtasks.len());
        for (report, handle) in subtasks.iter().zip(&manifest.subtasks) {
            assert_eq!(
                u64_of(&report["subtask_index"]),
                u64::from(handle.subtask_index)
            );
            assert_eq!(
                u64_of(&report["key_groups"]["start"]),
                u64::from(handle.key_group_range.start().get())
            );
            assert_eq!(
                u64_of(&report["key_groups"]["end"]),
                u64::from(handle.key_group_range.end().get())
            );
            let keyed = handle.keyed.as_ref().expect("the demo has keyed state");
            match (backend, keyed) {
                ("heap" | "lmdb", KeyedStateHandle::Changelog { deltas, .. }) => {
                    assert_eq!(str_of(&report["kind"]), "changelog");
                    assert_eq!(u64_of(&report["deltas"]), deltas.len() as u64);
                    assert!(report["native_backend"].is_null());
                }
                ("rocksdb", KeyedStateHandle::Native { files, .. }) => {
                    assert_eq!(str_of(&report["kind"]), "native");
                    assert_eq!(str_of(&report["native_backend"]), "rocksdb");
                    assert_eq!(u64_of(&report["keyed_files"]), files.len() as u64);
                }
                (backend, other) => panic!("{backend} wrote {}", other.describe()),
            }
            assert_eq!(u64_of(&report["keyed_bytes"]), keyed.total_size());
            let shared: u64 = keyed
                .files()
                .into_iter()
                .chain(handle.operator.iter())
                .filter(|f| f.shared)
                .map(|f| f.size)
                .sum();
            assert_eq!(u64_of(&report["shared_bytes"]), shared);
            if backend != "rocksdb" {
                // A changelog's base and deltas are all shared.
                assert_eq!(shared, keyed.total_size());
            }
            assert_eq!(
                u64_of(&report["operator_bytes"]),
                handle.operator.as_ref().map_or(0, |f| f.size)
            );
        }
    }
    assert!(any_shared, "{backend}: incremental checkpoints share files");

    // The registry: every shared file of a retained checkpoint with the checkpoints using it,
    // as the manifests say and as the lifecycle's registry copy says.
    let mut users: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for m in &truth.manifests {
        for f in distinct_files(m).values().filter(|f| f.shared) {
            users
                .entry(f.path.clone())
                .or_default()
                .insert(m.checkpoint_id.get());
        }
    }
    let registry = &report["registry"];
    let listed: BTreeMap<String, BTreeSet<u64>> = array(&registry["files"])
        .iter()
        .map(|f| {
            assert_eq!(f["present"], Value::Bool(true));
            (
                str_of(&f["path"]).to_string(),
                array(&f["used_by"]).iter().map(u64_of).collect(),
            )
        })
        .collect();
    assert_eq!(listed, users, "{backend} at {location}");
    assert!(
        listed.values().any(|users| !users.is_empty()),
        "{backend}: no shared file listed"
    );
    let copy = truth.registry_copy.as_ref().expect("the registry copy");
    let from_copy: BTreeMap<String, BTreeSet<u64>> = copy
        .files
        .iter()
        .map(|(path, e)| (path.clone(), e.used_by.iter().map(|id| id.get()).collect()))
        .collect();
    assert_eq!(listed, from_copy);
    for f in array(&registry["files"]) {
        let entry = &copy.files[str_of(&f["path"])];
        assert_eq!(u64_of(&f["created_by"]), entry.created_by.get());
        assert_eq!(u64_of(&f["size"]), entry.size);
    }
    assert_eq!(str_of(&registry["stored_copy"]), "present");
    assert!(array(&registry["discrepancies"]).is_empty(), "{registry:#}");

    // The table: one row per retained checkpoint, with its kind.
    let human = ok(&["ls", location, "--subtasks"]);
    let kind = if backend == "rocksdb" {
        "native rocksdb"
    } else {
        "changelog base+"
    };
    for id in &retained {
        let row = human
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for checkpoint {id}:\n{human}"));
        assert!(row.contains("retained") && row.contains(kind), "{row}");
    }
    for path in users.keys() {
        assert!(human.contains(path.as_str()), "{path} missing:\n{human}");
    }
    assert!(
        human.contains("registry copy _shared_registry.json: agrees"),
        "{human}"
    );
}

#[test]
fn ls_lists_retained_checkpoints_kinds_bytes_and_registry_on_local_disk() {
    for backend in backends() {
        let dir = local_demo(backend);
        let before = tree(dir.path());
        check_ls(backend, &path_str(dir.path()));
        // A file:// URL reads the same.
        let url = format!("file://{}", path_str(dir.path()));
        let report = json(&["ls", &url, "--json"]);
        assert_eq!(array(&report["checkpoints"]).len(), 2);
        // Retained ids are exactly the directories holding a manifest.
        let on_disk: Vec<u64> = std::fs::read_dir(dir.path())
            .expect("listing")
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_prefix("chk-")?.parse().ok()?;
                e.path().join("_manifest.json").exists().then_some(id)
            })
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect();
        let listed: Vec<u64> = array(&report["checkpoints"])
            .iter()
            .map(|c| u64_of(&c["id"]))
            .collect();
        assert_eq!(listed, on_disk);
        assert_eq!(tree(dir.path()), before, "ls changed the storage");
    }
}

#[test]
fn ls_shows_incomplete_and_unreadable_checkpoints_and_unreferenced_shared_files() {
    let dir = local_demo("heap");
    let root = dir.path();
    // A checkpoint that never completed, a damaged manifest, a leftover shared file.
    let pending = root.join("chk-00000000000000000099");
    std::fs::create_dir_all(&pending).expect("mkdir");
    std::fs::write(pending.join("keyed-0.fsnap"), vec![7u8; 100]).expect("write");
    let truth = Truth::read(&path_str(root));
    let damaged = truth.manifests[0].checkpoint_id;
    let manifest = root
        .join(CheckpointStorage::checkpoint_dir(damaged))
        .join("_manifest.json");
    let mut bytes = std::fs::read(&manifest).expect("read");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&manifest, bytes).expect("write");
    std::fs::write(root.join("shared").join("left-over.fsnap"), vec![1u8; 33]).expect("write");

    let report = json(&["ls", &path_str(root), "--json"]);
    let by_id: BTreeMap<u64, &Value> = array(&report["checkpoints"])
        .iter()
        .map(|c| (u64_of(&c["id"]), c))
        .collect();
    let incomplete = by_id[&99];
    assert_eq!(str_of(&incomplete["status"]), "incomplete");
    assert_eq!(incomplete["retained"], Value::Bool(false));
    assert_eq!(u64_of(&incomplete["files"]), 1);
    assert_eq!(u64_of(&incomplete["total_bytes"]), 100);
    let unreadable = by_id[&damaged.get()];
    assert_eq!(str_of(&unreadable["status"]), "unreadable");
    assert_eq!(unreadable["retained"], Value::Bool(false));
    assert!(
        str_of(&unreadable["problem"]).contains("manifest"),
        "{unreadable:#}"
    );
    let still = truth.manifests[1].checkpoint_id.get();
    assert_eq!(str_of(&by_id[&still]["status"]), "retained");
    let unreferenced: Vec<&str> = array(&report["unreferenced_shared_files"])
        .iter()
        .map(|f| str_of(&f["path"]))
        .collect();
    assert!(
        unreferenced.contains(&"shared/left-over.fsnap"),
        "{report:#}"
    );
    // The damaged checkpoint's shared files are no longer backed by a readable manifest: the
    // registry copy still names them, which ls reports as a difference.
    assert!(
        !array(&report["registry"]["discrepancies"]).is_empty(),
        "{report:#}"
    );
    let human = ok(&["ls", &path_str(root)]);
    assert!(human.contains("incomplete"), "{human}");
    assert!(human.contains("unreadable"), "{human}");
    assert!(human.contains("shared/left-over.fsnap"), "{human}");
}

#[test]
fn ls_on_s3() {
    for backend in backends() {
        let Some(location) = s3_demo("ls", backend) else {
            return;
        };
        check_ls(backend, &location);
    }
}

#[test]
fn a_missing_storage_is_an_error_and_is_not_created() {
    assert_refuses_missing_storage("ls", &[]);
    assert_refuses_missing_storage("ls", &["--json"]);
}

#[test]
fn help_has_examples() {
    assert_help_has_examples("ls");
}
