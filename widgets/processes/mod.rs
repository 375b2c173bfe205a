//! `processes`: the process count and the top 5 processes by CPU and by memory, as Atlas's
//! agent reports them: `{total, top_cpu[], top_memory[]}` with entries `{pid, name, cpu,
//! memory, user}`, `cpu` and `memory` in percent. `total` counts every process the kernel
//! lists, kernel threads included (psutil's `len(pids())`). CPU percent is over the interval
//! since the previous collection (0 on the first reading), of one core, so a busy
//! multi-threaded process can exceed 100 as `top` shows it; memory percent is resident
//! memory over physical memory.
//!
//! Linux: a lean reader of `/proc/PID/stat` only (one small file per process, no per-thread
//! reads), user names from a cache of `/etc/passwd` (read again at most once a minute for an unknown uid), looked up for the ten listed
//! processes only ([`parse`] holds the pure parsers). Other OSes: `sysinfo`.

pub mod parse;

use serde_json::{json, Value};

use crate::units::round1;
use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};

/// How many processes each top list holds.
pub const TOP_N: usize = 5;

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "processes",
    summary: "Process count; top 5 by CPU and by memory (pid, name, cpu %, memory %, user)",
    enabled_by_default: true,
    // The top lists are the costliest reading (one /proc file per process, about 3.5 µs
    // each) and nobody needs them every second: every 10 s (Atlas's report interval) unless
    // configured, whatever the global interval.
    default_interval_s: Some(10),
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(ProcessesWidget::default()),
};

/// Insert `item` into `top` (kept sorted by `order`, at most `TOP_N` long) if it belongs
/// there: the top list is built while scanning, with no copy or sort of the whole table.
pub fn offer<T>(top: &mut heapless::Vec<T, TOP_N>, item: T, order: impl Fn(&T, &T) -> std::cmp::Ordering) {
    let at = top.iter().position(|kept| order(&item, kept) == std::cmp::Ordering::Less).unwrap_or(top.len());
    if at >= TOP_N {
        return;
    }
    if top.is_full() {
        top.pop();
    }
    // Cannot fail: there is room after the pop and `at` is at most the length.
    let _ = top.insert(at.min(top.len()), item);
}

/// The first `TOP_N` items of `items` in `order`.
pub fn top_n<T>(
    items: impl Iterator<Item = T>,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> heapless::Vec<T, TOP_N> {
    let mut top = heapless::Vec::new();
    for item in items {
        offer(&mut top, item, &order);
    }
    top
}

/// One entry of a top list, before it is written as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct TopEntry {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub name: String,
    /// CPU percent of one core over the last interval.
    pub cpu: f64,
    /// Resident memory in percent of physical memory.
    pub memory: f64,
    /// Owner's user name (the numeric uid when the name is unknown).
    pub user: String,
}

impl TopEntry {
    /// Atlas's entry shape `{pid, name, cpu, memory, user}` (`fleet_agent.py`).
    pub fn to_json(&self) -> Value {
        json!({ "pid": self.pid, "name": self.name, "cpu": round1(self.cpu), "memory": round1(self.memory), "user": self.user })
    }
}

/// The widget's reading, shaped as `metrics.processes`.
pub fn processes_json(total: usize, top_cpu: &[TopEntry], top_memory: &[TopEntry]) -> Value {
    json!({
        "total": total,
        "top_cpu": top_cpu.iter().map(TopEntry::to_json).collect::<Vec<_>>(),
        "top_memory": top_memory.iter().map(TopEntry::to_json).collect::<Vec<_>>(),
    })
}

/// Holds the previous sample between cycles (CPU usage needs it).
#[derive(Default)]
pub struct ProcessesWidget {
    #[cfg(target_os = "linux")]
    reader: linux::ProcReader,
    #[cfg(not(target_os = "linux"))]
    reader: other::SysinfoReader,
}

impl Widget for ProcessesWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let (total, top_cpu, top_memory) = self.reader.read()?;
        Ok(vec![Sample::metric("processes", processes_json(total, &top_cpu, &top_memory))])
    }
}

#[cfg(target_os = "linux")]
pub mod linux;

#[cfg(not(target_os = "linux"))]
mod other {
    //! The `sysinfo` reader, for macOS and the rest.
    use sysinfo::{MemoryRefreshKind, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System, UpdateKind, Users};

    use super::{top_n, TopEntry};
    use crate::units::percent;
    use crate::CollectError;

