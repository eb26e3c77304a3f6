//! [`Inner`]: what the backend's mutex guards (the LMDB environment and its databases, the
//! cached reader, the write buffer, change tracking) and the write transactions on it:
//! flushing the buffer, creating a state's database, growing the map when it is full.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowstate_api::state::StorageLayout;
use flowstate_api::{Error, KeyGroup, Result, StateId};
use heed::types::Bytes;
use heed::{CommitOrAbort, Env, RoTxn, RwTxn, WithoutTls};

use crate::changes::ChangeTracker;
use crate::config::{round_map_size, LmdbConfig};
use crate::error::{is_map_full, LmdbError};
use crate::key_layout::push_prefix;
use crate::overlay::{Db, Overlay, Pending};

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
    pub(crate) reader: Option<RoTxn<'static, WithoutTls>>,
    pub(crate) overlay: Overlay,
    pub(crate) changes: ChangeTracker,
    map_size: usize,
    /// A flush hit a full map while snapshots were open: don't retry until they are gone.
    flush_deferred: bool,
    /// The stored key of the call at hand (reused, so that a call allocates none).
    pub(crate) key_buf: Vec<u8>,
    stats: LmdbStats,
}

/// The reader for reads of the operator, opened on first use after each commit.
pub(crate) fn ensure_reader<'a>(
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
    /// The state of a freshly opened, empty environment.
    pub(crate) fn new(env: Env<WithoutTls>, track_changes: bool) -> Self {
        Self {
            map_size: env.info().map_size,
            env,
            dbs: Vec::new(),
            reader: None,
            overlay: Overlay::default(),
            changes: ChangeTracker::new(track_changes),
            flush_deferred: false,
            key_buf: Vec::with_capacity(128),
            stats: LmdbStats::default(),
        }
    }

    /// What the backend did so far.
    pub(crate) fn stats(&self) -> LmdbStats {
        LmdbStats {
            map_size: self.map_size,
            buffered_entries: self.overlay.entries(),
            buffered_bytes: self.overlay.bytes(),
            ..self.stats.clone()
        }
    }

    /// Puts the stored key of `(key group, key, namespace)` and a map entry's `user_key`
    /// (empty for values and lists) in `key_buf`.
    #[inline]
    pub(crate) fn set_key(
        &mut self,
        key_group: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        user_key: &[u8],
    ) {
        self.key_buf.clear();
        push_prefix(&mut self.key_buf, key_group, key, namespace);
        if !user_key.is_empty() {
            self.key_buf.extend_from_slice(user_key);
        }
    }

    /// Runs `write` in a write transaction and commits it. On "map full" it grows the map and
    /// retries, unless read transactions of snapshots are open (growing the map requires that
    /// none is): then it returns [`WriteOutcome::Deferred`] having written nothing.
    pub(crate) fn write_with_growth(
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
                    if !self.grow_map(config, active_readers)? {
                        self.flush_deferred = true;
                        self.stats.deferred_flushes += 1;
                        return Ok(WriteOutcome::Deferred);
                    }
                }
                Err(e) => return Err(LmdbError::heed(context, e).into()),
            }
        }
    }

    /// Doubles the map (capped by `max_map_size`) after a write found it full; `false`, and
    /// nothing done, while read transactions of snapshots are open. Call only when no
    /// transaction of the backend's own is open.
    fn grow_map(&mut self, config: &LmdbConfig, active_readers: &AtomicUsize) -> Result<bool> {
        // Checked under the backend mutex, which snapshots also hold while they open their
        // read transaction: no new one can appear before the resize.
        if active_readers.load(Ordering::SeqCst) > 0 {
            return Ok(false);
        }
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
        // reader was dropped, the failed write transaction is gone, and no snapshot holds one
        // (checked above, under the mutex that every new read transaction is opened under).
        unsafe { self.env.resize(new_size) }
            .map_err(|e| LmdbError::heed("growing the LMDB map", e))?;
        tracing::debug!(from = self.map_size, to = new_size, "grew LMDB map");
        self.map_size = new_size;
        self.stats.map_resizes += 1;
        Ok(true)
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

    /// Flushes the write buffer once it is full (unless a flush is postponed and snapshots
    /// still pin the full map).
    pub(crate) fn maybe_flush(
        &mut self,
        config: &LmdbConfig,
        active_readers: &AtomicUsize,
    ) -> Result<()> {
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

    /// Creates the database of state `id`, the next one.
    pub(crate) fn create_database(
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
                    if !self.grow_map(config, active_readers)? {
                        return Err(LmdbError::MapFullWhileSnapshotting.into());
                    }
                }
                Err(e) => return Err(LmdbError::heed("creating a state's database", e).into()),
            }
        }
    }
}

/// The database of `state` among `dbs` (by state index).
pub(crate) fn db_of(dbs: &[StateDb], state: StateId) -> Result<StateDb> {
    dbs.get(state.index())
        .copied()
        .ok_or_else(|| Error::UnknownStateId { id: state.0 })
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
