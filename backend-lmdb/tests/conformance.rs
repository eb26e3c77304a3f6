//! The shared conformance suite, run against the LMDB backend (each case gets a factory
//! whose backends live under a fresh temporary directory).

use flowstate_lmdb::{LmdbBackendFactory, LmdbConfig};

fn factory() -> LmdbBackendFactory {
    LmdbBackendFactory::temporary(LmdbConfig::default()).expect("a temporary directory")
}

flowstate_conformance::conformance_tests!(super::factory());
