//! `flowstate plan`: which files and byte ranges each new subtask reads to restore a checkpoint
//! at another parallelism, and how much that is against the checkpoint's size.
//!
//! The reads are those the restore issues, store call by store call, as the API plans them
//! from the files' indexes (read here without reading any block), from the ranges its restore
//! driver reads:
//!
//! - Keyed state through the restore driver (`flowstate_api::snapshot::restore_into`, what the
//!   heap and LMDB backends use), planned by `flowstate_api::snapshot::restore_reads`: the
//!   header and trailer, then the metadata and index, of the first handle's first file (the
//!   max-parallelism check, before anything else); then for every canonical or changelog
//!   handle overlapping the subtask's key groups, those reads of each of its files (a
//!   changelog's base and deltas are all checked before any row is applied), then per file
//!   the one contiguous span of blocks of the key groups the subtask owns (no read when the
//!   file has no block there).
//! - The RocksDB backend's restore: the same max-parallelism check, every file (whole) of each
//!   native handle overlapping the subtask's key groups, then the driver's reads above for the
//!   canonical and changelog handles (its max-parallelism check included, a second time).
//! - Operator state: every new subtask reads every old subtask's operator-state file whole
//!   (list state is redistributed, broadcast state copied, from all of them).
//!
//! Each store call asks for one range. Stores other than local disk and memory (S3, GCS,
//! Azure) would fetch the ranges of one call less than 1 MiB apart together
//! (`object_store`'s default coalescing); the plan shows both what is asked (`bytes`) and what
//! such a store transfers (`transferred_bytes`), equal while every call asks for one range.

mod report;

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::snapshot::{self, RestoreRead, SnapshotFileInfo};
use flowstate_api::{
    CheckpointManifest, CheckpointStorage, FileRef, KeyGroupRange, KeyedStateHandle, Parallelism,
};

use crate::output::{self, KeyGroupSpan};
use crate::resolve;

use report::print_human;
pub use report::{ByteRange, PlanReport, PlannedRead, SubtaskPlan};

/// `object_store`'s `OBJECT_STORE_COALESCE_DEFAULT`: ranges of one `get_ranges` call less than
/// this far apart are fetched in one request by stores using the default implementation.
const COALESCE_GAP: u64 = 1024 * 1024;

/// `flowstate plan`'s arguments.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  flowstate plan ./ckpts --parallelism 4\n  flowstate plan ./ckpts --checkpoint 12 --parallelism 4\n  flowstate plan s3://bucket/job --checkpoint 12 --parallelism 2 --json"
)]
pub struct PlanArgs {
    /// The checkpoint storage: a directory, file:///dir, s3://bucket/prefix (with the usual
    /// AWS_* variables) or memory://. Never created or changed.
    storage: String,
    /// The checkpoint to restore (default: the latest, the one a job restarts from).
    #[arg(long)]
    checkpoint: Option<u64>,
    /// The new parallelism: 1..=the checkpoint's max parallelism.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32768))]
    parallelism: u32,
    /// The backend restoring (its restore reads differ): default rocksdb for a checkpoint of
    /// native RocksDB state (only RocksDB restores it), heap otherwise (heap and LMDB read
    /// alike).
    #[arg(long, value_enum)]
    backend: Option<PlanBackend>,
    /// Print JSON (the fields documented on `PlanReport`) instead of tables.
    #[arg(long)]
    json: bool,
}

/// Which backend's restore is planned.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanBackend {
    /// The heap backend.
    Heap,
    /// The LMDB backend.
    Lmdb,
    /// The RocksDB backend.
    Rocksdb,
}

impl PlanBackend {
    fn name(self) -> &'static str {
        match self {
            PlanBackend::Heap => "heap",
            PlanBackend::Lmdb => "lmdb",
            PlanBackend::Rocksdb => "rocksdb",
        }
    }
}

/// The checkpoint's snapshot files' indexes, and the store's coalescing.
struct Planner {
    infos: HashMap<String, SnapshotFileInfo>,
    coalesce_gap: Option<u64>,
}

