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
        .args(["demo", "--keys", "300", "--batch", "60", "--dir"])
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

    let out = flowstate()
        .args(["inspect", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // retention keeps the last two checkpoints of the run (3 and 4)
    assert!(
        stdout.contains("checkpoint 3:") && stdout.contains("checkpoint 4:"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("checkpoint 1:"),
        "retention must have dropped checkpoint 1:\n{stdout}"
    );
    assert!(stdout.contains("count (value)"), "{stdout}");
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
        .args([
            "demo",
            "--keys",
            "200",
            "--batch",
            "40",
            "--storage-url",
            &url,
        ])
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

#[test]
fn demo_rejects_bad_arguments_with_a_message() {
    let out = flowstate()
        .args(["demo", "--max-parallelism", "2"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "parallelism 3 cannot run under max parallelism 2"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exceeds max parallelism 2"), "{stderr}");
}
