//! The bundled receiver over real HTTP on 127.0.0.1: started in-process with
//! `Receiver::start`, and once as the real `fleet-agent receive` binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use fleet_receiver::store::{self, RECORDS_FILE, REPORTS_FILE, WIDGET_LOGS_FILE};
use fleet_receiver::{Limits, Receiver, ReceiverConfig, StorageRead, StoreKeys, StoreSource, Stream};
use fleet_widgets::{Level, SampleKind};
use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::keys::SecretString;
use fleet_wire::record::{BatchBody, Dropped, Record};
use serde_json::{json, Value};

use crate::support::{self, Rng};

pub(crate) const API_KEY: &str = "test-api-key";
pub(crate) const READ_TOKEN: &str = support::TEST_READ_TOKEN;

pub(crate) fn key(first: u8) -> Key32 {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = first.wrapping_add(i as u8);
    }
    Key32::from_bytes(bytes)
}

/// The test store key (bytes 0x40..0x5f), as the binary tests use it too.
pub(crate) fn store_key() -> Key32 {
    Key32::from_base64(support::TEST_STORE_KEY_B64).expect("store key")
}

/// A reader of a store sealed under [`store_key`].
pub(crate) fn reader(store: &Path) -> Box<dyn StorageRead> {
    support::store_reader(store)
}

pub(crate) fn config(store: &Path, keys: Vec<Key32>) -> ReceiverConfig {
    ReceiverConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(SecretString::new(API_KEY.to_string())),
        read_token: Some(SecretString::new(READ_TOKEN.to_string())),
        encryption_keys: keys,
        store: StoreSource::dir(store, StoreKeys::new(&[store_key()])),
        tls: None,
        workers: 2,
    }
}

pub(crate) fn fast_limits() -> Limits {
    Limits {
        read_timeout: Duration::from_millis(400),
        head_deadline: Duration::from_secs(1),
        body_grace: Duration::from_secs(1),
        keep_alive_idle: Duration::from_secs(1),
        ..Limits::default()
    }
}

pub(crate) fn start(store: &Path, keys: Vec<Key32>) -> Receiver {
    Receiver::start_with_limits(config(store, keys), fast_limits()).expect("receiver starts")
}

/// A plain-HTTP client (20 s per request).
pub(crate) fn client() -> fleet_http::Client {
    client_with_tls(None)
}

/// A client trusting what `tls` trusts (20 s per request).
pub(crate) fn client_with_tls(tls: Option<std::sync::Arc<fleet_http::rustls::ClientConfig>>) -> fleet_http::Client {
    fleet_http::Client::new(fleet_http::Config {
        connect_timeout: Duration::from_secs(20),
        timeout: Duration::from_secs(20),
        tls,
        user_agent: "fleet-tests".into(),
        proxy: None,
        max_idle: Duration::from_secs(30),
    })
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("answer is JSON ({e}): {}", self.body))
    }
}

pub(crate) fn post_with(
    agent: &fleet_http::Client,
    url: &str,
    path: &str,
    api_key: Option<&str>,
    body: &[u8],
) -> Answer {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(k) = api_key {
        headers.push(("X-API-Key", k));
    }
    answer(agent, "POST", &format!("{url}{path}"), &headers, fleet_http::Body::Bytes(body))
}

pub(crate) fn post(url: &str, path: &str, body: &[u8]) -> Answer {
    post_with(&client(), url, path, Some(API_KEY), body)
}

pub(crate) fn get(url: &str, path: &str, api_key: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = api_key.map(|k| ("X-API-Key", k)).into_iter().collect();
    answer(&client(), "GET", &format!("{url}{path}"), &headers, fleet_http::Body::Empty)
}

/// GET with `Authorization: Bearer TOKEN`.
pub(crate) fn get_bearer(url: &str, path: &str, token: &str) -> Answer {
    let bearer = format!("Bearer {token}");
    answer(&client(), "GET", &format!("{url}{path}"), &[("Authorization", &bearer)], fleet_http::Body::Empty)
}

/// A read with the read token.
pub(crate) fn read(url: &str, path: &str) -> Answer {
    get_bearer(url, path, READ_TOKEN)
}

/// Send one request (never resent) and read the whole answer (at most 50 MiB).
pub(crate) fn answer(
    agent: &fleet_http::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: fleet_http::Body<'_>,
) -> Answer {
    let request = fleet_http::Request { method, url, headers, body, resendable: false };
    let response = agent.send(request).expect("request completes");
    let status = response.status();
    let body = response.read_to_vec(50 * 1024 * 1024).expect("body");
    Answer { status, body: String::from_utf8_lossy(&body).into_owned() }
}

pub(crate) fn report_json(machine_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "machine_id": machine_id,
        "machine_info": {"hostname": "h"},
        "metrics": {"cpu": {"percent": 12.5}, "memory": {"percent": 40.0}, "disk": {"percent": 70.0}},
    }))
    .expect("json")
}

pub(crate) fn logs_json(machine_id: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "machine_id": machine_id,
        "logs": [
            {"timestamp": "2026-11-22T13:00:00", "level": "info", "widget_type": "ping", "message": message,
             "data": {"latency": 12.5, "packet_loss": 0, "target": "1.1.1.1"}},
            {"timestamp": "2026-11-22T13:00:10", "level": "warning", "widget_type": "wifi", "message": "weak",
             "data": {"rssi": -80}},
        ],
    }))
    .expect("json")
}

