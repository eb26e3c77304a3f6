//! [`HeapBackend`]: keyed state in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate_api::changelog::{
    ChangelogChain, ChangelogPlan, ChangelogPolicy, ChangelogSnapshotJob,
};
use flowstate_api::key_groups::key_group_for_key_bytes;
use flowstate_api::list_encoding;
use flowstate_api::snapshot::CanonicalSnapshotJob;
use flowstate_api::state::{StateRegistry, StorageLayout};
use flowstate_api::{
    CheckpointId, Error, KeyContext, KeyGroup, KeyGroupRange, KeyedStateBackend, MaxParallelism,
    Result, RowValue, SnapshotJob, SnapshotKind, SnapshotRequest, StateBackend, StateId,
    StateMetadata, StateRow,
};
use parking_lot::Mutex;

use crate::cell::{Cell, MapSlot, Versioned};
use crate::epoch::Epochs;
use crate::key::EntryHasher;
use crate::table::{KgTable, KgTables, Outcome, StateTable, Storage};
use crate::view::HeapSnapshotView;

/// How a [`HeapBackend`] is set up.
#[derive(Clone, Debug, PartialEq)]
pub struct HeapConfig {
    /// Record which entries change between checkpoints, so incremental checkpoints upload
    /// only those (as changelog deltas). Recording starts with the first incremental
    /// checkpoint and costs one `Arc` clone and one push per entry per checkpoint interval
    /// (on the entry's first change in it). Without it, incremental checkpoints are written
    /// full.
    pub change_tracking: bool,
    /// When an incremental checkpoint writes a new base instead of another delta.
    pub changelog: ChangelogPolicy,
    /// Dashmap shards per (state, key group), a power of two of at least 2. `None`: enough
    /// that a subtask's key groups together have about four shards per CPU.
    pub shards_per_key_group: Option<usize>,
}

impl Default for HeapConfig {
    fn default() -> Self {
        Self {
            change_tracking: true,
            changelog: ChangelogPolicy::default(),
            shards_per_key_group: None,
        }
    }
}

/// Sizes of a backend's bookkeeping, for tests and operators. Counting walks every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// (state, key, namespace) entries, including tombstones kept for snapshots.
    pub entries: usize,
    /// Removed values (or map entries) still kept because a live snapshot reads them.
    pub tombstones: usize,
    /// Old versions kept for live snapshots.
    pub old_versions: usize,
    /// Change records held for the next incremental checkpoint.
    pub change_records: usize,
    /// Entries listed for the version sweeper.
    pub retained_entries: usize,
    /// Live snapshot views.
    pub live_snapshots: usize,
}

/// Change records are never a reason to re-base below this many (small states churn).
const MIN_RECORDS_BEFORE_REBASE: usize = 4096;

/// Incremental checkpoint bookkeeping: which snapshot epoch each checkpoint captured.
#[derive(Debug, Default)]
pub(crate) struct Checkpoints {
    /// Incremental checkpoints taken and neither completed nor aborted yet.
    pending: BTreeMap<CheckpointId, u64>,
    /// The last completed checkpoint of the changelog chain and its epoch.
    completed: Option<(CheckpointId, u64)>,
    /// Change records of epochs up to this one have been dropped.
    forgotten_through: u64,
    /// `since` epochs of live delta views: their changes are kept until the view is dropped.
    delta_floors: BTreeMap<u64, usize>,
}

pub(crate) struct Inner {
    pub(crate) max: MaxParallelism,
    pub(crate) range: KeyGroupRange,
    config: HeapConfig,
    registry: StateRegistry,
    /// Keeps registry ids and table indices equal under concurrent registration.
    register_lock: Mutex<()>,
    /// Indexed by `StateId`; append-only and lock-free to read (the hot path reads it).
    pub(crate) tables: boxcar::Vec<StateTable>,
    pub(crate) epochs: Epochs,
    hasher: EntryHasher,
    shards: usize,
    checkpoints: Mutex<Checkpoints>,
    chain: Arc<ChangelogChain>,
}

