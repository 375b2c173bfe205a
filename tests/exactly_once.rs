//! Exactly-once delivery of v2 batches under the faults of issue 11: an answer lost after the
//! receiver stored the batch, followed by new records and a key change (or no key at all), and
//! a seq-space collision (`409`). The sender runs in this process against a real receiver
//! process, through a proxy that forwards a request and drops its answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_agent::config::Config;
use fleet_agent::sender::{self, Sender};
use fleet_agent::spool::Spool;
use fleet_wire::record::Record;
use serde_json::{json, Value};

use crate::support::{agent_config, spool_unacked, start_receiver, stored_records, TEST_KEY_B64};

const OTHER_KEY_B64: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const MACHINE: &str = "test-machine";

/// One HTTP request read off a stream: head (with the blank line) and body.
fn read_request(stream: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// A proxy to `upstream` (host:port) that forwards every request, waits for the answer, and
/// then closes the client's connection WITHOUT the answer: the server stored the batch, the
/// sender never learns it.
fn answer_dropping_proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some((head, body)) = read_request(&stream) else { continue };
            let head = head.replace("Connection: keep-alive", "Connection: close");
            if let Ok(mut up) = TcpStream::connect(&upstream) {
                let _ = up.write_all(head.as_bytes()).and_then(|()| up.write_all(&body));
                let _ = up.set_read_timeout(Some(Duration::from_secs(5)));
                let mut answer = [0u8; 4096];
                let _ = up.read(&mut answer);
            }
            drop(stream);
        }
    });
    url
}

fn records(from: usize, count: usize) -> Vec<Record> {
    (from..from + count)
        .map(|i| Record {
            ts: format!("2026-11-22T13:00:{:02}.{:03}Z", i / 1000, i % 1000),
            widget: format!("w{i}"),
            kind: fleet_widgets::SampleKind::Log,
            level: fleet_widgets::Level::Info,
            message: format!("record {i}"),
            data: json!({ "i": i }),
        })
        .collect()
}

fn load(dir: &Path, name: &str, url: &str, key: Option<&str>) -> Config {
    let path = agent_config(dir, name, url, key, "v2", "");
    Config::load(Some(&path)).unwrap_or_else(|e| panic!("config: {}", e.len()))
}

/// Push until `done` (or 10 s).
fn push_until(sender: &mut dyn Sender, spool: &mut Spool, mut done: impl FnMut(&mut Spool) -> bool) {
    let start = Instant::now();
    while !done(spool) && start.elapsed() < Duration::from_secs(10) {
        sender.push(spool, Instant::now() + Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every stored record's `message`, each once (panics on a duplicate).
fn stored_messages(store: &Path) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for line in stored_records(store, MACHINE) {
        let message = line["record"]["message"].as_str().unwrap_or("").to_string();
        assert!(seen.insert(message.clone()), "stored twice: {message}");
    }
    seen.into_iter().collect()
}

fn expected_messages(count: usize) -> Vec<String> {
    let mut all: Vec<String> = (0..count).map(|i| format!("record {i}")).collect();
    all.sort();
    all
}

/// The answer to the first batch is lost after the receiver stored it; more records arrive;
/// the retry happens under `second_key`. Before the fix the retry carried every record then in
/// the spool under the old seq, the receiver answered "duplicate" and the new ones were acked
/// unsent (status showed them delivered).
fn lost_answer_then_new_records(first_key: Option<&str>, second_key: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let keys: Vec<&str> = [first_key, second_key].into_iter().flatten().collect();
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &keys);
    let proxy = answer_dropping_proxy(url.trim_start_matches("http://").to_string());

    let first = load(dir.path(), "first.json", &proxy, first_key);
    let mut spool = Spool::open(&first.spool).expect("spool");
    let spool_dir = first.spool.dir.clone();
    spool.append(&records(0, 5)).expect("append");
    let mut sender = sender::build(&first, &proxy, spool_dir.clone()).expect("sender");
    sender.push(&mut spool, Instant::now() + Duration::from_secs(2));
    assert_eq!(stored_messages(&store).len(), 5, "the receiver stored the first batch");
    assert_eq!(spool_unacked(&spool_dir), 5, "the answer was lost: nothing acked");
    drop(sender);

    spool.append(&records(5, 7)).expect("append");
    let second = load(dir.path(), "second.json", &url, second_key);
    let mut sender = sender::build(&second, &url, spool_dir.clone()).expect("sender");
    push_until(sender.as_mut(), &mut spool, |spool| spool.stats().unacked_records == 0);

    assert_eq!(stored_messages(&store), expected_messages(12), "every record stored exactly once");
    assert_eq!(spool.stats().unacked_records, 0);
    assert_eq!(sender.state().sent_records, 12, "delivered = what the receiver stored");
}

#[test]
fn lost_answer_new_records_and_key_change_lose_nothing() {
    lost_answer_then_new_records(Some(TEST_KEY_B64), Some(OTHER_KEY_B64));
}

#[test]
fn lost_answer_new_records_without_a_key_lose_nothing() {
    lost_answer_then_new_records(None, None);
}

/// A one-thread server answering each request with the next of `answers` (the last repeats),
/// keeping every request body.
fn scripted_server(answers: Vec<&'static str>) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let Some((_, body)) = read_request(&stream) else { continue };
            kept.lock().expect("lock").push(body);
            let _ = stream.write_all(answers[n.min(answers.len() - 1)].as_bytes());
        }
    });
    (url, bodies)
}

