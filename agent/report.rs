//! The Atlas report and widget-log shapes (DESIGN section 4), built from [`Record`]s.
//!
//! The report is `{machine_id, machine_info, metrics}`: `machine_info` merges the latest
//! machine-info record, `metrics.<widget>` holds the latest metric record of each widget, and
//! `metrics.battery` is `null` until (unless) a battery reading arrives. A widget log is
//! `{timestamp, level, widget_type, message, data}` with `timestamp` in naive local ISO-8601
//! (no `Z`, no offset), which is what the Atlas server stores and displays.

use chrono::{Local, TimeZone};
use fleet_widgets::SampleKind;
use serde_json::{json, Map, Value};

use crate::record::Record;

/// The newest report values seen, updated record by record. Bounded: one value per widget.
#[derive(Debug, Clone, Default)]
pub struct LatestReport {
    machine_info: Map<String, Value>,
    metrics: Map<String, Value>,
}

impl LatestReport {
    /// An empty report (`battery` null).
    pub fn new() -> Self {
        let mut metrics = Map::new();
        metrics.insert("battery".to_string(), Value::Null);
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
        !self.machine_info.is_empty() || self.metrics.len() > 1
    }

    /// The Atlas report body (before sealing).
    pub fn to_json(&self, machine_id: &str) -> Value {
        json!({
            "machine_id": machine_id,
            "machine_info": Value::Object(self.machine_info.clone()),
            "metrics": Value::Object(self.metrics.clone()),
        })
    }
}

/// A record's UTC timestamp as naive local ISO-8601 with microseconds, the form Python's
/// `datetime.now().isoformat()` gives (`2026-11-22T14:00:00.123000`). Falls back to the
/// stored text without its `Z` if it cannot be parsed.
pub fn naive_local(record: &Record) -> String {
    let local = record.timestamp().and_then(|ts| Local.timestamp_millis_opt(ts.0).single());
    match local {
        Some(time) => time.naive_local().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        None => record.ts.trim_end_matches('Z').to_string(),
    }
}

/// A widget-log record as one entry of `POST /api/fleet/widget-logs`.
pub fn widget_log_entry(record: &Record) -> Value {
    json!({
        "timestamp": naive_local(record),
        "level": record.level.as_str(),
        "widget_type": record.widget,
        "message": record.message,
        "data": record.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_widgets::{Level, Sample, Timestamp};

    #[test]
    fn latest_values_win_and_battery_defaults_to_null() {
        let mut report = LatestReport::new();
        assert_eq!(report.to_json("m")["metrics"]["battery"], Value::Null);
        report.update(&Record::from_sample(Sample::metric("cpu", json!({"percent": 1.0})), Timestamp(0)));
        report.update(&Record::from_sample(Sample::metric("cpu", json!({"percent": 2.0})), Timestamp(1)));
        report.update(&Record::from_sample(Sample::machine_info(json!({"hostname": "h"})), Timestamp(1)));
        report.update(&Record::from_sample(Sample::log("wifi", Level::Info, "wifi", json!({})), Timestamp(1)));
        let body = report.to_json("m");
        assert_eq!(body["metrics"]["cpu"]["percent"], 2.0);
        assert_eq!(body["machine_info"]["hostname"], "h");
        assert!(body["metrics"].get("wifi").is_none());
    }

    #[test]
    fn widget_log_timestamps_are_naive() {
        let record = Record::from_sample(
            Sample::log("ping", Level::Warning, "ping", json!({"latency": 1.5})),
            Timestamp(1_795_305_600_123),
        );
        let entry = widget_log_entry(&record);
        let ts = entry["timestamp"].as_str().expect("string");
        assert!(!ts.ends_with('Z') && !ts.contains('+'), "{ts}");
        assert_eq!(ts.len(), "2026-11-22T00:00:00.123000".len());
        assert!(ts.ends_with(".123000"));
        assert_eq!(entry["level"], "warning");
        assert_eq!(entry["widget_type"], "ping");
    }
}
