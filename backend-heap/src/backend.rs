//! [`HeapBackend`]: keyed state in memory, the live state and its operations. Snapshots and
//! checkpoint bookkeeping are in `checkpoint`, restores (`apply_rows`) in `restore`.

use std::sync::Arc;

use flowstate_api::changelog::ChangelogChain;
use flowstate_api::list_encoding;
use flowstate_api::state::{StateRegistry, StorageLayout};
use flowstate_api::{
    Error, KeyContext, KeyGroup, KeyGroupRange, KeyedStateBackend, MaxParallelism, Result, StateId,
    StateMetadata, StateRow,
};
use parking_lot::Mutex;

use crate::cell::{Cell, Versioned, WriteEpoch};
use crate::checkpoint::Checkpoints;
use crate::config::HeapConfig;
use crate::epoch::Epochs;
use crate::key::EntryHasher;
use crate::map_slot::MapSlot;
use crate::table::{KgTables, Outcome, StateTable, Storage};

/// What a [`HeapBackend`] handle shares with its clones and its snapshot views.
pub(crate) struct Inner {
    pub(crate) max: MaxParallelism,
    pub(crate) range: KeyGroupRange,
    pub(crate) config: HeapConfig,
    registry: StateRegistry,
    /// Keeps registry ids and table indices equal under concurrent registration.
    register_lock: Mutex<()>,
    /// Indexed by `StateId`; append-only and lock-free to read (the hot path reads it).
    pub(crate) tables: boxcar::Vec<StateTable>,
    pub(crate) epochs: Epochs,
    hasher: EntryHasher,
    shards: usize,
    pub(crate) checkpoints: Mutex<Checkpoints>,
    pub(crate) chain: Arc<ChangelogChain>,
}

/// The heap keyed state backend. Cheap to clone (a shared handle).
///
/// See the [crate docs](crate) for the storage layout and the snapshot scheme.
#[derive(Clone)]
pub struct HeapBackend {
    pub(crate) inner: Arc<Inner>,
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
pub(crate) struct Addr<'a> {
    pub(crate) key_group: KeyGroup,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
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

/// `write_list::<APPEND>` appends to a list, `write_list::<REPLACE>` replaces it.
const APPEND: bool = true;
const REPLACE: bool = false;

/// The `vacant` of a write that never creates an entry (a removal).
fn no_entry<V>() -> Option<fn(WriteEpoch) -> V> {
    None
}

fn encoded_len(elements: &[&[u8]]) -> usize {
    elements.iter().map(|e| 4 + e.len()).sum()
}

/// Appends `elements` to `buf` in `list_encoding` form.
#[inline]
fn push_elements(buf: &mut Vec<u8>, elements: &[&[u8]]) {
    buf.reserve(encoded_len(elements));
    for element in elements {
        list_encoding::push_element(buf, element);
    }
}

/// `elements` in `list_encoding` form, in a buffer of exactly their size.
fn encoded_list(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(elements));
    for element in elements {
        list_encoding::push_element(&mut out, element);
    }
    out
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
        let shards = config.shards(range)?;
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
}

impl Inner {
    #[inline]
    fn check_owned(&self, key_group: KeyGroup) -> Result<()> {
        self.range.check_owns(key_group)
    }

    #[inline]
    pub(crate) fn table(&self, state: StateId) -> Result<&StateTable> {
        self.tables
            .get(state.index())
            .ok_or_else(|| Error::UnknownStateId { id: state.0 })
    }

    /// The byte-string tables of a state with `layout`, once `key` is known to be owned.
    #[inline]
    fn bytes(
        &self,
        state: StateId,
        key: &KeyContext,
        layout: StorageLayout,
        operation: &'static str,
    ) -> Result<&KgTables<Cell>> {
        self.check_owned(key.key_group())?;
        let table = self.table(state)?;
        match &table.storage {
            Storage::Bytes(t) if table.kind.layout() == layout => Ok(t),
            _ => Err(self.registry.unsupported(state, operation)),
        }
    }

    /// The list tables of a state, once `key` is known to be owned.
    #[inline]
    fn lists(
        &self,
        state: StateId,
        key: &KeyContext,
        operation: &'static str,
    ) -> Result<&KgTables<Cell>> {
        self.bytes(state, key, StorageLayout::List, operation)
    }

    /// The map tables of a state, once `key` is known to be owned.
    #[inline]
    fn maps(
        &self,
        state: StateId,
        key: &KeyContext,
        operation: &'static str,
    ) -> Result<&KgTables<MapSlot>> {
        self.check_owned(key.key_group())?;
        let table = self.table(state)?;
        match &table.storage {
            Storage::Map(t) => Ok(t),
            Storage::Bytes(_) => Err(self.registry.unsupported(state, operation)),
        }
    }

    #[inline]
    fn track(&self, user_write: bool) -> bool {
        user_write && self.config.change_tracking
    }

