//! The traits a backend implements.
//!
//! Capabilities are small and composed, in the manner of TiKV's `engine_traits`:
//! - [`KeyedStateBackend`]: byte-level keyed state (value cells, lists, maps) addressed by
//!   ([`StateId`], [`KeyContext`], namespace bytes), plus enumeration and restore writes.
//!   Typed state ([`crate::typed`]) is built on it once, for every backend.
//! - [`KeyedSnapshotView`]: a consistent, point-in-time, key-group-ordered view of the keyed
//!   state, taken synchronously and read while writers go on.
//! - [`StateBackend`]: the checkpoint hooks (snapshot, complete, abort).
//! - [`StateBackendFactory`]: creates empty backends and restores backends from snapshot
//!   handles of any number of old subtasks; the conformance suite drives backends through it.

use std::future::Future;
use std::pin::Pin;

use crate::checkpoint::{CheckpointId, CheckpointStorage, KeyedStateHandle};
use crate::error::Result;
use crate::key_groups::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::state::{KeyContext, StateId, StateMetadata};

/// A boxed, sendable future: the async half of a checkpoint.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Byte-level keyed state. All methods are synchronous and take `&self`: a backend is shared
/// by the threads of one subtask and must be `Send + Sync`.
///
/// Semantics every implementation must meet (the conformance suite checks them):
/// - `get`/`put`/`remove` act on the single value of value, reducing and aggregating states.
/// - An empty list reads as absent: `list_get` returns an empty vector, and `keys` does not
///   report a key whose list is empty. Likewise an empty map.
/// - `remove` clears whatever the state holds for (key, namespace), for every kind.
/// - Every key's group must lie in [`KeyedStateBackend::key_group_range`]; otherwise the call
///   returns [`crate::Error::KeyGroupNotOwned`].
pub trait KeyedStateBackend: Send + Sync {
    /// Max parallelism the backend was created with.
    fn max_parallelism(&self) -> MaxParallelism;
    /// Key groups this backend owns.
    fn key_group_range(&self) -> KeyGroupRange;

    /// Registers a state (or returns the id of a compatible state of the same name, e.g. one
    /// restored from a snapshot). A name registered with another kind or codec is an error.
    fn register_state(&self, meta: &StateMetadata) -> Result<StateId>;
    /// All registered states, in id order.
    fn registered_states(&self) -> Vec<(StateId, StateMetadata)>;

