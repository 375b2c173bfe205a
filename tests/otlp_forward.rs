//! OTLP out, the forwarding (`docs/otlp-forwarding.md`): the forwarder against a loopback
//! stand-in collector that records what it receives and fails on demand. First the forwarder
//! alone over an in-memory store (seeded fault schedules), then the real `fleet-agent receive
//! --forward-otlp`: every committed record arrives at least once, a collector outage neither
//! slows ingest nor loses anything, a restarted receiver resumes from its cursor, and nothing
//! is forwarded before its batch is committed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use fleet_agent::otlp::forwarder::{ForwardSettings, Forwarder};
use fleet_agent::otlp::source::{Committed, PendingSource, Stream};

/// What the stand-in collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 200 `{}`.
    Accept,
    /// This status (503, 429 with Retry-After 0, 400, …).
    Status(u16),
    /// Read the request, close without answering.
    Hang,
    /// Per request, at random (seeded): `percent` % fail (half 503, half dropped), the rest 200.
    Flaky { percent: u8 },
}

/// A request the collector accepted.
#[derive(Debug, Clone)]
struct Received {
    /// `/v1/metrics` or `/v1/logs`.
    pub path: String,
    /// The body.
    pub body: Value,
}

type Check = Box<dyn Fn(&str, &Value) + Send + Sync>;

struct Shared {
    mode: Mutex<Mode>,
    accepted: Mutex<Vec<Received>>,
    attempts: Mutex<usize>,
    rng: Mutex<u64>,
    headers: Mutex<Vec<String>>,
    check: Mutex<Option<Check>>,
    violations: Mutex<Vec<String>>,
    /// Open connections, closed by `shut_down` (a real outage drops kept-alive ones too).
    connections: Mutex<Vec<TcpStream>>,
}

/// A loopback OTLP/HTTP stand-in: HTTP/1.1 keep-alive, `Content-Length` bodies.
struct Collector {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<String>, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        if header == "\r\n" {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        headers.push(header.trim_end().to_string());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, headers, body))
}

fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(clone) = stream.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    let mut writer = stream;
    while let Some((path, headers, body)) = read_request(&mut reader) {
        *shared.attempts.lock().expect("lock") += 1;
        let mode = *shared.mode.lock().expect("lock");
        let mode = match mode {
            Mode::Flaky { percent } => {
                let mut rng = shared.rng.lock().expect("lock");
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                let roll = (*rng % 100) as u8;
                if roll < percent / 2 {
                    Mode::Status(503)
                } else if roll < percent {
                    Mode::Hang
                } else {
                    Mode::Accept
                }
            }
            other => other,
        };
        let status = match mode {
            Mode::Hang => break,
            Mode::Accept => 200,
            Mode::Status(s) => s,
            Mode::Flaky { .. } => 500,
        };
        if status == 200 {
            let Ok(body) = serde_json::from_slice::<Value>(&body) else { break };
            if let Some(check) = shared.check.lock().expect("lock").as_ref() {
                check(&path, &body);
            }
            shared.headers.lock().expect("lock").extend(headers);
            shared.accepted.lock().expect("lock").push(Received { path, body });
        }
        let retry = if status == 429 { "Retry-After: 0\r\n" } else { "" };
        let answer =
            format!("HTTP/1.1 {status} X\r\n{retry}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}");
        if writer.write_all(answer.as_bytes()).is_err() {
            break;
        }
    }
    // Closed for real: `shut_down` keeps a clone of every connection.
    let _ = writer.shutdown(std::net::Shutdown::Both);
}

impl Collector {
    /// Start on a free loopback port.
    fn start(mode: Mode, seed: u64) -> Collector {
        Collector::start_at("127.0.0.1:0".parse().expect("addr"), mode, seed)
    }

