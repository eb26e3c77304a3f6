//! # flowstate-api
//!
//! The contract of flowstate's state backends: key-group arithmetic (identical to Apache
//! Flink's), keyed state (value, list, map, reducing, aggregating; with namespaces), operator
//! list state and broadcast state, the canonical key-group-ordered snapshot format, and
//! checkpoint storage on `object_store`. This crate has no storage engine dependency.
//!
//! ```
//! use flowstate_api::key_groups::{key_group_for_key_bytes, MaxParallelism};
//! use flowstate_api::KeyContext;
//!
//! let max = MaxParallelism::new(128)?;
//! let ctx = KeyContext::new(b"user-42".to_vec(), max);
//! assert_eq!(ctx.key_group(), key_group_for_key_bytes(b"user-42", max));
//! # Ok::<(), flowstate_api::Error>(())
//! ```
//!
//! ## Implementing a backend
//!
//! Start from the reference backend, `flowstate_conformance::reference` (in
//! `conformance/src/reference/`): keyed state in one `BTreeMap` per state, which passes the
//! whole conformance suite. A backend implements four traits of [`backend`]:
//!
//! 1. [`KeyedStateBackend`]: byte-level keyed state. Required: `max_parallelism`,
//!    `key_group_range`, `register_state` and `registered_states` (delegate to
//!    [`state::StateRegistry`]), `get` / `put` / `remove`, `list_get` / `list_append` /
//!    `list_replace` (lists in [`list_encoding`] form), `map_get` / `map_put` / `map_remove` /
//!    `map_entries`, `keys`, and `apply_rows` (the restore path). For free: `get_with`,
//!    `map_contains`, `map_is_empty` (override them only to go faster). Every access with a key
//!    of a key group outside `key_group_range` fails with [`Error::KeyGroupNotOwned`]; an
//!    operation that does not suit the state's kind fails with
//!    [`Error::UnsupportedOperation`]. An ordered store can use [`key_layout`] for its keys.
//!    Typed state ([`typed`]) comes for free on top.
//! 2. [`KeyedSnapshotView`]: a consistent point-in-time view of the keyed state, taken in the
//!    synchronous part of a checkpoint and read while writers go on (copy-on-write, MVCC, a
//!    pinned version; or, in the reference backend, a plain copy). The snapshot writer calls
//!    [`KeyedSnapshotView::for_each_row`] once per key group of the view's range, ascending;
//!    the view returns every row of that key group (any order within it) and nothing else.
//! 3. [`StateBackend`]: the checkpoint hooks. Required: `snapshot`, which captures a view and
//!    returns a [`SnapshotJob`]: [`snapshot::CanonicalSnapshotJob`] for full snapshots, and
//!    for incremental ones either the [`changelog`] family (a change log on a base, for
//!    backends without immutable files to share; it needs the two notification hooks) or
//!    native files shared between checkpoints. For free: `notify_checkpoint_complete` and
//!    `notify_checkpoint_aborted` (no-ops).
//! 4. [`StateBackendFactory`]: required `name` and `create`; `restore` comes for free through
//!    the restore driver ([`snapshot::restore_into`]), which checks handles, files and every
//!    row before it calls `apply_rows`, and reads only the key groups of the new range.
//!
//! Then run the suite: in the backend crate's `tests/conformance.rs`, with
//! `flowstate-conformance` as a dev-dependency,
//! `flowstate_conformance::conformance_tests!(MyFactory::new());` expands to one test per
//! case (`cargo test --test conformance`).

#![warn(missing_docs)]

pub mod backend;
pub mod changelog;
pub mod checkpoint;
pub mod codec;
pub mod error;
pub mod key_groups;
pub mod key_layout;
pub mod lifecycle;
pub mod list_encoding;
pub mod operator;
pub mod snapshot;
pub mod state;
pub mod typed;

pub use backend::{
    KeyedSnapshotView, KeyedStateBackend, RowValue, SnapshotJob, SnapshotKind, SnapshotRequest,
    StateBackend, StateBackendFactory, StateRow,
};
pub use checkpoint::{
    CheckpointId, CheckpointManifest, CheckpointStorage, FileRef, KeyedStateHandle,
    SubtaskStateHandle,
};
pub use codec::{Codec, SerdeCodec, VoidNamespace};
pub use error::{Error, Result};
pub use key_groups::{KeyGroup, KeyGroupRange, MaxParallelism, Parallelism};
pub use operator::{
    BroadcastState, OperatorListState, OperatorStateId, OperatorStateMetadata, OperatorStateMode,
    OperatorStateSnapshot, OperatorStateStore, Redistribution,
};
pub use state::{KeyContext, StateId, StateKind, StateMetadata};
