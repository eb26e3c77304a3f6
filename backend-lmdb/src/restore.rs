//! Restoring snapshot rows (`KeyedStateBackend::apply_rows`): a block's rows are checked
//! first, then written straight into LMDB, one write transaction per
//! [`LmdbConfig::transaction_bytes`](crate::LmdbConfig::transaction_bytes) of rows, or through
//! the write buffer while the map is full and snapshots keep it from growing.

use std::ops::Bound;

use flowstate_api::list_encoding;
use flowstate_api::state::StorageLayout;
use flowstate_api::{Error, KeyGroup, Result, RowValue, StateRow};
use heed::RwTxn;

use crate::backend::LmdbBackend;
use crate::env::{Inner, StateDb, WriteOutcome};
use crate::key_layout::{prefix_len, prefix_successor, push_prefix};
use crate::overlay::{BufferValue, Pending};

/// What a restore row does to its stored key.
#[derive(Clone, Copy, Debug)]
enum RowWrite<'a> {
    /// Stores this value (of a value, a list or a map entry).
    Put(&'a [u8]),
    /// Removes the `(key, namespace)`: its value or list, or every entry of its map.
    Clear,
}

/// Puts the stored key of `row` in `key` and says what the row writes there; `None` for a
/// row kind this backend does not store (which `validate_rows` refuses).
fn row_write<'a>(
    key: &mut Vec<u8>,
    key_group: KeyGroup,
    row: &StateRow<'a>,
) -> Option<RowWrite<'a>> {
    key.clear();
    push_prefix(key, key_group, row.key, row.namespace);
    Some(match row.value {
        // An empty list is absent.
        RowValue::List([]) | RowValue::Tombstone => RowWrite::Clear,
        RowValue::Value(value) | RowValue::List(value) => RowWrite::Put(value),
        RowValue::MapEntry { user_key, value } => {
            key.extend_from_slice(user_key);
            RowWrite::Put(value)
        }
        _ => return None,
    })
}

/// Removes the `(key, namespace)` whose prefix is `key` inside a write transaction.
fn clear_stored(wtxn: &mut RwTxn<'_>, state: &StateDb, key: &[u8]) -> heed::Result<()> {
    if state.layout == StorageLayout::Map {
        let end = prefix_successor(key);
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
            Bound::Included(key),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        state.db.delete_range(wtxn, &bounds)?;
    } else {
        state.db.delete(wtxn, key)?;
    }
    Ok(())
}

/// Approximate bytes a restore row writes.
fn row_size(row: &StateRow<'_>) -> usize {
    let payload = match row.value {
        RowValue::Value(v) | RowValue::List(v) => v.len(),
        RowValue::MapEntry { user_key, value } => user_key.len() + value.len(),
        _ => 0,
    };
    row.key.len() + row.namespace.len() + payload + 16
}

impl LmdbBackend {
    /// Applies the restore rows of one key group in order (what
    /// `KeyedStateBackend::apply_rows` does).
    pub(crate) fn restore_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()> {
        self.check_owned(key_group)?;
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        self.validate_rows(inner, rows)?;
        // Buffered writes must reach LMDB first, or they would shadow the restored rows.
        let mut direct =
            inner.flush(&self.config, &self.active_readers)? == WriteOutcome::Committed;
        // One transaction per write-buffer's worth of rows: a key group may be larger than
        // what one LMDB write transaction can hold dirty.
        let mut rest = rows;
        while !rest.is_empty() {
            let mut bytes = 0;
            let len = rest
                .iter()
                .take_while(|row| {
                    bytes += row_size(row);
                    bytes <= self.config.transaction_bytes()
                })
                .count()
                .max(1);
            let (chunk, tail) = rest.split_at(len);
            if direct {
                direct =
                    self.apply_rows_direct(inner, key_group, chunk)? == WriteOutcome::Committed;
            }
            if !direct {
                // The map is full and snapshots pin it: keep restoring into the buffer.
                self.apply_rows_buffered(inner, key_group, chunk)?;
                inner.maybe_flush(&self.config, &self.active_readers)?;
            }
            rest = tail;
        }
        Ok(())
    }

    /// Applies restore rows straight into one write transaction (the buffer must be empty,
    /// so that no buffered write shadows them).
    fn apply_rows_direct(
        &self,
        inner: &mut Inner,
        key_group: KeyGroup,
        rows: &[StateRow<'_>],
    ) -> Result<WriteOutcome> {
        let mut key = Vec::with_capacity(128);
        inner.write_with_growth(
            &self.config,
            &self.active_readers,
            "restoring rows",
            &mut |wtxn, dbs| {
                for row in rows {
                    // Validated by the caller: every state exists and matches its row kind.
                    let Some(state) = dbs.get(row.state.index()) else {
                        continue;
                    };
                    match row_write(&mut key, key_group, row) {
                        Some(RowWrite::Put(value)) => state.db.put(wtxn, &key, value)?,
                        Some(RowWrite::Clear) => clear_stored(wtxn, state, &key)?,
                        None => {}
                    }
                }
                Ok(())
            },
        )
    }

    /// Restore rows through the write buffer (used when the map is full and cannot grow yet).
    fn apply_rows_buffered(
        &self,
        inner: &mut Inner,
        key_group: KeyGroup,
        rows: &[StateRow<'_>],
    ) -> Result<()> {
        for row in rows {
            let db = self.state_db(inner, row.state, None, "restore")?;
            match row_write(&mut inner.key_buf, key_group, row) {
                Some(RowWrite::Put(value)) => inner.overlay.set(
                    row.state,
                    &inner.key_buf,
                    Pending::Put(BufferValue::from_slice(value)),
                ),
                Some(RowWrite::Clear) => self.clear_buffered(inner, row.state, db)?,
                None => {} // refused by `validate_rows`
            }
        }
        Ok(())
    }

    /// Checks restore rows before any is written: known states, row kinds that match the
    /// state's layout, well-formed lists, keys LMDB can hold.
    fn validate_rows(&self, inner: &Inner, rows: &[StateRow<'_>]) -> Result<()> {
        for row in rows {
            let db = self.state_db(inner, row.state, None, "restore")?;
            let fits = match (row.value, db.layout) {
                (RowValue::Tombstone, _)
                | (RowValue::Value(_), StorageLayout::Value)
                | (RowValue::MapEntry { .. }, StorageLayout::Map) => true,
                (RowValue::List(list), StorageLayout::List) => {
                    list_encoding::iter(list).try_for_each(|e| e.map(drop))?;
                    true
                }
                _ => false,
            };
            if !fits {
                let meta = self.registry.get(row.state)?;
                return Err(Error::corrupt(
                    "snapshot rows",
                    format!(
                        "a {:?} row for {} state '{}'",
                        row.value, meta.kind, meta.name
                    ),
                ));
            }
            let user_key_len = match row.value {
                RowValue::MapEntry { user_key, .. } => user_key.len(),
                _ => 0,
            };
            self.check_key_size(prefix_len(row.key, row.namespace) + user_key_len)?;
        }
        Ok(())
    }
}
