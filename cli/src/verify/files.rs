//! Checking the files a manifest references: present with their recorded size, and read in
//! full where flowstate knows their format. Units of work (a subtask's keyed handle, its
//! operator-state file) run a few at a time; each reports its problems.

use flowstate_api::checkpoint::check_relative_path;
use flowstate_api::snapshot::{
    lineage_name, read_blocks, read_info, SnapshotFileInfo, SnapshotFileKind,
};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, Error, FileRef, KeyGroupRange,
    KeyedStateHandle, MaxParallelism, OperatorStateSnapshot,
};
use indicatif::ProgressBar;
use tokio::task::JoinSet;

use super::{error_text, Problem, ProblemKind};

/// How many units are checked at once (store requests in flight, roughly).
const CONCURRENCY: usize = 8;

/// What to check.
#[derive(Clone)]
enum Unit {
    /// A subtask's keyed state handle.
    Keyed {
        subtask: u32,
        handle: KeyedStateHandle,
    },
    /// A subtask's operator-state file.
    Operator { subtask: u32, file: FileRef },
    /// A file found in the raw JSON of a manifest that does not decode.
    Loose { file: FileRef },
}

impl Unit {
    fn files(&self) -> u64 {
        match self {
            Unit::Keyed { handle, .. } => handle.files().len() as u64,
            Unit::Operator { .. } | Unit::Loose { .. } => 1,
        }
    }
}

/// What checking a checkpoint's files found.
#[derive(Default)]
pub struct FilesOutcome {
    pub problems: Vec<Problem>,
    /// Subtasks whose keyed files have a problem.
    pub damaged_keyed: Vec<u32>,
    /// True when some operator-state file has a problem (every subtask's restore reads them
    /// all).
    pub damaged_operator: bool,
}

/// The checks of one checkpoint's files, with what they need to know about it.
struct Ctx {
    storage: CheckpointStorage,
    id: CheckpointId,
    /// The manifest's max parallelism, when it has one.
    max: Option<MaxParallelism>,
}

/// The files of `manifest` (checkpoint `id`).
pub async fn check_manifest_files(
    storage: &CheckpointStorage,
    id: CheckpointId,
    manifest: &CheckpointManifest,
    bar: &ProgressBar,
) -> FilesOutcome {
    let mut units = Vec::new();
    for subtask in &manifest.subtasks {
        if let Some(handle) = &subtask.keyed {
            units.push(Unit::Keyed {
                subtask: subtask.subtask_index,
                handle: handle.clone(),
            });
        }
        if let Some(file) = &subtask.operator {
            units.push(Unit::Operator {
                subtask: subtask.subtask_index,
                file: file.clone(),
            });
        }
    }
    run_units(storage, id, Some(manifest.max_parallelism), units, bar).await
}

/// Files named by a manifest that does not decode: presence and size.
pub async fn check_loose_files(
    storage: &CheckpointStorage,
    id: CheckpointId,
    files: &[FileRef],
    bar: &ProgressBar,
) -> FilesOutcome {
    let units = files
        .iter()
        .map(|file| Unit::Loose { file: file.clone() })
        .collect();
    run_units(storage, id, None, units, bar).await
}

