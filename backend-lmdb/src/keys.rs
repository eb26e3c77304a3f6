//! The byte layout of LMDB keys.
//!
//! Every state has its own named database; inside it a key is
//!
//! ```text
//! [key group: 2 bytes big-endian] [len(key): LEB128] [key] [len(namespace): LEB128] [namespace] [map user key]
//! ```
//!
//! The key group comes first and has a fixed width, so each key group is one contiguous range
//! of the database and a snapshot walks key groups in ascending order with one prefix scan
//! each. The serialized key and the namespace are length-prefixed, so the `(key group, key,
//! namespace)` prefix is self-delimiting: no prefix of one `(key, namespace)` is the prefix of
//! another, and a prefix scan over `(key, namespace)` returns exactly the entries of that pair
//! (the value of a value or list state, or every entry of a map state). The map user key is
//! the suffix and needs no length.
//!
//! The functions here are public so that benchmarks can drive raw `heed` with exactly the key
//! bytes this backend stores.

use flowstate_api::{KeyContext, KeyGroup};

use crate::error::LmdbError;

/// Appends `value` as unsigned LEB128.
fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(value: usize) -> usize {
    let bits = usize::BITS - value.leading_zeros();
    (bits as usize).div_ceil(7).max(1)
}

/// Length of the `(key group, key, namespace)` prefix of a key of `key_len` bytes in a
/// namespace of `namespace_len` bytes.
pub fn prefix_len(key_len: usize, namespace_len: usize) -> usize {
    2 + varint_len(key_len) + key_len + varint_len(namespace_len) + namespace_len
}

/// Appends the `(key group, key, namespace)` prefix of a key to `out`.
pub fn push_prefix(out: &mut Vec<u8>, key_group: KeyGroup, key: &[u8], namespace: &[u8]) {
    out.extend_from_slice(&key_group.to_be_bytes());
    push_key_and_namespace(out, key, namespace);
}

/// Appends the length-prefixed key and namespace (the prefix without its key group).
pub(crate) fn push_key_and_namespace(out: &mut Vec<u8>, key: &[u8], namespace: &[u8]) {
    push_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    push_varint(out, namespace.len() as u64);
    out.extend_from_slice(namespace);
}

/// The LMDB key of the value of a value/reducing/aggregating state, or of a whole list.
pub fn value_key(key: &KeyContext, namespace: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 2 + key.key().len() + namespace.len() + 2);
    push_prefix(&mut out, key.key_group(), key.key(), namespace);
    out
}

/// The LMDB key of one entry of a map state.
pub fn map_entry_key(key: &KeyContext, namespace: &[u8], user_key: &[u8]) -> Vec<u8> {
    let mut out = value_key(key, namespace);
    out.extend_from_slice(user_key);
    out
}

/// The parts of a stored key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedKey<'a> {
    pub key_group: u16,
    pub key: &'a [u8],
    pub namespace: &'a [u8],
    /// The map user key; empty for value and list states.
    pub user_key: &'a [u8],
    /// Length of the `(key group, key, namespace)` prefix within the stored key.
    pub prefix_len: usize,
}

fn take_varint(bytes: &[u8], pos: &mut usize) -> Result<usize, LmdbError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*pos)
            .ok_or_else(|| LmdbError::CorruptKey("truncated length".into()))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return usize::try_from(value)
                .map_err(|_| LmdbError::CorruptKey(format!("length {value} too large")));
        }
    }
    Err(LmdbError::CorruptKey("length longer than 10 bytes".into()))
}

fn take_slice<'a>(bytes: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8], LmdbError> {
    let end = pos
        .checked_add(len)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| {
            LmdbError::CorruptKey(format!(
                "part of {len} bytes at offset {} but the key has {} bytes",
                *pos,
                bytes.len()
            ))
        })?;
    let slice = &bytes[*pos..end];
    *pos = end;
    Ok(slice)
}

/// Splits a stored key into its parts (bounds-checked: the bytes come from disk).
pub fn decode_key(bytes: &[u8]) -> Result<DecodedKey<'_>, LmdbError> {
    let (group, _) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| LmdbError::CorruptKey("shorter than its key group".into()))?;
    let mut pos = 2;
    let key_len = take_varint(bytes, &mut pos)?;
    let key = take_slice(bytes, &mut pos, key_len)?;
    let ns_len = take_varint(bytes, &mut pos)?;
    let namespace = take_slice(bytes, &mut pos, ns_len)?;
    Ok(DecodedKey {
        key_group: u16::from_be_bytes(*group),
        key,
        namespace,
        user_key: &bytes[pos..],
        prefix_len: pos,
    })
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// there is none (the prefix is all `0xff`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use flowstate_api::MaxParallelism;

    #[test]
    fn round_trip_and_prefix_freedom() {
        let max = MaxParallelism::new(128).unwrap();
        let key = KeyContext::new(b"user-1".to_vec(), max);
        let entry = map_entry_key(&key, b"ns", b"uk");
        let decoded = decode_key(&entry).unwrap();
        assert_eq!(decoded.key_group as u32, key.key_group().get());
        assert_eq!(decoded.key, b"user-1");
        assert_eq!(decoded.namespace, b"ns");
        assert_eq!(decoded.user_key, b"uk");
        assert_eq!(
            &entry[..decoded.prefix_len],
            value_key(&key, b"ns").as_slice()
        );

        // ("ab", "c") and ("a", "bc") concatenate alike but their prefixes differ.
        let a = value_key(
            &KeyContext::with_key_group(b"ab".to_vec(), key.key_group()),
            b"c",
        );
        let b = value_key(
            &KeyContext::with_key_group(b"a".to_vec(), key.key_group()),
            b"bc",
        );
        assert!(!a.starts_with(&b) && !b.starts_with(&a));
        // A namespace that extends another is not under the other's prefix.
        let n1 = value_key(&key, b"n");
        let n2 = value_key(&key, b"nn");
        assert!(!n2.starts_with(&n1));
        for len in [0usize, 1, 127, 128, 300, 16_384] {
            let long = KeyContext::with_key_group(vec![7; len], key.key_group());
            assert_eq!(value_key(&long, b"abc").len(), prefix_len(len, 3));
        }
    }

    #[test]
    fn key_groups_sort_first() {
        let low = KeyContext::with_key_group(vec![0xff; 300], KeyGroup::from_validated(1).unwrap());
        let high = KeyContext::with_key_group(vec![0], KeyGroup::from_validated(256).unwrap());
        assert!(value_key(&low, b"") < value_key(&high, b""));
    }

    #[test]
    fn corrupt_keys_are_errors() {
        assert!(decode_key(&[0]).is_err());
        assert!(decode_key(&[0, 0, 5, b'a']).is_err());
        assert!(decode_key(&[0, 0, 0x80]).is_err());
        assert!(decode_key(&[0, 0, 0, 0]).is_ok());
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff]), None);
    }
}
