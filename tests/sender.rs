//! The sender end to end, with real processes over 127.0.0.1: the bundled receiver (v1 and
//! v2), a stand-in for the Atlas server's Python transport, outages, a wrong key, kill -9
//! during sending, 429 with `Retry-After`, and TLS with a private CA.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use serde_json::{Map, Value};

use crate::support::{
    agent_config, s, spool_unacked, start_agent, start_receiver, stored_records, wait_for, write_config, Proc,
    TEST_KEY_B64,
};

const OTHER_KEY_B64: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const MACHINE: &str = "test-machine";

/// `(ts, widget)` of every stored record; panics on a duplicate.
pub(crate) fn unique_records(records: &[Map<String, Value>]) -> BTreeSet<(String, String)> {
    let mut seen = BTreeSet::new();
    for line in records {
        let record = &line["record"];
        let key =
            (record["ts"].as_str().unwrap_or("").to_string(), record["widget"].as_str().unwrap_or("").to_string());
        assert!(seen.insert(key.clone()), "record stored twice: {key:?}");
    }
    seen
}

/// Every cycle (distinct ts) holds the full set of enabled widgets: nothing partial was lost.
pub(crate) fn assert_whole_cycles(seen: &BTreeSet<(String, String)>) {
    let mut by_ts: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (ts, widget) in seen {
        by_ts.entry(ts.as_str()).or_default().push(widget.as_str());
    }
    for (ts, widgets) in by_ts {
        assert_eq!(widgets, ["cpu", "memory", "system"], "cycle {ts} is incomplete");
    }
}

/// The sender's state as the spool's state record holds it (`{}` before the first write).
fn sender_state(spool: &Path) -> Value {
    match fleet_agent::spool::load_state(spool) {
        Ok(Some(state)) => state.sender.unwrap_or_else(|| serde_json::json!({})),
        Ok(None) => serde_json::json!({}),
        Err(_) => Value::Null,
    }
}

#[test]
fn v2_delivers_every_record_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]);
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "v2", "");
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    assert!(wait_for(Duration::from_secs(10), || stored_records(&store, MACHINE).len() >= 30), "records arrive");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let stored = stored_records(&store, MACHINE);
    let seen = unique_records(&stored);
    assert_whole_cycles(&seen);
    let spool = dir.path().join("spool");
    assert_eq!(spool_unacked(&spool), 0, "everything acknowledged at exit");
    assert_eq!(sender_state(&spool)["sent_records"].as_u64(), Some(seen.len() as u64));
    assert!(stored.iter().all(|l| l["record"]["data"].is_object()));
}

#[test]
fn receiver_down_then_up_drains_the_backlog_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let url = format!("http://127.0.0.1:{port}");
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "v2", "");
    let spool = dir.path().join("spool");
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    assert!(wait_for(Duration::from_secs(10), || spool_unacked(&spool) >= 30), "backlog builds while down");
    let state = sender_state(&spool);
    assert!(state["last_error"]["message"].as_str().is_some_and(|m| m.contains(&port.to_string())), "{state}");
    let (_receiver, _) = start_receiver(&store, &format!("127.0.0.1:{port}"), "test-api-key", &[TEST_KEY_B64]);
    assert!(wait_for(Duration::from_secs(20), || spool_unacked(&spool) <= 3), "backlog drains after the outage");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let seen = unique_records(&stored_records(&store, MACHINE));
    assert_whole_cycles(&seen);
    assert_eq!(spool_unacked(&spool), 0);
    assert_eq!(sender_state(&spool)["sent_records"].as_u64(), Some(seen.len() as u64));
}

