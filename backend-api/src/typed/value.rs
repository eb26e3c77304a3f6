//! Value state: one value per (key, namespace), read and overwritten whole.

use serde::{de::DeserializeOwned, Serialize};

use super::bound::{Bound, Common};
use super::macros::{descriptor_namespaces, handle_common};
use super::{DescriptorValue, SharedBackend};
use crate::codec::VoidNamespace;
use crate::error::Result;
use crate::state::{KeyContext, StateKind, StateMetadata};

/// Describes a value state: one value per (key, namespace).
pub struct ValueStateDescriptor<V, N = VoidNamespace> {
    common: Common<V, N>,
}

impl<V, N> DescriptorValue for ValueStateDescriptor<V, N> {
    type Stored = V;
}
descriptor_namespaces!(ValueStateDescriptor [V] {});

impl<V: Serialize + DeserializeOwned + 'static> ValueStateDescriptor<V> {
    /// A descriptor of state `name` without namespace, values encoded with the default serde
    /// codec.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            common: Common::new(name),
        }
    }
}

impl<V, N> ValueStateDescriptor<V, N> {
    /// The metadata the state is registered with: name, kind and codec ids.
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
    /// The value of (key, namespace); `None` when unset.
    pub fn get_in(&self, key: &KeyContext, namespace: &N) -> Result<Option<V>> {
        let ns = self.inner.ns(namespace)?;
        self.inner.read_value(key, &ns)
    }
    /// Sets the value of (key, namespace), replacing any previous one.
    pub fn update_in(&self, key: &KeyContext, namespace: &N, value: &V) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let bytes = self.inner.encode(value)?;
        self.inner.backend.put(self.inner.id, key, &ns, &bytes)
    }
}

impl<V> ValueState<V, VoidNamespace> {
    /// The value of `key`; `None` when unset.
    pub fn get(&self, key: &KeyContext) -> Result<Option<V>> {
        self.get_in(key, &VoidNamespace)
    }
    /// Sets the value of `key`, replacing any previous one.
    pub fn update(&self, key: &KeyContext, value: &V) -> Result<()> {
        self.update_in(key, &VoidNamespace, value)
    }
}
