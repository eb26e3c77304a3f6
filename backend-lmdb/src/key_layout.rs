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
//! The layout is the one every ordered store shares, [`flowstate_api::key_layout`]; it is
//! re-exported here so that benchmarks can drive raw `heed` with exactly the key bytes this
//! backend stores.

pub use flowstate_api::key_layout::{
    map_entry_key, prefix_len, prefix_successor, push_key_and_namespace, push_prefix, value_key,
    DecodedKey,
};

use crate::error::LmdbError;

/// Splits a stored key into its parts (bounds-checked: the bytes come from disk); a damaged
/// key is an [`LmdbError::CorruptKey`] of the working directory.
pub fn decode_key(bytes: &[u8]) -> Result<DecodedKey<'_>, LmdbError> {
    flowstate_api::key_layout::decode_key(bytes).map_err(|e| LmdbError::CorruptKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowstate_api::{KeyContext, KeyGroup, MaxParallelism};

    #[test]
    fn round_trip_and_prefix_freedom() {
        let max = MaxParallelism::new(128).unwrap();
        let key = KeyContext::new(b"user-1".to_vec(), max);
        let entry = map_entry_key(&key, b"ns", b"uk");
        let decoded = decode_key(&entry).unwrap();
        assert_eq!(decoded.key_group, key.key_group().get());
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
            assert_eq!(
                value_key(&long, b"abc").len(),
                prefix_len(long.key(), b"abc")
            );
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