#[test]
fn wrong_key_loses_nothing_and_delivers_after_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]);
    let spool = dir.path().join("spool");
    let wrong = agent_config(dir.path(), "wrong.json", &url, Some(OTHER_KEY_B64), "v2", "");
    let mut agent = start_agent(&wrong, &dir.path().join("wrong.log"));
    assert!(wait_for(Duration::from_secs(10), || spool_unacked(&spool) >= 10), "records are kept");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    assert!(stored_records(&store, MACHINE).is_empty(), "nothing stored under the wrong key");
    let log = std::fs::read_to_string(dir.path().join("wrong.log")).expect("log");
    let kid = envelope::kid(&Key32::from_base64(OTHER_KEY_B64).expect("key"));
    assert!(log.contains(&format!("key id {kid}")) && log.contains("Decryption failed"), "{log}");
    assert_eq!(log.matches("Decryption failed").count(), 1, "one error per (5 min) backoff step: {log}");
    let kept = spool_unacked(&spool);
    std::fs::remove_file(&wrong).expect("rm");
    let fixed = agent_config(dir.path(), "fixed.json", &url, Some(TEST_KEY_B64), "v2", "");
    let mut agent = start_agent(&fixed, &dir.path().join("fixed.log"));
    let delivered = wait_for(Duration::from_secs(10), || stored_records(&store, MACHINE).len() as u64 >= kept);
    let log = std::fs::read_to_string(dir.path().join("fixed.log")).unwrap_or_default();
    assert!(delivered, "kept {kept}, stored {}; log: {log}", stored_records(&store, MACHINE).len());
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let seen = unique_records(&stored_records(&store, MACHINE));
    assert_whole_cycles(&seen);
    assert_eq!(spool_unacked(&spool), 0);
}

#[test]
fn kill_9_while_sending_never_loses_or_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]);
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "v2", "");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..20 {
        let mut agent = start_agent(&config, &dir.path().join(format!("agent-{i}.log")));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 400));
        agent.kill9();
    }
    let spool = dir.path().join("spool");
    let final_log = dir.path().join("final.log");
    let mut agent = start_agent(&config, &final_log);
    let started = || std::fs::read_to_string(&final_log).unwrap_or_default().contains("started:");
    assert!(wait_for(Duration::from_secs(10), started), "agent starts");
    assert!(wait_for(Duration::from_secs(15), || spool_unacked(&spool) <= 3), "drains after the kills");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    assert_eq!(spool_unacked(&spool), 0);
    let seen = unique_records(&stored_records(&store, MACHINE));
    assert!(seen.len() >= 20, "records from the killed runs arrived: {}", seen.len());
    assert_whole_cycles(&seen);
}

/// A one-thread HTTP server: answers each request with the next of `answers` (the last one
/// repeats) and records when each request arrived.
/// Arrival time and request head of every request a scripted server saw.
type RequestLog = Arc<Mutex<Vec<(Instant, String)>>>;

fn scripted_server(answers: Vec<&'static str>) -> (String, RequestLog) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            seen.lock().expect("lock").push((Instant::now(), head));
            let answer = answers[n.min(answers.len() - 1)];
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, log)
}

