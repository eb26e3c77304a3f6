//! The proof job: a windowed word count on timely dataflow with flowstate state.
//!
//! A [`ReplayableSource`] of `partitions` partitions yields `batch` records per partition per
//! round (a round is a timely epoch); each record is a word drawn from `keys` words (skewed),
//! deterministic in (partition, offset). Records are routed by key group to the worker
//! owning the word, whose keyed state holds, per word:
//! - `word-total`: value state, the word's count over the whole input;
//! - `window-count`: value state namespaced by window (`rounds-per-window` rounds each), fired
//!   when the window's last round is complete: written to the output and cleared;
//! - `by-partition`: map state, the word's count per source partition.
//!
//! The output is one file per (window, key group), `window-NNNNN/kg-NNNNN.tsv`, lines
//! `word<TAB>count` sorted by word. A file's content depends only on the input, so a window
//! fired again after a restore rewrites identical files: together with checkpoints every
//! `checkpoint-every` rounds, the output is exactly-once whatever fails.
//!
//! [`reference()`] computes the exact expected output and state single-threaded; [`verify`]
//! compares a finished run's output files and final checkpoint with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_api::lifecycle::RetentionPolicy;
use flowstate_api::typed::{MapStateDescriptor, ValueStateDescriptor};
use flowstate_api::{CheckpointStorage, MaxParallelism, Parallelism, SerdeCodec, SnapshotKind};
use flowstate_runtime::{restore_subtask, BackendConfig, DynStateBackendFactory};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::checkpointing::{CheckpointRecord, CheckpointSettings, WorkerCheckpoints};
use crate::error::{Error, Result};
use crate::operator::{keyed_stateful, ErrorSlot, KeyGroupRouting};
use crate::source::ReplayableSource;

/// The job's settings (the example's and the tests' command line).
#[derive(clap::Parser, Clone, Debug, Serialize, Deserialize)]
#[command(
    about = "Windowed word count on timely dataflow, state in flowstate",
    after_help = "Timely's own options (-w workers, -n processes, -p process index, -h hostfile) go after `--`.\nExample: wordcount --storage /tmp/ckpts --output /tmp/out -- -w 2"
)]
pub struct JobArgs {
    /// State backend: heap, rocksdb[:dir=..,memory=..], lmdb[:dir=..,map-size=..].
    #[arg(long, default_value = "heap")]
    pub backend: BackendConfig,
    /// Checkpoint storage: a directory or a URL (file://, s3://bucket/prefix, memory://).
    #[arg(long)]
    pub storage: String,
    /// Directory the window results are written to.
    #[arg(long)]
    pub output: PathBuf,
    /// Input partitions (each a replayable stream of records).
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Records per partition per round.
    #[arg(long, default_value_t = 1250)]
    pub batch: u64,
    /// Rounds (epochs) in the whole input: partitions x batch x rounds records.
    #[arg(long, default_value_t = 100)]
    pub rounds: u64,
    /// Distinct words.
    #[arg(long, default_value_t = 5000)]
    pub keys: u64,
    /// Rounds per tumbling window: a window's counts are written once its last round is processed.
    #[arg(long, default_value_t = 10)]
    pub rounds_per_window: u64,
    /// A checkpoint after every this many rounds (and after the last).
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: u64,
    /// The job's max parallelism: its number of key groups.
    #[arg(long, default_value_t = 128)]
    pub max_parallelism: u32,
    /// Stop cleanly once the checkpoint after this round completed (a planned stop, e.g.
    /// to rescale); without it the job runs to the end of the input.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Pause this long after each round (to give a test time to kill a process mid-run).
    #[arg(long, default_value_t = 0)]
    pub round_delay_ms: u64,
    /// Completed checkpoints to keep.
    #[arg(long, default_value_t = 2)]
    pub retained: usize,
}

