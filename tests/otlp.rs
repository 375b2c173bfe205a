//! OTLP out, the encoding (`docs/otlp-forwarding.md`): the documented vectors against the real
//! encoder, every numeric field of every widget's real output mapped to a metric, every metric
//! documented, and every body the encoder makes parsed by the official OTLP protobuf
//! definitions (`tests/otlp/validate.py`, PyPI `opentelemetry-proto`; `.ci/run` installs it).
//!
//! After a deliberate change of the encoding: `FLEET_WRITE_VECTORS=1 cargo test --test
//! integration otlp::` rewrites `tests/otlp/vectors.json`; then update the document from it.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::support::{run, stdout};
use fleet_agent::otlp::encode::{self, encode};
use fleet_agent::otlp::semconv::{self, METRICS};
use fleet_agent::otlp::source::{Committed, Stream};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The three documented vectors: rows as the store holds them (the rows of
/// `docs/receiver-store.md`'s vectors, with a real `received_at`).
fn vector_inputs() -> Vec<(&'static str, Vec<Committed>)> {
    let at = "2026-11-22T13:00:01.000Z";
    let v2 = vec![
        json!({"index":0,"kind":"record","machine_id":"vec-02","received_at":at,"record":{"data":{"percent":12.5},"kind":"metric","level":"info","message":"","ts":"2026-11-22T12:59:50.000Z","widget":"cpu"},"record_kind":"metric","seq":0,"widget":"cpu"}),
        json!({"index":1,"kind":"record","machine_id":"vec-02","received_at":at,"record":{"data":{"packet_loss":0.0,"target":"127.0.0.1"},"kind":"log","level":"info","message":"","ts":"2026-11-22T12:59:55.000Z","widget":"ping"},"record_kind":"log","seq":0,"widget":"ping"}),
        json!({"digest":"7aeae1f5b2f2bcbcdeea5de133a11e3d735a22435629b1b6b464eb6be8d62ec2","dropped":{"count":3,"newest":"2026-11-21T00:00:00.000Z","oldest":"2026-11-20T00:00:00.000Z"},"kid":"a7ab0da568aa600d","kind":"batch","machine_id":"vec-02","received_at":at,"records":2,"sent_at":"2026-11-22T13:00:00Z","seq":0}),
    ];
    let report = vec![
        json!({"e2ee":true,"kind":"report","machine_id":"vec 01","received_at":at,"report":{"machine_id":"vec 01","machine_info":{"hostname":"vec"},"metrics":{"cpu":{"percent":3.0}}}}),
    ];
    let widget_log = vec![
        json!({"e2ee":false,"kind":"widget-log","log":{"data":{"rssi":-60},"level":"info","message":"","timestamp":"2026-11-22T13:00:00","widget_type":"wifi"},"machine_id":"vec 01","received_at":at,"widget":"wifi"}),
    ];
    let unit = |machine: &str, stream, rows: Vec<Value>| Committed {
        machine_id: machine.into(),
        stream,
        rows: rows.into_iter().map(object).collect(),
    };
    vec![
        ("v2-batch", vec![unit("vec-02", Stream::Records, v2)]),
        ("v1-report", vec![unit("vec 01", Stream::Reports, report)]),
        ("v1-widget-log", vec![unit("vec 01", Stream::WidgetLogs, widget_log)]),
    ]
}

fn vectors() -> Value {
    let list: Vec<Value> = vector_inputs()
        .into_iter()
        .map(|(name, units)| {
            let export = encode(&units, "VERSION");
            json!({
                "name": name,
                "machine_id": units[0].machine_id,
                "rows": units[0].rows,
                "metrics": export.metrics,
                "logs": export.logs,
            })
        })
        .collect();
    json!({"source": "fleet_agent::otlp::encode::encode(rows, \"VERSION\"); docs/otlp-forwarding.md", "vectors": list})
}

/// Every ```json block of the document, parsed.
fn doc_json_blocks() -> Vec<Value> {
    let doc = std::fs::read_to_string(repo("docs/otlp-forwarding.md")).expect("docs/otlp-forwarding.md");
    let mut blocks = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```json\n") {
        let after = &rest[start + 8..];
        let end = after.find("\n```").expect("closed block");
        let text = &after[..end];
        blocks.push(serde_json::from_str(text).unwrap_or_else(|e| panic!("a json block of the doc: {e}\n{text}")));
        rest = &after[end..];
    }
    blocks
}

