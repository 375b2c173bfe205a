//! The newest rows of one machine, for `fleet-agent receive show`: every stored file read
//! through [`StoreReader`] (rows decrypted, bad rows counted and skipped), at most `limit` rows
//! of each file kept (bounded memory however large the store), then merged newest first.

use std::collections::VecDeque;

use serde_json::{Map, Value};

use crate::store::{StoreError, StoreReader, FILES, RECORDS_FILE};

/// Which rows [`StoreReader::newest`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowQuery {
    /// Only rows of this widget (`None`: every widget).
    pub widget: Option<String>,
    /// Only rows received at or after this UTC time, compared as text with `received_at`
    /// (`2026-11-22` or `2026-11-22T13:00:00Z`; `None`: any time).
    pub since: Option<String>,
    /// At most this many rows (the newest).
    pub limit: usize,
}

/// One shown row: its `received_at` and the whole decrypted row.
pub type ShownRow = (String, Map<String, Value>);

/// What [`StoreReader::newest`] found.
#[derive(Debug, Default)]
pub struct NewestRows {
    /// The rows, newest first (rows of one instant keep their newest-first file order).
    pub rows: Vec<ShownRow>,
    /// Rows that did not authenticate and were skipped.
    pub bad: u64,
}

impl StoreReader {
    /// The newest rows of `machine_id` matching `query` (batch commit rows are never shown).
    pub fn newest(&self, machine_id: &str, query: &RowQuery) -> Result<NewestRows, StoreError> {
        let limit = query.limit;
        let mut newest: Vec<ShownRow> = Vec::new();
        let mut bad = 0;
        for file in FILES {
            let mut last: VecDeque<ShownRow> = VecDeque::with_capacity(limit);
            let mut keep = |row: Map<String, Value>| {
                let received = row.get("received_at").and_then(Value::as_str).unwrap_or("").to_string();
                let kind = row.get("kind").and_then(Value::as_str).unwrap_or("");
                let row_widget = row.get("widget").and_then(Value::as_str);
                let wanted = kind != "batch"
                    && query.widget.as_deref().is_none_or(|w| row_widget == Some(w))
                    && query.since.as_deref().is_none_or(|s| received.as_str() >= s);
                if wanted && limit > 0 {
                    if last.len() == limit {
                        last.pop_front();
                    }
                    last.push_back((received, row));
                }
                true
            };
            let stats = if file == RECORDS_FILE {
                self.visit_records(machine_id, &mut keep)?
            } else {
                self.visit_v1(machine_id, file, &mut keep)?
            };
            bad += stats.bad;
            newest.extend(last);
        }
        // Files were read oldest first: reversed, a stable sort keeps rows of one instant newest first.
        newest.reverse();
        newest.sort_by(|a, b| b.0.cmp(&a.0));
        newest.truncate(limit);
        Ok(NewestRows { rows: newest, bad })
    }
}
