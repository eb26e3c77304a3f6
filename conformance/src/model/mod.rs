//! Model-based property test: random sequences of state operations, checkpoints, aborted
//! checkpoints and restores (with rescaling) run against a backend and against a plain
//! in-memory model (`BTreeMap`s); the backend's whole observable state must match the model's.
//!
//! Each case owns one operator of 1..=5 subtasks (max parallelism 16 or 128) with one state of
//! every kind (value, list, map, reducing with a sum, aggregating with a mean), two namespaces
//! and 40 keys (three operations in four on keys 0..4, so they meet on the same key). Every
//! record is routed to the subtask owning its key group. After every write the touched key is
//! compared in both namespaces (map entries also by point reads); after every checkpoint step,
//! restore, "clear every key" walk and at the end, every key of every state is compared, and
//! so are the `keys_in` enumerations of every subtask (no duplicates, right key groups).
//!
//! Checkpoints are full or incremental, complete, aborted, or split at the barrier (writes
//! between the synchronous part and the upload belong to the next checkpoint). A case drives
//! them either with every file kept or through a `CheckpointLifecycle` retaining 1..=3
//! checkpoints, whose retention and aborts delete files a backend must no longer need. A
//! restore (fail-over, possibly at another parallelism) starts from the last completed
//! checkpoint, and the model rolls back to its state at that checkpoint; with no completed
//! checkpoint yet the operator starts empty.
//!
//! Environment:
//! - `FLOWSTATE_PROPTEST_CASES`: number of random cases (default 256).
//! - `PROPTEST_RNG_SEED`: replays a run; a failure prints the seed it ran with.
//!
//! Hand-written sequences worth keeping (the cases proptest's file persistence would keep, but
//! a library used from other crates has no source tree to write them into) are in
//! `REGRESSIONS` and run before the random cases.
//!
//! Layout: `ops` (the operations and a case), `regressions` (the hand-written cases),
//! `states` (the states under test and their handles), `expected` (the `BTreeMap` model),
//! `run` (one case against a backend and the model), `generate` (the proptest strategies);
//! this module runs them all.

use std::any::Any;
use std::hash::{BuildHasher, RandomState};
use std::panic::{self, AssertUnwindSafe};

use flowstate_api::StateBackendFactory;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

mod expected;
mod generate;
mod ops;
mod regressions;
mod run;
mod states;
#[cfg(test)]
mod tests;

pub use ops::{Case, Coordinator, Elements, Mergeable, Op, StateSel};

use generate::case_strategy;
use regressions::REGRESSIONS;
use run::run_case;

/// Environment variable with the number of random cases to run.
pub const CASES_ENV: &str = "FLOWSTATE_PROPTEST_CASES";
/// Number of random cases when [`CASES_ENV`] is not set.
pub const DEFAULT_CASES: u32 = 256;

/// Keys are `0..KEYS`: few enough that operations collide on them.
const KEYS: u32 = 40;
/// Keys `0..HOT_KEYS` get most operations.
const HOT_KEYS: u32 = 4;
/// Namespaces are `0..NAMESPACES`.
const NAMESPACES: u8 = 2;
/// Map user keys are `0..USER_KEYS`.
const USER_KEYS: u8 = 6;
/// Longest generated sequence: keeps a case cheap on disk-backed backends in debug builds.
const MAX_OPS: usize = 40;
/// Most restores in one case (each one rebuilds every subtask).
const MAX_RESTORES: usize = 3;
/// Most elements in one list operation.
const MAX_ELEMENTS: usize = 3;
/// Shrinking stops after this many attempts: a disk-backed case takes tens of milliseconds.
const MAX_SHRINK_ITERS: u32 = 4096;

type Namespace = u8;

fn panic_message(payload: &Box<dyn Any + Send>) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}

fn cases_from_env() -> u32 {
    match std::env::var(CASES_ENV) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{CASES_ENV} must be a positive integer, found {text:?}"),
        },
        Err(_) => DEFAULT_CASES,
    }
}

/// Runs the hand-written `REGRESSIONS`, then [`CASES_ENV`] random cases (default
/// [`DEFAULT_CASES`]); panics with the minimal failing sequence (after shrinking) and the seed
/// to replay it.
pub fn random_operations_match_model<F: StateBackendFactory>(factory: &F) {
    // Each regression runs under both coordinators; the tightest retention deletes the most.
    let coordinators = [
        Coordinator::KeepEverything,
        Coordinator::Lifecycle { retained: 1 },
    ];
    for r in REGRESSIONS {
        for coordinator in coordinators {
            let case = Case {
                max_parallelism: r.max_parallelism,
                parallelism: r.parallelism,
                coordinator,
                ops: r.ops.to_vec(),
            };
            // A backend panic is reported like a mismatch: with the sequence that caused it.
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_case(factory, &case)))
                .unwrap_or_else(|payload| Err(format!("panicked: {}", panic_message(&payload))));
            if let Err(reason) = outcome {
                panic!(
                    "{} backend fails the regression case '{}': {reason}\n{case:?}",
                    factory.name(),
                    r.name
                );
            }
        }
    }

    // Regressions live in REGRESSIONS: no file next to a source tree this library lacks.
    let mut config = Config {
        cases: cases_from_env(),
        failure_persistence: None,
        max_shrink_iters: MAX_SHRINK_ITERS,
        ..Config::default()
    };
    if config.rng_seed == RngSeed::Random {
        // Chosen here rather than by proptest so a failure can print it for replay.
        let seed = RandomState::new().hash_one(std::time::SystemTime::now());
        config.rng_seed = RngSeed::Fixed(seed);
    }
    let seed = config.rng_seed;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case_strategy(), |case| {
        run_case(factory, &case).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            let seed = match seed {
                RngSeed::Fixed(s) => format!("PROPTEST_RNG_SEED={s}"),
                RngSeed::Random => "a random seed".to_string(),
            };
            panic!(
                "{} backend disagrees with the model: {reason}\nminimal failing case (found with {seed}):\n{case:?}",
                factory.name()
            );
        }
        Err(TestError::Abort(reason)) => {
            panic!("the model-based test gave up: {reason}")
        }
    }
}