impl JobArgs {
    fn validate(&self) -> Result<()> {
        let positive = [
            ("batch", self.batch),
            ("rounds", self.rounds),
            ("keys", self.keys),
            ("rounds-per-window", self.rounds_per_window),
            ("checkpoint-every", self.checkpoint_every),
            ("partitions", u64::from(self.partitions)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("--{name} must be at least 1")));
        }
        if let Some(stop) = self.stop_after {
            if stop >= self.rounds || !self.is_checkpoint_round(stop) {
                return Err(Error::Config(format!(
                    "--stop-after {stop} must be a checkpoint round below --rounds {} (a round r with (r + 1) % {} == 0)",
                    self.rounds, self.checkpoint_every
                )));
            }
        }
        MaxParallelism::new(self.max_parallelism)?;
        Ok(())
    }

    fn is_checkpoint_round(&self, round: u64) -> bool {
        (round + 1).is_multiple_of(self.checkpoint_every) || round + 1 == self.rounds
    }

    /// The round after the last one this run reads.
    fn end_round(&self) -> u64 {
        self.stop_after.map_or(self.rounds, |stop| stop + 1)
    }

    fn window_end(&self, window: u64) -> u64 {
        ((window + 1) * self.rounds_per_window).min(self.rounds)
    }
}

/// A record: (partition, offset). The word is derived from it.
pub type Event = (u32, u64);

/// The word at `offset` of `partition`: deterministic, skewed towards low word numbers.
pub fn word(partition: u32, offset: u64, keys: u64) -> String {
    let mut z = (u64::from(partition) << 40 ^ offset).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let n = (z % keys).min((z >> 32) % keys);
    format!("w{n}")
}

/// What one worker did, for the example's report and the tests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerReport {
    /// This worker's index among all workers of the job.
    pub worker: usize,
    /// The number of workers of the job (all processes).
    pub peers: usize,
    /// The checkpoint id this run restored from; `None`: started empty.
    pub restored_from: Option<u64>,
    /// Time the restore took, in milliseconds.
    pub restore_millis: u64,
    /// The input partitions this worker read.
    pub partitions: Vec<u32>,
    /// The first round this worker read (0 when started empty).
    pub first_round: u64,
    /// Records this worker read in this run.
    pub records_read: u64,
    /// Completed checkpoints: (id, bytes uploaded, bytes reused, millis). Worker 0 only.
    pub checkpoints: Vec<(u64, u64, u64, u64)>,
}

/// Runs the job on this process's timely workers (`timely_args`: timely's own options, as
/// for `timely::execute_from_args`). Returns this process's workers' reports.
pub fn run(args: &JobArgs, timely_args: Vec<String>) -> Result<Vec<WorkerReport>> {
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the upload runtime", e))?;
    let storage = CheckpointStorage::open(&args.storage)?;
    std::fs::create_dir_all(&args.output)
        .map_err(|e| Error::io(format!("creating {}", args.output.display()), e))?;
    let factory: Arc<dyn DynStateBackendFactory> = Arc::from(args.backend.build()?);
    let settings = CheckpointSettings {
        storage,
        factory,
        max_parallelism: MaxParallelism::new(args.max_parallelism)?,
        retention: RetentionPolicy {
            retained_checkpoints: args.retained.max(1),
        },
        timeout: Duration::from_secs(120),
        runtime: runtime.handle().clone(),
    };
    let job = Arc::new(args.clone());
    let argv = std::iter::once("wordcount".to_string()).chain(timely_args);
    let guards = timely::execute_from_args(argv, move |worker| {
        run_worker(worker, settings.clone(), &job)
    })
    .map_err(Error::Timely)?;
    let mut reports = Vec::new();
    for result in guards.join() {
        match result {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(error)) => return Err(error),
            Err(panic) => return Err(Error::Timely(format!("a worker panicked: {panic}"))),
        }
    }
    Ok(reports)
}

fn run_worker(
    worker: &mut Worker,
    settings: CheckpointSettings,
    args: &JobArgs,
) -> Result<WorkerReport> {
    let mut checkpoints = WorkerCheckpoints::start(worker, settings)?;
    match run_job(worker, &mut checkpoints, args) {
        Ok(report) => Ok(report),
        Err(error @ Error::PeerFailed(_)) => Err(error),
        // The others stop too instead of waiting for this worker.
        Err(error) => Err(checkpoints.fail(error)),
    }
}

