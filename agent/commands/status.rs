//! `fleet-agent status`: what the agent knows about itself right now.

use super::{load_config, usage_error, Command};
use crate::cli::{Args, Common, EXIT_OK};
use crate::sender::state::{Inflight, SenderState, REJECTED_DIR, STATE_FILE};
use crate::spool::{inspect, SpoolStats};

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "status",
    help: "\
Usage: fleet-agent status [--config FILE]

Print the configuration in use (file, machine id, server, protocol, enabled widgets) and the
state of the spool and the sender.
",
    run,
};

fn run(mut args: Args) -> u8 {
    let common = match Common::take(&mut args) {
        Ok(common) => common,
        Err(e) => return usage_error("status", &e),
    };
    if let Err(e) = args.finish() {
        return usage_error("status", &e);
    }
    let config = match load_config(&common) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let path = config.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(built-in defaults)".into());
    println!("config:      {path}");
    println!("machine_id:  {}", config.machine_id);
    println!("server:      {}", config.server_url.as_deref().unwrap_or("(none)"));
    println!("protocol:    {}", config.protocol.as_str());
    let rotated = crate::transport_key::rotated_key_path(&config.spool.dir).exists();
    println!("encryption:  {}", if config.encryption_key.is_some() || rotated { "on" } else { "off" });
    println!("key:         {}", crate::transport_key::describe(&config));
    println!("spool:       {}", config.spool.dir.display());
    print_spool_stats(&config.spool.dir);
    let enabled: Vec<String> = config
        .widgets
        .iter()
        .filter(|w| w.enabled)
        .map(|w| format!("{} ({}s)", w.name, w.interval.as_secs_f64()))
        .collect();
    println!("widgets:     {}", enabled.join(", "));
    print_sender_state(&config.spool.dir);
    EXIT_OK
}

/// The sender's persisted state (`sender.json`, `inflight.json`, `rejected/`), read only.
fn print_sender_state(dir: &std::path::Path) {
    println!("sender:");
    let state = match SenderState::load(dir) {
        Ok(state) if dir.join(STATE_FILE).exists() => state,
        Ok(_) => {
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
    println!("  delivered:    {} records", state.sent_records);
    println!("  next seq:     {}", state.next_seq);
    match Inflight::load(dir) {
        // After its ack the file stays as the record of the last seq used.
        Ok(Some(inflight)) if crate::spool::load_cursor(dir).ok().flatten().is_some_and(|c| inflight.end <= c) => {}
        Ok(Some(inflight)) => println!("  in flight:    batch seq {} ({} records)", inflight.seq, inflight.records),
        Ok(None) => {}
        Err(e) => println!("  in flight:    unreadable: {e}"),
    }
    if state.rejected > 0 {
        println!("  rejected:     {} payloads kept in {}", state.rejected, dir.join(REJECTED_DIR).display());
    }
}

/// Spool stats, read without creating, locking or repairing anything (safe while `run` runs).
fn print_spool_stats(dir: &std::path::Path) {
    match inspect(dir) {
        Ok(None) => println!("  (no spool yet)"),
        Ok(Some(stats)) => {
            for line in spool_lines(&stats) {
                println!("  {line}");
            }
        }
        Err(e) => println!("  unreadable: {e}"),
    }
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
