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

    #[error("timely dataflow failed: {0}")]
    Timely(String),

    #[error("a control message between workers could not be {action}: {source}")]
    Control {
        action: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("another worker stopped the job: {0}")]
    PeerFailed(String),

    #[error("the job's checkpoints disagree with this run: {0}")]
    Inconsistent(String),

    #[error("checkpoint {id} was aborted ({reason}); the job cannot finish on it: rerun it to restore from the last completed checkpoint")]
    FinalCheckpointAborted { id: u64, reason: String },

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
