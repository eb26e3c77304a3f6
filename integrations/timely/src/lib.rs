//! # flowstate-timely
//!
//! flowstate inside [timely dataflow](https://docs.rs/timely): each timely worker is one
//! subtask of the job, with its own keyed backend (heap, RocksDB or LMDB, from a
//! [`flowstate_runtime::BackendConfig`]) and operator state.
//!
//! - [`operator::key_group_exchange`] routes records by key group (Flink's rule), so every
//!   worker owns exactly its key-group range and any worker count can restore any
//!   checkpoint; [`operator::keyed_stateful`] runs user logic per record with the record's
//!   key context, each epoch once complete and in order.
//! - [`checkpointing::WorkerCheckpoints`]: checkpoints aligned with epochs. The job's driver
//!   prepares a checkpoint before its input passes the checkpoint epoch and, once its probe
//!   shows that epoch processed everywhere, captures its subtask synchronously; the upload
//!   runs on a tokio runtime while the dataflow goes on; reports go to
//!   worker 0, which runs the [`flowstate_runtime::CheckpointCoordinator`] over timely's own
//!   channels ([`control`]) and tells every worker the verdict.
//! - [`source::ReplayableSource`]: read positions in even-split operator list state, so a
//!   restart at another number of processes x workers resumes exactly.
//! - [`wordcount`]: a windowed word count proving it end to end (the `wordcount` example, and
//!   the cluster tests that kill a process and restart at other worker counts).
//!
//! Run it (two workers in one process, checkpoints on local disk):
//!
//! ```text
//! cargo run --release -p flowstate-timely --example wordcount -- \
//!     --storage /tmp/wc-ckpts --output /tmp/wc-out -- -w 2
//! ```

#![warn(missing_docs)]

pub mod checkpointing;
pub mod control;
pub mod error;
pub mod operator;
pub mod source;
pub mod wordcount;

pub use error::{Error, Result};
