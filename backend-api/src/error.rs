//! The one error type of `flowstate-api`. Backends wrap their engine errors in
//! [`Error::Backend`] so engines match on one enum.

use crate::state::StateKind;

/// Result alias used throughout flowstate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error flowstate's API reports. Messages say what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A max parallelism (number of key groups) outside 1..=32768.
    #[error("max parallelism {value} is invalid: it must be between 1 and 32768")]
    InvalidMaxParallelism {
        /// The rejected max parallelism.
        value: u32,
    },

    /// A parallelism (number of subtasks) outside 1..=32768.
    #[error("parallelism {value} is invalid: it must be between 1 and 32768")]
    InvalidParallelism {
        /// The rejected parallelism.
        value: u32,
    },

    /// More subtasks than key groups: some subtask would own no key group.
    #[error("parallelism {parallelism} exceeds max parallelism {max_parallelism}: raise the max parallelism (it is fixed once state exists) or lower the parallelism")]
    ParallelismAboveMax {
        /// The requested number of subtasks.
        parallelism: u32,
        /// The number of key groups.
        max_parallelism: u32,
    },

    /// A key group index not below the max parallelism.
    #[error("key group {key_group} is out of bounds for max parallelism {max_parallelism}")]
    KeyGroupOutOfBounds {
        /// The rejected key group index.
        key_group: u32,
        /// The number of key groups, one more than the largest valid index.
        max_parallelism: u32,
    },

    /// A key-group range whose start is above its end, or whose end is not below 32768.
    #[error("key-group range [{start}, {end}] is invalid: start must be <= end < 32768")]
    InvalidKeyGroupRange {
        /// First key group of the rejected range (inclusive).
        start: u32,
        /// Last key group of the rejected range (inclusive).
        end: u32,
    },

    /// A subtask index not below the parallelism.
    #[error("operator index {operator_index} is out of bounds for parallelism {parallelism}")]
    OperatorIndexOutOfBounds {
        /// The rejected subtask index.
        operator_index: u32,
        /// The number of subtasks, one more than the largest valid index.
        parallelism: u32,
    },

    /// A key whose key group lies outside the backend's key-group range: the record reached
    /// the wrong subtask.
    #[error("key group {key_group} is not in this backend's range {range}: the record was routed to the wrong subtask (route with key_groups::operator_index_for_key_group)")]
    KeyGroupNotOwned {
        /// The key group of the key.
        key_group: u32,
        /// The backend's key-group range, as displayed.
        range: String,
    },

    /// A restore with another max parallelism than the snapshot's: key groups would map to
    /// other keys.
    #[error("the snapshot was taken with max parallelism {snapshot} but the job now runs with max parallelism {configured}: max parallelism is fixed for the life of a job's state; configure {snapshot} again")]
    MaxParallelismMismatch {
        /// The max parallelism recorded in the snapshot.
        snapshot: u32,
        /// The max parallelism the restoring backend was created with.
        configured: u32,
    },

    /// A state registered again under its name with another kind.
    #[error("state '{name}' is registered as {existing} but was requested as {requested}: use a new state name or migrate the state")]
    StateKindMismatch {
        /// The state's name.
        name: String,
        /// The kind it is registered with.
        existing: StateKind,
        /// The kind of the new registration.
        requested: StateKind,
    },

    /// A state registered again under its name with another codec for one of its parts.
    #[error("state '{name}' uses {what} codec '{existing}' but was requested with codec '{requested}': register it with the codec it was written with, or migrate the state")]
    StateCodecMismatch {
        /// The state's name.
        name: String,
        /// The part whose codec differs ("key", "value", "user key", "element", ...).
        what: &'static str,
        /// The codec name it is registered with (empty for none).
        existing: String,
        /// The codec name of the new registration (empty for none).
        requested: String,
    },

    /// An operator state registered again under its name with another redistribution mode.
    #[error("operator state '{name}' is registered as {existing} but was requested as {requested}: one name has one redistribution mode")]
    OperatorStateModeMismatch {
        /// The operator state's name.
        name: String,
        /// The mode it is registered with, as displayed.
        existing: String,
        /// The mode of the new registration, as displayed.
        requested: String,
    },

    /// A state name that was never registered.
    #[error("state '{name}' is not registered in this backend: register it (through its descriptor) first")]
    UnknownState {
        /// The unknown name.
        name: String,
    },

    /// A [`StateId`](crate::StateId) that this backend did not hand out.
    #[error("state handle {id} does not belong to this backend: create state handles from the backend you use them with")]
    UnknownStateId {
        /// The raw id.
        id: u32,
    },

    /// An operation that the state's kind does not offer (e.g. a map operation on value
    /// state).
    #[error("operation '{operation}' is not supported by {kind} state '{name}'")]
    UnsupportedOperation {
        /// The operation's name.
        operation: &'static str,
        /// The state's kind.
        kind: StateKind,
        /// The state's name.
        name: String,
    },

    /// A codec failed to serialize a value.
    #[error("could not encode a value with codec '{codec}': {message}")]
    Encode {
        /// The codec's name.
        codec: String,
        /// The codec's own error message.
        message: String,
    },

    /// A codec failed to deserialize stored bytes.
    #[error("could not decode a value with codec '{codec}': {message}; the stored bytes were written with another type or codec")]
    Decode {
        /// The codec's name.
        codec: String,
        /// The codec's own error message.
        message: String,
    },

    /// A file or record written by a newer format version than this build reads.
    #[error("{what} has unknown format version {found} (this build reads up to version {supported}): upgrade flowstate to read it")]
    UnsupportedFormatVersion {
        /// What carries the version (e.g. "snapshot file", "checkpoint manifest").
        what: &'static str,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// Stored bytes that do not parse as what they claim to be.
    #[error("{what} is corrupt: {detail}; restore from another (earlier) checkpoint")]
    Corrupt {
        /// The damaged object (file, block, record).
        what: String,
        /// What is wrong with it.
        detail: String,
    },

    /// Stored bytes whose CRC32C differs from the one recorded with them.
    #[error("checksum mismatch in {what}: expected {expected:#010x}, found {actual:#010x}; the stored bytes are damaged: restore from another checkpoint")]
    ChecksumMismatch {
        /// The damaged object (file, block, record).
        what: String,
        /// The recorded CRC32C.
        expected: u32,
        /// The CRC32C of the bytes read.
        actual: u32,
    },

    /// A snapshot handle of a kind or format this backend cannot restore from.
    #[error("snapshot handle {handle} cannot be restored by this backend: {reason}")]
    UnsupportedHandle {
        /// The handle, as [`KeyedStateHandle::describe`](crate::KeyedStateHandle::describe)
        /// puts it.
        handle: String,
        /// Why this backend cannot restore it.
        reason: String,
    },

    /// A checkpoint id with no published manifest in the checkpoint storage.
    #[error("checkpoint {id} was not found in the checkpoint storage: it was never completed or has been deleted by retention")]
    CheckpointNotFound {
        /// The checkpoint id.
        id: u64,
    },

    /// An action that the checkpoint's lifecycle state rules out (e.g. publishing a
    /// checkpoint that is already published).
    #[error("checkpoint {id} is {state}: {reason}")]
    CheckpointState {
        /// The checkpoint id.
        id: u64,
        /// The state that rules the action out ("already published", "not pending", ...).
        state: &'static str,
        /// What was attempted, and what to do.
        reason: String,
    },

    /// A newer checkpoint coordinator took over the same storage root: this one must stop.
    #[error("this checkpoint coordinator (epoch {epoch}) was fenced off by a newer coordinator (epoch {newer}) of the same checkpoint storage: it publishes and deletes nothing any more; stop it and let the newer one run the job (one storage root belongs to one coordinator)")]
    Fenced {
        /// The fencing epoch of this coordinator.
        epoch: u64,
        /// The epoch of the newer coordinator.
        newer: u64,
    },

    /// A checkpoint storage without create-only (conditional) writes, which fencing and
    /// manifest publication rely on.
    #[error("checkpoint storage {store} does not support create-only writes (conditional put), which flowstate needs to keep one coordinator per storage root and never overwrite a published manifest: enable them (S3: option aws_conditional_put=etag, the default, on a store that honours If-None-Match) or use another store: {source}")]
    ConditionalPutUnsupported {
        /// The store, as displayed.
        store: String,
        /// The store's error for the create-only write.
        #[source]
        source: object_store::Error,
    },

    /// A path that cannot name an object in checkpoint storage.
    #[error("'{path}' is not a valid checkpoint storage path: {reason}")]
    InvalidPath {
        /// The rejected path.
        path: String,
        /// Why it is rejected.
        reason: String,
    },

    /// A checkpoint storage location opened for reading that does not exist.
    #[error("checkpoint storage '{location}' does not exist ({reason}): check the path or URL; commands that only read never create it")]
    StorageNotFound {
        /// The path or URL given.
        location: String,
        /// What is missing.
        reason: String,
    },

    /// A checkpoint storage URL with an unknown scheme or invalid parts.
    #[error("invalid checkpoint storage URL '{url}': {reason}")]
    InvalidStorageUrl {
        /// The rejected URL.
        url: String,
        /// Why it is rejected.
        reason: String,
    },

    /// A checkpoint storage operation that failed.
    #[error("checkpoint storage error on '{path}': {source}")]
    Storage {
        /// The object path the operation was on.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// A local I/O operation that failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done (completes "while ...").
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A configuration value that is out of range or inconsistent; the message names it.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A backend reached one of its limits (map size, open readers, number of states, key
    /// size, ...): the job cannot go on as configured, and an operator acts by changing the
    /// backend's configuration or the job. The source is the backend's own error, which names
    /// the setting.
    #[error("{backend} backend reached a limit: {source}")]
    LimitReached {
        /// The backend's name.
        backend: &'static str,
        /// The backend's error, naming the limit.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// An API was called in a way its documentation rules out (e.g. a snapshot view read
    /// after it was released): a bug in the caller, or in flowstate.
    #[error("invalid use of flowstate: {detail}")]
    InvalidUse {
        /// What was misused, and how.
        detail: String,
    },

    /// An error of a backend's own machinery (its storage engine, its files), with the
    /// backend's error as the source: callers walk `source()` for the engine's error.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Backend`]: `source` is the backend's own error (or a message,
    /// for a broken invariant with no error behind it).
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Shorthand for [`Error::Storage`].
    pub fn storage(path: impl ToString, source: object_store::Error) -> Self {
        Error::Storage {
            path: path.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend's own error stays reachable as the source, for callers that print or match
    /// the cause chain, instead of being flattened into a string.
    #[test]
    fn backend_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
        let error = Error::backend("lmdb", io);
        assert_eq!(error.to_string(), "lmdb backend error: no space left");
        let source = std::error::Error::source(&error).expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
    }
}
