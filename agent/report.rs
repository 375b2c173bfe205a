//! The Atlas report and widget-log shapes, built from [`Record`]s, field for field what
//! Atlas's own agent (`atlas/fleet_agent.py` in `sraths91/atlas`) sends; the checked-in
//! example `tests/fixtures/atlas/fleet-agent-report.json` is compared with it by a test.
//!
//! The report is `{machine_id, machine_info, metrics}`: `machine_info` merges the latest
//! machine-info record (its `boot_time` turned into naive local ISO-8601, as Atlas sends
//! `datetime.fromtimestamp(boot_time).isoformat()`), `metrics.<widget>` holds the latest metric
//! record of each widget, `metrics.timestamp` is the report's time in naive local ISO-8601,
//! `metrics.uptime_seconds` the seconds since boot (a float), and `metrics.battery` and
//! `metrics.temperature` are `null` until (unless) a reading arrives (Atlas sends `None` for
//! both on machines without them). A widget log is `{timestamp, level, widget_type, message,
//! data}` with `timestamp` in naive local ISO-8601 (no `Z`, no offset), which is what the Atlas
//! server stores and compares, and `level` upper-case (`INFO`, `WARNING`, `ERROR`) as Atlas's
//! widget-log collector sends it.

use std::fmt::Write as _;

use chrono::{Datelike, Local, TimeZone, Timelike};
use fleet_widgets::{Level, SampleKind, Timestamp};
use serde_json::{json, Map, Value};

use fleet_wire::record::Record;

/// The newest report values seen, updated record by record. Bounded: one value per widget.
#[derive(Debug, Clone, Default)]
pub struct LatestReport {
    machine_info: Map<String, Value>,
    metrics: Map<String, Value>,
}

impl LatestReport {
    /// An empty report (`battery` and `temperature` null).
    pub fn new() -> Self {
        let mut metrics = Map::new();
        for key in NULL_UNTIL_READ {
            metrics.insert(key.to_string(), Value::Null);
        }
        LatestReport { machine_info: Map::new(), metrics }
    }

    /// Fold one record in; widget logs are ignored here.
    pub fn update(&mut self, record: &Record) {
        match record.kind {
            SampleKind::Metric => {
                self.metrics.insert(record.widget.clone(), record.data.clone());
            }
            SampleKind::MachineInfo => {
                if let Value::Object(fields) = &record.data {
                    for (key, value) in fields {
                        self.machine_info.insert(key.clone(), value.clone());
                    }
                }
            }
            SampleKind::Log => {}
        }
    }

    /// True once any metric or machine info has been seen.
    pub fn has_data(&self) -> bool {
        !self.machine_info.is_empty() || self.metrics.len() > NULL_UNTIL_READ.len()
    }

    /// The Atlas report body (before sealing), as of now.
    pub fn to_json(&self, machine_id: &str) -> Value {
        self.to_json_at(machine_id, Timestamp::now())
    }

    /// The Atlas report body as of `now`.
    pub fn to_json_at(&self, machine_id: &str, now: Timestamp) -> Value {
        let mut machine_info = self.machine_info.clone();
        let boot_time = boot_time_secs(&self.machine_info, &self.metrics);
        if let Some(Value::Number(secs)) = machine_info.get("boot_time") {
            if let Some(text) = secs.as_i64().and_then(|s| naive_local_iso(Timestamp(s.saturating_mul(1000)))) {
                machine_info.insert("boot_time".to_string(), Value::String(text));
            }
        }
        let mut metrics = self.metrics.clone();
        if let Some(text) = naive_local_iso(now) {
            metrics.insert("timestamp".to_string(), Value::String(text));
        }
        if let Some(boot) = boot_time {
            let uptime = (now.0 as f64 / 1000.0 - boot as f64).max(0.0);
            metrics.insert("uptime_seconds".to_string(), json!((uptime * 1000.0).round() / 1000.0));
        }
        json!({
            "machine_id": machine_id,
            "machine_info": Value::Object(machine_info),
            "metrics": Value::Object(metrics),
        })
    }
}

/// Metrics Atlas's agent always sends, `None` on machines without them; ours are `null` until
/// a reading arrives.
const NULL_UNTIL_READ: [&str; 2] = ["battery", "temperature"];

/// Boot time in Unix seconds, from the `system` metric or machine info.
fn boot_time_secs(machine_info: &Map<String, Value>, metrics: &Map<String, Value>) -> Option<i64> {
    metrics
        .get("system")
        .and_then(|system| system.get("boot_time"))
        .or_else(|| machine_info.get("boot_time"))
        .and_then(Value::as_i64)
}

/// `ts` as naive local ISO-8601 with microseconds, the form Python's `datetime.isoformat()`
/// gives (`2026-11-22T14:00:00.123000`).
/// Written field by field, exactly what chrono's `format("%Y-%m-%dT%H:%M:%S%.6f")` writes (a
/// year outside 0..=9999 signed and at least 4 digits): chrono's format-string machinery cost
/// 9 KB of the binary for this one call (BENCHMARKS.md, "Branch size3").
pub fn naive_local_iso(ts: Timestamp) -> Option<String> {
    let time = Local.timestamp_millis_opt(ts.0).single()?.naive_local();
    let year = time.year();
    let mut text = if (0..10_000).contains(&year) { format!("{year:04}") } else { format!("{year:+05}") };
    let second = time.second() + time.nanosecond() / 1_000_000_000;
    let micros = time.nanosecond() / 1_000 % 1_000_000;
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "-{:02}-{:02}T{:02}:{:02}:{second:02}.{micros:06}",
        time.month(),
        time.day(),
        time.hour(),
        time.minute()
    );
    Some(text)
}

