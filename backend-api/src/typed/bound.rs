//! The plumbing every descriptor and handle shares: a descriptor's name and codecs
//! ([`Common`]), and a handle's binding to a backend ([`Bound`]) with the encode, decode and
//! per-cell operations the five state kinds are written in.

use std::fmt;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use super::SharedBackend;
use crate::codec::{Codec, SerdeCodec, VoidNamespace, VoidNamespaceCodec};
use crate::error::Result;
use crate::state::{KeyContext, StateId, StateKind, StateMetadata};

/// A shared codec: descriptors are cloned into every handle they bind.
pub(super) type CodecRef<T> = Arc<dyn Codec<T>>;

/// Name, namespace codec and value codec: what every descriptor has.
pub(super) struct Common<V, N> {
    pub(super) name: String,
    pub(super) value_codec: CodecRef<V>,
    pub(super) namespace_codec: CodecRef<N>,
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
    pub(super) fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value_codec: Arc::new(SerdeCodec::<V>::new()),
            namespace_codec: Arc::new(VoidNamespaceCodec),
        }
    }
}

impl<V, N> Common<V, N> {
    pub(super) fn metadata(
        &self,
        kind: StateKind,
        user_key_codec: Option<String>,
    ) -> StateMetadata {
        StateMetadata {
            name: self.name.clone(),
            kind,
            namespace_codec: self.namespace_codec.id().to_string(),
            value_codec: self.value_codec.id().to_string(),
            user_key_codec,
        }
    }

    pub(super) fn with_namespace_codec<M>(self, codec: impl Codec<M> + 'static) -> Common<V, M> {
        Common {
            name: self.name,
            value_codec: self.value_codec,
            namespace_codec: Arc::new(codec),
        }
    }
}

/// The bound form every handle carries: backend, state id and codecs.
pub(super) struct Bound<V, N> {
    pub(super) backend: SharedBackend,
    pub(super) id: StateId,
    pub(super) common: Common<V, N>,
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
    /// Registers `meta` with `backend` (or checks it against the registered state).
    pub(super) fn new(
        backend: SharedBackend,
        common: Common<V, N>,
        meta: StateMetadata,
    ) -> Result<Self> {
        let id = backend.register_state(&meta)?;
        Ok(Self {
            backend,
            id,
            common,
        })
    }
    pub(super) fn ns(&self, namespace: &N) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.common.namespace_codec.encode(namespace, &mut out)?;
        Ok(out)
    }
    pub(super) fn encode(&self, value: &V) -> Result<Vec<u8>> {
        self.common.value_codec.to_bytes(value)
    }
    pub(super) fn decode(&self, bytes: &[u8]) -> Result<V>
    where
        V: Sized,
    {
        self.common.value_codec.decode(bytes)
    }
    /// Reads and decodes a value cell, decoding from the backend's bytes without a copy.
    pub(super) fn read_value(&self, key: &KeyContext, ns: &[u8]) -> Result<Option<V>>
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
    pub(super) fn keys(&self, namespace: &N) -> Result<Vec<KeyContext>> {
        let ns = self.ns(namespace)?;
        self.backend.keys(self.id, &ns)
    }
    pub(super) fn clear(&self, key: &KeyContext, namespace: &N) -> Result<()> {
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
