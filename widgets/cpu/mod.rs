//! `cpu`: utilisation over the interval since the previous collection, per core, load averages
//! and counts. It never sleeps inside a cycle: the percentage is the difference between two
//! refreshes one interval apart (the first reading after start covers the time since boot).

use serde_json::json;
use sysinfo::{CpuRefreshKind, RefreshKind, System};

use crate::units::{round1, round2};
use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "cpu",
    summary: "CPU percent since the last cycle, per core, load averages, core counts",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(CpuWidget::default()),
};

/// Keeps the `sysinfo` state between cycles so usage is measured over the interval.
#[derive(Default)]
pub struct CpuWidget {
    system: Option<System>,
    last: Option<Timestamp>,
    /// Physical cores, read once: on Linux it is a walk of `/proc/cpuinfo`, the costliest
    /// file of a cycle, for a number that does not change while the agent runs.
    physical_cores: Option<Option<usize>>,
}

impl Widget for CpuWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let system = match &mut self.system {
            Some(system) => {
                system.refresh_cpu_usage();
                system
            }
            None => {
                let kind = RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing().with_usage());
                let system = System::new_with_specifics(kind)
                    .map_err(|e| CollectError::Other(format!("reading CPU statistics: {e}")))?;
                self.system.insert(system)
            }
        };
        let per_core: Vec<f64> = system.cpus().iter().map(|c| round1(f64::from(c.usage()))).collect();
        let load = System::load_average().ok();
        let count = *self.physical_cores.get_or_insert_with(|| System::physical_core_count().ok());
        let interval_s = self.last.map(|last| round2((now.0 - last.0) as f64 / 1000.0));
        self.last = Some(now);
        let data = json!({
            "percent": round1(f64::from(system.global_cpu_usage())),
            "per_core": per_core,
            "count": count,
            "threads": system.cpus().len(),
            "load_avg": load.map(|l| json!([round2(l.one), round2(l.five), round2(l.fifteen)])),
            "interval_s": interval_s,
        });
        Ok(vec![Sample::metric("cpu", data)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixtureHost, Os};

    #[test]
    fn reports_percent_within_bounds_and_one_value_per_thread() {
        let mut widget = CpuWidget::default();
        let host = FixtureHost::new(Os::Linux);
        widget.collect(&host, Timestamp(0)).expect("first reading");
        let samples = widget.collect(&host, Timestamp(1500)).expect("second reading");
        let data = &samples[0].data;
        let percent = data["percent"].as_f64().expect("percent is a number");
        assert!((0.0..=100.0).contains(&percent));
        let threads = data["threads"].as_u64().expect("threads");
        assert_eq!(data["per_core"].as_array().map(Vec::len), Some(threads as usize));
        assert_eq!(data["interval_s"], json!(1.5));
    }
}
