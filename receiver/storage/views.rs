//! What the provided methods of [`StorageRead`] build from rows, for every backend alike:
//! machine summaries, the widget-log export's rows, `receive show`'s newest rows and
//! `receive verify`'s checks. Each reads rows through [`StorageRead::visit`] one at a time,
//! so memory stays bounded whatever the store's size.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ReadStats, RowProblem, StorageRead, StoreError, Stream};

/// Problems kept per machine by [`StorageRead::verify`] (the counts are always complete).
pub const MAX_PROBLEMS_PER_MACHINE: usize = 10;

/// What the store holds for one widget of one machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WidgetSummary {
    /// Metrics key or widget type (`cpu`, `ping`, …).
    pub widget: String,
    /// `widget-log` (v1 widget logs) or the v2 record kind (`metric`, `machine_info`, `log`).
    pub kind: String,
    /// How many stored.
    pub count: u64,
    /// The latest stored one (the `log` or `record` object).
    pub sample: Value,
}

/// What the store holds for one machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineSummary {
    /// The machine id.
    pub machine_id: String,
    /// Latest `received_at` of anything stored.
    pub last_seen: Option<String>,
    /// v1 reports stored.
    pub report_count: u64,
    /// v1 widget-log entries stored.
    pub widget_log_count: u64,
    /// v2 batches stored.
    pub batch_count: u64,
    /// v2 records stored.
    pub record_count: u64,
    /// Bytes stored ([`StorageRead::machine_bytes`]).
    pub bytes: u64,
    /// Rows that did not open (tampered, wrong key): not counted above.
    pub unreadable_rows: u64,
    /// `metrics` of the latest v1 report, else the latest v2 metric records by widget name.
    pub latest_metrics: Value,
    /// Per widget: count and latest sample, sorted by widget name then kind.
    pub widgets: Vec<WidgetSummary>,
}

/// Which widget-log rows an export wants.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only this widget type.
    pub widget_type: Option<String>,
    /// Only this machine.
    pub machine_id: Option<String>,
}

/// One widget-log row of the export (v1 widget logs and v2 `log` records alike).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRow {
    /// 1-based position in the export.
    pub id: u64,
    /// The machine (the CSV's `Serial Number` column).
    pub machine_id: String,
    /// As sent (v1: naive local time; v2: RFC 3339 UTC).
    pub timestamp: String,
    /// `info`, `warning`, `error`.
    pub level: String,
    /// `ping`, `wifi`, `speedtest`, ….
    pub widget_type: String,
    /// The message.
    pub message: String,
    /// The values.
    pub data: Value,
}

/// What `receive verify` found for one machine.
#[derive(Debug, Clone)]
pub struct MachineCheck {
    /// The machine.
    pub machine_id: String,
    /// Per stream: good, bad and torn counts.
    pub streams: Vec<(Stream, ReadStats)>,
    /// The first problem rows (at most [`MAX_PROBLEMS_PER_MACHINE`]).
    pub problems: Vec<RowProblem>,
}

impl MachineCheck {
    /// The machine's totals.
    pub fn total(&self) -> ReadStats {
        let mut total = ReadStats::default();
        for (_, stats) in &self.streams {
            total.add(*stats);
        }
        total
    }
}

/// Which rows [`StorageRead::newest`] returns.
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

/// What [`StorageRead::newest`] found.
#[derive(Debug, Default)]
pub struct NewestRows {
    /// The rows, newest first (rows of one instant keep their newest-first stream order).
    pub rows: Vec<ShownRow>,
    /// Rows that did not authenticate and were skipped.
    pub bad: u64,
}

/// Visit the opened rows of a stream, problems ignored (they are counted in the stats).
fn rows<S: StorageRead + ?Sized>(
    storage: &S,
    machine_id: &str,
    stream: Stream,
    mut visit: impl FnMut(Map<String, Value>) -> bool,
) -> Result<ReadStats, StoreError> {
    storage.visit(machine_id, stream, &mut visit, &mut |_| {})
}

fn later(current: &mut Option<String>, candidate: Option<&Value>) {
    if let Some(ts) = candidate.and_then(Value::as_str) {
        if current.as_deref().is_none_or(|c| ts > c) {
            *current = Some(ts.to_string());
        }
    }
}

