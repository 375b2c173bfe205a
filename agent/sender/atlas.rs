//! The Atlas protocol: what Atlas's fleet server expects from its own agent
//! (`atlas/fleet_agent.py`). This module owns the report, the widget-log batching and the
//! command poller; it shares only the [`Link`] with other protocols.
//!
//! - **Report**: `POST /api/fleet/report` with the newest values, every `send_interval`
//!   (10..30 s; the dashboard shows a machine as late 30 s after its last report). Atlas keeps
//!   no history of metrics, so metric and machine-info records are folded into the report in
//!   memory and never written to the spool; a report that could not be sent is replaced by the
//!   next one, not queued.
//! - **Widget logs**: Atlas stores them, in `POST /api/fleet/widget-logs` batches (at most 500
//!   entries, 1 MiB), one batch at most every `widget_log_interval`, one per report while a
//!   backlog drains. Fresh records that arrive in a cycle whose post is due, with nothing
//!   unacknowledged before them and within one batch's limits, are held in memory and posted
//!   directly in that cycle ([`AtlasSender::accept`]): acknowledged, they are counted as
//!   delivered without a segment write or an ack write; otherwise (any failure, no budget,
//!   shutdown, a reload) `run` stores them in the spool before it sleeps
//!   ([`Sender::take_unsent`]) and the spool path takes over exactly as for records that were
//!   stored at once. Everything else goes through the encrypted spool. A slot with nothing to
//!   send makes no request and stays open, so the next records go when they arrive. Metric
//!   records that an older version left in the spool are acknowledged without being sent
//!   (the report represents them).
//! - **Commands**: polled at start and every 30 s ([`super::commands`]).
//! - **Request budget**: never more than [`ATLAS_REQUESTS_PER_MINUTE`] requests in any 60 s
//!   (polls, reports and widget-log batches; acks of the rare commands come on top, as for
//!   Atlas's agent): what Atlas's own agent makes at its default 10 s interval (6 reports, 2
//!   polls, 1 widget-log post per 5 min). Atlas's server allows 100 a minute per IP, and an
//!   office puts many Macs behind one address.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fleet_widgets::SampleKind;
use serde_json::json;

use super::commands::{CommandChannel, POLL_INTERVAL};
use super::link::Link;
use super::state::SenderState;
use super::verdict::Verdict;
use super::{Sender, Step, MAX_BATCH_PLAINTEXT, MAX_BATCH_RECORDS};
use crate::report::{widget_log_entry, LatestReport};
use crate::spool::{Acked, Spool};
use fleet_wire::record::Record;

/// Most requests in any 60 s window (Atlas's agent at its defaults: 6 reports, 2 command polls
/// and its widget-log post).
pub const ATLAS_REQUESTS_PER_MINUTE: usize = 9;
/// Window of the request budget.
const BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// Command polls in any 60 s window (one every 30 s).
const POLLS_PER_MINUTE: usize = 2;

/// A sliding-window request counter: at most `limit` requests in any 60 s.
#[derive(Debug)]
pub struct RequestBudget {
    limit: usize,
    sent: VecDeque<Instant>,
}

impl Default for RequestBudget {
    fn default() -> Self {
        RequestBudget::new(ATLAS_REQUESTS_PER_MINUTE)
    }
}

impl RequestBudget {
    /// At most `limit` requests in any 60 s.
    pub fn new(limit: usize) -> Self {
        RequestBudget { limit, sent: VecDeque::new() }
    }

    /// What is left for widget logs in Atlas's budget once reports every `send_interval` and
    /// command polls are counted (at least one a minute, so logs always move).
    pub fn for_widget_logs(send_interval: Duration) -> Self {
        let reports = (60.0 / send_interval.as_secs_f64().max(1.0)).ceil() as usize;
        RequestBudget::new(ATLAS_REQUESTS_PER_MINUTE.saturating_sub(reports + POLLS_PER_MINUTE).max(1))
    }

    /// Requests still allowed in the window ending at `now`.
    pub fn available(&self, now: Instant) -> usize {
        let recent = self.sent.iter().filter(|t| now.duration_since(**t) < BUDGET_WINDOW).count();
        self.limit.saturating_sub(recent)
    }

