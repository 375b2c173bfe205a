//! The forwarder thread of `fleet-agent receive --forward-otlp URL`: it loops on the store's
//! `forward_pending`, encodes what it is handed ([`super::encode`]) and POSTs it to
//! `URL/v1/metrics` and `URL/v1/logs` with the sender's [`HttpClient`]. Behaviour, answers
//! and counters: `docs/otlp-forwarding.md`.
//!
//! - At-least-once: the store advances its cursor only when a push returns Ok, i.e. after
//!   the collector answered 2xx to every request of the push (or refused it for good, which is
//!   counted as rejected). A failed push is offered again, whole; within one retry streak a body
//!   the collector already accepted is not posted again (a digest of it is remembered).
//! - Never in the ingest path: its own thread, its own reads of the store; a collector outage
//!   only grows the distance between the cursor and the newest commit.
//! - Bounded: one push is about `max_rows` rows; after a failure it waits a full-jitter
//!   exponential delay capped at `retry_max` (at least the collector's `Retry-After`, itself
//!   capped at an hour); a collector needing an admin (401, 403, 404, TLS) is retried at the cap.
//! - Counted: [`ForwardStats`], logged at every change of health and every minute while
//!   anything moves, and once at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::encode::{self, Export};
use super::source::{Committed, PendingSource};
use crate::sender::backoff::{Backoff, MAX_RETRY_AFTER};
use crate::sender::http::{HttpClient, HttpError, HttpResponse};

/// OTLP/HTTP path of metrics, appended to the URL.
pub const METRICS_PATH: &str = "/v1/metrics";
/// OTLP/HTTP path of logs, appended to the URL.
pub const LOGS_PATH: &str = "/v1/logs";
/// Default rows per push (one agent batch holds at most 500 records).
pub const DEFAULT_MAX_ROWS: usize = 500;
/// Default wait between two looks at the store when nothing is pending.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_secs(1);
/// Default longest wait between two attempts after failures.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
/// How often a summary is logged while something moves or fails.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Counters of the forwarder (all since start).
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Stored rows whose push the collector accepted (the cursor moved past them).
    pub rows_forwarded: AtomicU64,
    /// Data points accepted.
    pub data_points: AtomicU64,
    /// Log records accepted.
    pub log_records: AtomicU64,
    /// Requests answered 2xx.
    pub requests_ok: AtomicU64,
    /// Push attempts that failed and will be retried (collector down, 5xx, 429, timeouts, …).
    pub failed_attempts: AtomicU64,
    /// Data points and log records the collector refused for good (400, other 4xx, a
    /// `partialSuccess` rejection): logged, counted, not retried.
    pub rejected: AtomicU64,
    /// Stored rows that made nothing (unknown kind, no usable time).
    pub skipped_rows: AtomicU64,
    /// Errors reading the store (the same rows are tried again).
    pub store_errors: AtomicU64,
}

impl ForwardStats {
    /// One line: `forwarded 1200 rows (3400 points, 12 logs), 2 failed attempts, 0 rejected, 0 skipped`.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "forwarded {} rows ({} data points, {} log records, {} requests), {} failed attempts (retried), \
             {} rejected by the collector, {} rows skipped, {} store errors",
            get(&self.rows_forwarded),
            get(&self.data_points),
            get(&self.log_records),
            get(&self.requests_ok),
            get(&self.failed_attempts),
            get(&self.rejected),
            get(&self.skipped_rows),
            get(&self.store_errors),
        )
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// How the forwarder runs.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// Rows per push (about; whole batches).
    pub max_rows: usize,
    /// Wait between looks at the store when nothing is pending.
    pub idle_poll: Duration,
    /// Longest wait between attempts after failures.
    pub retry_max: Duration,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings { max_rows: DEFAULT_MAX_ROWS, idle_poll: DEFAULT_IDLE_POLL, retry_max: DEFAULT_RETRY_MAX }
    }
}

