//! Rows sealed at rest in PostgreSQL exactly as in the file store ([`crate::seal`]): the same
//! row objects, the same clear fields, AES-256-GCM with the same AAD construction, where the
//! file name and line number become the table name and the row's identity
//! (`docs/receiver-store-postgres.md`, "Sealed rows", vectors in
//! `tests/vectors/store-rows-postgres.json`):
//!
//! ```text
//! AAD = "fleet-agent store row v1" 0x00 TABLE 0x00 ROW 0x00 {NAME "=" JSON(VALUE) 0x0A for each clear field}
//!   TABLE  batches | records | reports | widget_logs
//!   ROW    batches, records: 0 (their identity, machine_id + seq (+ index), is in the clear fields)
//!          reports, widget_logs: the row's `id`
//! ```
//!
//! The clear fields become columns (`machine_id`, `seq`, `received_at`, `widget`, …; `kind`
//! is the table), the sealed part three columns: `store_kid` (text), `nonce` (12 bytes) and
//! `payload` (ciphertext || tag). In a plaintext store (`--store-plaintext`) `store_kid` and
//! `nonce` are NULL and `payload` is the compact JSON of the fields that would be sealed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::seal::{RowError, StoreKeys, CLEAR_FIELDS, KID_FIELD, NONCE_FIELD, SEALED_FIELD};

/// The tables holding rows, as named in the AAD. Do not rename: the AAD depends on the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// v2 batch commit rows.
    Batches,
    /// v2 records.
    Records,
    /// v1 reports.
    Reports,
    /// v1 widget-log entries.
    WidgetLogs,
}

impl Table {
    /// The table's name (and its AAD `TABLE`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Batches => "batches",
            Table::Records => "records",
            Table::Reports => "reports",
            Table::WidgetLogs => "widget_logs",
        }
    }

    /// The row `kind` of the file store's row objects this table holds.
    pub fn kind(self) -> &'static str {
        match self {
            Table::Batches => "batch",
            Table::Records => "record",
            Table::Reports => "report",
            Table::WidgetLogs => "widget-log",
        }
    }
}

/// The sealed columns of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Store key id (`None`: plaintext row).
    pub store_kid: Option<String>,
    /// The 12-byte nonce (`None`: plaintext row).
    pub nonce: Option<Vec<u8>>,
    /// Ciphertext || tag, or in a plaintext store the JSON of the unsealed fields.
    pub payload: Vec<u8>,
}

/// Seal a row object (with its clear fields, as the file store builds it) for `table` at
/// `row` (see the module docs).
pub fn seal(keys: &StoreKeys, table: Table, row_id: u64, row: Map<String, Value>, nonce: &[u8; 12]) -> Sealed {
    let stored = keys.seal(table.name(), row_id, row, nonce);
    let bytes = |name: &str| stored.get(name).and_then(Value::as_str).and_then(|t| STANDARD.decode(t).ok());
    match (stored.get(KID_FIELD).and_then(Value::as_str), bytes(NONCE_FIELD), bytes(SEALED_FIELD)) {
        (Some(kid), Some(nonce), Some(payload)) => {
            Sealed { store_kid: Some(kid.to_string()), nonce: Some(nonce), payload }
        }
        _ => {
            let secret: Map<String, Value> =
                stored.into_iter().filter(|(name, _)| !CLEAR_FIELDS.contains(&name.as_str())).collect();
            Sealed { store_kid: None, nonce: None, payload: Value::Object(secret).to_string().into_bytes() }
        }
    }
}

