//! Versioned values: how a snapshot keeps seeing what it pinned while writers go on.
//!
//! Every stored byte string (a value, or a whole list in `list_encoding` form) is a [`Cell`]:
//! the current version, stamped with the epoch of its last write, plus older versions that
//! live snapshots may still read, newest first. A write replaces the current version in place
//! unless a live snapshot can see it (its stamp is older than the write's epoch and not newer
//! than the newest live snapshot); then the current version moves into the chain first.
//! An append to a pinned list does not copy the list: the chain records "the first `len` bytes
//! of the next newer version", which appends never change.
//!
//! A map state's (key, namespace) is a `MapSlot` (in `map_slot`): one cell per user key.

/// `WriteEpoch::pinned` when no snapshot is live. Epochs start at 1.
pub(crate) const NO_SNAPSHOT: u64 = 0;

/// What a writer knows about time: its own epoch and the newest live snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteEpoch {
    /// The epoch of this write: snapshots taken with this epoch or later see it.
    pub(crate) stamp: u64,
    /// The newest live snapshot's epoch, or [`NO_SNAPSHOT`].
    pub(crate) pinned: u64,
}

/// The snapshots a sweep must keep versions for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveSnapshots {
    /// Epochs of the live snapshots, ascending.
    pub(crate) epochs: Vec<u64>,
    /// The write epoch when the list was taken: snapshots taken later have this epoch or a
    /// newer one, so a version superseded after it may still be needed by one of them.
    pub(crate) future_from: u64,
}

impl LiveSnapshots {
    /// True when some live (or future) snapshot reads the version written at `stamp` and
    /// superseded at `superseded_at`, i.e. has an epoch in `[stamp, superseded_at)`.
    fn needs(&self, stamp: u64, superseded_at: u64) -> bool {
        if superseded_at > self.future_from {
            return true;
        }
        let first_not_older = self.epochs.partition_point(|s| *s < stamp);
        self.epochs
            .get(first_not_older)
            .is_some_and(|s| *s < superseded_at)
    }
}

#[cfg(test)]
impl WriteEpoch {
    /// A write in epoch `stamp` while the newest live snapshot is `pinned`.
    pub(crate) fn at(stamp: u64, pinned: u64) -> Self {
        Self { stamp, pinned }
    }
}

#[cfg(test)]
impl LiveSnapshots {
    /// Live snapshots `epochs` (ascending), with the write epoch at `future_from`.
    pub(crate) fn of(epochs: &[u64], future_from: u64) -> Self {
        Self {
            epochs: epochs.to_vec(),
            future_from,
        }
    }
}

/// What a write did to a cell or slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// The visible state changed (for change tracking).
    pub(crate) changed: bool,
    /// A version was newly kept for a live snapshot: the sweeper must visit this entry.
    pub(crate) kept_old: bool,
    /// Nothing is left (no current version, no kept version): remove the entry.
    pub(crate) dead: bool,
}

impl Change {
    /// A write that changed the visible state and leaves a current version.
    #[inline]
    pub(crate) fn written(kept_old: bool) -> Self {
        Self {
            changed: true,
            kept_old,
            dead: false,
        }
    }
}

/// Entries of the per-key-group maps: something with a last-write stamp, present or not.
pub(crate) trait Versioned {
    /// Epoch of the last write (for change tracking: the first write of an epoch records).
    fn stamp(&self) -> u64;
    /// True when the current version is non-empty (reported by `keys`).
    fn is_present(&self) -> bool;
    /// Drops versions no live snapshot needs (of `user_key` only, for a map slot, when
    /// given). Returns true when kept versions remain, i.e. a later sweep must come back.
    fn prune(&mut self, live: &LiveSnapshots, user_key: Option<&[u8]>) -> bool;
    /// True when the entry holds nothing at all and may be removed from its map.
    fn is_dead(&self) -> bool;
    /// Number of kept old versions and whether the current version is a tombstone.
    fn history(&self) -> (usize, usize);
}

/// A versioned byte string.
#[derive(Debug)]
pub(crate) struct Cell {
    stamp: u64,
    /// `None`: removed, kept as a tombstone because older versions are still needed.
    current: Option<Vec<u8>>,
    older: Option<Box<OldVersion>>,
}

#[derive(Debug)]
struct OldVersion {
    stamp: u64,
    data: OldData,
    older: Option<Box<OldVersion>>,
}

#[derive(Debug)]
enum OldData {
    Bytes(Vec<u8>),
    Absent,
    /// The first `len` bytes of the next newer version (a list before an append).
    PrefixOfNewer(usize),
}