fn run_job(
    worker: &mut Worker,
    checkpoints: &mut WorkerCheckpoints,
    args: &JobArgs,
) -> Result<WorkerReport> {
    let (index, peers) = (worker.index(), worker.peers());
    let routing = KeyGroupRouting {
        max_parallelism: MaxParallelism::new(args.max_parallelism)?,
        parallelism: Parallelism::new(peers as u32)?,
    };
    let subtask = checkpoints.subtask().clone();
    let fresh = checkpoints.restored_from().is_none();
    let source = ReplayableSource::open(
        &subtask.operator,
        fresh,
        index,
        peers,
        args.partitions,
        args.batch,
    )?;
    let first_round = source.next_round()?;
    let end_round = args.end_round();
    if first_round > end_round {
        return Err(Error::Inconsistent(format!(
            "the checkpoint restored is at round {first_round}, past this run's end {end_round}"
        )));
    }

    let total = ValueStateDescriptor::<u64>::new("word-total").bind(subtask.keyed())?;
    let window_count = ValueStateDescriptor::<u64>::new("window-count")
        .with_namespace::<u64>()
        .bind(subtask.keyed())?;
    let by_partition = MapStateDescriptor::<u32, u64>::new("by-partition").bind(subtask.keyed())?;

    let errors = ErrorSlot::default();
    let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<Event>>> = InputHandle::new();
    let probe = ProbeHandle::<u64>::new();
    let (keys, batch, rpw) = (args.keys, args.batch, args.rounds_per_window);
    let job = args.clone();
    let output_dir = args.output.clone();
    // Windows ending at or before the resume round were fired before the checkpoint.
    let mut next_window = first_round / rpw;
    let window_state = window_count.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        let events = input.to_stream(scope);
        keyed_stateful(
            events,
            "word-count",
            routing,
            errors.clone(),
            move |&(partition, offset): &Event| word(partition, offset, keys),
            move |key, (partition, offset): Event, _out: &mut Vec<()>| {
                let window = offset / batch / rpw;
                total.update(key, &(total.get(key)?.unwrap_or(0) + 1))?;
                let in_window = window_count.get_in(key, &window)?.unwrap_or(0);
                window_count.update_in(key, &window, &(in_window + 1))?;
                let from_partition = by_partition.get(key, &partition)?.unwrap_or(0);
                by_partition.put(key, &partition, &(from_partition + 1))
            },
            move |complete_before, _out| {
                let limit = complete_before.min(job.end_round());
                while job.window_end(next_window) <= limit && next_window * rpw < job.rounds {
                    fire_window(&window_state, next_window, &output_dir, index)?;
                    next_window += 1;
                }
                Ok(())
            },
        )
        .probe_with(&probe);
    });

    if let Some(error) = checkpoints.take_startup_error() {
        return Err(error); // the dataflow is built: the other workers can wind down
    }
    // Steps the worker while `busy`, moving checkpoint traffic along (and hearing of other
    // workers' failures); stops at the operator's first error.
    let step_while = |worker: &mut Worker,
                      checkpoints: &mut WorkerCheckpoints,
                      busy: &dyn Fn() -> bool|
     -> Result<()> {
        while !errors.is_set() && busy() {
            worker.step();
            checkpoints.pump()?;
        }
        errors.take().map_or(Ok(()), |error| Err(error.into()))
    };
    // Epochs are rounds: a restored job's first epoch is the round it resumes at.
    input.advance_to(first_round);
    let mut records_read = 0;
    for round in first_round..end_round {
        // At most two rounds in flight: the source does not run ahead of the state.
        step_while(worker, checkpoints, &|| {
            probe.less_than(&round.saturating_sub(2))
        })?;
        records_read +=
            source.read_round(round, |partition, offset| input.send((partition, offset)))?;
        let checkpoint = if args.is_checkpoint_round(round) {
            Some(checkpoints.prepare()?)
        } else {
            None
        };
        input.advance_to(round + 1);
        if let Some(id) = checkpoint {
            // Every epoch up to `round` processed on every worker, none after: aligned.
            step_while(worker, checkpoints, &|| probe.less_than(&(round + 1)))?;
            checkpoints.capture(id, SnapshotKind::Incremental)?;
            if round + 1 == end_round {
                checkpoints.wait_for(worker, id)?;
            }
        }
        checkpoints.pump()?;
        let until = Instant::now() + Duration::from_millis(args.round_delay_ms);
        step_while(worker, checkpoints, &|| Instant::now() < until)?;
    }
    drop(input);
    step_while(worker, checkpoints, &|| !probe.done())?;
    Ok(WorkerReport {
        worker: index,
        peers,
        restored_from: checkpoints.restored_from().map(|id| id.get()),
        restore_millis: checkpoints.restore_time().as_millis() as u64,
        partitions: source.partitions()?,
        first_round,
        records_read,
        checkpoints: checkpoints
            .records()
            .iter()
            .map(|r: &CheckpointRecord| {
                (
                    r.id.get(),
                    r.bytes_uploaded,
                    r.bytes_reused,
                    r.duration.as_millis() as u64,
                )
            })
            .collect(),
    })
}

