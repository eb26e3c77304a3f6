//! The key layout every ordered store uses (RocksDB, LMDB): one layout, written once.
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

use crate::error::{Error, Result};
use crate::key_groups::{KeyGroup, KeyGroupRange, UPPER_BOUND_MAX_PARALLELISM};
use crate::state::KeyContext;

/// Appends `value` as an unsigned LEB128 varint.
pub fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The number of bytes [`push_varint`] writes for `value`.
pub fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Appends the (key group, key, namespace) prefix of a row to `out`.
pub fn push_prefix(out: &mut Vec<u8>, key_group: KeyGroup, key: &[u8], namespace: &[u8]) {
    out.extend_from_slice(&key_group.to_be_bytes());
    push_key_and_namespace(out, key, namespace);
}

/// Appends the length-prefixed key and namespace: the prefix without its key group.
pub fn push_key_and_namespace(out: &mut Vec<u8>, key: &[u8], namespace: &[u8]) {
    push_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    push_varint(out, namespace.len() as u64);
    out.extend_from_slice(namespace);
}

/// The length of the prefix [`push_prefix`] writes.
pub fn prefix_len(key: &[u8], namespace: &[u8]) -> usize {
    2 + varint_len(key.len() as u64)
        + key.len()
        + varint_len(namespace.len() as u64)
        + namespace.len()
}

/// The stored key of a value, reducing, aggregating or list state cell: exactly the bytes an
/// ordered backend stores (benchmarks against raw engines use it to write the same keys).
///
/// ```
/// use flowstate_api::{codec::Codec, KeyContext, MaxParallelism, SerdeCodec};
/// let max = MaxParallelism::new(128)?;
/// let key = KeyContext::for_key(&SerdeCodec::<u64>::new(), &42u64, max)?;
/// let raw = flowstate_api::key_layout::value_key(&key, &[]);
/// assert_eq!(&raw[..2], &key.key_group().to_be_bytes());
/// # Ok::<(), flowstate_api::Error>(())
/// ```
pub fn value_key(key: &KeyContext, namespace: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix_len(key.key(), namespace));
    push_prefix(&mut out, key.key_group(), key.key(), namespace);
    out
}

/// The stored key of one map entry.
pub fn map_entry_key(key: &KeyContext, namespace: &[u8], user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix_len(key.key(), namespace) + user_key.len());
    push_prefix(&mut out, key.key_group(), key.key(), namespace);
    out.extend_from_slice(user_key);
    out
}

/// The smallest byte string greater than every key starting with `prefix`, or `None` when
/// `prefix` is all `0xff` (never the case for our keys: the first byte is below `0x80`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// `[lower, upper)` key bounds covering exactly the key groups of `range`.
pub fn key_group_bounds(range: &KeyGroupRange) -> (Vec<u8>, Vec<u8>) {
    let lower = range.start().to_be_bytes().to_vec();
    // end + 1 <= 32768 always fits in two bytes.
    let upper = ((range.end().get() + 1) as u16).to_be_bytes().to_vec();
    (lower, upper)
}

/// An exclusive upper bound above every key the backend writes (key groups are < 2^15).
pub fn all_keys_upper_bound() -> Vec<u8> {
    (UPPER_BOUND_MAX_PARALLELISM as u16).to_be_bytes().to_vec()
}

/// A stored key split into its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedKey<'a> {
    /// The key group, from the key's two-byte prefix.
    pub key_group: u32,
    /// The record key's canonical serialized bytes.
    pub key: &'a [u8],
    /// The namespace's serialized bytes.
    pub namespace: &'a [u8],
    /// The map user key; empty for other kinds.
    pub user_key: &'a [u8],
    /// Length of the (key group, key, namespace) prefix within the stored key.
    pub prefix_len: usize,
}

/// Reads an unsigned LEB128 varint from the front of `bytes`; `None` when truncated, longer
/// than 10 bytes, beyond 64 bits, or not in the shortest form [`push_varint`] writes (bytes
/// from disk have one encoding, so a damaged one is not silently read as another).
pub fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        let part = (b & 0x7f) as u64;
        // The tenth byte holds bit 63 only.
        if i == 9 && part > 1 {
            return None;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            // A final zero byte after the first would be an overlong encoding.
            return (b != 0 || i == 0).then_some(value);
        }
    }
    None
}