impl Cell {
    pub(crate) fn new(stamp: u64, bytes: Vec<u8>) -> Self {
        Self {
            stamp,
            current: Some(bytes),
            older: None,
        }
    }

    /// The current version.
    #[inline]
    pub(crate) fn current(&self) -> Option<&[u8]> {
        self.current.as_deref()
    }

    /// True when a live snapshot can see the current version, so a write must keep it.
    #[inline]
    fn must_keep_current(&self, e: WriteEpoch) -> bool {
        self.stamp < e.stamp && self.stamp <= e.pinned
    }

    fn push_old(&mut self, data: OldData) {
        let older = self.older.take();
        self.older = Some(Box::new(OldVersion {
            stamp: self.stamp,
            data,
            older,
        }));
    }

    /// Makes the current buffer free to rewrite in place: no snapshot sees the current
    /// version, but the newest kept version may be a prefix of it; that version takes the
    /// buffer (cut to its length) and the write gets a fresh one. With no snapshot live at
    /// all, every kept version is garbage.
    fn detach_current(&mut self, e: WriteEpoch) {
        if e.pinned == NO_SNAPSHOT {
            self.older = None;
            return;
        }
        if let Some(top) = self.older.as_deref_mut() {
            if let OldData::PrefixOfNewer(len) = top.data {
                if let Some(mut buf) = self.current.take() {
                    buf.truncate(len);
                    top.data = OldData::Bytes(buf);
                }
            }
        }
    }

