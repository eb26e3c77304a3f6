//! Issue 2: the heap backend's value get / update / add-new-key on preloaded `u64` keys,
//! beside a raw `DashMap` doing the same with the same key and value bytes.
//!
//! `cargo bench -p flowstate-benches --bench heap` (500,000 keys; `FLOWSTATE_BENCH_KEYS`
//! overrides). Groups `heap/value_get`, `heap/value_update`, `heap/value_add_new_key`, each
//! with `flowstate_heap_typed` (`ValueState<u64>`, what an engine calls),
//! `flowstate_heap_bytes` (`KeyedStateBackend::get/put`) and `raw_dashmap`.
//!
//! Issue 15 adds the other workload families, each on a backend and a raw engine of its own:
//! groups `heap/list_append`, `heap/list_get`, `heap/map_get`, `heap/map_put`,
//! `heap/map_entries` and `heap/reducing_add`, with the same three functions (the raw
//! baselines are described in `flowstate_benches::heap_backend`).

mod common;

use common::{family_groups, must, sizes, value_groups};
use criterion::{criterion_group, criterion_main, Criterion};
use flowstate_benches::heap_backend::{self, RawDashMap};
use flowstate_benches::store::Family;
use flowstate_benches::value::Workload;

fn heap(c: &mut Criterion) {
    let sizes = sizes();
    let workload = must(
        "building the workload",
        Workload::new(sizes.preload, sizes.fresh),
    );
    let mut ours = must(
        "preloading the heap backend",
        heap_backend::flowstate(workload.clone()),
    );
    let mut raw = must("preloading the raw dashmap", RawDashMap::preload(&workload));
    value_groups(c, "heap", &mut ours, &mut raw);
    drop((ours, raw));
    for family in [Family::List, Family::Map, Family::Reducing] {
        family_groups(
            c,
            "heap",
            &workload,
            family,
            || heap_backend::open(workload.max_parallelism()),
            |family| heap_backend::raw(family, &workload),
        );
    }
}

criterion_group!(benches, heap);
criterion_main!(benches);
