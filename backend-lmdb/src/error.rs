//! The errors of the LMDB backend; converted at the trait boundary into
//! [`flowstate_api::Error::LimitReached`] for the limits an operator raises in the
//! configuration, [`flowstate_api::Error::Corrupt`] for a damaged working directory,
//! [`flowstate_api::Error::Config`] for a bad configuration, and
//! [`flowstate_api::Error::Backend`] otherwise; the LMDB error stays the source.

use std::path::{Path, PathBuf};

/// Everything that can go wrong inside the LMDB backend.
#[derive(Debug, thiserror::Error)]
pub enum LmdbError {
    #[error("LMDB failed while {context}: {source}")]
    /// An LMDB (heed) call failed.
    Heed {
        /// What the backend was doing, e.g. "opening a read transaction".
        context: &'static str,
        /// The error heed returned.
        #[source]
        source: heed::Error,
    },

    #[error("the LMDB map is full at {size} bytes and may not grow beyond max_map_size ({max} bytes): raise LmdbConfig::max_map_size or give the subtask less state")]
    /// The memory map is full and already at `LmdbConfig::max_map_size`.
    MapLimit {
        /// The current map size, in bytes.
        size: usize,
        /// The configured maximum map size, in bytes.
        max: usize,
    },

    #[error("the LMDB map is full and cannot grow while snapshots are being written: register the state again once the running checkpoint has finished, or raise LmdbConfig::initial_map_size")]
    /// The memory map is full but cannot grow while a snapshot holds a read transaction (LMDB
    /// resizes the map only when no transaction is open).
    MapFullWhileSnapshotting,

    #[error("this LMDB environment already holds {max} states (LmdbConfig::max_states): raise max_states")]
    /// Registering a state needs a named database beyond `LmdbConfig::max_states`.
    TooManyStates {
        /// The configured `LmdbConfig::max_states`.
        max: u32,
    },

    #[error("too many LMDB read transactions are open (snapshots in flight): raise LmdbConfig::max_readers or let earlier snapshot jobs finish")]
    /// LMDB's reader table is full (`LmdbConfig::max_readers` read transactions are open).
    TooManyReaders,

    #[error("an LMDB key of {len} bytes exceeds LMDB's limit of {max} bytes (key group, key, namespace and map user key together): use shorter keys, namespaces or map keys")]
    /// A stored key (key group, key, namespace and map user key) is longer than LMDB allows.
    KeyTooLarge {
        /// Length of the rejected key, in bytes.
        len: usize,
        /// LMDB's maximum key size, in bytes.
        max: usize,
    },

    #[error("stored LMDB key is corrupt: {0}; the local working directory is damaged: restore from a checkpoint")]
    /// A key read from LMDB is malformed; the detail says how.
    CorruptKey(String),

    #[error("LMDB working directory {0} is not empty: an LMDB backend starts empty (it is restored from checkpoints); give it a fresh directory")]
    /// The working directory given to a new backend already holds files.
    DirectoryNotEmpty(PathBuf),

    #[error("I/O error on LMDB working directory {path}: {source}")]
    /// A file-system operation on the working directory failed.
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    #[error("invalid LMDB backend configuration: {0}")]
    /// The configuration is invalid; the message says which setting and why.
    Config(String),
}

impl LmdbError {
    /// Turns an I/O error on `path` into the backend's error (for `map_err`).
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| LmdbError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps a heed error, turning the LMDB codes a user can act on into their own variants.
    pub(crate) fn heed(context: &'static str, source: heed::Error) -> Self {
        match source {
            heed::Error::Mdb(heed::MdbError::ReadersFull) => LmdbError::TooManyReaders,
            source => LmdbError::Heed { context, source },
        }
    }
}

impl From<LmdbError> for flowstate_api::Error {
    fn from(e: LmdbError) -> Self {
        match e {
            LmdbError::Config(message) => flowstate_api::Error::Config(message),
            LmdbError::CorruptKey(detail) => {
                flowstate_api::Error::corrupt("a key in the LMDB working directory", detail)
            }
            e @ (LmdbError::MapLimit { .. }
            | LmdbError::MapFullWhileSnapshotting
            | LmdbError::TooManyStates { .. }
            | LmdbError::TooManyReaders
            | LmdbError::KeyTooLarge { .. }) => flowstate_api::Error::LimitReached {
                backend: "lmdb",
                source: Box::new(e),
            },
            e => flowstate_api::Error::backend("lmdb", e),
        }
    }
}

/// True when `e` is LMDB's "map full": the map must grow and the transaction be retried.
pub(crate) fn is_map_full(e: &heed::Error) -> bool {
    matches!(e, heed::Error::Mdb(heed::MdbError::MapFull))
}
