//! What every wire protocol shares: one server (HTTP client, API key), the transport key in
//! use, the answer handling of [`super::verdict`] with its backoff, the persisted
//! [`SenderState`] and the `rejected/` folder. Each protocol module owns one [`Link`].
//!
//! The [`SenderState`] (bookkeeping: last success and error, counters; v2's `next_seq` and
//! in-flight batch) lives in the spool's state record (`state.bin`). It rides along with
//! every ack ([`Link::ack`]: one write for the ack, its counters and the bookkeeping); a change
//! that no ack carries (a report sent, an error) is written at most every
//! [`STATE_SAVE_INTERVAL`] and at shutdown, so a steady cycle costs no extra write. What
//! decides what is sent (an ack, v2's in-flight batch and its seq, a seq collision) is written
//! when it changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_widgets::Timestamp;

use super::backoff::Backoff;
use super::http::{HttpClient, HttpSettings};
use super::state::{store_rejected, ErrorEvent, SenderState};
use super::verdict::{classify, Verdict};
use super::{is_loopback_url, SenderError, Step, CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use crate::config::Config;
use crate::random::random_unit;
use crate::spool::{Acked, Cursor, Spool};
use crate::transport_key;
use fleet_wire::envelope;
use fleet_wire::keys::{Key32, SecretString};
use fleet_wire::record::Record;

/// Longest time bookkeeping changes that no ack carries stay unwritten: `status` may show a
/// last success or error this much older after a crash (never an ack that is not durable).
/// Five minutes: once in 5 minutes is what a quiet agent writes for bookkeeping alone, and
/// what an Atlas laptop writes in its steady state (its ping window is posted straight from
/// memory, with no ack to write; this write also makes the delivered counts durable).
pub const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(300);

/// One server, the key, answers and backoff, and the persisted state.
pub struct Link {
    /// The HTTP client for the server.
    pub client: HttpClient,
    /// This machine's id.
    pub machine_id: String,
    /// The transport key (`None`: bodies go unsealed).
    pub key: Option<Key32>,
    /// Its key id.
    pub kid: Option<String>,
    /// The state directory (the spool's).
    pub spool_dir: PathBuf,
    /// Persisted state.
    pub state: SenderState,
    /// Backoff after failures.
    pub backoff: Backoff,
    /// No request before this.
    pub retry_at: Option<Instant>,
    state_save_error: Option<String>,
    last_saved: Option<Instant>,
    dirty: bool,
    /// Whether the state last written shows a failing sender (a change is written promptly).
    saved_failing: bool,
}

impl Link {
    /// Connect settings, state and key for `config` (which has a `server_url`), logging the
    /// start-up warnings (plain HTTP, no key, TLS verification off) and the key id in use.
    pub fn new(config: &Config, server_url: &str, spool_dir: PathBuf) -> Result<Self, SenderError> {
        if server_url.starts_with("http://") && !is_loopback_url(server_url) {
            log::warn!("server_url uses plain http://: transport is not encrypted by TLS");
        }
        if !config.verify_ssl {
            log::warn!("verify_ssl is false: the server's TLS certificate is NOT verified");
        }
        let settings = HttpSettings {
            ca_file: config.ca_file.as_deref(),
            pinned: &config.server_cert_sha256,
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
        let (key, kid) = match active {
            Some(active) => {
                log::info!("transport key id {} (from {})", active.kid, active.source.as_str());
                state.key_source = Some(active.source.as_str().to_string());
                (Some(active.key), Some(active.kid))
            }
            None => {
                log::warn!("no encryption_key: bodies are sent unsealed (protected by TLS only)");
                state.key_source = None;
                (None, None)
            }
        };
        state.kid = kid.clone();
        let saved_failing = state.consecutive_failures > 0;
        Ok(Link {
            client,
            machine_id: config.machine_id.clone(),
            key,
            kid,
            spool_dir,
            state,
            backoff: Backoff::default(),
            retry_at: None,
            state_save_error: None,
            last_saved: None,
            dirty: true,
            saved_failing,
        })
    }

    /// Mark the state as changed (written by the next lazy save).
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// True while a retry is not yet due.
    pub fn backing_off(&self) -> bool {
        self.retry_at.is_some_and(|at| Instant::now() < at)
    }

    /// The key was replaced (a rotation): re-derive its id.
    pub fn key_replaced(&mut self) {
        let old = self.kid.take();
        self.kid = self.key.as_ref().map(envelope::kid);
        self.state.kid = self.kid.clone();
        self.state.key_source = Some(transport_key::KeySource::Rotated.as_str().to_string());
        self.dirty = true;
        log::info!(
            "transport key rotated: key id {} -> {} (the spool's own key is unchanged)",
            old.as_deref().unwrap_or("(none)"),
            self.kid.as_deref().unwrap_or("(none)")
        );
    }

    /// Write the state if it changed and the last write is [`STATE_SAVE_INTERVAL`] old, or at
    /// once when the sender started or stopped failing (so `status` says so within a cycle;
    /// that happens once per outage, not per cycle).
    pub fn save_lazily(&mut self, spool: &mut Spool) {
        let health_changed = self.failing() != self.saved_failing;
        if self.dirty && (health_changed || self.last_saved.is_none_or(|at| at.elapsed() >= STATE_SAVE_INTERVAL)) {
            let _ = self.save_now(spool); // logged inside
        }
    }

    /// When the state was last written by this process.
    pub fn last_saved(&self) -> Option<Instant> {
        self.last_saved
    }

    /// True while the last request failed (backing off).
    fn failing(&self) -> bool {
        self.backoff.failures() > 0
    }

    /// Write the state durably now (shutdown, v2's next batch, a changed `next_seq`), with any
    /// ack the spool holds in memory ([`Link::ack_later`]). Errors are logged once per
    /// distinct failure (a full disk fails every turn) and returned.
    pub fn save_now(&mut self, spool: &mut Spool) -> Result<(), String> {
        let result = self.stored().and_then(|value| spool.store_sender(value).map_err(|e| e.to_string()));
        self.saved(result)
    }

    /// The state as written (with `retry_at` from the backoff).
    fn stored(&mut self) -> Result<serde_json::Value, String> {
        self.state.retry_at = self.retry_at.map(|at| {
            let wait = at.saturating_duration_since(Instant::now());
            Timestamp(Timestamp::now().0 + wait.as_millis() as i64).to_rfc3339()
        });
        self.state.to_stored()
    }

    /// Note the outcome of a state write.
    fn saved(&mut self, result: Result<(), String>) -> Result<(), String> {
        match &result {
            Ok(()) => {
                self.dirty = false;
                self.last_saved = Some(Instant::now());
                self.saved_failing = self.failing();
                if self.state_save_error.take().is_some() {
                    log::info!("sender state is written again");
                }
            }
            Err(e) if self.state_save_error.as_deref() == Some(e.as_str()) => log::debug!("{e}"),
            Err(e) => {
                log::error!("saving the sender state: {e}");
                self.state_save_error = Some(e.clone());
            }
        }
        result
    }

    /// Seal `plaintext` as a v1 envelope (unchanged without a key).
    pub fn seal_v1(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        match &self.key {
            Some(key) => envelope::seal_v1(key, plaintext).map_err(|e| e.to_string()),
            None => Ok(plaintext.to_vec()),
        }
    }

    /// Acknowledge up to `cursor` in the spool, durably: the counts and this state land in
    /// the same write as the cursor (Atlas: its server does not recognise a resend, so an
    /// ack is durable before the next post).
    pub fn ack(&mut self, spool: &mut Spool, cursor: Cursor, counts: Acked) -> Step {
        self.state.sent_records += counts.delivered;
        let result = self.stored().and_then(|value| {
            spool.ack_counted_with(cursor, counts, value).map_err(|e| format!("acknowledging in the spool: {e}"))
        });
        match self.saved(result) {
            Ok(()) => Step::Continue,
            Err(e) => {
                self.state.sent_records -= counts.delivered;
                self.dirty = true;
                self.local_failure(&e)
            }
        }
    }

    /// Acknowledge up to `cursor` in the spool's memory only: durable with the next state
    /// write (v2's next in-flight batch, the lazy save, shutdown). For a protocol whose server
    /// recognises a resend after a crash (v2: same seq, same records).
    pub fn ack_later(&mut self, spool: &mut Spool, cursor: Cursor, counts: Acked) -> Step {
        match spool.ack_later(cursor, counts) {
            Ok(()) => {
                self.state.sent_records += counts.delivered;
                self.dirty = true;
                Step::Continue
            }
            Err(e) => self.local_failure(&format!("acknowledging in the spool: {e}")),
        }
    }

    /// Records the server refused for good: keep them (sealed) in the spool's `rejected/`,
    /// counted, before they are acked. `Wait` if they could not be kept (nothing is acked).
    pub fn set_aside(
        &mut self,
        spool: &mut Spool,
        start: Cursor,
        records: &[Record],
        what: &str,
        reason: &str,
    ) -> Step {
        self.state.rejected += 1;
        self.dirty = true;
        match spool.set_aside(start, records, what, reason) {
            Ok(()) => {
                log::error!(
                    "server refused {what} for good ({reason}); its {} records are kept in {} \
                     (`fleet-agent spool requeue-rejected` sends them again once the cause is fixed)",
                    records.len(),
                    self.spool_dir.join(super::state::REJECTED_DIR).display()
                );
                Step::Continue
            }
            Err(e) => self.local_failure(&format!("server refused {what} for good ({reason}); keeping it: {e}")),
        }
    }

    /// Keep a payload the server refused for good in `rejected/`, and count it (the Atlas
    /// report, which is not in the spool).
    pub fn reject(&mut self, what: &str, body: &[u8], reason: &str) {
        self.state.rejected += 1;
        self.dirty = true;
        match store_rejected(&self.spool_dir, what, body, self.key.is_some()) {
            Ok(path) => log::error!("server refused {what} for good ({reason}); kept in {}", path.display()),
            Err(e) => log::error!("server refused {what} for good ({reason}); could not keep it: {e}"),
        }
    }

    /// A local problem (disk, spool): record it and pause like a server failure.
    pub fn local_failure(&mut self, message: &str) -> Step {
        log::error!("{message}");
        self.record_error(message);
        self.retry_at = Some(Instant::now() + self.backoff.next_delay(random_unit(), None));
        Step::Wait
    }

    /// Note an error in the state.
    pub fn record_error(&mut self, message: &str) {
        self.state.consecutive_failures = self.backoff.failures();
        self.state.last_error = Some(ErrorEvent { at: Timestamp::now().to_rfc3339(), message: message.to_string() });
        self.dirty = true;
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.spool_dir
    }

    /// POST and turn the outcome into a verdict, updating backoff and state. `None` for a
    /// transport failure (already handled as a retry).
    pub fn post(&mut self, path: &str, body: &[u8]) -> Option<Verdict> {
        let verdict = match self.client.post_json(path, body) {
            Ok(response) => classify(&response),
            // A certificate or pin problem: an error with the fix, retried slowly.
            Err(e) if e.needs_admin() => Verdict::Misconfigured { reason: e.to_string() },
            Err(e) => {
                let message = format!("POST {}{path}: {e}", self.client.base_url());
                let delay = self.backoff.next_delay(random_unit(), None);
                log::warn!("{message}; retrying in {:.1}s", delay.as_secs_f64());
                self.record_error(&message);
                self.retry_at = Some(Instant::now() + delay);
                return None;
            }
        };
        self.dirty = true;
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
                    "POST {}{path}: {reason}; everything is kept, retrying in {}s",
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
