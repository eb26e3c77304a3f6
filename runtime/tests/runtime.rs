//! The runtime as an engine uses it: backends from configuration strings, checkpoints through
//! the coordinator (completion, decline, timeout, late and invalid acknowledgements,
//! subsumption), restores at other parallelisms, and the metrics it records.

use std::collections::BTreeMap;
use std::time::Duration;

use flowstate_api::key_groups::operator_index_for_key_group;
use flowstate_api::typed::{ListStateDescriptor, ValueStateDescriptor};
use flowstate_api::{
    CheckpointId, CheckpointStorage, KeyContext, KeyGroupRange, MaxParallelism, Parallelism,
    SerdeCodec, SnapshotKind,
};
use flowstate_runtime::{
    create_subtask, restore_subtask, BackendConfig, CheckpointCoordinator, CheckpointNotice,
    CoordinatorConfig, DynStateBackendFactory, Error, Outcome, Subtask, SubtaskAck, SubtaskReport,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn max() -> MaxParallelism {
    MaxParallelism::new(128).unwrap()
}

fn key(k: u64) -> KeyContext {
    KeyContext::for_key(&SerdeCodec::<u64>::new(), &k, max()).unwrap()
}

struct Job {
    factory: Box<dyn DynStateBackendFactory>,
    storage: CheckpointStorage,
    _dir: tempfile::TempDir,
    subtasks: Vec<Subtask>,
}

impl Job {
    fn new(config: &str, parallelism: u32) -> Self {
        let factory = config.parse::<BackendConfig>().unwrap().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::local(dir.path()).unwrap();
        let p = Parallelism::new(parallelism).unwrap();
        let subtasks = (0..parallelism)
            .map(|i| create_subtask(factory.as_ref(), max(), p, i).unwrap())
            .collect();
        Job {
            factory,
            storage,
            _dir: dir,
            subtasks,
        }
    }

    fn parallelism(&self) -> Parallelism {
        Parallelism::new(self.subtasks.len() as u32).unwrap()
    }

    fn owner(&self, k: u64) -> &Subtask {
        let index = operator_index_for_key_group(max(), self.parallelism(), key(k).key_group());
        &self.subtasks[index as usize]
    }

    /// Keyed counts plus each key's list of values, and operator list state per subtask.
    fn write(&self, keys: std::ops::Range<u64>, round: u64) {
        for k in keys {
            let s = self.owner(k);
            let count = ValueStateDescriptor::<u64>::new("count")
                .bind(s.keyed())
                .unwrap();
            count.update(&key(k), &(k * 10 + round)).unwrap();
            let seen = ListStateDescriptor::<u64>::new("seen")
                .bind(s.keyed())
                .unwrap();
            seen.add(&key(k), &round).unwrap();
        }
        for s in &self.subtasks {
            let offsets = s
                .operator
                .list_state::<u64>("offsets", flowstate_api::Redistribution::EvenSplit)
                .unwrap();
            offsets.add(&(u64::from(s.index) * 1000 + round)).unwrap();
        }
    }

    fn coordinator(
        &self,
        rt: &tokio::runtime::Runtime,
        timeout: Duration,
    ) -> CheckpointCoordinator {
        let config = CoordinatorConfig {
            timeout,
            ..CoordinatorConfig::new(max(), self.parallelism())
        };
        rt.block_on(CheckpointCoordinator::open(self.storage.clone(), config))
            .unwrap()
    }

    fn acks(&self, rt: &tokio::runtime::Runtime, id: CheckpointId) -> Vec<SubtaskAck> {
        self.subtasks
            .iter()
            .map(|s| s.capture(id, SnapshotKind::Incremental).unwrap())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|c| rt.block_on(c.upload(self.storage.clone())).unwrap())
            .collect()
    }
}

fn read_all(subtasks: &[Subtask], keys: std::ops::Range<u64>) -> BTreeMap<u64, (u64, Vec<u64>)> {
    let p = Parallelism::new(subtasks.len() as u32).unwrap();
    keys.map(|k| {
        let s = &subtasks[operator_index_for_key_group(max(), p, key(k).key_group()) as usize];
        let count = ValueStateDescriptor::<u64>::new("count")
            .bind(s.keyed())
            .unwrap();
        let seen = ListStateDescriptor::<u64>::new("seen")
            .bind(s.keyed())
            .unwrap();
        (
            k,
            (
                count.get(&key(k)).unwrap().unwrap_or(0),
                seen.get(&key(k)).unwrap().unwrap_or_default(),
            ),
        )
    })
    .collect()
}

