//! `battery`: charge, state, time estimates and health of the laptop battery, reported as
//! `metrics.battery`. A machine without a battery reports `Unsupported` (the report then
//! keeps `metrics.battery: null`).
//!
//! Sources: macOS `pmset -g batt` (percent, state, estimate, power source), then
//! `ioreg -rn AppleSmartBattery` (cycle count, capacities, temperature); Linux
//! `/sys/class/power_supply/*/uevent` (+ `online` of adapters). See `README.md`.

pub mod parse;

use serde_json::json;

use crate::host::DEFAULT_COMMAND_TIMEOUT;
use crate::{no_options, CollectError, Host, HostError, Os, Sample, Timestamp, Widget, WidgetSpec};
use parse::{BatteryReading, PowerSupply};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "battery",
    summary: "Battery percent, plugged/charging, time left/to full, cycles, health, temperature",
    enabled_by_default: true,
    default_interval_s: Some(60),
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(BatteryWidget),
};

/// Stateless: everything is read fresh.
pub struct BatteryWidget;

/// The `pmset` command line.
pub const PMSET: &[&str] = &["pmset", "-g", "batt"];
/// The `ioreg` command line.
pub const IOREG: &[&str] = &["ioreg", "-rn", "AppleSmartBattery"];
/// Where Linux lists power supplies.
pub const POWER_SUPPLY_DIR: &str = "/sys/class/power_supply";

fn parse_error(argv: &[&str], error: crate::ParseError) -> CollectError {
    CollectError::Parse { source: argv.join(" "), error }
}

/// Read the battery through `host`: `Ok(None)` when the machine has none.
pub fn read_battery(host: &dyn Host) -> Result<Option<BatteryReading>, CollectError> {
    match host.os() {
        Os::Macos => read_macos(host),
        Os::Linux => read_linux(host),
        Os::Other => Ok(None),
    }
}

fn read_macos(host: &dyn Host) -> Result<Option<BatteryReading>, CollectError> {
    let pmset = host
        .run(PMSET, DEFAULT_COMMAND_TIMEOUT)
        .map_err(CollectError::Host)
        .and_then(|out| parse::parse_pmset_batt(&out.stdout).map_err(|e| parse_error(PMSET, e)));
    if let Ok(p) = &pmset {
        if p.battery.is_none() {
            return Ok(None);
        }
    }
    // ioreg adds health; its failure only leaves the health fields null.
    let ioreg =
        host.run(IOREG, DEFAULT_COMMAND_TIMEOUT).ok().and_then(|out| parse::parse_ioreg_battery(&out.stdout).ok());
    match (pmset, ioreg) {
        (Ok(p), io) => Ok(parse::from_macos(Some(&p), io.as_ref())),
        (Err(_), Some(io)) => Ok(parse::from_macos(None, Some(&io))),
        (Err(e), None) => Err(e),
    }
}

