//! Unit tests of the model and the generator (no backend involved).

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use super::expected::Model;
use super::generate::case_strategy;
use super::ops::Op::*;
use super::ops::{Elements, Mergeable, StateSel};
use super::states::Mean;
use super::{MAX_OPS, MAX_RESTORES};

#[test]
fn model_follows_flink_semantics() {
    let mut m = Model::default();
    m.apply(&ListUpdate {
        key: 1,
        ns: 0,
        values: Elements::of(&[]),
    });
    assert!(m.lists.is_empty());
    m.apply(&ListAddAll {
        key: 1,
        ns: 1,
        values: Elements::of(&[1, 2]),
    });
    m.apply(&ListAdd {
        key: 1,
        ns: 0,
        value: 0,
    });
    m.apply(&MergeNamespaces {
        state: Mergeable::List,
        key: 1,
        target: 0,
        target_in_sources: true,
    });
    assert_eq!(m.lists.get(&(1, 0)), Some(&vec![0, 1, 2]));
    assert!(!m.lists.contains_key(&(1, 1)));
    m.apply(&MapPut {
        key: 2,
        ns: 0,
        user_key: 1,
        value: 5,
    });
    m.apply(&MapRemove {
        key: 2,
        ns: 0,
        user_key: 1,
    });
    assert!(m.keys(StateSel::Map, 0).is_empty());
    m.apply(&MeanAdd {
        key: 3,
        ns: 1,
        value: 4,
    });
    m.apply(&MeanAdd {
        key: 3,
        ns: 0,
        value: 1,
    });
    m.apply(&MergeNamespaces {
        state: Mergeable::Mean,
        key: 3,
        target: 0,
        target_in_sources: false,
    });
    assert_eq!(m.means.get(&(3, 0)), Some(&Mean { sum: 5, count: 2 }));
    m.apply(&ClearEveryKey {
        state: StateSel::Mean,
        ns: 0,
    });
    assert!(m.means.is_empty());
}

#[test]
fn generated_cases_respect_the_limits() {
    let mut runner = TestRunner::deterministic();
    let strategy = case_strategy();
    for _ in 0..200 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        assert!(case.ops.len() <= MAX_OPS);
        assert!(
            case.ops
                .iter()
                .filter(|o| matches!(o, Restore { .. }))
                .count()
                <= MAX_RESTORES
        );
    }
}

#[test]
fn elements_print_as_a_list() {
    assert_eq!(format!("{:?}", Elements::of(&[3, 4])), "[3, 4]");
}
