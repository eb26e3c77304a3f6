//! The conformance suite, run against the reference backend on `BTreeMap`.

flowstate_conformance::conformance_tests!(
    flowstate_conformance::reference::ReferenceBackendFactory::new()
);
