//! Typed keyed state, built once on [`KeyedStateBackend`] for every backend.
//!
//! A state is created from a descriptor (name + codecs, and the fold function for reducing and
//! aggregating state) bound to a backend. Every access names the record's [`KeyContext`] (key
//! bytes and key group computed once per record) and, for states with namespaces, the
//! namespace; the `*_in` methods take an explicit namespace, the plain ones use the default
//! ([`VoidNamespace`]).
//!
//! ```
//! # use std::sync::Arc;
//! # use flowstate_api::typed::*;
//! # use flowstate_api::{KeyContext, KeyedStateBackend, SerdeCodec};
//! # fn demo(backend: Arc<dyn KeyedStateBackend>) -> flowstate_api::Result<()> {
//! let count = ValueStateDescriptor::<u64>::new("count").bind(backend.clone())?;
//! let key = KeyContext::for_key(&SerdeCodec::<String>::new(), &"alice".to_string(),
//!     backend.max_parallelism())?;
//! let n = count.get(&key)?.unwrap_or(0);
//! count.update(&key, &(n + 1))?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::KeyedStateBackend;
use crate::codec::{Codec, SerdeCodec, VoidNamespace, VoidNamespaceCodec};
use crate::error::Result;
use crate::state::{KeyContext, StateId, StateKind, StateMetadata};

/// A shared, type-erased backend, as typed handles hold it.
pub type SharedBackend = Arc<dyn KeyedStateBackend>;

type CodecRef<T> = Arc<dyn Codec<T>>;

/// Name, namespace codec and value codec: what every descriptor has.
struct Common<V, N> {
    name: String,
    value_codec: CodecRef<V>,
    namespace_codec: CodecRef<N>,
}

impl<V, N> Clone for Common<V, N> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            value_codec: self.value_codec.clone(),
            namespace_codec: self.namespace_codec.clone(),
        }
    }
}

impl<V: Serialize + DeserializeOwned + 'static> Common<V, VoidNamespace> {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value_codec: Arc::new(SerdeCodec::<V>::new()),
            namespace_codec: Arc::new(VoidNamespaceCodec),
        }
    }
}

impl<V, N> Common<V, N> {
    fn metadata(&self, kind: StateKind, user_key_codec: Option<String>) -> StateMetadata {
        StateMetadata {
            name: self.name.clone(),
            kind,
            namespace_codec: self.namespace_codec.id().to_string(),
            value_codec: self.value_codec.id().to_string(),
            user_key_codec,
        }
    }
}

/// The bound form every handle carries: backend, state id and codecs.
struct Bound<V, N> {
    backend: SharedBackend,
    id: StateId,
    common: Common<V, N>,
}

impl<V, N> Clone for Bound<V, N> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            id: self.id,
            common: self.common.clone(),
        }
    }
}

impl<V, N> Bound<V, N> {
    fn new(backend: SharedBackend, common: Common<V, N>, meta: StateMetadata) -> Result<Self> {
        let id = backend.register_state(&meta)?;
        Ok(Self {
            backend,
            id,
            common,
        })
    }
    fn ns(&self, namespace: &N) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.common.namespace_codec.encode(namespace, &mut out)?;
        Ok(out)
    }
    fn encode(&self, value: &V) -> Result<Vec<u8>> {
        self.common.value_codec.to_bytes(value)
    }
    fn decode(&self, bytes: &[u8]) -> Result<V>
    where
        V: Sized,
    {
        self.common.value_codec.decode(bytes)
    }
    /// Reads and decodes a value cell, decoding from the backend's bytes without a copy.
    fn read_value(&self, key: &KeyContext, ns: &[u8]) -> Result<Option<V>>
    where
        V: Sized,
    {
        let mut value = None;
        self.backend.get_with(self.id, key, ns, &mut |bytes| {
            if let Some(bytes) = bytes {
                value = Some(self.decode(bytes)?);
            }
            Ok(())
        })?;
        Ok(value)
    }
    fn keys(&self, namespace: &N) -> Result<Vec<KeyContext>> {
        let ns = self.ns(namespace)?;
        self.backend.keys(self.id, &ns)
    }
    fn clear(&self, key: &KeyContext, namespace: &N) -> Result<()> {
        let ns = self.ns(namespace)?;
        self.backend.remove(self.id, key, &ns)
    }
}

