//! Stored rows to OTLP/HTTP JSON request bodies: `ExportMetricsServiceRequest` for
//! `/v1/metrics` and `ExportLogsServiceRequest` for `/v1/logs`, per the OTLP specification's
//! JSON mapping (proto3 JSON: lowerCamelCase field names, 64-bit integers and `*UnixNano`
//! times as decimal strings, enums as integers, default values left out). The layout, the
//! attribute names and test vectors (rows in, exact JSON out) are in `docs/otlp-forwarding.md`;
//! `tests/otlp.rs` holds the vectors and parses every body with the official protobuf
//! definitions (`tests/otlp/validate.py`).
//!
//! ```text
//! {"resourceMetrics":[                         one per machine, in the order machines come
//!   {"resource":{"attributes":[service.name, service.instance.id, host.id, host.name]},
//!    "scopeMetrics":[{"scope":{"name":"fleet-agent","version":V},
//!      "metrics":[{"name","unit","description",      one per name, in first-seen order
//!                  "gauge":{"dataPoints":[…]}  |  "sum":{"dataPoints":[…],"aggregationTemporality":2,"isMonotonic":true?}}]}]}]}
//! dataPoint = {"attributes":[…]?, "timeUnixNano":"…", "asInt":"…" | "asDouble":…}
//!
//! {"resourceLogs":[{"resource":{…same…},"scopeLogs":[{"scope":{…same…},"logRecords":[
//!   {"timeUnixNano":"…"?, "observedTimeUnixNano":"…", "severityNumber":9|13|17, "severityText":"info",
//!    "body":<the record's data as an AnyValue>, "attributes":[fleet.widget, fleet.message?, fleet.batch.seq?, fleet.record.index?, fleet.agent_time?]}]}]}]}
//! ```
//!
//! Which rows become what (row shapes: `docs/receiver-store.md`):
//! - v2 `record` rows: `metric` and `machine_info` records become data points at the record's
//!   `ts`; `log` records become a log record AND data points from their numbers (ping, Wi-Fi,
//!   speed test);
//! - v2 `batch` rows: the agent's loss ledger, `fleet.agent.dropped`, at the batch's `sent_at`;
//! - v1 `report` rows: each `metrics.<widget>` and `machine_info`, at `received_at` (Atlas
//!   timestamps are naive local time);
//! - v1 `widget-log` rows: a log record (no `timeUnixNano`: the agent's time is naive local,
//!   kept in `fleet.agent_time`) and data points at `received_at`.
//!
//! A row that fits none of these (an unknown kind, no usable time) is counted in
//! [`Export::skipped`] and otherwise ignored: the forwarder never stops on one odd row.

use serde_json::{json, Map, Value};

use super::semconv::{self, AttrValue, Instrument, Num, Point};
use super::source::Committed;
use fleet_wire::time::Timestamp;

/// The instrumentation scope name of everything forwarded.
pub const SCOPE_NAME: &str = "fleet-agent";
/// OTLP `AggregationTemporality` CUMULATIVE (every sum here is cumulative).
const CUMULATIVE: u8 = 2;
/// The `service.name` resource attribute of every machine.
pub const SERVICE_NAME: &str = "fleet-agent";

/// The request bodies made from one push.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// `ExportMetricsServiceRequest`, `None` when there is no data point.
    pub metrics: Option<Value>,
    /// `ExportLogsServiceRequest`, `None` when there is no log record.
    pub logs: Option<Value>,
    /// Data points in `metrics`.
    pub data_points: usize,
    /// Log records in `logs`.
    pub log_records: usize,
    /// Rows that became nothing (unknown kind, no usable time).
    pub skipped: usize,
}

