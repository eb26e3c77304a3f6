//! Codecs turn typed keys, namespaces and values into the bytes backends store.
//!
//! The default, [`SerdeCodec`], serializes any `serde` type with `postcard` (compact, stable,
//! varint integers). A codec has an id that is written into every snapshot: restoring state
//! with a codec of another id is an error found at registration, not a garbled value found
//! later.

use std::fmt;
use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

/// Encodes and decodes values of `T`. Implementations must be deterministic: keys are hashed
/// from their encoded bytes, so the same key must always encode to the same bytes.
pub trait Codec<T: ?Sized>: Send + Sync {
    /// Stable identifier written into snapshots (e.g. `postcard/u64`).
    fn id(&self) -> &str;
    /// Appends the encoding of `value` to `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<()>;
    /// Decodes a value from exactly `bytes`.
    fn decode(&self, bytes: &[u8]) -> Result<T>
    where
        T: Sized;

    /// Convenience: encodes into a fresh buffer.
    fn to_bytes(&self, value: &T) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode(value, &mut out)?;
        Ok(out)
    }
}

/// The default codec: `serde` + `postcard`.
pub struct SerdeCodec<T> {
    id: String,
    _type: PhantomData<fn() -> T>,
}

impl<T> SerdeCodec<T> {
    /// A codec whose id is `postcard/<type name>`.
    pub fn new() -> Self {
        Self::with_id(format!("postcard/{}", std::any::type_name::<T>()))
    }
    /// A codec with an explicit id: use it when a type is renamed or moved, so the id (and the
    /// snapshots that carry it) stays the same.
    pub fn with_id(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            _type: PhantomData,
        }
    }
}

impl<T> Default for SerdeCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for SerdeCodec<T> {
    fn clone(&self) -> Self {
        Self::with_id(self.id.clone())
    }
}

impl<T> fmt::Debug for SerdeCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerdeCodec").field("id", &self.id).finish()
    }
}

impl<T: Serialize + DeserializeOwned> Codec<T> for SerdeCodec<T> {
    fn id(&self) -> &str {
        &self.id
    }
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        let bytes = postcard::to_extend(value, std::mem::take(out)).map_err(|e| Error::Encode {
            codec: self.id.clone(),
            message: e.to_string(),
        })?;
        *out = bytes;
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<T> {
        postcard::from_bytes(bytes).map_err(|e| Error::Decode {
            codec: self.id.clone(),
            message: e.to_string(),
        })
    }
}

/// Raw bytes, stored as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesCodec;

impl Codec<Vec<u8>> for BytesCodec {
    fn id(&self) -> &str {
        "bytes"
    }
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(bytes.to_vec())
    }
}

/// The namespace of state that has none: encodes to zero bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoidNamespace;

/// Codec of [`VoidNamespace`].
#[derive(Clone, Copy, Debug, Default)]
pub struct VoidNamespaceCodec;

impl Codec<VoidNamespace> for VoidNamespaceCodec {
    fn id(&self) -> &str {
        "void-namespace"
    }
    fn encode(&self, _: &VoidNamespace, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<VoidNamespace> {
        if bytes.is_empty() {
            Ok(VoidNamespace)
        } else {
            Err(Error::Decode {
                codec: "void-namespace".into(),
                message: format!("expected no bytes, found {}", bytes.len()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_codec_round_trips_and_appends() {
        let c = SerdeCodec::<(u64, String)>::new();
        let mut out = vec![9];
        c.encode(&(300, "x".into()), &mut out).unwrap();
        assert_eq!(out[0], 9);
        assert_eq!(c.decode(&out[1..]).unwrap(), (300, "x".to_string()));
        assert!(matches!(c.decode(&[0xff]), Err(Error::Decode { .. })));
    }
}
