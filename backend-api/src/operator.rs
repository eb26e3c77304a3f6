//! Operator state: list state and broadcast state held per subtask rather than per key.
//!
//! Every backend shares this implementation (backends implement only keyed state). A subtask's
//! operator state lives in one [`OperatorStateStore`]:
//! - **list states**, each registered with a [`Redistribution`] mode that decides how its
//!   elements are dealt out when the job is rescaled: [`Redistribution::EvenSplit`] (Flink's
//!   `getListState`) or [`Redistribution::Union`] (Flink's `getUnionListState`);
//! - **broadcast states**: maps that every subtask holds a copy of.
//!
//! The store is byte-level (elements and map entries are `Vec<u8>`); typed handles,
//! [`OperatorListState`] and [`BroadcastState`], encode with a [`Codec`] (by default
//! [`SerdeCodec`]). A state's codec ids are recorded with it and checked when the name is
//! registered again, as for keyed state.
//!
//! A checkpoint writes one file per subtask in the format of [`OperatorStateSnapshot::encode`]:
//!
//! ```text
//! "FLOWOPST" | format version u32 LE | body length u64 LE | crc32c(body) u32 LE | body
//! ```
//!
//! where the body is the postcard encoding of the snapshot (states in ascending name order).
//! Restoring at a new parallelism follows `KEY-GROUPS.md`; see [`redistribute_for_subtask`].
//!
//! ```
//! use std::sync::Arc;
//! use flowstate_api::operator::{OperatorStateStore, Redistribution};
//! use flowstate_api::Parallelism;
//!
//! // One subtask holding five Kafka offsets and a broadcast rule table.
//! let store = Arc::new(OperatorStateStore::new());
//! let offsets = store.list_state::<u64>("offsets", Redistribution::EvenSplit)?;
//! offsets.add_all([10u64, 11, 12, 13, 14])?;
//! let rules = store.broadcast_state::<String, u32>("rules")?;
//! rules.put(&"limit".to_string(), &7)?;
//!
//! // Rescale from one subtask to two: the offsets are split, the rules copied.
//! let old = [Some(store.snapshot())];
//! let two = Parallelism::new(2)?;
//! let second = Arc::new(OperatorStateStore::restore(&old, 1, two)?);
//! let offsets = second.list_state::<u64>("offsets", Redistribution::EvenSplit)?;
//! assert_eq!(offsets.get()?, vec![13, 14]);
//! let rules = second.broadcast_state::<String, u32>("rules")?;
//! assert_eq!(rules.get(&"limit".to_string())?, Some(7));
//! # Ok::<(), flowstate_api::Error>(())
//! ```

use std::borrow::Borrow;
use std::collections::btree_map::Entry as BTreeEntry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::checkpoint::{CheckpointId, CheckpointStorage, FileRef};
use crate::codec::{Codec, SerdeCodec};
use crate::error::{Error, Result};
use crate::key_groups::Parallelism;

/// The operator-state file format version this build writes and the newest it reads.
pub const OPERATOR_STATE_FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"FLOWOPST";
/// magic | version u32 | body length u64 | crc32c u32
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
const SNAPSHOT_WHAT: &str = "operator state snapshot";

/// How a list state's elements are redistributed when the parallelism changes.
///
/// Serialized by variant index: append new variants, never reorder.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Redistribution {
    /// The elements of all old subtasks are dealt out in contiguous, near-equal runs.
    EvenSplit,
    /// Every new subtask receives every element of every old subtask.
    Union,
}

/// What kind of operator state a name refers to.
///
/// Serialized by variant index: append new variants, never reorder.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperatorStateMode {
    List(Redistribution),
    Broadcast,
}

impl fmt::Display for OperatorStateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperatorStateMode::List(Redistribution::EvenSplit) => "even-split list state",
            OperatorStateMode::List(Redistribution::Union) => "union list state",
            OperatorStateMode::Broadcast => "broadcast state",
        })
    }
}

