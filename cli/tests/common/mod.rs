//! What the CLI's end-to-end tests share: the binary, checkpoints written by the demo on each
//! backend, and the local S3 server's settings.
#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::process::{Command, Output};

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

/// Runs the demo on `backend` with checkpoints at `location` (a directory or URL): it leaves
/// the last two checkpoints of its parallelism-1 run, incremental ones (changelog for heap and
/// LMDB, native for RocksDB).
pub fn demo_checkpoints(backend: &str, location: &str) {
    let stdout = ok(&[
        "demo",
        "--backend",
        backend,
        "--keys",
        "300",
        "--batch",
        "60",
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

fn with_s3_env(command: &mut Command) {
    if let Ok(endpoint) = std::env::var("FLOWSTATE_S3_ENDPOINT") {
        command
            .env("AWS_ENDPOINT", endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1");
    }
}