    /// The value of a value/reducing/aggregating state.
    fn get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Hands the value of a value/reducing/aggregating state to `read` as borrowed bytes
    /// (`None` when absent), so a caller that decodes it needs no copy. The typed layer reads
    /// through this. Backends may call `read` while holding an internal lock: it must not
    /// call back into the backend. The default copies through [`KeyedStateBackend::get`].
    fn get_with(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        let value = self.get(state, key, namespace)?;
        read(value.as_deref())
    }
    /// Sets the value of a value/reducing/aggregating state.
    fn put(&self, state: StateId, key: &KeyContext, namespace: &[u8], value: &[u8]) -> Result<()>;
    /// Clears (key, namespace) of any kind of state.
    fn remove(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<()>;

    /// The elements of a list state, in insertion order; empty when absent.
    fn list_get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Appends elements to a list state (ideally without reading it).
    fn list_append(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()>;
    /// Replaces a list state's elements; an empty slice clears it.
    fn list_replace(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()>;

    /// One entry of a map state.
    fn map_get(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>>;
    /// Sets one entry of a map state, replacing its value if present.
    fn map_put(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()>;
    /// Removes one entry of a map state; absent entries are no error.
    fn map_remove(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<()>;
    /// All entries of a map state (any order); empty when absent.
    fn map_entries(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Whether a map state has an entry for `user_key`. The default reads the entry through
    /// [`KeyedStateBackend::map_get`].
    fn map_contains(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<bool> {
        Ok(self.map_get(state, key, namespace, user_key)?.is_some())
    }
    /// Whether a map state has no entry (an absent map is empty). The default reads every
    /// entry through [`KeyedStateBackend::map_entries`].
    fn map_is_empty(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<bool> {
        Ok(self.map_entries(state, key, namespace)?.is_empty())
    }

    /// Every key that has a non-empty entry of `state` in `namespace` (any order, no
    /// duplicates). A consistent copy: the caller may write while walking it.
    fn keys(&self, state: StateId, namespace: &[u8]) -> Result<Vec<KeyContext>>;

    /// Restore path: applies rows read from a snapshot, all of key group `key_group` (which
    /// must be owned). `Value` rows set the value, `List` rows replace the list, `MapEntry` rows
    /// put one entry, `Tombstone` rows clear (key, namespace). Rows come in file order and must
    /// be applied in that order. `state` ids in the rows are this backend's ids.
    fn apply_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()>;
}

/// One logical row of keyed state, as snapshots carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRow<'a> {
    /// The state the row belongs to.
    pub state: StateId,
    /// The key's canonical serialized bytes (see [`KeyContext::key`]).
    pub key: &'a [u8],
    /// The namespace's serialized bytes.
    pub namespace: &'a [u8],
    /// What the row holds for (key, namespace).
    pub value: RowValue<'a>,
}

/// The payload of a [`StateRow`].
///
/// `#[non_exhaustive]`: new row kinds are foreseeable (timers, say); a backend answers a row
/// kind it does not store with an error, never by dropping the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RowValue<'a> {
    /// The value of a value/reducing/aggregating state.
    Value(&'a [u8]),
    /// A whole list, in [`crate::list_encoding`] form.
    List(&'a [u8]),
    /// One map entry.
    MapEntry {
        /// The entry's serialized user key.
        user_key: &'a [u8],
        /// The entry's serialized value.
        value: &'a [u8],
    },
    /// (key, namespace) of the state is cleared. Only in incremental deltas.
    Tombstone,
}

impl RowValue<'_> {
    /// What the row holds, in words, for error messages (`value`, `list`, `map entry`,
    /// `tombstone`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            RowValue::Value(_) => "value",
            RowValue::List(_) => "list",
            RowValue::MapEntry { .. } => "map entry",
            RowValue::Tombstone => "tombstone",
        }
    }
}

/// A consistent point-in-time view of a backend's keyed state, readable while the backend
/// keeps serving writes. Dropping it releases what it pins.
pub trait KeyedSnapshotView: Send + Sync {
    /// Max parallelism of the backend the view was taken from.
    fn max_parallelism(&self) -> MaxParallelism;
    /// Key groups the view covers: the backend's range when the view was taken.
    fn key_group_range(&self) -> KeyGroupRange;
    /// Metadata of every state the view covers, as registered when it was taken.
    fn states(&self) -> Vec<(StateId, StateMetadata)>;
    /// Visits every row of `key_group` (order within a key group is free; the file keeps it).
    fn for_each_row(
        &self,
        key_group: KeyGroup,
        visit: &mut dyn FnMut(StateRow<'_>) -> Result<()>,
    ) -> Result<()>;
}

/// Full: everything. Incremental: what changed since the last completed checkpoint, on top of
/// files shared with earlier checkpoints (backends without incremental support write full).
///
/// `#[non_exhaustive]`: more kinds are foreseeable (a savepoint, say); a backend that does not
/// know a kind writes a full snapshot, which every restore reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SnapshotKind {
    /// Every row of the owned key groups, restorable on its own.
    Full,
    /// The changes since the last completed checkpoint, on top of files shared with earlier
    /// checkpoints.
    Incremental,
}

/// What the engine asks for at a checkpoint barrier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The checkpoint the snapshot belongs to.
    pub checkpoint_id: CheckpointId,
    /// The subtask this backend serves: used to name files uniquely.
    pub subtask_index: u32,
    /// Full or incremental; a backend may answer an incremental request with a full snapshot.
    pub kind: SnapshotKind,
}

/// The asynchronous part of a checkpoint: writes what the synchronous part captured.
pub trait SnapshotJob: Send {
    /// Writes the captured state into `storage` and returns the handle a restore reads it
    /// from.
    fn run(
        self: Box<Self>,
        storage: CheckpointStorage,
    ) -> BoxFuture<'static, Result<KeyedStateHandle>>;
}

/// Checkpoint hooks of a backend.
pub trait StateBackend: KeyedStateBackend {
    /// Synchronous part of a checkpoint: captures a consistent view (copy-on-write, MVCC, hard
    /// links) and returns the job that writes it. State access is blocked at most for the
    /// capture, never for the upload.
    fn snapshot(&self, request: &SnapshotRequest) -> Result<Box<dyn SnapshotJob>>;
    /// The engine confirms checkpoint `id` complete: it may serve as the base of the next
    /// incremental checkpoint.
    fn notify_checkpoint_complete(&self, id: CheckpointId) -> Result<()> {
        let _ = id;
        Ok(())
    }
    /// The engine gave up on checkpoint `id`: it must never serve as a base.
    fn notify_checkpoint_aborted(&self, id: CheckpointId) -> Result<()> {
        let _ = id;
        Ok(())
    }
}

/// Creates backends: empty, or restored from the snapshots of any number of old subtasks.
pub trait StateBackendFactory: Send + Sync {
    /// The backend this factory creates.
    type Backend: StateBackend + 'static;

    /// A short name for reports (`heap`, `rocksdb`, ...).
    fn name(&self) -> &str;

    /// An empty backend owning `range`.
    fn create(&self, max: MaxParallelism, range: KeyGroupRange) -> Result<Self::Backend>;

    /// A backend owning `range` holding exactly the key groups of `range` found in `handles`
    /// (snapshots of old subtasks, any parallelism). Reads only those key groups' bytes.
    /// The handles must be disjoint and, unless there are none, cover `range`
    /// ([`crate::snapshot::check_handles`]). The default creates an empty backend and applies
    /// canonical/changelog handles through [`crate::snapshot::restore_into`], which checks
    /// every file and row first.
    fn restore(
        &self,
        max: MaxParallelism,
        range: KeyGroupRange,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> impl Future<Output = Result<Self::Backend>> + Send {
        async move {
            let backend = self.create(max, range)?;
            crate::snapshot::restore_into(&backend, storage, handles).await?;
            Ok(backend)
        }
    }
}
