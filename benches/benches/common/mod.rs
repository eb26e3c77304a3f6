//! Criterion glue shared by the bench binaries (each uses a part of it).
#![allow(dead_code)]

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use flowstate_benches::settings::Sizes;
use flowstate_benches::store::{flowstate_layers, Family, Store};
use flowstate_benches::subject::BackendUnderTest;
use flowstate_benches::value::{
    check_preloaded, time_gets, time_inserts, time_updates, FlowstateValue, Layer, ValueStore,
    Workload,
};
use flowstate_benches::Result;

/// Unwraps a workload result; a benchmark that cannot set up or whose check fails stops with
/// the reason.
pub fn must<T>(what: &str, result: Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Sizes of this run (full under `cargo bench`, small under `cargo test --benches`).
pub fn sizes() -> Sizes {
    must("reading the benchmark sizes", Sizes::for_criterion())
}

/// A value operation of the workload.
#[derive(Copy, Clone, Debug)]
pub enum ValueOp {
    Get,
    Update,
    Insert,
}

impl ValueOp {
    pub const ALL: [ValueOp; 3] = [ValueOp::Get, ValueOp::Update, ValueOp::Insert];

    pub fn name(self) -> &'static str {
        match self {
            ValueOp::Get => "value_get",
            ValueOp::Update => "value_update",
            ValueOp::Insert => "value_add_new_key",
        }
    }
}

/// Measures `op` on `store` as one function of `group` (one element per iteration).
pub fn bench_value_op(
    group: &mut BenchmarkGroup<'_, WallTime>,
    store: &mut dyn ValueStore,
    workload: &Workload,
    op: ValueOp,
) {
    let name = store.name().to_string();
    let mut walk = workload.walk();
    let whole = workload.whole();
    let fresh = whole.fresh();
    group.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            let timed = match op {
                ValueOp::Get => time_gets(store, &mut walk, iters),
                ValueOp::Update => time_updates(store, &mut walk, iters),
                ValueOp::Insert => time_inserts(store, iters, fresh),
            };
            must(&format!("{name} {}", op.name()), timed)
        })
    });
}

/// Groups `<backend>/value_get`, `<backend>/value_update` and `<backend>/value_add_new_key`,
/// each with our typed layer, our byte layer and the raw engine side by side.
pub fn value_groups(
    c: &mut Criterion,
    backend: &str,
    ours: &mut FlowstateValue,
    raw: &mut dyn ValueStore,
) {
    let workload = ours.workload().clone();
    must("checking our preload", check_preloaded(ours, &workload));
    must("checking the raw preload", check_preloaded(raw, &workload));
    for op in ValueOp::ALL {
        let mut group = c.benchmark_group(format!("{backend}/{}", op.name()));
        group.throughput(Throughput::Elements(1));
        for layer in [Layer::Typed, Layer::Bytes] {
            ours.set_layer(layer);
            bench_value_op(&mut group, ours, &workload, op);
        }
        ours.set_layer(Layer::Typed);
        bench_value_op(&mut group, raw, &workload, op);
        group.finish();
    }
    // Updates and insert/remove rounds must have left every preloaded key in place.
    must(
        "checking our keys after the run",
        check_preloaded(ours, &workload),
    );
    must(
        "checking the raw keys after the run",
        check_preloaded(raw, &workload),
    );
}

/// Groups `<backend>/<op>` for every operation of `family` (`list_append`, `map_get`, ...),
/// each with our typed layer, our byte layer and the raw engine (`raw(family)`) side by side,
/// on a fresh backend from `open`. Every store is checked before and after.
pub fn family_groups(
    c: &mut Criterion,
    backend: &str,
    workload: &std::sync::Arc<Workload>,
    family: Family,
    open: impl FnOnce() -> Result<BackendUnderTest>,
    raw: impl FnOnce(Family) -> Result<Store>,
) {
    let what = |s: &str| format!("{s} for the {} workload", family.name());
    let under_test = must(&what("opening the backend"), open());
    let [typed, bytes] = must(
        &what("preloading the backend"),
        flowstate_layers(family, under_test, workload.clone()),
    );
    let raw = must(&what("preloading the raw engine"), raw(family));
    let mut stores = [typed, bytes, raw];
    let whole = workload.whole();
    for store in &mut stores {
        must(&what("checking the preload"), store.check(workload));
    }
    for &op in family.ops() {
        let mut group = c.benchmark_group(format!("{backend}/{}", op.name()));
        group.throughput(Throughput::Elements(1));
        for store in &mut stores {
            let name = store.name().to_string();
            let mut walk = workload.walk();
            group.bench_function(&name, |b| {
                b.iter_custom(|iters| {
                    let timed = store.time_walk(op, &mut walk, whole.fresh(), iters);
                    must(&format!("{name} {}", op.name()), timed)
                })
            });
        }
        group.finish();
    }
    for store in &mut stores {
        must(
            &what("checking the state after the run"),
            store.check(workload),
        );
    }
}

/// Settings of groups whose one iteration takes seconds (restores).
pub fn slow_group(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(criterion::SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
}
