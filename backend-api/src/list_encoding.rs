//! The byte form of a whole list: each element as `u32` little-endian length then bytes.
//!
//! Concatenating two encoded lists gives the encoding of the concatenated list, which is what
//! lets an ordered store append with a merge operator instead of read-modify-write.

use crate::error::{Error, Result};

/// Appends the encoding of one element to `out`.
pub fn push_element(out: &mut Vec<u8>, element: &[u8]) {
    out.extend_from_slice(&(element.len() as u32).to_le_bytes());
    out.extend_from_slice(element);
}

/// Encodes `elements` as one list.
pub fn encode<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        push_element(&mut out, e);
    }
    out
}

/// Iterates the elements of an encoded list; a truncated list yields one `Err` and stops.
pub fn iter(bytes: &[u8]) -> ListIter<'_> {
    ListIter { rest: bytes }
}

/// Decodes an encoded list into owned elements.
pub fn decode(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    iter(bytes).map(|e| e.map(<[u8]>::to_vec)).collect()
}

/// Iterator over an encoded list.
pub struct ListIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ListIter<'a> {
    type Item = Result<&'a [u8]>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len_bytes, tail)) = self.rest.split_first_chunk::<4>() else {
            self.rest = &[];
            return Some(Err(Error::corrupt(
                "list value",
                "truncated element length",
            )));
        };
        let len = u32::from_le_bytes(*len_bytes) as usize;
        if tail.len() < len {
            self.rest = &[];
            return Some(Err(Error::corrupt(
                "list value",
                format!("element of {len} bytes but only {} remain", tail.len()),
            )));
        }
        let (element, rest) = tail.split_at(len);
        self.rest = rest;
        Some(Ok(element))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenation_is_append() {
        let a = encode([b"x".as_slice(), b"".as_slice()]);
        let b = encode([b"yz".as_slice()]);
        let mut ab = a.clone();
        ab.extend_from_slice(&b);
        assert_eq!(
            decode(&ab).unwrap(),
            vec![b"x".to_vec(), vec![], b"yz".to_vec()]
        );
        assert!(decode(&ab[..ab.len() - 1]).is_err());
        assert!(decode(&[1, 0]).is_err());
    }
}
