//! Checking the files a manifest references: present with their recorded size, and read in
//! full where flowstate knows their format. The checks are the API's: a keyed handle's files
//! through `snapshot::verify_handle` (the restore driver's checks, every problem reported),
//! presence and size through `snapshot::check_stored`. Units of work (a subtask's keyed
//! handle, its operator-state file) run a few at a time; each reports its problems.

use flowstate_api::checkpoint::check_relative_path;
use flowstate_api::snapshot::{check_stored, verify_handle, FileProblem, FileProblemKind};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, Error, FileRef, KeyedStateHandle,
    MaxParallelism, OperatorStateSnapshot,
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

    /// The report of a problem the API found with a file.
    fn file_problem(&self, subtask: Option<u32>, found: FileProblem) -> Problem {
        let kind = match found.kind {
            FileProblemKind::Missing => ProblemKind::MissingFile,
            FileProblemKind::SizeMismatch => ProblemKind::SizeMismatch,
            FileProblemKind::Unreadable => ProblemKind::Storage,
            FileProblemKind::HandleMismatch => ProblemKind::HandleMismatch,
            FileProblemKind::Chain => ProblemKind::Chain,
            FileProblemKind::Corrupt => ProblemKind::CorruptFile,
        };
        self.problem(kind, subtask, &found.path, error_text(found.error))
    }

    async fn check(&self, unit: &Unit) -> Vec<Problem> {
        let mut problems = Vec::new();
        match unit {
            Unit::Keyed { subtask, handle } => {
                // Keyed units exist only for a decoded manifest, which has a max parallelism.
                if let Some(max) = self.max {
                    for found in verify_handle(&self.storage, self.id, max, handle).await {
                        // A path a manifest may not hold is the manifest's structural problem,
                        // reported with it.
                        if !matches!(found.error, Error::InvalidPath { .. }) {
                            problems.push(self.file_problem(Some(*subtask), found));
                        }
                    }
                }
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
        match check_stored(&self.storage, file).await {
            Ok(()) => true,
            Err(found) => {
                problems.push(self.file_problem(subtask, found));
                false
            }
        }
    }

    async fn check_operator(&self, subtask: u32, file: &FileRef, problems: &mut Vec<Problem>) {
        let result = match self.storage.get(&file.path).await {
            Ok(bytes) => OperatorStateSnapshot::decode(&bytes).map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let found = FileProblem::reading(&file.path, e);
            problems.push(self.file_problem(Some(subtask), found));
        }
    }
}
