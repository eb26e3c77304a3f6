//! Reducing and aggregating state: folds on `add`, restarted by `clear`.

use flowstate_api::typed::{AggregatingStateDescriptor, ReducingStateDescriptor};
use flowstate_api::StateBackendFactory;

use super::{ids, set};
use crate::dataset::Mean;
use crate::fixtures::{full_backend, key, shared};

/// Reducing state: `add` folds into the stored value as `reduce(stored, new)`.
pub fn reducing_state<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let sum = ReducingStateDescriptor::<i64>::new("sum", |a, b| a + b)
        .bind(shared(&backend))
        .unwrap();
    let k = key(4);
    assert_eq!(sum.get(&k).unwrap(), None);
    sum.add(&k, 5).unwrap();
    assert_eq!(
        sum.get(&k).unwrap(),
        Some(5),
        "the first add stores the value as is"
    );
    sum.add(&k, -2).unwrap();
    sum.add(&k, 10).unwrap();
    assert_eq!(sum.get(&k).unwrap(), Some(13), "later adds fold");
    sum.clear(&k).unwrap();
    assert_eq!(sum.get(&k).unwrap(), None);
    sum.add(&k, 1).unwrap();
    assert_eq!(
        sum.get(&k).unwrap(),
        Some(1),
        "after clear the fold restarts"
    );

    // Concatenation is associative but not commutative: the fold order is visible.
    let concat = ReducingStateDescriptor::<String>::new("concat", |a, b| a + &b)
        .bind(shared(&backend))
        .unwrap();
    for part in ["x", "y", "z"] {
        concat.add(&k, part.to_string()).unwrap();
    }
    assert_eq!(concat.get(&k).unwrap().as_deref(), Some("xyz"));
    assert_eq!(ids(concat.keys()), set([4]));
}

/// Aggregating state: `add` folds inputs into the accumulator, `get` reads the result.
pub fn aggregating_state<F: StateBackendFactory>(factory: &F) {
    let backend = full_backend(factory);
    let mean = AggregatingStateDescriptor::<i64, (i64, u64), i64>::new("mean", Mean)
        .bind(shared(&backend))
        .unwrap();
    let k = key(5);
    assert_eq!(mean.get(&k).unwrap(), None, "nothing added reads as absent");
    assert_eq!(
        mean.accumulator_in(&k, &flowstate_api::VoidNamespace)
            .unwrap(),
        None
    );
    for v in [10, 20, 60] {
        mean.add(&k, v).unwrap();
    }
    assert_eq!(mean.get(&k).unwrap(), Some(30));
    assert_eq!(
        mean.accumulator_in(&k, &flowstate_api::VoidNamespace)
            .unwrap(),
        Some((90, 3))
    );
    assert_eq!(ids(mean.keys()), set([5]));
    mean.clear(&k).unwrap();
    assert_eq!(mean.get(&k).unwrap(), None);
    mean.add(&k, 7).unwrap();
    assert_eq!(
        mean.get(&k).unwrap(),
        Some(7),
        "after clear a new accumulator starts"
    );
}
