//! The one error type of `flowstate-api`. Backends wrap their engine errors in
//! [`Error::Backend`] so engines match on one enum.

use crate::state::StateKind;

/// Result alias used throughout flowstate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error flowstate's API reports. Messages say what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("max parallelism {value} is invalid: it must be between 1 and 32768")]
    InvalidMaxParallelism { value: u32 },

    #[error("parallelism {value} is invalid: it must be between 1 and 32768")]
    InvalidParallelism { value: u32 },

    #[error("parallelism {parallelism} exceeds max parallelism {max_parallelism}: raise the max parallelism (it is fixed once state exists) or lower the parallelism")]
    ParallelismAboveMax {
        parallelism: u32,
        max_parallelism: u32,
    },

    #[error("key group {key_group} is out of bounds for max parallelism {max_parallelism}")]
    KeyGroupOutOfBounds {
        key_group: u32,
        max_parallelism: u32,
    },

    #[error("key-group range [{start}, {end}] is invalid: start must be <= end < 32768")]
    InvalidKeyGroupRange { start: u32, end: u32 },

    #[error("operator index {operator_index} is out of bounds for parallelism {parallelism}")]
    OperatorIndexOutOfBounds {
        operator_index: u32,
        parallelism: u32,
    },

    #[error("key group {key_group} is not in this backend's range {range}: the record was routed to the wrong subtask (route with key_groups::operator_index_for_key_group)")]
    KeyGroupNotOwned { key_group: u32, range: String },

    #[error("the snapshot was taken with max parallelism {snapshot} but the job now runs with max parallelism {configured}: max parallelism is fixed for the life of a job's state; configure {snapshot} again")]
    MaxParallelismMismatch { snapshot: u32, configured: u32 },

    #[error("state '{name}' is registered as {existing} but was requested as {requested}: use a new state name or migrate the state")]
    StateKindMismatch {
        name: String,
        existing: StateKind,
        requested: StateKind,
    },

    #[error("state '{name}' uses {what} codec '{existing}' but was requested with codec '{requested}': register it with the codec it was written with, or migrate the state")]
    StateCodecMismatch {
        name: String,
        what: &'static str,
        existing: String,
        requested: String,
    },

    #[error("operator state '{name}' is registered as {existing} but was requested as {requested}: one name has one redistribution mode")]
    OperatorStateModeMismatch {
        name: String,
        existing: String,
        requested: String,
    },

    #[error("state '{name}' is not registered in this backend: register it (through its descriptor) first")]
    UnknownState { name: String },

    #[error("state handle {id} does not belong to this backend: create state handles from the backend you use them with")]
    UnknownStateId { id: u32 },

    #[error("operation '{operation}' is not supported by {kind} state '{name}'")]
    UnsupportedOperation {
        operation: &'static str,
        kind: StateKind,
        name: String,
    },

    #[error("could not encode a value with codec '{codec}': {message}")]
    Encode { codec: String, message: String },

    #[error("could not decode a value with codec '{codec}': {message}; the stored bytes were written with another type or codec")]
    Decode { codec: String, message: String },

    #[error("{what} has unknown format version {found} (this build reads up to version {supported}): upgrade flowstate to read it")]
    UnsupportedFormatVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },

    #[error("{what} is corrupt: {detail}; restore from another (earlier) checkpoint")]
    Corrupt { what: String, detail: String },

    #[error("checksum mismatch in {what}: expected {expected:#010x}, found {actual:#010x}; the stored bytes are damaged: restore from another checkpoint")]
    ChecksumMismatch {
        what: String,
        expected: u32,
        actual: u32,
    },

    #[error("snapshot handle {handle} cannot be restored by this backend: {reason}")]
    UnsupportedHandle { handle: String, reason: String },

    #[error("checkpoint {id} was not found in the checkpoint storage: it was never completed or has been deleted by retention")]
    CheckpointNotFound { id: u64 },

    #[error("checkpoint {id} is {state}: {reason}")]
    CheckpointState {
        id: u64,
        state: &'static str,
        reason: String,
    },

    #[error("this checkpoint coordinator (epoch {epoch}) was fenced off by a newer coordinator (epoch {newer}) of the same checkpoint storage: it publishes and deletes nothing any more; stop it and let the newer one run the job (one storage root belongs to one coordinator)")]
    Fenced { epoch: u64, newer: u64 },

    #[error("checkpoint storage {store} does not support create-only writes (conditional put), which flowstate needs to keep one coordinator per storage root and never overwrite a published manifest: enable them (S3: option aws_conditional_put=etag, the default, on a store that honours If-None-Match) or use another store: {source}")]
    ConditionalPutUnsupported {
        store: String,
        #[source]
        source: object_store::Error,
    },

    #[error("'{path}' is not a valid checkpoint storage path: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("checkpoint storage '{location}' does not exist ({reason}): check the path or URL; commands that only read never create it")]
    StorageNotFound { location: String, reason: String },

    #[error("invalid checkpoint storage URL '{url}': {reason}")]
    InvalidStorageUrl { url: String, reason: String },

    #[error("checkpoint storage error on '{path}': {source}")]
    Storage {
        path: String,
        #[source]
        source: object_store::Error,
    },

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid configuration: {0}")]
    Config(String),

    /// A backend reached one of its limits (map size, open readers, number of states, key
    /// size, ...): the job cannot go on as configured, and an operator acts by changing the
    /// backend's configuration or the job. The source is the backend's own error, which names
    /// the setting.
    #[error("{backend} backend reached a limit: {source}")]
    LimitReached {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// An API was called in a way its documentation rules out (e.g. a snapshot view read
    /// after it was released): a bug in the caller, or in flowstate.
    #[error("invalid use of flowstate: {detail}")]
    InvalidUse { detail: String },

    /// An error of a backend's own machinery (its storage engine, its files), with the
    /// backend's error as the source: callers walk `source()` for the engine's error.
    #[error("{backend} backend error: {source}")]
    Backend {
        backend: &'static str,
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
