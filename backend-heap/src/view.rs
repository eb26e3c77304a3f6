//! Snapshot views: a pinned epoch read key group by key group.
//!
//! A view copies one (state, key group) at a time out of the live maps, holding each shard's
//! read lock only while it copies that shard's visible rows into a local buffer, and hands the
//! rows to the caller after releasing every lock: a slow consumer (an upload) never holds up
//! writers.

use std::sync::Arc;

use flowstate_api::state::StorageLayout;
use flowstate_api::{
    KeyGroup, KeyGroupRange, KeyedSnapshotView, MaxParallelism, Result, RowValue, StateId,
    StateMetadata, StateRow,
};

use crate::backend::Inner;
use crate::cell::Cell;
use crate::checkpoint::Checkpoints;
use crate::key::EntryKey;
use crate::map_slot::MapSlot;
use crate::table::{KgTable, Storage};

/// A consistent point-in-time view of a [`crate::HeapBackend`]: every version written before
/// it was taken, none written after. Full (every row) or delta (tombstone + current rows of
/// each entry changed since a completed checkpoint). Dropping it releases the versions it
/// pinned.
pub struct HeapSnapshotView {
    inner: Arc<Inner>,
    epoch: u64,
    states: Vec<(StateId, StateMetadata)>,
    /// For a delta: the epoch of the completed checkpoint it is relative to.
    delta_since: Option<u64>,
}

impl std::fmt::Debug for HeapSnapshotView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapSnapshotView")
            .field("epoch", &self.epoch)
            .field("states", &self.states.len())
            .field("delta_since", &self.delta_since)
            .finish()
    }
}

impl HeapSnapshotView {
    pub(crate) fn full(inner: Arc<Inner>) -> Self {
        let epoch = inner.epochs.pin();
        // Taken after the pin: a state registered in between has no row stamped <= epoch.
        let states = inner.states();
        Self {
            inner,
            epoch,
            states,
            delta_since: None,
        }
    }

    pub(crate) fn delta(inner: Arc<Inner>, checkpoints: &mut Checkpoints, since: u64) -> Self {
        Inner::add_delta_floor(checkpoints, since);
        let mut view = Self::full(inner);
        view.delta_since = Some(since);
        view
    }

    /// The snapshot epoch: the view sees every write stamped with it or earlier.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// True for a delta view.
    pub fn is_delta(&self) -> bool {
        self.delta_since.is_some()
    }
}

impl Drop for HeapSnapshotView {
    fn drop(&mut self) {
        self.inner.release_snapshot(self.epoch);
        if let Some(since) = self.delta_since {
            self.inner.release_delta_floor(since);
        }
    }
}

/// Where a copied row's parts lie in [`RowBuffer::bytes`].
#[derive(Clone, Copy)]
struct BufferedRow {
    state: StateId,
    start: usize,
    key_end: usize,
    namespace_end: usize,
    payload: Payload,
}

#[derive(Clone, Copy)]
enum Payload {
    Value { end: usize },
    List { end: usize },
    MapEntry { user_key_end: usize, end: usize },
    Tombstone,
}

/// Rows of one (state, key group), copied out of the maps.
#[derive(Default)]
struct RowBuffer {
    bytes: Vec<u8>,
    rows: Vec<BufferedRow>,
}

impl RowBuffer {
    fn start(&mut self, key: &EntryKey) -> (usize, usize, usize) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key.key());
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(key.namespace());
        (start, key_end, self.bytes.len())
    }

    fn push_bytes(&mut self, state: StateId, list: bool, key: &EntryKey, value: &[u8]) {
        let (start, key_end, namespace_end) = self.start(key);
        self.bytes.extend_from_slice(value);
        let end = self.bytes.len();
        self.rows.push(BufferedRow {
            state,
            start,
            key_end,
            namespace_end,
            payload: if list {
                Payload::List { end }
            } else {
                Payload::Value { end }
            },
        });
    }

    fn push_map_entry(&mut self, state: StateId, key: &EntryKey, user_key: &[u8], value: &[u8]) {
        let (start, key_end, namespace_end) = self.start(key);
        self.bytes.extend_from_slice(user_key);
        let user_key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.rows.push(BufferedRow {
            state,
            start,
            key_end,
            namespace_end,
            payload: Payload::MapEntry {
                user_key_end,
                end: self.bytes.len(),
            },
        });
    }

    fn push_tombstone(&mut self, state: StateId, key: &EntryKey) {
        let (start, key_end, namespace_end) = self.start(key);
        self.rows.push(BufferedRow {
            state,
            start,
            key_end,
            namespace_end,
            payload: Payload::Tombstone,
        });
    }

    fn emit(&mut self, visit: &mut dyn FnMut(StateRow<'_>) -> Result<()>) -> Result<()> {
        for row in &self.rows {
            let b = &self.bytes;
            let value = match row.payload {
                Payload::Value { end } => RowValue::Value(&b[row.namespace_end..end]),
                Payload::List { end } => RowValue::List(&b[row.namespace_end..end]),
                Payload::MapEntry { user_key_end, end } => RowValue::MapEntry {
                    user_key: &b[row.namespace_end..user_key_end],
                    value: &b[user_key_end..end],
                },
                Payload::Tombstone => RowValue::Tombstone,
            };
            visit(StateRow {
                state: row.state,
                key: &b[row.start..row.key_end],
                namespace: &b[row.key_end..row.namespace_end],
                value,
            })?;
        }
        self.rows.clear();
        self.bytes.clear();
        Ok(())
    }
}

