//! `temperature`: `metrics.temperature` as Atlas's agent reports it, `{cpu, unit: "C"}`.
//!
//! Linux: the thermal zones of `/sys/class/thermal` (`thermal_zone*/type` and `temp`, read
//! through [`Host`] so a replay can supply them), the CPU's zone chosen by [`parse`]. A machine
//! without a CPU zone (most VMs) reports `Unsupported`, and the report keeps Atlas's `null`.
//! macOS: Atlas runs `sudo powermetrics --samplers smc -n 1`, which samples for seconds and
//! gives no CPU die temperature on Apple silicon; this widget reports `Unsupported` there.

pub mod parse;

use serde_json::json;

use crate::{no_options, CollectError, Host, Os, Sample, Timestamp, Widget, WidgetSpec};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "temperature",
    summary: "CPU temperature (°C) from the Linux thermal zones, as Atlas's metrics.temperature",
    enabled_by_default: true,
    default_interval_s: Some(60),
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(TemperatureWidget),
};

/// Where Linux lists its thermal zones.
pub const THERMAL: &str = "/sys/class/thermal";

/// Stateless.
pub struct TemperatureWidget;

impl Widget for TemperatureWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        if host.os() != Os::Linux {
            return Err(CollectError::Unsupported("no CPU temperature without root powermetrics".to_string()));
        }
        let entries = host.list_dir(THERMAL).unwrap_or_default();
        let zones: Vec<(String, f64)> = entries
            .iter()
            .filter(|name| name.starts_with("thermal_zone"))
            .filter_map(|zone| {
                let read = |file: &str| host.read_file(&format!("{THERMAL}/{zone}/{file}")).ok();
                let zone_type = parse::parse_zone_type(&read("type")?).ok()?;
                let celsius = parse::parse_zone_temp(&read("temp")?).ok()?;
                Some((zone_type, celsius))
            })
            .collect();
        match parse::cpu_temperature(&zones) {
            Some(cpu) => Ok(vec![Sample::metric("temperature", json!({ "cpu": cpu, "unit": "C" }))]),
            None => Err(CollectError::Unsupported("no CPU thermal zone in /sys/class/thermal".to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::fixture;
    use crate::FixtureHost;

    #[test]
    fn linux_cpu_zone_becomes_atlas_temperature() {
        let f = |name: &str| fixture("temperature", name);
        let host = FixtureHost::new(Os::Linux)
            .with_file(
                "/sys/class/thermal/thermal_zone0/type",
                &f("sys-class-thermal-zone-type--ddr-thermal-odroid-n2plus.txt"),
            )
            .with_file(
                "/sys/class/thermal/thermal_zone0/temp",
                &f("sys-class-thermal-zone-temp--ddr-41c-odroid-n2plus.txt"),
            )
            .with_file(
                "/sys/class/thermal/thermal_zone1/type",
                &f("sys-class-thermal-zone-type--cpu-thermal-odroid-n2plus.txt"),
            )
            .with_file(
                "/sys/class/thermal/thermal_zone1/temp",
                &f("sys-class-thermal-zone-temp--cpu-52.3c-odroid-n2plus.txt"),
            );
        let samples = TemperatureWidget.collect(&host, Timestamp(0)).expect("temperature");
        assert_eq!(samples[0].data, json!({"cpu": 52.3, "unit": "C"}));
        assert!(TemperatureWidget
            .collect(&FixtureHost::new(Os::Linux), Timestamp(0))
            .is_err_and(|e| e.is_unsupported()));
        assert!(TemperatureWidget
            .collect(&FixtureHost::new(Os::Macos), Timestamp(0))
            .is_err_and(|e| e.is_unsupported()));
    }
}
