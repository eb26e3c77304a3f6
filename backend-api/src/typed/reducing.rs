//! Reducing state: one value per (key, namespace) that `add` folds into with an associative
//! reduce function (Flink's `ReducingState`).

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use super::bound::{Bound, Common};
use super::macros::{descriptor_namespaces, handle_common};
use super::{DescriptorValue, SharedBackend};
use crate::codec::VoidNamespace;
use crate::error::Result;
use crate::state::{KeyContext, StateKind, StateMetadata};

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
    /// A descriptor of state `name` without namespace, folding with `reduce` (which must be
    /// associative), values encoded with the default serde codec.
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
    /// The metadata the state is registered with: name, kind and codec ids.
    pub fn metadata(&self) -> StateMetadata {
        self.common.metadata(StateKind::Reducing, None)
    }
    /// Registers the state with `backend` (or checks it against the registered one).
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
    /// The folded value of (key, namespace); `None` when nothing was added.
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
    /// Folds `value` into the value of (key, namespace) (`reduce(current, value)`), or stores
    /// it when there is none.
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
    /// The folded value of `key`; `None` when nothing was added.
    pub fn get(&self, key: &KeyContext) -> Result<Option<V>> {
        self.get_in(key, &VoidNamespace)
    }
    /// Folds `value` into `key`'s value (`reduce(current, value)`), or stores it when there
    /// is none.
    pub fn add(&self, key: &KeyContext, value: V) -> Result<()> {
        self.add_in(key, &VoidNamespace, value)
    }
}
