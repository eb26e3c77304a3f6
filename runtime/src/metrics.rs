//! Metrics the runtime records through the [`metrics`] facade: the engine installs whatever
//! recorder (exporter) it uses; with none installed, recording costs next to nothing.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `flowstate_checkpoint_sync_seconds` | histogram | backend | synchronous half of a subtask's checkpoint |
//! | `flowstate_checkpoint_async_seconds` | histogram | backend | a subtask's upload |
//! | `flowstate_checkpoint_subtask_bytes` | histogram | backend | bytes a subtask's checkpoint references (shared files included): its state size |
//! | `flowstate_checkpoint_duration_seconds` | histogram | | trigger to completion, per checkpoint |
//! | `flowstate_checkpoint_bytes_uploaded` | counter | | bytes of files first referenced by a completed checkpoint |
//! | `flowstate_checkpoint_bytes_reused` | counter | | bytes of shared files a completed checkpoint took over from earlier ones |
//! | `flowstate_checkpoint_size_bytes` | gauge | | bytes the latest completed checkpoint references |
//! | `flowstate_checkpoints_completed` / `_aborted` | counter | | |
//! | `flowstate_checkpoint_late_acks` | counter | | acknowledgements for checkpoints already aborted (their files are deleted) |
//! | `flowstate_restore_seconds` | histogram | backend | restore of one subtask |
//! | `flowstate_restore_handle_bytes` | histogram | backend | bytes of the handles a subtask restore draws on |

use std::time::Duration;

/// Histogram, label `backend`: seconds of the synchronous half of a subtask's checkpoint.
pub const CHECKPOINT_SYNC_SECONDS: &str = "flowstate_checkpoint_sync_seconds";
/// Histogram, label `backend`: seconds of a subtask's upload.
pub const CHECKPOINT_ASYNC_SECONDS: &str = "flowstate_checkpoint_async_seconds";
/// Histogram, label `backend`: bytes a subtask's checkpoint references, shared files included.
pub const CHECKPOINT_SUBTASK_BYTES: &str = "flowstate_checkpoint_subtask_bytes";
/// Histogram: seconds from trigger to completion of a checkpoint.
pub const CHECKPOINT_DURATION_SECONDS: &str = "flowstate_checkpoint_duration_seconds";
/// Counter: bytes of files first referenced by a completed checkpoint.
pub const CHECKPOINT_BYTES_UPLOADED: &str = "flowstate_checkpoint_bytes_uploaded";
/// Counter: bytes of shared files a completed checkpoint took over from earlier ones.
pub const CHECKPOINT_BYTES_REUSED: &str = "flowstate_checkpoint_bytes_reused";
/// Gauge: bytes the latest completed checkpoint references.
pub const CHECKPOINT_SIZE_BYTES: &str = "flowstate_checkpoint_size_bytes";
/// Counter: checkpoints completed.
pub const CHECKPOINTS_COMPLETED: &str = "flowstate_checkpoints_completed";
/// Counter: checkpoints aborted.
pub const CHECKPOINTS_ABORTED: &str = "flowstate_checkpoints_aborted";
/// Counter: acknowledgements for checkpoints already aborted.
pub const CHECKPOINT_LATE_ACKS: &str = "flowstate_checkpoint_late_acks";
/// Histogram, label `backend`: seconds of the restore of one subtask.
pub const RESTORE_SECONDS: &str = "flowstate_restore_seconds";
/// Histogram, label `backend`: bytes of the handles a subtask restore draws on.
pub const RESTORE_HANDLE_BYTES: &str = "flowstate_restore_handle_bytes";

pub(crate) fn record_sync(backend: &str, elapsed: Duration) {
    metrics::histogram!(CHECKPOINT_SYNC_SECONDS, "backend" => backend.to_string())
        .record(elapsed.as_secs_f64());
}

pub(crate) fn record_async(backend: &str, elapsed: Duration, bytes: u64) {
    metrics::histogram!(CHECKPOINT_ASYNC_SECONDS, "backend" => backend.to_string())
        .record(elapsed.as_secs_f64());
    metrics::histogram!(CHECKPOINT_SUBTASK_BYTES, "backend" => backend.to_string())
        .record(bytes as f64);
}

pub(crate) fn record_restore(backend: &str, elapsed: Duration, handle_bytes: u64) {
    metrics::histogram!(RESTORE_SECONDS, "backend" => backend.to_string())
        .record(elapsed.as_secs_f64());
    metrics::histogram!(RESTORE_HANDLE_BYTES, "backend" => backend.to_string())
        .record(handle_bytes as f64);
}

pub(crate) fn record_completed(elapsed: Duration, uploaded: u64, reused: u64, size: u64) {
    metrics::histogram!(CHECKPOINT_DURATION_SECONDS).record(elapsed.as_secs_f64());
    metrics::counter!(CHECKPOINT_BYTES_UPLOADED).increment(uploaded);
    metrics::counter!(CHECKPOINT_BYTES_REUSED).increment(reused);
    metrics::gauge!(CHECKPOINT_SIZE_BYTES).set(size as f64);
    metrics::counter!(CHECKPOINTS_COMPLETED).increment(1);
}

pub(crate) fn record_aborted() {
    metrics::counter!(CHECKPOINTS_ABORTED).increment(1);
}

pub(crate) fn record_late_ack() {
    metrics::counter!(CHECKPOINT_LATE_ACKS).increment(1);
}