/// Everything that identifies an operator state across snapshots: written into every snapshot
/// and checked when the state is registered again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OperatorStateMetadata {
    pub name: String,
    pub mode: OperatorStateMode,
    /// Codec id of list elements, or of broadcast values.
    pub value_codec: String,
    /// Codec id of broadcast keys; `None` for list states.
    pub key_codec: Option<String>,
}

impl OperatorStateMetadata {
    /// A list state whose elements are encoded with codec `element_codec`.
    pub fn list(
        name: impl Into<String>,
        redistribution: Redistribution,
        element_codec: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            mode: OperatorStateMode::List(redistribution),
            value_codec: element_codec.into(),
            key_codec: None,
        }
    }

    /// A broadcast state with the given key and value codecs.
    pub fn broadcast(
        name: impl Into<String>,
        key_codec: impl Into<String>,
        value_codec: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            mode: OperatorStateMode::Broadcast,
            value_codec: value_codec.into(),
            key_codec: Some(key_codec.into()),
        }
    }

    /// Checks that `requested` may use the state registered as `self`.
    pub fn check_compatible(&self, requested: &OperatorStateMetadata) -> Result<()> {
        if self.mode != requested.mode {
            return Err(Error::OperatorStateModeMismatch {
                name: self.name.clone(),
                existing: self.mode.to_string(),
                requested: requested.mode.to_string(),
            });
        }
        let value_what = match self.mode {
            OperatorStateMode::List(_) => "element",
            OperatorStateMode::Broadcast => "value",
        };
        if self.value_codec != requested.value_codec {
            return Err(Error::StateCodecMismatch {
                name: self.name.clone(),
                what: value_what,
                existing: self.value_codec.clone(),
                requested: requested.value_codec.clone(),
            });
        }
        if self.key_codec != requested.key_codec {
            return Err(Error::StateCodecMismatch {
                name: self.name.clone(),
                what: "key",
                existing: self.key_codec.clone().unwrap_or_default(),
                requested: requested.key_codec.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// True when the metadata is well formed: broadcast states, and only they, have a key codec.
    fn is_well_formed(&self) -> bool {
        matches!(self.mode, OperatorStateMode::Broadcast) == self.key_codec.is_some()
    }
}

/// The contents of one operator state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorStateData {
    /// A list state's elements, in order.
    List(Vec<Vec<u8>>),
    /// A broadcast state's map, ordered by encoded key.
    Broadcast(BTreeMap<Vec<u8>, Vec<u8>>),
}

impl OperatorStateData {
    fn empty_for(mode: OperatorStateMode) -> Self {
        match mode {
            OperatorStateMode::List(_) => OperatorStateData::List(Vec::new()),
            OperatorStateMode::Broadcast => OperatorStateData::Broadcast(BTreeMap::new()),
        }
    }

    fn matches(&self, mode: OperatorStateMode) -> bool {
        matches!(
            (self, mode),
            (OperatorStateData::List(_), OperatorStateMode::List(_))
                | (
                    OperatorStateData::Broadcast(_),
                    OperatorStateMode::Broadcast
                )
        )
    }
}

/// One operator state: its metadata and contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateEntry {
    pub metadata: OperatorStateMetadata,
    pub data: OperatorStateData,
}

/// A consistent copy of one subtask's operator state, states in ascending name order.
///
/// Only [`OperatorStateStore::snapshot`], [`OperatorStateSnapshot::decode`] and the
/// redistribution functions create one, so its invariants (unique, sorted names; contents
/// matching each state's mode) always hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateSnapshot {
    states: Vec<OperatorStateEntry>,
}

impl OperatorStateSnapshot {
    /// The states, in ascending name order.
    pub fn states(&self) -> &[OperatorStateEntry] {
        &self.states
    }

    /// The state called `name`.
    pub fn get(&self, name: &str) -> Option<&OperatorStateEntry> {
        self.states
            .binary_search_by(|s| s.metadata.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.states[i])
    }