#[test]
fn the_documented_vectors_are_what_the_encoder_makes() {
    let actual = vectors();
    let path = repo("tests/otlp/vectors.json");
    if std::env::var_os("FLEET_WRITE_VECTORS").is_some_and(|v| v == "1") {
        std::fs::write(&path, serde_json::to_string_pretty(&actual).expect("json") + "\n").expect("write");
    }
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("tests/otlp/vectors.json")).expect("json");
    assert_eq!(
        committed, actual,
        "tests/otlp/vectors.json differs (FLEET_WRITE_VECTORS=1 rewrites it; then fix the doc)"
    );
    let blocks = doc_json_blocks();
    for vector in actual["vectors"].as_array().expect("list") {
        for part in ["rows", "metrics", "logs"] {
            if vector[part].is_null() {
                continue;
            }
            assert!(
                blocks.contains(&vector[part]),
                "docs/otlp-forwarding.md lacks the {part} of vector {} as a ```json block:\n{}",
                vector["name"],
                serde_json::to_string_pretty(&vector[part]).unwrap_or_default()
            );
        }
    }
}

#[test]
fn every_metric_is_documented_with_its_unit_and_instrument() {
    let doc = std::fs::read_to_string(repo("docs/otlp-forwarding.md")).expect("doc");
    for metric in METRICS {
        let row = format!("| `{}` | `{}` | {} |", metric.name, metric.unit, metric.instrument.as_str());
        assert!(doc.contains(&row), "docs/otlp-forwarding.md lacks the row starting {row}");
    }
    let names: std::collections::BTreeSet<_> = METRICS.iter().map(|m| m.name).collect();
    assert_eq!(names.len(), METRICS.len(), "a metric name is listed twice");
}

/// Widget data as the widgets make it: the real output of `once` on three replayed machines
/// (two Macs, a ThinkPad) and on this one, plus the shapes only other hosts or the network give
/// (ping, speed test, VPN up, unknown security checks, temperature, sessions, an interval).
fn widget_samples() -> Vec<(String, Value)> {
    let mut samples = Vec::new();
    let mut add_once = |args: &[&str]| {
        let output = run(args);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_str(&stdout(&output)).expect("once prints JSON");
        samples.push(("machine_info".to_string(), report["machine_info"].clone()));
        for (widget, data) in report["metrics"].as_object().expect("metrics") {
            if !["timestamp", "uptime_seconds"].contains(&widget.as_str()) && !data.is_null() {
                samples.push((widget.clone(), data.clone()));
            }
        }
        for entry in report["widget_logs"].as_array().expect("widget_logs") {
            samples.push((entry["widget_type"].as_str().unwrap_or_default().to_string(), entry["data"].clone()));
        }
    };
    for dir in ["macos-sonoma-laptop", "linux-thinkpad", "macos-desktop-no-battery"] {
        let dir = repo(&format!("tests/replay/{dir}"));
        add_once(&["once", "--replay", dir.to_str().expect("utf-8")]);
    }
    add_once(&["once"]);
    let more = [
        (
            "cpu",
            json!({"percent": 12.5, "per_core": [10.0, 15.0], "count": 4, "threads": 8, "load_avg": [0.5, 0.4, 0.3], "interval_s": 10.0}),
        ),
        (
            "ping",
            json!({"target": "1.1.1.1", "method": "icmp", "sent": 10, "received": 9, "packet_loss": 10.0, "latency": 12.345, "min": 10.1, "max": 15.2, "jitter": 1.5, "runs": 1, "failed_runs": 0, "window_s": 120.0}),
        ),
        (
            "speedtest",
            json!({"download": 93.4, "upload": 20.1, "ping": 12.0, "jitter": 1.2, "loaded_latency": 40.5, "responsiveness": 900, "server": "speed.cloudflare.com", "bytes_down": 25_000_000, "bytes_up": 10_000_000, "duration_s": 12.5, "method": "http"}),
        ),
        ("vpn", json!({"connected": true, "vpn_client": "WireGuard", "interface_count": 1, "interfaces": ["wg0"]})),
        (
            "security",
            json!({"firewall_enabled": true, "filevault_enabled": true, "gatekeeper_enabled": false, "sip_enabled": false, "sip_status": "custom", "unknown": ["sip"]}),
        ),
        ("temperature", json!({"cpu": 52.3, "unit": "C"})),
        ("users", json!([{"name": "kim", "terminal": "pts/0", "host": "192.0.2.9", "started": "2026-11-22T12:00:00"}])),
        (
            "battery",
            json!({"percent": 81.0, "plugged": false, "charging": false, "time_left": 26327, "time_to_full": 1200, "cycle_count": 155, "health_percent": 94.8, "condition": "Normal", "temperature_c": 29.9, "source": "sysfs"}),
        ),
        (
            "wifi",
            json!({"interface": "wlan0", "connected": true, "ssid": "x", "ssid_redacted": false, "bssid": "aa:bb:cc:dd:ee:ff", "rssi": -60, "noise": -91, "snr": 31, "channel": 60, "band": "5GHz", "channel_width_mhz": 20, "tx_rate": 173.3, "phy_mode": "802.11ac", "security": "WPA2", "quality_score": 80, "signal_strength": 90, "source": "iw"}),
        ),
        ("system", json!({"uptime": 9720, "boot_time": 1_796_148_818})),
        (
            "machine_info",
            json!({"hostname": "vm", "os": "Linux", "cpu_count": 2, "cpu_threads": 4, "total_memory": 25_276_502_016_u64, "boot_time": 1_796_148_818, "disks": [], "network_interfaces": [{"name": "wlan0", "is_up": false, "speed": 866, "addresses": []}]}),
        ),
    ];
    samples.extend(more.into_iter().map(|(w, d)| (w.to_string(), d)));
    samples
}