#[test]
fn retry_after_on_429_is_honoured() {
    let limited = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"ok\"}";
    let (url, log) = scripted_server(vec![limited, ok]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = agent_config(dir.path(), "c.json", &url, None, "v2", "");
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    assert!(wait_for(Duration::from_secs(10), || log.lock().map(|l| l.len() >= 2).unwrap_or(false)), "retried");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let requests = log.lock().expect("lock").clone();
    let gap = requests[1].0.duration_since(requests[0].0);
    assert!(gap >= Duration::from_millis(1900), "second request after {gap:?}, Retry-After was 2 s");
    for (_, head) in &requests {
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-length:") && !head.contains("transfer-encoding"), "{head}");
        assert!(head.contains("x-api-key: test-api-key") && !head.contains("authorization"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
    }
}

#[test]
fn redirects_are_not_followed() {
    let redirect = "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://192.0.2.1/steal\r\nContent-Length: 0\r\n\r\n";
    let (url, log) = scripted_server(vec![redirect]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "v2", "");
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    assert!(wait_for(Duration::from_secs(10), || log.lock().map(|l| !l.is_empty()).unwrap_or(false)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let state = sender_state(&dir.path().join("spool"));
    assert!(state["last_error"]["message"].as_str().is_some_and(|m| m.contains("not followed")), "{state}");
    assert!(spool_unacked(&dir.path().join("spool")) > 0, "kept, not acknowledged");
}

/// Start `tests/fixtures/atlas_mock.py`; returns the process and its URL.
pub(crate) fn start_atlas_mock(capture: &Path) -> (Proc, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/atlas_mock.py");
    let mut child = std::process::Command::new("python3")
        .args([s(&script), s(capture)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let url = line.trim().strip_prefix("listening on ").expect("url").to_string();
    (Proc { child }, url)
}

fn is_naive_iso(ts: &str) -> bool {
    let b = ts.as_bytes();
    ts.len() >= 19 && b[4] == b'-' && b[10] == b'T' && !ts.ends_with('Z') && !ts[19..].contains(['+', '-'])
}

#[test]
fn atlas_protocol_matches_the_python_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.jsonl");
    let (_server, url) = start_atlas_mock(&capture);
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "atlas", "");
    // Enable ping to loopback so there are widget logs to send.
    let text = std::fs::read_to_string(&config).expect("read").replace(
        r#""ping":{"enabled":false}"#,
        r#""ping":{"targets":["127.0.0.1"],"count":1,"tcp_port":9,"window_s":0}"#,
    );
    let config = write_config(dir.path(), "c.json", &text, 0o600);
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    let captured = || std::fs::read_to_string(&capture).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(15), || {
            let text = captured();
            text.contains("/api/fleet/report") && text.contains("/api/fleet/widget-logs")
        }),
        "report and widget logs arrive; agent log: {}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let key = Key32::from_base64(TEST_KEY_B64).expect("key");
    let mut reports = 0;
    let mut logs = 0;
    for line in captured().lines() {
        let entry: Value = serde_json::from_str(line).expect("capture line");
        let headers = &entry["headers"];
        if entry["method"] == "GET" {
            // The command channel's poll (tests/commands.rs); no command is queued here.
            assert_eq!(headers["x-api-key"], "test-api-key");
            assert_eq!(entry["path"], format!("/api/fleet/commands/{MACHINE}"));
            continue;
        }
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.get("content-length").is_some() && headers.get("authorization").is_none());
        assert_eq!(headers["x-api-key"], "test-api-key");
        let body = entry["body"].as_str().expect("body");
        let outer: Value = serde_json::from_str(body).expect("envelope JSON");
        assert_eq!((outer["encrypted"].clone(), outer["version"].clone()), (Value::Bool(true), Value::from("1")));
        assert!(!body.contains(MACHINE), "no plaintext on the wire");
        let inner: Value =
            serde_json::from_slice(&envelope::open_v1(&key, body.as_bytes()).expect("opens")).expect("json");
        match entry["path"].as_str() {
            Some("/api/fleet/report") => {
                reports += 1;
                assert_eq!(inner["machine_id"], MACHINE);
                assert!(inner["machine_info"].is_object() && inner["metrics"].is_object());
                for metric in ["cpu", "memory"] {
                    let v = inner["metrics"][metric]["percent"].as_f64().expect("percent is a number");
                    assert!((0.0..=100.0).contains(&v));
                }
                assert!(inner["metrics"]["battery"].is_null() || inner["metrics"]["battery"].is_object());
            }
            Some("/api/fleet/widget-logs") => {
                assert_eq!(inner["machine_id"], MACHINE);
                for log in inner["logs"].as_array().expect("logs array") {
                    logs += 1;
                    let ts = log["timestamp"].as_str().expect("timestamp");
                    assert!(is_naive_iso(ts), "naive local timestamp: {ts}");
                    assert_eq!(log["widget_type"], "ping");
                    assert!(log["level"].is_string() && log["message"].is_string());
                    assert!(log["data"]["packet_loss"].is_number() && log["data"]["target"] == "127.0.0.1");
                }
            }
            other => panic!("unexpected path {other:?}"),
        }
    }
    assert!(reports >= 1 && logs >= 1, "reports {reports}, logs {logs}");
}

#[test]
fn atlas_protocol_with_the_bundled_receiver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]);
    // Widget logs every 2 s here (default 120 s), within Atlas's request budget.
    let extra = r#","widget_log_interval":2"#;
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "atlas", extra);
    let text = std::fs::read_to_string(&config).expect("read").replace(
        r#""ping":{"enabled":false}"#,
        r#""ping":{"targets":["127.0.0.1"],"count":1,"tcp_port":9,"window_s":0}"#,
    );
    let config = write_config(dir.path(), "c.json", &text, 0o600);
    let spool = dir.path().join("spool");
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    use fleet_receiver::Stream;
    let v1 = |stream| crate::support::store_reader(&store).read_v1(MACHINE, stream).map(|l| l.len()).unwrap_or(0);
    assert!(wait_for(Duration::from_secs(15), || v1(Stream::Reports) >= 1 && v1(Stream::WidgetLogs) >= 3));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    // Metrics never enter the spool in Atlas mode; the last widget logs go with the final push.
    assert_eq!(spool_unacked(&spool), 0, "widget logs delivered, metrics represented by the report");
}

