//! The demo: a stateful pipeline on the heap backend.
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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use flowstate_api::key_groups::{key_group_range_for_operator, operator_index_for_key_group};
use flowstate_api::lifecycle::{CheckpointLifecycle, RetentionPolicy};
use flowstate_api::operator::{
    restore_operator_state, write_operator_state, BroadcastState, OperatorListState,
    OperatorStateStore, Redistribution,
};
use flowstate_api::typed::ValueState;
use flowstate_api::typed::ValueStateDescriptor;
use flowstate_api::{
    CheckpointManifest, CheckpointStorage, KeyContext, KeyedStateBackend, MaxParallelism,
    Parallelism, SerdeCodec, SnapshotKind, SnapshotRequest, StateBackend, StateBackendFactory,
    SubtaskStateHandle,
};
use flowstate_heap::{HeapBackend, HeapBackendFactory};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where checkpoints go (a local directory). Default: a fresh temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Or any object-store URL (e.g. s3://bucket/prefix, with AWS_* variables).
    #[arg(long, conflicts_with = "dir")]
    storage_url: Option<String>,
    /// Number of source partitions.
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 2_000)]
    keys: u32,
    /// Records each partition yields per round.
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// Max parallelism (number of key groups).
    #[arg(long, default_value_t = 128)]
    max_parallelism: u32,
}

const KINDS: [&str; 3] = ["view", "click", "buy"];
/// Rule updates: (round, kind, weight). Round 0 sets the initial rules.
const RULES: [(u64, &str, u64); 4] = [
    (0, "view", 1),
    (0, "click", 2),
    (0, "buy", 5),
    (7, "click", 3),
];

/// The record at `offset` of `partition`: (key, kind). Deterministic (splitmix64).
fn record(partition: u32, offset: u64, keys: u32) -> (String, &'static str) {
    let mut z = (u64::from(partition) << 40 ^ offset).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let key = format!("user-{}", z % u64::from(keys));
    (key, KINDS[((z >> 32) % 3) as usize])
}

fn weight_at(round: u64, kind: &str) -> u64 {
    RULES
        .iter()
        .filter(|(r, k, _)| *r <= round && *k == kind)
        .map(|(_, _, w)| *w)
        .next_back()
        .unwrap_or(0)
}

/// One parallel instance: source reader + keyed counter, with its keyed backend and its
/// operator state store.
struct Subtask {
    index: u32,
    backend: Arc<HeapBackend>,
    operator: Arc<OperatorStateStore>,
    counts: ValueState<u64>,
    offsets: OperatorListState<(u32, u64)>,
    weights: BroadcastState<String, u64>,
}

impl Subtask {
    fn new(index: u32, backend: HeapBackend, operator: OperatorStateStore) -> Result<Self> {
        let backend = Arc::new(backend);
        let operator = Arc::new(operator);
        let shared: Arc<dyn KeyedStateBackend> = backend.clone();
        Ok(Self {
            index,
            counts: ValueStateDescriptor::<u64>::new("count").bind(shared)?,
            offsets: operator.list_state("partition-offsets", Redistribution::EvenSplit)?,
            weights: operator.broadcast_state("weights")?,
            backend,
            operator,
        })
    }
}

struct Job {
    max: MaxParallelism,
    key_codec: SerdeCodec<String>,
    args: DemoArgs,
    lifecycle: CheckpointLifecycle,
    factory: HeapBackendFactory,
}

impl Job {
    fn describe(&self, subtasks: &[Subtask]) -> Result<()> {
        for s in subtasks {
            let mut partitions: Vec<u32> = s.offsets.get()?.into_iter().map(|(p, _)| p).collect();
            partitions.sort();
            println!(
                "    subtask {} owns key groups {} and partitions {:?}",
                s.index,
                s.backend.key_group_range(),
                partitions
            );
        }
        Ok(())
    }

