//! Atlas's direct widget-log post (issue 16), proven through the real loop code (`store`,
//! `push`, `store_unsent`, `shutdown`, a reload's sender rebuild) against a Rust Atlas
//! stand-in on loopback that opens every sealed body and answers from a seeded, replayable
//! fault schedule: 2xx, 503, 429, a permanent 422, a lost answer (the request stored, the
//! connection closed without an answer), a connection dropped before the answer (nothing
//! stored), a refused connection (nothing listening) and a stalled answer (a timeout).
//!
//! Oracle after every step and after a crash: every record is delivered at least once (more
//! than once only where an answer was lost: Atlas cannot recognise a resend, as for the spool
//! path) or kept in `rejected/`; the spool's accounting adds up (`accepted == delivered +
//! superseded + dropped + rejected + backlog`) in memory and as persisted; the persisted count
//! never claims a record delivered that the server did not acknowledge; no plaintext lands in
//! the spool directory. A direct post that is acknowledged writes neither a segment nor
//! `state.bin`. A failing seed is printed and replays with `FLEET_DIRECT_SEED=N`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_widgets::{Level, SampleKind, Timestamp};
use fleet_wire::keys::Key32;
use fleet_wire::record::Record;

use super::Agent;
use crate::config::{Config, Env, FsyncPolicy, Protocol};
use crate::log::Verbosity;
use crate::spool::{inspect, RecordCounts, Spool};

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

const KEY: [u8; 32] = [7; 32];
/// In every record's message: must never be found in a file under the spool directory.
const MARKER: &str = "direct-post-plaintext-marker";

/// How the stand-in answers the next widget-log post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Ok,
    Unavailable,
    TooMany,
    /// A 4xx the sender treats as a permanent refusal.
    Refuse,
    /// Stored, then the connection closed without an answer.
    LostAnswer,
    /// The connection closed after the request, before anything was stored or answered.
    Dropped,
    /// Nothing answered until after the agent's request timeout.
    Stall,
}

#[derive(Default)]
struct Seen {
    /// Record number -> times the stand-in stored it (answered 2xx or lost the answer).
    stored: BTreeMap<u64, usize>,
    widget_log_posts: usize,
}

struct StandIn {
    url: String,
    plan: Arc<Mutex<VecDeque<Fault>>>,
    seen: Arc<Mutex<Seen>>,
}