/// The heap keyed state backend. Cheap to clone (a shared handle).
///
/// See the [crate docs](crate) for the storage layout and the snapshot scheme.
#[derive(Clone)]
pub struct HeapBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HeapBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapBackend")
            .field("max_parallelism", &self.inner.max)
            .field("key_group_range", &self.inner.range)
            .field("states", &self.inner.registry.len())
            .finish()
    }
}

/// Where a write goes: (key group, key, namespace).
#[derive(Clone, Copy)]
struct Addr<'a> {
    key_group: KeyGroup,
    key: &'a [u8],
    namespace: &'a [u8],
}

impl<'a> Addr<'a> {
    #[inline]
    fn of(key: &'a KeyContext, namespace: &'a [u8]) -> Self {
        Self {
            key_group: key.key_group(),
            key: key.key(),
            namespace,
        }
    }
}

fn encoded_list(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elements.iter().map(|e| 4 + e.len()).sum());
    for element in elements {
        list_encoding::push_element(&mut out, element);
    }
    out
}

fn default_shards(range: KeyGroupRange) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cpus)
        .div_ceil(range.len() as usize)
        .next_power_of_two()
        .clamp(2, 64)
}

impl HeapBackend {
    /// An empty backend owning `range` of `max`'s key groups.
    pub fn new(max: MaxParallelism, range: KeyGroupRange, config: HeapConfig) -> Result<Self> {
        if range.end().get() >= max.get() {
            return Err(Error::KeyGroupOutOfBounds {
                key_group: range.end().get(),
                max_parallelism: max.get(),
            });
        }
        let shards = match config.shards_per_key_group {
            Some(n) if n >= 2 && n.is_power_of_two() => n,
            Some(n) => {
                return Err(Error::Config(format!(
                    "shards_per_key_group is {n}: use a power of two of at least 2, or None for the default"
                )))
            }
            None => default_shards(range),
        };
        let chain = Arc::new(ChangelogChain::new(config.changelog.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                max,
                range,
                config,
                registry: StateRegistry::new(),
                register_lock: Mutex::new(()),
                tables: boxcar::Vec::new(),
                epochs: Epochs::default(),
                hasher: EntryHasher::default(),
                shards,
                checkpoints: Mutex::new(Checkpoints::default()),
                chain,
            }),
        })
    }

    /// A consistent point-in-time view of all keyed state, taken in O(1) (it pins an epoch)
    /// and readable while writers go on. Writers keep the versions it reads until it is
    /// dropped.
    pub fn snapshot_view(&self) -> HeapSnapshotView {
        HeapSnapshotView::full(self.inner.clone())
    }

    /// A view of what changed since completed incremental checkpoint `since`: for every
    /// changed (state, key, namespace) a tombstone row, then its current rows (as of the
    /// view), in the canonical delta form. Fails when `since` is not the last completed
    /// checkpoint of the backend's changelog chain or change tracking is off.
    pub fn delta_view(&self, since: CheckpointId) -> Result<HeapSnapshotView> {
        let mut checkpoints = self.inner.checkpoints.lock();
        let since_epoch = self.inner.delta_base_epoch(&checkpoints, since)?;
        Ok(HeapSnapshotView::delta(
            self.inner.clone(),
            &mut checkpoints,
            since_epoch,
        ))
    }

    /// The changelog chain of this backend's incremental checkpoints.
    pub fn changelog_chain(&self) -> &Arc<ChangelogChain> {
        &self.inner.chain
    }

    /// Counts entries and bookkeeping (walks all state: not for the hot path).
    pub fn stats(&self) -> HeapStats {
        fn add<V: Versioned>(stats: &mut HeapStats, tables: &KgTables<V>) {
            for (_, table) in tables.created() {
                stats.change_records += table.changes().lock().len();
                stats.retained_entries += table.retained_len();
                for entry in table.map.iter() {
                    stats.entries += 1;
                    let (versions, tombstones) = entry.value().history();
                    stats.old_versions += versions;
                    stats.tombstones += tombstones;
                }
            }
        }
        let mut stats = HeapStats {
            live_snapshots: self.inner.epochs.live_count(),
            ..HeapStats::default()
        };
        for (_, table) in self.inner.tables.iter() {
            match &table.storage {
                Storage::Bytes(t) => add(&mut stats, t),
                Storage::Map(t) => add(&mut stats, t),
            }
        }
        stats
    }
}