const CONFLICT: &str = "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 75\r\nConnection: close\r\n\r\n{\"error\":\"seq 1 of machine test-machine was stored with different records\"}";
const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"ok\"}";

#[test]
fn conflict_keeps_the_records_and_resends_them_under_a_fresh_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, bodies) = scripted_server(vec![CONFLICT, OK]);
    let config = load(dir.path(), "c.json", &url, None);
    let mut spool = Spool::open(&config.spool).expect("spool");
    spool.append(&records(0, 4)).expect("append");
    let mut sender = sender::build(&config, &url, config.spool.dir.clone()).expect("sender");
    push_until(sender.as_mut(), &mut spool, |spool| spool.stats().unacked_records == 0);
    let bodies = bodies.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 2, "one 409, then the resend");
    let parsed: Vec<Value> = bodies.iter().map(|b| serde_json::from_slice(b).expect("json body")).collect();
    let (first, second) = (&parsed[0], &parsed[1]);
    assert_eq!(first["records"], second["records"], "the same records");
    assert_ne!(first["seq"], second["seq"], "under a new seq");
    assert!(second["seq"].as_u64() > first["seq"].as_u64(), "a fresh range further on");
    assert_eq!(spool.stats().unacked_records, 0);
    let state = sender.state();
    assert_eq!(state.sent_records, 4);
    assert_eq!(state.seq_collisions, 1);
    assert_eq!(state.rejected, 0, "a collision is not a rejection");
    let error = state.last_error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(error.contains("machine_id \"test-machine\"") && error.contains("409"), "{error}");
    assert!(state.next_seq > second["seq"].as_u64().unwrap_or(u64::MAX));
}

/// Two agents report under one machine id with the same seq numbers (a cloned disk image with
/// its sender state): the receiver answers the second one's seq with 409 instead of
/// "duplicate" (which would have made it delete its records unsent), and that agent moves to a
/// fresh seq range. Every record of both is stored exactly once.
#[test]
fn cloned_agents_collide_and_both_deliver_everything_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]);
    let mut agents = Vec::new();
    for (name, from, count) in [("a", 0, 3), ("b", 3, 4)] {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(sub.join("spool")).expect("mkdir");
        // The clone: both start from the same sender state (an older release's sender.json,
        // which the spool migrates into state.bin).
        std::fs::write(sub.join("spool").join("sender.json"), r#"{"next_seq":1000}"#).expect("state");
        let config = load(&sub, "c.json", &url, Some(TEST_KEY_B64));
        let mut spool = Spool::open(&config.spool).expect("spool");
        spool.append(&records(from, count)).expect("append");
        let sender = sender::build(&config, &url, config.spool.dir.clone()).expect("sender");
        agents.push((sender, spool));
    }
    for (sender, spool) in agents.iter_mut() {
        push_until(sender.as_mut(), spool, |spool| spool.stats().unacked_records == 0);
    }
    assert_eq!(stored_messages(&store), expected_messages(7), "both agents' records, each once");
    let (a, b) = (agents[0].0.state(), agents[1].0.state());
    assert_eq!((a.sent_records, b.sent_records), (3, 4));
    assert_eq!((a.seq_collisions, b.seq_collisions), (0, 1));
    let error = b.last_error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(error.contains("\"test-machine\"") && error.contains("seq 1000"), "{error}");
}

