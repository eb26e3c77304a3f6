//! [`LmdbBackend`]: keyed state in one LMDB environment, behind a write buffer.

use std::convert::Infallible;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowstate_api::changelog::ChangelogChain;
use flowstate_api::list_encoding;
use flowstate_api::state::{StateRegistry, StorageLayout};
use flowstate_api::{
    Error, KeyContext, KeyGroup, KeyGroupRange, KeyedStateBackend, MaxParallelism, Result,
    RowValue, StateId, StateMetadata, StateRow,
};
use heed::types::Bytes;
use heed::{CommitOrAbort, Env, RoTxn, RwTxn, WithoutTls};
use parking_lot::Mutex;
use tempfile::TempDir;

use crate::changes::ChangeTracker;
use crate::config::{round_map_size, LmdbConfig};
use crate::error::{is_map_full, LmdbError};
use crate::keys::{self, decode_key, prefix_successor};
use crate::overlay::{read_merged, scan_merged, BufferValue, Db, Overlay, Pending};

/// Visits one map entry (user key, value); may stop the walk.
type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// The database of one registered state and how it stores values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StateDb {
    pub(crate) db: Db,
    pub(crate) layout: StorageLayout,
}

/// Counters of what the backend did, for tests, diagnostics and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LmdbStats {
    /// Current size of the LMDB memory map in bytes.
    pub map_size: usize,
    /// Entries waiting in the write buffer.
    pub buffered_entries: usize,
    /// Approximate bytes held by the write buffer.
    pub buffered_bytes: usize,
    /// Write transactions committed (buffer flushes and restore batches).
    pub commits: u64,
    /// Times the map was grown after LMDB reported it full.
    pub map_resizes: u64,
    /// Flushes postponed because the map was full while snapshots pinned read transactions
    /// (the map can only grow when no transaction is open).
    pub deferred_flushes: u64,
}

/// Whether a write transaction made it to LMDB.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    Committed,
    /// The map is full and cannot grow while snapshot read transactions are open: nothing was
    /// written; the caller keeps its data and tries again later.
    Deferred,
}

/// Everything behind the backend's mutex.
pub(crate) struct Inner {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) dbs: Vec<StateDb>,
    /// A read transaction on the latest commit, reused by reads until the next commit.
    reader: Option<RoTxn<'static, WithoutTls>>,
    pub(crate) overlay: Overlay,
    pub(crate) changes: ChangeTracker,
    map_size: usize,
    /// A flush hit a full map while snapshots were open: don't retry until they are gone.
    flush_deferred: bool,
    key_buf: Vec<u8>,
    stats: LmdbStats,
}

/// The reader for reads of the operator, opened on first use after each commit.
fn ensure_reader<'a>(
    reader: &'a mut Option<RoTxn<'static, WithoutTls>>,
    env: &Env<WithoutTls>,
) -> Result<&'a RoTxn<'static, WithoutTls>> {
    Ok(match reader {
        Some(txn) => txn,
        None => reader.insert(
            env.clone()
                .static_read_txn()
                .map_err(|e| LmdbError::heed("opening a read transaction", e))?,
        ),
    })
}

