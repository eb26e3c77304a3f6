//! What the arguments several commands share mean, resolved in one place so that each reads
//! and fails the same way everywhere: the storage location (opened read-only), `--checkpoint`
//! (or the latest), and `--parallelism` against a max parallelism.

use anyhow::{bail, Context, Result};
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, MaxParallelism, Parallelism,
};

/// Opens the checkpoint storage at `location`, as the user typed it, for reading: it is never
/// created (a mistyped path is an error, not a new empty directory), and the error names it.
pub fn open_read_only(location: &str) -> Result<CheckpointStorage> {
    CheckpointStorage::open_existing(location)
        .with_context(|| format!("opening the checkpoint storage {location}"))
}

/// The completed checkpoints of `storage` (those with a manifest), ascending.
pub async fn checkpoint_ids(storage: &CheckpointStorage) -> Result<Vec<CheckpointId>> {
    storage
        .list_checkpoints()
        .await
        .with_context(|| format!("listing the checkpoints of {storage}"))
}

/// `wanted` (`--checkpoint`), or the latest of `ids` without it; an error naming the
/// checkpoints that exist otherwise.
pub fn choose_checkpoint(
    storage: &CheckpointStorage,
    ids: &[CheckpointId],
    wanted: Option<u64>,
) -> Result<CheckpointId> {
    let Some(latest) = ids.last() else {
        bail!("no completed checkpoints in {storage} (no chk-<id>/_manifest.json under it): check the location, which is a job's checkpoint storage root");
    };
    match wanted {
        None => Ok(*latest),
        Some(id) if ids.contains(&CheckpointId(id)) => Ok(CheckpointId(id)),
        Some(id) => bail!(
            "checkpoint {id} has no manifest in {storage}: it was never completed or retention removed it; it holds {} (see `flowstate ls {storage}`)",
            list_ids(ids)
        ),
    }
}

/// `checkpoint 4` or `checkpoints 3, 4`.
pub fn list_ids(ids: &[CheckpointId]) -> String {
    let joined: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    match ids {
        [_] => format!("checkpoint {}", joined.join("")),
        _ => format!("checkpoints {}", joined.join(", ")),
    }
}

/// A checkpoint chosen by `--checkpoint` (or the latest), read.
pub struct Chosen {
    /// Every completed checkpoint of the storage, ascending.
    pub ids: Vec<CheckpointId>,
    /// The chosen checkpoint's manifest.
    pub manifest: CheckpointManifest,
}

/// Lists the storage's checkpoints, chooses one (see [`choose_checkpoint`]) and reads its
/// manifest.
pub async fn read_checkpoint(storage: &CheckpointStorage, wanted: Option<u64>) -> Result<Chosen> {
    let ids = checkpoint_ids(storage).await?;
    let id = choose_checkpoint(storage, &ids, wanted)?;
    let manifest = storage.read_manifest(id).await.with_context(|| {
        format!(
            "reading the manifest of checkpoint {id} in {storage}{}",
            if wanted.is_none() {
                " (the latest; pick another with --checkpoint)"
            } else {
                ""
            }
        )
    })?;
    Ok(Chosen { ids, manifest })
}

/// `--parallelism p` checked against the max parallelism `max`, which `max_source` names
/// (`--max-parallelism 4`, `the max parallelism 128 of checkpoint 4`): a job has at least one
/// subtask and at most one per key group.
pub fn parallelism_within(p: u32, max: MaxParallelism, max_source: &str) -> Result<Parallelism> {
    if p > max.get() {
        bail!(
            "--parallelism {p} is above {max_source}: a job has at most one subtask per key group, so at most {max} subtasks; give a parallelism in 1..={max}"
        );
    }
    Parallelism::new(p).with_context(|| format!("--parallelism {p}: a job has at least 1 subtask"))
}

/// `--parallelism p` for restoring `manifest`'s checkpoint: within its max parallelism.
pub fn parallelism_for(p: u32, manifest: &CheckpointManifest) -> Result<Parallelism> {
    let max = manifest.max_parallelism;
    let source = format!(
        "the max parallelism {max} of checkpoint {}",
        manifest.checkpoint_id
    );
    parallelism_within(p, max, &source)
}

/// Refuses a storage that holds anything (checkpoints of a job, or files a coordinator would
/// collect) before a command that writes checkpoints opens a coordinator on it: opening one
/// fences off the job already using the storage and applies retention to its checkpoints.
/// `rule` says what the command does instead (the end of the message).
pub async fn require_empty(storage: &CheckpointStorage, rule: &str) -> Result<()> {
    let files = storage
        .list("")
        .await
        .with_context(|| format!("listing the storage {storage}"))?;
    let Some((first, _)) = files.first() else {
        return Ok(());
    };
    let checkpoints = storage.list_checkpoints().await.unwrap_or_default();
    let what = if checkpoints.is_empty() {
        format!(
            "{} (such as {first})",
            crate::output::plural(files.len(), "file")
        )
    } else {
        list_ids(&checkpoints)
    };
    bail!("the storage {storage} is not empty: it holds {what}. {rule}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_chosen_is_the_latest_or_the_one_asked_for_if_it_exists() {
        let storage = CheckpointStorage::open("memory://").unwrap();
        let ids = [CheckpointId(3), CheckpointId(4)];
        assert_eq!(
            choose_checkpoint(&storage, &ids, None).unwrap(),
            CheckpointId(4)
        );
        assert_eq!(
            choose_checkpoint(&storage, &ids, Some(3)).unwrap(),
            CheckpointId(3)
        );
        let missing = choose_checkpoint(&storage, &ids, Some(9))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("checkpoint 9 has no manifest")
                && missing.contains("checkpoints 3, 4"),
            "{missing}"
        );
        let none = choose_checkpoint(&storage, &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            none.contains("no completed checkpoints in memory://"),
            "{none}"
        );
    }

    #[test]
    fn a_parallelism_is_between_one_and_the_max() {
        let max = MaxParallelism::new(4).unwrap();
        assert_eq!(
            parallelism_within(4, max, "--max-parallelism 4")
                .unwrap()
                .get(),
            4
        );
        let above = parallelism_within(5, max, "--max-parallelism 4")
            .unwrap_err()
            .to_string();
        assert!(
            above.contains("--parallelism 5 is above --max-parallelism 4")
                && above.contains("1..=4"),
            "{above}"
        );
        let zero = format!("{:#}", parallelism_within(0, max, "x").unwrap_err());
        assert!(zero.contains("--parallelism 0"), "{zero}");
    }
}
