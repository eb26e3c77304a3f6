//! Map state: a map of user keys to values per (key, namespace). User keys are encoded with
//! their own codec, recorded in the state's metadata.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use super::bound::{Bound, CodecRef, Common};
use super::macros::{descriptor_namespaces, handle_common};
use super::{DescriptorValue, SharedBackend};
use crate::codec::{Codec, SerdeCodec, VoidNamespace};
use crate::error::Result;
use crate::state::{KeyContext, StateKind, StateMetadata};

/// Describes a map state: a map of user keys to values per (key, namespace).
pub struct MapStateDescriptor<K, V, N = VoidNamespace> {
    common: Common<V, N>,
    user_key_codec: CodecRef<K>,
}

impl<K, V, N> DescriptorValue for MapStateDescriptor<K, V, N> {
    type Stored = V;
}
descriptor_namespaces!(MapStateDescriptor [K, V] { user_key_codec });

impl<K: Serialize + DeserializeOwned + 'static, V: Serialize + DeserializeOwned + 'static>
    MapStateDescriptor<K, V>
{
    /// A descriptor of state `name` without namespace, user keys and values encoded with the
    /// default serde codec.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            common: Common::new(name),
            user_key_codec: Arc::new(SerdeCodec::<K>::new()),
        }
    }
}

impl<K, V, N> MapStateDescriptor<K, V, N> {
    /// Encodes user keys with `codec` instead of the default.
    pub fn with_user_key_codec(mut self, codec: impl Codec<K> + 'static) -> Self {
        self.user_key_codec = Arc::new(codec);
        self
    }
    /// The metadata the state is registered with: name, kind and codec ids (user key codec
    /// included).
    pub fn metadata(&self) -> StateMetadata {
        self.common
            .metadata(StateKind::Map, Some(self.user_key_codec.id().to_string()))
    }
    /// Registers the state with `backend` (or checks it against the registered one).
    pub fn bind(&self, backend: SharedBackend) -> Result<MapState<K, V, N>> {
        Ok(MapState {
            inner: Bound::new(backend, self.common.clone(), self.metadata())?,
            user_key_codec: self.user_key_codec.clone(),
        })
    }
}

/// A map per (key, namespace). An empty map reads as absent.
pub struct MapState<K, V, N = VoidNamespace> {
    inner: Bound<V, N>,
    user_key_codec: CodecRef<K>,
}
handle_common!(MapState [K, V] { user_key_codec });

impl<K, V, N> MapState<K, V, N> {
    fn user_key(&self, user_key: &K) -> Result<Vec<u8>> {
        self.user_key_codec.to_bytes(user_key)
    }
    /// The value under `user_key` in the map of (key, namespace); `None` when absent.
    pub fn get_in(&self, key: &KeyContext, namespace: &N, user_key: &K) -> Result<Option<V>> {
        let ns = self.inner.ns(namespace)?;
        let uk = self.user_key(user_key)?;
        match self.inner.backend.map_get(self.inner.id, key, &ns, &uk)? {
            Some(bytes) => Ok(Some(self.inner.decode(&bytes)?)),
            None => Ok(None),
        }
    }
    /// Sets the value under `user_key` in the map of (key, namespace).
    pub fn put_in(&self, key: &KeyContext, namespace: &N, user_key: &K, value: &V) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let uk = self.user_key(user_key)?;
        let v = self.inner.encode(value)?;
        self.inner.backend.map_put(self.inner.id, key, &ns, &uk, &v)
    }
    /// Sets every entry of `entries` in the map of (key, namespace), one `put` each.
    pub fn put_all_in<'a>(
        &self,
        key: &KeyContext,
        namespace: &N,
        entries: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<()>
    where
        K: 'a,
        V: 'a,
    {
        for (k, v) in entries {
            self.put_in(key, namespace, k, v)?;
        }
        Ok(())
    }
    /// Removes the entry under `user_key` from the map of (key, namespace), if any.
    pub fn remove_in(&self, key: &KeyContext, namespace: &N, user_key: &K) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let uk = self.user_key(user_key)?;
        self.inner.backend.map_remove(self.inner.id, key, &ns, &uk)
    }
    /// Whether the map of (key, namespace) has an entry under `user_key`.
    pub fn contains_in(&self, key: &KeyContext, namespace: &N, user_key: &K) -> Result<bool> {
        let ns = self.inner.ns(namespace)?;
        let uk = self.user_key(user_key)?;
        self.inner
            .backend
            .map_contains(self.inner.id, key, &ns, &uk)
    }
    /// Whether the map of (key, namespace) has no entry (an absent map is empty).
    pub fn is_empty_in(&self, key: &KeyContext, namespace: &N) -> Result<bool> {
        let ns = self.inner.ns(namespace)?;
        self.inner.backend.map_is_empty(self.inner.id, key, &ns)
    }
    /// All entries (in no particular order).
    pub fn entries_in(&self, key: &KeyContext, namespace: &N) -> Result<Vec<(K, V)>> {
        let ns = self.inner.ns(namespace)?;
        self.inner
            .backend
            .map_entries(self.inner.id, key, &ns)?
            .iter()
            .map(|(k, v)| Ok((self.user_key_codec.decode(k)?, self.inner.decode(v)?)))
            .collect()
    }
    /// The user keys of the map of (key, namespace), in no particular order.
    pub fn user_keys_in(&self, key: &KeyContext, namespace: &N) -> Result<Vec<K>> {
        Ok(self
            .entries_in(key, namespace)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
    /// The values of the map of (key, namespace), in no particular order.
    pub fn values_in(&self, key: &KeyContext, namespace: &N) -> Result<Vec<V>> {
        Ok(self
            .entries_in(key, namespace)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
}

impl<K, V> MapState<K, V, VoidNamespace> {
    /// The value under `user_key` in `key`'s map; `None` when absent.
    pub fn get(&self, key: &KeyContext, user_key: &K) -> Result<Option<V>> {
        self.get_in(key, &VoidNamespace, user_key)
    }
    /// Sets the value under `user_key` in `key`'s map.
    pub fn put(&self, key: &KeyContext, user_key: &K, value: &V) -> Result<()> {
        self.put_in(key, &VoidNamespace, user_key, value)
    }
    /// Removes the entry under `user_key` from `key`'s map, if any.
    pub fn remove(&self, key: &KeyContext, user_key: &K) -> Result<()> {
        self.remove_in(key, &VoidNamespace, user_key)
    }
    /// Whether `key`'s map has an entry under `user_key`.
    pub fn contains(&self, key: &KeyContext, user_key: &K) -> Result<bool> {
        self.contains_in(key, &VoidNamespace, user_key)
    }
    /// Whether `key`'s map has no entry (an absent map is empty).
    pub fn is_empty(&self, key: &KeyContext) -> Result<bool> {
        self.is_empty_in(key, &VoidNamespace)
    }
    /// All entries of `key`'s map (in no particular order).
    pub fn entries(&self, key: &KeyContext) -> Result<Vec<(K, V)>> {
        self.entries_in(key, &VoidNamespace)
    }
    /// The user keys of `key`'s map, in no particular order.
    pub fn user_keys(&self, key: &KeyContext) -> Result<Vec<K>> {
        self.user_keys_in(key, &VoidNamespace)
    }
    /// The values of `key`'s map, in no particular order.
    pub fn values(&self, key: &KeyContext) -> Result<Vec<V>> {
        self.values_in(key, &VoidNamespace)
    }
}
