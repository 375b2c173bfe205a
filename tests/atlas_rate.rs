//! Atlas mode never makes more requests than Atlas's own agent (issue 16): at interval 1 s,
//! with the most frequent reports allowed (`send_interval` 10 s), widget logs asked for every
//! 50 ms and a ping log every second, the agent stays within 9 requests in any 60 s (Atlas's
//! agent at its defaults: 6 reports, 2 command polls, 1 widget-log post) and still reports
//! every 10 s. Before, it made 2 requests a second and drew 429s from the server's limit.

use std::time::Duration;

use serde_json::Value;

use crate::sender::start_atlas_mock;
use crate::support::{agent_config, start_agent, write_config, TEST_KEY_B64};

#[test]
fn atlas_requests_stay_within_atlas_agents_rate_at_interval_1s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.jsonl");
    let (_server, url) = start_atlas_mock(&capture);
    let extra = r#","send_interval":10,"widget_log_interval":0.05"#;
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "atlas", extra);
    let text = std::fs::read_to_string(&config).expect("read").replace(r#""interval":0.2"#, r#""interval":1"#).replace(
        r#""ping":{"enabled":false}"#,
        r#""ping":{"targets":["127.0.0.1"],"count":1,"tcp_port":9,"window_s":0}"#,
    );
    let config = write_config(dir.path(), "c.json", &text, 0o600);
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    std::thread::sleep(Duration::from_secs(32));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));

    let entries: Vec<Value> = std::fs::read_to_string(&capture)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let at = |e: &Value| e["at"].as_f64().unwrap_or(0.0);
    let of = |path: &str| entries.iter().filter(|e| e["path"] == path).map(at).collect::<Vec<f64>>();
    let reports = of("/api/fleet/report");
    let logs = of("/api/fleet/widget-logs");
    let polls = entries.iter().filter(|e| e["method"] == "GET").count();
    eprintln!(
        "32 s at interval 1 s: {} requests: {} reports, {} polls, {} widget-log posts",
        entries.len(),
        reports.len(),
        polls,
        logs.len()
    );
    // The whole run fits in one 60 s window (the shutdown push included).
    assert!(entries.len() <= 9, "{} requests in 32 s: {entries:?}", entries.len());
    assert!(reports.len() >= 3, "a report every 10 s: {reports:?}");
    for gap in reports.windows(2).map(|w| w[1] - w[0]) {
        assert!((9.5..=12.0).contains(&gap), "report gap {gap:.1} s");
    }
    assert!(!logs.is_empty(), "widget logs still go out");
    assert!(polls >= 1, "commands are polled");
}