/// One machine's part of the export.
struct Machine {
    id: String,
    /// (metric name, data points), in first-seen order.
    metrics: Vec<(&'static semconv::MetricSpec, Vec<Value>)>,
    logs: Vec<Value>,
}

impl Machine {
    fn add_points(&mut self, points: Vec<Point>, nanos: &str) {
        for point in points {
            let mut dp = Map::new();
            if !point.attributes.is_empty() {
                dp.insert("attributes".into(), attributes(&point.attributes));
            }
            dp.insert("timeUnixNano".into(), json!(nanos));
            match point.value {
                Num::Int(i) => dp.insert("asInt".into(), json!(i.to_string())),
                Num::Double(d) => dp.insert("asDouble".into(), json!(d)),
            };
            match self.metrics.iter_mut().find(|(spec, _)| spec.name == point.metric.name) {
                Some((_, points)) => points.push(Value::Object(dp)),
                None => self.metrics.push((point.metric, vec![Value::Object(dp)])),
            }
        }
    }
}

/// A JSON object of `pairs`, moving the values in (`json!` would serialize them once more).
fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(key, value)| (key.to_string(), value)).collect())
}

/// A time as OTLP's `*UnixNano` string; `None` before 1970 or past what 64 bits hold.
fn unix_nanos(ts: Timestamp) -> Option<String> {
    let nanos = u64::try_from(ts.0).ok()?.checked_mul(1_000_000)?;
    Some(nanos.to_string())
}

/// The nanosecond time of an RFC 3339 text field of `object`.
fn time_of(object: &Map<String, Value>, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).and_then(Timestamp::parse_rfc3339).and_then(unix_nanos)
}

/// An attribute list (`[{"key":…,"value":{…}}]`).
fn attributes(list: &[(&'static str, AttrValue)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(key, value)| {
                let value = match value {
                    AttrValue::Str(s) => json!({"stringValue": s}),
                    AttrValue::Int(i) => json!({"intValue": i.to_string()}),
                };
                obj([("key", json!(key)), ("value", value)])
            })
            .collect(),
    )
}

/// Any JSON value as an OTLP `AnyValue` (integers that fit `i64` as `intValue` strings, other
/// numbers as `doubleValue`, objects as `kvlistValue`, `null` as the empty value).
pub fn any_value(value: &Value) -> Value {
    match value {
        Value::Null => json!({}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) => match Num::of(n) {
            Some(Num::Int(i)) => json!({"intValue": i.to_string()}),
            Some(Num::Double(d)) => json!({"doubleValue": d}),
            None => json!({"stringValue": n.to_string()}),
        },
        Value::String(s) => json!({"stringValue": s}),
        // Empty lists are left out, as proto3 JSON leaves out every empty repeated field.
        Value::Array(items) if items.is_empty() => json!({"arrayValue": {}}),
        Value::Object(map) if map.is_empty() => json!({"kvlistValue": {}}),
        Value::Array(items) => {
            obj([("arrayValue", obj([("values", Value::Array(items.iter().map(any_value).collect()))]))])
        }
        Value::Object(map) => {
            let values = map.iter().map(|(k, v)| obj([("key", json!(k)), ("value", any_value(v))])).collect();
            obj([("kvlistValue", obj([("values", Value::Array(values))]))])
        }
    }
}

/// OTLP severity number of a level name (v2 `info`, Atlas `INFO`, …); 0 (unspecified) otherwise.
fn severity_number(level: &str) -> u8 {
    match level.to_ascii_lowercase().as_str() {
        "debug" => 5,
        "info" => 9,
        "warning" | "warn" => 13,
        "error" => 17,
        _ => 0,
    }
}