/// Why a push did not go through.
#[derive(Debug)]
enum PushError {
    /// Worth retrying soon: connection, timeout, 408, 429, 5xx, 3xx.
    Transient { what: String, retry_after: Option<Duration> },
    /// Only an admin can fix it (401, 403, 404, 405, TLS): retried at the cap.
    NeedsAdmin(String),
    /// 413: the body is too large for the collector; fewer rows per push may pass.
    TooLarge(String),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Transient { what, .. } | PushError::NeedsAdmin(what) | PushError::TooLarge(what) => {
                f.write_str(what)
            }
        }
    }
}

/// What one POST came to.
enum Posted {
    /// 2xx; the count the collector rejected in a `partialSuccess`.
    Accepted(u64),
    /// A permanent refusal (400, other 4xx): nothing of it will ever be accepted.
    Refused(String),
}

/// Classify a collector's answer to a POST (OTLP/HTTP spec, "Failures"; 5xx other than the
/// spec's 502/503/504 are retried too: a collector that crashed answers 500).
fn classify(path: &str, response: &HttpResponse) -> Result<Posted, PushError> {
    let status = response.status;
    let said = || {
        let body: String = response.body.chars().take(200).collect();
        format!("collector answered {status} to {path}: {}", body.trim())
    };
    match status {
        200..=299 => Ok(Posted::Accepted(partial_rejections(&response.body))),
        408 | 429 | 500..=599 | 300..=399 => {
            Err(PushError::Transient { what: said(), retry_after: response.retry_after })
        }
        401 | 403 | 404 | 405 => Err(PushError::NeedsAdmin(said())),
        413 => Err(PushError::TooLarge(said())),
        _ => Ok(Posted::Refused(said())),
    }
}

/// `partialSuccess.rejectedDataPoints` / `rejectedLogRecords` of a 2xx answer (0 if none).
fn partial_rejections(body: &str) -> u64 {
    let Ok(value) = serde_json::from_str::<Value>(body) else { return 0 };
    let Some(partial) = value.get("partialSuccess") else { return 0 };
    ["rejectedDataPoints", "rejectedLogRecords"]
        .iter()
        .filter_map(|key| partial.get(*key))
        .filter_map(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .sum()
}

/// Posts what a push hands over; remembers, across the retries of one push, which bodies the
/// collector already took.
struct Pusher {
    client: HttpClient,
    version: String,
    stats: Arc<ForwardStats>,
    /// Digests of bodies accepted since the cursor last moved.
    accepted: Vec<[u8; 32]>,
}

impl Pusher {
    fn post(&mut self, path: &str, body: &Value) -> Result<Posted, PushError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if self.accepted.contains(&digest) {
            return Ok(Posted::Accepted(0));
        }
        let response = self.client.post_json(path, &bytes).map_err(|e| match e {
            e @ (HttpError::Tls(_) | HttpError::CaFile { .. }) => PushError::NeedsAdmin(e.to_string()),
            HttpError::Transport(what) => {
                PushError::Transient { what: format!("posting to {path}: {what}"), retry_after: None }
            }
        })?;
        log::debug!("OTLP {path}: {} bytes -> {}", bytes.len(), response.status);
        let posted = classify(path, &response)?;
        ForwardStats::add(&self.stats.requests_ok, u64::from(matches!(posted, Posted::Accepted(_))));
        self.accepted.push(digest);
        Ok(posted)
    }

    fn push(&mut self, batch: &[Committed]) -> Result<(), PushError> {
        let export: Export = encode::encode(batch, &self.version);
        let mut rejected = 0;
        for (path, body, count) in
            [(METRICS_PATH, &export.metrics, export.data_points), (LOGS_PATH, &export.logs, export.log_records)]
        {
            let Some(body) = body else { continue };
            match self.post(path, body)? {
                Posted::Accepted(0) => {}
                Posted::Accepted(n) => {
                    log::warn!("OTLP collector rejected {n} of {count} items sent to {path} (partial success)");
                    rejected += n;
                }
                Posted::Refused(why) => {
                    log::error!("{why}: {count} items refused for good, not retried (counted as rejected)");
                    rejected += count as u64;
                }
            }
        }
        let stats = &self.stats;
        ForwardStats::add(&stats.data_points, export.data_points as u64);
        ForwardStats::add(&stats.log_records, export.log_records as u64);
        ForwardStats::add(&stats.rejected, rejected);
        ForwardStats::add(&stats.skipped_rows, export.skipped as u64);
        Ok(())
    }
}

