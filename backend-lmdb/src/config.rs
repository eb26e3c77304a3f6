//! Configuration of the LMDB backend and the environment options it opens LMDB with.

use flowstate_api::changelog::ChangelogPolicy;
use heed::{EnvFlags, EnvOpenOptions, WithoutTls};

use crate::error::LmdbError;

/// Map sizes are whole multiples of this (a multiple of every OS page size), as LMDB requires
/// page-size multiples.
pub const MAP_SIZE_UNIT: usize = 1 << 20;

/// The most bytes of buffered writes or restore rows the backend puts in one write
/// transaction: LMDB keeps a transaction's dirty pages in memory and caps their number
/// (`MDB_TXN_FULL`, about 512 MiB with 4 KiB pages), so larger batches are split.
pub const MAX_TRANSACTION_BYTES: usize = 64 << 20;

/// How an [`crate::LmdbBackend`] uses LMDB. `Default` suits most operators.
#[derive(Clone, Debug, PartialEq)]
pub struct LmdbConfig {
    /// Size of the LMDB memory map at open, in bytes (rounded up to whole MiB). It is address
    /// space, not memory or disk: the data file grows only as pages are written. When the map
    /// fills, the backend doubles it and retries.
    pub initial_map_size: usize,
    /// The map never grows beyond this; a write that needs more fails with an error saying so.
    /// `None`: no limit but the address space.
    pub max_map_size: Option<usize>,
    /// LMDB named databases this environment may hold: the most states one backend can
    /// register (fixed when the environment opens).
    pub max_states: u32,
    /// LMDB reader slots: one is used by the backend's reads, one by each snapshot in flight.
    pub max_readers: u32,
    /// The write buffer is flushed into one LMDB write transaction when it holds this many
    /// entries...
    pub write_buffer_entries: usize,
    /// ...or about this many bytes (keys, values and bookkeeping).
    pub write_buffer_bytes: usize,
    /// Track which `(state, key, namespace)` changed since the last completed checkpoint, so
    /// that incremental checkpoints upload only changes. Costs, per write-buffer flush, a
    /// sequential pass over the flushed keys (plus merges of those sorted runs, O(log n) per
    /// change) and memory for each distinct changed `(key, namespace)` until a checkpoint
    /// covering it completes. When off, incremental requests write full snapshots.
    pub track_changes: bool,
    /// When incremental checkpoints write a new full base instead of another delta.
    pub changelog: ChangelogPolicy,
}

impl Default for LmdbConfig {
    fn default() -> Self {
        Self {
            initial_map_size: 256 << 20,
            max_map_size: None,
            max_states: 128,
            max_readers: 126,
            write_buffer_entries: 16 * 1024,
            write_buffer_bytes: 16 << 20,
            track_changes: true,
            changelog: ChangelogPolicy::default(),
        }
    }
}

/// Rounds `size` up to a whole number of [`MAP_SIZE_UNIT`]s (at least one).
pub(crate) fn round_map_size(size: usize) -> usize {
    size.max(1)
        .div_ceil(MAP_SIZE_UNIT)
        .saturating_mul(MAP_SIZE_UNIT)
}

impl LmdbConfig {
    /// Bytes of writes per LMDB write transaction.
    pub(crate) fn transaction_bytes(&self) -> usize {
        self.write_buffer_bytes.min(MAX_TRANSACTION_BYTES)
    }

    /// Checks the values; the backend calls it at open.
    pub fn validate(&self) -> Result<(), LmdbError> {
        let fail = |m: &str| Err(LmdbError::Config(m.to_string()));
        if self.initial_map_size == 0 {
            return fail("initial_map_size must be positive");
        }
        if let Some(max) = self.max_map_size {
            if round_map_size(max) < round_map_size(self.initial_map_size) {
                return fail("max_map_size must not be below initial_map_size");
            }
        }
        if self.max_states == 0 {
            return fail("max_states must be at least 1");
        }
        if self.max_readers < 2 {
            return fail("max_readers must be at least 2 (the backend's reads and one snapshot)");
        }
        if self.write_buffer_entries == 0 || self.write_buffer_bytes == 0 {
            return fail("write_buffer_entries and write_buffer_bytes must be positive");
        }
        Ok(())
    }

    /// The environment flags the backend opens LMDB with.
    ///
    /// `NO_SYNC` and `NO_META_SYNC`: the environment is a working copy, never read back after
    /// a crash (recovery restores from a checkpoint into a fresh directory), so commits need
    /// not reach the disk. `NO_READ_AHEAD`: reads are random point lookups. Read transactions
    /// are opened without thread-local storage (`MDB_NOTLS`, heed's `WithoutTls`) so that a
    /// snapshot's read transaction can move to the thread that uploads it.
    pub fn env_flags() -> EnvFlags {
        EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC | EnvFlags::NO_READ_AHEAD
    }

    /// The options the backend opens its environment with (benchmarks open raw heed with the
    /// same). Opening with them is `unsafe` in heed because of `NO_SYNC`-style flags and
    /// because the caller must not open the same directory twice.
    pub fn env_open_options(&self) -> EnvOpenOptions<WithoutTls> {
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(round_map_size(self.initial_map_size))
            .max_dbs(self.max_states)
            .max_readers(self.max_readers);
        // SAFETY: the flags only relax durability of a disposable working copy (see above).
        unsafe {
            options.flags(Self::env_flags());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_sizes_round_up() {
        assert!(LmdbConfig::default().validate().is_ok());
        assert_eq!(round_map_size(1), MAP_SIZE_UNIT);
        assert_eq!(round_map_size(MAP_SIZE_UNIT + 1), 2 * MAP_SIZE_UNIT);
        let bad = LmdbConfig {
            max_map_size: Some(1),
            ..LmdbConfig::default()
        };
        assert!(matches!(bad.validate(), Err(LmdbError::Config(_))));
    }
}
