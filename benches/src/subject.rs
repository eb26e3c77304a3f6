//! The flowstate side of every workload family: a backend under test, shared by a store and
//! its forks (one per thread), and the layer of flowstate the calls go through.

use std::sync::Arc;

use flowstate_api::typed::SharedBackend;

use crate::error::{BenchError, Result};
use crate::workload::Workload;

/// Which layer of flowstate a store drives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// The typed state handles (`ValueState<u64>`, `ListState<u64>`, ...) with a precomputed
    /// `KeyContext`: what an engine calls.
    Typed,
    /// `KeyedStateBackend`'s byte methods (the typed layer minus its codec calls).
    Bytes,
}

/// Work a backend needs after a batch of writes or after a preload.
pub type Hook = Box<dyn Fn() -> Result<()> + Send + Sync>;

/// A flowstate backend ready for a workload, with what the harness must do around writes.
pub struct BackendUnderTest {
    /// `heap`, `rocksdb` or `lmdb`.
    pub name: &'static str,
    pub backend: SharedBackend,
    /// Runs after every measured batch of writes: the LMDB backend flushes its write buffer,
    /// as raw LMDB commits its transaction.
    pub after_writes: Option<Hook>,
    /// Runs once after a preload: RocksDB flushes and compacts (as its baseline does), LMDB
    /// flushes.
    pub settle: Option<Hook>,
    /// Directories and factories the backend lives in, dropped after it (declared last).
    pub keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for BackendUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendUnderTest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn run_hook(hook: &Option<Hook>) -> Result<()> {
    match hook {
        Some(f) => f(),
        None => Ok(()),
    }
}

/// What every flowstate store holds besides its state handle: the backend under test (shared
/// with the store's forks; the last one drops it, then its directories), the workload, and
/// the layer. Stores declare it after their state handles, so handles go first.
#[derive(Clone)]
pub struct Subject {
    under_test: Arc<BackendUnderTest>,
    workload: Arc<Workload>,
    layer: Layer,
    name: String,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("name", &self.name)
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// The typed layer of `under_test`.
    pub fn new(under_test: BackendUnderTest, workload: Arc<Workload>) -> Self {
        let mut this = Self {
            under_test: Arc::new(under_test),
            workload,
            layer: Layer::Typed,
            name: String::new(),
        };
        this.set_layer(Layer::Typed);
        this
    }

    /// Switches the layer the next operations go through (and the reported name).
    pub fn set_layer(&mut self, layer: Layer) {
        let backend = self.under_test.name;
        self.name = match layer {
            Layer::Typed => format!("flowstate_{backend}_typed"),
            Layer::Bytes => format!("flowstate_{backend}_bytes"),
        };
        self.layer = layer;
    }

    #[inline]
    pub fn layer(&self) -> Layer {
        self.layer
    }

    /// `flowstate_<backend>_<layer>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `heap`, `rocksdb` or `lmdb`.
    pub fn backend_name(&self) -> &'static str {
        self.under_test.name
    }

    #[inline]
    pub fn backend(&self) -> &SharedBackend {
        &self.under_test.backend
    }

    #[inline]
    pub fn workload(&self) -> &Arc<Workload> {
        &self.workload
    }

    /// Brings the backend to its settled shape after a preload (see [`BackendUnderTest`]).
    pub fn settle(&self) -> Result<()> {
        run_hook(&self.under_test.settle)
    }

    /// Ends a batch of writes (see [`BackendUnderTest::after_writes`]).
    pub fn finish_writes(&self) -> Result<()> {
        run_hook(&self.under_test.after_writes)
    }

    /// The error of a read that found nothing under workload key `index`.
    pub fn missing(&self, index: usize) -> BenchError {
        BenchError::MissingKey {
            subject: self.name.clone(),
            index,
        }
    }
}
