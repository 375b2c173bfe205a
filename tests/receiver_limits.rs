//! The receiver under abuse and the HTTP it speaks: slow clients against a real agent,
//! connections over the cap, memory under concurrent exports, keep-alive, credentials for
//! reads, spreadsheet-safe CSV, and the address it prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_receiver::{Limits, Receiver, StoreKeys};
use fleet_widgets::{Level, SampleKind};
use fleet_wire::envelope;
use fleet_wire::record::{BatchBody, Dropped, Record};
use serde_json::{json, Value};

use crate::receiver::{
    config, fast_limits, get, get_bearer, key, post, raw_exchange, read, read_answer, start, store_key, API_KEY,
    READ_TOKEN,
};
use crate::support::{self, agent_config, start_agent, start_receiver, stored_records, wait_for, TEST_KEY_B64};

/// Keep `clients` connections slow until `stop`: half send a request head one byte at a time,
/// half send a complete head and then a body far below the minimum rate.
fn slow_clients(addr: std::net::SocketAddr, clients: usize, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|i| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut stream) = TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let drip: Vec<u8> = if i % 2 == 0 {
                        b"POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec()
                    } else {
                        let head = format!(
                            "POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: 100000\r\n\r\n"
                        );
                        let _ = stream.write_all(head.as_bytes());
                        vec![b'{'; 100_000]
                    };
                    for byte in drip {
                        if stop.load(Ordering::SeqCst) || stream.write_all(&[byte]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(250));
                    }
                }
            })
        })
        .collect()
}

#[test]
fn sixty_four_slow_clients_do_not_delay_a_real_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]);
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let threads = slow_clients(addr, 64, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(1500)); // every slow client is connected and dripping
    let config = agent_config(dir.path(), "c.json", &url, Some(TEST_KEY_B64), "v2", "");
    let started = Instant::now();
    let mut agent = start_agent(&config, &dir.path().join("agent.log"));
    let arrived = wait_for(Duration::from_secs(20), || !stored_records(&store, "test-machine").is_empty());
    let delay = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = agent.terminate(Duration::from_secs(10));
    for thread in threads {
        let _ = thread.join();
    }
    assert!(
        arrived,
        "the agent's batch never arrived; agent log: {}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );
    eprintln!("first batch of a real agent stored {delay:?} after its start, with 64 slow clients attached");
    assert!(delay < Duration::from_secs(5), "first batch took {delay:?} with 64 slow clients");
}