/// [`StorageRead::machine`].
pub(super) fn machine<S: StorageRead + ?Sized>(storage: &S, machine_id: &str) -> Result<MachineSummary, StoreError> {
    let mut summary = MachineSummary {
        machine_id: machine_id.to_string(),
        last_seen: None,
        report_count: 0,
        widget_log_count: 0,
        batch_count: 0,
        record_count: 0,
        bytes: storage.machine_bytes(machine_id)?,
        unreadable_rows: 0,
        latest_metrics: Value::Null,
        widgets: Vec::new(),
    };
    let mut widgets: BTreeMap<(String, String), WidgetSummary> = BTreeMap::new();
    let mut add = |widget: &str, kind: &str, sample: &Value| {
        let entry = widgets.entry((widget.to_string(), kind.to_string())).or_insert_with(|| WidgetSummary {
            widget: widget.to_string(),
            kind: kind.to_string(),
            count: 0,
            sample: Value::Null,
        });
        entry.count += 1;
        entry.sample = sample.clone();
    };
    let mut v1_metrics = None;
    let mut bad = 0;
    bad += rows(storage, machine_id, Stream::Reports, |row| {
        summary.report_count += 1;
        later(&mut summary.last_seen, row.get("received_at"));
        v1_metrics = row.get("report").and_then(|r| r.get("metrics")).cloned();
        true
    })?
    .bad;
    bad += rows(storage, machine_id, Stream::WidgetLogs, |row| {
        summary.widget_log_count += 1;
        later(&mut summary.last_seen, row.get("received_at"));
        if let Some(log) = row.get("log") {
            add(log.get("widget_type").and_then(Value::as_str).unwrap_or("?"), "widget-log", log);
        }
        true
    })?
    .bad;
    let mut v2_metrics = Map::new();
    bad += rows(storage, machine_id, Stream::Records, |row| {
        later(&mut summary.last_seen, row.get("received_at"));
        match row.get("kind").and_then(Value::as_str) {
            Some("batch") => summary.batch_count += 1,
            Some("record") => {
                summary.record_count += 1;
                let Some(record) = row.get("record") else { return true };
                let widget = record.get("widget").and_then(Value::as_str).unwrap_or("?");
                let kind = record.get("kind").and_then(Value::as_str).unwrap_or("?");
                if kind == "metric" {
                    v2_metrics.insert(widget.to_string(), record.get("data").cloned().unwrap_or(Value::Null));
                }
                add(widget, kind, record);
            }
            _ => {}
        }
        true
    })?
    .bad;
    summary.unreadable_rows = bad;
    summary.latest_metrics = v1_metrics.unwrap_or(Value::Object(v2_metrics));
    summary.widgets = widgets.into_values().collect();
    Ok(summary)
}

/// [`StorageRead::widget_logs`].
pub(super) fn widget_logs<S: StorageRead + ?Sized>(
    storage: &S,
    filter: &LogFilter,
    visit: &mut dyn FnMut(LogRow) -> bool,
) -> Result<ReadStats, StoreError> {
    let text = |v: &Value, field: &str| v.get(field).and_then(Value::as_str).unwrap_or("").to_string();
    let mut stats = ReadStats::default();
    let go_on = Cell::new(true);
    let mut id_counter = 0u64;
    for id in storage.machine_ids()? {
        if !go_on.get() {
            break;
        }
        if filter.machine_id.as_deref().is_some_and(|m| m != id) {
            continue;
        }
        let wanted = |row: &Map<String, Value>| {
            filter.widget_type.as_deref().is_none_or(|w| row.get("widget").and_then(Value::as_str) == Some(w))
        };
        let mut push = |entry: &Value, ts: &str, widget: &str| {
            id_counter += 1;
            go_on.set(visit(LogRow {
                id: id_counter,
                machine_id: id.clone(),
                timestamp: text(entry, ts),
                level: text(entry, "level"),
                widget_type: text(entry, widget),
                message: text(entry, "message"),
                data: entry.get("data").cloned().unwrap_or(Value::Null),
            }));
            go_on.get()
        };
        stats.add(rows(storage, &id, Stream::WidgetLogs, |row| match row.get("log") {
            Some(log) if wanted(&row) => push(log, "timestamp", "widget_type"),
            _ => true,
        })?);
        if !go_on.get() {
            break;
        }
        stats.add(rows(storage, &id, Stream::Records, |row| {
            let is_log = row.get("record_kind").and_then(Value::as_str) == Some("log");
            match row.get("record") {
                Some(record) if is_log && wanted(&row) => push(record, "ts", "widget"),
                _ => true,
            }
        })?);
    }
    Ok(stats)
}

/// [`StorageRead::newest`].
pub(super) fn newest<S: StorageRead + ?Sized>(
    storage: &S,
    machine_id: &str,
    query: &RowQuery,
) -> Result<NewestRows, StoreError> {
    let limit = query.limit;
    let mut newest: Vec<ShownRow> = Vec::new();
    let mut bad = 0;
    for stream in Stream::ALL {
        let mut last: VecDeque<ShownRow> = VecDeque::with_capacity(limit);
        let stats = rows(storage, machine_id, stream, |row| {
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
        })?;
        bad += stats.bad;
        newest.extend(last);
    }
    // Streams were read oldest first: reversed, a stable sort keeps rows of one instant newest first.
    newest.reverse();
    newest.sort_by(|a, b| b.0.cmp(&a.0));
    newest.truncate(limit);
    Ok(NewestRows { rows: newest, bad })
}

/// [`StorageRead::verify`].
pub(super) fn verify<S: StorageRead + ?Sized>(storage: &S) -> Result<Vec<MachineCheck>, StoreError> {
    let mut checks = Vec::new();
    for id in storage.machine_ids()? {
        let mut check = MachineCheck { machine_id: id.clone(), streams: Vec::new(), problems: Vec::new() };
        for stream in Stream::ALL {
            let problems = &mut check.problems;
            let stats = storage.visit(&id, stream, &mut |_| true, &mut |p| {
                if problems.len() < MAX_PROBLEMS_PER_MACHINE {
                    problems.push(p);
                }
            })?;
            check.streams.push((stream, stats));
        }
        checks.push(check);
    }
    Ok(checks)
}
