//! `memory`: physical memory and swap, in bytes, with percentages 0..100 (`swap_total`,
//! `swap_used`, `swap_percent` flat, as Atlas's agent sends them).

use serde_json::json;
use sysinfo::{MemoryRefreshKind, RefreshKind, System};

use crate::units::percent;
use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};

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

/// Holds the `sysinfo` handle between cycles.
#[derive(Default)]
pub struct MemoryWidget {
    system: Option<System>,
}

impl Widget for MemoryWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
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
        let total = system.total_memory();
        let available = system.available_memory();
        let used = total.saturating_sub(available);
        let data = json!({
            "total": total,
            "available": available,
            "used": used,
            "percent": percent(used, total),
            // Flat, as Atlas's agent sends them and its pages read them.
            "swap_total": system.total_swap(),
            "swap_used": system.used_swap(),
            "swap_percent": percent(system.used_swap(), system.total_swap()),
        });
        Ok(vec![Sample::metric("memory", data)])
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
