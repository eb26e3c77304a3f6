//! [`RocksDbBackend`]: live keyed state in one RocksDB database, one column family per state.
//! Snapshots and checkpoint notices are in [`crate::checkpoint`], restores in [`crate::restore`].

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use flowstate_api::backend::{KeyedStateBackend, StateRow};
use flowstate_api::list_encoding;
use flowstate_api::state::{Registration, StateRegistry, StorageLayout};
use flowstate_api::{
    Error, KeyContext, KeyGroup, KeyGroupRange, MaxParallelism, Result, StateId, StateKind,
    StateMetadata,
};
use parking_lot::Mutex;
use rocksdb::{
    BoundColumnFamily, DBRawIteratorWithThreadMode, Options, ReadOptions, WriteBatch, WriteOptions,
};

use crate::checkpoint::CheckpointTracker;
use crate::db::{column_family_name, scan_options, Db, DbCell, OpenDb, StateCf, StoredState};
use crate::error::{engine, RocksDbError};
use crate::key_layout;
use crate::resources::{read_options, write_options, RocksDbResources};

/// Keyed state in RocksDB. See the crate docs for the layout.
pub struct RocksDbBackend {
    pub(crate) cell: DbCell,
    registry: StateRegistry,
    /// Serializes registration so that ids and column families are created in one order.
    register_lock: Mutex<()>,
    pub(crate) max: MaxParallelism,
    pub(crate) range: KeyGroupRange,
    options: Options,
    read_opts: ReadOptions,
    pub(crate) write_opts: WriteOptions,
    instance_id: String,
    pub(crate) checkpoints: Arc<Mutex<CheckpointTracker>>,
    pub(crate) resources: Arc<RocksDbResources>,
    /// SST files of other instances ingested as they are by rescaling restores.
    pub(crate) files_ingested_as_is: AtomicU64,
}

impl std::fmt::Debug for RocksDbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbBackend")
            .field("instance", &self.instance_id)
            .field("dir", &self.instance_dir())
            .field("key_group_range", &self.range)
            .field("states", &self.registry.len())
            .finish()
    }
}

impl RocksDbBackend {
    /// Opens (or creates) the database under `dir/db` with the column families of `states`
    /// (in state-id order; each named [`column_family_name`] of its position).
    pub(crate) fn open(
        resources: Arc<RocksDbResources>,
        dir: tempfile::TempDir,
        max: MaxParallelism,
        range: KeyGroupRange,
        states: &[StoredState],
    ) -> Result<Self> {
        if range.end().get() >= max.get() {
            return Err(Error::KeyGroupOutOfBounds {
                key_group: range.end().get(),
                max_parallelism: max.get(),
            });
        }
        let options = resources.db_options();
        let cell = DbCell::open(&options, dir, states)?;
        let registry = StateRegistry::new();
        for (i, state) in states.iter().enumerate() {
            let registration = registry.register(&state.metadata)?;
            if registration != Registration::Created(StateId(i as u32)) {
                return Err(RocksDbError::Metadata {
                    detail: format!("state '{}' is listed twice", state.metadata.name),
                }
                .into());
            }
        }
        Ok(Self {
            cell,
            registry,
            register_lock: Mutex::new(()),
            max,
            range,
            options,
            read_opts: read_options(),
            write_opts: write_options(),
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            checkpoints: Arc::new(Mutex::new(CheckpointTracker::default())),
            resources,
            files_ingested_as_is: AtomicU64::new(0),
        })
    }

    /// The directory holding this backend's database and local checkpoints (removed when the
    /// backend and every snapshot of it are dropped).
    pub fn instance_dir(&self) -> &Path {
        self.cell.borrow_owner().dir.path()
    }

    /// A unique id of this backend instance: names its uploaded SST files.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The shared memory resources this backend uses.
    pub fn resources(&self) -> &Arc<RocksDbResources> {
        &self.resources
    }

    pub(crate) fn open_db(&self) -> &Arc<OpenDb> {
        self.cell.borrow_owner()
    }

