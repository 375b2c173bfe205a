//! The `http` method: download from `{url}/__down?bytes=N` and upload to `{url}/__up` (the
//! Cloudflare speed test protocol, also served by the bundled receiver), over several parallel
//! connections.
//!
//! Order of a run, every step bounded by a timeout:
//!
//! 1. Idle latency: one warm-up `GET __down?bytes=0` (connection and TLS set-up, not timed),
//!    then [`IDLE_PROBES`] timed ones on the now-open connection: `ping` is their median,
//!    `jitter` the mean absolute difference of consecutive ones.
//! 2. Download: `connections` threads claim chunks of the download budget (two thirds of
//!    `max_bytes`) until it is used up and fetch them, counting body bytes as they arrive.
//!    The rate excludes the warm-up (the first tenth of the bytes, while TCP ramps up): it is
//!    the bytes after that point over the time from that point to the last byte. Meanwhile the
//!    main thread times small requests: `loaded_latency` is their median.
//! 3. Upload: the same with `POST __up` bodies (the rest of the budget), counted as the HTTP
//!    client reads them.
//!
//! `bytes_down`/`bytes_up` are all body bytes moved, warm-up included; `duration_s` is the
//! whole run. A phase stops at its time limit even if its budget is not used up.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ureq::{Agent, SendBody};

use super::parse::SpeedResult;

/// Timed idle-latency requests.
pub const IDLE_PROBES: usize = 5;

/// What to measure against and how much.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpPlan {
    /// Base URL without trailing slash, e.g. `https://speed.cloudflare.com`.
    pub url: String,
    /// Total bytes to move (download + upload).
    pub max_bytes: u64,
    /// Parallel connections per direction.
    pub connections: usize,
    /// Time limit of the download and of the upload phase.
    pub phase_limit: Duration,
    /// Time limit of one small (latency) request.
    pub request_timeout: Duration,
}

/// Why the HTTP test failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// A request failed: which one and why.
    Request {
        /// What was being done.
        action: &'static str,
        /// The client's error text.
        message: String,
    },
    /// A thread could not be started.
    Thread(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Request { action, message } => write!(f, "{action}: {message}"),
            HttpError::Thread(message) => write!(f, "starting a speedtest thread: {message}"),
        }
    }
}

impl std::error::Error for HttpError {}

fn agent(timeout: Duration, connections: usize) -> Agent {
    let config = Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .max_idle_connections_per_host(connections + 2)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .unversioned_rustls_crypto_provider(Arc::new(fleet_wire::tls::crypto_provider()))
                .build(),
        )
        .build();
    Agent::new_with_config(config)
}

/// `GET {url}/__down?bytes=0`, fully read; its duration.
fn small_request(agent: &Agent, url: &str) -> Result<Duration, ureq::Error> {
    let start = Instant::now();
    let mut response = agent.get(format!("{url}/__down?bytes=0")).call()?;
    io::copy(&mut response.body_mut().as_reader(), &mut io::sink())?;
    Ok(start.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// Run the whole test.
pub fn run(plan: &HttpPlan) -> Result<SpeedResult, HttpError> {
    let started = Instant::now();
    let url = plan.url.trim_end_matches('/').to_string();
    let probe_agent = agent(plan.request_timeout, 1);
    let fail = |action| move |e: ureq::Error| HttpError::Request { action, message: e.to_string() };

    small_request(&probe_agent, &url).map_err(fail("connecting for idle latency"))?;
    let idle: Vec<f64> = (0..IDLE_PROBES)
        .map(|_| small_request(&probe_agent, &url).map(ms))
        .collect::<Result<_, _>>()
        .map_err(fail("measuring idle latency"))?;

    let down_budget = plan.max_bytes / 3 * 2;
    let up_budget = plan.max_bytes - down_budget;
    let (down, mut loaded) = transfer(plan, &url, Direction::Down, down_budget, Some(&probe_agent))?;
    let (up, _) = transfer(plan, &url, Direction::Up, up_budget, None)?;

    let mut idle_sorted = idle.clone();
    Ok(SpeedResult {
        download_mbps: down.mbps(),
        upload_mbps: up.mbps(),
        ping_ms: median(&mut idle_sorted),
        jitter_ms: crate::ping::jitter(&idle),
        loaded_latency_ms: median(&mut loaded),
        responsiveness_rpm: None,
        server: Some(host_of(&url).to_string()),
        bytes_down: Some(down.bytes),
        bytes_up: Some(up.bytes),
        duration_s: Some(started.elapsed().as_secs_f64()),
    })
}

/// `https://host:port/path` → `host:port`.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Down,
    Up,
}

/// Bytes moved in one phase and the measurement window.
struct Phase {
    bytes: u64,
    window_bytes: u64,
    window: Duration,
}

impl Phase {
    fn mbps(&self) -> Option<f64> {
        let secs = self.window.as_secs_f64();
        (self.window_bytes > 0 && secs > 0.0).then(|| self.window_bytes as f64 * 8.0 / secs / 1e6)
    }
}

/// State shared by the transfer threads of one phase.
struct Shared {
    budget: u64,
    chunk: u64,
    claimed: AtomicU64,
    moved: AtomicU64,
    stop: AtomicBool,
    last_byte: Mutex<Option<Instant>>,
    error: Mutex<Option<String>>,
}

impl Shared {
    /// Reserve the next chunk of the budget; `None` when it is used up or time is over.
    fn claim(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let mut size = 0;
        self.claimed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                size = self.chunk.min(self.budget.saturating_sub(c));
                (size > 0).then_some(c + size)
            })
            .ok()
            .map(|_| size)
    }

    fn count(&self, n: usize) {
        self.moved.fetch_add(n as u64, Ordering::SeqCst);
        if let Ok(mut last) = self.last_byte.lock() {
            *last = Some(Instant::now());
        }
    }

    fn fail(&self, message: String) {
        if let Ok(mut error) = self.error.lock() {
            error.get_or_insert(message);
        }
    }
}

