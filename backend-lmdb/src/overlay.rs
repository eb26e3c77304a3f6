//! The write buffer in front of LMDB, and reads that merge it with a read transaction.
//!
//! Writes land in an ordered in-memory overlay (one `BTreeMap` per state) and reach LMDB in
//! one write transaction per flush; every read consults the overlay first. See the crate docs
//! for the policy and its trade-offs.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use flowstate_api::{Result, StateId};
use heed::types::Bytes;
use heed::{Database, RoTxn};
use smallvec::SmallVec;

use crate::error::LmdbError;

/// An LMDB key in the write buffer. Short keys (the common case: key group, a small key and
/// namespace) live inline in the tree's nodes, so comparisons during inserts and lookups touch
/// no other memory and an insert allocates nothing for the key.
pub(crate) type BufferKey = SmallVec<[u8; 24]>;

/// A value in the write buffer; small values (counters, timestamps, short records) need no
/// allocation of their own.
pub(crate) type BufferValue = SmallVec<[u8; 16]>;

/// The database of one state.
pub(crate) type Db = Database<'static, Bytes, Bytes>;

/// Bytes charged per buffered entry on top of its key and payload (tree node and vector
/// headers), so that a buffer of many tiny entries also flushes in time.
const ENTRY_OVERHEAD: usize = 64;

/// Visits one stored entry (LMDB key, value); may stop the walk.
pub(crate) type StoredVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'a;

/// A buffered write to one LMDB key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// The key's new value.
    Put(BufferValue),
    /// The key is removed.
    Delete,
    /// Encoded list elements to append to whatever LMDB holds (list states only): appends
    /// need no read until the flush, which reads inside its write transaction.
    Append(BufferValue),
}

impl Pending {
    fn payload_len(&self) -> usize {
        match self {
            Pending::Put(v) | Pending::Append(v) => v.len(),
            Pending::Delete => 0,
        }
    }
}

/// The current value of a key given its buffered write and what LMDB holds.
pub(crate) fn resolve<'a>(pending: &'a Pending, stored: Option<&[u8]>) -> Option<Cow<'a, [u8]>> {
    match pending {
        Pending::Put(v) => Some(Cow::Borrowed(v)),
        Pending::Delete => None,
        Pending::Append(tail) => match stored {
            None => Some(Cow::Borrowed(tail)),
            Some(head) => {
                let mut whole = Vec::with_capacity(head.len() + tail.len());
                whole.extend_from_slice(head);
                whole.extend_from_slice(tail);
                Some(Cow::Owned(whole))
            }
        },
    }
}

/// Buffered writes of every state, ordered by LMDB key.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overlay {
    states: Vec<BTreeMap<BufferKey, Pending>>,
    entries: usize,
    bytes: usize,
}

