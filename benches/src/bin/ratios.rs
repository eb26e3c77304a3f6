//! One-run throughput ratios of flowstate against the raw engines, for issue notes.
//!
//! ```sh
//! cargo run --release -p flowstate-benches --bin ratios
//! cargo run --release -p flowstate-benches --bin ratios -- --backends heap,lmdb --ops 200000
//! ```
//!
//! For every backend and value operation (get, update, add-new-key) it times a fixed number
//! of operations with `Instant` on our typed layer, our byte layer and the raw engine, in
//! alternating rounds after a warm-up round, and prints the median nanoseconds per operation
//! and the throughput ratio ours / raw (= raw time / our time; issues 4 and 5 target ≥ 0.80).
//! Then it times the RocksDB rescale restores (native vs naive scan). Criterion's benches
//! measure the same workloads with statistics; this prints one quotable table.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
#[cfg(feature = "rocksdb")]
use flowstate_benches::rescale::{Rescale, RescaleFixture};
#[cfg(feature = "rocksdb")]
use flowstate_benches::rocksdb_backend;
use flowstate_benches::settings::{fresh_pool, Sizes};
use flowstate_benches::value::{
    check_preloaded, time_gets, time_inserts, time_updates, FlowstateValue, Layer, ValueStore,
    Workload,
};
use flowstate_benches::{heap_backend, lmdb_backend, Result};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Heap,
    Rocksdb,
    Lmdb,
}

/// Prints throughput ratios of flowstate's backends against their raw engines.
#[derive(Debug, Parser)]
#[command(name = "ratios")]
struct Args {
    /// Preloaded keys (default 500,000 or FLOWSTATE_BENCH_KEYS).
    #[arg(long)]
    keys: Option<usize>,
    /// Operations per timed run.
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// Timed rounds per subject; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_values = ["heap", "rocksdb", "lmdb"])]
    backends: Vec<Backend>,
    /// Keys of the rescale restore measurement (default 1,000,000 or
    /// FLOWSTATE_BENCH_RESCALE_KEYS); 0 skips it.
    #[arg(long)]
    rescale_keys: Option<usize>,
}

#[derive(Copy, Clone, Debug)]
enum Op {
    Get,
    Update,
    AddNewKey,
}