    /// States with their column families, in id order.
    pub(crate) fn stored_states(&self) -> Vec<StoredState> {
        self.registry
            .all()
            .into_iter()
            .map(|(id, metadata)| StoredState {
                column_family: column_family_name(id),
                metadata,
            })
            .collect()
    }

    /// Flushes every memtable to SST files (tests and tools; checkpoints flush on their own).
    pub fn flush(&self) -> Result<()> {
        self.cell.with_dependent(|open, table| {
            let table = table.read();
            let handles: Vec<_> = table.iter().map(|s| &s.handle).collect();
            if handles.is_empty() {
                return Ok(());
            }
            open.db
                .flush_cfs_opt(&handles, &rocksdb::FlushOptions::default())
                .map_err(engine("flushing memtables"))
        })
    }

    /// Compacts every column family fully (tests and tools).
    pub fn compact(&self) -> Result<()> {
        self.cell.with_dependent(|open, table| {
            for state in table.read().iter() {
                open.db
                    .compact_range_cf(&state.handle, None::<&[u8]>, None::<&[u8]>);
            }
            Ok(())
        })
    }

    pub(crate) fn check_key_group(&self, key_group: KeyGroup) -> Result<()> {
        self.range.check_owns(key_group)
    }

    /// The stored key of (`key`, `namespace`) (a value, a list, or the prefix of a map's
    /// entries), once this backend is known to own `key`.
    fn owned_key(&self, key: &KeyContext, namespace: &[u8]) -> Result<Vec<u8>> {
        self.check_key_group(key.key_group())?;
        Ok(key_layout::value_key(key, namespace))
    }

    /// The stored key of one map entry, once this backend is known to own `key`.
    fn owned_entry_key(
        &self,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Vec<u8>> {
        self.check_key_group(key.key_group())?;
        Ok(key_layout::map_entry_key(key, namespace, user_key))
    }

    /// Runs `f` with the database, the column family of `state` and its kind.
    pub(crate) fn with_state<R>(
        &self,
        state: StateId,
        f: impl for<'q, 'r> FnOnce(&'q Db, &'r Arc<BoundColumnFamily<'q>>, StateKind) -> Result<R>,
    ) -> Result<R> {
        self.cell.with_dependent(|open, table| {
            let table = table.read();
            let entry = table
                .get(state.index())
                .ok_or_else(|| Error::UnknownStateId { id: state.0 })?;
            f(&open.db, &entry.handle, entry.kind)
        })
    }

    /// Like [`Self::with_state`], for an `operation` that only a state of `layout` supports.
    fn with_layout<R>(
        &self,
        state: StateId,
        operation: &'static str,
        layout: StorageLayout,
        f: impl for<'q, 'r> FnOnce(&'q Db, &'r Arc<BoundColumnFamily<'q>>) -> Result<R>,
    ) -> Result<R> {
        self.with_state(state, |db, cf, kind| {
            if kind.layout() != layout {
                return Err(self.registry.unsupported(state, operation));
            }
            f(db, cf)
        })
    }

    /// A copy of the stored bytes of `raw`, if any.
    fn get_raw(
        &self,
        state: StateId,
        operation: &'static str,
        layout: StorageLayout,
        raw: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.read_raw(state, operation, layout, raw, |v| Ok(v.map(<[u8]>::to_vec)))
    }

    /// Hands `read` the stored bytes of `raw`, borrowed from RocksDB's pinned block.
    fn read_raw<R>(
        &self,
        state: StateId,
        operation: &'static str,
        layout: StorageLayout,
        raw: &[u8],
        read: impl FnOnce(Option<&[u8]>) -> Result<R>,
    ) -> Result<R> {
        self.with_layout(state, operation, layout, |db, cf| {
            let pinned = db
                .get_pinned_cf_opt(cf, raw, &self.read_opts)
                .map_err(engine("reading state"))?;
            read(pinned.as_deref())
        })
    }

    /// Stores `value` under `raw`, or deletes `raw` when `value` is `None`.
    fn write_raw(
        &self,
        state: StateId,
        operation: &'static str,
        layout: StorageLayout,
        raw: &[u8],
        value: Option<&[u8]>,
    ) -> Result<()> {
        self.with_layout(state, operation, layout, |db, cf| match value {
            Some(value) => db
                .put_cf_opt(cf, raw, value, &self.write_opts)
                .map_err(engine("writing state")),
            None => db
                .delete_cf_opt(cf, raw, &self.write_opts)
                .map_err(engine("removing state")),
        })
    }

    /// Deletes every entry of one map (key, namespace).
    fn clear_map(&self, db: &Db, cf: &Arc<BoundColumnFamily<'_>>, prefix: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for_each_with_prefix(db, cf, prefix, |k, _| {
            batch.delete_cf(cf, k);
            Ok(())
        })?;
        if !batch.is_empty() {
            db.write_opt(batch, &self.write_opts)
                .map_err(engine("clearing a map"))?;
        }
        Ok(())
    }
}

/// An iterator over the keys that start with `prefix`, positioned at the first of them.
fn prefix_iterator<'a>(
    db: &'a Db,
    cf: &Arc<BoundColumnFamily<'_>>,
    prefix: &[u8],
) -> DBRawIteratorWithThreadMode<'a, Db> {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(prefix.to_vec());
    if let Some(upper) = key_layout::prefix_successor(prefix) {
        ro.set_iterate_upper_bound(upper);
    }
    let mut it = db.raw_iterator_cf_opt(cf, ro);
    it.seek(prefix);
    it
}

