//! `flowstate plan`: which files and byte ranges each new subtask reads to restore a checkpoint
//! at another parallelism, and how much that is against the checkpoint's size.
//!
//! The reads are those the restore issues, store call by store call, derived from the same
//! arithmetic (the files' indexes, read here without reading any block):
//!
//! - Keyed state through the restore driver (`flowstate_api::snapshot::restore_into`, what the
//!   heap and LMDB backends use): first the header and trailer, then the metadata and index,
//!   of the first handle's first file (the max-parallelism check, before anything else); then
//!   for every canonical or changelog handle overlapping the subtask's key groups, those two
//!   reads of each of its files (a changelog's base and deltas are all checked before any row
//!   is applied), then per file the one contiguous span of blocks of the key groups the
//!   subtask owns (no read when the file has no block there).
//! - The RocksDB backend's restore: the same max-parallelism check, every file (whole) of each
//!   native handle overlapping the subtask's key groups, then the driver's reads above for the
//!   canonical and changelog handles (its max-parallelism check included, a second time).
//! - Operator state: every new subtask reads every old subtask's operator-state file whole
//!   (list state is redistributed, broadcast state copied, from all of them).
//!
//! On stores other than local disk and memory (S3, GCS, Azure) one store call asking for
//! several ranges is served by fetching ranges less than 1 MiB apart together (`object_store`'s
//! default coalescing): the header-and-trailer read of a file under 1 MiB then fetches the whole
//! file. The plan shows both what is asked (`bytes`) and what such a store transfers
//! (`transferred_bytes`).

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use flowstate_api::key_groups::key_group_range_for_operator;
use flowstate_api::snapshot::{self, SnapshotFileInfo, SnapshotFileKind, HEADER_LEN, TRAILER_LEN};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, FileRef, KeyGroupRange, KeyedStateHandle,
    MaxParallelism, Parallelism,
};
use serde::Serialize;

use crate::ls::{table, KeyGroupSpan};
use crate::output;

/// `object_store`'s `OBJECT_STORE_COALESCE_DEFAULT`: ranges of one `get_ranges` call less than
/// this far apart are fetched in one request by stores using the default implementation.
const COALESCE_GAP: u64 = 1024 * 1024;

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
    Heap,
    Lmdb,
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

/// The JSON output of `flowstate plan --json`. Field names are stable.
#[derive(Serialize, Debug)]
pub struct PlanReport {
    /// The storage, as a URL.
    pub storage: String,
    /// The checkpoint restored.
    pub checkpoint_id: u64,
    /// The parallelism it was taken at.
    pub checkpoint_parallelism: u32,
    /// Its max parallelism (number of key groups).
    pub max_parallelism: u32,
    /// The new parallelism planned.
    pub parallelism: u32,
    /// The backend whose restore is planned: `heap`, `lmdb` or `rocksdb`.
    pub backend: &'static str,
    /// Bytes of every distinct file the checkpoint references (keyed and operator state).
    pub checkpoint_bytes: u64,
    /// Bytes all new subtasks ask for together (`bytes_read` summed over `subtasks`).
    pub bytes_read: u64,
    /// Bytes the store transfers for them (more than `bytes_read` where it coalesces ranges).
    pub bytes_transferred: u64,
    /// The store fetches ranges of one call less than this many bytes apart together (S3, GCS,
    /// Azure); `null` for local disk and memory, which read exactly the ranges asked.
    pub coalesce_gap: Option<u64>,
    /// One entry per new subtask, by index.
    pub subtasks: Vec<SubtaskPlan>,
}

/// What one new subtask reads.
#[derive(Serialize, Debug)]
pub struct SubtaskPlan {
    pub subtask_index: u32,
    /// The key groups it will own.
    pub key_groups: KeyGroupSpan,
    /// Number of distinct files it reads.
    pub files: usize,
    /// Bytes it asks for (the sum of its reads' `bytes`).
    pub bytes_read: u64,
    /// Bytes the store transfers for them.
    pub bytes_transferred: u64,
    /// Its store calls, in the order the restore issues them (keyed and operator state are
    /// read concurrently).
    pub reads: Vec<PlannedRead>,
}

