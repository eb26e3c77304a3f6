//! `flowstate ls`: the checkpoints of a storage (id, time, parallelism, handle kinds, bytes,
//! retention), checkpoint directories that never completed, and the shared-state registry:
//! which shared files each retained checkpoint uses.
//!
//! Everything comes from one listing of the storage, the manifests (the source of truth) and
//! the registry copy `_shared_registry.json`, which is compared with them. Nothing is written.

mod print;
mod report;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use clap::Args;
use flowstate_api::lifecycle::SharedStateRegistry;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, FileRef, KeyedStateHandle,
};

use crate::{output, resolve};
pub use report::*;

/// The registry copy the checkpoint lifecycle writes for tools (see
/// `flowstate_api::lifecycle`).
pub use flowstate_api::lifecycle::REGISTRY_FILE;

/// `flowstate ls`'s arguments.
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

/// `kind` label, native backend and delta count of a subtask's keyed handle.
fn handle_kind(handle: Option<&KeyedStateHandle>) -> (&'static str, Option<String>, usize) {
    let Some(handle) = handle else {
        return ("none", None, 0);
    };
    let deltas = match handle {
        KeyedStateHandle::Changelog { deltas, .. } => deltas.len(),
        _ => 0,
    };
    let (kind, backend) = output::handle_kind(handle);
    (kind, backend.map(str::to_string), deltas)
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

/// Checkpoint ids for people: `3, 4`, or `none`.
fn ids(ids: impl Iterator<Item = u64>) -> String {
    let list: Vec<String> = ids.map(|id| id.to_string()).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Runs `flowstate ls`: prints the report (as JSON with `--json`).
pub async fn run(args: LsArgs) -> Result<()> {
    let storage = resolve::open_read_only(&args.storage)?;
    let report = build_report(&storage, args.json).await?;
    if args.json {
        return output::print_json(&report);
    }
    print::human(&report, args.subtasks);
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
            .map(|meta| meta.last_modified.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        match storage.read_manifest(*id).await {
            Ok(manifest) => {
                checkpoints.push(checkpoint_report(&manifest, time));
                manifests.push(manifest);
            }
            // Damaged, unknown version, invalid: shown, not fatal (other checkpoints list).
            Err(
                e @ (flowstate_api::Error::Corrupt { .. }
                | flowstate_api::Error::ChecksumMismatch { .. }
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
        .map(|(path, size)| StoredFile {
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
