//! The flowstate conformance suite, run against the RocksDB backend. Each case gets a
//! factory with its own temporary base directory; checkpoints of kind `Incremental` take the
//! native (shared SST) path, `Full` the canonical one.

flowstate_conformance::conformance_tests!(flowstate_rocksdb::RocksDbBackendFactory::temporary()
    .expect("a temporary RocksDB base directory"));
