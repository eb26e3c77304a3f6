//! The `flowstate` binary: parses the arguments, runs the command (see the `flowstate_cli`
//! library) and prints its error with every cause once. Exit code 0 on success, 1 on a
//! command's failure, 2 on a usage error (from the argument parser).

use std::process::ExitCode;

use clap::Parser;
use flowstate_cli::{output, Command};

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
    match runtime.block_on(cli.command.run()) {
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
