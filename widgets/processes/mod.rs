//! `processes`: the process count and the top 5 processes by CPU and by memory. CPU percent
//! is over the interval since the previous collection (the first reading shows 0), of one core
//! (so a busy multi-threaded process can exceed 100, as `top` shows it).

use serde_json::{json, Value};
use sysinfo::{
    MemoryRefreshKind, Process, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System, UpdateKind, Users,
};

use crate::units::{percent, round1};
use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};

/// How many processes each top list holds.
pub const TOP_N: usize = 5;

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "processes",
    summary: "Process count; top 5 by CPU and by memory (pid, name, cpu %, memory %, user)",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(ProcessesWidget::default()),
};

/// The first `TOP_N` items of `items` in `order`, kept in a fixed-capacity list while scanning
/// (no copy or sort of the whole process table).
pub fn top_n<T: Copy>(
    items: impl Iterator<Item = T>,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> heapless::Vec<T, TOP_N> {
    let mut top: heapless::Vec<T, TOP_N> = heapless::Vec::new();
    for item in items {
        let at = top.iter().position(|kept| order(&item, kept) == std::cmp::Ordering::Less).unwrap_or(top.len());
        if at >= TOP_N {
            continue;
        }
        if top.is_full() {
            top.pop();
        }
        // Cannot fail: there is room after the pop and `at` is at most the length.
        let _ = top.insert(at.min(top.len()), item);
    }
    top
}

/// Holds process and user tables between cycles (CPU usage needs the previous sample).
#[derive(Default)]
pub struct ProcessesWidget {
    system: Option<System>,
    users: Option<Users>,
}

impl ProcessesWidget {
    /// One entry of a top list.
    fn describe(users: Option<&Users>, process: &Process, total_memory: u64) -> Value {
        let user = process
            .user_id()
            .and_then(|uid| users.and_then(|users| users.get_user_by_id(uid)))
            .map(|user| user.name().to_string());
        json!({
            "pid": process.pid().as_u32(),
            "name": process.name().to_string_lossy(),
            "cpu_percent": round1(f64::from(process.cpu_usage())),
            "memory_percent": percent(process.memory(), total_memory),
            "user": user,
        })
    }
}

impl Widget for ProcessesWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
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
        let total = processes().count();
        let by_cpu = top_n(processes(), |a, b| b.cpu_usage().total_cmp(&a.cpu_usage()).then(a.pid().cmp(&b.pid())));
        let by_memory = top_n(processes(), |a, b| b.memory().cmp(&a.memory()).then(a.pid().cmp(&b.pid())));
        let top_cpu: Vec<Value> =
            by_cpu.iter().take(TOP_N).map(|p| Self::describe(self.users.as_ref(), p, total_memory)).collect();
        let top_memory: Vec<Value> =
            by_memory.iter().take(TOP_N).map(|p| Self::describe(self.users.as_ref(), p, total_memory)).collect();
        let data = json!({ "total": total, "top_cpu": top_cpu, "top_memory": top_memory });
        Ok(vec![Sample::metric("processes", data)])
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
    fn lists_at_most_five_sorted_by_memory() {
        let samples =
            ProcessesWidget::default().collect(&FixtureHost::new(Os::Linux), Timestamp(0)).expect("processes");
        let d = &samples[0].data;
        assert!(d["total"].as_u64().is_some_and(|n| n >= 1));
        let top = d["top_memory"].as_array().expect("top_memory");
        assert!(!top.is_empty() && top.len() <= TOP_N);
        let mems: Vec<f64> = top.iter().filter_map(|p| p["memory_percent"].as_f64()).collect();
        assert!(mems.windows(2).all(|w| w[0] >= w[1]));
        for p in top {
            assert!(p["pid"].is_u64() && p["name"].is_string() && p["cpu_percent"].is_f64());
        }
    }
}
