//! # flowstate-rocksdb
//!
//! The RocksDB keyed-state backend of flowstate: state larger than memory, native incremental
//! checkpoints, and rescaling restores that move SST files rather than re-inserting keys.
//!
//! ```
//! use flowstate_api::{
//!     KeyContext, KeyedStateBackend, MaxParallelism, StateBackendFactory, StateKind,
//!     StateMetadata,
//! };
//! use flowstate_rocksdb::RocksDbBackendFactory;
//!
//! let factory = RocksDbBackendFactory::temporary()?;
//! let max = MaxParallelism::new(128)?;
//! let backend = factory.create(max, max.full_range())?;
//! let counts = backend.register_state(&StateMetadata {
//!     name: "counts".into(),
//!     kind: StateKind::Value,
//!     namespace_codec: "void-namespace".into(),
//!     value_codec: "bytes".into(),
//!     user_key_codec: None,
//! })?;
//! let key = KeyContext::new(b"user-1".to_vec(), max);
//! backend.put(counts, &key, &[], b"7")?;
//! assert_eq!(backend.get(counts, &key, &[])?, Some(b"7".to_vec()));
//! # Ok::<(), flowstate_api::Error>(())
//! ```
//!
//! ## Design
//!
//! ### Layout
//! One database per backend instance, in a uniquely named instance directory under the
//! factory's base directory (removed when the backend and its last snapshot are dropped).
//! One column family per registered state, named `s<state id>`. Keys are
//! `[key group: 2 bytes big-endian][varint len | key][varint len | namespace][map user key]`
//! (see [`key_layout`]): every key group is one contiguous key range, iteration is key-group
//! ordered, and the length prefixes make (key, namespace) prefix-free, so a map's entries are
//! exactly the keys under its (key, namespace) prefix.
//!
//! - Value, reducing and aggregating state: one KV per (key, namespace).
//! - List state: one KV per (key, namespace) holding the list in
//!   [`flowstate_api::list_encoding`] form. `list_append` is a RocksDB *merge* with the
//!   encoded new elements; the merge operator ([`LIST_APPEND_MERGE_OPERATOR`]) concatenates,
//!   which is exactly append in that encoding, so an append never reads. `list_replace(&[])`
//!   deletes; an empty list is never stored.
//! - Map state: one KV per entry. Clearing a map iterates its prefix and deletes the entries
//!   in one write batch (Flink does the same): a range tombstone per clear would slow every
//!   later read of the column family.
//! - Reducing and aggregating state are get + fold + put in the typed layer, not merge
//!   operators: the fold is user code over typed values, which a RocksDB merge operator (run
//!   inside compactions, on bytes, without the user's function) cannot call. Flink makes the
//!   same choice.
//!
//! ### Memory
//! [`RocksDbResources`] holds one LRU block cache and one write-buffer manager whose memtable
//! memory is charged to that cache, so the whole process stays near
//! [`RocksDbConfig::memory_bytes`] (default 256 MiB, half of it for memtables) however many
//! backends and states it runs. Index and filter blocks live in the cache too (pinned for L0,
//! high priority). Every factory of a process should share one `RocksDbResources`
//! ([`RocksDbResources::shared`] is the default one).
//!
//! The WAL is disabled: durability comes from checkpoints and a backend never reopens its
//! local files after a crash (restores always start from a checkpoint in a new instance
//! directory). Atomic flush keeps column families mutually consistent without a WAL.
//!
//! ### Snapshots
//! - **Full** ([`flowstate_api::SnapshotKind::Full`]): the synchronous part takes a RocksDB
//!   snapshot (a sequence number; nothing copied, no writer blocked) pinned together with the
//!   database in a self-referential cell ([`RocksDbSnapshotView`]); the asynchronous part
//!   writes the canonical key-group-ordered format from it
//!   ([`flowstate_api::snapshot::CanonicalSnapshotJob`]), iterating each key group's range per
//!   column family. Any backend restores it.
//! - **Incremental** (native): the synchronous part creates a RocksDB checkpoint (memtable
//!   flush, then hard links to the immutable SST files) in the instance directory. The
//!   asynchronous part uploads the SSTs that the last *completed* checkpoint of this backend
//!   did not already upload, under `shared/rocksdb-<instance uuid>-<checkpoint id>-<sst name>`
//!   (unique per upload: an SST re-uploaded after an aborted checkpoint never shares a path
//!   with the aborted upload, which the coordinator may be deleting), reuses the [`flowstate_api::FileRef`]s of the others, and uploads
//!   MANIFEST, CURRENT and OPTIONS as files of that checkpoint only. The handle is
//!   [`flowstate_api::KeyedStateHandle::Native`] with metadata listing the states (name ->
//!   column family) and every SST's column family, level and key-group span (read from the
//!   checkpoint's MANIFEST). Pending checkpoints never become bases; a completed checkpoint
//!   replaces the base (a completed full checkpoint empties it, since the older checkpoint's
//!   files may now be dropped by retention).
//!
//! ### Rescaling restore
//! [`RocksDbBackendFactory`] overrides `restore`. Among the native handles overlapping the
//! target range, the one overlapping most becomes the new database: its files are downloaded
//! into the new instance directory and opened, then everything outside the target is removed
//! with two `delete_range`s per column family (plus `delete_file_in_range` to drop wholly
//! outside SSTs at once). Its SSTs are recorded as already uploaded, so the next incremental
//! checkpoint does not upload them again. Each other overlapping native handle is downloaded
//! to a scratch directory and opened read-only. For every state, when all the handle's SST
//! files of that column family lie inside the target (scaling in: an old subtask's key groups
//! move whole), the files are **ingested as they are**: linked in with their sequence numbers
//! (RocksDB's `allow_db_generated_files`, through the C API since the `rocksdb` crate does not
//! expose it), bottom level first and level 0 oldest first, so no key is read. Otherwise (a
//! file straddles the target, or RocksDB refuses because of an overlap) the target key groups'
//! range is read in key order into one new SST file with `SstFileWriter`, which the new
//! database ingests (moved, not re-inserted through memtables).
//! [`RocksDbBackend::files_ingested_as_is`] counts the files that took the first path.
//! Canonical and changelog handles go through ranged reads of their key-group index and
//! `apply_rows` write batches.
//!
//! Restoring from native handles reads every file of each overlapping handle (as Flink does):
//! a handle's MANIFEST lists all its SSTs, so its database cannot be opened from a subset, and
//! a freshly flushed SST spans every key group of its subtask. Restoring a small part of a
//! large native handle therefore downloads the whole handle; canonical handles are read by
//! key-group range. Not done: reading only the SSTs whose key-group span (recorded in the
//! metadata) meets the target, which needs an SST reader or key-group-partitioned SSTs
//! (RocksDB's SST partitioner, not exposed by the `rocksdb` crate).
//!
//! ### For benchmarks
//! [`value_key`] and [`map_entry_key`] build the exact stored key bytes,
//! [`column_family_name`] names a state's column family, and [`RocksDbResources::db_options`],
//! [`write_options`] and [`read_options`] are the options the backend uses, so a raw-RocksDB
//! baseline can store the same bytes with the same settings.

#![warn(missing_docs)]

pub mod error;
pub mod key_layout;

mod backend;
mod checkpoint;
mod db;
mod factory;
mod ingest;
mod resources;
mod restore;
mod view;

pub use backend::RocksDbBackend;
pub use checkpoint::{SstInfo, NATIVE_METADATA_VERSION};
pub use db::column_family_name;
pub use error::RocksDbError;
pub use factory::RocksDbBackendFactory;
pub use key_layout::{map_entry_key, value_key};
pub use resources::{
    read_options, write_options, RocksDbConfig, RocksDbResources, LIST_APPEND_MERGE_OPERATOR,
};
pub use view::RocksDbSnapshotView;

/// The backend's name, in reports and native handles.
pub const BACKEND_NAME: &str = "rocksdb";
