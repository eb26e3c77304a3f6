//! Crash points with real processes. A child process (this test binary re-executed to run
//! only `crash_child`) runs a job of heap backends on `CheckpointStorage::local`'s store
//! and is killed with SIGKILL at a chosen point of the checkpoint path:
//!
//! - `before-manifest`: at the k-th manifest put, before anything of it is written;
//! - `torn-manifest`: the k-th manifest put leaves a truncated manifest at its final path and a
//!   staging file beside it (what a crash mid-write leaves where puts are not atomic);
//! - `staged-manifest`: the k-th manifest put leaves only a partial staging file
//!   (`_manifest.json#1`, what `LocalFileSystem`'s write-then-rename leaves);
//! - `after-manifest`: the k-th manifest put returned (the checkpoint is published) and
//!   nothing after it ran: between the manifest and retention;
//! - `mid-retention`: at the k-th delete (retention, garbage collection, an abort).
//!
//! Before each checkpoint the child appends the model of the state it captures to a side file
//! (fsynced), after each completion the id, and at the crash point what it was doing. The
//! parent then reopens the storage as a restarted job would and checks that the newest
//! complete checkpoint is the expected one (a published checkpoint survives, an unpublished
//! one is invisible), that every retained checkpoint's files exist and restore exactly to its
//! model (the newest also at another parallelism), that new checkpoints complete and restore
//! after reopening, and that nothing but what retained checkpoints reference stays on disk.

mod child;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path as FsPath;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowstate_api::lifecycle::CheckpointLifecycle;
use flowstate_api::{CheckpointId, CheckpointStorage, SnapshotKind, StateBackendFactory};
use flowstate_conformance::dataset::{Job, Model};
use flowstate_conformance::fixtures::{max_parallelism, parallelism, retained_paths, Rng};
use flowstate_conformance::harness::{
    block_on, checkpoint_with_lifecycle, create_operator, restore_operator,
};
use flowstate_heap::HeapBackendFactory;

use child::{policy, run_job, Hook, Record, STEPS};

/// The child's test, by its full name (`--exact`).
const CHILD_TEST: &str = "child::crash_child";
const ENV_SCENARIO: &str = "FLOWSTATE_CRASH_SCENARIO";
const ENV_DIR: &str = "FLOWSTATE_CRASH_DIR";
const MARKER: &str = "FLOWSTATE-CRASH-POINT";
const KEY_SPACE: u64 = 400;
const OPS_PER_STEP: usize = 250;
const SEED: u64 = 0xc0ffee;
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    BeforeManifest,
    TornManifest,
    StagedManifest,
    AfterManifest,
    MidRetention,
}

const POINTS: [Point; 5] = [
    Point::BeforeManifest,
    Point::TornManifest,
    Point::StagedManifest,
    Point::AfterManifest,
    Point::MidRetention,
];

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::BeforeManifest => "before-manifest",
            Point::TornManifest => "torn-manifest",
            Point::StagedManifest => "staged-manifest",
            Point::AfterManifest => "after-manifest",
            Point::MidRetention => "mid-retention",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        POINTS.into_iter().find(|p| p.name() == s)
    }
    /// Whether the checkpoint being completed is published at the crash (a delete may belong
    /// to an abort or come after a manifest: either).
    fn publishes(self) -> Option<bool> {
        match self {
            Point::AfterManifest => Some(true),
            Point::MidRetention => None,
            _ => Some(false),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scenario {
    point: Point,
    /// Which manifest put or delete (1-based) the crash happens at.
    k: usize,
    retention: usize,
}

impl Scenario {
    fn encode(&self) -> String {
        format!("{} {} {}", self.point.name(), self.k, self.retention)
    }
    fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(' ');
        let point = Point::parse(parts.next()?)?;
        let k = parts.next()?.parse().ok()?;
        let retention = parts.next()?.parse().ok()?;
        Some(Self {
            point,
            k,
            retention,
        })
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} k={} retention={}",
            self.point.name(),
            self.k,
            self.retention
        )
    }
}