/// Stop flag with a wake-up.
#[derive(Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    /// Wait up to `limit`; true when stopping.
    fn wait(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            stopped = self.wake.wait_timeout(stopped, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        *stopped
    }

    fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
}

/// The running forwarder thread.
pub struct Forwarder {
    stop: Arc<StopSignal>,
    stats: Arc<ForwardStats>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Start forwarding what `source` holds with `client` (its base URL is the collector's).
    pub fn start(
        source: Arc<dyn PendingSource>,
        client: HttpClient,
        settings: ForwardSettings,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(StopSignal::default());
        let stats = Arc::new(ForwardStats::default());
        let pusher = Pusher {
            client,
            version: env!("CARGO_PKG_VERSION").to_string(),
            stats: stats.clone(),
            accepted: Vec::new(),
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-forwarder".into())
            .spawn(move || run(source.as_ref(), pusher, &settings, &thread_stop))?;
        Ok(Forwarder { stop, stats, thread: Some(thread) })
    }

    /// The counters (live).
    pub fn stats(&self) -> Arc<ForwardStats> {
        self.stats.clone()
    }

    /// Stop after the current attempt (at most one request's timeout) and log the totals.
    pub fn stop(mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        log::info!("OTLP forwarder stopped: {}", self.stats.summary());
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// True for an `http://` URL whose host is not loopback (`127.x`, `::1`, `localhost`).
fn is_cleartext_to_another_host(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// The forwarder loop (until `stop`).
fn run(source: &dyn PendingSource, mut pusher: Pusher, settings: &ForwardSettings, stop: &StopSignal) {
    let collector = pusher.client.base_url().to_string();
    log::info!("forwarding committed records from {} to the OTLP collector {collector}", source.describe());
    if is_cleartext_to_another_host(&collector) {
        log::warn!(
            "--forward-otlp {collector} is plain http to another host: the records, decrypted, cross the network in \
             clear (use https://)"
        );
    }
    let stats = pusher.stats.clone();
    let mut backoff = Backoff::default();
    let mut max_rows = settings.max_rows.max(1);
    let mut last_summary = Instant::now();
    let mut last_failure_log: Option<Instant> = None;
    let mut summarized = String::new();
    while !stop.is_set() {
        let mut failure: Option<PushError> = None;
        let result = source.forward_pending(max_rows, &mut |batch| match pusher.push(batch) {
            Ok(()) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                failure = Some(e);
                Err(text)
            }
        });
        let wait = match (result, failure) {
            (_, Some(PushError::TooLarge(why))) if max_rows > 1 => {
                max_rows = (max_rows / 2).max(1);
                log::warn!("{why}: sending at most {max_rows} rows per request from now on");
                Duration::ZERO
            }
            (_, Some(e)) => {
                ForwardStats::add(&stats.failed_attempts, 1);
                let delay = match &e {
                    PushError::Transient { retry_after, .. } => backoff
                        .next_delay(crate::random::random_unit(), None)
                        .min(settings.retry_max)
                        .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER)),
                    PushError::NeedsAdmin(_) | PushError::TooLarge(_) => {
                        let _ = backoff.slow_delay();
                        settings.retry_max
                    }
                };
                if last_failure_log.is_none_or(|at| at.elapsed() >= SUMMARY_EVERY) {
                    log::warn!(
                        "OTLP forwarding to {collector} failed ({} in a row): {e}; retrying in {:.1} s, nothing is lost \
                         (the cursor has not moved)",
                        backoff.failures(),
                        delay.as_secs_f64()
                    );
                    last_failure_log = Some(Instant::now());
                }
                delay
            }
            (Ok(0), None) => settings.idle_poll,
            (Ok(rows), None) => {
                ForwardStats::add(&stats.rows_forwarded, rows as u64);
                pusher.accepted.clear();
                if backoff.failures() > 0 {
                    log::info!("OTLP collector {collector} accepts again after {} failed attempts", backoff.failures());
                    last_failure_log = None;
                }
                backoff.reset();
                max_rows = (max_rows * 2).min(settings.max_rows.max(1));
                Duration::ZERO
            }
            (Err(e), None) => {
                ForwardStats::add(&stats.store_errors, 1);
                let delay = backoff.next_delay(crate::random::random_unit(), None).min(settings.retry_max);
                log::error!(
                    "OTLP forwarding: reading {}: {e}; retrying in {:.1} s",
                    source.describe(),
                    delay.as_secs_f64()
                );
                delay
            }
        };
        if last_summary.elapsed() >= SUMMARY_EVERY {
            let summary = stats.summary();
            if summary != summarized {
                log::info!("OTLP forwarder: {summary}");
                summarized = summary;
            }
            last_summary = Instant::now();
        }
        if !wait.is_zero() && stop.wait(wait) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, retry_after: None, body: body.into(), location: None }
    }

    #[test]
    fn answers_are_classified_as_the_otlp_spec_says() {
        assert!(matches!(classify("/v1/metrics", &answer(200, "{}")), Ok(Posted::Accepted(0))));
        assert!(matches!(
            classify(
                "/v1/metrics",
                &answer(200, r#"{"partialSuccess":{"rejectedDataPoints":"3","errorMessage":"x"}}"#)
            ),
            Ok(Posted::Accepted(3))
        ));
        assert!(matches!(
            classify("/v1/logs", &answer(200, r#"{"partialSuccess":{"rejectedLogRecords":2}}"#)),
            Ok(Posted::Accepted(2))
        ));
        for status in [408, 429, 500, 502, 503, 504, 307] {
            assert!(matches!(classify("/v1/logs", &answer(status, "")), Err(PushError::Transient { .. })), "{status}");
        }
        for status in [401, 403, 404, 405] {
            assert!(matches!(classify("/v1/logs", &answer(status, "")), Err(PushError::NeedsAdmin(_))), "{status}");
        }
        assert!(matches!(classify("/v1/logs", &answer(413, "")), Err(PushError::TooLarge(_))));
        assert!(matches!(classify("/v1/logs", &answer(400, "bad")), Ok(Posted::Refused(why)) if why.contains("400")));
    }

    #[test]
    fn plain_http_is_flagged_unless_to_loopback() {
        assert!(is_cleartext_to_another_host("http://otel.example.com:4318"));
        assert!(is_cleartext_to_another_host("http://10.0.0.5:4318/otlp"));
        assert!(!is_cleartext_to_another_host("http://127.0.0.1:4318"));
        assert!(!is_cleartext_to_another_host("http://[::1]:4318"));
        assert!(!is_cleartext_to_another_host("http://localhost:4318"));
        assert!(!is_cleartext_to_another_host("https://otel.example.com"));
    }

    #[test]
    fn the_stop_signal_wakes_a_waiting_loop_at_once() {
        let stop = Arc::new(StopSignal::default());
        let other = stop.clone();
        let started = Instant::now();
        let waiter = std::thread::spawn(move || other.wait(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        stop.set();
        assert!(waiter.join().unwrap_or(false));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!StopSignal::default().wait(Duration::from_millis(10)));
    }
}