/// Visits every (key, value) whose key starts with `prefix`.
fn for_each_with_prefix(
    db: &Db,
    cf: &Arc<BoundColumnFamily<'_>>,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut it = prefix_iterator(db, cf, prefix);
    while let Some((k, v)) = it.item() {
        visit(k, v)?;
        it.next();
    }
    it.status().map_err(engine("iterating state"))
}

impl KeyedStateBackend for RocksDbBackend {
    fn max_parallelism(&self) -> MaxParallelism {
        self.max
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn register_state(&self, meta: &StateMetadata) -> Result<StateId> {
        let _guard = self.register_lock.lock();
        if self.registry.id_of(&meta.name).is_some() {
            return self.registry.register(meta).map(Registration::id);
        }
        // Create the column family first: a failed creation leaves the registry untouched.
        let id = StateId(self.registry.len() as u32);
        let name = column_family_name(id);
        self.cell.with_dependent(|open, table| -> Result<()> {
            if open.db.cf_handle(&name).is_none() {
                open.db
                    .create_cf(&name, &self.options)
                    .map_err(engine("creating a column family for a new state"))?;
            }
            let handle = open.db.cf_handle(&name).ok_or_else(|| {
                Error::from(RocksDbError::Metadata {
                    detail: format!("column family '{name}' vanished after creation"),
                })
            })?;
            let mut table = table.write();
            if table.len() != id.index() {
                return Err(Error::backend(
                    crate::BACKEND_NAME,
                    "state table out of step with the registry",
                ));
            }
            table.push(StateCf {
                handle,
                kind: meta.kind,
            });
            Ok(())
        })?;
        match self.registry.register(meta)? {
            Registration::Created(got) if got == id => Ok(id),
            other => Err(Error::backend(
                crate::BACKEND_NAME,
                format!("registry assigned {other:?}, expected {id:?}"),
            )),
        }
    }

    fn registered_states(&self) -> Vec<(StateId, StateMetadata)> {
        self.registry.all()
    }

    fn get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Option<Vec<u8>>> {
        let raw = self.owned_key(key, namespace)?;
        self.get_raw(state, "get", StorageLayout::Value, &raw)
    }

    fn get_with(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        let raw = self.owned_key(key, namespace)?;
        // Decoded straight from RocksDB's pinned block: no copy of the value.
        self.read_raw(state, "get", StorageLayout::Value, &raw, read)
    }

    fn put(&self, state: StateId, key: &KeyContext, namespace: &[u8], value: &[u8]) -> Result<()> {
        let raw = self.owned_key(key, namespace)?;
        self.write_raw(state, "put", StorageLayout::Value, &raw, Some(value))
    }

    fn remove(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<()> {
        let raw = self.owned_key(key, namespace)?;
        self.with_state(state, |db, cf, kind| match kind.layout() {
            StorageLayout::Value | StorageLayout::List => db
                .delete_cf_opt(cf, &raw, &self.write_opts)
                .map_err(engine("removing state")),
            StorageLayout::Map => self.clear_map(db, cf, &raw),
        })
    }

    fn list_get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        let raw = self.owned_key(key, namespace)?;
        self.read_raw(state, "list_get", StorageLayout::List, &raw, |bytes| {
            bytes.map_or(Ok(Vec::new()), list_encoding::decode)
        })
    }

    fn list_append(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        let raw = self.owned_key(key, namespace)?;
        self.with_layout(state, "list_append", StorageLayout::List, |db, cf| {
            if elements.is_empty() {
                return Ok(());
            }
            let encoded = list_encoding::encode(elements.iter().copied());
            // A merge operand: RocksDB concatenates on read or compaction, no read here.
            db.merge_cf_opt(cf, &raw, encoded, &self.write_opts)
                .map_err(engine("appending to a list"))
        })
    }

    fn list_replace(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        // An empty list is never stored: replacing with one deletes.
        let encoded =
            (!elements.is_empty()).then(|| list_encoding::encode(elements.iter().copied()));
        let raw = self.owned_key(key, namespace)?;
        self.write_raw(
            state,
            "list_replace",
            StorageLayout::List,
            &raw,
            encoded.as_deref(),
        )
    }

    fn map_get(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let raw = self.owned_entry_key(key, namespace, user_key)?;
        self.get_raw(state, "map_get", StorageLayout::Map, &raw)
    }

    fn map_put(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let raw = self.owned_entry_key(key, namespace, user_key)?;
        self.write_raw(state, "map_put", StorageLayout::Map, &raw, Some(value))
    }

    fn map_remove(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<()> {
        let raw = self.owned_entry_key(key, namespace, user_key)?;
        self.write_raw(state, "map_remove", StorageLayout::Map, &raw, None)
    }

    fn map_entries(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = self.owned_key(key, namespace)?;
        self.with_layout(state, "map_entries", StorageLayout::Map, |db, cf| {
            let mut out = Vec::new();
            for_each_with_prefix(db, cf, &prefix, |k, v| {
                out.push((k[prefix.len()..].to_vec(), v.to_vec()));
                Ok(())
            })?;
            Ok(out)
        })
    }

    fn map_contains(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<bool> {
        let raw = self.owned_entry_key(key, namespace, user_key)?;
        self.read_raw(state, "map_contains", StorageLayout::Map, &raw, |v| {
            Ok(v.is_some())
        })
    }

    fn map_is_empty(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<bool> {
        let prefix = self.owned_key(key, namespace)?;
        self.with_layout(state, "map_is_empty", StorageLayout::Map, |db, cf| {
            let it = prefix_iterator(db, cf, &prefix);
            let empty = !it.valid();
            it.status().map_err(engine("iterating a map"))?;
            Ok(empty)
        })
    }

    fn keys(&self, state: StateId, namespace: &[u8]) -> Result<Vec<KeyContext>> {
        let (lower, upper) = key_layout::key_group_bounds(&self.range);
        self.with_state(state, |db, cf, kind| {
            let mut it = db.raw_iterator_cf_opt(cf, scan_options(lower.clone(), upper));
            it.seek(&lower);
            let mut out: Vec<KeyContext> = Vec::new();
            while let Some((k, v)) = it.item() {
                let d = key_layout::decode_key(k)?;
                let non_empty = kind.layout() != StorageLayout::List || !v.is_empty();
                if d.namespace == namespace && non_empty {
                    let key_group = KeyGroup::new(d.key_group, self.max)?;
                    // A map's entries of one (key, namespace) are adjacent: report it once.
                    let repeated = out
                        .last()
                        .is_some_and(|last| last.key_group() == key_group && last.key() == d.key);
                    if !repeated {
                        out.push(KeyContext::with_key_group(d.key.to_vec(), key_group));
                    }
                }
                it.next();
            }
            it.status().map_err(engine("enumerating keys"))?;
            Ok(out)
        })
    }

    fn apply_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()> {
        self.apply_rows_in_one_batch(key_group, rows)
    }
}
