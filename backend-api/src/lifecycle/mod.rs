//! The checkpoint lifecycle: ids, pending / completed / aborted, retention, the shared-state
//! registry that decides when a shared file may be deleted, and the fencing that keeps one
//! writer per storage root.
//!
//! One [`CheckpointLifecycle`] runs per job (the engine's checkpoint coordinator owns it):
//!
//! 1. [`open`](CheckpointLifecycle::open) claims the storage root (a fencing epoch, below),
//!    reads every manifest, rebuilds the registry and applies retention.
//! 2. [`begin`](CheckpointLifecycle::begin) hands out the next (increasing) id; the checkpoint
//!    is **pending**. Subtasks snapshot their backends and upload.
//! 3. [`complete`](CheckpointLifecycle::complete) validates the manifest, checks that every
//!    file it references exists with its size, and writes the manifest create-only: the
//!    checkpoint is now visible. Then it registers the shared files, subsumes older pending
//!    checkpoints and applies retention: the oldest completed checkpoints beyond the configured
//!    number are dropped (manifest first, so a dropped checkpoint is never half-visible; then
//!    its own files; then every shared file no retained checkpoint references any more).
//!    The engine then notifies the backends, so only completed checkpoints become bases.
//! 4. [`abort`](CheckpointLifecycle::abort) drops a pending checkpoint and its own files.
//!
//! # What a completed checkpoint promises
//!
//! `complete` returning `Ok` means the manifest is durable in the store (on local disk every
//! write is fsynced with its directory; see [`CheckpointStorage::local`]), valid
//! ([`CheckpointManifest::validate`]: every subtask once, Flink's key-group ranges, canonical
//! file paths) and checksummed, and that every file it references existed with its recorded
//! size when it was published. Nothing it references is deleted while it is retained.
//! `complete` returning `Err` means it was **not** published and nothing was deleted; the
//! checkpoint stays pending (abort it). Once the manifest is written, later failures (the
//! registry copy, deletes, a fencing noticed afterwards) are logged and listed in
//! [`CompletionReport::warnings`], never returned. The one exception is a store that fails the
//! manifest write and then also the read-back that would tell whether it landed: `complete`
//! returns the error and [`abort`](CheckpointLifecycle::abort) deletes the manifest first.
//!
//! # One writer per storage root: fencing
//!
//! `open` claims the next epoch with a create-only write of `_coordinator/epoch-<N+1>`.
//! Before every change (manifest write, each batch of deletes, the registry copy) the
//! lifecycle lists `_coordinator/`; once a higher epoch exists, every mutating call
//! (`complete`, `abort`, `collect_garbage`) returns [`Error::Fenced`] and deletes nothing.
//! The check runs after the listing a batch of deletes was computed from, so every file it
//! deletes existed before the newer coordinator claimed the root: a zombie never deletes a
//! file the newer coordinator wrote. The window that remains is the one request after a
//! check: a zombie whose check passed just before the claim may still land one manifest
//! write (or finish one batch of deletes of files it already owned). Create-only manifests
//! keep that safe: it cannot overwrite a manifest, the newer coordinator's ids are above
//! every checkpoint directory it saw so it never writes the same id, and the newer
//! coordinator does not delete anything it found unreferenced at `open` (directories without
//! a manifest, unreferenced shared files) until it has completed a checkpoint of its own; so
//! a manifest landing in the window references files that still exist, and is older than
//! anything the newer coordinator publishes. Subtask uploads are not fenced: a zombie's
//! subtasks may still write files, which are collected as garbage. A store without
//! create-only writes cannot be used ([`Error::ConditionalPutUnsupported`]).
//!
//! # Reading the storage at `open`
//!
//! A manifest that cannot be read (torn, damaged, an unknown version, invalid) is skipped
//! with a warning, as is the newest manifest when a file it references is missing; the
//! newest restorable one is [`latest`](CheckpointLifecycle::latest). Skipped checkpoints are
//! never deleted (an operator may repair them, or a newer flowstate read them), and while one
//! exists whose manifest cannot be read, **no shared file is deleted** (its references are
//! unknown): deletes wait in the deferred set, [`skipped`](CheckpointLifecycle::skipped)
//! says why, and removing or repairing the checkpoint's directory lifts it at the next
//! `open`. A storage error reading a manifest fails `open` instead (retry it).
//!
//! # The registry and garbage
//!
//! The **registry** is derived from the manifests, the source of truth, and rebuilt from
//! them by `open`; a copy is written to `_shared_registry.json` for operators and tools (and
//! read back for each file's creating checkpoint, which may have been dropped by retention;
//! a damaged copy is ignored). A shared file that became unreferenced is deleted only while
//! no checkpoint is pending (a pending checkpoint may have been planned on an older base
//! and still reference it); until then, and after a failed delete, it waits in the deferred
//! set and is retried at the next `complete`, `abort` or `collect_garbage`. A failed delete
//! never fails a checkpoint. With nothing pending, any shared file outside the registry is
//! a leftover of an aborted or crashed checkpoint and is removed too, which is why a storage
//! root belongs to one job. The directories of aborted and dropped checkpoints are swept again
//! at every `complete`, `abort` and `collect_garbage` (the last [`MAX_DEAD_DIRECTORIES`]
//! ids), so an upload landing after its checkpoint was aborted is collected. On local disk,
//! `open` also removes the staging files (`<name>#<n>`) interrupted writes left.

