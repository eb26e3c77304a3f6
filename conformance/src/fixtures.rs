//! Small building blocks shared by the cases: keys and their contexts, a deterministic random
//! source, backends over a chosen range, an object store that counts what is read, and one
//! that fails the k-th call of chosen operations ([`FaultyStore`]).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use flowstate_api::key_groups::{key_group_for_key_bytes, key_group_range_for_operator};
use flowstate_api::{
    Codec, KeyContext, KeyGroupRange, KeyedStateBackend, MaxParallelism, Parallelism, SerdeCodec,
    StateBackendFactory,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// The max parallelism most cases run at (Flink's default for small jobs).
pub const MAX_PARALLELISM: u32 = 128;

/// [`MAX_PARALLELISM`] as the API type.
pub fn max_parallelism() -> MaxParallelism {
    MaxParallelism::new(MAX_PARALLELISM).expect("128 is a valid max parallelism")
}

/// A parallelism the case knows to be valid.
pub fn parallelism(p: u32) -> Parallelism {
    Parallelism::new(p).expect("a valid parallelism")
}

/// The codec of the keys every case uses.
pub fn key_codec() -> SerdeCodec<u64> {
    SerdeCodec::new()
}

/// The context of key `k` at the default max parallelism.
pub fn key(k: u64) -> KeyContext {
    key_at(k, max_parallelism())
}

/// The context of key `k` at max parallelism `max`.
pub fn key_at(k: u64, max: MaxParallelism) -> KeyContext {
    KeyContext::for_key(&key_codec(), &k, max).expect("u64 keys always encode")
}

/// Decodes the key of a context returned by enumeration.
pub fn key_id(ctx: &KeyContext) -> u64 {
    ctx.decode_key(&key_codec())
        .expect("enumerated keys are keys the case wrote")
}

/// Turns an enumeration into a set of key ids, checking on the way that every context carries
/// the key group its bytes hash to, that the group lies in `range`, and that no key is
/// reported twice.
pub fn enumerated_ids(
    contexts: Vec<KeyContext>,
    max: MaxParallelism,
    range: KeyGroupRange,
    what: &str,
) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for ctx in contexts {
        let id = key_id(&ctx);
        assert_eq!(
            ctx.key_group(),
            key_group_for_key_bytes(ctx.key(), max),
            "{what}: key {id} was enumerated with the wrong key group"
        );
        assert!(
            range.contains(ctx.key_group()),
            "{what}: key {id} of key group {} was enumerated by a backend owning {range}",
            ctx.key_group()
        );
        assert!(ids.insert(id), "{what}: key {id} was enumerated twice");
    }
    ids
}

/// The first `count` keys (ascending from `from`) whose key group lies in `range`.
pub fn keys_in_range(
    range: KeyGroupRange,
    max: MaxParallelism,
    from: u64,
    count: usize,
) -> Vec<u64> {
    (from..)
        .filter(|k| range.contains(key_at(*k, max).key_group()))
        .take(count)
        .collect()
}

/// The first `count` keys (ascending from `from`) whose key group lies outside `range`.
pub fn keys_outside_range(
    range: KeyGroupRange,
    max: MaxParallelism,
    from: u64,
    count: usize,
) -> Vec<u64> {
    (from..)
        .filter(|k| !range.contains(key_at(*k, max).key_group()))
        .take(count)
        .collect()
}

/// The key-group range subtask `index` of `p` owns at the default max parallelism.
pub fn range_of(p: u32, index: u32) -> KeyGroupRange {
    key_group_range_for_operator(max_parallelism(), parallelism(p), index)
        .expect("a valid subtask index")
}

/// A fresh backend created by `factory` owning `range` at the default max parallelism.
pub fn backend_for<F: StateBackendFactory>(factory: &F, range: KeyGroupRange) -> Arc<F::Backend> {
    Arc::new(
        factory
            .create(max_parallelism(), range)
            .expect("the factory creates a backend"),
    )
}

/// A fresh backend owning every key group at the default max parallelism.
pub fn full_backend<F: StateBackendFactory>(factory: &F) -> Arc<F::Backend> {
    backend_for(factory, max_parallelism().full_range())
}

/// The backend as typed state handles take it.
pub fn shared<B: KeyedStateBackend + 'static>(backend: &Arc<B>) -> Arc<dyn KeyedStateBackend> {
    backend.clone()
}

/// Encodes `value` with the default codec (for raw-trait checks against typed writes).
pub fn encoded<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> Vec<u8> {
    SerdeCodec::<T>::new()
        .to_bytes(value)
        .expect("test values always encode")
}

/// SplitMix64: a tiny deterministic generator, so every run of a case sees the same data and
/// a failure reproduces.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// An [`ObjectStore`] that delegates to another and counts the bytes and requests of every
/// read (`get`, ranged `get`, `get_ranges`; `head` requests are not reads of content).
#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    bytes_read: AtomicU64,
    reads: AtomicU64,
}

impl<S: ObjectStore> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            bytes_read: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }
    /// Bytes of content returned since the last [`CountingStore::reset`].
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }
    /// Read requests since the last [`CountingStore::reset`].
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
    pub fn reset(&self) {
        self.bytes_read.store(0, Ordering::SeqCst);
        self.reads.store(0, Ordering::SeqCst);
    }
    fn count(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::SeqCst);
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

