//! The flowstate conformance suite, run against the heap backend.

flowstate_conformance::conformance_tests!(flowstate_heap::HeapBackendFactory::new());
