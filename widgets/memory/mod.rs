//! `memory`: physical memory and swap, in bytes, with percentages 0..100 (`swap_total`,
//! `swap_used`, `swap_percent` flat, as Atlas's agent sends them). Linux: `/proc/meminfo`, kept
//! open between cycles ([`crate::procfs::ProcFile`]; parser in `parse.rs`); elsewhere `sysinfo`.

pub mod parse;

use serde_json::json;

use crate::units::percent;
use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};
use parse::MemInfo;

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "memory",
    summary: "Memory and swap: total, available, used (bytes) and percent",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(MemoryWidget::default()),
};

/// Linux: `/proc/meminfo` kept open and the reused read buffer; elsewhere the `sysinfo` handle.
pub struct MemoryWidget {
    #[cfg(target_os = "linux")]
    meminfo: crate::procfs::ProcFile,
    #[cfg(target_os = "linux")]
    buf: String,
    #[cfg(not(target_os = "linux"))]
    system: Option<sysinfo::System>,
}

#[cfg_attr(
    not(target_os = "linux"),
    expect(clippy::derivable_impls, reason = "derivable without the Linux kept files")
)]
impl Default for MemoryWidget {
    fn default() -> Self {
        MemoryWidget {
            #[cfg(target_os = "linux")]
            meminfo: crate::procfs::ProcFile::new("/proc/meminfo"),
            #[cfg(target_os = "linux")]
            buf: String::new(),
            #[cfg(not(target_os = "linux"))]
            system: None,
        }
    }
}

impl MemoryWidget {
    #[cfg(target_os = "linux")]
    fn read(&mut self) -> Result<MemInfo, CollectError> {
        let path = "/proc/meminfo";
        self.meminfo.read_into(&mut self.buf).map_err(|e| CollectError::Other(format!("reading {path}: {e}")))?;
        parse::parse_meminfo(&self.buf).map_err(|error| CollectError::Parse { source: path.to_string(), error })
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&mut self) -> Result<MemInfo, CollectError> {
        use sysinfo::{MemoryRefreshKind, RefreshKind, System};
        let system = match &mut self.system {
            Some(system) => system,
            None => {
                let kind = RefreshKind::nothing().with_memory(MemoryRefreshKind::everything());
                let system = System::new_with_specifics(kind)
                    .map_err(|e| CollectError::Other(format!("reading memory statistics: {e}")))?;
                self.system.insert(system)
            }
        };
        system.refresh_memory();
        Ok(MemInfo {
            total: system.total_memory(),
            available: system.available_memory(),
            swap_total: system.total_swap(),
            swap_free: system.free_swap(),
        })
    }
}

/// The widget's data from a reading.
pub fn memory_json(info: &MemInfo) -> serde_json::Value {
    let used = info.total.saturating_sub(info.available);
    let swap_used = info.swap_total.saturating_sub(info.swap_free);
    json!({
        "total": info.total,
        "available": info.available,
        "used": used,
        "percent": percent(used, info.total),
        // Flat, as Atlas's agent sends them and its pages read them.
        "swap_total": info.swap_total,
        "swap_used": swap_used,
        "swap_percent": percent(swap_used, info.swap_total),
    })
}

impl Widget for MemoryWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let info = self.read()?;
        Ok(vec![Sample::metric("memory", memory_json(&info))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixtureHost, Os};

    #[test]
    fn used_plus_available_is_total() {
        let samples = MemoryWidget::default().collect(&FixtureHost::new(Os::Linux), Timestamp(0)).expect("memory");
        let d = &samples[0].data;
        let (total, used, avail) = (d["total"].as_u64(), d["used"].as_u64(), d["available"].as_u64());
        assert!(total.is_some_and(|t| t > 0));
        assert_eq!(total, used.zip(avail).map(|(u, a)| u + a));
        assert!(d["swap_percent"].is_f64() && d["swap_total"].is_u64() && d["swap_used"].is_u64());
    }
}
