//! The report of `flowstate plan`: its JSON fields (a stable interface) and its tables.

use serde::Serialize;

use crate::output::{self, table, KeyGroupSpan};

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
    /// Azure); `null` for local disk and memory, which read exactly the ranges asked. Every
    /// call of a restore asks for one range, so transferred and asked bytes are equal.
    pub coalesce_gap: Option<u64>,
    /// One entry per new subtask, by index.
    pub subtasks: Vec<SubtaskPlan>,
}

/// What one new subtask reads.
#[derive(Serialize, Debug)]
pub struct SubtaskPlan {
    /// The new subtask's index.
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
    /// Which part: `header`, `trailer`, `metadata+index`, `blocks` or `whole file`.
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
    /// The first byte's offset.
    pub start: u64,
    /// The offset just past the last byte.
    pub end: u64,
}

impl ByteRange {
    pub(super) fn len(self) -> u64 {
        self.end - self.start
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

pub(super) fn print_human(report: &PlanReport) {
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
    // Only a call asking for several ranges transfers more than it asks; the restore driver
    // asks for one range per call, so this is printed only if that changes.
    if let Some(gap) = report
        .coalesce_gap
        .filter(|_| report.bytes_transferred != report.bytes_read)
    {
        println!(
            "this store fetches the ranges of one call less than {} apart together: {} transferred ({} of the checkpoint)",
            output::human_bytes(gap),
            output::human_bytes(report.bytes_transferred),
            percent(report.bytes_transferred, report.checkpoint_bytes)
        );
    }
}
