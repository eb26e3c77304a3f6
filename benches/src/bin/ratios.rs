//! One-run throughput ratios of flowstate against the raw engines, for issue notes and
//! README's performance section.
//!
//! ```sh
//! cargo run --release -p flowstate-benches --bin ratios
//! cargo run --release -p flowstate-benches --no-default-features --bin ratios -- \
//!     --backends heap,lmdb --workloads value,map --threads 1,2 --rounds 3 --markdown
//! ```
//!
//! For every backend, workload family (value, list, map, reducing) and operation, it times a
//! fixed number of operations per thread with `Instant` on our typed layer, our byte layer and
//! the raw engine doing the same bytes work, in alternating rounds after a warm-up round, once
//! per thread count of `--threads`: with more than one thread, the threads share one backend
//! instance (and one raw engine instance) and work on disjoint key groups. It prints the median
//! nanoseconds per operation of one thread, the aggregate throughput, and the throughput ratio
//! ours / raw, as aligned text or (`--markdown`) a markdown table headed by the date, the
//! machine and the command. Then it times the RocksDB rescale restores (native vs naive scan).
//! Criterion's benches measure the same workloads with statistics; this prints one quotable
//! table.
//!
//! Every store is checked before and after its measurements (values present, lists back to
//! their preloaded elements, maps whole, reduced values summing to the preload plus the adds),
//! and write operations read their results back untimed, so a broken workload fails instead of
//! reporting a fast time.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use clap::{Parser, ValueEnum};
use flowstate_api::MaxParallelism;
use flowstate_benches::report::{utc_date, Format, Header, Machine, Row};
#[cfg(feature = "rocksdb")]
use flowstate_benches::rescale::{Rescale, RescaleFixture};
#[cfg(feature = "rocksdb")]
use flowstate_benches::rocksdb_backend;
#[cfg(feature = "rocksdb")]
use flowstate_benches::runner::median;
use flowstate_benches::runner::{time_threads, Timing};
use flowstate_benches::settings::{fresh_pool, Sizes};
use flowstate_benches::store::{flowstate_layers, Family, Op, Store};
use flowstate_benches::subject::BackendUnderTest;
use flowstate_benches::workload::{Part, Workload};
use flowstate_benches::{heap_backend, lmdb_backend, BenchError, Result};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Heap,
    Rocksdb,
    Lmdb,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Heap => "heap",
            Backend::Rocksdb => "rocksdb",
            Backend::Lmdb => "lmdb",
        }
    }

    /// An empty flowstate backend of this kind.
    fn open(self, max: MaxParallelism) -> Result<BackendUnderTest> {
        match self {
            Backend::Heap => heap_backend::open(max),
            Backend::Lmdb => lmdb_backend::open(max),
            #[cfg(feature = "rocksdb")]
            Backend::Rocksdb => rocksdb_backend::open(max),
            #[cfg(not(feature = "rocksdb"))]
            Backend::Rocksdb => Err(no_rocksdb()),
        }
    }

    /// The raw engine's baseline of `family`, preloaded.
    fn raw(self, family: Family, workload: &Arc<Workload>) -> Result<Store> {
        match self {
            Backend::Heap => heap_backend::raw(family, workload),
            Backend::Lmdb => lmdb_backend::raw(family, workload),
            #[cfg(feature = "rocksdb")]
            Backend::Rocksdb => rocksdb_backend::raw(family, workload),
            #[cfg(not(feature = "rocksdb"))]
            Backend::Rocksdb => Err(no_rocksdb()),
        }
    }
}

#[cfg(not(feature = "rocksdb"))]
fn no_rocksdb() -> BenchError {
    BenchError::Config(
        "this build has no RocksDB: build with the default features, or pass --backends heap,lmdb"
            .into(),
    )
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    Value,
    List,
    Map,
    Reducing,
}

impl From<WorkloadArg> for Family {
    fn from(arg: WorkloadArg) -> Self {
        match arg {
            WorkloadArg::Value => Family::Value,
            WorkloadArg::List => Family::List,
            WorkloadArg::Map => Family::Map,
            WorkloadArg::Reducing => Family::Reducing,
        }
    }
}

/// Prints throughput ratios of flowstate's backends against their raw engines.
#[derive(Debug, Parser)]
#[command(name = "ratios")]
struct Args {
    /// Preloaded keys of every workload (default 500,000 or FLOWSTATE_BENCH_KEYS).
    #[arg(long)]
    keys: Option<usize>,
    /// Operations per thread per timed run.
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// Timed rounds per subject; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_values = ["heap", "rocksdb", "lmdb"])]
    backends: Vec<Backend>,
    /// Workload families to measure.
    #[arg(long, value_delimiter = ',', default_values = ["value", "list", "map", "reducing"])]
    workloads: Vec<WorkloadArg>,
    /// Thread counts to run each operation with (threads share one backend instance and work
    /// on disjoint key groups).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Print the table as markdown (for README's performance section).
    #[arg(long)]
    markdown: bool,
    /// The date the header shows (default: now, as `date -u '+%F %R UTC'` prints it).
    #[arg(long)]
    date: Option<String>,
    /// Keys of the rescale restore measurement (default 1,000,000 or
    /// FLOWSTATE_BENCH_RESCALE_KEYS); 0 skips it.
    #[arg(long)]
    rescale_keys: Option<usize>,
}

