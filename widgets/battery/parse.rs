//! Pure parsers for battery outputs, compiled and tested on every OS.
//!
//! - macOS `pmset -g batt`: percent, charge state, time remaining, power source.
//! - macOS `ioreg -rn AppleSmartBattery` (text, and the `-a` plist XML form): health.
//! - Linux `/sys/class/power_supply/<name>/uevent` (`POWER_SUPPLY_*=value` lines) and `online`.
//!
//! [`from_macos`] and [`from_linux`] merge parsed readings into the one [`BatteryReading`]
//! the widget reports; they are pure too, so the merge rules are tested on fixtures.

use serde::Serialize;

use crate::units::round1;
use crate::ParseError;

/// What `pmset -g batt` says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PmsetBatt {
    /// `Some(true)` when drawing from `'AC Power'`, `Some(false)` from `'Battery Power'`.
    pub ac_power: Option<bool>,
    /// The internal battery's line; `None` on a desktop Mac (only the first line is printed).
    pub battery: Option<PmsetBattery>,
}

/// One `-InternalBattery-0 … 89%; discharging; 4:47 remaining present: true` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PmsetBattery {
    /// Battery name, e.g. `InternalBattery-0`.
    pub name: String,
    /// Charge in percent (0..100).
    pub percent: f64,
    /// Charge state as printed, lowercase: `discharging`, `charging`, `charged`,
    /// `finishing charge`, `ac attached`, …
    pub state: String,
    /// The `H:MM remaining` estimate in seconds; `None` for `(no estimate)` or when absent.
    pub remaining_s: Option<u64>,
    /// `present: true|false` when printed (newer macOS).
    pub present: Option<bool>,
}

/// Parse `pmset -g batt` (also `pmset -g ps`, which prints the same). Only
/// `InternalBattery` lines count as the laptop battery (a UPS line does not).
pub fn parse_pmset_batt(text: &str) -> Result<PmsetBatt, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut ac_power = None;
    let mut battery = None;
    let mut recognised = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("Now drawing from ") {
            recognised = true;
            let source = rest.trim_matches('\'');
            ac_power = match source {
                "AC Power" => Some(true),
                "Battery Power" => Some(false),
                _ => None,
            };
        } else if let Some(rest) = trimmed.strip_prefix('-') {
            recognised = true;
            if battery.is_none() && rest.starts_with("InternalBattery") {
                battery = Some(parse_pmset_battery_line(rest)?);
            }
        }
    }
    if !recognised {
        return Err(ParseError::Unrecognised("pmset -g batt output (\"Now drawing from …\")"));
    }
    Ok(PmsetBatt { ac_power, battery })
}

fn parse_pmset_battery_line(line: &str) -> Result<PmsetBattery, ParseError> {
    let name = line.split_whitespace().next().unwrap_or_default().to_string();
    let mut parts = line.split(';');
    let head = parts.next().unwrap_or_default();
    let percent_text = head.split_whitespace().last().unwrap_or_default();
    let percent: f64 = percent_text
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .filter(|p: &f64| (0.0..=100.0).contains(p))
        .ok_or_else(|| ParseError::bad_value("percent", percent_text))?;
    let state = parts.next().map(|s| s.trim().to_lowercase()).ok_or(ParseError::MissingField("state"))?;
    let tail = parts.next().unwrap_or_default();
    let remaining_s = tail
        .split_whitespace()
        .next()
        .and_then(|t| t.split_once(':'))
        .and_then(|(h, m)| Some(u64::from(h.parse::<u32>().ok()?) * 3600 + u64::from(m.parse::<u32>().ok()?) * 60));
    let present = tail.split("present:").nth(1).and_then(|p| match p.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    });
    Ok(PmsetBattery { name, percent, state, remaining_s, present })
}

/// The AppleSmartBattery properties the widget uses (from `ioreg -rn AppleSmartBattery`).
/// Capacities are mAh except where noted; times are minutes with 65535 meaning "unknown".
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct IoregBattery {
    /// `BatteryInstalled`: `false` on a desktop Mac whose node exists anyway (M4 Mac mini).
    pub installed: Option<bool>,
    /// `CurrentCapacity`: mAh on Intel, percent on Apple silicon.
    pub current_capacity: Option<u64>,
    /// `MaxCapacity`: full-charge mAh on Intel, `100` (percent) on Apple silicon.
    pub max_capacity: Option<u64>,
    /// `AppleRawMaxCapacity`: full-charge mAh (Apple silicon).
    pub raw_max_capacity: Option<u64>,
    /// `AppleRawCurrentCapacity`: current charge mAh (Apple silicon).
    pub raw_current_capacity: Option<u64>,
    /// `DesignCapacity` in mAh.
    pub design_capacity: Option<u64>,
    /// `CycleCount`.
    pub cycle_count: Option<u64>,
    /// `Temperature` in hundredths of a degree Celsius.
    pub temperature_centi_c: Option<u64>,
    /// `ExternalConnected`: a power adapter is connected.
    pub external_connected: Option<bool>,
    /// `IsCharging`.
    pub is_charging: Option<bool>,
    /// `FullyCharged`.
    pub fully_charged: Option<bool>,
    /// `AvgTimeToEmpty` in minutes.
    pub avg_time_to_empty_min: Option<u64>,
    /// `AvgTimeToFull` in minutes.
    pub avg_time_to_full_min: Option<u64>,
    /// `PermanentFailureStatus`: non-zero when the gauge reports a permanent failure.
    pub permanent_failure: Option<u64>,
}

