//! The unit the agent stores and sends: one widget reading with its time.
//!
//! Serialized as JSON inside sealed spool frames and v2 batches:
//! `{"ts":"2026-11-22T13:00:00.000Z","widget":"cpu","kind":"metric","level":"info",
//! "message":"","data":{…}}`. Field names are part of the v2 wire format: do not rename.
//! `kind` (an addition to the original design's `{ts, widget, level, message, data}`) says
//! where the record belongs in an Atlas report, so the sender needs no widget table.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a sample belongs in the Atlas report shapes (docs/architecture.md, "Atlas protocol").
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
    /// The lowercase wire name (records, v2 batches).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }

    /// The name Atlas's widget-log collector sends (`level.upper()`): `INFO`, `WARNING`,
    /// `ERROR`.
    pub fn as_atlas_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

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
    /// The timestamp parsed back (`None` if the stored text is not ours).
    pub fn timestamp(&self) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(&self.ts)
    }
}

/// Records the spool had to drop (cap reached, corrupt segment), reported upstream so loss is
/// visible. Cumulative since the spool was created. Serialized inside v2 batch plaintexts:
/// `{"count":N,"oldest":"…","newest":"…"}` (`oldest`/`newest` omitted when nothing was
/// dropped). Do not rename fields: they are wire format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropped {
    /// How many records were dropped.
    pub count: u64,
    /// Timestamp (RFC 3339) of the oldest dropped record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<String>,
    /// Timestamp (RFC 3339) of the newest dropped record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
}

/// The plaintext of a v2 batch (`docs/v2-protocol.md`), sealed by the envelope module:
/// `{"machine_id":M,"seq":N,"sent_at":T,"records":[…],"dropped":{…}}`. Field ORDER is part of
/// the test vectors (serde serializes in declaration order): do not reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The sending machine; must equal the envelope's `machine_id`.
    pub machine_id: String,
    /// Batch sequence number; must equal the envelope's `seq`.
    pub seq: u64,
    /// When the batch was first built (RFC 3339 UTC).
    pub sent_at: String,
    /// The records, oldest first.
    pub records: Vec<Record>,
    /// Loss accounting from the spool.
    pub dropped: Dropped,
}

/// The SHA-256 (lower-case hex) of a batch's records in their canonical form (`docs/v2-protocol.md`, vectors in
/// `tests/vectors/digest.json`): what a commit line's `digest` holds.
pub fn records_digest(records: &[Record]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    // Serializing records (strings, enums, JSON values) cannot fail.
    hasher.update(serde_json::to_vec(records).unwrap_or_default());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_body_serializes_in_the_test_vector_order() {
        let body = BatchBody {
            machine_id: "vec-01".into(),
            seq: 7,
            sent_at: "2026-11-22T00:00:00Z".into(),
            records: vec![],
            dropped: Dropped::default(),
        };
        let json = serde_json::to_string(&body).map_err(|e| e.to_string());
        assert_eq!(
            json.as_deref(),
            Ok(
                r#"{"machine_id":"vec-01","seq":7,"sent_at":"2026-11-22T00:00:00Z","records":[],"dropped":{"count":0}}"#
            )
        );
    }

    #[test]
    fn the_records_digest_matches_the_known_answer_vectors() {
        // tests/vectors/digest.json, computed with Python's json and hashlib.
        let vectors: Value = serde_json::from_str(include_str!("../tests/vectors/digest.json")).expect("json");
        let list = vectors["vectors"].as_array().expect("vectors");
        assert!(list.len() >= 3);
        for vector in list {
            let name = vector["name"].as_str().unwrap_or("?");
            let records: Vec<Record> = serde_json::from_value(vector["records"].clone()).expect("records");
            let canonical = serde_json::to_string(&records).expect("json");
            assert_eq!(Some(canonical.as_str()), vector["canonical"].as_str(), "{name}");
            assert_eq!(Some(records_digest(&records).as_str()), vector["digest"].as_str(), "{name}");
        }
    }
}
