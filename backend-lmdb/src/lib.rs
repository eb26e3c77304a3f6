//! # flowstate-lmdb
//!
//! A keyed state backend of flowstate on [LMDB](http://www.lmdb.tech/doc/) through
//! [`heed`] (LMDB's C library is compiled in). LMDB is a copy-on-write B+tree in one memory
//! map: reads are as fast as memory and never block, and a read transaction is a consistent
//! snapshot for free (MVCC), which is what checkpoints need.
//!
//! ```
//! use flowstate_api::{
//!     CheckpointId, CheckpointStorage, KeyContext, KeyedStateBackend, MaxParallelism,
//!     SnapshotKind, SnapshotRequest, StateBackend, StateBackendFactory, StateKind,
//!     StateMetadata,
//! };
//! use flowstate_lmdb::{LmdbBackendFactory, LmdbConfig};
//!
//! let factory = LmdbBackendFactory::temporary(LmdbConfig::default())?;
//! let max = MaxParallelism::new(128)?;
//! let backend = factory.create(max, max.full_range())?;
//! let counts = backend.register_state(&StateMetadata {
//!     name: "counts".into(),
//!     kind: StateKind::Value,
//!     namespace_codec: "void-namespace".into(),
//!     value_codec: "u64-le".into(),
//!     user_key_codec: None,
//! })?;
//! let key = KeyContext::new(b"user-42".to_vec(), max);
//! backend.put(counts, &key, b"", &7u64.to_le_bytes())?;
//! assert_eq!(backend.get(counts, &key, b"")?, Some(7u64.to_le_bytes().to_vec()));
//!
//! // A checkpoint: the view is captured now, written by the job (usually on another thread).
//! let job = backend.snapshot(&SnapshotRequest {
//!     checkpoint_id: CheckpointId(1),
//!     subtask_index: 0,
//!     kind: SnapshotKind::Full,
//! })?;
//! let storage = CheckpointStorage::in_memory();
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let handle = runtime.block_on(job.run(storage.clone()))?;
//! let restored = runtime.block_on(factory.restore(max, max.full_range(), &storage, &[handle]))?;
//! assert_eq!(restored.get(counts, &key, b"")?, Some(7u64.to_le_bytes().to_vec()));
//! # Ok::<(), flowstate_api::Error>(())
//! ```
//!
//! ## Storage layout
//!
//! One LMDB named database per registered state (`state-<id>`). Keys are
//! `[key group, 2 bytes big-endian][len][key][len][namespace][map user key]` (see [`key_layout`]):
//! a key group is one contiguous key range, so snapshots walk key groups in order with one
//! prefix scan each. Values are stored as they are; a **list** is one LMDB value per
//! `(key, namespace)` in [`flowstate_api::list_encoding`] form (the form snapshots carry, so a
//! snapshot copies it without re-encoding; reading a list reads one value); a **map** is one
//! LMDB entry per map entry, so `map_get`/`map_put` touch one entry whatever the map's size.
//! The cost of whole-list values: a list appended to across many flushes is rewritten whole at
//! each flush that touches it (appends within one buffer are combined first), which one LMDB
//! entry per element would avoid at the price of a range scan per `list_get` and re-encoding
//! in every snapshot. LMDB limits a key (key group, key, namespace and map user key together)
//! to 511 bytes; longer ones are rejected when written, with an error saying so.
//!
//! Benchmarks that drive raw `heed` the same way use [`LmdbConfig::env_open_options`],
//! [`database_name`] and [`key_layout::value_key`] / [`key_layout::map_entry_key`].
//!
//! ## Write batching: a write buffer in front of LMDB
//!
//! LMDB has one writer at a time and a commit is a copy-on-write of every touched page path,
//! so committing per record would cost far more than the write itself. Writes therefore go to
//! an ordered in-memory **write buffer** (one `BTreeMap` of puts / deletes / list appends per
//! state) and reach LMDB in **one write transaction per flush**. The buffer is flushed when it
//! holds [`LmdbConfig::write_buffer_entries`] entries or about
//! [`LmdbConfig::write_buffer_bytes`] bytes, at every snapshot (before the read transaction is
//! opened), before restore batches, and by [`LmdbBackend::flush`]. Every read looks in the
//! buffer first and then in LMDB (point reads) or merges both in key order (map iteration,
//! `keys`, snapshots), so an operator always reads its own uncommitted writes. A list append
//! is buffered without a read; the flush appends it to the stored list inside the write
//! transaction. Short keys and values sit inline in the tree's nodes (no allocation, and key
//! comparisons touch no other memory), and the flush writes in key order, which makes LMDB's
//! page updates cheaper than the random order the records came in.
//!
//! Trade-offs: the buffer costs a tree lookup on every read and memory up to its limit, and a
//! snapshot's synchronous part includes one flush of at most one buffer. The alternative, a
//! long-lived write transaction shared by all calls, avoids the lookup but LMDB ties a write
//! transaction to the thread that began it (its writer lock is a thread-owned mutex) while
//! `KeyedStateBackend` is called through `&self` from any thread, and uncommitted pages of a
//! huge transaction stay dirty in memory anyway. The buffer also makes commits sorted batches,
//! which LMDB writes fastest. The working environment is opened with `NO_SYNC`: it is never
//! read back after a crash (recovery restores a checkpoint into a fresh directory), so commits
//! need not wait for the disk ([`LmdbConfig::env_flags`]).
//!
//! All state access goes through one mutex (the buffer, the cached read transaction and the
//! single LMDB writer are shared): uncontended it costs a few nanoseconds, and one subtask's
//! state is normally accessed by one thread.
//!
//! ## Map size: start moderate, double when full
//!
//! LMDB's map size is fixed at open and a write that needs more pages fails with `MDB_MAP_FULL`.
//! The backend opens with [`LmdbConfig::initial_map_size`] (256 MiB by default; it is address
//! space, not memory or disk) and, on `MDB_MAP_FULL`, aborts the transaction, **doubles the
//! map** (`mdb_env_set_mapsize`) and retries the whole batch, which the buffer still holds, up
//! to [`LmdbConfig::max_map_size`] if set. LMDB allows a resize only while the process has no
//! open transaction: the backend's own cached read transaction is dropped first, but a
//! snapshot being uploaded holds a read transaction for as long as the upload runs. Then the
//! flush is **postponed** instead of blocking: the data stays in the buffer (which grows past
//! its limit), reads and writes go on, and the flush is retried once the snapshots are done. A
//! snapshot taken meanwhile freezes a copy of the buffer on top of its read transaction.
//! Trade-offs: doubling wastes at most half of the address space and resizes O(log n) times;
//! postponing keeps writers running at the cost of buffer memory while uploads are slow.
//!
//! ## Checkpoints
//!
//! - **Full**: the buffer is flushed and a read transaction opened (under the mutex, a few
//!   microseconds plus the flush); the job then writes the canonical key-group-ordered file
//!   from that transaction while writers go on. With change tracking on, that file is also
//!   the **base of a new changelog chain** (a [`flowstate_api::KeyedStateHandle::Changelog`]
//!   without deltas, under `shared/`): later incremental checkpoints build on it, which is both
//!   cheaper than re-uploading a base and safe whatever the retention (an older base may be
//!   deleted once the full checkpoint completes). With change tracking off, a full snapshot is
//!   a [`flowstate_api::snapshot::CanonicalSnapshotJob`] file in the checkpoint's own
//!   directory, and incremental requests write full snapshots.
//! - **Incremental** (changelog family): each flush of the write buffer records the
//!   `(state, key group, key, namespace)` its writes touched ([`LmdbConfig::track_changes`]).
//!   The flushed buffer is already in key order, so a flush yields a sorted run of changes in
//!   one contiguous buffer; runs are merged as they pile up. (A hash-set insert per write cost
//!   about as much as the LMDB write itself.) At a checkpoint, [`flowstate_api::changelog`]'s chain
//!   decides: a new full **base**, or a **delta** with, per changed key, a tombstone then its
//!   current rows, read from the same kind of read transaction. Changes of pending and aborted
//!   checkpoints stay tracked until a later checkpoint of the chain completes; the chain
//!   re-bases by [`LmdbConfig::changelog`]. Restore (also rescaled) applies base then deltas
//!   for the target key groups only.
//!
//! A snapshot's read transaction keeps LMDB from reusing pages freed while it is open, so
//! the data file grows by about what is rewritten during a slow upload (the space is reused
//! afterwards).
//!
//! Restores write a snapshot block's rows straight into LMDB, one write transaction per
//! [`LmdbConfig::write_buffer_bytes`] of rows, at most [`config::MAX_TRANSACTION_BYTES`]
//! (LMDB bounds the dirty pages of a transaction); a buffer that outgrew its limit while a
//! flush was postponed is flushed in transactions of that size too.

#![warn(missing_docs)]

mod backend;
mod changes;
pub mod config;
mod env;
pub mod error;
mod factory;
pub mod key_layout;
mod overlay;
mod restore;
mod view;

pub use backend::LmdbBackend;
pub use config::LmdbConfig;
pub use env::{database_name, LmdbStats};
pub use error::LmdbError;
pub use factory::LmdbBackendFactory;
pub use view::LmdbSnapshotView;
