//! Issue 5: the LMDB backend's value get / update / add-new-key on preloaded `u64` keys,
//! beside raw `heed` doing the same with the same key bytes, value bytes, environment options
//! and write-transaction size.
//!
//! `cargo bench -p flowstate-benches --bench lmdb` (500,000 keys; `FLOWSTATE_BENCH_KEYS`
//! overrides). Groups `lmdb/value_get`, `lmdb/value_update`, `lmdb/value_add_new_key`, each
//! with `flowstate_lmdb_typed`, `flowstate_lmdb_bytes` and `raw_heed`.

mod common;

use common::{must, sizes, value_groups};
use criterion::{criterion_group, criterion_main, Criterion};
use flowstate_benches::lmdb_backend::{self, RawHeed};
use flowstate_benches::value::Workload;

fn lmdb(c: &mut Criterion) {
    let sizes = sizes();
    let workload = must(
        "building the workload",
        Workload::new(sizes.preload, sizes.fresh),
    );
    let mut ours = must(
        "preloading the LMDB backend",
        lmdb_backend::flowstate(workload.clone()),
    );
    let mut raw = must("preloading raw heed", RawHeed::preload(&workload));
    value_groups(c, "lmdb", &mut ours, &mut raw);
}

criterion_group!(benches, lmdb);
criterion_main!(benches);