#[test]
fn tls_with_a_private_ca_and_refusal_of_an_untrusted_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fleet test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
    let server_cert = server_params.signed_by(&server_key, &ca).expect("signed");
    let ca_pem = dir.path().join("ca.pem");
    let cert_pem = dir.path().join("server.pem");
    let key_pem = dir.path().join("server.key");
    std::fs::write(&ca_pem, ca.pem()).expect("write");
    std::fs::write(&cert_pem, server_cert.pem()).expect("write");
    std::fs::write(&key_pem, server_key.serialize_pem()).expect("write");

    let store = dir.path().join("store");
    let mut receiver = crate::support::agent();
    receiver.args(crate::support::receiver_args(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]));
    receiver.args(["--tls-cert", s(&cert_pem), "--tls-key", s(&key_pem)]);
    let mut child =
        receiver.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().expect("rx");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
    let _receiver = Proc { child };
    let url = line.trim().strip_prefix("listening on ").expect("url").to_string();
    assert!(url.starts_with("https://"), "{url}");

    // Without the CA: refused, nothing acknowledged, the error says why.
    let untrusted_dir = dir.path().join("untrusted");
    std::fs::create_dir(&untrusted_dir).expect("mkdir");
    let config = agent_config(&untrusted_dir, "c.json", &url, Some(TEST_KEY_B64), "v2", "");
    let mut agent = start_agent(&config, &untrusted_dir.join("agent.log"));
    assert!(wait_for(Duration::from_secs(10), || sender_state(&untrusted_dir.join("spool"))["last_error"].is_object()));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    assert!(stored_records(&store, MACHINE).is_empty());
    let message =
        sender_state(&untrusted_dir.join("spool"))["last_error"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.to_lowercase().contains("certificate") || message.contains("UnknownIssuer"), "{message}");

    // With ca_file: delivered.
    let trusted_dir = dir.path().join("trusted");
    std::fs::create_dir(&trusted_dir).expect("mkdir");
    let extra = format!(r#","ca_file":"{}""#, s(&ca_pem));
    let config = agent_config(&trusted_dir, "c.json", &url, Some(TEST_KEY_B64), "v2", &extra);
    let mut agent = start_agent(&config, &trusted_dir.join("agent.log"));
    assert!(wait_for(Duration::from_secs(10), || stored_records(&store, MACHINE).len() >= 9), "delivered over TLS");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    unique_records(&stored_records(&store, MACHINE));
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn without_a_transport_key_no_plaintext_lands_in_the_spool_dir() {
    let refused =
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"error\":\"bad\"}";
    let down = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    let (url, log) = scripted_server(vec![refused, down]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = agent_config(dir.path(), "c.json", &url, None, "v2", "");
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    assert!(wait_for(Duration::from_secs(10), || log.lock().map(|l| l.len() >= 2).unwrap_or(false)));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let spool = dir.path().join("spool");
    assert!(sender_state(&spool)["inflight"]["seq"].is_u64(), "a batch is in flight");
    let rejected = fleet_agent::spool::rejected::list(&spool).expect("rejected/");
    assert_eq!(rejected.len(), 1, "the refused batch is kept (sealed with the spool's key)");
    assert!(rejected[0].records >= 1);
    for file in files_under(&spool) {
        let bytes = std::fs::read(&file).expect("read");
        for needle in [MACHINE.as_bytes(), br#""widget":"cpu""#.as_slice()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext {:?}",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    let first_log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    assert_eq!(sender_state(&spool)["rejected"].as_u64(), Some(1), "{}\n{first_log}", sender_state(&spool));

    // The in-flight batch (kept on disk without its body) is rebuilt and delivered once.
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[]);
    std::fs::remove_file(&config).expect("rm");
    let config = agent_config(dir.path(), "c.json", &url, None, "v2", "");
    let second_log = dir.path().join("agent2.log");
    let mut agent = start_agent(&config, &second_log);
    // Started (signal handlers in place) and delivering, before the SIGTERM.
    let started = || std::fs::read_to_string(&second_log).unwrap_or_default().contains("started:");
    assert!(wait_for(Duration::from_secs(10), started));
    assert!(
        wait_for(Duration::from_secs(10), || spool_unacked(&spool) <= 3 && !stored_records(&store, MACHINE).is_empty())
    );
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("agent2.log")).unwrap_or_default();
    assert_eq!(spool_unacked(&spool), 0, "{log}");
    assert_whole_cycles(&unique_records(&stored_records(&store, MACHINE)));
}