/// One store call of a restore.
#[derive(Serialize, Debug, Clone)]
pub struct PlannedRead {
    /// The file, relative to the storage root.
    pub path: String,
    /// Its size, as the manifest records it.
    pub file_size: u64,
    /// Whether it is a shared file.
    pub shared: bool,
    /// Why it is read: `max-parallelism check`, `keyed state`, `native state` or
    /// `operator state`.
    pub purpose: &'static str,
    /// Which part: `header+trailer`, `metadata+index`, `blocks` or `whole file`.
    pub part: &'static str,
    /// The byte ranges asked for in this call, each `[start, end)`, inside the file.
    pub ranges: Vec<ByteRange>,
    /// For `blocks`: the key groups of the first and last block read.
    pub key_groups: Option<KeyGroupSpan>,
    /// Bytes asked for (the ranges' lengths summed).
    pub bytes: u64,
    /// Bytes the store transfers for the call (see `PlanReport::coalesce_gap`).
    pub transferred_bytes: u64,
}

/// A byte range `[start, end)` of a file.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    fn len(self) -> u64 {
        self.end - self.start
    }
}

/// The checkpoint's snapshot files' indexes, and the store's coalescing.
struct Planner {
    infos: HashMap<String, SnapshotFileInfo>,
    max: MaxParallelism,
    coalesce_gap: Option<u64>,
}

impl Planner {
    fn info(&self, file: &FileRef) -> Result<&SnapshotFileInfo> {
        self.infos
            .get(&file.path)
            .with_context(|| format!("{} was not read while planning (a bug in plan)", file.path))
    }

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

    /// `read_info`: header and trailer in one call, then metadata and index.
    fn info_reads(&self, file: &FileRef, purpose: &'static str) -> Result<Vec<PlannedRead>> {
        let info = self.info(file)?;
        let tail = file.size - TRAILER_LEN;
        // Blocks tile [HEADER_LEN, metadata offset): the metadata starts where they end.
        let meta_offset = info
            .index
            .last()
            .map_or(HEADER_LEN, |last| last.offset + last.length);
        Ok(vec![
            self.call(
                file,
                purpose,
                "header+trailer",
                vec![
                    ByteRange {
                        start: 0,
                        end: HEADER_LEN,
                    },
                    ByteRange {
                        start: tail,
                        end: file.size,
                    },
                ],
                None,
            ),
            self.call(
                file,
                purpose,
                "metadata+index",
                vec![ByteRange {
                    start: meta_offset,
                    end: tail,
                }],
                None,
            ),
        ])
    }