impl Inner {
    #[inline]
    fn check_owned(&self, key_group: KeyGroup) -> Result<()> {
        self.range.check_owns(key_group)
    }

    #[inline]
    fn table(&self, state: StateId) -> Result<&StateTable> {
        self.tables
            .get(state.index())
            .ok_or_else(|| Error::UnknownStateId { id: state.0 })
    }

    /// The byte-string tables of a state with `layout`.
    #[inline]
    fn bytes(
        &self,
        state: StateId,
        layout: StorageLayout,
        operation: &'static str,
    ) -> Result<&KgTables<Cell>> {
        let table = self.table(state)?;
        match &table.storage {
            Storage::Bytes(t) if table.kind.layout() == layout => Ok(t),
            _ => Err(self.registry.unsupported(state, operation)),
        }
    }

    #[inline]
    fn maps(&self, state: StateId, operation: &'static str) -> Result<&KgTables<MapSlot>> {
        let table = self.table(state)?;
        match &table.storage {
            Storage::Map(t) => Ok(t),
            Storage::Bytes(_) => Err(self.registry.unsupported(state, operation)),
        }
    }

    #[inline]
    fn create_table<'a, V>(
        &self,
        tables: &'a KgTables<V>,
        key_group: KeyGroup,
    ) -> Result<&'a KgTable<V>> {
        tables
            .get_or_create(key_group)
            .ok_or_else(|| self.range.not_owned(key_group))
    }

    #[inline]
    fn track(&self, user_write: bool) -> bool {
        user_write && self.config.change_tracking
    }

    #[inline]
    fn set_bytes(
        &self,
        tables: &KgTables<Cell>,
        at: Addr<'_>,
        bytes: &[u8],
        user_write: bool,
    ) -> Result<()> {
        let table = self.create_table(tables, at.key_group)?;
        table.write(
            at.key,
            at.namespace,
            &self.epochs,
            self.track(user_write),
            |cell, e| cell.replace_with(e, |b| b.extend_from_slice(bytes)).into(),
            |e| Some(Cell::new(e.stamp, bytes.to_vec())),
        );
        Ok(())
    }

    fn remove_bytes(&self, tables: &KgTables<Cell>, at: Addr<'_>, user_write: bool) {
        if let Some(table) = tables.get(at.key_group) {
            table.write(
                at.key,
                at.namespace,
                &self.epochs,
                self.track(user_write),
                |cell, e| cell.remove(e).into(),
                |_| None,
            );
        }
    }

    fn clear_map(&self, tables: &KgTables<MapSlot>, at: Addr<'_>, user_write: bool) {
        if let Some(table) = tables.get(at.key_group) {
            table.write(
                at.key,
                at.namespace,
                &self.epochs,
                self.track(user_write),
                |slot, e| slot.clear(e).into(),
                |_| None,
            );
        }
    }

    fn remove_any(&self, state: StateId, at: Addr<'_>, user_write: bool) -> Result<()> {
        match &self.table(state)?.storage {
            Storage::Bytes(t) => self.remove_bytes(t, at, user_write),
            Storage::Map(t) => self.clear_map(t, at, user_write),
        }
        Ok(())
    }

    fn map_put(
        &self,
        tables: &KgTables<MapSlot>,
        at: Addr<'_>,
        user_key: &[u8],
        value: &[u8],
        user_write: bool,
    ) -> Result<()> {
        let table = self.create_table(tables, at.key_group)?;
        table.write(
            at.key,
            at.namespace,
            &self.epochs,
            self.track(user_write),
            |slot, e| {
                let change = slot.put(user_key, value, e);
                Outcome {
                    change,
                    user_key: change.kept_old.then(|| Box::from(user_key)),
                }
            },
            |e| {
                Some(MapSlot::new(
                    tables.hasher().clone(),
                    e.stamp,
                    user_key,
                    value,
                ))
            },
        );
        Ok(())
    }

    /// The epoch of `since`, if a delta since it can be produced.
    fn delta_base_epoch(&self, checkpoints: &Checkpoints, since: CheckpointId) -> Result<u64> {
        if !self.config.change_tracking {
            return Err(Error::Config(
                "change tracking is off in this heap backend's HeapConfig: take a full snapshot or turn it on".into(),
            ));
        }
        match checkpoints.completed {
            Some((id, epoch)) if id == since && epoch >= checkpoints.forgotten_through => Ok(epoch),
            _ => Err(Error::CheckpointState {
                id: since.0,
                state: "not a delta base",
                reason: "only the last completed incremental checkpoint of this backend can be the base of a delta: write a full base".into(),
            }),
        }
    }

    /// Follows the chain after a notice or a re-base: without a completed base no delta can
    /// be written, so no change needs to be kept (see `ChangelogChain` for when a chain ends).
    fn sync_with_chain(&self, checkpoints: &mut Checkpoints) {
        let base = self.chain.last_completed();
        if checkpoints
            .completed
            .is_some_and(|(id, _)| Some(id) != base)
        {
            checkpoints.completed = None;
        }
        self.forget_changes(checkpoints);
    }

    /// True when the change records outgrow the live entries: a delta would carry more
    /// than a base, and records of keys created and deleted since the base would otherwise
    /// pile up for as long as no incremental checkpoint completes.
    fn changes_outgrow_state(&self) -> bool {
        fn add<V>(tables: &KgTables<V>, records: &mut usize, entries: &mut usize) {
            for (_, table) in tables.created() {
                *records += table.changes().lock().len();
                *entries += table.map.len();
            }
        }
        let (mut records, mut entries) = (0, 0);
        for (_, table) in self.tables.iter() {
            match &table.storage {
                Storage::Bytes(t) => add(t, &mut records, &mut entries),
                Storage::Map(t) => add(t, &mut records, &mut entries),
            }
        }
        records > MIN_RECORDS_BEFORE_REBASE.max(2 * entries)
    }

    /// Drops change records every possible delta base already holds (all of them when there
    /// is no base), except what a live delta view still reads.
    fn forget_changes(&self, checkpoints: &mut Checkpoints) {
        let completed = match checkpoints.completed {
            Some((_, epoch)) => epoch,
            None => self.epochs.newest_sealed(),
        };
        let floor = checkpoints
            .delta_floors
            .keys()
            .next()
            .map_or(completed, |f| (*f).min(completed));
        if floor <= checkpoints.forgotten_through {
            return;
        }
        checkpoints.forgotten_through = floor;
        fn forget<V>(tables: &KgTables<V>, floor: u64) {
            for (_, table) in tables.created() {
                table.changes().lock().forget_through(floor);
            }
        }
        for (_, table) in self.tables.iter() {
            match &table.storage {
                Storage::Bytes(t) => forget(t, floor),
                Storage::Map(t) => forget(t, floor),
            }
        }
    }

    pub(crate) fn add_delta_floor(checkpoints: &mut Checkpoints, since: u64) {
        *checkpoints.delta_floors.entry(since).or_default() += 1;
    }

    /// A delta view with base epoch `since` was dropped.
    pub(crate) fn release_delta_floor(&self, since: u64) {
        let mut checkpoints = self.checkpoints.lock();
        if let Some(count) = checkpoints.delta_floors.get_mut(&since) {
            *count -= 1;
            if *count == 0 {
                checkpoints.delta_floors.remove(&since);
            }
        }
        self.forget_changes(&mut checkpoints);
    }

    /// A snapshot view of `epoch` was dropped: prune what only it needed.
    pub(crate) fn release_snapshot(&self, epoch: u64) {
        let live = self.epochs.unpin(epoch);
        fn sweep<V: Versioned>(tables: &KgTables<V>, live: &crate::cell::LiveSnapshots) {
            for (_, table) in tables.created() {
                table.sweep(live);
            }
        }
        for (_, table) in self.tables.iter() {
            match &table.storage {
                Storage::Bytes(t) => sweep(t, &live),
                Storage::Map(t) => sweep(t, &live),
            }
        }
    }

    pub(crate) fn states(&self) -> Vec<(StateId, StateMetadata)> {
        self.registry.all()
    }
}

