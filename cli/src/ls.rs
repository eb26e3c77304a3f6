//! `flowstate ls`: the checkpoints of a storage (id, time, parallelism, handle kinds, bytes,
//! retention), checkpoint directories that never completed, and the shared-state registry:
//! which shared files each retained checkpoint uses.
//!
//! Everything comes from one listing of the storage, the manifests (the source of truth) and
//! the registry copy `_shared_registry.json`, which is compared with them. Nothing is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{Context, Result};
use clap::Args;
use flowstate_api::lifecycle::SharedStateRegistry;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, FileRef, KeyGroupRange, KeyedStateHandle,
};
use serde::Serialize;

use crate::output;

/// The registry copy the checkpoint lifecycle writes for tools (see
/// `flowstate_api::lifecycle`).
pub const REGISTRY_FILE: &str = "_shared_registry.json";

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  flowstate ls ./ckpts\n  flowstate ls ./ckpts --subtasks\n  flowstate ls s3://bucket/job --json\n  flowstate ls file:///var/lib/job/ckpts"
)]
pub struct LsArgs {
    /// The checkpoint storage: a directory, file:///dir, s3://bucket/prefix (with the usual
    /// AWS_* variables) or memory://. Never created or changed.
    storage: String,
    /// Also list every subtask of every checkpoint (key groups, kind, files, bytes).
    #[arg(long)]
    subtasks: bool,
    /// Print JSON (the fields documented on `LsReport`) instead of tables.
    #[arg(long)]
    json: bool,
}

/// An inclusive range of key groups, `[start, end]`, in JSON: `{"start": 0, "end": 63}`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupSpan {
    /// First key group.
    pub start: u32,
    /// Last key group (inclusive).
    pub end: u32,
}

impl From<KeyGroupRange> for KeyGroupSpan {
    fn from(range: KeyGroupRange) -> Self {
        Self {
            start: range.start().get(),
            end: range.end().get(),
        }
    }
}

impl fmt::Display for KeyGroupSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end)
    }
}

/// The JSON output of `flowstate ls --json`. Field names are stable.
#[derive(Serialize, Debug)]
pub struct LsReport {
    /// The storage listed, as a URL (`file:///abs/dir`, `s3://bucket/prefix`, ...).
    pub storage: String,
    /// Every checkpoint directory (`chk-<id>/`), by ascending id: completed checkpoints and
    /// directories without a manifest.
    pub checkpoints: Vec<CheckpointReport>,
    /// The shared files retained checkpoints use, and the registry copy's state.
    pub registry: RegistryReport,
    /// Files under `shared/` that no retained checkpoint references: left by aborted or still
    /// pending checkpoints (the coordinator deletes them once nothing is pending).
    pub unreferenced_shared_files: Vec<FileReport>,
}

/// One checkpoint directory.
#[derive(Serialize, Debug)]
pub struct CheckpointReport {
    /// The checkpoint id.
    pub id: u64,
    /// `retained`: its manifest exists and reads back (a completed checkpoint retention kept:
    /// restorable); `incomplete`: a directory without a manifest (a pending or aborted
    /// checkpoint, or a leftover the coordinator removes); `unreadable`: its manifest exists but
    /// cannot be read (see `problem`).
    pub status: &'static str,
    /// True for `retained`.
    pub retained: bool,
    /// Why the manifest cannot be read (`unreadable` only).
    pub problem: Option<String>,
    /// When the manifest was written (the checkpoint completed), RFC 3339 in UTC; `null` when
    /// there is no manifest.
    pub time: Option<String>,
    /// The parallelism it was taken at (from the manifest).
    pub parallelism: Option<u32>,
    /// The max parallelism (number of key groups) of its state.
    pub max_parallelism: Option<u32>,
    /// Every subtask's part, by subtask index (empty without a readable manifest).
    pub subtasks: Vec<SubtaskReport>,
    /// Number of distinct state files the checkpoint references (without a manifest: the
    /// files in its directory).
    pub files: usize,
    /// Bytes of those files (the manifest itself not counted).
    pub total_bytes: u64,
    /// Bytes of those that are shared files (under `shared/`, possibly used by other
    /// checkpoints too).
    pub shared_bytes: u64,
    /// Bytes of those in the checkpoint's own directory.
    pub exclusive_bytes: u64,
}

