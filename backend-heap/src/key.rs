//! The key of every entry: a record key's bytes followed by a namespace's bytes.
//!
//! Short pairs (most keys: a `u64` or a short string, with a small or empty namespace) are
//! stored inline, in the map's bucket, so a lookup compares them without following a
//! pointer: on a large state that saves a cache miss per access, the heap backend's main
//! cost. Longer pairs sit in one `Arc<[u8]>`, so that the change log and the version sweeper
//! hold the key for the price of a reference count instead of a copy. Lookups never build an
//! `EntryKey`: they hash and compare the borrowed `(key, namespace)` pair (see [`hash_of`]).

use std::cmp::Ordering;
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroU8;
use std::sync::Arc;

/// The hasher of every map of the backend: foldhash is several times faster than SipHash on
/// short keys and is randomly seeded per backend, so crafted keys cannot force collisions.
pub(crate) type EntryHasher = foldhash::fast::RandomState;

/// An owned `(key, namespace)` pair, three words: inline up to [`INLINE`] bytes, else shared.
#[derive(Clone, Debug)]
pub(crate) struct EntryKey {
    repr: Repr,
}

/// Bytes of key and namespace together that are stored inline.
const INLINE: usize = 22;

#[derive(Clone, Debug)]
enum Repr {
    /// `len_plus_one - 1` bytes of `bytes` hold the key (`key_len` bytes), then the
    /// namespace. Non-zero, so `Shared` fits in the same 24 bytes (its tag is the zero).
    Inline {
        len_plus_one: NonZeroU8,
        key_len: u8,
        bytes: [u8; INLINE],
    },
    /// One allocation holding the key's length (u32 LE), the key and the namespace.
    Shared(Arc<[u8]>),
}

/// Bytes of the key-length prefix of a shared pair.
const LEN_PREFIX: usize = 4;

impl EntryKey {
    pub(crate) fn new(key: &[u8], namespace: &[u8]) -> Self {
        let total = key.len() + namespace.len();
        if total <= INLINE {
            let mut bytes = [0u8; INLINE];
            let (k, rest) = bytes.split_at_mut(key.len());
            k.copy_from_slice(key);
            rest[..namespace.len()].copy_from_slice(namespace);
            return Self {
                repr: Repr::Inline {
                    // total <= INLINE < 255: both lengths fit a u8.
                    len_plus_one: NonZeroU8::MIN.saturating_add(total as u8),
                    key_len: key.len() as u8,
                    bytes,
                },
            };
        }
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
        Self {
            repr: Repr::Shared(bytes),
        }
    }

    #[inline]
    fn parts(&self) -> (&[u8], &[u8]) {
        match &self.repr {
            Repr::Inline {
                len_plus_one,
                key_len,
                bytes,
            } => {
                let total = usize::from(len_plus_one.get() - 1).min(INLINE);
                bytes[..total].split_at(usize::from(*key_len).min(total))
            }
            Repr::Shared(bytes) => {
                let (len, rest) = bytes.split_at(LEN_PREFIX.min(bytes.len()));
                let key_len = match len {
                    [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]) as usize,
                    _ => 0,
                };
                rest.split_at(key_len.min(rest.len()))
            }
        }
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
        // A shared pair's length is in its pointer: check it before touching the allocation.
        // An inline pair is compared in the bucket itself.
        if let Repr::Shared(bytes) = &self.repr {
            if bytes.len() != LEN_PREFIX + key.len() + namespace.len() {
                return false;
            }
        }
        let (k, n) = self.parts();
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
        assert_eq!(
            std::mem::size_of::<EntryKey>(),
            24,
            "three words: a bucket of (key, cell) is one cache line"
        );
        let empty = EntryKey::new(b"", b"");
        assert!(empty.is(b"", b"") && !empty.is(b"", b"x"));
    }

    #[test]
    fn inline_and_shared_pairs_behave_alike() {
        let hasher = EntryHasher::default();
        // Around the inline limit, with the split anywhere.
        for total in [0, 1, INLINE - 1, INLINE, INLINE + 1, 64] {
            let bytes: Vec<u8> = (0..total as u8).collect();
            for split in [0, total / 2, total] {
                let (k, n) = bytes.split_at(split);
                let e = EntryKey::new(k, n);
                assert_eq!(
                    matches!(e.repr, Repr::Inline { .. }),
                    total <= INLINE,
                    "{total}"
                );
                assert_eq!((e.key(), e.namespace()), (k, n));
                assert!(e.is(k, n));
                assert_eq!(hasher.hash_one(&e), hash_of(&hasher, k, n));
                assert_eq!(e.clone(), e);
                if total > 0 {
                    // Same bytes, other split; and one byte changed.
                    let other = if split > 0 {
                        bytes.split_at(split - 1)
                    } else {
                        bytes.split_at(1)
                    };
                    assert!(!e.is(other.0, other.1));
                    let mut changed = bytes.clone();
                    changed[total - 1] ^= 1;
                    let (ck, cn) = changed.split_at(split);
                    assert!(!e.is(ck, cn));
                    assert_ne!(EntryKey::new(ck, cn), e);
                }
            }
        }
        // Order is by (key, namespace) whatever the representation.
        let short = EntryKey::new(b"a", b"");
        let long = EntryKey::new(&[b'a'; 40], b"");
        assert!(short < long);
        assert!(EntryKey::new(b"b", b"") > long);
    }
}