impl Inner {
    /// Runs `write` in a write transaction and commits it. On "map full" it grows the map and
    /// retries, unless read transactions of snapshots are open (growing the map requires that
    /// none is): then it returns [`WriteOutcome::Deferred`] having written nothing.
    fn write_with_growth(
        &mut self,
        config: &LmdbConfig,
        active_readers: &AtomicUsize,
        context: &'static str,
        write: &mut dyn FnMut(&mut RwTxn<'_>, &[StateDb]) -> heed::Result<()>,
    ) -> Result<WriteOutcome> {
        // Our own reader would pin the old version and block a resize: let it go.
        self.reader = None;
        loop {
            let mut wtxn = self
                .env
                .write_txn()
                .map_err(|e| LmdbError::heed("opening a write transaction", e))?;
            let result = match write(&mut wtxn, &self.dbs) {
                Ok(()) => wtxn.commit(),
                Err(e) => {
                    wtxn.abort();
                    Err(e)
                }
            };
            match result {
                Ok(()) => {
                    self.stats.commits += 1;
                    return Ok(WriteOutcome::Committed);
                }
                Err(e) if is_map_full(&e) => {
                    // Checked under the backend mutex, which snapshots also hold while they
                    // open their read transaction: no new one can appear before the resize.
                    if active_readers.load(Ordering::SeqCst) > 0 {
                        self.flush_deferred = true;
                        self.stats.deferred_flushes += 1;
                        return Ok(WriteOutcome::Deferred);
                    }
                    self.grow_map(config)?;
                }
                Err(e) => return Err(LmdbError::heed(context, e).into()),
            }
        }
    }

    /// Doubles the map (capped by `max_map_size`). Call only when no transaction is open.
    fn grow_map(&mut self, config: &LmdbConfig) -> Result<()> {
        let wanted = round_map_size(self.map_size.saturating_mul(2));
        let new_size = match config.max_map_size {
            Some(max) => wanted.min(round_map_size(max)),
            None => wanted,
        };
        if new_size <= self.map_size {
            return Err(LmdbError::MapLimit {
                size: self.map_size,
                max: config.max_map_size.unwrap_or(self.map_size),
            }
            .into());
        }
        // SAFETY: LMDB requires that no transaction of this process is open. The backend's
        // reader was dropped, the failed write transaction is gone, and the caller checked
        // (under the mutex that every new read transaction is opened under) that no snapshot
        // holds one.
        unsafe { self.env.resize(new_size) }
            .map_err(|e| LmdbError::heed("growing the LMDB map", e))?;
        tracing::debug!(from = self.map_size, to = new_size, "grew LMDB map");
        self.map_size = new_size;
        self.stats.map_resizes += 1;
        Ok(())
    }

    /// Writes the whole write buffer to LMDB: one transaction, or several when the buffer
    /// outgrew [`LmdbConfig::transaction_bytes`] while a flush was postponed. On
    /// [`WriteOutcome::Deferred`] or an error, what was not committed stays buffered.
    pub(crate) fn flush(
        &mut self,
        config: &LmdbConfig,
        active_readers: &AtomicUsize,
    ) -> Result<WriteOutcome> {
        while !self.overlay.is_empty() {
            let batch = self.overlay.split_front(config.transaction_bytes());
            let changes = match self.changes.prepare(&batch, layouts(&self.dbs)) {
                Ok(changes) => changes,
                Err(e) => {
                    self.overlay.merge_back(batch);
                    return Err(e);
                }
            };
            let outcome = self.write_with_growth(
                config,
                active_readers,
                "flushing the write buffer",
                &mut |wtxn, dbs| write_overlay(wtxn, dbs, &batch),
            );
            match outcome {
                Ok(WriteOutcome::Committed) => self.changes.record(changes),
                other => {
                    self.overlay.merge_back(batch);
                    return other;
                }
            }
        }
        self.flush_deferred = false;
        Ok(WriteOutcome::Committed)
    }

    fn maybe_flush(&mut self, config: &LmdbConfig, active_readers: &AtomicUsize) -> Result<()> {
        if self.overlay.entries() < config.write_buffer_entries
            && self.overlay.bytes() < config.write_buffer_bytes
        {
            return Ok(());
        }
        if self.flush_deferred && active_readers.load(Ordering::SeqCst) > 0 {
            // Still full and still pinned: writing again would fail the same way.
            return Ok(());
        }
        self.flush(config, active_readers).map(drop)
    }

    fn create_database(
        &mut self,
        config: &LmdbConfig,
        active_readers: &AtomicUsize,
        id: StateId,
        layout: StorageLayout,
    ) -> Result<()> {
        // A read transaction begun before the database existed cannot see it.
        self.reader = None;
        let name = database_name(id);
        loop {
            let wtxn = self
                .env
                .write_txn()
                .map_err(|e| LmdbError::heed("opening a write transaction", e))?;
            let created = self.env.create_databases_and_commit(wtxn, |opener, wtxn| {
                opener
                    .database_options()
                    .types::<Bytes, Bytes>()
                    .name(&name)
                    .create(wtxn)
                    .map(CommitOrAbort::<_, Infallible>::Commit)
            });
            match created {
                Ok(CommitOrAbort::Commit(db)) => {
                    self.dbs.push(StateDb { db, layout });
                    self.stats.commits += 1;
                    return Ok(());
                }
                Ok(CommitOrAbort::Abort(never)) => match never {},
                Err(heed::Error::Mdb(heed::MdbError::DbsFull)) => {
                    return Err(LmdbError::TooManyStates {
                        max: config.max_states,
                    }
                    .into())
                }
                Err(e) if is_map_full(&e) => {
                    if active_readers.load(Ordering::SeqCst) > 0 {
                        return Err(LmdbError::MapFullWhileSnapshotting.into());
                    }
                    self.grow_map(config)?;
                }
                Err(e) => return Err(LmdbError::heed("creating a state's database", e).into()),
            }
        }
    }
}

/// The layout of each state with a database, by state index (what change tracking needs to
/// find a map entry's `(key, namespace)` prefix).
pub(crate) fn layouts(dbs: &[StateDb]) -> impl Fn(usize) -> Option<StorageLayout> + '_ {
    |index| dbs.get(index).map(|db| db.layout)
}