pub(crate) fn record(widget: &str, kind: SampleKind, n: u64) -> Record {
    Record {
        ts: format!("2026-11-22T13:00:{:02}.000Z", n % 60),
        widget: widget.into(),
        kind,
        level: Level::Info,
        message: format!("{widget} #{n}"),
        data: json!({"n": n}),
    }
}

pub(crate) fn batch_json(machine_id: &str, seq: u64, records: usize) -> Vec<u8> {
    let body = BatchBody {
        machine_id: machine_id.into(),
        seq,
        sent_at: "2026-11-22T13:00:00Z".into(),
        records: (0..records as u64)
            .map(|n| {
                record(
                    if n % 2 == 0 { "cpu" } else { "ping" },
                    if n % 2 == 0 { SampleKind::Metric } else { SampleKind::Log },
                    n,
                )
            })
            .collect(),
        dropped: Dropped::default(),
    };
    serde_json::to_vec(&body).expect("json")
}

pub(crate) fn sealed_batch(k: &Key32, machine_id: &str, seq: u64, records: usize) -> Vec<u8> {
    envelope::seal_v2(k, machine_id, seq, &batch_json(machine_id, seq, records)).expect("seal")
}

/// Every line of every store file parses as a JSON object, is sealed (only index fields in
/// clear) and opens; (line count per file name).
pub(crate) fn check_store_intact(store: &Path) -> Vec<(String, usize)> {
    let mut counts = Vec::new();
    let checks = reader(store).verify().expect("verify");
    for check in &checks {
        assert_eq!(check.total().bad, 0, "{}: {:?}", check.machine_id, check.problems);
    }
    for id in reader(store).machine_ids().expect("list") {
        for file in [REPORTS_FILE, WIDGET_LOGS_FILE, RECORDS_FILE] {
            let path = store.join(store::dir_name(&id)).join(file);
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            assert!(text.is_empty() || text.ends_with('\n'), "{} ends with a complete line", path.display());
            for line in text.lines() {
                let value: Value = serde_json::from_str(line).expect("stored line parses");
                assert_eq!(value["machine_id"], json!(id));
                let fields: Vec<&str> = value.as_object().expect("object").keys().map(String::as_str).collect();
                for field in &fields {
                    let allowed = fleet_receiver::seal::CLEAR_FIELDS.contains(field)
                        || ["store_kid", "nonce", "sealed"].contains(field);
                    assert!(allowed, "{field} in clear in {}", path.display());
                }
                assert!(value["sealed"].is_string(), "sealed row in {}", path.display());
            }
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
            counts.push((format!("{id}/{file}"), text.lines().count()));
        }
    }
    counts
}

pub(crate) fn stored_seqs(store_dir: &Path, machine_id: &str) -> Vec<u64> {
    reader(store_dir)
        .read_records(machine_id)
        .expect("read")
        .iter()
        .filter(|l| l["kind"] == "batch")
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect()
}

#[test]
fn v1_report_and_widget_logs_are_opened_and_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let url = rx.url();
    let body = envelope::seal_v1(&key(0), &report_json("mac-01")).expect("seal");
    let answer = post(&url, "/api/fleet/report", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["status"], "ok");
    assert_eq!(answer.json()["e2ee_verified"], true);
    let body = envelope::seal_v1(&key(0), &logs_json("mac-01", "fine")).expect("seal");
    let answer = post(&url, "/api/fleet/widget-logs", &body);
    assert_eq!((answer.status, answer.json()["logs_stored"].clone()), (200, json!(2)), "{}", answer.body);

    let reports = reader(dir.path()).read_v1("mac-01", Stream::Reports).expect("read");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["kind"], "report");
    assert_eq!(reports[0]["report"]["metrics"]["cpu"]["percent"], 12.5);
    let logs = reader(dir.path()).read_v1("mac-01", Stream::WidgetLogs).expect("read");
    assert_eq!(
        logs.iter().map(|l| l["log"]["widget_type"].clone()).collect::<Vec<_>>(),
        [json!("ping"), json!("wifi")]
    );
    assert!(logs.iter().all(|l| l["kind"] == "widget-log" && l["received_at"].is_string()));
    check_store_intact(dir.path());

    let machines = read(&url, "/api/fleet/machines");
    assert_eq!(machines.status, 200);
    let list = &machines.json()["machines"];
    assert_eq!(list[0]["machine_id"], "mac-01");
    assert_eq!(list[0]["report_count"], 1);
    assert_eq!(list[0]["latest_metrics"]["memory"]["percent"], 40.0);
    rx.shutdown();
}