#[test]
fn every_numeric_field_of_every_widget_becomes_a_metric() {
    let samples = widget_samples();
    let widgets: std::collections::BTreeSet<&str> = samples.iter().map(|(w, _)| w.as_str()).collect();
    for widget in fleet_widgets::ALL.iter().map(|spec| spec.name).chain(["vpn"]) {
        assert!(widgets.contains(widget), "no sample of widget {widget}");
    }
    let mut unmapped = Vec::new();
    for (widget, data) in &samples {
        for path in semconv::unmapped_fields(widget, data) {
            unmapped.push(format!("{widget}.{path}"));
        }
        let points = semconv::map_widget(widget, data);
        let numbers = {
            let mut n = 0;
            count_numbers(data, &mut n);
            n
        };
        assert!(numbers == 0 || !points.is_empty(), "{widget} {data} made no point");
    }
    unmapped.sort();
    unmapped.dedup();
    // The check can fail: a field nobody maps is named, with its path.
    let extra = json!({"percent": 1.0, "per_core": [1.0], "new_gauge": 2, "nested": {"x": true}, "top": [{"n": 1}]});
    assert_eq!(semconv::unmapped_fields("cpu", &extra), ["nested.x", "new_gauge", "top[].n"]);
    assert!(unmapped.is_empty(), "numeric fields no metric carries: {unmapped:?}");
}

fn count_numbers(value: &Value, n: &mut usize) {
    match value {
        Value::Number(_) => *n += 1,
        Value::Array(items) => items.iter().for_each(|v| count_numbers(v, n)),
        Value::Object(map) => map.values().for_each(|v| count_numbers(v, n)),
        _ => {}
    }
}

/// Rows of every kind, built from the widget samples: v2 records (metric, log, machine_info)
/// with their batch rows, v1 reports, v1 widget logs, plus odd rows (unknown kind, no time).
fn every_kind_of_row() -> Vec<Committed> {
    let samples = widget_samples();
    let at = "2026-11-22T13:00:01.000Z";
    let mut records = Vec::new();
    for (i, (widget, data)) in samples.iter().enumerate() {
        let kind = match widget.as_str() {
            "machine_info" => "machine_info",
            "wifi" | "ping" | "speedtest" => "log",
            _ => "metric",
        };
        records.push(object(json!({"kind":"record","machine_id":"mac-01","seq":7,"index":i,"received_at":at,"widget":widget,"record_kind":kind,
            "record":{"ts":"2026-11-22T12:59:50.123Z","widget":widget,"kind":kind,"level":"warning","message":"m","data":data}})));
    }
    records.push(object(json!({"kind":"batch","machine_id":"mac-01","seq":7,"records":samples.len(),"received_at":at,"sent_at":"2026-11-22T13:00:00Z","dropped":{"count":0}})));
    let metrics: Map<String, Value> =
        samples.iter().filter(|(w, _)| w != "machine_info").map(|(w, d)| (w.clone(), d.clone())).collect();
    let report = object(json!({"kind":"report","machine_id":"Mac 02","e2ee":true,"received_at":at,
        "report":{"machine_id":"Mac 02","machine_info":samples[0].1,"metrics":metrics}}));
    let logs: Vec<_> = samples
        .iter()
        .map(|(w, d)| {
            object(json!({"kind":"widget-log","machine_id":"Mac 02","e2ee":true,"received_at":at,"widget":w,
            "log":{"timestamp":"2026-11-22T13:00:00","level":"ERROR","widget_type":w,"message":"","data":d}}))
        })
        .collect();
    let odd = vec![object(json!({"kind":"mystery"})), object(json!({"kind":"record","record":{"ts":"yesterday"}}))];
    vec![
        Committed { machine_id: "mac-01".into(), stream: Stream::Records, rows: records },
        Committed { machine_id: "Mac 02".into(), stream: Stream::Reports, rows: vec![report] },
        Committed { machine_id: "Mac 02".into(), stream: Stream::WidgetLogs, rows: logs },
        Committed { machine_id: "odd".into(), stream: Stream::Records, rows: odd },
    ]
}

