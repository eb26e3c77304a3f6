//! `flowstate`: the rescaling demo and checkpoint inspection.

mod demo;
mod inspect;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flowstate",
    version,
    about = "Rescalable state backends for stream processing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play a stateful pipeline on the heap backend: checkpoint, rescale 2 -> 3 -> 1, and check
    /// every count against a single-threaded reference.
    Demo(demo::DemoArgs),
    /// List the checkpoints in a checkpoint storage and describe their files.
    Inspect(inspect::InspectArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Inspect(args) => runtime.block_on(inspect::run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
