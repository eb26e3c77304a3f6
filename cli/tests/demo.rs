//! The demo is the README's first command: it must pass its own exactness check, locally and
//! against S3 (moto, started by scripts/test.sh), on every backend, refuse bad arguments
//! before any work, and end quietly on a closed pipe.

mod common;

use common::{backends, flowstate, ok, path_str, run, s3_location};

/// What `inspect` reads of the demo's checkpoints: tests/inspect.rs.
#[test]
fn demo_checks_every_count_over_its_rescales() {
    let dir = tempfile::tempdir().unwrap();
    let location = path_str(dir.path());
    let stdout = ok(&[
        "demo",
        "--keys",
        "300",
        "--batch",
        "60",
        "--storage",
        &location,
    ]);
    assert!(stdout.contains("OK: every count equals the single-threaded reference"));
    assert!(stdout.contains("parallelism 3") && stdout.contains("parallelism 1"));

    // Run again on the same storage, the demo would be a second job there: its coordinator
    // would fence the first off and apply its retention. It refuses, and changes nothing.
    let before = common::tree(dir.path());
    let err = common::fails(&[
        "demo",
        "--keys",
        "30",
        "--batch",
        "5",
        "--storage",
        &location,
    ]);
    assert!(
        err.contains("is not empty") && err.contains("checkpoints 3, 4"),
        "{err}"
    );
    assert_eq!(
        common::tree(dir.path()),
        before,
        "a refused demo changed the storage"
    );
}

#[test]
fn demo_runs_against_s3() {
    let Some(url) = s3_location("demo") else {
        return;
    };
    let stdout = ok(&["demo", "--keys", "200", "--batch", "40", "--storage", &url]);
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
        let mut full = vec!["demo"];
        full.extend(args.iter().copied());
        let out = run(&full);
        let (stdout, stderr) = (common::stdout(&out), common::stderr(&out));
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
    let stdout = ok(&[
        "demo",
        "--keys",
        "50",
        "--batch",
        "10",
        "--storage",
        &path_str(dir.path()),
    ]);
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    assert!(
        stdout.contains(&format!("checkpoints in file://{}", canonical.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("LocalFileSystem"), "{stdout}");
}

/// Each backend the build has runs the demo exactly (the heap: the tests above).
#[test]
fn demo_runs_on_every_backend() {
    for backend in backends().into_iter().filter(|b| *b != "heap") {
        let stdout = ok(&[
            "demo",
            "--keys",
            "200",
            "--batch",
            "40",
            "--backend",
            backend,
        ]);
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
