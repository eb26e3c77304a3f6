//! # flowstate-runtime
//!
//! What a stream engine uses to keep its operators' state in flowstate, without writing the
//! checkpoint sequence itself:
//!
//! - [`BackendConfig`]: the backend, chosen at run time from a string (`heap`,
//!   `rocksdb:dir=/data,memory=1GiB`, `lmdb:map-size=4GiB`) or a serde config, built into a
//!   [`DynStateBackendFactory`] (a factory an engine can hold as a trait object).
//! - [`Subtask`]: one parallel instance of an operator (keyed backend + operator state). At a
//!   barrier, [`Subtask::capture`] takes the synchronous half of a checkpoint;
//!   [`CapturedSubtask::upload`] is a `Send + 'static` future yielding the subtask's
//!   [`SubtaskAck`]. [`restore_subtask`] rebuilds a subtask from a manifest at any parallelism.
//! - [`CheckpointCoordinator`]: one per job. Ids, acknowledgements (serde values, from any
//!   thread or process), publication when all subtasks acknowledged, aborts on decline or
//!   timeout, retention, and the [`CheckpointNotice`]s every subtask must be told. For
//!   subtasks in the coordinator's own process, [`CheckpointCoordinator::checkpoint_subtasks`]
//!   runs that whole sequence ([`local`]).
//! - Observability: `tracing` spans around both halves of every checkpoint and every restore,
//!   and metrics through the `metrics` facade ([`metrics`] lists them).
//!
//! Cargo features: `heap`, `lmdb`, `rocksdb` (the backends [`BackendConfig::build`] can make),
//! `aws`, `gcp`, `azure` (checkpoint stores by URL scheme); all but `gcp` and `azure` are on
//! by default. An engine that wants only the heap backend disables the defaults and compiles
//! no RocksDB.
//!
//! ## An engine integration
//!
//! Two subtasks run, checkpoint through the coordinator, and the job is restored at
//! parallelism 3. In an engine, each subtask lives on its own thread or process; acks and
//! notices travel as serde values.
//!
//! ```
//! use flowstate_api::key_groups::operator_index_for_key_group;
//! use flowstate_api::typed::ValueStateDescriptor;
//! use flowstate_api::{CheckpointStorage, KeyContext, MaxParallelism, Parallelism, SerdeCodec, SnapshotKind};
//! use flowstate_runtime::{create_subtask, restore_subtask, BackendConfig, CheckpointCoordinator, CoordinatorConfig, Outcome};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let factory = "heap".parse::<BackendConfig>()?.build()?;
//! let (max, two) = (MaxParallelism::new(128)?, Parallelism::new(2)?);
//! let dir = tempfile::tempdir().unwrap();
//! let storage = CheckpointStorage::local(dir.path())?;
//! let mut coordinator = CheckpointCoordinator::open(storage.clone(), CoordinatorConfig::new(max, two)).await?;
//!
//! let subtasks = (0..2).map(|i| create_subtask(factory.as_ref(), max, two, i)).collect::<Result<Vec<_>, _>>()?;
//! let codec = SerdeCodec::<String>::new();
//! for word in ["alice", "bob", "carol", "alice"] {
//!     // Route the record to the subtask owning its key group, as the engine's exchange does.
//!     let key = KeyContext::for_key(&codec, &word.to_string(), max)?;
//!     let subtask = &subtasks[operator_index_for_key_group(max, two, key.key_group()) as usize];
//!     let count = ValueStateDescriptor::<u64>::new("count").bind(subtask.keyed())?;
//!     count.update(&key, &(count.get(&key)?.unwrap_or(0) + 1))?;
//! }
//!
//! // A checkpoint: barrier (synchronous capture), uploads, acks, publication, notices.
//! let id = coordinator.trigger();
//! let captured = subtasks.iter().map(|s| s.capture(id, SnapshotKind::Incremental)).collect::<Result<Vec<_>, _>>()?;
//! let mut outcomes = Vec::new();
//! for upload in captured {
//!     let ack = upload.upload(storage.clone()).await?; // a Send + 'static future
//!     outcomes.extend(coordinator.acknowledge(ack).await?);
//! }
//! assert!(matches!(outcomes.as_slice(), [Outcome::Completed(_)]));
//! for s in &subtasks { s.notify(outcomes[0].notice())?; }
//!
//! // The job restarts at parallelism 3 from the latest checkpoint.
//! let latest = coordinator.latest().unwrap().clone();
//! let three = Parallelism::new(3)?;
//! let key = KeyContext::for_key(&codec, &"alice".to_string(), max)?;
//! let owner = operator_index_for_key_group(max, three, key.key_group());
//! let restored = restore_subtask(factory.as_ref(), &storage, &latest, three, owner).await?;
//! let count = ValueStateDescriptor::<u64>::new("count").bind(restored.keyed())?;
//! assert_eq!(count.get(&key)?, Some(2));
//! # Ok::<(), flowstate_runtime::Error>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod coordinator;
pub mod error;
pub mod factory;
pub mod local;
pub mod metrics;
pub mod subtask;

pub use config::BackendConfig;
pub use coordinator::{CheckpointCoordinator, CompletedCheckpoint, CoordinatorConfig, Outcome};
pub use error::{Error, Result};
pub use factory::{DynStateBackendFactory, SharedBackend};
pub use flowstate_api::lifecycle::RetentionPolicy;
pub use local::{LocalCheckpoint, LocalSubtask};
pub use subtask::{
    create_subtask, create_subtask_typed, restore_subtask, restore_subtask_typed, CapturedSubtask,
    CheckpointNotice, Subtask, SubtaskAck, SubtaskReport,
};

/// The README's Rust snippets, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