/// Run `tests/otlp/validate.py` on `bodies` (kind, JSON); panics with its output on failure.
pub fn validate_with_official_definitions(bodies: &[(&str, &Value)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec![repo("tests/otlp/validate.py").to_string_lossy().into_owned()];
    for (i, (kind, body)) in bodies.iter().enumerate() {
        let path = dir.path().join(format!("{i}-{kind}.json"));
        std::fs::write(&path, serde_json::to_vec(body).expect("json")).expect("write body");
        args.push((*kind).to_string());
        args.push(path.to_string_lossy().into_owned());
    }
    let output = std::process::Command::new("python3").args(&args).output().expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_ne!(
        output.status.code(),
        Some(2),
        "the OTLP check needs Python's opentelemetry-proto and protobuf (pip install opentelemetry-proto protobuf; \
         .ci/run installs them): {text}"
    );
    assert!(output.status.success(), "bodies refused by the official OTLP definitions:\n{text}");
}

#[test]
fn every_body_parses_with_the_official_otlp_protobuf_definitions() {
    let units = every_kind_of_row();
    let export = encode(&units, env!("CARGO_PKG_VERSION"));
    assert_eq!(export.skipped, 2, "the two odd rows are skipped, nothing else");
    let metrics = export.metrics.as_ref().expect("metrics");
    let logs = export.logs.as_ref().expect("logs");
    assert!(
        export.data_points > 200 && export.log_records > 10,
        "{} points, {} logs",
        export.data_points,
        export.log_records
    );
    let mut bodies = vec![("metrics", metrics), ("logs", logs)];
    let vectors = vectors();
    for vector in vectors["vectors"].as_array().expect("list") {
        for kind in ["metrics", "logs"] {
            if !vector[kind].is_null() {
                bodies.push((kind, &vector[kind]));
            }
        }
    }
    validate_with_official_definitions(&bodies);
}

#[test]
fn the_validator_refuses_what_is_not_canonical_otlp_json() {
    // The check must be able to fail: snake_case names, an int64 as a number, an enum name,
    // an unknown field, a sum without temporality.
    let good = encode(&vector_inputs()[0].1, "VERSION").metrics.expect("metrics");
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut body = good.clone();
        f(&mut body);
        body
    };
    let point = "/resourceMetrics/0/scopeMetrics/0/metrics/0/gauge/dataPoints/0";
    let bad = [
        mutate(&|b| {
            let v = b.pointer_mut(point).expect("point").as_object_mut().expect("object");
            let t = v.remove("timeUnixNano").expect("time");
            v.insert("time_unix_nano".into(), t);
        }),
        mutate(&|b| {
            *b.pointer_mut(&format!("{point}/timeUnixNano")).expect("time") = json!(1_795_000_000_000_000_000_u64)
        }),
        mutate(&|b| b.as_object_mut().expect("object").insert("extra".into(), json!(1)).map_or((), |_| ())),
    ];
    for body in &bad {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, serde_json::to_vec(body).expect("json")).expect("write");
        let output = std::process::Command::new("python3")
            .args([repo("tests/otlp/validate.py").to_str().expect("utf-8"), "metrics", path.to_str().expect("utf-8")])
            .output()
            .expect("python3 runs");
        assert_eq!(output.status.code(), Some(1), "{body} passed: {}", String::from_utf8_lossy(&output.stdout));
    }
}

#[test]
fn timestamps_are_nanoseconds_since_the_epoch_as_strings() {
    let export = encode(&vector_inputs()[0].1, "VERSION");
    let metrics = export.metrics.expect("metrics");
    let time = metrics.pointer("/resourceMetrics/0/scopeMetrics/0/metrics/0/gauge/dataPoints/0/timeUnixNano");
    // 2026-11-22T12:59:50.000Z
    assert_eq!(time, Some(&json!("1795352390000000000")));
    assert_eq!(encode::SCOPE_NAME, "fleet-agent");
}