/// One subtask's part of a checkpoint.
#[derive(Serialize, Debug)]
pub struct SubtaskReport {
    pub subtask_index: u32,
    /// The key groups it owned.
    pub key_groups: KeyGroupSpan,
    /// Its keyed state handle: `canonical` (one portable file), `changelog` (a canonical base
    /// plus `deltas` delta files), `native` (backend files, see `native_backend`) or `none`.
    pub kind: &'static str,
    /// The backend of a native handle (`rocksdb`).
    pub native_backend: Option<String>,
    /// The number of delta files of a changelog handle (0 otherwise).
    pub deltas: usize,
    /// Files of the keyed state handle.
    pub keyed_files: usize,
    /// Bytes of the keyed state handle.
    pub keyed_bytes: u64,
    /// Bytes of the operator-state file (0 without one).
    pub operator_bytes: u64,
    /// Bytes of its files that are shared.
    pub shared_bytes: u64,
}

/// The shared-state registry: derived from the retained checkpoints' manifests (the source
/// of truth), with who created each file from the registry copy, and how the copy compares.
#[derive(Serialize, Debug)]
pub struct RegistryReport {
    /// The registry copy `_shared_registry.json`: `present`, `missing` or `unreadable`.
    pub stored_copy: &'static str,
    /// Why the copy cannot be read (`unreadable` only).
    pub stored_copy_problem: Option<String>,
    /// Every shared file a retained checkpoint references, by path.
    pub files: Vec<SharedFileReport>,
    /// Shared files the copy lists as unreferenced and waiting to be deleted.
    pub deferred_deletes: Vec<String>,
    /// Where the copy disagrees with the manifests (it is rewritten at every completed
    /// checkpoint; a difference means it is stale or a manifest could not be read).
    pub discrepancies: Vec<String>,
}

/// One shared file of the registry.
#[derive(Serialize, Debug)]
pub struct SharedFileReport {
    /// Path relative to the storage root (`shared/...`).
    pub path: String,
    /// Size in bytes, as the manifests record it.
    pub size: u64,
    /// The first checkpoint that referenced it (from the copy when it knows an older one,
    /// which retention may have dropped since).
    pub created_by: u64,
    /// The retained checkpoints that reference it, ascending.
    pub used_by: Vec<u64>,
    /// False when the storage listing does not show the file: a retained checkpoint
    /// references a missing file (run `flowstate verify`).
    pub present: bool,
}

/// A file and its size.
#[derive(Serialize, Debug)]
pub struct FileReport {
    pub path: String,
    pub size: u64,
}

/// Opens a storage for reading, with the error naming it.
pub fn open_storage(location: &str) -> Result<CheckpointStorage> {
    Ok(CheckpointStorage::open_existing(location)?)
}

/// What one listing of the storage holds, grouped.
struct Listing {
    /// Files of each checkpoint directory.
    dirs: BTreeMap<CheckpointId, Vec<(String, u64)>>,
    /// Files under `shared/`.
    shared: BTreeMap<String, u64>,
}

async fn list_storage(storage: &CheckpointStorage) -> Result<Listing> {
    let files = storage
        .list("")
        .await
        .with_context(|| format!("listing the checkpoint storage {storage}"))?;
    let mut listing = Listing {
        dirs: BTreeMap::new(),
        shared: BTreeMap::new(),
    };
    for (path, size) in files {
        let Some((dir, _)) = path.split_once('/') else {
            continue;
        };
        if dir == "shared" {
            listing.shared.insert(path, size);
        } else if let Some(id) = CheckpointStorage::parse_checkpoint_dir(dir) {
            listing.dirs.entry(id).or_default().push((path, size));
        }
    }
    Ok(listing)
}

/// `kind` label and delta count of a subtask's keyed handle.
fn handle_kind(handle: Option<&KeyedStateHandle>) -> (&'static str, Option<String>, usize) {
    match handle {
        None => ("none", None, 0),
        Some(KeyedStateHandle::Canonical { .. }) => ("canonical", None, 0),
        Some(KeyedStateHandle::Changelog { deltas, .. }) => ("changelog", None, deltas.len()),
        Some(KeyedStateHandle::Native { backend, .. }) => ("native", Some(backend.clone()), 0),
    }
}

/// A subtask's handle for people: `changelog base+2`, `native rocksdb (5 files)`.
fn kind_label(s: &SubtaskReport) -> String {
    match s.kind {
        "changelog" => format!("changelog base+{}", s.deltas),
        "native" => format!(
            "native {} ({} files)",
            s.native_backend.as_deref().unwrap_or("?"),
            s.keyed_files
        ),
        other => other.to_string(),
    }
}

