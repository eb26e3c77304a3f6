//! [`ReferenceBackend`]: the live keyed state, one `BTreeMap` per registered state.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flowstate_api::changelog::{ChangeLog, ChangelogChain, ChangelogPolicy};
use flowstate_api::key_layout::{
    decode_key, map_entry_key, prefix_successor, push_prefix, value_key,
};
use flowstate_api::list_encoding;
use flowstate_api::state::{Registration, StateRegistry, StorageLayout};
use flowstate_api::{
    Error, KeyContext, KeyGroup, KeyGroupRange, KeyedStateBackend, MaxParallelism, Result,
    RowValue, StateId, StateMetadata, StateRow,
};

/// Stored key ([`flowstate_api::key_layout`]) to value bytes (a list in [`list_encoding`]
/// form, a map entry's value).
pub(super) type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

/// The rows of one registered state.
#[derive(Clone, Debug)]
pub(super) struct Table {
    pub(super) layout: StorageLayout,
    pub(super) rows: Rows,
}

/// Everything writes change, behind one lock.
#[derive(Debug, Default)]
pub(super) struct Inner {
    /// Indexed by [`StateId`]: ids are issued under this lock, so a new id is `tables.len()`.
    pub(super) tables: Vec<Table>,
    /// Changes since the last completed checkpoint of the chain. `None` until the first
    /// incremental checkpoint, which is always a full base: a backend checkpointed only in
    /// full keeps no change log.
    pub(super) changes: Option<ChangeLog>,
}

/// Keyed state in `BTreeMap`s behind one mutex (see the [module docs](super)).
#[derive(Debug)]
pub struct ReferenceBackend {
    pub(super) max: MaxParallelism,
    pub(super) range: KeyGroupRange,
    pub(super) registry: StateRegistry,
    /// Bases and deltas of incremental checkpoints (shared with their snapshot jobs).
    pub(super) chain: Arc<ChangelogChain>,
    inner: Mutex<Inner>,
}

/// The (key group, key, namespace) prefix of the key layout.
pub(super) fn prefix_of(key_group: KeyGroup, key: &[u8], namespace: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::new();
    push_prefix(&mut prefix, key_group, key, namespace);
    prefix
}