impl Planner {
    fn call(
        &self,
        file: &FileRef,
        purpose: &'static str,
        part: &'static str,
        ranges: Vec<ByteRange>,
        key_groups: Option<KeyGroupSpan>,
    ) -> PlannedRead {
        let bytes = ranges.iter().map(|r| r.len()).sum();
        let transferred_bytes = match self.coalesce_gap {
            Some(gap) if ranges.len() > 1 => merged(&ranges, gap).iter().map(|r| r.len()).sum(),
            _ => bytes,
        };
        PlannedRead {
            path: file.path.clone(),
            file_size: file.size,
            shared: file.shared,
            purpose,
            part,
            ranges,
            key_groups,
            bytes,
            transferred_bytes,
        }
    }

    /// A store call of the restore driver, as the API plans it.
    fn driver_call(&self, planned: RestoreRead<'_>) -> PlannedRead {
        let read = planned.read;
        let range = ByteRange {
            start: read.range.start,
            end: read.range.end,
        };
        let key_groups = read.key_groups.map(|(first, last)| KeyGroupSpan {
            start: first.get(),
            end: last.get(),
        });
        self.call(
            planned.file,
            planned.purpose.name(),
            read.part.name(),
            vec![range],
            key_groups,
        )
    }

    /// Each file's info, for the API's planning.
    fn info_of<'s>(&'s self) -> impl Fn(&FileRef) -> Option<&'s SnapshotFileInfo> + 's {
        |file| self.infos.get(&file.path)
    }

    /// `restore_into` of the restore driver (`restore_canonical_into`, natives skipped, when
    /// `skip_native`).
    fn driver_reads(
        &self,
        handles: &[KeyedStateHandle],
        target: &KeyGroupRange,
        skip_native: bool,
    ) -> Result<Vec<PlannedRead>> {
        let reads = snapshot::restore_reads(handles, target, skip_native, self.info_of())?;
        Ok(reads.into_iter().map(|r| self.driver_call(r)).collect())
    }

    /// The RocksDB backend's restore: its max-parallelism check, natives overlapping the
    /// target whole (the base, the handle overlapping most, first), then the driver for the
    /// others.
    fn rocksdb_reads(
        &self,
        handles: &[KeyedStateHandle],
        target: &KeyGroupRange,
    ) -> Result<Vec<PlannedRead>> {
        let mut reads: Vec<PlannedRead> =
            snapshot::max_parallelism_check_reads(handles, self.info_of())?
                .into_iter()
                .map(|r| self.driver_call(r))
                .collect();
        let natives: Vec<&KeyedStateHandle> = handles
            .iter()
            .filter(|h| matches!(h, KeyedStateHandle::Native { .. }))
            .filter(|h| h.key_group_range().intersection(target).is_some())
            .collect();
        if let Some(KeyedStateHandle::Native { backend, .. }) = natives.first() {
            if backend != "rocksdb" {
                bail!("the checkpoint holds native {backend} state, which the rocksdb backend cannot restore");
            }
        }
        let overlap = |h: &KeyedStateHandle| {
            h.key_group_range()
                .intersection(target)
                .map_or(0, |r| r.len())
        };
        let base = natives
            .iter()
            .enumerate()
            .max_by_key(|(i, h)| (overlap(h), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let order = base
            .into_iter()
            .chain((0..natives.len()).filter(|i| Some(*i) != base));
        for i in order {
            for file in natives[i].files() {
                reads.push(self.call(
                    file,
                    "native state",
                    "whole file",
                    vec![ByteRange {
                        start: 0,
                        end: file.size,
                    }],
                    None,
                ));
            }
        }
        reads.extend(self.driver_reads(handles, target, true)?);
        Ok(reads)
    }
}

/// Ranges merged as `object_store::util::merge_ranges` merges them.
fn merged(ranges: &[ByteRange], gap: u64) -> Vec<ByteRange> {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<ByteRange> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start.checked_sub(last.end).is_none_or(|d| d <= gap) => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

/// Runs `flowstate plan`: prints the restore plan (as JSON with `--json`).
pub async fn run(args: PlanArgs) -> Result<()> {
    let storage = resolve::open_read_only(&args.storage)?;
    let manifest = resolve::read_checkpoint(&storage, args.checkpoint)
        .await?
        .manifest;
    let parallelism = resolve::parallelism_for(args.parallelism, &manifest)?;
    let native = crate::restore::native_backend(&manifest).map(str::to_string);
    let backend = match (args.backend, native.as_deref()) {
        (Some(PlanBackend::Rocksdb) | None, Some("rocksdb")) => PlanBackend::Rocksdb,
        (Some(chosen), Some(native)) => bail!(
            "checkpoint {} holds native {native} state, which the {} backend cannot restore: plan with --backend {native}, or convert the checkpoint to canonical first (`flowstate convert`)",
            manifest.checkpoint_id,
            chosen.name()
        ),
        (None, Some(native)) => bail!(
            "checkpoint {} holds native {native} state, which no backend of this flowstate restores",
            manifest.checkpoint_id
        ),
        (Some(chosen), None) => chosen,
        (None, None) => PlanBackend::Heap,
    };
    let report = plan(&storage, &manifest, parallelism, backend, args.json).await?;
    if args.json {
        return output::print_json(&report);
    }
    print_human(&report);
    Ok(())
}

async fn plan(
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    parallelism: Parallelism,
    backend: PlanBackend,
    json: bool,
) -> Result<PlanReport> {
    let max = manifest.max_parallelism;
    let handles = manifest.keyed_handles();
    // Every canonical and changelog file's header, trailer, metadata and index, checked as
    // the restore checks them: what the plan's arithmetic needs. No block is read.
    let files: u64 = handles
        .iter()
        .filter(|h| !matches!(h, KeyedStateHandle::Native { .. }))
        .map(|h| h.files().len() as u64)
        .sum();
    let bar = output::progress(files, "reading file indexes", json);
    let mut infos = HashMap::new();
    for handle in &handles {
        let read = snapshot::read_handle_infos(storage, max, handle)
            .await
            .with_context(|| {
                format!(
                    "reading the indexes of {} in {storage}: its restore would fail (run `flowstate verify`)",
                    handle.describe()
                )
            })?;
        for (file, info) in handle.files().into_iter().zip(read) {
            infos.insert(file.path.clone(), info);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let coalesce_gap = if storage.local_dir().is_some() || storage.location().starts_with("memory:")
    {
        None
    } else {
        Some(COALESCE_GAP)
    };
    let planner = Planner {
        infos,
        coalesce_gap,
    };

    let mut subtasks = Vec::new();
    for index in 0..parallelism.get() {
        let target = key_group_range_for_operator(max, parallelism, index)?;
        // The handle checks the restore runs before reading anything.
        snapshot::check_handles(max, target, &handles).with_context(|| {
            format!(
                "checkpoint {} cannot be restored at parallelism {parallelism}",
                manifest.checkpoint_id
            )
        })?;
        let mut reads = match backend {
            PlanBackend::Heap | PlanBackend::Lmdb => {
                planner.driver_reads(&handles, &target, false)?
            }
            PlanBackend::Rocksdb => planner.rocksdb_reads(&handles, &target)?,
        };
        for file in manifest.operator_files().iter().flatten() {
            reads.push(planner.call(
                file,
                "operator state",
                "whole file",
                vec![ByteRange {
                    start: 0,
                    end: file.size,
                }],
                None,
            ));
        }
        let files: BTreeSet<&str> = reads.iter().map(|r| r.path.as_str()).collect();
        subtasks.push(SubtaskPlan {
            subtask_index: index,
            key_groups: target.into(),
            files: files.len(),
            bytes_read: reads.iter().map(|r| r.bytes).sum(),
            bytes_transferred: reads.iter().map(|r| r.transferred_bytes).sum(),
            reads,
        });
    }
    let distinct: BTreeSet<(&str, u64)> = manifest
        .files()
        .into_iter()
        .map(|f| (f.path.as_str(), f.size))
        .collect();
    Ok(PlanReport {
        storage: storage.location().to_string(),
        checkpoint_id: manifest.checkpoint_id.get(),
        checkpoint_parallelism: manifest.parallelism.get(),
        max_parallelism: max.get(),
        parallelism: parallelism.get(),
        backend: backend.name(),
        checkpoint_bytes: distinct.iter().map(|(_, size)| size).sum(),
        bytes_read: subtasks.iter().map(|s| s.bytes_read).sum(),
        bytes_transferred: subtasks.iter().map(|s| s.bytes_transferred).sum(),
        coalesce_gap,
        subtasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn ranges_merge_like_object_store() {
        assert_eq!(merged(&[r(0, 16), r(100, 132)], 1024), vec![r(0, 132)]);
        assert_eq!(
            merged(&[r(5000, 5032), r(0, 16)], 1024),
            vec![r(0, 16), r(5000, 5032)]
        );
        assert_eq!(merged(&[r(0, 10), r(5, 8)], 0), vec![r(0, 10)]);
    }
}
