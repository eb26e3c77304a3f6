//! The one error type of the benchmark workloads.

/// What can go wrong while building or running a benchmark workload.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flowstate backend or the API refused an operation.
    #[error("flowstate: {0}")]
    State(#[from] flowstate_api::Error),
    /// Raw RocksDB (the baseline) failed.
    #[cfg(feature = "rocksdb")]
    #[error("raw RocksDB: {0}")]
    RocksDb(#[from] rocksdb::Error),
    /// Raw LMDB through heed (the baseline) failed.
    #[error("raw LMDB (heed): {0}")]
    Lmdb(#[from] heed::Error),
    /// A file or directory operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A stored value is not the postcard encoding of a `u64`.
    #[error("a stored value does not decode as a postcard u64 ({0}): the store holds bytes this workload did not write")]
    Value(postcard::Error),
    /// A workload read found no value where it had written one.
    #[error("{subject}: workload key #{index} has no value although the workload wrote one")]
    MissingKey { subject: String, index: usize },
    /// A setting (environment variable or argument) is unusable.
    #[error("{0}")]
    Config(String),
    /// A result did not match what the workload wrote.
    #[error("check failed: {0}")]
    Check(String),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result of the benchmark workloads.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
