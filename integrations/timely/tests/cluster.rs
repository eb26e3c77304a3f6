//! The proof that an engine drives flowstate: the windowed word count on real timely
//! clusters (processes of this test binary, re-executed, talking TCP on 127.0.0.1).
//!
//! Each scenario: 2 processes x 2 workers run until two checkpoints completed, then one
//! process is killed with SIGKILL mid-run (the other dies with it, as a timely cluster does);
//! the job restarts from the latest checkpoint at 1 process x 3 workers and stops cleanly at
//! a later checkpoint; it restarts again at 3 processes x 1 worker and runs to the end. The
//! output files and the final checkpoint's state must equal the single-threaded reference
//! exactly: nothing lost, nothing counted twice.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use flowstate_api::CheckpointStorage;
use flowstate_timely::wordcount::{self, JobArgs, WorkerReport};

/// Set in a re-executed child: the job's and timely's arguments, as JSON.
const CHILD_SPEC: &str = "FLOWSTATE_TIMELY_CHILD";
/// One cluster at a time: the machine has two cores.
static CLUSTERS: Mutex<()> = Mutex::new(());
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs the job when this binary is re-executed as a cluster process; a no-op otherwise.
#[test]
fn child_process_entry() {
    let Ok(spec) = std::env::var(CHILD_SPEC) else {
        return;
    };
    let (job, timely_args): (Vec<String>, Vec<String>) =
        serde_json::from_str(&spec).expect("child spec");
    let args = JobArgs::try_parse_from(job).expect("job arguments");
    match wordcount::run(&args, timely_args) {
        Ok(reports) => {
            for report in reports {
                println!("REPORT {}", serde_json::to_string(&report).unwrap());
            }
        }
        Err(error) => panic!("JOB FAILED: {error}"),
    }
}

struct Process {
    child: Child,
    log: std::path::PathBuf,
}

