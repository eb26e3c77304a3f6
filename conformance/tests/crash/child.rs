//! The child's side: the job, the store wrapper that kills the process at the crash point,
//! and the side file recording what each checkpoint captured.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowstate_api::lifecycle::RetentionPolicy;
use flowstate_api::{CheckpointStorage, SnapshotKind};
use flowstate_conformance::dataset::{Job, Model};
use flowstate_conformance::fixtures::{
    max_parallelism, open_lifecycle, parallelism, ForwardingStore, Intercept, Rng,
};
use flowstate_conformance::harness::{
    abort_with_lifecycle, checkpoint_with_lifecycle, create_operator,
};
use flowstate_heap::HeapBackendFactory;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload, PutResult};
use serde::{Deserialize, Serialize};

use crate::{
    Point, Scenario, ENV_DIR, ENV_SCENARIO, KEY_SPACE, MARKER, OPS_PER_STEP, POINTS, SEED,
};

#[derive(Clone, Copy, Debug)]
pub enum Step {
    Checkpoint(SnapshotKind),
    /// Uploaded (incremental), then aborted: its deletes are crash points too.
    Abort,
}

/// Full and incremental checkpoints (so retention deletes both exclusive and shared files)
/// and one abort.
pub const STEPS: [Step; 8] = [
    Step::Checkpoint(SnapshotKind::Incremental),
    Step::Checkpoint(SnapshotKind::Incremental),
    Step::Checkpoint(SnapshotKind::Full),
    Step::Checkpoint(SnapshotKind::Incremental),
    Step::Abort,
    Step::Checkpoint(SnapshotKind::Incremental),
    Step::Checkpoint(SnapshotKind::Full),
    Step::Checkpoint(SnapshotKind::Incremental),
];

/// The dataset model in a form JSON can hold (tuple keys become tuple entries).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelJson {
    value: Vec<(u64, u32, String)>,
    list: Vec<(u64, u32, Vec<u32>)>,
    map: Vec<(u64, u32, BTreeMap<String, u64>)>,
    reducing: Vec<(u64, u32, i64)>,
    aggregating: Vec<(u64, u32, (i64, u64))>,
    touched: BTreeSet<u64>,
}

fn flat<T: Clone>(m: &BTreeMap<(u64, u32), T>) -> Vec<(u64, u32, T)> {
    m.iter().map(|((k, n), v)| (*k, *n, v.clone())).collect()
}

fn nested<T>(v: Vec<(u64, u32, T)>) -> BTreeMap<(u64, u32), T> {
    v.into_iter().map(|(k, n, t)| ((k, n), t)).collect()
}

impl From<&Model> for ModelJson {
    fn from(m: &Model) -> Self {
        Self {
            value: flat(&m.value),
            list: flat(&m.list),
            map: flat(&m.map),
            reducing: flat(&m.reducing),
            aggregating: flat(&m.aggregating),
            touched: m.touched.clone(),
        }
    }
}

impl From<ModelJson> for Model {
    fn from(m: ModelJson) -> Self {
        Model {
            value: nested(m.value),
            list: nested(m.list),
            map: nested(m.map),
            reducing: nested(m.reducing),
            aggregating: nested(m.aggregating),
            touched: m.touched,
        }
    }
}

/// One line of the side file.
#[derive(Debug, Serialize, Deserialize)]
pub enum Record {
    /// Checkpoint `id` (or the aborted attempt) captures exactly `model`.
    Captured {
        id: u64,
        model: ModelJson,
    },
    Completed {
        id: u64,
    },
    /// The child is about to kill itself while working on checkpoint `checkpoint`, whose
    /// manifest had (`published`) or had not landed.
    Crash {
        point: String,
        k: usize,
        checkpoint: u64,
        published: bool,
        at: String,
    },
}