    /// Writes the entry at `at` (see [`crate::table::KgTable::write`]): `occupied` changes an
    /// existing entry, `vacant` creates a missing one, in a key-group table created on its
    /// first write. Without `vacant` (a removal) no table and no entry are created. Restore
    /// writes (`!user_write`) are not changes.
    #[inline]
    fn write<V: Versioned>(
        &self,
        tables: &KgTables<V>,
        at: Addr<'_>,
        user_write: bool,
        occupied: impl FnOnce(&mut V, WriteEpoch) -> Outcome,
        vacant: Option<impl FnOnce(WriteEpoch) -> V>,
    ) -> Result<()> {
        let table = if vacant.is_some() {
            tables
                .get_or_create(at.key_group)
                .ok_or_else(|| self.range.not_owned(at.key_group))?
        } else {
            match tables.get(at.key_group) {
                Some(table) => table,
                None => return Ok(()),
            }
        };
        let track = self.track(user_write);
        let vacant = |e| vacant.map(|create| create(e));
        table.write(at.key, at.namespace, &self.epochs, track, occupied, vacant);
        Ok(())
    }

    #[inline]
    pub(crate) fn set_bytes(
        &self,
        tables: &KgTables<Cell>,
        at: Addr<'_>,
        bytes: &[u8],
        user_write: bool,
    ) -> Result<()> {
        self.write(
            tables,
            at,
            user_write,
            |cell, e| cell.replace_with(e, |b| b.extend_from_slice(bytes)).into(),
            Some(|e: WriteEpoch| Cell::new(e.stamp, bytes.to_vec())),
        )
    }

    /// Appends `elements` to the list at `at` (creating it), or replaces the list with them.
    /// A const parameter, not an argument: each operation gets its own copy of the write,
    /// inlined into it as a write written out in place would be.
    #[inline]
    fn write_list<const APPENDS: bool>(
        &self,
        tables: &KgTables<Cell>,
        at: Addr<'_>,
        elements: &[&[u8]],
    ) -> Result<()> {
        let fill = |buf: &mut Vec<u8>| push_elements(buf, elements);
        self.write(
            tables,
            at,
            true,
            |cell, e| {
                Outcome::from(if APPENDS {
                    cell.append_with(e, fill)
                } else {
                    cell.replace_with(e, fill)
                })
            },
            Some(|e: WriteEpoch| Cell::new(e.stamp, encoded_list(elements))),
        )
    }

    pub(crate) fn remove_any(&self, state: StateId, at: Addr<'_>, user_write: bool) -> Result<()> {
        match &self.table(state)?.storage {
            Storage::Bytes(t) => {
                self.write(t, at, user_write, |c, e| c.remove(e).into(), no_entry())
            }
            Storage::Map(t) => self.write(t, at, user_write, |s, e| s.clear(e).into(), no_entry()),
        }
    }

    pub(crate) fn map_put(
        &self,
        tables: &KgTables<MapSlot>,
        at: Addr<'_>,
        user_key: &[u8],
        value: &[u8],
        user_write: bool,
    ) -> Result<()> {
        let hasher = tables.hasher();
        self.write(
            tables,
            at,
            user_write,
            |slot, e| Outcome::of_user_key(slot.put(user_key, value, e), user_key),
            Some(|e: WriteEpoch| MapSlot::new(hasher.clone(), e.stamp, user_key, value)),
        )
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
        let tables = self.inner.bytes(state, key, StorageLayout::Value, "get")?;
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
        let tables = inner.bytes(state, key, StorageLayout::Value, "put")?;
        inner.set_bytes(tables, Addr::of(key, namespace), value, true)
    }

    fn remove(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<()> {
        let inner = &*self.inner;
        inner.check_owned(key.key_group())?;
        inner.remove_any(state, Addr::of(key, namespace), true)
    }

    fn list_get(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        let tables = self.inner.lists(state, key, "list_get")?;
        tables
            .read(key, namespace, |cell| {
                cell.current().map(list_encoding::decode)
            })
            .flatten()
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    fn list_append(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        let tables = self.inner.lists(state, key, "list_append")?;
        if elements.is_empty() {
            // Appending nothing must not create an (empty, hence absent) list.
            return Ok(());
        }
        let at = Addr::of(key, namespace);
        self.inner.write_list::<APPEND>(tables, at, elements)
    }

    fn list_replace(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        let tables = self.inner.lists(state, key, "list_replace")?;
        let at = Addr::of(key, namespace);
        if elements.is_empty() {
            // Replacing with nothing removes the list.
            return self.inner.remove_any(state, at, true);
        }
        self.inner.write_list::<REPLACE>(tables, at, elements)
    }

    fn map_get(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let tables = self.inner.maps(state, key, "map_get")?;
        Ok(tables
            .read(key, namespace, |slot| {
                slot.get(user_key).map(<[u8]>::to_vec)
            })
            .flatten())
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
        let tables = inner.maps(state, key, "map_put")?;
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
        let tables = inner.maps(state, key, "map_remove")?;
        inner.write(
            tables,
            Addr::of(key, namespace),
            true,
            |slot, e| Outcome::of_user_key(slot.remove_entry(user_key, e), user_key),
            no_entry(),
        )
    }

    fn map_entries(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tables = self.inner.maps(state, key, "map_entries")?;
        Ok(tables
            .read(key, namespace, |slot| {
                slot.entries()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect::<Vec<_>>()
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
        let tables = self.inner.maps(state, key, "map_contains")?;
        Ok(tables
            .read(key, namespace, |slot| slot.get(user_key).is_some())
            .unwrap_or(false))
    }

    fn map_is_empty(&self, state: StateId, key: &KeyContext, namespace: &[u8]) -> Result<bool> {
        let tables = self.inner.maps(state, key, "map_is_empty")?;
        Ok(!tables
            .read(key, namespace, |slot| slot.present_len() > 0)
            .unwrap_or(false))
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
        self.inner.apply_rows(key_group, rows)
    }
}
