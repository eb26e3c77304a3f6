//! The windowed word count on timely dataflow, state in flowstate.
//!
//! ```text
//! cargo run --release -p flowstate-timely --example wordcount -- \
//!     --backend heap --storage /tmp/wc-ckpts --output /tmp/wc-out -- -w 2
//! ```
//!
//! Options before `--` are the job's (`--help`), after it timely's (`-w` workers per
//! process, `-n` processes, `-p` this process's index, `-h` hostfile). Run it again on the
//! same storage to restart from the latest checkpoint, at any worker count. A run that read
//! the whole input in one process checks itself against the single-threaded reference.

use std::process::ExitCode;

use clap::Parser;
use flowstate_timely::wordcount::{run, verify, JobArgs};

fn main() -> ExitCode {
    let all: Vec<String> = std::env::args().collect();
    let split = all.iter().position(|a| a == "--").unwrap_or(all.len());
    let args = JobArgs::parse_from(&all[..split]);
    let timely_args: Vec<String> = all.iter().skip(split + 1).cloned().collect();
    let started = std::time::Instant::now();
    match run(&args, timely_args.clone()) {
        Ok(reports) => {
            for r in &reports {
                println!(
                    "worker {}/{}: restored from {:?} in {} ms, partitions {:?}, read {} records from round {}",
                    r.worker, r.peers, r.restored_from, r.restore_millis, r.partitions, r.records_read, r.first_round
                );
                for (id, uploaded, reused, millis) in &r.checkpoints {
                    println!("  checkpoint {id}: {uploaded} bytes uploaded, {reused} bytes reused, {millis} ms");
                }
            }
            println!("finished in {:.2} s", started.elapsed().as_secs_f64());
            let single_process = !timely_args
                .iter()
                .any(|a| a == "-n" || a.starts_with("--processes"));
            if single_process && args.stop_after.is_none() {
                let check = args
                    .backend
                    .build()
                    .map_err(flowstate_timely::Error::from)
                    .and_then(|factory| {
                        let runtime = tokio::runtime::Runtime::new()
                            .map_err(|e| flowstate_timely::Error::Config(e.to_string()))?;
                        let storage = flowstate_api::CheckpointStorage::open(&args.storage)?;
                        verify(&args, &storage, factory.as_ref(), &runtime)
                    });
                match check {
                    Ok(v) => println!(
                        "OK: {} words, {} records in checkpoint {} and every window file equal the single-threaded reference",
                        v.words, v.records, v.checkpoint
                    ),
                    Err(error) => {
                        eprintln!("CHECK FAILED: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