    /// Start on `addr` (a restart on the same port).
    fn start_at(addr: SocketAddr, mode: Mode, seed: u64) -> Collector {
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            accepted: Mutex::new(Vec::new()),
            attempts: Mutex::new(0),
            rng: Mutex::new(seed | 1),
            headers: Mutex::new(Vec::new()),
            check: Mutex::new(None),
            violations: Mutex::new(Vec::new()),
            connections: Mutex::new(Vec::new()),
        });
        Collector::start_shared(addr, shared)
    }

    fn start_shared(addr: SocketAddr, shared: Arc<Shared>) -> Collector {
        let listener = TcpListener::bind(addr).expect("collector binds");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_stop, thread_shared) = (stop.clone(), shared.clone());
        let thread = std::thread::spawn(move || {
            while !thread_stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        if let Ok(clone) = stream.try_clone() {
                            thread_shared.connections.lock().expect("lock").push(clone);
                        }
                        let shared = thread_shared.clone();
                        std::thread::spawn(move || serve(stream, shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Collector { addr, shared, stop, thread: Some(thread) }
    }

    /// The base URL.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Change what it answers.
    fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("lock") = mode;
    }

    /// Stop listening (connections are refused) and return what it knew, to restart later.
    fn shut_down(mut self) -> (SocketAddr, Arc<Shared>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for connection in self.shared.connections.lock().expect("lock").drain(..) {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
        (self.addr, self.shared.clone())
    }

    /// Listen again on the same port, keeping what was received.
    fn restart((addr, shared): (SocketAddr, Arc<Shared>)) -> Collector {
        Collector::start_shared(addr, shared)
    }

    /// Every request answered 200.
    fn accepted(&self) -> Vec<Received> {
        self.shared.accepted.lock().expect("lock").clone()
    }

    /// Requests seen (answered or not).
    fn attempts(&self) -> usize {
        *self.shared.attempts.lock().expect("lock")
    }

    /// Headers of accepted requests.
    fn headers(&self) -> Vec<String> {
        self.shared.headers.lock().expect("lock").clone()
    }

    /// Run `check` on every accepted body, before it is recorded.
    fn set_check(&self, check: Check) {
        *self.shared.check.lock().expect("lock") = Some(check);
    }

    /// Record a violation found by a check.
    fn violations(&self) -> Vec<String> {
        self.shared.violations.lock().expect("lock").clone()
    }

    /// How many times each v2 log record (`host.id`, seq, index) arrived.
    fn log_records(&self) -> BTreeMap<(String, i64, i64), usize> {
        let mut seen = BTreeMap::new();
        for received in self.accepted().iter().filter(|r| r.path == "/v1/logs") {
            for key in log_keys(&received.body) {
                *seen.entry(key).or_insert(0) += 1;
            }
        }
        seen
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn attribute<'a>(list: &'a Value, key: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|kv| kv["key"] == key).map(|kv| &kv["value"])
}

/// (`host.id`, `fleet.batch.seq`, `fleet.record.index`) of every log record of a logs body.
fn log_keys(body: &Value) -> Vec<(String, i64, i64)> {
    let mut keys = Vec::new();
    for rl in body["resourceLogs"].as_array().into_iter().flatten() {
        let host = attribute(&rl["resource"]["attributes"], "host.id")
            .and_then(|v| v["stringValue"].as_str())
            .unwrap_or_default()
            .to_string();
        for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
            for record in sl["logRecords"].as_array().into_iter().flatten() {
                let int = |key: &str| {
                    attribute(&record["attributes"], key)
                        .and_then(|v| v["intValue"].as_str())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(-1)
                };
                keys.push((host.clone(), int("fleet.batch.seq"), int("fleet.record.index")));
            }
        }
    }
    keys
}

// ---- The forwarder alone, over an in-memory store ----

/// An in-memory store: committed units in order and a cursor (what a backend's
/// `forward_pending` promises, in a few lines).
struct MemorySource {
    state: Mutex<(Vec<Committed>, usize)>,
}

impl PendingSource for MemorySource {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn forward_pending(
        &self,
        max_rows: usize,
        push: &mut dyn FnMut(&[Committed]) -> Result<(), String>,
    ) -> Result<usize, String> {
        let (units, cursor) = {
            let state = self.state.lock().map_err(|e| e.to_string())?;
            let mut rows = 0;
            let mut take = Vec::new();
            for unit in &state.0[state.1..] {
                if !take.is_empty() && rows + unit.rows.len() > max_rows {
                    break;
                }
                rows += unit.rows.len();
                take.push(unit.clone());
            }
            (take, state.1)
        };
        if units.is_empty() {
            return Ok(0);
        }
        push(&units)?;
        let mut state = self.state.lock().map_err(|e| e.to_string())?;
        assert_eq!(state.1, cursor, "one forwarder only");
        state.1 += units.len();
        Ok(units.iter().map(|u| u.rows.len()).sum())
    }
}

impl MemorySource {
    fn append(&self, unit: Committed) {
        self.state.lock().expect("lock").0.push(unit);
    }
}

/// A committed v2 batch of `machine`: `count` ping log records, then the commit row.
fn batch_rows(machine: &str, seq: u64, count: usize) -> Committed {
    let at = "2026-11-22T13:00:01.000Z";
    let mut rows: Vec<Map<String, Value>> = (0..count)
        .map(|i| {
            let row = json!({"kind":"record","machine_id":machine,"seq":seq,"index":i,"received_at":at,"widget":"ping","record_kind":"log",
                "record":{"ts":"2026-11-22T13:00:00.000Z","widget":"ping","kind":"log","level":"info","message":"ping",
                          "data":{"target":"127.0.0.1","sent":4,"received":4,"packet_loss":0.0,"latency":0.2}}});
            row.as_object().cloned().expect("object")
        })
        .collect();
    let commit = json!({"kind":"batch","machine_id":machine,"seq":seq,"records":count,"received_at":at,"sent_at":"2026-11-22T13:00:00Z","dropped":{"count":0}});
    rows.push(commit.as_object().cloned().expect("object"));
    Committed { machine_id: machine.into(), stream: Stream::Records, rows }
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

fn fast_settings(max_rows: usize) -> ForwardSettings {
    ForwardSettings { max_rows, idle_poll: Duration::from_millis(20), retry_max: Duration::from_millis(150) }
}

fn client(url: &str) -> fleet_agent::sender::http::HttpClient {
    fleet_agent::otlp::collector_client(url, None, None).map_err(|e| e.0).expect("client")
}

/// Seeded schedules of collector faults (503s and dropped connections, 0 to 60 % of requests)
/// while batches keep arriving: every committed record reaches the collector, the source's
/// cursor reaches the end, and failures are counted. `FLEET_OTLP_SEED=N` replays seeds N..N+4.
#[test]
fn the_forwarder_delivers_every_committed_record_through_collector_faults() {
    let base = std::env::var("FLEET_OTLP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1000_u64);
    for seed in base..base + 4 {
        let percent = (seed % 4) as u8 * 20;
        let collector = Collector::start(Mode::Flaky { percent }, seed);
        let source = Arc::new(MemorySource { state: Mutex::new((Vec::new(), 0)) });
        let forwarder = Forwarder::start(source.clone(), client(&collector.url()), fast_settings(16)).expect("start");
        let mut expected = BTreeSet::new();
        for seq in 0..30_u64 {
            let machine = format!("m{}", seq % 3);
            let count = 1 + (seq as usize * 7 + seed as usize) % 9;
            source.append(batch_rows(&machine, seq, count));
            expected.extend((0..count as i64).map(|i| (machine.clone(), seq as i64, i)));
            std::thread::sleep(Duration::from_millis(3));
        }
        let all_there = || {
            let seen: BTreeSet<_> = collector.log_records().into_keys().collect();
            expected.is_subset(&seen)
        };
        assert!(wait_until(Duration::from_secs(60), all_there), "seed {seed}: records missing at the collector");
        let stats = forwarder.stats();
        assert!(wait_until(Duration::from_secs(10), || source.state.lock().map(|s| s.1 == 30).unwrap_or(false)));
        let seen = collector.log_records();
        assert_eq!(seen.len(), expected.len(), "seed {seed}: records the store never held arrived");
        if percent > 0 {
            assert!(stats.failed_attempts.load(Ordering::Relaxed) > 0, "seed {seed}: faults were not counted");
        }
        assert_eq!(stats.rows_forwarded.load(Ordering::Relaxed) as usize, expected.len() + 30, "seed {seed}");
        forwarder.stop();
    }
}

/// A collector that refuses a body for good (400) does not stop forwarding: the rows are
/// counted as rejected and the cursor moves on; a 429 with Retry-After is retried.
#[test]
fn permanent_refusals_are_counted_and_passed_over_and_429_is_retried() {
    let collector = Collector::start(Mode::Status(400), 1);
    let source = Arc::new(MemorySource { state: Mutex::new((vec![batch_rows("m", 1, 2)], 0)) });
    let forwarder = Forwarder::start(source.clone(), client(&collector.url()), fast_settings(100)).expect("start");
    assert!(wait_until(Duration::from_secs(10), || source.state.lock().map(|s| s.1 == 1).unwrap_or(false)));
    let stats = forwarder.stats();
    assert!(stats.rejected.load(Ordering::Relaxed) >= 2, "{}", stats.summary());
    collector.set_mode(Mode::Status(429));
    source.append(batch_rows("m", 2, 2));
    assert!(wait_until(Duration::from_secs(10), || stats.failed_attempts.load(Ordering::Relaxed) >= 2));
    assert_eq!(source.state.lock().map(|s| s.1).unwrap_or(0), 1, "a 429 does not move the cursor");
    collector.set_mode(Mode::Accept);
    assert!(wait_until(Duration::from_secs(10), || collector.log_records().len() == 2));
    forwarder.stop();
}

// ---- The real receiver ----

use crate::support::{agent, receiver_args, write_secret, Proc};

/// Start `fleet-agent receive` (keyless transport: plaintext batches, the store sealed with the
/// test store key) forwarding to `collector_url`, with `extra` arguments; its log goes to
/// `log`.
fn start_forwarding_receiver(
    store: &Path,
    listen: &str,
    collector_url: &str,
    extra: &[&str],
    log: &Path,
) -> (Proc, String) {
    let mut cmd = agent();
    cmd.args(receiver_args(store, listen, "test-api-key", &[]));
    cmd.args(["--forward-otlp", collector_url, "-v"]);
    cmd.args(extra);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(log).spawn().expect("receiver starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("listening line");
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected {line:?}")).to_string();
    (Proc { child }, url)
}

/// POST a plaintext v2 batch of `count` ping log records; the status and how long it took.
fn post_batch(url: &str, machine: &str, seq: u64, count: usize) -> (u16, Duration) {
    let records: Vec<Value> = (0..count)
        .map(|i| json!({"ts":"2026-11-22T13:00:00.000Z","widget":"ping","kind":"log","level":"info","message":format!("r{i}"),
                        "data":{"target":"127.0.0.1","sent":4,"received":4,"packet_loss":0.0,"latency":0.25}}))
        .collect();
    let body = json!({"machine_id":machine,"seq":seq,"sent_at":"2026-11-22T13:00:00Z","records":records,"dropped":{"count":0}}).to_string();
    let started = Instant::now();
    let mut stream = TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
    let request = format!(
        "POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-API-Key: test-api-key\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, started.elapsed())
}

fn expected_keys(machine: &str, seqs: std::ops::Range<u64>, count: usize) -> BTreeSet<(String, i64, i64)> {
    seqs.flat_map(|seq| (0..count as i64).map(move |i| (machine.to_string(), seq as i64, i))).collect()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[test]
fn every_committed_record_reaches_a_flaky_collector_at_least_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let collector = Collector::start(Mode::Flaky { percent: 40 }, 7);
    let (mut receiver, url) =
        start_forwarding_receiver(&store, "127.0.0.1:0", &collector.url(), &[], &dir.path().join("receiver.log"));
    for seq in 0..25 {
        assert_eq!(post_batch(&url, "mac-01", seq, 4).0, 200);
    }
    let expected = expected_keys("mac-01", 0..25, 4);
    let arrived =
        wait_until(Duration::from_secs(90), || expected.is_subset(&collector.log_records().into_keys().collect()));
    let log = std::fs::read_to_string(dir.path().join("receiver.log")).unwrap_or_default();
    assert!(arrived, "records missing at the collector; receiver log:\n{log}");
    assert!(collector.attempts() > collector.accepted().len(), "the collector failed some requests");
    receiver.terminate(Duration::from_secs(30));
    let log = std::fs::read_to_string(dir.path().join("receiver.log")).unwrap_or_default();
    assert!(log.contains("OTLP forwarder stopped: forwarded 125 rows"), "{log}");
    assert!(log.contains("failed attempts"), "{log}");
}

#[test]
fn a_collector_outage_neither_slows_ingest_nor_loses_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let collector = Collector::start(Mode::Accept, 3);
    let log_path = dir.path().join("receiver.log");
    let (mut receiver, url) = start_forwarding_receiver(&store, "127.0.0.1:0", &collector.url(), &[], &log_path);
    let baseline: Vec<Duration> = (0..20)
        .map(|seq| post_batch(&url, "mac-01", seq, 20))
        .map(|(s, d)| {
            assert_eq!(s, 200);
            d
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || collector.log_records().len() == 400));
    // Down: first refusing connections, then answering 503 on the same port.
    let down = collector.shut_down();
    let mut outage = Vec::new();
    for seq in 20..40 {
        let (status, took) = post_batch(&url, "mac-01", seq, 20);
        assert_eq!(status, 200, "ingest refused during the outage");
        outage.push(took);
    }
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || read_log().contains("OTLP forwarding to")),
        "the forwarder never noticed the outage:\n{}",
        read_log()
    );
    let collector = Collector::restart(down);
    collector.set_mode(Mode::Status(503));
    let attempts = collector.attempts();
    for seq in 40..60 {
        let (status, took) = post_batch(&url, "mac-01", seq, 20);
        assert_eq!(status, 200);
        outage.push(took);
    }
    assert!(wait_until(Duration::from_secs(30), || collector.attempts() >= attempts + 2), "no retry against the 503s");
    assert_eq!(collector.log_records().len(), 400, "nothing new arrives while the collector fails");
    let (base, during) = (median(baseline), median(outage.clone()));
    assert!(
        during <= base * 4 + Duration::from_millis(50),
        "ingest slowed during the outage: median {during:?} against {base:?} before"
    );
    collector.set_mode(Mode::Accept);
    let expected = expected_keys("mac-01", 0..60, 20);
    let arrived =
        wait_until(Duration::from_secs(120), || expected.is_subset(&collector.log_records().into_keys().collect()));
    let log = read_log();
    assert!(arrived, "records lost over the outage; receiver log:\n{log}");
    assert!(log.contains("accepts again after"), "{log}");
    receiver.terminate(Duration::from_secs(30));
}

#[test]
fn a_restarted_receiver_resumes_from_its_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let collector = Collector::start(Mode::Accept, 5);
    let log_path = dir.path().join("receiver.log");
    let (mut receiver, url) = start_forwarding_receiver(&store, "127.0.0.1:0", &collector.url(), &[], &log_path);
    for seq in 0..10 {
        assert_eq!(post_batch(&url, "mac-01", seq, 5).0, 200);
    }
    assert!(wait_until(Duration::from_secs(20), || collector.log_records().len() == 50));
    receiver.terminate(Duration::from_secs(30));
    let (mut receiver, url) = start_forwarding_receiver(&store, "127.0.0.1:0", &collector.url(), &[], &log_path);
    for seq in 10..12 {
        assert_eq!(post_batch(&url, "mac-01", seq, 5).0, 200);
    }
    assert!(wait_until(Duration::from_secs(20), || collector.log_records().len() == 60));
    std::thread::sleep(Duration::from_millis(500));
    let counts = collector.log_records();
    assert!(counts.values().all(|&n| n == 1), "records sent again after a clean restart: {counts:?}");
    // kill -9 in the middle: at most the last push comes again.
    for seq in 12..20 {
        assert_eq!(post_batch(&url, "mac-01", seq, 5).0, 200);
    }
    receiver.kill9();
    let (mut receiver, _url) = start_forwarding_receiver(&store, "127.0.0.1:0", &collector.url(), &[], &log_path);
    let expected = expected_keys("mac-01", 0..20, 5);
    assert!(wait_until(Duration::from_secs(20), || expected.is_subset(&collector.log_records().into_keys().collect())));
    std::thread::sleep(Duration::from_millis(500));
    let again: usize = collector.log_records().values().map(|n| n - 1).sum();
    assert!(again <= 40, "a restart after kill -9 re-sent {again} records, more than the batches in flight");
    receiver.terminate(Duration::from_secs(30));
}

#[test]
fn nothing_is_forwarded_before_its_batch_is_committed_and_the_header_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let collector = Collector::start(Mode::Accept, 9);
    // Every record the collector receives must already be committed in the store.
    let reader_store = store.clone();
    let shared = collector.shared.clone();
    collector.set_check(Box::new(move |path, body| {
        if path != "/v1/logs" {
            return;
        }
        let committed = crate::support::stored_records(&reader_store, "mac-01");
        let committed: BTreeSet<(i64, i64)> = committed
            .iter()
            .map(|row| (row["seq"].as_i64().unwrap_or(-2), row["index"].as_i64().unwrap_or(-2)))
            .collect();
        for (_, seq, index) in log_keys(body) {
            if !committed.contains(&(seq, index)) {
                shared
                    .violations
                    .lock()
                    .expect("lock")
                    .push(format!("seq {seq} index {index} forwarded before commit"));
            }
        }
    }));
    let header = write_secret(dir.path(), "otlp-header", "Authorization: Bearer otlp-test-token\n");
    let log_path = dir.path().join("receiver.log");
    let (mut receiver, url) = start_forwarding_receiver(
        &store,
        "127.0.0.1:0",
        &collector.url(),
        &["--forward-otlp-header-file", header.to_str().expect("utf-8")],
        &log_path,
    );
    let posters: Vec<_> = (0..3)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                for seq in (t * 100)..(t * 100 + 15) {
                    assert_eq!(post_batch(&url, "mac-01", seq, 3).0, 200);
                }
            })
        })
        .collect();
    for poster in posters {
        poster.join().expect("poster");
    }
    assert!(wait_until(Duration::from_secs(30), || collector.log_records().len() == 135));
    assert_eq!(collector.violations(), Vec::<String>::new());
    assert!(collector
        .headers()
        .iter()
        .any(|h| h == "authorization: Bearer otlp-test-token" || h == "Authorization: Bearer otlp-test-token"));
    receiver.terminate(Duration::from_secs(30));
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains("otlp-test-token"), "the header's secret reached the log");
}