impl StandIn {
    fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let plan = Arc::new(Mutex::new(VecDeque::new()));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (plan_in, seen_in) = (Arc::clone(&plan), Arc::clone(&seen));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let Some(crate::test_http::Request { line: request_line, body }) =
                    crate::test_http::read_request(&mut reader)
                else {
                    continue;
                };
                let reply = |stream: &mut std::net::TcpStream, status: &str, body: &str| {
                    let _ = write!(
                        stream,
                        "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                };
                if request_line.starts_with("GET ") {
                    reply(&mut stream, "200 OK", r#"{"commands":[]}"#);
                    continue;
                }
                if !request_line.contains("/api/fleet/widget-logs") {
                    reply(&mut stream, "200 OK", r#"{"status":"ok"}"#);
                    continue;
                }
                let answer = plan_in.lock().expect("lock").pop_front().unwrap_or(Fault::Ok);
                let numbers = open_widget_logs(&body);
                let mut seen = seen_in.lock().expect("lock");
                seen.widget_log_posts += 1;
                if matches!(answer, Fault::Ok | Fault::LostAnswer) {
                    for n in numbers {
                        *seen.stored.entry(n).or_default() += 1;
                    }
                }
                drop(seen);
                match answer {
                    Fault::Ok => reply(&mut stream, "200 OK", r#"{"status":"ok"}"#),
                    Fault::Unavailable => reply(&mut stream, "503 Service Unavailable", "{}"),
                    Fault::TooMany => reply(&mut stream, "429 Too Many Requests", "{}"),
                    Fault::Refuse => reply(&mut stream, "422 Unprocessable Entity", r#"{"error":"bad entry"}"#),
                    Fault::LostAnswer | Fault::Dropped => {}
                    Fault::Stall => std::thread::sleep(crate::sender::REQUEST_TIMEOUT + Duration::from_secs(1)),
                }
            }
        });
        StandIn { url, plan, seen }
    }

    fn plan(&self, answers: &[Fault]) {
        self.plan.lock().expect("lock").extend(answers.iter().copied());
    }

    fn stored(&self) -> BTreeMap<u64, usize> {
        self.seen.lock().expect("lock").stored.clone()
    }

    fn posts(&self) -> usize {
        self.seen.lock().expect("lock").widget_log_posts
    }
}

/// The record numbers of a sealed widget-log body (sealed: anything else fails the test).
fn open_widget_logs(body: &[u8]) -> Vec<u64> {
    let opened = fleet_wire::envelope::open_v1(&Key32::from_bytes(KEY), body).expect("a v1-sealed widget-log body");
    let value: serde_json::Value = serde_json::from_slice(&opened).expect("json");
    value["logs"].as_array().expect("logs").iter().map(|entry| entry["data"]["n"].as_u64().expect("n")).collect()
}

fn log_record(n: u64) -> Record {
    Record {
        ts: Timestamp(1_764_000_000_000 + n as i64).to_rfc3339(),
        widget: "ping".into(),
        kind: SampleKind::Log,
        level: Level::Info,
        message: format!("{MARKER} {n}"),
        data: serde_json::json!({ "n": n }),
    }
}

fn config(dir: &Path, url: &str) -> Config {
    let mut config = Config::load_with_env(None, &NoEnv).expect("defaults");
    config.spool.dir = dir.join("spool");
    config.spool.fsync = FsyncPolicy::Batch;
    config.protocol = Protocol::Atlas;
    config.server_url = Some(url.to_string());
    config.encryption_key = Some(Key32::from_bytes(KEY));
    config.machine_id = "direct-test".into();
    // Widget logs may go every cycle; 30 s reports leave 5 widget-log posts a minute.
    config.send_interval = Duration::from_secs(30);
    config.widget_log_interval = Duration::from_millis(50);
    config
}

fn open_agent(config: Config) -> Agent {
    let mut agent = Agent::new(config, None, Verbosity::default());
    agent.open().expect("open");
    agent
}

/// One turn of the loop as `run_until` makes it, with `records` collected.
fn cycle(agent: &mut Agent, records: Vec<Record>) {
    agent.store(records);
    agent.push(Instant::now() + Duration::from_secs(20));
    agent.store_unsent();
}

/// A new sender as a SIGHUP builds it (fresh budget and backoff: the test's fast-forward).
fn rebuild_sender(agent: &mut Agent) {
    agent.store_unsent();
    if let (Some(sender), Some(spool)) = (agent.sender.as_mut(), agent.spool.as_mut()) {
        sender.save(spool);
    }
    let dir = agent.spool.as_ref().expect("spool").dir().to_path_buf();
    agent.sender = agent.build_sender(dir).expect("sender");
}

fn spool(agent: &Agent) -> &Spool {
    agent.spool.as_ref().expect("spool")
}

fn adds_up(counts: &RecordCounts) -> bool {
    counts.accepted == counts.delivered + counts.superseded + counts.dropped + counts.rejected + counts.backlog
}

/// No file under `dir` holds a record's plaintext.
fn assert_no_plaintext(dir: &Path, context: &str) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).expect("read_dir").map(|e| e.expect("entry").path()));
        } else {
            let bytes = std::fs::read(&path).expect("read");
            let found = bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
            assert!(!found, "plaintext in {}: {context}", path.display());
        }
    }
}

