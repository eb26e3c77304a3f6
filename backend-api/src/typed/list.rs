//! List state: an ordered list of elements per (key, namespace). `add` hands the backend only
//! the new elements, so a backend can append without reading the list back.

use serde::{de::DeserializeOwned, Serialize};

use super::bound::{Bound, Common};
use super::macros::{descriptor_namespaces, handle_common};
use super::{DescriptorValue, SharedBackend};
use crate::codec::VoidNamespace;
use crate::error::Result;
use crate::state::{KeyContext, StateKind, StateMetadata};

/// Describes a list state: an ordered list of elements per (key, namespace).
pub struct ListStateDescriptor<T, N = VoidNamespace> {
    common: Common<T, N>,
}

impl<T, N> DescriptorValue for ListStateDescriptor<T, N> {
    type Stored = T;
}
descriptor_namespaces!(ListStateDescriptor [T] {});

impl<T: Serialize + DeserializeOwned + 'static> ListStateDescriptor<T> {
    /// A descriptor of state `name` without namespace, elements encoded with the default
    /// serde codec.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            common: Common::new(name),
        }
    }
}

impl<T, N> ListStateDescriptor<T, N> {
    /// The metadata the state is registered with: name, kind and codec ids.
    pub fn metadata(&self) -> StateMetadata {
        self.common.metadata(StateKind::List, None)
    }
    /// Registers the state with `backend` (or checks it against the registered one).
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
    /// Appends `value` to the list of (key, namespace).
    pub fn add_in(&self, key: &KeyContext, namespace: &N, value: &T) -> Result<()> {
        self.add_all_in(key, namespace, std::slice::from_ref(value))
    }
    /// Appends `values`, in order, to the list of (key, namespace); an empty slice changes
    /// nothing.
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
    /// The elements of `key`'s list, in insertion order; `None` when absent or empty.
    pub fn get(&self, key: &KeyContext) -> Result<Option<Vec<T>>> {
        self.get_in(key, &VoidNamespace)
    }
    /// Appends `value` to `key`'s list.
    pub fn add(&self, key: &KeyContext, value: &T) -> Result<()> {
        self.add_in(key, &VoidNamespace, value)
    }
    /// Appends `values`, in order, to `key`'s list; an empty slice changes nothing.
    pub fn add_all(&self, key: &KeyContext, values: &[T]) -> Result<()> {
        self.add_all_in(key, &VoidNamespace, values)
    }
    /// Replaces `key`'s list; an empty slice clears it.
    pub fn update(&self, key: &KeyContext, values: &[T]) -> Result<()> {
        self.update_in(key, &VoidNamespace, values)
    }
}
