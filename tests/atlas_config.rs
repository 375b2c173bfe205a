//! Atlas's `agent-config.json` (from `atlas/fleet_agent_builder.py`) works as our config file:
//! `validate` accepts it with one warning naming what is ignored, and `run` reports to the
//! server it names with the key it holds.

use std::time::Duration;

use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use serde_json::Value;

use crate::sender::start_atlas_mock;
use crate::support::{run, s, start_agent, stderr, stdout, wait_for, write_config, TEST_KEY_B64};

/// What `create_agent_config` writes (defaults: every widget and tool on), plus our own
/// `spool` and `machine_id` keys so the test stays in its temp dir.
fn builder_file(url: &str, spool: &str) -> String {
    format!(
        r#"{{
  "fleet_server": {{"url": "{url}", "api_key": "test-api-key", "encryption_key": "{TEST_KEY_B64}"}},
  "dashboard_auth": {{"enabled": true, "auth_mode": "local"}},
  "agent": {{"report_interval": 1, "retry_attempts": 3, "retry_delay": 5}},
  "widgets": {{"enabled": true, "order": ["system_monitor", "wifi", "ping"], "log_interval": 300,
    "system_monitor": true, "wifi": false, "wifi_analyzer": true, "speedtest": false, "speedtest_history": true,
    "ping": true, "ping_interval": 1, "network_testing": true, "power": true, "processes": true}},
  "tools": {{"order": ["metrics", "logs", "commands", "autostart"], "metrics": true, "logs": true, "commands": true,
    "autostart": true}},
  "machine_id": "atlas-built", "spool": {{"dir": "{spool}"}}
}}"#
    )
}

#[test]
fn agent_config_json_from_the_atlas_builder_runs_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.jsonl");
    let (_server, url) = start_atlas_mock(&capture);
    let text = builder_file(&url, s(&dir.path().join("spool"))).replace(
        r#""ping": true"#,
        r#""ping": {"enabled": true, "targets": ["127.0.0.1"], "count": 1, "tcp_port": 9}"#,
    );
    let config = write_config(dir.path(), "agent-config.json", &text, 0o600);
    let output = run(&["validate", "--config", s(&config)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "ok");
    let errors = stderr(&output);
    let warnings: Vec<&str> = errors.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for ignored in
        ["dashboard_auth", "agent.retry_attempts", "widgets.order", "widgets.wifi_analyzer", "tools.autostart"]
    {
        assert!(warnings[0].contains(ignored), "{ignored} not in {}", warnings[0]);
    }

    let log = dir.path().join("agent.log");
    let mut agent = start_agent(&config, &log);
    let captured = || std::fs::read_to_string(&capture).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(15), || captured().contains("/api/fleet/report")),
        "a report arrives; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let key = Key32::from_base64(TEST_KEY_B64).expect("key");
    let report = captured()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["path"] == "/api/fleet/report")
        .expect("report");
    assert_eq!(report["headers"]["x-api-key"], "test-api-key");
    let body = report["body"].as_str().expect("body");
    let inner: Value =
        serde_json::from_slice(&envelope::open_v1(&key, body.as_bytes()).expect("sealed with the key")).expect("json");
    assert_eq!(inner["machine_id"], "atlas-built");
    let agent_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(agent_log.matches("is an Atlas agent-config.json").count(), 1, "{agent_log}");
}
