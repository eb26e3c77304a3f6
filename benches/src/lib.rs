//! # flowstate-benches
//!
//! Workloads that measure flowstate's backends against the raw engines they are built on, and
//! against each other. The criterion benches (`cargo bench -p flowstate-benches`) and the
//! `ratios` binary (`cargo run --release -p flowstate-benches --bin ratios`) share them:
//!
//! | bench | what |
//! |---|---|
//! | `heap` | heap backend vs a raw `DashMap`: value get / update / add-new-key, list append / get, map get / put / entries, reducing add |
//! | `rocksdb` | RocksDB backend vs raw `rocksdb`: value get / update / add-new-key, plus rescale restores 1→2 and 2→1 from native checkpoints vs a naive scan-and-filter restore |
//! | `lmdb` | LMDB backend vs raw `heed`: the same operations as `heap` |
//! | `compare` | the three backends side by side: value get / update / insert, list append, map get / put |
//!
//! `ratios` measures every operation of every family ([`store::Family`]: value, list, map,
//! reducing) on every backend against its raw engine, with one thread and with several
//! threads sharing one backend instance on disjoint key groups ([`workload::Part`],
//! [`runner`]), and prints the table as text or markdown ([`report`]).
//!
//! Layout: [`workload`] (keys, walks, parts), [`subject`] (the backend under test and the
//! layer), one module per family with its store trait, flowstate store and checks
//! ([`value`], [`list`], [`map`], [`reducing`]), one module per backend with its raw
//! baselines ([`heap_backend`], [`lmdb_backend`], `rocksdb_backend`), and [`store`], which puts
//! every family behind one type.
//!
//! Fairness rules every comparison follows:
//! - **Same bytes.** Keys are `u64`s encoded by `SerdeCodec<u64>`; the raw baselines store
//!   under the exact key bytes the backend stores (the serialized key for the heap backend,
//!   `flowstate_rocksdb::value_key` / `map_entry_key` and `flowstate_lmdb::key_layout::value_key` /
//!   `map_entry_key` for the others) and the same value bytes (lists in `list_encoding` form,
//!   map user keys `SerdeCodec<u32>`), and encode/decode values as the typed layer does.
//! - **Same work.** Each baseline does what the backend must do for the operation, the way a
//!   hand-written operator on the engine would (each backend module says how: e.g. RocksDB
//!   appends with the same merge operator, LMDB reads and rewrites the list, the `DashMap`
//!   folds in place).
//! - **Same precomputation.** An engine computes a record's `KeyContext` once per record; the
//!   workload computes them up front, and the baselines likewise their storage keys.
//! - **Same engine settings.** Raw RocksDB uses the backend's exported options
//!   (`RocksDbResources::db_options`, `write_options`, `read_options`); raw heed uses
//!   `LmdbConfig::env_open_options` and commits after as many puts as the backend's write
//!   buffer holds; the raw `DashMap` uses the backend's hasher (foldhash).
//! - **Same access order.** Reads and updates walk the preloaded keys in one scattered order
//!   ([`value::KeyWalk`]); add-new-key inserts never-written keys and removes them again
//!   untimed, so every measured insert creates a key.
//! - **Checked results.** Reads return checksums, writes are read back untimed, and every
//!   store is checked before and after a run (values present, lists back to their preloaded
//!   elements, maps whole, reduced values summing to the preload plus the adds), so a broken
//!   workload fails instead of reporting a fast time.
//!
//! The `rocksdb` feature (default) brings the RocksDB backend, its baseline and the rescale
//! benchmark; without it the rest builds without compiling RocksDB's C++.
//!
//! Sizes: 500,000 preloaded keys and 1,000,000 rescale keys under `cargo bench`, small sizes
//! when criterion runs the benches once as tests (`cargo test --benches`); the environment
//! variables in [`settings`] override both.
//!
//! ```
//! use flowstate_benches::heap_backend::{self, RawDashMap};
//! use flowstate_benches::value::{time_gets, ValueStore, Workload};
//!
//! let workload = Workload::new(1_000, 100)?;
//! let mut ours = heap_backend::flowstate(workload.clone())?;
//! let mut raw = RawDashMap::preload(&workload)?;
//! let ours_time = time_gets(&mut ours, &mut workload.walk(), 10_000)?;
//! let raw_time = time_gets(&mut raw, &mut workload.walk(), 10_000)?;
//! println!("{}: {ours_time:?}, {}: {raw_time:?}", ours.name(), raw.name());
//! # Ok::<(), flowstate_benches::BenchError>(())
//! ```

pub mod compare;
pub mod error;
pub mod heap_backend;
pub mod list;
pub mod lmdb_backend;
pub mod map;
pub mod reducing;
pub mod report;
#[cfg(feature = "rocksdb")]
pub mod rescale;
#[cfg(feature = "rocksdb")]
pub mod rocksdb_backend;
pub mod runner;
pub mod settings;
pub mod store;
pub mod subject;
pub mod value;
pub mod workload;

pub use error::{BenchError, Result};