/// Checkpoint through the coordinator on `config`'s backend, write more, restore the
/// checkpoint at parallelism 1 and 3: exactly the checkpointed state, operator state dealt.
fn checkpoint_and_rescale(config: &str) {
    let rt = runtime();
    let job = Job::new(config, 2);
    let mut coordinator = job.coordinator(&rt, Duration::from_secs(60));
    job.write(0..500, 1);
    let id = coordinator.trigger();
    let mut outcomes = Vec::new();
    for ack in job.acks(&rt, id) {
        outcomes.extend(rt.block_on(coordinator.acknowledge(ack)).unwrap());
    }
    let [Outcome::Completed(done)] = outcomes.as_slice() else {
        panic!("{config}: expected one completion, got {outcomes:?}");
    };
    assert!(
        done.bytes_uploaded > 0 && done.bytes_reused == 0,
        "{done:?}"
    );
    for s in &job.subtasks {
        s.notify(CheckpointNotice::Completed(id)).unwrap();
    }
    let expected = read_all(&job.subtasks, 0..500);
    job.write(0..500, 2); // after the checkpoint: must not be restored

    let manifest = coordinator.latest().unwrap().clone();
    assert_eq!(manifest.checkpoint_id, id);
    for parallelism in [1, 3] {
        let p = Parallelism::new(parallelism).unwrap();
        let restored: Vec<Subtask> = (0..parallelism)
            .map(|i| {
                rt.block_on(restore_subtask(
                    job.factory.as_ref(),
                    &job.storage,
                    &manifest,
                    p,
                    i,
                ))
                .unwrap()
            })
            .collect();
        assert_eq!(
            read_all(&restored, 0..500),
            expected,
            "{config} at {parallelism}"
        );
        let mut offsets: Vec<u64> = restored
            .iter()
            .flat_map(|s| {
                s.operator
                    .list_state::<u64>("offsets", flowstate_api::Redistribution::EvenSplit)
                    .unwrap()
                    .get()
                    .unwrap()
            })
            .collect();
        offsets.sort();
        assert_eq!(
            offsets,
            vec![1, 1001],
            "{config}: operator state dealt out once"
        );
        assert_eq!(restored[0].backend_name(), job.factory.name());
    }
}

#[test]
fn heap_from_config_checkpoints_and_rescales() {
    checkpoint_and_rescale("heap");
}

#[test]
fn lmdb_from_config_checkpoints_and_rescales() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint_and_rescale(&format!("lmdb:dir={},map-size=8MiB", dir.path().display()));
}

#[test]
fn rocksdb_from_config_checkpoints_and_rescales() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint_and_rescale(&format!(
        "rocksdb:dir={},memory=64MiB",
        dir.path().display()
    ));
}

