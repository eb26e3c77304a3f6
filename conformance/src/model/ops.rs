//! The vocabulary of a case: the states, the operations on them, who drives checkpoints,
//! and a whole case as it is printed in a failure report.

use std::fmt;

use flowstate_api::SnapshotKind;

use super::{Namespace, MAX_ELEMENTS};

/// Up to `MAX_ELEMENTS` (3) list elements, inline so operations are `Copy` and regressions can
/// be `const`. Prints as a list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Elements {
    len: u8,
    items: [u32; MAX_ELEMENTS],
}

impl Elements {
    /// At most `MAX_ELEMENTS` values (checked at compile time for constants).
    pub const fn of(values: &[u32]) -> Self {
        assert!(values.len() <= MAX_ELEMENTS, "too many list elements");
        let mut items = [0; MAX_ELEMENTS];
        let mut i = 0;
        while i < values.len() {
            items[i] = values[i];
            i += 1;
        }
        Self {
            len: values.len() as u8,
            items,
        }
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.items[..self.len as usize]
    }
}

impl fmt::Debug for Elements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// One state of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateSel {
    Value,
    List,
    Map,
    Sum,
    Mean,
}

impl StateSel {
    pub(super) const ALL: [StateSel; 5] = [
        StateSel::Value,
        StateSel::List,
        StateSel::Map,
        StateSel::Sum,
        StateSel::Mean,
    ];
}

/// The states that support `merge_namespaces`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mergeable {
    List,
    Sum,
    Mean,
}

/// One step of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    ValuePut {
        key: u32,
        ns: Namespace,
        value: u64,
    },
    ListAdd {
        key: u32,
        ns: Namespace,
        value: u32,
    },
    /// `add_all`; an empty slice is a no-op.
    ListAddAll {
        key: u32,
        ns: Namespace,
        values: Elements,
    },
    /// Replaces the list; an empty slice clears it.
    ListUpdate {
        key: u32,
        ns: Namespace,
        values: Elements,
    },
    MapPut {
        key: u32,
        ns: Namespace,
        user_key: u8,
        value: u32,
    },
    MapRemove {
        key: u32,
        ns: Namespace,
        user_key: u8,
    },
    SumAdd {
        key: u32,
        ns: Namespace,
        value: i64,
    },
    MeanAdd {
        key: u32,
        ns: Namespace,
        value: u32,
    },
    Clear {
        state: StateSel,
        key: u32,
        ns: Namespace,
    },
    /// Walks `keys_in(ns)` with `apply_to_all_keys_in` and clears every key while walking.
    ClearEveryKey {
        state: StateSel,
        ns: Namespace,
    },
    /// Merges the other namespace into `target`; with `target_in_sources` the sources are
    /// `[target, other]` (the target must be skipped).
    MergeNamespaces {
        state: Mergeable,
        key: u32,
        target: Namespace,
        target_in_sources: bool,
    },
    /// A checkpoint confirmed complete: the point later restores start from.
    Checkpoint(SnapshotKind),
    /// A checkpoint taken, then aborted: it must not change state nor later checkpoints.
    AbortedCheckpoint(SnapshotKind),
    /// Only the synchronous part of a checkpoint: writes until [`Op::CompleteCaptured`] must
    /// not appear in it (but must appear in the next one). Any other checkpoint step completes
    /// an outstanding capture first; a restore abandons it.
    CaptureCheckpoint(SnapshotKind),
    /// Uploads and completes the outstanding captured checkpoint (no-op when there is none).
    CompleteCaptured,
    /// Drops every subtask and restores the last completed checkpoint at `parallelism`.
    Restore {
        parallelism: u32,
    },
}

impl Op {
    /// The key a per-key write touches (`None` for operator-wide steps).
    pub(super) fn touched_key(&self) -> Option<u32> {
        match *self {
            Op::ValuePut { key, .. }
            | Op::ListAdd { key, .. }
            | Op::ListAddAll { key, .. }
            | Op::ListUpdate { key, .. }
            | Op::MapPut { key, .. }
            | Op::MapRemove { key, .. }
            | Op::SumAdd { key, .. }
            | Op::MeanAdd { key, .. }
            | Op::Clear { key, .. }
            | Op::MergeNamespaces { key, .. } => Some(key),
            Op::ClearEveryKey { .. }
            | Op::Checkpoint(_)
            | Op::AbortedCheckpoint(_)
            | Op::CaptureCheckpoint(_)
            | Op::CompleteCaptured
            | Op::Restore { .. } => None,
        }
    }
}

/// Who drives checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coordinator {
    /// `harness::checkpoint`, and `harness::checkpoint_pending` then
    /// `notify_checkpoint_aborted` for aborts: every file stays in storage.
    KeepEverything,
    /// A [`CheckpointLifecycle`](flowstate_api::lifecycle::CheckpointLifecycle) keeping
    /// `retained` completed checkpoints: retention and aborts delete files, so a restore fails
    /// if a backend still needs a deleted one.
    Lifecycle { retained: usize },
}

/// One generated (or hand-written) case.
#[derive(Clone, PartialEq, Eq)]
pub struct Case {
    pub max_parallelism: u32,
    pub parallelism: u32,
    pub coordinator: Coordinator,
    pub ops: Vec<Op>,
}

impl fmt::Debug for Case {
    // One numbered op per line: failure reports name the failing step by its number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "max parallelism {}, initial parallelism {}, {:?}, {} ops:",
            self.max_parallelism,
            self.parallelism,
            self.coordinator,
            self.ops.len()
        )?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:>2}: {op:?}")?;
        }
        Ok(())
    }
}
