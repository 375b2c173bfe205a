//! The lean Linux reader: one `/proc/PID/stat` per process (parsed by
//! [`parse_proc_pid_stat`]), the previous CPU times kept in two maps that swap every cycle
//! (no allocation once they have grown), user names resolved only for the listed processes
//! through a cache of `/etc/passwd`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use super::parse::{parse_meminfo_total, parse_passwd, parse_proc_pid_stat};
use super::{offer, TopEntry, TOP_N};
use crate::procfs::read_into;
use crate::CollectError;

/// Longest command name kept (the kernel's `TASK_COMM_LEN` is 16; newer kernels allow 64 for
/// kernel threads).
const NAME_CAP: usize = 64;

/// A process while the table is scanned: no heap allocation.
#[derive(Clone)]
struct Candidate {
    pid: u32,
    cpu: f64,
    rss_bytes: u64,
    name: heapless::String<NAME_CAP>,
}

/// State kept between cycles.
pub struct ProcReader {
    proc_root: PathBuf,
    previous: HashMap<u32, (u64, u64)>,
    current: HashMap<u32, (u64, u64)>,
    last: Option<Instant>,
    buf: String,
    path: String,
    users: Option<HashMap<u32, String>>,
    /// When `/etc/passwd` was last read (a uid it did not know rereads it, at most once a minute).
    users_read: Option<Instant>,
    total_memory: Option<u64>,
    page_size: u64,
    ticks_per_s: u64,
}

impl Default for ProcReader {
    fn default() -> Self {
        ProcReader::with_proc_root(PathBuf::from("/proc"))
    }
}

impl ProcReader {
    /// A reader of the process table under `proc_root` (tests point it at a fake tree).
    pub fn with_proc_root(proc_root: PathBuf) -> Self {
        ProcReader {
            proc_root,
            previous: HashMap::new(),
            current: HashMap::new(),
            last: None,
            buf: String::with_capacity(512),
            path: String::with_capacity(64),
            users: None,
            users_read: None,
            total_memory: None,
            page_size: rustix::param::page_size() as u64,
            ticks_per_s: rustix::param::clock_ticks_per_second().max(1),
        }
    }