#[test]
fn an_acknowledged_direct_post_writes_no_segment_and_no_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StandIn::start();
    let mut agent = open_agent(config(dir.path(), &server.url));
    // The first turn of a new sender writes its bookkeeping once; then a steady cycle.
    cycle(&mut agent, Vec::new());
    let (generation, bytes) = (spool(&agent).state_generation(), spool(&agent).stats().bytes);
    let segment_sizes = || -> Vec<(std::path::PathBuf, u64)> {
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .map(|p| {
                let len = std::fs::metadata(&p).expect("metadata").len();
                (p, len)
            })
            .collect();
        files.sort();
        files
    };
    let files_before = segment_sizes();
    cycle(&mut agent, (0..12).map(log_record).collect());
    assert_eq!(server.stored(), (0..12).map(|n| (n, 1)).collect(), "posted once, in the cycle they arrived");
    assert_eq!(spool(&agent).state_generation(), generation, "no state.bin write");
    assert_eq!(spool(&agent).stats().bytes, bytes, "no segment write");
    assert_eq!(segment_sizes(), files_before, "no file in the spool changed size or appeared");
    let counts = spool(&agent).stats().counts;
    assert_eq!((counts.accepted, counts.delivered, counts.backlog), (12, 12, 0));
    assert!(adds_up(&counts));
    // A crash now forgets the delivery and the acceptance together: nothing claims more.
    drop(agent);
    let persisted = inspect(&dir.path().join("spool")).expect("inspect").expect("spool").counts;
    assert!(adds_up(&persisted) && persisted.delivered == 0 && persisted.accepted == 0, "{persisted:?}");
    assert_no_plaintext(dir.path(), "after a direct post");

    // A clean stop makes the counts durable with the state write it makes anyway.
    let mut agent = open_agent(config(dir.path(), &server.url));
    cycle(&mut agent, Vec::new());
    cycle(&mut agent, (12..20).map(log_record).collect());
    agent.shutdown();
    drop(agent);
    let persisted = inspect(&dir.path().join("spool")).expect("inspect").expect("spool").counts;
    assert_eq!((persisted.accepted, persisted.delivered, persisted.backlog), (8, 8, 0), "{persisted:?}");
}

/// The `laptop` trace before this change: the ping window was appended at the cycle it arrived
/// and posted a cycle later, because a slot with nothing to send moved the next slot a whole
/// `widget_log_interval` past that push, a few milliseconds after the next window's cycle. A
/// slot with nothing to send now stays open: the next records go in the cycle they arrive.
#[test]
fn records_arriving_after_an_empty_slot_are_posted_in_the_cycle_they_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StandIn::start();
    let mut config = config(dir.path(), &server.url);
    config.widget_log_interval = Duration::from_millis(400);
    let mut agent = open_agent(config);
    cycle(&mut agent, vec![log_record(0)]);
    assert_eq!(server.posts(), 1);
    // Cycles with nothing to send, past the next slot.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        cycle(&mut agent, Vec::new());
    }
    assert_eq!(server.posts(), 1, "no request without records");
    let (generation, bytes) = (spool(&agent).state_generation(), spool(&agent).stats().bytes);
    cycle(&mut agent, vec![log_record(1)]);
    assert_eq!(server.posts(), 2, "posted in the cycle it arrived");
    assert_eq!(server.stored(), [(0, 1), (1, 1)].into_iter().collect());
    assert_eq!((spool(&agent).state_generation(), spool(&agent).stats().bytes), (generation, bytes), "no write");
    // Within the interval a new record waits for the slot (in the spool: never in memory
    // across a sleep), and goes with it.
    cycle(&mut agent, vec![log_record(2)]);
    assert_eq!((server.posts(), spool(&agent).unacked_records()), (2, 1), "not before the slot");
    std::thread::sleep(Duration::from_millis(450));
    cycle(&mut agent, Vec::new());
    assert_eq!((server.posts(), spool(&agent).unacked_records()), (3, 0));
    assert_eq!(server.stored(), [(0, 1), (1, 1), (2, 1)].into_iter().collect());
}

