//! The demo: a stateful pipeline on any backend.
//!
//! Each subtask runs a source reader over the partitions it owns (their next offsets are
//! operator list state, split evenly on rescale), sends every record to the subtask owning
//! the record key's key group, which adds the record's weight to a keyed running count; the
//! weights per event kind are broadcast rules (broadcast state). The driver runs in rounds: in
//! round `r` every partition yields offsets `[r*B, (r+1)*B)`, and rule updates take effect at
//! fixed rounds, so a single-threaded reference computes the exact expected counts.
//!
//! The run: parallelism 2, checkpoint, keep going a little (work that a failure will lose),
//! restore the checkpoint at parallelism 3 (replaying from the restored offsets), checkpoint,
//! restore at parallelism 1, finish, and compare every count with the reference. A count off by
//! one record means state was lost or counted twice: the demo exits non-zero.
//!
//! The checkpoint sequence is `flowstate-runtime`'s, as an engine would drive it: subtasks
//! created or restored by the runtime on a backend chosen by [`BackendConfig`], and one
//! [`CheckpointCoordinator`] per run of the job (a restart at another parallelism opens a new
//! one on the same storage) which triggers checkpoints, takes the subtasks' acknowledgements,
//! publishes the manifests and applies retention; the subtasks all live in this process, so
//! [`CheckpointCoordinator::checkpoint_subtasks`] runs that sequence. The records and the
//! reference are [`workload`]'s.

pub mod workload;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use clap::Args;
use flowstate_api::key_groups::operator_index_for_key_group;
use flowstate_api::lifecycle::RetentionPolicy;
use flowstate_api::operator::{BroadcastState, OperatorListState, Redistribution};
use flowstate_api::typed::{ValueState, ValueStateDescriptor};
use flowstate_api::{
    CheckpointId, CheckpointStorage, KeyContext, MaxParallelism, Parallelism, SerdeCodec,
    SnapshotKind,
};
use flowstate_runtime::{
    create_subtask, restore_subtask, BackendConfig, CheckpointCoordinator, CoordinatorConfig,
    DynStateBackendFactory, Subtask,
};

use crate::resolve;
use workload::{
    Workload, DEFAULT_BATCH, DEFAULT_KEYS, DEFAULT_MAX_PARALLELISM, DEFAULT_PARTITIONS,
    FINAL_ROUND, RULES,
};

/// `flowstate demo`'s arguments.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  flowstate demo\n  flowstate demo --backend lmdb --storage ./ckpts\n  flowstate demo --backend rocksdb --storage s3://bucket/demo"
)]
pub struct DemoArgs {
    /// The state backend: heap, lmdb or rocksdb (or a full backend string such as
    /// `lmdb:map-size=64MiB`). RocksDB needs a build with `--features rocksdb`.
    #[arg(long, default_value = "heap")]
    backend: String,
    /// Where checkpoints go: a directory, file:///dir, s3://bucket/prefix (with AWS_*
    /// variables) or memory://. Default: a fresh temporary directory.
    #[arg(long)]
    storage: Option<String>,
    /// Number of source partitions (at least 1).
    #[arg(long, default_value_t = DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Number of distinct keys (at least 1).
    #[arg(long, default_value_t = DEFAULT_KEYS, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// Records each partition yields per round (at least 1).
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Max parallelism (number of key groups): at least 3, the demo's highest parallelism,
    /// and at most 32768.
    #[arg(long, default_value_t = DEFAULT_MAX_PARALLELISM, value_parser = clap::value_parser!(u32).range(3..=32768))]
    max_parallelism: u32,
}

/// One parallel instance: source reader + keyed counter. The runtime's [`Subtask`] holds its
/// keyed backend and its operator state store; the state handles are bound to them.
struct Instance {
    subtask: Subtask,
    counts: ValueState<u64>,
    offsets: OperatorListState<(u32, u64)>,
    weights: BroadcastState<String, u64>,
}

impl Instance {
    fn new(subtask: Subtask) -> Result<Self> {
        Ok(Self {
            counts: ValueStateDescriptor::<u64>::new("count").bind(subtask.keyed())?,
            offsets: subtask
                .operator
                .list_state("partition-offsets", Redistribution::EvenSplit)?,
            weights: subtask.operator.broadcast_state("weights")?,
            subtask,
        })
    }
}

struct Job {
    max: MaxParallelism,
    key_codec: SerdeCodec<String>,
    workload: Workload,
    storage: CheckpointStorage,
    factory: Box<dyn DynStateBackendFactory>,
}

impl Job {
    /// The checkpoint coordinator of one run of the job at `parallelism`. Its parallelism is
    /// fixed, so every (re)start opens a new one on the job's storage; checkpoint ids continue
    /// from the highest the storage holds.
    async fn coordinator(&self, parallelism: Parallelism) -> Result<CheckpointCoordinator> {
        let config = CoordinatorConfig {
            retention: RetentionPolicy {
                retained_checkpoints: 2,
            },
            ..CoordinatorConfig::new(self.max, parallelism)
        };
        Ok(CheckpointCoordinator::open(self.storage.clone(), config).await?)
    }