/// A request body of `remaining` bytes from a repeating pseudo-random pattern, counted as the
/// HTTP client reads it.
struct CountingBody<'a> {
    remaining: u64,
    pattern: &'a [u8],
    offset: usize,
    shared: &'a Shared,
}

impl Read for CountingBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "upload phase time limit"));
        }
        let n = buf.len().min(self.pattern.len() - self.offset).min(self.remaining as usize);
        buf[..n].copy_from_slice(&self.pattern[self.offset..self.offset + n]);
        self.offset = (self.offset + n) % self.pattern.len();
        self.remaining -= n as u64;
        self.shared.count(n);
        Ok(n)
    }
}

fn worker(agent: &Agent, url: &str, direction: Direction, shared: &Shared, pattern: &[u8]) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(size) = shared.claim() {
        let result: Result<(), String> = match direction {
            Direction::Down => (|| {
                let mut response = agent.get(format!("{url}/__down?bytes={size}")).call().map_err(|e| e.to_string())?;
                let mut body = response.body_mut().as_reader();
                loop {
                    if shared.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    match body.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => shared.count(n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            })(),
            Direction::Up => (|| {
                let mut body = CountingBody { remaining: size, pattern, offset: 0, shared };
                let mut response = agent
                    .post(format!("{url}/__up"))
                    .header("content-length", size.to_string())
                    .header("content-type", "application/octet-stream")
                    .send(SendBody::from_reader(&mut body))
                    .map_err(|e| e.to_string())?;
                io::copy(&mut response.body_mut().as_reader(), &mut io::sink()).map(|_| ()).map_err(|e| e.to_string())
            })(),
        };
        if let Err(message) = result {
            if !shared.stop.load(Ordering::Relaxed) {
                shared.fail(message);
            }
            return;
        }
    }
}

/// One phase: `plan.connections` threads move `budget` bytes; with `probe` the main thread
/// measures loaded latency meanwhile. Returns the phase and the loaded-latency samples (ms).
fn transfer(
    plan: &HttpPlan,
    url: &str,
    direction: Direction,
    budget: u64,
    probe: Option<&Agent>,
) -> Result<(Phase, Vec<f64>), HttpError> {
    let connections = plan.connections.max(1);
    let chunk = (budget / (connections as u64 * 4)).clamp(64 * 1024, 25_000_000);
    let shared = Arc::new(Shared {
        budget,
        chunk,
        claimed: AtomicU64::new(0),
        moved: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        last_byte: Mutex::new(None),
        error: Mutex::new(None),
    });
    let mut pattern = vec![0u8; 64 * 1024];
    if getrandom::fill(&mut pattern).is_err() {
        pattern.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 131 % 251) as u8);
    }
    let pattern = Arc::new(pattern);
    let transfer_agent = agent(plan.phase_limit, connections);
    let start = Instant::now();
    let deadline = start + plan.phase_limit;
    let mut handles = Vec::with_capacity(connections);
    for i in 0..connections {
        let (agent, url, mine, pattern) =
            (transfer_agent.clone(), url.to_string(), Arc::clone(&shared), Arc::clone(&pattern));
        let handle = thread::Builder::new()
            .name(format!("speedtest-{i}"))
            .spawn(move || worker(&agent, &url, direction, &mine, &pattern))
            .map_err(|e| HttpError::Thread(e.to_string()));
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.stop.store(true, Ordering::SeqCst);
                handles.into_iter().for_each(|h| drop(h.join()));
                return Err(e);
            }
        }
    }
    let all_done = |handles: &[thread::JoinHandle<()>]| handles.iter().all(|h| h.is_finished());
    // Warm-up: the first tenth of the bytes.
    let warm_bytes = budget / 10;
    let mut warm: Option<(Instant, u64)> = None;
    let mut loaded = Vec::new();
    while !all_done(&handles) {
        let now = Instant::now();
        if now >= deadline {
            shared.stop.store(true, Ordering::SeqCst);
            break;
        }
        let moved = shared.moved.load(Ordering::SeqCst);
        if warm.is_none() && moved >= warm_bytes {
            warm = Some((now, moved));
        }
        match (warm, probe) {
            (Some(_), Some(agent)) => {
                if let Ok(d) = small_request(agent, url) {
                    if !all_done(&handles) {
                        loaded.push(ms(d));
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            _ => thread::sleep(Duration::from_millis(2)),
        }
    }
    for handle in handles {
        let _ = handle.join();
    }
    let bytes = shared.moved.load(Ordering::SeqCst);
    let end = shared.last_byte.lock().ok().and_then(|l| *l).unwrap_or(start);
    let (from, from_bytes) = match warm {
        Some((t, b)) if end > t && bytes > b => (t, b),
        _ => (start, 0),
    };
    if bytes == 0 {
        let message = shared.error.lock().ok().and_then(|e| e.clone()).unwrap_or_else(|| "no data".to_string());
        let action = if direction == Direction::Down { "downloading" } else { "uploading" };
        return Err(HttpError::Request { action, message });
    }
    Ok((Phase { bytes, window_bytes: bytes - from_bytes, window: end.saturating_duration_since(from) }, loaded))
}
