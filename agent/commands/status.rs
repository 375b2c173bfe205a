//! `fleet-agent status`: what the agent knows about itself right now, for people (text) and
//! scripts (`--json`, exit codes). Read-only: it creates, locks and repairs nothing, so it is
//! safe while `fleet-agent run` runs.
//!
//! Every record count comes from the spool's persisted counters (see `spool/cursor.rs`):
//! `delivered` only grows when the server acknowledged a batch (for v2: stored it, or
//! answered that it stored exactly these records before), in the same atomic write as the
//! ack, so `status` never reports as delivered what the receiver did not store.

use std::path::Path;

use serde_json::{json, Value};

use super::{load_config, usage_error, Command};
use crate::cli::{Args, Common, EXIT_OK, EXIT_RUNTIME};
use crate::config::Config;
use crate::sender::state::{Inflight, SenderState};
use crate::spool::{backlog_by_widget, inspect, rejected, SpoolStats};

/// Exit code: the sender is failing (its last attempt failed, or it is backing off).
pub const EXIT_SENDER_FAILING: u8 = 3;
/// Exit code: records were dropped in the last [`RECENT_DROP`].
pub const EXIT_DROPPING: u8 = 4;
/// How recent a drop makes `status` report `dropping`.
pub const RECENT_DROP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "status",
    help: "\
Usage: fleet-agent status [--config FILE] [--json]

Print the configuration in use (file, machine id, server, protocol, transport key id and its
source, enabled widgets), a health verdict, where every record went (accepted, delivered,
dropped, rejected, backlog), the spool's backlog per widget (counts and times only, never
contents: `fleet-agent spool show` prints records) and the sender's state.

--json   one JSON object with stable field names (documented in README, \"status --json\").

Exit codes: 0 healthy (or nothing to send), 1 the spool or sender state cannot be read,
2 usage or config error, 3 the sender is failing (last attempt failed; backing off),
4 records were dropped in the last 24 hours (3 wins when both hold).
",
    run,
};

fn run(mut args: Args) -> u8 {
    let common = match Common::take(&mut args) {
        Ok(common) => common,
        Err(e) => return usage_error("status", &e),
    };
    let as_json = args.flag(&["--json"]);
    if let Err(e) = args.finish() {
        return usage_error("status", &e);
    }
    let config = match load_config(&common) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let report = Report::gather(&config);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report.to_json()).unwrap_or_default());
    } else {
        report.print();
    }
    report.exit_code
}

/// Everything `status` shows, gathered once.
struct Report<'a> {
    config: &'a Config,
    spool: Result<Option<SpoolStats>, String>,
    widgets: Option<Vec<crate::spool::WidgetBacklog>>,
    rejected_batches: u64,
    sender: Result<Option<SenderState>, String>,
    inflight: Option<Inflight>,
    dropping: bool,
    failing: bool,
    verdict: &'static str,
    reasons: Vec<String>,
    exit_code: u8,
}