/// Manifest puts and deletes of the whole job at `retention`, counted without crashing.
fn dry_run(retention: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let hook = Arc::new(Hook::new(None, dir.path().join("store"), None));
    run_job(hook.clone(), retention);
    (
        hook.manifest_puts.load(Ordering::SeqCst),
        hook.deletes.load(Ordering::SeqCst),
    )
}

/// Every k of each manifest crash point; up to eight deletes spread over the job (first and
/// last included).
fn plan() -> Vec<Scenario> {
    let mut scenarios = Vec::new();
    for retention in [1, 2] {
        let (manifests, deletes) = dry_run(retention);
        assert_eq!(
            manifests,
            STEPS.len() - 1,
            "one manifest per completed step"
        );
        assert!(deletes > 0, "retention {retention} deleted nothing");
        for point in &POINTS[..4] {
            scenarios.extend((1..=manifests).map(|k| Scenario {
                point: *point,
                k,
                retention,
            }));
        }
        let samples = deletes.min(8);
        let mut ks: BTreeSet<usize> = (0..samples)
            .map(|i| 1 + i * (deletes - 1) / (samples - 1).max(1))
            .collect();
        ks.insert(deletes);
        scenarios.extend(ks.into_iter().map(|k| Scenario {
            point: Point::MidRetention,
            k,
            retention,
        }));
    }
    scenarios
}

fn tail(path: &FsPath) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs the child of `scenario` in `dir` and checks it died by SIGKILL at its crash point.
fn run_child(scenario: Scenario, dir: &FsPath) -> Result<(), String> {
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([CHILD_TEST, "--exact", "--nocapture", "--ignored"])
        .args(["--test-threads", "1"])
        .env(ENV_SCENARIO, scenario.encode())
        .env(ENV_DIR, dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .map_err(|e| format!("spawning the child failed: {e}"))?;
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the child ran over {CHILD_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = std::fs::read_to_string(&stdout).unwrap_or_default();
    let marked = out
        .lines()
        .any(|l| l.contains(&format!("{MARKER} {} at ", scenario.encode())));
    if status.signal() != Some(libc::SIGKILL) || !marked {
        return Err(format!(
            "the child was not killed at its crash point (status {status}, marker {marked})\n--- stdout\n{}\n--- stderr\n{}",
            tail(&stdout),
            tail(&stderr)
        ));
    }
    Ok(())
}

/// The side file's models per captured id, the completed ids, and the crash record.
type SideFile = (BTreeMap<u64, Model>, Vec<u64>, Record);

fn read_side_file(path: &FsPath) -> Result<SideFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("side file: {e}"))?;
    let (mut models, mut completed, mut crash) = (BTreeMap::new(), Vec::new(), None);
    for line in text.lines() {
        match serde_json::from_str(line).map_err(|e| format!("side file line: {e}"))? {
            Record::Captured { id, model } => {
                models.insert(id, Model::from(model));
            }
            Record::Completed { id } => completed.push(id),
            crashed @ Record::Crash { .. } => crash = Some(crashed),
        }
    }
    let crash = crash.ok_or("the side file has no crash record")?;
    Ok((models, completed, crash))
}

fn restore_matches(
    storage: &CheckpointStorage,
    lifecycle: &CheckpointLifecycle,
    id: CheckpointId,
    p: u32,
    model: &Model,
) -> Result<Job<<HeapBackendFactory as StateBackendFactory>::Backend>, String> {
    let manifest = lifecycle.manifest(id).map_err(|e| e.to_string())?;
    let subtasks = restore_operator(
        &HeapBackendFactory::new(),
        storage,
        manifest,
        parallelism(p),
    )
    .map_err(|e| format!("restoring checkpoint {id} at parallelism {p} failed: {e}"))?;
    let job = Job::new(subtasks).map_err(|e| e.to_string())?;
    // assert_matches panics with the difference; the caller turns panics into failures.
    job.assert_matches(model, &format!("checkpoint {id} at parallelism {p}"));
    Ok(job)
}

