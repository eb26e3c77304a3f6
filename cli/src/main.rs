//! `flowstate`: the operator's tool for checkpoints (list, inspect, verify, plan, convert),
//! key-group routing, and the rescaling demo.
//!
//! Every command that takes a checkpoint storage takes it as its first argument, as a user
//! types it: a local directory (`./ckpts`), `file:///abs/dir`, `s3://bucket/prefix` (with the
//! usual `AWS_*` variables; `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for a local server) or
//! `memory://` (an empty store, for tests). Read-only commands (`ls`, `inspect`, `verify`,
//! `plan`) never create or change anything. Listing commands print JSON with `--json`; the
//! field names are part of the interface (see each command's report type).

mod convert;
mod demo;
mod inspect;
mod key_group;
mod ls;
mod output;
mod plan;
mod restore;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flowstate",
    version,
    about = "Look into, check, plan and convert flowstate checkpoints; run the rescaling demo",
    after_help = "Examples:\n  flowstate ls ./ckpts\n  flowstate verify s3://bucket/job --all\n  flowstate plan ./ckpts --checkpoint 12 --parallelism 4\n  flowstate convert ./ckpts --checkpoint 12 --to ./portable --parallelism 2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

/// `flowstate ls ./ckpts | head` must end quietly when `head` closes the pipe, as other
/// command-line tools do, not panic in `println!`: Rust ignores SIGPIPE by default, so the
/// default action (terminate) is restored.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ls(args) => ls::run(args).await,
            Command::Inspect(args) => inspect::run(args).await,
            Command::Verify(args) => verify::run(args).await,
            Command::Plan(args) => plan::run(args).await,
            Command::Convert(args) => convert::run(args).await,
            Command::KeyGroup(args) => key_group::run(args),
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut lines = output::error_lines(&e).into_iter();
            if let Some(first) = lines.next() {
                eprintln!("error: {first}");
            }
            for cause in lines {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
