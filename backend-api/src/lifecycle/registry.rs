//! The shared-state registry: which shared files exist, who created them, and which
//! retained checkpoints use them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointId, CheckpointManifest};

/// Where (at the storage root) the lifecycle writes a copy of the registry after each
/// completed checkpoint, for operators and tools: `ls` compares it with the manifests, which
/// stay the source of truth.
pub const REGISTRY_FILE: &str = "_shared_registry.json";

/// One shared file in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFileEntry {
    /// The file's size in bytes, as its manifests name it.
    pub size: u64,
    /// The first checkpoint whose manifest referenced the file.
    pub created_by: CheckpointId,
    /// Retained checkpoints that reference it.
    pub used_by: BTreeSet<CheckpointId>,
}

/// Which shared files exist, who created them, and which retained checkpoints use them.
/// Keys are the canonical paths manifests name (validated on `complete` and on read), so
/// they are the paths a listing of the store shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedStateRegistry {
    /// Every registered shared file, by its path relative to the storage root.
    pub files: BTreeMap<String, SharedFileEntry>,
    /// Unreferenced shared files waiting to be deleted.
    pub deferred_deletes: BTreeSet<String>,
}

impl SharedStateRegistry {
    pub(crate) fn register(&mut self, manifest: &CheckpointManifest) {
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
            entry.created_by = entry.created_by.min(id);
            entry.used_by.insert(id);
            self.deferred_deletes.remove(&file.path);
        }
    }

    /// Drops checkpoint `id`'s references; files left unreferenced move to the deferred set.
    pub(crate) fn release(&mut self, id: CheckpointId) {
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