    /// Runs rounds `[from, to)` on every subtask.
    fn run_rounds(&self, subtasks: &[Subtask], from: u64, to: u64) -> Result<u64> {
        let parallelism = Parallelism::new(subtasks.len() as u32)?;
        let mut processed = 0;
        for round in from..to {
            for (r, kind, weight) in RULES.iter().filter(|(r, _, _)| *r == round) {
                let _ = r;
                for s in subtasks {
                    s.weights.put(&kind.to_string(), weight)?;
                }
            }
            for source in subtasks {
                let mut offsets = source.offsets.get()?;
                for (partition, next) in offsets.iter_mut() {
                    let end = (round + 1) * self.args.batch;
                    if *next != round * self.args.batch {
                        bail!(
                            "partition {partition} is at offset {next} at the start of round {round}: the source lost its place"
                        );
                    }
                    while *next < end {
                        let (key, kind) = record(*partition, *next, self.args.keys);
                        let ctx = KeyContext::for_key(&self.key_codec, &key, self.max)?;
                        let target =
                            operator_index_for_key_group(self.max, parallelism, ctx.key_group());
                        let counter = &subtasks[target as usize];
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

    /// An aligned checkpoint of every subtask (rounds are barriers): synchronous snapshots,
    /// then uploads, then the manifest through the lifecycle, then completion notices.
    async fn checkpoint(&mut self, subtasks: &[Subtask]) -> Result<CheckpointManifest> {
        let id = self.lifecycle.begin();
        let captured = subtasks
            .iter()
            .map(|s| {
                let job = s.backend.snapshot(&SnapshotRequest {
                    checkpoint_id: id,
                    subtask_index: s.index,
                    kind: SnapshotKind::Incremental,
                })?;
                Ok((
                    s.index,
                    s.backend.key_group_range(),
                    job,
                    s.operator.snapshot(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let storage = self.lifecycle.storage().clone();
        let mut handles = Vec::new();
        for (index, range, job, operator) in captured {
            let keyed = job.run(storage.clone()).await?;
            let operator = write_operator_state(&storage, id, index, &operator).await?;
            handles.push(SubtaskStateHandle {
                subtask_index: index,
                key_group_range: range,
                keyed: Some(keyed),
                operator: Some(operator),
            });
        }
        let parallelism = Parallelism::new(subtasks.len() as u32)?;
        let manifest = CheckpointManifest::new(id, self.max, parallelism, handles);
        let known: std::collections::BTreeSet<String> =
            self.lifecycle.registry().files.keys().cloned().collect();
        self.lifecycle.complete(manifest.clone()).await?;
        for s in subtasks {
            s.backend.notify_checkpoint_complete(id)?;
        }
        let files = manifest.files();
        let total: u64 = files.iter().map(|f| f.size).sum();
        let uploaded: u64 = files
            .iter()
            .filter(|f| !f.shared || !known.contains(&f.path))
            .map(|f| f.size)
            .sum();
        println!(
            "  checkpoint {id}: {} subtasks, {total} bytes referenced, {uploaded} bytes uploaded, retained {:?}",
            subtasks.len(),
            self.lifecycle.completed()
        );
        Ok(manifest)
    }

    /// Restores `manifest` at `parallelism` new subtasks.
    async fn restore(
        &self,
        manifest: &CheckpointManifest,
        parallelism: u32,
    ) -> Result<Vec<Subtask>> {
        let parallelism = Parallelism::new(parallelism)?;
        self.max.check(parallelism)?;
        let storage = self.lifecycle.storage();
        let handles = manifest.keyed_handles();
        let mut out = Vec::new();
        for index in 0..parallelism.get() {
            let range = key_group_range_for_operator(self.max, parallelism, index)?;
            let backend = self
                .factory
                .restore(self.max, range, storage, &handles)
                .await?;
            let operator =
                restore_operator_state(storage, &manifest.operator_files(), index, parallelism)
                    .await?;
            out.push(Subtask::new(index, backend, operator)?);
        }
        Ok(out)
    }
}

/// The round the restored sources resume at (all partitions advance together).
fn resume_round(subtasks: &[Subtask], batch: u64) -> Result<u64> {
    let mut rounds = Vec::new();
    for s in subtasks {
        rounds.extend(s.offsets.get()?.into_iter().map(|(_, o)| o / batch));
    }
    rounds.sort();
    rounds.dedup();
    match rounds.as_slice() {
        [round] => Ok(*round),
        _ => bail!("restored partitions disagree on their position: {rounds:?}"),
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let max = MaxParallelism::new(args.max_parallelism)?;
    let temp;
    let storage = match (&args.storage_url, &args.dir) {
        (Some(url), _) => CheckpointStorage::from_url(url, Vec::<(String, String)>::new())?,
        (None, Some(dir)) => CheckpointStorage::local(dir)?,
        (None, None) => {
            temp = tempfile::tempdir().context("creating a temporary checkpoint directory")?;
            CheckpointStorage::local(temp.path())?
        }
    };
    println!("flowstate demo: {} partitions x {} records per round, {} keys, max parallelism {max}, checkpoints in {storage:?}",
        args.partitions, args.batch, args.keys);
    let lifecycle = CheckpointLifecycle::open(
        storage,
        RetentionPolicy {
            retained_checkpoints: 2,
        },
    )
    .await?;
    let mut job = Job {
        max,
        key_codec: SerdeCodec::new(),
        lifecycle,
        factory: HeapBackendFactory::default(),
        args,
    };

    // Phase 1: parallelism 2, partitions dealt round-robin.
    let two = Parallelism::new(2)?;
    let mut subtasks = Vec::new();
    for index in 0..2 {
        let range = key_group_range_for_operator(max, two, index)?;
        let s = Subtask::new(
            index,
            job.factory.create(max, range)?,
            OperatorStateStore::new(),
        )?;
        let owned: Vec<(u32, u64)> = (0..job.args.partitions)
            .filter(|p| p % 2 == index)
            .map(|p| (p, 0))
            .collect();
        s.offsets.update(&owned)?;
        subtasks.push(s);
    }
    println!("\nphase 1: parallelism 2");
    job.describe(&subtasks)?;
    job.run_rounds(&subtasks, 0, 5)?;
    let first = job.checkpoint(&subtasks).await?;
    job.run_rounds(&subtasks, 5, 7)?;
    println!("  processed rounds 5..7 after the checkpoint, then the job fails: that work is lost and replayed");
    drop(subtasks);

    // Phase 2: restore the checkpoint at parallelism 3 and replay from the restored offsets.
    let mut subtasks = job.restore(&first, 3).await?;
    let round = resume_round(&subtasks, job.args.batch)?;
    println!(
        "\nphase 2: restored checkpoint {} at parallelism 3, resuming at round {round}",
        first.checkpoint_id
    );
    job.describe(&subtasks)?;
    job.run_rounds(&subtasks, round, 10)?;
    job.checkpoint(&subtasks).await?;
    job.run_rounds(&subtasks, 10, 11)?;
    let second = job.checkpoint(&subtasks).await?;

    // Phase 3: rescale to 1.
    subtasks = job.restore(&second, 1).await?;
    let round = resume_round(&subtasks, job.args.batch)?;
    println!(
        "\nphase 3: restored checkpoint {} at parallelism 1, resuming at round {round}",
        second.checkpoint_id
    );
    job.describe(&subtasks)?;
    const FINAL_ROUND: u64 = 13;
    job.run_rounds(&subtasks, round, FINAL_ROUND)?;
    job.checkpoint(&subtasks).await?;

    // The reference: every record of rounds [0, FINAL_ROUND) exactly once, single-threaded.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for partition in 0..job.args.partitions {
        for offset in 0..FINAL_ROUND * job.args.batch {
            let (key, kind) = record(partition, offset, job.args.keys);
            *expected.entry(key).or_default() += weight_at(offset / job.args.batch, kind);
        }
    }
    let only = &subtasks[0];
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
        u64::from(job.args.partitions) * FINAL_ROUND * job.args.batch
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
