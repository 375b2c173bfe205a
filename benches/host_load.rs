//! `--threads N`: idle threads that make this machine's process table look like a laptop's
//! (a few hundred threads in a few dozen processes), so readers that walk `/proc` pay what
//! they pay on a real endpoint. The load is `fleet-bench idle-threads K` children, each K
//! threads parked forever (no CPU), stopped with the bench.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::receiver_bench::Running;

/// Threads per idle child process (a laptop has about 400 threads in about 100 processes).
const THREADS_PER_PROCESS: u64 = 4;

/// Threads the bench tops the host up to when `--threads` is not given.
pub const LAPTOP_THREADS: u64 = 400;

/// The idle children; dropping this stops them.
pub struct IdleLoad {
    children: Vec<Running>,
}

impl IdleLoad {
    /// Start `threads` idle threads in `ceil(threads / 4)` processes of `fleet-bench`.
    pub fn spawn(threads: u64) -> Result<IdleLoad, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating fleet-bench: {e}"))?;
        let mut children = Vec::new();
        let mut left = threads;
        while left > 0 {
            let here = left.min(THREADS_PER_PROCESS);
            let child = Command::new(&exe)
                .args(["idle-threads", &here.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting idle threads: {e}"))?;
            children.push(Running(child));
            left -= here;
        }
        Ok(IdleLoad { children })
    }

    /// How many processes carry the load.
    pub fn processes(&self) -> usize {
        self.children.len()
    }
}

/// `fleet-bench idle-threads K`: K threads (this one included) that sleep until stdin closes
/// (the bench exits or drops the load).
pub fn idle_threads_main(args: &[String]) -> Result<(), String> {
    let count: u64 = args.first().and_then(|a| a.parse().ok()).ok_or("idle-threads needs a count")?;
    for _ in 1..count {
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| loop {
                std::thread::park();
            })
            .map_err(|e| format!("spawning an idle thread: {e}"))?;
    }
    let mut sink = [0u8; 64];
    while std::io::stdin().read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    Ok(())
}
