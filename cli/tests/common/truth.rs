//! What a storage holds, read in this process through `flowstate_api` rather than the CLI:
//! what the commands' reports are checked against.

use std::collections::BTreeMap;

use flowstate_api::lifecycle::SharedStateRegistry;
use flowstate_api::snapshot::{read_info_from_bytes, SnapshotFileInfo};
use flowstate_api::{CheckpointManifest, CheckpointStorage, FileRef};

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// The storage at `location` opened in this process (an `s3://` one with the local server's
/// settings, which the child processes get from their environment).
pub fn open(location: &str) -> CheckpointStorage {
    if location.starts_with("s3://") {
        let options = super::s3_options().expect("the S3 endpoint");
        CheckpointStorage::from_url(location, options).expect("the S3 storage")
    } else {
        CheckpointStorage::open_existing(location).expect("the local storage")
    }
}

pub struct Truth {
    pub storage: CheckpointStorage,
    /// The completed checkpoints' manifests, ascending ids.
    pub manifests: Vec<CheckpointManifest>,
    pub registry_copy: Option<SharedStateRegistry>,
    /// Every file of the storage with its size.
    pub files: BTreeMap<String, u64>,
}

impl Truth {
    pub fn read(location: &str) -> Self {
        let storage = open(location);
        block_on(async {
            let mut manifests = Vec::new();
            for id in storage.list_checkpoints().await.expect("listing") {
                manifests.push(storage.read_manifest(id).await.expect("a manifest"));
            }
            let registry_copy = storage
                .get_if_exists("_shared_registry.json")
                .await
                .expect("reading the registry")
                .map(|bytes| serde_json::from_slice(&bytes).expect("a registry"));
            let files = storage
                .list("")
                .await
                .expect("listing")
                .into_iter()
                .collect();
            Truth {
                storage: storage.clone(),
                manifests,
                registry_copy,
                files,
            }
        })
    }

    pub fn manifest(&self, id: u64) -> &CheckpointManifest {
        self.manifests
            .iter()
            .find(|m| m.checkpoint_id.get() == id)
            .expect("a retained checkpoint")
    }

    pub fn snapshot_info(&self, file: &FileRef) -> SnapshotFileInfo {
        let bytes = block_on(self.storage.get(&file.path)).expect("a snapshot file");
        assert_eq!(bytes.len() as u64, file.size, "{}", file.path);
        read_info_from_bytes(&bytes).expect("a snapshot file")
    }
}

/// The files a manifest references, each once, by path.
pub fn distinct_files(manifest: &CheckpointManifest) -> BTreeMap<String, &FileRef> {
    manifest
        .files()
        .into_iter()
        .map(|f| (f.path.clone(), f))
        .collect()
}
