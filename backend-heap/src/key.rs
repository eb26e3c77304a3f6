//! The key of every entry: a record key's bytes followed by a namespace's bytes.
//!
//! The bytes sit in one `Arc<[u8]>` so that the change log and the version sweeper can hold an
//! entry's key for the price of a reference count instead of a copy. Lookups never build an
//! `EntryKey`: they hash and compare the borrowed `(key, namespace)` pair (see [`hash_of`]).

use std::cmp::Ordering;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// The hasher of every map of the backend: foldhash is several times faster than SipHash on
/// short keys and is randomly seeded per backend, so crafted keys cannot force collisions.
pub(crate) type EntryHasher = foldhash::fast::RandomState;

/// An owned `(key, namespace)` pair: one allocation holding the key's length (u32 LE), the
/// key and the namespace. Two words, so a map bucket stays small.
#[derive(Clone, Debug)]
pub(crate) struct EntryKey {
    bytes: Arc<[u8]>,
}

/// Bytes of the key-length prefix.
const LEN_PREFIX: usize = 4;

impl EntryKey {
    pub(crate) fn new(key: &[u8], namespace: &[u8]) -> Self {
        // Keys come from KeyContext (in memory, so far below 4 GiB); saturating keeps the
        // split inside the allocation whatever happens.
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        // Chained slice iterators have an exact length: one allocation, no intermediate Vec.
        let bytes: Arc<[u8]> = key_len
            .to_le_bytes()
            .iter()
            .chain(key)
            .chain(namespace)
            .copied()
            .collect();
        Self { bytes }
    }

    #[inline]
    fn parts(&self) -> (&[u8], &[u8]) {
        let (len, rest) = self.bytes.split_at(LEN_PREFIX);
        let key_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        rest.split_at(key_len.min(rest.len()))
    }

    pub(crate) fn key(&self) -> &[u8] {
        self.parts().0
    }

    pub(crate) fn namespace(&self) -> &[u8] {
        self.parts().1
    }

    /// True when this is the pair `(key, namespace)`.
    #[inline]
    pub(crate) fn is(&self, key: &[u8], namespace: &[u8]) -> bool {
        // One length check on the whole, then the bytes.
        self.bytes.len() == LEN_PREFIX + key.len() + namespace.len() && {
            let (k, n) = self.parts();
            k == key && n == namespace
        }
    }
}

impl PartialEq for EntryKey {
    fn eq(&self, other: &Self) -> bool {
        self.is(other.key(), other.namespace())
    }
}

impl Eq for EntryKey {}

impl Hash for EntryKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must match `hash_of` exactly: lookups hash the borrowed pair the same way.
        self.key().hash(state);
        self.namespace().hash(state);
    }
}

impl PartialOrd for EntryKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EntryKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.key(), self.namespace()).cmp(&(other.key(), other.namespace()))
    }
}

/// The hash of the pair `(key, namespace)`, equal to the hash of the matching [`EntryKey`].
#[inline]
pub(crate) fn hash_of(hasher: &EntryHasher, key: &[u8], namespace: &[u8]) -> u64 {
    let mut h = hasher.build_hasher();
    key.hash(&mut h);
    namespace.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_hashes_agree_and_split_is_exact() {
        let hasher = EntryHasher::default();
        let k = EntryKey::new(b"ab", b"c");
        assert_eq!(k.key(), b"ab");
        assert_eq!(k.namespace(), b"c");
        assert_eq!(hasher.hash_one(&k), hash_of(&hasher, b"ab", b"c"));
        // Same concatenated bytes, other split: a different entry.
        let other = EntryKey::new(b"a", b"bc");
        assert_ne!(k, other);
        assert!(!k.is(b"a", b"bc"));
        assert_ne!(hash_of(&hasher, b"a", b"bc"), hash_of(&hasher, b"ab", b"c"));
        assert!(other < k);
        assert_eq!(std::mem::size_of::<EntryKey>(), 16);
        let empty = EntryKey::new(b"", b"");
        assert!(empty.is(b"", b"") && !empty.is(b"", b"x"));
    }
}