    /// True when the subtask has no operator state at all.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Encodes the snapshot in the operator-state file format (see the module docs).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&OPERATOR_STATE_FORMAT_VERSION.to_le_bytes());
        // Length and checksum are patched in once the body is written behind them.
        out.extend_from_slice(&[0u8; 12]);
        let mut out = postcard::to_extend(self, out).map_err(|e| Error::Encode {
            codec: SNAPSHOT_WHAT.into(),
            message: e.to_string(),
        })?;
        let body = &out[HEADER_LEN..];
        let body_len = (body.len() as u64).to_le_bytes();
        let crc = crc32c::crc32c(body).to_le_bytes();
        out[12..20].copy_from_slice(&body_len);
        out[20..24].copy_from_slice(&crc);
        Ok(out)
    }

    /// Decodes bytes written by [`OperatorStateSnapshot::encode`]. Damaged or foreign bytes
    /// give an error ([`Error::Corrupt`], [`Error::ChecksumMismatch`] or
    /// [`Error::UnsupportedFormatVersion`]), never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_described(bytes, SNAPSHOT_WHAT)
    }

    fn decode_described(bytes: &[u8], what: &str) -> Result<Self> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(Error::corrupt(
                what,
                "it does not start with the operator-state magic \"FLOWOPST\": it is not an operator state file",
            ));
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::corrupt(
                what,
                format!(
                    "the file is {} bytes, shorter than its {HEADER_LEN}-byte header",
                    bytes.len()
                ),
            ));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version > OPERATOR_STATE_FORMAT_VERSION {
            return Err(Error::UnsupportedFormatVersion {
                what: "operator state file",
                found: version,
                supported: OPERATOR_STATE_FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(Error::corrupt(what, "format version 0 was never written"));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[12..20]);
        let body_len = u64::from_le_bytes(len_bytes);
        let expected_crc = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        let body = &bytes[HEADER_LEN..];
        if body.len() as u64 != body_len {
            return Err(Error::corrupt(
                what,
                format!(
                    "the header announces a {body_len}-byte body but {} bytes follow it (truncated or overwritten)",
                    body.len()
                ),
            ));
        }
        let actual_crc = crc32c::crc32c(body);
        if actual_crc != expected_crc {
            return Err(Error::ChecksumMismatch {
                what: what.to_string(),
                expected: expected_crc,
                actual: actual_crc,
            });
        }
        let (snapshot, rest): (Self, &[u8]) = postcard::take_from_bytes(body)
            .map_err(|e| Error::corrupt(what, format!("undecodable body: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::corrupt(
                what,
                format!("{} unexpected bytes after the body", rest.len()),
            ));
        }
        snapshot.validate(what)?;
        Ok(snapshot)
    }

    fn validate(&self, what: &str) -> Result<()> {
        for pair in self.states.windows(2) {
            if pair[0].metadata.name >= pair[1].metadata.name {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "states are not in strictly ascending name order ('{}' then '{}')",
                        pair[0].metadata.name, pair[1].metadata.name
                    ),
                ));
            }
        }
        for state in &self.states {
            if !state.metadata.is_well_formed() || !state.data.matches(state.metadata.mode) {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "state '{}' is a {} but its metadata or contents are of another kind",
                        state.metadata.name, state.metadata.mode
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A registered operator state within one store. Only meaningful for the store that issued it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorStateId(u32);

impl OperatorStateId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One subtask's operator state. Thread-safe: every method takes `&self`. Share it as
/// `Arc<OperatorStateStore>` (the typed handles hold one).
#[derive(Debug, Default)]
pub struct OperatorStateStore {
    inner: RwLock<StoreInner>,
}

#[derive(Debug, Default)]
struct StoreInner {
    /// Indexed by [`OperatorStateId`]; states are never removed, so ids stay valid.
    states: Vec<OperatorStateEntry>,
    by_name: HashMap<String, OperatorStateId>,
}

impl StoreInner {
    fn entry(&self, id: OperatorStateId) -> Result<&OperatorStateEntry> {
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

fn as_list(entry: &OperatorStateEntry) -> Result<&Vec<Vec<u8>>> {
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

fn as_map(entry: &OperatorStateEntry) -> Result<&BTreeMap<Vec<u8>, Vec<u8>>> {
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

    /// A typed list state with the default [`SerdeCodec`].
    pub fn list_state<T>(
        self: &Arc<Self>,
        name: &str,
        redistribution: Redistribution,
    ) -> Result<OperatorListState<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        self.list_state_with_codec(name, redistribution, SerdeCodec::new())
    }

    /// A typed list state whose elements are encoded with `codec`.
    pub fn list_state_with_codec<T, C: Codec<T>>(
        self: &Arc<Self>,
        name: &str,
        redistribution: Redistribution,
        codec: C,
    ) -> Result<OperatorListState<T, C>> {
        let id = self.register(&OperatorStateMetadata::list(
            name,
            redistribution,
            codec.id(),
        ))?;
        Ok(OperatorListState {
            store: Arc::clone(self),
            id,
            codec: Arc::new(codec),
            _type: PhantomData,
        })
    }

    /// A typed broadcast state with the default [`SerdeCodec`]s.
    pub fn broadcast_state<K, V>(self: &Arc<Self>, name: &str) -> Result<BroadcastState<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.broadcast_state_with_codecs(name, SerdeCodec::new(), SerdeCodec::new())
    }

    /// A typed broadcast state with explicit key and value codecs. The key codec must be
    /// deterministic: entries are found by their encoded key.
    pub fn broadcast_state_with_codecs<K, V, KC: Codec<K>, VC: Codec<V>>(
        self: &Arc<Self>,
        name: &str,
        key_codec: KC,
        value_codec: VC,
    ) -> Result<BroadcastState<K, V, KC, VC>> {
        let id = self.register(&OperatorStateMetadata::broadcast(
            name,
            key_codec.id(),
            value_codec.id(),
        ))?;
        Ok(BroadcastState {
            store: Arc::clone(self),
            id,
            key_codec: Arc::new(key_codec),
            value_codec: Arc::new(value_codec),
            _types: PhantomData,
        })
    }
}

/// A typed operator list state. Cheap to clone; clones share the store.
pub struct OperatorListState<T, C = SerdeCodec<T>> {
    store: Arc<OperatorStateStore>,
    id: OperatorStateId,
    codec: Arc<C>,
    _type: PhantomData<fn() -> T>,
}

impl<T, C> Clone for OperatorListState<T, C> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            id: self.id,
            codec: Arc::clone(&self.codec),
            _type: PhantomData,
        }
    }
}