mod fence;
mod registry;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::checkpoint::{CheckpointId, CheckpointManifest, CheckpointStorage};
use crate::error::{Error, Result};
use fence::Fence;
pub use registry::{SharedFileEntry, SharedStateRegistry, REGISTRY_FILE};

/// How many completed checkpoints to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// At least 1: the latest completed checkpoint is always kept.
    pub retained_checkpoints: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            retained_checkpoints: 3,
        }
    }
}

/// What a `complete` (or `abort`, `collect_garbage`) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompletionReport {
    /// Checkpoints dropped by retention.
    pub dropped: Vec<CheckpointId>,
    /// Pending checkpoints older than the completed one, now subsumed (aborted).
    pub subsumed: Vec<CheckpointId>,
    /// Files deleted during this call.
    pub deleted_files: Vec<String>,
    /// Deletes that failed or were postponed, and will be retried.
    pub failed_deletes: Vec<String>,
    /// What went wrong after the checkpoint was published (it stays published): a failed
    /// registry copy, a failed listing, a newer coordinator noticed.
    pub warnings: Vec<String>,
}

/// How many aborted or dropped checkpoint ids are remembered, so their directories are swept
/// again (uploads landing late); older ones wait for the next `open`.
pub const MAX_DEAD_DIRECTORIES: usize = 1024;

/// What `open` found unreferenced: deleted only once this lifecycle completed a checkpoint
/// (see the module docs on fencing).
#[derive(Debug, Default)]
struct OpenLeftovers {
    dirs: BTreeSet<CheckpointId>,
    shared: BTreeSet<String>,
}

/// A job's checkpoint coordinator state. See the module docs.
#[derive(Debug)]
pub struct CheckpointLifecycle {
    storage: CheckpointStorage,
    policy: RetentionPolicy,
    next_id: CheckpointId,
    pending: BTreeSet<CheckpointId>,
    completed: BTreeMap<CheckpointId, CheckpointManifest>,
    registry: SharedStateRegistry,
    fence: Fence,
    /// Checkpoints found at `open` that are not restored and never deleted, with why.
    skipped: BTreeMap<CheckpointId, String>,
    /// A skipped manifest could not be read: its shared files are unknown, none is deleted.
    unknown_references: bool,
    /// Aborted and dropped checkpoints whose directories are swept (bounded).
    dead: BTreeSet<CheckpointId>,
    /// `None` once this lifecycle completed a checkpoint.
    open_leftovers: Option<OpenLeftovers>,
}