/// Writes window `window`'s counts of this worker's words, one file per key group, and
/// clears them from state.
fn fire_window(
    window_count: &flowstate_api::typed::ValueState<u64, u64>,
    window: u64,
    output: &Path,
    worker: usize,
) -> flowstate_api::Result<()> {
    let codec = SerdeCodec::<String>::new();
    let mut files: BTreeMap<u32, Vec<(String, u64)>> = BTreeMap::new();
    let keys = window_count.keys_in(&window)?;
    for key in &keys {
        let count = window_count.get_in(key, &window)?.unwrap_or(0);
        let word: String = key.decode_key(&codec)?;
        files
            .entry(key.key_group().get())
            .or_default()
            .push((word, count));
    }
    let dir = output.join(format!("window-{window:05}"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| flowstate_api::Error::io(format!("creating {}", dir.display()), e))?;
    for (key_group, mut lines) in files {
        lines.sort();
        let text: String = lines.iter().map(|(w, c)| format!("{w}\t{c}\n")).collect();
        let path = dir.join(format!("kg-{key_group:05}.tsv"));
        // Write then rename: a reader (or a crash) never sees half a file.
        let staging = dir.join(format!(".kg-{key_group:05}.tsv.{worker}.tmp"));
        std::fs::write(&staging, text)
            .and_then(|()| std::fs::rename(&staging, &path))
            .map_err(|e| flowstate_api::Error::io(format!("writing {}", path.display()), e))?;
    }
    for key in &keys {
        window_count.clear_in(key, &window)?;
    }
    Ok(())
}

/// The exact result of the whole input, computed single-threaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Each word's count over the whole input.
    pub totals: BTreeMap<String, u64>,
    /// Each (window, word)'s count: what the output files must hold.
    pub windows: BTreeMap<(u64, String), u64>,
    /// Each word's count per input partition.
    pub by_partition: BTreeMap<String, BTreeMap<u32, u64>>,
}

/// See [`Expected`].
pub fn reference(args: &JobArgs) -> Expected {
    let mut expected = Expected::default();
    for partition in 0..args.partitions {
        for offset in 0..args.rounds * args.batch {
            let w = word(partition, offset, args.keys);
            let window = offset / args.batch / args.rounds_per_window;
            *expected.totals.entry(w.clone()).or_default() += 1;
            *expected.windows.entry((window, w.clone())).or_default() += 1;
            *expected
                .by_partition
                .entry(w)
                .or_default()
                .entry(partition)
                .or_default() += 1;
        }
    }
    expected
}

