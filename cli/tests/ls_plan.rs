//! End-to-end tests of `flowstate ls`, `flowstate plan` and `flowstate key-group`: the binary
//! run as a process against checkpoints the demo wrote with every backend, on local disk and on
//! the local S3 server. What the commands print is checked against what the storage holds,
//! read here through `flowstate_api` (and, on local disk, the file system itself).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{backends, demo_checkpoints, fails, local_demo, ok, path_str, run, s3_location};
use flowstate_api::key_groups::{key_group_range_for_operator, operator_index_for_key_group};
use flowstate_api::lifecycle::SharedStateRegistry;
use flowstate_api::snapshot::{read_info_from_bytes, SnapshotFileInfo, HEADER_LEN, TRAILER_LEN};
use flowstate_api::{
    CheckpointManifest, CheckpointStorage, Codec, FileRef, KeyContext, KeyGroupRange,
    KeyedStateHandle, MaxParallelism, Parallelism, SerdeCodec,
};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// What the storage holds, read without the CLI.

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// The storage at `location` opened in this process (the S3 settings the child processes get
/// from the environment passed as options).
fn open(location: &str) -> CheckpointStorage {
    if location.starts_with("s3://") {
        let endpoint = std::env::var("FLOWSTATE_S3_ENDPOINT").expect("the S3 endpoint");
        CheckpointStorage::from_url(
            location,
            [
                ("aws_endpoint", endpoint),
                ("aws_allow_http", "true".into()),
                ("aws_access_key_id", "test".into()),
                ("aws_secret_access_key", "test".into()),
                ("aws_region", "us-east-1".into()),
            ],
        )
        .expect("the S3 storage")
    } else {
        CheckpointStorage::open_existing(location).expect("the local storage")
    }
}

struct Truth {
    storage: CheckpointStorage,
    manifests: Vec<CheckpointManifest>,
    registry_copy: Option<SharedStateRegistry>,
    /// Every file of the storage with its size.
    files: BTreeMap<String, u64>,
}

impl Truth {
    fn read(location: &str) -> Self {
        let storage = open(location);
        block_on(async {
            let mut manifests = Vec::new();
            for id in storage.list_checkpoints().await.expect("listing") {
                manifests.push(storage.read_manifest(id).await.expect("a manifest"));
            }
            let registry_copy = storage
                .get_if_exists("_shared_registry.json")
                .await
                .expect("reading the registry")
                .map(|bytes| serde_json::from_slice(&bytes).expect("a registry"));
            let files = storage
                .list("")
                .await
                .expect("listing")
                .into_iter()
                .collect();
            Truth {
                storage: storage.clone(),
                manifests,
                registry_copy,
                files,
            }
        })
    }

    fn manifest(&self, id: u64) -> &CheckpointManifest {
        self.manifests
            .iter()
            .find(|m| m.checkpoint_id.get() == id)
            .expect("a retained checkpoint")
    }

    fn snapshot_info(&self, file: &FileRef) -> SnapshotFileInfo {
        let bytes = block_on(self.storage.get(&file.path)).expect("a snapshot file");
        assert_eq!(bytes.len() as u64, file.size, "{}", file.path);
        read_info_from_bytes(&bytes).expect("a snapshot file")
    }
}

fn distinct_files(manifest: &CheckpointManifest) -> BTreeMap<String, &FileRef> {
    manifest
        .files()
        .into_iter()
        .map(|f| (f.path.clone(), f))
        .collect()
}

