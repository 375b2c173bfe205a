//! `fleet-agent once --replay DIR` against the committed replay directories under
//! `tests/replay/` (built from the published fixtures): the battery metric and the `wifi`
//! widget log are checked field by field, and manifest mistakes exit 2 naming the file.
//!
//! No test here touches the network: replay hosts allow none, and the config disables
//! nothing else that would.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{run, s, stderr, stdout, write_config, SAFE_WIDGETS};

fn replay_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay").join(name)
}

/// Run `once --replay` on a committed directory; returns the printed object.
fn once_replay(name: &str) -> Value {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Under replay no socket is opened anyway; SAFE_WIDGETS makes that explicit.
    let config =
        write_config(tmp.path(), "c.json", &format!(r#"{{"machine_id":"replay-test",{SAFE_WIDGETS}}}"#), 0o644);
    let dir = replay_dir(name);
    let out = run(&["once", "--replay", s(&dir), "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("one JSON object")
}

/// The `data` of the one `wifi` widget log.
fn wifi_log(body: &Value) -> Value {
    let logs: Vec<&Value> =
        body["widget_logs"].as_array().expect("widget_logs").iter().filter(|l| l["widget_type"] == "wifi").collect();
    assert_eq!(logs.len(), 1, "one wifi log: {logs:?}");
    assert_eq!(logs[0]["message"], "wifi");
    logs[0]["data"].clone()
}

#[test]
fn macos_laptop_replay() {
    let body = once_replay("macos-sonoma-laptop");
    assert_eq!(
        body["metrics"]["battery"],
        json!({
            "percent": 99.0, "plugged": true, "charging": true,
            "cycle_count": 312, "health_percent": 88.4, "condition": "Normal", "temperature_c": 30.3,
            "source": "pmset+ioreg",
        })
    );
    assert_eq!(
        wifi_log(&body),
        json!({
            "interface": "en0", "connected": true, "ssid": "WiFi Connected (SSID hidden by macOS)",
            "ssid_redacted": true, "rssi": -34, "noise": -92, "snr": 58, "channel": 101, "band": "6GHz",
            "channel_width_mhz": 160, "tx_rate": 2401.0, "phy_mode": "802.11ax", "security": "WPA3 Personal",
            "quality_score": 100, "signal_strength": 100, "source": "wdutil",
        })
    );
    let info = &body["machine_info"];
    assert_eq!(info["os"], "Darwin");
    assert_eq!(info["serial_number"], "GGJXG26P75");
    assert_eq!(info["model"], "MacBookPro18,3");
    assert_eq!(info["chip"], "Apple M1 Pro");
    assert_eq!(info["gpu"], json!({"name": "Apple M4"}), "Atlas's machine_info.gpu");
    // The four security commands, read for real (published outputs).
    assert_eq!(
        body["metrics"]["security"],
        json!({
            "firewall_enabled": true, "filevault_enabled": true, "gatekeeper_enabled": true,
            "sip_enabled": true, "sip_status": "enabled",
        })
    );
    assert_eq!(info["computer_name"], "Susam\u{2019}s MacBook Pro");
    // Widgets reading the machine in process still read the live machine.
    assert!(body["metrics"]["cpu"]["percent"].is_number());
}

#[test]
fn linux_thinkpad_replay() {
    let body = once_replay("linux-thinkpad");
    assert_eq!(
        body["metrics"]["battery"],
        json!({
            "percent": 85.0, "plugged": false, "charging": false, "time_left": 28955,
            "health_percent": 99.7, "condition": "Normal", "source": "sysfs",
        })
    );
    assert_eq!(
        wifi_log(&body),
        json!({
            "interface": "wlan0", "connected": true, "ssid": "xxx", "ssid_redacted": false,
            "rssi": -60, "channel": 60, "band": "5GHz", "channel_width_mhz": 20,
            "tx_rate": 173.3, "phy_mode": "802.11ac", "quality_score": 80, "signal_strength": 90, "source": "iw",
        })
    );
    assert_eq!(body["machine_info"]["os"], "Linux");
}

#[test]
fn macos_desktop_replay_has_no_battery() {
    let body = once_replay("macos-desktop-no-battery");
    assert_eq!(body["metrics"]["battery"], Value::Null);
    assert!(body["metrics"].as_object().expect("metrics").contains_key("battery"));
    let wifi = wifi_log(&body);
    assert_eq!(
        (&wifi["interface"], &wifi["connected"], &wifi["source"]),
        (&json!("en1"), &json!(false), &json!("system_profiler"))
    );
    assert!(wifi.get("rssi").is_none() && wifi.get("quality_score").is_none(), "unknowns left out: {wifi}");
    let info = &body["machine_info"];
    assert_eq!((&info["serial_number"], &info["model"]), (&json!("W8805BRDX89"), &json!("iMac7,1")));
    // No security command replayed: every protection reads off (never missing: Atlas's page
    // would show SIP "Enabled") and is named unknown.
    let security = &body["metrics"]["security"];
    assert_eq!((&security["sip_enabled"], &security["filevault_enabled"]), (&json!(false), &json!(false)));
    assert_eq!(security["unknown"], json!(["firewall", "filevault", "gatekeeper", "sip"]));
}

#[test]
fn replay_manifest_errors_exit_2_naming_the_file_and_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &str, &[&str]); 5] = [
        ("missing", "", &["replay.json"]),
        ("badjson", "{\"os\": ", &["replay.json", "EOF"]),
        ("bados", r#"{"os": "beos"}"#, &["replay.json", "`os`", "beos"]),
        (
            "escape",
            r#"{"os": "linux", "commands": {"iw dev": "../../etc/passwd"}}"#,
            &["replay.json", "iw dev", "outside"],
        ),
        (
            "nofile",
            r#"{"os": "linux", "files": {"/proc/net/wireless": "wireless.txt"}}"#,
            &["/proc/net/wireless", "wireless.txt"],
        ),
    ];
    for (name, manifest, needles) in cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        if !manifest.is_empty() {
            std::fs::write(dir.join("replay.json"), manifest).expect("manifest");
        }
        let out = run(&["once", "--replay", s(&dir)]);
        assert_eq!(out.status.code(), Some(2), "{name}: stderr {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{name}: nothing printed on stdout");
        let err = stderr(&out);
        for needle in needles {
            assert!(err.contains(needle), "{name}: {needle:?} not in {err:?}");
        }
    }
    let out = run(&["once", "--replay"]);
    assert_eq!(out.status.code(), Some(2), "--replay needs a value");
}

/// The JSON type of a value, as the comparison with Atlas's example sees it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every difference between `ours` and Atlas's `theirs` at `path`: a key of theirs missing
/// in ours, or another JSON type. Objects are compared key by key, arrays by their first
/// elements. A `null` of theirs (Atlas sends `None` there) accepts anything, absence included.
fn compare(path: &str, theirs: &Value, ours: Option<&Value>, nullable: &[&str], problems: &mut Vec<String>) {
    if theirs.is_null() || (nullable.contains(&path) && ours.is_none_or(Value::is_null)) {
        return;
    }
    let Some(ours) = ours else {
        problems.push(format!("{path}: missing (Atlas sends {})", json_type(theirs)));
        return;
    };
    if json_type(theirs) != json_type(ours) {
        problems.push(format!("{path}: {} here, {} in Atlas's report ({ours})", json_type(ours), json_type(theirs)));
        return;
    }
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => {
            for (key, value) in t {
                compare(&format!("{path}.{key}"), value, o.get(key), nullable, problems);
            }
        }
        (Value::Array(t), Value::Array(o)) => {
            if let (Some(t0), Some(o0)) = (t.first(), o.first()) {
                compare(&format!("{path}[0]"), t0, Some(o0), nullable, problems);
            }
        }
        _ => {}
    }
}