/// The rows whose key starts with `prefix`: with a (key group, key, namespace) prefix, all
/// that (key, namespace) holds, since the key layout length-prefixes key and namespace.
pub(super) fn under<'a>(
    rows: &'a Rows,
    prefix: &[u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> {
    let end = prefix_successor(prefix).map_or(Bound::Unbounded, Bound::Excluded);
    rows.range((Bound::Included(prefix.to_vec()), end))
}

/// Removes everything a (key, namespace) holds, whatever the state's kind.
fn clear(rows: &mut Rows, prefix: &[u8]) {
    let doomed: Vec<Vec<u8>> = under(rows, prefix).map(|(k, _)| k.clone()).collect();
    for key in doomed {
        rows.remove(&key);
    }
}

impl ReferenceBackend {
    /// An empty backend owning `range` of `max`'s key groups.
    pub fn new(max: MaxParallelism, range: KeyGroupRange) -> Result<Self> {
        if range.end().get() >= max.get() {
            return Err(Error::KeyGroupOutOfBounds {
                key_group: range.end().get(),
                max_parallelism: max.get(),
            });
        }
        Ok(Self {
            max,
            range,
            registry: StateRegistry::new(),
            chain: Arc::new(ChangelogChain::new(ChangelogPolicy::default())),
            inner: Mutex::default(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Poisoned only by a panic inside one BTreeMap call, which leaves the map valid.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_owned(&self, key_group: KeyGroup) -> Result<()> {
        self.range.check_owns(key_group)
    }

    /// The checks of every access, in the contract's order: `key` is owned, `state` is
    /// registered, and `operation` suits its kind (`None`: any kind).
    /// The errors come from `flowstate-api` (`KeyGroupRange::check_owns`,
    /// `StateRegistry::unsupported`), as in every backend.
    fn table<'a>(
        &self,
        tables: &'a mut [Table],
        state: StateId,
        key: &KeyContext,
        layout: Option<StorageLayout>,
        operation: &'static str,
    ) -> Result<&'a mut Rows> {
        self.check_owned(key.key_group())?;
        let table = tables
            .get_mut(state.index())
            .ok_or(Error::UnknownStateId { id: state.0 })?;
        if layout.is_some_and(|wanted| wanted != table.layout) {
            return Err(self.registry.unsupported(state, operation));
        }
        Ok(&mut table.rows)
    }

    /// One read, after the checks.
    fn read<R>(
        &self,
        state: StateId,
        key: &KeyContext,
        layout: StorageLayout,
        operation: &'static str,
        read: impl FnOnce(&Rows) -> Result<R>,
    ) -> Result<R> {
        read(self.table(&mut self.lock().tables, state, key, Some(layout), operation)?)
    }

    /// One write, after the checks; the change is recorded for the next delta under the
    /// same lock, so a checkpoint sees the write and its record together or neither.
    fn write(
        &self,
        state: StateId,
        key: &KeyContext,
        namespace: &[u8],
        layout: Option<StorageLayout>,
        operation: &'static str,
        write: impl FnOnce(&mut Rows),
    ) -> Result<()> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        write(self.table(&mut inner.tables, state, key, layout, operation)?);
        if let Some(changes) = &inner.changes {
            changes.record(state, key.key_group(), key.key(), namespace);
        }
        Ok(())
    }
}

const VALUE: StorageLayout = StorageLayout::Value;
const LIST: StorageLayout = StorageLayout::List;
const MAP: StorageLayout = StorageLayout::Map;

impl KeyedStateBackend for ReferenceBackend {
    fn max_parallelism(&self) -> MaxParallelism {
        self.max
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn register_state(&self, meta: &StateMetadata) -> Result<StateId> {
        // Under the lock, so that the registry's ids and the table indices agree.
        let mut inner = self.lock();
        let registration = self.registry.register(meta)?;
        if let Registration::Created(_) = registration {
            let layout = meta.kind.layout();
            let rows = Rows::new();
            inner.tables.push(Table { layout, rows });
        }
        Ok(registration.id())
    }

    fn registered_states(&self) -> Vec<(StateId, StateMetadata)> {
        self.registry.all()
    }

    fn get(&self, state: StateId, key: &KeyContext, ns: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(state, key, VALUE, "get", |rows| {
            Ok(rows.get(&value_key(key, ns)).cloned())
        })
    }

    fn put(&self, state: StateId, key: &KeyContext, ns: &[u8], value: &[u8]) -> Result<()> {
        self.write(state, key, ns, Some(VALUE), "put", |rows| {
            rows.insert(value_key(key, ns), value.to_vec());
        })
    }

    fn remove(&self, state: StateId, key: &KeyContext, ns: &[u8]) -> Result<()> {
        self.write(state, key, ns, None, "remove", |rows| {
            clear(rows, &value_key(key, ns))
        })
    }

    fn list_get(&self, state: StateId, key: &KeyContext, ns: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.read(state, key, LIST, "list_get", |rows| {
            rows.get(&value_key(key, ns))
                .map_or(Ok(Vec::new()), |list| list_encoding::decode(list))
        })
    }

    fn list_append(
        &self,
        state: StateId,
        key: &KeyContext,
        ns: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        if elements.is_empty() {
            // Checked all the same, but appending nothing must not create an (empty) list.
            return self.read(state, key, LIST, "list_append", |_| Ok(()));
        }
        self.write(state, key, ns, Some(LIST), "list_append", |rows| {
            // Encoded lists concatenate: no need to decode the stored one.
            let list = rows.entry(value_key(key, ns)).or_default();
            list.extend(list_encoding::encode(elements.iter().copied()));
        })
    }

    fn list_replace(
        &self,
        state: StateId,
        key: &KeyContext,
        ns: &[u8],
        elements: &[&[u8]],
    ) -> Result<()> {
        self.write(state, key, ns, Some(LIST), "list_replace", |rows| {
            if elements.is_empty() {
                rows.remove(&value_key(key, ns));
            } else {
                let list = list_encoding::encode(elements.iter().copied());
                rows.insert(value_key(key, ns), list);
            }
        })
    }

    fn map_get(
        &self,
        state: StateId,
        key: &KeyContext,
        ns: &[u8],
        user_key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.read(state, key, MAP, "map_get", |rows| {
            Ok(rows.get(&map_entry_key(key, ns, user_key)).cloned())
        })
    }

    fn map_put(
        &self,
        state: StateId,
        key: &KeyContext,
        ns: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.write(state, key, ns, Some(MAP), "map_put", |rows| {
            rows.insert(map_entry_key(key, ns, user_key), value.to_vec());
        })
    }

    fn map_remove(
        &self,
        state: StateId,
        key: &KeyContext,
        ns: &[u8],
        user_key: &[u8],
    ) -> Result<()> {
        self.write(state, key, ns, Some(MAP), "map_remove", |rows| {
            rows.remove(&map_entry_key(key, ns, user_key));
        })
    }

    fn map_entries(
        &self,
        state: StateId,
        key: &KeyContext,
        ns: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read(state, key, MAP, "map_entries", |rows| {
            let prefix = value_key(key, ns);
            let entry = |(k, v): (&Vec<u8>, &Vec<u8>)| {
                Some((k.strip_prefix(prefix.as_slice())?.to_vec(), v.clone()))
            };
            Ok(under(rows, &prefix).filter_map(entry).collect())
        })
    }

    fn keys(&self, state: StateId, namespace: &[u8]) -> Result<Vec<KeyContext>> {
        let inner = self.lock();
        let table =
            (inner.tables.get(state.index())).ok_or(Error::UnknownStateId { id: state.0 })?;
        let mut out: Vec<KeyContext> = Vec::new();
        for stored in table.rows.keys() {
            let decoded = decode_key(stored)?;
            if decoded.namespace != namespace {
                continue;
            }
            let key_group = KeyGroup::new(decoded.key_group, self.max)?;
            // Sorted by (key group, key, namespace): a key's entries in one namespace are
            // adjacent, so comparing with the last key found drops duplicates.
            let last = out.last();
            if last.is_none_or(|l| l.key_group() != key_group || l.key() != decoded.key) {
                out.push(KeyContext::with_key_group(decoded.key.to_vec(), key_group));
            }
        }
        Ok(out)
    }

    fn apply_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()> {
        self.check_owned(key_group)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        for row in rows {
            // The restore driver has checked each row's key group, state kind and list.
            let table = (inner.tables.get_mut(row.state.index()))
                .ok_or(Error::UnknownStateId { id: row.state.0 })?;
            let mut stored = prefix_of(key_group, row.key, row.namespace);
            match (table.layout, row.value) {
                (_, RowValue::Tombstone) => clear(&mut table.rows, &stored),
                (LIST, RowValue::List([])) => {
                    table.rows.remove(&stored);
                }
                (VALUE, RowValue::Value(bytes)) | (LIST, RowValue::List(bytes)) => {
                    table.rows.insert(stored, bytes.to_vec());
                }
                (MAP, RowValue::MapEntry { user_key, value }) => {
                    stored.extend_from_slice(user_key);
                    table.rows.insert(stored, value.to_vec());
                }
                (layout, value) => {
                    let detail = format!("a {value:?} row for a state stored as {layout:?}");
                    return Err(Error::corrupt("snapshot rows", detail));
                }
            }
            // Recorded like any write, so that a delta never misses restored rows.
            if let Some(changes) = &inner.changes {
                changes.record(row.state, key_group, row.key, row.namespace);
            }
        }
        Ok(())
    }
}
