//! # flowstate-heap
//!
//! Keyed state in memory, on [`dashmap`]: the fastest flowstate backend, for state that fits
//! in RAM. Snapshots are consistent point-in-time views taken in O(1) and read while writers
//! go on; incremental checkpoints upload only what changed (changelog deltas on a base).
//!
//! ```
//! use flowstate_api::{
//!     CheckpointId, CheckpointStorage, KeyContext, KeyedStateBackend, MaxParallelism,
//!     SnapshotKind, SnapshotRequest, StateBackend, StateBackendFactory, StateKind,
//!     StateMetadata,
//! };
//! use flowstate_heap::HeapBackendFactory;
//!
//! let max = MaxParallelism::new(128)?;
//! let factory = HeapBackendFactory::new();
//! let backend = factory.create(max, max.full_range())?;
//! let counts = backend.register_state(&StateMetadata {
//!     name: "counts".into(),
//!     kind: StateKind::Value,
//!     namespace_codec: "void".into(),
//!     value_codec: "u64-le".into(),
//!     user_key_codec: None,
//! })?;
//! let key = KeyContext::new(b"user-42".to_vec(), max);
//! backend.put(counts, &key, b"", &7u64.to_le_bytes())?;
//!
//! // The synchronous part of a checkpoint captures a view; the upload runs later, while
//! // writes go on without showing up in it.
//! let job = backend.snapshot(&SnapshotRequest {
//!     checkpoint_id: CheckpointId(1),
//!     subtask_index: 0,
//!     kind: SnapshotKind::Full,
//! })?;
//! backend.put(counts, &key, b"", &8u64.to_le_bytes())?;
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let storage = CheckpointStorage::in_memory();
//! let handle = runtime.block_on(job.run(storage.clone()))?;
//! let restored = runtime.block_on(factory.restore(max, max.full_range(), &storage, &[handle]))?;
//! assert_eq!(restored.get(counts, &key, b"")?, Some(7u64.to_le_bytes().to_vec()));
//! assert_eq!(backend.get(counts, &key, b"")?, Some(8u64.to_le_bytes().to_vec()));
//! # Ok::<(), flowstate_api::Error>(())
//! ```
//!
//! ## Layout
//!
//! Each registered state has one `DashMap` per key group of the backend's range, created on
//! the first write to that key group. An entry is keyed by the record key's bytes followed by
//! the namespace's (one `Arc<[u8]>`); value, reducing and aggregating states hold the value,
//! list states the whole list in `list_encoding` form (an append extends it in place, no read),
//! map states a small hash map from user key to value. Per-key-group maps make a snapshot
//! key-group ordered for free (dashmap itself iterates in no order) and keep a key group's rows
//! together for rescaling.
//!
//! The hot path costs what a raw `DashMap` costs: the `KeyContext` already carries the key
//! group, so finding the map is two array indexings and an atomic load (state tables sit in a
//! lock-free append-only `boxcar::Vec`, key-group tables in `OnceLock`s); then one foldhash of
//! the borrowed key and namespace bytes and one shard lock, through dashmap's raw shard API
//! (find-or-insert under one lock: no key is allocated unless an entry is created). A `get`
//! copies the value out; a `put` on an existing entry rewrites its buffer in place.
//!
//! ## Snapshots: versioned entries (why this scheme)
//!
//! A snapshot must be consistent without stopping writers during its upload. Three schemes
//! were weighed:
//!
//! - **Persistent (structurally shared) maps per key group**: a snapshot is an O(1) clone,
//!   but every write copies a path of the tree and allocates, and every read walks a HAMT:
//!   several times slower than a hash table on the hot path, all the time, to make snapshots
//!   cheap.
//! - **Swap the maps under a short lock and merge later**: writers would look up in two maps
//!   during every upload, and the merge is a second pass over the state.
//! - **Versioned entries (copy-on-write per entry, Flink's heap backend idea)**, chosen: each
//!   entry carries the epoch of its last write. Taking a snapshot pins the current epoch `S`
//!   and advances the clock, in O(1) under a tiny mutex. The view reads, per entry, the newest
//!   version stamped `<= S`. A writer that would overwrite or remove a version a live
//!   snapshot can see (stamped before the write's epoch and not after the newest pinned
//!   epoch) first moves it into the entry's version chain; removals leave a tombstone while
//!   needed. A pinned list that is appended to keeps only its old length, not a copy (appends
//!   never change a prefix). When a view is dropped, a sweeper prunes exactly the entries
//!   that kept versions (they were listed when they kept them) and removes dead tombstones.
//!
//! What it costs the hot path: reads pay nothing (one extra word per entry is read on
//! writes); a write loads two atomics that change only at snapshot time, and only the first
//! write of an entry after a snapshot, while that snapshot is live, moves the old value
//! (one small allocation) and lists the entry for the sweeper. With no snapshot live a
//! write is an in-place rewrite.
//!
//! Why it is consistent: a writer reads the write epoch while holding its entry's shard
//! write lock, and a view reads a shard under that shard's read lock, after the pin. A write
//! stamped `<= S` therefore completed before the view read its shard (the view waits for the
//! lock), and a write that takes the lock after the view's read sees the advanced clock, so it
//! is stamped `> S` and invisible. The visible writes are exactly those stamped `<= S`: a cut
//! consistent with every writer thread's program order. The view copies one shard's visible
//! rows at a time into a buffer under the read lock and hands them to the writer of the
//! snapshot file after releasing it, so an upload never holds a lock.
//!
//! ## Incremental checkpoints (changelog family)
//!
//! With [`HeapConfig::change_tracking`] on (the default), the first write of an entry in each
//! epoch appends (its key, the epoch) to its (state, key group)'s change records, under the
//! same shard lock, so a delta view (after a barrier on the key group's shards) sees every
//! change stamped `<= S`. `SnapshotKind::Incremental` asks the backend's
//! [`flowstate_api::changelog::ChangelogChain`] for a plan: a full base, or a delta since the
//! last completed chain checkpoint holding, for each changed (state, key, namespace), a
//! tombstone then its rows as of the view. Records are dropped only when a chain checkpoint
//! completes (never for pending, aborted or full/savepoint checkpoints), and not while a live
//! delta view still needs them.

#![warn(missing_docs)]

mod backend;
mod cell;
mod checkpoint;
mod config;
mod epoch;
mod factory;
mod key;
mod map_slot;
mod restore;
mod stats;
mod table;
mod view;

pub use backend::HeapBackend;
pub use config::HeapConfig;
pub use factory::HeapBackendFactory;
pub use stats::HeapStats;
pub use view::HeapSnapshotView;

#[cfg(test)]
mod tests;
