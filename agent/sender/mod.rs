//! The sender: moves records to the server, sealed, and acks them in the spool.
//!
//! One wire protocol per module, each behind the small [`Sender`] trait and owning its state;
//! the run loop talks only to the trait, and [`build`] is the one place that knows which
//! protocols exist (a third one is a module and a line there):
//!
//! - [`atlas`]: Atlas's fleet server (report, widget logs, command channel; docs/architecture.md, "Atlas protocol", and docs/atlas-commands.md).
//! - [`v2`]: our sealed, sequenced batches (`docs/v2-protocol.md`).
//!
//! Both share a [`link::Link`] (the server, the key, answer handling and backoff, the state
//! file). Answers (see [`verdict`]): 2xx acks; 408/429/5xx/3xx and transport errors back off
//! (exponential, full jitter, 1 s to 5 min, `Retry-After` honoured); `400 Decryption failed`
//! keeps everything and retries every 5 min with one error naming the key id; 401/403/404/405
//! likewise (a wrong API key or URL is not the payload's fault); `409` (v2) means the
//! receiver holds other records under this `(machine_id, seq)` (a second machine with our id,
//! a cloned disk image): one error naming the machine id, the records are kept and resent
//! under a fresh, random seq range; another 4xx moves the records of that
//! payload to the spool's `rejected/` (sealed with the spool's key, counted, bounded;
//! `fleet-agent spool requeue-rejected` puts them back) and goes on. Nothing is dropped silently, and
//! when a key is configured every body is sealed: there is no code path that sends plaintext
//! with a key present.

pub mod atlas;
pub mod backoff;
pub mod commands;
pub mod http;
pub mod link;
pub mod state;
pub mod v2;
pub mod verdict;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{Config, Protocol};
use crate::host::SystemHost;
use crate::spool::Spool;
use fleet_wire::record::Record;

use atlas::AtlasSender;
use commands::CommandChannel;
use http::HttpError;
use link::Link;
use state::SenderState;
use v2::V2Sender;

pub use v2::fresh_seq_base;

/// Most records in one request.
pub const MAX_BATCH_RECORDS: usize = 500;
/// Most plaintext bytes of records in one request: sealing adds base64 (4/3) and a small
/// envelope, so the body stays under 1 MiB.
pub const MAX_BATCH_PLAINTEXT: usize = 700 * 1024;
/// Connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A periodic request (Atlas report, command poll) due within this much of now is made at the
/// current wake-up instead of one of its own a moment later: the loop wakes once per cycle
/// (collect, then send), not once to collect and again to send. A request is never made more
/// than this much early, and the request budget still applies.
pub const DUE_SLACK: Duration = Duration::from_millis(500);

/// True when a periodic request scheduled at `at` is due at `now` (within [`DUE_SLACK`], and
/// never more than a tenth of `period` early).
pub fn due(now: Instant, at: Instant, period: Duration) -> bool {
    now + DUE_SLACK.min(period / 10) >= at
}

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
pub enum Step {
    /// Delivered (or rejected for good and set aside): go on.
    Continue,
    /// Nothing more to send now.
    Idle,
    /// Backing off: stop for this turn.
    Wait,
}

/// One wire protocol: owns its state, takes the records of each cycle, pushes.
pub trait Sender {
    /// This cycle's records; returns those that must be stored in the spool now (a protocol
    /// may keep some in memory only: Atlas folds metrics into its report, and holds fresh
    /// widget logs for a direct post this cycle). `backlog` is how many records wait to be
    /// stored or sent before them (unacknowledged in the spool, or held by `run` while the
    /// disk is full): with a backlog nothing is held, so records leave in order.
    fn accept(&mut self, records: Vec<Record>, backlog: u64) -> Vec<Record>;
    /// Records [`Sender::accept`] held in memory that [`Sender::push`] did not deliver (the
    /// post failed, was refused, or was not made this cycle). The loop stores them in the
    /// spool before it sleeps, before a reload replaces the sender and before shutdown's
    /// [`Sender::flush`]: held records never outlive the cycle they arrived in.
    fn take_unsent(&mut self) -> Vec<Record> {
        Vec::new()
    }
    /// Send what is due before `deadline`. Errors are logged and recorded in the state, never
    /// returned: the loop goes on collecting whatever happens here.
    fn push(&mut self, spool: &mut Spool, deadline: Instant);
    /// Shutdown: a last push regardless of the send schedule, and the state written.
    fn flush(&mut self, spool: &mut Spool, deadline: Instant);
    /// Write the state now (a reload is about to replace this sender: what only its memory
    /// holds, such as the count of records delivered since the last write, must not be lost).
    fn save(&mut self, spool: &mut Spool);
    /// When this sender next wants to run (`None`: at the next collection).
    fn next_wakeup(&self) -> Option<Instant>;
    /// The persisted state (for tests and `status`).
    fn state(&self) -> &SenderState;
    /// The transport key id in use (`None`: no key).
    fn kid(&self) -> Option<&str>;
    /// True once the server asked for a restart (Atlas `restart_agent`): stop cleanly and
    /// start again.
    fn restart_requested(&self) -> bool {
        false
    }
}

/// The sender for `config` (which must have a `server_url`), spooling state in `spool_dir`.
pub fn build(config: &Config, server_url: &str, spool_dir: PathBuf) -> Result<Box<dyn Sender>, SenderError> {
    let link = Link::new(config, server_url, spool_dir.clone())?;
    Ok(match config.protocol {
        Protocol::Atlas => {
            let commands = CommandChannel::new(config.commands_allow.clone(), spool_dir, Box::new(SystemHost::new()));
            Box::new(AtlasSender::new(link, commands, config.send_interval, config.widget_log_interval))
        }
        Protocol::V2 => Box::new(V2Sender::new(link, config.send_interval)),
    })
}

#[cfg(test)]
mod tests {
    use super::{due, is_loopback_url, DUE_SLACK};
    use std::time::{Duration, Instant};

    #[test]
    fn a_request_due_just_after_this_wake_up_goes_with_it_and_never_earlier_than_the_slack() {
        let now = Instant::now();
        let period = Duration::from_secs(20);
        assert!(due(now, now, period) && due(now, now - Duration::from_secs(1), period));
        // Scheduled 80 ms after the collection that woke the loop: sent now, no second wake-up.
        assert!(due(now, now + Duration::from_millis(80), period));
        assert!(due(now, now + DUE_SLACK, period));
        assert!(!due(now, now + DUE_SLACK + Duration::from_millis(1), period));
        // A short period is never shortened by more than a tenth.
        assert!(!due(now, now + Duration::from_millis(150), Duration::from_secs(1)));
        assert!(due(now, now + Duration::from_millis(100), Duration::from_secs(1)));
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
