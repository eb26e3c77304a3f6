//! What identifies an operator state across snapshots: its name, its mode (list with a
//! redistribution rule, or broadcast) and its codec ids, and the check that a re-registration
//! matches what was registered (or restored) before.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a list state's elements are redistributed when the parallelism changes.
///
/// `#[non_exhaustive]`: another dealing rule (each with its own normative text in
/// `docs/key-groups.md`) can be added without breaking code that matches on the rule.
/// Serialized by variant index: append new variants, never reorder.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Redistribution {
    /// The elements of all old subtasks are dealt out in contiguous, near-equal runs.
    EvenSplit,
    /// Every new subtask receives every element of every old subtask.
    Union,
}

/// What kind of operator state a name refers to.
///
/// `#[non_exhaustive]`: a new kind of operator state (say, a per-subtask map that is split
/// rather than copied) can be added without breaking code that matches on the mode; such code
/// can fall back on the [`Display`](fmt::Display) form. Serialized by variant index: append new
/// variants, never reorder.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OperatorStateMode {
    /// A list of elements per subtask, redistributed by the rule on rescaling.
    List(Redistribution),
    /// A map that every subtask holds whole; on rescaling each new subtask gets a copy of one
    /// old subtask's map.
    Broadcast,
}

impl fmt::Display for OperatorStateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperatorStateMode::List(Redistribution::EvenSplit) => "even-split list state",
            OperatorStateMode::List(Redistribution::Union) => "union list state",
            OperatorStateMode::Broadcast => "broadcast state",
        })
    }
}

/// Everything that identifies an operator state across snapshots: written into every snapshot
/// and checked when the state is registered again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OperatorStateMetadata {
    /// The state's name, unique within a subtask's operator state and stable across
    /// snapshots.
    pub name: String,
    /// List (with its redistribution rule) or broadcast.
    pub mode: OperatorStateMode,
    /// Codec id of list elements, or of broadcast values.
    pub value_codec: String,
    /// Codec id of broadcast keys; `None` for list states.
    pub key_codec: Option<String>,
}

impl OperatorStateMetadata {
    /// A list state whose elements are encoded with codec `element_codec`.
    pub fn list(
        name: impl Into<String>,
        redistribution: Redistribution,
        element_codec: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            mode: OperatorStateMode::List(redistribution),
            value_codec: element_codec.into(),
            key_codec: None,
        }
    }

    /// A broadcast state with the given key and value codecs.
    pub fn broadcast(
        name: impl Into<String>,
        key_codec: impl Into<String>,
        value_codec: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            mode: OperatorStateMode::Broadcast,
            value_codec: value_codec.into(),
            key_codec: Some(key_codec.into()),
        }
    }

    /// Checks that `requested` may use the state registered as `self`.
    pub fn check_compatible(&self, requested: &OperatorStateMetadata) -> Result<()> {
        if self.mode != requested.mode {
            return Err(Error::OperatorStateModeMismatch {
                name: self.name.clone(),
                existing: self.mode.to_string(),
                requested: requested.mode.to_string(),
            });
        }
        let value_what = match self.mode {
            OperatorStateMode::List(_) => "element",
            OperatorStateMode::Broadcast => "value",
        };
        if self.value_codec != requested.value_codec {
            return Err(Error::StateCodecMismatch {
                name: self.name.clone(),
                what: value_what,
                existing: self.value_codec.clone(),
                requested: requested.value_codec.clone(),
            });
        }
        if self.key_codec != requested.key_codec {
            return Err(Error::StateCodecMismatch {
                name: self.name.clone(),
                what: "key",
                existing: self.key_codec.clone().unwrap_or_default(),
                requested: requested.key_codec.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// True when the metadata is well formed: broadcast states, and only they, have a key codec.
    /// The store checks it on registration and the snapshot on decode, since the fields are
    /// public and a decoded file is untrusted.
    pub(super) fn is_well_formed(&self) -> bool {
        matches!(self.mode, OperatorStateMode::Broadcast) == self.key_codec.is_some()
    }
}
