//! The three backends side by side on one workload, through the typed API: value get /
//! update / add-new-key, list append, map get / put, on preloaded `u64` keys.
//!
//! `cargo bench -p flowstate-benches --bench compare` (500,000 keys; `FLOWSTATE_BENCH_KEYS`
//! overrides). Groups `compare/<op>`, each with functions `heap`, `rocksdb` and `lmdb`.

mod common;

use common::{must, sizes, ValueOp};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowstate_benches::compare::{all_backends, time_list_appends, time_map_gets, time_map_puts};
use flowstate_benches::value::{check_preloaded, time_gets, time_inserts, time_updates, Workload};

#[derive(Copy, Clone, Debug)]
enum Op {
    Value(ValueOp),
    ListAppend,
    MapGet,
    MapPut,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Value(op) => op.name(),
            Op::ListAppend => "list_append",
            Op::MapGet => "map_get",
            Op::MapPut => "map_put",
        }
    }
}

fn compare(c: &mut Criterion) {
    let sizes = sizes();
    let workload = must(
        "building the workload",
        Workload::new(sizes.preload, sizes.fresh),
    );
    let whole = workload.whole();
    let mut subjects = must("preloading the backends", all_backends(&workload));
    for subject in &mut subjects {
        must("checking the preload", subject.check());
        must(
            "checking the preload",
            check_preloaded(subject.value(), &workload),
        );
    }
    let ops = [
        Op::Value(ValueOp::Get),
        Op::Value(ValueOp::Update),
        Op::Value(ValueOp::Insert),
        Op::ListAppend,
        Op::MapGet,
        Op::MapPut,
    ];
    for op in ops {
        let mut group = c.benchmark_group(format!("compare/{}", op.name()));
        group.throughput(Throughput::Elements(1));
        for subject in &mut subjects {
            let name = subject.name();
            let mut walk = workload.walk();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let timed = match op {
                        Op::Value(ValueOp::Get) => time_gets(subject.value(), &mut walk, iters),
                        Op::Value(ValueOp::Update) => {
                            time_updates(subject.value(), &mut walk, iters)
                        }
                        Op::Value(ValueOp::Insert) => {
                            time_inserts(subject.value(), iters, whole.fresh())
                        }
                        Op::ListAppend => time_list_appends(subject, &mut walk, iters, sizes.fresh),
                        Op::MapGet => time_map_gets(subject, &mut walk, iters),
                        Op::MapPut => time_map_puts(subject, &mut walk, iters),
                    };
                    must(&format!("{name} {}", op.name()), timed)
                })
            });
        }
        group.finish();
    }
    // Lists were reset after every appended chunk, maps only overwritten: the workload is
    // intact.
    for subject in &mut subjects {
        must("checking the state after the run", subject.check());
        must(
            "checking the values after the run",
            check_preloaded(subject.value(), &workload),
        );
    }
}

criterion_group!(benches, compare);
criterion_main!(benches);
