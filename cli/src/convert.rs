//! `flowstate convert`: a canonical (portable, backend-independent) copy of any checkpoint,
//! optionally re-split at another parallelism; Flink's "canonical savepoint" as a command.
//!
//! Every new subtask is restored from the source checkpoint at the new parallelism, through
//! the runtime as a job would restore it (native RocksDB handles into RocksDB in a temporary
//! directory, everything else into the heap backend; operator state by the runtime's
//! redistribution rules). A [`CheckpointCoordinator`] opened on the target storage, with the
//! source's max parallelism and the new parallelism, takes a full checkpoint of them: each
//! subtask is captured with [`SnapshotKind::Full`] (one canonical file, nothing shared),
//! uploaded and acknowledged; the coordinator publishes the manifest. The target's
//! coordinator assigns the id (1 in an empty storage), which the output names.
//!
//! The target must be empty: `convert` never overwrites or mixes with other checkpoints (a
//! storage root belongs to one job: the coordinator collects files no checkpoint of it
//! references), and it is never the source, inside it or around it. The source is only read.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use flowstate_api::{
    CheckpointManifest, CheckpointStorage, KeyedStateHandle, Parallelism, SnapshotKind,
};
use flowstate_runtime::{CheckpointCoordinator, CoordinatorConfig, LocalCheckpoint, LocalSubtask};
use serde::Serialize;

use crate::output::{self, human_bytes, FileReport, KeyGroupSpan};
use crate::resolve;
use crate::restore::{Reader, Restored};

/// `flowstate convert`'s arguments.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  flowstate convert ./ckpts --checkpoint 12 --to ./portable\n  flowstate convert ./ckpts --checkpoint 12 --to ./portable-4 --parallelism 4\n  flowstate convert s3://bucket/job --checkpoint 12 --to s3://bucket/job-portable --json"
)]
pub struct ConvertArgs {
    /// The checkpoint storage to read: a directory, file:///dir, s3://bucket/prefix (with the
    /// AWS_* variables). Only read.
    source: String,
    /// The checkpoint to convert.
    #[arg(long, value_name = "ID")]
    checkpoint: u64,
    /// Where to write the canonical checkpoint: a new or empty directory or URL (created if
    /// missing). Never the source, a place inside it or around it.
    #[arg(long, value_name = "STORAGE")]
    to: String,
    /// Parallelism of the written checkpoint, 1 to the source's max parallelism (default: the
    /// source's parallelism).
    #[arg(long, value_name = "M")]
    parallelism: Option<u32>,
    /// Print the report as JSON (see `ConvertReport` for the fields).
    #[arg(long)]
    json: bool,
}

/// `convert --json`. Field names are part of the CLI's interface.
#[derive(Serialize, Debug)]
pub struct ConvertReport {
    /// The source storage and checkpoint.
    pub source: String,
    /// The source checkpoint's id.
    pub source_checkpoint_id: u64,
    /// The source checkpoint's parallelism.
    pub source_parallelism: u32,
    /// Kinds of the source's keyed handles (`canonical`, `changelog`, `native rocksdb`).
    pub source_handles: Vec<String>,
    /// The target storage, and the checkpoint written there (its id is the target's).
    pub target: String,
    /// The id of the checkpoint written in the target.
    pub checkpoint_id: u64,
    /// Its max parallelism (the source's): its number of key groups.
    pub max_parallelism: u32,
    /// Its parallelism: its number of subtasks.
    pub parallelism: u32,
    /// Files the written checkpoint references (keyed and operator state) and their bytes.
    pub files: usize,
    /// Their total size, in bytes.
    pub bytes: u64,
    /// The written subtasks, ascending.
    pub subtasks: Vec<ConvertedSubtask>,
}

/// One subtask of the written checkpoint.
#[derive(Serialize, Debug)]
pub struct ConvertedSubtask {
    /// The subtask's index.
    pub index: u32,
    /// Its key groups, inclusive.
    pub key_groups: KeyGroupSpan,
    /// Its canonical keyed state file.
    pub keyed_file: Option<FileReport>,
    /// Its operator state file; `null` when it has no operator state.
    pub operator_file: Option<FileReport>,
}