impl Process {
    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `processes` x `workers` of the job; `env` goes to every child.
fn spawn(
    dir: &Path,
    phase: &str,
    processes: usize,
    workers: usize,
    job: &[String],
    env: &[(String, String)],
) -> Vec<Process> {
    let hostfile = dir.join(format!("hosts-{phase}"));
    let hosts: String = (0..processes)
        .map(|_| format!("127.0.0.1:{}\n", free_port()))
        .collect();
    std::fs::write(&hostfile, hosts).unwrap();
    (0..processes)
        .map(|p| {
            let mut timely = vec!["-w".to_string(), workers.to_string()];
            if processes > 1 {
                timely.extend([
                    "-n".into(),
                    processes.to_string(),
                    "-p".into(),
                    p.to_string(),
                    "-h".into(),
                    hostfile.display().to_string(),
                ]);
            }
            let mut argv = vec!["wordcount".to_string()];
            argv.extend(job.iter().cloned());
            let spec = serde_json::to_string(&(argv, timely)).unwrap();
            let log = dir.join(format!("{phase}-p{p}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "child_process_entry",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_SPEC, spec)
                .envs(env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            Process { child, log }
        })
        .collect()
}

/// Waits for every process to exit successfully; returns their workers' reports.
fn finish(mut processes: Vec<Process>, phase: &str) -> Vec<WorkerReport> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut reports = Vec::new();
    for p in &mut processes {
        let status = loop {
            if let Some(status) = p.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = p.log_text();
        match status {
            Some(s) if s.success() => {}
            other => {
                kill_all(&mut processes);
                panic!("{phase}: a process ended with {other:?}:\n{log}");
            }
        }
        for line in log.lines() {
            // The test harness may print "test child_process_entry ... " before it.
            if let Some(at) = line.find("REPORT {") {
                reports.push(serde_json::from_str(&line[at + "REPORT ".len()..]).unwrap());
            }
        }
    }
    reports
}

fn kill_all(processes: &mut [Process]) {
    for p in processes {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

fn completed_checkpoints(storage: &CheckpointStorage, runtime: &tokio::runtime::Runtime) -> usize {
    runtime
        .block_on(storage.list_checkpoints())
        .map_or(0, |ids| ids.len())
}

struct Scenario {
    backend: &'static str,
    storage_url: String,
    /// How the test process reaches the storage.
    storage: CheckpointStorage,
    env: Vec<(String, String)>,
    partitions: u32,
    batch: u64,
    rounds: u64,
}

fn job_args(s: &Scenario, output: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--backend",
        s.backend,
        "--storage",
        &s.storage_url,
        "--output",
        &output.display().to_string(),
        "--partitions",
        &s.partitions.to_string(),
        "--batch",
        &s.batch.to_string(),
        "--rounds",
        &s.rounds.to_string(),
        "--keys",
        "5000",
        "--rounds-per-window",
        "10",
        "--checkpoint-every",
        "10",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn run_scenario(s: Scenario) {
    let _one_at_a_time = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("output");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Rounds are slow enough in phase 1 that the kill lands mid-run.
    let delay = (4_000 / s.rounds).max(20).to_string();

    // Phase 1: 2 processes x 2 workers; SIGKILL process 1 once two checkpoints completed.
    let job = job_args(&s, &output, &["--round-delay-ms", &delay]);
    let mut cluster = spawn(dir.path(), "p1", 2, 2, &job, &s.env);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while completed_checkpoints(&s.storage, &runtime) < 2 {
        if Instant::now() > deadline
            || cluster
                .iter_mut()
                .any(|p| p.child.try_wait().unwrap().is_some())
        {
            let logs: Vec<String> = cluster.iter().map(Process::log_text).collect();
            kill_all(&mut cluster);
            panic!(
                "phase 1 ended or stalled before two checkpoints completed:\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster[1].child.kill().unwrap(); // SIGKILL
    cluster[1].child.wait().unwrap();
    // The surviving process loses its peer; a timely cluster cannot go on without it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let survivor = loop {
        if let Some(status) = cluster[0].child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !survivor.is_some_and(|s| s.success()),
        "process 0 finished the job although its peer was killed: the kill came too late\n{}",
        cluster[0].log_text()
    );
    kill_all(&mut cluster);
    let after_kill = runtime.block_on(s.storage.list_checkpoints()).unwrap();
    let restore_point = *after_kill.last().unwrap();

    // Phase 2: 1 process x 3 workers, from the latest checkpoint, stopping at the checkpoint
    // round about 70% into the input (round 69 of 100).
    let resume_at = s.rounds * 7 / 100 * 10;
    let job = job_args(&s, &output, &["--stop-after", &(resume_at - 1).to_string()]);
    let reports = finish(spawn(dir.path(), "p2", 1, 3, &job, &s.env), "phase 2");
    assert_eq!(reports.len(), 3, "{reports:?}");
    for r in &reports {
        assert_eq!(r.restored_from, Some(restore_point.get()), "{r:?}");
        assert!(r.first_round >= 20, "restored at round {}", r.first_round);
    }
    let read: u64 = reports.iter().map(|r| r.records_read).sum();
    let first = reports[0].first_round;
    assert_eq!(
        read,
        (resume_at - first) * s.batch * u64::from(s.partitions),
        "phase 2 must read every partition's rounds {first}.. exactly once"
    );
    let stopped_at = *runtime
        .block_on(s.storage.list_checkpoints())
        .unwrap()
        .last()
        .unwrap();

    // Phase 3: 3 processes x 1 worker, to the end of the input.
    let job = job_args(&s, &output, &[]);
    let reports = finish(spawn(dir.path(), "p3", 3, 1, &job, &s.env), "phase 3");
    assert_eq!(reports.len(), 3, "{reports:?}");
    for r in &reports {
        assert_eq!(r.restored_from, Some(stopped_at.get()), "{r:?}");
        assert_eq!(r.first_round, resume_at);
    }
    let coordinator = reports.iter().find(|r| r.worker == 0).unwrap();
    assert!(!coordinator.checkpoints.is_empty(), "{coordinator:?}");

    let args = JobArgs::try_parse_from(std::iter::once("wordcount".to_string()).chain(job_args(
        &s,
        &output,
        &[],
    )))
    .unwrap();
    let factory = args.backend.build().unwrap();
    let verified = wordcount::verify(&args, &s.storage, factory.as_ref(), &runtime)
        .unwrap_or_else(|e| panic!("{} job differs from the reference: {e}", s.backend));
    assert_eq!(
        verified.records,
        s.rounds * s.batch * u64::from(s.partitions)
    );
}

fn local(backend: &'static str, partitions: u32, batch: u64, rounds: u64) -> Scenario {
    let dir = tempfile::tempdir().unwrap().keep();
    let url = format!("file://{}", dir.display());
    Scenario {
        backend,
        storage: CheckpointStorage::open(&url).unwrap(),
        storage_url: url,
        env: Vec::new(),
        partitions,
        batch,
        rounds,
    }
}

#[test]
fn heap_job_survives_a_killed_process_and_rescales_2x2_to_1x3_to_3x1() {
    // 8 partitions x 1250 records x 100 rounds = 1,000,000 records.
    run_scenario(local("heap", 8, 1250, 100));
}

#[test]
fn lmdb_job_survives_a_killed_process_and_rescales() {
    run_scenario(local("lmdb", 8, 250, 60));
}

#[test]
fn rocksdb_job_survives_a_killed_process_and_rescales() {
    run_scenario(local("rocksdb", 8, 250, 60));
}

#[test]
fn heap_job_with_checkpoints_on_s3() {
    let Ok(endpoint) = std::env::var("FLOWSTATE_S3_ENDPOINT") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the S3 cluster test: run it through scripts/test.sh, which starts moto"
        );
        eprintln!("FLOWSTATE_S3_ENDPOINT is not set: skipping the S3 cluster test");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("s3://flowstate-test/timely-{nanos}");
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let options: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    run_scenario(Scenario {
        backend: "heap",
        storage: CheckpointStorage::from_url(&url, options).unwrap(),
        storage_url: url,
        env,
        partitions: 8,
        batch: 1250,
        rounds: 100,
    });
}
