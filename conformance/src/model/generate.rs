//! Generation: the proptest strategies of operations and whole cases. Writes come first
//! among the alternatives and operator-wide steps last, so shrinking moves towards writes.

use flowstate_api::SnapshotKind::{self, Full, Incremental};
use proptest::prelude::*;

use super::ops::Op::*;
use super::ops::{Case, Coordinator, Elements, Mergeable, Op, StateSel};
use super::{HOT_KEYS, KEYS, MAX_ELEMENTS, MAX_OPS, MAX_RESTORES, NAMESPACES, USER_KEYS};

fn kind_strategy() -> impl Strategy<Value = SnapshotKind> {
    prop_oneof![Just(Full), Just(Incremental)]
}

fn state_strategy() -> impl Strategy<Value = StateSel> {
    prop::sample::select(StateSel::ALL.to_vec())
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // Most operations hit a few hot keys so that they meet on the same (key, namespace); the
    // rest spread over every key (and so over many key groups and subtasks).
    let key = || prop_oneof![3 => 0..HOT_KEYS, 1 => 0..KEYS];
    let ns = || 0..NAMESPACES;
    let elements =
        || prop::collection::vec(0..100u32, 0..=MAX_ELEMENTS).prop_map(|v| Elements::of(&v));
    let mergeable = prop_oneof![
        Just(Mergeable::List),
        Just(Mergeable::Sum),
        Just(Mergeable::Mean)
    ];
    // Writes first, operator-wide steps last: shrinking moves towards earlier alternatives.
    prop_oneof![
        8 => (key(), ns(), 0..1000u64).prop_map(|(key, ns, value)| ValuePut { key, ns, value }),
        8 => (key(), ns(), 0..100u32).prop_map(|(key, ns, value)| ListAdd { key, ns, value }),
        4 => (key(), ns(), elements()).prop_map(|(key, ns, values)| ListAddAll { key, ns, values }),
        4 => (key(), ns(), elements()).prop_map(|(key, ns, values)| ListUpdate { key, ns, values }),
        10 => (key(), ns(), 0..USER_KEYS, 0..100u32).prop_map(|(key, ns, user_key, value)| {
            MapPut { key, ns, user_key, value }
        }),
        6 => (key(), ns(), 0..USER_KEYS).prop_map(|(key, ns, user_key)| MapRemove { key, ns, user_key }),
        8 => (key(), ns(), -50..50i64).prop_map(|(key, ns, value)| SumAdd { key, ns, value }),
        8 => (key(), ns(), 0..100u32).prop_map(|(key, ns, value)| MeanAdd { key, ns, value }),
        8 => (state_strategy(), key(), ns()).prop_map(|(state, key, ns)| Clear { state, key, ns }),
        6 => (mergeable, key(), ns(), any::<bool>()).prop_map(
            |(state, key, target, target_in_sources)| MergeNamespaces {
                state,
                key,
                target,
                target_in_sources,
            }
        ),
        1 => (state_strategy(), ns()).prop_map(|(state, ns)| ClearEveryKey { state, ns }),
        5 => kind_strategy().prop_map(Checkpoint),
        2 => kind_strategy().prop_map(AbortedCheckpoint),
        3 => kind_strategy().prop_map(CaptureCheckpoint),
        3 => Just(CompleteCaptured),
        4 => (1..=5u32).prop_map(|parallelism| Restore { parallelism }),
    ]
}

pub(super) fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(16u32), Just(128u32)],
        1..=5u32,
        prop_oneof![
            Just(Coordinator::KeepEverything),
            (1..=3usize).prop_map(|retained| Coordinator::Lifecycle { retained }),
        ],
        prop::collection::vec(op_strategy(), 0..=MAX_OPS),
    )
        .prop_filter(
            "at most MAX_RESTORES restores per case",
            |(_, _, _, ops)| {
                ops.iter().filter(|op| matches!(op, Restore { .. })).count() <= MAX_RESTORES
            },
        )
        .prop_map(|(max_parallelism, parallelism, coordinator, ops)| Case {
            max_parallelism,
            parallelism,
            coordinator,
            ops,
        })
}
