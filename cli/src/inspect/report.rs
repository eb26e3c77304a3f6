//! `inspect`'s report: what `--json` prints, field by field. The field names are part of the
//! CLI's interface.

use serde::Serialize;
use serde_json::Value;

use crate::output::{FileReport, KeyGroupSpan};

/// `inspect --json`. Field names are part of the CLI's interface.
#[derive(Serialize, Debug)]
pub struct InspectReport {
    /// The storage, as a URL (`file:///abs/dir`, `s3://bucket/prefix`).
    pub storage: String,
    /// The checkpoint inspected.
    pub checkpoint_id: u64,
    /// Every checkpoint the storage holds, ascending.
    pub checkpoints: Vec<u64>,
    /// The checkpoint's max parallelism: its number of key groups.
    pub max_parallelism: u32,
    /// The checkpoint's parallelism: its number of subtasks.
    pub parallelism: u32,
    /// The filters applied: `null` when not given.
    pub subtask_filter: Option<u32>,
    /// The `--state` filter.
    pub state_filter: Option<String>,
    /// The `--key-group` filter.
    pub key_group_filter: Option<u32>,
    /// The most rows (and operator state entries) shown per key group (per state): 0 shows
    /// none.
    pub rows_limit: usize,
    /// Keyed states of the subtasks shown, by name (with `--state`, that one).
    pub states: Vec<StateReport>,
    /// Rows and bytes over every key group shown.
    pub rows: u64,
    /// Their size in bytes, in the canonical snapshot encoding.
    pub bytes: u64,
    /// The subtasks shown, ascending.
    pub subtasks: Vec<SubtaskReport>,
}

/// A keyed state.
#[derive(Serialize, Debug, Clone)]
pub struct StateReport {
    /// The state's name.
    pub name: String,
    /// `value`, `list`, `map`, `reducing` or `aggregating`.
    pub kind: String,
    /// Codec ids, as registered (`postcard/u64`, `void-namespace`, ...).
    pub namespace_codec: String,
    /// Codec id of the values.
    pub value_codec: String,
    /// Map states only; `null` otherwise.
    pub user_key_codec: Option<String>,
    /// Always `null`: flowstate has no state TTL yet.
    pub ttl: Option<String>,
    /// Rows and bytes of this state in the key groups shown.
    pub rows: u64,
    /// Their size in bytes, in the canonical snapshot encoding.
    pub bytes: u64,
}

/// One subtask of the checkpoint.
#[derive(Serialize, Debug)]
pub struct SubtaskReport {
    /// The subtask's index.
    pub index: u32,
    /// The subtask's key groups, inclusive.
    pub key_groups: KeyGroupSpan,
    /// Its keyed state handle; `null` when the subtask recorded none.
    pub handle: Option<HandleReport>,
    /// Rows and bytes over the key groups shown.
    pub rows: u64,
    /// Their size in bytes, in the canonical snapshot encoding.
    pub bytes: u64,
    /// Key groups shown that hold at least one row.
    pub non_empty_key_groups: u32,
    /// Every key group shown (all of the subtask's, or the `--key-group` one), ascending,
    /// empty ones included.
    pub key_group_stats: Vec<KeyGroupReport>,
    /// The subtask's operator state file; `null` when it has none.
    pub operator_file: Option<FileReport>,
    /// Its operator states by name (with `--state`, that one).
    pub operator_states: Vec<OperatorStateReport>,
}

/// A keyed state handle.
#[derive(Serialize, Debug)]
pub struct HandleReport {
    /// `canonical`, `changelog` or `native`.
    pub kind: String,
    /// The backend of a native handle (`rocksdb`); `null` for portable handles.
    pub backend: Option<String>,
    /// Files the handle references.
    pub files: usize,
    /// Total size of those files, in bytes.
    pub bytes: u64,
    /// A one-line summary: kind, key-group range and files.
    pub description: String,
}

/// One key group. A row is what a snapshot stores: the value of a (key, namespace) of a
/// value, reducing or aggregating state, the whole list of a list state, one entry of a map
/// state. `bytes` is the rows' size in the canonical snapshot encoding, whatever the handle.
#[derive(Serialize, Debug)]
pub struct KeyGroupReport {
    /// The key group.
    pub key_group: u32,
    /// Rows of the key group (of the state filtered, if any).
    pub rows: u64,
    /// Their size in bytes, in the canonical snapshot encoding.
    pub bytes: u64,
    /// Up to `rows_limit` rows, ordered by state, key, namespace and map key.
    pub rows_shown: Vec<RowReport>,
}

/// One row: bytes as lowercase hex, and decoded (JSON strings, numbers, booleans) when the
/// codec is serde + postcard of a primitive type (for keys: see `--key-type`); `null` when
/// not decoded.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RowReport {
    /// The state's name.
    pub state: String,
    /// `value`, `list`, `map-entry` or `tombstone`.
    pub kind: String,
    /// The key's bytes, in hex.
    pub key_hex: String,
    /// The key, decoded.
    pub key: Option<Value>,
    /// The namespace's bytes, in hex.
    pub namespace_hex: String,
    /// The namespace, decoded.
    pub namespace: Option<Value>,
    /// Map entries only.
    pub user_key_hex: Option<String>,
    /// The map entry's user key, decoded.
    pub user_key: Option<Value>,
    /// The value; for a list the list's stored form (each element as u32 LE length and
    /// bytes), decoded as an array of its elements. `null` for a tombstone.
    pub value_hex: Option<String>,
    /// The value, decoded.
    pub value: Option<Value>,
}

/// One operator state of one subtask.
#[derive(Serialize, Debug)]
pub struct OperatorStateReport {
    /// The operator state's name.
    pub name: String,
    /// `even-split` or `union` (list states), `broadcast`.
    pub mode: String,
    /// Codec of list elements or broadcast values.
    pub value_codec: String,
    /// Codec of broadcast keys; `null` for list states.
    pub key_codec: Option<String>,
    /// List elements or broadcast entries.
    pub entries: u64,
    /// Bytes of the elements (keys and values) as stored.
    pub bytes: u64,
    /// Up to `rows_limit` entries, in stored order (broadcast: by key bytes).
    pub entries_shown: Vec<OperatorEntryReport>,
}

/// One entry of an operator state: bytes as lowercase hex, and decoded (as in [`RowReport`]);
/// `null` when not decoded.
#[derive(Serialize, Debug)]
pub struct OperatorEntryReport {
    /// Broadcast entries only.
    pub key_hex: Option<String>,
    /// The broadcast key, decoded.
    pub key: Option<Value>,
    /// The list element or broadcast value's bytes, in hex.
    pub value_hex: String,
    /// The list element or broadcast value, decoded.
    pub value: Option<Value>,
}
