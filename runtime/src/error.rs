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

    #[error("invalid backend configuration '{input}': {reason}")]
    InvalidBackendConfig { input: String, reason: String },

    #[error("the {backend} backend is not compiled into this build: enable the cargo feature '{feature}' of flowstate-runtime")]
    BackendNotCompiled {
        backend: &'static str,
        feature: &'static str,
    },

    #[error("invalid coordinator configuration: {reason}")]
    InvalidCoordinatorConfig { reason: String },

    #[error("acknowledgement of subtask {subtask_index} for checkpoint {id} is invalid: {reason}")]
    InvalidAck {
        id: CheckpointId,
        subtask_index: u32,
        reason: String,
    },

    #[error("checkpoint {id} is not pending in this coordinator (never triggered, or already completed); the acknowledgement was dropped")]
    UnknownCheckpoint { id: CheckpointId },

    #[error("checkpoint {id} did not complete: {reason}")]
    NotCompleted { id: CheckpointId, reason: String },
}
