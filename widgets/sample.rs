//! What a widget emits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a sample belongs in the Atlas report shapes (DESIGN section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    /// `metrics.<name>` of the report: the latest value wins (cpu, memory, battery, …).
    Metric,
    /// Merged into the report's `machine_info` object.
    MachineInfo,
    /// A widget-log entry (`widget_type` = name): every one is delivered.
    Log,
}

/// Severity of a widget-log entry, as the Atlas server names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Normal reading.
    Info,
    /// Reading that suggests a problem (e.g. 100 % packet loss).
    Warning,
    /// The measurement itself failed.
    Error,
}

impl Level {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
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
        Sample { kind: SampleKind::Metric, name: name.to_string(), level: Level::Info, message: String::new(), data }
    }

    /// Fields merged into `machine_info`.
    pub fn machine_info(data: Value) -> Self {
        Sample {
            kind: SampleKind::MachineInfo,
            name: "machine_info".to_string(),
            level: Level::Info,
            message: String::new(),
            data,
        }
    }

    /// A widget-log entry of type `name`.
    pub fn log(name: &str, level: Level, message: &str, data: Value) -> Self {
        Sample { kind: SampleKind::Log, name: name.to_string(), level, message: message.to_string(), data }
    }
}
