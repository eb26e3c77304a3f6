//! [`HeapBackendFactory`]: how engines and the conformance suite create heap backends.

use flowstate_api::{KeyGroupRange, MaxParallelism, Result, StateBackendFactory};

use crate::backend::HeapBackend;
use crate::config::HeapConfig;

/// Creates [`HeapBackend`]s with one [`HeapConfig`]. Restores use the canonical restore of
/// `flowstate-api` (base then deltas, key-group ranges clipped to the new range): the heap
/// backend has no native snapshot format.
#[derive(Clone, Debug, Default)]
pub struct HeapBackendFactory {
    config: HeapConfig,
}

impl HeapBackendFactory {
    /// A factory with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// A factory whose backends use `config`.
    pub fn with_config(config: HeapConfig) -> Self {
        Self { config }
    }

    /// The configuration given to every backend this factory creates.
    pub fn config(&self) -> &HeapConfig {
        &self.config
    }
}

impl StateBackendFactory for HeapBackendFactory {
    type Backend = HeapBackend;

    fn name(&self) -> &str {
        "heap"
    }

    fn create(&self, max: MaxParallelism, range: KeyGroupRange) -> Result<HeapBackend> {
        HeapBackend::new(max, range, self.config.clone())
    }
}
