//! Native incremental checkpoints and rescaling restores from them.

mod common;

use std::collections::BTreeSet;

use common::*;
use flowstate_api::{
    CheckpointId, CheckpointStorage, Error, KeyedStateBackend, KeyedStateHandle, SnapshotKind,
    StateBackend, StateBackendFactory,
};
use flowstate_rocksdb::RocksDbBackendFactory;

fn shared_files(h: &KeyedStateHandle) -> BTreeSet<String> {
    h.files()
        .into_iter()
        .filter(|f| f.shared)
        .map(|f| f.path.clone())
        .collect()
}

fn listing(storage: &CheckpointStorage) -> Vec<(String, u64)> {
    block_on(storage.list("")).unwrap()
}

#[test]
fn incremental_checkpoint_after_a_small_change_uploads_little() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let max = max();
    let b = factory.create(max, max.full_range()).unwrap();
    let s = register(&b);
    load(&b, &s, 20_000, 1);

    let first = checkpoint(&b, &storage, 1, 0, SnapshotKind::Incremental);
    let after_first = listing(&storage);
    let first_bytes: u64 = after_first.iter().map(|(_, n)| n).sum();

    // A small change: one key.
    let k = key_of(42);
    b.put(s.value, &k, NAMESPACES[0], b"changed").unwrap();
    let second = checkpoint(&b, &storage, 2, 0, SnapshotKind::Incremental);
    let after_second = listing(&storage);
    let new_files: Vec<_> = after_second
        .iter()
        .filter(|f| !after_first.contains(f))
        .collect();
    let new_bytes: u64 = new_files.iter().map(|(_, n)| n).sum();
    println!(
        "first checkpoint: {} files, {first_bytes} bytes; second after one change: {} new files, {new_bytes} bytes",
        after_first.len(),
        new_files.len()
    );
    let reused = shared_files(&first)
        .intersection(&shared_files(&second))
        .count();
    assert!(
        reused >= 3,
        "the second checkpoint references the first's SSTs"
    );
    assert!(
        new_bytes * 20 < first_bytes,
        "an incremental checkpoint after one change uploads far less ({new_bytes} of {first_bytes} bytes)"
    );
    // Only one new SST (the flushed change), plus the small per-checkpoint files.
    let new_ssts = new_files
        .iter()
        .filter(|(p, _)| p.ends_with(".sst"))
        .count();
    assert_eq!(new_ssts, 1, "{new_files:?}");

    // The second checkpoint restores to its own point in time.
    let r = block_on(factory.restore(max, max.full_range(), &storage, &[second])).unwrap();
    let rs = register(&r);
    assert_eq!(
        r.get(rs.value, &k, NAMESPACES[0]).unwrap(),
        Some(b"changed".to_vec())
    );
    r.put(rs.value, &k, NAMESPACES[0], &value_of(42, NAMESPACES[0], 1))
        .unwrap();
    verify(&r, &rs, 20_000, 1);

    // A full (canonical) checkpoint of the same state, for comparison.
    let full = checkpoint(&b, &storage, 3, 0, SnapshotKind::Full);
    println!(
        "full canonical checkpoint of the same state: {} bytes",
        full.total_size()
    );
    assert!(
        new_bytes * 20 < full.total_size(),
        "the incremental upload ({new_bytes} bytes) is far below a full one ({} bytes)",
        full.total_size()
    );
}

#[test]
fn aborted_and_pending_checkpoints_never_become_bases() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let max = max();
    let b = factory.create(max, max.full_range()).unwrap();
    let s = register(&b);
    load(&b, &s, 2000, 1);
    let first = checkpoint(&b, &storage, 1, 0, SnapshotKind::Incremental);

    // Checkpoint 2 uploads, then is aborted; the coordinator deletes what only it used.
    load(&b, &s, 2000, 2);
    let job = b
        .snapshot(&flowstate_api::SnapshotRequest {
            checkpoint_id: CheckpointId(2),
            subtask_index: 0,
            kind: SnapshotKind::Incremental,
        })
        .unwrap();
    let aborted = block_on(job.run(storage.clone())).unwrap();
    b.notify_checkpoint_aborted(CheckpointId(2)).unwrap();
    let only_aborted: Vec<_> = shared_files(&aborted)
        .difference(&shared_files(&first))
        .cloned()
        .collect();
    assert!(!only_aborted.is_empty());
    for path in &only_aborted {
        block_on(storage.delete(path)).unwrap();
    }

    let third = checkpoint(&b, &storage, 3, 0, SnapshotKind::Incremental);
    for path in &only_aborted {
        assert!(
            !shared_files(&third).contains(path),
            "checkpoint 3 reuses {path}, uploaded only by aborted checkpoint 2"
        );
    }
    let r = block_on(factory.restore(max, max.full_range(), &storage, &[third])).unwrap();
    verify(&r, &register(&r), 2000, 2);

    // A completed full checkpoint empties the base: its predecessor may be gone.
    checkpoint(&b, &storage, 4, 0, SnapshotKind::Full);
    let fifth = checkpoint(&b, &storage, 5, 0, SnapshotKind::Incremental);
    assert!(shared_files(&fifth)
        .intersection(&shared_files(&first))
        .next()
        .is_none());
}

#[test]
fn native_rescale_1_to_2() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let handles = loaded_operator(&factory, &storage, 1, 3000, SnapshotKind::Incremental);
    assert!(matches!(handles[0], KeyedStateHandle::Native { .. }));
    restore_and_verify(&factory, &storage, &handles, 2, 3000);
}