#[test]
fn a_declined_checkpoint_is_aborted_and_leaves_nothing_visible() {
    let rt = runtime();
    let job = Job::new("heap", 2);
    let mut coordinator = job.coordinator(&rt, Duration::from_secs(60));
    job.write(0..50, 1);
    let id = coordinator.trigger();
    let acks = job.acks(&rt, id);
    assert!(rt
        .block_on(coordinator.acknowledge(acks[0].clone()))
        .unwrap()
        .is_empty());
    let outcomes = rt
        .block_on(coordinator.report(SubtaskReport::Declined {
            checkpoint_id: id,
            subtask_index: 1,
            reason: "disk full".into(),
        }))
        .unwrap();
    match outcomes.as_slice() {
        [Outcome::Aborted {
            id: aborted,
            reason,
        }] => {
            assert_eq!(*aborted, id);
            assert!(reason.contains("subtask 1 declined: disk full"), "{reason}");
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(outcomes[0].notice(), CheckpointNotice::Aborted(id));
    assert!(coordinator.latest().is_none());
    assert!(rt
        .block_on(job.storage.list_checkpoints())
        .unwrap()
        .is_empty());
    let own_files = rt
        .block_on(job.storage.list(&CheckpointStorage::checkpoint_dir(id)))
        .unwrap();
    assert!(own_files.is_empty(), "{own_files:?}");
    // The other subtask's ack arrives late: dropped, nothing published.
    assert!(rt
        .block_on(coordinator.acknowledge(acks[1].clone()))
        .unwrap()
        .is_empty());
    assert!(rt
        .block_on(job.storage.list_checkpoints())
        .unwrap()
        .is_empty());
}

#[test]
fn a_timed_out_checkpoint_is_aborted_and_its_late_acks_cleaned_up() {
    let rt = runtime();
    let job = Job::new("heap", 2);
    let mut coordinator = job.coordinator(&rt, Duration::from_millis(1));
    job.write(0..50, 1);
    let id = coordinator.trigger();
    std::thread::sleep(Duration::from_millis(5));
    let outcomes = rt.block_on(coordinator.abort_expired()).unwrap();
    assert!(matches!(outcomes.as_slice(), [Outcome::Aborted { id: a, .. }] if *a == id));
    // The uploads finish afterwards: their files are deleted, shared ones at the next sweep.
    for ack in job.acks(&rt, id) {
        assert!(rt
            .block_on(coordinator.acknowledge(ack))
            .unwrap()
            .is_empty());
    }
    let left = rt.block_on(job.storage.list("")).unwrap();
    let left: Vec<_> = left
        .iter()
        .filter(|(p, _)| p.starts_with("chk-") || p.starts_with("shared/"))
        .collect();
    assert!(left.is_empty(), "late acks left files behind: {left:?}");
}

#[test]
fn invalid_and_duplicate_acks_are_refused_without_harm() {
    let rt = runtime();
    let job = Job::new("heap", 2);
    let mut coordinator = job.coordinator(&rt, Duration::from_secs(60));
    job.write(0..50, 1);
    let id = coordinator.trigger();
    let acks = job.acks(&rt, id);

    let mut wrong_range = acks[0].clone();
    wrong_range.state.key_group_range = KeyGroupRange::new(0, 127).unwrap();
    let err = rt
        .block_on(coordinator.acknowledge(wrong_range))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidAck { .. }), "{err}");
    assert!(err.to_string().contains("owns [0, 63]"), "{err}");

    let mut out_of_job = acks[1].clone();
    out_of_job.state.subtask_index = 2;
    let err = rt
        .block_on(coordinator.acknowledge(out_of_job))
        .unwrap_err();
    assert!(err.to_string().contains("the job has 2 subtasks"), "{err}");

    let mut elsewhere = acks[0].clone();
    let operator_file = elsewhere
        .state
        .operator
        .as_mut()
        .expect("operator state written");
    operator_file.path = "chk-00000000000000000009/op-0.bin".into();
    let err = rt.block_on(coordinator.acknowledge(elsewhere)).unwrap_err();
    assert!(err.to_string().contains("is not under chk-"), "{err}");
    let mut escaping = acks[0].clone();
    escaping.state.operator.as_mut().unwrap().path =
        format!("{}/../shared/x", CheckpointStorage::checkpoint_dir(id));
    assert!(rt.block_on(coordinator.acknowledge(escaping)).is_err());

    let mut never_triggered = acks[0].clone();
    never_triggered.checkpoint_id = CheckpointId(99);
    let err = rt
        .block_on(coordinator.acknowledge(never_triggered))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownCheckpoint { .. }), "{err}");

    assert!(rt
        .block_on(coordinator.acknowledge(acks[0].clone()))
        .unwrap()
        .is_empty());
    // Redelivery of the same ack is harmless; another ack from the same subtask is not.
    assert!(rt
        .block_on(coordinator.acknowledge(acks[0].clone()))
        .unwrap()
        .is_empty());
    let mut changed = acks[0].clone();
    changed.sync_micros += 1;
    assert!(rt.block_on(coordinator.acknowledge(changed)).is_err());

    let outcomes = rt
        .block_on(coordinator.acknowledge(acks[1].clone()))
        .unwrap();
    assert!(
        matches!(outcomes.as_slice(), [Outcome::Completed(_)]),
        "{outcomes:?}"
    );
}

#[test]
fn completing_a_checkpoint_subsumes_older_pending_ones() {
    let rt = runtime();
    let job = Job::new("heap", 1);
    let mut coordinator = job.coordinator(&rt, Duration::from_secs(60));
    job.write(0..20, 1);
    let first = coordinator.trigger();
    let second = coordinator.trigger();
    let acks = job.acks(&rt, second);
    let outcomes = rt
        .block_on(coordinator.acknowledge(acks.into_iter().next().unwrap()))
        .unwrap();
    let notices: Vec<CheckpointNotice> = outcomes.iter().map(Outcome::notice).collect();
    assert_eq!(
        notices,
        vec![
            CheckpointNotice::Aborted(first),
            CheckpointNotice::Completed(second)
        ]
    );
    assert!(coordinator.pending().is_empty());
}

#[test]
fn reports_travel_as_json() {
    let rt = runtime();
    let job = Job::new("heap", 1);
    job.write(0..20, 1);
    let ack = job.acks(&rt, CheckpointId(1)).remove(0);
    let report = SubtaskReport::Acknowledged(ack);
    let text = serde_json::to_string(&report).unwrap();
    assert_eq!(
        serde_json::from_str::<SubtaskReport>(&text).unwrap(),
        report
    );
}

