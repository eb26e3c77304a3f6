//! Flink's semantics of each keyed state kind, namespaces, enumeration, state identity and
//! key-group ownership, on a live backend (no checkpoint involved).
//!
//! One file per theme: `value` (value state, `get_with`, zero-byte encodings), `list`, `map`,
//! `reducing` (reducing and aggregating state), `namespaces` (isolation, byte boundaries,
//! `merge_namespaces`), `enumeration` (`keys`, `apply_to_all_keys`), `identity` (state
//! identity and key-group ownership), `rows` (`apply_rows`) and `load` (large entries,
//! concurrent writers).

use std::collections::BTreeSet;

use flowstate_api::KeyContext;

use crate::fixtures::{enumerated_ids, max_parallelism};

mod enumeration;
mod identity;
mod list;
mod load;
mod map;
mod namespaces;
mod reducing;
mod rows;
mod value;

pub use enumeration::{apply_to_all_keys_tolerates_changes, keys_enumeration};
pub use identity::{key_group_not_owned, reregistering_returns_same_state, states_are_isolated};
pub use list::list_state;
pub use load::{concurrent_access, large_entries};
pub use map::map_state;
pub use namespaces::{
    key_namespace_boundaries, merge_namespaces_aggregating, merge_namespaces_list,
    merge_namespaces_reducing, namespaces_isolate,
};
pub use reducing::{aggregating_state, reducing_state};
pub use rows::apply_rows_in_order;
pub use value::{empty_encodings_are_present, get_with_agrees_with_get, value_state};

/// The ids of an enumeration over the whole key-group range at the default max parallelism.
fn ids(keys: flowstate_api::Result<Vec<KeyContext>>) -> BTreeSet<u64> {
    let max = max_parallelism();
    enumerated_ids(keys.unwrap(), max, max.full_range(), "enumeration")
}

/// A set of key ids, to compare with [`ids`].
fn set(keys: impl IntoIterator<Item = u64>) -> BTreeSet<u64> {
    keys.into_iter().collect()
}
