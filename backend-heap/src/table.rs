//! Storage of one state: a `DashMap` per key group, created on first write.
//!
//! Operations go through dashmap's raw shard API so that each costs one hash of the borrowed
//! `(key, namespace)` and one shard lock: no key is allocated unless an entry is inserted.

use std::sync::OnceLock;

use dashmap::{DashMap, SharedValue};
use flowstate_api::state::StorageLayout;
use flowstate_api::{KeyContext, KeyGroup, KeyGroupRange, StateKind};
use parking_lot::Mutex;

use crate::cell::{Cell, Change, LiveSnapshots, Versioned, WriteEpoch};
use crate::epoch::Epochs;
use crate::key::{hash_of, EntryHasher, EntryKey};
use crate::map_slot::MapSlot;

/// One registered state.
pub(crate) struct StateTable {
    pub(crate) kind: StateKind,
    pub(crate) storage: Storage,
}

/// Value, reducing, aggregating and list states store byte strings; map states store slots.
pub(crate) enum Storage {
    Bytes(KgTables<Cell>),
    Map(KgTables<MapSlot>),
}

impl StateTable {
    pub(crate) fn new(
        kind: StateKind,
        range: KeyGroupRange,
        hasher: &EntryHasher,
        shards: usize,
    ) -> Self {
        let storage = match kind.layout() {
            StorageLayout::Map => Storage::Map(KgTables::new(range, hasher, shards)),
            StorageLayout::Value | StorageLayout::List => {
                Storage::Bytes(KgTables::new(range, hasher, shards))
            }
        };
        Self { kind, storage }
    }
}

/// The per-key-group tables of one state, indexed by `key group - range start`.
pub(crate) struct KgTables<V> {
    first: u32,
    slots: Box<[OnceLock<KgTable<V>>]>,
    hasher: EntryHasher,
    shards: usize,
}

impl<V> KgTables<V> {
    fn new(range: KeyGroupRange, hasher: &EntryHasher, shards: usize) -> Self {
        Self {
            first: range.start().get(),
            slots: (0..range.len()).map(|_| OnceLock::new()).collect(),
            hasher: hasher.clone(),
            shards,
        }
    }

    /// The table of `key_group`, if anything was ever written to it.
    #[inline]
    pub(crate) fn get(&self, key_group: KeyGroup) -> Option<&KgTable<V>> {
        let index = key_group.get().checked_sub(self.first)? as usize;
        self.slots.get(index)?.get()
    }

    /// Calls `f` with the entry of (`key`, `namespace`) under its shard's read lock; `None`
    /// when the entry (or its key group's table) does not exist.
    #[inline]
    pub(crate) fn read<R>(
        &self,
        key: &KeyContext,
        namespace: &[u8],
        f: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        self.get(key.key_group())?.read(key.key(), namespace, f)
    }

    /// The table of `key_group`, created if needed; `None` when it is not in the range.
    #[inline]
    pub(crate) fn get_or_create(&self, key_group: KeyGroup) -> Option<&KgTable<V>> {
        let index = key_group.get().checked_sub(self.first)? as usize;
        let slot = self.slots.get(index)?;
        Some(slot.get_or_init(|| KgTable::new(self.hasher.clone(), self.shards)))
    }

    /// Every created table with its key group, ascending.
    pub(crate) fn created(&self) -> impl Iterator<Item = (KeyGroup, &KgTable<V>)> {
        self.slots.iter().enumerate().filter_map(|(i, slot)| {
            let table = slot.get()?;
            // In range by construction: first + i <= range end < 2^15.
            let key_group = KeyGroup::from_validated(self.first + i as u32).ok()?;
            Some((key_group, table))
        })
    }

    pub(crate) fn hasher(&self) -> &EntryHasher {
        &self.hasher
    }
}

/// What a write closure reports back to [`KgTable::write`].
pub(crate) struct Outcome {
    pub(crate) change: Change,
    /// The map user key whose cell kept an old version (`None`: the whole entry).
    pub(crate) user_key: Option<Box<[u8]>>,
}

impl From<Change> for Outcome {
    fn from(change: Change) -> Self {
        Self {
            change,
            user_key: None,
        }
    }
}

impl Outcome {
    /// A change to the cell of map user key `user_key`: the sweeper visits that cell only.
    #[inline]
    pub(crate) fn of_user_key(change: Change, user_key: &[u8]) -> Self {
        Self {
            change,
            user_key: change.kept_old.then(|| Box::from(user_key)),
        }
    }
}

