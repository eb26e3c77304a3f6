//! [`MapSlot`]: the map of one (key, namespace) of a map state, a versioned [`Cell`] per
//! user key, so that a snapshot keeps seeing the entries it pinned while writers go on.

use std::collections::HashMap;

use crate::cell::{Cell, Change, LiveSnapshots, Versioned, WriteEpoch};
use crate::key::EntryHasher;

/// The map of one (key, namespace) of a map state: a versioned cell per user key.
#[derive(Debug)]
pub(crate) struct MapSlot {
    /// Epoch of the last change to any entry.
    stamp: u64,
    /// Entries whose current version is present (tombstones excluded).
    present: usize,
    entries: HashMap<Box<[u8]>, Cell, EntryHasher>,
}

impl MapSlot {
    pub(crate) fn new(hasher: EntryHasher, stamp: u64, user_key: &[u8], value: &[u8]) -> Self {
        let mut entries = HashMap::with_capacity_and_hasher(1, hasher);
        entries.insert(Box::from(user_key), Cell::new(stamp, value.to_vec()));
        Self {
            stamp,
            present: 1,
            entries,
        }
    }

    pub(crate) fn get(&self, user_key: &[u8]) -> Option<&[u8]> {
        self.entries.get(user_key).and_then(Cell::current)
    }

    pub(crate) fn present_len(&self) -> usize {
        self.present
    }

    /// Current entries.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .filter_map(|(k, c)| c.current().map(|v| (&**k, v)))
    }

    /// Entries a snapshot of epoch `epoch` sees.
    pub(crate) fn entries_at(&self, epoch: u64) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .filter_map(move |(k, c)| c.read_at(epoch).map(|v| (&**k, v)))
    }

    pub(crate) fn put(&mut self, user_key: &[u8], value: &[u8], e: WriteEpoch) -> Change {
        let change = match self.entries.get_mut(user_key) {
            Some(cell) => {
                let was_present = cell.is_present();
                let change = cell.replace_with(e, |b| b.extend_from_slice(value));
                if !was_present {
                    self.present += 1;
                }
                change
            }
            None => {
                self.entries
                    .insert(Box::from(user_key), Cell::new(e.stamp, value.to_vec()));
                self.present += 1;
                Change::written(false)
            }
        };
        self.stamp = e.stamp;
        change
    }

    pub(crate) fn remove_entry(&mut self, user_key: &[u8], e: WriteEpoch) -> Change {
        let Some(cell) = self.entries.get_mut(user_key) else {
            return Change::default();
        };
        let change = cell.remove(e);
        if change.changed {
            self.present -= 1;
            self.stamp = e.stamp;
        }
        if change.dead {
            self.entries.remove(user_key);
        }
        Change {
            dead: self.entries.is_empty(),
            ..change
        }
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self, e: WriteEpoch) -> Change {
        let mut total = Change::default();
        self.entries.retain(|_, cell| {
            let change = cell.remove(e);
            total.changed |= change.changed;
            total.kept_old |= change.kept_old;
            !change.dead
        });
        self.present = 0;
        if total.changed {
            self.stamp = e.stamp;
        }
        total.dead = self.entries.is_empty();
        total
    }
}

impl Versioned for MapSlot {
    #[inline]
    fn stamp(&self) -> u64 {
        self.stamp
    }
    #[inline]
    fn is_present(&self) -> bool {
        self.present > 0
    }
    fn prune(&mut self, live: &LiveSnapshots, user_key: Option<&[u8]>) -> bool {
        match user_key {
            Some(user_key) => {
                let Some(cell) = self.entries.get_mut(user_key) else {
                    return false;
                };
                let remains = cell.prune(live);
                if cell.is_dead() {
                    self.entries.remove(user_key);
                }
                remains
            }
            None => {
                let mut remains = false;
                self.entries.retain(|_, cell| {
                    remains |= cell.prune(live);
                    !cell.is_dead()
                });
                remains
            }
        }
    }
    fn is_dead(&self) -> bool {
        self.entries.is_empty()
    }
    fn history(&self) -> (usize, usize) {
        self.entries.values().fold((0, 0), |(v, t), c| {
            let (cv, ct) = c.history();
            (v + cv, t + ct)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_slot_counts_present_entries_through_tombstones() {
        let h = EntryHasher::default();
        let mut m = MapSlot::new(h, 1, b"k1", b"v1");
        let e = WriteEpoch::at(2, 1);
        m.put(b"k2", b"v2", e);
        assert_eq!(m.present_len(), 2);
        let r = m.remove_entry(b"k1", e);
        assert!(r.changed && r.kept_old && !r.dead);
        assert_eq!(m.present_len(), 1);
        assert_eq!(m.get(b"k1"), None);
        let mut at1: Vec<_> = m.entries_at(1).collect();
        at1.sort();
        assert_eq!(at1, vec![(&b"k1"[..], &b"v1"[..])]);
        m.put(b"k1", b"v3", e);
        assert_eq!(m.present_len(), 2);
        let c = m.clear(WriteEpoch::at(3, 2));
        assert!(c.changed && c.kept_old && !c.dead);
        assert!(!m.is_present());
        assert!(!m.prune(&LiveSnapshots::of(&[], 3), None));
        assert!(m.is_dead());
    }
}