    fn user_name(&mut self, pid: u32) -> String {
        let Ok(meta) = std::fs::metadata(self.proc_root.join(pid.to_string())) else {
            return "unknown".to_string();
        };
        let uid = meta.uid();
        let known = self.users.as_ref().is_some_and(|users| users.contains_key(&uid));
        let stale = self.users_read.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60));
        if !known && stale {
            self.users = std::fs::read_to_string("/etc/passwd")
                .ok()
                .and_then(|text| parse_passwd(&text).ok())
                .map(|list| list.into_iter().collect());
            self.users_read = Some(Instant::now());
        }
        self.users.as_ref().and_then(|users| users.get(&uid)).cloned().unwrap_or_else(|| uid.to_string())
    }

    /// (total, top by CPU, top by memory).
    pub fn read(&mut self) -> Result<(usize, Vec<TopEntry>, Vec<TopEntry>), CollectError> {
        if self.total_memory.is_none() {
            let path = self.proc_root.join("meminfo");
            let total = std::fs::read_to_string(&path)
                .map_err(|e| CollectError::Other(format!("reading {}: {e}", path.display())))
                .and_then(|text| {
                    parse_meminfo_total(&text)
                        .map_err(|error| CollectError::Parse { source: path.display().to_string(), error })
                })?;
            self.total_memory = Some(total.max(1));
        }
        let total_memory = self.total_memory.unwrap_or(1);
        let now = Instant::now();
        let elapsed = self.last.map(|last| now.duration_since(last).as_secs_f64()).filter(|s| *s > 0.0);
        self.last = Some(now);
        let dir = std::fs::read_dir(&self.proc_root)
            .map_err(|e| CollectError::Other(format!("listing {}: {e}", self.proc_root.display())))?;
        let mut total = 0usize;
        let mut by_cpu: heapless::Vec<Candidate, TOP_N> = heapless::Vec::new();
        let mut by_memory: heapless::Vec<Candidate, TOP_N> = heapless::Vec::new();
        self.current.clear();
        for entry in dir.flatten() {
            let file_name = entry.file_name();
            let Some(pid) = file_name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            total += 1;
            self.path.clear();
            let _ = write!(self.path, "{}/{pid}/stat", self.proc_root.display());
            // A process may exit between the listing and the read: it is counted, not listed.
            if read_into(&self.path, &mut self.buf).is_err() {
                continue;
            }
            let Ok(stat) = parse_proc_pid_stat(&self.buf) else { continue };
            self.current.insert(pid, (stat.start_ticks, stat.cpu_ticks));
            let cpu = match (self.previous.get(&pid), elapsed) {
                (Some(&(start, ticks)), Some(secs)) if start == stat.start_ticks => {
                    stat.cpu_ticks.saturating_sub(ticks) as f64 / self.ticks_per_s as f64 / secs * 100.0
                }
                _ => 0.0,
            };
            let mut name = heapless::String::new();
            for c in stat.name.chars() {
                if name.push(c).is_err() {
                    break;
                }
            }
            let candidate = Candidate { pid, cpu, rss_bytes: stat.rss_pages.saturating_mul(self.page_size), name };
            offer(&mut by_cpu, candidate.clone(), |a, b| b.cpu.total_cmp(&a.cpu).then(a.pid.cmp(&b.pid)));
            offer(&mut by_memory, candidate, |a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        let mut finish = |list: &heapless::Vec<Candidate, TOP_N>| -> Vec<TopEntry> {
            list.iter()
                .map(|c| TopEntry {
                    pid: c.pid,
                    name: c.name.to_string(),
                    cpu: c.cpu,
                    memory: c.rss_bytes as f64 * 100.0 / total_memory as f64,
                    user: self.user_name(c.pid),
                })
                .collect()
        };
        let top_cpu = finish(&by_cpu);
        let top_memory = finish(&by_memory);
        Ok((total, top_cpu, top_memory))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc` with the captured stat lines of the fixtures.
    fn fake_proc(dir: &std::path::Path, processes: &[(u32, &str)]) {
        let _ = std::fs::remove_dir_all(dir);
        for (pid, stat) in processes {
            let pid_dir = dir.join(pid.to_string());
            std::fs::create_dir_all(&pid_dir).expect("mkdir");
            std::fs::write(pid_dir.join("stat"), stat).expect("write");
        }
        std::fs::write(dir.join("meminfo"), "MemTotal:        1000 kB\n").expect("meminfo");
        std::fs::create_dir_all(dir.join("self")).expect("self");
    }

    #[test]
    fn cpu_is_the_tick_delta_over_the_interval_and_reused_pids_start_at_zero() {
        let dir = std::env::temp_dir().join(format!("fleet-fake-proc-{}", std::process::id()));
        let line = |pid: u32, ticks: u64, start: u64, rss: u64| {
            format!("{pid} (p{pid}) S 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 {start} 0 {rss} 0")
        };
        fake_proc(&dir, &[(10, &line(10, 0, 5, 10)), (11, &line(11, 0, 5, 20)), (12, &line(12, 0, 5, 1))]);
        let mut reader = ProcReader::with_proc_root(dir.clone());
        let (total, top_cpu, _) = reader.read().expect("first");
        assert_eq!(total, 3, "`self` and files are not processes");
        assert!(top_cpu.iter().all(|p| p.cpu == 0.0));
        // 10 uses 50 ticks, 11 is a new process under an old pid (other start time).
        fake_proc(&dir, &[(10, &line(10, 50, 5, 10)), (11, &line(11, 500, 9, 20)), (12, &line(12, 0, 5, 1))]);
        reader.last = Some(Instant::now() - std::time::Duration::from_secs(1));
        let (_, top_cpu, top_memory) = reader.read().expect("second");
        let _ = std::fs::remove_dir_all(&dir);
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        assert_eq!(top_cpu[0].pid, 10);
        assert!((top_cpu[0].cpu - 50.0 / ticks * 100.0).abs() < 5.0, "{}", top_cpu[0].cpu);
        assert_eq!(top_cpu.iter().find(|p| p.pid == 11).map(|p| p.cpu), Some(0.0));
        assert_eq!(top_memory.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![11, 10, 12]);
        let page = rustix::param::page_size() as f64;
        assert!((top_memory[0].memory - 20.0 * page * 100.0 / 1_024_000.0).abs() < 1e-9);
    }
}
