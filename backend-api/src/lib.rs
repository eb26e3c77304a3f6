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
