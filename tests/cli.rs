//! The command line as a user meets it: exit codes, messages naming the file and field,
//! `once` output shape, `keygen`, `validate`, and `run` stopping on SIGTERM.

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::support::{agent, run, s, stderr, stdout, write_config, SAFE_WIDGETS, TEST_KEY_B64};

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("fleet-agent "));
    for command in ["run", "once", "keygen", "validate", "status"] {
        let out = run(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{command} --help");
        assert!(stdout(&out).contains(&format!("fleet-agent {command}")), "{command} help names itself");
    }
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["once", "--bogus"]).status.code(), Some(2));
}

#[test]
fn keygen_prints_32_random_bytes() {
    let first = run(&["keygen"]);
    let second = run(&["keygen"]);
    assert_eq!(first.status.code(), Some(0));
    let text = stdout(&first);
    assert_eq!(text.lines().count(), 1, "one line only");
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).expect("standard base64");
    assert_eq!(bytes.len(), 32);
    assert_ne!(text, stdout(&second), "two keys differ");
}

#[test]
fn once_prints_the_report_with_typed_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "c.json", &format!(r#"{{"machine_id":"test-mid",{SAFE_WIDGETS}}}"#), 0o644);
    let out = run(&["once", "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let body: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(body["machine_id"], "test-mid");
    let info = &body["machine_info"];
    for key in ["hostname", "os", "architecture", "computer_name"] {
        assert!(info[key].is_string(), "machine_info.{key}: {}", info[key]);
    }
    for key in ["cpu_threads", "total_memory"] {
        assert!(info[key].is_u64(), "machine_info.{key}: {}", info[key]);
    }
    // Atlas sends boot_time as naive local ISO-8601 and never a null local_ip.
    assert!(info["boot_time"].is_string(), "machine_info.boot_time: {}", info["boot_time"]);
    assert!(info["disks"].is_array());
    assert!(info["local_ip"].is_string());
    let m = &body["metrics"];
    for (widget, key) in [("cpu", "percent"), ("memory", "percent"), ("disk", "percent")] {
        let v = m[widget][key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&v), "metrics.{widget}.{key} = {}", m[widget][key]);
    }
    for (widget, key) in [("memory", "total"), ("disk", "total"), ("network", "bytes_sent"), ("network", "bytes_recv")]
    {
        assert!(m[widget][key].is_u64(), "metrics.{widget}.{key}");
    }
    assert!(m["cpu"]["per_core"].is_array());
    assert!(m["processes"]["total"].is_u64());
    assert!(m["processes"]["top_cpu"].as_array().is_some_and(|a| a.len() <= 5));
    assert!(m["system"]["uptime"].is_u64());
    assert!(m.get("battery").is_some(), "battery is null or an object");
    let logs = body["widget_logs"].as_array().expect("widget_logs");
    let ping = logs.iter().find(|l| l["widget_type"] == "ping").expect("a ping entry");
    assert_eq!(ping["data"]["target"], "127.0.0.1");
    assert!(logs.iter().all(|l| l["widget_type"] != "speedtest"), "speedtest disabled by SAFE_WIDGETS");
}

#[test]
fn once_works_without_any_config() {
    // With no --config, the OS default path is used only if it exists; on CI it does not.
    // `once` itself is run with a config holding nothing but SAFE_WIDGETS: the default widgets
    // would ping 1.1.1.1 and run a speed test against speed.cloudflare.com.
    if !std::path::Path::new("/etc/fleet-agent/config.json").exists() {
        let out = agent().args(["validate"]).env("HOME", "/nonexistent").output().expect("runs");
        assert_eq!((out.status.code(), stdout(&out).trim()), (Some(0), "ok"), "stderr: {}", stderr(&out));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), "c.json", &format!("{{{SAFE_WIDGETS}}}"), 0o644);
        let out = agent().args(["once", "--config", s(&config)]).env("HOME", "/nonexistent").output().expect("runs");
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
        let body: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
        assert!(body["machine_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
}

#[test]
fn config_errors_name_the_file_and_field_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str, u32, &[&str])] = &[
        ("unknown.json", r#"{"server_url":"https://x","colour":"blue"}"#, 0o600, &["unknown field `colour`"]),
        ("badjson.json", r#"{"interval": 10,"#, 0o600, &["badjson.json"]),
        ("shortkey.json", r#"{"encryption_key":"c2hvcnQ="}"#, 0o600, &["encryption_key", "5 bytes"]),
        ("alphabet.json", r#"{"encryption_key":"not base64!"}"#, 0o600, &["encryption_key", "' '"]),
        ("open.json", &format!(r#"{{"encryption_key":"{TEST_KEY_B64}"}}"#), 0o644, &["open.json", "0644"]),
        ("apikey.json", r#"{"api_key":"secret"}"#, 0o640, &["apikey.json", "0640"]),
        ("mid.json", r#"{"machine_id":""}"#, 0o600, &["machine_id", "empty"]),
        ("midlong.json", &format!(r#"{{"machine_id":"{}"}}"#, "m".repeat(129)), 0o600, &["machine_id", "129 bytes"]),
        ("midctl.json", r#"{"machine_id":"a\u0007b"}"#, 0o600, &["machine_id", "control"]),
        ("widget.json", r#"{"widgets":{"toaster":{}}}"#, 0o600, &["widgets.toaster"]),
        ("fsync.json", r#"{"spool":{"fsync":"maybe"}}"#, 0o600, &["spool.fsync"]),
        ("proto.json", r#"{"protocol":"v3"}"#, 0o600, &["protocol"]),
    ];
    for (name, json, mode, needles) in cases {
        let path = write_config(dir.path(), name, json, *mode);
        for command in ["validate", "once"] {
            let out = run(&[command, "--config", s(&path)]);
            assert_eq!(out.status.code(), Some(2), "{command} {name}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains(name), "{command} {name}: message names the file: {err}");
            for needle in *needles {
                assert!(err.contains(needle), "{command} {name}: expected {needle:?} in {err}");
            }
        }
    }
    let missing = dir.path().join("missing.json");
    let out = run(&["validate", "--config", s(&missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.json"));
}

#[test]
fn environment_key_overrides_and_is_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), "c.json", r#"{"machine_id":"m"}"#, 0o644);
    let out =
        agent().args(["validate", "--config", s(&path)]).env("FLEET_ENCRYPTION_KEY", "AAAA").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("FLEET_ENCRYPTION_KEY"), "{}", stderr(&out));
    let out = agent()
        .args(["validate", "--config", s(&path)])
        .env("FLEET_ENCRYPTION_KEY", TEST_KEY_B64)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn validate_reports_every_error_and_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_config(
        dir.path(),
        "good.json",
        &format!(
            r#"{{"server_url":"https://fleet.example:8443","api_key":"k","encryption_key":"{TEST_KEY_B64}",
               "verify_ssl":true,"interval":10,"machine_id":"laptop-1","protocol":"v2",
               "spool":{{"dir":"/tmp/x","max_bytes":67108864,"fsync":"batch"}},
               "widgets":{{"cpu":{{"enabled":true,"interval":5}},"processes":{{"enabled":false}}}},"log_level":"debug"}}"#
        ),
        0o600,
    );
    let out = run(&["validate", "--config", s(&good)]);
    assert_eq!((out.status.code(), stdout(&out).trim()), (Some(0), "ok"), "{}", stderr(&out));
    let bad = write_config(dir.path(), "bad.json", r#"{"interval":-1,"protocol":"x","log_level":"loud"}"#, 0o600);
    let out = run(&["validate", "--config", s(&bad)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for field in ["`interval`", "`protocol`", "`log_level`"] {
        assert!(err.contains(field), "{field} in {err}");
    }
}

#[test]
fn run_stops_on_sigterm_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let config = write_config(
        dir.path(),
        "c.json",
        &format!(r#"{{"machine_id":"t","interval":1,"spool":{{"dir":"{}"}},{SAFE_WIDGETS}}}"#, s(&spool)),
        0o600,
    );
    let mut child = agent()
        .args(["run", "--config", s(&config)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    let sent = Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(5), "run did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(sent.elapsed() < Duration::from_secs(1), "stopped in {:?}", sent.elapsed());
    assert_eq!(status.code(), Some(0));
}