#[test]
fn a_second_receiver_on_one_store_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (first, _url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[]);
    let output = crate::support::run(&[
        "receive",
        "--listen",
        "127.0.0.1:0",
        "--store",
        crate::support::s(&store),
        "--store-plaintext",
    ]);
    assert_ne!(output.status.code(), Some(0));
    let stderr = crate::support::stderr(&output);
    assert!(stderr.contains(&store.display().to_string()), "names the store: {stderr}");
    assert!(stderr.contains(&format!("process {}", first.child.id())), "names the holder's pid: {stderr}");
}

fn status_json(config: &Path) -> (Option<i32>, Value) {
    let out = crate::support::run(&["status", "--config", crate::support::s(config), "--json"]);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", crate::support::stdout(&out)));
    (out.status.code(), json)
}

fn assert_accounted(status: &Value) {
    let r = &status["records"];
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("records.{k} missing: {status}"));
    assert_eq!(
        n("accepted"),
        n("delivered") + n("superseded") + n("dropped") + n("rejected") + n("backlog"),
        "accounting: {r}"
    );
}

/// A receiver started without its key refuses sealed batches (400): they are kept in
/// rejected/ and counted; once the receiver has its key, `spool requeue-rejected` puts them
/// back and they are delivered, each once. `status --json` tells the truth at every step.
#[test]
fn refused_batches_are_kept_requeued_and_delivered_once_with_honest_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (mut keyless, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[]);
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "v2", "");
    let spool = dir.path().join("spool");
    let mut agent = crate::support::start_agent(&config, &dir.path().join("agent-1.log"));
    let rejected = || fleet_agent::spool::rejected::records(&spool).unwrap_or(0);
    assert!(crate::support::wait_for(Duration::from_secs(10), || rejected() >= 6), "batches refused and kept");
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    keyless.kill9();
    let (code, status) = status_json(&config);
    assert_accounted(&status);
    assert_eq!(status["records"]["delivered"], 0, "{status}");
    assert!(status["records"]["rejected"].as_u64() >= Some(6), "{status}");
    assert_eq!(code, Some(0), "a refusal is not a failing sender: {status}");
    assert!(stored_records(&store, MACHINE).is_empty());

    let out = crate::support::run(&["spool", "requeue-rejected", "--config", crate::support::s(&config)]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::support::stderr(&out));
    let (_, status) = status_json(&config);
    assert_accounted(&status);
    assert_eq!(status["records"]["rejected"], 0, "{status}");

    let port = url.rsplit(':').next().expect("port");
    let (_receiver, _) = start_receiver(&store, &format!("127.0.0.1:{port}"), "test-api-key", &[TEST_KEY_B64]);
    let mut agent = crate::support::start_agent(&config, &dir.path().join("agent-2.log"));
    // Every record accepted before this start reaches the receiver (the spool's durable view
    // lags by one batch while it runs: an ack is carried by the next batch's state write).
    let before = status["records"]["accepted"].as_u64().expect("accepted");
    let arrived = || stored_records(&store, MACHINE).len() as u64 >= before;
    assert!(crate::support::wait_for(Duration::from_secs(15), arrived));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let (code, status) = status_json(&config);
    assert_accounted(&status);
    let stored = stored_messages_of(&store);
    assert_eq!(status["records"]["delivered"].as_u64(), Some(stored), "delivered = stored: {status}");
    assert_eq!(status["records"]["accepted"].as_u64(), Some(stored), "everything delivered: {status}");
    assert_eq!((status["records"]["dropped"].as_u64(), status["records"]["backlog"].as_u64()), (Some(0), Some(0)));
    assert_eq!(code, Some(0), "{status}");
    assert_eq!(status["health"]["verdict"], "ok");
    let kid = fleet_wire::envelope::kid(&fleet_wire::keys::Key32::from_base64(TEST_KEY_B64).expect("key"));
    assert_eq!(status["encryption"]["kid"], kid.as_str());
    assert_eq!(status["encryption"]["source"], "config");
    assert_eq!(status["encryption"]["kid_in_use"], kid.as_str());
}

