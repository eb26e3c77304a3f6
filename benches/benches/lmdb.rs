//! Issue 5: the LMDB backend's value get / update / add-new-key on preloaded `u64` keys,
//! beside raw `heed` doing the same with the same key bytes, value bytes, environment options
//! and write-transaction size.
//!
//! `cargo bench -p flowstate-benches --bench lmdb` (500,000 keys; `FLOWSTATE_BENCH_KEYS`
//! overrides). Groups `lmdb/value_get`, `lmdb/value_update`, `lmdb/value_add_new_key`, each
//! with `flowstate_lmdb_typed`, `flowstate_lmdb_bytes` and `raw_heed`.
//!
//! Issue 15 adds the other workload families, each on a backend and a raw engine of its own:
//! groups `lmdb/list_append`, `lmdb/list_get`, `lmdb/map_get`, `lmdb/map_put`,
//! `lmdb/map_entries` and `lmdb/reducing_add`, with the same three functions (the raw
//! baselines are described in `flowstate_benches::lmdb_backend`).

mod common;

use common::{family_groups, must, sizes, value_groups};
use criterion::{criterion_group, criterion_main, Criterion};
use flowstate_benches::lmdb_backend::{self, RawHeed};
use flowstate_benches::store::Family;
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
    drop((ours, raw));
    for family in [Family::List, Family::Map, Family::Reducing] {
        family_groups(
            c,
            "lmdb",
            &workload,
            family,
            || lmdb_backend::open(workload.max_parallelism()),
            |family| lmdb_backend::raw(family, &workload),
        );
    }
}

criterion_group!(benches, lmdb);
criterion_main!(benches);
