//! Identity of keyed state: kinds, metadata, the per-backend registry, and the key context a
//! record is routed with.

use std::collections::HashMap;
use std::fmt;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key_groups::{key_group_for_key_bytes, KeyGroup, MaxParallelism};

/// The five kinds of keyed state. Reducing and aggregating state store one value per
/// (key, namespace), like value state, but fold on `add`.
///
/// `#[non_exhaustive]`: a new kind maps onto a [`StorageLayout`] ([`StateKind::layout`]), which
/// is what backends store by, so adding one breaks no backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StateKind {
    /// One value per (key, namespace), set and read as a whole.
    Value,
    /// A list of elements per (key, namespace), appended to or replaced.
    List,
    /// A map of user keys to values per (key, namespace).
    Map,
    /// One value per (key, namespace) that `add` folds new values into with a reduce function
    /// of the value's own type.
    Reducing,
    /// One accumulator per (key, namespace) that `add` folds inputs into; reads return the
    /// accumulator's result, which may be of another type than the inputs.
    Aggregating,
}

impl StateKind {
    /// Stable one-byte tag used in snapshot metadata.
    pub fn tag(self) -> u8 {
        match self {
            StateKind::Value => 0,
            StateKind::List => 1,
            StateKind::Map => 2,
            StateKind::Reducing => 3,
            StateKind::Aggregating => 4,
        }
    }
    /// The kind of a [`StateKind::tag`]; `None` for an unknown tag.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            3 => StateKind::Reducing,
            4 => StateKind::Aggregating,
            _ => return None,
        })
    }
    /// How the backend stores it: one value per (key, namespace), a list, or a map.
    pub fn layout(self) -> StorageLayout {
        match self {
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating => StorageLayout::Value,
            StateKind::List => StorageLayout::List,
            StateKind::Map => StorageLayout::Map,
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
            StateKind::Reducing => "reducing",
            StateKind::Aggregating => "aggregating",
        };
        f.write_str(s)
    }
}

/// What a backend has to store for a state kind.
///
/// Exhaustive on purpose: every backend implements every layout, so a new layout must be a
/// compile error in each backend, not a fallback arm.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum StorageLayout {
    /// One byte string per (key, namespace).
    Value,
    /// An ordered list of byte strings per (key, namespace); appends are cheap.
    List,
    /// A map of user-key bytes to value bytes per (key, namespace).
    Map,
}

/// Everything that identifies a keyed state across snapshots: written into every snapshot and
/// checked when a state is registered again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateMetadata {
    /// The state's name, unique within a backend and stable across snapshots.
    pub name: String,
    /// The state's kind.
    pub kind: StateKind,
    /// Codec id of the namespace type.
    pub namespace_codec: String,
    /// Codec id of the stored value (list element, map value, accumulator).
    pub value_codec: String,
    /// Codec id of map user keys; `None` for other kinds.
    pub user_key_codec: Option<String>,
}