impl KeyedStateBackend for HeapBackend {
    fn max_parallelism(&self) -> MaxParallelism {
        self.inner.max
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.inner.range
    }

    fn register_state(&self, meta: &StateMetadata) -> Result<StateId> {
        let inner = &*self.inner;
        if let Some(id) = inner.registry.id_of(&meta.name) {
            // Fast path for re-binding (typed handles register on every bind); only once the
            // table exists, or a caller could use the id before the registering thread pushed it.
            if inner.tables.get(id.index()).is_some() {
                inner.registry.get(id)?.check_compatible(meta)?;
                return Ok(id);
            }
        }
        let _serialized = inner.register_lock.lock();
        let registration = inner.registry.register(meta)?;
        let id = registration.id();
        if inner.tables.get(id.index()).is_none() {
            let index = inner.tables.push(StateTable::new(
                meta.kind,
                inner.range,
                &inner.hasher,
                inner.shards,
            ));
            if index != id.index() {
                return Err(Error::backend(
                    "heap",
                    format!(
                        "state table {index} was created for state id {}: registration raced; this is a bug in flowstate-heap",
                        id.0
                    ),
                ));
            }
        }
        Ok(id)
    }

    fn registered_states(&self) -> Vec<(StateId, StateMetadata)> {
        self.inner.registry.all()
    }