// ---- The forwarder over every storage backend ----

fn ping_batch(machine_id: &str, seq: u64, count: usize) -> fleet_wire::record::BatchBody {
    use fleet_wire::record::{BatchBody, Dropped, Level, Record, SampleKind};
    BatchBody {
        machine_id: machine_id.into(),
        seq,
        sent_at: "2026-11-22T13:00:00Z".into(),
        records: (0..count)
            .map(|i| Record {
                ts: "2026-11-22T13:00:00.000Z".into(),
                widget: "ping".into(),
                kind: SampleKind::Log,
                level: Level::Info,
                message: format!("r{i}"),
                data: json!({"target": "127.0.0.1", "sent": 4, "received": 4, "packet_loss": 0.0}),
            })
            .collect(),
        dropped: Dropped::default(),
    }
}

/// A forwarder over `storage` (as `receive` runs it) to `collector`, with test pacing.
fn forward_from(storage: &Arc<dyn fleet_receiver::Storage>, collector: &Collector) -> Forwarder {
    let source = fleet_agent::otlp::source::StorageSource(storage.clone());
    Forwarder::start(Arc::new(source), client(&collector.url()), fast_settings(20)).expect("forwarder starts")
}

/// On every backend (`tests/backends.rs`): batches appended while a flaky collector fails,
/// v1 widget logs beside them, all arrive; after the store is reopened (a receiver restart)
/// with the forwarder stopped cleanly, nothing is sent again and new batches follow.
#[test]
fn the_forwarder_delivers_everything_once_per_clean_restart_on_every_backend() {
    use fleet_receiver::StoreKeys;
    let key = || StoreKeys::new(&[fleet_wire::keys::Key32::from_bytes([0x40; 32])]);
    for backend in crate::backends::backends() {
        let collector = Collector::start(Mode::Flaky { percent: 40 }, 11);
        let storage: Arc<dyn fleet_receiver::Storage> = Arc::from(backend.open(key()));
        let forwarder = forward_from(&storage, &collector);
        for seq in 0..12 {
            storage.append_batch(&ping_batch("mac-01", seq, 3), None).expect("append");
        }
        let logs = [
            json!({"timestamp":"2026-11-22T13:00:00","level":"INFO","widget_type":"wifi","message":"","data":{"rssi":-50}}),
        ];
        storage.append_widget_logs("mac-02", &logs, false).expect("append logs");
        let expected = expected_keys("mac-01", 0..12, 3);
        let wifi_logs = |c: &Collector| c.log_records().keys().filter(|(m, _, _)| m == "mac-02").count();
        let all = wait_until(Duration::from_secs(60), || {
            expected.is_subset(&collector.log_records().into_keys().collect()) && wifi_logs(&collector) == 1
        });
        assert!(all, "{}: records missing at the collector", backend.name);
        forwarder.stop();
        drop(storage);
        collector.set_mode(Mode::Accept);
        let before = collector.log_records();
        let storage: Arc<dyn fleet_receiver::Storage> = Arc::from(backend.open(key()));
        let forwarder = forward_from(&storage, &collector);
        storage.append_batch(&ping_batch("mac-01", 12, 3), None).expect("append");
        assert!(wait_until(Duration::from_secs(30), || collector.log_records().len() == before.len() + 3));
        std::thread::sleep(Duration::from_millis(300));
        let after = collector.log_records();
        for (key, count) in &before {
            assert_eq!(after.get(key), Some(count), "{}: {key:?} sent again after a clean restart", backend.name);
        }
        forwarder.stop();
    }
}