#[test]
fn v2_batch_is_stored_once_even_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let first = sealed_batch(&key(0), "mac-02", 1, 3);
    let answer = post(&rx.url(), "/api/v2/batches", &first);
    assert_eq!((answer.status, answer.body.as_str()), (200, r#"{"status":"ok","stored":3}"#));
    let answer = post(&rx.url(), "/api/v2/batches", &first);
    assert_eq!((answer.status, answer.body.as_str()), (200, r#"{"status":"ok","duplicate":true}"#));
    // A fresh seal of the same (machine, seq) is a duplicate too: the key is the pair, not the bytes.
    let again = sealed_batch(&key(0), "mac-02", 1, 3);
    assert_eq!(post(&rx.url(), "/api/v2/batches", &again).json()["duplicate"], true);
    rx.shutdown();

    let rx = start(dir.path(), vec![key(0)]);
    assert_eq!(post(&rx.url(), "/api/v2/batches", &first).json()["duplicate"], true);
    let answer = post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "mac-02", 2, 0));
    assert_eq!(answer.json(), json!({"status": "ok", "stored": 0}));
    rx.shutdown();

    assert_eq!(stored_seqs(dir.path(), "mac-02"), [1, 2]);
    let lines = reader(dir.path()).read_records("mac-02").expect("read");
    let records: Vec<&serde_json::Map<String, Value>> = lines.iter().filter(|l| l["kind"] == "record").collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[2]["record"]["message"], "cpu #2");
    assert_eq!(records[2]["seq"], 1);
    assert_eq!(lines.last().map(|l| l["kid"].clone()), Some(json!(envelope::kid(&key(0)))));
    let summary = reader(dir.path()).machine("mac-02").expect("summary");
    assert_eq!((summary.batch_count, summary.record_count), (2, 3));
    assert_eq!(summary.latest_metrics, json!({"cpu": {"n": 2}}));
    assert_eq!(
        summary.widgets.iter().map(|w| (w.widget.as_str(), w.count)).collect::<Vec<_>>(),
        [("cpu", 2), ("ping", 1)]
    );
    check_store_intact(dir.path());
}

#[test]
fn rotation_opens_with_any_configured_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(1), key(0)]);
    assert_eq!(post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "m", 1, 1)).status, 200);
    assert_eq!(post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(1), "m", 2, 1)).status, 200);
    let v1 = envelope::seal_v1(&key(0), &report_json("m")).expect("seal");
    assert_eq!(post(&rx.url(), "/api/fleet/report", &v1).status, 200);
    rx.shutdown();
}

#[test]
fn wrong_or_missing_api_key_is_401_and_health_needs_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let body = envelope::seal_v1(&key(0), &report_json("m")).expect("seal");
    for api_key in [None, Some("wrong"), Some("test-api-kez"), Some("")] {
        for path in ["/api/fleet/report", "/api/fleet/widget-logs", "/api/v2/batches"] {
            let answer = post_with(&client(), &rx.url(), path, api_key, &body);
            assert_eq!(answer.status, 401, "{path} {api_key:?}");
            assert!(answer.json()["error"].is_string());
        }
        assert_eq!(get(&rx.url(), "/api/fleet/machines", api_key).status, 401);
        assert_eq!(get(&rx.url(), "/api/fleet/widget-logs?format=csv", api_key).status, 401);
        if let Some(token) = api_key.filter(|k| !k.is_empty()) {
            assert_eq!(get_bearer(&rx.url(), "/api/fleet/machines", token).status, 401, "{token}");
        }
    }
    // The read token cannot write.
    let answer = post_with(&client(), &rx.url(), "/api/fleet/report", Some(READ_TOKEN), &body);
    assert_eq!(answer.status, 401);
    let health = get(&rx.url(), "/api/health", None);
    assert_eq!((health.status, health.json()["status"].clone()), (200, json!("ok")));
    assert!(reader(dir.path()).machine_ids().expect("list").is_empty(), "nothing stored");
    rx.shutdown();
}

#[test]
fn plaintext_is_refused_with_a_key_and_accepted_in_test_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    for (path, body) in [
        ("/api/fleet/report", report_json("m")),
        ("/api/fleet/widget-logs", logs_json("m", "x")),
        ("/api/v2/batches", batch_json("m", 1, 1)),
    ] {
        let answer = post(&rx.url(), path, &body);
        assert_eq!(answer.status, 400, "{path}");
        assert!(
            answer.json()["error"].as_str().is_some_and(|e| e.starts_with("plaintext body refused")),
            "{}",
            answer.body
        );
    }
    assert!(reader(dir.path()).machine_ids().expect("list").is_empty());
    rx.shutdown();

    let plain_dir = tempfile::tempdir().expect("tempdir");
    let rx = start(plain_dir.path(), vec![]);
    let answer = post(&rx.url(), "/api/fleet/report", &report_json("m"));
    assert_eq!((answer.status, answer.json()["e2ee_verified"].clone()), (200, json!(false)));
    assert_eq!(post(&rx.url(), "/api/v2/batches", &batch_json("m", 4, 2)).json()["stored"], 2);
    assert_eq!(post(&rx.url(), "/api/v2/batches", &batch_json("m", 4, 2)).json()["duplicate"], true);
    // Test mode cannot open sealed bodies: a clear 400, not a silent store.
    let sealed = envelope::seal_v1(&key(0), &report_json("m")).expect("seal");
    let answer = post(&rx.url(), "/api/fleet/report", &sealed);
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("no encryption key"), "{}", answer.body);
    rx.shutdown();
}

pub(crate) fn flip_ciphertext(body: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut value: Value = serde_json::from_slice(body).expect("json");
    let mut raw = b64.decode(value["ciphertext"].as_str().expect("ciphertext")).expect("b64");
    raw[0] ^= 0x80;
    value["ciphertext"] = json!(b64.encode(raw));
    serde_json::to_vec(&value).expect("json")
}