fn json(args: &[&str]) -> Value {
    let stdout = ok(args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{stdout}"))
}

fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

fn s(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

fn arr(value: &Value) -> &Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
}

/// Every file under a local directory with its size and modification time.
fn tree(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("listing") {
            let entry = entry.expect("an entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.insert(
                    path_str(&entry.path()),
                    (meta.len(), meta.modified().expect("mtime")),
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// ls

/// Checks `flowstate ls --json` of demo checkpoints written by `backend` at `location`.
fn check_ls(backend: &str, location: &str) {
    let truth = Truth::read(location);
    let report = json(&["ls", location, "--json"]);
    let checkpoints = arr(&report["checkpoints"]);

    // Exactly the retained checkpoints: the demo keeps its last two.
    let retained: Vec<u64> = checkpoints
        .iter()
        .filter(|c| c["retained"] == Value::Bool(true))
        .map(|c| u(&c["id"]))
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
        let manifest = truth.manifest(u(&c["id"]));
        assert_eq!(s(&c["status"]), "retained");
        assert_eq!(u(&c["parallelism"]), u64::from(manifest.parallelism.get()));
        assert_eq!(
            u(&c["max_parallelism"]),
            u64::from(manifest.max_parallelism.get())
        );
        let time = s(&c["time"]);
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
        assert_eq!(u(&c["files"]), files.len() as u64);
        assert_eq!(u(&c["total_bytes"]), total);
        assert_eq!(u(&c["shared_bytes"]), shared);
        assert_eq!(u(&c["exclusive_bytes"]), total - shared);
        if files.values().any(|f| f.shared) {
            any_shared = true;
            assert!(u(&c["shared_bytes"]) > 0);
        }

        // Kinds per subtask, as the backend writes incremental checkpoints.
        let subtasks = arr(&c["subtasks"]);
        assert_eq!(subtasks.len(), manifest.subtasks.len());
        for (report, handle) in subtasks.iter().zip(&manifest.subtasks) {
            assert_eq!(u(&report["subtask_index"]), u64::from(handle.subtask_index));
            assert_eq!(
                u(&report["key_groups"]["start"]),
                u64::from(handle.key_group_range.start().get())
            );
            assert_eq!(
                u(&report["key_groups"]["end"]),
                u64::from(handle.key_group_range.end().get())
            );
            let keyed = handle.keyed.as_ref().expect("the demo has keyed state");
            match (backend, keyed) {
                ("heap" | "lmdb", KeyedStateHandle::Changelog { deltas, .. }) => {
                    assert_eq!(s(&report["kind"]), "changelog");
                    assert_eq!(u(&report["deltas"]), deltas.len() as u64);
                    assert!(report["native_backend"].is_null());
                }
                ("rocksdb", KeyedStateHandle::Native { files, .. }) => {
                    assert_eq!(s(&report["kind"]), "native");
                    assert_eq!(s(&report["native_backend"]), "rocksdb");
                    assert_eq!(u(&report["keyed_files"]), files.len() as u64);
                }
                (backend, other) => panic!("{backend} wrote {}", other.describe()),
            }
            assert_eq!(u(&report["keyed_bytes"]), keyed.total_size());
            let shared: u64 = keyed
                .files()
                .into_iter()
                .chain(handle.operator.iter())
                .filter(|f| f.shared)
                .map(|f| f.size)
                .sum();
            assert_eq!(u(&report["shared_bytes"]), shared);
            if backend != "rocksdb" {
                // A changelog's base and deltas are all shared.
                assert_eq!(shared, keyed.total_size());
            }
            assert_eq!(
                u(&report["operator_bytes"]),
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
    let listed: BTreeMap<String, BTreeSet<u64>> = arr(&registry["files"])
        .iter()
        .map(|f| {
            assert_eq!(f["present"], Value::Bool(true));
            (
                s(&f["path"]).to_string(),
                arr(&f["used_by"]).iter().map(u).collect(),
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
    for f in arr(&registry["files"]) {
        let entry = &copy.files[s(&f["path"])];
        assert_eq!(u(&f["created_by"]), entry.created_by.get());
        assert_eq!(u(&f["size"]), entry.size);
    }
    assert_eq!(s(&registry["stored_copy"]), "present");
    assert!(arr(&registry["discrepancies"]).is_empty(), "{registry:#}");

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
        assert_eq!(arr(&report["checkpoints"]).len(), 2);
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
        let listed: Vec<u64> = arr(&report["checkpoints"])
            .iter()
            .map(|c| u(&c["id"]))
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
    let by_id: BTreeMap<u64, &Value> = arr(&report["checkpoints"])
        .iter()
        .map(|c| (u(&c["id"]), c))
        .collect();
    let incomplete = by_id[&99];
    assert_eq!(s(&incomplete["status"]), "incomplete");
    assert_eq!(incomplete["retained"], Value::Bool(false));
    assert_eq!(u(&incomplete["files"]), 1);
    assert_eq!(u(&incomplete["total_bytes"]), 100);
    let unreadable = by_id[&damaged.get()];
    assert_eq!(s(&unreadable["status"]), "unreadable");
    assert_eq!(unreadable["retained"], Value::Bool(false));
    assert!(
        s(&unreadable["problem"]).contains("manifest"),
        "{unreadable:#}"
    );
    let still = truth.manifests[1].checkpoint_id.get();
    assert_eq!(s(&by_id[&still]["status"]), "retained");
    let unreferenced: Vec<&str> = arr(&report["unreferenced_shared_files"])
        .iter()
        .map(|f| s(&f["path"]))
        .collect();
    assert!(
        unreferenced.contains(&"shared/left-over.fsnap"),
        "{report:#}"
    );
    // The damaged checkpoint's shared files are no longer backed by a readable manifest: the
    // registry copy still names them, which ls reports as a difference.
    assert!(
        !arr(&report["registry"]["discrepancies"]).is_empty(),
        "{report:#}"
    );
    let human = ok(&["ls", &path_str(root)]);
    assert!(human.contains("incomplete"), "{human}");
    assert!(human.contains("unreadable"), "{human}");
    assert!(human.contains("shared/left-over.fsnap"), "{human}");
}

// ---------------------------------------------------------------------------------------------
// plan

/// One read of a plan: path, part, purpose, ranges.
type Read = (String, String, String, Vec<(u64, u64)>);

/// The reads of one subtask in a plan.
fn reads_of(subtask: &Value) -> Vec<Read> {
    arr(&subtask["reads"])
        .iter()
        .map(|r| {
            (
                s(&r["path"]).to_string(),
                s(&r["part"]).to_string(),
                s(&r["purpose"]).to_string(),
                arr(&r["ranges"])
                    .iter()
                    .map(|b| (u(&b["start"]), u(&b["end"])))
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

/// The two reads `read_info` issues for `file`.
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
    assert_eq!(u(&plan["checkpoint_id"]), id);
    assert_eq!(u(&plan["parallelism"]), u64::from(parallelism));
    assert_eq!(u(&plan["max_parallelism"]), u64::from(max.get()));
    let files = distinct_files(manifest);
    let checkpoint_bytes: u64 = files.values().map(|f| f.size).sum();
    assert_eq!(u(&plan["checkpoint_bytes"]), checkpoint_bytes);
    let local = !location.starts_with("s3://");
    if local {
        assert!(plan["coalesce_gap"].is_null());
    } else {
        assert_eq!(u(&plan["coalesce_gap"]), 1024 * 1024);
    }

    let handles = manifest.keyed_handles();
    let infos: BTreeMap<String, SnapshotFileInfo> = handles
        .iter()
        .filter(|h| !matches!(h, KeyedStateHandle::Native { .. }))
        .flat_map(|h| h.files())
        .map(|f| (f.path.clone(), truth.snapshot_info(f)))
        .collect();

    let subtasks = arr(&plan["subtasks"]);
    assert_eq!(subtasks.len(), parallelism as usize);
    let mut covered: Vec<u32> = Vec::new();
    let mut total = 0;
    // Per file, the byte ranges of blocks read by all subtasks together.
    let mut blocks_read: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for (index, subtask) in subtasks.iter().enumerate() {
        let target = key_group_range_for_operator(max, p, index as u32).expect("a range");
        assert_eq!(u(&subtask["subtask_index"]), index as u64);
        let (start, end) = (
            u(&subtask["key_groups"]["start"]) as u32,
            u(&subtask["key_groups"]["end"]) as u32,
        );
        assert_eq!((start, end), (target.start().get(), target.end().get()));
        covered.extend(start..=end);

        // Every range inside its file, sizes as the manifest (and the store) record them,
        // byte counts adding up.
        let mut bytes = 0;
        for r in arr(&subtask["reads"]) {
            let file = files
                .get(s(&r["path"]))
                .unwrap_or_else(|| panic!("{} is not a file of checkpoint {id}", r["path"]));
            assert_eq!(u(&r["file_size"]), file.size);
            assert_eq!(truth.files.get(&file.path), Some(&file.size));
            let mut read = 0;
            for b in arr(&r["ranges"]) {
                let (start, end) = (u(&b["start"]), u(&b["end"]));
                assert!(
                    start <= end && end <= file.size,
                    "{r:#} outside {}",
                    file.size
                );
                read += end - start;
            }
            assert_eq!(u(&r["bytes"]), read);
            if local {
                assert_eq!(u(&r["transferred_bytes"]), read);
            } else if s(&r["part"]) == "header+trailer" {
                // The store fetches header and trailer of a small file in one request: all of it.
                assert_eq!(u(&r["transferred_bytes"]), file.size, "{r:#}");
            }
            bytes += read;
        }
        assert_eq!(u(&subtask["bytes_read"]), bytes);
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
        // check on the first handle's first file, then header+trailer and metadata+index of
        // every file of each overlapping handle and the one span of blocks of the subtask's
        // key groups per file, computed here from the files' own indexes.
        let first = match &handles[0] {
            KeyedStateHandle::Canonical { file, .. }
            | KeyedStateHandle::Changelog { base: file, .. } => file,
            other => panic!("{}", other.describe()),
        };
        let mut expected: Vec<Read> = Vec::new();
        let push_info = |expected: &mut Vec<_>, file: &FileRef, purpose: &str| {
            let [h, t, m] = info_reads(file, &infos[&file.path]);
            expected.push((
                file.path.clone(),
                "header+trailer".to_string(),
                purpose.to_string(),
                vec![h, t],
            ));
            expected.push((
                file.path.clone(),
                "metadata+index".to_string(),
                purpose.to_string(),
                vec![m],
            ));
        };
        push_info(&mut expected, first, "max-parallelism check");
        for handle in &overlapping {
            let files = handle.files();
            for file in &files {
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
        for r in arr(&subtask["reads"])
            .iter()
            .filter(|r| r["part"] == "blocks")
        {
            let (a, b) = (
                u(&r["key_groups"]["start"]) as u32,
                u(&r["key_groups"]["end"]) as u32,
            );
            assert!(start <= a && a <= b && b <= end, "{r:#}");
            blocks_read
                .entry(s(&r["path"]).to_string())
                .or_default()
                .push((u(&r["ranges"][0]["start"]), u(&r["ranges"][0]["end"])));
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
    assert_eq!(u(&plan["bytes_read"]), total);

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
            .flat_map(|st| arr(&st["reads"]).iter())
            .filter(|r| r["part"] != "blocks")
            .map(|r| u(&r["bytes"]))
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
            for st in arr(&plan["subtasks"]) {
                assert!(u(&st["bytes_read"]) >= keyed);
            }
        }
        // The latest checkpoint is the default.
        let default = json(&["plan", &location, "--parallelism", "2", "--json"]);
        assert_eq!(u(&default["checkpoint_id"]), id);
        let expected_backend = if backend == "rocksdb" {
            "rocksdb"
        } else {
            "heap"
        };
        assert_eq!(s(&default["backend"]), expected_backend);
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
        let checkpoint = u(&plan["checkpoint_bytes"]);
        for st in arr(&plan["subtasks"]) {
            let read = u(&st["bytes_read"]);
            assert!(
                read * 10 < checkpoint * 7,
                "{backend}: {read} of {checkpoint}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S3

#[test]
fn ls_and_plan_on_s3() {
    for backend in backends() {
        let Some(location) = s3_location(&format!("ls-plan-{backend}")) else {
            return;
        };
        demo_checkpoints(backend, &location);
        check_ls(backend, &location);
        let truth = Truth::read(&location);
        let latest = truth
            .manifests
            .last()
            .expect("a checkpoint")
            .checkpoint_id
            .get();
        check_plan(backend, &location, latest, 2);
        let older = truth.manifests[0].checkpoint_id.get();
        check_plan(backend, &location, older, 2);
    }
}

// ---------------------------------------------------------------------------------------------
// key-group

#[test]
fn key_group_matches_the_engine_routing() {
    let strings = ["user-42", "", "ünïcödé", "-starts-with-a-dash", "x"];
    let numbers = [0u64, 1, 1234, u64::MAX];
    let hexes = ["", "00", "0x07757365722d3432", "DEADbeef"];
    let mut seen_groups = BTreeSet::new();
    for max in [1u32, 7, 128, 32768] {
        let max_p = MaxParallelism::new(max).expect("max");
        for parallelism in [None, Some(1), Some(3.min(max)), Some(max)] {
            let mut cases: Vec<(String, &str, Vec<u8>)> = Vec::new();
            for key in strings {
                let bytes = SerdeCodec::<String>::new()
                    .to_bytes(&key.to_string())
                    .expect("encodes");
                cases.push((key.to_string(), "string", bytes));
            }
            for n in numbers {
                let bytes = SerdeCodec::<u64>::new().to_bytes(&n).expect("encodes");
                cases.push((n.to_string(), "u64", bytes));
            }
            for h in hexes {
                let digits = h.trim_start_matches("0x");
                let bytes = (0..digits.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
                    .collect();
                cases.push((h.to_string(), "hex", bytes));
            }
            for (key, codec, bytes) in cases {
                let context = match codec {
                    "string" => {
                        KeyContext::for_key(&SerdeCodec::<String>::new(), &key, max_p).expect("ok")
                    }
                    "u64" => KeyContext::for_key(
                        &SerdeCodec::<u64>::new(),
                        &key.parse::<u64>().expect("a number"),
                        max_p,
                    )
                    .expect("ok"),
                    _ => KeyContext::new(bytes.clone(), max_p),
                };
                assert_eq!(context.key(), bytes.as_slice());
                let max_arg = max.to_string();
                let mut args = vec![
                    "key-group",
                    key.as_str(),
                    "--codec",
                    codec,
                    "--max-parallelism",
                    &max_arg,
                    "--json",
                ];
                let p_arg = parallelism.map(|p| p.to_string());
                if let Some(p) = &p_arg {
                    args.extend(["--parallelism", p]);
                }
                let report = json(&args);
                let kg = context.key_group();
                assert_eq!(u(&report["key_group"]), u64::from(kg.get()), "{args:?}");
                seen_groups.insert((max, kg.get()));
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(s(&report["key_bytes"]), hex);
                assert_eq!(s(&report["codec"]), codec);
                assert_eq!(u(&report["max_parallelism"]), u64::from(max));
                match parallelism {
                    None => {
                        assert!(report["subtask"].is_null());
                        assert!(report["subtask_key_groups"].is_null());
                    }
                    Some(p) => {
                        let p = Parallelism::new(p).expect("p");
                        let owner = operator_index_for_key_group(max_p, p, kg);
                        assert_eq!(u(&report["subtask"]), u64::from(owner), "{args:?}");
                        let range: KeyGroupRange =
                            key_group_range_for_operator(max_p, p, owner).expect("range");
                        assert!(range.contains(kg));
                        assert_eq!(
                            u(&report["subtask_key_groups"]["start"]),
                            u64::from(range.start().get())
                        );
                        assert_eq!(
                            u(&report["subtask_key_groups"]["end"]),
                            u64::from(range.end().get())
                        );
                    }
                }
            }
        }
    }
    // The keys spread over several key groups (a constant answer would not pass).
    assert!(seen_groups.iter().filter(|(m, _)| *m == 128).count() >= 5);
    // A string key and its bytes in hex land in the same place; the table says so.
    let human = ok(&[
        "key-group",
        "user-42",
        "--max-parallelism",
        "128",
        "--parallelism",
        "3",
    ]);
    let context = KeyContext::for_key(
        &SerdeCodec::<String>::new(),
        &"user-42".to_string(),
        MaxParallelism::new(128).expect("max"),
    )
    .expect("ok");
    let hex: String = context.key().iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        human.contains(&format!("key group  {} ", context.key_group())),
        "{human}"
    );
    assert!(human.contains(&hex), "{human}");
    let via_hex = json(&[
        "key-group",
        &hex,
        "--codec",
        "hex",
        "--max-parallelism",
        "128",
        "--json",
    ]);
    assert_eq!(
        u(&via_hex["key_group"]),
        u64::from(context.key_group().get())
    );
}

// ---------------------------------------------------------------------------------------------
// Errors, help

#[test]
fn errors_are_clear_exit_1_and_change_nothing() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let missing = scratch.path().join("no").join("such-dir");
    let missing_str = path_str(&missing);
    let url = format!("file://{missing_str}");
    for args in [
        vec!["ls", missing_str.as_str()],
        vec!["ls", url.as_str(), "--json"],
        vec!["plan", missing_str.as_str(), "--parallelism", "2"],
        vec!["plan", url.as_str(), "--parallelism", "2", "--json"],
    ] {
        let err = fails(&args);
        assert!(err.contains(&missing_str), "{args:?}: {err}");
        assert!(err.contains("does not exist"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !scratch.path().join("no").exists(),
            "{args:?} created the directory"
        );
    }

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
    assert!(err.contains("checkpoint 77 not found"), "{err}");
    for id in &ids {
        assert!(err.contains(id.as_str()), "{err}");
    }
    // Changelog state plans for any backend (RocksDB's restore reads it through the driver).
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
        assert_eq!(s(&plan["backend"]), backend);
        for (a, b) in arr(&heap["subtasks"]).iter().zip(arr(&plan["subtasks"])) {
            let (a, b) = (reads_of(a), reads_of(b));
            if backend == "lmdb" {
                assert_eq!(a, b, "LMDB restores through the same driver as the heap");
            } else {
                // RocksDB checks the max parallelism itself, then runs the driver (which
                // checks it again) for the canonical and changelog handles.
                assert_eq!(b.len(), a.len() + 2);
                assert_eq!(b[..2], a[..2]);
                assert_eq!(b[2..], a[..]);
            }
        }
    }
    // An empty storage has nothing to plan.
    let err = fails(&["plan", "memory://", "--parallelism", "1"]);
    assert!(err.contains("no checkpoint"), "{err}");
    assert_eq!(
        tree(dir.path()),
        before,
        "a failed command changed the storage"
    );

    // key-group: bad hex, a non-number for u64, parallelism above max.
    let err = fails(&[
        "key-group",
        "0x12zz",
        "--codec",
        "hex",
        "--max-parallelism",
        "128",
    ]);
    assert!(
        err.contains("'0x12zz' is not hex") && err.contains("position 4"),
        "{err}"
    );
    let err = fails(&[
        "key-group",
        "abc",
        "--codec",
        "hex",
        "--max-parallelism",
        "128",
    ]);
    assert!(err.contains("odd number of digits"), "{err}");
    let err = fails(&[
        "key-group",
        "-5",
        "--codec",
        "u64",
        "--max-parallelism",
        "128",
    ]);
    assert!(err.contains("'-5' is not a u64 key"), "{err}");
    let err = fails(&[
        "key-group",
        "a",
        "--max-parallelism",
        "4",
        "--parallelism",
        "5",
    ]);
    assert!(
        err.contains("--parallelism 5 is above --max-parallelism 4"),
        "{err}"
    );
    let out = run(&["key-group", "a", "--max-parallelism", "0"]);
    assert_eq!(out.status.code(), Some(2));
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
    for command in ["ls", "plan", "key-group"] {
        let help = ok(&[command, "--help"]);
        assert!(help.contains("Examples:"), "{command}: {help}");
        assert!(
            help.contains(&format!("flowstate {command} ")),
            "{command}: {help}"
        );
        assert!(help.contains("--json"), "{command}: {help}");
    }
}