/// Our report on this (Linux) machine against the example of what `atlas/fleet_agent.py`
/// sends, built from its code (`tests/fixtures/atlas/fleet-agent-report.json`, source named
/// inside): every field Atlas sends is here with the same JSON type, recursively (our extra
/// fields may stay). Widget logs: the ping entry has Atlas's reader fields and types.
#[test]
fn report_matches_atlas_agent_field_by_field() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/atlas/fleet-agent-report.json");
    let example: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("example")).expect("json");
    assert!(example["source"].as_str().is_some_and(|s| s.contains("atlas/fleet_agent.py")));
    let strings = |key: &str| -> Vec<String> {
        example[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
    };
    let nullable = strings("nullable");
    let darwin_only = strings("darwin_only");
    let tmp = tempfile::tempdir().expect("tempdir");
    let config =
        write_config(tmp.path(), "c.json", &format!(r#"{{"machine_id":"atlas-shape",{SAFE_WIDGETS}}}"#), 0o644);
    // --network: ping to 127.0.0.1 (SAFE_WIDGETS) runs, so there is a ping log to compare.
    let out = run(&["once", "--network", "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let body: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    let mut nullable: Vec<&str> = nullable.iter().map(String::as_str).collect();
    // Atlas adds these on macOS only; on Linux they may be absent (a serial needs root here).
    nullable.extend(darwin_only.iter().map(String::as_str));
    let mut problems = Vec::new();
    for section in ["machine_info", "metrics"] {
        compare(section, &example["report"][section], body.get(section), &nullable, &mut problems);
    }
    assert!(problems.is_empty(), "our report differs from Atlas's:\n{}", problems.join("\n"));
    // Values Atlas's pages format: numbers, never null, and Atlas's meaning.
    let m = &body["metrics"];
    assert!(m["uptime_seconds"].as_f64().is_some_and(|u| u > 0.0), "uptime reads 0m otherwise");
    assert!(!m["timestamp"].as_str().unwrap_or("Z").ends_with('Z'));
    assert!(body["machine_info"]["boot_time"].is_string());
    assert_ne!(body["machine_info"]["os_version"], body["machine_info"]["os"], "no `Linux Linux`");
    assert_eq!(m["security"]["sip_enabled"], false, "Linux: all false as Atlas");
    for list in ["top_cpu", "top_memory"] {
        for p in m["processes"][list].as_array().expect(list) {
            assert!(p["cpu"].is_number() && p["memory"].is_number(), "proc.cpu.toFixed needs numbers: {p}");
        }
    }
    // The ping widget log against Atlas's ping entry (fleet_network_analyzer reads these).
    let ping_example = &example["widget_logs"]["logs"][0];
    let logs = body["widget_logs"].as_array().expect("widget_logs");
    let ping = logs.iter().find(|l| l["widget_type"] == "ping").expect("a ping summary (flushed by once)");
    let mut problems = Vec::new();
    compare("log", ping_example, Some(ping), &[], &mut problems);
    assert!(problems.is_empty(), "ping log differs from Atlas's:\n{}", problems.join("\n"));
    assert_eq!(ping["level"], "INFO");
    let no_nulls = |v: &Value| !v.to_string().contains("null");
    assert!(logs.iter().all(|l| no_nulls(&l["data"])), "no null in widget-log data: {logs:?}");
}
