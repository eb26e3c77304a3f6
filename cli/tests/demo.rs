//! The demo is the README's first command: it must pass its own exactness check, locally and
//! against S3 (moto, started by scripts/test.sh), and `inspect` must read what it wrote.

use std::process::Command;

fn flowstate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
}

#[test]
fn demo_checks_every_count_and_inspect_reads_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = flowstate()
        .args(["demo", "--keys", "300", "--batch", "60", "--storage"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: every count equals the single-threaded reference"));
    assert!(stdout.contains("parallelism 3") && stdout.contains("parallelism 1"));

    let out = flowstate().arg("inspect").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // inspect shows the latest checkpoint; retention kept the last two of the run (3 and 4)
    assert!(stdout.starts_with("checkpoint 4 of "), "{stdout}");
    assert!(
        stdout.contains("(the storage holds checkpoints 3, 4)"),
        "retention must have kept exactly checkpoints 3 and 4:\n{stdout}"
    );
    assert!(
        stdout.contains("count  value  void-namespace  postcard/u64"),
        "{stdout}"
    );
}

#[test]
fn demo_runs_against_s3() {
    let Ok(endpoint) = std::env::var("FLOWSTATE_S3_ENDPOINT") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the S3 demo: use scripts/test.sh"
        );
        eprintln!("FLOWSTATE_S3_ENDPOINT is not set: skipping");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("s3://flowstate-test/demo-{nanos}");
    let out = flowstate()
        .args(["demo", "--keys", "200", "--batch", "40", "--storage", &url])
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo on S3 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: every count equals"));
}

/// Bad arguments are refused before any work, with a message naming the argument: never a
/// panic (exit 101), never a phase run and then a failure.
#[test]
fn demo_rejects_bad_arguments_before_any_work() {
    for (args, expected) in [
        (vec!["--max-parallelism", "2"], "--max-parallelism"),
        (vec!["--keys", "0"], "--keys"),
        (vec!["--partitions", "0"], "--partitions"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--backend", "cassandra"], "cassandra"),
    ] {
        let out = flowstate().arg("demo").args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?} must fail with a usage error, not {:?}:\n{stderr}",
            out.status
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stdout.contains("phase 1"),
            "{args:?} must be refused before the demo runs:\n{stdout}"
        );
    }
}

/// The demo prints where its checkpoints are as a URL a user can pass to the other
/// commands, not a Rust debug struct.
#[test]
fn demo_prints_its_storage_as_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = flowstate()
        .args(["demo", "--keys", "50", "--batch", "10", "--storage"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    assert!(
        stdout.contains(&format!("checkpoints in file://{}", canonical.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("LocalFileSystem"), "{stdout}");
}

/// Each backend the build has runs the demo exactly.
#[test]
fn demo_runs_on_every_backend() {
    let mut backends = vec!["lmdb"];
    if cfg!(feature = "rocksdb") {
        backends.push("rocksdb");
    }
    for backend in backends {
        let out = flowstate()
            .args([
                "demo",
                "--keys",
                "200",
                "--batch",
                "40",
                "--backend",
                backend,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{backend}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("{backend} backend")), "{stdout}");
        assert!(stdout.contains("OK: every count equals"), "{stdout}");
    }
}

/// A reader that stops early (`| head`) ends the command quietly: no panic, no backtrace.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = flowstate()
        .args(["demo", "--keys", "50", "--batch", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The read end closes before the child prints its first line: every line meets a
    // closed pipe.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(status.code(), Some(101), "{stderr}");
}
