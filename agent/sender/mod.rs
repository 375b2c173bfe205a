//! The sender: moves records from the spool to the server, sealed, and acks them.
//!
//! One call to [`Sender::push`] per loop turn, bounded by a deadline so collection keeps its
//! schedule. Two protocols (DESIGN section 4):
//!
//! - **atlas**: every `min(interval, 30 s)` one `POST /api/fleet/report` with the newest
//!   report (the server's heartbeat; a report that could not be sent is replaced by the next,
//!   never queued), then the spool's widget-log records in `POST /api/fleet/widget-logs`
//!   batches of at most 500 entries and 1 MiB. Metric records in the spool are represented by
//!   the report, so they are acknowledged without being sent one by one.
//! - **v2**: spool records in sealed batches (at most 500 records, 1 MiB) with a persisted,
//!   strictly increasing `seq`; the batch is written to `inflight.json` before it is sent, so
//!   after a crash it is resent with the same seq and content. A seq always carries exactly
//!   the records it was first built with (its start cursor and record count are persisted),
//!   also when it is resealed under a new key or rebuilt because no key is configured. The
//!   protocol is written down in `docs/v2-protocol.md`.
//!
//! Answers (see [`verdict`]): 2xx acks; 408/429/5xx/3xx and transport errors back off
//! (exponential, full jitter, 1 s to 5 min, `Retry-After` honoured); `400 Decryption failed`
//! keeps everything and retries every 5 min with one error naming the key id; 401/403/404/405
//! likewise (a wrong API key or URL is not the payload's fault); `409` (v2) means the
//! receiver holds other records under this `(machine_id, seq)` (a second machine with our id,
//! a cloned disk image): one error naming the machine id, the records are kept and resent
//! under a fresh, random seq range; another 4xx moves that
//! payload, as sent, to `rejected/`, counts it and goes on. Nothing is dropped silently, and
//! when a key is configured every body is sealed: there is no code path that sends plaintext
//! with a key present.

pub mod backoff;
pub mod commands;
pub mod http;
pub mod state;
pub mod verdict;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_widgets::{SampleKind, Timestamp};
use serde_json::json;

use crate::config::{Config, Protocol};
use crate::envelope;
use crate::keys::{Key32, SecretString};
use crate::record::BatchBody;
use crate::report::{widget_log_entry, LatestReport};
use crate::spool::Spool;

use crate::host::SystemHost;
use crate::random::random_unit;
use crate::transport_key;
use backoff::Backoff;
use commands::CommandChannel;
use http::{HttpClient, HttpError, HttpSettings};
use state::{store_rejected, ErrorEvent, Inflight, SenderState};
use verdict::{classify, Verdict};

/// Most records in one request.
pub const MAX_BATCH_RECORDS: usize = 500;
/// Most plaintext bytes of records in one request: sealing adds base64 (4/3) and a small
/// envelope, so the body stays under 1 MiB.
pub const MAX_BATCH_PLAINTEXT: usize = 700 * 1024;
/// Longest gap between two Atlas reports (the server's heartbeat expectation).
pub const MAX_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// Connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the sender could not be built.
#[derive(Debug)]
pub enum SenderError {
    /// The HTTP client could not be configured (bad `ca_file`).
    Http(HttpError),
    /// The persisted state is unreadable.
    State(String),
    /// The rotated transport key in the state directory is unreadable or damaged.
    Key(crate::transport_key::TransportKeyError),
}

