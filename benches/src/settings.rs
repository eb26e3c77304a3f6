//! Workload sizes: full sizes under `cargo bench`, small ones when criterion runs the benches
//! once as tests (`cargo test --benches`), and environment variables to override both.

use crate::error::{BenchError, Result};

/// Keys preloaded before the value/list/map operations are measured.
pub const KEYS_ENV: &str = "FLOWSTATE_BENCH_KEYS";
/// Keys written before the rescale-restore benchmark checkpoints and restores them.
pub const RESCALE_KEYS_ENV: &str = "FLOWSTATE_BENCH_RESCALE_KEYS";

/// Preloaded keys of a real benchmark run (issues 2, 4 and 5 ask for 500,000).
pub const BENCH_PRELOAD_KEYS: usize = 500_000;
/// Keys of the rescale-restore benchmark (issue 4 asks for at least 1,000,000).
pub const BENCH_RESCALE_KEYS: usize = 1_000_000;
/// Test-mode sizes: debug builds, run once, must stay quick in CI.
pub const TEST_PRELOAD_KEYS: usize = 20_000;
pub const TEST_RESCALE_KEYS: usize = 5_000;

/// True when criterion measures (`cargo bench`), false when it runs each benchmark once as a
/// test (`cargo test --benches`). Criterion decides the same way: `cargo bench` passes
/// `--bench`, `cargo test` does not, and `--test` forces test mode.
pub fn criterion_measures() -> bool {
    let mut bench = false;
    let mut test = false;
    for arg in std::env::args() {
        bench |= arg == "--bench";
        test |= arg == "--test";
    }
    bench && !test
}

/// How big a workload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Keys written before measuring.
    pub preload: usize,
    /// Never-written keys that "add a new key" inserts (and the harness removes again, untimed,
    /// so that every insert creates a key and the store keeps its size).
    pub fresh: usize,
    /// Keys of the rescale-restore benchmark.
    pub rescale: usize,
}

impl Sizes {
    /// Full sizes, each overridable by its environment variable.
    pub fn full() -> Result<Self> {
        Self::with_defaults(BENCH_PRELOAD_KEYS, BENCH_RESCALE_KEYS)
    }

    /// Sizes for a criterion bench binary: full when measuring, small in test mode; the
    /// environment variables win in both modes.
    pub fn for_criterion() -> Result<Self> {
        if criterion_measures() {
            Self::full()
        } else {
            Self::with_defaults(TEST_PRELOAD_KEYS, TEST_RESCALE_KEYS)
        }
    }

    fn with_defaults(preload: usize, rescale: usize) -> Result<Self> {
        let preload = env_count(KEYS_ENV, preload)?;
        let rescale = env_count(RESCALE_KEYS_ENV, rescale)?;
        Ok(Self {
            preload,
            fresh: fresh_pool(preload),
            rescale,
        })
    }
}

/// Fresh keys per insert chunk: a tenth of the preload, between 1,000 and 50,000. Large enough
/// that LMDB's write batches (16k entries) fill inside a chunk.
pub fn fresh_pool(preload: usize) -> usize {
    (preload / 10).clamp(1_000, 50_000)
}

/// A positive count from environment variable `name`, or `default` when it is unset.
pub fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(_)) => Err(BenchError::Config(format!(
            "{name} is not valid UTF-8: set it to a positive whole number"
        ))),
        Ok(text) => parse_count(name, &text),
    }
}

/// Parses a positive count; `_` separators are allowed (`1_000_000`).
pub fn parse_count(name: &str, text: &str) -> Result<usize> {
    match text.trim().replace('_', "").parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(BenchError::Config(format!(
            "{name} is '{text}': set it to a positive whole number such as 500000"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_and_reject_nonsense() {
        assert_eq!(parse_count("X", "1_000_000").unwrap(), 1_000_000);
        assert_eq!(parse_count("X", " 42 ").unwrap(), 42);
        for bad in ["0", "-3", "many", ""] {
            let err = parse_count("X", bad).unwrap_err().to_string();
            assert!(err.contains("X is"), "{err}");
        }
        assert_eq!(fresh_pool(20_000), 2_000);
        assert_eq!(fresh_pool(500_000), 50_000);
        assert_eq!(fresh_pool(10), 1_000);
    }
}
