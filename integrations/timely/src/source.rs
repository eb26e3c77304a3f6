//! [`ReplayableSource`]: a partitioned source whose read positions live in operator list
//! state, so a restart at another worker count resumes exactly where the checkpoint was.
//!
//! Each worker reads the partitions it holds, round by round: in round `r` a partition
//! yields offsets `[r * batch, (r + 1) * batch)` (a log whose records are addressed by
//! offset, as a Kafka partition is). The positions are an even-split list state (Flink's
//! `getListState`): on restore at any worker count, every partition's position goes to
//! exactly one worker. The round to resume at is broadcast state, held by every worker.

use std::sync::Arc;

use flowstate_api::operator::{BroadcastState, OperatorListState, Redistribution};
use flowstate_api::OperatorStateStore;

use crate::error::{Error, Result};

const OFFSETS: &str = "source-offsets";
const PROGRESS: &str = "source-progress";
const NEXT_ROUND: &str = "next-round";

/// See the module docs.
pub struct ReplayableSource {
    offsets: OperatorListState<(u32, u64)>,
    progress: BroadcastState<String, u64>,
    batch: u64,
}

impl ReplayableSource {
    /// Opens the source on a worker's operator state. A fresh job (no restored positions
    /// anywhere: `fresh`) deals `partitions` round-robin over `peers` workers.
    pub fn open(
        operator: &Arc<OperatorStateStore>,
        fresh: bool,
        worker: usize,
        peers: usize,
        partitions: u32,
        batch: u64,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config(
                "the source batch must be at least one record per round".into(),
            ));
        }
        let offsets = operator.list_state::<(u32, u64)>(OFFSETS, Redistribution::EvenSplit)?;
        let progress = operator.broadcast_state::<String, u64>(PROGRESS)?;
        if fresh {
            let mine: Vec<(u32, u64)> = (0..partitions)
                .filter(|p| *p as usize % peers == worker)
                .map(|p| (p, 0))
                .collect();
            offsets.update(&mine)?;
            progress.put(&NEXT_ROUND.to_string(), &0)?;
        }
        Ok(Self {
            offsets,
            progress,
            batch,
        })
    }

    /// The round this worker reads next (every worker agrees).
    pub fn next_round(&self) -> Result<u64> {
        Ok(self.progress.get(&NEXT_ROUND.to_string())?.unwrap_or(0))
    }

    /// The partitions this worker reads.
    pub fn partitions(&self) -> Result<Vec<u32>> {
        let mut partitions: Vec<u32> = self.offsets.get()?.into_iter().map(|(p, _)| p).collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// Reads round `round` of every partition this worker holds, handing each
    /// `(partition, offset)` to `emit`, and moves the positions past it.
    pub fn read_round(&self, round: u64, mut emit: impl FnMut(u32, u64)) -> Result<u64> {
        let mut offsets = self.offsets.get()?;
        let start = round.checked_mul(self.batch).ok_or_else(|| {
            Error::Inconsistent(format!(
                "round {round} of {} records overflows the offsets: the restored position is damaged",
                self.batch
            ))
        })?;
        let mut read = 0;
        for (partition, next) in offsets.iter_mut() {
            if *next != start {
                return Err(Error::Inconsistent(format!(
                    "partition {partition} is at offset {next} at the start of round {round} (expected {start}): the restored positions disagree with the round"
                )));
            }
            for offset in start..start + self.batch {
                emit(*partition, offset);
            }
            *next = start + self.batch;
            read += self.batch;
        }
        self.offsets.update(&offsets)?;
        self.progress.put(&NEXT_ROUND.to_string(), &(round + 1))?;
        Ok(read)
    }
}
