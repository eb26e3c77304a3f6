//! The byte-level store of one subtask's operator state: registration, list and broadcast
//! operations on encoded elements and entries, snapshot, and the store a restore builds.
//! The typed handles ([`super::handles`]) are a layer on top of it.

use std::collections::{BTreeMap, HashMap};

use parking_lot::RwLock;

use super::metadata::OperatorStateMetadata;
use super::redistribution::redistribute_for_subtask;
use super::snapshot::{OperatorStateData, OperatorStateEntry, OperatorStateSnapshot};
use crate::error::{Error, Result};
use crate::key_groups::Parallelism;

/// A registered operator state within one store. Only meaningful for the store that issued it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorStateId(u32);

impl OperatorStateId {
    /// The id as a position in the store's state list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One subtask's operator state. Thread-safe: every method takes `&self`. Share it as
/// `Arc<OperatorStateStore>` (the typed handles hold one).
#[derive(Debug, Default)]
pub struct OperatorStateStore {
    /// Visible to the typed handles, which decode under the read lock instead of copying the
    /// bytes out first.
    pub(super) inner: RwLock<StoreInner>,
}

#[derive(Debug, Default)]
pub(super) struct StoreInner {
    /// Indexed by [`OperatorStateId`]; states are never removed, so ids stay valid.
    states: Vec<OperatorStateEntry>,
    by_name: HashMap<String, OperatorStateId>,
}

impl StoreInner {
    pub(super) fn entry(&self, id: OperatorStateId) -> Result<&OperatorStateEntry> {
        self.states
            .get(id.index())
            .ok_or_else(|| Error::UnknownStateId { id: id.0 })
    }
    fn entry_mut(&mut self, id: OperatorStateId) -> Result<&mut OperatorStateEntry> {
        self.states
            .get_mut(id.index())
            .ok_or_else(|| Error::UnknownStateId { id: id.0 })
    }
}

fn wrong_kind(metadata: &OperatorStateMetadata, requested: &str) -> Error {
    Error::OperatorStateModeMismatch {
        name: metadata.name.clone(),
        existing: metadata.mode.to_string(),
        requested: requested.to_string(),
    }
}

/// The elements of a list state; an error naming both kinds for any other state.
pub(super) fn as_list(entry: &OperatorStateEntry) -> Result<&Vec<Vec<u8>>> {
    match &entry.data {
        OperatorStateData::List(elements) => Ok(elements),
        OperatorStateData::Broadcast(_) => Err(wrong_kind(&entry.metadata, "list state")),
    }
}

fn as_list_mut(entry: &mut OperatorStateEntry) -> Result<&mut Vec<Vec<u8>>> {
    match &mut entry.data {
        OperatorStateData::List(elements) => Ok(elements),
        OperatorStateData::Broadcast(_) => Err(wrong_kind(&entry.metadata, "list state")),
    }
}

/// The map of a broadcast state; an error naming both kinds for any other state.
pub(super) fn as_map(entry: &OperatorStateEntry) -> Result<&BTreeMap<Vec<u8>, Vec<u8>>> {
    match &entry.data {
        OperatorStateData::Broadcast(map) => Ok(map),
        OperatorStateData::List(_) => Err(wrong_kind(&entry.metadata, "broadcast state")),
    }
}

fn as_map_mut(entry: &mut OperatorStateEntry) -> Result<&mut BTreeMap<Vec<u8>, Vec<u8>>> {
    match &mut entry.data {
        OperatorStateData::Broadcast(map) => Ok(map),
        OperatorStateData::List(_) => Err(wrong_kind(&entry.metadata, "broadcast state")),
    }
}

impl OperatorStateStore {
    /// An empty store (a subtask that starts without state).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a state, or returns the id of the compatible state of that name (e.g. one
    /// restored from a checkpoint). Another mode or codec under the same name is an error.
    pub fn register(&self, metadata: &OperatorStateMetadata) -> Result<OperatorStateId> {
        if !metadata.is_well_formed() {
            return Err(Error::Config(format!(
                "operator state '{}' is a {} but {} a key codec",
                metadata.name,
                metadata.mode,
                if metadata.key_codec.is_some() {
                    "has"
                } else {
                    "lacks"
                }
            )));
        }
        {
            let inner = self.inner.read();
            if let Some(&id) = inner.by_name.get(&metadata.name) {
                inner.entry(id)?.metadata.check_compatible(metadata)?;
                return Ok(id);
            }
        }
        let mut inner = self.inner.write();
        if let Some(&id) = inner.by_name.get(&metadata.name) {
            inner.entry(id)?.metadata.check_compatible(metadata)?;
            return Ok(id);
        }
        let id = OperatorStateId(inner.states.len() as u32);
        inner.states.push(OperatorStateEntry {
            metadata: metadata.clone(),
            data: OperatorStateData::empty_for(metadata.mode),
        });
        inner.by_name.insert(metadata.name.clone(), id);
        Ok(id)
    }