    /// Take one request if the window allows it.
    pub fn try_take(&mut self, now: Instant) -> bool {
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= BUDGET_WINDOW) {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.limit {
            return false;
        }
        self.sent.push_back(now);
        true
    }

    /// When the next request is allowed (now, or when enough old ones leave the window).
    pub fn next_free(&self, now: Instant) -> Instant {
        if self.available(now) > 0 {
            return now;
        }
        let recent: Vec<&Instant> = self.sent.iter().filter(|t| now.duration_since(**t) < BUDGET_WINDOW).collect();
        let excess = (recent.len() + 1).saturating_sub(self.limit).max(1);
        recent.get(excess - 1).map_or(now, |t| **t + BUDGET_WINDOW)
    }
}

/// Reports, widget logs and commands for an Atlas fleet server.
pub struct AtlasSender {
    link: Link,
    report: LatestReport,
    commands: CommandChannel,
    budget: RequestBudget,
    widget_log_budget: RequestBudget,
    send_interval: Duration,
    widget_log_interval: Duration,
    next_report: Instant,
    next_widget_logs: Instant,
    /// Fresh widget logs held for a direct post this cycle (at most one batch; see
    /// [`AtlasSender::accept`]); handed back by [`Sender::take_unsent`] if not delivered.
    fresh: Vec<Record>,
    /// Plaintext bytes of `fresh` as the spool would count them.
    fresh_bytes: usize,
    restart_requested: bool,
}

impl AtlasSender {
    /// An Atlas sender over `link`.
    pub fn new(link: Link, commands: CommandChannel, send_interval: Duration, widget_log_interval: Duration) -> Self {
        let now = Instant::now();
        AtlasSender {
            link,
            report: LatestReport::new(),
            commands,
            budget: RequestBudget::default(),
            widget_log_budget: RequestBudget::for_widget_logs(send_interval),
            send_interval,
            widget_log_interval,
            next_report: now,
            next_widget_logs: now,
            fresh: Vec::new(),
            fresh_bytes: 0,
            restart_requested: false,
        }
    }

    fn poll_commands(&mut self) {
        let now = Instant::now();
        if !super::due(now, self.commands.next_poll(), POLL_INTERVAL) || !self.budget.try_take(now) {
            return;
        }
        let effects = self.commands.poll_if_due(&self.link.client, &self.link.machine_id, &mut self.link.key);
        if effects.key_changed {
            self.link.key_replaced();
        }
        self.restart_requested |= effects.restart;
    }

    fn send_report(&mut self) -> Step {
        let plaintext = self.report.to_json(&self.link.machine_id).to_string();
        let body = match self.link.seal_v1(plaintext.as_bytes()) {
            Ok(body) => body,
            Err(e) => return self.link.local_failure(&format!("sealing the report: {e}")),
        };
        match self.link.post("/api/fleet/report", &body) {
            Some(Verdict::Ack) => Step::Continue,
            Some(Verdict::Reject { reason } | Verdict::Conflict { reason }) => {
                self.link.reject("report", &body, &reason);
                Step::Continue
            }
            _ => Step::Wait,
        }
    }

