//! The epoch clock: which writes a snapshot sees, and which snapshots are live.
//!
//! Every write is stamped with the current write epoch, read while the writer holds its
//! entry's shard lock. Taking a snapshot pins the current epoch `S` and moves the clock to
//! `S + 1`: the snapshot sees exactly the versions stamped `<= S`. Because the stamp is read
//! under the shard lock and a view reads a shard under the same lock, a write stamped `S`
//! is always complete before any view of `S` reads its shard, and a write that takes the lock
//! after a view read the shard is stamped `S + 1` or later (see the crate docs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::cell::{LiveSnapshots, WriteEpoch, NO_SNAPSHOT};

#[derive(Debug)]
pub(crate) struct Epochs {
    write: AtomicU64,
    /// Writes stamped with this epoch or later record their changes; `u64::MAX` until the
    /// first incremental checkpoint is captured (a chain starts with a full base, and
    /// completing it drops every older record, so recording before it is wasted work).
    track_from: AtomicU64,
    /// Newest live snapshot epoch, or `NO_SNAPSHOT`.
    pinned: AtomicU64,
    /// Live snapshot epochs and how many views pin each.
    live: Mutex<BTreeMap<u64, usize>>,
}

impl Default for Epochs {
    fn default() -> Self {
        Self {
            write: AtomicU64::new(1),
            track_from: AtomicU64::new(u64::MAX),
            pinned: AtomicU64::new(NO_SNAPSHOT),
            live: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Epochs {
    /// What a writer needs; call it while holding the entry's shard lock.
    #[inline]
    pub(crate) fn for_write(&self) -> WriteEpoch {
        // Acquire pairs with the Release in `pin`: a writer that sees the advanced epoch also
        // sees the pin, so it keeps every version the new snapshot reads.
        let stamp = self.write.load(Ordering::Acquire);
        let pinned = self.pinned.load(Ordering::Acquire);
        WriteEpoch { stamp, pinned }
    }

    /// True when a write stamped `stamp` must record its change.
    #[inline]
    pub(crate) fn tracks(&self, stamp: u64) -> bool {
        stamp >= self.track_from.load(Ordering::Relaxed)
    }

    /// Starts change tracking (idempotent); call before pinning the first incremental
    /// checkpoint's view. The pin's Release store then publishes it to every writer that
    /// stamps a later epoch.
    pub(crate) fn start_tracking(&self) {
        let current = self.write.load(Ordering::Acquire);
        self.track_from.fetch_min(current, Ordering::Release);
    }

    /// Pins the current epoch for a new snapshot and advances the clock. O(1).
    pub(crate) fn pin(&self) -> u64 {
        let mut live = self.live.lock();
        let epoch = self.write.load(Ordering::Relaxed);
        *live.entry(epoch).or_default() += 1;
        // Epochs only grow, so the new pin is the newest.
        self.pinned.store(epoch, Ordering::Release);
        self.write.store(epoch + 1, Ordering::Release);
        epoch
    }

    /// Releases one pin of `epoch`; returns what the remaining snapshots need.
    pub(crate) fn unpin(&self, epoch: u64) -> LiveSnapshots {
        let mut live = self.live.lock();
        if let Some(count) = live.get_mut(&epoch) {
            *count -= 1;
            if *count == 0 {
                live.remove(&epoch);
            }
        }
        let newest = live.keys().next_back().copied().unwrap_or(NO_SNAPSHOT);
        self.pinned.store(newest, Ordering::Release);
        LiveSnapshots {
            epochs: live.keys().copied().collect(),
            future_from: self.write.load(Ordering::Relaxed),
        }
    }

    /// The newest epoch a snapshot may have pinned: writes from now on are stamped later.
    pub(crate) fn newest_sealed(&self) -> u64 {
        self.write.load(Ordering::Acquire).saturating_sub(1)
    }

    /// Number of live snapshot pins.
    pub(crate) fn live_count(&self) -> usize {
        self.live.lock().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_advance_the_clock_and_releases_lower_the_pin() {
        let epochs = Epochs::default();
        assert_eq!(epochs.for_write(), WriteEpoch::at(1, NO_SNAPSHOT));
        assert_eq!(epochs.pin(), 1);
        assert_eq!(epochs.pin(), 2);
        assert_eq!(epochs.for_write(), WriteEpoch::at(3, 2));
        let live = epochs.unpin(2);
        assert_eq!(live.epochs, vec![1]);
        assert_eq!(live.future_from, 3);
        assert_eq!(epochs.for_write().pinned, 1);
        assert_eq!(epochs.live_count(), 1);
        assert!(epochs.unpin(1).epochs.is_empty());
        assert_eq!(epochs.for_write().pinned, NO_SNAPSHOT);
    }
}
