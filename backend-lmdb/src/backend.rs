//! [`LmdbBackend`]: keyed state in one LMDB environment, behind a write buffer: opening it,
//! and the operator's reads and writes (`KeyedStateBackend`). The transactions behind them are
//! in `env`, restores in `restore`, snapshots in `view`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use flowstate_api::changelog::ChangelogChain;
use flowstate_api::list_encoding;
use flowstate_api::state::{StateRegistry, StorageLayout};
use flowstate_api::{
    Error, KeyContext, KeyGroup, KeyGroupRange, KeyedStateBackend, MaxParallelism, Result, StateId,
    StateMetadata, StateRow,
};
use parking_lot::{Mutex, MutexGuard};
use tempfile::TempDir;

use crate::config::LmdbConfig;
use crate::env::{db_of, ensure_reader, layouts, Inner, LmdbStats, StateDb};
use crate::error::LmdbError;
use crate::key_layout::decode_key;
use crate::overlay::{read_merged, scan_merged, BufferValue, Db, Overlay, Pending, StoredVisitor};

/// Visits one map entry (user key, value); may stop the walk.
type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// Where the backend's LMDB files live.
enum WorkingDir {
    /// Removed when the backend is dropped.
    Owned(TempDir),
    /// Given by the caller, left in place.
    Borrowed(PathBuf),
}

impl WorkingDir {
    /// `dir`, created if missing.
    fn given(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(LmdbError::io(&dir))?;
        Ok(WorkingDir::Borrowed(dir))
    }

    /// A fresh directory under `base` (created if missing), removed with the backend.
    fn temporary(base: &Path) -> Result<Self> {
        std::fs::create_dir_all(base).map_err(LmdbError::io(base))?;
        let dir = tempfile::Builder::new()
            .prefix("lmdb-")
            .tempdir_in(base)
            .map_err(LmdbError::io(base))?;
        Ok(WorkingDir::Owned(dir))
    }

    fn path(&self) -> &Path {
        match self {
            WorkingDir::Owned(dir) => dir.path(),
            WorkingDir::Borrowed(path) => path,
        }
    }
}

/// The key one call of the operator reads or writes, and the layout the call needs.
#[derive(Clone, Copy)]
struct Access<'a> {
    state: StateId,
    key: &'a KeyContext,
    namespace: &'a [u8],
    /// A map entry's user key; empty for values, lists and whole maps.
    user_key: &'a [u8],
    /// `None`: any layout (`remove` clears every kind).
    layout: Option<StorageLayout>,
    operation: &'static str,
}

impl<'a> Access<'a> {
    /// A call on the `(key, namespace)` of `state`, which must have `layout` (any if `None`).
    fn new(
        state: StateId,
        key: &'a KeyContext,
        namespace: &'a [u8],
        layout: Option<StorageLayout>,
        operation: &'static str,
    ) -> Self {
        Self {
            state,
            key,
            namespace,
            user_key: &[],
            layout,
            operation,
        }
    }

    fn value(state: StateId, key: &'a KeyContext, ns: &'a [u8], operation: &'static str) -> Self {
        Self::new(state, key, ns, Some(StorageLayout::Value), operation)
    }

    fn list(state: StateId, key: &'a KeyContext, ns: &'a [u8], operation: &'static str) -> Self {
        Self::new(state, key, ns, Some(StorageLayout::List), operation)
    }

    /// A call on the map entry `user_key`, or on the whole map when `user_key` is empty.
    fn map(
        state: StateId,
        key: &'a KeyContext,
        ns: &'a [u8],
        user_key: &'a [u8],
        operation: &'static str,
    ) -> Self {
        let map = Self::new(state, key, ns, Some(StorageLayout::Map), operation);
        Self { user_key, ..map }
    }
}

/// A read's bytes, copied out.
fn copied(value: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
    Ok(value.map(<[u8]>::to_vec))
}

/// Keyed state in an LMDB environment (see the crate docs for the design).
///
/// All methods take `&self`; state access is serialized by one mutex (LMDB has one writer at a
/// time anyway), and snapshot views read their own MVCC read transaction without it.
pub struct LmdbBackend {
    pub(crate) max: MaxParallelism,
    pub(crate) range: KeyGroupRange,
    pub(crate) registry: StateRegistry,
    pub(crate) config: LmdbConfig,
    pub(crate) max_key_size: usize,
    /// Read transactions held by snapshot views: the map may only grow when this is zero.
    pub(crate) active_readers: Arc<AtomicUsize>,
    /// Bases and deltas of incremental checkpoints.
    pub(crate) chain: Arc<ChangelogChain>,
    pub(crate) inner: Mutex<Inner>,
    // Declared after `inner`: the environment closes before an owned directory is removed.
    dir: WorkingDir,
}

