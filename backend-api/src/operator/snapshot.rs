//! The value a checkpoint takes of one subtask's operator state, and the invariants every
//! [`OperatorStateSnapshot`] holds however it was made (taken from a store, decoded from a
//! file, or redistributed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::metadata::{OperatorStateMetadata, OperatorStateMode};
use crate::error::{Error, Result};

/// The contents of one operator state.
///
/// `#[non_exhaustive]`: it has one shape per kind of [`OperatorStateMode`], which may gain
/// kinds; code that shows contents (tools) falls back on the mode's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OperatorStateData {
    /// A list state's elements, in order.
    List(Vec<Vec<u8>>),
    /// A broadcast state's map, ordered by encoded key.
    Broadcast(BTreeMap<Vec<u8>, Vec<u8>>),
}

impl OperatorStateData {
    pub(super) fn empty_for(mode: OperatorStateMode) -> Self {
        match mode {
            OperatorStateMode::List(_) => OperatorStateData::List(Vec::new()),
            OperatorStateMode::Broadcast => OperatorStateData::Broadcast(BTreeMap::new()),
        }
    }

    fn matches(&self, mode: OperatorStateMode) -> bool {
        matches!(
            (self, mode),
            (OperatorStateData::List(_), OperatorStateMode::List(_))
                | (
                    OperatorStateData::Broadcast(_),
                    OperatorStateMode::Broadcast
                )
        )
    }
}

/// One operator state: its metadata and contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateEntry {
    /// What identifies the state.
    pub metadata: OperatorStateMetadata,
    /// Its contents, of the shape its mode calls for.
    pub data: OperatorStateData,
}

/// A consistent copy of one subtask's operator state, states in ascending name order.
///
/// Only [`OperatorStateStore::snapshot`](super::OperatorStateStore::snapshot),
/// [`OperatorStateSnapshot::decode`] and the redistribution functions create one, so its
/// invariants (unique, sorted names; contents matching each state's mode) always hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateSnapshot {
    /// Private to the `operator` module: the constructors above are the only writers, which
    /// is what keeps the invariants.
    pub(super) states: Vec<OperatorStateEntry>,
}

impl OperatorStateSnapshot {
    /// The states, in ascending name order.
    pub fn states(&self) -> &[OperatorStateEntry] {
        &self.states
    }

    /// The state called `name`.
    pub fn get(&self, name: &str) -> Option<&OperatorStateEntry> {
        self.states
            .binary_search_by(|s| s.metadata.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.states[i])
    }

    /// True when the subtask has no operator state at all.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Checks the invariants on a snapshot that came from outside (a decoded file); `what`
    /// names it in the error.
    pub(super) fn validate(&self, what: &str) -> Result<()> {
        for pair in self.states.windows(2) {
            if pair[0].metadata.name >= pair[1].metadata.name {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "states are not in strictly ascending name order ('{}' then '{}')",
                        pair[0].metadata.name, pair[1].metadata.name
                    ),
                ));
            }
        }
        for state in &self.states {
            if !state.metadata.is_well_formed() || !state.data.matches(state.metadata.mode) {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "state '{}' is a {} but its metadata or contents are of another kind",
                        state.metadata.name, state.metadata.mode
                    ),
                ));
            }
        }
        Ok(())
    }
}
