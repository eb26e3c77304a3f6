//! The checkpoint lifecycle: ids, pending / completed / aborted, retention, and the
//! shared-state registry that decides when a shared file may be deleted.
//!
//! One [`CheckpointLifecycle`] runs per job (the engine's checkpoint coordinator owns it):
//!
//! 1. [`begin`](CheckpointLifecycle::begin) hands out the next (increasing) id; the checkpoint
//!    is **pending**. Subtasks snapshot their backends and upload.
//! 2. [`complete`](CheckpointLifecycle::complete) writes the manifest (the checkpoint is now
//!    visible), registers every shared file it references, and applies retention: the oldest
//!    completed checkpoints beyond the configured number are dropped: manifest first (so a
//!    dropped checkpoint is never half-visible), then its own files, then every shared file no
//!    retained checkpoint references any more. The engine then notifies the backends, so only
//!    completed checkpoints become bases of incremental ones.
//! 3. [`abort`](CheckpointLifecycle::abort) drops a pending checkpoint and its own files.
//!
//! The **registry** is derived from the manifests, the source of truth, and rebuilt from them
//! by [`open`](CheckpointLifecycle::open) after a restart; a copy is written to
//! `_shared_registry.json` for operators and tools (and read back for each file's creating
//! checkpoint, which may have been dropped by retention; a damaged copy is ignored). A shared file that became unreferenced is
//! deleted only while no checkpoint is pending (a pending checkpoint may have been planned on
//! an older base and still reference it); until then, and after a failed delete, it waits in
//! the deferred set and is retried at the next `complete`, `abort` or `collect_garbage`. A
//! failed delete never fails a checkpoint. With nothing pending, any shared file outside the
//! registry is a leftover of an aborted or crashed checkpoint and is removed too, which is why
//! a storage root belongs to one job.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointId, CheckpointManifest, CheckpointStorage};
use crate::error::{Error, Result};

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

/// One shared file in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFileEntry {
    pub size: u64,
    /// The first checkpoint whose manifest referenced the file.
    pub created_by: CheckpointId,
    /// Retained checkpoints that reference it.
    pub used_by: BTreeSet<CheckpointId>,
}

/// Which shared files exist, who created them, and which retained checkpoints use them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedStateRegistry {
    pub files: BTreeMap<String, SharedFileEntry>,
    /// Unreferenced shared files waiting to be deleted.
    pub deferred_deletes: BTreeSet<String>,
}

impl SharedStateRegistry {
    fn register(&mut self, manifest: &CheckpointManifest) {
        let id = manifest.checkpoint_id;
        for file in manifest.files().into_iter().filter(|f| f.shared) {
            let entry = self
                .files
                .entry(file.path.clone())
                .or_insert_with(|| SharedFileEntry {
                    size: file.size,
                    created_by: id,
                    used_by: BTreeSet::new(),
                });
            entry.used_by.insert(id);
            self.deferred_deletes.remove(&file.path);
        }
    }

    /// Drops checkpoint `id`'s references; files left unreferenced move to the deferred set.
    fn release(&mut self, id: CheckpointId) {
        let mut orphaned = Vec::new();
        for (path, entry) in &mut self.files {
            if entry.used_by.remove(&id) && entry.used_by.is_empty() {
                orphaned.push(path.clone());
            }
        }
        for path in orphaned {
            self.files.remove(&path);
            self.deferred_deletes.insert(path);
        }
    }

    /// True when a retained checkpoint references `path`.
    pub fn is_referenced(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }
}

/// What a `complete` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompletionReport {
    /// Checkpoints dropped by retention.
    pub dropped: Vec<CheckpointId>,
    /// Pending checkpoints older than the completed one, now subsumed (aborted).
    pub subsumed: Vec<CheckpointId>,
    /// Files deleted during this call.
    pub deleted_files: Vec<String>,
    /// Deletes that failed and will be retried.
    pub failed_deletes: Vec<String>,
}

