//! Checkpoints of subtasks in the coordinator's process ([`flowstate_runtime::local`]): the
//! aligned checkpoint completes, is told to every subtask and restores; every failure on the
//! way declines it, so nothing of it stays visible or pending; a caller taking subtasks one at
//! a time gets the same verdict.

use std::cell::RefCell;

use flowstate_api::typed::ValueStateDescriptor;
use flowstate_api::{
    CheckpointId, CheckpointStorage, KeyContext, KeyedStateHandle, MaxParallelism, Parallelism,
    SerdeCodec, SnapshotKind,
};
use flowstate_runtime::{
    create_subtask, restore_subtask, BackendConfig, CapturedSubtask, CheckpointCoordinator,
    CheckpointNotice, CoordinatorConfig, DynStateBackendFactory, Error, LocalSubtask, Subtask,
};

fn max() -> MaxParallelism {
    MaxParallelism::new(128).unwrap()
}

fn two() -> Parallelism {
    Parallelism::new(2).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Job {
    factory: Box<dyn DynStateBackendFactory>,
    storage: CheckpointStorage,
    _dir: tempfile::TempDir,
    coordinator: CheckpointCoordinator,
    subtasks: Vec<Subtask>,
}

impl Job {
    fn new(rt: &tokio::runtime::Runtime) -> Self {
        let factory = "heap".parse::<BackendConfig>().unwrap().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::local(dir.path()).unwrap();
        let config = CoordinatorConfig::new(max(), two());
        let coordinator = rt
            .block_on(CheckpointCoordinator::open(storage.clone(), config))
            .unwrap();
        let subtasks = (0..2)
            .map(|i| create_subtask(factory.as_ref(), max(), two(), i).unwrap())
            .collect();
        Job {
            factory,
            storage,
            _dir: dir,
            coordinator,
            subtasks,
        }
    }

    /// Sets `count` of keys `0..100` to `value`, each in the subtask owning it.
    fn write(&self, value: u64) {
        for k in 0..100u64 {
            let key = key(k);
            let owner = flowstate_api::key_groups::operator_index_for_key_group(
                max(),
                two(),
                key.key_group(),
            );
            let count = ValueStateDescriptor::<u64>::new("count")
                .bind(self.subtasks[owner as usize].keyed())
                .unwrap();
            count.update(&key, &value).unwrap();
        }
    }
}

/// Files under checkpoint `id`'s own directory and under `shared/`.
fn files_of(storage: &CheckpointStorage, rt: &tokio::runtime::Runtime, id: CheckpointId) -> usize {
    let own = rt
        .block_on(storage.list(&CheckpointStorage::checkpoint_dir(id)))
        .unwrap();
    let shared = rt.block_on(storage.list("shared")).unwrap();
    own.len() + shared.len()
}

fn key(k: u64) -> KeyContext {
    KeyContext::for_key(&SerdeCodec::<u64>::new(), &k, max()).unwrap()
}

/// A subtask that records the notices it is told, and whose capture can be made to fail.
struct Recording {
    inner: Subtask,
    fail_capture: bool,
    notices: RefCell<Vec<CheckpointNotice>>,
}

impl Recording {
    fn wrap(subtasks: Vec<Subtask>, failing: Option<u32>) -> Vec<Recording> {
        subtasks
            .into_iter()
            .map(|inner| Recording {
                fail_capture: Some(inner.index) == failing,
                inner,
                notices: RefCell::new(Vec::new()),
            })
            .collect()
    }
}

impl LocalSubtask for Recording {
    fn index(&self) -> u32 {
        self.inner.index
    }

    fn capture(
        &self,
        id: CheckpointId,
        kind: SnapshotKind,
    ) -> flowstate_api::Result<CapturedSubtask> {
        if self.fail_capture {
            return Err(flowstate_api::Error::Config("the disk is on fire".into()));
        }
        self.inner.capture(id, kind)
    }

    fn notify(&self, notice: CheckpointNotice) -> flowstate_api::Result<()> {
        self.notices.borrow_mut().push(notice);
        self.inner.notify(notice)
    }
}

#[test]
fn an_aligned_checkpoint_completes_is_told_to_every_subtask_and_restores() {
    let rt = runtime();
    let mut job = Job::new(&rt);
    job.write(7);
    let subtasks = Recording::wrap(std::mem::take(&mut job.subtasks), None);
    let first = rt
        .block_on(
            job.coordinator
                .checkpoint_subtasks(&subtasks, SnapshotKind::Incremental),
        )
        .unwrap();
    let id = first.manifest.checkpoint_id;
    assert_eq!(job.coordinator.latest().map(|m| m.checkpoint_id), Some(id));
    assert!(job.coordinator.pending().is_empty());
    assert_eq!(first.manifest.subtasks.len(), 2);
    for s in &subtasks {
        assert_eq!(*s.notices.borrow(), [CheckpointNotice::Completed(id)]);
    }

    // Told of the completion, the backends build the next incremental checkpoint on it.
    let second = rt
        .block_on(
            job.coordinator
                .checkpoint_subtasks(&subtasks, SnapshotKind::Incremental),
        )
        .unwrap();
    assert!(second.bytes_reused > 0, "{second:?}");

    // Restored at parallelism 3, the state is the checkpointed one.
    let three = Parallelism::new(3).unwrap();
    let count = rt
        .block_on(restore_subtask(
            job.factory.as_ref(),
            &job.storage,
            &first.manifest,
            three,
            flowstate_api::key_groups::operator_index_for_key_group(
                max(),
                three,
                key(5).key_group(),
            ),
        ))
        .unwrap();
    let value = ValueStateDescriptor::<u64>::new("count")
        .bind(count.keyed())
        .unwrap();
    assert_eq!(value.get(&key(5)).unwrap(), Some(7));
}

#[test]
fn a_failed_capture_declines_the_checkpoint_and_tells_every_subtask() {
    let rt = runtime();
    let mut job = Job::new(&rt);
    job.write(1);
    let subtasks = Recording::wrap(std::mem::take(&mut job.subtasks), Some(1));
    let id = job.coordinator.next_id();
    let error = rt
        .block_on(
            job.coordinator
                .checkpoint_subtasks(&subtasks, SnapshotKind::Full),
        )
        .unwrap_err();
    assert!(error.to_string().contains("the disk is on fire"), "{error}");
    assert!(job.coordinator.latest().is_none());
    assert!(
        job.coordinator.pending().is_empty(),
        "declined, not left to time out"
    );
    for s in &subtasks {
        assert_eq!(*s.notices.borrow(), [CheckpointNotice::Aborted(id)]);
    }
    assert_eq!(files_of(&job.storage, &rt, id), 0);
}

#[test]
fn a_checkpoint_missing_subtasks_is_not_completed() {
    let rt = runtime();
    let mut job = Job::new(&rt);
    job.write(1);
    let mut checkpoint = job.coordinator.begin_local();
    rt.block_on(checkpoint.take(&job.subtasks[..1], SnapshotKind::Full))
        .unwrap();
    match rt.block_on(checkpoint.finish(&job.subtasks)) {
        Err(Error::NotCompleted { id, reason }) => {
            assert!(reason.contains("1 of 2 subtasks"), "{reason}");
            assert!(
                job.coordinator.pending().is_empty(),
                "checkpoint {id} must be declined, not left pending"
            );
        }
        other => panic!("expected NotCompleted, got {other:?}"),
    }
    assert!(job.coordinator.latest().is_none());
}

/// As a tool rewriting a checkpoint does: each subtask captured, uploaded and checked by the
/// caller, acknowledged, and dropped before the next; then one declined.
#[test]
fn subtasks_taken_one_at_a_time_complete_and_a_decline_aborts() {
    let rt = runtime();
    let mut job = Job::new(&rt);
    job.write(3);
    let subtasks = std::mem::take(&mut job.subtasks);
    let mut checkpoint = job.coordinator.begin_local();
    for s in &subtasks {
        let captured = s.capture(checkpoint.id(), SnapshotKind::Full).unwrap();
        let ack = rt.block_on(captured.upload(job.storage.clone())).unwrap();
        assert!(matches!(
            ack.state.keyed,
            Some(KeyedStateHandle::Canonical { .. })
        ));
        rt.block_on(checkpoint.acknowledge(ack)).unwrap();
    }
    let completed = rt.block_on(checkpoint.finish::<Subtask>(&[])).unwrap();
    assert_eq!(
        job.coordinator.latest().map(|m| m.checkpoint_id),
        Some(completed.manifest.checkpoint_id)
    );

    let mut checkpoint = job.coordinator.begin_local();
    let id = checkpoint.id();
    rt.block_on(checkpoint.take(&subtasks[..1], SnapshotKind::Full))
        .unwrap();
    assert!(files_of(&job.storage, &rt, id) > 0);
    rt.block_on(checkpoint.decline(1, "its source is gone"))
        .unwrap();
    assert!(job.coordinator.pending().is_empty());
    assert_eq!(
        job.coordinator.latest().map(|m| m.checkpoint_id),
        Some(completed.manifest.checkpoint_id)
    );
    assert_eq!(
        files_of(&job.storage, &rt, id),
        0,
        "the declined checkpoint's files are deleted"
    );
}
