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

/// An owned `(key, namespace)` pair.
#[derive(Clone, Debug)]
pub(crate) struct EntryKey {
    bytes: Arc<[u8]>,
    key_len: usize,
}

impl EntryKey {
    pub(crate) fn new(key: &[u8], namespace: &[u8]) -> Self {
        // A chain of slice iterators has an exact length: one allocation, no intermediate Vec.
        let bytes: Arc<[u8]> = key.iter().chain(namespace).copied().collect();
        Self {
            bytes,
            key_len: key.len(),
        }
    }

    pub(crate) fn key(&self) -> &[u8] {
        self.bytes.split_at(self.key_len).0
    }

    pub(crate) fn namespace(&self) -> &[u8] {
        self.bytes.split_at(self.key_len).1
    }

    /// True when this is the pair `(key, namespace)`.
    #[inline]
    pub(crate) fn is(&self, key: &[u8], namespace: &[u8]) -> bool {
        let (k, n) = self.bytes.split_at(self.key_len);
        k == key && n == namespace
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
    }
}