/// What the store wrapper shares with the job: counters, the crash point, the side file.
pub struct Hook {
    /// `None` in the parent's dry run, which only counts.
    pub scenario: Option<Scenario>,
    pub store_dir: PathBuf,
    pub side: Option<Mutex<std::fs::File>>,
    pub manifest_puts: AtomicUsize,
    pub deletes: AtomicUsize,
    pub current: AtomicU64,
    pub published: AtomicBool,
}

impl Hook {
    pub fn new(scenario: Option<Scenario>, store_dir: PathBuf, side: Option<&FsPath>) -> Self {
        let side = side.map(|p| {
            Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("side file"),
            )
        });
        Self {
            scenario,
            store_dir,
            side,
            manifest_puts: AtomicUsize::new(0),
            deletes: AtomicUsize::new(0),
            current: AtomicU64::new(0),
            published: AtomicBool::new(false),
        }
    }

    fn record(&self, record: &Record) {
        if let Some(side) = &self.side {
            let mut file = side.lock().expect("side file lock");
            let mut line = serde_json::to_vec(record).expect("records encode");
            line.push(b'\n');
            file.write_all(&line).expect("side file write");
            // The model must be on disk before anything the crash could leave behind.
            file.sync_all().expect("side file fsync");
        }
    }

    /// The crash point fires at this call (the `n`-th of its kind).
    fn fires(&self, n: usize, points: &[Point]) -> Option<Point> {
        self.scenario
            .filter(|s| s.k == n && points.contains(&s.point))
            .map(|s| s.point)
    }

    fn crash(&self, at: &str) -> ! {
        let scenario = self.scenario.expect("only a child with a scenario crashes");
        self.record(&Record::Crash {
            point: scenario.point.name().into(),
            k: scenario.k,
            checkpoint: self.current.load(Ordering::SeqCst),
            published: self.published.load(Ordering::SeqCst),
            at: at.into(),
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{MARKER} {} at {at}", scenario.encode());
        let _ = out.flush();
        // SIGKILL: no destructor, no flush, no unwinding; exactly what a crash leaves.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Writes `bytes` to `path` on disk directly (the crash's leftovers), durably.
    fn leave(&self, path: &FsPath, bytes: &[u8]) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("leftover dir");
        }
        let mut file = std::fs::File::create(path).expect("leftover file");
        file.write_all(bytes).expect("leftover write");
        file.sync_all().expect("leftover fsync");
    }
}

/// The crash points of [`Hook`] on manifest puts and deletes; every other call passes
/// through.
#[derive(Debug)]
struct CrashPoints {
    hook: Arc<Hook>,
}

/// The local-disk store of [`CheckpointStorage::local`] (fsync on), with the crash points of
/// [`Hook`] on manifest puts and deletes.
type CrashStore = ForwardingStore<Arc<dyn ObjectStore>, CrashPoints>;

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hook({:?})", self.scenario)
    }
}

#[async_trait]
impl Intercept for CrashPoints {
    const NAME: &'static str = "CrashStore";

    async fn put_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !location.as_ref().ends_with("_manifest.json") {
            return inner.put_opts(location, payload, opts).await;
        }
        let hook = &self.hook;
        let n = hook.manifest_puts.fetch_add(1, Ordering::SeqCst) + 1;
        let on_disk = hook.store_dir.join(location.as_ref());
        let staging = PathBuf::from(format!("{}#1", on_disk.display()));
        let bytes: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        // 0, 1/3 or 2/3 of the manifest, depending on k: empty and partial files both occur.
        let torn = |k: usize| &bytes[..bytes.len() * (k % 3) / 3];
        match hook.fires(n, &POINTS[..4]) {
            Some(Point::BeforeManifest) => hook.crash(&format!("manifest put {location}")),
            Some(Point::TornManifest) => {
                hook.leave(&staging, torn(n));
                hook.leave(&on_disk, torn(n));
                hook.crash(&format!("torn manifest {location}"))
            }
            Some(Point::StagedManifest) => {
                hook.leave(&staging, torn(n + 1));
                hook.crash(&format!("staged manifest {location}"))
            }
            Some(Point::AfterManifest) => {
                inner.put_opts(location, payload, opts).await?;
                hook.published.store(true, Ordering::SeqCst);
                hook.crash(&format!("after manifest {location}"))
            }
            _ => {}
        }
        let result = inner.put_opts(location, payload, opts).await?;
        hook.published.store(true, Ordering::SeqCst);
        Ok(result)
    }

    fn delete_stream(
        &self,
        inner: &dyn ObjectStore,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let hook = self.hook.clone();
        // The inner store pulls each location right before deleting it: the crash lands
        // between the previous delete and this one.
        let hooked = locations
            .map(move |location| {
                let n = hook.deletes.fetch_add(1, Ordering::SeqCst) + 1;
                if hook.fires(n, &[Point::MidRetention]).is_some() {
                    let what = location.as_ref().map_or("?".into(), |l| l.to_string());
                    hook.crash(&format!("delete {what}"));
                }
                location
            })
            .boxed();
        inner.delete_stream(hooked)
    }
}

