//! `flowstate inspect`: what a checkpoint storage holds.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use flowstate_api::snapshot::read_info;
use flowstate_api::{CheckpointId, CheckpointStorage, KeyedStateHandle};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A local checkpoint directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Or an object-store URL (s3://bucket/prefix, file:///dir).
    #[arg(long, conflicts_with = "dir")]
    storage_url: Option<String>,
    /// Only this checkpoint (default: all).
    #[arg(long)]
    checkpoint: Option<u64>,
}

pub async fn run(args: InspectArgs) -> Result<()> {
    let storage = match (&args.storage_url, &args.dir) {
        (Some(url), _) => CheckpointStorage::from_url(url, Vec::<(String, String)>::new())?,
        (None, Some(dir)) => CheckpointStorage::local(dir)?,
        (None, None) => anyhow::bail!("name the storage with --dir or --storage-url"),
    };
    let ids = match args.checkpoint {
        Some(id) => vec![CheckpointId(id)],
        None => storage.list_checkpoints().await?,
    };
    if ids.is_empty() {
        println!("no completed checkpoints");
    }
    for id in ids {
        let manifest = storage.read_manifest(id).await?;
        println!(
            "checkpoint {id}: parallelism {}, max parallelism {}",
            manifest.parallelism, manifest.max_parallelism
        );
        for subtask in &manifest.subtasks {
            println!(
                "  subtask {} key groups {}",
                subtask.subtask_index, subtask.key_group_range
            );
            if let Some(handle) = &subtask.keyed {
                println!(
                    "    keyed: {} ({} bytes)",
                    handle.describe(),
                    handle.total_size()
                );
                let files = match handle {
                    KeyedStateHandle::Canonical { file, .. } => vec![file.clone()],
                    KeyedStateHandle::Changelog { base, deltas, .. } => {
                        std::iter::once(base.clone())
                            .chain(deltas.iter().cloned())
                            .collect()
                    }
                    KeyedStateHandle::Native { .. } => Vec::new(),
                };
                for file in files {
                    let info = read_info(&storage, &file).await?;
                    let states: Vec<String> = info
                        .metadata
                        .states
                        .iter()
                        .map(|s| format!("{} ({})", s.name, s.kind))
                        .collect();
                    println!(
                        "      {} v{} {:?}: {} key-group blocks, states [{}]",
                        file.path,
                        info.version,
                        info.metadata.kind,
                        info.index.len(),
                        states.join(", ")
                    );
                }
            }
            if let Some(op) = &subtask.operator {
                println!("    operator state: {} ({} bytes)", op.path, op.size);
            }
        }
    }
    Ok(())
}