fn read_part<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_varint(bytes)?).ok()?;
    if bytes.len() < len {
        return None;
    }
    let (part, rest) = bytes.split_at(len);
    *bytes = rest;
    Some(part)
}

/// Splits a stored key; stored keys come from disk, so a malformed one is a corruption error.
pub fn decode_key(raw: &[u8]) -> Result<DecodedKey<'_>> {
    let corrupt = || {
        Error::corrupt(
            "stored state key",
            format!(
                "{} bytes that do not parse as key group | key | namespace",
                raw.len()
            ),
        )
    };
    let (kg, mut rest) = raw.split_first_chunk::<2>().ok_or_else(corrupt)?;
    let key = read_part(&mut rest).ok_or_else(corrupt)?;
    let namespace = read_part(&mut rest).ok_or_else(corrupt)?;
    Ok(DecodedKey {
        key_group: u16::from_be_bytes(*kg) as u32,
        key,
        namespace,
        user_key: rest,
        prefix_len: raw.len() - rest.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_groups::MaxParallelism;

    #[test]
    fn keys_round_trip_and_sort_by_key_group() {
        let max = MaxParallelism::new(128).unwrap();
        let long_key = vec![7u8; 300];
        let ctx = KeyContext::new(long_key.clone(), max);
        let raw = map_entry_key(&ctx, b"ns", b"uk");
        let d = decode_key(&raw).unwrap();
        assert_eq!(d.key_group, ctx.key_group().get());
        assert_eq!(
            (d.key, d.namespace, d.user_key),
            (&long_key[..], &b"ns"[..], &b"uk"[..])
        );
        assert_eq!(value_key(&ctx, b"ns").len(), prefix_len(&long_key, b"ns"));
        assert_eq!(d.prefix_len, prefix_len(&long_key, b"ns"));

        let low = KeyContext::with_key_group(b"zzz".to_vec(), KeyGroup::new(3, max).unwrap());
        let high = KeyContext::with_key_group(b"a".to_vec(), KeyGroup::new(4, max).unwrap());
        assert!(value_key(&low, b"") < value_key(&high, b""));
        let (lo, hi) = key_group_bounds(&KeyGroupRange::new(3, 3).unwrap());
        let k = value_key(&low, b"x");
        assert!(lo <= k && k < hi);
        assert!(value_key(&high, b"") >= hi);
    }

    #[test]
    fn a_namespace_cannot_bleed_into_another_key() {
        let max = MaxParallelism::new(128).unwrap();
        let kg = KeyGroup::new(1, max).unwrap();
        // Without length prefixes, (key "a", ns "bc") and (key "ab", ns "c") would collide.
        let a = value_key(&KeyContext::with_key_group(b"a".to_vec(), kg), b"bc");
        let b = value_key(&KeyContext::with_key_group(b"ab".to_vec(), kg), b"c");
        assert_ne!(a, b);
        assert!(!b.starts_with(&a) && !a.starts_with(&b));
    }

    #[test]
    fn malformed_keys_are_errors_and_successor_works() {
        assert!(decode_key(&[0]).is_err());
        assert!(decode_key(&[0, 1, 5, 1]).is_err());
        assert!(decode_key(&[0, 1, 0x80]).is_err());
        assert_eq!(prefix_successor(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff]), None);
    }

    #[test]
    fn varints_have_one_encoding() {
        for value in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            push_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            let mut rest = &out[..];
            assert_eq!(read_varint(&mut rest), Some(value));
            assert!(rest.is_empty());
        }
        // 5 as two bytes, 0 as two bytes, 2^64 (bit 64 in the tenth byte), eleven bytes.
        let overlong: [&[u8]; 4] = [
            &[0x85, 0x00],
            &[0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0xff; 11],
        ];
        for bytes in overlong {
            assert_eq!(read_varint(&mut &bytes[..]), None, "{bytes:x?}");
        }
        assert!(decode_key(&[0, 1, 0x81, 0x00, b'k', 0]).is_err());
    }
}