/// A property value as `ioreg` prints it.
enum IoValue<'a> {
    Bool(bool),
    Int(u64),
    Other(&'a str),
}

impl IoregBattery {
    fn set(&mut self, key: &str, value: IoValue<'_>) -> Result<(), ParseError> {
        let int = |field: &'static str, v: &IoValue<'_>| match v {
            IoValue::Int(n) => Ok(Some(*n)),
            IoValue::Bool(_) => Err(ParseError::bad_value(field, "boolean")),
            IoValue::Other(s) => Err(ParseError::bad_value(field, s)),
        };
        let flag = |field: &'static str, v: &IoValue<'_>| match v {
            IoValue::Bool(b) => Ok(Some(*b)),
            IoValue::Int(n) => Ok(Some(*n != 0)),
            IoValue::Other(s) => Err(ParseError::bad_value(field, s)),
        };
        match key {
            "BatteryInstalled" => self.installed = flag("BatteryInstalled", &value)?,
            "CurrentCapacity" => self.current_capacity = int("CurrentCapacity", &value)?,
            "MaxCapacity" => self.max_capacity = int("MaxCapacity", &value)?,
            "AppleRawMaxCapacity" => self.raw_max_capacity = int("AppleRawMaxCapacity", &value)?,
            "AppleRawCurrentCapacity" => self.raw_current_capacity = int("AppleRawCurrentCapacity", &value)?,
            "DesignCapacity" => self.design_capacity = int("DesignCapacity", &value)?,
            "CycleCount" => self.cycle_count = int("CycleCount", &value)?,
            "Temperature" => self.temperature_centi_c = int("Temperature", &value)?,
            "ExternalConnected" => self.external_connected = flag("ExternalConnected", &value)?,
            "IsCharging" => self.is_charging = flag("IsCharging", &value)?,
            "FullyCharged" => self.fully_charged = flag("FullyCharged", &value)?,
            "AvgTimeToEmpty" => self.avg_time_to_empty_min = int("AvgTimeToEmpty", &value)?,
            "AvgTimeToFull" => self.avg_time_to_full_min = int("AvgTimeToFull", &value)?,
            "PermanentFailureStatus" => self.permanent_failure = int("PermanentFailureStatus", &value)?,
            _ => return Ok(()),
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        *self == IoregBattery::default()
    }
}

/// Parse `ioreg -rn AppleSmartBattery` (any of the text flag variants: `-l`, `-r -c`, `-rk`,
/// `-b -w 0 -f`), or its `-a` plist XML form. Only the battery object's own top-level
/// properties are read (nested dictionaries such as `BatteryData` are skipped). `Ok` with
/// `installed == Some(false)` means "no battery".
pub fn parse_ioreg_battery(text: &str) -> Result<IoregBattery, ParseError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ParseError::Empty);
    }
    let battery = if trimmed.starts_with("<?xml") || trimmed.starts_with("<plist") {
        parse_ioreg_xml(trimmed)?
    } else {
        parse_ioreg_text(text)?
    };
    if battery.is_empty() {
        return Err(ParseError::Unrecognised("AppleSmartBattery properties (\"Key\" = value lines)"));
    }
    Ok(battery)
}

fn parse_ioreg_text(text: &str) -> Result<IoregBattery, ParseError> {
    let mut battery = IoregBattery::default();
    let mut lines = text.lines().peekable();
    // Start after the AppleSmartBattery object's header when there is one, and stop at its
    // closing brace, so neighbouring objects (`ioreg -l` without `-r`) are not mixed in.
    let has_header = text.contains("+-o AppleSmartBattery");
    if has_header {
        for line in lines.by_ref() {
            if line.contains("+-o AppleSmartBattery") {
                break;
            }
        }
    }
    for line in lines {
        let line = line.trim();
        if has_header && line == "}" {
            break;
        }
        let Some(rest) = line.strip_prefix('"') else { continue };
        let Some((key, value)) = rest.split_once("\" = ") else { continue };
        let value = value.trim();
        let value = match value {
            "Yes" => IoValue::Bool(true),
            "No" => IoValue::Bool(false),
            _ => match value.parse::<u64>() {
                Ok(n) => IoValue::Int(n),
                Err(_) => IoValue::Other(value),
            },
        };
        battery.set(key, value)?;
    }
    Ok(battery)
}