impl<V, N> fmt::Debug for Bound<V, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("name", &self.common.name)
            .field("id", &self.id)
            .finish()
    }
}

impl<V, N> Common<V, N> {
    fn with_namespace_codec<M>(self, codec: impl Codec<M> + 'static) -> Common<V, M> {
        Common {
            name: self.name,
            value_codec: self.value_codec,
            namespace_codec: Arc::new(codec),
        }
    }
}

/// Namespace builders and the name accessor, the same for every descriptor.
macro_rules! descriptor_namespaces {
    ($ty:ident [$($gen:ident),*] { $($field:ident),* }) => {
        impl<$($gen,)* N> $ty<$($gen,)* N> {
            /// Uses namespaces of type `M`, encoded with the default serde codec.
            pub fn with_namespace<M: Serialize + DeserializeOwned + 'static>(
                self,
            ) -> $ty<$($gen,)* M> {
                self.with_namespace_codec(SerdeCodec::<M>::new())
            }
            /// Uses namespaces of type `M`, encoded with `codec`.
            pub fn with_namespace_codec<M>(self, codec: impl Codec<M> + 'static) -> $ty<$($gen,)* M> {
                $ty {
                    common: self.common.with_namespace_codec(codec),
                    $($field: self.$field,)*
                }
            }
            /// Stores values with `codec` instead of the default.
            pub fn with_value_codec(mut self, codec: impl Codec<<Self as DescriptorValue>::Stored> + 'static) -> Self {
                self.common.value_codec = Arc::new(codec);
                self
            }
            pub fn name(&self) -> &str {
                &self.common.name
            }
        }
    };
}

/// The type a descriptor stores per entry (value, list element, map value, accumulator).
pub trait DescriptorValue {
    type Stored;
}

/// Id, clear, key enumeration and `apply_to_all_keys`: the same for every handle.
macro_rules! handle_common {
    ($ty:ident [$($gen:ident),*] { $($field:ident),* }) => {
        impl<$($gen,)* N> Clone for $ty<$($gen,)* N> {
            fn clone(&self) -> Self {
                Self { inner: self.inner.clone(), $($field: self.$field.clone(),)* }
            }
        }

        impl<$($gen,)* N> fmt::Debug for $ty<$($gen,)* N> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.inner.fmt(f)
            }
        }

        impl<$($gen,)* N> $ty<$($gen,)* N> {
            /// The backend's id of this state.
            pub fn id(&self) -> StateId {
                self.inner.id
            }
            /// Removes everything this state holds for (key, namespace).
            pub fn clear_in(&self, key: &KeyContext, namespace: &N) -> Result<()> {
                self.inner.clear(key, namespace)
            }
            /// Keys holding a non-empty entry in `namespace`: a copy, so callers may modify
            /// state while walking it.
            pub fn keys_in(&self, namespace: &N) -> Result<Vec<KeyContext>> {
                self.inner.keys(namespace)
            }
            /// Calls `f` for every key holding state in `namespace`; `f` may update or clear
            /// state (of this or any other key) while the walk goes on.
            pub fn apply_to_all_keys_in(
                &self,
                namespace: &N,
                mut f: impl FnMut(&KeyContext, &Self) -> Result<()>,
            ) -> Result<()> {
                for key in self.inner.keys(namespace)? {
                    f(&key, self)?;
                }
                Ok(())
            }
        }

        impl<$($gen),*> $ty<$($gen,)* VoidNamespace> {
            pub fn clear(&self, key: &KeyContext) -> Result<()> {
                self.clear_in(key, &VoidNamespace)
            }
            pub fn keys(&self) -> Result<Vec<KeyContext>> {
                self.keys_in(&VoidNamespace)
            }
            pub fn apply_to_all_keys(
                &self,
                f: impl FnMut(&KeyContext, &Self) -> Result<()>,
            ) -> Result<()> {
                self.apply_to_all_keys_in(&VoidNamespace, f)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Value state

/// Describes a value state: one value per (key, namespace).
pub struct ValueStateDescriptor<V, N = VoidNamespace> {
    common: Common<V, N>,
}

impl<V, N> DescriptorValue for ValueStateDescriptor<V, N> {
    type Stored = V;
}
descriptor_namespaces!(ValueStateDescriptor [V] {});

impl<V: Serialize + DeserializeOwned + 'static> ValueStateDescriptor<V> {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            common: Common::new(name),
        }
    }
}