impl<S: ObjectStore> fmt::Display for CountingStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore({})", self.inner)
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for CountingStore<S> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            self.count(result.range.end - result.range.start);
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        let out = self.inner.get_ranges(location, ranges).await?;
        for part in &out {
            self.count(part.len() as u64);
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The calls of an object store a [`FaultyStore`] counts and fails. `Put` is a plain
/// overwrite (`put`, and multipart uploads when they start), `PutOpts` a put with other
/// options (create-only); `Get` a whole read, `GetRange` a ranged read (`get_range`,
/// `get_ranges`), `GetOpts` a read with preconditions or a version, `Head` metadata only;
/// `Delete` one path deleted; `List` a listing (with or without delimiter).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreOp {
    Put,
    PutOpts,
    Get,
    GetRange,
    GetOpts,
    Head,
    Delete,
    List,
}

impl StoreOp {
    /// Every operation.
    pub const ALL: [StoreOp; 8] = [
        StoreOp::Put,
        StoreOp::PutOpts,
        StoreOp::Get,
        StoreOp::GetRange,
        StoreOp::GetOpts,
        StoreOp::Head,
        StoreOp::Delete,
        StoreOp::List,
    ];
}

/// When an injected failure strikes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// The call fails without doing anything.
    Before,
    /// The call takes effect and then reports a failure (a lost response). Reads and
    /// listings have no effect, so for them it is `Before`.
    After,
}

#[derive(Debug, Default)]
struct FaultPlan {
    ops: Vec<StoreOp>,
    /// 1-based: the call of `ops` (counted since the plan was set) that fails.
    fail_at: Option<u64>,
    mode: Option<FaultMode>,
    calls: u64,
    injected: u64,
    /// Deletes that took effect and must still report a failure.
    fail_after_delete: HashSet<Path>,
}

/// An [`ObjectStore`] that delegates to another and fails the k-th call of a chosen set of
/// operations ([`FaultyStore::fail_nth`]), once. Run a scenario clean with
/// [`FaultyStore::count`] to learn how many calls it makes, then once for every k.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    plan: Arc<Mutex<FaultPlan>>,
}

fn lock(plan: &Mutex<FaultPlan>) -> MutexGuard<'_, FaultPlan> {
    plan.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FaultPlan {
    /// Counts a call of `op`; returns how it must fail, if it must.
    fn strike(&mut self, op: StoreOp) -> Option<FaultMode> {
        if !self.ops.contains(&op) {
            return None;
        }
        self.calls += 1;
        if self.fail_at == Some(self.calls) {
            self.injected += 1;
            return Some(self.mode.unwrap_or(FaultMode::Before));
        }
        None
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected failure of {what}").into(),
    }
}

impl<S: ObjectStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            plan: Arc::new(Mutex::new(FaultPlan::default())),
        }
    }

    /// From now on, counts the calls of `ops` and fails the `k`-th (1-based) in `mode`.
    pub fn fail_nth(&self, k: u64, ops: &[StoreOp], mode: FaultMode) {
        let mut plan = lock(&self.plan);
        *plan = FaultPlan {
            ops: ops.to_vec(),
            fail_at: Some(k),
            mode: Some(mode),
            ..FaultPlan::default()
        };
    }

    /// From now on, counts the calls of `ops` and fails none.
    pub fn count(&self, ops: &[StoreOp]) {
        let mut plan = lock(&self.plan);
        *plan = FaultPlan {
            ops: ops.to_vec(),
            ..FaultPlan::default()
        };
    }

    /// Stops failing (and counting).
    pub fn disarm(&self) {
        *lock(&self.plan) = FaultPlan::default();
    }

    /// Calls of the chosen operations since the plan was set.
    pub fn calls(&self) -> u64 {
        lock(&self.plan).calls
    }

    /// Failures injected since the plan was set (0 or 1).
    pub fn injected(&self) -> u64 {
        lock(&self.plan).injected
    }

    fn strike(&self, op: StoreOp) -> Option<FaultMode> {
        lock(&self.plan).strike(op)
    }
}

impl<S: ObjectStore> fmt::Display for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let op = if matches!(opts.mode, PutMode::Overwrite) {
            StoreOp::Put
        } else {
            StoreOp::PutOpts
        };
        match self.strike(op) {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(FaultMode::Before) => Err(injected(&format!("put {location}"))),
            Some(FaultMode::After) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected(&format!("put {location} (after it landed)")))
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if self.strike(StoreOp::Put).is_some() {
            return Err(injected(&format!("multipart put {location}")));
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head {
            StoreOp::Head
        } else if options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            StoreOp::GetOpts
        } else if options.range.is_some() {
            StoreOp::GetRange
        } else {
            StoreOp::Get
        };
        if self.strike(op).is_some() {
            return Err(injected(&format!("{op:?} {location}")));
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        if self.strike(StoreOp::GetRange).is_some() {
            return Err(injected(&format!("get_ranges {location}")));
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let before = self.plan.clone();
        let after = self.plan.clone();
        let requested = locations
            .map(move |location| {
                let location = location?;
                // One lock at a time: the plan's mutex is not reentrant.
                let strike = lock(&before).strike(StoreOp::Delete);
                match strike {
                    None => Ok(location),
                    Some(FaultMode::Before) => Err(injected(&format!("delete {location}"))),
                    Some(FaultMode::After) => {
                        lock(&before).fail_after_delete.insert(location.clone());
                        Ok(location)
                    }
                }
            })
            .boxed();
        self.inner
            .delete_stream(requested)
            .map(move |result| {
                let location = result?;
                if lock(&after).fail_after_delete.remove(&location) {
                    return Err(injected(&format!("delete {location} (after it happened)")));
                }
                Ok(location)
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.strike(StoreOp::List).is_some() {
            let what = format!("list {prefix:?}");
            return futures::stream::once(async move { Err(injected(&what)) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        if self.strike(StoreOp::List).is_some() {
            return Err(injected(&format!("list_with_delimiter {prefix:?}")));
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
