//! What a widget emits. The kinds and levels are the wire contract's ([`fleet_wire::record`]):
//! a sample becomes a record unchanged.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use fleet_wire::record::{Level, SampleKind};

/// Remove every `null` member of every object inside `value`, recursively: an unknown number
/// is left out rather than sent as `null`, because Atlas's readers call `float()` on what
/// they find and crash on `None` while they default a missing key. A top-level `null` (a
/// desktop's `battery`) is kept: Atlas sends that one itself.
pub fn without_nulls(mut value: Value) -> Value {
    remove_nulls(&mut value);
    value
}

/// [`without_nulls`] in place: no allocation (the per-cycle path calls it for every sample).
fn remove_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(remove_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_nulls),
        _ => {}
    }
}

/// One reading. `name` is the metrics key (`cpu`, `battery`) or the widget log's
/// `widget_type` (`wifi`, `ping`, `speedtest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Where it goes in the report.
    pub kind: SampleKind,
    /// Metrics key or widget type.
    pub name: String,
    /// Severity (meaningful for logs; `info` for metrics).
    pub level: Level,
    /// Short human message (for logs, e.g. `"wifi"`).
    pub message: String,
    /// The values, a JSON object (or `null`, e.g. `battery` on a desktop).
    pub data: Value,
}

impl Sample {
    /// A `metrics.<name>` value.
    pub fn metric(name: &str, data: Value) -> Self {
        let data = without_nulls(data);
        Sample { kind: SampleKind::Metric, name: name.to_string(), level: Level::Info, message: String::new(), data }
    }

    /// Fields merged into `machine_info`.
    pub fn machine_info(data: Value) -> Self {
        Sample {
            kind: SampleKind::MachineInfo,
            name: "machine_info".to_string(),
            level: Level::Info,
            message: String::new(),
            data: without_nulls(data),
        }
    }

    /// A widget-log entry of type `name`.
    pub fn log(name: &str, level: Level, message: &str, data: Value) -> Self {
        let data = without_nulls(data);
        Sample { kind: SampleKind::Log, name: name.to_string(), level, message: message.to_string(), data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nulls_are_left_out_at_every_depth_but_the_top() {
        let data = json!({"a": null, "b": 1, "c": {"d": null, "e": [{"f": null, "g": 2}]}});
        assert_eq!(without_nulls(data), json!({"b": 1, "c": {"e": [{"g": 2}]}}));
        assert_eq!(Sample::metric("battery", Value::Null).data, Value::Null);
        assert_eq!(Sample::log("ping", Level::Info, "ping", json!({"jitter": null})).data, json!({}));
        assert_eq!(
            (Level::Info.as_atlas_str(), Level::Warning.as_atlas_str(), Level::Error.as_atlas_str()),
            ("INFO", "WARNING", "ERROR")
        );
    }
}