#[test]
fn tampered_or_foreign_ciphertext_is_decryption_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let cases = [
        ("/api/fleet/report", flip_ciphertext(&envelope::seal_v1(&key(0), &report_json("m")).expect("seal"))),
        ("/api/fleet/report", envelope::seal_v1(&key(7), &report_json("m")).expect("seal")),
        ("/api/fleet/widget-logs", flip_ciphertext(&envelope::seal_v1(&key(0), &logs_json("m", "x")).expect("seal"))),
        ("/api/v2/batches", flip_ciphertext(&sealed_batch(&key(0), "m", 1, 1))),
        ("/api/v2/batches", sealed_batch(&key(7), "m", 1, 1)),
    ];
    for (path, body) in cases {
        let answer = post(&rx.url(), path, &body);
        assert_eq!((answer.status, answer.body.as_str()), (400, r#"{"error":"Decryption failed"}"#), "{path}");
    }
    // Replaying a v2 body under another seq or machine in the envelope fails the AAD.
    let mut moved: Value = serde_json::from_slice(&sealed_batch(&key(0), "m", 1, 1)).expect("json");
    moved["seq"] = json!(2);
    let answer = post(&rx.url(), "/api/v2/batches", &serde_json::to_vec(&moved).expect("json"));
    assert_eq!(answer.body, r#"{"error":"Decryption failed"}"#);
    assert!(reader(dir.path()).machine_ids().expect("list").is_empty());
    rx.shutdown();
}

#[test]
fn every_bad_input_gets_a_named_4xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let k = key(0);
    let seal = |plain: &[u8]| envelope::seal_v1(&k, plain).expect("seal");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let v2_mismatch = envelope::seal_v2(&k, "m", 5, &batch_json("m", 6, 1)).expect("seal");
    let v2_other_machine = envelope::seal_v2(&k, "m", 5, &batch_json("n", 5, 1)).expect("seal");
    let long_id = "x".repeat(129);
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("malformed JSON", "/api/fleet/report", b"{\"encrypted\":tr".to_vec(), "not a JSON object"),
        ("JSON array", "/api/v2/batches", b"[1,2]".to_vec(), "not a JSON object"),
        ("non-UTF-8", "/api/fleet/report", vec![0xff, 0xfe, b'{', 0x80], "not a JSON object"),
        ("deep nesting", "/api/fleet/widget-logs", deep.into_bytes(), "not a JSON object"),
        ("bad base64", "/api/fleet/report", br#"{"encrypted":true,"version":"1","nonce":"@@@@","ciphertext":"AAAA"}"#.to_vec(), "`nonce`"),
        ("short nonce", "/api/fleet/report", br#"{"encrypted":true,"version":"1","nonce":"AAAA","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#.to_vec(), "`nonce`"),
        ("nonce wrong type", "/api/fleet/report", br#"{"encrypted":true,"version":"1","nonce":12,"ciphertext":"AAAA"}"#.to_vec(), "`nonce`"),
        ("missing ciphertext", "/api/fleet/report", br#"{"encrypted":true,"version":"1","nonce":"AAECAwQFBgcICQoL"}"#.to_vec(), "`ciphertext`"),
        ("v2 at v1 endpoint", "/api/fleet/report", sealed_batch(&k, "m", 1, 0), "version"),
        ("huge seq", "/api/v2/batches", br#"{"encrypted":true,"version":"2","kid":"d1c81e9b5253ca4a","machine_id":"m","seq":123456789012345678901234567890,"nonce":"AAECAwQFBgcICQoL","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#.to_vec(), "`seq`"),
        ("string seq", "/api/v2/batches", br#"{"encrypted":true,"version":"2","kid":"d1c81e9b5253ca4a","machine_id":"m","seq":"1","nonce":"AAECAwQFBgcICQoL","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#.to_vec(), "`seq`"),
        ("v2 seq mismatch", "/api/v2/batches", v2_mismatch, "do not match"),
        ("v2 machine mismatch", "/api/v2/batches", v2_other_machine, "do not match"),
        ("v2 plaintext not a batch", "/api/v2/batches", envelope::seal_v2(&k, "m", 1, b"{\"x\":1}").expect("seal"), "not a valid batch"),
        ("report without metrics", "/api/fleet/report", seal(br#"{"machine_id":"m","machine_info":{}}"#), "`metrics`"),
        ("report metrics not object", "/api/fleet/report", seal(br#"{"machine_id":"m","machine_info":{},"metrics":[]}"#), "`metrics`"),
        ("report machine_id number", "/api/fleet/report", seal(br#"{"machine_id":7,"machine_info":{},"metrics":{}}"#), "`machine_id`"),
        ("report machine_id too long", "/api/fleet/report", seal(format!(r#"{{"machine_id":"{long_id}","machine_info":{{}},"metrics":{{}}}}"#).as_bytes()), "machine_id"),
        ("report machine_id empty", "/api/fleet/report", seal(br#"{"machine_id":"","machine_info":{},"metrics":{}}"#), "machine_id"),
        ("decrypted not JSON", "/api/fleet/report", seal(b"hello"), "decrypted payload"),
        ("logs not array", "/api/fleet/widget-logs", seal(br#"{"machine_id":"m","logs":{}}"#), "`logs`"),
        ("log entry not object", "/api/fleet/widget-logs", seal(br#"{"machine_id":"m","logs":[1]}"#), "logs[0]"),
        ("log entry missing level", "/api/fleet/widget-logs", seal(br#"{"machine_id":"m","logs":[{"timestamp":"t","widget_type":"ping","message":"","data":{}}]}"#), "`level`"),
        ("log entry missing data", "/api/fleet/widget-logs", seal(br#"{"machine_id":"m","logs":[{"timestamp":"t","level":"info","widget_type":"ping","message":""}]}"#), "`data`"),
    ];
    for (name, path, body, needle) in cases {
        let answer = post(&rx.url(), path, &body);
        assert_eq!(answer.status, 400, "{name}: {}", answer.body);
        let error = answer.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(needle), "{name}: {error:?} should mention {needle:?}");
    }
    // Protocol-level errors, sent raw.
    let raw_cases: [(&str, String, u16); 6] = [
        ("chunked body", format!("POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), 411),
        ("no length", format!("POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n\r\n"), 411),
        ("bad length", format!("POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: 1x\r\n\r\n"), 400),
        ("garbage request line", "\x00\x01 nonsense\r\n\r\n".to_string(), 400),
        ("unknown path", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 404),
        ("wrong method", "GET /api/v2/batches HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 405),
    ];
    for (name, request, status) in raw_cases {
        let (got, body) = raw_exchange(rx.local_addr(), request.as_bytes());
        assert_eq!(got, status, "{name}: {body}");
        assert!(serde_json::from_str::<Value>(&body).is_ok_and(|v| v["error"].is_string()), "{name}: {body}");
    }
    let huge_head = format!("GET /api/health HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(raw_exchange(rx.local_addr(), huge_head.as_bytes()).0, 431);
    assert!(reader(dir.path()).machine_ids().expect("list").is_empty(), "nothing stored by any bad input");
    rx.shutdown();
}

/// Send raw bytes, read the whole answer: (status, body).
pub(crate) fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = stream.write_all(request);
    read_answer(&mut stream)
}

pub(crate) fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn oversized_body_is_413_without_being_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    for path in ["/api/fleet/report", "/api/fleet/widget-logs", "/api/v2/batches"] {
        // Only the head is sent: an answer proves the receiver did not wait for the 11 MiB.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\r\n",
            11 * 1024 * 1024
        );
        let mut stream = TcpStream::connect(rx.local_addr()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(head.as_bytes()).expect("write");
        stream.write_all(&[b'x'; 1000]).expect("write");
        let (status, body) = read_answer(&mut stream);
        assert_eq!(status, 413, "{path}: {body}");
        assert!(body.contains("exceeds the limit"), "{body}");
    }
    // And a real client sending a real oversized body gets the 413 too.
    let big = vec![b' '; 10 * 1024 * 1024 + 1];
    let report = format!("{}/api/fleet/report", rx.url());
    let agent = client();
    let answer = agent
        .send(fleet_http::Request {
            method: "POST",
            url: &report,
            headers: &[("X-API-Key", API_KEY)],
            body: fleet_http::Body::Bytes(&big[..]),
            resendable: false,
        })
        .map(|r| r.status());
    // The receiver closes after its answer; the client may see the 413 or a reset while writing.
    assert!(matches!(answer, Ok(413) | Err(_)), "{answer:?}");
    let upload =
        format!("POST /__up HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\r\n", 2u64 << 30);
    assert_eq!(raw_exchange(rx.local_addr(), upload.as_bytes()).0, 413);
    assert!(reader(dir.path()).machine_ids().expect("list").is_empty());
    rx.shutdown();
}

#[test]
fn slow_client_times_out_and_others_are_still_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    // A head that never ends, and a body that never comes.
    let mut slow_head = TcpStream::connect(rx.local_addr()).expect("connect");
    slow_head.write_all(b"POST /api/v2/batches HTTP/1.1\r\nHost: x\r\n").expect("write");
    let mut slow_body = TcpStream::connect(rx.local_addr()).expect("connect");
    let head =
        format!("POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: 100\r\n\r\n{{");
    slow_body.write_all(head.as_bytes()).expect("write");
    for stream in [&mut slow_head, &mut slow_body] {
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let (status, body) = read_answer(stream);
        assert_eq!(status, 408, "{body}");
        assert!(body.contains("timed out"), "{body}");
    }
    assert_eq!(get(&rx.url(), "/api/health", None).status, 200);
    rx.shutdown();
}

#[test]
fn csv_and_json_export_with_filters_and_quoting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let tricky = "loss, then \"recovered\"\nsecond line";
    let body = envelope::seal_v1(&key(0), &logs_json("mac-a", tricky)).expect("seal");
    assert_eq!(post(&rx.url(), "/api/fleet/widget-logs", &body).status, 200);
    let body = envelope::seal_v1(&key(0), &logs_json("mac-b", "plain")).expect("seal");
    assert_eq!(post(&rx.url(), "/api/fleet/widget-logs", &body).status, 200);
    // v2 log records are exported too (metrics are not).
    assert_eq!(post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "mac-c", 1, 2)).status, 200);

    let csv = read(&rx.url(), "/api/fleet/widget-logs?format=csv&widget_type=ping&machine_id=mac-a");
    assert_eq!(csv.status, 200);
    assert_eq!(
        csv.body,
        "\"ID\",\"Serial Number\",\"Timestamp\",\"Level\",\"Widget Type\",\"Message\",\"Data\"\r\n\
         \"1\",\"mac-a\",\"2026-11-22T13:00:00\",\"info\",\"ping\",\"loss, then \"\"recovered\"\"\nsecond line\",\
         \"{\"\"latency\"\":12.5,\"\"packet_loss\"\":0,\"\"target\"\":\"\"1.1.1.1\"\"}\"\r\n"
    );
    let all = read(&rx.url(), "/api/fleet/widget-logs?format=json").json();
    assert_eq!((all["count"].clone(), all["truncated"].clone()), (json!(5), json!(false)));
    let rows = all["logs"].as_array().expect("logs");
    assert_eq!(rows[0]["message"], tricky);
    assert_eq!(rows[4]["machine_id"], "mac-c");
    assert_eq!(rows[4]["widget_type"], "ping");
    assert_eq!(rows[4]["message"], "ping #1");
    let wifi = read(&rx.url(), "/api/fleet/widget-logs?format=csv&widget_type=wifi");
    assert_eq!(wifi.body.lines().count(), 3, "header + one wifi row per v1 machine");
    assert_eq!(read(&rx.url(), "/api/fleet/widget-logs?format=xml").status, 400);
    rx.shutdown();
}

/// The demo's API key is base64 (it holds `+` and `/`); in the speedtest path a `+` is a `+`,
/// not a form-encoded space: `cargo run -- demo` got 401 from its own receiver about half the
/// time before.
#[test]
fn a_speedtest_key_in_the_path_may_hold_plus_and_slash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api_key = "a+b/c+d=";
    let mut config = config(dir.path(), vec![key(0)]);
    config.api_key = Some(SecretString::new(api_key.to_string()));
    let rx = Receiver::start_with_limits(config, fast_limits()).expect("receiver starts");
    let get = |path: &str| {
        let url = format!("{}{path}", rx.url());
        let request = fleet_http::Request {
            method: "GET",
            url: &url,
            headers: &[],
            body: fleet_http::Body::Empty,
            resendable: false,
        };
        let agent = client();
        let response = agent.send(request).expect("download");
        let status = response.status();
        (status, response.read_to_vec(10_000).expect("body").len())
    };
    assert_eq!(get(&format!("/speedtest/key/{api_key}/__down?bytes=1000")), (200, 1000), "as written");
    assert_eq!(get("/speedtest/key/a%2Bb%2Fc%2Bd%3D/__down?bytes=1000"), (200, 1000), "percent-encoded");
    assert_eq!(
        get("/speedtest/key/a b/c d=/__down?bytes=1000".replace(' ', "%20").as_str()).0,
        401,
        "spaces are not pluses"
    );
    rx.shutdown();
}

#[test]
fn speedtest_endpoints_stream_and_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let down = |path: &str, api_key: Option<&str>| {
        let headers: Vec<(&str, &str)> = api_key.map(|k| ("X-API-Key", k)).into_iter().collect();
        let url = format!("{}{path}", rx.url());
        let agent = client();
        let request = fleet_http::Request {
            method: "GET",
            url: &url,
            headers: &headers,
            body: fleet_http::Body::Empty,
            resendable: false,
        };
        let response = agent.send(request).expect("download");
        let status = response.status();
        (status, response.read_to_vec(2_000_000).expect("body").len())
    };
    for path in ["/speedtest/down?bytes=1000000", "/__down?bytes=1000000"] {
        assert_eq!(down(path, Some(API_KEY)), (200, 1_000_000), "{path}");
        assert_eq!(down(path, None).0, 401, "{path} needs the API key");
        assert_eq!(down(path, Some("wrong")).0, 401, "{path}");
    }
    // The speedtest widget cannot send headers: the key may be in the path.
    assert_eq!(down(&format!("/speedtest/key/{API_KEY}/__down?bytes=1000"), None), (200, 1000));
    assert_eq!(down("/speedtest/key/wrong/__down?bytes=1000", None).0, 401);
    let capped_url = format!("{}/__down?bytes=99999999999999", rx.url());
    let agent = client();
    let capped = agent
        .send(fleet_http::Request {
            method: "GET",
            url: &capped_url,
            headers: &[("X-API-Key", API_KEY)],
            body: fleet_http::Body::Empty,
            resendable: false,
        })
        .expect("download");
    assert_eq!(capped.header("content-length"), Some("1073741824"));
    drop(capped);
    assert_eq!(get(&rx.url(), "/__down?bytes=-1", Some(API_KEY)).status, 400);
    for path in ["/speedtest/up", "/__up", &format!("/speedtest/key/{API_KEY}/__up")] {
        let upload = vec![7u8; 3_000_000];
        let api_key = if path.contains("/key/") { None } else { Some(API_KEY) };
        let answer = post_with(&client(), &rx.url(), path, api_key, &upload);
        assert_eq!(answer.json(), json!({"status": "ok", "bytes": 3_000_000}), "{path}");
    }
    assert_eq!(post_with(&client(), &rx.url(), "/__up", None, b"x").status, 401);
    rx.shutdown();
}

#[test]
fn concurrent_batches_for_one_machine_never_interleave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), vec![key(0)]);
    config.workers = 4;
    let rx = Receiver::start_with_limits(config, fast_limits()).expect("start");
    let url = rx.url();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let url = url.clone();
            scope.spawn(move || {
                let agent = client();
                for seq in 0..20u64 {
                    // Threads overlap on seqs, so many requests are duplicates racing each other.
                    let seq = (seq + t * 10) % 40;
                    let body = sealed_batch(&key(0), "busy", seq, 30);
                    let answer = post_with(&agent, &url, "/api/v2/batches", Some(API_KEY), &body);
                    assert_eq!(answer.status, 200, "{}", answer.body);
                }
            });
        }
    });
    rx.shutdown();
    let mut seqs = stored_seqs(dir.path(), "busy");
    let stored = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), stored, "no seq stored twice");
    let lines = reader(dir.path()).read_records("busy").expect("read");
    assert_eq!(lines.len(), stored * 31);
    // Each batch's 30 record lines come right before its commit line.
    for group in lines.chunks(31) {
        let seq = &group[30]["seq"];
        assert!(group[..30].iter().enumerate().all(|(i, l)| &l["seq"] == seq && l["index"] == i), "interleaved");
    }
    check_store_intact(dir.path());
}

#[test]
fn torn_tails_from_a_crash_are_cut_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    assert_eq!(post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "m", 1, 2)).status, 200);
    assert_eq!(
        post(&rx.url(), "/api/fleet/report", &envelope::seal_v1(&key(0), &report_json("m")).expect("seal")).status,
        200
    );
    rx.shutdown();
    // Simulate a kill -9 in the middle of storing seq 2 (record lines without their commit
    // line, the last one torn) and of a report.
    let machine = dir.path().join("m");
    let mut records = std::fs::OpenOptions::new().append(true).open(machine.join(RECORDS_FILE)).expect("open");
    let kid = fleet_receiver::seal::store_kid(&store_key());
    let torn = format!(
        "{{\"received_at\":\"x\",\"machine_id\":\"m\",\"kind\":\"record\",\"seq\":2,\"index\":0,\"store_kid\":\"{kid}\",\"nonce\":\"AAAAAAAAAAAAAAAA\",\"sealed\":\"AAAA\"}}\n{{\"recei"
    );
    records.write_all(torn.as_bytes()).expect("write");
    let mut reports = std::fs::OpenOptions::new().append(true).open(machine.join(REPORTS_FILE)).expect("open");
    reports.write_all(b"{\"received_at\":\"x\",\"mach").expect("write");

    let rx = start(dir.path(), vec![key(0)]);
    check_store_intact(dir.path());
    assert_eq!(post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "m", 2, 2)).json()["stored"], 2);
    assert_eq!(post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "m", 1, 2)).json()["duplicate"], true);
    rx.shutdown();
    let lines = reader(dir.path()).read_records("m").expect("read");
    assert_eq!(lines.iter().filter(|l| l["kind"] == "record").count(), 4);
    assert_eq!(stored_seqs(dir.path(), "m"), [1, 2]);
    assert_eq!(reader(dir.path()).read_v1("m", Stream::Reports).expect("read").len(), 1);
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut body = seed.to_vec();
    for _ in 0..=rng.index(4) {
        match rng.index(6) {
            0 if !body.is_empty() => {
                let i = rng.index(body.len());
                body[i] ^= 1 << rng.index(8);
            }
            1 if !body.is_empty() => {
                let cut = rng.index(body.len());
                body.truncate(cut);
            }
            2 => {
                let i = rng.index(body.len() + 1);
                let junk: Vec<u8> = (0..rng.index(16)).map(|_| rng.next() as u8).collect();
                body.splice(i..i, junk);
            }
            3 if !body.is_empty() => {
                let i = rng.index(body.len());
                let j = i + rng.index(body.len() - i);
                body.drain(i..j);
            }
            4 => {
                let i = rng.index(body.len() + 1);
                let token: &[u8] =
                    [&b"null"[..], b"1e999", b"-1", b"\"\\u0000\"", b"[[[[", b"{}", b"\xff", b"99999999999999999999"]
                        [rng.index(8)];
                body.splice(i..i, token.iter().copied());
            }
            _ => body = (0..rng.index(200)).map(|_| rng.next() as u8).collect(),
        }
    }
    body
}

#[test]
fn fuzzed_bodies_never_crash_it_or_damage_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let url = rx.url();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("/api/fleet/report", envelope::seal_v1(&key(0), &report_json("fz")).expect("seal")),
        ("/api/fleet/widget-logs", envelope::seal_v1(&key(0), &logs_json("fz", "m")).expect("seal")),
        ("/api/v2/batches", sealed_batch(&key(0), "fz", 1, 3)),
        ("/api/fleet/report", report_json("fz")),
        ("/api/v2/batches", batch_json("fz", 9, 1)),
    ];
    for (path, body) in &seeds[..3] {
        assert_eq!(post(&url, path, body).status, 200);
    }
    let mut expected: std::collections::BTreeMap<String, usize> = check_store_intact(dir.path()).into_iter().collect();
    let mut rng = Rng::seeded(0x5eed_f1ee_7a6e_0004);
    let agent = client();
    let started = std::time::Instant::now();
    let mut sent = 0;
    while sent < 2000 && started.elapsed() < Duration::from_secs(10) {
        let (seed_path, seed) = &seeds[rng.index(seeds.len())];
        // Mostly the seed's own endpoint, sometimes another one.
        let path = if rng.index(4) == 0 { seeds[rng.index(3)].0 } else { seed_path };
        let body = mutate(&mut rng, seed);
        let answer = post_with(&agent, &url, path, Some(API_KEY), &body);
        match answer.status {
            // v1 has no sequence numbers: a mutation that leaves the sealed body valid (say,
            // whitespace between tokens) is a replay the Atlas protocol stores again.
            200 if path == "/api/fleet/report" => {
                assert_eq!(answer.json()["e2ee_verified"], true, "{}", answer.body);
                *expected.entry(format!("fz/{REPORTS_FILE}")).or_default() += 1;
            }
            200 if path == "/api/fleet/widget-logs" => {
                assert_eq!(answer.json()["e2ee_verified"], true, "{}", answer.body);
                *expected.entry(format!("fz/{WIDGET_LOGS_FILE}")).or_default() += 2;
            }
            200 => assert_eq!(answer.json()["duplicate"], true, "only a replay may pass: {}", answer.body),
            400 | 411 | 413 => assert!(answer.json()["error"].is_string(), "{}", answer.body),
            other => panic!("unexpected status {other}: {}", answer.body),
        }
        sent += 1;
    }
    assert!(sent >= 500, "sent only {sent} bodies");
    assert_eq!(get(&url, "/api/health", None).status, 200);
    rx.shutdown();
    let after: std::collections::BTreeMap<String, usize> = check_store_intact(dir.path()).into_iter().collect();
    assert_eq!(after, expected, "stored files hold exactly what was acknowledged");
}

#[test]
fn https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("certificate");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    let mut config = config(&dir.path().join("store"), vec![key(0)]);
    config.tls = Some((cert_path, key_path));
    let rx = Receiver::start_with_limits(config, fast_limits()).expect("start");
    assert!(rx.url().starts_with("https://127.0.0.1:"), "{}", rx.url());

    let mut roots = fleet_http::rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("a usable root");
    let tls = fleet_http::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        fleet_http::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let agent = client_with_tls(Some(std::sync::Arc::new(tls)));
    let answer = post_with(&agent, &rx.url(), "/api/v2/batches", Some(API_KEY), &sealed_batch(&key(0), "tls", 1, 2));
    assert_eq!((answer.status, answer.json()), (200, json!({"status": "ok", "stored": 2})));
    // A client that does not trust the certificate cannot talk to it.
    let provider = std::sync::Arc::new(fleet_http::rustls::crypto::ring::default_provider());
    let mozilla = fleet_http::mozilla_roots_config(provider).expect("config");
    let health = format!("{}/api/health", rx.url());
    let request = fleet_http::Request {
        method: "GET",
        url: &health,
        headers: &[],
        body: fleet_http::Body::Empty,
        resendable: false,
    };
    assert!(client_with_tls(Some(std::sync::Arc::new(mozilla))).send(request).is_err());
    rx.shutdown();
    assert_eq!(stored_seqs(&dir.path().join("store"), "tls"), [1]);
}

#[test]
fn the_real_binary_listens_stores_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let mut child = support::agent()
        .args(support::receiver_args(&store_dir, "127.0.0.1:0", API_KEY, &[support::TEST_KEY_B64]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn receive");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listening line");
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let answer = post(url, "/api/v2/batches", &sealed_batch(&key(0), "bin", 1, 1));
    assert_eq!(answer.json(), json!({"status": "ok", "stored": 1}));
    let answer = post(url, "/api/fleet/report", &envelope::seal_v1(&key(0), &report_json("bin")).expect("seal"));
    assert_eq!(answer.status, 200);

    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest of stdout");
    assert_eq!(rest, "", "exactly one line on stdout");
    assert_eq!(stored_seqs(&store_dir, "bin"), [1]);
}

/// Start the real binary on `store_dir`; the child and its URL.
fn spawn_binary(store_dir: &Path) -> (std::process::Child, String) {
    let mut child = support::agent()
        .args(support::receiver_args(store_dir, "127.0.0.1:0", API_KEY, &[]))
        .arg("-q")
        .env("FLEET_ENCRYPTION_KEY", support::TEST_KEY_B64)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn receive");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let url = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
    (child, url)
}

#[test]
fn kill_9_while_storing_loses_no_acked_batch_and_stores_none_twice() {
    const BATCHES: u64 = 60;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, url) = spawn_binary(dir.path());
    let (acks_tx, acks_rx) = std::sync::mpsc::channel();
    let poster = std::thread::spawn(move || {
        let agent = client();
        for seq in 0..BATCHES {
            let body = sealed_batch(&key(0), "crash", seq, 5);
            let target = format!("{url}/api/v2/batches");
            let Ok(response) = agent.send(fleet_http::Request {
                method: "POST",
                url: &target,
                headers: &[("X-API-Key", API_KEY)],
                body: fleet_http::Body::Bytes(&body[..]),
                resendable: false,
            }) else {
                return;
            };
            if response.status() == 200 && response.read_to_vec(1 << 20).is_ok() {
                let _ = acks_tx.send(seq);
            }
        }
    });
    // Kill -9 once a few batches are acknowledged, while more are in flight.
    let mut acked = Vec::new();
    while acked.len() < 10 {
        acked.push(acks_rx.recv_timeout(Duration::from_secs(20)).expect("acks arrive"));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    poster.join().expect("poster ends");
    acked.extend(acks_rx.try_iter());

    // The restarted receiver gets everything again, as a sender that lost its answers would send.
    let (mut child, url) = spawn_binary(dir.path());
    for seq in 0..BATCHES {
        let answer = post(&url, "/api/v2/batches", &sealed_batch(&key(0), "crash", seq, 5));
        assert_eq!(answer.status, 200, "{}", answer.body);
        if acked.contains(&seq) {
            assert_eq!(answer.json()["duplicate"], true, "acked seq {seq} must already be stored");
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert_eq!(stored_seqs(dir.path(), "crash"), (0..BATCHES).collect::<Vec<_>>());
    let lines = reader(dir.path()).read_records("crash").expect("read");
    assert_eq!(lines.len() as u64, BATCHES * 6, "5 records + 1 commit line per batch, none twice");
    check_store_intact(dir.path());
}