impl std::fmt::Display for SenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SenderError::Http(e) => write!(f, "configuring the HTTP client: {e}"),
            SenderError::State(e) => write!(f, "sender state: {e}"),
            SenderError::Key(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SenderError {}

/// True for `http(s)://127.x.x.x`, `localhost` and `[::1]` URLs: traffic that never leaves
/// the machine, where plain HTTP deserves no warning.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What one request came to, for the push loop.
enum Step {
    /// Delivered (or rejected for good and set aside): go on.
    Continue,
    /// Nothing more to send now.
    Idle,
    /// Backing off: stop for this turn.
    Wait,
}

/// Pushes spooled records to one server.
pub struct Sender {
    client: HttpClient,
    protocol: Protocol,
    machine_id: String,
    key: Option<Key32>,
    kid: Option<String>,
    spool_dir: PathBuf,
    state: SenderState,
    backoff: Backoff,
    retry_at: Option<Instant>,
    report_interval: Duration,
    next_report: Instant,
    state_save_error: Option<String>,
    commands: Option<CommandChannel>,
    restart_requested: bool,
    /// `409` answers since the last other answer.
    collisions_in_a_row: u32,
}

impl Sender {
    /// Build a sender for `config` (which must have a `server_url`), logging the start-up
    /// warnings (plain HTTP, no key, TLS verification off).
    pub fn new(config: &Config, server_url: &str, spool_dir: PathBuf) -> Result<Self, SenderError> {
        if server_url.starts_with("http://") && !is_loopback_url(server_url) {
            log::warn!("server_url uses plain http://: transport is not encrypted by TLS");
        }
        if !config.verify_ssl {
            log::warn!("verify_ssl is false: the server's TLS certificate is NOT verified");
        }
        if config.encryption_key.is_none() {
            log::warn!("no encryption_key: bodies are sent unsealed (protected by TLS only)");
        }
        let settings = HttpSettings {
            ca_file: config.ca_file.as_deref(),
            verify_tls: config.verify_ssl,
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        };
        let api_key = config.api_key.as_ref().map(|k| SecretString::new(k.expose().to_string()));
        let client = HttpClient::new(server_url, api_key, &settings).map_err(SenderError::Http)?;
        let mut state = SenderState::load(&spool_dir).map_err(SenderError::State)?;
        state.server = Some(server_url.to_string());
        state.protocol = config.protocol.as_str().to_string();
        let (active, warning) =
            transport_key::resolve(config.encryption_key.as_ref(), config.encryption_key_source, &spool_dir)
                .map_err(SenderError::Key)?;
        if let Some(warning) = warning {
            log::warn!("{warning}");
        }
        if let Some(active) = &active {
            log::info!("transport key id {} (from {})", active.kid, active.source.as_str());
        }
        let (key, kid) = match active {
            Some(active) => (Some(active.key), Some(active.kid)),
            None => (None, None),
        };
        let commands = (config.protocol == Protocol::Atlas).then(|| {
            CommandChannel::new(config.commands_allow.clone(), spool_dir.clone(), Box::new(SystemHost::new()))
        });
        Ok(Sender {
            client,
            protocol: config.protocol,
            machine_id: config.machine_id.clone(),
            key,
            kid,
            spool_dir,
            state,
            backoff: Backoff::default(),
            retry_at: None,
            report_interval: config.interval.min(MAX_REPORT_INTERVAL),
            next_report: Instant::now(),
            state_save_error: None,
            commands,
            restart_requested: false,
            collisions_in_a_row: 0,
        })
    }

    /// True once a `restart_agent` command has been acknowledged: the loop should stop
    /// cleanly and the process start again.
    pub fn restart_requested(&self) -> bool {
        self.restart_requested
    }

    /// The key id of the transport key in use (`None`: no key).
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Atlas: poll the command channel when due, and apply what the commands did.
    fn poll_commands(&mut self) {
        let Some(channel) = self.commands.as_mut() else { return };
        let effects = channel.poll_if_due(&self.client, &self.machine_id, &mut self.key);
        if effects.key_changed {
            let old = self.kid.take();
            self.kid = self.key.as_ref().map(envelope::kid);
            log::info!(
                "transport key rotated: key id {} -> {} (the spool's own key is unchanged)",
                old.as_deref().unwrap_or("(none)"),
                self.kid.as_deref().unwrap_or("(none)")
            );
        }
        self.restart_requested |= effects.restart;
    }

    /// The persisted state (for tests and `status`).
    pub fn state(&self) -> &SenderState {
        &self.state
    }

    /// When the sender next wants to run (`None`: whenever there is new data).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let poll = self.commands.as_ref().map(CommandChannel::next_poll);
        let wake = match (self.retry_at, self.protocol) {
            (Some(at), _) => Some(at),
            (None, Protocol::Atlas) => Some(self.next_report),
            (None, Protocol::V2) => None,
        };
        match (wake, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Send what can be sent before `deadline`. Errors are logged and recorded in the state,
    /// never returned: the loop goes on collecting whatever happens here.
    pub fn push(&mut self, spool: &mut Spool, report: &LatestReport, deadline: Instant) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.poll_commands();
        if self.protocol == Protocol::Atlas && Instant::now() >= self.next_report && report.has_data() {
            self.next_report = Instant::now() + self.report_interval;
            if let Step::Wait = self.send_report(report) {
                self.save_state();
                return;
            }
        }
        // At least one request per turn, even when collection overran its slot.
        loop {
            let step = match self.protocol {
                Protocol::Atlas => self.send_widget_logs(spool),
                Protocol::V2 => self.send_v2_batch(spool),
            };
            match step {
                Step::Continue if Instant::now() < deadline => continue,
                _ => break,
            }
        }
        self.save_state();
    }

    fn save_state(&mut self) {
        self.state.retry_at = self.retry_at.map(|at| {
            let wait = at.saturating_duration_since(Instant::now());
            Timestamp(Timestamp::now().0 + wait.as_millis() as i64).to_rfc3339()
        });
        // Logged once per distinct failure (a full disk fails every turn).
        match self.state.save(&self.spool_dir) {
            Ok(()) => {
                if self.state_save_error.take().is_some() {
                    log::info!("sender state is written again");
                }
            }
            Err(e) if self.state_save_error.as_deref() == Some(e.as_str()) => log::debug!("{e}"),
            Err(e) => {
                log::error!("saving the sender state: {e}");
                self.state_save_error = Some(e);
            }
        }
    }

    fn seal_v1(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        match &self.key {
            Some(key) => envelope::seal_v1(key, plaintext).map_err(|e| e.to_string()),
            None => Ok(plaintext.to_vec()),
        }
    }

    fn send_report(&mut self, report: &LatestReport) -> Step {
        let plaintext = report.to_json(&self.machine_id).to_string();
        let body = match self.seal_v1(plaintext.as_bytes()) {
            Ok(body) => body,
            Err(e) => return self.local_failure(&format!("sealing the report: {e}")),
        };
        match self.post("/api/fleet/report", &body) {
            Some(Verdict::Ack) => Step::Continue,
            Some(Verdict::Reject { reason } | Verdict::Conflict { reason }) => {
                self.reject("report", &body, &reason);
                Step::Continue
            }
            _ => Step::Wait,
        }
    }

    fn send_widget_logs(&mut self, spool: &mut Spool) -> Step {
        let batch = match spool.read_from(spool.acked_cursor(), MAX_BATCH_RECORDS, MAX_BATCH_PLAINTEXT) {
            Ok(batch) => batch,
            Err(e) => return self.local_failure(&format!("reading the spool: {e}")),
        };
        if batch.records.is_empty() {
            return Step::Idle;
        }
        let logs: Vec<_> = batch.records.iter().filter(|r| r.kind == SampleKind::Log).map(widget_log_entry).collect();
        if logs.is_empty() {
            // Only metric records: the report carries them.
            return self.ack(spool, batch.next, 0);
        }
        let count = logs.len() as u64;
        let plaintext = json!({ "machine_id": self.machine_id, "logs": logs }).to_string();
        let body = match self.seal_v1(plaintext.as_bytes()) {
            Ok(body) => body,
            Err(e) => return self.local_failure(&format!("sealing widget logs: {e}")),
        };
        match self.post("/api/fleet/widget-logs", &body) {
            Some(Verdict::Ack) => self.ack(spool, batch.next, count),
            Some(Verdict::Reject { reason } | Verdict::Conflict { reason }) => {
                self.reject("widget-logs", &body, &reason);
                self.ack(spool, batch.next, 0)
            }
            _ => Step::Wait,
        }
    }

    fn send_v2_batch(&mut self, spool: &mut Spool) -> Step {
        let inflight = match Inflight::load(&self.spool_dir) {
            Ok(Some(inflight)) if inflight.kid == self.kid && !inflight.body.is_empty() => inflight,
            Ok(Some(stale)) => {
                if stale.kid != self.kid {
                    log::info!(
                        "in-flight batch {} was sealed with key id {}; resealing it with key id {}",
                        stale.seq,
                        stale.kid.as_deref().unwrap_or("(none)"),
                        self.kid.as_deref().unwrap_or("(none)")
                    );
                }
                match self.rebuild_v2_batch(spool, &stale, stale.seq) {
                    Ok(Some(inflight)) => inflight,
                    Ok(None) => return self.finish_v2(spool, &stale, 0),
                    Err(e) => return self.local_failure(&e),
                }
            }
            Ok(None) => match self.build_v2_batch(spool) {
                Ok(Some(inflight)) => inflight,
                Ok(None) => return Step::Idle,
                Err(e) => return self.local_failure(&e),
            },
            Err(e) => return self.local_failure(&e),
        };
        let verdict = self.post("/api/v2/batches", inflight.body.as_bytes());
        if !matches!(verdict, Some(Verdict::Conflict { .. })) {
            self.collisions_in_a_row = 0;
        }
        match verdict {
            Some(Verdict::Ack) => self.finish_v2(spool, &inflight, inflight.records),
            Some(Verdict::Conflict { reason }) => self.seq_collision(spool, &inflight, &reason),
            Some(Verdict::Reject { reason }) => {
                self.reject(&format!("batch-{}", inflight.seq), inflight.body.as_bytes(), &reason);
                self.finish_v2(spool, &inflight, 0)
            }
            _ => Step::Wait,
        }
    }

    /// `409`: the receiver stored other records under this `(machine_id, seq)`: another agent
    /// sends under our machine id with the same seq numbers (two machines with one id, a
    /// cloned disk image with its `sender.json`, a restored backup). The records are ours and
    /// not stored: move to a fresh, random seq range and send the same records again under a
    /// new seq. Nothing is acked, nothing is lost, and nothing is stored twice (the receiver
    /// stored nothing of ours under the old seq).
    fn seq_collision(&mut self, spool: &mut Spool, inflight: &Inflight, reason: &str) -> Step {
        let fresh = fresh_seq_base(self.state.next_seq.max(inflight.seq + 1));
        let message = format!(
            "server holds other records under machine_id {:?} seq {} ({reason}): another agent reports \
             with this machine_id and the same seq numbers (two machines with one machine_id, a cloned disk \
             image, a restored backup?); give each machine its own machine_id. Records are kept and resent \
             under a fresh seq range starting at {fresh}",
            self.machine_id, inflight.seq
        );
        log::error!("{message}");
        self.record_error(&message);
        self.state.seq_collisions += 1;
        self.state.next_seq = fresh;
        if let Err(e) = self.state.save(&self.spool_dir) {
            return self.local_failure(&e);
        }
        let seq = self.state.next_seq;
        self.collisions_in_a_row += 1;
        match self.rebuild_v2_batch(spool, inflight, seq) {
            // A server that answers 409 to every fresh seq is not a collision: back off.
            Ok(Some(_)) if self.collisions_in_a_row >= 3 => {
                self.retry_at = Some(Instant::now() + self.backoff.next_delay(random_unit(), None));
                Step::Wait
            }
            Ok(Some(_)) => Step::Continue,
            Ok(None) => self.finish_v2(spool, inflight, 0),
            Err(e) => self.local_failure(&e),
        }
    }

    /// Build (and persist) the next batch from the spool under a new seq.
    fn build_v2_batch(&mut self, spool: &mut Spool) -> Result<Option<Inflight>, String> {
        let start = spool.acked_cursor();
        let batch = spool
            .read_from(start, MAX_BATCH_RECORDS, MAX_BATCH_PLAINTEXT)
            .map_err(|e| format!("reading the spool: {e}"))?;
        if batch.records.is_empty() {
            return Ok(None);
        }
        let seq = self.state.next_seq;
        self.seal_v2_batch(spool, seq, start, batch).map(Some)
    }

    /// Rebuild `old` (resealing it, or rebuilding a body that was not kept) under `seq` with
    /// EXACTLY the records it carried: the `records` records from its start cursor, which must
    /// end at its end cursor. If the spool no longer holds them all (a damaged segment was
    /// quarantined, the size cap dropped one; both counted as dropped), the seq cannot be sent
    /// again with other content: the batch is rebuilt from what is left under a NEW seq.
    /// `Ok(None)`: nothing of it is left.
    fn rebuild_v2_batch(&mut self, spool: &mut Spool, old: &Inflight, seq: u64) -> Result<Option<Inflight>, String> {
        let start = old.start.unwrap_or(spool.acked_cursor()).max(spool.acked_cursor());
        let batch =
            spool.read_from(start, old.records as usize, usize::MAX).map_err(|e| format!("reading the spool: {e}"))?;
        if batch.records.is_empty() {
            log::warn!("none of the records of in-flight batch {} is left in the spool", old.seq);
            return Ok(None);
        }
        if batch.records.len() as u64 == old.records && batch.next == old.end {
            return self.seal_v2_batch(spool, seq, start, batch).map(Some);
        }
        self.state.next_seq = self.state.next_seq.max(seq + 1).max(old.seq + 1);
        let fresh = self.state.next_seq;
        log::warn!(
            "in-flight batch {} cannot be rebuilt as sent ({} of {} records left in the spool, the rest counted \
             as dropped); sending what is left as batch {fresh}",
            old.seq,
            batch.records.len(),
            old.records
        );
        self.seal_v2_batch(spool, fresh, start, batch).map(Some)
    }

    /// Seal `batch` (records read from `start`) as `seq` and persist it as the in-flight batch.
    fn seal_v2_batch(
        &mut self,
        spool: &Spool,
        seq: u64,
        start: crate::spool::Cursor,
        batch: crate::spool::ReadBatch,
    ) -> Result<Inflight, String> {
        let records = batch.records.len() as u64;
        let body = BatchBody {
            machine_id: self.machine_id.clone(),
            seq,
            sent_at: Timestamp::now().to_rfc3339(),
            records: batch.records,
            dropped: spool.stats().dropped,
        };
        let plaintext = serde_json::to_vec(&body).map_err(|e| format!("encoding batch {seq}: {e}"))?;
        let sealed = match &self.key {
            Some(key) => envelope::seal_v2(key, &self.machine_id, seq, &plaintext).map_err(|e| e.to_string())?,
            None => plaintext,
        };
        let body = String::from_utf8(sealed).map_err(|_| format!("batch {seq} body is not UTF-8"))?;
        let inflight = Inflight { seq, start: Some(start), end: batch.next, records, kid: self.kid.clone(), body };
        inflight.save(&self.spool_dir)?;
        Ok(inflight)
    }

    /// Acknowledged (or set aside): advance seq, ack the spool, forget the in-flight batch, in
    /// that order, so a crash anywhere in between only causes a resend the receiver ignores.
    fn finish_v2(&mut self, spool: &mut Spool, inflight: &Inflight, delivered: u64) -> Step {
        self.state.next_seq = self.state.next_seq.max(inflight.seq + 1);
        if let Err(e) = self.state.save(&self.spool_dir) {
            return self.local_failure(&e);
        }
        if let Step::Wait = self.ack(spool, inflight.end, delivered) {
            return Step::Wait;
        }
        match Inflight::clear(&self.spool_dir) {
            Ok(()) => Step::Continue,
            Err(e) => self.local_failure(&e),
        }
    }

    fn ack(&mut self, spool: &mut Spool, cursor: crate::spool::Cursor, delivered: u64) -> Step {
        match spool.ack(cursor) {
            Ok(()) => {
                self.state.sent_records += delivered;
                Step::Continue
            }
            Err(e) => self.local_failure(&format!("acknowledging in the spool: {e}")),
        }
    }

    fn reject(&mut self, what: &str, body: &[u8], reason: &str) {
        self.state.rejected += 1;
        match store_rejected(&self.spool_dir, what, body, self.key.is_some()) {
            Ok(path) => log::error!("server refused {what} for good ({reason}); kept in {}", path.display()),
            Err(e) => log::error!("server refused {what} for good ({reason}); could not keep it: {e}"),
        }
    }

    /// A local problem (disk, spool): record it and pause like a server failure.
    fn local_failure(&mut self, message: &str) -> Step {
        log::error!("{message}");
        self.record_error(message);
        self.retry_at = Some(Instant::now() + self.backoff.next_delay(random_unit(), None));
        Step::Wait
    }

    fn record_error(&mut self, message: &str) {
        self.state.consecutive_failures = self.backoff.failures();
        self.state.last_error = Some(ErrorEvent { at: Timestamp::now().to_rfc3339(), message: message.to_string() });
    }

    /// POST and turn the outcome into a verdict, updating backoff and state. `None` for a
    /// transport failure (already handled as a retry).
    fn post(&mut self, path: &str, body: &[u8]) -> Option<Verdict> {
        let verdict = match self.client.post_json(path, body) {
            Ok(response) => classify(&response),
            Err(e) => {
                let message = format!("POST {}{path}: {e}", self.client.base_url());
                let delay = self.backoff.next_delay(random_unit(), None);
                log::warn!("{message}; retrying in {:.1}s", delay.as_secs_f64());
                self.record_error(&message);
                self.retry_at = Some(Instant::now() + delay);
                return None;
            }
        };
        match &verdict {
            Verdict::Ack | Verdict::Reject { .. } | Verdict::Conflict { .. } => {
                if self.backoff.failures() > 0 {
                    log::info!("server {} reachable again", self.client.base_url());
                }
                self.backoff.reset();
                self.retry_at = None;
                self.state.consecutive_failures = 0;
                self.state.last_success = Some(Timestamp::now().to_rfc3339());
            }
            Verdict::Retry { retry_after, reason } => {
                let delay = self.backoff.next_delay(random_unit(), *retry_after);
                let message = format!("POST {path}: {reason}");
                log::warn!("{message}; retrying in {:.1}s", delay.as_secs_f64());
                self.record_error(&message);
                self.retry_at = Some(Instant::now() + delay);
            }
            Verdict::KeyMismatch => {
                let delay = self.backoff.slow_delay();
                let message = format!(
                    "server could not decrypt with key id {} (400 Decryption failed): the server holds another \
                     encryption_key; everything is kept, retrying in {}s",
                    self.kid.as_deref().unwrap_or("(no key)"),
                    delay.as_secs()
                );
                log::error!("{message}");
                self.record_error(&message);
                self.retry_at = Some(Instant::now() + delay);
            }
            Verdict::Misconfigured { reason } => {
                let delay = self.backoff.slow_delay();
                let message = format!(
                    "POST {}{path}: {reason}: check api_key and server_url; everything is kept, retrying in {}s",
                    self.client.base_url(),
                    delay.as_secs()
                );
                log::error!("{message}");
                self.record_error(&message);
                self.retry_at = Some(Instant::now() + delay);
            }
        }
        Some(verdict)
    }
}

/// The start of a fresh seq range after a collision: at least `floor` and the clock (in ms,
/// like a new agent's first seq), plus a random offset below 2^40, so two agents that collided
/// (both holding the same `sender.json`) move to different ranges.
pub fn fresh_seq_base(floor: u64) -> u64 {
    let offset = (random_unit() * (1u64 << 40) as f64) as u64;
    floor.max(Timestamp::now().0.max(1) as u64).saturating_add(1 + offset)
}

#[cfg(test)]
mod tests {
    use super::{fresh_seq_base, is_loopback_url};

    #[test]
    fn fresh_seq_ranges_move_forward_and_apart() {
        let a = fresh_seq_base(10);
        let b = fresh_seq_base(10);
        assert!(a > 10 && b > 10);
        assert_ne!(a, b, "two agents that collided pick different ranges");
        assert!(fresh_seq_base(u64::MAX - 1) == u64::MAX);
    }

    #[test]
    fn loopback_urls_are_recognised() {
        for url in ["http://127.0.0.1:8768", "http://localhost/x", "http://[::1]:80/", "http://127.1.2.3"] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in ["http://fleet.example.com", "http://10.0.0.1:80", "http://127.0.0.1.evil.com/", "http://[::2]/"] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