impl<V, N> ValueStateDescriptor<V, N> {
    pub fn metadata(&self) -> StateMetadata {
        self.common.metadata(StateKind::Value, None)
    }
    /// Registers the state with `backend` (or checks it against the registered one).
    pub fn bind(&self, backend: SharedBackend) -> Result<ValueState<V, N>> {
        Ok(ValueState {
            inner: Bound::new(backend, self.common.clone(), self.metadata())?,
        })
    }
}

/// One value per (key, namespace).
pub struct ValueState<V, N = VoidNamespace> {
    inner: Bound<V, N>,
}
handle_common!(ValueState [V] {});

impl<V, N> ValueState<V, N> {
    pub fn get_in(&self, key: &KeyContext, namespace: &N) -> Result<Option<V>> {
        let ns = self.inner.ns(namespace)?;
        self.inner.read_value(key, &ns)
    }
    pub fn update_in(&self, key: &KeyContext, namespace: &N, value: &V) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let bytes = self.inner.encode(value)?;
        self.inner.backend.put(self.inner.id, key, &ns, &bytes)
    }
}

impl<V> ValueState<V, VoidNamespace> {
    pub fn get(&self, key: &KeyContext) -> Result<Option<V>> {
        self.get_in(key, &VoidNamespace)
    }
    pub fn update(&self, key: &KeyContext, value: &V) -> Result<()> {
        self.update_in(key, &VoidNamespace, value)
    }
}

// ---------------------------------------------------------------------------------------------
// List state

/// Describes a list state: an ordered list of elements per (key, namespace).
pub struct ListStateDescriptor<T, N = VoidNamespace> {
    common: Common<T, N>,
}

impl<T, N> DescriptorValue for ListStateDescriptor<T, N> {
    type Stored = T;
}
descriptor_namespaces!(ListStateDescriptor [T] {});

impl<T: Serialize + DeserializeOwned + 'static> ListStateDescriptor<T> {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            common: Common::new(name),
        }
    }
}

impl<T, N> ListStateDescriptor<T, N> {
    pub fn metadata(&self) -> StateMetadata {
        self.common.metadata(StateKind::List, None)
    }
    pub fn bind(&self, backend: SharedBackend) -> Result<ListState<T, N>> {
        Ok(ListState {
            inner: Bound::new(backend, self.common.clone(), self.metadata())?,
        })
    }
}

/// An ordered list per (key, namespace). An empty list reads as absent.
pub struct ListState<T, N = VoidNamespace> {
    inner: Bound<T, N>,
}
handle_common!(ListState [T] {});

impl<T, N> ListState<T, N> {
    /// The elements, in insertion order; `None` when the list is absent or empty.
    pub fn get_in(&self, key: &KeyContext, namespace: &N) -> Result<Option<Vec<T>>> {
        let ns = self.inner.ns(namespace)?;
        let raw = self.inner.backend.list_get(self.inner.id, key, &ns)?;
        if raw.is_empty() {
            return Ok(None);
        }
        raw.iter()
            .map(|e| self.inner.decode(e))
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }
    pub fn add_in(&self, key: &KeyContext, namespace: &N, value: &T) -> Result<()> {
        self.add_all_in(key, namespace, std::slice::from_ref(value))
    }
    pub fn add_all_in(&self, key: &KeyContext, namespace: &N, values: &[T]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let ns = self.inner.ns(namespace)?;
        let encoded = self.encode_all(values)?;
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        self.inner
            .backend
            .list_append(self.inner.id, key, &ns, &refs)
    }
    /// Replaces the list; an empty slice clears it.
    pub fn update_in(&self, key: &KeyContext, namespace: &N, values: &[T]) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let encoded = self.encode_all(values)?;
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        self.inner
            .backend
            .list_replace(self.inner.id, key, &ns, &refs)
    }
    /// Appends the lists of `sources` to `target`'s, in order, and clears the sources.
    pub fn merge_namespaces(&self, key: &KeyContext, target: &N, sources: &[N]) -> Result<()> {
        let target_ns = self.inner.ns(target)?;
        for source in sources {
            let ns = self.inner.ns(source)?;
            if ns == target_ns {
                continue;
            }
            let elements = self.inner.backend.list_get(self.inner.id, key, &ns)?;
            if elements.is_empty() {
                continue;
            }
            self.inner.backend.remove(self.inner.id, key, &ns)?;
            let refs: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
            self.inner
                .backend
                .list_append(self.inner.id, key, &target_ns, &refs)?;
        }
        Ok(())
    }
    fn encode_all(&self, values: &[T]) -> Result<Vec<Vec<u8>>> {
        values.iter().map(|v| self.inner.encode(v)).collect()
    }
}