/// Runs `flowstate convert`: writes the checkpoint and prints the report (as JSON with
/// `--json`).
pub async fn run(args: ConvertArgs) -> Result<()> {
    let source = resolve::open_read_only(&args.source)?;
    let manifest = resolve::read_checkpoint(&source, Some(args.checkpoint))
        .await?
        .manifest;
    let parallelism = match args.parallelism {
        None => manifest.parallelism,
        Some(p) => resolve::parallelism_for(p, &manifest)?,
    };
    check_not_overlapping(&source, &args.to)?;
    let target = CheckpointStorage::open(&args.to)
        .with_context(|| format!("opening the target storage {}", args.to))?;
    resolve::require_empty(
        &target,
        "convert writes only into an empty storage and never overwrites: choose a new directory or prefix",
    )
    .await?;

    let json = args.json;
    let report = match convert(&source, &manifest, &target, parallelism, json).await {
        Ok(report) => report,
        Err(error) => return Err(empty_again(&target, error).await),
    };
    if json {
        output::print_json(&report)
    } else {
        print_human(&report);
        Ok(())
    }
}

/// Every new subtask in turn restored, captured in full, uploaded and acknowledged to a
/// coordinator on the target, which publishes the checkpoint once all are; one at a time, so
/// that only one subtask's state is held at once.
async fn convert(
    source: &CheckpointStorage,
    manifest: &CheckpointManifest,
    target: &CheckpointStorage,
    parallelism: Parallelism,
    json: bool,
) -> Result<ConvertReport> {
    let source_id = manifest.checkpoint_id;
    let config = CoordinatorConfig::new(manifest.max_parallelism, parallelism);
    let mut coordinator = CheckpointCoordinator::open(target.clone(), config)
        .await
        .with_context(|| format!("opening a checkpoint coordinator on {target}"))?;
    let mut checkpoint = coordinator.begin_local();
    let id = checkpoint.id();
    let mut reader = Reader::new();
    let bar = output::progress(u64::from(parallelism.get()), "converting subtasks", json);
    for index in 0..parallelism.get() {
        let converted = convert_subtask(
            &mut reader,
            source,
            manifest,
            target,
            parallelism,
            index,
            &mut checkpoint,
        )
        .await;
        if let Err(error) = converted {
            bar.finish_and_clear();
            // Declining aborts the checkpoint, which deletes what it uploaded so far. The error
            // to report is the conversion's: the checkpoint is not published either way.
            let _ = checkpoint.decline(index, &format!("{error:#}")).await;
            return Err(error.context(format!(
                "converting checkpoint {source_id} of {source}: new subtask {index} of {parallelism}"
            )));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // The converted subtasks are gone: there is no one to tell.
    let completed = checkpoint
        .finish::<Restored>(&[])
        .await
        .with_context(|| format!("writing the converted checkpoint to {target}"))?;
    let written = &completed.manifest;
    let files = written.files();
    Ok(ConvertReport {
        source: source.location().to_string(),
        source_checkpoint_id: source_id.get(),
        source_parallelism: manifest.parallelism.get(),
        source_handles: handle_kinds(manifest),
        target: target.location().to_string(),
        checkpoint_id: id.get(),
        max_parallelism: written.max_parallelism.get(),
        parallelism: written.parallelism.get(),
        files: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
        subtasks: written
            .subtasks
            .iter()
            .map(|s| ConvertedSubtask {
                index: s.subtask_index,
                key_groups: s.key_group_range.into(),
                keyed_file: s
                    .keyed
                    .as_ref()
                    .and_then(|k| k.files().first().map(|f| FileReport::from(*f))),
                operator_file: s.operator.as_ref().map(FileReport::from),
            })
            .collect(),
    })
}

/// Restores new subtask `index`, captures a full (canonical) snapshot of it for `checkpoint`,
/// uploads it to `target` and, once its handle is checked canonical (what makes the copy
/// portable), acknowledges it.
async fn convert_subtask(
    reader: &mut Reader,
    source: &CheckpointStorage,
    manifest: &CheckpointManifest,
    target: &CheckpointStorage,
    parallelism: Parallelism,
    index: u32,
    checkpoint: &mut LocalCheckpoint<'_>,
) -> Result<()> {
    let restored = reader
        .restore(source, manifest, parallelism, index)
        .await
        .context("restoring it from the source")?;
    let captured = restored
        .capture(checkpoint.id(), SnapshotKind::Full)
        .context("capturing a full snapshot")?;
    let ack = captured
        .upload(target.clone())
        .await
        .with_context(|| format!("uploading it to {target}"))?;
    if !matches!(ack.state.keyed, Some(KeyedStateHandle::Canonical { .. })) {
        bail!(
            "its full snapshot is not canonical but {}: the backend does not write canonical full snapshots",
            ack.state
                .keyed
                .as_ref()
                .map_or("absent".into(), KeyedStateHandle::describe)
        );
    }
    checkpoint
        .acknowledge(ack)
        .await
        .context("acknowledging it to the coordinator")
}

/// The kinds of the manifest's keyed handles, each once.
fn handle_kinds(manifest: &CheckpointManifest) -> Vec<String> {
    let kinds: BTreeSet<String> = manifest
        .subtasks
        .iter()
        .filter_map(|s| s.keyed.as_ref())
        .map(output::handle_label)
        .collect();
    kinds.into_iter().collect()
}

/// Refuses a target that is the source, lies inside it or contains it: the coordinator
/// writing there would collect the source's files as garbage (or the source's its).
fn check_not_overlapping(source: &CheckpointStorage, to: &str) -> Result<()> {
    let relation = match (source.local_dir(), CheckpointStorage::local_path_of(to)) {
        (Some(source_dir), Some(target)) => {
            let target = absolute_path(&target)
                .with_context(|| format!("resolving the target directory {to}"))?;
            relation(&target, source_dir)
        }
        (None, None) => {
            let normalize = |s: &str| s.trim_end_matches('/').to_string();
            let (s, t) = (normalize(source.location()), normalize(to));
            if s.starts_with("memory:") || t.starts_with("memory:") {
                None
            } else if s == t {
                Some("is")
            } else if t.starts_with(&format!("{s}/")) {
                Some("lies inside")
            } else if s.starts_with(&format!("{t}/")) {
                Some("contains")
            } else {
                None
            }
        }
        _ => None,
    };
    if let Some(relation) = relation {
        bail!(
            "--to {to} {relation} the source storage {source}: write the canonical checkpoint to a separate, empty directory or prefix"
        );
    }
    Ok(())
}

fn relation(target: &Path, source: &Path) -> Option<&'static str> {
    if target == source {
        Some("is")
    } else if target.starts_with(source) {
        Some("lies inside")
    } else if source.starts_with(target) {
        Some("contains")
    } else {
        None
    }
}

/// `path` made absolute without creating anything: its longest existing ancestor resolved
/// (symbolic links followed), the rest appended with `.` and `..` applied.
fn absolute_path(path: &Path) -> Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("reading the current directory")?
            .join(path)
    };
    let parts: Vec<Component<'_>> = absolute.components().collect();
    for existing in (0..=parts.len()).rev() {
        let prefix: PathBuf = parts[..existing].iter().collect();
        if existing > 0 && !prefix.exists() {
            continue;
        }
        let mut out = if existing == 0 {
            PathBuf::from("/")
        } else {
            std::fs::canonicalize(&prefix)
                .with_context(|| format!("resolving {}", prefix.display()))?
        };
        for part in &parts[existing..] {
            match part {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(name) => out.push(name),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        return Ok(out);
    }
    Ok(absolute)
}

/// After a failed conversion: the target was empty when it began, so everything in it now is
/// the conversion's own (the aborted checkpoint's files, if the coordinator could not delete
/// them all, its fencing epochs and registry copy). Deletes it all so a retry finds an empty
/// target; what cannot be deleted is named in the error.
async fn empty_again(target: &CheckpointStorage, error: anyhow::Error) -> anyhow::Error {
    let files = match target.list("").await {
        Ok(files) => files,
        Err(e) => {
            return error.context(format!(
                "the conversion failed, and listing {target} to remove its partial output failed too ({e}): delete what it holds before retrying"
            ))
        }
    };
    let mut left = Vec::new();
    for (path, _) in files {
        if target.delete(&path).await.is_err() {
            left.push(path);
        }
    }
    if left.is_empty() {
        error
    } else {
        error.context(format!(
            "the conversion failed and {} of its files could not be removed from {target} (such as {}): delete them before retrying",
            left.len(),
            left[0]
        ))
    }
}

fn print_human(r: &ConvertReport) {
    println!(
        "converted checkpoint {} of {} (parallelism {}, {} handles)",
        r.source_checkpoint_id,
        r.source,
        r.source_parallelism,
        r.source_handles.join(" and ")
    );
    println!(
        "wrote checkpoint {} to {}: parallelism {}, max parallelism {}, canonical handles, {} files, {}",
        r.checkpoint_id,
        r.target,
        r.parallelism,
        r.max_parallelism,
        r.files,
        human_bytes(r.bytes)
    );
    for s in &r.subtasks {
        let file = |f: &Option<FileReport>| match f {
            Some(f) => format!("{} ({})", f.path, human_bytes(f.bytes)),
            None => "none".into(),
        };
        println!(
            "  subtask {}: key groups {} to {}: keyed {}, operator state {}",
            s.index,
            s.key_groups.start,
            s.key_groups.end,
            file(&s.keyed_file),
            file(&s.operator_file)
        );
    }
    if r.target.starts_with("memory:") {
        println!("memory:// is gone when flowstate exits: this was a dry run");
    } else {
        println!(
            "any backend restores it: `flowstate inspect {} --checkpoint {}` shows it",
            r.target, r.checkpoint_id
        );
    }
}
