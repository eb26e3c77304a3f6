//! The layout of canonical files: key-group ordered, indexed, one block per non-empty key
//! group, one row per entry in full files.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flowstate_api::key_groups::key_group_for_key_bytes;
use flowstate_api::snapshot::{read_blocks, read_info, SnapshotFileKind};
use flowstate_api::{
    CheckpointId, CheckpointStorage, FileRef, RowValue, SnapshotKind, StateBackendFactory,
};

use super::{new_job, KEY_SPACE};
use crate::dataset::{dataset_metadata, Model};
use crate::fixtures::{key, max_parallelism, split_files, Rng};
use crate::harness::{block_on, checkpoint};

/// Per state name: rows counted in the full files of one checkpoint.
type RowCounts = HashMap<String, usize>;

fn check_canonical_file(
    storage: &CheckpointStorage,
    file: &FileRef,
    handle_range: flowstate_api::KeyGroupRange,
    counts: &mut RowCounts,
    group_of_full: &mut BTreeSet<u32>,
) -> SnapshotFileKind {
    let max = max_parallelism();
    let info = block_on(read_info(storage, file))
        .unwrap_or_else(|e| panic!("reading the index of {}: {e}", file.path));
    assert_eq!(info.metadata.max_parallelism, max, "{}", file.path);
    assert_eq!(
        info.metadata.key_group_range, handle_range,
        "{}: range of the file",
        file.path
    );
    for meta in dataset_metadata() {
        assert!(
            info.metadata.states.contains(&meta),
            "{}: the metadata lacks state {meta:?}",
            file.path
        );
    }
    for pair in info.index.windows(2) {
        assert!(
            pair[0].key_group < pair[1].key_group,
            "{}: index not in key-group order",
            file.path
        );
        assert!(
            pair[0].offset + pair[0].length <= pair[1].offset,
            "{}: the block of key group {} does not come after the block of key group {}",
            file.path,
            pair[1].key_group,
            pair[0].key_group
        );
    }
    for entry in &info.index {
        assert!(handle_range.contains(entry.key_group));
        assert!(
            entry.length > 0,
            "{}: an empty block for key group {}",
            file.path,
            entry.key_group
        );
    }
    let kind = info.metadata.kind;
    let names: Vec<String> = info
        .metadata
        .states
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let mut list_rows = BTreeSet::new();
    block_on(read_blocks(
        storage,
        file,
        &info,
        &handle_range,
        |kg, rows| {
            assert!(
                !rows.is_empty(),
                "{}: key group {kg} has a block without rows",
                file.path
            );
            for row in rows {
                assert_eq!(
                    key_group_for_key_bytes(row.key, max),
                    kg,
                    "{}: a row of key group {} sits in the block of key group {kg}",
                    file.path,
                    key_group_for_key_bytes(row.key, max)
                );
                let name = names.get(row.state_index as usize).unwrap_or_else(|| {
                    panic!("{}: row names state {}", file.path, row.state_index)
                });
                if kind == SnapshotFileKind::Full {
                    assert!(
                        !matches!(row.value, RowValue::Tombstone),
                        "{}: a tombstone in a full file",
                        file.path
                    );
                    *counts.entry(name.clone()).or_default() += 1;
                    group_of_full.insert(kg.get());
                    if matches!(row.value, RowValue::List(_)) {
                        assert!(
                            list_rows.insert((
                                row.state_index,
                                row.key.to_vec(),
                                row.namespace.to_vec()
                            )),
                            "{}: two List rows for one (state, key, namespace)",
                            file.path
                        );
                    }
                }
            }
            Ok(())
        },
    ))
    .unwrap_or_else(|e| panic!("reading the blocks of {}: {e}", file.path));
    kind
}

fn count_owned<T>(m: &BTreeMap<(u64, u32), T>, owned: &impl Fn(&u64) -> bool) -> usize {
    m.keys().filter(|(k, _)| owned(k)).count()
}

/// The rows a full file holds for dataset state `state` over the keys `owned` accepts: one
/// per (key, namespace) (a list is one `List` row), and one per entry of a map.
fn expected_rows(model: &Model, state: &str, owned: &impl Fn(&u64) -> bool) -> usize {
    match state {
        "value" => count_owned(&model.value, owned),
        "list" => count_owned(&model.list, owned),
        "map" => model
            .map
            .iter()
            .filter(|((k, _), _)| owned(k))
            .map(|(_, m)| m.len())
            .sum(),
        "reducing" => count_owned(&model.reducing, owned),
        "aggregating" => count_owned(&model.aggregating, owned),
        other => unreachable!("the dataset has no state {other}"),
    }
}

/// Canonical files are key-group ordered and indexed: ascending, non-empty blocks inside the
/// handle's range, each holding only rows of its own key group; the metadata names every
/// state; a full file has one row per value, one List row per (key, namespace) and one row per
/// map entry, and a block for exactly the key groups that hold state. Deltas are marked as
/// such.
pub fn canonical_files_are_key_group_ordered<F: StateBackendFactory>(factory: &F) {
    let storage = CheckpointStorage::in_memory();
    let job = new_job(factory, 2);
    let mut model = Model::default();
    let mut rng = Rng::new(47);
    job.run_random(&mut model, &mut rng, 2500, KEY_SPACE);
    let mut checked_files = 0;
    for (id, kind) in [
        (1, SnapshotKind::Full),
        (2, SnapshotKind::Incremental),
        (3, SnapshotKind::Incremental),
    ] {
        if id > 1 {
            job.run_random(&mut model, &mut rng, 300, KEY_SPACE);
        }
        let manifest = checkpoint(&job.subtasks, &storage, CheckpointId(id), kind).unwrap();
        for (subtask, handle) in manifest.subtasks.iter().zip(manifest.keyed_handles()) {
            let range = subtask.key_group_range;
            assert_eq!(
                handle.key_group_range(),
                range,
                "the handle covers its subtask's range"
            );
            let mut counts = RowCounts::new();
            let mut groups = BTreeSet::new();
            let mut full_files = 0;
            for file in split_files(&handle).0 {
                if check_canonical_file(&storage, &file, range, &mut counts, &mut groups)
                    == SnapshotFileKind::Full
                {
                    full_files += 1;
                }
                checked_files += 1;
            }
            if id != 1 {
                continue;
            }
            // Checkpoint 1 is a full checkpoint: its one full file is the whole state.
            assert_eq!(
                full_files, 1,
                "a full checkpoint has one full file per subtask"
            );
            let owned = |k: &u64| range.contains(key(*k).key_group());
            let count = |name: &str| counts.get(name).copied().unwrap_or(0);
            for state in ["value", "list", "map", "reducing", "aggregating"] {
                assert_eq!(
                    count(&format!("dataset-{state}")),
                    expected_rows(&model, state, &owned),
                    "{state} rows: one per (key, namespace), one per entry of a map"
                );
            }
            let mut expected_groups = BTreeSet::new();
            for (k, _) in model
                .value
                .keys()
                .chain(model.list.keys())
                .chain(model.map.keys())
                .chain(model.reducing.keys())
                .chain(model.aggregating.keys())
            {
                if owned(k) {
                    expected_groups.insert(key(*k).key_group().get());
                }
            }
            assert_eq!(
                groups, expected_groups,
                "a block for exactly the key groups holding state"
            );
        }
    }
    if checked_files == 0 {
        eprintln!(
            "{}: no canonical-format handles were written (native snapshots only); file layout not checked",
            factory.name()
        );
    }
}