#[test]
fn a_refused_connection_hands_the_held_records_to_the_spool_in_the_same_cycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StandIn::start();
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let mut agent = open_agent(config(dir.path(), &dead));
    cycle(&mut agent, (0..5).map(log_record).collect());
    assert!(agent.sender.as_mut().expect("sender").take_unsent().is_empty(), "nothing held past the cycle");
    assert_eq!(spool(&agent).unacked_records(), 5, "stored before the loop sleeps");
    // A reload to the right URL: the spool path delivers them.
    agent.config.server_url = Some(server.url.clone());
    rebuild_sender(&mut agent);
    cycle(&mut agent, Vec::new());
    assert_eq!(server.stored(), (0..5).map(|n| (n, 1)).collect());
    let counts = spool(&agent).stats().counts;
    assert_eq!((counts.accepted, counts.delivered, counts.backlog), (5, 5, 0));
    assert_no_plaintext(dir.path(), "refused connection");
}

#[test]
fn a_timed_out_direct_post_is_spooled_then_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StandIn::start();
    let mut agent = open_agent(config(dir.path(), &server.url));
    server.plan(&[Fault::Stall]);
    cycle(&mut agent, (0..3).map(log_record).collect());
    assert_eq!(spool(&agent).unacked_records(), 3);
    rebuild_sender(&mut agent);
    cycle(&mut agent, Vec::new());
    assert_eq!(server.stored(), (0..3).map(|n| (n, 1)).collect());
    assert_eq!(spool(&agent).stats().counts.delivered, 3);
}

#[test]
fn sigterm_with_held_records_stores_them_before_the_last_push() {
    for last_push in [Fault::Unavailable, Fault::Ok] {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = StandIn::start();
        let mut agent = open_agent(config(dir.path(), &server.url));
        // What the widgets hold at SIGTERM (an open ping window) reaches `accept` in
        // `shutdown`, when a post is due: it is stored, then the last push tries the spool.
        agent.store((0..4).map(log_record).collect());
        server.plan(&[last_push]);
        agent.shutdown();
        drop(agent);
        let persisted = inspect(&dir.path().join("spool")).expect("inspect").expect("spool").counts;
        assert!(adds_up(&persisted), "{persisted:?}");
        match last_push {
            Fault::Ok => {
                assert_eq!(server.stored(), (0..4).map(|n| (n, 1)).collect());
                assert_eq!((persisted.accepted, persisted.delivered, persisted.backlog), (4, 4, 0));
            }
            _ => {
                assert!(server.stored().is_empty());
                assert_eq!((persisted.accepted, persisted.delivered, persisted.backlog), (4, 0, 4), "kept");
            }
        }
        assert_no_plaintext(dir.path(), "shutdown");
    }
}