#[test]
fn connections_over_the_cap_are_answered_503_at_once_and_accept_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits { max_connections: 8, head_deadline: Duration::from_secs(3), ..fast_limits() };
    let rx = Receiver::start_with_limits(config(dir.path(), vec![key(0)]), limits).expect("start");
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(rx.local_addr()).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (status, body) = raw_exchange(rx.local_addr(), b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "answered at once: {:?}", started.elapsed());
    drop(idle);
    assert!(wait_for(Duration::from_secs(5), || get(&rx.url(), "/api/health", None).status == 200));
    rx.shutdown();
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let mut stream = TcpStream::connect(rx.local_addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    // Two requests in one write (pipelined), then a third after the answers.
    stream
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\nGET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut answers = 0;
    for _ in 0..2 {
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).expect("header");
            if header == "\r\n" {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
            assert_ne!(header.to_ascii_lowercase().trim(), "connection: close");
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("body");
        answers += 1;
    }
    assert_eq!(answers, 2);
    // A POST with a body on the same connection, then HTTP/1.0 which closes.
    let body = envelope::seal_v2(&key(0), "ka", 1, &crate::receiver::batch_json("ka", 1, 1)).expect("seal");
    let head = format!(
        "POST /api/v2/batches HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(&body).expect("write");
    let mut status = String::new();
    reader.read_line(&mut status).expect("status");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut rest = String::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        rest.push_str(&header);
        if header == "\r\n" {
            break;
        }
    }
    let length: usize = rest
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .expect("length");
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("body");
    assert_eq!(String::from_utf8_lossy(&body), r#"{"status":"ok","stored":1}"#);
    stream.write_all(b"GET /api/health HTTP/1.0\r\n\r\n").expect("write");
    let (status, _) = read_answer(&mut stream);
    assert_eq!(status, 200, "answered, then closed (read_to_end returned)");
    rx.shutdown();
}

#[test]
fn reads_need_the_read_token_and_the_agents_api_key_gets_403() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    for path in ["/api/fleet/machines", "/api/fleet/widget-logs?format=csv", "/api/fleet/widget-logs"] {
        let with_api_key = get(&rx.url(), path, Some(API_KEY));
        assert_eq!(with_api_key.status, 403, "{path}");
        assert!(with_api_key.body.contains("may only write"), "{}", with_api_key.body);
        assert_eq!(get_bearer(&rx.url(), path, API_KEY).status, 403, "{path}: the API key as a bearer token");
        assert_eq!(get(&rx.url(), path, Some(READ_TOKEN)).status, 401, "{path}: the read token is a bearer token");
        assert_eq!(get_bearer(&rx.url(), path, "wrong").status, 401, "{path}");
        assert_eq!(read(&rx.url(), path).status, 200, "{path}");
    }
    rx.shutdown();
    // No read token configured: every read is 403, naming the flag.
    let mut no_reads = config(dir.path(), vec![key(0)]);
    no_reads.read_token = None;
    let rx = Receiver::start_with_limits(no_reads, fast_limits()).expect("start");
    let answer = get_bearer(&rx.url(), "/api/fleet/machines", READ_TOKEN);
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("--read-token-file"), "{}", answer.body);
    rx.shutdown();
}

#[test]
fn csv_cells_starting_like_formulas_are_neutralised_in_every_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    let logs = json!({
        "machine_id": "+mac",
        "logs": [{"timestamp": "-1", "level": "@lvl", "widget_type": "=w", "message": "=HYPERLINK(\"http://evil\",\"x\")",
                  "data": {"a": 1}},
                 {"timestamp": "\t2", "level": "\rinfo", "widget_type": "ok", "message": "+1", "data": null}],
    });
    let body = envelope::seal_v1(&key(0), &serde_json::to_vec(&logs).expect("json")).expect("seal");
    assert_eq!(post(&rx.url(), "/api/fleet/widget-logs", &body).status, 200);
    let csv = read(&rx.url(), "/api/fleet/widget-logs?format=csv").body;
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[1],
        "\"1\",\"'+mac\",\"'-1\",\"'@lvl\",\"'=w\",\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",\"{\"\"a\"\":1}\""
    );
    assert_eq!(lines[2], "\"2\",\"'+mac\",\"'\t2\",\"'\rinfo\",\"ok\",\"'+1\",\"null\"");
    rx.shutdown();
}

#[test]
fn listen_on_all_interfaces_prints_the_address_really_listened_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = support::receiver_args(&dir.path().join("store"), "0.0.0.0:0", API_KEY, &[TEST_KEY_B64]);
    let mut child = support::agent()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
    let _proc = support::Proc { child };
    let addr = line.trim().strip_prefix("listening on http://").expect("line");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    assert_eq!(host, "0.0.0.0", "{line}");
    let port: u16 = port.parse().expect("port");
    assert_ne!(port, 0, "{line}");
    assert_eq!(get(&format!("http://127.0.0.1:{port}"), "/api/health", None).status, 200);
}

