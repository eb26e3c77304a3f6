//! [`DynStateBackendFactory`]: a backend factory an engine can hold as a trait object, so the
//! backend is chosen from configuration at run time.
//!
//! [`StateBackendFactory`] names its backend type and returns `impl Future` from `restore`,
//! which makes it fast and simple for code that knows its backend at compile time, and not
//! dyn-compatible. Every `StateBackendFactory` is also a `DynStateBackendFactory` (blanket
//! implementation): backends are handed out as `Arc<dyn StateBackend>` and the restore
//! future is boxed.

use std::sync::Arc;

use flowstate_api::backend::BoxFuture;
use flowstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedStateHandle, MaxParallelism, Result, StateBackend,
    StateBackendFactory,
};

/// A backend shared by the threads of one subtask, of a type chosen at run time.
pub type SharedBackend = Arc<dyn StateBackend>;

/// The dyn-compatible face of [`StateBackendFactory`].
pub trait DynStateBackendFactory: Send + Sync {
    /// A short name for reports and metrics labels (`heap`, `rocksdb`, `lmdb`, ...).
    fn name(&self) -> &str;

    /// An empty backend owning `range`.
    fn create_shared(&self, max: MaxParallelism, range: KeyGroupRange) -> Result<SharedBackend>;

    /// A backend owning `range`, restored from the handles of any number of old subtasks
    /// (see [`StateBackendFactory::restore`]).
    fn restore_shared<'a>(
        &'a self,
        max: MaxParallelism,
        range: KeyGroupRange,
        storage: &'a CheckpointStorage,
        handles: &'a [KeyedStateHandle],
    ) -> BoxFuture<'a, Result<SharedBackend>>;
}

impl<F: StateBackendFactory> DynStateBackendFactory for F {
    fn name(&self) -> &str {
        StateBackendFactory::name(self)
    }

    fn create_shared(&self, max: MaxParallelism, range: KeyGroupRange) -> Result<SharedBackend> {
        Ok(Arc::new(self.create(max, range)?))
    }

    fn restore_shared<'a>(
        &'a self,
        max: MaxParallelism,
        range: KeyGroupRange,
        storage: &'a CheckpointStorage,
        handles: &'a [KeyedStateHandle],
    ) -> BoxFuture<'a, Result<SharedBackend>> {
        Box::pin(async move {
            let backend = self.restore(max, range, storage, handles).await?;
            Ok(Arc::new(backend) as SharedBackend)
        })
    }
}