/// An entry that kept old versions for a live snapshot: the sweeper prunes it once
/// snapshots are released.
#[derive(Debug)]
pub(crate) struct Retained {
    key: EntryKey,
    user_key: Option<Box<[u8]>>,
}

/// The entries of one (state, key group). The bookkeeping that operations rarely touch sits
/// behind a pointer, so the tables of a state's key groups stay about a cache line each.
pub(crate) struct KgTable<V> {
    pub(crate) map: DashMap<EntryKey, V, EntryHasher>,
    cold: Box<Cold>,
}

struct Cold {
    changes: Mutex<ChangeRecords>,
    retained: Mutex<Vec<Retained>>,
}

impl<V> KgTable<V> {
    fn new(hasher: EntryHasher, shards: usize) -> Self {
        Self {
            map: DashMap::with_hasher_and_shard_amount(hasher, shards),
            cold: Box::new(Cold {
                changes: Mutex::new(ChangeRecords::default()),
                retained: Mutex::new(Vec::new()),
            }),
        }
    }

    /// This table's change records.
    pub(crate) fn changes(&self) -> &Mutex<ChangeRecords> {
        &self.cold.changes
    }

    #[inline]
    fn locate(&self, key: &[u8], namespace: &[u8]) -> (u64, usize) {
        let hash = hash_of(self.map.hasher(), key, namespace);
        (hash, self.map.determine_shard(hash as usize))
    }

    /// Calls `f` with the entry of `(key, namespace)`, under its shard's read lock.
    #[inline]
    pub(crate) fn read<R>(
        &self,
        key: &[u8],
        namespace: &[u8],
        f: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        let (hash, shard) = self.locate(key, namespace);
        let shard = self.map.shards()[shard].read();
        shard
            .get(hash, |(k, _)| k.is(key, namespace))
            .map(|(_, v)| f(v.get()))
    }

    /// Calls `f` with the entry of `(key, namespace)` (`None` when absent), under its shard's
    /// read lock: the hot read path, one lookup and no nested options.
    #[inline]
    pub(crate) fn read_or_absent<R>(
        &self,
        key: &[u8],
        namespace: &[u8],
        f: impl FnOnce(Option<&V>) -> R,
    ) -> R {
        let (hash, shard) = self.locate(key, namespace);
        let shard = self.map.shards()[shard].read();
        f(shard
            .get(hash, |(k, _)| k.is(key, namespace))
            .map(|(_, v)| v.get()))
    }

    /// Waits for every write in progress on this table: a write holds its shard's lock from
    /// reading its epoch until its change is recorded.
    pub(crate) fn barrier(&self) {
        for shard in self.map.shards() {
            drop(shard.read());
        }
    }

    pub(crate) fn retained_len(&self) -> usize {
        self.cold.retained.lock().len()
    }
}

impl<V: Versioned> KgTable<V> {
    /// Writes `(key, namespace)` under its shard's write lock: `occupied` changes an existing
    /// entry, `vacant` may create one. Records the first change of each epoch when `track`
    /// (and tracking has started), and entries that kept old versions for the sweeper.
    #[inline]
    pub(crate) fn write(
        &self,
        key: &[u8],
        namespace: &[u8],
        epochs: &Epochs,
        track: bool,
        occupied: impl FnOnce(&mut V, WriteEpoch) -> Outcome,
        vacant: impl FnOnce(WriteEpoch) -> Option<V>,
    ) {
        let (hash, shard) = self.locate(key, namespace);
        let mut shard = self.map.shards()[shard].write();
        // Read under the shard lock: the snapshot consistency argument depends on it.
        let e = epochs.for_write();
        match shard.get_mut(hash, |(k, _)| k.is(key, namespace)) {
            Some((entry_key, value)) => {
                let value = value.get_mut();
                let first_change_of_epoch = value.stamp() < e.stamp;
                let outcome = occupied(value, e);
                if track
                    && outcome.change.changed
                    && first_change_of_epoch
                    && epochs.tracks(e.stamp)
                {
                    self.cold.changes.lock().record(entry_key.clone(), e.stamp);
                }
                if outcome.change.kept_old {
                    self.cold.retained.lock().push(Retained {
                        key: entry_key.clone(),
                        user_key: outcome.user_key,
                    });
                }
                if outcome.change.dead {
                    shard.remove_entry(hash, |(k, _)| k.is(key, namespace));
                }
            }
            None => {
                if let Some(value) = vacant(e) {
                    let entry_key = EntryKey::new(key, namespace);
                    if track && epochs.tracks(e.stamp) {
                        self.cold.changes.lock().record(entry_key.clone(), e.stamp);
                    }
                    let hasher = self.map.hasher();
                    shard.insert_entry(hash, (entry_key, SharedValue::new(value)), |(k, _)| {
                        hash_of(hasher, k.key(), k.namespace())
                    });
                }
            }
        }
    }