/// How to run this again: the cargo command of this build with these arguments.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect();
    format!(
        "cargo run{} -p flowstate-benches{} --bin ratios{}{}",
        if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        },
        if cfg!(feature = "rocksdb") {
            ""
        } else {
            " --no-default-features"
        },
        if args.is_empty() { "" } else { " -- " },
        args.join(" ")
    )
}

/// The three subjects of one family on one backend.
struct Subjects {
    typed: Store,
    bytes: Store,
    raw: Store,
}

impl Subjects {
    fn all(&self) -> [&Store; 3] {
        [&self.typed, &self.bytes, &self.raw]
    }

    /// Checks our state (both layers share it) and the raw engine's.
    fn check(&mut self, workload: &Workload) -> Result<()> {
        self.typed.check(workload)?;
        self.raw.check(workload)
    }
}

/// Times `op` with `parts.len()` threads on our two layers and the raw engine: a warm-up run
/// each, then `rounds` rounds alternating between them; returns the medians.
fn measure(
    backend: Backend,
    subjects: &Subjects,
    op: Op,
    parts: &[Part],
    args: &Args,
) -> Result<Row> {
    // Warm-up: caches, allocator, page faults of a fresh mapping.
    let warm = (args.ops / 10).max(1);
    for store in subjects.all() {
        time_threads(store, op, parts, warm)?;
    }
    let mut timings: [Vec<Timing>; 3] = Default::default();
    for _ in 0..args.rounds.max(1) {
        for (k, store) in subjects.all().into_iter().enumerate() {
            timings[k].push(time_threads(store, op, parts, args.ops)?);
        }
    }
    let [typed, bytes, raw] = timings.map(|t| Timing::median(&t));
    Ok(Row {
        backend: backend.name(),
        op,
        threads: parts.len(),
        raw_name: subjects.raw.name().to_string(),
        typed,
        bytes,
        raw,
    })
}

#[cfg(feature = "rocksdb")]
fn rescale(keys: usize, rounds: usize, format: Format) -> Result<()> {
    println!();
    println!("RocksDB rescale restore of {keys} keys from native incremental checkpoints (median of {rounds}):");
    let started = std::time::Instant::now();
    let fixture = RescaleFixture::build(keys)?;
    println!(
        "  checkpoints built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    fixture.verify()?;
    match format {
        Format::Text => println!(
            "{:<10} {:>14} {:>14} {:>16} {:>10}",
            "rescale", "native s", "naive scan s", "checkpoint MiB", "speedup"
        ),
        Format::Markdown => {
            println!();
            println!("| rescale | native s | naive scan s | checkpoint MiB | speedup |");
            println!("|---|--:|--:|--:|--:|");
        }
    }
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
        let mib = fixture.checkpoint_bytes(rescale) as f64 / (1 << 20) as f64;
        match format {
            Format::Text => println!(
                "{:<10} {native:>14.3} {naive:>14.3} {mib:>16.1} {:>9.1}x",
                rescale.label(),
                naive / native,
            ),
            Format::Markdown => println!(
                "| {} | {native:.3} | {naive:.3} | {mib:.1} | {:.1}x |",
                rescale.label(),
                naive / native,
            ),
        }
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    let defaults = Sizes::full()?;
    let preload = args.keys.unwrap_or(defaults.preload).max(1);
    let rescale_keys = args.rescale_keys.unwrap_or(defaults.rescale);
    let workload = Workload::new(preload, fresh_pool(preload))?;
    let mut threads = args.threads.clone();
    threads.dedup();
    if threads.contains(&0) {
        return Err(BenchError::Config(
            "--threads takes counts of 1 or more".into(),
        ));
    }
    let parts = threads
        .iter()
        .map(|&t| workload.parts(t))
        .collect::<Result<Vec<_>>>()?;
    let mut families: Vec<Family> = args.workloads.iter().map(|&w| w.into()).collect();
    families.dedup();
    let format = if args.markdown {
        Format::Markdown
    } else {
        Format::Text
    };
    let header = Header {
        date: args
            .date
            .clone()
            .unwrap_or_else(|| utc_date(SystemTime::now())),
        machine: Machine::detect(),
        keys: preload,
        ops: args.ops,
        rounds: args.rounds.max(1),
        threads,
        command: command_line(),
        debug: cfg!(debug_assertions),
    };
    println!("{}", format.header(&header));
    let max = workload.max_parallelism();
    for &backend in &args.backends {
        for &family in &families {
            let [typed, bytes] = flowstate_layers(family, backend.open(max)?, workload.clone())?;
            let mut subjects = Subjects {
                typed,
                bytes,
                raw: backend.raw(family, &workload)?,
            };
            subjects.check(&workload)?;
            for &op in family.ops() {
                for parts in &parts {
                    let row = measure(backend, &subjects, op, parts, &args)?;
                    println!("{}", format.row(&row));
                }
            }
            // Whatever ran must have left every store holding what the workload wrote.
            subjects.check(&workload)?;
        }
    }
    #[cfg(feature = "rocksdb")]
    if rescale_keys > 0 && args.backends.contains(&Backend::Rocksdb) {
        rescale(rescale_keys, args.rounds, format)?;
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
