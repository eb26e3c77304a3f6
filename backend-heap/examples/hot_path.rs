//! Temporary measurement: heap backend value get/update/insert vs a raw DashMap, interleaved.
use std::hint::black_box;
use std::time::Instant;

use dashmap::DashMap;
use flowstate_api::{KeyContext, KeyedStateBackend, MaxParallelism, StateKind, StateMetadata};
use flowstate_heap::{HeapBackend, HeapConfig};

static N_CELL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
#[allow(non_snake_case)]
fn N() -> usize { *N_CELL.get_or_init(|| std::env::var("N").ok().and_then(|n| n.parse().ok()).unwrap_or(300_000)) }
const ROUNDS: usize = 9;

fn time(op: impl FnOnce()) -> f64 {
    let t = Instant::now();
    op();
    t.elapsed().as_nanos() as f64 / N() as f64
}

fn main() {
    let max = MaxParallelism::new(128).unwrap();
    let keys: Vec<KeyContext> = (0..2 * N() as u64)
        .map(|i| KeyContext::new(i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes().to_vec(), max))
        .collect();
    let order: Vec<usize> = (0..N()).map(|i| (i * 7919) % N()).collect();
    let b = HeapBackend::new(max, max.full_range(), HeapConfig::default()).unwrap();
    let s = b
        .register_state(&StateMetadata { name: "v".into(), kind: StateKind::Value, namespace_codec: "n".into(), value_codec: "v".into(), user_key_codec: None })
        .unwrap();
    let raw: DashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState> = DashMap::with_hasher(Default::default());
    for k in &keys[..N()] {
        b.put(s, k, b"", &1u64.to_le_bytes()).unwrap();
        raw.insert(k.key().to_vec(), 1u64.to_le_bytes().to_vec());
    }
    let per_kg: Vec<DashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState>> = (0..128)
        .map(|_| DashMap::with_hasher_and_shard_amount(Default::default(), 2))
        .collect();
    if std::env::var("ONLY").as_deref() == Ok("perkg-get") {
        for k in &keys[..N()] {
            per_kg[k.key_group().get() as usize].insert(k.key().to_vec(), 1u64.to_le_bytes().to_vec());
        }
        let rounds: u64 = std::env::var("R").ok().and_then(|r| r.parse().ok()).unwrap_or(30);
        for _ in 0..rounds {
            for &i in &order {
                let k = &keys[i];
                black_box(per_kg[k.key_group().get() as usize].get(k.key()).map(|v| v.to_vec()));
            }
        }
        return;
    }
    if std::env::var("ONLY").as_deref() == Ok("perkg-update") {
        for k in &keys[..N()] {
            per_kg[k.key_group().get() as usize].insert(k.key().to_vec(), 1u64.to_le_bytes().to_vec());
        }
        let t = std::time::Instant::now();
        for v in 0..30u64 {
            for &i in &order {
                let k = &keys[i];
                let mut slot = per_kg[k.key_group().get() as usize].get_mut(k.key()).unwrap();
                slot.clear();
                slot.extend_from_slice(&v.to_le_bytes());
            }
        }
        println!("per-kg raw update {:.1} ns", t.elapsed().as_nanos() as f64 / (30 * N()) as f64);
        return;
    }
    if let Ok(mode) = std::env::var("ONLY") {
        let t = std::time::Instant::now();
        let mut v = 0u64;
        for _ in 0..std::env::var("R").ok().and_then(|r| r.parse().ok()).unwrap_or(30) {
            v += 1;
            match mode.as_str() {
                "heap-update" => for &i in &order { b.put(s, &keys[i], b"", &v.to_le_bytes()).unwrap(); },
                "heap-get" => for &i in &order { black_box(b.get(s, &keys[i], b"").unwrap()); },
                "raw-get" => for &i in &order { black_box(raw.get(keys[i].key()).map(|v| v.to_vec())); },
                _ => for &i in &order { let mut slot = raw.get_mut(keys[i].key()).unwrap(); slot.clear(); slot.extend_from_slice(&v.to_le_bytes()); },
            }
        }
        println!("{mode} {:.1} ns ns", t.elapsed().as_nanos() as f64 / (30 * N()) as f64);
        return;
    }
    for k in &keys[..N()] {
        per_kg[k.key_group().get() as usize].insert(k.key().to_vec(), 1u64.to_le_bytes().to_vec());
    }
    let mut pk = [f64::MAX; 2];
    let mut best = [f64::MAX; 8];
    let mut v = 0u64;
    for round in 0..ROUNDS {
        let r = [
            { let raw_t = time(|| for &i in &order { black_box(raw.get(keys[i].key()).map(|v| v.to_vec())); });
              best[1] = best[1].min(raw_t);
              time(|| for &i in &order { black_box(b.get(s, &keys[i], b"").unwrap()); }) },
            best[1],
            time(|| { v += 1; for &i in &order { b.put(s, &keys[i], b"", &v.to_le_bytes()).unwrap(); } }),
            time(|| { v += 1; for &i in &order {
                let mut slot = raw.get_mut(keys[i].key()).unwrap();
                slot.clear();
                slot.extend_from_slice(&v.to_le_bytes());
            } }),
            time(|| for k in &keys[N()..] { b.put(s, k, b"", &1u64.to_le_bytes()).unwrap(); }),
            time(|| for k in &keys[N()..] {
                if let Some(mut slot) = raw.get_mut(k.key()) { slot.clear(); slot.extend_from_slice(&1u64.to_le_bytes()); }
                else { raw.insert(k.key().to_vec(), 1u64.to_le_bytes().to_vec()); }
            }),
            // The first write of each entry while a snapshot is live (copy-on-write).
            {
                let view = b.snapshot_view();
                v += 1;
                let t = time(|| for &i in &order { b.put(s, &keys[i], b"", &v.to_le_bytes()).unwrap(); });
                let sweep = time(|| drop(view));
                best[7] = best[7].min(sweep);
                t
            },
            0.0,
        ];
        pk[0] = pk[0].min(time(|| for &i in &order { let k = &keys[i]; black_box(per_kg[k.key_group().get() as usize].get(k.key()).map(|v| v.to_vec())); }));
        pk[1] = pk[1].min(time(|| for &i in &order { let k = &keys[i]; let mut slot = per_kg[k.key_group().get() as usize].get_mut(k.key()).unwrap(); slot.clear(); slot.extend_from_slice(&v.to_le_bytes()); }));
        for (i, x) in r.iter().enumerate().take(7) {
            best[i] = best[i].min(*x);
        }
        // Remove the fresh keys again (not timed).
        for k in &keys[N()..] {
            b.remove(s, k, b"").unwrap();
            raw.remove(k.key());
        }
        if round == 0 { continue; }
    }
    println!("ns/op, best of {ROUNDS}, {} preloaded keys (8-byte keys, 8-byte values)", N());
    println!("get:    heap {:6.1}  raw {:6.1}  ratio {:.2}", best[0], best[1], best[0] / best[1]);
    println!("update: heap {:6.1}  raw {:6.1}  ratio {:.2}", best[2], best[3], best[2] / best[3]);
    println!("insert: heap {:6.1}  raw {:6.1}  ratio {:.2}", best[4], best[5], best[4] / best[5]);
    println!("raw dashmap per key group (same partitioning as the backend): get {:6.1} update {:6.1}", pk[0], pk[1]);
    println!("update, first write after a snapshot while it is live: heap {:6.1}", best[6]);
    println!("sweep on release of that snapshot: {:6.1} per entry", best[7]);
}