impl Op {
    const ALL: [Op; 3] = [Op::Get, Op::Update, Op::AddNewKey];

    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Update => "update",
            Op::AddNewKey => "add_new_key",
        }
    }

    fn time(self, store: &mut dyn ValueStore, workload: &Workload, ops: u64) -> Result<Duration> {
        let mut walk = workload.walk();
        match self {
            Op::Get => time_gets(store, &mut walk, ops),
            Op::Update => time_updates(store, &mut walk, ops),
            Op::AddNewKey => time_inserts(store, ops, workload.fresh()),
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ns_per_op(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops.max(1) as f64
}

/// Times every operation on our two layers and the raw engine and prints one table row each.
fn measure(
    ours: &mut FlowstateValue,
    raw: &mut dyn ValueStore,
    workload: &Workload,
    args: &Args,
) -> Result<()> {
    check_preloaded(ours, workload)?;
    check_preloaded(raw, workload)?;
    let backend = ours.backend_name();
    for op in Op::ALL {
        // Warm-up: caches, allocator, page faults of a fresh mapping.
        let warm = (args.ops / 10).max(1);
        for layer in [Layer::Typed, Layer::Bytes] {
            ours.set_layer(layer);
            op.time(ours, workload, warm)?;
        }
        op.time(raw, workload, warm)?;

        let (mut typed, mut bytes, mut base) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            ours.set_layer(Layer::Typed);
            typed.push(ns_per_op(op.time(ours, workload, args.ops)?, args.ops));
            ours.set_layer(Layer::Bytes);
            bytes.push(ns_per_op(op.time(ours, workload, args.ops)?, args.ops));
            base.push(ns_per_op(op.time(raw, workload, args.ops)?, args.ops));
        }
        ours.set_layer(Layer::Typed);
        let (typed, bytes, base) = (median(typed), median(bytes), median(base));
        println!(
            "{backend:<8} {:<12} {typed:>12.1} {bytes:>12.1} {base:>12.1} {:<12} {:>10.2} {:>10.2}",
            op.name(),
            raw.name(),
            base / typed,
            base / bytes,
        );
    }
    check_preloaded(ours, workload)?;
    check_preloaded(raw, workload)?;
    Ok(())
}

#[cfg(feature = "rocksdb")]
fn rescale(keys: usize, rounds: usize) -> Result<()> {
    println!();
    println!("RocksDB rescale restore of {keys} keys from native incremental checkpoints (median of {rounds}):");
    let started = std::time::Instant::now();
    let fixture = RescaleFixture::build(keys)?;
    println!(
        "  checkpoints built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    fixture.verify()?;
    println!(
        "{:<10} {:>14} {:>14} {:>16} {:>10}",
        "rescale", "native s", "naive scan s", "checkpoint MiB", "speedup"
    );
    for rescale in Rescale::ALL {
        let (mut native, mut naive) = (Vec::new(), Vec::new());
        for _ in 0..rounds.max(1) {
            let start = std::time::Instant::now();
            let restored = fixture.restore_native(rescale)?;
            native.push(start.elapsed().as_secs_f64());
            drop(restored);
            let start = std::time::Instant::now();
            let restored = fixture.restore_naive(rescale)?;
            naive.push(start.elapsed().as_secs_f64());
            drop(restored);
        }
        let (native, naive) = (median(native), median(naive));
        println!(
            "{:<10} {native:>14.3} {naive:>14.3} {:>16.1} {:>9.1}x",
            rescale.label(),
            fixture.checkpoint_bytes(rescale) as f64 / (1 << 20) as f64,
            naive / native,
        );
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    let defaults = Sizes::full()?;
    let preload = args.keys.unwrap_or(defaults.preload).max(1);
    let rescale_keys = args.rescale_keys.unwrap_or(defaults.rescale);
    let workload = Workload::new(preload, fresh_pool(preload))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "flowstate ratios: {preload} preloaded u64 keys, {} ops per run, median of {} rounds, {cores} cores{}",
        args.ops,
        args.rounds.max(1),
        if cfg!(debug_assertions) { " (DEBUG BUILD: numbers are not meaningful)" } else { "" },
    );
    println!("ns/op; ratio = throughput ours / raw (raw ns / our ns), target >= 0.80");
    println!(
        "{:<8} {:<12} {:>12} {:>12} {:>12} {:<12} {:>10} {:>10}",
        "backend", "op", "typed ns", "bytes ns", "raw ns", "raw", "typed/raw", "bytes/raw"
    );
    for backend in &args.backends {
        match backend {
            Backend::Heap => {
                let mut ours = heap_backend::flowstate(workload.clone())?;
                let mut raw = heap_backend::RawDashMap::preload(&workload)?;
                measure(&mut ours, &mut raw, &workload, &args)?;
            }
            #[cfg(feature = "rocksdb")]
            Backend::Rocksdb => {
                let mut ours = rocksdb_backend::flowstate(workload.clone())?;
                let mut raw = rocksdb_backend::RawRocksDb::preload(&workload)?;
                measure(&mut ours, &mut raw, &workload, &args)?;
            }
            #[cfg(not(feature = "rocksdb"))]
            Backend::Rocksdb => {
                return Err(flowstate_benches::BenchError::Config(
                    "this build has no RocksDB: build with the default features, or pass --backends heap,lmdb".into(),
                ))
            }
            Backend::Lmdb => {
                let mut ours = lmdb_backend::flowstate(workload.clone())?;
                let mut raw = lmdb_backend::RawHeed::preload(&workload)?;
                measure(&mut ours, &mut raw, &workload, &args)?;
            }
        }
    }
    #[cfg(feature = "rocksdb")]
    if rescale_keys > 0 && args.backends.contains(&Backend::Rocksdb) {
        rescale(rescale_keys, args.rounds)?;
    }
    #[cfg(not(feature = "rocksdb"))]
    let _ = rescale_keys;
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ratios: {e}");
            ExitCode::FAILURE
        }
    }
}
