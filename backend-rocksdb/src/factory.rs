//! [`RocksDbBackendFactory`]: creates backends in instance directories under a base
//! directory, and restores them from canonical, changelog or native handles.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowstate_api::{
    CheckpointStorage, Error, KeyGroupRange, KeyedStateHandle, MaxParallelism, Result,
    StateBackendFactory,
};

use crate::backend::RocksDbBackend;
use crate::resources::RocksDbResources;

/// Creates [`RocksDbBackend`]s. Each backend gets its own instance directory, created with a
/// unique name under the base directory and removed when the backend (and every snapshot
/// still reading it) is dropped.
#[derive(Clone, Debug)]
pub struct RocksDbBackendFactory {
    base_dir: PathBuf,
    resources: Arc<RocksDbResources>,
    /// Set when the factory owns a temporary base directory (tests, examples).
    _temp: Option<Arc<tempfile::TempDir>>,
}

impl RocksDbBackendFactory {
    /// Instance directories go under `base_dir` (created if missing); memory comes from
    /// `resources`, which every factory of the process should share.
    pub fn new(base_dir: impl Into<PathBuf>, resources: Arc<RocksDbResources>) -> Result<Self> {
        let base_dir = base_dir.into();
        std::fs::create_dir_all(&base_dir).map_err(|e| {
            Error::io(
                format!("creating the RocksDB base directory {}", base_dir.display()),
                e,
            )
        })?;
        Ok(Self {
            base_dir,
            resources,
            _temp: None,
        })
    }

    /// Like [`RocksDbBackendFactory::new`] with the process-wide [`RocksDbResources::shared`].
    pub fn with_shared_resources(base_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::new(base_dir, RocksDbResources::shared())
    }

    /// A factory whose base directory is a fresh temporary directory, removed when the last
    /// clone of the factory is dropped (tests, examples).
    pub fn temporary() -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("flowstate-rocksdb-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary RocksDB base directory", e))?;
        let mut factory = Self::with_shared_resources(temp.path())?;
        factory._temp = Some(Arc::new(temp));
        Ok(factory)
    }

    /// The directory under which each backend gets its own instance directory.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The block cache and write-buffer manager shared by the backends this factory creates.
    pub fn resources(&self) -> &Arc<RocksDbResources> {
        &self.resources
    }

    /// A new, uniquely named instance directory under the base directory.
    pub(crate) fn new_instance_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("rocksdb-")
            .tempdir_in(&self.base_dir)
            .map_err(|e| {
                Error::io(
                    format!(
                        "creating an instance directory in {}",
                        self.base_dir.display()
                    ),
                    e,
                )
            })
    }
}

impl StateBackendFactory for RocksDbBackendFactory {
    type Backend = RocksDbBackend;

    fn name(&self) -> &str {
        crate::BACKEND_NAME
    }

    fn create(&self, max: MaxParallelism, range: KeyGroupRange) -> Result<RocksDbBackend> {
        RocksDbBackend::open(
            self.resources.clone(),
            self.new_instance_dir()?,
            max,
            range,
            &[],
        )
    }

    fn restore(
        &self,
        max: MaxParallelism,
        range: KeyGroupRange,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> impl Future<Output = Result<RocksDbBackend>> + Send {
        crate::restore::restore(self, max, range, storage, handles)
    }
}
