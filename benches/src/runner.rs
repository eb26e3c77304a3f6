//! Timing an operation on one thread or several threads sharing one store.
//!
//! Each thread gets its own fork of the store (a handle on the same data) and its own
//! [`Part`] of the keys; the threads start together at a barrier and each times its own
//! operations (checks and clean-ups around them stay untimed, as on one thread).

use std::sync::Barrier;
use std::time::Duration;

use crate::error::{BenchError, Result};
use crate::store::{Op, Store};
use crate::workload::Part;

/// What a run of `ops` operations per thread measured.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Timing {
    /// Nanoseconds per operation of one thread: each thread's timed nanoseconds divided by
    /// its operations, averaged over the threads.
    pub ns_per_op: f64,
    /// Operations per second of all threads together: the sum of each thread's operations
    /// per timed second.
    pub ops_per_sec: f64,
}

impl Timing {
    /// From each thread's timed duration of `ops` operations.
    pub fn from_durations(durations: &[Duration], ops: u64) -> Self {
        let ops = ops.max(1) as f64;
        let threads = durations.len().max(1) as f64;
        let ns: Vec<f64> = durations
            .iter()
            .map(|d| (d.as_nanos() as f64).max(1.0) / ops)
            .collect();
        Self {
            ns_per_op: ns.iter().sum::<f64>() / threads,
            ops_per_sec: ns.iter().map(|ns| 1e9 / ns).sum(),
        }
    }

    /// The per-field median of `timings` (not empty).
    pub fn median(timings: &[Timing]) -> Timing {
        Timing {
            ns_per_op: median(timings.iter().map(|t| t.ns_per_op).collect()),
            ops_per_sec: median(timings.iter().map(|t| t.ops_per_sec).collect()),
        }
    }
}

/// The median of `values` (the upper one of an even count); 0 when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Times `ops` operations `op` on each of `parts.len()` forks of `store`, fork `t` on
/// `parts[t]`, all threads running at once (one thread: on this one).
pub fn time_threads(store: &Store, op: Op, parts: &[Part], ops: u64) -> Result<Timing> {
    let mut forks = parts
        .iter()
        .map(|_| store.fork())
        .collect::<Result<Vec<_>>>()?;
    let durations = match (forks.as_mut_slice(), parts) {
        ([fork], [part]) => vec![fork.time(op, part, ops)?],
        _ => {
            let barrier = Barrier::new(forks.len());
            std::thread::scope(|scope| {
                let threads: Vec<_> = forks
                    .iter_mut()
                    .zip(parts)
                    .map(|(fork, part)| {
                        let barrier = &barrier;
                        scope.spawn(move || {
                            barrier.wait();
                            fork.time(op, part, ops)
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| {
                        t.join().map_err(|_| {
                            BenchError::Check(format!("a thread timing {} panicked", op.name()))
                        })?
                    })
                    .collect::<Result<Vec<_>>>()
            })?
        }
    };
    Ok(Timing::from_durations(&durations, ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{flowstate_layers, Family};
    use crate::workload::Workload;

    #[test]
    fn timings_average_per_thread_and_add_up_throughput() {
        let t = Timing::from_durations(
            &[Duration::from_millis(100), Duration::from_millis(200)],
            1_000_000,
        );
        assert!((t.ns_per_op - 150.0).abs() < 1e-9, "{t:?}");
        assert!((t.ops_per_sec - 15e6).abs() < 1e-3, "{t:?}");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(Vec::new()), 0.0);
        let m = Timing::median(&[t, t, Timing::from_durations(&[Duration::ZERO], 1)]);
        assert_eq!(m, t);
    }

    #[test]
    fn two_threads_share_one_store_on_disjoint_keys() {
        let workload = Workload::new(4_000, 1_000).unwrap();
        let parts = workload.parts(2).unwrap();
        let max = workload.max_parallelism();
        for family in Family::ALL {
            let [mut typed, _bytes] = flowstate_layers(
                family,
                crate::heap_backend::open(max).unwrap(),
                workload.clone(),
            )
            .unwrap();
            let mut raw = crate::heap_backend::raw(family, &workload).unwrap();
            for store in [&mut typed, &mut raw] {
                for &op in family.ops() {
                    let t = time_threads(store, op, &parts, 5_000).unwrap();
                    assert!(t.ns_per_op > 0.0 && t.ops_per_sec > 0.0, "{t:?}");
                }
                store.check(&workload).unwrap();
            }
        }
    }
}