impl CheckpointLifecycle {
    /// Opens the lifecycle over `storage`: claims it (fencing off any earlier coordinator),
    /// removes local staging files, reads every visible checkpoint's manifest (skipping
    /// unreadable ones, see the module docs), rebuilds the registry and applies retention.
    /// Leftovers of checkpoints that never completed (directories without a manifest, shared
    /// files no manifest references) are removed once this lifecycle completed a checkpoint.
    pub async fn open(storage: CheckpointStorage, policy: RetentionPolicy) -> Result<Self> {
        if policy.retained_checkpoints == 0 {
            return Err(Error::Config(
                "retained_checkpoints must be at least 1: the latest completed checkpoint is what a job restores from".into(),
            ));
        }
        let fence = Fence::claim(&storage).await?;
        match storage.remove_local_staging_files() {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(files = ?removed, "removed staging files of interrupted writes")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "removing staging files failed; retried at the next open")
            }
        }
        let listing = storage.list("").await?;
        let mut manifests = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        let mut unknown_references = false;
        let mut dirs = BTreeSet::new();
        for (path, _) in &listing {
            let Some((dir, name)) = path.split_once('/') else {
                continue;
            };
            let Some(id) = CheckpointStorage::parse_checkpoint_dir(dir) else {
                continue;
            };
            dirs.insert(id);
            if name != "_manifest.json" {
                continue;
            }
            match storage.read_manifest(id).await {
                Ok(manifest) => {
                    manifests.insert(id, manifest);
                }
                Err(Error::CheckpointNotFound { .. }) => {}
                Err(
                    error @ (Error::Corrupt { .. }
                    | Error::ChecksumMismatch { .. }
                    | Error::UnsupportedFormatVersion { .. }
                    | Error::InvalidPath { .. }),
                ) => {
                    tracing::warn!(checkpoint = id.0, %error, "skipping a checkpoint whose manifest cannot be read; its files are kept and no shared file is deleted until it is repaired or removed");
                    skipped.insert(id, format!("its manifest cannot be read: {error}"));
                    unknown_references = true;
                }
                Err(error) => return Err(error),
            }
        }
        let mut registry = SharedStateRegistry::default();
        // The newest checkpoint must be restorable: every file it references present.
        while let Some((&id, manifest)) = manifests.iter().next_back() {
            let missing = first_missing_file(&storage, manifest).await?;
            let Some(missing) = missing else { break };
            tracing::warn!(checkpoint = id.0, %missing, "skipping the newest checkpoint: a file it references is missing; falling back to the one before, its files are kept");
            registry.register(manifest);
            skipped.insert(id, format!("it references {missing}"));
            manifests.remove(&id);
        }
        for manifest in manifests.values() {
            registry.register(manifest);
        }
        // References come from the manifests; who created a file may be a checkpoint retention
        // has dropped since, which only the registry copy still knows.
        if let Ok(bytes) = storage.get(REGISTRY_FILE).await {
            if let Ok(copy) = serde_json::from_slice::<SharedStateRegistry>(&bytes) {
                for (path, entry) in &mut registry.files {
                    if let Some(old) = copy.files.get(path) {
                        entry.created_by = entry.created_by.min(old.created_by);
                    }
                }
            }
        }
        let next_id = CheckpointId(dirs.iter().next_back().map_or(1, |m| m.0 + 1));
        let leftover_dirs = dirs
            .into_iter()
            .filter(|id| !manifests.contains_key(id) && !skipped.contains_key(id))
            .collect();
        let leftover_shared = listing
            .iter()
            .map(|(path, _)| path)
            .filter(|path| path.starts_with("shared/") && !registry.is_referenced(path))
            .cloned()
            .collect();
        let mut lifecycle = Self {
            storage,
            policy,
            next_id,
            pending: BTreeSet::new(),
            completed: manifests,
            registry,
            fence,
            skipped,
            unknown_references,
            dead: BTreeSet::new(),
            open_leftovers: Some(OpenLeftovers {
                dirs: leftover_dirs,
                shared: leftover_shared,
            }),
        };
        let mut report = CompletionReport::default();
        lifecycle.apply_retention(&mut report);
        lifecycle.collect(&mut report).await;
        lifecycle.persist_registry(&mut report).await;
        if let Some(error) = lifecycle.fence.fenced() {
            return Err(error);
        }
        Ok(lifecycle)
    }

    /// The checkpoint storage this lifecycle coordinates.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// How many completed checkpoints it retains.
    pub fn policy(&self) -> &RetentionPolicy {
        &self.policy
    }

    /// The fencing epoch this lifecycle claimed at `open`.
    pub fn epoch(&self) -> u64 {
        self.fence.epoch()
    }

    /// Checkpoints `open` found but does not restore (unreadable manifest, or newest with a
    /// missing file), with the reason. Their files are never deleted by the lifecycle.
    pub fn skipped(&self) -> &BTreeMap<CheckpointId, String> {
        &self.skipped
    }

    /// Starts a checkpoint: returns its id (greater than every id seen before).
    pub fn begin(&mut self) -> CheckpointId {
        let id = self.next_id;
        self.next_id = id.next();
        self.pending.insert(id);
        id
    }

    /// The id the next [`begin`](CheckpointLifecycle::begin) returns.
    pub fn next_id(&self) -> CheckpointId {
        self.next_id
    }

    /// Checkpoints begun and neither completed nor aborted, ascending.
    pub fn pending(&self) -> Vec<CheckpointId> {
        self.pending.iter().copied().collect()
    }

    /// Retained completed checkpoints, ascending.
    pub fn completed(&self) -> Vec<CheckpointId> {
        self.completed.keys().copied().collect()
    }

    /// The newest completed checkpoint.
    pub fn latest(&self) -> Option<&CheckpointManifest> {
        self.completed.values().next_back()
    }

    /// The manifest of a retained checkpoint.
    pub fn manifest(&self, id: CheckpointId) -> Result<&CheckpointManifest> {
        self.completed
            .get(&id)
            .ok_or(Error::CheckpointNotFound { id: id.0 })
    }

    /// The shared files of the retained checkpoints, and which checkpoints use them.
    pub fn registry(&self) -> &SharedStateRegistry {
        &self.registry
    }

    /// Completes pending checkpoint `manifest.checkpoint_id`: validates the manifest, checks
    /// every file it references exists with its size, writes the manifest create-only (it
    /// becomes visible), registers its shared files, subsumes older pending checkpoints and
    /// applies retention. `Err` means not published and nothing deleted (see the module
    /// docs): the checkpoint is not pending, invalid, references a missing file, this
    /// lifecycle was fenced, or the manifest write failed.
    pub async fn complete(&mut self, manifest: CheckpointManifest) -> Result<CompletionReport> {
        if let Some(error) = self.fence.fenced() {
            return Err(error);
        }
        let id = manifest.checkpoint_id;
        if !self.pending.contains(&id) {
            return Err(Error::CheckpointState {
                id: id.0,
                state: "not pending",
                reason: "only a checkpoint started with begin() and not yet completed or aborted can complete".into(),
            });
        }
        let broken = |reason: String| {
            Error::CheckpointState {
            id: id.0,
            state: "broken",
            reason: format!("{reason}; it was not published: abort it and take the next checkpoint from a completed base"),
        }
        };
        manifest.validate().map_err(|e| Error::CheckpointState {
            id: id.0,
            state: "invalid",
            reason: format!(
                "{e}; it was not published: the engine or backend that built it has a bug"
            ),
        })?;
        for file in manifest.files().into_iter().filter(|f| f.shared) {
            if let Some(known) = self.registry.files.get(&file.path) {
                if known.size != file.size {
                    return Err(broken(format!(
                        "it references shared file {} with size {} but the file was registered with size {}",
                        file.path, file.size, known.size
                    )));
                }
            }
        }
        if let Some(missing) = first_missing_file(&self.storage, &manifest).await? {
            return Err(broken(format!("it references {missing}")));
        }
        self.fence.check(&self.storage).await?;
        self.storage.write_manifest(&manifest).await?;

        // Published: from here on nothing fails the call.
        self.pending.remove(&id);
        self.registry.register(&manifest);
        self.completed.insert(id, manifest);
        if let Some(leftovers) = self.open_leftovers.take() {
            // This lifecycle's own checkpoint is now the newest: whatever an earlier
            // coordinator left unreferenced can go.
            for dir in leftovers.dirs {
                self.remember_dead(dir);
            }
        }
        let mut report = CompletionReport::default();
        let subsumed: Vec<CheckpointId> = self.pending.range(..id).copied().collect();
        for old in subsumed {
            self.pending.remove(&old);
            self.remember_dead(old);
            report.subsumed.push(old);
        }
        self.apply_retention(&mut report);
        self.collect(&mut report).await;
        self.persist_registry(&mut report).await;
        for warning in &report.warnings {
            tracing::warn!(
                checkpoint = id.0,
                "checkpoint published; afterwards: {warning}"
            );
        }
        Ok(report)
    }

    /// Aborts pending checkpoint `id` and deletes its own files. It never becomes visible.
    /// A fenced lifecycle returns [`Error::Fenced`] and deletes nothing.
    pub async fn abort(&mut self, id: CheckpointId) -> Result<CompletionReport> {
        if !self.pending.contains(&id) {
            return Err(Error::CheckpointState {
                id: id.0,
                state: "not pending",
                reason: "only a pending checkpoint can be aborted".into(),
            });
        }
        self.pending.remove(&id);
        self.remember_dead(id);
        if let Some(error) = self.fence.fenced() {
            return Err(error);
        }
        let mut report = CompletionReport::default();
        self.collect(&mut report).await;
        if let Some(error) = self.fence.fenced() {
            return Err(error);
        }
        self.persist_registry(&mut report).await;
        Ok(report)
    }

    /// Deletes deferred files, the directories of aborted and dropped checkpoints, and, if no
    /// checkpoint is pending, shared files no retained checkpoint references (one job per
    /// storage root: another job's files would look unreferenced). A fenced lifecycle returns
    /// [`Error::Fenced`] and deletes nothing. Other failures are in `report`.
    pub async fn collect_garbage(&mut self, report: &mut CompletionReport) -> Result<()> {
        if let Some(error) = self.fence.fenced() {
            return Err(error);
        }
        self.collect(report).await;
        match self.fence.fenced() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn remember_dead(&mut self, id: CheckpointId) {
        self.dead.insert(id);
        while self.dead.len() > MAX_DEAD_DIRECTORIES {
            self.dead.pop_first();
        }
    }

    fn apply_retention(&mut self, report: &mut CompletionReport) {
        while self.completed.len() > self.policy.retained_checkpoints {
            let Some((oldest, _)) = self.completed.pop_first() else {
                break;
            };
            self.registry.release(oldest);
            self.remember_dead(oldest);
            report.dropped.push(oldest);
        }
    }

    /// See [`CheckpointLifecycle::collect_garbage`]; failures go to `report`.
    async fn collect(&mut self, report: &mut CompletionReport) {
        self.sweep_dead_directories(report).await;
        if !self.pending.is_empty() {
            return;
        }
        // Shared files of aborted or crashed checkpoints were never in a manifest: with
        // nothing pending, every unreferenced shared file is such a leftover (those `open`
        // found wait until this lifecycle completed a checkpoint).
        match self.storage.list("shared").await {
            Ok(files) => {
                for (path, _) in files {
                    let found_at_open = self
                        .open_leftovers
                        .as_ref()
                        .is_some_and(|l| l.shared.contains(&path));
                    if !self.registry.is_referenced(&path) && !found_at_open {
                        self.registry.deferred_deletes.insert(path);
                    }
                }
            }
            Err(e) => report
                .warnings
                .push(format!("listing shared files failed, swept later: {e}")),
        }
        let (candidates, kept): (Vec<String>, Vec<String>) =
            std::mem::take(&mut self.registry.deferred_deletes)
                .into_iter()
                .filter(|p| !self.registry.is_referenced(p))
                .partition(|p| !(self.unknown_references && p.starts_with("shared/")));
        if !kept.is_empty() {
            report.warnings.push(format!(
                "{} unreferenced shared files are kept: checkpoint(s) {:?} have manifests that cannot be read; repair or remove them",
                kept.len(),
                self.skipped.keys().map(|id| id.0).collect::<Vec<_>>()
            ));
            self.registry.deferred_deletes.extend(kept);
        }
        self.delete_batch(candidates, report).await;
    }

    /// Deletes what remains in the directories of aborted and dropped checkpoints, each
    /// manifest first.
    async fn sweep_dead_directories(&mut self, report: &mut CompletionReport) {
        if self.dead.is_empty() {
            return;
        }
        let dirs = match self.storage.list_top_dirs().await {
            Ok(dirs) => dirs,
            Err(e) => {
                report.warnings.push(format!(
                    "listing checkpoint directories failed, swept later: {e}"
                ));
                return;
            }
        };
        let present: Vec<CheckpointId> = dirs
            .iter()
            .filter_map(|d| CheckpointStorage::parse_checkpoint_dir(d))
            .filter(|id| self.dead.contains(id))
            .collect();
        for id in present {
            let dir = CheckpointStorage::checkpoint_dir(id);
            let files = match self.storage.list(&dir).await {
                Ok(files) => files,
                Err(e) => {
                    report
                        .warnings
                        .push(format!("listing {dir} failed, swept later: {e}"));
                    report.failed_deletes.push(dir);
                    continue;
                }
            };
            let manifest = CheckpointStorage::manifest_path(id);
            let (manifests, rest): (Vec<String>, Vec<String>) = files
                .into_iter()
                .map(|(p, _)| p)
                .partition(|p| *p == manifest);
            if !manifests.is_empty() {
                // A half-deleted checkpoint is never visible: nothing else goes unless the
                // manifest did.
                self.delete_batch(manifests, report).await;
                if self.registry.deferred_deletes.remove(&manifest) {
                    continue;
                }
            }
            self.delete_batch(rest, report).await;
        }
    }

    /// Deletes `paths` (computed from listings made before this call) after checking the
    /// fence; failed deletes wait in the deferred set. A fenced lifecycle deletes nothing.
    async fn delete_batch(&mut self, paths: Vec<String>, report: &mut CompletionReport) {
        if paths.is_empty() {
            return;
        }
        if let Err(e) = self.fence.check(&self.storage).await {
            report
                .warnings
                .push(format!("{} deletes not done: {e}", paths.len()));
            if self.fence.fenced().is_none() {
                report.failed_deletes.extend(paths.iter().cloned());
                self.registry.deferred_deletes.extend(paths);
            } else {
                // Deferred (for the record) but never attempted by this lifecycle again.
                self.registry.deferred_deletes.extend(paths);
            }
            return;
        }
        for path in paths {
            match self.storage.delete(&path).await {
                Ok(()) => report.deleted_files.push(path),
                Err(e) => {
                    tracing::warn!(%path, error = %e, "delete failed; retried later");
                    report.failed_deletes.push(path.clone());
                    self.registry.deferred_deletes.insert(path);
                }
            }
        }
    }

    /// Writes the registry copy (informational): failures are warnings.
    async fn persist_registry(&mut self, report: &mut CompletionReport) {
        let result = async {
            self.fence.check(&self.storage).await?;
            let json = serde_json::to_vec_pretty(&self.registry)
                .map_err(|e| Error::corrupt("shared state registry", e.to_string()))?;
            self.storage
                .put(REGISTRY_FILE, Bytes::from(json), false)
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing the registry copy failed; the manifests stay the source of truth");
            report
                .warnings
                .push(format!("writing {REGISTRY_FILE} failed: {e}"));
        }
    }
}

/// The first file `manifest` references that is missing or has another size than recorded,
/// described; `None` when all are there.
async fn first_missing_file(
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
) -> Result<Option<String>> {
    let mut seen = BTreeSet::new();
    for file in manifest.files() {
        if !seen.insert(file.path.as_str()) {
            continue;
        }
        match storage.size_of(&file.path).await? {
            None => return Ok(Some(format!("file {} which does not exist", file.path))),
            Some(size) if size != file.size => {
                return Ok(Some(format!(
                    "file {} with size {} but it has {size} bytes",
                    file.path, file.size
                )))
            }
            Some(_) => {}
        }
    }
    Ok(None)
}
