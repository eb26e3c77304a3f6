//! Operator state: list state and broadcast state held per subtask rather than per key.
//!
//! Every backend shares this implementation (backends implement only keyed state). A subtask's
//! operator state lives in one [`OperatorStateStore`]:
//! - **list states**, each registered with a [`Redistribution`] mode that decides how its
//!   elements are dealt out when the job is rescaled: [`Redistribution::EvenSplit`] (Flink's
//!   `getListState`) or [`Redistribution::Union`] (Flink's `getUnionListState`);
//! - **broadcast states**: maps that every subtask holds a copy of.
//!
//! The store is byte-level (elements and map entries are `Vec<u8>`); typed handles,
//! [`OperatorListState`] and [`BroadcastState`], encode with a [`Codec`](crate::Codec) (by
//! default [`SerdeCodec`](crate::SerdeCodec)). A state's codec ids are recorded with it and
//! checked when the name is registered again, as for keyed state.
//!
//! A checkpoint writes one file per subtask in the format of [`OperatorStateSnapshot::encode`]:
//!
//! ```text
//! "FLOWOPST" | format version u32 LE | body length u64 LE | crc32c(body) u32 LE | body
//! ```
//!
//! where the body is the postcard encoding of the snapshot (states in ascending name order).
//! Restoring at a new parallelism follows `docs/key-groups.md`; see
//! [`redistribute_for_subtask`].
//!
//! ```
//! use std::sync::Arc;
//! use flowstate_api::operator::{OperatorStateStore, Redistribution};
//! use flowstate_api::Parallelism;
//!
//! // One subtask holding five Kafka offsets and a broadcast rule table.
//! let store = Arc::new(OperatorStateStore::new());
//! let offsets = store.list_state::<u64>("offsets", Redistribution::EvenSplit)?;
//! offsets.add_all([10u64, 11, 12, 13, 14])?;
//! let rules = store.broadcast_state::<String, u32>("rules")?;
//! rules.put(&"limit".to_string(), &7)?;
//!
//! // Rescale from one subtask to two: the offsets are split, the rules copied.
//! let old = [Some(store.snapshot())];
//! let two = Parallelism::new(2)?;
//! let second = Arc::new(OperatorStateStore::restore(&old, 1, two)?);
//! let offsets = second.list_state::<u64>("offsets", Redistribution::EvenSplit)?;
//! assert_eq!(offsets.get()?, vec![13, 14]);
//! let rules = second.broadcast_state::<String, u32>("rules")?;
//! assert_eq!(rules.get(&"limit".to_string())?, Some(7));
//! # Ok::<(), flowstate_api::Error>(())
//! ```

// One job per file: `metadata` (names, modes, codec checks), `snapshot` (the copy a checkpoint
// takes and its invariants), `format` (that copy's file format), `store` (the byte-level store),
// `handles` (the typed handles), `redistribution` (the rescale rules) and `io` (files through
// `CheckpointStorage`). Everything public is re-exported here so that users name one path,
// `flowstate_api::operator::X`, whichever file defines X.
mod format;
mod handles;
mod io;
mod metadata;
mod redistribution;
mod snapshot;
mod store;

pub use format::OPERATOR_STATE_FORMAT_VERSION;
pub use handles::{BroadcastState, OperatorListState};
pub use io::{
    operator_state_file_name, read_operator_state, restore_operator_state, write_operator_state,
};
pub use metadata::{OperatorStateMetadata, OperatorStateMode, Redistribution};
pub use redistribution::{redistribute, redistribute_for_subtask};
pub use snapshot::{OperatorStateData, OperatorStateEntry, OperatorStateSnapshot};
pub use store::{OperatorStateId, OperatorStateStore};
