//! `flowstate verify`: checks checkpoints end to end and reports every problem it finds, not
//! just the first.
//!
//! For each checkpoint chosen (the latest by default, one with `--checkpoint`, every one with
//! a manifest with `--all`):
//! 1. **the manifest**: what the readers check (checksum, format version, structure), and
//!    when they refuse it, each reason: the checksum, whether it decodes, and every structural
//!    problem (subtasks 0..parallelism once each, the key-group ranges Flink's arithmetic gives
//!    them, so disjoint and covering, parallelism within the max parallelism, native handles at
//!    the checkpoint's max parallelism, files where retention expects them);
//! 2. **every file it references**: present with the size the manifest records; canonical and
//!    changelog files read whole (header, trailer, metadata and index checksums, every block's
//!    checksum, rows decoded) and checked against their handle (max parallelism, key-group
//!    range, base or delta), each delta's lineage against the file before it in its chain;
//!    operator-state files decoded (checksum); native files (RocksDB SSTs) by presence and size;
//! 3. **a dry-run restore** of every subtask at the checkpoint's parallelism through the
//!    runtime, into the heap backend (RocksDB for native handles, which also checks their
//!    checksums; needs the `rocksdb` feature), which checks every row. A subtask is restored
//!    when the manifest is accepted and the files it reads passed step 2; otherwise it is
//!    counted as skipped (its restore would only repeat those problems).
//!
//! Nothing is written. The exit code is 0 only when every checkpoint holds.

mod files;
mod manifest;

use anyhow::{bail, Result};
use flowstate_api::{CheckpointManifest, CheckpointStorage, KeyedStateHandle};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::output;
use crate::resolve;
use crate::restore::Reader;

/// `flowstate verify`'s arguments.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Checks, for each checkpoint: the manifest (checksum, key-group ranges disjoint and covering, chain structure, max parallelism), that every file exists with the recorded size, every checksum of every file, and a dry-run restore of every subtask. Exit code 0 only if all holds; otherwise every problem is listed.\n\nExamples:\n  flowstate verify ./ckpts\n  flowstate verify ./ckpts --all\n  flowstate verify s3://bucket/job --checkpoint 12\n  flowstate verify file:///var/ckpts --all --json"
)]
pub struct VerifyArgs {
    /// Where the checkpoints are: a directory, file:///dir, s3://bucket/prefix (with AWS_*
    /// variables) or memory://. Never created or changed.
    location: String,
    /// Verify this checkpoint (default: the latest).
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    checkpoint: Option<u64>,
    /// Verify every checkpoint that has a manifest.
    #[arg(long)]
    all: bool,
    /// Print the report as JSON (fields: location, ok, problem_count, checkpoints[] with
    /// checkpoint_id, ok, parallelism, max_parallelism, files, bytes, subtasks_restored,
    /// subtasks_failed, subtasks_skipped, problems[] with checkpoint_id, kind, subtask, file,
    /// message).
    #[arg(long)]
    json: bool,
}

/// The report of `flowstate verify --json`: these field names are the JSON interface.
#[derive(Serialize, Debug)]
pub struct VerifyReport {
    /// The storage verified, as a URL (`file:///abs/dir`, `s3://bucket/prefix`).
    pub location: String,
    /// True when every verified checkpoint holds; the exit code is 0 exactly then.
    pub ok: bool,
    /// The number of problems found, over all checkpoints.
    pub problem_count: usize,
    /// The verified checkpoints, ascending ids.
    pub checkpoints: Vec<CheckpointReport>,
}