/// Open a row of `table` at `row_id`: `clear` holds its clear fields as they were sealed
/// (rebuilt from the columns), `sealed` its sealed columns. The row object as it was sealed.
pub fn open(
    keys: &StoreKeys,
    table: Table,
    row_id: u64,
    clear: Map<String, Value>,
    sealed: Sealed,
) -> Result<Map<String, Value>, RowError> {
    let mut stored = clear;
    match (sealed.store_kid, sealed.nonce) {
        (Some(kid), Some(nonce)) => {
            stored.insert(KID_FIELD.into(), Value::from(kid));
            stored.insert(NONCE_FIELD.into(), Value::from(STANDARD.encode(nonce)));
            stored.insert(SEALED_FIELD.into(), Value::from(STANDARD.encode(sealed.payload)));
        }
        (None, None) => {
            let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&sealed.payload) else {
                return Err(RowError::Malformed("plaintext payload is not a JSON object".into()));
            };
            for (name, value) in fields {
                if stored.contains_key(&name) || [KID_FIELD, NONCE_FIELD, SEALED_FIELD].contains(&name.as_str()) {
                    return Err(RowError::Malformed(format!("plaintext payload repeats `{name}`")));
                }
                stored.insert(name, value);
            }
        }
        _ => return Err(RowError::Malformed("store_kid and nonce must be both set or both NULL".into())),
    }
    keys.open(table.name(), row_id, stored)
}

/// A text column's value as the row object had it (NULL: JSON null).
pub fn text_value(column: Option<String>) -> Value {
    column.map_or(Value::Null, Value::from)
}

/// A row object's text field as a column (a missing or non-text value: NULL).
pub fn text_column(row: &Map<String, Value>, name: &str) -> Option<String> {
    row.get(name).and_then(Value::as_str).map(str::to_string)
}

/// A u64 (seq) in a bigint column: the same 64 bits (seqs from 2^63 up are stored negative).
pub fn seq_column(seq: u64) -> i64 {
    i64::from_ne_bytes(seq.to_ne_bytes())
}

/// The u64 of a bigint seq column (the inverse of [`seq_column`]).
pub fn seq_value(column: i64) -> u64 {
    u64::from_ne_bytes(column.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_wire::keys::Key32;
    use serde_json::json;

    fn keys() -> StoreKeys {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = 0x40 + i as u8;
        }
        StoreKeys::new(&[Key32::from_bytes(bytes)])
    }

    fn report() -> Map<String, Value> {
        json!({"received_at": "2026-11-22T13:00:00.000Z", "machine_id": "mac-01", "kind": "report",
               "e2ee": true, "report": {"machine_id": "mac-01", "metrics": {"cpu": {"percent": 3.5}}}})
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    fn clear(row: &Map<String, Value>) -> Map<String, Value> {
        row.iter().filter(|(k, _)| CLEAR_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn sealed_round_trip_and_moved_rows_fail() {
        let keys = keys();
        let sealed = seal(&keys, Table::Reports, 7, report(), &[3u8; 12]);
        assert!(sealed.store_kid.is_some() && sealed.nonce.as_deref() == Some(&[3u8; 12][..]));
        assert!(!String::from_utf8_lossy(&sealed.payload).contains("percent"));
        assert_eq!(open(&keys, Table::Reports, 7, clear(&report()), sealed.clone()), Ok(report()));
        assert_eq!(open(&keys, Table::Reports, 8, clear(&report()), sealed.clone()), Err(RowError::Tampered));
        assert_eq!(open(&keys, Table::WidgetLogs, 7, clear(&report()), sealed.clone()), Err(RowError::Tampered));
        let mut other = clear(&report());
        other.insert("machine_id".into(), json!("mac-02"));
        assert_eq!(open(&keys, Table::Reports, 7, other, sealed.clone()), Err(RowError::Tampered));
        assert_eq!(
            open(&StoreKeys::plaintext(), Table::Reports, 7, clear(&report()), sealed).err(),
            Some(RowError::NeedKey(keys.current_kid().unwrap_or_default().to_string()))
        );
    }

    #[test]
    fn plaintext_rows_round_trip_and_are_refused_with_a_key() {
        let plain = StoreKeys::plaintext();
        let sealed = seal(&plain, Table::Reports, 7, report(), &[0u8; 12]);
        assert_eq!(sealed.store_kid, None);
        assert_eq!(open(&plain, Table::Reports, 7, clear(&report()), sealed.clone()), Ok(report()));
        assert_eq!(open(&keys(), Table::Reports, 7, clear(&report()), sealed), Err(RowError::Plaintext));
    }

    #[test]
    fn seq_columns_keep_all_64_bits() {
        for seq in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(seq_value(seq_column(seq)), seq);
        }
    }
}