/// Records stored for MACHINE, each once (panics on a duplicate).
fn stored_messages_of(store: &Path) -> u64 {
    let records = stored_records(store, MACHINE);
    crate::sender::unique_records(&records).len() as u64
}

#[test]
fn status_exits_3_while_the_sender_fails_and_shows_the_spool_without_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let config = agent_config(dir.path(), "c.json", &format!("http://127.0.0.1:{port}"), Some(TEST_KEY_B64), "v2", "");
    let spool = dir.path().join("spool");
    let mut agent = crate::support::start_agent(&config, &dir.path().join("agent.log"));
    assert!(crate::support::wait_for(Duration::from_secs(10), || spool_unacked(&spool) >= 9));
    let (code, status) = status_json(&config);
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    assert_eq!(code, Some(3), "{status}");
    assert_eq!(status["health"]["verdict"], "failing");
    assert_eq!(status["sender"]["failing"], true);
    assert!(
        status["sender"]["last_error"]["message"].as_str().is_some_and(|m| m.contains(&port.to_string())),
        "{status}"
    );
    assert_accounted(&status);
    let widgets = status["spool"]["widgets"].as_array().expect("widgets");
    let total: u64 = widgets.iter().map(|w| w["records"].as_u64().unwrap_or(0)).sum();
    let (_, after) = status_json(&config);
    assert_eq!(Some(total), status["records"]["backlog"].as_u64().or(after["records"]["backlog"].as_u64()), "{status}");
    assert!(widgets.iter().all(|w| w.get("data").is_none()), "counts and times only");
    let text = crate::support::run(&["status", "--config", crate::support::s(&config)]);
    let text = crate::support::stdout(&text);
    assert!(text.starts_with("health:      FAILING"), "{text}");
    assert!(!text.contains("\"data\""), "no record contents in status: {text}");
    let shown = crate::support::run(&["spool", "show", "--limit", "2", "--config", crate::support::s(&config)]);
    assert_eq!(shown.status.code(), Some(0));
    let lines: Vec<Record> = crate::support::stdout(&shown)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "decrypted records on request");
}

/// kill -9 of the agent at random moments while it sends: afterwards every record the spool
/// accepted is stored exactly once, and `status` says so (delivered == stored == accepted).
#[test]
fn kill_9_loop_keeps_the_record_accounting_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]);
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "v2", "");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..15 {
        let mut agent = crate::support::start_agent(&config, &dir.path().join(format!("agent-{i}.log")));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(100 + seed % 400));
        agent.kill9();
        let (_, status) = status_json(&config);
        assert_accounted(&status);
    }
    let spool = dir.path().join("spool");
    let final_log = dir.path().join("final.log");
    let mut agent = crate::support::start_agent(&config, &final_log);
    let started = || std::fs::read_to_string(&final_log).unwrap_or_default().contains("started:");
    assert!(crate::support::wait_for(Duration::from_secs(10), started), "agent starts");
    assert!(crate::support::wait_for(Duration::from_secs(15), || spool_unacked(&spool) <= 3));
    assert_eq!(agent.terminate(Duration::from_secs(6)).code(), Some(0));
    let (code, status) = status_json(&config);
    assert_accounted(&status);
    let stored = stored_messages_of(&store);
    assert_eq!(status["records"]["delivered"].as_u64(), Some(stored), "{status}");
    assert_eq!(status["records"]["accepted"].as_u64(), Some(stored), "{status}");
    assert_eq!(status["records"]["backlog"].as_u64(), Some(0), "{status}");
    assert_eq!(code, Some(0), "{status}");
}

