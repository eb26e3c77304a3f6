//! Restores: rows of a snapshot (a base, then deltas) written into a heap backend's live
//! state by `apply_rows`. Restore writes are the base of later deltas, not changes.

use flowstate_api::key_groups::key_group_for_key_bytes;
use flowstate_api::list_encoding;
use flowstate_api::state::StorageLayout;
use flowstate_api::{Error, KeyGroup, Result, RowValue, StateRow};

use crate::backend::{Addr, Inner};
use crate::table::Storage;

impl Inner {
    /// Applies `rows` of `key_group` in order: a tombstone removes its (state, key,
    /// namespace), any other row writes it. Fails on a row of another key group, a row of the
    /// wrong kind for its state and a damaged list.
    pub(crate) fn apply_rows(&self, key_group: KeyGroup, rows: &[StateRow<'_>]) -> Result<()> {
        self.range.check_owns(key_group)?;
        for row in rows {
            let actual = key_group_for_key_bytes(row.key, self.max);
            if actual != key_group {
                return Err(Error::corrupt(
                    "snapshot rows",
                    format!("a row of key group {key_group} holds a key of key group {actual}"),
                ));
            }
            let table = self.table(row.state)?;
            let at = Addr {
                key_group,
                key: row.key,
                namespace: row.namespace,
            };
            match (&table.storage, row.value) {
                (_, RowValue::Tombstone) => self.remove_any(row.state, at, false)?,
                (Storage::Bytes(t), RowValue::Value(value))
                    if table.kind.layout() == StorageLayout::Value =>
                {
                    self.set_bytes(t, at, value, false)?
                }
                (Storage::Bytes(t), RowValue::List(list))
                    if table.kind.layout() == StorageLayout::List =>
                {
                    // Validated here so that a damaged list fails the restore, not a later read.
                    for element in list_encoding::iter(list) {
                        element?;
                    }
                    if list.is_empty() {
                        self.remove_any(row.state, at, false)?;
                    } else {
                        self.set_bytes(t, at, list, false)?;
                    }
                }
                (Storage::Map(t), RowValue::MapEntry { user_key, value }) => {
                    self.map_put(t, at, user_key, value, false)?
                }
                (_, value) => {
                    return Err(Error::corrupt(
                        "snapshot rows",
                        format!(
                            "a {} row for {} state #{}",
                            value.kind_name(),
                            table.kind,
                            row.state.0
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}