    /// Prunes every entry that kept versions, for the snapshots still `live`; removes entries
    /// left empty. Entries that still keep versions stay listed for a later sweep.
    pub(crate) fn sweep(&self, live: &LiveSnapshots) {
        let records = std::mem::take(&mut *self.cold.retained.lock());
        if records.is_empty() {
            return;
        }
        // Not deduplicated: an entry listed twice (kept versions for two snapshots) is pruned
        // twice, and pruning is idempotent; sorting would cost more than it saves.
        let mut still_kept = Vec::new();
        for record in records {
            let (key, namespace) = (record.key.key(), record.key.namespace());
            let (hash, shard) = self.locate(key, namespace);
            let mut shard = self.map.shards()[shard].write();
            let (remains, dead) = match shard.get_mut(hash, |(k, _)| k.is(key, namespace)) {
                Some((_, value)) => {
                    let value = value.get_mut();
                    let remains = value.prune(live, record.user_key.as_deref());
                    (remains, value.is_dead())
                }
                None => (false, false),
            };
            if dead {
                shard.remove_entry(hash, |(k, _)| k.is(key, namespace));
            }
            drop(shard);
            if remains {
                still_kept.push(record);
            }
        }
        if !still_kept.is_empty() {
            self.cold.retained.lock().extend(still_kept);
        }
    }
}

/// One changed (key, namespace) and the epochs of its changes, as a conservative range:
/// every change of the key happened in `[first, last]`.
#[derive(Debug)]
struct ChangeRecord {
    key: EntryKey,
    first: u64,
    last: u64,
}

/// The change log of one (state, key group): which entries changed in which epochs since the
/// last completed incremental checkpoint. A write appends a record only on the first change
/// of an entry in an epoch (an `Arc` clone and a push); duplicates (an entry removed and
/// re-created in one epoch) are merged when the log doubles, so it stays within twice the
/// number of distinct changed entries.
#[derive(Debug, Default)]
pub(crate) struct ChangeRecords {
    records: Vec<ChangeRecord>,
    compact_at: usize,
}

const MIN_COMPACT_AT: usize = 64;

impl ChangeRecords {
    pub(crate) fn record(&mut self, key: EntryKey, epoch: u64) {
        self.records.push(ChangeRecord {
            key,
            first: epoch,
            last: epoch,
        });
        if self.records.len() >= self.compact_at.max(MIN_COMPACT_AT) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.records.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut merged: Vec<ChangeRecord> = Vec::with_capacity(self.records.len());
        for record in self.records.drain(..) {
            match merged.last_mut() {
                Some(last) if last.key == record.key => {
                    last.first = last.first.min(record.first);
                    last.last = last.last.max(record.last);
                }
                _ => merged.push(record),
            }
        }
        self.records = merged;
        self.compact_at = self.records.len() * 2;
    }

    /// Forgets changes that a completed checkpoint of epoch `epoch` holds.
    pub(crate) fn forget_through(&mut self, epoch: u64) {
        self.records.retain_mut(|r| {
            r.first = r.first.max(epoch + 1);
            r.last > epoch
        });
        self.compact_at = self.records.len() * 2;
    }

    /// Keys with a change in epochs `(after, through]`, sorted, without duplicates.
    pub(crate) fn changed_between(&self, after: u64, through: u64) -> Vec<EntryKey> {
        let mut keys: Vec<EntryKey> = self
            .records
            .iter()
            .filter(|r| r.first <= through && r.last > after)
            .map(|r| r.key.clone())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_records_merge_and_forget_conservatively() {
        let mut log = ChangeRecords::default();
        for round in 0..100u64 {
            // One churned key recorded every time, plus distinct keys.
            log.record(EntryKey::new(b"hot", b""), 1 + round / 50);
            log.record(EntryKey::new(&round.to_le_bytes(), b""), 1 + round / 50);
        }
        assert!(
            log.len() <= 2 * 101,
            "compaction bounds the log: {}",
            log.len()
        );
        let all = log.changed_between(0, 2);
        assert_eq!(all.len(), 101);
        // Epoch-1-only keys are not in a delta over (1, 2].
        let second = log.changed_between(1, 2);
        assert_eq!(second.len(), 51, "50 keys of epoch 2 and the hot key");
        log.forget_through(1);
        assert_eq!(log.changed_between(0, 9).len(), 51);
        log.forget_through(2);
        assert_eq!(log.len(), 0);
    }
}