impl<'a> Report<'a> {
    fn gather(config: &'a Config) -> Report<'a> {
        let dir = &config.spool.dir;
        let spool = inspect(dir).map_err(|e| e.to_string());
        let widgets = backlog_by_widget(dir).ok().flatten();
        let rejected_batches = rejected::list(dir).map_or(0, |l| l.len() as u64);
        let sender = SenderState::load_stored(dir);
        // After its ack the batch stays as the record of the last seq used: not in flight.
        let acked = crate::spool::load_cursor(dir).ok().flatten();
        let inflight: Option<Inflight> =
            sender.as_ref().ok().and_then(|s| s.as_ref()?.inflight.clone()).filter(|i| acked.is_none_or(|c| i.end > c));
        let failing = sender.as_ref().ok().and_then(Option::as_ref).is_some_and(sender_failing);
        let dropping =
            spool.as_ref().ok().and_then(Option::as_ref).is_some_and(|s| s.dropped.count > 0) && dropped_recently(dir);
        let mut reasons = Vec::new();
        if let Ok(Some(state)) = &sender {
            if failing {
                let error = state.last_error.as_ref().map_or("unknown error".into(), |e| e.message.clone());
                reasons.push(format!("sender failing since {} attempts: {error}", state.consecutive_failures.max(1)));
            }
        }
        if dropping {
            reasons.push("records were dropped in the last 24 hours (see records.dropped)".into());
        }
        let unreadable = spool.is_err() || sender.is_err();
        if let Err(e) = &spool {
            reasons.push(format!("spool unreadable: {e}"));
        }
        if let Err(e) = &sender {
            reasons.push(format!("sender state unreadable: {e}"));
        }
        let (verdict, exit_code) = if unreadable {
            ("unknown", EXIT_RUNTIME)
        } else if failing {
            ("failing", EXIT_SENDER_FAILING)
        } else if dropping {
            ("dropping", EXIT_DROPPING)
        } else {
            ("ok", EXIT_OK)
        };
        Report {
            config,
            spool,
            widgets,
            rejected_batches,
            sender,
            inflight,
            dropping,
            failing,
            verdict,
            reasons,
            exit_code,
        }
    }

    /// The transport key in use and its origin (config, environment, or a rotated key in the
    /// state directory; see `transport_key`).
    fn active_key(&self) -> Option<(String, &'static str)> {
        let config = self.config;
        match crate::transport_key::resolve(
            config.encryption_key.as_ref(),
            config.encryption_key_source,
            &config.spool.dir,
        ) {
            Ok((active, _)) => active.map(|a| (a.kid, a.source.as_str())),
            // A damaged rotated-key file: the agent refuses to start; show the configured key.
            Err(_) => config
                .encryption_key
                .as_ref()
                .map(|k| (fleet_wire::envelope::kid(k), config.encryption_key_source.as_str())),
        }
    }

    fn kid(&self) -> Option<String> {
        self.active_key().map(|(kid, _)| kid)
    }

    fn to_json(&self) -> Value {
        let config = self.config;
        let stats = self.spool.as_ref().ok().and_then(Option::as_ref);
        let counts = stats.map(|s| s.counts).unwrap_or_default();
        let time = |t: Option<fleet_widgets::Timestamp>| t.map(|t| t.to_rfc3339());
        let state = self.sender.as_ref().ok().and_then(Option::as_ref);
        json!({
            "config": config.path.as_ref().map(|p| p.display().to_string()),
            "machine_id": config.machine_id,
            "server": config.server_url,
            "protocol": config.protocol.as_str(),
            "encryption": {
                "enabled": self.active_key().is_some(),
                "kid": self.kid(),
                "source": self.active_key().map(|(_, source)| source),
                "kid_in_use": state.and_then(|s| s.kid.clone()),
                "source_in_use": state.and_then(|s| s.key_source.clone()),
            },
            "health": {
                "verdict": self.verdict,
                "exit_code": self.exit_code,
                "reasons": self.reasons,
            },
            "records": {
                "accepted": counts.accepted,
                "delivered": counts.delivered,
                "superseded": counts.superseded,
                "dropped": counts.dropped,
                "rejected": counts.rejected,
                "backlog": counts.backlog,
            },
            "spool": {
                "dir": config.spool.dir.display().to_string(),
                "exists": stats.is_some(),
                "bytes": stats.map_or(0, |s| s.bytes),
                "max_bytes": config.spool.max_bytes,
                "segments": stats.map_or(0, |s| s.segments),
                "oldest": stats.and_then(|s| time(s.oldest)),
                "newest": stats.and_then(|s| time(s.newest)),
                "dropped": stats.map(|s| json!(s.dropped)),
                "dropping": self.dropping,
                "rejected_batches": self.rejected_batches,
                "widgets": self.widgets.as_ref().map(|list| list.iter().map(|w| json!({
                    "widget": w.widget, "kind": w.kind, "records": w.records, "oldest": w.oldest, "newest": w.newest,
                })).collect::<Vec<_>>()),
                "error": self.spool.as_ref().err(),
            },
            "sender": {
                "started": state.is_some(),
                "failing": self.failing,
                "last_success": state.and_then(|s| s.last_success.clone()),
                "last_error": state.and_then(|s| s.last_error.as_ref()).map(|e| json!({"at": e.at, "message": e.message})),
                "retry_at": state.and_then(|s| s.retry_at.clone()),
                "consecutive_failures": state.map_or(0, |s| s.consecutive_failures),
                "next_seq": state.map(|s| s.next_seq),
                "in_flight": self.inflight.as_ref().map(|i| json!({"seq": i.seq, "records": i.records})),
                "seq_collisions": state.map_or(0, |s| s.seq_collisions),
                "rejected_payloads": state.map_or(0, |s| s.rejected),
                "error": self.sender.as_ref().err(),
            },
        })
    }

    fn print(&self) {
        let config = self.config;
        let path =
            config.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(built-in defaults)".into());
        println!("health:      {}", self.verdict.to_ascii_uppercase());
        for reason in &self.reasons {
            println!("  - {reason}");
        }
        println!("config:      {path}");
        println!("machine_id:  {}", config.machine_id);
        println!("server:      {}", config.server_url.as_deref().unwrap_or("(none)"));
        println!("protocol:    {}", config.protocol.as_str());
        match self.active_key() {
            Some((kid, source)) => {
                println!("encryption:  on, key id {kid} (from {source})");
                if source == "rotated" {
                    println!("             {}", crate::transport_key::describe(config));
                }
            }
            None => println!("encryption:  off"),
        }
        let state = self.sender.as_ref().ok().and_then(Option::as_ref);
        if let Some(in_use) = state.and_then(|s| s.kid.clone()) {
            if Some(&in_use) != self.kid().as_ref() {
                println!("             the running agent last used key id {in_use} (restart or SIGHUP to apply)");
            }
        }
        let stats = self.spool.as_ref().ok().and_then(Option::as_ref);
        let counts = stats.map(|s| s.counts).unwrap_or_default();
        println!(
            "records:     {} accepted = {} delivered + {} superseded + {} dropped + {} rejected + {} backlog",
            counts.accepted, counts.delivered, counts.superseded, counts.dropped, counts.rejected, counts.backlog
        );
        println!("spool:       {}", config.spool.dir.display());
        match &self.spool {
            Ok(None) => println!("  (no spool yet)"),
            Ok(Some(stats)) => {
                for line in spool_lines(stats) {
                    println!("  {line}");
                }
            }
            Err(e) => println!("  unreadable: {e}"),
        }
        if let Some(widgets) = self.widgets.as_ref().filter(|w| !w.is_empty()) {
            println!("  backlog by widget (`fleet-agent spool show` prints the records):");
            for w in widgets {
                println!("    {:<14} {:<12} {:>7} records  {} .. {}", w.widget, w.kind, w.records, w.oldest, w.newest);
            }
        }
        if self.rejected_batches > 0 {
            println!(
                "  rejected:  {} batches, {} records in {} (`fleet-agent spool requeue-rejected` sends them again)",
                self.rejected_batches,
                counts.rejected,
                config.spool.dir.join(rejected::REJECTED_DIR).display()
            );
        }
        let enabled: Vec<String> = config
            .widgets
            .iter()
            .filter(|w| w.enabled)
            .map(|w| format!("{} ({}s)", w.name, w.interval.as_secs_f64()))
            .collect();
        println!("widgets:     {}", enabled.join(", "));
        self.print_sender();
    }

    fn print_sender(&self) {
        println!("sender:");
        let state = match &self.sender {
            Ok(Some(state)) => state,
            Ok(None) => {
                println!("  (nothing sent yet)");
                return;
            }
            Err(e) => {
                println!("  unreadable: {e}");
                return;
            }
        };
        println!("  last success: {}", state.last_success.as_deref().unwrap_or("never"));
        match &state.last_error {
            Some(error) => println!("  last error:   {} {}", error.at, error.message),
            None => println!("  last error:   none"),
        }
        match (&state.retry_at, state.consecutive_failures) {
            (Some(at), n) if n > 0 => println!("  backoff:      next attempt {at} ({n} consecutive failures)"),
            _ => println!("  backoff:      none"),
        }
        println!("  next seq:     {}", state.next_seq);
        if let Some(inflight) = &self.inflight {
            println!("  in flight:    batch seq {} ({} records)", inflight.seq, inflight.records);
        }
        if state.seq_collisions > 0 {
            println!("  seq collisions: {} (409: another agent reports under this machine_id)", state.seq_collisions);
        }
    }
}

/// Failing: the last attempt failed (an error newer than the last success, or failures since).
fn sender_failing(state: &SenderState) -> bool {
    match (&state.last_error, &state.last_success) {
        (None, _) => false,
        (Some(_), _) if state.consecutive_failures > 0 => true,
        (Some(_), None) => true,
        // Both RFC 3339 UTC with milliseconds from the same clock: they order as text.
        (Some(error), Some(success)) => error.at.as_str() > success.as_str(),
    }
}

/// Whether the dropped ledger was written (= records were dropped) within [`RECENT_DROP`].
fn dropped_recently(dir: &Path) -> bool {
    let modified = std::fs::metadata(dir.join("dropped.json")).and_then(|m| m.modified());
    modified.ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age < RECENT_DROP)
}

fn spool_lines(stats: &SpoolStats) -> Vec<String> {
    let time = |t: Option<fleet_widgets::Timestamp>| t.map_or_else(|| "-".to_string(), |t| t.to_rfc3339());
    let dropped = match (&stats.dropped.oldest, &stats.dropped.newest) {
        (Some(oldest), Some(newest)) => format!("{} ({oldest} .. {newest})", stats.dropped.count),
        _ => stats.dropped.count.to_string(),
    };
    vec![
        format!("bytes:     {} in {} segments", stats.bytes, stats.segments),
        format!("unacked:   {} records", stats.unacked_records),
        format!("dropped:   {dropped}"),
        format!("oldest:    {}", time(stats.oldest)),
        format!("newest:    {}", time(stats.newest)),
    ]
}
