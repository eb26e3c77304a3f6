//! [`LmdbBackendFactory`]: creates LMDB backends in fresh directories.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowstate_api::{KeyGroupRange, MaxParallelism, Result, StateBackendFactory};
use tempfile::TempDir;

use crate::backend::LmdbBackend;
use crate::config::LmdbConfig;
use crate::error::LmdbError;

/// Creates [`LmdbBackend`]s, each in its own fresh directory under a base directory; a
/// backend's directory is removed when the backend is dropped. Restores use the trait's
/// default: an empty backend, then the canonical/changelog handles' rows for its key groups.
#[derive(Clone, Debug)]
pub struct LmdbBackendFactory {
    base_dir: PathBuf,
    config: LmdbConfig,
    /// Keeps a temporary base directory alive as long as the factory (clones share it).
    _temp_base: Option<Arc<TempDir>>,
}

impl LmdbBackendFactory {
    /// Backends under `base_dir` (created when the first backend is).
    pub fn new(base_dir: impl Into<PathBuf>, config: LmdbConfig) -> Self {
        Self {
            base_dir: base_dir.into(),
            config,
            _temp_base: None,
        }
    }

    /// Backends under a new temporary directory, removed when the factory is dropped (for
    /// tests and benchmarks).
    pub fn temporary(config: LmdbConfig) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("flowstate-lmdb-")
            .tempdir()
            .map_err(LmdbError::io(&std::env::temp_dir()))?;
        Ok(Self {
            base_dir: dir.path().to_path_buf(),
            config,
            _temp_base: Some(Arc::new(dir)),
        })
    }

    /// The directory under which each backend gets its own temporary directory.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The configuration given to every backend this factory creates.
    pub fn config(&self) -> &LmdbConfig {
        &self.config
    }
}

impl StateBackendFactory for LmdbBackendFactory {
    type Backend = LmdbBackend;

    fn name(&self) -> &str {
        "lmdb"
    }

    fn create(&self, max: MaxParallelism, range: KeyGroupRange) -> Result<LmdbBackend> {
        LmdbBackend::open_temporary(&self.base_dir, max, range, self.config.clone())
    }
}
