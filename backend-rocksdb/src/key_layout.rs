//! The byte layout of RocksDB keys: the ordered-store layout shared with LMDB, defined once in
//! [`flowstate_api::key_layout`] and re-exported here.
//!
//! ```text
//! value / list : key group (2 bytes BE) | varint len | key | varint len | namespace
//! map entry    : key group (2 bytes BE) | varint len | key | varint len | namespace | user key
//! ```
//!
//! The fixed-width big-endian key group makes each key group one contiguous key range (and
//! iteration key-group ordered). The key and the namespace are length-prefixed with LEB128
//! varints, so the bytes of (key, namespace) can never be a prefix of another (key, namespace):
//! a map's entries are exactly the keys that start with its (key, namespace) prefix.
//!
//! ```
//! use flowstate_api::{codec::Codec, KeyContext, MaxParallelism, SerdeCodec};
//! let max = MaxParallelism::new(128)?;
//! let key = KeyContext::for_key(&SerdeCodec::<u64>::new(), &42u64, max)?;
//! // Exactly the bytes the backend stores for a u64 key in the void namespace.
//! let raw = flowstate_rocksdb::value_key(&key, &[]);
//! assert_eq!(&raw[..2], &key.key_group().to_be_bytes());
//! # Ok::<(), flowstate_api::Error>(())
//! ```

pub use flowstate_api::key_layout::*;

/// The key group of a stored key (its first two bytes), if it has them.
pub(crate) fn key_group_of(key: &[u8]) -> Option<u32> {
    key.first_chunk::<2>()
        .map(|kg| u16::from_be_bytes(*kg) as u32)
}
