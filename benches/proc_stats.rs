//! Figures of a running process read from `/proc` (Linux): memory from `/proc/PID/status`,
//! CPU time from `/proc/PID/stat`. Shared by the benches that measure `fleet-agent` itself.

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, …) in KiB.
pub fn status_kib(pid: u32, field: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let prefix = format!("{field}:");
    status
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in {path}"))
}

/// utime + stime of `pid` (fields 14 and 15 of `/proc/PID/stat`), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| format!("{path}: no `)`"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let ticks =
        |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| format!("{path}: field {}", i + 3));
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second())
}

/// `getconf CLK_TCK` (100 on every Linux we run on; asked rather than assumed).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Voluntary context switches of every live thread of `pid` (`voluntary_ctxt_switches` of
/// `/proc/PID/task/*/status`): the process's wake-ups. Threads that already exited are not
/// counted (their count dies with them); short-lived threads show up in the strace counts as
/// `clone`/`clone3`.
pub fn wakeups(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("reading {dir}: {e}"))? {
        let path = entry.map_err(|e| format!("reading {dir}: {e}"))?.path().join("status");
        // A thread may exit between the listing and the read.
        let Ok(status) = std::fs::read_to_string(&path) else { continue };
        total += status_field(&status, "voluntary_ctxt_switches").unwrap_or(0);
    }
    Ok(total)
}

/// CPU time of every live thread of `pid` in nanoseconds (first field of
/// `/proc/PID/task/*/schedstat`): precise where `/proc/PID/stat` counts 10 ms ticks, but
/// threads that already exited are not in it (they are in [`cpu_seconds`]).
pub fn live_threads_cpu_ns(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("reading {dir}: {e}"))? {
        let path = entry.map_err(|e| format!("reading {dir}: {e}"))?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        total += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}

/// The number in a `Name:\tvalue` line of a `/proc/…/status` text.
fn status_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().parse().ok())
}

/// CPU time of the calling thread in nanoseconds (first field of `/proc/thread-self/schedstat`,
/// nanosecond resolution where `/proc/PID/stat` counts 10 ms ticks).
pub fn thread_cpu_ns() -> Result<u64, String> {
    // The kernel brings a running thread's total up to date only at a tick or a pass through
    // the scheduler: yield first, or the time since the last tick is missing.
    std::thread::yield_now();
    let path = "/proc/thread-self/schedstat";
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    text.split_whitespace().next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{path}: no run time"))
}

/// Threads on the whole host (sum of `Threads:` over `/proc/*/status`).
pub fn host_threads() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|status| status_field(&status, "Threads"))
        .sum()
}

/// What `strace -c` counted: every call, and the busiest syscalls by calls.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SyscallCounts {
    /// The `total` line's calls.
    pub total: u64,
    /// `(syscall, calls)`, most calls first.
    pub by_name: Vec<(String, u64)>,
}

/// Parse the summary table of `strace -c` (`% time seconds usecs/call calls [errors] syscall`
/// rows, then a `total` row).
pub fn parse_strace_summary(text: &str) -> Result<SyscallCounts, String> {
    let mut counts = SyscallCounts::default();
    let mut saw_total = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].parse::<f64>().is_err() {
            continue;
        }
        let (Some(name), Ok(calls)) = (fields.last(), fields[3].parse::<u64>()) else { continue };
        if *name == "total" {
            counts.total = calls;
            saw_total = true;
        } else {
            counts.by_name.push((name.to_string(), calls));
        }
    }
    counts.by_name.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if saw_total {
        Ok(counts)
    } else {
        Err("no `total` row in the strace summary".to_string())
    }
}

/// `strace -c -f` attached to a running process: counts its syscalls (every thread) until
/// [`StraceCount::finish`] detaches it.
pub struct StraceCount {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl StraceCount {
    /// Attach to `pid`, writing the summary to `out`. `None` when strace is not installed.
    pub fn attach(pid: u32, out: &std::path::Path) -> Result<Option<StraceCount>, String> {
        let spawned = std::process::Command::new("strace")
            .args(["-c", "-f", "-q", "-p", &pid.to_string(), "-o"])
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => Ok(Some(StraceCount { child, out: out.to_path_buf() })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("starting strace: {e}")),
        }
    }

    /// Detach (SIGINT makes strace print its summary) and read the counts.
    pub fn finish(mut self) -> Result<SyscallCounts, String> {
        let _ = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        self.child.wait().map_err(|e| format!("waiting for strace: {e}"))?;
        let text = std::fs::read_to_string(&self.out).map_err(|e| format!("reading {}: {e}", self.out.display()))?;
        parse_strace_summary(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_strace_summary_parses_with_and_without_errors_columns() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
            ------ ----------- ----------- --------- --------- ----------------\n \
             40.00    0.000040           2        20           read\n \
             35.00    0.000035           1        30         3 openat\n \
             25.00    0.000025           5         5           fsync\n\
            ------ ----------- ----------- --------- --------- ----------------\n\
            100.00    0.000100           1        55         3 total\n";
        let counts = parse_strace_summary(text).expect("parses");
        assert_eq!(counts.total, 55);
        assert_eq!(
            counts.by_name,
            vec![("openat".to_string(), 30), ("read".to_string(), 20), ("fsync".to_string(), 5)]
        );
        assert!(parse_strace_summary("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n").is_err());
    }

    #[test]
    fn status_fields_are_read_by_exact_name() {
        let status = "Name:\tfleet-agent\nThreads:\t3\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_field(status, "voluntary_ctxt_switches"), Some(120));
        assert_eq!(status_field(status, "Threads"), Some(3));
        assert_eq!(status_field(status, "VmRSS"), None);
    }
}
