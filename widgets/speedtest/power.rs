//! Just enough of the power state to skip a speed test on a low battery: "running on battery
//! at N %" or not. Private to the speedtest widget (the battery widget reports the full state).
//!
//! Linux: `/sys/class/power_supply/*/uevent` — a mains adapter (`POWER_SUPPLY_TYPE=Mains`, or
//! named `AC*`/`ADP*`) with `POWER_SUPPLY_ONLINE=1` means plugged in; otherwise a battery
//! (`TYPE=Battery` or named `BAT*`) with `STATUS=Discharging` gives `CAPACITY`.
//! macOS: `pmset -g batt` — `Now drawing from 'Battery Power'` and the first `NN%`.

use crate::host::DEFAULT_COMMAND_TIMEOUT;
use crate::{Host, Os};

/// The battery percentage when the machine runs on battery; `None` on mains power, without a
/// battery, or when the state cannot be read (a speed test then runs).
pub fn on_battery_percent(host: &dyn Host) -> Option<f64> {
    match host.os() {
        Os::Linux => {
            let dir = "/sys/class/power_supply";
            let supplies: Vec<(String, String)> = host
                .list_dir(dir)
                .ok()?
                .into_iter()
                .filter_map(|name| host.read_file(&format!("{dir}/{name}/uevent")).ok().map(|text| (name, text)))
                .collect();
            linux_on_battery(&supplies)
        }
        Os::Macos => {
            let out = host.run(&["pmset", "-g", "batt"], DEFAULT_COMMAND_TIMEOUT).ok()?;
            pmset_on_battery(&out.stdout)
        }
        Os::Other => None,
    }
}

/// From `(supply name, uevent text)` pairs.
pub fn linux_on_battery(supplies: &[(String, String)]) -> Option<f64> {
    let field = |text: &str, key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')).map(|v| v.trim().to_string()))
    };
    let mut lowest: Option<f64> = None;
    for (name, text) in supplies {
        let kind = field(text, "POWER_SUPPLY_TYPE");
        let is_mains =
            kind.as_deref() == Some("Mains") || (kind.is_none() && (name.starts_with("AC") || name.starts_with("ADP")));
        if is_mains && field(text, "POWER_SUPPLY_ONLINE").as_deref() == Some("1") {
            return None;
        }
        let is_battery = kind.as_deref() == Some("Battery") || (kind.is_none() && name.starts_with("BAT"));
        if is_battery && field(text, "POWER_SUPPLY_STATUS").as_deref() == Some("Discharging") {
            if let Some(pct) = field(text, "POWER_SUPPLY_CAPACITY").and_then(|c| c.parse::<f64>().ok()) {
                lowest = Some(lowest.map_or(pct, |l: f64| l.min(pct)));
            }
        }
    }
    lowest
}

/// From `pmset -g batt` output.
pub fn pmset_on_battery(text: &str) -> Option<f64> {
    if !text.lines().next()?.contains("'Battery Power'") {
        return None;
    }
    text.lines().skip(1).find_map(|line| {
        let pct_end = line.find('%')?;
        let start = line[..pct_end].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
        line[start..pct_end].parse::<f64>().ok()
    })
}