/// A minimal reader for the `-a` plist: the first dictionary's `<key>` / value pairs at its
/// own depth (nested containers are skipped). Tolerates a cut-off document.
fn parse_ioreg_xml(text: &str) -> Result<IoregBattery, ParseError> {
    let mut battery = IoregBattery::default();
    let mut depth = 0usize;
    let mut top: Option<usize> = None;
    let mut pending: Option<&str> = None;
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let tag = &after[..close];
        let body_start = &after[close + 1..];
        rest = body_start;
        match tag {
            "dict" | "array" => {
                depth += 1;
                if tag == "dict" && top.is_none() {
                    top = Some(depth);
                }
                pending = None;
            }
            "/dict" | "/array" => {
                depth = depth.saturating_sub(1);
                if top.is_some_and(|t| depth < t) {
                    break;
                }
            }
            "key" if top == Some(depth) => {
                let end = body_start.find("</key>").ok_or(ParseError::MissingField("</key>"))?;
                pending = Some(&body_start[..end]);
            }
            "true/" | "false/" if top == Some(depth) => {
                if let Some(key) = pending.take() {
                    battery.set(key, IoValue::Bool(tag == "true/"))?;
                }
            }
            "integer" | "string" | "real" if top == Some(depth) => {
                let end_tag = format!("</{tag}>");
                let end = body_start.find(&end_tag).unwrap_or(body_start.len());
                let body = body_start[..end].trim();
                if let Some(key) = pending.take() {
                    let value = match (tag, body.parse::<u64>()) {
                        ("integer", Ok(n)) => IoValue::Int(n),
                        _ => IoValue::Other(body),
                    };
                    battery.set(key, value)?;
                }
            }
            _ => {}
        }
    }
    Ok(battery)
}

/// One `/sys/class/power_supply/<name>/uevent` (plus its `type`/`online` files when read).
/// Energies in µWh, charges in µAh, power in µW, current in µA, voltage in µV.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PowerSupply {
    /// `POWER_SUPPLY_NAME` (else the directory name, set by the caller).
    pub name: Option<String>,
    /// `POWER_SUPPLY_TYPE`: `Battery`, `Mains`, `USB`, … (older kernels omit it).
    pub kind: Option<String>,
    /// `POWER_SUPPLY_SCOPE`: `Device` for a mouse or keyboard battery.
    pub scope: Option<String>,
    /// `POWER_SUPPLY_STATUS`: `Charging`, `Discharging`, `Full`, `Not charging`, `Unknown`.
    pub status: Option<String>,
    /// `POWER_SUPPLY_PRESENT`.
    pub present: Option<bool>,
    /// `POWER_SUPPLY_ONLINE` (adapters).
    pub online: Option<bool>,
    /// `POWER_SUPPLY_CAPACITY` in percent.
    pub capacity: Option<u64>,
    /// `POWER_SUPPLY_ENERGY_NOW`.
    pub energy_now: Option<u64>,
    /// `POWER_SUPPLY_ENERGY_FULL`.
    pub energy_full: Option<u64>,
    /// `POWER_SUPPLY_ENERGY_FULL_DESIGN`.
    pub energy_full_design: Option<u64>,
    /// `POWER_SUPPLY_CHARGE_NOW`.
    pub charge_now: Option<u64>,
    /// `POWER_SUPPLY_CHARGE_FULL`.
    pub charge_full: Option<u64>,
    /// `POWER_SUPPLY_CHARGE_FULL_DESIGN`.
    pub charge_full_design: Option<u64>,
    /// `POWER_SUPPLY_POWER_NOW`.
    pub power_now: Option<u64>,
    /// `POWER_SUPPLY_CURRENT_NOW` (sign varies by driver; the magnitude is used).
    pub current_now: Option<u64>,
    /// `POWER_SUPPLY_VOLTAGE_NOW`.
    pub voltage_now: Option<u64>,
    /// `POWER_SUPPLY_CYCLE_COUNT` (ACPI reports 0 when it does not know).
    pub cycle_count: Option<u64>,
    /// `POWER_SUPPLY_TEMP` in tenths of a degree Celsius.
    pub temp_deci_c: Option<i64>,
    /// `POWER_SUPPLY_HEALTH`: `Good`, `Dead`, `Overheat`, …
    pub health: Option<String>,
}

/// Parse a `uevent` file of `/sys/class/power_supply/<name>/`.
pub fn parse_power_supply_uevent(text: &str) -> Result<PowerSupply, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut ps = PowerSupply::default();
    let mut recognised = false;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else { continue };
        let Some(key) = key.strip_prefix("POWER_SUPPLY_") else { continue };
        recognised = true;
        let value = value.trim();
        let text_value = || Some(value.to_string()).filter(|v| !v.is_empty());
        let uint = |field: &'static str| -> Result<Option<u64>, ParseError> {
            if value.is_empty() {
                return Ok(None);
            }
            // Some drivers print a negative current while discharging: keep the magnitude.
            value.trim_start_matches('-').parse::<u64>().map(Some).map_err(|_| ParseError::bad_value(field, value))
        };
        match key {
            "NAME" => ps.name = text_value(),
            "TYPE" => ps.kind = text_value(),
            "SCOPE" => ps.scope = text_value(),
            "STATUS" => ps.status = text_value(),
            "HEALTH" => ps.health = text_value(),
            "PRESENT" => ps.present = uint("POWER_SUPPLY_PRESENT")?.map(|v| v != 0),
            "ONLINE" => ps.online = uint("POWER_SUPPLY_ONLINE")?.map(|v| v != 0),
            "CAPACITY" => ps.capacity = uint("POWER_SUPPLY_CAPACITY")?.map(|v| v.min(100)),
            "ENERGY_NOW" => ps.energy_now = uint("POWER_SUPPLY_ENERGY_NOW")?,
            "ENERGY_FULL" => ps.energy_full = uint("POWER_SUPPLY_ENERGY_FULL")?,
            "ENERGY_FULL_DESIGN" => ps.energy_full_design = uint("POWER_SUPPLY_ENERGY_FULL_DESIGN")?,
            "CHARGE_NOW" => ps.charge_now = uint("POWER_SUPPLY_CHARGE_NOW")?,
            "CHARGE_FULL" => ps.charge_full = uint("POWER_SUPPLY_CHARGE_FULL")?,
            "CHARGE_FULL_DESIGN" => ps.charge_full_design = uint("POWER_SUPPLY_CHARGE_FULL_DESIGN")?,
            "POWER_NOW" => ps.power_now = uint("POWER_SUPPLY_POWER_NOW")?,
            "CURRENT_NOW" => ps.current_now = uint("POWER_SUPPLY_CURRENT_NOW")?,
            "VOLTAGE_NOW" => ps.voltage_now = uint("POWER_SUPPLY_VOLTAGE_NOW")?,
            "CYCLE_COUNT" => ps.cycle_count = uint("POWER_SUPPLY_CYCLE_COUNT")?,
            "TEMP" => {
                ps.temp_deci_c =
                    Some(value.parse::<i64>().map_err(|_| ParseError::bad_value("POWER_SUPPLY_TEMP", value))?)
            }
            _ => {}
        }
    }
    if !recognised {
        return Err(ParseError::Unrecognised("POWER_SUPPLY_*=value lines"));
    }
    Ok(ps)
}