impl Overlay {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }
    /// Approximate memory held by the buffer.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The buffered writes of `state`, if it has any.
    pub(crate) fn state(&self, state: StateId) -> Option<&BTreeMap<BufferKey, Pending>> {
        self.states.get(state.index()).filter(|m| !m.is_empty())
    }

    /// Every state's buffered writes, by state index.
    pub(crate) fn states(&self) -> impl Iterator<Item = (usize, &BTreeMap<BufferKey, Pending>)> {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_empty())
    }

    pub(crate) fn get(&self, state: StateId, key: &[u8]) -> Option<&Pending> {
        self.states.get(state.index())?.get(key)
    }

    fn map_mut(&mut self, state: StateId) -> &mut BTreeMap<BufferKey, Pending> {
        if self.states.len() <= state.index() {
            self.states.resize_with(state.index() + 1, BTreeMap::new);
        }
        &mut self.states[state.index()]
    }

    /// Moves the first entries (state by state, in key order) worth about `max_bytes` (at
    /// least one entry) out into an overlay of their own.
    pub(crate) fn split_front(&mut self, max_bytes: usize) -> Overlay {
        if self.bytes <= max_bytes {
            // The usual case: the whole buffer goes, without moving entries one by one.
            return std::mem::take(self);
        }
        let mut front = Overlay::default();
        'states: for (index, map) in self.states.iter_mut().enumerate() {
            while let Some(entry) = map.first_entry() {
                let size = entry.key().len() + entry.get().payload_len() + ENTRY_OVERHEAD;
                if front.entries > 0 && front.bytes + size > max_bytes {
                    break 'states;
                }
                let (key, pending) = entry.remove_entry();
                if front.states.len() <= index {
                    front.states.resize_with(index + 1, BTreeMap::new);
                }
                front.states[index].insert(key, pending);
                front.entries += 1;
                front.bytes += size;
            }
        }
        self.entries -= front.entries;
        self.bytes -= front.bytes;
        front
    }

    /// Puts back what [`Overlay::split_front`] took (its keys were not buffered since).
    pub(crate) fn merge_back(&mut self, mut front: Overlay) {
        for (index, map) in front.states.iter_mut().enumerate() {
            if !map.is_empty() {
                self.map_mut(StateId(index as u32)).append(map);
            }
        }
        self.entries += front.entries;
        self.bytes += front.bytes;
    }

    /// Buffers `pending` for `key`, replacing what was buffered.
    pub(crate) fn set(&mut self, state: StateId, key: &[u8], pending: Pending) {
        let added = pending.payload_len();
        let map = self.map_mut(state);
        let removed = match map.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, pending).payload_len()),
            None => {
                map.insert(BufferKey::from_slice(key), pending);
                None
            }
        };
        match removed {
            Some(old) => self.bytes = self.bytes - old + added,
            None => {
                self.entries += 1;
                self.bytes += key.len() + added + ENTRY_OVERHEAD;
            }
        }
    }

    /// Buffers an append of encoded list elements to `key`.
    pub(crate) fn append(&mut self, state: StateId, key: &[u8], encoded: &[u8]) {
        let map = self.map_mut(state);
        match map.get_mut(key) {
            Some(Pending::Put(v) | Pending::Append(v)) => {
                v.extend_from_slice(encoded);
                self.bytes += encoded.len();
            }
            Some(slot @ Pending::Delete) => {
                // The list was cleared: what follows is its whole content.
                *slot = Pending::Put(BufferValue::from_slice(encoded));
                self.bytes += encoded.len();
            }
            None => {
                map.insert(
                    BufferKey::from_slice(key),
                    Pending::Append(BufferValue::from_slice(encoded)),
                );
                self.entries += 1;
                self.bytes += key.len() + encoded.len() + ENTRY_OVERHEAD;
            }
        }
    }
}

/// Reads `key` of `db` as of `txn` with `pending` (its buffered write, if any) applied.
pub(crate) fn read_merged<'a>(
    txn: &'a RoTxn,
    db: Db,
    pending: Option<&'a Pending>,
    key: &[u8],
    max_key_size: usize,
) -> Result<Option<Cow<'a, [u8]>>> {
    if let Some(Pending::Put(v)) = pending {
        return Ok(Some(Cow::Borrowed(v)));
    }
    if let Some(Pending::Delete) = pending {
        return Ok(None);
    }
    // A key LMDB cannot hold was never written (writes check the size).
    let stored = if key.len() > max_key_size {
        None
    } else {
        db.get(txn, key)
            .map_err(|e| LmdbError::heed("reading a key", e))?
    };
    Ok(match pending {
        Some(p) => resolve(p, stored),
        None => stored.map(Cow::Borrowed),
    })
}

fn next_entry<'t, I>(iter: &mut Option<I>) -> Result<Option<(&'t [u8], &'t [u8])>>
where
    I: Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>>,
{
    match iter.as_mut().and_then(Iterator::next) {
        Some(Ok(kv)) => Ok(Some(kv)),
        Some(Err(e)) => Err(LmdbError::heed("iterating keys", e).into()),
        None => Ok(None),
    }
}

