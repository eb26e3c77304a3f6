//! Temporary measurement: heap backend value get/update/insert vs a raw DashMap, interleaved.
use std::hint::black_box;
use std::time::Instant;

use dashmap::DashMap;
use flowstate_api::{KeyContext, KeyedStateBackend, MaxParallelism, StateKind, StateMetadata};
use flowstate_heap::{HeapBackend, HeapConfig};

const N: usize = 300_000;
const ROUNDS: usize = 9;

fn time(op: impl FnOnce()) -> f64 {
    let t = Instant::now();
    op();
    t.elapsed().as_nanos() as f64 / N as f64
}

fn main() {
    let max = MaxParallelism::new(128).unwrap();
    let keys: Vec<KeyContext> = (0..2 * N as u64)
        .map(|i| KeyContext::new(i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes().to_vec(), max))
        .collect();
    let order: Vec<usize> = (0..N).map(|i| (i * 7919) % N).collect();
    let b = HeapBackend::new(max, max.full_range(), HeapConfig::default()).unwrap();
    let s = b
        .register_state(&StateMetadata { name: "v".into(), kind: StateKind::Value, namespace_codec: "n".into(), value_codec: "v".into(), user_key_codec: None })
        .unwrap();
    let raw: DashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState> = DashMap::with_hasher(Default::default());
    for k in &keys[..N] {
        b.put(s, k, b"", &1u64.to_le_bytes()).unwrap();
        raw.insert(k.key().to_vec(), 1u64.to_le_bytes().to_vec());
    }
    if let Ok(mode) = std::env::var("ONLY") {
        let mut v = 0u64;
        for _ in 0..30 {
            v += 1;
            match mode.as_str() {
                "heap-update" => for &i in &order { b.put(s, &keys[i], b"", &v.to_le_bytes()).unwrap(); },
                "heap-get" => for &i in &order { black_box(b.get(s, &keys[i], b"").unwrap()); },
                _ => for &i in &order { let mut slot = raw.get_mut(keys[i].key()).unwrap(); slot.clear(); slot.extend_from_slice(&v.to_le_bytes()); },
            }
        }
        return;
    }
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
            time(|| for k in &keys[N..] { b.put(s, k, b"", &1u64.to_le_bytes()).unwrap(); }),
            time(|| for k in &keys[N..] {
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
        for (i, x) in r.iter().enumerate().take(7) {
            best[i] = best[i].min(*x);
        }
        // Remove the fresh keys again (not timed).
        for k in &keys[N..] {
            b.remove(s, k, b"").unwrap();
            raw.remove(k.key());
        }
        if round == 0 { continue; }
    }
    println!("ns/op, best of {ROUNDS}, {N} preloaded keys (8-byte keys, 8-byte values)");
    println!("get:    heap {:6.1}  raw {:6.1}  ratio {:.2}", best[0], best[1], best[0] / best[1]);
    println!("update: heap {:6.1}  raw {:6.1}  ratio {:.2}", best[2], best[3], best[2] / best[3]);
    println!("insert: heap {:6.1}  raw {:6.1}  ratio {:.2}", best[4], best[5], best[4] / best[5]);
    println!("update, first write after a snapshot while it is live: heap {:6.1}", best[6]);
    println!("sweep on release of that snapshot: {:6.1} per entry", best[7]);
}