impl StateMetadata {
    /// Checks that `requested` may use state registered as `self`.
    pub fn check_compatible(&self, requested: &StateMetadata) -> Result<()> {
        if self.kind != requested.kind {
            return Err(Error::StateKindMismatch {
                name: self.name.clone(),
                existing: self.kind,
                requested: requested.kind,
            });
        }
        let pairs: [(&'static str, Option<&String>, Option<&String>); 3] = [
            (
                "value",
                Some(&self.value_codec),
                Some(&requested.value_codec),
            ),
            (
                "namespace",
                Some(&self.namespace_codec),
                Some(&requested.namespace_codec),
            ),
            (
                "user key",
                self.user_key_codec.as_ref(),
                requested.user_key_codec.as_ref(),
            ),
        ];
        for (what, existing, wanted) in pairs {
            if existing != wanted {
                return Err(Error::StateCodecMismatch {
                    name: self.name.clone(),
                    what,
                    existing: existing.cloned().unwrap_or_default(),
                    requested: wanted.cloned().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }
}

/// A registered state within one backend: an index into its registry. Cheap to copy; only
/// meaningful for the backend that issued it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StateId(pub u32);

impl StateId {
    /// The id as a position in the registry's state list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The registry every backend embeds: name → id, and the compatibility check on
/// re-registration (after a restore the snapshot's states are registered first, and the user's
/// descriptors must match them).
#[derive(Debug, Default)]
pub struct StateRegistry {
    inner: RwLock<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    states: Vec<StateMetadata>,
    by_name: HashMap<String, StateId>,
}

/// What [`StateRegistry::register`] did.
///
/// Exhaustive on purpose: a name is either new or existing; a backend must act on `Created`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The name was new: the backend must create storage for it.
    Created(StateId),
    /// The name existed with compatible metadata.
    Existing(StateId),
}

impl Registration {
    /// The state's id, new or existing.
    pub fn id(self) -> StateId {
        match self {
            Registration::Created(id) | Registration::Existing(id) => id,
        }
    }
}

impl StateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `meta`, or returns the id of the compatible state of that name.
    pub fn register(&self, meta: &StateMetadata) -> Result<Registration> {
        if let Some(id) = self.inner.read().by_name.get(&meta.name).copied() {
            self.inner.read().states[id.index()].check_compatible(meta)?;
            return Ok(Registration::Existing(id));
        }
        let mut inner = self.inner.write();
        if let Some(id) = inner.by_name.get(&meta.name).copied() {
            inner.states[id.index()].check_compatible(meta)?;
            return Ok(Registration::Existing(id));
        }
        let id = StateId(inner.states.len() as u32);
        inner.states.push(meta.clone());
        inner.by_name.insert(meta.name.clone(), id);
        Ok(Registration::Created(id))
    }

    /// The metadata `id` was registered with; [`Error::UnknownStateId`] for an id this
    /// registry never issued.
    pub fn get(&self, id: StateId) -> Result<StateMetadata> {
        self.inner
            .read()
            .states
            .get(id.index())
            .cloned()
            .ok_or_else(|| Error::UnknownStateId { id: id.0 })
    }

    /// The kind `id` was registered with, without cloning its metadata;
    /// [`Error::UnknownStateId`] for an id this registry never issued.
    pub fn kind(&self, id: StateId) -> Result<StateKind> {
        self.inner
            .read()
            .states
            .get(id.index())
            .map(|m| m.kind)
            .ok_or_else(|| Error::UnknownStateId { id: id.0 })
    }

    /// The error for `operation` on `state` when its kind does not support it
    /// ([`Error::UnsupportedOperation`] naming the state and its kind), or
    /// [`Error::UnknownStateId`] for an id this registry never issued: the one way every
    /// backend reports a wrong-kind access.
    #[cold]
    pub fn unsupported(&self, state: StateId, operation: &'static str) -> Error {
        match self.get(state) {
            Ok(meta) => Error::UnsupportedOperation {
                operation,
                kind: meta.kind,
                name: meta.name,
            },
            Err(e) => e,
        }
    }

    /// The id registered under `name`, if any.
    pub fn id_of(&self, name: &str) -> Option<StateId> {
        self.inner.read().by_name.get(name).copied()
    }

    /// All states in id order.
    pub fn all(&self) -> Vec<(StateId, StateMetadata)> {
        self.inner
            .read()
            .states
            .iter()
            .enumerate()
            .map(|(i, m)| (StateId(i as u32), m.clone()))
            .collect()
    }

    /// Number of registered states.
    pub fn len(&self) -> usize {
        self.inner.read().states.len()
    }

    /// Whether no state is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A record's key, serialized once and placed in its key group once. Every state access of that
/// record reuses it, so hashing and key serialization are paid once per record, not per state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyContext {
    key_group: KeyGroup,
    key: Box<[u8]>,
}

impl KeyContext {
    /// Hashes `key_bytes` (the key's canonical serialized bytes) into its key group.
    pub fn new(key_bytes: impl Into<Box<[u8]>>, max: MaxParallelism) -> Self {
        let key: Box<[u8]> = key_bytes.into();
        let key_group = key_group_for_key_bytes(&key, max);
        Self { key_group, key }
    }

    /// Serializes `key` with `codec` and places it in its key group.
    pub fn for_key<K: ?Sized, C: crate::codec::Codec<K> + ?Sized>(
        codec: &C,
        key: &K,
        max: MaxParallelism,
    ) -> Result<Self> {
        let mut buf = Vec::new();
        codec.encode(key, &mut buf)?;
        Ok(Self::new(buf, max))
    }

    /// A context whose key group is already known (enumeration, restore). The caller vouches
    /// that `key_group` is the key's group.
    pub fn with_key_group(key_bytes: impl Into<Box<[u8]>>, key_group: KeyGroup) -> Self {
        Self {
            key_group,
            key: key_bytes.into(),
        }
    }

    /// The key group the key hashes to, which decides the subtask that owns it.
    pub fn key_group(&self) -> KeyGroup {
        self.key_group
    }

    /// The key's canonical serialized bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Decodes the key with `codec`.
    pub fn decode_key<K, C: crate::codec::Codec<K> + ?Sized>(&self, codec: &C) -> Result<K> {
        codec.decode(&self.key)
    }
}
