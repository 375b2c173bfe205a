//! The `info` line `run` prints now and then, so an admin watching the log (or the journal)
//! sees that data flows: records delivered since the last line, the backlog, and whether the
//! sender is failing. The first line comes [`FIRST_AFTER`] after start (an admin checking a new
//! install), then one every [`EVERY`].
//!
//! Self-contained: the loop feeds it plain counts ([`Counts`]) when [`Progress::due`] says so,
//! and logs the line it returns; it knows nothing of the spool or the sender.

use std::time::{Duration, Instant};

/// Delay before the first progress line.
pub const FIRST_AFTER: Duration = Duration::from_secs(60);
/// Interval between later progress lines.
pub const EVERY: Duration = Duration::from_secs(600);

/// What the loop knows when a line is due.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records delivered since the sender's state began (cumulative; `None` without a server).
    pub delivered_total: Option<u64>,
    /// Records kept and not yet acknowledged (spool plus held in memory).
    pub backlog: u64,
    /// The sender's error while it is failing (consecutive failures > 0).
    pub failing: Option<String>,
    /// When the server last accepted something (RFC 3339), for Atlas mode where the metrics
    /// travel in reports rather than as counted records.
    pub last_success: Option<String>,
}

/// When the next line is due and the delivered count at the last one.
#[derive(Debug, Clone)]
pub struct Progress {
    every: Duration,
    next: Instant,
    since: Instant,
    delivered_at_last_line: u64,
}

impl Progress {
    /// Lines at [`FIRST_AFTER`], then every [`EVERY`]; `delivered_total` is the sender's
    /// cumulative count now (0 without a server).
    pub fn new(now: Instant, delivered_total: u64) -> Self {
        Self::with_intervals(now, delivered_total, FIRST_AFTER, EVERY)
    }

    /// Custom intervals (tests).
    pub fn with_intervals(now: Instant, delivered_total: u64, first_after: Duration, every: Duration) -> Self {
        Progress { every, next: now + first_after, since: now, delivered_at_last_line: delivered_total }
    }

    /// The line naming the transport key in use, for the start of `run` (`kid`: the key id,
    /// `None`: no `encryption_key`).
    pub fn start_line(kid: Option<&str>) -> String {
        match kid {
            Some(kid) => format!("transport key id {kid}: every body is sealed"),
            None => "no transport key: bodies are sent unsealed (TLS only)".to_string(),
        }
    }

    /// Whether a line is due (cheap: call it every turn, gather the counts only when true).
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// The line for `counts`; schedules the next one.
    pub fn line(&mut self, now: Instant, counts: &Counts) -> String {
        let span = now.saturating_duration_since(self.since);
        self.since = now;
        self.next = now + self.every;
        let span = format_span(span);
        let Some(total) = counts.delivered_total else {
            return format!("spooling only (no server_url): backlog {} records", counts.backlog);
        };
        // A reload builds a new sender whose total starts from its saved state: never negative.
        let delivered = total.saturating_sub(std::mem::replace(&mut self.delivered_at_last_line, total));
        let mut line = format!("{delivered} records delivered in the last {span}, backlog {} records", counts.backlog);
        // With nothing counted (Atlas reports carry the metrics; or an outage) say when the
        // server last took something.
        if let Some(at) = counts.last_success.as_ref().filter(|_| delivered == 0) {
            line.push_str(&format!(", last accepted by the server at {at}"));
        }
        if let Some(error) = &counts.failing {
            line.push_str(&format!("; sending is failing: {error}"));
        }
        line
    }
}

/// `62 s`, `10 min`, `1 h 5 min`.
fn format_span(span: Duration) -> String {
    let s = span.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_at_the_intervals_with_deltas() {
        let start = Instant::now();
        let mut progress = Progress::with_intervals(start, 1000, Duration::from_secs(60), Duration::from_secs(600));
        assert!(!progress.due(start + Duration::from_secs(59)));
        let at = start + Duration::from_secs(60);
        assert!(progress.due(at));
        let counts = Counts { delivered_total: Some(1120), backlog: 3, failing: None, last_success: None };
        assert_eq!(progress.line(at, &counts), "120 records delivered in the last 60 s, backlog 3 records");
        assert!(!progress.due(at + Duration::from_secs(599)));
        let later = at + Duration::from_secs(600);
        assert!(progress.due(later));
        let counts = Counts { delivered_total: Some(2320), backlog: 0, failing: None, last_success: None };
        assert_eq!(progress.line(later, &counts), "1200 records delivered in the last 10 min, backlog 0 records");
        let failing =
            Counts { delivered_total: Some(2320), backlog: 42, failing: Some("HTTP 503".into()), last_success: None };
        let line = progress.line(later + Duration::from_secs(62), &failing);
        assert_eq!(line, "0 records delivered in the last 62 s, backlog 42 records; sending is failing: HTTP 503");
        let reset = Counts { delivered_total: Some(5), backlog: 0, failing: None, last_success: None };
        assert!(progress
            .line(later + Duration::from_secs(4000), &reset)
            .starts_with("0 records delivered in the last 1 h 5 min"));
        let atlas = Counts {
            delivered_total: Some(5),
            backlog: 0,
            failing: None,
            last_success: Some("2026-12-01T18:00:00.000Z".into()),
        };
        assert!(progress.line(later, &atlas).ends_with(", last accepted by the server at 2026-12-01T18:00:00.000Z"));
        let spool_only = Counts { delivered_total: None, backlog: 7, failing: None, last_success: None };
        assert_eq!(progress.line(later, &spool_only), "spooling only (no server_url): backlog 7 records");
    }

    #[test]
    fn the_start_line_names_the_key_id() {
        assert_eq!(Progress::start_line(Some("ab12cd34")), "transport key id ab12cd34: every body is sealed");
        assert!(Progress::start_line(None).contains("unsealed"));
    }
}
