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
            "percent": 99.0, "plugged": true, "charging": true, "time_left": null, "time_to_full": null,
            "cycle_count": 312, "health_percent": 88.4, "condition": "Normal", "temperature_c": 30.3,
            "source": "pmset+ioreg",
        })
    );
    assert_eq!(
        wifi_log(&body),
        json!({
            "interface": "en0", "connected": true, "ssid": null, "ssid_redacted": true, "bssid": null,
            "rssi": -34, "noise": -92, "snr": 58, "channel": 101, "band": "6GHz", "channel_width_mhz": 160,
            "tx_rate": 2401.0, "phy_mode": "802.11ax", "security": "WPA3 Personal", "quality_score": 100,
            "source": "wdutil",
        })
    );
    let info = &body["machine_info"];
    assert_eq!(info["os"], "Darwin");
    assert_eq!(info["serial_number"], "GGJXG26P75");
    assert_eq!(info["model"], "MacBookPro18,3");
    assert_eq!(info["chip"], "Apple M1 Pro");
    assert_eq!(info["computer_name"], "Susam\u{2019}s MacBook Pro");
    // sysinfo widgets still read the live machine.
    assert!(body["metrics"]["cpu"]["percent"].is_number());
}

#[test]
fn linux_thinkpad_replay() {
    let body = once_replay("linux-thinkpad");
    assert_eq!(
        body["metrics"]["battery"],
        json!({
            "percent": 85.0, "plugged": false, "charging": false, "time_left": 28955, "time_to_full": null,
            "cycle_count": null, "health_percent": 99.7, "condition": "Normal", "temperature_c": null,
            "source": "sysfs",
        })
    );
    assert_eq!(
        wifi_log(&body),
        json!({
            "interface": "wlan0", "connected": true, "ssid": "xxx", "ssid_redacted": false, "bssid": null,
            "rssi": -60, "noise": null, "snr": null, "channel": 60, "band": "5GHz", "channel_width_mhz": 20,
            "tx_rate": 173.3, "phy_mode": "802.11ac", "security": null, "quality_score": 80, "source": "iw",
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
    assert_eq!((&wifi["rssi"], &wifi["quality_score"]), (&Value::Null, &Value::Null));
    let info = &body["machine_info"];
    assert_eq!((&info["serial_number"], &info["model"]), (&json!("W8805BRDX89"), &json!("iMac7,1")));
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