impl<T> ListState<T, VoidNamespace> {
    pub fn get(&self, key: &KeyContext) -> Result<Option<Vec<T>>> {
        self.get_in(key, &VoidNamespace)
    }
    pub fn add(&self, key: &KeyContext, value: &T) -> Result<()> {
        self.add_in(key, &VoidNamespace, value)
    }
    pub fn add_all(&self, key: &KeyContext, values: &[T]) -> Result<()> {
        self.add_all_in(key, &VoidNamespace, values)
    }
    pub fn update(&self, key: &KeyContext, values: &[T]) -> Result<()> {
        self.update_in(key, &VoidNamespace, values)
    }
}

// ---------------------------------------------------------------------------------------------
// Map state

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
    pub fn metadata(&self) -> StateMetadata {
        self.common
            .metadata(StateKind::Map, Some(self.user_key_codec.id().to_string()))
    }
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
    pub fn get_in(&self, key: &KeyContext, namespace: &N, user_key: &K) -> Result<Option<V>> {
        let ns = self.inner.ns(namespace)?;
        let uk = self.user_key(user_key)?;
        match self.inner.backend.map_get(self.inner.id, key, &ns, &uk)? {
            Some(bytes) => Ok(Some(self.inner.decode(&bytes)?)),
            None => Ok(None),
        }
    }
    pub fn put_in(&self, key: &KeyContext, namespace: &N, user_key: &K, value: &V) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let uk = self.user_key(user_key)?;
        let v = self.inner.encode(value)?;
        self.inner.backend.map_put(self.inner.id, key, &ns, &uk, &v)
    }
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
    pub fn remove_in(&self, key: &KeyContext, namespace: &N, user_key: &K) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let uk = self.user_key(user_key)?;
        self.inner.backend.map_remove(self.inner.id, key, &ns, &uk)
    }
    pub fn contains_in(&self, key: &KeyContext, namespace: &N, user_key: &K) -> Result<bool> {
        let ns = self.inner.ns(namespace)?;
        let uk = self.user_key(user_key)?;
        self.inner
            .backend
            .map_contains(self.inner.id, key, &ns, &uk)
    }
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
    pub fn user_keys_in(&self, key: &KeyContext, namespace: &N) -> Result<Vec<K>> {
        Ok(self
            .entries_in(key, namespace)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
    pub fn values_in(&self, key: &KeyContext, namespace: &N) -> Result<Vec<V>> {
        Ok(self
            .entries_in(key, namespace)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
}

impl<K, V> MapState<K, V, VoidNamespace> {
    pub fn get(&self, key: &KeyContext, user_key: &K) -> Result<Option<V>> {
        self.get_in(key, &VoidNamespace, user_key)
    }
    pub fn put(&self, key: &KeyContext, user_key: &K, value: &V) -> Result<()> {
        self.put_in(key, &VoidNamespace, user_key, value)
    }
    pub fn remove(&self, key: &KeyContext, user_key: &K) -> Result<()> {
        self.remove_in(key, &VoidNamespace, user_key)
    }
    pub fn contains(&self, key: &KeyContext, user_key: &K) -> Result<bool> {
        self.contains_in(key, &VoidNamespace, user_key)
    }
    pub fn is_empty(&self, key: &KeyContext) -> Result<bool> {
        self.is_empty_in(key, &VoidNamespace)
    }
    pub fn entries(&self, key: &KeyContext) -> Result<Vec<(K, V)>> {
        self.entries_in(key, &VoidNamespace)
    }
    pub fn user_keys(&self, key: &KeyContext) -> Result<Vec<K>> {
        self.user_keys_in(key, &VoidNamespace)
    }
    pub fn values(&self, key: &KeyContext) -> Result<Vec<V>> {
        self.values_in(key, &VoidNamespace)
    }
}

// ---------------------------------------------------------------------------------------------
// Reducing state

/// Combines two values into one; must be associative (Flink's `ReduceFunction`).
pub type ReduceFn<V> = Arc<dyn Fn(V, V) -> V + Send + Sync>;

/// Describes a reducing state: `add` folds the new value into the stored one.
pub struct ReducingStateDescriptor<V, N = VoidNamespace> {
    common: Common<V, N>,
    reduce: ReduceFn<V>,
}

impl<V, N> DescriptorValue for ReducingStateDescriptor<V, N> {
    type Stored = V;
}
descriptor_namespaces!(ReducingStateDescriptor [V] { reduce });

impl<V: Serialize + DeserializeOwned + 'static> ReducingStateDescriptor<V> {
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> Self {
        Self {
            common: Common::new(name),
            reduce: Arc::new(reduce),
        }
    }
}

impl<V, N> ReducingStateDescriptor<V, N> {
    pub fn metadata(&self) -> StateMetadata {
        self.common.metadata(StateKind::Reducing, None)
    }
    pub fn bind(&self, backend: SharedBackend) -> Result<ReducingState<V, N>> {
        Ok(ReducingState {
            inner: Bound::new(backend, self.common.clone(), self.metadata())?,
            reduce: self.reduce.clone(),
        })
    }
}

/// One value per (key, namespace) that `add` folds into with the reduce function.
pub struct ReducingState<V, N = VoidNamespace> {
    inner: Bound<V, N>,
    reduce: ReduceFn<V>,
}
handle_common!(ReducingState [V] { reduce });

impl<V, N> ReducingState<V, N> {
    pub fn get_in(&self, key: &KeyContext, namespace: &N) -> Result<Option<V>> {
        let ns = self.inner.ns(namespace)?;
        self.read(key, &ns)
    }
    fn read(&self, key: &KeyContext, ns: &[u8]) -> Result<Option<V>> {
        self.inner.read_value(key, ns)
    }
    fn fold_into(&self, key: &KeyContext, ns: &[u8], value: V) -> Result<()> {
        let folded = match self.read(key, ns)? {
            Some(current) => (self.reduce)(current, value),
            None => value,
        };
        let bytes = self.inner.encode(&folded)?;
        self.inner.backend.put(self.inner.id, key, ns, &bytes)
    }
    pub fn add_in(&self, key: &KeyContext, namespace: &N, value: V) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        self.fold_into(key, &ns, value)
    }
    /// Folds the values of `sources` into `target` and clears the sources.
    pub fn merge_namespaces(&self, key: &KeyContext, target: &N, sources: &[N]) -> Result<()> {
        let target_ns = self.inner.ns(target)?;
        for source in sources {
            let ns = self.inner.ns(source)?;
            if ns == target_ns {
                continue;
            }
            if let Some(v) = self.read(key, &ns)? {
                self.inner.backend.remove(self.inner.id, key, &ns)?;
                self.fold_into(key, &target_ns, v)?;
            }
        }
        Ok(())
    }
}

impl<V> ReducingState<V, VoidNamespace> {
    pub fn get(&self, key: &KeyContext) -> Result<Option<V>> {
        self.get_in(key, &VoidNamespace)
    }
    pub fn add(&self, key: &KeyContext, value: V) -> Result<()> {
        self.add_in(key, &VoidNamespace, value)
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregating state

/// Flink's `AggregateFunction`: folds inputs into an accumulator, reads a result from it.
pub trait AggregateFunction<In, Acc, Out>: Send + Sync {
    fn create_accumulator(&self) -> Acc;
    fn add(&self, value: In, accumulator: Acc) -> Acc;
    fn get_result(&self, accumulator: &Acc) -> Out;
    fn merge(&self, a: Acc, b: Acc) -> Acc;
}

/// Describes an aggregating state: stores an accumulator of type `Acc` per (key, namespace).
pub struct AggregatingStateDescriptor<In, Acc, Out, N = VoidNamespace> {
    common: Common<Acc, N>,
    function: Arc<dyn AggregateFunction<In, Acc, Out>>,
}

impl<In, Acc, Out, N> DescriptorValue for AggregatingStateDescriptor<In, Acc, Out, N> {
    type Stored = Acc;
}
descriptor_namespaces!(AggregatingStateDescriptor [In, Acc, Out] { function });

impl<In, Acc: Serialize + DeserializeOwned + 'static, Out>
    AggregatingStateDescriptor<In, Acc, Out>
{
    pub fn new(
        name: impl Into<String>,
        function: impl AggregateFunction<In, Acc, Out> + 'static,
    ) -> Self {
        Self {
            common: Common::new(name),
            function: Arc::new(function),
        }
    }
}

impl<In, Acc, Out, N> AggregatingStateDescriptor<In, Acc, Out, N> {
    pub fn metadata(&self) -> StateMetadata {
        self.common.metadata(StateKind::Aggregating, None)
    }
    pub fn bind(&self, backend: SharedBackend) -> Result<AggregatingState<In, Acc, Out, N>> {
        Ok(AggregatingState {
            inner: Bound::new(backend, self.common.clone(), self.metadata())?,
            function: self.function.clone(),
        })
    }
}

/// An accumulator per (key, namespace); `add` folds inputs in, `get` reads the result.
pub struct AggregatingState<In, Acc, Out, N = VoidNamespace> {
    inner: Bound<Acc, N>,
    function: Arc<dyn AggregateFunction<In, Acc, Out>>,
}
handle_common!(AggregatingState [In, Acc, Out] { function });

impl<In, Acc, Out, N> AggregatingState<In, Acc, Out, N> {
    fn read(&self, key: &KeyContext, ns: &[u8]) -> Result<Option<Acc>> {
        self.inner.read_value(key, ns)
    }
    fn write(&self, key: &KeyContext, ns: &[u8], acc: &Acc) -> Result<()> {
        let bytes = self.inner.encode(acc)?;
        self.inner.backend.put(self.inner.id, key, ns, &bytes)
    }
    /// The result of the accumulator, or `None` when nothing was added.
    pub fn get_in(&self, key: &KeyContext, namespace: &N) -> Result<Option<Out>> {
        let ns = self.inner.ns(namespace)?;
        Ok(self
            .read(key, &ns)?
            .map(|acc| self.function.get_result(&acc)))
    }
    /// The raw accumulator.
    pub fn accumulator_in(&self, key: &KeyContext, namespace: &N) -> Result<Option<Acc>> {
        let ns = self.inner.ns(namespace)?;
        self.read(key, &ns)
    }
    pub fn add_in(&self, key: &KeyContext, namespace: &N, value: In) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let acc = match self.read(key, &ns)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        self.write(key, &ns, &self.function.add(value, acc))
    }
    /// Merges the accumulators of `sources` into `target` and clears the sources.
    pub fn merge_namespaces(&self, key: &KeyContext, target: &N, sources: &[N]) -> Result<()> {
        let target_ns = self.inner.ns(target)?;
        for source in sources {
            let ns = self.inner.ns(source)?;
            if ns == target_ns {
                continue;
            }
            if let Some(acc) = self.read(key, &ns)? {
                self.inner.backend.remove(self.inner.id, key, &ns)?;
                let merged = match self.read(key, &target_ns)? {
                    Some(current) => self.function.merge(current, acc),
                    None => acc,
                };
                self.write(key, &target_ns, &merged)?;
            }
        }
        Ok(())
    }
}

impl<In, Acc, Out> AggregatingState<In, Acc, Out, VoidNamespace> {
    pub fn get(&self, key: &KeyContext) -> Result<Option<Out>> {
        self.get_in(key, &VoidNamespace)
    }
    pub fn add(&self, key: &KeyContext, value: In) -> Result<()> {
        self.add_in(key, &VoidNamespace, value)
    }
}