/// Parse a `/sys/class/power_supply/<adapter>/online` file (`0` or `1`).
pub fn parse_online(text: &str) -> Result<bool, ParseError> {
    match text.trim() {
        "" => Err(ParseError::Empty),
        "0" => Ok(false),
        "1" | "2" => Ok(true),
        other => Err(ParseError::bad_value("online", other)),
    }
}

impl PowerSupply {
    /// True for a system battery: `TYPE=Battery` (or, on kernels that omit `TYPE`, a supply
    /// with capacity/energy/charge fields), present, and not a peripheral (`SCOPE=Device`).
    pub fn is_system_battery(&self) -> bool {
        let battery_kind = match self.kind.as_deref() {
            Some(kind) => kind == "Battery",
            None => self.capacity.is_some() || self.energy_full.is_some() || self.charge_full.is_some(),
        };
        battery_kind && self.present != Some(false) && self.scope.as_deref() != Some("Device")
    }

    /// True for a power adapter (`Mains`, `USB*`, or an `online` supply that is no battery).
    pub fn is_adapter(&self) -> bool {
        match self.kind.as_deref() {
            Some(kind) => kind == "Mains" || kind.starts_with("USB"),
            None => self.online.is_some() && !self.is_system_battery(),
        }
    }
}

/// What the `battery` widget reports (the `metrics.battery` object; docs/architecture.md, "Atlas protocol").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatteryReading {
    /// Charge in percent, one decimal.
    pub percent: f64,
    /// A power adapter is connected.
    pub plugged: Option<bool>,
    /// The battery is charging.
    pub charging: Option<bool>,
    /// Seconds to empty while discharging, else `None`.
    pub time_left: Option<u64>,
    /// Seconds to full while charging, else `None`.
    pub time_to_full: Option<u64>,
    /// Charge cycles.
    pub cycle_count: Option<u64>,
    /// Full-charge capacity as a percentage of design capacity, one decimal.
    pub health_percent: Option<f64>,
    /// `Normal`, `Service Recommended`, `Permanent Failure`, or the OS's own word.
    pub condition: Option<String>,
    /// Battery temperature in °C, one decimal.
    pub temperature_c: Option<f64>,
    /// Where the values came from: `pmset+ioreg`, `pmset`, `ioreg` or `sysfs`.
    pub source: String,
}

/// Below this health Apple recommends service; the same threshold is used on Linux.
pub const SERVICE_RECOMMENDED_BELOW: f64 = 80.0;

/// The battery's condition: the OS's own word when it gives one (`POWER_SUPPLY_HEALTH`),
/// `Permanent Failure` when the gauge flags one, else derived from health: `Normal` at or
/// above [`SERVICE_RECOMMENDED_BELOW`] %, `Service Recommended` below, `None` when unknown.
pub fn condition(explicit: Option<&str>, permanent_failure: bool, health: Option<f64>) -> Option<String> {
    if let Some(word) = explicit.filter(|w| !w.is_empty() && *w != "Unknown") {
        return Some(word.to_string());
    }
    if permanent_failure {
        return Some("Permanent Failure".to_string());
    }
    health.map(|h| if h < SERVICE_RECOMMENDED_BELOW { "Service Recommended" } else { "Normal" }.to_string())
}

fn ratio_percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| round1(part as f64 * 100.0 / whole as f64))
}

/// ioreg's "unknown" minutes value.
const IOREG_UNKNOWN_MINUTES: u64 = 65535;

