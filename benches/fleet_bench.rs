//! `fleet-bench`: the project's benchmarks, as a small binary (numbers, not pass/fail).
//!
//! Build and run in release mode: `cargo run --release --bin fleet-bench -- <bench> [--quick]`.
//! Each bench lives in its own module file.

use std::process::ExitCode;

#[path = "receiver_bench.rs"]
mod receiver_bench;
#[path = "spool_bench.rs"]
mod spool_bench;

const USAGE: &str = "usage: fleet-bench <bench> [--quick]\n\nbenches:\n  receiver   v2 batches/s of 100 records on loopback, idle RSS of `fleet-agent receive`\n  spool      append records/s per fsync policy, read records/s, bytes on disk per record\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("receiver") => receiver_bench::run(&args[1..]),
        Some("spool") => spool_bench::run(&args[1..]),
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
