//! [`RocksDbBackend`]: keyed state in one RocksDB database, one column family per state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use flowstate_api::backend::{
    KeyedStateBackend, RowValue, SnapshotJob, SnapshotKind, SnapshotRequest, StateBackend, StateRow,
};
use flowstate_api::list_encoding;
use flowstate_api::snapshot::CanonicalSnapshotJob;
use flowstate_api::state::{Registration, StateRegistry, StorageLayout};
use flowstate_api::{
    CheckpointId, Error, KeyContext, KeyGroup, KeyGroupRange, MaxParallelism, Result, StateId,
    StateKind, StateMetadata,
};
use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, MultiThreaded, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use self_cell::self_cell;

use crate::error::{engine, RocksDbError};
use crate::keys;
use crate::native::{CheckpointTracker, NativeSnapshotJob};
use crate::resources::{read_options, write_options, RocksDbResources};
use crate::view::RocksDbSnapshotView;

/// The database type: multi-threaded column families, so states can be registered through
/// `&self` while other threads read and write.
pub(crate) type Db = DBWithThreadMode<MultiThreaded>;

/// An open database and the instance directory it lives in. Fields drop in order: the
/// database closes before the directory is removed.
pub(crate) struct OpenDb {
    pub(crate) db: Db,
    pub(crate) dir: tempfile::TempDir,
}

impl OpenDb {
    pub(crate) fn db_path(dir: &Path) -> PathBuf {
        dir.join("db")
    }
    pub(crate) fn checkpoints_path(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }
}

/// A registered state's column family and kind.
pub(crate) struct StateCf<'db> {
    pub(crate) handle: Arc<BoundColumnFamily<'db>>,
    pub(crate) kind: StateKind,
}

/// Column-family handles indexed by [`StateId`]: resolved once at registration so that state
/// access does not look column families up by name.
pub(crate) type CfTable<'db> = RwLock<Vec<StateCf<'db>>>;

self_cell!(
    pub(crate) struct DbCell {
        owner: Arc<OpenDb>,
        #[not_covariant]
        dependent: CfTable,
    }
);

/// The column family that holds state `id` (benchmarks of raw RocksDB use the same name).
pub fn column_family_name(id: StateId) -> String {
    format!("s{}", id.0)
}

/// A state as a native checkpoint records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredState {
    pub(crate) column_family: String,
    pub(crate) metadata: StateMetadata,
}

