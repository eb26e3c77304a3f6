//! The checkpoint control plane: two small dataflows beside the job's own, carrying
//! subtasks' reports to the coordinating worker (worker 0) and the coordinator's messages to
//! every worker, over timely's own channels (threads or TCP between processes).
//!
//! Messages travel as JSON text: checkpoint handles carry backend metadata (`serde_json`
//! values) that timely's binary encoding cannot round-trip. Each send closes an epoch of its
//! control input (what pushes it through timely's exchange buffers at once); receivers take
//! messages as they arrive, without waiting for frontiers, so control traffic never holds up
//! (nor waits for) the job's progress.

use std::cell::RefCell;
use std::rc::Rc;

use flowstate_api::CheckpointId;
use flowstate_runtime::{CheckpointNotice, SubtaskReport};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Exchange, Inspect};
use timely::dataflow::InputHandle;
use timely::worker::Worker;

use crate::error::{Error, Result};

/// The worker that runs the job's checkpoint coordinator.
pub const COORDINATOR_WORKER: usize = 0;

/// What the coordinating worker tells every worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToWorkers {
    /// Sent once at start: restore from `restore` (none: start empty); checkpoints of this
    /// run take ids from `first_checkpoint` on, one per checkpoint epoch, in order.
    Start {
        /// The checkpoint to restore from; `None`: start with empty state.
        restore: Option<CheckpointId>,
        /// The id of this run's first checkpoint.
        first_checkpoint: CheckpointId,
    },
    /// A checkpoint completed or was aborted.
    Notice(CheckpointNotice),
    /// The coordinator failed: every worker stops with this reason.
    Failed(String),
}

type Inbox = Rc<RefCell<Vec<String>>>;

/// One worker's end of the control plane.
pub struct ControlPlane {
    index: usize,
    peers: usize,
    reports: InputHandle<u64, CapacityContainerBuilder<Vec<String>>>,
    reports_inbox: Inbox,
    to_workers: InputHandle<u64, CapacityContainerBuilder<Vec<(u64, String)>>>,
    to_workers_inbox: Inbox,
}

impl ControlPlane {
    /// Builds the two control dataflows. Every worker calls this at the same point of its
    /// dataflow construction (timely matches dataflows by construction order).
    pub fn build(worker: &mut Worker) -> Self {
        let mut reports = InputHandle::new();
        let mut to_workers = InputHandle::new();
        let reports_inbox: Inbox = Rc::default();
        let to_workers_inbox: Inbox = Rc::default();
        let inbox = reports_inbox.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            reports
                .to_stream(scope)
                .exchange(|_: &String| COORDINATOR_WORKER as u64)
                .inspect(move |message: &String| inbox.borrow_mut().push(message.clone()));
        });
        let inbox = to_workers_inbox.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            to_workers
                .to_stream(scope)
                .exchange(|(target, _): &(u64, String)| *target)
                .inspect(move |(_, message): &(u64, String)| {
                    inbox.borrow_mut().push(message.clone())
                });
        });
        Self {
            index: worker.index(),
            peers: worker.peers(),
            reports,
            reports_inbox,
            to_workers,
            to_workers_inbox,
        }
    }

    /// Whether this worker is the coordinator (worker [`COORDINATOR_WORKER`]).
    pub fn is_coordinator(&self) -> bool {
        self.index == COORDINATOR_WORKER
    }

    /// Sends a subtask's report to the coordinating worker.
    pub fn send_report(&mut self, report: &SubtaskReport) -> Result<()> {
        let text = serde_json::to_string(report).map_err(|source| Error::Control {
            action: "encoded",
            source,
        })?;
        self.reports.send(text);
        let next = self.reports.time() + 1;
        self.reports.advance_to(next);
        Ok(())
    }

    /// Reports that reached this worker (only the coordinating worker receives any).
    pub fn take_reports(&self) -> Result<Vec<SubtaskReport>> {
        decode_all(&self.reports_inbox)
    }

    /// Sends `message` to every worker, this one included.
    pub fn broadcast(&mut self, message: &ToWorkers) -> Result<()> {
        let text = serde_json::to_string(message).map_err(|source| Error::Control {
            action: "encoded",
            source,
        })?;
        for target in 0..self.peers {
            self.to_workers.send((target as u64, text.clone()));
        }
        let next = self.to_workers.time() + 1;
        self.to_workers.advance_to(next);
        Ok(())
    }

    /// Messages from the coordinating worker that reached this worker, in arrival order.
    pub fn take_messages(&self) -> Result<Vec<ToWorkers>> {
        decode_all(&self.to_workers_inbox)
    }
}

fn decode_all<T: for<'de> Deserialize<'de>>(inbox: &Inbox) -> Result<Vec<T>> {
    let texts = std::mem::take(&mut *inbox.borrow_mut());
    texts
        .iter()
        .map(|text| {
            serde_json::from_str(text).map_err(|source| Error::Control {
                action: "decoded",
                source,
            })
        })
        .collect()
}