impl<T, C> fmt::Debug for OperatorListState<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorListState")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<T, C: Codec<T>> OperatorListState<T, C> {
    pub fn id(&self) -> OperatorStateId {
        self.id
    }

    /// The elements, in order (empty when none).
    pub fn get(&self) -> Result<Vec<T>> {
        let inner = self.store.inner.read();
        // Decoded under the read lock: saves copying the bytes, and readers do not block
        // each other.
        as_list(inner.entry(self.id)?)?
            .iter()
            .map(|bytes| self.codec.decode(bytes))
            .collect()
    }

    /// Appends one element.
    pub fn add(&self, value: &T) -> Result<()> {
        let bytes = self.codec.to_bytes(value)?;
        self.store.list_add(self.id, vec![bytes])
    }

    /// Appends elements, in order, all at once.
    pub fn add_all<I>(&self, values: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        let encoded = self.encode_all(values)?;
        self.store.list_add(self.id, encoded)
    }

    /// Replaces the elements with `values` (an empty iterator clears the list).
    pub fn update<I>(&self, values: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        let encoded = self.encode_all(values)?;
        self.store.list_replace(self.id, encoded)
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        self.store.list_clear(self.id)
    }

    fn encode_all<I>(&self, values: I) -> Result<Vec<Vec<u8>>>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        values
            .into_iter()
            .map(|v| self.codec.to_bytes(v.borrow()))
            .collect()
    }
}