    #[inline]
    fn get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut value = None;
        self.get_with(state, key, namespace, &mut |bytes| {
            value = bytes.map(<[u8]>::to_vec);
            Ok(())
        })?;
        Ok(value)
    }

    fn get_with(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.bytes(state, StorageLayout::Value, "get")?;
        // Decoded under the entry's shard lock: no copy of the value.
        match tables.get(key.key_group()) {
            Some(table) => table.read_or_absent(key.key(), namespace, |cell| {
                read(cell.and_then(Cell::current))
            }),
            None => read(None),
        }
    }

    #[inline]
    fn put(&self, state: StateId, key: &KeyContext, namespace: &[u8], value: &[u8]) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.bytes(state, StorageLayout::Value, "put")?;
        inner.set_bytes(tables, Addr::of(key, namespace), value, true)
    }

    fn remove(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        inner.remove_any(state, Addr::of(key, namespace), true)
    }

    fn list_get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.bytes(state, StorageLayout::List, "list_get")?;
        let decoded = tables.get(key.key_group()).and_then(|t| {
            t.read(key.key(), namespace, |cell| {
                cell.current().map(list_encoding::decode)
            })
            .flatten()
        });
        decoded.unwrap_or_else(|| Ok(Vec::new()))
    }

    fn list_append(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.bytes(state, StorageLayout::List, "list_append")?;
        if elements.is_empty() {
            // Appending nothing must not create an (empty, hence absent) list.
            return Ok(());
        }
        let table = inner.create_table(tables, key.key_group())?;
        table.write(
            key.key(),
            namespace,
            &inner.epochs,
            inner.track(true),
            |cell, e| {
                cell.append_with(e, |buf| {
                    buf.reserve(elements.iter().map(|el| 4 + el.len()).sum());
                    for element in elements {
                        list_encoding::push_element(buf, element);
                    }
                })
                .into()
            },
            |e| Some(Cell::new(e.stamp, encoded_list(elements))),
        );
        Ok(())
    }

    fn list_replace(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.bytes(state, StorageLayout::List, "list_replace")?;
        if elements.is_empty() {
            inner.remove_bytes(tables, Addr::of(key, namespace), true);
            return Ok(());
        }
        let table = inner.create_table(tables, key.key_group())?;
        table.write(
            key.key(),
            namespace,
            &inner.epochs,
            inner.track(true),
            |cell, e| {
                cell.replace_with(e, |buf| {
                    buf.reserve(elements.iter().map(|el| 4 + el.len()).sum());
                    for element in elements {
                        list_encoding::push_element(buf, element);
                    }
                })
                .into()
            },
            |e| Some(Cell::new(e.stamp, encoded_list(elements))),
        );
        Ok(())
    }

    fn map_get(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.maps(state, "map_get")?;
        Ok(tables.get(key.key_group()).and_then(|t| {
            t.read(key.key(), namespace, |slot| {
                slot.get(user_key).map(<[u8]>::to_vec)
            })
            .flatten()
        }))
    }

    fn map_put(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.maps(state, "map_put")?;
        inner.map_put(tables, Addr::of(key, namespace), user_key, value, true)
    }

    fn map_remove(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.maps(state, "map_remove")?;
        if let Some(table) = tables.get(key.key_group()) {
            table.write(
                key.key(),
                namespace,
                &inner.epochs,
                inner.track(true),
                |slot, e| {
                    let change = slot.remove_entry(user_key, e);
                    Outcome {
                        change,
                        user_key: change.kept_old.then(|| Box::from(user_key)),
                    }
                },
                |_| None,
            );
        }
        Ok(())
    }

    fn map_entries(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.maps(state, "map_entries")?;
        Ok(tables
            .get(key.key_group())
            .and_then(|t| {
                t.read(key.key(), namespace, |slot| {
                    slot.entries()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect::<Vec<_>>()
                })
            })
            .unwrap_or_default())
    }

    fn map_contains(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<bool> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.maps(state, "map_contains")?;
        Ok(tables.get(key.key_group()).is_some_and(|t| {
            t.read(key.key(), namespace, |slot| slot.get(user_key).is_some())
                .unwrap_or(false)
        }))
    }

    fn map_is_empty(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<bool> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        let tables = inner.maps(state, "map_is_empty")?;
        Ok(!tables.get(key.key_group()).is_some_and(|t| {
            t.read(key.key(), namespace, |slot| slot.present_len() > 0)
                .unwrap_or(false)
        }))
    }

    fn keys(&self, state: StateId, namespace: &[u8]) -> Result<Vec<KeyContext>> {
        fn collect<V: Versioned>(
            tables: &KgTables<V>,
            namespace: &[u8],
            out: &mut Vec<KeyContext>,
        ) {
            for (key_group, table) in tables.created() {
                for entry in table.map.iter() {
                    if entry.key().namespace() == namespace && entry.value().is_present() {
                        out.push(KeyContext::with_key_group(entry.key().key(), key_group));
                    }
                }
            }
        }
        let mut out = Vec::new();
        match &self.inner.table(state)?.storage {
            Storage::Bytes(t) => collect(t, namespace, &mut out),
            Storage::Map(t) => collect(t, namespace, &mut out),
        }
        Ok(out)
    }

    fn apply_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key_group)?;
        for row in rows {
            let actual = key_group_for_key_bytes(row.key, inner.max);
            if actual != key_group {
                return Err(Error::corrupt(
                    "snapshot rows",
                    format!("a row of key group {key_group} holds a key of key group {actual}"),
                ));
            }
            let table = inner.table(row.state)?;
            let at = Addr {
                key_group,
                key: row.key,
                namespace: row.namespace,
            };
            match (&table.storage, row.value) {
                (_, RowValue::Tombstone) => inner.remove_any(row.state, at, false)?,
                (Storage::Bytes(t), RowValue::Value(value))
                    if table.kind.layout() == StorageLayout::Value =>
                {
                    inner.set_bytes(t, at, value, false)?
                }
                (Storage::Bytes(t), RowValue::List(list))
                    if table.kind.layout() == StorageLayout::List =>
                {
                    // Validated here so that a damaged list fails the restore, not a later read.
                    for element in list_encoding::iter(list) {
                        element?;
                    }
                    if list.is_empty() {
                        inner.remove_bytes(t, at, false);
                    } else {
                        inner.set_bytes(t, at, list, false)?;
                    }
                }
                (Storage::Map(t), RowValue::MapEntry { user_key, value }) => {
                    inner.map_put(t, at, user_key, value, false)?
                }
                (_, value) => {
                    return Err(Error::corrupt(
                        "snapshot rows",
                        format!(
                            "a {} row for {} state #{}",
                            match value {
                                RowValue::Value(_) => "value",
                                RowValue::List(_) => "list",
                                RowValue::MapEntry { .. } => "map entry",
                                RowValue::Tombstone => "tombstone",
                            },
                            table.kind,
                            row.state.0
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

impl StateBackend for HeapBackend {
    fn snapshot(&self, request: &SnapshotRequest) -> Result<Box<dyn SnapshotJob>> {
        let inner = &self.inner;
        if request.kind == SnapshotKind::Incremental && inner.config.change_tracking {
            let mut checkpoints = inner.checkpoints.lock();
            inner.epochs.start_tracking();
            if inner.changes_outgrow_state() {
                inner.chain.reset(request.checkpoint_id);
                inner.sync_with_chain(&mut checkpoints);
            }
            let plan = inner.chain.plan();
            let (view, plan) = match plan {
                ChangelogPlan::Delta { since, .. } => {
                    match inner.delta_base_epoch(&checkpoints, since) {
                        Ok(since_epoch) => (
                            HeapSnapshotView::delta(inner.clone(), &mut checkpoints, since_epoch),
                            plan,
                        ),
                        // The chain and this backend disagree on the base: start a new chain.
                        Err(_) => (HeapSnapshotView::full(inner.clone()), ChangelogPlan::Base),
                    }
                }
                ChangelogPlan::Base => (HeapSnapshotView::full(inner.clone()), plan),
            };
            checkpoints
                .pending
                .insert(request.checkpoint_id, view.epoch());
            return Ok(Box::new(ChangelogSnapshotJob::new(
                Box::new(view),
                plan,
                inner.chain.clone(),
                request.checkpoint_id,
                "heap",
                request.subtask_index,
            )));
        }
        let view = HeapSnapshotView::full(inner.clone());
        inner.chain.record_full(request.checkpoint_id);
        Ok(Box::new(CanonicalSnapshotJob::for_request(
            Box::new(view),
            "heap",
            request,
        )))
    }

    fn notify_checkpoint_complete(&self, id: CheckpointId) -> Result<()> {
        let inner = &self.inner;
        let mut checkpoints = inner.checkpoints.lock();
        let epoch = checkpoints.pending.remove(&id);
        // Older pending checkpoints are subsumed: they will never complete.
        checkpoints.pending.retain(|p, _| *p > id);
        // A chain checkpoint becomes the base; a completed full one ends the chain.
        if inner.chain.complete(id) {
            if let Some(epoch) = epoch {
                if checkpoints.completed.is_none_or(|(c, _)| c < id) {
                    checkpoints.completed = Some((id, epoch));
                }
            }
        }
        inner.sync_with_chain(&mut checkpoints);
        Ok(())
    }

    fn notify_checkpoint_aborted(&self, id: CheckpointId) -> Result<()> {
        let mut checkpoints = self.inner.checkpoints.lock();
        checkpoints.pending.remove(&id);
        self.inner.chain.abort(id);
        self.inner.sync_with_chain(&mut checkpoints);
        Ok(())
    }
}