impl std::fmt::Debug for LmdbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbBackend")
            .field("dir", &self.dir.path())
            .field("max_parallelism", &self.max)
            .field("key_group_range", &self.range)
            .finish_non_exhaustive()
    }
}

impl LmdbBackend {
    /// Opens an empty backend in `dir` (created if missing; it must be empty). The directory
    /// is left in place when the backend is dropped.
    pub fn open(
        dir: impl Into<PathBuf>,
        max: MaxParallelism,
        range: KeyGroupRange,
        config: LmdbConfig,
    ) -> Result<Self> {
        Self::open_in(WorkingDir::given(dir.into())?, max, range, config)
    }

    /// Opens an empty backend in a fresh directory under `base_dir`, removed on drop.
    pub fn open_temporary(
        base_dir: impl AsRef<Path>,
        max: MaxParallelism,
        range: KeyGroupRange,
        config: LmdbConfig,
    ) -> Result<Self> {
        let dir = WorkingDir::temporary(base_dir.as_ref())?;
        Self::open_in(dir, max, range, config)
    }

    fn open_in(
        dir: WorkingDir,
        max: MaxParallelism,
        range: KeyGroupRange,
        config: LmdbConfig,
    ) -> Result<Self> {
        config.validate()?;
        if range.end().get() >= max.get() {
            return Err(Error::KeyGroupOutOfBounds {
                key_group: range.end().get(),
                max_parallelism: max.get(),
            });
        }
        let path = dir.path();
        if std::fs::read_dir(path)
            .map_err(LmdbError::io(path))?
            .next()
            .is_some()
        {
            return Err(LmdbError::DirectoryNotEmpty(path.to_path_buf()).into());
        }
        // SAFETY: the directory is empty, hence opened by no one else; the flags are
        // documented on `LmdbConfig::env_flags`.
        let env = unsafe { config.env_open_options().open(path) }
            .map_err(|e| LmdbError::heed("opening the LMDB environment", e))?;
        let max_key_size = env.max_key_size();
        let inner = Inner::new(env, config.track_changes);
        let chain = Arc::new(ChangelogChain::new(config.changelog.clone()));
        Ok(Self {
            max,
            range,
            registry: StateRegistry::new(),
            config,
            max_key_size,
            active_readers: Arc::new(AtomicUsize::new(0)),
            chain,
            inner: Mutex::new(inner),
            dir,
        })
    }

    /// The directory holding the LMDB files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration this backend was opened with.
    pub fn config(&self) -> &LmdbConfig {
        &self.config
    }