/// A typed broadcast state: a map every subtask holds a copy of. Cheap to clone.
pub struct BroadcastState<K, V, KC = SerdeCodec<K>, VC = SerdeCodec<V>> {
    store: Arc<OperatorStateStore>,
    id: OperatorStateId,
    key_codec: Arc<KC>,
    value_codec: Arc<VC>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, KC, VC> Clone for BroadcastState<K, V, KC, VC> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            id: self.id,
            key_codec: Arc::clone(&self.key_codec),
            value_codec: Arc::clone(&self.value_codec),
            _types: PhantomData,
        }
    }
}

impl<K, V, KC, VC> fmt::Debug for BroadcastState<K, V, KC, VC> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BroadcastState")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<K, V, KC: Codec<K>, VC: Codec<V>> BroadcastState<K, V, KC, VC> {
    pub fn id(&self) -> OperatorStateId {
        self.id
    }

    /// The value under `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let key = self.key_codec.to_bytes(key)?;
        let inner = self.store.inner.read();
        as_map(inner.entry(self.id)?)?
            .get(&key)
            .map(|v| self.value_codec.decode(v))
            .transpose()
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        let key = self.key_codec.to_bytes(key)?;
        let value = self.value_codec.to_bytes(value)?;
        self.store.broadcast_put(self.id, key, value)
    }

    /// Removes `key`; true when it was present.
    pub fn remove(&self, key: &K) -> Result<bool> {
        let key = self.key_codec.to_bytes(key)?;
        self.store.broadcast_remove(self.id, &key)
    }

    /// True when `key` is present.
    pub fn contains(&self, key: &K) -> Result<bool> {
        let key = self.key_codec.to_bytes(key)?;
        self.store.broadcast_contains(self.id, &key)
    }

    /// Every entry, ordered by encoded key.
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        let inner = self.store.inner.read();
        as_map(inner.entry(self.id)?)?
            .iter()
            .map(|(k, v)| Ok((self.key_codec.decode(k)?, self.value_codec.decode(v)?)))
            .collect()
    }

    /// True when the map has no entry.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(as_map(self.store.inner.read().entry(self.id)?)?.is_empty())
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.store.broadcast_clear(self.id)
    }
}

/// The contiguous run of the concatenated elements that even-split gives to `target`, and
/// the `start` of the next state (KEY-GROUPS.md, "even-split redistribution").
fn even_split_range(total: usize, n: u32, start: u32, target: u32) -> (Range<usize>, u32) {
    let n_usize = n as usize;
    let base = total / n_usize;
    let rem = total % n_usize;
    // Targets are walked start, start + 1, ... (mod n); `k` is target's place in that walk.
    let k = ((target as u64 + n as u64 - start as u64) % n as u64) as usize;
    let len = base + usize::from(k < rem);
    let offset = k * base + k.min(rem);
    let next_start = ((start as u64 + rem as u64) % n as u64) as u32;
    (offset..offset + len, next_start)
}

/// Elements `range` of the concatenation of `lists`.
fn slice_of_concatenation(lists: &[&Vec<Vec<u8>>], range: Range<usize>) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(range.len());
    let mut list_start = 0usize;
    for list in lists {
        let list_end = list_start + list.len();
        let from = range.start.max(list_start);
        let to = range.end.min(list_end);
        if from < to {
            out.extend_from_slice(&list[from - list_start..to - list_start]);
        }
        if list_end >= range.end {
            break;
        }
        list_start = list_end;
    }
    out
}