/// Keyed state in RocksDB. See the crate docs for the layout.
pub struct RocksDbBackend {
    cell: DbCell,
    registry: StateRegistry,
    /// Serializes registration so that ids and column families are created in one order.
    register_lock: Mutex<()>,
    max: MaxParallelism,
    range: KeyGroupRange,
    options: Options,
    read_opts: ReadOptions,
    write_opts: WriteOptions,
    instance_id: String,
    pub(crate) checkpoints: Arc<Mutex<CheckpointTracker>>,
    pub(crate) resources: Arc<RocksDbResources>,
    /// SST files of other instances ingested as they are by rescaling restores.
    files_ingested_as_is: AtomicU64,
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
        let path = OpenDb::db_path(dir.path());
        let existing = if path.join("CURRENT").exists() {
            Db::list_cf(&options, &path).map_err(engine("listing column families"))?
        } else {
            vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()]
        };
        for (i, state) in states.iter().enumerate() {
            if state.column_family != column_family_name(StateId(i as u32))
                || !existing.contains(&state.column_family)
            {
                return Err(RocksDbError::Metadata {
                    detail: format!(
                        "state '{}' (#{i}) names column family '{}', which the database does not hold under that position",
                        state.metadata.name, state.column_family
                    ),
                }
                .into());
            }
        }
        let descriptors = existing
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, options.clone()));
        let db = Db::open_cf_descriptors(&options, &path, descriptors)
            .map_err(engine("opening the instance database"))?;
        let open = Arc::new(OpenDb { db, dir });
        let cell = DbCell::try_new(open, |open| -> Result<CfTable<'_>> {
            let mut table = Vec::with_capacity(states.len());
            for state in states {
                let handle = open.db.cf_handle(&state.column_family).ok_or_else(|| {
                    Error::from(RocksDbError::Metadata {
                        detail: format!("column family '{}' is missing", state.column_family),
                    })
                })?;
                table.push(StateCf {
                    handle,
                    kind: state.metadata.kind,
                });
            }
            Ok(RwLock::new(table))
        })?;
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

    /// A consistent point-in-time view of the keyed state (a RocksDB snapshot). Writers are
    /// not blocked while it is read.
    pub fn snapshot_view(&self) -> RocksDbSnapshotView {
        RocksDbSnapshotView::new(
            self.open_db().clone(),
            self.max,
            self.range,
            self.stored_states(),
        )
    }

    /// Deletes every key outside the backend's key-group range, in every column family: two
    /// range tombstones per state, plus dropping the SST files that lie wholly outside.
    pub(crate) fn clip_to_range(&self) -> Result<()> {
        let (lower, upper) = keys::key_group_bounds(&self.range);
        let below = (vec![0u8, 0u8], lower);
        let above = (upper, keys::all_keys_upper_bound());
        self.cell.with_dependent(|open, table| {
            for state in table.read().iter() {
                for (from, to) in [&below, &above] {
                    if from >= to {
                        continue;
                    }
                    open.db
                        .delete_range_cf_opt(&state.handle, from, to, &self.write_opts)
                        .map_err(engine("deleting key groups outside the restored range"))?;
                    open.db
                        .delete_file_in_range_cf(&state.handle, from, to)
                        .map_err(engine("dropping SST files outside the restored range"))?;
                }
            }
            Ok(())
        })
    }

    /// Ingests an SST file (written with this backend's key layout) into `state`'s column
    /// family, moving it into the database.
    pub(crate) fn ingest(&self, state: StateId, sst: &Path) -> Result<()> {
        self.with_state(state, "ingest", None, |db, cf, _| {
            let mut opts = rocksdb::IngestExternalFileOptions::default();
            opts.set_move_files(true);
            db.ingest_external_file_cf_opts(cf, &opts, vec![sst])
                .map_err(engine("ingesting restored key groups"))
        })
    }

    /// Ingests SST files of another instance of this backend into `state`'s column family as
    /// they are (see [`crate::ingest`]). The inner error is RocksDB's refusal (for example,
    /// an overlap with data already here); nothing was ingested then.
    pub(crate) fn ingest_db_generated(
        &self,
        state: StateId,
        files: &[PathBuf],
    ) -> Result<std::result::Result<(), String>> {
        self.with_state(state, "ingest", None, |db, cf, _| {
            let outcome = crate::ingest::ingest_db_generated(db, cf, files);
            if outcome.is_ok() {
                self.files_ingested_as_is
                    .fetch_add(files.len() as u64, AtomicOrdering::Relaxed);
            }
            Ok(outcome)
        })
    }

    /// SST files of other instances that rescaling restores ingested as they are, without
    /// reading their keys (the rest of a restore copies keys; see the crate docs).
    pub fn files_ingested_as_is(&self) -> u64 {
        self.files_ingested_as_is.load(AtomicOrdering::Relaxed)
    }

    fn check_owned(&self, key: &KeyContext) -> Result<()> {
        self.check_key_group(key.key_group())
    }

    fn check_key_group(&self, key_group: KeyGroup) -> Result<()> {
        self.range.check_owns(key_group)
    }

    /// Runs `f` with the database and the column family of `state`, after checking that the
    /// state's layout allows `operation`.
    fn with_state<R>(
        &self,
        state: StateId,
        operation: &'static str,
        layout: Option<StorageLayout>,
        f: impl for<'q, 'r> FnOnce(&'q Db, &'r Arc<BoundColumnFamily<'q>>, StateKind) -> Result<R>,
    ) -> Result<R> {
        self.cell.with_dependent(|open, table| {
            let table = table.read();
            let entry = table
                .get(state.index())
                .ok_or_else(|| Error::UnknownStateId { id: state.0 })?;
            if let Some(layout) = layout {
                if entry.kind.layout() != layout {
                    return Err(self.registry.unsupported(state, operation));
                }
            }
            f(&open.db, &entry.handle, entry.kind)
        })
    }

    fn get_raw(
        &self,
        state: StateId,
        op: &'static str,
        layout: StorageLayout,
        raw: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.read_raw(state, op, layout, raw, |v| Ok(v.map(<[u8]>::to_vec)))
    }

    /// Hands `read` the stored bytes of `raw`, borrowed from RocksDB's pinned block.
    fn read_raw<R>(
        &self,
        state: StateId,
        op: &'static str,
        layout: StorageLayout,
        raw: &[u8],
        read: impl FnOnce(Option<&[u8]>) -> Result<R>,
    ) -> Result<R> {
        self.with_state(state, op, Some(layout), |db, cf, _| {
            let pinned = db
                .get_pinned_cf_opt(cf, raw, &self.read_opts)
                .map_err(engine("reading state"))?;
            read(pinned.as_deref())
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

/// Visits every (key, value) whose key starts with `prefix`.
fn for_each_with_prefix(
    db: &Db,
    cf: &Arc<BoundColumnFamily<'_>>,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(prefix.to_vec());
    if let Some(upper) = keys::prefix_successor(prefix) {
        ro.set_iterate_upper_bound(upper);
    }
    let mut it = db.raw_iterator_cf_opt(cf, ro);
    it.seek(prefix);
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
        self.check_owned(key)?;
        let raw = keys::value_key(key, namespace);
        self.get_raw(state, "get", StorageLayout::Value, &raw)
    }

    fn get_with(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        self.check_owned(key)?;
        let raw = keys::value_key(key, namespace);
        // Decoded straight from RocksDB's pinned block: no copy of the value.
        self.read_raw(state, "get", StorageLayout::Value, &raw, read)
    }

    fn put(&self, state: StateId, key: &KeyContext, namespace: &[u8], value: &[u8]) -> Result<()> {
        self.check_owned(key)?;
        let raw = keys::value_key(key, namespace);
        self.with_state(state, "put", Some(StorageLayout::Value), |db, cf, _| {
            db.put_cf_opt(cf, &raw, value, &self.write_opts)
                .map_err(engine("writing a value"))
        })
    }

    fn remove(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<()> {
        self.check_owned(key)?;
        let raw = keys::value_key(key, namespace);
        self.with_state(state, "remove", None, |db, cf, kind| match kind.layout() {
            StorageLayout::Value | StorageLayout::List => db
                .delete_cf_opt(cf, &raw, &self.write_opts)
                .map_err(engine("removing state")),
            StorageLayout::Map => self.clear_map(db, cf, &raw),
        })
    }

    fn list_get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.check_owned(key)?;
        let raw = keys::value_key(key, namespace);
        self.with_state(
            state,
            "list_get",
            Some(StorageLayout::List),
            |db, cf, _| match db
                .get_pinned_cf_opt(cf, &raw, &self.read_opts)
                .map_err(engine("reading a list"))?
            {
                Some(bytes) => list_encoding::decode(&bytes),
                None => Ok(Vec::new()),
            },
        )
    }

    fn list_append(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        self.check_owned(key)?;
        let raw = keys::value_key(key, namespace);
        self.with_state(
            state,
            "list_append",
            Some(StorageLayout::List),
            |db, cf, _| {
                if elements.is_empty() {
                    return Ok(());
                }
                let encoded = list_encoding::encode(elements.iter().copied());
                // A merge operand: RocksDB concatenates on read or compaction, no read here.
                db.merge_cf_opt(cf, &raw, encoded, &self.write_opts)
                    .map_err(engine("appending to a list"))
            },
        )
    }

    fn list_replace(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        self.check_owned(key)?;
        let raw = keys::value_key(key, namespace);
        self.with_state(
            state,
            "list_replace",
            Some(StorageLayout::List),
            |db, cf, _| {
                if elements.is_empty() {
                    db.delete_cf_opt(cf, &raw, &self.write_opts)
                        .map_err(engine("clearing a list"))
                } else {
                    let encoded = list_encoding::encode(elements.iter().copied());
                    db.put_cf_opt(cf, &raw, encoded, &self.write_opts)
                        .map_err(engine("replacing a list"))
                }
            },
        )
    }

    fn map_get(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.check_owned(key)?;
        let raw = keys::map_entry_key(key, namespace, user_key);
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
        self.check_owned(key)?;
        let raw = keys::map_entry_key(key, namespace, user_key);
        self.with_state(state, "map_put", Some(StorageLayout::Map), |db, cf, _| {
            db.put_cf_opt(cf, &raw, value, &self.write_opts)
                .map_err(engine("writing a map entry"))
        })
    }

    fn map_remove(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<()> {
        self.check_owned(key)?;
        let raw = keys::map_entry_key(key, namespace, user_key);
        self.with_state(
            state,
            "map_remove",
            Some(StorageLayout::Map),
            |db, cf, _| {
                db.delete_cf_opt(cf, &raw, &self.write_opts)
                    .map_err(engine("removing a map entry"))
            },
        )
    }

    fn map_entries(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check_owned(key)?;
        let prefix = keys::value_key(key, namespace);
        self.with_state(
            state,
            "map_entries",
            Some(StorageLayout::Map),
            |db, cf, _| {
                let mut out = Vec::new();
                for_each_with_prefix(db, cf, &prefix, |k, v| {
                    out.push((k[prefix.len()..].to_vec(), v.to_vec()));
                    Ok(())
                })?;
                Ok(out)
            },
        )
    }

    fn map_contains(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<bool> {
        self.check_owned(key)?;
        let raw = keys::map_entry_key(key, namespace, user_key);
        self.with_state(
            state,
            "map_contains",
            Some(StorageLayout::Map),
            |db, cf, _| {
                Ok(db
                    .get_pinned_cf_opt(cf, &raw, &self.read_opts)
                    .map_err(engine("reading a map entry"))?
                    .is_some())
            },
        )
    }

    fn map_is_empty(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<bool> {
        self.check_owned(key)?;
        let prefix = keys::value_key(key, namespace);
        self.with_state(
            state,
            "map_is_empty",
            Some(StorageLayout::Map),
            |db, cf, _| {
                let mut ro = ReadOptions::default();
                if let Some(upper) = keys::prefix_successor(&prefix) {
                    ro.set_iterate_upper_bound(upper);
                }
                let mut it = db.raw_iterator_cf_opt(cf, ro);
                it.seek(&prefix);
                let empty = !it.valid();
                it.status().map_err(engine("iterating a map"))?;
                Ok(empty)
            },
        )
    }

    fn keys(&self, state: StateId, namespace: &[u8]) -> Result<Vec<KeyContext>> {
        let (lower, upper) = keys::key_group_bounds(&self.range);
        self.with_state(state, "keys", None, |db, cf, kind| {
            let mut ro = ReadOptions::default();
            ro.set_iterate_lower_bound(lower.clone());
            ro.set_iterate_upper_bound(upper);
            ro.fill_cache(false);
            let mut it = db.raw_iterator_cf_opt(cf, ro);
            it.seek(&lower);
            let mut out: Vec<KeyContext> = Vec::new();
            while let Some((k, v)) = it.item() {
                let d = keys::decode_key(k)?;
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
        self.check_key_group(key_group)?;
        if rows.is_empty() {
            return Ok(());
        }
        self.cell.with_dependent(|open, table| {
            let table = table.read();
            let mut batch = WriteBatch::default();
            let mut raw = Vec::new();
            for row in rows {
                let entry = table
                    .get(row.state.index())
                    .ok_or_else(|| Error::UnknownStateId { id: row.state.0 })?;
                let cf = &entry.handle;
                raw.clear();
                keys::push_prefix(&mut raw, key_group, row.key, row.namespace);
                let layout = entry.kind.layout();
                match (row.value, layout) {
                    (RowValue::Value(v), StorageLayout::Value) => batch.put_cf(cf, &raw, v),
                    (RowValue::List(v), StorageLayout::List) => {
                        if v.is_empty() {
                            batch.delete_cf(cf, &raw);
                        } else {
                            // Reject a malformed list now rather than at its first read.
                            for element in list_encoding::iter(v) {
                                element?;
                            }
                            batch.put_cf(cf, &raw, v);
                        }
                    }
                    (RowValue::MapEntry { user_key, value }, StorageLayout::Map) => {
                        raw.extend_from_slice(user_key);
                        batch.put_cf(cf, &raw, value);
                    }
                    (RowValue::Tombstone, StorageLayout::Value | StorageLayout::List) => {
                        batch.delete_cf(cf, &raw)
                    }
                    (RowValue::Tombstone, StorageLayout::Map) => {
                        // Later puts in this batch get later sequence numbers, so rows after
                        // the tombstone survive it.
                        let upper = keys::prefix_successor(&raw).ok_or_else(|| {
                            Error::corrupt("restored row", "key prefix has no successor")
                        })?;
                        batch.delete_range_cf(cf, &raw, &upper);
                    }
                    (value, _) => {
                        return Err(Error::corrupt(
                            "restored row",
                            format!(
                                "a {} row for {} state #{}",
                                row_kind(&value),
                                entry.kind,
                                row.state.0
                            ),
                        ))
                    }
                }
            }
            open.db
                .write_opt(batch, &self.write_opts)
                .map_err(engine("applying restored rows"))
        })
    }
}

fn row_kind(value: &RowValue<'_>) -> &'static str {
    match value {
        RowValue::Value(_) => "value",
        RowValue::List(_) => "list",
        RowValue::MapEntry { .. } => "map entry",
        RowValue::Tombstone => "tombstone",
    }
}

impl StateBackend for RocksDbBackend {
    fn snapshot(&self, request: &SnapshotRequest) -> Result<Box<dyn SnapshotJob>> {
        match request.kind {
            SnapshotKind::Full => Ok(Box::new(CanonicalSnapshotJob::for_request(
                Box::new(self.snapshot_view()),
                "rocksdb",
                request,
            ))),
            SnapshotKind::Incremental => Ok(Box::new(NativeSnapshotJob::capture(self, request)?)),
        }
    }

    fn notify_checkpoint_complete(&self, id: CheckpointId) -> Result<()> {
        self.checkpoints.lock().complete(id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&self, id: CheckpointId) -> Result<()> {
        self.checkpoints.lock().abort(id);
        Ok(())
    }
}