async fn run_units(
    storage: &CheckpointStorage,
    id: CheckpointId,
    max: Option<MaxParallelism>,
    units: Vec<Unit>,
    bar: &ProgressBar,
) -> FilesOutcome {
    let mut outcome = FilesOutcome::default();
    for chunk in units.chunks(CONCURRENCY) {
        let mut tasks = JoinSet::new();
        for unit in chunk.iter().cloned() {
            let ctx = Ctx {
                storage: storage.clone(),
                id,
                max,
            };
            tasks.spawn(async move {
                let problems = ctx.check(&unit).await;
                (unit, problems)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (unit, problems) = match joined {
                Ok(done) => done,
                Err(e) => {
                    outcome.problems.push(Problem {
                        checkpoint_id: id.get(),
                        kind: ProblemKind::Storage,
                        subtask: None,
                        file: None,
                        message: format!("a check did not finish: {e}"),
                    });
                    continue;
                }
            };
            bar.inc(unit.files());
            if problems.is_empty() {
                continue;
            }
            match &unit {
                Unit::Keyed { subtask, .. } => outcome.damaged_keyed.push(*subtask),
                Unit::Operator { .. } => outcome.damaged_operator = true,
                Unit::Loose { .. } => {}
            }
            outcome.problems.extend(problems);
        }
    }
    outcome
}

impl Ctx {
    fn problem(
        &self,
        kind: ProblemKind,
        subtask: Option<u32>,
        file: &str,
        message: String,
    ) -> Problem {
        Problem {
            checkpoint_id: self.id.get(),
            kind,
            subtask,
            file: Some(file.to_string()),
            message,
        }
    }

    async fn check(&self, unit: &Unit) -> Vec<Problem> {
        let mut problems = Vec::new();
        match unit {
            Unit::Keyed { subtask, handle } => {
                self.check_keyed(*subtask, handle, &mut problems).await
            }
            Unit::Operator { subtask, file } => {
                if self.present(Some(*subtask), file, &mut problems).await {
                    self.check_operator(*subtask, file, &mut problems).await;
                }
            }
            Unit::Loose { file } => {
                if check_relative_path(&file.path).is_err() {
                    let message = format!(
                        "'{}' is not a valid storage path (the manifest is damaged)",
                        file.path
                    );
                    problems.push(self.problem(ProblemKind::Structure, None, &file.path, message));
                } else {
                    self.present(None, file, &mut problems).await;
                }
            }
        }
        problems
    }

    /// Checks that `file` exists with its recorded size; false (with the problem) if not.
    /// Paths a manifest may not hold are left to the manifest's checks.
    async fn present(
        &self,
        subtask: Option<u32>,
        file: &FileRef,
        problems: &mut Vec<Problem>,
    ) -> bool {
        if check_relative_path(&file.path).is_err() {
            return false;
        }
        let (kind, message) = match self.storage.size_of(&file.path).await {
            Ok(Some(size)) if size == file.size => return true,
            Ok(Some(size)) => (
                ProblemKind::SizeMismatch,
                format!(
                    "{size} bytes where the manifest records {} (truncated, extended or replaced)",
                    file.size
                ),
            ),
            Ok(None) => (
                ProblemKind::MissingFile,
                format!(
                    "missing: the manifest references it ({} bytes) but it is not in the storage (deleted, or never uploaded)",
                    file.size
                ),
            ),
            Err(e) => (ProblemKind::Storage, format!("cannot be looked up: {}", error_text(e))),
        };
        problems.push(self.problem(kind, subtask, &file.path, message));
        false
    }

    async fn check_operator(&self, subtask: u32, file: &FileRef, problems: &mut Vec<Problem>) {
        let result = match self.storage.get(&file.path).await {
            Ok(bytes) => OperatorStateSnapshot::decode(&bytes).map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            problems.push(self.problem(kind_of(&e), Some(subtask), &file.path, error_text(e)));
        }
    }

    async fn check_keyed(
        &self,
        subtask: u32,
        handle: &KeyedStateHandle,
        problems: &mut Vec<Problem>,
    ) {
        let at = Some(subtask);
        let range = handle.key_group_range();
        match handle {
            KeyedStateHandle::Canonical { file, .. } => {
                if self.present(at, file, problems).await {
                    self.snapshot(
                        subtask,
                        file,
                        range,
                        SnapshotFileKind::Full,
                        "the file of a canonical handle",
                        problems,
                    )
                    .await;
                }
            }
            KeyedStateHandle::Changelog { base, deltas, .. } => {
                let files: Vec<&FileRef> = std::iter::once(base).chain(deltas).collect();
                let mut infos = Vec::with_capacity(files.len());
                for (i, file) in files.iter().enumerate() {
                    let (kind, role) = if i == 0 {
                        (SnapshotFileKind::Full, "the base of a chain")
                    } else {
                        (SnapshotFileKind::Delta, "a delta of a chain")
                    };
                    let info = if self.present(at, file, problems).await {
                        self.snapshot(subtask, file, range, kind, role, problems)
                            .await
                    } else {
                        None
                    };
                    infos.push(info);
                }
                self.chain(subtask, &files, &infos, problems);
            }
            KeyedStateHandle::Native { files, .. } => {
                // Only the backend reads these: the dry-run restore checks their contents.
                for native in files {
                    self.present(at, &native.file, problems).await;
                }
            }
        }
    }

    /// Reads a snapshot file whole (header, trailer, metadata, index, every block and its
    /// rows' encoding) and checks it against its handle; its info if it could be read.
    async fn snapshot(
        &self,
        subtask: u32,
        file: &FileRef,
        range: KeyGroupRange,
        kind: SnapshotFileKind,
        role: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<SnapshotFileInfo> {
        let at = Some(subtask);
        let info = match read_info(&self.storage, file).await {
            Ok(info) => info,
            Err(e) => {
                problems.push(self.problem(kind_of(&e), at, &file.path, error_text(e)));
                return None;
            }
        };
        let all = info.metadata.key_group_range;
        if let Err(e) = read_blocks(&self.storage, file, &info, &all, |_, _| Ok(())).await {
            problems.push(self.problem(kind_of(&e), at, &file.path, error_text(e)));
        }
        let mut mismatch = |message: String| {
            problems.push(self.problem(ProblemKind::HandleMismatch, at, &file.path, message))
        };
        let meta = &info.metadata;
        if let Some(max) = self.max.filter(|max| *max != meta.max_parallelism) {
            mismatch(format!(
                "written at max parallelism {} but the checkpoint has max parallelism {}",
                meta.max_parallelism.get(),
                max.get()
            ));
        }
        if meta.key_group_range != range {
            mismatch(format!(
                "it holds key groups {} but its handle claims {range}: the manifest does not describe this file",
                meta.key_group_range
            ));
        }
        if meta.kind != kind {
            mismatch(format!(
                "a {:?} file where the handle needs a {kind:?} file ({role})",
                meta.kind
            ));
        }
        if let Some(lineage) = meta.lineage.as_ref().filter(|l| l.checkpoint_id > self.id) {
            mismatch(format!(
                "written at checkpoint {}, after checkpoint {} that references it",
                lineage.checkpoint_id, self.id
            ));
        }
        Some(info)
    }

    /// Checks that each delta of a chain builds on the file before it (format-2 lineage), as
    /// restore does; pairs with an unreadable file are skipped (already reported).
    fn chain(
        &self,
        subtask: u32,
        files: &[&FileRef],
        infos: &[Option<SnapshotFileInfo>],
        problems: &mut Vec<Problem>,
    ) {
        for i in 1..files.len().min(infos.len()) {
            let (Some(info), Some(prev)) = (&infos[i], &infos[i - 1]) else {
                continue;
            };
            let (file, prev_file) = (files[i], files[i - 1]);
            let detail = match (&info.metadata.lineage, &prev.metadata.lineage) {
                (None, Some(_)) => Some(format!(
                    "it records no lineage but follows {}, which does",
                    prev_file.path
                )),
                (None, None) => None,
                (Some(lineage), prev_lineage) => {
                    let wanted = lineage_name(prev_file);
                    if lineage.previous.as_deref() != Some(wanted) {
                        Some(format!(
                            "it builds on '{}', not on '{wanted}' before it",
                            lineage.previous.as_deref().unwrap_or_default()
                        ))
                    } else {
                        prev_lineage
                            .as_ref()
                            .filter(|p| p.checkpoint_id >= lineage.checkpoint_id)
                            .map(|p| {
                                format!(
                                    "written at checkpoint {}, not after checkpoint {} of the file before it",
                                    lineage.checkpoint_id, p.checkpoint_id
                                )
                            })
                    }
                }
            };
            if let Some(detail) = detail {
                let message = format!(
                    "delta {i} of the chain: {detail}: a delta of the chain is missing, extra or out of order"
                );
                problems.push(self.problem(ProblemKind::Chain, Some(subtask), &file.path, message));
            }
        }
    }
}

/// The kind of problem an error reading a file is.
fn kind_of(e: &Error) -> ProblemKind {
    match e {
        Error::Storage { .. } | Error::Io { .. } => ProblemKind::Storage,
        Error::MaxParallelismMismatch { .. } => ProblemKind::HandleMismatch,
        _ => ProblemKind::CorruptFile,
    }
}