/// A record's UTC timestamp as naive local ISO-8601 with microseconds, the form Python's
/// `datetime.now().isoformat()` gives (`2026-11-22T14:00:00.123000`). Falls back to the
/// stored text without its `Z` if it cannot be parsed.
pub fn naive_local(record: &Record) -> String {
    match record.timestamp().and_then(naive_local_iso) {
        Some(text) => text,
        None => record.ts.trim_end_matches('Z').to_string(),
    }
}

/// `widget_type` of a failed speed test on the Atlas wire. Atlas's server stores every
/// `speedtest` entry with data as a result in its speed-test aggregator, a failure as
/// 0 Mbps, which would drag every fleet average down; under this type the failure is still
/// stored and shown with the machine's logs.
pub const ATLAS_SPEEDTEST_ERROR_TYPE: &str = "speedtest_error";

/// A widget-log record as one entry of `POST /api/fleet/widget-logs`.
pub fn widget_log_entry(record: &Record) -> Value {
    let widget_type = match (record.widget.as_str(), record.level) {
        ("speedtest", Level::Error) => ATLAS_SPEEDTEST_ERROR_TYPE,
        (name, _) => name,
    };
    json!({
        "timestamp": naive_local(record),
        "level": record.level.as_atlas_str(),
        "widget_type": widget_type,
        "message": record.message,
        "data": record.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::record_of;
    use fleet_widgets::Sample;

    #[test]
    fn latest_values_win_and_battery_defaults_to_null() {
        let mut report = LatestReport::new();
        assert_eq!(report.to_json("m")["metrics"]["battery"], Value::Null);
        report.update(&record_of(Sample::metric("cpu", json!({"percent": 1.0})), Timestamp(0)));
        report.update(&record_of(Sample::metric("cpu", json!({"percent": 2.0})), Timestamp(1)));
        report.update(&record_of(Sample::machine_info(json!({"hostname": "h"})), Timestamp(1)));
        report.update(&record_of(Sample::log("wifi", Level::Info, "wifi", json!({})), Timestamp(1)));
        let body = report.to_json("m");
        assert_eq!(body["metrics"]["cpu"]["percent"], 2.0);
        assert_eq!(body["machine_info"]["hostname"], "h");
        assert!(body["metrics"].get("wifi").is_none());
    }

    #[test]
    fn report_has_atlas_timestamp_uptime_and_iso_boot_time() {
        let mut report = LatestReport::new();
        report.update(&record_of(Sample::machine_info(json!({"boot_time": 1_795_300_000})), Timestamp(0)));
        report.update(&record_of(
            Sample::metric("system", json!({"uptime": 5600, "boot_time": 1_795_300_000})),
            Timestamp(0),
        ));
        let body = report.to_json_at("m", Timestamp(1_795_305_600_500));
        assert_eq!(body["metrics"]["uptime_seconds"], json!(5600.5));
        let ts = body["metrics"]["timestamp"].as_str().expect("timestamp");
        assert!(!ts.ends_with('Z') && ts.len() == "2026-11-22T00:00:00.500000".len(), "{ts}");
        let boot = body["machine_info"]["boot_time"].as_str().expect("boot_time is a string");
        assert_eq!(boot, naive_local_iso(Timestamp(1_795_300_000_000)).expect("local time"));
        assert_eq!(body["metrics"]["temperature"], Value::Null);
    }

    #[test]
    fn naive_local_iso_writes_what_chrono_format_writes() {
        // Around now, the epoch, before it, the last millisecond of 9999 and years outside
        // 0..=9999 (signed), each against chrono's own `%Y-%m-%dT%H:%M:%S%.6f`.
        let stamps = [
            0,
            -1,
            1_795_305_600_500,
            1_795_305_600_001,
            1_234_567_890_999,
            -62_135_596_800_000,
            -62_198_755_200_000,
            -100_000_000_000_000,
            253_402_300_799_999,
            253_402_300_800_000,
            300_000_000_000_000,
        ];
        for ms in stamps {
            let expected = Local
                .timestamp_millis_opt(ms)
                .single()
                .map(|t| t.naive_local().format("%Y-%m-%dT%H:%M:%S%.6f").to_string());
            assert_eq!(naive_local_iso(Timestamp(ms)), expected, "{ms}");
        }
    }

    #[test]
    fn widget_log_timestamps_are_naive() {
        let record = record_of(
            Sample::log("ping", Level::Warning, "ping", json!({"latency": 1.5})),
            Timestamp(1_795_305_600_123),
        );
        let entry = widget_log_entry(&record);
        let ts = entry["timestamp"].as_str().expect("string");
        assert!(!ts.ends_with('Z') && !ts.contains('+'), "{ts}");
        assert_eq!(ts.len(), "2026-11-22T00:00:00.123000".len());
        assert!(ts.ends_with(".123000"));
        assert_eq!(entry["level"], "WARNING");
        assert_eq!(entry["widget_type"], "ping");
    }

    #[test]
    fn a_failed_speed_test_is_not_a_zero_result_for_atlas() {
        let failed = record_of(
            Sample::log("speedtest", Level::Error, "speedtest", json!({"error": "timed out", "method": "http"})),
            Timestamp(0),
        );
        assert_eq!(widget_log_entry(&failed)["widget_type"], ATLAS_SPEEDTEST_ERROR_TYPE);
        let ok = record_of(Sample::log("speedtest", Level::Info, "speedtest", json!({"download": 1.0})), Timestamp(0));
        assert_eq!(widget_log_entry(&ok)["widget_type"], "speedtest");
    }
}