/// A store of about `megabytes` of sealed v2 log records (500 per batch) for `machines`.
fn big_store(dir: &Path, megabytes: u64, machines: usize) -> u64 {
    let location = fleet_receiver::StoreLocation::Dir(dir.to_path_buf());
    let store = fleet_receiver::open_storage(&location, StoreKeys::new(&[store_key()])).expect("open");
    let record = |n: u64| Record {
        ts: "2026-11-22T13:00:00.000Z".into(),
        widget: "ping".into(),
        kind: SampleKind::Log,
        level: Level::Info,
        message: format!("ping #{n}"),
        data: json!({"latency": 12.5, "target": "1.1.1.1", "pad": "y".repeat(200)}),
    };
    let mut seq = 0u64;
    let mut rows = 0u64;
    let size = || -> u64 {
        let mut total = 0;
        for entry in std::fs::read_dir(dir).expect("list").flatten() {
            if entry.path().is_dir() {
                for file in std::fs::read_dir(entry.path()).expect("list").flatten() {
                    total += file.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        total
    };
    while size() < megabytes * 1024 * 1024 {
        for m in 0..machines {
            let batch = BatchBody {
                machine_id: format!("big-{m:02}"),
                seq,
                sent_at: "2026-11-22T13:00:00Z".into(),
                records: (0..500).map(record).collect(),
                dropped: Dropped::default(),
            };
            store.append_batch(&batch, None).expect("append");
            rows += 500;
        }
        seq += 1;
    }
    rows
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Peak RSS of the receiver stays under this while 16 exports of a large store run at once.
const EXPORT_PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;

#[test]
fn sixteen_concurrent_exports_of_a_large_store_stay_in_bounded_memory() {
    // CI: a 6 MB store (a debug build opens about 1 MB/s per export on a busy 2-core machine); FLEET_RECEIVER_EXPORT_STORE_MB=500 for the issue's figure.
    let megabytes: u64 = std::env::var("FLEET_RECEIVER_EXPORT_STORE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let rows = big_store(&store, megabytes, 4);
    let (receiver, url) = start_receiver(&store, "127.0.0.1:0", API_KEY, &[TEST_KEY_B64]);
    let pid = receiver.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let before = vm_hwm_kib(pid);
    let started = Instant::now();
    let exported: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let url = url.clone();
                scope.spawn(move || {
                    let format = if i % 2 == 0 { "json" } else { "csv" };
                    let agent = fleet_http::Client::new(fleet_http::Config {
                        connect_timeout: Duration::from_secs(600),
                        timeout: Duration::from_secs(600),
                        tls: None,
                        user_agent: "fleet-tests".into(),
                        proxy: None,
                        max_idle: Duration::ZERO,
                    });
                    let target = format!("{url}/api/fleet/widget-logs?format={format}");
                    let bearer = format!("Bearer {READ_TOKEN}");
                    let mut reader = agent
                        .send(fleet_http::Request {
                            method: "GET",
                            url: &target,
                            headers: &[("Authorization", &bearer)],
                            body: fleet_http::Body::Empty,
                            resendable: false,
                        })
                        .expect("export");
                    let mut buf = vec![0u8; 64 * 1024];
                    let (mut bytes, mut newlines) = (0u64, 0u64);
                    let mut tail = Vec::new();
                    loop {
                        let n = reader.read(&mut buf).expect("read export");
                        if n == 0 {
                            break;
                        }
                        bytes += n as u64;
                        newlines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                        tail.extend_from_slice(&buf[..n]);
                        let keep = tail.len().saturating_sub(200);
                        tail.drain(..keep);
                    }
                    if format == "json" {
                        let tail = String::from_utf8_lossy(&tail);
                        assert!(
                            tail.contains(&format!("\"count\":{rows},\"truncated\":false,\"skipped_tampered\":0}}")),
                            "{tail}"
                        );
                    } else {
                        assert_eq!(newlines, rows + 1, "header + one line per row");
                    }
                    (bytes, newlines)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("export thread")).collect()
    });
    let elapsed = started.elapsed();
    let peak = vm_hwm_kib(pid);
    let total: u64 = exported.iter().map(|(b, _)| b).sum();
    eprintln!(
        "16 concurrent exports of a {megabytes} MB store ({rows} rows): {} MB sent in {elapsed:?}; receiver peak RSS {before} KiB before, {peak} KiB after (limit {EXPORT_PEAK_RSS_LIMIT_KIB} KiB)",
        total / 1_000_000
    );
    assert!(peak < EXPORT_PEAK_RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    let _ = Value::Null;
}
