//! [`RocksDbSnapshotView`]: a RocksDB snapshot, pinned together with its database.

use std::sync::Arc;

use flowstate_api::backend::{KeyedSnapshotView, RowValue, StateRow};
use flowstate_api::state::StorageLayout;
use flowstate_api::{KeyGroup, KeyGroupRange, MaxParallelism, Result, StateId, StateMetadata};
use rocksdb::SnapshotWithThreadMode;
use self_cell::self_cell;

use crate::backend::RocksDbBackend;
use crate::db::{missing_column_family, scan_options, Db, OpenDb, StoredState};
use crate::error::engine;
use crate::key_layout;

type DbSnapshot<'db> = SnapshotWithThreadMode<'db, Db>;

self_cell!(
    struct PinnedSnapshot {
        owner: Arc<OpenDb>,
        #[covariant]
        dependent: DbSnapshot,
    }
);

/// A consistent point-in-time view of a [`crate::RocksDbBackend`]: a RocksDB snapshot (a
/// sequence number: taking it copies nothing and blocks no writer). It keeps the database
/// open, so it may outlive the backend.
pub struct RocksDbSnapshotView {
    snapshot: PinnedSnapshot,
    max: MaxParallelism,
    range: KeyGroupRange,
    states: Vec<StoredState>,
}

impl RocksDbBackend {
    /// A consistent point-in-time view of the keyed state (a RocksDB snapshot). Writers are
    /// not blocked while it is read.
    pub fn snapshot_view(&self) -> RocksDbSnapshotView {
        RocksDbSnapshotView {
            snapshot: PinnedSnapshot::new(self.open_db().clone(), |open| open.db.snapshot()),
            max: self.max,
            range: self.range,
            states: self.stored_states(),
        }
    }
}

impl KeyedSnapshotView for RocksDbSnapshotView {
    fn max_parallelism(&self) -> MaxParallelism {
        self.max
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn states(&self) -> Vec<(StateId, StateMetadata)> {
        self.states
            .iter()
            .enumerate()
            .map(|(i, s)| (StateId(i as u32), s.metadata.clone()))
            .collect()
    }

    fn for_each_row(
        &self,
        key_group: KeyGroup,
        visit: &mut dyn FnMut(StateRow<'_>) -> Result<()>,
    ) -> Result<()> {
        self.range.check_owns(key_group)?;
        let (lower, upper) = key_layout::key_group_bounds(&KeyGroupRange::single(key_group));
        self.snapshot.with_dependent(|open, snapshot| {
            for (i, state) in self.states.iter().enumerate() {
                let cf = open
                    .db
                    .cf_handle(&state.column_family)
                    .ok_or_else(|| missing_column_family(&state.column_family))?;
                let ro = scan_options(lower.clone(), upper.clone());
                let mut it = snapshot.raw_iterator_cf_opt(&cf, ro);
                it.seek(&lower);
                let layout = state.metadata.kind.layout();
                while let Some((k, v)) = it.item() {
                    let d = key_layout::decode_key(k)?;
                    let value = match layout {
                        StorageLayout::Value => RowValue::Value(v),
                        StorageLayout::List if v.is_empty() => {
                            it.next();
                            continue;
                        }
                        StorageLayout::List => RowValue::List(v),
                        StorageLayout::Map => RowValue::MapEntry {
                            user_key: d.user_key,
                            value: v,
                        },
                    };
                    visit(StateRow {
                        state: StateId(i as u32),
                        key: d.key,
                        namespace: d.namespace,
                        value,
                    })?;
                    it.next();
                }
                it.status().map_err(engine("reading a snapshot"))?;
            }
            Ok(())
        })
    }
}
