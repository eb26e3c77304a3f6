//! Fencing epochs: one writer per storage root.
//!
//! [`Fence::claim`] lists `_coordinator/`, takes the highest epoch `N` there and creates
//! `_coordinator/epoch-<N+1>` with a create-only write; losing that race to another
//! coordinator means trying again one higher. [`Fence::check`] lists `_coordinator/` again:
//! an epoch above ours means a newer coordinator took over, and from then on every check
//! fails with [`Error::Fenced`]. Epoch markers below ours are deleted after a claim (the
//! check looks for any higher epoch, so the newest marker is all that must stay).

use bytes::Bytes;

use crate::checkpoint::CheckpointStorage;
use crate::error::{Error, Result};

const COORDINATOR_DIR: &str = "_coordinator";
const EPOCH_PREFIX: &str = "epoch-";
/// Claims lost in a row before giving up.
const MAX_CLAIM_ATTEMPTS: usize = 16;

fn epoch_path(epoch: u64) -> String {
    format!("{COORDINATOR_DIR}/{EPOCH_PREFIX}{epoch:020}")
}

#[derive(Debug)]
pub(crate) struct Fence {
    epoch: u64,
    /// The newer epoch seen, once fenced.
    fenced_by: Option<u64>,
}

impl Fence {
    /// Claims the next epoch of `storage` (see the module docs).
    pub(crate) async fn claim(storage: &CheckpointStorage) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let epochs = list_epochs(storage).await?;
            let epoch = epochs.last().copied().unwrap_or(0) + 1;
            let body = serde_json::json!({
                "epoch": epoch,
                "pid": std::process::id(),
                "claimed_at_unix_ms": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            });
            match storage
                .put_if_absent(&epoch_path(epoch), Bytes::from(body.to_string()))
                .await
            {
                Ok(_) => {
                    for old in epochs.into_iter().filter(|e| *e < epoch) {
                        if let Err(error) = storage.delete(&epoch_path(old)).await {
                            tracing::debug!(epoch = old, %error, "deleting an old epoch marker failed");
                        }
                    }
                    tracing::info!(epoch, "claimed the checkpoint storage");
                    return Ok(Self {
                        epoch,
                        fenced_by: None,
                    });
                }
                Err(Error::Storage {
                    source: object_store::Error::AlreadyExists { .. },
                    ..
                }) => {
                    last_error = Some(epoch);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Fenced {
            epoch: 0,
            newer: last_error.unwrap_or(0),
        })
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The fencing error, if a newer coordinator was seen before.
    pub(crate) fn fenced(&self) -> Option<Error> {
        self.fenced_by.map(|newer| Error::Fenced {
            epoch: self.epoch,
            newer,
        })
    }

    /// Fails with [`Error::Fenced`] if a newer coordinator claimed the storage. Call it after
    /// deciding what to change and right before changing it.
    pub(crate) async fn check(&mut self, storage: &CheckpointStorage) -> Result<()> {
        if let Some(error) = self.fenced() {
            return Err(error);
        }
        let highest = list_epochs(storage).await?.last().copied().unwrap_or(0);
        if highest > self.epoch {
            tracing::warn!(
                epoch = self.epoch,
                newer = highest,
                "a newer coordinator claimed the checkpoint storage: this one stops publishing and deleting"
            );
            self.fenced_by = Some(highest);
            return Err(Error::Fenced {
                epoch: self.epoch,
                newer: highest,
            });
        }
        Ok(())
    }
}

/// Every epoch marker's epoch, ascending.
async fn list_epochs(storage: &CheckpointStorage) -> Result<Vec<u64>> {
    let mut epochs: Vec<u64> = storage
        .list(COORDINATOR_DIR)
        .await?
        .into_iter()
        .filter_map(|(path, _)| {
            let name = path.strip_prefix(COORDINATOR_DIR)?.strip_prefix('/')?;
            name.strip_prefix(EPOCH_PREFIX)?.parse::<u64>().ok()
        })
        .collect();
    epochs.sort_unstable();
    Ok(epochs)
}
