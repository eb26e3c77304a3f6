//! Temporary measurement: heap backend value get/update/insert vs a raw DashMap.
use std::hint::black_box;
use std::time::Instant;

use dashmap::DashMap;
use flowstate_api::{KeyContext, KeyedStateBackend, MaxParallelism, StateKind, StateMetadata};
use flowstate_heap::{HeapBackend, HeapConfig};

const N: usize = 500_000;
const ROUNDS: usize = 5;

fn ns_per(op: impl FnMut()) -> f64 {
    let mut op = op;
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        op();
        best = best.min(t.elapsed().as_nanos() as f64 / N as f64);
    }
    best
}

fn main() {
    let max = MaxParallelism::new(128).unwrap();
    let keys: Vec<KeyContext> = (0..2 * N as u64)
        .map(|i| KeyContext::new(i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes().to_vec(), max))
        .collect();
    let order: Vec<usize> = (0..N).map(|i| (i * 7919) % N).collect();
    for tracking in [true, false] {
        let b = HeapBackend::new(max, max.full_range(), HeapConfig { change_tracking: tracking, ..HeapConfig::default() }).unwrap();
        let s = b
            .register_state(&StateMetadata { name: "v".into(), kind: StateKind::Value, namespace_codec: "n".into(), value_codec: "v".into(), user_key_codec: None })
            .unwrap();
        for k in &keys[..N] {
            b.put(s, k, b"", &1u64.to_le_bytes()).unwrap();
        }
        let get = ns_per(|| {
            for &i in &order {
                black_box(b.get(s, &keys[i], b"").unwrap());
            }
        });
        let mut v = 0u64;
        let update = ns_per(|| {
            v += 1;
            for &i in &order {
                b.put(s, &keys[i], b"", &v.to_le_bytes()).unwrap();
            }
        });
        // First write of every entry after a snapshot while it is live (copy-on-write).
        let mut views = Vec::new();
        let update_pinned = ns_per(|| {
            views.push(b.snapshot_view());
            v += 1;
            for &i in &order {
                b.put(s, &keys[i], b"", &v.to_le_bytes()).unwrap();
            }
        });
        let t = Instant::now();
        drop(views);
        let sweep = t.elapsed().as_nanos() as f64 / (N * ROUNDS) as f64;
        let mut round = 0;
        let insert = ns_per(|| {
            round += 1;
            if round > 1 {
                for k in &keys[N..] {
                    b.remove(s, k, b"").unwrap();
                }
            }
            for k in &keys[N..] {
                b.put(s, k, b"", &1u64.to_le_bytes()).unwrap();
            }
        });
        println!("heap tracking={tracking}: get {get:.1} ns, update {update:.1} ns, update (first after snapshot, pinned) {update_pinned:.1} ns, sweep {sweep:.1} ns/entry, insert {insert:.1} ns");
    }
    let raw: DashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState> = DashMap::with_hasher(Default::default());
    for k in &keys[..N] {
        raw.insert(k.key().to_vec(), 1u64.to_le_bytes().to_vec());
    }
    let get = ns_per(|| {
        for &i in &order {
            black_box(raw.get(keys[i].key()).map(|v| v.to_vec()));
        }
    });
    let mut v = 0u64;
    let update = ns_per(|| {
        v += 1;
        for &i in &order {
            let mut slot = raw.get_mut(keys[i].key()).unwrap();
            slot.clear();
            slot.extend_from_slice(&v.to_le_bytes());
        }
    });
    let mut round = 0;
    let insert = ns_per(|| {
        round += 1;
        if round > 1 {
            for k in &keys[N..] {
                raw.remove(k.key());
            }
        }
        for k in &keys[N..] {
            raw.insert(k.key().to_vec(), 1u64.to_le_bytes().to_vec());
        }
    });
    println!("raw dashmap+foldhash: get {get:.1} ns, update {update:.1} ns, insert {insert:.1} ns");
}
