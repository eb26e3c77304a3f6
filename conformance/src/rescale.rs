//! Rescaling: a job with every state kind and several namespaces is checkpointed and restored
//! at another parallelism, again and again. After every restore each key's state must be held
//! by exactly the subtask owning its key group (nothing lost, nothing duplicated), compared
//! with a plain `BTreeMap` model; the rescaled job then writes on and checkpoints again.

use flowstate_api::{
    CheckpointId, CheckpointStorage, MaxParallelism, SnapshotKind, StateBackendFactory,
};

use crate::dataset::{Job, Model};
use crate::fixtures::{parallelism, Rng};
use crate::harness::{checkpoint, create_operator};
use crate::snapshots::restore_job;

const KEY_SPACE: u64 = 700;

/// Runs the job at `chain[0]` subtasks, then rescales it to each following parallelism in
/// turn. Before each rescale it takes two checkpoints with writes between them (so an
/// incremental restore reads a base and a delta); after it, it checks ownership against the
/// model and writes on.
pub fn rescale_chain<F: StateBackendFactory>(
    factory: &F,
    kind: SnapshotKind,
    max: u32,
    chain: &[u32],
) {
    let max = MaxParallelism::new(max).unwrap();
    let storage = CheckpointStorage::in_memory();
    let seed = chain
        .iter()
        .fold(max.get() as u64, |s, p| s * 131 + *p as u64);
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut job = Job::new(create_operator(factory, max, parallelism(chain[0])).unwrap()).unwrap();
    job.run_random(&mut model, &mut rng, 2500, KEY_SPACE);
    let mut next_id = 1u64;
    for pair in chain.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        checkpoint(&job.subtasks, &storage, CheckpointId(next_id), kind).unwrap();
        job.run_random(&mut model, &mut rng, 200, KEY_SPACE);
        let manifest =
            checkpoint(&job.subtasks, &storage, CheckpointId(next_id + 1), kind).unwrap();
        next_id += 2;
        job = restore_job(factory, &storage, &manifest, to);
        let what =
            format!("{kind:?} rescale {from} -> {to} (max parallelism {max}, chain {chain:?})");
        job.assert_matches(&model, &what);
        job.run_random(&mut model, &mut rng, 300, KEY_SPACE);
        job.assert_matches(&model, &format!("{what}, after writing on"));
    }
}

macro_rules! rescale_cases {
    ($($(#[$doc:meta])* $name:ident => ($kind:ident, $max:expr, [$($p:expr),+]);)*) => {
        $(
            $(#[$doc])*
            pub fn $name<F: StateBackendFactory>(factory: &F) {
                rescale_chain(factory, SnapshotKind::$kind, $max, &[$($p),+]);
            }
        )*
    };
}

rescale_cases! {
    /// 4 -> 2 at max parallelism 128, full checkpoints.
    scale_down_4_to_2_full => (Full, 128, [4, 2]);
    /// 4 -> 2 at max parallelism 128, incremental checkpoints.
    scale_down_4_to_2_incremental => (Incremental, 128, [4, 2]);
    /// 2 -> 4 at max parallelism 128, full checkpoints.
    scale_up_2_to_4_full => (Full, 128, [2, 4]);
    /// 2 -> 4 at max parallelism 128, incremental checkpoints.
    scale_up_2_to_4_incremental => (Incremental, 128, [2, 4]);
    /// 2 -> 2 (a plain recovery) at max parallelism 128, full checkpoints.
    unchanged_2_to_2_full => (Full, 128, [2, 2]);
    /// 2 -> 2 at max parallelism 128, incremental checkpoints.
    unchanged_2_to_2_incremental => (Incremental, 128, [2, 2]);
    /// 15 -> 77 at max parallelism 128: uneven ranges, many old subtasks per new one and the
    /// reverse.
    scale_up_15_to_77_full => (Full, 128, [15, 77]);
    /// 15 -> 77, incremental checkpoints.
    scale_up_15_to_77_incremental => (Incremental, 128, [15, 77]);
    /// 77 -> 15 at max parallelism 128, full checkpoints.
    scale_down_77_to_15_full => (Full, 128, [77, 15]);
    /// 77 -> 15, incremental checkpoints.
    scale_down_77_to_15_incremental => (Incremental, 128, [77, 15]);
    /// 1 -> 3 -> 1, full checkpoints.
    chain_1_3_1_full => (Full, 128, [1, 3, 1]);
    /// 1 -> 3 -> 1, incremental checkpoints.
    chain_1_3_1_incremental => (Incremental, 128, [1, 3, 1]);
    /// 1 -> 7 -> 2 -> 1, full checkpoints.
    chain_1_7_2_1_full => (Full, 128, [1, 7, 2, 1]);
    /// 1 -> 7 -> 2 -> 1, incremental checkpoints.
    chain_1_7_2_1_incremental => (Incremental, 128, [1, 7, 2, 1]);
    /// Restore from several old subtasks into one: 4 -> 1, full checkpoints.
    several_into_one_full => (Full, 128, [4, 1]);
    /// 4 -> 1, incremental checkpoints.
    several_into_one_incremental => (Incremental, 128, [4, 1]);
    /// 3 -> 128 -> 2 at max parallelism 128: one key group per subtask in the middle.
    one_key_group_per_subtask => (Incremental, 128, [3, 128, 2]);
    /// 2 -> 3 -> 1 at max parallelism 32768: key groups above 255 (two-byte prefixes in
    /// ordered stores) and almost one key per key group.
    max_parallelism_32768 => (Full, 32768, [2, 3, 1]);
    /// 3 -> 7 -> 1 at max parallelism 10: more subtasks than some ranges can split evenly.
    max_parallelism_10 => (Incremental, 10, [3, 7, 1]);
}