/// One verified checkpoint.
#[derive(Serialize, Debug)]
pub struct CheckpointReport {
    /// The checkpoint's id.
    pub checkpoint_id: u64,
    /// True when this checkpoint has no problem.
    pub ok: bool,
    /// From the manifest; `null` when it does not decode.
    pub parallelism: Option<u32>,
    /// From the manifest; `null` when it does not decode.
    pub max_parallelism: Option<u32>,
    /// The distinct files the manifest references (the manifest itself not counted), and
    /// their bytes as the manifest records them.
    pub files: usize,
    /// Their total size in bytes, as the manifest records it.
    pub bytes: u64,
    /// The dry-run restore, in subtasks: restored, failed (each failure is a problem of kind
    /// `restore`), and not tried (the manifest is refused, or a file the subtask reads has a
    /// problem already reported).
    pub subtasks_restored: u32,
    /// Subtasks whose dry-run restore failed.
    pub subtasks_failed: u32,
    /// Subtasks whose dry-run restore was not tried.
    pub subtasks_skipped: u32,
    /// The problems found in this checkpoint.
    pub problems: Vec<Problem>,
}

/// One problem found.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Problem {
    /// The checkpoint the problem is in.
    pub checkpoint_id: u64,
    /// What kind of problem it is.
    pub kind: ProblemKind,
    /// The subtask concerned, when one is.
    pub subtask: Option<u32>,
    /// The file concerned (path relative to the storage root), when one is: the manifest
    /// (`chk-<id>/_manifest.json`) for problems of the manifest.
    pub file: Option<String>,
    /// What is wrong, and what to do.
    pub message: String,
}

/// What kind of problem: serialized in snake_case (`manifest_checksum`, `missing_file`, ...).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The manifest is not JSON, does not decode, has an unknown format version, or is
    /// refused for a reason not listed otherwise.
    Manifest,
    /// The manifest's checksum does not match its contents (a checksum missing, or where
    /// format version 1 has none, is a `manifest` problem).
    ManifestChecksum,
    /// The manifest's structure: subtasks, key-group ranges (overlapping, uncovered, not the
    /// subtask's), max parallelism, file placement.
    Structure,
    /// A referenced file does not exist.
    MissingFile,
    /// A referenced file's size differs from the manifest's.
    SizeMismatch,
    /// A file's contents fail their checks (checksums, format).
    CorruptFile,
    /// A file is not what its handle says: max parallelism, key-group range, base or delta.
    HandleMismatch,
    /// A delta of a changelog chain does not build on the file before it.
    Chain,
    /// The dry-run restore of a subtask failed.
    Restore,
    /// The storage could not be read (network, permissions): not necessarily damage.
    Storage,
}

impl ProblemKind {
    fn label(self) -> &'static str {
        match self {
            ProblemKind::Manifest => "manifest",
            ProblemKind::ManifestChecksum => "manifest checksum",
            ProblemKind::Structure => "manifest structure",
            ProblemKind::MissingFile => "missing file",
            ProblemKind::SizeMismatch => "size mismatch",
            ProblemKind::CorruptFile => "corrupt file",
            ProblemKind::HandleMismatch => "file does not match its handle",
            ProblemKind::Chain => "broken chain",
            ProblemKind::Restore => "dry-run restore failed",
            ProblemKind::Storage => "storage error",
        }
    }
}

/// An error and its causes on one line.
fn error_text(e: impl Into<anyhow::Error>) -> String {
    output::error_lines(&e.into()).join(": ")
}