/// The parts of one state found in the old subtasks, in old-subtask order.
enum OldParts<'a> {
    Lists(Vec<&'a Vec<Vec<u8>>>),
    Maps(Vec<&'a BTreeMap<Vec<u8>, Vec<u8>>>),
}

/// The operator state of new subtask `new_index` of `new_parallelism`, from the old subtasks'
/// snapshots in old-subtask order (`None`: that old subtask had no operator state).
///
/// Every state found in any old subtask is present in the result (possibly empty), with its
/// metadata, so re-registration checks modes and codecs. Per `KEY-GROUPS.md`:
/// - even-split list states, in ascending name order: the old subtasks' lists are
///   concatenated in old-subtask order and dealt out in contiguous runs of `base + 1` (to the
///   first `rem` targets walked from the rotating `start`) or `base` elements;
/// - union list states: every new subtask gets every element, in old-subtask order;
/// - broadcast states: new subtask `i` takes copy `i % c` of the `c` old subtasks that hold
///   the state (in old-subtask order). When every old subtask holds it, as a running job
///   guarantees, that is old subtask `i % old_n`; an old subtask without the state (no file,
///   or the state registered only elsewhere) has no copy to give, so it is skipped rather
///   than handing an empty map to the new subtasks that would have mapped to it.
///
/// Old subtasks that disagree on a state's mode or codecs are an error.
pub fn redistribute_for_subtask(
    old_subtasks: &[Option<OperatorStateSnapshot>],
    new_index: u32,
    new_parallelism: Parallelism,
) -> Result<OperatorStateSnapshot> {
    let n = new_parallelism.get();
    if new_index >= n {
        return Err(Error::OperatorIndexOutOfBounds {
            operator_index: new_index,
            parallelism: n,
        });
    }
    let mut by_name: BTreeMap<&str, (&OperatorStateMetadata, OldParts<'_>)> = BTreeMap::new();
    for snapshot in old_subtasks.iter().flatten() {
        for state in &snapshot.states {
            let (_, parts) = match by_name.entry(state.metadata.name.as_str()) {
                BTreeEntry::Vacant(v) => {
                    let parts = match state.metadata.mode {
                        OperatorStateMode::List(_) => OldParts::Lists(Vec::new()),
                        OperatorStateMode::Broadcast => OldParts::Maps(Vec::new()),
                    };
                    v.insert((&state.metadata, parts))
                }
                BTreeEntry::Occupied(o) => {
                    o.get().0.check_compatible(&state.metadata)?;
                    o.into_mut()
                }
            };
            match (parts, &state.data) {
                (OldParts::Lists(lists), OperatorStateData::List(l)) => lists.push(l),
                (OldParts::Maps(maps), OperatorStateData::Broadcast(m)) => maps.push(m),
                _ => {
                    return Err(Error::corrupt(
                        SNAPSHOT_WHAT,
                        format!(
                            "state '{}' holds contents of another kind than its metadata",
                            state.metadata.name
                        ),
                    ))
                }
            }
        }
    }

    let mut start = 0u32;
    let mut states = Vec::with_capacity(by_name.len());
    for (metadata, parts) in by_name.into_values() {
        let data = match (metadata.mode, parts) {
            (OperatorStateMode::List(Redistribution::EvenSplit), OldParts::Lists(lists)) => {
                let total = lists.iter().map(|l| l.len()).sum();
                let (range, next_start) = even_split_range(total, n, start, new_index);
                start = next_start;
                OperatorStateData::List(slice_of_concatenation(&lists, range))
            }
            (OperatorStateMode::List(Redistribution::Union), OldParts::Lists(lists)) => {
                OperatorStateData::List(lists.into_iter().flatten().cloned().collect())
            }
            (OperatorStateMode::Broadcast, OldParts::Maps(maps)) => {
                // Non-empty: a state is only listed once some old subtask held it.
                let copy = maps
                    .get(new_index as usize % maps.len().max(1))
                    .map(|m| (*m).clone())
                    .unwrap_or_default();
                OperatorStateData::Broadcast(copy)
            }
            _ => {
                return Err(Error::corrupt(
                    SNAPSHOT_WHAT,
                    format!(
                        "state '{}' holds contents of another kind than its metadata",
                        metadata.name
                    ),
                ))
            }
        };
        states.push(OperatorStateEntry {
            metadata: metadata.clone(),
            data,
        });
    }
    Ok(OperatorStateSnapshot { states })
}

/// [`redistribute_for_subtask`] for every new subtask, in new-subtask order.
pub fn redistribute(
    old_subtasks: &[Option<OperatorStateSnapshot>],
    new_parallelism: Parallelism,
) -> Result<Vec<OperatorStateSnapshot>> {
    (0..new_parallelism.get())
        .map(|i| redistribute_for_subtask(old_subtasks, i, new_parallelism))
        .collect()
}

/// The name of subtask `subtask_index`'s operator-state file within a checkpoint directory.
pub fn operator_state_file_name(subtask_index: u32) -> String {
    format!("op-{subtask_index}.bin")
}

/// Encodes `snapshot` and writes it as subtask `subtask_index`'s operator-state file of
/// checkpoint `checkpoint_id` (an exclusive file). Take the snapshot synchronously
/// ([`OperatorStateStore::snapshot`]) and run this in the async half of the checkpoint.
pub async fn write_operator_state(
    storage: &CheckpointStorage,
    checkpoint_id: CheckpointId,
    subtask_index: u32,
    snapshot: &OperatorStateSnapshot,
) -> Result<FileRef> {
    let bytes = snapshot.encode()?;
    let path =
        CheckpointStorage::exclusive_path(checkpoint_id, &operator_state_file_name(subtask_index));
    storage.put(&path, Bytes::from(bytes), false).await
}

/// Reads and decodes one operator-state file.
pub async fn read_operator_state(
    storage: &CheckpointStorage,
    file: &FileRef,
) -> Result<OperatorStateSnapshot> {
    let bytes = storage.get(&file.path).await?;
    let what = format!("operator state file {}", file.path);
    if bytes.len() as u64 != file.size {
        return Err(Error::corrupt(
            what,
            format!(
                "the checkpoint records {} bytes but the file has {}",
                file.size,
                bytes.len()
            ),
        ));
    }
    OperatorStateSnapshot::decode_described(&bytes, &what)
}

/// Reads the old subtasks' operator-state files (in old-subtask order, as
/// [`crate::CheckpointManifest::operator_files`] returns them) and builds the store of new
/// subtask `new_index` of `new_parallelism`.
pub async fn restore_operator_state(
    storage: &CheckpointStorage,
    old_files: &[Option<FileRef>],
    new_index: u32,
    new_parallelism: Parallelism,
) -> Result<OperatorStateStore> {
    if new_index >= new_parallelism.get() {
        return Err(Error::OperatorIndexOutOfBounds {
            operator_index: new_index,
            parallelism: new_parallelism.get(),
        });
    }
    let old = futures::future::try_join_all(old_files.iter().map(|file| async move {
        match file {
            Some(file) => read_operator_state(storage, file).await.map(Some),
            None => Ok(None),
        }
    }))
    .await?;
    OperatorStateStore::restore(&old, new_index, new_parallelism)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_range_walks_from_start() {
        // total 2 over 3 targets starting at 2: targets 2 and 0 take one element each.
        assert_eq!(even_split_range(2, 3, 2, 2), (0..1, 1));
        assert_eq!(even_split_range(2, 3, 2, 0), (1..2, 1));
        assert_eq!(even_split_range(2, 3, 2, 1), (2..2, 1));
        // [a..e] over 2 from 0: [a,b,c] then [d,e].
        assert_eq!(even_split_range(5, 2, 0, 0).0, 0..3);
        assert_eq!(even_split_range(5, 2, 0, 1).0, 3..5);
    }

    #[test]
    fn slice_spans_list_boundaries() {
        let a = vec![vec![1u8], vec![2]];
        let b: Vec<Vec<u8>> = Vec::new();
        let c = vec![vec![3u8], vec![4], vec![5]];
        let lists = [&a, &b, &c];
        assert_eq!(
            slice_of_concatenation(&lists, 1..4),
            vec![vec![2], vec![3], vec![4]]
        );
        assert_eq!(slice_of_concatenation(&lists, 4..5), vec![vec![5]]);
        assert!(slice_of_concatenation(&lists, 2..2).is_empty());
    }
}
