//! The unit the agent stores and sends: one widget reading with its time.
//!
//! Serialized as JSON inside sealed spool frames and v2 batches:
//! `{"ts":"2026-11-22T13:00:00.000Z","widget":"cpu","kind":"metric","level":"info",
//! "message":"","data":{…}}`. Field names are part of the v2 wire format: do not rename.
//! `kind` (an addition to DESIGN's `{ts, widget, level, message, data}`) says where the
//! record belongs in an Atlas report, so the sender needs no widget table.

use fleet_widgets::{Level, Sample, SampleKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// When it was collected, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// The metrics key or widget-log type (`cpu`, `battery`, `wifi`, …).
    pub widget: String,
    /// Where it goes in an Atlas report.
    pub kind: SampleKind,
    /// Severity.
    pub level: Level,
    /// Short message (widget logs).
    pub message: String,
    /// The values.
    pub data: Value,
}

impl Record {
    /// A record from a widget's sample taken at `ts`.
    pub fn from_sample(sample: Sample, ts: Timestamp) -> Self {
        Record {
            ts: ts.to_rfc3339(),
            widget: sample.name,
            kind: sample.kind,
            level: sample.level,
            message: sample.message,
            data: sample.data,
        }
    }

    /// The timestamp parsed back (`None` if the stored text is not ours).
    pub fn timestamp(&self) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(&self.ts)
    }
}