    /// New, empty instances at `parallelism`, sources not yet assigned.
    fn create(&self, parallelism: Parallelism) -> Result<Vec<Instance>> {
        (0..parallelism.get())
            .map(|index| {
                Instance::new(create_subtask(
                    self.factory.as_ref(),
                    self.max,
                    parallelism,
                    index,
                )?)
            })
            .collect()
    }

    /// A restart at `parallelism`: opens the run's coordinator and restores its latest
    /// checkpoint (which must be `expected`, the last one this demo took) into new instances.
    async fn restart(
        &self,
        parallelism: u32,
        expected: CheckpointId,
    ) -> Result<(CheckpointCoordinator, Vec<Instance>)> {
        let parallelism = Parallelism::new(parallelism)?;
        let coordinator = self.coordinator(parallelism).await?;
        let latest = coordinator
            .latest()
            .context("the checkpoint storage holds no completed checkpoint to restore")?;
        if latest.checkpoint_id != expected {
            bail!(
                "the latest checkpoint is {}, not {expected} which the demo took last",
                latest.checkpoint_id
            );
        }
        let mut instances = Vec::new();
        for index in 0..parallelism.get() {
            let subtask = restore_subtask(
                self.factory.as_ref(),
                &self.storage,
                latest,
                parallelism,
                index,
            )
            .await?;
            instances.push(Instance::new(subtask)?);
        }
        Ok((coordinator, instances))
    }

    fn describe(&self, instances: &[Instance]) -> Result<()> {
        for s in instances {
            let mut partitions: Vec<u32> = s.offsets.get()?.into_iter().map(|(p, _)| p).collect();
            partitions.sort();
            println!(
                "    subtask {} owns key groups {} and partitions {:?}",
                s.subtask.index,
                s.subtask.key_group_range(),
                partitions
            );
        }
        Ok(())
    }

    /// Runs rounds `[from, to)` on every instance.
    fn run_rounds(&self, instances: &[Instance], from: u64, to: u64) -> Result<u64> {
        let parallelism = Parallelism::new(instances.len() as u32)?;
        let mut processed = 0;
        for round in from..to {
            for (_, kind, weight) in RULES.iter().filter(|(r, _, _)| *r == round) {
                for s in instances {
                    s.weights.put(&kind.to_string(), weight)?;
                }
            }
            for source in instances {
                let mut offsets = source.offsets.get()?;
                for (partition, next) in offsets.iter_mut() {
                    let end = (round + 1) * self.workload.batch;
                    if *next != round * self.workload.batch {
                        bail!(
                            "partition {partition} is at offset {next} at the start of round {round}: the source lost its place"
                        );
                    }
                    while *next < end {
                        let (key, kind) = self.workload.record(*partition, *next);
                        let ctx = KeyContext::for_key(&self.key_codec, &key, self.max)?;
                        let target =
                            operator_index_for_key_group(self.max, parallelism, ctx.key_group());
                        let counter = &instances[target as usize];
                        let weight = counter.weights.get(&kind.to_string())?.unwrap_or(0);
                        let count = counter.counts.get(&ctx)?.unwrap_or(0);
                        counter.counts.update(&ctx, &(count + weight))?;
                        *next += 1;
                        processed += 1;
                    }
                }
                source.offsets.update(&offsets)?;
            }
        }
        Ok(processed)
    }

    /// An aligned checkpoint of every instance (rounds are barriers), through the runtime:
    /// the coordinator triggers it, every subtask captures its state, the uploads run, the
    /// coordinator publishes the manifest once all acknowledged, and every subtask is told.
    async fn checkpoint(
        &self,
        coordinator: &mut CheckpointCoordinator,
        instances: &[Instance],
    ) -> Result<CheckpointId> {
        let subtasks: Vec<&Subtask> = instances.iter().map(|s| &s.subtask).collect();
        let completed = coordinator
            .checkpoint_subtasks(&subtasks, SnapshotKind::Incremental)
            .await?;
        let id = completed.manifest.checkpoint_id;
        println!(
            "  checkpoint {id}: {} subtasks, {} bytes referenced, {} bytes uploaded, retained {:?}",
            instances.len(),
            completed.bytes_total(),
            completed.bytes_uploaded,
            coordinator.completed()
        );
        Ok(id)
    }
}

/// The round the restored sources resume at (all partitions advance together).
fn resume_round(instances: &[Instance], batch: u64) -> Result<u64> {
    let mut rounds = Vec::new();
    for s in instances {
        rounds.extend(s.offsets.get()?.into_iter().map(|(_, o)| o / batch));
    }
    rounds.sort();
    rounds.dedup();
    match rounds.as_slice() {
        [round] => Ok(*round),
        _ => bail!("restored partitions disagree on their position: {rounds:?}"),
    }
}