    /// Process and user tables kept between cycles.
    #[derive(Default)]
    pub struct SysinfoReader {
        system: Option<System>,
        users: Option<Users>,
    }

    impl SysinfoReader {
        /// (total, top by CPU, top by memory).
        pub fn read(&mut self) -> Result<(usize, Vec<TopEntry>, Vec<TopEntry>), CollectError> {
            if self.system.is_none() {
                let kind = RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram());
                let system = System::new_with_specifics(kind)
                    .map_err(|e| CollectError::Other(format!("reading process table: {e}")))?;
                self.system = Some(system);
            }
            if self.users.is_none() {
                self.users = Users::new_with_refreshed_list().ok();
            }
            let Some(system) = self.system.as_mut() else {
                return Err(CollectError::Other("process table unavailable".to_string()));
            };
            let refresh = ProcessRefreshKind::nothing().with_cpu().with_memory().with_user(UpdateKind::OnlyIfNotSet);
            system.refresh_processes_specifics(ProcessesToUpdate::All, true, refresh);
            system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
            let total_memory = system.total_memory();
            let processes = || system.processes().values().filter(|p| p.thread_kind().is_none());
            let users = self.users.as_ref();
            let entry = |p: &sysinfo::Process| TopEntry {
                pid: p.pid().as_u32(),
                name: p.name().to_string_lossy().into_owned(),
                cpu: f64::from(p.cpu_usage()),
                memory: percent(p.memory(), total_memory),
                user: p
                    .user_id()
                    .and_then(|uid| users.and_then(|u| u.get_user_by_id(uid)))
                    .map(|u| u.name().to_string())
                    .or_else(|| p.user_id().map(|uid| uid.to_string()))
                    .unwrap_or_else(|| "unknown".to_string()),
            };
            let total = processes().count();
            let by_cpu = top_n(processes(), |a, b| b.cpu_usage().total_cmp(&a.cpu_usage()).then(a.pid().cmp(&b.pid())));
            let by_memory = top_n(processes(), |a, b| b.memory().cmp(&a.memory()).then(a.pid().cmp(&b.pid())));
            Ok((total, by_cpu.iter().map(|p| entry(p)).collect(), by_memory.iter().map(|p| entry(p)).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixtureHost, Os};

    #[test]
    fn top_n_keeps_the_best_five_in_order() {
        let values = [3, 9, 1, 7, 7, 2, 8, 0, 5];
        let top = top_n(values.iter().copied(), |a, b| b.cmp(a));
        assert_eq!(top.as_slice(), &[9, 8, 7, 7, 5]);
        let few = top_n([2, 1].into_iter(), |a: &i32, b: &i32| b.cmp(a));
        assert_eq!(few.as_slice(), &[2, 1]);
    }

    #[test]
    fn entries_have_atlas_names_and_types() {
        let mut widget = ProcessesWidget::default();
        let host = FixtureHost::new(Os::Linux);
        widget.collect(&host, Timestamp(0)).expect("first reading");
        // Burn a little CPU so the second reading has a busy process.
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(spin.elapsed());
        }
        let samples = widget.collect(&host, Timestamp(1000)).expect("processes");
        let d = &samples[0].data;
        let total = d["total"].as_u64().expect("total");
        let listed = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()).count()
            })
            .unwrap_or(0) as u64;
        assert!(total.abs_diff(listed) <= 5, "total {total}, /proc lists {listed}");
        for list in ["top_cpu", "top_memory"] {
            let top = d[list].as_array().expect(list);
            assert!(!top.is_empty() && top.len() <= TOP_N);
            for p in top {
                assert!(p["pid"].is_u64() && p["name"].is_string() && p["user"].is_string(), "{p}");
                assert!(p["cpu"].is_f64() && p["memory"].is_f64(), "{p}");
                assert!(p.get("cpu_percent").is_none());
            }
        }
        let mems: Vec<f64> =
            d["top_memory"].as_array().into_iter().flatten().filter_map(|p| p["memory"].as_f64()).collect();
        assert!(mems.windows(2).all(|w| w[0] >= w[1]), "{mems:?}");
        let cpus: Vec<f64> = d["top_cpu"].as_array().into_iter().flatten().filter_map(|p| p["cpu"].as_f64()).collect();
        assert!(cpus.windows(2).all(|w| w[0] >= w[1]), "{cpus:?}");
        assert!(cpus[0] > 0.0, "this test process was busy: {cpus:?}");
    }
}
