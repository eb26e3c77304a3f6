//! The demo's workload: which record every offset of every partition holds, the rules that
//! weigh them, and the counts a single-threaded run over them gives, the reference every run
//! of the demo (and the tests reading its checkpoints) is checked against.
//!
//! Every partition yields offsets `[r*B, (r+1)*B)` in round `r`; a record is a (key, kind)
//! drawn from (partition, offset) alone, so any run that processes each record exactly once,
//! whatever its parallelism and restarts, ends with exactly the reference counts.

use std::collections::BTreeMap;

/// The demo's defaults (see `flowstate demo --help`).
pub const DEFAULT_PARTITIONS: u32 = 6;
/// Default number of distinct keys.
pub const DEFAULT_KEYS: u32 = 2_000;
/// Default records per partition per round.
pub const DEFAULT_BATCH: u64 = 500;
/// Default max parallelism (number of key groups).
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The round the demo stops at: its last checkpoint holds the counts of rounds
/// `[0, FINAL_ROUND)`.
pub const FINAL_ROUND: u64 = 13;

/// The event kinds records carry.
pub const KINDS: [&str; 3] = ["view", "click", "buy"];

/// Rule updates: (round, kind, weight), taking effect at the start of their round. Round 0
/// sets the initial rules.
pub const RULES: [(u64, &str, u64); 4] = [
    (0, "view", 1),
    (0, "click", 2),
    (0, "buy", 5),
    (7, "click", 3),
];

/// The weight of `kind` in `round`: the latest rule for it at or before the round.
pub fn weight_at(round: u64, kind: &str) -> u64 {
    RULES
        .iter()
        .filter(|(r, k, _)| *r <= round && *k == kind)
        .map(|(_, _, w)| *w)
        .next_back()
        .unwrap_or(0)
}

/// The records: `partitions` sources of `batch` records per round over `keys` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Input partitions: sources of records.
    pub partitions: u32,
    /// Distinct keys.
    pub keys: u32,
    /// Records per partition per round.
    pub batch: u64,
}

impl Workload {
    /// The record at `offset` of `partition`: (key, kind). Deterministic (splitmix64).
    pub fn record(&self, partition: u32, offset: u64) -> (String, &'static str) {
        let mut z = (u64::from(partition) << 40 ^ offset).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let key = format!("user-{}", z % u64::from(self.keys));
        (key, KINDS[((z >> 32) % 3) as usize])
    }

    /// The weighted count of every key after rounds `[0, rounds)`, each record counted once.
    pub fn expected_counts(&self, rounds: u64) -> BTreeMap<String, u64> {
        let mut expected = BTreeMap::new();
        for partition in 0..self.partitions {
            for offset in 0..rounds * self.batch {
                let (key, kind) = self.record(partition, offset);
                *expected.entry(key).or_default() += weight_at(offset / self.batch, kind);
            }
        }
        expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_change_the_click_weight_at_round_seven() {
        assert_eq!(weight_at(6, "click"), 2);
        assert_eq!(weight_at(7, "click"), 3);
        assert_eq!(weight_at(FINAL_ROUND, "buy"), 5);
        assert_eq!(weight_at(0, "unknown"), 0);
    }

    #[test]
    fn records_are_a_function_of_their_position_over_every_key_and_kind() {
        let w = Workload {
            partitions: 2,
            keys: 10,
            batch: 50,
        };
        assert_eq!(w.record(1, 17), w.record(1, 17));
        assert!((0..100).any(|o| w.record(0, o) != w.record(1, o)));
        let counts = w.expected_counts(2);
        assert_eq!(counts.len(), 10, "every key is drawn");
        let total: u64 = counts.values().sum();
        // 200 records weighing 1, 2 or 5 each.
        assert!((200..=1000).contains(&total), "{total}");
    }
}
