//! `flowstate`: the operator's tool for checkpoints (list, inspect, verify, plan, convert),
//! key-group routing, and the rescaling demo. This library is the whole command line; the
//! `flowstate` binary only parses the arguments into a [`Command`], runs it and reports its
//! error. Each command's module holds its arguments, its `run` and the report it prints
//! (`--json` prints that report; its field names are part of the interface).
//!
//! Every command that takes a checkpoint storage takes it as its first argument, as a user
//! types it: a local directory (`./ckpts`), `file:///abs/dir`, `s3://bucket/prefix` (with the
//! usual `AWS_*` variables; `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for a local server) or
//! `memory://` (an empty store, for tests). Read-only commands (`ls`, `inspect`, `verify`,
//! `plan`) never create or change anything.

#![warn(missing_docs)]

pub mod convert;
pub mod demo;
pub mod inspect;
pub mod key_group;
pub mod ls;
pub mod output;
pub mod plan;
pub mod resolve;
pub mod restore;
pub mod verify;

use anyhow::Result;
use clap::Subcommand;

/// The commands, as `flowstate <command>` takes them.
#[derive(Subcommand)]
pub enum Command {
    /// List the checkpoints of a storage: ids, times, parallelism, handle kinds, bytes,
    /// retention, and which shared files each uses.
    Ls(ls::LsArgs),
    /// Show a checkpoint's states, per key group row counts and bytes, and decoded rows.
    Inspect(inspect::InspectArgs),
    /// Check checkpoints: files and sizes, checksums, manifest structure, and a dry-run
    /// restore of every subtask. Exit code 0 only if everything holds.
    Verify(verify::VerifyArgs),
    /// Show which files and byte ranges each subtask reads to restore a checkpoint at a new
    /// parallelism.
    Plan(plan::PlanArgs),
    /// Write a canonical (portable, backend-independent) copy of a checkpoint, optionally at
    /// another parallelism.
    Convert(convert::ConvertArgs),
    /// The key group of a key and the subtask owning it.
    KeyGroup(key_group::KeyGroupArgs),
    /// Play a stateful pipeline: checkpoint, rescale 2 -> 3 -> 1, and check every count
    /// against a single-threaded reference.
    Demo(demo::DemoArgs),
}

impl Command {
    /// Runs the command; what it prints goes to stdout, its error to the caller.
    pub async fn run(self) -> Result<()> {
        match self {
            Command::Ls(args) => ls::run(args).await,
            Command::Inspect(args) => inspect::run(args).await,
            Command::Verify(args) => verify::run(args).await,
            Command::Plan(args) => plan::run(args).await,
            Command::Convert(args) => convert::run(args).await,
            Command::KeyGroup(args) => key_group::run(args),
            Command::Demo(args) => demo::run(args).await,
        }
    }
}
