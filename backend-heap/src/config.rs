//! [`HeapConfig`]: how a heap backend is set up.

use flowstate_api::changelog::ChangelogPolicy;
use flowstate_api::{Error, KeyGroupRange, Result};

/// How a [`crate::HeapBackend`] is set up.
#[derive(Clone, Debug, PartialEq)]
pub struct HeapConfig {
    /// Record which entries change between checkpoints, so incremental checkpoints upload
    /// only those (as changelog deltas). Recording starts with the first incremental
    /// checkpoint and costs one `Arc` clone and one push per entry per checkpoint interval
    /// (on the entry's first change in it). Without it, incremental checkpoints are written
    /// full.
    pub change_tracking: bool,
    /// When an incremental checkpoint writes a new base instead of another delta.
    pub changelog: ChangelogPolicy,
    /// Dashmap shards per (state, key group), a power of two of at least 2. `None`: enough
    /// that a subtask's key groups together have about four shards per CPU.
    pub shards_per_key_group: Option<usize>,
}

impl Default for HeapConfig {
    fn default() -> Self {
        Self {
            change_tracking: true,
            changelog: ChangelogPolicy::default(),
            shards_per_key_group: None,
        }
    }
}

impl HeapConfig {
    /// Dashmap shards per (state, key group) of a backend owning `range`: the configured
    /// number, checked, or the default for this machine.
    pub(crate) fn shards(&self, range: KeyGroupRange) -> Result<usize> {
        match self.shards_per_key_group {
            Some(n) if n >= 2 && n.is_power_of_two() => Ok(n),
            Some(n) => Err(Error::Config(format!(
                "shards_per_key_group is {n}: use a power of two of at least 2, or None for the default"
            ))),
            None => Ok(default_shards(range)),
        }
    }
}

fn default_shards(range: KeyGroupRange) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cpus)
        .div_ceil(range.len() as usize)
        .next_power_of_two()
        .clamp(2, 64)
}