/// Files and directories under the storage root that no retained checkpoint accounts for
/// (nor `kept`): leftovers of the crash (staging files included, which `list` does not show),
/// one line per kind.
fn strays(
    root: &FsPath,
    lifecycle: &CheckpointLifecycle,
    kept: impl Fn(&str) -> bool,
) -> Vec<String> {
    let allowed = retained_paths(lifecycle);
    let (mut files, mut empty) = (Vec::new(), Vec::new());
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("read dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        let rel = |p: &FsPath| {
            p.strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned()
        };
        if entries.is_empty() && dir != root {
            empty.push(rel(&dir));
        }
        for path in entries {
            let name = rel(&path);
            // `_shared_registry.json`, `_coordinator/...`: the lifecycle's own objects.
            if name.starts_with('_') {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if !allowed.contains(&name) && !kept(&name) {
                files.push(name);
            }
        }
    }
    let mut out = Vec::new();
    for (what, mut list) in [("files", files), ("empty directories", empty)] {
        list.sort();
        if !list.is_empty() {
            out.push(format!("leak: {} {what}: {}", list.len(), list.join(", ")));
        }
    }
    out
}

/// Reopens the storage the child left and checks everything the module docs promise.
fn verify(scenario: Scenario, dir: &FsPath) -> Result<Vec<String>, String> {
    let (models, completed, crash) = read_side_file(&dir.join("model.jsonl"))?;
    let Record::Crash {
        checkpoint,
        published,
        ..
    } = crash
    else {
        unreachable!("read_side_file returns the crash record");
    };
    if scenario.point.publishes().is_some_and(|p| p != published) {
        return Err(format!(
            "the crash came {} checkpoint {checkpoint}'s manifest, not where intended",
            if published { "after" } else { "before" }
        ));
    }
    let expected = if published {
        Some(checkpoint)
    } else {
        completed.last().copied()
    };
    let store_dir = dir.join("store");
    // As a restarted job opens it (which also removes local staging files).
    let storage = CheckpointStorage::local(&store_dir).map_err(|e| e.to_string())?;
    let mut lifecycle = block_on(CheckpointLifecycle::open(
        storage.clone(),
        policy(scenario.retention),
    ))
    .map_err(|e| format!("reopening failed: {e}"))?;
    let latest = lifecycle.latest().map(|m| m.checkpoint_id.get());
    if latest != expected {
        return Err(format!(
            "after reopening the newest checkpoint is {latest:?}, expected {expected:?}"
        ));
    }
    // Retention keeps the newest `retention` complete checkpoints, crash or not.
    let mut complete = completed.clone();
    complete.extend(published.then_some(checkpoint));
    let keep = complete.len().saturating_sub(scenario.retention);
    let retained: Vec<u64> = lifecycle.completed().iter().map(|id| id.get()).collect();
    if retained != complete[keep..] {
        return Err(format!(
            "after reopening checkpoints {retained:?} are retained, expected {:?}",
            &complete[keep..]
        ));
    }
    let newest = lifecycle.completed().last().copied();
    let mut continued = None;
    for id in lifecycle.completed() {
        let model = models
            .get(&id.get())
            .ok_or(format!("checkpoint {id} was never captured"))?;
        let manifest = lifecycle.manifest(id).map_err(|e| e.to_string())?;
        for file in manifest.files() {
            let size = block_on(storage.size_of(&file.path)).map_err(|e| e.to_string())?;
            if size != Some(file.size) {
                return Err(format!(
                    "file {} of retained checkpoint {id} is {size:?} bytes, its manifest says {}",
                    file.path, file.size
                ));
            }
        }
        if Some(id) == newest {
            restore_matches(&storage, &lifecycle, id, 2, model)?;
            continued = Some((restore_matches(&storage, &lifecycle, id, 3, model)?, id));
        } else {
            restore_matches(&storage, &lifecycle, id, 1, model)?;
        }
    }
    // The job goes on from the newest checkpoint (from scratch without one) at parallelism 3.
    let (job, mut model) = match continued {
        Some((job, id)) => (job, models[&id.get()].clone()),
        None => (
            Job::new(
                create_operator(
                    &HeapBackendFactory::new(),
                    max_parallelism(),
                    parallelism(3),
                )
                .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
            Model::default(),
        ),
    };
    let mut rng = Rng::new(SEED + 1);
    let mut last = None;
    for kind in [
        SnapshotKind::Incremental,
        SnapshotKind::Full,
        SnapshotKind::Incremental,
    ] {
        job.run_random(&mut model, &mut rng, OPS_PER_STEP, KEY_SPACE);
        let manifest = checkpoint_with_lifecycle(&job.subtasks, &mut lifecycle, kind)
            .map_err(|e| format!("a {kind:?} checkpoint after reopening failed: {e}"))?;
        // The id of a published checkpoint is never handed out again. (An unpublished one
        // may be: nothing of it survives the reopening.)
        if complete
            .iter()
            .any(|&used| manifest.checkpoint_id.get() <= used)
        {
            return Err(format!(
                "checkpoint {} after reopening reuses the id of a published one",
                manifest.checkpoint_id
            ));
        }
        last = Some(manifest.checkpoint_id);
    }
    // A torn manifest is unreadable, not necessarily garbage: the lifecycle may keep its
    // directory for an operator, and with it every shared file (its references are unknown).
    let torn_dir = CheckpointStorage::checkpoint_dir(CheckpointId(checkpoint));
    let torn = scenario.point == Point::TornManifest;
    let leaks = strays(&store_dir, &lifecycle, |path| {
        torn && (path.starts_with(&format!("{torn_dir}/")) || path.starts_with("shared/"))
    });
    drop(lifecycle);
    let lifecycle = block_on(CheckpointLifecycle::open(
        storage.clone(),
        policy(scenario.retention),
    ))
    .map_err(|e| format!("the second reopening failed: {e}"))?;
    let last = last.expect("three checkpoints ran");
    if lifecycle.latest().map(|m| m.checkpoint_id) != Some(last) {
        return Err(format!(
            "after the second reopening {last} is not the newest"
        ));
    }
    restore_matches(&storage, &lifecycle, last, 2, &model)?;
    // Leaks are reported apart from correctness: nothing above depends on them.
    Ok(leaks)
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

fn run_scenario(scenario: Scenario) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    if let Err(e) = run_child(scenario, dir.path()) {
        return vec![e];
    }
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verify(scenario, dir.path())
    }));
    match checked {
        Ok(Ok(leaks)) => leaks,
        Ok(Err(failure)) => vec![failure],
        Err(payload) => vec![format!("panicked: {}", panic_text(payload))],
    }
}

#[test]
fn crash_points_restore_the_newest_complete_checkpoint() {
    let started = Instant::now();
    let scenarios = plan();
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(Scenario, Vec<String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&scenario) = scenarios.get(i) else {
                    break;
                };
                let problems = run_scenario(scenario);
                if !problems.is_empty() {
                    failures
                        .lock()
                        .expect("failures")
                        .push((scenario, problems));
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("failures");
    failures.sort_by_key(|(s, _)| (s.retention, s.point.name(), s.k));
    eprintln!(
        "{} crash scenarios in {:?}",
        scenarios.len(),
        started.elapsed()
    );
    let report: Vec<String> = failures
        .iter()
        .map(|(s, problems)| format!("{s}:\n  {}", problems.join("\n  ")))
        .collect();
    let wrong = failures
        .iter()
        .filter(|(_, problems)| problems.iter().any(|p| !p.starts_with("leak:")))
        .count();
    assert!(
        failures.is_empty(),
        "{} of {} crash scenarios failed ({wrong} restored wrongly or not at all, the rest left files behind):\n{}",
        failures.len(),
        scenarios.len(),
        report.join("\n")
    );
}