    /// The id of the state called `name`, if registered (or restored).
    pub fn id_of(&self, name: &str) -> Option<OperatorStateId> {
        self.inner.read().by_name.get(name).copied()
    }

    /// The metadata of state `id`.
    pub fn metadata(&self, id: OperatorStateId) -> Result<OperatorStateMetadata> {
        Ok(self.inner.read().entry(id)?.metadata.clone())
    }

    /// Every state, in id (registration) order.
    pub fn registered_states(&self) -> Vec<(OperatorStateId, OperatorStateMetadata)> {
        self.inner
            .read()
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| (OperatorStateId(i as u32), s.metadata.clone()))
            .collect()
    }

    /// The elements of list state `id`, in order.
    pub fn list_get(&self, id: OperatorStateId) -> Result<Vec<Vec<u8>>> {
        Ok(as_list(self.inner.read().entry(id)?)?.clone())
    }

    /// Appends elements to list state `id`.
    pub fn list_add(&self, id: OperatorStateId, elements: Vec<Vec<u8>>) -> Result<()> {
        as_list_mut(self.inner.write().entry_mut(id)?)?.extend(elements);
        Ok(())
    }

    /// Replaces the elements of list state `id`; an empty vector clears it.
    pub fn list_replace(&self, id: OperatorStateId, elements: Vec<Vec<u8>>) -> Result<()> {
        *as_list_mut(self.inner.write().entry_mut(id)?)? = elements;
        Ok(())
    }

    /// Removes every element of list state `id`.
    pub fn list_clear(&self, id: OperatorStateId) -> Result<()> {
        as_list_mut(self.inner.write().entry_mut(id)?)?.clear();
        Ok(())
    }

    /// The value under `key` in broadcast state `id`.
    pub fn broadcast_get(&self, id: OperatorStateId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(as_map(self.inner.read().entry(id)?)?.get(key).cloned())
    }

    /// Sets `key` to `value` in broadcast state `id`.
    pub fn broadcast_put(&self, id: OperatorStateId, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        as_map_mut(self.inner.write().entry_mut(id)?)?.insert(key, value);
        Ok(())
    }

    /// Removes `key` from broadcast state `id`; true when it was present.
    pub fn broadcast_remove(&self, id: OperatorStateId, key: &[u8]) -> Result<bool> {
        Ok(as_map_mut(self.inner.write().entry_mut(id)?)?
            .remove(key)
            .is_some())
    }

    /// True when broadcast state `id` has `key`.
    pub fn broadcast_contains(&self, id: OperatorStateId, key: &[u8]) -> Result<bool> {
        Ok(as_map(self.inner.read().entry(id)?)?.contains_key(key))
    }

    /// Every entry of broadcast state `id`, ordered by encoded key.
    pub fn broadcast_entries(&self, id: OperatorStateId) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(as_map(self.inner.read().entry(id)?)?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// Removes every entry of broadcast state `id`.
    pub fn broadcast_clear(&self, id: OperatorStateId) -> Result<()> {
        as_map_mut(self.inner.write().entry_mut(id)?)?.clear();
        Ok(())
    }

    /// A consistent copy of every state. Writers wait only while the contents are copied.
    pub fn snapshot(&self) -> OperatorStateSnapshot {
        let mut states = self.inner.read().states.clone();
        // Sorted after the lock is released: names are unique, so the order is total.
        states.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        OperatorStateSnapshot { states }
    }

    /// [`OperatorStateStore::snapshot`] encoded in the operator-state file format.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>> {
        self.snapshot().encode()
    }

    /// The store of new subtask `new_index` (of `new_parallelism`) after a restore from the
    /// old subtasks' snapshots, given in old-subtask order (`None` for an old subtask that had
    /// no operator state). Redistribution follows [`redistribute_for_subtask`].
    pub fn restore(
        old_subtasks: &[Option<OperatorStateSnapshot>],
        new_index: u32,
        new_parallelism: Parallelism,
    ) -> Result<Self> {
        let snapshot = redistribute_for_subtask(old_subtasks, new_index, new_parallelism)?;
        Ok(Self::from_snapshot(snapshot))
    }

    fn from_snapshot(snapshot: OperatorStateSnapshot) -> Self {
        let mut inner = StoreInner::default();
        for (i, state) in snapshot.states.into_iter().enumerate() {
            inner
                .by_name
                .insert(state.metadata.name.clone(), OperatorStateId(i as u32));
            inner.states.push(state);
        }
        Self {
            inner: RwLock::new(inner),
        }
    }
}