    /// One widget-log batch from the spool. `Continue` when a full batch went (more may wait).
    fn send_widget_logs(&mut self, spool: &mut Spool) -> Step {
        loop {
            let start = spool.acked_cursor();
            let batch = match spool.read_from(start, MAX_BATCH_RECORDS, MAX_BATCH_PLAINTEXT) {
                Ok(batch) => batch,
                Err(e) => return self.link.local_failure(&format!("reading the spool: {e}")),
            };
            if batch.records.is_empty() {
                return Step::Idle;
            }
            let full = batch.records.len() >= MAX_BATCH_RECORDS;
            let logs: Vec<_> =
                batch.records.iter().filter(|r| r.kind == SampleKind::Log).map(widget_log_entry).collect();
            let count = logs.len() as u64;
            // Metric records an older version spooled: the report carries their newest values.
            let superseded = batch.records.len() as u64 - count;
            if logs.is_empty() {
                if let Step::Wait = self.link.ack(spool, batch.next, Acked { delivered: 0, superseded }) {
                    return Step::Wait;
                }
                continue;
            }
            let plaintext = json!({ "machine_id": self.link.machine_id, "logs": logs }).to_string();
            let body = match self.link.seal_v1(plaintext.as_bytes()) {
                Ok(body) => body,
                Err(e) => return self.link.local_failure(&format!("sealing widget logs: {e}")),
            };
            let now = Instant::now();
            if !self.widget_log_budget.try_take(now) || !self.budget.try_take(now) {
                return Step::Wait;
            }
            let step = match self.link.post("/api/fleet/widget-logs", &body) {
                Some(Verdict::Ack) => self.link.ack(spool, batch.next, Acked { delivered: count, superseded }),
                Some(Verdict::Reject { reason } | Verdict::Conflict { reason }) => {
                    let logs: Vec<Record> = batch.records.into_iter().filter(|r| r.kind == SampleKind::Log).collect();
                    if let Step::Wait = self.link.set_aside(spool, start, &logs, "widget-logs", &reason) {
                        return Step::Wait;
                    }
                    self.link.ack(spool, batch.next, Acked { delivered: 0, superseded })
                }
                _ => Step::Wait,
            };
            return match step {
                Step::Continue if full => Step::Continue,
                Step::Continue => Step::Idle,
                other => other,
            };
        }
    }

    /// The held fresh widget logs in one post. Acknowledged: counted as delivered (the spool's
    /// counters in memory, durable with the next state write that happens anyway), and
    /// forgotten. Anything else leaves them held, for [`Sender::take_unsent`] to hand back to
    /// the spool: a permanent refusal included, so the spool path posts them again and sets
    /// them aside in `rejected/` exactly as it does for stored records.
    fn send_fresh(&mut self, spool: &mut Spool) -> Step {
        let logs: Vec<_> = self.fresh.iter().map(widget_log_entry).collect();
        let plaintext = json!({ "machine_id": self.link.machine_id, "logs": logs }).to_string();
        drop(logs);
        let body = match self.link.seal_v1(plaintext.as_bytes()) {
            Ok(body) => body,
            Err(e) => return self.link.local_failure(&format!("sealing widget logs: {e}")),
        };
        drop(plaintext);
        let now = Instant::now();
        if !self.widget_log_budget.try_take(now) || !self.budget.try_take(now) {
            return Step::Wait;
        }
        match self.link.post("/api/fleet/widget-logs", &body) {
            Some(Verdict::Ack) => {
                let count = self.fresh.len() as u64;
                self.fresh.clear();
                self.fresh_bytes = 0;
                self.link.state.sent_records += count;
                self.link.touch();
                spool.count_delivered_unspooled(count);
                Step::Idle
            }
            _ => Step::Wait,
        }
    }

    /// True when a widget-log post may go in this cycle: its slot has come (within
    /// [`super::DUE_SLACK`]), no backoff is running, and both budgets have room.
    fn widget_log_post_due(&self, now: Instant) -> bool {
        !self.link.backing_off()
            && super::due(now, self.next_widget_logs, self.widget_log_interval)
            && self.widget_log_budget.available(now) > 0
            && self.budget.available(now) > 0
    }

    /// Widget logs when their slot has come and their share of the budget allows (reports and
    /// polls keep theirs): the held fresh records when the spool holds nothing before them,
    /// else a batch from the spool. A full batch (a backlog) brings the next slot forward to
    /// the next report; with nothing to send no request is made and the slot stays open.
    fn widget_logs_if_due(&mut self, spool: &mut Spool) {
        let now = Instant::now();
        if !super::due(now, self.next_widget_logs, self.widget_log_interval)
            || self.widget_log_budget.available(now) == 0
        {
            return;
        }
        let backlog = spool.unacked_records();
        let step = if backlog == 0 && !self.fresh.is_empty() {
            self.send_fresh(spool)
        } else if backlog > 0 {
            self.send_widget_logs(spool)
        } else {
            return;
        };
        self.next_widget_logs = match step {
            Step::Continue => now + self.send_interval.saturating_sub(Duration::from_millis(500)),
            Step::Idle => now + self.widget_log_interval,
            Step::Wait => self.widget_log_budget.next_free(now).max(now),
        };
    }
}

/// Plaintext bytes of `record` as the spool counts them for a batch's limit (its JSON).
fn plaintext_len(record: &Record) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A record that cannot be serialized is not held (usize::MAX exceeds every limit).
    match serde_json::to_writer(&mut count, record) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