/// Visits, in key order, every current entry under `prefix`: LMDB's entries as of `txn` with
/// the buffered writes of `overlay` applied. `visit` may stop the walk early.
pub(crate) fn scan_merged(
    txn: &RoTxn,
    db: Db,
    overlay: Option<&BTreeMap<BufferKey, Pending>>,
    prefix: &[u8],
    max_key_size: usize,
    visit: &mut StoredVisitor<'_>,
) -> Result<()> {
    let heed_err = |e| LmdbError::heed("iterating keys", e);
    type Stored<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;
    let mut stored: Option<Stored<'_>> = if prefix.is_empty() {
        // LMDB cannot position a cursor on an empty key: walk the whole database.
        Some(Box::new(db.iter(txn).map_err(heed_err)?))
    } else if prefix.len() > max_key_size {
        None
    } else {
        Some(Box::new(db.prefix_iter(txn, prefix).map_err(heed_err)?))
    };
    let mut next_stored = || next_entry(&mut stored);
    let mut pending = overlay
        .into_iter()
        .flat_map(|m| m.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)))
        .take_while(|(k, _)| k.starts_with(prefix));

    let mut s = next_stored()?;
    let mut p = pending.next();
    loop {
        let flow = match (s, p) {
            (None, None) => return Ok(()),
            (Some((sk, sv)), None) => {
                s = next_stored()?;
                visit(sk, sv)?
            }
            (None, Some((pk, pv))) => {
                p = pending.next();
                match resolve(pv, None) {
                    Some(v) => visit(pk, &v)?,
                    None => ControlFlow::Continue(()),
                }
            }
            (Some((sk, sv)), Some((pk, pv))) => match sk.cmp(pk.as_slice()) {
                Ordering::Less => {
                    s = next_stored()?;
                    visit(sk, sv)?
                }
                Ordering::Greater => {
                    p = pending.next();
                    match resolve(pv, None) {
                        Some(v) => visit(pk, &v)?,
                        None => ControlFlow::Continue(()),
                    }
                }
                Ordering::Equal => {
                    s = next_stored()?;
                    p = pending.next();
                    match resolve(pv, Some(sv)) {
                        Some(v) => visit(pk, &v)?,
                        None => ControlFlow::Continue(()),
                    }
                }
            },
        };
        if flow.is_break() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_accounting_and_append_rules() {
        let mut o = Overlay::default();
        let s = StateId(2);
        o.append(s, b"k", b"ab");
        assert_eq!(
            o.get(s, b"k"),
            Some(&Pending::Append(BufferValue::from_slice(b"ab")))
        );
        o.append(s, b"k", b"c");
        assert_eq!(
            o.get(s, b"k"),
            Some(&Pending::Append(BufferValue::from_slice(b"abc")))
        );
        o.set(s, b"k", Pending::Delete);
        o.append(s, b"k", b"d");
        assert_eq!(
            o.get(s, b"k"),
            Some(&Pending::Put(BufferValue::from_slice(b"d")))
        );
        assert_eq!(o.entries(), 1);
        assert_eq!(o.bytes(), 1 + 1 + ENTRY_OVERHEAD);
        o.set(
            StateId(0),
            b"x",
            Pending::Put(BufferValue::from_elem(0, 10)),
        );
        assert_eq!(o.entries(), 2);
        assert_eq!(o.states().count(), 2);
        // Splitting takes state 0's entry first; putting it back restores the accounting.
        let bytes = o.bytes();
        let front = o.split_front(1);
        assert_eq!((front.entries(), o.entries()), (1, 1));
        assert!(front.get(StateId(0), b"x").is_some() && o.get(StateId(0), b"x").is_none());
        assert_eq!(front.bytes() + o.bytes(), bytes);
        o.merge_back(front);
        assert_eq!((o.entries(), o.bytes()), (2, bytes));
        let all = o.split_front(usize::MAX);
        assert!(o.is_empty() && o.bytes() == 0 && all.entries() == 2);
        assert!(o.state(s).is_none());
        o.merge_back(all);
        assert_eq!(
            o.get(s, b"k"),
            Some(&Pending::Put(BufferValue::from_slice(b"d")))
        );
    }

    #[test]
    fn resolve_applies_appends_to_stored_lists() {
        assert_eq!(
            resolve(&Pending::Append(BufferValue::from_slice(b"b")), Some(b"a")).as_deref(),
            Some(b"ab".as_slice())
        );
        assert_eq!(resolve(&Pending::Delete, Some(b"a")), None);
        assert_eq!(
            resolve(&Pending::Put(BufferValue::from_slice(b"x")), Some(b"a")).as_deref(),
            Some(b"x".as_slice())
        );
    }
}
