//! `fleet-bench`: the project's benchmarks, as a small binary (numbers, not pass/fail).
//!
//! Build and run in release mode: `cargo run --release --bin fleet-bench -- <bench> [--quick]`.
//! Each bench lives in its own module file.

use std::process::ExitCode;

#[path = "collectd_subject.rs"]
mod collectd_subject;
#[path = "footprint_bench.rs"]
mod footprint_bench;
#[path = "host_load.rs"]
mod host_load;
#[path = "proc_stats.rs"]
mod proc_stats;
#[path = "receiver_bench.rs"]
mod receiver_bench;
#[path = "scale_bench.rs"]
mod scale_bench;
#[path = "sender_bench.rs"]
mod sender_bench;
#[path = "spool_bench.rs"]
mod spool_bench;
#[path = "stages_bench.rs"]
mod stages_bench;

const USAGE: &str = "usage: fleet-bench <bench> [--quick]\n\nbenches:\n  footprint  binary size; per-stage CPU of a cycle; RSS, CPU per cycle, wake-ups and syscalls of `run` beside collectd\n             [--seconds N] [--threads N] [--agent FILE] [--no-collectd] [--no-stages]\n  receiver   v2 batches/s of 100 records on loopback with a plaintext and a sealed store, RSS of\n             `fleet-agent receive`, peak RSS under 16 concurrent exports (--export-store-mb N)\n  scale      N simulated machines' sealed v2 batches against 1, 2 and 4 receivers on one PostgreSQL
             (FLEET_TEST_POSTGRES or --postgres URL) and the file store: batches/s, latency, RSS,
             store bytes per million records [--machines N] [--seconds S] [--rate B] [--seed N]
             [--clients C] [--receivers 1,2,4] [--workers N] [--records-per-batch R] [--no-file-store]
  spool      append records/s per fsync policy, read records/s, bytes on disk per record\n  sender     drain rate of a 100,000-record backlog (atlas and v2) and peak RSS while draining\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("footprint") => footprint_bench::run(&args[1..]),
        Some("sender") => sender_bench::run(&args[1..]),
        Some("receiver") => receiver_bench::run(&args[1..]),
        Some("scale") => scale_bench::run(&args[1..]),
        Some("spool") => spool_bench::run(&args[1..]),
        // The host load's children (see host_load.rs), not a bench.
        Some("idle-threads") => host_load::idle_threads_main(&args[1..]),
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