/// The name of the LMDB database holding state `id` (databases use LMDB's default flags and
/// byte-wise key order).
pub fn database_name(id: StateId) -> String {
    format!("state-{}", id.0)
}

/// Applies every buffered write; appends read the stored list inside the transaction.
fn write_overlay(wtxn: &mut RwTxn<'_>, dbs: &[StateDb], overlay: &Overlay) -> heed::Result<()> {
    for (index, writes) in overlay.states() {
        // Buffered writes exist only for states whose database was created.
        let Some(state) = dbs.get(index) else {
            continue;
        };
        for (key, pending) in writes {
            match pending {
                Pending::Put(value) => state.db.put(wtxn, key, value)?,
                Pending::Delete => {
                    state.db.delete(wtxn, key)?;
                }
                Pending::Append(tail) => {
                    let mut whole = state
                        .db
                        .get(wtxn, key)?
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default();
                    whole.extend_from_slice(tail);
                    state.db.put(wtxn, key, &whole)?;
                }
            }
        }
    }
    Ok(())
}

/// Approximate bytes a restore row writes.
fn row_size(row: &StateRow<'_>) -> usize {
    let payload = match row.value {
        RowValue::Value(v) | RowValue::List(v) => v.len(),
        RowValue::MapEntry { user_key, value } => user_key.len() + value.len(),
        RowValue::Tombstone => 0,
    };
    row.key.len() + row.namespace.len() + payload + 16
}

/// Where the backend's LMDB files live.
enum WorkingDir {
    /// Removed when the backend is dropped.
    Owned(TempDir),
    /// Given by the caller, left in place.
    Borrowed(PathBuf),
}

