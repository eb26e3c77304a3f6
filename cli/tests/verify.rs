//! `flowstate verify` end to end: real checkpoints written by the demo on every backend,
//! verified undamaged, then damaged in one way at a time (a flipped byte, a truncation, a
//! missing file, overlapping key-group ranges, a damaged manifest), locally and on S3.

mod common;

use std::io::{Read, Write};
use std::path::Path;

use common::{backends, fails, local_demo, ok, path_str, run, tree};
use flowstate_api::{CheckpointManifest, KeyGroupRange, KeyedStateHandle};
use serde_json::Value;

/// Runs `flowstate verify` expecting exit code 1; returns (stdout, stderr).
fn verify_fails(args: &[&str]) -> (String, String) {
    let out = run(args);
    let (stdout, stderr) = (common::stdout(&out), common::stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(1),
        "flowstate {args:?} should fail with exit code 1:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// The `--json` report of a failing verify.
fn json_report(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (stdout, _) = verify_fails(&args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// Every problem of a JSON report.
fn problems(report: &Value) -> Vec<Value> {
    report["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .flat_map(|c| c["problems"].as_array().expect("problems").clone())
        .collect()
}

/// Asserts that the report has a problem of `kind` naming `file`, whose message contains
/// `words`.
fn assert_problem(report: &Value, kind: &str, file: &str, words: &str) {
    assert_eq!(report["ok"], false, "{report:#}");
    let found = problems(report).into_iter().any(|p| {
        p["kind"] == kind
            && p["file"] == file
            && p["message"].as_str().is_some_and(|m| m.contains(words))
    });
    assert!(
        found,
        "no {kind} problem on {file} mentioning '{words}' in:\n{report:#}"
    );
}

fn manifest_path(id: u64) -> String {
    format!("chk-{id:020}/_manifest.json")
}

/// Ids of the checkpoints with a manifest in a local directory, ascending.
fn checkpoint_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .expect("read checkpoint dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let id = name.strip_prefix("chk-")?.parse().ok()?;
            dir.join(&name)
                .join("_manifest.json")
                .exists()
                .then_some(id)
        })
        .collect();
    ids.sort();
    ids
}

fn read_manifest(dir: &Path, id: u64) -> CheckpointManifest {
    let bytes = std::fs::read(dir.join(manifest_path(id))).expect("read manifest");
    serde_json::from_slice(&bytes).expect("decode manifest")
}

/// The latest checkpoint (parallelism 1 in the demo) and the one before (parallelism 3).
fn latest_and_parallel(dir: &Path) -> (u64, u64) {
    let ids = checkpoint_ids(dir);
    let latest = *ids.last().expect("a checkpoint");
    let parallel = ids
        .iter()
        .copied()
        .find(|id| read_manifest(dir, *id).parallelism.get() > 1)
        .expect("a checkpoint at parallelism > 1");
    (latest, parallel)
}

/// A file of the keyed state of checkpoint `id` whose contents flowstate checks: a
/// canonical or changelog file, or a RocksDB SST.
fn keyed_data_file(manifest: &CheckpointManifest) -> String {
    let keyed = manifest.subtasks[0].keyed.as_ref().expect("keyed state");
    match keyed {
        KeyedStateHandle::Canonical { file, .. } => file.path.clone(),
        KeyedStateHandle::Changelog { base, .. } => base.path.clone(),
        KeyedStateHandle::Native { files, .. } => files
            .iter()
            .find(|f| f.local_name.ends_with(".sst") && f.file.size > 100)
            .expect("an SST file")
            .file
            .path
            .clone(),
        other => panic!("a handle kind this test does not know: {other:?}"),
    }
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read file");
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).expect("write file");
}

#[test]
fn undamaged_checkpoints_of_every_backend_verify_without_changing_anything() {
    for backend in backends() {
        let dir = local_demo(backend);
        let location = path_str(dir.path());
        let (latest, parallel) = latest_and_parallel(dir.path());
        let before = tree(dir.path());

        let all = ok(&["verify", &location, "--all"]);
        assert!(
            all.contains(&format!("checkpoint {parallel}: OK (")),
            "{backend}: {all}"
        );
        assert!(
            all.contains(&format!("checkpoint {latest}: OK (")),
            "{backend}: {all}"
        );
        assert!(all.contains("3 of 3 subtasks restored"), "{backend}: {all}");

        // Default: the latest checkpoint only.
        let default = ok(&["verify", &location]);
        assert!(
            default.contains(&format!("checkpoint {latest}: OK")),
            "{default}"
        );
        assert!(
            !default.contains(&format!("checkpoint {parallel}:")),
            "{default}"
        );
        let one = ok(&["verify", &location, "--checkpoint", &parallel.to_string()]);
        assert!(one.contains(&format!("checkpoint {parallel}: OK")), "{one}");
        assert!(!one.contains(&format!("checkpoint {latest}:")), "{one}");

        let report: Value =
            serde_json::from_str(&ok(&["verify", &location, "--all", "--json"])).expect("JSON");
        assert_eq!(report["ok"], true, "{report:#}");
        assert_eq!(report["problem_count"], 0);
        assert!(report["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("file://")));
        let checkpoints = report["checkpoints"].as_array().expect("checkpoints");
        assert_eq!(checkpoints.len(), 2);
        let third = &checkpoints[0];
        assert_eq!(third["checkpoint_id"], parallel);
        assert_eq!(third["ok"], true);
        assert_eq!(third["parallelism"], 3);
        assert_eq!(third["max_parallelism"], 128);
        assert_eq!(third["subtasks_restored"], 3);
        assert_eq!(third["subtasks_failed"], 0);
        assert_eq!(third["subtasks_skipped"], 0);
        let manifest = read_manifest(dir.path(), parallel);
        let mut files: Vec<&str> = manifest.files().iter().map(|f| f.path.as_str()).collect();
        files.sort();
        files.dedup();
        assert_eq!(third["files"], files.len());
        let bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).expect("file").len())
            .sum();
        assert_eq!(third["bytes"], bytes);
        assert_eq!(third["problems"], Value::Array(Vec::new()));

        assert_eq!(
            tree(dir.path()),
            before,
            "{backend}: verify changed the storage"
        );
    }
}

#[test]
fn a_flipped_byte_in_a_data_file_is_found() {
    for backend in backends() {
        let dir = local_demo(backend);
        let location = path_str(dir.path());
        let (latest, _) = latest_and_parallel(dir.path());
        let file = keyed_data_file(&read_manifest(dir.path(), latest));
        // Past the 16-byte header of a snapshot file: inside its first block. In an SST,
        // inside its first data block.
        flip_byte(&dir.path().join(&file), 40);

        let (stdout, stderr) = verify_fails(&["verify", &location]);
        assert!(stdout.contains(&file), "{backend}: {stdout}");
        assert!(stdout.contains("checksum mismatch"), "{backend}: {stdout}");
        assert!(
            stderr.contains("verify found 1 problem in 1 checkpoint"),
            "{stderr}"
        );

        let report = json_report(&["verify", &location]);
        let kind = if backend == "rocksdb" {
            // Only RocksDB reads an SST: its dry-run restore checks the file's checksum.
            "restore"
        } else {
            "corrupt_file"
        };
        assert_problem(&report, kind, &file, "checksum mismatch");
        let problem = &problems(&report)[0];
        assert_eq!(problem["checkpoint_id"], latest);
        assert_eq!(problem["subtask"], 0);
        assert_eq!(report["problem_count"], 1);
    }
}

#[test]
fn a_truncated_file_is_found_by_its_size() {
    for backend in backends() {
        let dir = local_demo(backend);
        let location = path_str(dir.path());
        let (latest, _) = latest_and_parallel(dir.path());
        let file = keyed_data_file(&read_manifest(dir.path(), latest));
        let path = dir.path().join(&file);
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("truncate");

        let (stdout, _) = verify_fails(&["verify", &location, "--all"]);
        assert!(
            stdout.contains("size mismatch") && stdout.contains(&file),
            "{stdout}"
        );
        let report = json_report(&["verify", &location, "--all"]);
        assert_problem(
            &report,
            "size_mismatch",
            &file,
            &format!(
                "{} bytes where the manifest records {}",
                bytes.len() - 10,
                bytes.len()
            ),
        );
        // The restore reading it is not tried: its failure would repeat the problem.
        let latest_report = report["checkpoints"]
            .as_array()
            .expect("checkpoints")
            .iter()
            .find(|c| c["checkpoint_id"] == latest)
            .expect("the latest checkpoint")
            .clone();
        assert_eq!(latest_report["subtasks_skipped"], 1, "{latest_report:#}");
    }
}

#[test]
fn missing_files_are_each_named() {
    for backend in backends() {
        let dir = local_demo(backend);
        let location = path_str(dir.path());
        let (_, parallel) = latest_and_parallel(dir.path());
        let manifest = read_manifest(dir.path(), parallel);
        // Two problems in one checkpoint: both are reported, not just the first.
        let operator = manifest.subtasks[2]
            .operator
            .as_ref()
            .expect("operator state")
            .path
            .clone();
        let keyed = keyed_data_file(&manifest);
        for file in [&operator, &keyed] {
            std::fs::remove_file(dir.path().join(file)).expect("remove");
        }

        let (stdout, stderr) =
            verify_fails(&["verify", &location, "--checkpoint", &parallel.to_string()]);
        for file in [&operator, &keyed] {
            assert!(stdout.contains(file), "{backend}: {stdout}");
        }
        assert!(stdout.contains("missing file"), "{stdout}");
        assert!(
            stderr.contains("verify found 2 problems in 1 checkpoint"),
            "{stderr}"
        );

        let report = json_report(&["verify", &location, "--checkpoint", &parallel.to_string()]);
        assert_problem(&report, "missing_file", &operator, "not in the storage");
        assert_problem(&report, "missing_file", &keyed, "not in the storage");
        assert_eq!(report["problem_count"], 2, "{report:#}");
    }
}

/// Rewrites checkpoint `id`'s manifest with `change` applied and a correct checksum (as the
/// API writes it): only the structure is wrong.
fn rewrite_manifest(dir: &Path, id: u64, change: impl FnOnce(&mut CheckpointManifest)) {
    let mut manifest = read_manifest(dir, id);
    change(&mut manifest);
    let json = manifest.to_json().expect("encode manifest");
    std::fs::write(dir.join(manifest_path(id)), json).expect("write manifest");
}

#[test]
fn overlapping_key_group_ranges_are_found() {
    for backend in backends() {
        let dir = local_demo(backend);
        let location = path_str(dir.path());
        let (_, parallel) = latest_and_parallel(dir.path());
        // Subtask 1 (key groups [43, 85] of 128 at parallelism 3) claims [0, 85] too.
        let wide = KeyGroupRange::new(0, 85).expect("range");
        rewrite_manifest(dir.path(), parallel, |m| {
            m.subtasks[1].key_group_range = wide;
            match m.subtasks[1].keyed.as_mut().expect("keyed state") {
                KeyedStateHandle::Canonical {
                    key_group_range, ..
                }
                | KeyedStateHandle::Changelog {
                    key_group_range, ..
                }
                | KeyedStateHandle::Native {
                    key_group_range, ..
                } => *key_group_range = wide,
                other => panic!("a handle kind this test does not know: {other:?}"),
            }
        });

        let (stdout, _) = verify_fails(&["verify", &location, "--all"]);
        assert!(
            stdout.contains("subtasks 0 and 1 both claim key groups [0, 42]"),
            "{backend}: {stdout}"
        );
        let manifest = manifest_path(parallel);
        assert!(stdout.contains(&manifest), "{stdout}");
        let report = json_report(&["verify", &location, "--all"]);
        assert_problem(
            &report,
            "structure",
            &manifest,
            "both claim key groups [0, 42]",
        );
        assert_problem(
            &report,
            "structure",
            &manifest,
            "subtask 1 claims key groups [0, 85] but owns [43, 85]",
        );
        // The checksum was recomputed: only the structure is blamed.
        assert!(
            !problems(&report)
                .iter()
                .any(|p| p["kind"] == "manifest_checksum"),
            "{report:#}"
        );
        let checkpoints = report["checkpoints"].as_array().expect("checkpoints");
        let damaged = checkpoints
            .iter()
            .find(|c| c["checkpoint_id"] == parallel)
            .expect("the damaged checkpoint");
        assert_eq!(
            damaged["subtasks_skipped"], 3,
            "a refused manifest is not restored"
        );
        // The other checkpoint is still fine.
        assert!(
            checkpoints
                .iter()
                .any(|c| c["checkpoint_id"] != parallel && c["ok"] == true),
            "{report:#}"
        );
    }
}

#[test]
fn a_damaged_manifest_is_found_by_its_checksum_and_read_as_far_as_it_goes() {
    for backend in backends() {
        let dir = local_demo(backend);
        let location = path_str(dir.path());
        let (latest, _) = latest_and_parallel(dir.path());
        let manifest = manifest_path(latest);
        let operator = read_manifest(dir.path(), latest).subtasks[0]
            .operator
            .clone()
            .expect("operator state");
        // Flip the low bit of the last digit of the operator file's size: still JSON, still
        // a manifest, but not the one written.
        let text = std::fs::read_to_string(dir.path().join(&manifest)).expect("read");
        let path_at = text
            .find(&format!("\"path\": \"{}\"", operator.path))
            .unwrap_or_else(|| panic!("{} in {text}", operator.path));
        // The file reference's `size` field (keys are written sorted: path, shared, size).
        let size_field = format!("\"size\": {}", operator.size);
        let at = path_at
            + text[path_at..]
                .find(&size_field)
                .unwrap_or_else(|| panic!("{size_field} after the path in {text}"))
            + size_field.len()
            - 1;
        flip_byte(&dir.path().join(&manifest), at);
        let damaged_size = operator.size ^ 1;

        let (stdout, _) = verify_fails(&["verify", &location]);
        assert!(
            stdout.contains("manifest checksum") && stdout.contains(&manifest),
            "{stdout}"
        );
        let report = json_report(&["verify", &location]);
        assert_problem(&report, "manifest_checksum", &manifest, "checksum mismatch");
        // Read as far as it goes: the size it now records does not match the file.
        assert_problem(
            &report,
            "size_mismatch",
            &operator.path,
            &format!("where the manifest records {damaged_size}"),
        );

        // A torn manifest (its first half): not JSON, reported as such.
        std::fs::write(
            dir.path().join(&manifest),
            &text.as_bytes()[..text.len() / 2],
        )
        .expect("write");
        let report = json_report(&["verify", &location]);
        assert_problem(&report, "manifest", &manifest, "not JSON");
    }
}

#[test]
fn a_missing_location_is_an_error_and_is_not_created() {
    let parent = tempfile::tempdir().expect("temp dir");
    let missing = parent.path().join("no-such-ckpts");
    let location = path_str(&missing);
    let stderr = fails(&["verify", &location, "--all"]);
    assert!(stderr.contains(&location), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!missing.exists(), "verify created {location}");
    let url = format!("file://{location}");
    let stderr = fails(&["verify", &url]);
    assert!(stderr.contains(&url), "{stderr}");
    assert!(!missing.exists(), "verify created {location}");
}

#[test]
fn no_checkpoints_and_unknown_ids_are_errors() {
    let empty = tempfile::tempdir().expect("temp dir");
    let stderr = fails(&["verify", &path_str(empty.path())]);
    assert!(stderr.contains("no completed checkpoints in"), "{stderr}");
    let stderr = fails(&["verify", "memory://"]);
    assert!(
        stderr.contains("no completed checkpoints in memory://"),
        "{stderr}"
    );

    let dir = local_demo("heap");
    let (latest, parallel) = latest_and_parallel(dir.path());
    let stderr = fails(&["verify", &path_str(dir.path()), "--checkpoint", "999"]);
    assert!(
        stderr.contains("checkpoint 999 has no manifest"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{parallel}, {latest}")),
        "{stderr}"
    );

    // --checkpoint and --all together are a usage error (exit code 2), not a crash.
    let out = run(&[
        "verify",
        &path_str(dir.path()),
        "--all",
        "--checkpoint",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
}

#[test]
fn help_has_examples() {
    let help = ok(&["verify", "--help"]);
    assert!(
        help.contains("Examples:") && help.contains("flowstate verify ./ckpts --all"),
        "{help}"
    );
}

/// Headers moto wants on object requests: an `Authorization` naming a key, whose signature it
/// does not check (a real S3 would refuse these requests).
const AUTHORIZATION: &str = "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\nx-amz-date: 20260101T000000Z\r\n";

/// A plain HTTP request to the local S3 server (moto), to damage what the demo wrote there:
/// `(status, body)`.
fn s3_raw(method: &str, key: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let endpoint = std::env::var("FLOWSTATE_S3_ENDPOINT").expect("S3 endpoint");
    let host = endpoint
        .strip_prefix("http://")
        .expect("an http:// endpoint")
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the S3 server");
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} /{key} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n{AUTHORIZATION}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body).expect("send body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked responses are not supported here: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, response[split + 4..].to_vec())
}

#[test]
fn checkpoints_on_s3_verify_and_damage_there_is_found() {
    for backend in backends() {
        let Some(location) = common::s3_demo("verify", backend) else {
            return;
        };
        let all = ok(&["verify", &location, "--all"]);
        assert_eq!(all.matches(": OK (").count(), 2, "{backend}: {all}");

        let root = location.strip_prefix("s3://").expect("an s3 URL");
        let report: Value =
            serde_json::from_str(&ok(&["verify", &location, "--json"])).expect("JSON");
        assert_eq!(report["location"], location.as_str());
        let latest = report["checkpoints"][0]["checkpoint_id"]
            .as_u64()
            .expect("id");
        let (status, bytes) = s3_raw("GET", &format!("{root}/{}", manifest_path(latest)), None);
        assert_eq!(status, 200);
        let manifest: CheckpointManifest = serde_json::from_slice(&bytes).expect("manifest");

        // A flipped byte in a data file.
        let data = keyed_data_file(&manifest);
        let key = format!("{root}/{data}");
        let (status, mut bytes) = s3_raw("GET", &key, None);
        assert_eq!(status, 200);
        bytes[40] ^= 0x01;
        assert_eq!(s3_raw("PUT", &key, Some(&bytes)).0, 200);
        // A missing operator-state file.
        let operator = manifest.subtasks[0]
            .operator
            .clone()
            .expect("operator state");
        assert_eq!(
            s3_raw("DELETE", &format!("{root}/{}", operator.path), None).0,
            204
        );

        let report = json_report(&["verify", &location]);
        assert_problem(
            &report,
            "missing_file",
            &operator.path,
            "not in the storage",
        );
        // Only RocksDB reads an SST: its keyed state is restored alone (the full restore
        // would fail on the missing operator state), which checks the file's checksum.
        let kind = if backend == "rocksdb" {
            "restore"
        } else {
            "corrupt_file"
        };
        assert_problem(&report, kind, &data, "checksum mismatch");
        assert_eq!(report["problem_count"], 2, "{report:#}");
    }
}