#[test]
fn native_rescale_2_to_1() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let handles = loaded_operator(&factory, &storage, 2, 3000, SnapshotKind::Incremental);
    restore_and_verify(&factory, &storage, &handles, 1, 3000);
}

/// Scaling in, each old subtask's key groups move whole into one new subtask: their SST
/// files are ingested as they are. Two rounds of writes before the checkpoint leave two
/// overlapping level-0 files per column family, so the ingestion order decides which round
/// wins; writes after the restore must shadow the ingested files (sequence numbers).
#[test]
fn scale_in_ingests_whole_files_in_lsm_order_and_later_writes_win() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let max = max();
    let handles: Vec<_> = ranges(4)
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let b = factory.create(max, range).unwrap();
            let s = register(&b);
            load(&b, &s, 3000, 1);
            checkpoint(&b, &storage, 1, i as u32, SnapshotKind::Incremental);
            load(&b, &s, 3000, 2);
            checkpoint(&b, &storage, 2, i as u32, SnapshotKind::Incremental)
        })
        .collect();
    let two: Vec<_> = ranges(2)
        .into_iter()
        .map(|range| block_on(factory.restore(max, range, &storage, &handles)).unwrap())
        .collect();
    for b in &two {
        let s = register(b);
        verify(b, &s, 3000, 2);
        // One subtask's handle is the opened base; the other's SSTs (three states, two
        // level-0 files each) are ingested as they are.
        assert!(
            b.files_ingested_as_is() >= 3,
            "ingested as is: {}",
            b.files_ingested_as_is()
        );
        load(b, &s, 3000, 3);
        verify(b, &s, 3000, 3);
    }
    let next: Vec<_> = two
        .iter()
        .enumerate()
        .map(|(i, b)| checkpoint(b, &storage, 3, i as u32, SnapshotKind::Incremental))
        .collect();
    let one = block_on(factory.restore(max, max.full_range(), &storage, &next)).unwrap();
    verify(&one, &register(&one), 3000, 3);
}

/// Scaling out, an old subtask's files straddle the new ranges: nothing is ingested as is.
#[test]
fn scale_out_copies_keys_of_straddling_files() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let handles = loaded_operator(&factory, &storage, 3, 3000, SnapshotKind::Incremental);
    for b in restore_and_verify(&factory, &storage, &handles, 2, 3000) {
        assert_eq!(b.files_ingested_as_is(), 0);
    }
}

#[test]
fn native_rescale_3_to_2_then_incremental_again() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let handles = loaded_operator(&factory, &storage, 3, 3000, SnapshotKind::Incremental);
    let two = restore_and_verify(&factory, &storage, &handles, 2, 3000);
    // The restored (clipped, ingested) databases checkpoint natively again; the base's SSTs
    // are not uploaded a second time, and the result rescales back to 3 exactly.
    let before = listing(&storage);
    let next: Vec<_> = two
        .iter()
        .enumerate()
        .map(|(i, b)| checkpoint(b, &storage, 2, i as u32, SnapshotKind::Incremental))
        .collect();
    let base_ssts: BTreeSet<String> = handles.iter().flat_map(shared_files).collect();
    let reused = next
        .iter()
        .flat_map(shared_files)
        .filter(|p| base_ssts.contains(p))
        .count();
    assert!(
        reused > 0,
        "restored SSTs are referenced, not uploaded again"
    );
    assert!(listing(&storage).len() > before.len());
    restore_and_verify(&factory, &storage, &next, 3, 3000);
}

#[test]
fn mixed_native_and_canonical_handles_restore_together() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let max = max();
    let r = ranges(2);
    let mut handles = Vec::new();
    for (i, (range, kind)) in r
        .into_iter()
        .zip([SnapshotKind::Incremental, SnapshotKind::Full])
        .enumerate()
    {
        let b = factory.create(max, range).unwrap();
        let s = register(&b);
        load(&b, &s, 1500, 1);
        handles.push(checkpoint(&b, &storage, 1, i as u32, kind));
    }
    restore_and_verify(&factory, &storage, &handles, 1, 1500);
    restore_and_verify(&factory, &storage, &handles, 3, 1500);
}

#[test]
fn damaged_native_files_are_detected() {
    let factory = RocksDbBackendFactory::temporary().unwrap();
    let storage = CheckpointStorage::in_memory();
    let handles = loaded_operator(&factory, &storage, 1, 500, SnapshotKind::Incremental);
    let max = max();
    let file = handles[0]
        .files()
        .into_iter()
        .max_by_key(|f| f.size)
        .unwrap()
        .clone();
    let original = block_on(storage.get(&file.path)).unwrap();
    let mut damaged = original.to_vec();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x5a;
    block_on(storage.put(&file.path, damaged.into(), file.shared)).unwrap();
    let r = block_on(factory.restore(max, max.full_range(), &storage, &handles));
    assert!(matches!(r, Err(Error::ChecksumMismatch { .. })), "{r:?}");

    block_on(storage.put(&file.path, original.slice(..10), file.shared)).unwrap();
    let r = block_on(factory.restore(max, max.full_range(), &storage, &handles));
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");

    // Another backend's native handle is refused with a clear error.
    let mut foreign = handles[0].clone();
    if let KeyedStateHandle::Native { backend, .. } = &mut foreign {
        *backend = "lmdb".into();
    }
    let r = block_on(factory.restore(max, max.full_range(), &storage, &[foreign]));
    assert!(matches!(r, Err(Error::UnsupportedHandle { .. })), "{r:?}");
}