fn read_linux(host: &dyn Host) -> Result<Option<BatteryReading>, CollectError> {
    let names = match host.list_dir(POWER_SUPPLY_DIR) {
        Ok(names) => names,
        Err(HostError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut supplies = Vec::new();
    for name in names {
        let dir = format!("{POWER_SUPPLY_DIR}/{name}");
        let path = format!("{dir}/uevent");
        let text = match host.read_file(&path) {
            Ok(text) => text,
            Err(HostError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut supply: PowerSupply = parse::parse_power_supply_uevent(&text)
            .map_err(|error| CollectError::Parse { source: path.clone(), error })?;
        supply.name.get_or_insert(name);
        if supply.kind.is_none() {
            supply.kind = host.read_file(&format!("{dir}/type")).ok().map(|t| t.trim().to_string());
        }
        if supply.online.is_none() && !supply.is_system_battery() {
            supply.online = host.read_file(&format!("{dir}/online")).ok().and_then(|t| parse::parse_online(&t).ok());
        }
        supplies.push(supply);
    }
    Ok(parse::from_linux(&supplies))
}

/// The `metrics.battery` object for a reading.
pub fn to_json(reading: &BatteryReading) -> serde_json::Value {
    json!({
        "percent": reading.percent,
        "plugged": reading.plugged,
        "charging": reading.charging,
        "time_left": reading.time_left,
        "time_to_full": reading.time_to_full,
        "cycle_count": reading.cycle_count,
        "health_percent": reading.health_percent,
        "condition": reading.condition,
        "temperature_c": reading.temperature_c,
        "source": reading.source,
    })
}

impl Widget for BatteryWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        match read_battery(host)? {
            Some(reading) => Ok(vec![Sample::metric("battery", to_json(&reading))]),
            None => Err(CollectError::Unsupported("no battery".to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::fixture;
    use crate::FixtureHost;

    const W: &str = "battery";
    const JOULEWISE: &str =
        "ioreg-r-c-AppleSmartBattery--applesilicon-140w-macos26-ac-fullycharged-float-joulewise.txt";

    fn collect(host: &FixtureHost) -> Result<Vec<Sample>, CollectError> {
        BatteryWidget.collect(host, Timestamp(0))
    }

    #[test]
    fn macos_laptop_reports_every_field() {
        let host = FixtureHost::new(Os::Macos)
            .with_command("pmset -g batt", &fixture(W, "pmset-g-batt--osx10.11.6-discharging-battstat2.txt"))
            .with_command(
                "ioreg -rn AppleSmartBattery",
                &fixture(W, "ioreg-r-c-AppleSmartBattery--intel-2015mbp-discharging-shushen.txt"),
            );
        let samples = collect(&host).expect("battery");
        assert_eq!(samples.len(), 1);
        assert_eq!((samples[0].name.as_str(), samples[0].kind), ("battery", crate::SampleKind::Metric));
        assert_eq!(
            samples[0].data,
            json!({
                "percent": 89.0, "plugged": false, "charging": false, "time_left": 17220,
                "cycle_count": 155, "health_percent": 89.8, "condition": "Normal", "temperature_c": 29.9,
                "source": "pmset+ioreg",
            })
        );
    }

    #[test]
    fn macos_without_ioreg_still_reports_the_charge() {
        let host = FixtureHost::new(Os::Macos)
            .with_command("pmset -g batt", &fixture(W, "pmset-g-batt--osx10.11.6-charging-battstat2.txt"));
        let data = &collect(&host).expect("battery")[0].data;
        assert_eq!((data["percent"].as_f64(), data["time_to_full"].as_u64()), (Some(91.0), Some(1500)));
        assert!(data["cycle_count"].is_null() && data["health_percent"].is_null());
        assert_eq!(data["source"], "pmset");
    }

    #[test]
    fn macos_desktops_are_unsupported() {
        let desktop = FixtureHost::new(Os::Macos)
            .with_command("pmset -g batt", &fixture(W, "pmset-g-batt--desktop-no-battery-liquidprompt317.txt"));
        assert!(collect(&desktop).is_err_and(|e| e.is_unsupported()));
        let ghost = FixtureHost::new(Os::Macos)
            .with_command("pmset -g batt", &fixture(W, "pmset-g-batt--ac-charged-100pct-2026-sessionreport.txt"))
            .with_command(
                "ioreg -rn AppleSmartBattery",
                &fixture(W, "ioreg-n-AppleSmartBattery-r-a--m4-macmini-ghost-battery-distatus34.txt"),
            );
        assert!(collect(&ghost).is_err_and(|e| e.is_unsupported()));
    }

    #[test]
    fn macos_broken_pmset_falls_back_to_ioreg_or_errors() {
        let only_ioreg =
            FixtureHost::new(Os::Macos).with_command("ioreg -rn AppleSmartBattery", &fixture(W, JOULEWISE));
        let data = &collect(&only_ioreg).expect("battery")[0].data;
        assert_eq!((data["percent"].as_f64(), data["source"].as_str()), (Some(100.0), Some("ioreg")));
        let garbage = FixtureHost::new(Os::Macos).with_command("pmset -g batt", "garbage\n");
        assert!(matches!(collect(&garbage), Err(CollectError::Parse { source, .. }) if source == "pmset -g batt"));
        assert!(matches!(collect(&FixtureHost::new(Os::Macos)), Err(CollectError::Host(_))));
    }

    #[test]
    fn linux_reads_power_supply_dir() {
        let host = FixtureHost::new(Os::Linux)
            .with_file(
                "/sys/class/power_supply/BAT0/uevent",
                &fixture(W, "sys-class-power_supply-BAT0-uevent--thinkpad-energy-discharging-81pct-node_exporter.txt"),
            )
            .with_file("/sys/class/power_supply/AC/type", "Mains\n")
            .with_file("/sys/class/power_supply/AC/uevent", "POWER_SUPPLY_NAME=AC\n")
            .with_file(
                "/sys/class/power_supply/AC/online",
                &fixture(W, "sys-class-power_supply-AC-online--offline-procfs.txt"),
            );
        let data = &collect(&host).expect("battery")[0].data;
        assert_eq!(
            *data,
            json!({
                "percent": 81.0, "plugged": false, "charging": false, "time_left": 26327,
                "health_percent": 94.8, "condition": "Normal",
                "source": "sysfs",
            })
        );
    }

    #[test]
    fn linux_without_battery_is_unsupported() {
        let ac_only = FixtureHost::new(Os::Linux).with_file(
            "/sys/class/power_supply/AC/uevent",
            &fixture(W, "sys-class-power_supply-AC-uevent--offline-procfs.txt"),
        );
        assert!(collect(&ac_only).is_err_and(|e| e.is_unsupported()));
        assert!(collect(&FixtureHost::new(Os::Linux)).is_err_and(|e| e.is_unsupported()));
        let broken =
            FixtureHost::new(Os::Linux).with_file("/sys/class/power_supply/BAT0/uevent", "POWER_SUPPLY_CAPACITY=x\n");
        assert!(matches!(collect(&broken), Err(CollectError::Parse { source, .. }) if source.ends_with("BAT0/uevent")));
    }
}