/// The object store a job on local disk writes through: the production configuration.
pub fn local_store(store_dir: &FsPath) -> Arc<dyn ObjectStore> {
    CheckpointStorage::local(store_dir)
        .expect("local checkpoint storage")
        .object_store()
        .clone()
}

pub fn policy(retention: usize) -> RetentionPolicy {
    RetentionPolicy {
        retained_checkpoints: retention,
    }
}

/// The child's job (also the parent's dry run): [`STEPS`] over a two-subtask operator.
pub fn run_job(hook: Arc<Hook>, retention: usize) {
    let store: CrashStore = ForwardingStore::with(
        local_store(&hook.store_dir),
        CrashPoints { hook: hook.clone() },
    );
    let storage = CheckpointStorage::new(Arc::new(store), "");
    let mut lifecycle = open_lifecycle(&storage, retention);
    let subtasks = create_operator(
        &HeapBackendFactory::new(),
        max_parallelism(),
        parallelism(2),
    )
    .expect("create operator");
    let job = Job::new(subtasks).expect("bind the dataset");
    let mut model = Model::default();
    let mut rng = Rng::new(SEED);
    for step in STEPS {
        job.run_random(&mut model, &mut rng, OPS_PER_STEP, KEY_SPACE);
        let id = lifecycle.next_id().get();
        hook.current.store(id, Ordering::SeqCst);
        hook.published.store(false, Ordering::SeqCst);
        hook.record(&Record::Captured {
            id,
            model: (&model).into(),
        });
        match step {
            Step::Checkpoint(kind) => {
                let manifest = checkpoint_with_lifecycle(&job.subtasks, &mut lifecycle, kind)
                    .unwrap_or_else(|e| panic!("checkpoint {id} ({kind:?}) failed: {e}"));
                assert_eq!(manifest.checkpoint_id.get(), id);
                hook.record(&Record::Completed { id });
            }
            Step::Abort => {
                abort_with_lifecycle(&job.subtasks, &mut lifecycle, SnapshotKind::Incremental)
                    .unwrap_or_else(|e| panic!("aborted checkpoint {id} failed: {e}"));
            }
        }
    }
}

/// Run by the parent in a child process; does nothing when run by hand.
#[test]
#[ignore = "the child of crash_points_restore_the_newest_complete_checkpoint"]
fn crash_child() {
    let (Ok(spec), Ok(dir)) = (std::env::var(ENV_SCENARIO), std::env::var(ENV_DIR)) else {
        return;
    };
    let scenario = Scenario::decode(&spec).expect("a scenario the parent encoded");
    let dir = PathBuf::from(dir);
    let hook = Hook::new(
        Some(scenario),
        dir.join("store"),
        Some(&dir.join("model.jsonl")),
    );
    run_job(Arc::new(hook), scenario.retention);
    println!("FLOWSTATE-CRASH-NONE: the job finished without reaching {scenario}");
}