/// Runs `flowstate demo`.
pub async fn run(args: DemoArgs) -> Result<()> {
    let max = MaxParallelism::new(args.max_parallelism)?;
    let backend: BackendConfig = args
        .backend
        .parse()
        .with_context(|| format!("--backend {}", args.backend))?;
    if matches!(backend, BackendConfig::RocksDb { .. }) && !cfg!(feature = "rocksdb") {
        bail!("this flowstate was built without RocksDB: build it with `--features rocksdb` for --backend rocksdb, or pick heap or lmdb");
    }
    let factory = backend.build()?;
    let temp;
    let storage = match &args.storage {
        Some(location) => {
            let storage = CheckpointStorage::open(location)
                .with_context(|| format!("opening the checkpoint storage {location}"))?;
            // The demo is a job of its own: on another job's storage its coordinator would
            // fence that job off and apply the demo's retention to its checkpoints.
            resolve::require_empty(
                &storage,
                "the demo runs its own job and writes only into an empty storage: give it a new directory or prefix",
            )
            .await?;
            storage
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary checkpoint directory")?;
            CheckpointStorage::local(temp.path())?
        }
    };
    println!("flowstate demo: {} partitions x {} records per round, {} keys, max parallelism {max}, {} backend, checkpoints in {storage}",
        args.partitions, args.batch, args.keys, factory.name());
    let job = Job {
        max,
        key_codec: SerdeCodec::new(),
        storage,
        factory,
        workload: Workload {
            partitions: args.partitions,
            keys: args.keys,
            batch: args.batch,
        },
    };

    // Phase 1: parallelism 2, partitions dealt round-robin.
    let two = Parallelism::new(2)?;
    let mut coordinator = job.coordinator(two).await?;
    let instances = job.create(two)?;
    for s in &instances {
        let owned: Vec<(u32, u64)> = (0..job.workload.partitions)
            .filter(|p| p % 2 == s.subtask.index)
            .map(|p| (p, 0))
            .collect();
        s.offsets.update(&owned)?;
    }
    println!("\nphase 1: parallelism 2");
    job.describe(&instances)?;
    job.run_rounds(&instances, 0, 5)?;
    let first = job.checkpoint(&mut coordinator, &instances).await?;
    job.run_rounds(&instances, 5, 7)?;
    println!("  processed rounds 5..7 after the checkpoint, then the job fails: that work is lost and replayed");
    drop((coordinator, instances));

    // Phase 2: restart at parallelism 3 from the checkpoint and replay from the restored offsets.
    let (mut coordinator, instances) = job.restart(3, first).await?;
    let round = resume_round(&instances, job.workload.batch)?;
    println!("\nphase 2: restored checkpoint {first} at parallelism 3, resuming at round {round}");
    job.describe(&instances)?;
    job.run_rounds(&instances, round, 10)?;
    job.checkpoint(&mut coordinator, &instances).await?;
    job.run_rounds(&instances, 10, 11)?;
    let second = job.checkpoint(&mut coordinator, &instances).await?;
    drop((coordinator, instances));

    // Phase 3: rescale to 1.
    let (mut coordinator, instances) = job.restart(1, second).await?;
    let round = resume_round(&instances, job.workload.batch)?;
    println!("\nphase 3: restored checkpoint {second} at parallelism 1, resuming at round {round}");
    job.describe(&instances)?;
    job.run_rounds(&instances, round, FINAL_ROUND)?;
    job.checkpoint(&mut coordinator, &instances).await?;

    // The reference: every record of rounds [0, FINAL_ROUND) exactly once, single-threaded.
    let expected = job.workload.expected_counts(FINAL_ROUND);
    let only = &instances[0];
    let mut actual: BTreeMap<String, u64> = BTreeMap::new();
    for ctx in only.counts.keys()? {
        let key: String = ctx.decode_key(&job.key_codec)?;
        actual.insert(key, only.counts.get(&ctx)?.unwrap_or(0));
    }
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(v))
        .take(5)
        .collect();
    let extra = actual.keys().filter(|k| !expected.contains_key(*k)).count();
    let total: u64 = expected.values().sum();
    println!(
        "\ncheck: {} keys, total weighted count {total}, reference over {} records",
        expected.len(),
        u64::from(job.workload.partitions) * FINAL_ROUND * job.workload.batch
    );
    if wrong.is_empty() && extra == 0 && actual.len() == expected.len() {
        println!("OK: every count equals the single-threaded reference (nothing lost, nothing counted twice)");
        Ok(())
    } else {
        for (k, v) in &wrong {
            println!("  key {k}: expected {v}, found {:?}", actual.get(*k));
        }
        bail!(
            "{} keys differ from the reference and {extra} keys should not exist",
            expected
                .iter()
                .filter(|(k, v)| actual.get(*k) != Some(v))
                .count()
        )
    }
}
