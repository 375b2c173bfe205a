//! Seeded random crashes of the real v2 sender over many cycles, against a receiver that
//! stores a seq once and recognises a resend by its records (docs/v2-protocol.md), with lost
//! answers. A crash is either a state write cut at a random byte (the process dies there:
//! every later state write fails, then the spool and sender are dropped and opened again) or
//! a stop between two steps without the shutdown flush. Oracle: every record appended is
//! stored exactly once, no seq carries two contents, and the spool's counters say every
//! record was delivered. A failing seed is printed and replays exactly (`FLEET_CRASH_SEED`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_widgets::{Level, SampleKind, Timestamp};
use fleet_wire::record::Record;

use super::V2Sender;
use crate::config::{Config, Env, FsyncPolicy, Protocol};
use crate::sender::link::Link;
use crate::sender::Sender;
use crate::spool::Spool;

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// xorshift64*: small, seeded, replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the receiver holds: seq -> the record numbers it carried.
#[derive(Default)]
struct Stored {
    by_seq: BTreeMap<u64, Vec<u64>>,
    conflicts: u64,
    requests: u64,
}

/// A minimal v2 receiver (unsealed bodies) on loopback that stores each seq once and, if
/// `lossy`, drops one answer in five (after storing), as the seeded schedule says.
fn receiver(stored: Arc<Mutex<Stored>>, lose: Arc<Mutex<Rng>>, lossy: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let Some(crate::test_http::Request { body, .. }) = crate::test_http::read_request(&mut reader) else {
                continue;
            };
            let batch: serde_json::Value = serde_json::from_slice(&body).expect("an unsealed v2 batch");
            let seq = batch["seq"].as_u64().expect("seq");
            let numbers: Vec<u64> = batch["records"]
                .as_array()
                .expect("records")
                .iter()
                .map(|r| r["data"]["n"].as_u64().expect("n"))
                .collect();
            let answer = {
                let mut stored = stored.lock().expect("lock");
                stored.requests += 1;
                match stored.by_seq.get(&seq) {
                    Some(held) if *held == numbers => r#"{"status":"ok","duplicate":true}"#,
                    Some(_) => {
                        stored.conflicts += 1;
                        ""
                    }
                    None => {
                        stored.by_seq.insert(seq, numbers);
                        r#"{"status":"ok"}"#
                    }
                }
            };
            if answer.is_empty() {
                let body = r#"{"error":"seq collision"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 409 Conflict\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            if lossy && lose.lock().expect("lock").below(5) == 0 {
                continue; // stored, answer lost
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    url
}

fn record(n: u64) -> Record {
    Record {
        ts: Timestamp(1_764_000_000_000 + n as i64).to_rfc3339(),
        widget: "crash".into(),
        kind: SampleKind::Metric,
        level: Level::Info,
        message: String::new(),
        data: serde_json::json!({ "n": n }),
    }
}

fn start(config: &Config, url: &str) -> (Spool, V2Sender) {
    let spool = Spool::open(&config.spool).expect("open spool");
    let link = Link::new(config, url, config.spool.dir.clone()).expect("link");
    (spool, V2Sender::new(link, Duration::ZERO))
}

fn config_in(dir: &std::path::Path) -> Config {
    let mut config = Config::load_with_env(None, &NoEnv).expect("defaults");
    config.spool.dir = dir.join("spool");
    config.spool.segment_bytes = 2048;
    config.spool.fsync = FsyncPolicy::Batch;
    config.protocol = Protocol::V2;
    config.machine_id = "crash-test".into();
    config
}

/// Issue 16's budget: a steady v2 sender makes one state write per send round (the next
/// batch's description carries the previous ack), not one per file per step. Before the fix
/// a stale deadline for the ack made it write twice in every round.
#[test]
fn a_steady_v2_sender_writes_its_state_once_per_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = Arc::new(Mutex::new(Stored::default()));
    let url = receiver(stored.clone(), Arc::new(Mutex::new(Rng(1))), false);
    let config = config_in(dir.path());
    let mut spool = Spool::open(&config.spool).expect("open spool");
    let link = Link::new(&config, &url, config.spool.dir.clone()).expect("link");
    let send_interval = Duration::from_millis(300);
    let mut sender = V2Sender::new(link, send_interval);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(4) {
        spool.append(&[record(n)]).expect("append");
        n += 1;
        sender.push(&mut spool, Instant::now() + Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    let requests = stored.lock().expect("lock").requests;
    let writes = spool.state_generation();
    assert!(requests >= 8, "rounds every 300 ms: {requests}");
    // One write per round (a batch each), plus the first bookkeeping write of a fresh sender.
    assert!(writes <= requests + 1, "{writes} state writes for {requests} rounds");
}

fn run_seed(seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let stored = Arc::new(Mutex::new(Stored::default()));
    let url = receiver(stored.clone(), Arc::new(Mutex::new(Rng(seed ^ 0xdead_beef | 1))), true);
    let config = config_in(dir.path());
    let (mut spool, mut sender) = start(&config, &url);
    let mut appended = 0u64;
    let (mut torn, mut stops) = (0, 0);
    for _ in 0..80 {
        let count = 1 + rng.below(6);
        let records: Vec<Record> = (appended..appended + count).map(record).collect();
        spool.append(&records).expect("append");
        appended += count;
        if rng.below(4) == 0 {
            spool.crash_at_state_write(rng.below(3), rng.below(700) as usize);
        }
        sender.link.retry_at = None;
        sender.push(&mut spool, Instant::now() + Duration::from_secs(5));
        let stop = rng.below(8) == 0;
        if spool.crashed() || stop {
            torn += u64::from(spool.crashed());
            stops += u64::from(!spool.crashed());
            drop(sender);
            drop(spool);
            (spool, sender) = start(&config, &url);
        }
    }
    // The end: a last stop (a crash still armed never fires), then everything drains and the
    // agent shuts down cleanly.
    drop(sender);
    drop(spool);
    (spool, sender) = start(&config, &url);
    for _ in 0..200 {
        if spool.stats().unacked_records == 0 {
            break;
        }
        sender.link.retry_at = None;
        sender.push(&mut spool, Instant::now() + Duration::from_secs(5));
    }
    sender.link.retry_at = None;
    sender.flush(&mut spool, Instant::now() + Duration::from_secs(5));
    drop(sender);
    drop(spool);
    let (spool, _) = start(&config, &url);

    let stored = stored.lock().expect("lock");
    let context = format!("seed {seed} ({torn} torn state writes, {stops} stops; FLEET_CRASH_SEED={seed} replays)");
    assert_eq!(stored.conflicts, 0, "a seq was sent with other records: {context}");
    let all: Vec<u64> = stored.by_seq.values().flatten().copied().collect();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a record stored twice: {context}");
    assert_eq!(unique, (0..appended).collect::<BTreeSet<u64>>(), "a record lost: {context}");
    let counts = spool.stats().counts;
    assert_eq!(
        (counts.accepted, counts.delivered, counts.backlog, counts.dropped),
        (appended, appended, 0, 0),
        "the counters: {context}"
    );
}

#[test]
fn random_crashes_and_torn_state_writes_lose_nothing_and_store_nothing_twice() {
    let seeds: Vec<u64> = match std::env::var("FLEET_CRASH_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=12).collect(),
    };
    for seed in seeds {
        run_seed(seed);
    }
}