/// Runs `flowstate verify`: prints the report (as JSON with `--json`); an error when a
/// problem is found.
pub async fn run(args: VerifyArgs) -> Result<()> {
    let storage = resolve::open_read_only(&args.location)?;
    let location = storage.location().to_string();
    let ids = resolve::checkpoint_ids(&storage).await?;
    let latest_or_wanted = resolve::choose_checkpoint(&storage, &ids, args.checkpoint)?;
    let chosen = if args.all {
        ids
    } else {
        vec![latest_or_wanted]
    };

    let mut manifests = Vec::with_capacity(chosen.len());
    for id in chosen {
        manifests.push(manifest::check(&storage, id).await);
    }
    let steps = manifests.iter().map(steps_of).sum();
    let bar = output::progress(steps, "verifying", args.json);
    let mut reader = Reader::new();
    let mut checkpoints = Vec::with_capacity(manifests.len());
    for check in manifests {
        checkpoints.push(verify_checkpoint(&storage, &mut reader, check, &bar).await);
    }
    bar.finish_and_clear();

    let problem_count = checkpoints.iter().map(|c| c.problems.len()).sum();
    let damaged = checkpoints.iter().filter(|c| !c.ok).count();
    let report = VerifyReport {
        location,
        ok: problem_count == 0,
        problem_count,
        checkpoints,
    };
    if args.json {
        output::print_json(&report)?;
    } else {
        print_report(&report);
    }
    if !report.ok {
        bail!(
            "verify found {} in {} of {}",
            output::plural(problem_count, "problem"),
            output::plural(damaged, "checkpoint"),
            report.location
        );
    }
    Ok(())
}

/// Progress steps of a checkpoint: its files, then its subtasks' restores.
fn steps_of(check: &manifest::ManifestCheck) -> u64 {
    match &check.manifest {
        Some(m) => m.files().len() as u64 + u64::from(m.parallelism.get()),
        None => check.loose_files.len() as u64,
    }
}

async fn verify_checkpoint(
    storage: &CheckpointStorage,
    reader: &mut Reader,
    check: manifest::ManifestCheck,
    bar: &ProgressBar,
) -> CheckpointReport {
    let id = check.id;
    let mut report = CheckpointReport {
        checkpoint_id: id.get(),
        ok: false,
        parallelism: None,
        max_parallelism: None,
        files: 0,
        bytes: 0,
        subtasks_restored: 0,
        subtasks_failed: 0,
        subtasks_skipped: 0,
        problems: check.problems,
    };
    let Some(manifest) = check.manifest else {
        report.files = check.loose_files.len();
        report.bytes = check.loose_files.iter().map(|f| f.size).sum();
        let found = files::check_loose_files(storage, id, &check.loose_files, bar).await;
        report.problems.extend(found.problems);
        return finish(report);
    };
    let mut paths = std::collections::BTreeMap::new();
    for file in manifest.files() {
        paths.insert(file.path.as_str(), file.size);
    }
    report.files = paths.len();
    report.bytes = paths.values().sum();
    report.parallelism = Some(manifest.parallelism.get());
    report.max_parallelism = Some(manifest.max_parallelism.get());

    let found = files::check_manifest_files(storage, id, &manifest, bar).await;
    report.problems.extend(found.problems);
    // Every subtask's restore first reads the first keyed handle's first file (its max
    // parallelism check): when that file has a problem, every restore would fail on it, and
    // reporting it once is enough.
    let first_file = manifest.subtasks.iter().find_map(|s| match &s.keyed {
        Some(
            handle @ (KeyedStateHandle::Canonical { .. } | KeyedStateHandle::Changelog { .. }),
        ) => handle.files().first().map(|f| f.path.clone()),
        _ => None,
    });
    let first_file_damaged = first_file.is_some_and(|first| {
        report
            .problems
            .iter()
            .any(|p| p.file.as_deref() == Some(first.as_str()))
    });
    let parallelism = manifest.parallelism;
    for index in 0..parallelism.get() {
        bar.inc(1);
        let keyed = manifest
            .subtasks
            .get(index as usize)
            .and_then(|s| s.keyed.as_ref());
        let result =
            if !check.accepted || found.damaged_keyed.contains(&index) || first_file_damaged {
                report.subtasks_skipped += 1;
                Ok(())
            } else if found.damaged_operator {
                // Every subtask's restore reads every operator-state file, so it would fail on
                // the damaged one. Native keyed state, which only its backend reads, is still
                // restored alone so its contents are checked too.
                report.subtasks_skipped += 1;
                restore_native_alone(storage, &manifest, keyed).await
            } else {
                let restored = reader.restore(storage, &manifest, parallelism, index).await;
                match &restored {
                    Ok(_) => report.subtasks_restored += 1,
                    Err(_) => report.subtasks_failed += 1,
                }
                restored.map(drop)
            };
        if let Err(e) = result {
            let message = error_text(e);
            // The file the failure names, if it names one of the checkpoint's.
            let file = paths
                .keys()
                .find(|path| message.contains(**path))
                .map(|path| path.to_string());
            report.problems.push(Problem {
                checkpoint_id: id.get(),
                kind: ProblemKind::Restore,
                subtask: Some(index),
                file,
                message,
            });
        }
    }
    finish(report)
}