/// Merge `pmset` (state, percent, estimate) and `ioreg` (health) into one reading. `None`
/// means no battery: pmset has no `InternalBattery` line, or ioreg says `BatteryInstalled =
/// No`, or neither source gives a percent.
pub fn from_macos(pmset: Option<&PmsetBatt>, ioreg: Option<&IoregBattery>) -> Option<BatteryReading> {
    if ioreg.is_some_and(|io| io.installed == Some(false)) {
        return None;
    }
    if pmset.is_some_and(|p| p.battery.is_none()) {
        return None;
    }
    let line = pmset.and_then(|p| p.battery.as_ref());
    // Full-charge mAh: AppleRawMaxCapacity on Apple silicon (MaxCapacity is then 100, a
    // percentage); MaxCapacity on Intel.
    let full_mah = ioreg.and_then(|io| io.raw_max_capacity.or(io.max_capacity.filter(|m| *m > 100)));
    let health_percent =
        full_mah.zip(ioreg.and_then(|io| io.design_capacity)).and_then(|(full, design)| ratio_percent(full, design));
    let ioreg_percent = ioreg.and_then(|io| match (io.current_capacity, io.max_capacity) {
        (Some(cur), Some(max)) if max > 100 => ratio_percent(cur, max),
        (Some(cur), _)
            if io.raw_max_capacity.is_some() || io.raw_current_capacity.is_some() || io.max_capacity == Some(100) =>
        {
            Some(round1(cur.min(100) as f64))
        }
        _ => None,
    });
    let percent = line.map(|l| round1(l.percent)).or(ioreg_percent)?;
    let state = line.map(|l| l.state.as_str());
    let charging = match state {
        Some(s) => Some(s == "charging" || s == "finishing charge"),
        None => ioreg.and_then(|io| io.is_charging),
    };
    let plugged = pmset.and_then(|p| p.ac_power).or(ioreg.and_then(|io| io.external_connected));
    let discharging = match state {
        Some(s) => s == "discharging",
        None => plugged == Some(false),
    };
    let known = |m: u64| m.checked_mul(60).filter(|_| m != IOREG_UNKNOWN_MINUTES && m > 0);
    let remaining = line.and_then(|l| l.remaining_s).filter(|s| *s > 0);
    let time_left = if discharging {
        remaining.or_else(|| ioreg.and_then(|io| io.avg_time_to_empty_min).and_then(known))
    } else {
        None
    };
    let time_to_full = if charging == Some(true) {
        remaining.or_else(|| ioreg.and_then(|io| io.avg_time_to_full_min).and_then(known))
    } else {
        None
    };
    let permanent_failure = ioreg.and_then(|io| io.permanent_failure).is_some_and(|f| f != 0);
    let source = match (line.is_some(), ioreg.is_some()) {
        (true, true) => "pmset+ioreg",
        (true, false) => "pmset",
        _ => "ioreg",
    };
    Some(BatteryReading {
        percent,
        plugged,
        charging,
        time_left,
        time_to_full,
        cycle_count: ioreg.and_then(|io| io.cycle_count),
        health_percent,
        condition: ioreg.and_then(|_| condition(None, permanent_failure, health_percent)),
        // An unsigned reading above 100 °C is a wrapped negative or garbage: unknown.
        temperature_c: ioreg
            .and_then(|io| io.temperature_centi_c)
            .filter(|t| *t <= 10_000)
            .map(|t| round1(t as f64 / 100.0)),
        source: source.to_string(),
    })
}

/// Seconds to go `amount` (µWh or µAh) at `rate` (µW or µA).
fn hours_to_seconds(amount: u64, rate: u64) -> Option<u64> {
    (rate > 0).then(|| (amount as f64 / rate as f64 * 3600.0).round() as u64)
}

/// Several system batteries (ThinkPads with `BAT0` and `BAT1`) as one: energies, charges
/// and rates summed (a sum is unknown when any part is), charging if any charges, else
/// discharging if any discharges; cycle count the highest, temperature and health the
/// first battery's.
fn combine(batteries: &[&PowerSupply]) -> Option<PowerSupply> {
    let (first, rest) = batteries.split_first()?;
    if rest.is_empty() {
        return Some((*first).clone());
    }
    let sum = |field: fn(&PowerSupply) -> Option<u64>| -> Option<u64> {
        batteries.iter().map(|b| field(b)).try_fold(0u64, |acc, v| acc.checked_add(v?))
    };
    let any_status = |status: &str| batteries.iter().any(|b| b.status.as_deref() == Some(status));
    let status = if any_status("Charging") {
        Some("Charging".to_string())
    } else if any_status("Discharging") {
        Some("Discharging".to_string())
    } else {
        first.status.clone()
    };
    let mut combined = PowerSupply {
        name: Some(batteries.iter().filter_map(|b| b.name.as_deref()).collect::<Vec<_>>().join("+")),
        kind: Some("Battery".to_string()),
        status,
        present: Some(true),
        energy_now: sum(|b| b.energy_now),
        energy_full: sum(|b| b.energy_full),
        energy_full_design: sum(|b| b.energy_full_design),
        charge_now: sum(|b| b.charge_now),
        charge_full: sum(|b| b.charge_full),
        charge_full_design: sum(|b| b.charge_full_design),
        power_now: sum(|b| b.power_now),
        current_now: sum(|b| b.current_now),
        voltage_now: first.voltage_now,
        cycle_count: batteries.iter().filter_map(|b| b.cycle_count).max(),
        temp_deci_c: first.temp_deci_c,
        health: first.health.clone(),
        ..PowerSupply::default()
    };
    // Without summable amounts, the mean of the reported percentages.
    if combined.energy_full.is_none() && combined.charge_full.is_none() {
        let caps: Vec<u64> = batteries.iter().filter_map(|b| b.capacity).collect();
        combined.capacity = (!caps.is_empty()).then(|| caps.iter().sum::<u64>() / caps.len() as u64);
    }
    Some(combined)
}

