//! A small stderr logger: one line per event, `LEVEL target: message`.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp, since journald adds its own;
//! elsewhere they start with an RFC 3339 UTC time. What each level prints is listed in the
//! README ("Logging"); keys, API keys and payloads are never passed to the logger.

use std::io::Write;

use fleet_widgets::Timestamp;
use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    timestamps: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target().trim_start_matches("fleet_agent::");
        let line = if self.timestamps {
            format!("{} {:<5} {target}: {}\n", Timestamp::now().to_rfc3339(), record.level(), record.args())
        } else {
            format!("{:<5} {target}: {}\n", record.level(), record.args())
        };
        // One write call per line so concurrent threads (the receiver's workers) do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Install the logger (once per process; later calls only change the level).
pub fn init(level: LevelFilter) {
    let timestamps = std::env::var_os("JOURNAL_STREAM").is_none();
    // Dependencies (rustls, ureq) log at debug/trace with their own targets: keep them at warn
    // unless the user asked for trace.
    let _ = log::set_boxed_logger(Box::new(StderrLogger { timestamps }));
    set_level(level);
}

/// Change the level (SIGHUP reload).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}
