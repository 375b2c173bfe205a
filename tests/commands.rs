//! The Atlas command channel end to end against `tests/fixtures/atlas_mock.py` (which queues,
//! serves and records acks as Atlas's server does): remote key rotation (reports afterwards
//! open only with the new key, also after a restart; a bad payload fails and changes nothing),
//! refused and unknown actions, and `restart_agent` with a lost ack (it runs once).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use serde_json::{json, Value};

use crate::sender::start_atlas_mock;
use crate::support::{agent_config, run, s, start_agent, stdout, wait_for, TEST_KEY_B64};

const MACHINE: &str = "test-machine";
const NEW_KEY_B64: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// A plain HTTP/1.0 request to the mock (its test-only endpoints); returns the JSON answer.
fn mock(url: &str, method: &str, path: &str, body: &Value) -> Value {
    use std::io::Write;
    let authority = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to mock");
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let json = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(json).unwrap_or(Value::Null)
}

fn queue(url: &str, action: &str, params: Value) -> String {
    let answer = mock(url, "POST", &format!("/mock/queue/{MACHINE}"), &json!({"action": action, "params": params}));
    answer["id"].as_str().expect("queued id").to_string()
}

fn command(url: &str, id: &str) -> Value {
    let all = mock(url, "GET", "/mock/commands", &Value::Null);
    all["commands"].as_array().into_iter().flatten().find(|c| c["id"] == id).cloned().unwrap_or(Value::Null)
}

/// `params` of a rotation to `new_key_b64`, sealed with `with` as Atlas's server does
/// (`encryption.encrypt_payload({'new_key': …})`, a v1 envelope object).
fn rotation_params(with: &Key32, new_key_b64: &str) -> Value {
    let sealed = envelope::seal_v1(with, json!({ "new_key": new_key_b64 }).to_string().as_bytes()).expect("seal");
    json!({ "encrypted_new_key": serde_json::from_slice::<Value>(&sealed).expect("json") })
}

/// Bodies of the reports captured since line `from`.
fn reports(capture: &Path, from: usize) -> Vec<String> {
    let text = std::fs::read_to_string(capture).unwrap_or_default();
    text.lines()
        .skip(from)
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["path"] == "/api/fleet/report")
        .filter_map(|entry| entry["body"].as_str().map(str::to_string))
        .collect()
}

fn capture_lines(capture: &Path) -> usize {
    std::fs::read_to_string(capture).map(|t| t.lines().count()).unwrap_or(0)
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn remote_key_rotation_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.jsonl");
    let (_server, url) = start_atlas_mock(&capture);
    let old = Key32::from_base64(TEST_KEY_B64).expect("key");
    let new = Key32::from_base64(NEW_KEY_B64).expect("key");
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "atlas", "");
    let spool = dir.path().join("spool");

    // 1. The server queues a rotation sealed with the current key; the agent polls at start.
    let rotation = queue(&url, "rotate_encryption_key", rotation_params(&old, NEW_KEY_B64));
    let log1 = dir.path().join("agent1.log");
    let mut agent = start_agent(&config, &log1);
    assert!(
        wait_for(Duration::from_secs(15), || command(&url, &rotation)["status"] == "completed"),
        "rotation acknowledged; log: {}",
        log_of(&log1)
    );
    let result = command(&url, &rotation)["result"].clone();
    assert_eq!(result["success"], true, "{result}");
    assert!(!result.to_string().contains(NEW_KEY_B64), "the ack carries no key");
    assert!(wait_for(Duration::from_secs(10), || !reports(&capture, 0).is_empty()), "a report arrives");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let log = log_of(&log1);
    assert!(log.contains(&format!("command {rotation}: executing rotate_encryption_key")), "{log}");
    let sent = reports(&capture, 0);
    for body in &sent {
        assert!(envelope::open_v1(&new, body.as_bytes()).is_ok(), "reports after the ack open with the new key");
        assert!(envelope::open_v1(&old, body.as_bytes()).is_err(), "and not with the old one");
    }
    let key_file = spool.join("transport-key.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).expect("rotated key kept").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let status = stdout(&run(&["status", "--config", s(&config)]));
    let new_kid = envelope::kid(&new);
    assert!(status.contains(&format!("id {new_kid} (from rotated")) && status.contains(&rotation), "{status}");

    // 2. A restart with the unchanged config (old key) keeps the new key.
    let before_restart = capture_lines(&capture);
    let log2 = dir.path().join("agent2.log");
    let mut agent = start_agent(&config, &log2);
    assert!(wait_for(Duration::from_secs(10), || !reports(&capture, before_restart).is_empty()));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    for body in reports(&capture, before_restart) {
        assert!(envelope::open_v1(&new, body.as_bytes()).is_ok() && envelope::open_v1(&old, body.as_bytes()).is_err());
    }

    // 3. A payload that does not open with the current key (sealed with the old one), an
    //    unknown action and a refused one: all acked failed, nothing changes.
    let key_bytes = std::fs::read(&key_file).expect("key file");
    let stale = queue(&url, "rotate_encryption_key", rotation_params(&old, TEST_KEY_B64));
    let garbage = queue(&url, "rotate_encryption_key", json!({"encrypted_new_key": {"encrypted": true}}));
    let unknown = queue(&url, "format_disk", json!({}));
    let refused = queue(&url, "kill_process", json!({"pid": 999_999}));
    let before_bad = capture_lines(&capture);
    let log3 = dir.path().join("agent3.log");
    let mut agent = start_agent(&config, &log3);
    let all_failed = || [&stale, &garbage, &unknown, &refused].iter().all(|id| command(&url, id)["status"] == "failed");
    assert!(wait_for(Duration::from_secs(15), all_failed), "bad commands acked failed; log: {}", log_of(&log3));
    assert!(wait_for(Duration::from_secs(10), || !reports(&capture, before_bad).is_empty()));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    assert_eq!(std::fs::read(&key_file).expect("key file"), key_bytes, "the rotated key is unchanged");
    for body in reports(&capture, before_bad) {
        assert!(envelope::open_v1(&new, body.as_bytes()).is_ok(), "still the rotated key");
    }
    let message = |id: &str| command(&url, id)["result"]["message"].as_str().unwrap_or("").to_string();
    assert!(message(&stale).contains("does not decrypt with the current key"), "{}", message(&stale));
    assert!(message(&unknown).contains("format_disk"), "{}", message(&unknown));
    assert!(message(&refused).contains("kill_process") && message(&refused).contains("commands.allow"));
    let log = log_of(&log3);
    for id in [&stale, &garbage, &unknown, &refused] {
        assert!(log.contains(&format!("command {id}")), "every command is logged with its id: {log}");
    }
}

#[test]
fn restart_with_a_lost_ack_runs_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.jsonl");
    let (_server, url) = start_atlas_mock(&capture);
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "atlas", "");
    mock(&url, "POST", "/mock/drop-acks", &json!({"count": 1}));
    let restart = queue(&url, "restart_agent", json!({}));
    let log = dir.path().join("agent.log");
    let mut agent = start_agent(&config, &log);
    let pid = agent.child.id();
    assert!(
        wait_for(Duration::from_secs(20), || command(&url, &restart)["status"] == "completed"),
        "acknowledged after the restart; log: {}",
        log_of(&log)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.child.try_wait().expect("try_wait").is_none(), "still running (same pid {pid})");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let text = log_of(&log);
    assert_eq!(text.matches("restart_agent: stopping to start again").count(), 1, "restarted once: {text}");
    assert_eq!(text.matches("started: machine_id").count(), 2, "started twice: {text}");
    assert!(text.contains("was already executed; acknowledging it again"), "{text}");
}
