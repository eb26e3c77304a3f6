//! Issue 4: the RocksDB backend's value get / update / add-new-key on preloaded `u64` keys,
//! beside raw `rocksdb` doing the same with the same key bytes, value bytes and options; and
//! rescale restores (1→2, 2→1) from native incremental checkpoints against a naive
//! scan-and-filter restore.
//!
//! `cargo bench -p flowstate-benches --bench rocksdb` (500,000 keys, 1,000,000 rescale keys;
//! `FLOWSTATE_BENCH_KEYS` and `FLOWSTATE_BENCH_RESCALE_KEYS` override). Groups
//! `rocksdb/value_get`, `rocksdb/value_update`, `rocksdb/value_add_new_key` (functions
//! `flowstate_rocksdb_typed`, `flowstate_rocksdb_bytes`, `raw_rocksdb`), and
//! `rocksdb/rescale_1_to_2`, `rocksdb/rescale_2_to_1` (functions `flowstate_native`,
//! `naive_scan`; one iteration restores every new subtask; throughput counts keys).

mod common;

use std::cell::OnceCell;
use std::time::{Duration, Instant};

use common::{must, sizes, slow_group, value_groups};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowstate_benches::rescale::{Rescale, RescaleFixture};
use flowstate_benches::rocksdb_backend::{self, RawRocksDb};
use flowstate_benches::value::Workload;

fn value_ops(c: &mut Criterion) {
    let sizes = sizes();
    let workload = must(
        "building the workload",
        Workload::new(sizes.preload, sizes.fresh),
    );
    let mut ours = must(
        "preloading the RocksDB backend",
        rocksdb_backend::flowstate(workload.clone()),
    );
    let mut raw = must("preloading raw RocksDB", RawRocksDb::preload(&workload));
    value_groups(c, "rocksdb", &mut ours, &mut raw);
}

fn rescale(c: &mut Criterion) {
    let keys = sizes().rescale;
    // Built on first use, so a filtered run that skips these groups does not pay for it;
    // checked once (every key restored exactly once, in its owner, with its value).
    let fixture = OnceCell::new();
    let fixture = || {
        fixture.get_or_init(|| {
            let built = must(
                "checkpointing the rescale keys",
                RescaleFixture::build(keys),
            );
            must("checking both restores", built.verify());
            built
        })
    };
    for rescale in Rescale::ALL {
        let mut group = c.benchmark_group(format!("rocksdb/rescale_{}", rescale.label()));
        slow_group(&mut group);
        group.throughput(Throughput::Elements(keys as u64));
        group.bench_function("flowstate_native", |b| {
            b.iter_custom(|iters| {
                let fixture = fixture();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let restored = must("native restore", fixture.restore_native(rescale));
                    total += start.elapsed();
                    drop(restored);
                }
                total
            })
        });
        group.bench_function("naive_scan", |b| {
            b.iter_custom(|iters| {
                let fixture = fixture();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let restored = must("naive restore", fixture.restore_naive(rescale));
                    total += start.elapsed();
                    drop(restored);
                }
                total
            })
        });
        group.finish();
    }
}

criterion_group!(benches, value_ops, rescale);
criterion_main!(benches);