impl WorkingDir {
    fn path(&self) -> &Path {
        match self {
            WorkingDir::Owned(dir) => dir.path(),
            WorkingDir::Borrowed(path) => path,
        }
    }
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
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| LmdbError::Io {
            path: dir.clone(),
            source,
        })?;
        Self::open_in(WorkingDir::Borrowed(dir), max, range, config)
    }

    /// Opens an empty backend in a fresh directory under `base_dir`, removed on drop.
    pub fn open_temporary(
        base_dir: impl AsRef<Path>,
        max: MaxParallelism,
        range: KeyGroupRange,
        config: LmdbConfig,
    ) -> Result<Self> {
        let base = base_dir.as_ref();
        std::fs::create_dir_all(base).map_err(|source| LmdbError::Io {
            path: base.to_path_buf(),
            source,
        })?;
        let dir = tempfile::Builder::new()
            .prefix("lmdb-")
            .tempdir_in(base)
            .map_err(|source| LmdbError::Io {
                path: base.to_path_buf(),
                source,
            })?;
        Self::open_in(WorkingDir::Owned(dir), max, range, config)
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
        let path = dir.path().to_path_buf();
        let io_err = |source| LmdbError::Io {
            path: path.clone(),
            source,
        };
        if std::fs::read_dir(&path).map_err(io_err)?.next().is_some() {
            return Err(LmdbError::DirectoryNotEmpty(path).into());
        }
        // SAFETY: the directory is empty, hence opened by no one else; the flags are
        // documented on `LmdbConfig::env_flags`.
        let env = unsafe { config.env_open_options().open(&path) }
            .map_err(|e| LmdbError::heed("opening the LMDB environment", e))?;
        let map_size = env.info().map_size;
        let max_key_size = env.max_key_size();
        let inner = Inner {
            env,
            dbs: Vec::new(),
            reader: None,
            overlay: Overlay::default(),
            changes: ChangeTracker::new(config.track_changes),
            map_size,
            flush_deferred: false,
            key_buf: Vec::with_capacity(128),
            stats: LmdbStats::default(),
        };
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
        let inner = self.inner.lock();
        LmdbStats {
            map_size: inner.map_size,
            buffered_entries: inner.overlay.entries(),
            buffered_bytes: inner.overlay.bytes(),
            ..inner.stats.clone()
        }
    }

    /// Entries of `state` committed to LMDB (the write buffer not included).
    pub fn committed_entries(&self, state: StateId) -> Result<u64> {
        let inner = self.inner.lock();
        let db = inner
            .dbs
            .get(state.index())
            .ok_or_else(|| Error::UnknownStateId { id: state.0 })?
            .db;
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

    fn check_owned(&self, key_group: KeyGroup) -> Result<()> {
        self.range.check_owns(key_group)
    }

    fn check_key_size(&self, len: usize) -> Result<()> {
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
    fn state_db(
        &self,
        inner: &Inner,
        state: StateId,
        layout: Option<StorageLayout>,
        operation: &'static str,
    ) -> Result<StateDb> {
        let db = *inner
            .dbs
            .get(state.index())
            .ok_or_else(|| Error::UnknownStateId { id: state.0 })?;
        match layout {
            Some(wanted) if wanted != db.layout => Err(self.registry.unsupported(state, operation)),
            _ => Ok(db),
        }
    }

    /// Reads one key (value, list or map entry) with the write buffer applied and hands
    /// `read` the bytes, borrowed from LMDB's map or the buffer (under the backend mutex).
    #[allow(clippy::too_many_arguments)]
    fn read_key<R>(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: Option<&[u8]>,
        layout: StorageLayout,
        operation: &'static str,
        read: &mut dyn FnMut(Option<&[u8]>) -> Result<R>,
    ) -> Result<R> {
        self.check_owned(key.key_group())?;
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let db = self.state_db(inner, state, Some(layout), operation)?;
        inner.key_buf.clear();
        keys::push_prefix(&mut inner.key_buf, key.key_group(), key.key(), namespace);
        if let Some(user_key) = user_key {
            inner.key_buf.extend_from_slice(user_key);
        }
        let txn = ensure_reader(&mut inner.reader, &inner.env)?;
        let pending = inner.overlay.get(state, &inner.key_buf);
        let value = read_merged(txn, db.db, pending, &inner.key_buf, self.max_key_size)?;
        read(value.as_deref())
    }

    /// Buffers one write to one key (value, list or map entry).
    #[allow(clippy::too_many_arguments)]
    fn write_key(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: Option<&[u8]>,
        layout: StorageLayout,
        operation: &'static str,
        write: impl FnOnce(&mut Overlay, &[u8]),
    ) -> Result<()> {
        self.check_owned(key.key_group())?;
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        self.state_db(inner, state, Some(layout), operation)?;
        inner.key_buf.clear();
        keys::push_prefix(&mut inner.key_buf, key.key_group(), key.key(), namespace);
        if let Some(user_key) = user_key {
            inner.key_buf.extend_from_slice(user_key);
        }
        self.check_key_size(inner.key_buf.len())?;
        write(&mut inner.overlay, &inner.key_buf);
        inner.maybe_flush(&self.config, &self.active_readers)
    }

    /// The stored keys of every entry under the `(key, namespace)` prefix in `key_buf`.
    fn entry_keys_under_prefix(
        &self,
        inner: &mut Inner,
        state: StateId,
        db: Db,
    ) -> Result<Vec<Vec<u8>>> {
        let txn = ensure_reader(&mut inner.reader, &inner.env)?;
        let mut out = Vec::new();
        scan_merged(
            txn,
            db,
            inner.overlay.state(state),
            &inner.key_buf,
            self.max_key_size,
            &mut |k, _| {
                out.push(k.to_vec());
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(out)
    }

    /// Applies restore rows straight into one write transaction (the buffer must be empty,
    /// so that no buffered write shadows them).
    fn apply_rows_direct(
        &self,
        inner: &mut Inner,
        key_group: KeyGroup,
        rows: &[StateRow<'_>],
    ) -> Result<WriteOutcome> {
        let mut key = Vec::with_capacity(128);
        inner.write_with_growth(
            &self.config,
            &self.active_readers,
            "restoring rows",
            &mut |wtxn, dbs| {
                for row in rows {
                    // Validated by the caller: every state exists and matches its row kind.
                    let Some(state) = dbs.get(row.state.index()) else {
                        continue;
                    };
                    key.clear();
                    keys::push_prefix(&mut key, key_group, row.key, row.namespace);
                    match row.value {
                        RowValue::Value(v) => state.db.put(wtxn, &key, v)?,
                        RowValue::List([]) => {
                            state.db.delete(wtxn, &key)?;
                        }
                        RowValue::List(list) => state.db.put(wtxn, &key, list)?,
                        RowValue::MapEntry { user_key, value } => {
                            key.extend_from_slice(user_key);
                            state.db.put(wtxn, &key, value)?;
                        }
                        RowValue::Tombstone if state.layout == StorageLayout::Map => {
                            let end = prefix_successor(&key);
                            let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
                                Bound::Included(&key),
                                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                            );
                            state.db.delete_range(wtxn, &bounds)?;
                        }
                        RowValue::Tombstone => {
                            state.db.delete(wtxn, &key)?;
                        }
                    }
                }
                Ok(())
            },
        )
    }

    /// Checks restore rows before any is written: known states, row kinds that match the
    /// state's layout, well-formed lists, keys LMDB can hold.
    fn validate_rows(&self, inner: &Inner, rows: &[StateRow<'_>]) -> Result<()> {
        for row in rows {
            let db = self.state_db(inner, row.state, None, "restore")?;
            let fits = match (row.value, db.layout) {
                (RowValue::Tombstone, _)
                | (RowValue::Value(_), StorageLayout::Value)
                | (RowValue::MapEntry { .. }, StorageLayout::Map) => true,
                (RowValue::List(list), StorageLayout::List) => {
                    list_encoding::iter(list).try_for_each(|e| e.map(drop))?;
                    true
                }
                _ => false,
            };
            if !fits {
                let meta = self.registry.get(row.state)?;
                return Err(Error::corrupt(
                    "snapshot rows",
                    format!(
                        "a {:?} row for {} state '{}'",
                        row.value, meta.kind, meta.name
                    ),
                ));
            }
            let user_key_len = match row.value {
                RowValue::MapEntry { user_key, .. } => user_key.len(),
                _ => 0,
            };
            self.check_key_size(
                keys::prefix_len(row.key.len(), row.namespace.len()) + user_key_len,
            )?;
        }
        Ok(())
    }

    /// Restore rows through the write buffer (used when the map is full and cannot grow yet).
    fn apply_rows_buffered(
        &self,
        inner: &mut Inner,
        key_group: KeyGroup,
        rows: &[StateRow<'_>],
    ) -> Result<()> {
        for row in rows {
            let db = self.state_db(inner, row.state, None, "restore")?;
            inner.key_buf.clear();
            keys::push_prefix(&mut inner.key_buf, key_group, row.key, row.namespace);
            match row.value {
                RowValue::Value(v) => inner.overlay.set(
                    row.state,
                    &inner.key_buf,
                    Pending::Put(BufferValue::from_slice(v)),
                ),
                RowValue::List([]) => inner
                    .overlay
                    .set(row.state, &inner.key_buf, Pending::Delete),
                RowValue::List(list) => inner.overlay.set(
                    row.state,
                    &inner.key_buf,
                    Pending::Put(BufferValue::from_slice(list)),
                ),
                RowValue::MapEntry { user_key, value } => {
                    inner.key_buf.extend_from_slice(user_key);
                    inner.overlay.set(
                        row.state,
                        &inner.key_buf,
                        Pending::Put(BufferValue::from_slice(value)),
                    );
                }
                RowValue::Tombstone => self.clear_buffered(inner, row.state, db)?,
            }
        }
        Ok(())
    }

    /// Buffers the removal of the `(key, namespace)` whose prefix is in `key_buf`.
    fn clear_buffered(&self, inner: &mut Inner, state: StateId, db: StateDb) -> Result<()> {
        if db.layout == StorageLayout::Map {
            for entry in self.entry_keys_under_prefix(inner, state, db.db)? {
                inner.overlay.set(state, &entry, Pending::Delete);
            }
        } else {
            inner.overlay.set(state, &inner.key_buf, Pending::Delete);
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
        self.read_key(
            state,
            key,
            namespace,
            None,
            StorageLayout::Value,
            "get",
            &mut |v| Ok(v.map(<[u8]>::to_vec)),
        )
    }

    fn get_with(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        self.read_key(
            state,
            key,
            namespace,
            None,
            StorageLayout::Value,
            "get",
            read,
        )
    }

    fn put(&self, state: StateId, key: &KeyContext, namespace: &[u8], value: &[u8]) -> Result<()> {
        self.write_key(
            state,
            key,
            namespace,
            None,
            StorageLayout::Value,
            "put",
            |overlay, k| overlay.set(state, k, Pending::Put(BufferValue::from_slice(value))),
        )
    }

    fn remove(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<()> {
        self.check_owned(key.key_group())?;
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let db = self.state_db(inner, state, None, "remove")?;
        inner.key_buf.clear();
        keys::push_prefix(&mut inner.key_buf, key.key_group(), key.key(), namespace);
        if inner.key_buf.len() > self.max_key_size {
            return Ok(()); // never written
        }
        self.clear_buffered(inner, state, db)?;
        inner.maybe_flush(&self.config, &self.active_readers)
    }

    fn list_get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.read_key(
            state,
            key,
            namespace,
            None,
            StorageLayout::List,
            "list_get",
            &mut |bytes| bytes.map_or(Ok(Vec::new()), list_encoding::decode),
        )
    }

    fn list_append(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        if elements.is_empty() {
            // Still validate the call, but there is nothing to write.
            self.check_owned(key.key_group())?;
            let inner = self.inner.lock();
            self.state_db(&inner, state, Some(StorageLayout::List), "list_append")?;
            return Ok(());
        }
        let encoded = list_encoding::encode(elements.iter().copied());
        self.write_key(
            state,
            key,
            namespace,
            None,
            StorageLayout::List,
            "list_append",
            |overlay, k| overlay.append(state, k, &encoded),
        )
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
        self.write_key(
            state,
            key,
            namespace,
            None,
            StorageLayout::List,
            "list_replace",
            |overlay, k| overlay.set(state, k, pending),
        )
    }

    fn map_get(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.read_key(
            state,
            key,
            namespace,
            Some(user_key),
            StorageLayout::Map,
            "map_get",
            &mut |v| Ok(v.map(<[u8]>::to_vec)),
        )
    }

    fn map_put(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.write_key(
            state,
            key,
            namespace,
            Some(user_key),
            StorageLayout::Map,
            "map_put",
            |overlay, k| overlay.set(state, k, Pending::Put(BufferValue::from_slice(value))),
        )
    }

    fn map_remove(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<()> {
        self.write_key(
            state,
            key,
            namespace,
            Some(user_key),
            StorageLayout::Map,
            "map_remove",
            |overlay, k| overlay.set(state, k, Pending::Delete),
        )
    }

    fn map_entries(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.scan_map(
            state,
            key,
            namespace,
            "map_entries",
            &mut |user_key, value| {
                out.push((user_key.to_vec(), value.to_vec()));
                ControlFlow::Continue(())
            },
        )?;
        Ok(out)
    }

    fn map_is_empty(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<bool> {
        let mut empty = true;
        self.scan_map(state, key, namespace, "map_is_empty", &mut |_, _| {
            empty = false;
            ControlFlow::Break(())
        })?;
        Ok(empty)
    }

    fn keys(&self, state: StateId, namespace: &[u8]) -> Result<Vec<KeyContext>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let db = self.state_db(inner, state, None, "keys")?;
        let txn = ensure_reader(&mut inner.reader, &inner.env)?;
        let mut out: Vec<KeyContext> = Vec::new();
        scan_merged(
            txn,
            db.db,
            inner.overlay.state(state),
            &[],
            self.max_key_size,
            &mut |stored, _| {
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
            },
        )?;
        Ok(out)
    }

    fn apply_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()> {
        self.check_owned(key_group)?;
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        self.validate_rows(inner, rows)?;
        // Buffered writes must reach LMDB first, or they would shadow the restored rows.
        let mut direct =
            inner.flush(&self.config, &self.active_readers)? == WriteOutcome::Committed;
        // One transaction per write-buffer's worth of rows: a key group may be larger than
        // what one LMDB write transaction can hold dirty.
        let mut rest = rows;
        while !rest.is_empty() {
            let mut bytes = 0;
            let len = rest
                .iter()
                .take_while(|row| {
                    bytes += row_size(row);
                    bytes <= self.config.transaction_bytes()
                })
                .count()
                .max(1);
            let (chunk, tail) = rest.split_at(len);
            if direct {
                direct =
                    self.apply_rows_direct(inner, key_group, chunk)? == WriteOutcome::Committed;
            }
            if !direct {
                // The map is full and snapshots pin it: keep restoring into the buffer.
                self.apply_rows_buffered(inner, key_group, chunk)?;
                inner.maybe_flush(&self.config, &self.active_readers)?;
            }
            rest = tail;
        }
        Ok(())
    }
}

impl LmdbBackend {
    /// Visits the entries of one map with the write buffer applied.
    fn scan_map(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        operation: &'static str,
        visit: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        self.check_owned(key.key_group())?;
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let db = self.state_db(inner, state, Some(StorageLayout::Map), operation)?;
        inner.key_buf.clear();
        keys::push_prefix(&mut inner.key_buf, key.key_group(), key.key(), namespace);
        let prefix_len = inner.key_buf.len();
        let txn = ensure_reader(&mut inner.reader, &inner.env)?;
        scan_merged(
            txn,
            db.db,
            inner.overlay.state(state),
            &inner.key_buf,
            self.max_key_size,
            // Every scanned key starts with the prefix.
            &mut |stored, value| Ok(visit(stored.get(prefix_len..).unwrap_or_default(), value)),
        )
    }
}
