//! The one error type of `flowstate-timely`.

/// Result alias of the integration.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a timely job on flowstate reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// State, checkpoint storage or format.
    #[error(transparent)]
    State(#[from] flowstate_api::Error),

    /// The checkpoint runtime (backend configuration, coordinator).
    #[error(transparent)]
    Runtime(#[from] flowstate_runtime::Error),

    /// Timely itself failed (e.g. a worker panicked).
    #[error("timely dataflow failed: {0}")]
    Timely(String),

    /// A control message between workers could not be encoded or decoded.
    #[error("a control message between workers could not be {action}: {source}")]
    Control {
        /// What failed: `"encoded"` or `"decoded"`.
        action: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// Local I/O (output files, the upload runtime).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Another worker failed and told the others; its reason.
    #[error("another worker stopped the job: {0}")]
    PeerFailed(String),

    /// Checkpoints, control messages, input positions or output disagree with what this run
    /// expects.
    #[error("the job's checkpoints disagree with this run: {0}")]
    Inconsistent(String),

    /// The final checkpoint, which the job waits for, was aborted.
    #[error("checkpoint {id} was aborted ({reason}); the job cannot finish on it: rerun it to restore from the last completed checkpoint")]
    FinalCheckpointAborted {
        /// The aborted checkpoint's id.
        id: u64,
        /// Why it was aborted.
        reason: String,
    },

    /// The job's arguments or settings are invalid.
    #[error("invalid job configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
