//! The one error type of `flowstate-runtime`: configuration and coordination. The
//! per-subtask operations ([`crate::Subtask::capture`], uploads, restores) are state-layer
//! operations and return [`flowstate_api::Error`] as the backends do; it converts into
//! [`Error::State`] with `?`.

use flowstate_api::CheckpointId;

/// Result alias of the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the runtime reports. State-layer failures keep their [`flowstate_api::Error`] as the
/// source; the other variants are the runtime's own decisions, each saying what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A state backend, checkpoint storage or format error.
    #[error(transparent)]
    State(#[from] flowstate_api::Error),

    /// A backend configuration string could not be parsed.
    #[error("invalid backend configuration '{input}': {reason}")]
    InvalidBackendConfig {
        /// The configuration string as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The configured backend's cargo feature is off in this build.
    #[error("the {backend} backend is not compiled into this build: enable the cargo feature '{feature}' of flowstate-runtime")]
    BackendNotCompiled {
        /// The backend's name (`heap`, `rocksdb`, `lmdb`).
        backend: &'static str,
        /// The cargo feature of flowstate-runtime that compiles it in.
        feature: &'static str,
    },

    /// A [`crate::CoordinatorConfig`] the coordinator cannot run with.
    #[error("invalid coordinator configuration: {reason}")]
    InvalidCoordinatorConfig {
        /// What is wrong with it.
        reason: String,
    },

    /// An acknowledgement that does not fit the job (subtask index out of range, or key
    /// groups other than the subtask owns); it is rejected.
    #[error("acknowledgement of subtask {subtask_index} for checkpoint {id} is invalid: {reason}")]
    InvalidAck {
        /// The checkpoint acknowledged.
        id: CheckpointId,
        /// The index of the subtask the acknowledgement claims to come from.
        subtask_index: u32,
        /// Why it is invalid.
        reason: String,
    },

    /// A checkpoint id this coordinator has no pending checkpoint for.
    #[error("checkpoint {id} is not pending in this coordinator (never triggered, or already completed); the acknowledgement was dropped")]
    UnknownCheckpoint {
        /// The checkpoint id given.
        id: CheckpointId,
    },

    /// A checkpoint run in-process did not complete (declined or aborted).
    #[error("checkpoint {id} did not complete: {reason}")]
    NotCompleted {
        /// The checkpoint that did not complete.
        id: CheckpointId,
        /// What happened to it.
        reason: String,
    },
}
