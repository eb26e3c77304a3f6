//! [`HeapStats`]: what a heap backend holds besides its current values (kept versions,
//! tombstones, change records), counted for tests and operators.

use crate::backend::HeapBackend;
use crate::cell::Versioned;
use crate::table::{KgTables, Storage};

/// Sizes of a backend's bookkeeping, for tests and operators. Counting walks every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// (state, key, namespace) entries, including tombstones kept for snapshots.
    pub entries: usize,
    /// Removed values (or map entries) still kept because a live snapshot reads them.
    pub tombstones: usize,
    /// Old versions kept for live snapshots.
    pub old_versions: usize,
    /// Change records held for the next incremental checkpoint.
    pub change_records: usize,
    /// Entries listed for the version sweeper.
    pub retained_entries: usize,
    /// Live snapshot views.
    pub live_snapshots: usize,
}

impl HeapBackend {
    /// Counts entries and bookkeeping (walks all state: not for the hot path).
    pub fn stats(&self) -> HeapStats {
        fn add<V: Versioned>(stats: &mut HeapStats, tables: &KgTables<V>) {
            for (_, table) in tables.created() {
                stats.change_records += table.changes().lock().len();
                stats.retained_entries += table.retained_len();
                for entry in table.map.iter() {
                    stats.entries += 1;
                    let (versions, tombstones) = entry.value().history();
                    stats.old_versions += versions;
                    stats.tombstones += tombstones;
                }
            }
        }
        let mut stats = HeapStats {
            live_snapshots: self.inner.epochs.live_count(),
            ..HeapStats::default()
        };
        for (_, table) in self.inner.tables.iter() {
            match &table.storage {
                Storage::Bytes(t) => add(&mut stats, t),
                Storage::Map(t) => add(&mut stats, t),
            }
        }
        stats
    }
}