fn copy_bytes_rows(
    buffer: &mut RowBuffer,
    state: StateId,
    list: bool,
    key: &EntryKey,
    cell: &Cell,
    epoch: u64,
) {
    if let Some(value) = cell.read_at(epoch) {
        buffer.push_bytes(state, list, key, value);
    }
}

fn copy_map_rows(
    buffer: &mut RowBuffer,
    state: StateId,
    key: &EntryKey,
    slot: &MapSlot,
    epoch: u64,
) {
    for (user_key, value) in slot.entries_at(epoch) {
        buffer.push_map_entry(state, key, user_key, value);
    }
}

impl HeapSnapshotView {
    /// Copies every row of `table` visible at the view's epoch.
    fn copy_full<V>(
        &self,
        buffer: &mut RowBuffer,
        table: &KgTable<V>,
        copy: impl Fn(&mut RowBuffer, &EntryKey, &V),
    ) {
        // Dashmap's iterator holds one shard's read lock at a time.
        for entry in table.map.iter() {
            copy(buffer, entry.key(), entry.value());
        }
    }

    /// Copies, for every entry changed in `(since, epoch]`, a tombstone and its rows visible
    /// at the view's epoch.
    fn copy_delta<V>(
        &self,
        buffer: &mut RowBuffer,
        table: &KgTable<V>,
        since: u64,
        state: StateId,
        copy: impl Fn(&mut RowBuffer, &EntryKey, &V),
    ) {
        // Writes stamped <= epoch may still be recording their change: wait for them.
        table.barrier();
        let changed = table.changes().lock().changed_between(since, self.epoch);
        for key in changed {
            buffer.push_tombstone(state, &key);
            table.read(key.key(), key.namespace(), |value| {
                copy(buffer, &key, value)
            });
        }
    }
}

impl KeyedSnapshotView for HeapSnapshotView {
    fn max_parallelism(&self) -> MaxParallelism {
        self.inner.max
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.inner.range
    }

    fn states(&self) -> Vec<(StateId, StateMetadata)> {
        self.states.clone()
    }

    fn for_each_row(
        &self,
        key_group: KeyGroup,
        visit: &mut dyn FnMut(StateRow<'_>) -> Result<()>,
    ) -> Result<()> {
        self.inner.range.check_owns(key_group)?;
        let epoch = self.epoch;
        let mut buffer = RowBuffer::default();
        for (state, _) in &self.states {
            let state = *state;
            // A state registered concurrently with the view may not have its table yet: it
            // holds no row the view can see.
            let Some(table) = self.inner.tables.get(state.index()) else {
                continue;
            };
            match &table.storage {
                Storage::Bytes(tables) => {
                    let Some(kg_table) = tables.get(key_group) else {
                        continue;
                    };
                    let list = table.kind.layout() == StorageLayout::List;
                    let copy = |b: &mut RowBuffer, k: &EntryKey, c: &Cell| {
                        copy_bytes_rows(b, state, list, k, c, epoch)
                    };
                    match self.delta_since {
                        None => self.copy_full(&mut buffer, kg_table, copy),
                        Some(since) => self.copy_delta(&mut buffer, kg_table, since, state, copy),
                    }
                }
                Storage::Map(tables) => {
                    let Some(kg_table) = tables.get(key_group) else {
                        continue;
                    };
                    let copy = |b: &mut RowBuffer, k: &EntryKey, s: &MapSlot| {
                        copy_map_rows(b, state, k, s, epoch)
                    };
                    match self.delta_since {
                        None => self.copy_full(&mut buffer, kg_table, copy),
                        Some(since) => self.copy_delta(&mut buffer, kg_table, since, state, copy),
                    }
                }
            }
            buffer.emit(visit)?;
        }
        Ok(())
    }
}
