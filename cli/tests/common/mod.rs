//! What the CLI's end-to-end tests share: the binary, checkpoints written by the demo on each
//! backend, the local S3 server's settings, reading JSON reports, and (in the submodules) the
//! storage read without the CLI and what the demo's checkpoints must hold.
#![allow(dead_code)] // each test binary uses its own part

pub mod demo;
pub mod truth;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// The `flowstate` binary under test.
pub fn flowstate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
}

/// Runs `flowstate` with `args` (and the S3 environment when set up) and returns its output.
pub fn run(args: &[&str]) -> Output {
    let mut command = flowstate();
    command.args(args);
    with_s3_env(&mut command);
    command.output().expect("the flowstate binary runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "flowstate {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts failure with exit code 1 (not a panic's 101, not a usage error's 2) and returns
/// stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "flowstate {args:?} should fail with exit code 1:\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// The backends this build of the CLI can run the demo on.
pub fn backends() -> Vec<&'static str> {
    let mut backends = vec!["heap", "lmdb"];
    if cfg!(feature = "rocksdb") {
        backends.push("rocksdb");
    }
    backends
}

/// The backend whose checkpoints are the hardest to read back: RocksDB (native handles) in a
/// build with it, LMDB (changelog handles) otherwise.
pub fn rocksdb_or_lmdb() -> &'static str {
    if cfg!(feature = "rocksdb") {
        "rocksdb"
    } else {
        "lmdb"
    }
}

/// Runs the demo on `backend` with checkpoints at `location` (a directory or URL), with
/// [`demo::KEYS`] keys and batches of [`demo::BATCH`]: it leaves the last two checkpoints of
/// its parallelism-1 run, incremental ones (changelog for heap and LMDB, native for RocksDB).
pub fn demo_checkpoints(backend: &str, location: &str) {
    let (keys, batch) = (demo::KEYS.to_string(), demo::BATCH.to_string());
    let stdout = ok(&[
        "demo",
        "--backend",
        backend,
        "--keys",
        &keys,
        "--batch",
        &batch,
        "--storage",
        location,
    ]);
    assert!(stdout.contains("OK: every count equals"), "{stdout}");
}

/// A local directory of demo checkpoints written by `backend`.
pub fn local_demo(backend: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    demo_checkpoints(backend, &path_str(dir.path()));
    dir
}

pub fn path_str(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_string()
}

/// Every file under a local directory with its size and modification time: equal before and
/// after a command that must not change anything.
pub fn tree(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
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

/// The `--json` report of a successful `flowstate` run.
pub fn json(args: &[&str]) -> Value {
    let stdout = ok(args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{stdout}"))
}

pub fn u64_of(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a u64: {value}"))
}

pub fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

pub fn array(value: &Value) -> &Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
}

/// Bytes as lowercase hex, as the reports show them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `command` (with `extra` arguments) on a storage that does not exist, as a path and as a
/// `file://` URL: exit code 1, an error naming it, and nothing created.
pub fn assert_refuses_missing_storage(command: &str, extra: &[&str]) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let missing = scratch.path().join("no").join("such-dir");
    let missing_str = path_str(&missing);
    for location in [missing_str.clone(), format!("file://{missing_str}")] {
        let mut args = vec![command, location.as_str()];
        args.extend_from_slice(extra);
        let err = fails(&args);
        assert!(
            err.contains(&missing_str) && err.contains("does not exist"),
            "{args:?}: {err}"
        );
        assert!(
            !scratch.path().join("no").exists(),
            "{args:?} created the directory"
        );
    }
}

/// `flowstate <command> --help` shows examples of the command, and `--json`.
pub fn assert_help_has_examples(command: &str) {
    let help = ok(&[command, "--help"]);
    assert!(help.contains("Examples:"), "{command}: {help}");
    assert!(
        help.contains(&format!("flowstate {command} ")),
        "{command}: {help}"
    );
    assert!(help.contains("--json"), "{command}: {help}");
}

/// The local S3 server scripts/test.sh starts; `None` outside it. Under CI (`CI` set) a
/// missing server is a failure, not a skip.
pub fn s3_endpoint() -> Option<String> {
    match std::env::var("FLOWSTATE_S3_ENDPOINT") {
        Ok(endpoint) => Some(endpoint),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must run the S3 tests: use scripts/test.sh, which starts the local S3 server"
            );
            eprintln!("FLOWSTATE_S3_ENDPOINT is not set: skipping the S3 part");
            None
        }
    }
}

/// Demo checkpoints written by `backend` under a fresh prefix of the test bucket; `None`
/// without the local S3 server.
pub fn s3_demo(name: &str, backend: &str) -> Option<String> {
    let location = s3_location(&format!("{name}-{backend}"))?;
    demo_checkpoints(backend, &location);
    Some(location)
}

/// A fresh prefix in the test bucket.
pub fn s3_location(name: &str) -> Option<String> {
    s3_endpoint()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    Some(format!(
        "s3://flowstate-test/{name}-{nanos}-{}",
        std::process::id()
    ))
}

/// The local S3 server's settings as storage options (`aws_endpoint`, ...); the child
/// processes get them as the matching `AWS_*` environment variables.
pub fn s3_options() -> Option<[(&'static str, String); 5]> {
    let endpoint = std::env::var("FLOWSTATE_S3_ENDPOINT").ok()?;
    Some([
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "test".into()),
        ("aws_secret_access_key", "test".into()),
        ("aws_region", "us-east-1".into()),
    ])
}

fn with_s3_env(command: &mut Command) {
    for (option, value) in s3_options().into_iter().flatten() {
        command.env(option.to_uppercase(), value);
    }
}
