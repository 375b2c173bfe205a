//! What the agent put on the wire and what the server kept, reduced to record identities.
//!
//! A record is identified by `(widget, ts)` for v2 (ts has millisecond resolution and each
//! widget yields one record per cycle; one machine per run) and by `(widget_type, timestamp)`
//! for Atlas widget logs. The test knows every transport key, so it opens each body itself
//! with the agent's own envelope code.

use std::collections::BTreeMap;
use std::path::Path;

use super::store::Store;

use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::record::{BatchBody, Record};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `(widget, ts)` of a record.
pub type RecordId = (String, String);

/// One v2 batch body, opened.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Its sequence number.
    pub seq: u64,
    /// Its records' identities, in order.
    pub ids: Vec<RecordId>,
    /// SHA-256 (hex, first 16 digits) of its records as JSON: equal records, equal digest.
    pub digest: String,
}

impl Batch {
    fn of(seq: u64, records: &[Record]) -> Batch {
        let json = serde_json::to_vec(records).unwrap_or_default();
        let digest: String = Sha256::digest(&json).iter().take(8).map(|b| format!("{b:02x}")).collect();
        Batch { seq, ids: records.iter().map(|r| (r.widget.clone(), r.ts.clone())).collect(), digest }
    }
}

/// Open a v2 request body: sealed with one of `keys`, or plaintext when `keys` is empty.
pub fn open_batch(body: &[u8], keys: &[Key32]) -> Result<Batch, String> {
    let plaintext = if keys.is_empty() {
        body.to_vec()
    } else {
        let opened = envelope::open_v2(keys, body).map_err(|e| format!("v2 body does not open: {e}"))?;
        opened.plaintext
    };
    let batch: BatchBody = serde_json::from_slice(&plaintext).map_err(|e| format!("v2 plaintext: {e}"))?;
    Ok(Batch::of(batch.seq, &batch.records))
}

/// Open an Atlas `POST /api/fleet/widget-logs` body (v1-sealed with one of `keys`, or
/// plaintext when `keys` is empty): the identities of its entries.
pub fn open_widget_logs(body: &[u8], keys: &[Key32]) -> Result<Vec<RecordId>, String> {
    let plaintext = if keys.is_empty() {
        body.to_vec()
    } else {
        keys.iter()
            .find_map(|key| envelope::open_v1(key, body).ok())
            .ok_or_else(|| "v1 body opens with no known key".to_string())?
    };
    let payload: Value = serde_json::from_slice(&plaintext).map_err(|e| format!("widget-logs plaintext: {e}"))?;
    let logs = payload["logs"].as_array().ok_or("widget-logs plaintext has no `logs` array")?;
    Ok(logs
        .iter()
        .map(|entry| {
            let text = |name: &str| entry[name].as_str().unwrap_or("").to_string();
            (text("widget_type"), text("timestamp"))
        })
        .collect())
}

/// The v2 batches a receiver store holds for `machine_id`, in store order. The one place the
/// harness reads the store, through the receiver's storage seam (committed batches only), so
/// the same check holds the file store and PostgreSQL.
pub fn stored_batches(store: &Store, machine_id: &str) -> Result<Vec<Batch>, String> {
    let lines = store.read_records(machine_id)?;
    let mut batches = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    for line in lines {
        match line.get("kind").and_then(Value::as_str) {
            Some("record") => {
                let record = serde_json::from_value(line.get("record").cloned().unwrap_or(Value::Null))
                    .map_err(|e| format!("stored record: {e}"))?;
                records.push(record);
            }
            Some("batch") => {
                let seq = line.get("seq").and_then(Value::as_u64).ok_or("batch line without seq")?;
                batches.push(Batch::of(seq, &records));
                records.clear();
            }
            _ => {}
        }
    }
    Ok(batches)
}

/// The widget-log entries the Atlas stand-in captured (every request it answered or was
/// killed while answering), opened; how many times each identity arrived.
pub fn captured_widget_logs(capture: &Path, keys: &[Key32]) -> Result<BTreeMap<RecordId, usize>, String> {
    let text = std::fs::read_to_string(capture).unwrap_or_default();
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        // A line torn by kill -9 was never answered: skip it.
        let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
        if entry["path"] != "/api/fleet/widget-logs" {
            continue;
        }
        let body = entry["body"].as_str().unwrap_or("");
        // A body torn by a reset arrives short (`rfile.read` returns what came); the real
        // server cannot decrypt or parse it and stores nothing.
        let length = entry["headers"]["content-length"].as_str().and_then(|v| v.trim().parse::<usize>().ok());
        if length.is_some_and(|length| body.len() < length) {
            continue;
        }
        for id in open_widget_logs(body.as_bytes(), keys)? {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    Ok(seen)
}