impl Sender for AtlasSender {
    /// Metrics and machine info go into the report; widget logs are held for a direct post
    /// when the post is due this cycle, nothing waits before them (`backlog` 0) and what is
    /// held stays within one batch ([`MAX_BATCH_RECORDS`], [`MAX_BATCH_PLAINTEXT`]); else
    /// they (with anything already held, so the spool keeps their order) go to the spool.
    fn accept(&mut self, records: Vec<Record>, backlog: u64) -> Vec<Record> {
        for record in &records {
            self.report.update(record);
        }
        let logs: Vec<Record> = records.into_iter().filter(|r| r.kind == SampleKind::Log).collect();
        if logs.is_empty() {
            return logs;
        }
        if backlog == 0
            && self.fresh.len() + logs.len() <= MAX_BATCH_RECORDS
            && self.widget_log_post_due(Instant::now())
        {
            let bytes = logs.iter().map(plaintext_len).fold(self.fresh_bytes, usize::saturating_add);
            if bytes <= MAX_BATCH_PLAINTEXT {
                self.fresh.extend(logs);
                self.fresh_bytes = bytes;
                return Vec::new();
            }
        }
        let mut to_spool = self.take_unsent();
        to_spool.extend(logs);
        to_spool
    }

    fn take_unsent(&mut self) -> Vec<Record> {
        self.fresh_bytes = 0;
        std::mem::take(&mut self.fresh)
    }

    fn push(&mut self, spool: &mut Spool, _deadline: Instant) {
        if self.link.backing_off() {
            return;
        }
        let saved = self.link.last_saved();
        self.poll_commands();
        let now = Instant::now();
        if super::due(now, self.next_report, self.send_interval) && self.report.has_data() && self.budget.try_take(now)
        {
            self.next_report = now + self.send_interval;
            if let Step::Wait = self.send_report() {
                self.link.save_lazily(spool);
                return;
            }
        }
        self.widget_logs_if_due(spool);
        // At most one state write per turn: an ack has just carried the bookkeeping.
        if self.link.last_saved() == saved {
            self.link.save_lazily(spool);
        }
    }

    fn flush(&mut self, spool: &mut Spool, _deadline: Instant) {
        // Shutdown: one more widget-log batch if the budget allows; the rest stays spooled
        // (`run` has stored what `accept` held, see `take_unsent`).
        let now = Instant::now();
        if !self.link.backing_off() && self.widget_log_budget.available(now) > 0 && self.budget.available(now) > 0 {
            self.send_widget_logs(spool);
        }
        let _ = self.link.save_now(spool);
    }

    fn save(&mut self, spool: &mut Spool) {
        let _ = self.link.save_now(spool); // logged inside
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let wake = match self.link.retry_at {
            Some(at) => at,
            None => self.next_report.min(self.commands.next_poll()),
        };
        // Never wake for a request the budget would refuse.
        Some(wake.max(self.budget.next_free(Instant::now())))
    }

    fn state(&self) -> &SenderState {
        &self.link.state
    }

    fn kid(&self) -> Option<&str> {
        self.link.kid.as_deref()
    }

    fn restart_requested(&self) -> bool {
        self.restart_requested
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_what_atlas_sends_in_any_minute_and_no_more() {
        let mut budget = RequestBudget::default();
        let start = Instant::now();
        let taken = (0..20).filter(|_| budget.try_take(start)).count();
        assert_eq!(taken, ATLAS_REQUESTS_PER_MINUTE);
        assert_eq!(budget.next_free(start), start + BUDGET_WINDOW);
        assert_eq!(budget.available(start + Duration::from_secs(59)), 0);
        assert_eq!(budget.available(start + BUDGET_WINDOW), ATLAS_REQUESTS_PER_MINUTE);
        // Widget logs get what reports and polls leave.
        assert_eq!(RequestBudget::for_widget_logs(Duration::from_secs(10)).limit, 1);
        assert_eq!(RequestBudget::for_widget_logs(Duration::from_secs(20)).limit, 4);
        assert_eq!(RequestBudget::for_widget_logs(Duration::from_secs(30)).limit, 5);
    }
}