/// xorshift64*: small, seeded, replayable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One seeded run; returns the faults it drew.
fn run_seed(seed: u64) -> Vec<Fault> {
    let context = format!("seed {seed} (FLEET_DIRECT_SEED={seed} replays)");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StandIn::start();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut agent = open_agent(config(dir.path(), &server.url));
    cycle(&mut agent, Vec::new());
    let (mut next, mut refused, mut lost, mut drawn) = (0u64, Vec::new(), 0usize, Vec::new());
    let faults = [Fault::Unavailable, Fault::TooMany, Fault::Refuse, Fault::LostAnswer, Fault::Dropped, Fault::Ok];
    for step in 0..8 {
        let answer = faults[rng.below(faults.len() as u64) as usize];
        drawn.push(answer);
        let count = 1 + rng.below(12);
        let records: Vec<Record> = (next..next + count).map(log_record).collect();
        next += count;
        // The sender is new (the test's fast-forward): its first turn writes its bookkeeping
        // once, as at every start; the step is the turn after.
        cycle(&mut agent, Vec::new());
        let backlog_before = spool(&agent).unacked_records();
        let (generation, bytes) = (spool(&agent).state_generation(), spool(&agent).stats().bytes);
        let posts = server.posts();
        server.plan(&[answer]);
        cycle(&mut agent, records);
        let step_context = format!("{context}, step {step}: {answer:?} with {count} records");
        assert_eq!(server.posts(), posts + 1, "one widget-log post this cycle: {step_context}");
        assert!(agent.sender.as_mut().expect("sender").take_unsent().is_empty(), "held past the cycle");
        if answer == Fault::Ok && backlog_before == 0 {
            assert_eq!(spool(&agent).state_generation(), generation, "direct: no state write: {step_context}");
            assert_eq!(spool(&agent).stats().bytes, bytes, "direct: no segment write: {step_context}");
        }
        if answer != Fault::Ok {
            assert_eq!(spool(&agent).unacked_records(), backlog_before + count, "spooled: {step_context}");
        }
        lost += usize::from(answer == Fault::LostAnswer);
        assert!(adds_up(&spool(&agent).stats().counts), "{step_context}");
        // The spool path takes over: a permanent refusal is refused again and set aside.
        if answer == Fault::Refuse {
            server.plan(&[Fault::Refuse]);
            refused.extend(next - count..next);
        }
        rebuild_sender(&mut agent);
        for _ in 0..4 {
            if spool(&agent).unacked_records() == 0 {
                break;
            }
            cycle(&mut agent, Vec::new());
            rebuild_sender(&mut agent);
        }
        assert_eq!(spool(&agent).unacked_records(), 0, "drained: {step_context}");
        assert!(adds_up(&spool(&agent).stats().counts), "{step_context}");
        if rng.below(3) == 0 {
            // A crash (no shutdown): in-memory counts are forgotten together.
            drop(agent);
            let persisted = inspect(&dir.path().join("spool")).expect("inspect").expect("spool").counts;
            assert!(adds_up(&persisted), "after a crash: {persisted:?}: {step_context}");
            agent = open_agent(config(dir.path(), &server.url));
            cycle(&mut agent, Vec::new());
        }
    }
    agent.shutdown();
    drop(agent);
    let stored = server.stored();
    let counts = inspect(&dir.path().join("spool")).expect("inspect").expect("spool").counts;
    for n in 0..next {
        let times = stored.get(&n).copied().unwrap_or(0);
        assert!((times >= 1) != refused.contains(&n), "record {n}: stored {times} times, refused: {context}");
    }
    let delivered_once: u64 = stored.len() as u64;
    let duplicates: usize = stored.values().map(|t| t - 1).sum();
    assert!(duplicates <= lost * 12, "duplicates only from lost answers ({duplicates}, {lost} lost): {context}");
    assert_eq!(counts.rejected, refused.len() as u64, "refused records in rejected/: {context}");
    assert_eq!(delivered_once + refused.len() as u64, next, "every record delivered or rejected: {context}");
    assert!(adds_up(&counts), "{counts:?}: {context}");
    assert!(counts.delivered <= delivered_once, "never more delivered than acknowledged: {counts:?}: {context}");
    assert_no_plaintext(dir.path(), &context);
    drawn
}

#[test]
fn seeded_faults_on_direct_posts_lose_nothing_and_count_exactly() {
    let seeds: Vec<u64> = match std::env::var("FLEET_DIRECT_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=6).collect(),
    };
    let replay = seeds.len() == 1;
    let drawn: Vec<Fault> = seeds.into_iter().flat_map(run_seed).collect();
    let faults = [Fault::Unavailable, Fault::TooMany, Fault::Refuse, Fault::LostAnswer, Fault::Dropped, Fault::Ok];
    assert!(replay || faults.iter().all(|f| drawn.contains(f)), "the seeds cover every fault: {drawn:?}");
}