/// One log record; `extra` attributes come after `fleet.widget` and `fleet.message`.
fn log_record(
    time: Option<&str>,
    observed: Option<&str>,
    entry: &Map<String, Value>,
    widget: &str,
    extra: Vec<(&'static str, AttrValue)>,
) -> Value {
    let mut record = Map::new();
    if let Some(time) = time {
        record.insert("timeUnixNano".into(), json!(time));
    }
    if let Some(observed) = observed {
        record.insert("observedTimeUnixNano".into(), json!(observed));
    }
    if let Some(level) = entry.get("level").and_then(Value::as_str) {
        let number = severity_number(level);
        if number != 0 {
            record.insert("severityNumber".into(), json!(number));
        }
        record.insert("severityText".into(), json!(level));
    }
    record.insert("body".into(), any_value(entry.get("data").unwrap_or(&Value::Null)));
    let mut list = vec![("fleet.widget", AttrValue::Str(widget.to_string()))];
    if let Some(message) = entry.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()) {
        list.push(("fleet.message", AttrValue::Str(message.to_string())));
    }
    list.extend(extra);
    record.insert("attributes".into(), attributes(&list));
    Value::Object(record)
}

fn int_attr(row: &Map<String, Value>, key: &str, name: &'static str) -> Option<(&'static str, AttrValue)> {
    row.get(key).and_then(Value::as_i64).map(|i| (name, AttrValue::Int(i)))
}

/// A v2 `record` row. False when it has no usable time.
fn record_row(machine: &mut Machine, row: &Map<String, Value>) -> bool {
    let Some(Value::Object(record)) = row.get("record") else { return false };
    let received = time_of(row, "received_at");
    let Some(time) = time_of(record, "ts").or_else(|| received.clone()) else { return false };
    let widget = record.get("widget").and_then(Value::as_str).unwrap_or_default();
    let data = record.get("data").unwrap_or(&Value::Null);
    match record.get("kind").and_then(Value::as_str) {
        Some("machine_info") => machine.add_points(semconv::map_widget("machine_info", data), &time),
        Some("metric") => machine.add_points(semconv::map_widget(widget, data), &time),
        Some("log") => {
            let ids = [int_attr(row, "seq", "fleet.batch.seq"), int_attr(row, "index", "fleet.record.index")];
            let extra = ids.into_iter().flatten().collect();
            machine.logs.push(log_record(Some(&time), received.as_deref(), record, widget, extra));
            machine.add_points(semconv::map_widget(widget, data), &time);
        }
        _ => return false,
    }
    true
}

/// A v2 `batch` (commit) row: the agent's loss ledger.
fn batch_row(machine: &mut Machine, row: &Map<String, Value>) -> bool {
    let Some(time) = time_of(row, "sent_at").or_else(|| time_of(row, "received_at")) else { return false };
    let count = row.get("dropped").and_then(|d| d.get("count")).and_then(Value::as_number).and_then(Num::of);
    if let (Some(count), Some(metric)) = (count, semconv::find("fleet.agent.dropped")) {
        machine.add_points(vec![Point { metric, attributes: Vec::new(), value: count }], &time);
    }
    true
}

/// Keys of a v1 report's `metrics` that are not widgets: Atlas's naive local `timestamp` and
/// `uptime_seconds` (a copy of `system.uptime`).
const REPORT_NON_WIDGETS: [&str; 2] = ["timestamp", "uptime_seconds"];

/// A v1 `report` row.
fn report_row(machine: &mut Machine, row: &Map<String, Value>) -> bool {
    let Some(time) = time_of(row, "received_at") else { return false };
    let Some(Value::Object(report)) = row.get("report") else { return false };
    if let Some(info) = report.get("machine_info") {
        machine.add_points(semconv::map_widget("machine_info", info), &time);
    }
    if let Some(Value::Object(metrics)) = report.get("metrics") {
        for (widget, data) in metrics.iter().filter(|(k, _)| !REPORT_NON_WIDGETS.contains(&k.as_str())) {
            machine.add_points(semconv::map_widget(widget, data), &time);
        }
    }
    true
}

/// A v1 `widget-log` row.
fn widget_log_row(machine: &mut Machine, row: &Map<String, Value>) -> bool {
    let Some(time) = time_of(row, "received_at") else { return false };
    let Some(Value::Object(entry)) = row.get("log") else { return false };
    let widget = entry.get("widget_type").and_then(Value::as_str).unwrap_or_default();
    let agent_time =
        entry.get("timestamp").and_then(Value::as_str).map(|t| ("fleet.agent_time", AttrValue::Str(t.into())));
    machine.logs.push(log_record(None, Some(&time), entry, widget, agent_time.into_iter().collect()));
    machine.add_points(semconv::map_widget(widget, entry.get("data").unwrap_or(&Value::Null)), &time);
    true
}