/// Reads a finished run's output files: (window, word) -> count. A word in two files of one
/// window is an error (it was routed to two key groups).
pub fn read_output(output: &Path) -> Result<BTreeMap<(u64, String), u64>> {
    let mut found = BTreeMap::new();
    let read_dir = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))
    };
    for entry in read_dir(output)? {
        let entry = entry.map_err(|e| Error::io("listing the output", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(window) = name
            .strip_prefix("window-")
            .and_then(|w| w.parse::<u64>().ok())
        else {
            continue;
        };
        for file in read_dir(&entry.path())? {
            let file = file.map_err(|e| Error::io("listing a window", e))?;
            if !file.file_name().to_string_lossy().ends_with(".tsv") {
                continue;
            }
            let text = std::fs::read_to_string(file.path())
                .map_err(|e| Error::io(format!("reading {}", file.path().display()), e))?;
            for line in text.lines() {
                let parsed = line
                    .split_once('\t')
                    .and_then(|(w, c)| Some((w.to_string(), c.parse::<u64>().ok()?)));
                let Some((word, count)) = parsed else {
                    return Err(Error::Inconsistent(format!(
                        "{}: line '{line}' is not word<TAB>count",
                        file.path().display()
                    )));
                };
                if found.insert((window, word.clone()), count).is_some() {
                    return Err(Error::Inconsistent(format!(
                        "word {word} appears twice in window {window}"
                    )));
                }
            }
        }
    }
    Ok(found)
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// The id of the latest checkpoint, whose state was checked.
    pub checkpoint: u64,
    /// Distinct words in that checkpoint's state.
    pub words: usize,
    /// Records counted in that checkpoint's state (sum of the word totals).
    pub records: u64,
}

/// Compares a finished run with [`reference()`]: every output file, and the state of the latest
/// checkpoint restored at parallelism 1 on `factory` (every word's total and per-partition
/// counts; no window left unfired). Any difference is an error naming it.
pub fn verify(
    args: &JobArgs,
    storage: &CheckpointStorage,
    factory: &dyn DynStateBackendFactory,
    runtime: &tokio::runtime::Runtime,
) -> Result<Verification> {
    let expected = reference(args);
    let output = read_output(&args.output)?;
    if output != expected.windows {
        let wrong = expected
            .windows
            .iter()
            .filter(|(k, v)| output.get(*k) != Some(*v))
            .take(3)
            .map(|((w, word), v)| {
                format!(
                    "window {w} {word}: expected {v}, found {:?}",
                    output.get(&(*w, word.clone()))
                )
            })
            .collect::<Vec<_>>();
        let extra = output
            .keys()
            .filter(|k| !expected.windows.contains_key(*k))
            .count();
        return Err(Error::Inconsistent(format!(
            "the output differs from the reference: {wrong:?}; {extra} unexpected entries"
        )));
    }
    runtime.block_on(async {
        let latest = storage
            .list_checkpoints()
            .await?
            .into_iter()
            .max()
            .ok_or_else(|| Error::Inconsistent("no completed checkpoint".into()))?;
        let manifest = storage.read_manifest(latest).await?;
        let one = Parallelism::new(1)?;
        let subtask = restore_subtask(factory, storage, &manifest, one, 0).await?;
        let total = ValueStateDescriptor::<u64>::new("word-total").bind(subtask.keyed())?;
        let window_count = ValueStateDescriptor::<u64>::new("window-count")
            .with_namespace::<u64>()
            .bind(subtask.keyed())?;
        let by_partition =
            MapStateDescriptor::<u32, u64>::new("by-partition").bind(subtask.keyed())?;
        let codec = SerdeCodec::<String>::new();
        let mut totals = BTreeMap::new();
        let mut partitions = BTreeMap::new();
        for key in total.keys()? {
            let word: String = key.decode_key(&codec)?;
            totals.insert(word.clone(), total.get(&key)?.unwrap_or(0));
            partitions.insert(word, by_partition.entries(&key)?.into_iter().collect());
        }
        if totals != expected.totals {
            return Err(Error::Inconsistent(format!(
                "checkpoint {latest}: word totals differ from the reference ({} words found, {} expected)",
                totals.len(),
                expected.totals.len()
            )));
        }
        if partitions != expected.by_partition {
            return Err(Error::Inconsistent(format!(
                "checkpoint {latest}: per-partition counts differ from the reference"
            )));
        }
        let windows = args.rounds.div_ceil(args.rounds_per_window);
        for window in 0..windows {
            if !window_count.keys_in(&window)?.is_empty() {
                return Err(Error::Inconsistent(format!(
                    "checkpoint {latest}: window {window} still holds counts: it was never fired"
                )));
            }
        }
        Ok(Verification {
            checkpoint: latest.get(),
            words: totals.len(),
            records: totals.values().sum(),
        })
    })
}