#[test]
fn a_reopened_coordinator_refuses_another_max_parallelism() {
    let rt = runtime();
    let job = Job::new("heap", 1);
    let mut coordinator = job.coordinator(&rt, Duration::from_secs(60));
    let id = coordinator.trigger();
    for ack in job.acks(&rt, id) {
        rt.block_on(coordinator.acknowledge(ack)).unwrap();
    }
    let other = CoordinatorConfig::new(
        MaxParallelism::new(256).unwrap(),
        Parallelism::new(1).unwrap(),
    );
    let err = rt
        .block_on(CheckpointCoordinator::open(job.storage.clone(), other))
        .err()
        .expect("max parallelism 256 on a job written at 128");
    assert!(err.to_string().contains("max parallelism"), "{err}");
}

#[test]
fn checkpoints_and_restores_are_measured() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = runtime();
        let job = Job::new("heap", 2);
        let mut coordinator = job.coordinator(&rt, Duration::from_secs(60));
        job.write(0..100, 1);
        let id = coordinator.trigger();
        for ack in job.acks(&rt, id) {
            rt.block_on(coordinator.acknowledge(ack)).unwrap();
        }
        let manifest = coordinator.latest().unwrap().clone();
        rt.block_on(restore_subtask(
            job.factory.as_ref(),
            &job.storage,
            &manifest,
            Parallelism::new(1).unwrap(),
            0,
        ))
        .unwrap();
    });
    let metrics: BTreeMap<String, usize> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let samples = match value {
                metrics_util::debugging::DebugValue::Histogram(v) => v.len(),
                metrics_util::debugging::DebugValue::Counter(c) => c as usize,
                metrics_util::debugging::DebugValue::Gauge(_) => 1,
            };
            (key.key().name().to_string(), samples)
        })
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            *m.entry(k).or_default() += v;
            m
        });
    use flowstate_runtime::metrics as m;
    assert_eq!(
        metrics.get(m::CHECKPOINT_SYNC_SECONDS),
        Some(&2),
        "{metrics:?}"
    );
    assert_eq!(
        metrics.get(m::CHECKPOINT_ASYNC_SECONDS),
        Some(&2),
        "{metrics:?}"
    );
    assert_eq!(
        metrics.get(m::CHECKPOINTS_COMPLETED),
        Some(&1),
        "{metrics:?}"
    );
    assert_eq!(metrics.get(m::RESTORE_SECONDS), Some(&1), "{metrics:?}");
    assert!(
        metrics
            .get(m::CHECKPOINT_BYTES_UPLOADED)
            .is_some_and(|b| *b > 0),
        "{metrics:?}"
    );
}

#[test]
fn an_ack_redelivered_after_publication_changes_nothing() {
    let rt = runtime();
    let job = Job::new("heap", 2);
    let mut coordinator = job.coordinator(&rt, Duration::from_secs(60));
    job.write(0..100, 1);
    let id = coordinator.trigger();
    let acks = job.acks(&rt, id);
    for ack in &acks {
        rt.block_on(coordinator.acknowledge(ack.clone())).unwrap();
    }
    let before = rt.block_on(job.storage.list("")).unwrap();
    // A transport that delivers twice: every ack again, after the checkpoint was published.
    for ack in acks {
        assert!(rt
            .block_on(coordinator.acknowledge(ack))
            .unwrap()
            .is_empty());
    }
    assert_eq!(rt.block_on(job.storage.list("")).unwrap(), before);
    let manifest = coordinator.latest().unwrap().clone();
    let restored = rt
        .block_on(restore_subtask(
            job.factory.as_ref(),
            &job.storage,
            &manifest,
            Parallelism::new(1).unwrap(),
            0,
        ))
        .unwrap();
    assert_eq!(
        read_all(std::slice::from_ref(&restored), 0..100),
        read_all(&job.subtasks, 0..100)
    );
}

#[test]
fn a_coordinator_fenced_off_by_a_newer_one_publishes_nothing() {
    let rt = runtime();
    let job = Job::new("heap", 2);
    let mut old = job.coordinator(&rt, Duration::from_secs(60));
    job.write(0..50, 1);
    let id = old.trigger();
    let acks = job.acks(&rt, id);
    // A failover: a newer coordinator opens the same storage while `old` still runs.
    let newer = job.coordinator(&rt, Duration::from_secs(60));
    rt.block_on(old.acknowledge(acks[0].clone())).unwrap();
    let err = rt.block_on(old.acknowledge(acks[1].clone())).unwrap_err();
    assert!(
        matches!(err, Error::State(flowstate_api::Error::Fenced { .. })),
        "{err}"
    );
    assert!(rt
        .block_on(job.storage.list_checkpoints())
        .unwrap()
        .is_empty());
    assert!(newer.latest().is_none());
}