fn resource(machine_id: &str) -> Value {
    let id = || AttrValue::Str(machine_id.to_string());
    json!({"attributes": attributes(&[
        ("service.name", AttrValue::Str(SERVICE_NAME.into())),
        ("service.instance.id", id()),
        ("host.id", id()),
        ("host.name", id()),
    ])})
}

/// Encode what one push hands over. `version` is the scope version (the forwarder passes the
/// crate version; the document's vectors use `VERSION`).
pub fn encode(batch: &[Committed], version: &str) -> Export {
    let mut machines: Vec<Machine> = Vec::new();
    let mut skipped = 0;
    for unit in batch {
        let index = match machines.iter().position(|m| m.id == unit.machine_id) {
            Some(i) => i,
            None => {
                machines.push(Machine { id: unit.machine_id.clone(), metrics: Vec::new(), logs: Vec::new() });
                machines.len() - 1
            }
        };
        let machine = &mut machines[index];
        for row in &unit.rows {
            let used = match row.get("kind").and_then(Value::as_str) {
                Some("record") => record_row(machine, row),
                Some("batch") => batch_row(machine, row),
                Some("report") => report_row(machine, row),
                Some("widget-log") => widget_log_row(machine, row),
                _ => false,
            };
            skipped += usize::from(!used);
        }
    }
    let scope = json!({"name": SCOPE_NAME, "version": version});
    let mut data_points = 0;
    let mut log_records = 0;
    let mut resource_metrics = Vec::new();
    let mut resource_logs = Vec::new();
    for machine in machines {
        if !machine.metrics.is_empty() {
            let metrics: Vec<Value> = machine
                .metrics
                .into_iter()
                .map(|(spec, points)| {
                    data_points += points.len();
                    let mut metric = Map::new();
                    metric.insert("name".into(), json!(spec.name));
                    metric.insert("unit".into(), json!(spec.unit));
                    metric.insert("description".into(), json!(spec.description));
                    match spec.instrument {
                        Instrument::Gauge => metric.insert("gauge".into(), obj([("dataPoints", Value::Array(points))])),
                        Instrument::Counter => metric.insert(
                            "sum".into(),
                            obj([
                                ("dataPoints", Value::Array(points)),
                                ("aggregationTemporality", json!(CUMULATIVE)),
                                ("isMonotonic", json!(true)),
                            ]),
                        ),
                        Instrument::UpDownCounter => metric.insert(
                            "sum".into(),
                            obj([("dataPoints", Value::Array(points)), ("aggregationTemporality", json!(CUMULATIVE))]),
                        ),
                    };
                    Value::Object(metric)
                })
                .collect();
            let scope_metrics = obj([("scope", scope.clone()), ("metrics", Value::Array(metrics))]);
            resource_metrics
                .push(obj([("resource", resource(&machine.id)), ("scopeMetrics", Value::Array(vec![scope_metrics]))]));
        }
        if !machine.logs.is_empty() {
            log_records += machine.logs.len();
            let scope_logs = obj([("scope", scope.clone()), ("logRecords", Value::Array(machine.logs))]);
            resource_logs
                .push(obj([("resource", resource(&machine.id)), ("scopeLogs", Value::Array(vec![scope_logs]))]));
        }
    }
    Export {
        metrics: (!resource_metrics.is_empty()).then(|| obj([("resourceMetrics", Value::Array(resource_metrics))])),
        logs: (!resource_logs.is_empty()).then(|| obj([("resourceLogs", Value::Array(resource_logs))])),
        data_points,
        log_records,
        skipped,
    }
}
