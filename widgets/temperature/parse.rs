//! Pure parsers of Linux thermal zones (`/sys/class/thermal/thermal_zone*/{type,temp}`),
//! compiled and tested on every OS.

use crate::ParseError;

/// A zone's `temp` (millidegrees Celsius) in degrees Celsius.
pub fn parse_zone_temp(text: &str) -> Result<f64, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let milli: i64 = text.parse().map_err(|_| ParseError::bad_value("temp", text))?;
    Ok(milli as f64 / 1000.0)
}

/// A zone's `type`, trimmed (`x86_pkg_temp`, `cpu-thermal`, `acpitz`, …).
pub fn parse_zone_type(text: &str) -> Result<String, ParseError> {
    let text = text.trim();
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(ParseError::Unrecognised("one thermal zone type word"));
    }
    Ok(text.to_string())
}

/// How well a zone type names the CPU: lower is better, `None` for zones of something else
/// (memory, battery, Wi-Fi, GPU). The package sensor of Intel CPUs, the `cpu` zones of ARM
/// boards, then the ACPI zone many laptops expose.
pub fn cpu_zone_rank(zone_type: &str) -> Option<u8> {
    let t = zone_type.to_ascii_lowercase();
    if t == "x86_pkg_temp" {
        Some(0)
    } else if t.starts_with("cpu") || t.contains("cpu-thermal") || t.contains("cpu_thermal") || t == "k10temp" {
        Some(1)
    } else if t.starts_with("soc") {
        Some(2)
    } else if t == "acpitz" {
        Some(3)
    } else {
        None
    }
}

/// The CPU temperature from `(type, °C)` zones: the best-ranked zone (see [`cpu_zone_rank`]),
/// the hottest among equals. `None` when no zone is the CPU's, or the reading is implausible
/// (a sensor reporting below −40 °C or above 150 °C is broken).
pub fn cpu_temperature(zones: &[(String, f64)]) -> Option<f64> {
    zones
        .iter()
        .filter(|(_, c)| (-40.0..=150.0).contains(c))
        .filter_map(|(t, c)| cpu_zone_rank(t).map(|rank| (rank, *c)))
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, result_json};

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        if name.starts_with("sys-class-thermal-zone-temp") {
            Some(result_json(parse_zone_temp(body)))
        } else if name.starts_with("sys-class-thermal-zone-type") {
            Some(result_json(parse_zone_type(body)))
        } else {
            None
        }
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("temperature", render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust(
            "temperature",
            |text| {
                let _ = parse_zone_temp(text);
                let _ = parse_zone_type(text).map(|t| cpu_zone_rank(&t));
            },
            render,
        );
    }

    #[test]
    fn the_cpu_zone_is_chosen_over_memory_and_acpi() {
        let zones = |list: &[(&str, f64)]| list.iter().map(|(t, c)| (t.to_string(), *c)).collect::<Vec<_>>();
        assert_eq!(cpu_temperature(&zones(&[("ddr-thermal", 41.0), ("cpu-thermal", 52.3)])), Some(52.3));
        assert_eq!(cpu_temperature(&zones(&[("acpitz", 39.0), ("x86_pkg_temp", 47.0)])), Some(47.0));
        assert_eq!(cpu_temperature(&zones(&[("acpitz", 39.0)])), Some(39.0));
        assert_eq!(cpu_temperature(&zones(&[("iwlwifi_1", 35.0), ("BAT0", 30.0)])), None);
        assert_eq!(cpu_temperature(&zones(&[("x86_pkg_temp", -273.0)])), None, "broken sensor");
        assert_eq!(parse_zone_temp("-5000\n"), Ok(-5.0));
        assert!(parse_zone_temp("hot").is_err());
    }
}