/// The subtasks' kinds in one cell: runs of equal kinds counted (`changelog base+1 x3`).
fn kinds_summary(subtasks: &[SubtaskReport]) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for s in subtasks {
        let label = match s.kind {
            // Native file counts differ per subtask; the kind is what matters here.
            "native" => format!("native {}", s.native_backend.as_deref().unwrap_or("?")),
            _ => kind_label(s),
        };
        match runs.last_mut() {
            Some((last, n)) if *last == label => *n += 1,
            _ => runs.push((label, 1)),
        }
    }
    if runs.is_empty() {
        return "-".into();
    }
    runs.into_iter()
        .map(|(label, n)| {
            if n == 1 {
                label
            } else {
                format!("{label} x{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn distinct_files(manifest: &CheckpointManifest) -> BTreeMap<&str, &FileRef> {
    manifest
        .files()
        .into_iter()
        .map(|f| (f.path.as_str(), f))
        .collect()
}

fn checkpoint_report(manifest: &CheckpointManifest, time: Option<String>) -> CheckpointReport {
    let subtasks = manifest
        .subtasks
        .iter()
        .map(|s| {
            let (kind, native_backend, deltas) = handle_kind(s.keyed.as_ref());
            let keyed: Vec<&FileRef> = s.keyed.iter().flat_map(|k| k.files()).collect();
            let shared_bytes = keyed
                .iter()
                .copied()
                .chain(s.operator.iter())
                .filter(|f| f.shared)
                .map(|f| f.size)
                .sum();
            SubtaskReport {
                subtask_index: s.subtask_index,
                key_groups: s.key_group_range.into(),
                kind,
                native_backend,
                deltas,
                keyed_files: keyed.len(),
                keyed_bytes: keyed.iter().map(|f| f.size).sum(),
                operator_bytes: s.operator.as_ref().map_or(0, |f| f.size),
                shared_bytes,
            }
        })
        .collect();
    let files = distinct_files(manifest);
    let total_bytes = files.values().map(|f| f.size).sum();
    let shared_bytes = files.values().filter(|f| f.shared).map(|f| f.size).sum();
    CheckpointReport {
        id: manifest.checkpoint_id.get(),
        status: "retained",
        retained: true,
        problem: None,
        time,
        parallelism: Some(manifest.parallelism.get()),
        max_parallelism: Some(manifest.max_parallelism.get()),
        subtasks,
        files: files.len(),
        total_bytes,
        shared_bytes,
        exclusive_bytes: total_bytes - shared_bytes,
    }
}

/// A checkpoint directory without a readable manifest, from its listing.
fn directory_report(
    id: CheckpointId,
    files: &[(String, u64)],
    problem: Option<String>,
) -> CheckpointReport {
    let state_files: Vec<&(String, u64)> = files
        .iter()
        .filter(|(path, _)| *path != CheckpointStorage::manifest_path(id))
        .collect();
    let bytes = state_files.iter().map(|(_, size)| size).sum();
    CheckpointReport {
        id: id.get(),
        status: if problem.is_some() {
            "unreadable"
        } else {
            "incomplete"
        },
        retained: false,
        problem,
        time: None,
        parallelism: None,
        max_parallelism: None,
        subtasks: Vec::new(),
        files: state_files.len(),
        total_bytes: bytes,
        shared_bytes: 0,
        exclusive_bytes: bytes,
    }
}

/// The registry from the manifests, compared with the stored copy.
async fn registry_report(
    storage: &CheckpointStorage,
    manifests: &[CheckpointManifest],
    listing: &Listing,
) -> Result<RegistryReport> {
    let mut derived: BTreeMap<String, (u64, BTreeSet<u64>)> = BTreeMap::new();
    for manifest in manifests {
        for file in distinct_files(manifest).values().filter(|f| f.shared) {
            derived
                .entry(file.path.clone())
                .or_insert_with(|| (file.size, BTreeSet::new()))
                .1
                .insert(manifest.checkpoint_id.get());
        }
    }
    let bytes = storage
        .get_if_exists(REGISTRY_FILE)
        .await
        .with_context(|| format!("reading {REGISTRY_FILE} of {storage}"))?;
    let (stored_copy, stored_copy_problem, copy) = match bytes {
        None => ("missing", None, None),
        Some(bytes) => match serde_json::from_slice::<SharedStateRegistry>(&bytes) {
            Ok(copy) => ("present", None, Some(copy)),
            Err(e) => (
                "unreadable",
                Some(format!("{REGISTRY_FILE} is not a registry ({e}); the next completed checkpoint rewrites it")),
                None,
            ),
        },
    };
    let mut discrepancies = Vec::new();
    let mut files = Vec::new();
    for (path, (size, used_by)) in &derived {
        let stored = copy.as_ref().and_then(|c| c.files.get(path));
        let first_user = used_by.iter().next().copied().unwrap_or_default();
        let created_by = stored.map_or(first_user, |e| e.created_by.get().min(first_user));
        if let Some(copy) = &copy {
            match copy.files.get(path) {
                None => discrepancies.push(format!(
                    "{path} is used by checkpoints {} but the stored copy does not list it",
                    ids(used_by.iter().copied())
                )),
                Some(entry) => {
                    let stored_users: BTreeSet<u64> =
                        entry.used_by.iter().map(|id| id.get()).collect();
                    if stored_users != *used_by {
                        discrepancies.push(format!(
                            "{path}: the stored copy says used by {}, the manifests by {}",
                            ids(stored_users.iter().copied()),
                            ids(used_by.iter().copied())
                        ));
                    }
                }
            }
        }
        files.push(SharedFileReport {
            path: path.clone(),
            size: *size,
            created_by,
            used_by: used_by.iter().copied().collect(),
            present: listing.shared.contains_key(path),
        });
    }
    let mut deferred_deletes = Vec::new();
    if let Some(copy) = &copy {
        for (path, entry) in &copy.files {
            if !derived.contains_key(path) {
                discrepancies.push(format!(
                    "the stored copy lists {path} as used by {}, but no retained checkpoint references it",
                    ids(entry.used_by.iter().map(|id| id.get()))
                ));
            }
        }
        deferred_deletes = copy.deferred_deletes.iter().cloned().collect();
    }
    Ok(RegistryReport {
        stored_copy,
        stored_copy_problem,
        files,
        deferred_deletes,
        discrepancies,
    })
}

fn ids(ids: impl Iterator<Item = u64>) -> String {
    let list: Vec<String> = ids.map(|id| id.to_string()).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

pub async fn run(args: LsArgs) -> Result<()> {
    let storage = open_storage(&args.storage)?;
    let report = build_report(&storage, args.json).await?;
    if args.json {
        return output::print_json(&report);
    }
    print_human(&report, args.subtasks);
    Ok(())
}

async fn build_report(storage: &CheckpointStorage, json: bool) -> Result<LsReport> {
    let listing = list_storage(storage).await?;
    let with_manifest: Vec<CheckpointId> = listing
        .dirs
        .iter()
        .filter(|(id, files)| {
            let manifest = CheckpointStorage::manifest_path(**id);
            files.iter().any(|(path, _)| *path == manifest)
        })
        .map(|(id, _)| *id)
        .collect();
    let bar = output::progress(with_manifest.len() as u64, "reading manifests", json);
    let mut manifests = Vec::new();
    let mut checkpoints = Vec::new();
    for (id, files) in &listing.dirs {
        if !with_manifest.contains(id) {
            checkpoints.push(directory_report(*id, files, None));
            continue;
        }
        let path = CheckpointStorage::manifest_path(*id);
        let time = storage
            .head(&path)
            .await
            .with_context(|| format!("reading the time of {path} in {storage}"))?
            .map(|meta| rfc3339(meta.last_modified.timestamp()));
        match storage.read_manifest(*id).await {
            Ok(manifest) => {
                checkpoints.push(checkpoint_report(&manifest, time));
                manifests.push(manifest);
            }
            // Damaged, unknown version, invalid: shown, not fatal (other checkpoints list).
            Err(
                e @ (flowstate_api::Error::Corrupt { .. }
                | flowstate_api::Error::UnsupportedFormatVersion { .. }
                | flowstate_api::Error::InvalidPath { .. }),
            ) => {
                let mut report = directory_report(*id, files, Some(e.to_string()));
                report.time = time;
                checkpoints.push(report);
            }
            // Deleted between the listing and the read (retention of a running job).
            Err(flowstate_api::Error::CheckpointNotFound { .. }) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("reading the manifest {path} of {storage}")))
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let registry = registry_report(storage, &manifests, &listing).await?;
    let referenced: BTreeSet<&str> = registry.files.iter().map(|f| f.path.as_str()).collect();
    let unreferenced_shared_files = listing
        .shared
        .iter()
        .filter(|(path, _)| !referenced.contains(path.as_str()))
        .map(|(path, size)| FileReport {
            path: path.clone(),
            size: *size,
        })
        .collect();
    Ok(LsReport {
        storage: storage.location().to_string(),
        checkpoints,
        registry,
        unreferenced_shared_files,
    })
}

fn print_human(report: &LsReport, subtasks: bool) {
    let retained = report.checkpoints.iter().filter(|c| c.retained).count();
    let others = report.checkpoints.len() - retained;
    if report.checkpoints.is_empty() {
        println!("{}: no checkpoints", report.storage);
    } else {
        println!(
            "{}: {retained} retained checkpoint{}{}",
            report.storage,
            if retained == 1 { "" } else { "s" },
            if others > 0 {
                format!(", {others} not completed")
            } else {
                String::new()
            }
        );
        println!();
        let rows: Vec<Vec<String>> = report
            .checkpoints
            .iter()
            .map(|c| {
                vec![
                    c.id.to_string(),
                    c.status.to_string(),
                    c.time
                        .as_deref()
                        .map_or("-".into(), |t| t.replace('T', " ").replace('Z', "")),
                    opt(c.parallelism),
                    opt(c.max_parallelism),
                    if c.retained {
                        kinds_summary(&c.subtasks)
                    } else {
                        c.problem
                            .clone()
                            .unwrap_or_else(|| "no manifest (pending, aborted or left over)".into())
                    },
                    c.files.to_string(),
                    output::human_bytes(c.total_bytes),
                    output::human_bytes(c.shared_bytes),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "ID",
                    "STATUS",
                    "TIME (UTC)",
                    "P",
                    "MAX",
                    "KEYED STATE",
                    "FILES",
                    "TOTAL",
                    "SHARED"
                ],
                &rows
            )
        );
    }
    if subtasks {
        let rows: Vec<Vec<String>> = report
            .checkpoints
            .iter()
            .flat_map(|c| {
                c.subtasks.iter().map(move |s| {
                    vec![
                        c.id.to_string(),
                        s.subtask_index.to_string(),
                        s.key_groups.to_string(),
                        kind_label(s),
                        output::human_bytes(s.keyed_bytes),
                        output::human_bytes(s.operator_bytes),
                        output::human_bytes(s.shared_bytes),
                    ]
                })
            })
            .collect();
        if !rows.is_empty() {
            println!();
            print!(
                "{}",
                table(
                    &[
                        "CHECKPOINT",
                        "SUBTASK",
                        "KEY GROUPS",
                        "KEYED STATE",
                        "KEYED",
                        "OPERATOR",
                        "SHARED"
                    ],
                    &rows
                )
            );
        }
    }
    let registry = &report.registry;
    println!();
    if registry.files.is_empty() {
        println!("shared files: none (no retained checkpoint references a shared file)");
    } else {
        let total: u64 = registry.files.iter().map(|f| f.size).sum();
        println!(
            "shared files: {} ({}), the retained checkpoints using each:",
            registry.files.len(),
            output::human_bytes(total)
        );
        let rows: Vec<Vec<String>> = registry
            .files
            .iter()
            .map(|f| {
                vec![
                    f.path.clone(),
                    output::human_bytes(f.size),
                    f.created_by.to_string(),
                    ids(f.used_by.iter().copied()),
                    if f.present { "" } else { "MISSING" }.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["PATH", "SIZE", "CREATED BY", "USED BY", ""], &rows)
        );
    }
    match registry.stored_copy {
        "present" if registry.discrepancies.is_empty() => {
            println!("registry copy {REGISTRY_FILE}: agrees with the manifests")
        }
        "present" => println!("registry copy {REGISTRY_FILE}: differs from the manifests:"),
        "missing" => println!(
            "registry copy {REGISTRY_FILE}: none (written at the next completed checkpoint)"
        ),
        _ => println!(
            "registry copy {REGISTRY_FILE}: {}",
            registry
                .stored_copy_problem
                .as_deref()
                .unwrap_or("unreadable")
        ),
    }
    for d in &registry.discrepancies {
        println!("  {d}");
    }
    if !registry.deferred_deletes.is_empty() {
        println!(
            "{} shared files wait to be deleted: {}",
            registry.deferred_deletes.len(),
            registry.deferred_deletes.join(", ")
        );
    }
    if !report.unreferenced_shared_files.is_empty() {
        let bytes: u64 = report
            .unreferenced_shared_files
            .iter()
            .map(|f| f.size)
            .sum();
        println!(
            "{} shared files ({}) are referenced by no retained checkpoint (left by aborted or pending checkpoints; the coordinator deletes them):",
            report.unreferenced_shared_files.len(),
            output::human_bytes(bytes)
        );
        for f in &report.unreferenced_shared_files {
            println!("  {} ({})", f.path, output::human_bytes(f.size));
        }
    }
}

fn opt(value: Option<u32>) -> String {
    value.map_or("-".into(), |v| v.to_string())
}

/// Columns padded to their widest cell, two spaces apart; the last column unpadded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  1\ny    22\n");
    }
}