    /// Writes the write buffer to LMDB now (it is flushed on its own when full and at every
    /// snapshot).
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.flush(&self.config, &self.active_readers).map(drop)
    }

    /// What the backend did so far.
    pub fn stats(&self) -> LmdbStats {
        self.inner.lock().stats()
    }

    /// Entries of `state` committed to LMDB (the write buffer not included).
    pub fn committed_entries(&self, state: StateId) -> Result<u64> {
        let inner = self.inner.lock();
        let db = db_of(&inner.dbs, state)?.db;
        let txn = inner
            .env
            .read_txn()
            .map_err(|e| LmdbError::heed("opening a read transaction", e))?;
        db.len(&txn)
            .map_err(|e| LmdbError::heed("counting entries", e).into())
    }

    /// Distinct `(state, key, namespace)` changed since the last completed incremental
    /// checkpoint (what the next delta would carry).
    pub fn outstanding_changes(&self) -> Result<usize> {
        let inner = self.inner.lock();
        inner
            .changes
            .outstanding(&inner.overlay, layouts(&inner.dbs))
    }

    /// The chain of incremental checkpoints.
    pub fn changelog_chain(&self) -> &Arc<ChangelogChain> {
        &self.chain
    }

    pub(crate) fn check_owned(&self, key_group: KeyGroup) -> Result<()> {
        self.range.check_owns(key_group)
    }

    pub(crate) fn check_key_size(&self, len: usize) -> Result<()> {
        if len > self.max_key_size {
            Err(LmdbError::KeyTooLarge {
                len,
                max: self.max_key_size,
            }
            .into())
        } else {
            Ok(())
        }
    }

    /// The database of `state`, checking that `operation` suits its layout.
    pub(crate) fn state_db(
        &self,
        inner: &Inner,
        state: StateId,
        layout: Option<StorageLayout>,
        operation: &'static str,
    ) -> Result<StateDb> {
        let db = db_of(&inner.dbs, state)?;
        match layout {
            Some(wanted) if wanted != db.layout => Err(self.registry.unsupported(state, operation)),
            _ => Ok(db),
        }
    }

    /// Begins one call: checks the key group, locks the backend, finds the state's database
    /// (checking that the call suits it) and puts the stored key in `key_buf`.
    #[inline(always)] // on the path of every call: as if written out in each
    fn lock_at(&self, at: &Access<'_>) -> Result<(MutexGuard<'_, Inner>, StateDb)> {
        self.check_owned(at.key.key_group())?;
        let mut inner = self.inner.lock();
        let db = self.state_db(&inner, at.state, at.layout, at.operation)?;
        inner.set_key(at.key.key_group(), at.key.key(), at.namespace, at.user_key);
        Ok((inner, db))
    }

    /// Reads one key (value, list or map entry) with the write buffer applied and hands
    /// `read` the bytes, borrowed from LMDB's map or the buffer (under the backend mutex).
    #[inline]
    fn read_key<R>(
        &self,
        at: Access<'_>,
        read: &mut dyn FnMut(Option<&[u8]>) -> Result<R>,
    ) -> Result<R> {
        let (mut guard, db) = self.lock_at(&at)?;
        let inner = &mut *guard;
        let txn = ensure_reader(&mut inner.reader, &inner.env)?;
        let pending = inner.overlay.get(at.state, &inner.key_buf);
        let value = read_merged(txn, db.db, pending, &inner.key_buf, self.max_key_size)?;
        read(value.as_deref())
    }

    /// Buffers one write to one key (value, list or map entry).
    #[inline(always)] // on the path of every write: as if written out in each
    fn write_key(&self, at: Access<'_>, write: impl FnOnce(&mut Overlay, &[u8])) -> Result<()> {
        let (mut guard, _) = self.lock_at(&at)?;
        let inner = &mut *guard;
        self.check_key_size(inner.key_buf.len())?;
        write(&mut inner.overlay, &inner.key_buf);
        inner.maybe_flush(&self.config, &self.active_readers)
    }

    /// Buffers `value` as the new value of one key (value or map entry).
    #[inline]
    fn put_key(&self, at: Access<'_>, value: &[u8]) -> Result<()> {
        self.write_key(at, |overlay, k| {
            overlay.set(at.state, k, Pending::Put(BufferValue::from_slice(value)))
        })
    }

    /// Visits, in key order, the current entries of `state` (LMDB with the write buffer
    /// applied) whose stored key starts with `key_buf`.
    fn scan_key_buf(
        &self,
        inner: &mut Inner,
        state: StateId,
        db: Db,
        visit: &mut StoredVisitor<'_>,
    ) -> Result<()> {
        let txn = ensure_reader(&mut inner.reader, &inner.env)?;
        let buffered = inner.overlay.state(state);
        scan_merged(txn, db, buffered, &inner.key_buf, self.max_key_size, visit)
    }

    /// Visits the entries of one map with the write buffer applied.
    fn scan_map(&self, at: Access<'_>, visit: &mut EntryVisitor<'_>) -> Result<()> {
        let (mut guard, db) = self.lock_at(&at)?;
        let inner = &mut *guard;
        let prefix_len = inner.key_buf.len();
        // Every scanned key starts with the prefix.
        self.scan_key_buf(inner, at.state, db.db, &mut |stored, value| {
            Ok(visit(stored.get(prefix_len..).unwrap_or_default(), value))
        })
    }

    /// Buffers the removal of the `(key, namespace)` whose prefix is in `key_buf`: its value
    /// or list, or every entry of its map.
    pub(crate) fn clear_buffered(
        &self,
        inner: &mut Inner,
        state: StateId,
        db: StateDb,
    ) -> Result<()> {
        if db.layout != StorageLayout::Map {
            inner.overlay.set(state, &inner.key_buf, Pending::Delete);
            return Ok(());
        }
        let mut entries = Vec::new();
        self.scan_key_buf(inner, state, db.db, &mut |stored, _| {
            entries.push(stored.to_vec());
            Ok(ControlFlow::Continue(()))
        })?;
        for entry in entries {
            inner.overlay.set(state, &entry, Pending::Delete);
        }
        Ok(())
    }
}