/// POST a plaintext batch to a keyless receiver; the status and body of the answer.
fn post_batch(url: &str, seq: u64, messages: &[&str]) -> (u16, Value) {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| json!({"ts":"2026-11-22T13:00:00.000Z","widget":"ping","kind":"log","level":"info","message":m,"data":null}))
        .collect();
    let body = json!({"machine_id":"Mac-01","seq":seq,"sent_at":"2026-11-22T13:00:00Z","records":records,"dropped":{"count":0}})
        .to_string();
    let mut stream = TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
    let request = format!(
        "POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-API-Key: test-api-key\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = answer.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, json)
}

#[test]
fn the_receiver_answers_409_naming_machine_and_seq_for_a_reused_seq_with_other_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[]);
    assert_eq!(post_batch(&url, 5, &["a", "b"]).0, 200);
    let (status, body) = post_batch(&url, 5, &["a", "b"]);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "same records: duplicate");
    let (status, body) = post_batch(&url, 5, &["a", "b", "c"]);
    assert_eq!(status, 409, "{body}");
    assert_eq!((&body["machine_id"], &body["seq"]), (&json!("Mac-01"), &json!(5)), "{body}");
    let error = body["error"].as_str().unwrap_or("");
    assert!(error.contains("Mac-01") && error.contains("seq 5"), "{error}");
    let stored = crate::support::store_reader(&store).read_records("Mac-01").expect("read");
    assert_eq!(stored.len(), 3, "two records and one commit line: nothing more stored");
    // `mac-01` is another machine: its seq 5 is its own.
    let lower = crate::support::store_reader(&store).read_records("mac-01").expect("read");
    assert!(lower.is_empty());
}

/// A send costs one durable state write (the in-flight batch in `state.bin`); bookkeeping is
/// written lazily, so after a crash `next_seq` may be one that was already used. The
/// acknowledged in-flight batch is the record of the last seq: the next batch never reuses it
/// (before this design `sender.json` was written durably before every ack). The stale state
/// is injected as an older release's `sender.json`, which the state record takes over (its
/// in-flight batch kept). Oracle: no 409 collision, the new batch's seq is past the old one,
/// every record stored once.
#[test]
fn a_lagging_sender_json_never_reuses_an_acknowledged_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]);
    let config = load(dir.path(), "c.json", &url, Some(TEST_KEY_B64));
    let spool_dir = config.spool.dir.clone();
    let mut spool = Spool::open(&config.spool).expect("spool");
    spool.append(&records(0, 3)).expect("append");
    let mut sender = sender::build(&config, &url, spool_dir.clone()).expect("sender");
    push_until(sender.as_mut(), &mut spool, |spool| spool.stats().unacked_records == 0);
    let first = stored_inflight(&spool_dir);
    let used = first["seq"].as_u64().expect("seq");
    drop(sender);
    // The crash: sender.json never got the advanced next_seq.
    std::fs::write(spool_dir.join("sender.json"), format!(r#"{{"next_seq":{used}}}"#)).expect("stale state");

    spool.append(&records(3, 2)).expect("append");
    let mut sender = sender::build(&config, &url, spool_dir.clone()).expect("sender");
    push_until(sender.as_mut(), &mut spool, |spool| spool.stats().unacked_records == 0);
    let second = stored_inflight(&spool_dir);
    assert!(second["seq"].as_u64() > Some(used), "a fresh seq: {} after {used}", second["seq"]);
    assert_eq!(sender.state().seq_collisions, 0, "no seq was reused");
    assert_eq!(stored_messages(&store), expected_messages(5), "every record stored exactly once");
}

/// The in-flight batch the spool's state record holds (`null` if none).
fn stored_inflight(spool_dir: &std::path::Path) -> Value {
    let state = fleet_agent::spool::load_state(spool_dir).expect("state").expect("stored");
    state.sender.map_or(Value::Null, |sender| sender["inflight"].clone())
}
