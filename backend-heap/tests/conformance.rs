//! The whole conformance suite against the heap backend.

flowstate_conformance::conformance_tests!(flowstate_heap::HeapBackendFactory::new());
