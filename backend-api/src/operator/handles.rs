//! Typed handles on the byte-level [`OperatorStateStore`]: [`OperatorListState`] and
//! [`BroadcastState`], and the store's constructors for them. A handle encodes with its
//! [`Codec`]s and registers the codec ids, so a name re-registered with other codecs is an
//! error rather than misread bytes.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use super::metadata::{OperatorStateMetadata, Redistribution};
use super::store::{as_list, as_map, OperatorStateId, OperatorStateStore};
use crate::codec::{Codec, SerdeCodec};
use crate::error::Result;

impl OperatorStateStore {
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
    /// The store's id of this state.
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
    /// The store's id of this state.
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