/// Restores a subtask's keyed state alone when it is native (RocksDB), in its own range, into
/// its backend: downloads every file of it, checking each file's recorded checksum, and
/// opens it. Other keyed state was read whole by the file checks.
#[cfg(feature = "rocksdb")]
async fn restore_native_alone(
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    keyed: Option<&KeyedStateHandle>,
) -> Result<()> {
    use flowstate_api::StateBackendFactory;
    let Some(handle @ KeyedStateHandle::Native { backend, .. }) = keyed else {
        return Ok(());
    };
    if backend != flowstate_rocksdb::BACKEND_NAME {
        return Ok(());
    }
    let factory = flowstate_rocksdb::RocksDbBackendFactory::temporary()?;
    let handles = std::slice::from_ref(handle);
    factory
        .restore(
            manifest.max_parallelism,
            handle.key_group_range(),
            storage,
            handles,
        )
        .await?;
    Ok(())
}

/// Without RocksDB native state cannot be read (the restores that are tried say so).
#[cfg(not(feature = "rocksdb"))]
async fn restore_native_alone(
    _storage: &CheckpointStorage,
    _manifest: &CheckpointManifest,
    _keyed: Option<&KeyedStateHandle>,
) -> Result<()> {
    Ok(())
}

/// Orders the problems (the manifest's first, then by subtask and file) and sets `ok`.
fn finish(mut report: CheckpointReport) -> CheckpointReport {
    report
        .problems
        .sort_by(|a, b| (a.subtask, &a.file).cmp(&(b.subtask, &b.file)));
    report.problems.dedup();
    report.ok = report.problems.is_empty();
    report
}

fn print_report(report: &VerifyReport) {
    for c in &report.checkpoints {
        let restored = format!(
            "{} of {} subtasks restored",
            c.subtasks_restored,
            c.parallelism.map_or("?".to_string(), |p| p.to_string())
        );
        let sizes = format!("{} files, {}", c.files, output::human_bytes(c.bytes));
        if c.ok {
            println!("checkpoint {}: OK ({sizes}; {restored})", c.checkpoint_id);
            continue;
        }
        println!(
            "checkpoint {}: {} ({sizes}; {restored})",
            c.checkpoint_id,
            output::plural(c.problems.len(), "problem")
        );
        for p in &c.problems {
            let mut place = Vec::new();
            if let Some(subtask) = p.subtask {
                place.push(format!("subtask {subtask}"));
            }
            if let Some(file) = &p.file {
                place.push(file.clone());
            }
            let place = if place.is_empty() {
                String::new()
            } else {
                format!(" [{}]", place.join(", "))
            };
            println!("  - {}{place}: {}", p.kind.label(), p.message);
        }
        if c.subtasks_skipped > 0 {
            let why = if c.problems.iter().any(|p| {
                matches!(
                    p.kind,
                    ProblemKind::Manifest | ProblemKind::ManifestChecksum | ProblemKind::Structure
                )
            }) {
                "the manifest is refused"
            } else {
                "files they read have problems"
            };
            println!(
                "  (dry-run restore not tried for {}: {why})",
                output::plural(c.subtasks_skipped as usize, "subtask")
            );
        }
    }
}