    /// Replaces the current version with what `fill` writes into an empty buffer.
    #[inline]
    pub(crate) fn replace_with(
        &mut self,
        e: WriteEpoch,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Change {
        let kept_old = self.must_keep_current(e);
        if kept_old {
            let old = match self.current.take() {
                Some(bytes) => OldData::Bytes(bytes),
                None => OldData::Absent,
            };
            self.push_old(old);
        } else if self.older.is_some() {
            self.detach_current(e);
        }
        let buf = self.current.get_or_insert_with(Vec::new);
        buf.clear();
        fill(buf);
        self.stamp = e.stamp;
        Change::written(kept_old)
    }

    /// Appends what `fill` writes to the current version (creating it when absent).
    #[inline]
    pub(crate) fn append_with(&mut self, e: WriteEpoch, fill: impl FnOnce(&mut Vec<u8>)) -> Change {
        let len = match &self.current {
            Some(buf) => buf.len(),
            None => return self.replace_with(e, fill),
        };
        let kept_old = self.must_keep_current(e);
        if kept_old {
            // Appends never change a prefix: keep the length, not a copy.
            self.push_old(OldData::PrefixOfNewer(len));
        } else if e.pinned == NO_SNAPSHOT {
            self.older = None;
        }
        if let Some(buf) = self.current.as_mut() {
            fill(buf);
        }
        self.stamp = e.stamp;
        Change::written(kept_old)
    }

    /// Removes the current version.
    pub(crate) fn remove(&mut self, e: WriteEpoch) -> Change {
        if self.current.is_none() {
            if e.pinned == NO_SNAPSHOT {
                self.older = None;
            }
            return Change {
                changed: false,
                kept_old: false,
                dead: self.older.is_none(),
            };
        }
        if self.must_keep_current(e) {
            if let Some(bytes) = self.current.take() {
                self.push_old(OldData::Bytes(bytes));
            }
            self.stamp = e.stamp;
            return Change::written(true);
        }
        self.detach_current(e);
        self.current = None;
        self.stamp = e.stamp;
        Change {
            changed: true,
            // Kept versions that remain were recorded for the sweeper when they were kept.
            kept_old: false,
            dead: self.older.is_none(),
        }
    }

    /// The version a snapshot of epoch `epoch` sees.
    pub(crate) fn read_at(&self, epoch: u64) -> Option<&[u8]> {
        if self.stamp <= epoch {
            return self.current.as_deref();
        }
        let mut newer = self.current.as_deref();
        let mut node = self.older.as_deref();
        while let Some(version) = node {
            let bytes = match &version.data {
                OldData::Bytes(b) => Some(b.as_slice()),
                OldData::Absent => None,
                OldData::PrefixOfNewer(len) => newer.and_then(|b| b.get(..*len)),
            };
            if version.stamp <= epoch {
                return bytes;
            }
            newer = bytes;
            node = version.older.as_deref();
        }
        None
    }

    /// Drops kept versions that no live snapshot reads. Returns true when some remain.
    pub(crate) fn prune(&mut self, live: &LiveSnapshots) -> bool {
        let mut chain = Vec::new();
        let mut next = self.older.take();
        while let Some(mut version) = next {
            next = version.older.take();
            chain.push(*version);
        }
        let mut kept: Vec<(u64, OldData)> = Vec::with_capacity(chain.len());
        let mut superseded_at = self.stamp;
        // The buffer of a dropped version, for older kept prefixes that pointed into it.
        let mut carry: Option<Vec<u8>> = None;
        for version in chain {
            let needed = live.needs(version.stamp, superseded_at);
            superseded_at = version.stamp;
            match version.data {
                OldData::Bytes(bytes) => {
                    if needed {
                        carry = None;
                        kept.push((version.stamp, OldData::Bytes(bytes)));
                    } else {
                        carry = Some(bytes);
                    }
                }
                OldData::Absent => {
                    // A prefix never points across an absent version.
                    carry = None;
                    if needed {
                        kept.push((version.stamp, OldData::Absent));
                    }
                }
                OldData::PrefixOfNewer(len) => {
                    if needed {
                        let data = match carry.take() {
                            Some(mut bytes) => {
                                bytes.truncate(len);
                                OldData::Bytes(bytes)
                            }
                            None => OldData::PrefixOfNewer(len),
                        };
                        kept.push((version.stamp, data));
                    }
                    // A dropped prefix leaves `carry` as it is: older prefixes are shorter.
                }
            }
        }
        self.older = kept.into_iter().rev().fold(None, |older, (stamp, data)| {
            Some(Box::new(OldVersion { stamp, data, older }))
        });
        self.older.is_some()
    }

    fn kept_versions(&self) -> usize {
        let mut n = 0;
        let mut node = self.older.as_deref();
        while let Some(v) = node {
            n += 1;
            node = v.older.as_deref();
        }
        n
    }
}

impl Versioned for Cell {
    #[inline]
    fn stamp(&self) -> u64 {
        self.stamp
    }
    #[inline]
    fn is_present(&self) -> bool {
        self.current.is_some()
    }
    fn prune(&mut self, live: &LiveSnapshots, _user_key: Option<&[u8]>) -> bool {
        Cell::prune(self, live)
    }
    fn is_dead(&self) -> bool {
        self.current.is_none() && self.older.is_none()
    }
    fn history(&self) -> (usize, usize) {
        (self.kept_versions(), usize::from(self.current.is_none()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unpinned_writes_rewrite_in_place_and_keep_nothing() {
        let mut c = Cell::new(1, b"a".to_vec());
        let e = WriteEpoch::at(1, NO_SNAPSHOT);
        assert!(!c.replace_with(e, |b| b.extend_from_slice(b"bb")).kept_old);
        assert!(!c.append_with(e, |b| b.push(b'c')).kept_old);
        assert_eq!(c.current(), Some(&b"bbc"[..]));
        assert_eq!(c.history(), (0, 0));
        let removed = c.remove(e);
        assert!(removed.changed && removed.dead);
    }

    #[test]
    fn pinned_versions_are_kept_and_read_at_their_epoch() {
        // Written in epoch 1, snapshot 1 taken, appended in 2, snapshot 2, replaced in 3,
        // removed in 3 again (same epoch: in place), snapshot 3 live.
        let mut c = Cell::new(1, b"ab".to_vec());
        let e2 = WriteEpoch::at(2, 1);
        assert!(c.append_with(e2, |b| b.push(b'c')).kept_old);
        assert!(
            !c.append_with(e2, |b| b.push(b'd')).kept_old,
            "same epoch: no copy"
        );
        let e3 = WriteEpoch::at(3, 2);
        assert!(c.replace_with(e3, |b| b.push(b'x')).kept_old);
        let removed = c.remove(e3);
        assert!(removed.changed && !removed.dead && !removed.kept_old);
        assert_eq!(c.read_at(1), Some(&b"ab"[..]));
        assert_eq!(c.read_at(2), Some(&b"abcd"[..]));
        assert_eq!(c.read_at(3), None);
        assert_eq!(c.read_at(9), None);
        assert_eq!(c.current(), None);
        // Snapshot 1 released: its version goes, the prefix is materialized from the dropped
        // "abcd" only if still needed (it is not).
        assert!(c.prune(&LiveSnapshots::of(&[2], 3)));
        assert_eq!(c.history(), (1, 1));
        assert_eq!(c.read_at(2), Some(&b"abcd"[..]));
        assert!(!c.prune(&LiveSnapshots::of(&[], 3)));
        assert!(Versioned::is_dead(&c));
    }

    #[test]
    fn a_kept_prefix_survives_rewrites_and_pruning_of_what_it_pointed_into() {
        let mut c = Cell::new(1, b"ab".to_vec());
        // Snapshot 1 pins "ab"; the append keeps only a length.
        c.append_with(WriteEpoch::at(2, 1), |b| b.push(b'c'));
        // No snapshot sees "abc" (stamp 2 > pinned 1): rewritten in place, so the prefix must
        // take the buffer first.
        c.replace_with(WriteEpoch::at(2, 1), |b| b.extend_from_slice(b"zz"));
        assert_eq!(c.read_at(1), Some(&b"ab"[..]));
        assert_eq!(c.current(), Some(&b"zz"[..]));
        // Two stacked prefixes, then the middle version's holder is dropped by a prune.
        let mut d = Cell::new(1, b"a".to_vec());
        d.append_with(WriteEpoch::at(2, 1), |b| b.push(b'b'));
        d.append_with(WriteEpoch::at(3, 2), |b| b.push(b'c'));
        d.replace_with(WriteEpoch::at(4, 3), |b| b.push(b'q'));
        assert_eq!(d.read_at(1), Some(&b"a"[..]));
        assert_eq!(d.read_at(2), Some(&b"ab"[..]));
        assert_eq!(d.read_at(3), Some(&b"abc"[..]));
        assert!(d.prune(&LiveSnapshots::of(&[1], 4)));
        assert_eq!(d.history(), (1, 0));
        assert_eq!(d.read_at(1), Some(&b"a"[..]));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(u8),
        Append(u8),
        Remove,
        Snapshot,
        Release(usize),
    }

    enum OpKind {
        Release,
        Other,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u8>().prop_map(Op::Put),
            4 => any::<u8>().prop_map(Op::Append),
            2 => Just(Op::Remove),
            2 => Just(Op::Snapshot),
            2 => any::<usize>().prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Random writes, snapshots and releases on one cell, checked against what each live
        /// snapshot saw when it was taken, with a prune after every release.
        #[test]
        fn live_snapshots_always_read_what_they_pinned(ops in proptest::collection::vec(op(), 1..80)) {
            let mut write_epoch = 1u64;
            let mut model: Option<Vec<u8>> = None;
            let mut cell: Option<Cell> = None;
            let mut snapshots: Vec<(u64, Option<Vec<u8>>)> = Vec::new();
            for op in ops {
                let op_kind = if matches!(op, Op::Release(_)) { OpKind::Release } else { OpKind::Other };
                let e = WriteEpoch::at(
                    write_epoch,
                    snapshots.iter().map(|s| s.0).max().unwrap_or(NO_SNAPSHOT),
                );
                match op {
                    Op::Put(b) => {
                        model = Some(vec![b, b]);
                        match cell.as_mut() {
                            Some(c) => { c.replace_with(e, |buf| buf.extend_from_slice(&[b, b])); }
                            None => cell = Some(Cell::new(e.stamp, vec![b, b])),
                        }
                    }
                    Op::Append(b) => {
                        model.get_or_insert_with(Vec::new).push(b);
                        match cell.as_mut() {
                            Some(c) => { c.append_with(e, |buf| buf.push(b)); }
                            None => cell = Some(Cell::new(e.stamp, vec![b])),
                        }
                    }
                    Op::Remove => {
                        model = None;
                        if let Some(c) = cell.as_mut() {
                            if c.remove(e).dead {
                                cell = None;
                            }
                        }
                    }
                    Op::Snapshot => {
                        snapshots.push((write_epoch, model.clone()));
                        write_epoch += 1;
                    }
                    Op::Release(i) => {
                        if !snapshots.is_empty() {
                            snapshots.remove(i % snapshots.len());
                            let mut epochs: Vec<u64> = snapshots.iter().map(|s| s.0).collect();
                            epochs.sort();
                            if let Some(c) = cell.as_mut() {
                                c.prune(&LiveSnapshots::of(&epochs, write_epoch));
                                if Versioned::is_dead(c) {
                                    cell = None;
                                }
                            }
                        }
                    }
                }
                let current = cell.as_ref().and_then(|c| c.current()).map(<[u8]>::to_vec);
                prop_assert_eq!(&current, &model);
                for (epoch, seen) in &snapshots {
                    let read = cell.as_ref().and_then(|c| c.read_at(*epoch)).map(<[u8]>::to_vec);
                    prop_assert_eq!(&read, seen, "snapshot {}", epoch);
                }
                if snapshots.is_empty() {
                    if let Some(c) = &cell {
                        // Nothing live: a release's prune (or the next write) left no history.
                        if matches!(op_kind, OpKind::Release) {
                            prop_assert_eq!(c.history().0, 0);
                        }
                    }
                }
            }
        }
    }
}