/// Build the reading from the system batteries of `supplies` (combined when there are
/// several) and the adapters among them. `None` when there is no system battery.
pub fn from_linux(supplies: &[PowerSupply]) -> Option<BatteryReading> {
    let batteries: Vec<&PowerSupply> = supplies.iter().filter(|s| s.is_system_battery()).collect();
    let combined = combine(&batteries)?;
    let bat = &combined;
    let status = bat.status.as_deref().unwrap_or("Unknown");
    let adapters: Vec<bool> = supplies.iter().filter(|s| s.is_adapter()).filter_map(|s| s.online).collect();
    let plugged = if adapters.is_empty() {
        match status {
            "Charging" | "Full" | "Not charging" => Some(true),
            "Discharging" => Some(false),
            _ => None,
        }
    } else {
        Some(adapters.iter().any(|online| *online))
    };
    let charging = match status {
        "Unknown" => None,
        s => Some(s == "Charging"),
    };
    // (now, full, design) in consistent units, preferring energy.
    let energy = bat.energy_full.map(|full| (bat.energy_now, full, bat.energy_full_design));
    let charge = bat.charge_full.map(|full| (bat.charge_now, full, bat.charge_full_design));
    let percent = bat
        .capacity
        .map(|c| c as f64)
        .or_else(|| energy.or(charge).and_then(|(now, full, _)| ratio_percent(now?.min(full), full)))?;
    let health_percent = energy.or(charge).and_then(|(_, full, design)| ratio_percent(full, design?));
    // Rates: µW for energies; µA for charges; µW derived from µA × µV when only current is given.
    let power = bat
        .power_now
        .or_else(|| Some((bat.current_now? as f64 * bat.voltage_now? as f64 / 1e6) as u64))
        .filter(|p| *p > 0);
    let current = bat.current_now.filter(|c| *c > 0);
    let time_for = |amount_energy: Option<u64>, amount_charge: Option<u64>| {
        amount_energy
            .zip(power)
            .and_then(|(a, r)| hours_to_seconds(a, r))
            .or_else(|| amount_charge.zip(current).and_then(|(a, r)| hours_to_seconds(a, r)))
    };
    let time_left = if status == "Discharging" { time_for(bat.energy_now, bat.charge_now) } else { None };
    let time_to_full = if status == "Charging" {
        let missing = |now: Option<u64>, full: Option<u64>| Some(full?.saturating_sub(now?));
        time_for(missing(bat.energy_now, bat.energy_full), missing(bat.charge_now, bat.charge_full))
    } else {
        None
    };
    let explicit = bat.health.as_deref();
    Some(BatteryReading {
        percent: round1(percent.min(100.0)),
        plugged,
        charging,
        time_left,
        time_to_full,
        cycle_count: bat.cycle_count.filter(|c| *c > 0),
        health_percent,
        condition: condition(explicit, false, health_percent),
        temperature_c: bat.temp_deci_c.map(|t| round1(t as f64 / 10.0)),
        source: "sysfs".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};
    use serde_json::{json, Value};

    const W: &str = "battery";

    /// What each fixture parses to, and the reading the widget would report from it alone.
    fn render(name: &str, body: &str) -> Option<Value> {
        let (parsed, reading) = if name.starts_with("pmset-") {
            let parsed = parse_pmset_batt(body);
            let reading = parsed.as_ref().ok().map(|p| from_macos(Some(p), None));
            (result_json(parsed), reading)
        } else if name.starts_with("ioreg-") {
            let parsed = parse_ioreg_battery(body);
            let reading = parsed.as_ref().ok().map(|io| from_macos(None, Some(io)));
            (result_json(parsed), reading)
        } else if name.starts_with("sys-class-power_supply-") && name.contains("-uevent--") {
            let parsed = parse_power_supply_uevent(body);
            let reading = parsed.as_ref().ok().map(|ps| from_linux(std::slice::from_ref(ps)));
            (result_json(parsed), reading)
        } else if name.starts_with("sys-class-power_supply-") && name.contains("-online--") {
            (result_json(parse_online(body)), None)
        } else {
            return None;
        };
        Some(json!({ "parsed": parsed, "reading": reading }))
    }

    #[test]
    fn every_fixture_matches_its_golden_file() {
        check_golden(W, render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust(
            W,
            |input| {
                let pmset = parse_pmset_batt(input).ok();
                let ioreg = parse_ioreg_battery(input).ok();
                let _ = from_macos(pmset.as_ref(), ioreg.as_ref());
                let _ = from_macos(None, ioreg.as_ref());
                let _ = parse_power_supply_uevent(input).map(|ps| from_linux(&[ps]));
                let _ = parse_online(input);
            },
            render,
        );
    }

    #[test]
    fn pmset_discharging_with_estimate() {
        let p = parse_pmset_batt(&fixture(W, "pmset-g-batt--osx10.11.6-discharging-battstat2.txt")).expect("parses");
        assert_eq!(p.ac_power, Some(false));
        let b = p.battery.as_ref().expect("battery line");
        assert_eq!((b.name.as_str(), b.percent, b.state.as_str()), ("InternalBattery-0", 89.0, "discharging"));
        assert_eq!((b.remaining_s, b.present), (Some(4 * 3600 + 47 * 60), Some(true)));
        let r = from_macos(Some(&p), None).expect("reading");
        assert_eq!((r.plugged, r.charging, r.time_left, r.time_to_full), (Some(false), Some(false), Some(17220), None));
    }

    #[test]
    fn pmset_charging_spaces_instead_of_tab_and_old_layout() {
        let p = parse_pmset_batt(&fixture(W, "pmset-g-batt--charging-2016-maccli69.txt")).expect("parses");
        let r = from_macos(Some(&p), None).expect("reading");
        assert_eq!((r.percent, r.charging, r.time_to_full, r.time_left), (84.0, Some(true), Some(3900), None));
        let old = parse_pmset_batt(&fixture(W, "pmset-g-batt--yosemite-ac-attached-not-charging-tmuxbattery3.txt"));
        let b = old.expect("parses").battery.expect("line");
        assert_eq!((b.percent, b.state.as_str(), b.present, b.remaining_s), (2.0, "ac attached", None, None));
    }

    #[test]
    fn pmset_desktop_has_no_battery() {
        let p = parse_pmset_batt(&fixture(W, "pmset-g-batt--desktop-no-battery-liquidprompt317.txt")).expect("parses");
        assert_eq!(p, PmsetBatt { ac_power: Some(true), battery: None });
        assert_eq!(from_macos(Some(&p), None), None);
    }

    #[test]
    fn ioreg_apple_silicon_health_from_raw_capacities() {
        let name = "ioreg-r-c-AppleSmartBattery--applesilicon-140w-macos26-ac-fullycharged-float-joulewise.txt";
        let io = parse_ioreg_battery(&fixture(W, name)).expect("parses");
        assert_eq!((io.cycle_count, io.design_capacity, io.raw_max_capacity), (Some(312), Some(8579), Some(7585)));
        assert_eq!((io.max_capacity, io.current_capacity, io.temperature_centi_c), (Some(100), Some(100), Some(3034)));
        assert_eq!((io.installed, io.fully_charged, io.is_charging), (Some(true), Some(true), Some(false)));
        let r = from_macos(None, Some(&io)).expect("reading");
        assert_eq!((r.percent, r.health_percent, r.temperature_c), (100.0, Some(88.4), Some(30.3)));
        assert_eq!((r.condition.as_deref(), r.plugged, r.time_left), (Some("Normal"), Some(true), None));
    }

    #[test]
    fn ioreg_intel_discharging_uses_mah_capacities() {
        let io = parse_ioreg_battery(&fixture(W, "ioreg-r-c-AppleSmartBattery--intel-2015mbp-discharging-shushen.txt"))
            .expect("parses");
        let r = from_macos(None, Some(&io)).expect("reading");
        // 4761 / 5889 mAh now, 5889 / 6559 design, 271 min to empty.
        assert_eq!((r.percent, r.health_percent, r.cycle_count), (80.8, Some(89.8), Some(155)));
        assert_eq!(
            (r.plugged, r.charging, r.time_left, r.temperature_c),
            (Some(false), Some(false), Some(16260), Some(29.9))
        );
    }

    #[test]
    fn ioreg_ghost_battery_xml_means_no_battery() {
        let name = "ioreg-n-AppleSmartBattery-r-a--m4-macmini-ghost-battery-distatus34.txt";
        let io = parse_ioreg_battery(&fixture(W, name)).expect("parses the cut-off plist");
        assert_eq!((io.installed, io.external_connected, io.cycle_count), (Some(false), Some(true), Some(0)));
        assert_eq!(from_macos(None, Some(&io)), None);
    }

    #[test]
    fn pmset_and_ioreg_merge() {
        let p = parse_pmset_batt(&fixture(W, "pmset-g-batt--ac-charged-100pct-2026-sessionreport.txt")).expect("pmset");
        let name = "ioreg-r-c-AppleSmartBattery--applesilicon-140w-macos26-ac-fullycharged-float-joulewise.txt";
        let io = parse_ioreg_battery(&fixture(W, name)).expect("ioreg");
        let r = from_macos(Some(&p), Some(&io)).expect("reading");
        assert_eq!(
            r,
            BatteryReading {
                percent: 100.0,
                plugged: Some(true),
                charging: Some(false),
                time_left: None,
                time_to_full: None,
                cycle_count: Some(312),
                health_percent: Some(88.4),
                condition: Some("Normal".into()),
                temperature_c: Some(30.3),
                source: "pmset+ioreg".into(),
            }
        );
    }

    #[test]
    fn linux_energy_variant_with_adapter_offline() {
        let bat = parse_power_supply_uevent(&fixture(
            W,
            "sys-class-power_supply-BAT0-uevent--thinkpad-energy-discharging-procfs.txt",
        ))
        .expect("battery");
        let ac = parse_power_supply_uevent(&fixture(W, "sys-class-power_supply-AC-uevent--offline-procfs.txt"))
            .expect("adapter");
        assert!(bat.is_system_battery() && !bat.is_adapter());
        assert!(ac.is_adapter() && !ac.is_system_battery());
        let r = from_linux(&[ac, bat]).expect("reading");
        // 40730000 µWh at 5064000 µW = 8.043 h; 47390000 / 47520000 design.
        assert_eq!((r.percent, r.plugged, r.charging), (85.0, Some(false), Some(false)));
        assert_eq!((r.time_left, r.health_percent, r.condition.as_deref()), (Some(28955), Some(99.7), Some("Normal")));
        assert_eq!(r.cycle_count, None, "ACPI's 0 means unknown");
    }

    #[test]
    fn linux_charge_variant_without_capacity_line() {
        let bat = parse_power_supply_uevent(&fixture(
            W,
            "sys-class-power_supply-BAT0-uevent--dell-BAT1-charge-old-kernel-cairodock.txt",
        ))
        .expect("battery");
        let r = from_linux(&[bat]).expect("reading");
        // 1760000 / 2200000 µAh; CURRENT_NOW=0 gives no estimate.
        assert_eq!((r.percent, r.time_left, r.health_percent, r.plugged), (80.0, None, Some(100.0), Some(false)));
    }

    #[test]
    fn linux_charging_time_to_full_and_peripherals_ignored() {
        let text = "POWER_SUPPLY_NAME=BAT0\nPOWER_SUPPLY_TYPE=Battery\nPOWER_SUPPLY_STATUS=Charging\n\
                    POWER_SUPPLY_PRESENT=1\nPOWER_SUPPLY_ENERGY_NOW=25000000\nPOWER_SUPPLY_ENERGY_FULL=50000000\n\
                    POWER_SUPPLY_ENERGY_FULL_DESIGN=60000000\nPOWER_SUPPLY_POWER_NOW=25000000\nPOWER_SUPPLY_CYCLE_COUNT=42\n\
                    POWER_SUPPLY_TEMP=315\n";
        let mouse = "POWER_SUPPLY_NAME=hid-mouse-battery\nPOWER_SUPPLY_TYPE=Battery\nPOWER_SUPPLY_SCOPE=Device\n\
                     POWER_SUPPLY_CAPACITY=10\n";
        let usb = "POWER_SUPPLY_NAME=ucsi-source-psy-USBC000:001\nPOWER_SUPPLY_TYPE=USB\nPOWER_SUPPLY_ONLINE=1\n";
        let supplies: Vec<PowerSupply> =
            [mouse, text, usb].iter().map(|t| parse_power_supply_uevent(t).expect("parses")).collect();
        let r = from_linux(&supplies).expect("reading");
        assert_eq!((r.percent, r.charging, r.plugged), (50.0, Some(true), Some(true)));
        assert_eq!((r.time_to_full, r.time_left, r.cycle_count), (Some(3600), None, Some(42)));
        assert_eq!(
            (r.health_percent, r.condition.as_deref(), r.temperature_c),
            (Some(83.3), Some("Normal"), Some(31.5))
        );
        assert_eq!(from_linux(&supplies[..1]), None, "a mouse battery is not the system battery");
    }

    #[test]
    fn linux_two_batteries_are_combined() {
        let read = |name: &str| parse_power_supply_uevent(&fixture(W, name)).expect("parses");
        let bat0 = read("sys-class-power_supply-BAT0-uevent--thinkpad-energy-discharging-procfs.txt");
        let mut bat1 = read("sys-class-power_supply-BAT0-uevent--thinkpad-energy-discharging-81pct-node_exporter.txt");
        bat1.name = Some("BAT1".into());
        let r = from_linux(&[bat0, bat1]).expect("reading");
        // (40730000 + 36580000) / (47390000 + 45070000) µWh; (47390000 + 45070000) / 95040000
        // design; 77310000 µWh at 10066000 µW = 7.68 h.
        assert_eq!((r.percent, r.health_percent, r.time_left), (83.6, Some(97.3), Some(27649)));
        assert_eq!((r.plugged, r.charging), (Some(false), Some(false)));
    }

    #[test]
    fn typed_errors() {
        assert_eq!(parse_pmset_batt(""), Err(ParseError::Empty));
        assert!(matches!(parse_pmset_batt("hello\n"), Err(ParseError::Unrecognised(_))));
        assert_eq!(
            parse_pmset_batt("Now drawing from 'AC Power'\n -InternalBattery-0\tabc%; charging\n"),
            Err(ParseError::bad_value("percent", "abc%"))
        );
        assert!(matches!(parse_ioreg_battery("+-o Foo\n{\n}\n"), Err(ParseError::Unrecognised(_))));
        assert_eq!(parse_ioreg_battery("\"CycleCount\" = lots\n"), Err(ParseError::bad_value("CycleCount", "lots")));
        assert_eq!(
            parse_power_supply_uevent("POWER_SUPPLY_CAPACITY=full\n"),
            Err(ParseError::bad_value("POWER_SUPPLY_CAPACITY", "full"))
        );
        assert_eq!(parse_online("maybe"), Err(ParseError::bad_value("online", "maybe")));
        assert_eq!(condition(None, false, Some(79.9)).as_deref(), Some("Service Recommended"));
        assert_eq!(condition(Some("Overheat"), false, Some(99.0)).as_deref(), Some("Overheat"));
    }
}