impl KeyedStateBackend for LmdbBackend {
    fn max_parallelism(&self) -> MaxParallelism {
        self.max
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn register_state(&self, meta: &StateMetadata) -> Result<StateId> {
        // Under the mutex, so that databases are created in id order.
        let mut inner = self.inner.lock();
        let id = self.registry.register(meta)?.id();
        // Also creates databases a failed earlier registration left out.
        while inner.dbs.len() <= id.index() {
            let next = StateId(inner.dbs.len() as u32);
            let layout = self.registry.kind(next)?.layout();
            inner.create_database(&self.config, &self.active_readers, next, layout)?;
        }
        Ok(id)
    }

    fn registered_states(&self) -> Vec<(StateId, StateMetadata)> {
        self.registry.all()
    }

    fn get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_key(Access::value(state, key, namespace, "get"), &mut copied)
    }

    fn get_with(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        self.read_key(Access::value(state, key, namespace, "get"), read)
    }

    fn put(&self, state: StateId, key: &KeyContext, namespace: &[u8], value: &[u8]) -> Result<()> {
        self.put_key(Access::value(state, key, namespace, "put"), value)
    }

    fn remove(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<()> {
        let at = Access::new(state, key, namespace, None, "remove");
        let (mut guard, db) = self.lock_at(&at)?;
        let inner = &mut *guard;
        if inner.key_buf.len() > self.max_key_size {
            return Ok(()); // never written
        }
        self.clear_buffered(inner, state, db)?;
        inner.maybe_flush(&self.config, &self.active_readers)
    }

    fn list_get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        let at = Access::list(state, key, namespace, "list_get");
        self.read_key(at, &mut |bytes| {
            bytes.map_or_else(|| Ok(Vec::new()), list_encoding::decode)
        })
    }

    fn list_append(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        let at = Access::list(state, key, namespace, "list_append");
        if elements.is_empty() {
            // Still validate the call, but there is nothing to write.
            return self.lock_at(&at).map(drop);
        }
        let encoded = list_encoding::encode(elements.iter().copied());
        self.write_key(at, |overlay, k| overlay.append(state, k, &encoded))
    }

    fn list_replace(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        let pending = if elements.is_empty() {
            Pending::Delete
        } else {
            Pending::Put(BufferValue::from_vec(list_encoding::encode(
                elements.iter().copied(),
            )))
        };
        let at = Access::list(state, key, namespace, "list_replace");
        self.write_key(at, |overlay, k| overlay.set(state, k, pending))
    }

    fn map_get(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let at = Access::map(state, key, namespace, user_key, "map_get");
        self.read_key(at, &mut copied)
    }

    fn map_put(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.put_key(
            Access::map(state, key, namespace, user_key, "map_put"),
            value,
        )
    }

    fn map_remove(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<()> {
        let at = Access::map(state, key, namespace, user_key, "map_remove");
        self.write_key(at, |overlay, k| overlay.set(state, k, Pending::Delete))
    }

    fn map_entries(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let at = Access::map(state, key, namespace, &[], "map_entries");
        self.scan_map(at, &mut |user_key, value| {
            out.push((user_key.to_vec(), value.to_vec()));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    fn map_is_empty(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<bool> {
        let mut empty = true;
        let at = Access::map(state, key, namespace, &[], "map_is_empty");
        self.scan_map(at, &mut |_, _| {
            empty = false;
            ControlFlow::Break(())
        })?;
        Ok(empty)
    }

    fn keys(&self, state: StateId, namespace: &[u8]) -> Result<Vec<KeyContext>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let db = self.state_db(inner, state, None, "keys")?;
        inner.key_buf.clear(); // every stored key
        let mut out: Vec<KeyContext> = Vec::new();
        self.scan_key_buf(inner, state, db.db, &mut |stored, _| {
            let decoded = decode_key(stored)?;
            if decoded.namespace != namespace {
                return Ok(ControlFlow::Continue(()));
            }
            let group = KeyGroup::new(decoded.key_group, self.max)?;
            // The entries of one (key, namespace) are adjacent: compare with the last.
            let repeat = out
                .last()
                .is_some_and(|last| last.key_group() == group && last.key() == decoded.key);
            if !repeat {
                out.push(KeyContext::with_key_group(decoded.key.to_vec(), group));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    fn apply_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()> {
        self.restore_rows(key_group, rows)
    }
}
