//! The RocksDB backend's own errors, converted into [`flowstate_api::Error`] at the trait
//! boundary.

/// What can go wrong inside this crate.
#[derive(Debug, thiserror::Error)]
pub enum RocksDbError {
    #[error("RocksDB failed while {context}: {source}; check free disk space, open-file limits and permissions of the instance directory")]
    /// A RocksDB call failed.
    Engine {
        /// What the backend was doing when it failed.
        context: String,
        /// The error RocksDB returned.
        #[source]
        source: rocksdb::Error,
    },

    #[error("native RocksDB checkpoint metadata is invalid ({detail}); restore from another checkpoint or a canonical savepoint")]
    /// The metadata of a native checkpoint is invalid (undecodable, a duplicate state, an
    /// unsafe file name, a missing checksum) or cannot be serialized.
    Metadata {
        /// What is wrong with it.
        detail: String,
    },
}

impl RocksDbError {
    /// Wraps an engine error with what the backend was doing.
    pub fn engine(context: impl Into<String>) -> impl FnOnce(rocksdb::Error) -> RocksDbError {
        let context = context.into();
        move |source| RocksDbError::Engine { context, source }
    }
}

impl From<RocksDbError> for flowstate_api::Error {
    fn from(e: RocksDbError) -> Self {
        flowstate_api::Error::backend(crate::BACKEND_NAME, e)
    }
}

/// Shorthand: maps a `rocksdb::Error` into the API error, with context.
pub(crate) fn engine(context: &'static str) -> impl FnOnce(rocksdb::Error) -> flowstate_api::Error {
    move |source| {
        RocksDbError::Engine {
            context: context.to_string(),
            source,
        }
        .into()
    }
}