const REGISTRY_FILE: &str = "_shared_registry.json";

/// A job's checkpoint coordinator state. See the module docs.
#[derive(Debug)]
pub struct CheckpointLifecycle {
    storage: CheckpointStorage,
    policy: RetentionPolicy,
    next_id: CheckpointId,
    pending: BTreeSet<CheckpointId>,
    completed: BTreeMap<CheckpointId, CheckpointManifest>,
    registry: SharedStateRegistry,
}

impl CheckpointLifecycle {
    /// Opens the lifecycle over `storage`: reads every visible checkpoint's manifest, rebuilds
    /// the registry, applies retention, and removes leftovers of checkpoints that never
    /// completed (their directories) and shared files no retained checkpoint references.
    pub async fn open(storage: CheckpointStorage, policy: RetentionPolicy) -> Result<Self> {
        if policy.retained_checkpoints == 0 {
            return Err(Error::Config(
                "retained_checkpoints must be at least 1: the latest completed checkpoint is what a job restores from".into(),
            ));
        }
        let mut completed = BTreeMap::new();
        for id in storage.list_checkpoints().await? {
            completed.insert(id, storage.read_manifest(id).await?);
        }
        let listing = storage.list("").await?;
        let highest_dir = listing
            .iter()
            .filter_map(|(path, _)| {
                let dir = path.split('/').next()?;
                dir.strip_prefix("chk-")?.parse::<u64>().ok()
            })
            .max();
        let next_id = CheckpointId(
            highest_dir
                .into_iter()
                .chain(completed.keys().map(|c| c.0))
                .max()
                .map_or(1, |m| m + 1),
        );
        let mut registry = SharedStateRegistry::default();
        for manifest in completed.values() {
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
        let mut lifecycle = Self {
            storage,
            policy,
            next_id,
            pending: BTreeSet::new(),
            completed,
            registry,
        };
        let mut report = CompletionReport::default();
        lifecycle.apply_retention(&mut report).await?;
        // Nothing is pending at open: a checkpoint directory without a manifest is a leftover
        // of a crash (shared leftovers are swept by collect_garbage).
        for (path, _) in &listing {
            let dir = path.split('/').next().unwrap_or_default();
            let leftover_dir = dir
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| !lifecycle.completed.contains_key(&CheckpointId(id)));
            if leftover_dir {
                lifecycle.registry.deferred_deletes.insert(path.clone());
            }
        }
        lifecycle.collect_garbage(&mut report).await;
        lifecycle.persist_registry().await?;
        Ok(lifecycle)
    }

    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    pub fn policy(&self) -> &RetentionPolicy {
        &self.policy
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

    pub fn registry(&self) -> &SharedStateRegistry {
        &self.registry
    }

    /// Completes pending checkpoint `manifest.checkpoint_id`: writes its manifest (it becomes
    /// visible), registers its shared files, subsumes older pending checkpoints and applies
    /// retention. Fails, without publishing anything, if the checkpoint is not pending or
    /// references a shared file that was already deleted.
    pub async fn complete(&mut self, manifest: CheckpointManifest) -> Result<CompletionReport> {
        let id = manifest.checkpoint_id;
        if !self.pending.contains(&id) {
            return Err(Error::CheckpointState {
                id: id.0,
                state: "not pending",
                reason: "only a checkpoint started with begin() and not yet completed or aborted can complete".into(),
            });
        }
        for file in manifest.files().into_iter().filter(|f| f.shared) {
            if self.storage.size_of(&file.path).await?.is_none() {
                return Err(Error::CheckpointState {
                    id: id.0,
                    state: "broken",
                    reason: format!(
                        "it references shared file {} which no longer exists; abort it and take the next checkpoint from a completed base",
                        file.path
                    ),
                });
            }
        }
        self.storage.write_manifest(&manifest).await?;
        self.pending.remove(&id);
        self.registry.register(&manifest);
        self.completed.insert(id, manifest);

        let mut report = CompletionReport::default();
        let subsumed: Vec<CheckpointId> = self.pending.range(..id).copied().collect();
        for old in subsumed {
            self.drop_pending(old, &mut report).await;
            report.subsumed.push(old);
        }
        self.apply_retention(&mut report).await?;
        self.collect_garbage(&mut report).await;
        self.persist_registry().await?;
        Ok(report)
    }

    /// Aborts pending checkpoint `id` and deletes its own files. It never becomes visible.
    pub async fn abort(&mut self, id: CheckpointId) -> Result<CompletionReport> {
        if !self.pending.contains(&id) {
            return Err(Error::CheckpointState {
                id: id.0,
                state: "not pending",
                reason: "only a pending checkpoint can be aborted".into(),
            });
        }
        let mut report = CompletionReport::default();
        self.drop_pending(id, &mut report).await;
        self.collect_garbage(&mut report).await;
        self.persist_registry().await?;
        Ok(report)
    }

    async fn drop_pending(&mut self, id: CheckpointId, report: &mut CompletionReport) {
        self.pending.remove(&id);
        self.delete_checkpoint_dir(id, report).await;
    }

    async fn delete_checkpoint_dir(&mut self, id: CheckpointId, report: &mut CompletionReport) {
        let dir = CheckpointStorage::checkpoint_dir(id);
        match self.storage.list(&dir).await {
            Ok(files) => {
                // The manifest goes first: a half-deleted checkpoint is never visible.
                let (manifests, rest): (Vec<_>, Vec<_>) = files
                    .into_iter()
                    .map(|(p, _)| p)
                    .partition(|p| p.ends_with("/_manifest.json"));
                for path in manifests.into_iter().chain(rest) {
                    self.delete_or_defer(path, report).await;
                }
            }
            Err(e) => {
                tracing::warn!(checkpoint = id.0, error = %e, "listing a dropped checkpoint failed; retried later");
                report.failed_deletes.push(dir);
            }
        }
    }

    async fn delete_or_defer(&mut self, path: String, report: &mut CompletionReport) {
        match self.storage.delete(&path).await {
            Ok(()) => report.deleted_files.push(path),
            Err(e) => {
                tracing::warn!(%path, error = %e, "delete failed; retried later");
                report.failed_deletes.push(path.clone());
                self.registry.deferred_deletes.insert(path);
            }
        }
    }

    async fn apply_retention(&mut self, report: &mut CompletionReport) -> Result<()> {
        while self.completed.len() > self.policy.retained_checkpoints {
            let Some((&oldest, _)) = self.completed.iter().next() else {
                break;
            };
            self.completed.remove(&oldest);
            self.registry.release(oldest);
            self.delete_checkpoint_dir(oldest, report).await;
            report.dropped.push(oldest);
        }
        Ok(())
    }

    /// Deletes deferred files and shared files no retained checkpoint references, if no
    /// checkpoint is pending (one job per storage root: another job's files would look
    /// unreferenced).
    pub async fn collect_garbage(&mut self, report: &mut CompletionReport) {
        if !self.pending.is_empty() {
            return;
        }
        // Shared files of aborted or crashed checkpoints were never in a manifest: with
        // nothing pending, every unreferenced shared file is such a leftover.
        match self.storage.list("shared").await {
            Ok(files) => {
                for (path, _) in files {
                    if !self.registry.is_referenced(&path) {
                        self.registry.deferred_deletes.insert(path);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing shared files failed; swept later"),
        }
        let candidates: Vec<String> = std::mem::take(&mut self.registry.deferred_deletes)
            .into_iter()
            .filter(|p| !self.registry.is_referenced(p))
            .collect();
        for path in candidates {
            self.delete_or_defer(path, report).await;
        }
    }

    async fn persist_registry(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.registry)
            .map_err(|e| Error::corrupt("shared state registry", e.to_string()))?;
        self.storage
            .put(REGISTRY_FILE, Bytes::from(json), false)
            .await?;
        Ok(())
    }
}
