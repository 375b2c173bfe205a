//! `cpu`: utilisation over the interval since the previous collection, per core, load averages
//! and counts. It never sleeps inside a cycle: the percentage is the difference between two
//! readings one interval apart (the first reading after start covers the time since boot).
//!
//! Linux: a lean reader of `/proc/stat` and `/proc/loadavg`, both kept open between cycles
//! ([`crate::procfs::ProcFile`]; pure parsers in [`parse`], the arithmetic of two readings in
//! [`usage`]), `/proc/cpuinfo` once for the physical cores.
//! Other OSes: `sysinfo`.

pub mod parse;
pub mod usage;

use serde_json::json;

use crate::units::round2;
use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};
use parse::LoadAvg;

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

/// One reading, whatever the OS.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuReading {
    /// Whole-machine utilisation, % with one decimal.
    pub percent: f64,
    /// Utilisation of each logical CPU, in order.
    pub per_core: Vec<f64>,
    /// Load averages, where the OS has them.
    pub load: Option<LoadAvg>,
    /// Logical CPUs.
    pub threads: usize,
}

/// `metrics.cpu` from a reading, the physical core count and the seconds the reading covers.
/// Atlas reads these names: do not rename.
pub fn cpu_json(reading: &CpuReading, count: Option<usize>, interval_s: Option<f64>) -> serde_json::Value {
    json!({
        "percent": reading.percent,
        "per_core": reading.per_core,
        "count": count,
        "threads": reading.threads,
        "load_avg": reading.load.map(|l| json!([round2(l.one), round2(l.five), round2(l.fifteen)])),
        "interval_s": interval_s,
    })
}

/// Physical cores of this machine (`None` when unknown). Linux: distinct cores of
/// `/proc/cpuinfo`; elsewhere `sysinfo`.
pub fn physical_core_count() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let mut text = String::new();
        crate::procfs::read_into("/proc/cpuinfo", &mut text).ok()?;
        parse::parse_cpuinfo_physical_cores(&text).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        sysinfo::System::physical_core_count().ok()
    }
}

/// Keeps the previous reading between cycles so usage is measured over the interval.
pub struct CpuWidget {
    /// Linux: the reused read buffer, `/proc/stat` and `/proc/loadavg` kept open, and the
    /// previous `/proc/stat` reading.
    #[cfg(target_os = "linux")]
    buf: String,
    #[cfg(target_os = "linux")]
    stat: crate::procfs::ProcFile,
    #[cfg(target_os = "linux")]
    loadavg: crate::procfs::ProcFile,
    #[cfg(target_os = "linux")]
    previous: Option<parse::CpuStat>,
    #[cfg(not(target_os = "linux"))]
    system: Option<sysinfo::System>,
    last: Option<Timestamp>,
    /// Physical cores, read once: on Linux it is a walk of `/proc/cpuinfo`, the costliest
    /// file of a cycle, for a number that does not change while the agent runs.
    physical_cores: Option<Option<usize>>,
}

#[cfg_attr(
    not(target_os = "linux"),
    expect(clippy::derivable_impls, reason = "derivable without the Linux kept files")
)]
impl Default for CpuWidget {
    fn default() -> Self {
        CpuWidget {
            #[cfg(target_os = "linux")]
            buf: String::new(),
            #[cfg(target_os = "linux")]
            stat: crate::procfs::ProcFile::new("/proc/stat"),
            #[cfg(target_os = "linux")]
            loadavg: crate::procfs::ProcFile::new("/proc/loadavg"),
            #[cfg(target_os = "linux")]
            previous: None,
            #[cfg(not(target_os = "linux"))]
            system: None,
            last: None,
            physical_cores: None,
        }
    }
}

impl CpuWidget {
    #[cfg(target_os = "linux")]
    fn read(&mut self) -> Result<CpuReading, CollectError> {
        let path = "/proc/stat";
        self.stat.read_into(&mut self.buf).map_err(|e| CollectError::Other(format!("reading {path}: {e}")))?;
        let now = parse::parse_proc_stat_cpus(&self.buf)
            .map_err(|error| CollectError::Parse { source: path.to_string(), error })?;
        let previous = self.previous.as_ref();
        let percent = usage::percent(previous.map(|p| &p.total), &now.total);
        let per_core = usage::per_core(previous.map_or(&[][..], |p| &p.cores), &now.cores);
        let threads = now.cores.len();
        self.previous = Some(now);
        // A missing or odd load file leaves `load_avg` null rather than failing the widget.
        let load = self.loadavg.read_into(&mut self.buf).ok().and_then(|()| parse::parse_loadavg(&self.buf).ok());
        Ok(CpuReading { percent, per_core, load, threads })
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&mut self) -> Result<CpuReading, CollectError> {
        use crate::units::round1;
        use sysinfo::{CpuRefreshKind, RefreshKind, System};
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
        Ok(CpuReading {
            percent: round1(f64::from(system.global_cpu_usage())),
            per_core: system.cpus().iter().map(|c| round1(f64::from(c.usage()))).collect(),
            load: System::load_average().ok().map(|l| LoadAvg { one: l.one, five: l.five, fifteen: l.fifteen }),
            threads: system.cpus().len(),
        })
    }
}

impl Widget for CpuWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let reading = self.read()?;
        let count = *self.physical_cores.get_or_insert_with(physical_core_count);
        let interval_s = self.last.map(|last| round2((now.0 - last.0) as f64 / 1000.0));
        self.last = Some(now);
        Ok(vec![Sample::metric("cpu", cpu_json(&reading, count, interval_s))])
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
        assert!(data["count"].as_u64().is_some_and(|c| c >= 1 && c <= threads), "{data}");
        assert!(data["load_avg"].as_array().is_some_and(|l| l.len() == 3), "{data}");
    }

    #[test]
    fn json_keeps_atlas_names_and_rounding() {
        let reading = CpuReading {
            percent: 12.3,
            per_core: vec![10.0, 14.6],
            load: Some(LoadAvg { one: 0.214, five: 0.375, fifteen: 1.0 }),
            threads: 2,
        };
        assert_eq!(
            cpu_json(&reading, Some(1), None),
            json!({
                "percent": 12.3, "per_core": [10.0, 14.6], "count": 1, "threads": 2,
                "load_avg": [0.21, 0.38, 1.0], "interval_s": null,
            })
        );
        let unknown = CpuReading { load: None, ..reading };
        assert_eq!(cpu_json(&unknown, None, Some(1.0))["load_avg"], json!(null));
    }
}