    /// `read_blocks` of the key groups of `target` in the file: one span, or nothing.
    fn block_read(&self, file: &FileRef, target: &KeyGroupRange) -> Result<Option<PlannedRead>> {
        let info = self.info(file)?;
        let Some(range) = info.metadata.key_group_range.intersection(target) else {
            return Ok(None);
        };
        let blocks = info.blocks_in(&range);
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
            return Ok(None);
        };
        Ok(Some(self.call(
            file,
            "keyed state",
            "blocks",
            vec![ByteRange {
                start: first.offset,
                end: last.offset + last.length,
            }],
            Some(KeyGroupSpan {
                start: first.key_group.get(),
                end: last.key_group.get(),
            }),
        )))
    }

    /// `check_max_parallelism`: the first handle's first file's info (nothing for a native
    /// handle, whose max parallelism is in the manifest).
    fn max_check(&self, handles: &[KeyedStateHandle]) -> Result<Vec<PlannedRead>> {
        match handles.first() {
            Some(KeyedStateHandle::Canonical { file, .. })
            | Some(KeyedStateHandle::Changelog { base: file, .. }) => {
                self.info_reads(file, "max-parallelism check")
            }
            _ => Ok(Vec::new()),
        }
    }

    /// `restore_handles` of the restore driver (natives skipped when `skip_native`).
    fn driver_reads(
        &self,
        handles: &[KeyedStateHandle],
        target: &KeyGroupRange,
        skip_native: bool,
    ) -> Result<Vec<PlannedRead>> {
        let mut reads = self.max_check(handles)?;
        for handle in handles {
            if handle.key_group_range().intersection(target).is_none() {
                continue;
            }
            match handle {
                KeyedStateHandle::Canonical { file, .. } => {
                    reads.extend(self.info_reads(file, "keyed state")?);
                    reads.extend(self.block_read(file, target)?);
                }
                KeyedStateHandle::Changelog { base, deltas, .. } => {
                    let files: Vec<&FileRef> = std::iter::once(base).chain(deltas).collect();
                    for file in &files {
                        reads.extend(self.info_reads(file, "keyed state")?);
                    }
                    for file in &files {
                        reads.extend(self.block_read(file, target)?);
                    }
                }
                KeyedStateHandle::Native { backend, .. } => {
                    if !skip_native {
                        bail!(
                            "the checkpoint holds native {backend} state, which only the {backend} backend restores: plan with --backend {backend} (or convert the checkpoint to canonical first)"
                        );
                    }
                }
            }
        }
        Ok(reads)
    }

    /// The RocksDB backend's restore: natives overlapping the target whole (the base, the
    /// handle overlapping most, first), then the driver for the others.
    fn rocksdb_reads(
        &self,
        handles: &[KeyedStateHandle],
        target: &KeyGroupRange,
    ) -> Result<Vec<PlannedRead>> {
        let mut reads = self.max_check(handles)?;
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

/// Checks a file's index against its handle, as the restore does before reading rows.
fn check_file(
    info: &SnapshotFileInfo,
    file: &FileRef,
    handle_range: KeyGroupRange,
    kind: SnapshotFileKind,
    max: MaxParallelism,
) -> Result<()> {
    if info.metadata.max_parallelism != max {
        bail!(
            "{} was written at max parallelism {} but the checkpoint says {}: its restore would fail (run `flowstate verify`)",
            file.path,
            info.metadata.max_parallelism,
            max
        );
    }
    if info.metadata.key_group_range != handle_range {
        bail!(
            "{} holds key groups {} but its handle claims {handle_range}: its restore would fail (run `flowstate verify`)",
            file.path,
            info.metadata.key_group_range
        );
    }
    if info.metadata.kind != kind {
        bail!(
            "{} is a {:?} file where its handle needs a {kind:?} file: its restore would fail (run `flowstate verify`)",
            file.path,
            info.metadata.kind
        );
    }
    Ok(())
}

/// The checkpoint asked for, or the latest; a clear error naming what exists otherwise.
pub async fn select_checkpoint(
    storage: &CheckpointStorage,
    wanted: Option<u64>,
) -> Result<CheckpointManifest> {
    let ids = storage
        .list_checkpoints()
        .await
        .with_context(|| format!("listing the checkpoints of {storage}"))?;
    let available = || {
        if ids.is_empty() {
            "it holds no completed checkpoint".to_string()
        } else {
            let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            format!("it holds checkpoints {}", list.join(", "))
        }
    };
    let id = match wanted {
        Some(id) if ids.contains(&CheckpointId(id)) => CheckpointId(id),
        Some(id) => bail!(
            "checkpoint {id} not found in {storage}: {} (see `flowstate ls {storage}`)",
            available()
        ),
        None => match ids.last() {
            Some(id) => *id,
            None => bail!(
                "no checkpoint to plan in {storage}: {} (is this the job's checkpoint storage?)",
                available()
            ),
        },
    };
    storage.read_manifest(id).await.with_context(|| {
        format!(
            "reading the manifest of checkpoint {id} in {storage}{}",
            if wanted.is_none() {
                " (the latest; pick another with --checkpoint)"
            } else {
                ""
            }
        )
    })
}

pub async fn run(args: PlanArgs) -> Result<()> {
    let storage = crate::ls::open_storage(&args.storage)?;
    let manifest = select_checkpoint(&storage, args.checkpoint).await?;
    let max = manifest.max_parallelism;
    if args.parallelism > max.get() {
        bail!(
            "--parallelism {} is above the max parallelism {max} of checkpoint {}: its state has {max} key groups, so at most {max} subtasks; give a parallelism in 1..={max}",
            args.parallelism,
            manifest.checkpoint_id
        );
    }
    let parallelism = Parallelism::new(args.parallelism)?;
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
    // Every canonical and changelog file's header, trailer, metadata and index (checked as
    // the restore checks them): what the plan's arithmetic needs. No block is read.
    let mut to_read: Vec<(&FileRef, KeyGroupRange, SnapshotFileKind)> = Vec::new();
    for handle in &handles {
        match handle {
            KeyedStateHandle::Canonical {
                key_group_range,
                file,
            } => to_read.push((file, *key_group_range, SnapshotFileKind::Full)),
            KeyedStateHandle::Changelog {
                key_group_range,
                base,
                deltas,
            } => {
                to_read.push((base, *key_group_range, SnapshotFileKind::Full));
                for delta in deltas {
                    to_read.push((delta, *key_group_range, SnapshotFileKind::Delta));
                }
            }
            KeyedStateHandle::Native { .. } => {}
        }
    }
    let bar = output::progress(to_read.len() as u64, "reading file indexes", json);
    let mut infos = HashMap::new();
    for (file, range, kind) in to_read {
        let info = snapshot::read_info(storage, file)
            .await
            .with_context(|| format!("reading the index of {} in {storage}", file.path))?;
        check_file(&info, file, range, kind, max)?;
        infos.insert(file.path.clone(), info);
        bar.inc(1);
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
        max,
        coalesce_gap,
    };

    let mut subtasks = Vec::new();
    for index in 0..parallelism.get() {
        let target = key_group_range_for_operator(max, parallelism, index)?;
        // The handle checks the restore runs before reading anything.
        snapshot::check_handles(planner.max, target, &handles).with_context(|| {
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

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn print_human(report: &PlanReport) {
    println!(
        "restoring checkpoint {} of {} (parallelism {}, max parallelism {}, {}) at parallelism {} with the {} backend:",
        report.checkpoint_id,
        report.storage,
        report.checkpoint_parallelism,
        report.max_parallelism,
        output::human_bytes(report.checkpoint_bytes),
        report.parallelism,
        report.backend
    );
    for s in &report.subtasks {
        println!();
        println!(
            "subtask {}, key groups {}: reads {} ({} of the checkpoint) from {} files{}",
            s.subtask_index,
            s.key_groups,
            output::human_bytes(s.bytes_read),
            percent(s.bytes_read, report.checkpoint_bytes),
            s.files,
            if s.bytes_transferred != s.bytes_read {
                format!(
                    "; the store transfers {}",
                    output::human_bytes(s.bytes_transferred)
                )
            } else {
                String::new()
            }
        );
        let rows: Vec<Vec<String>> = s
            .reads
            .iter()
            .map(|r| {
                let ranges: Vec<String> = r
                    .ranges
                    .iter()
                    .map(|b| format!("{}..{}", b.start, b.end))
                    .collect();
                vec![
                    r.path.clone(),
                    match r.key_groups {
                        Some(kg) => format!("{} {kg}", r.part),
                        None => r.part.to_string(),
                    },
                    ranges.join(", "),
                    output::human_bytes(r.bytes),
                    r.purpose.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["FILE", "PART", "BYTES [START..END)", "SIZE", "PURPOSE"],
                &rows
            )
        );
    }
    println!();
    println!(
        "in total: {} read by {} subtasks, {} of the checkpoint's {}",
        output::human_bytes(report.bytes_read),
        report.subtasks.len(),
        percent(report.bytes_read, report.checkpoint_bytes),
        output::human_bytes(report.checkpoint_bytes)
    );
    if let Some(gap) = report.coalesce_gap {
        println!(
            "this store fetches the ranges of one call less than {} apart together: {} transferred ({} of the checkpoint)",
            output::human_bytes(gap),
            output::human_bytes(report.bytes_transferred),
            percent(report.bytes_transferred, report.checkpoint_bytes)
        );
    }
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
