//! A small stderr logger: one line per event, `LEVEL target: message`.
//!
//! - Under systemd (stderr is the journal stream named by `JOURNAL_STREAM`) lines carry no
//!   timestamp, since journald adds its own, and start with the `sd-daemon` priority prefix
//!   (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and trace), so `journalctl -p warning`
//!   finds warnings. Elsewhere lines start with an RFC 3339 UTC time.
//! - Our own targets (`fleet_agent`, `fleet_widgets`, `fleet_receiver`, `fleet_wire`) follow
//!   the configured level; every other target (fleet_http, rustls, …) has its own level, `warn` unless `FLEET_LOG_DEPENDENCIES` says
//!   otherwise, and never more than `debug`: a dependency's `trace` output could dump request
//!   bytes, `X-API-Key` included.
//!
//! What each level prints is listed in the README ("Logging"); keys, API keys and payloads are
//! never passed to the logger (`tests/sender.rs` greps a `trace` log for them).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use fleet_widgets::Timestamp;
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Environment variable setting the level of dependency targets (`off` … `debug`).
pub const ENV_DEPENDENCY_LEVEL: &str = "FLEET_LOG_DEPENDENCIES";
/// The dependency level when [`ENV_DEPENDENCY_LEVEL`] is not set.
pub const DEFAULT_DEPENDENCY_LEVEL: LevelFilter = LevelFilter::Warn;
/// The most a dependency may log: a dependency's `trace` could dump request bytes, API key included.
pub const MAX_DEPENDENCY_LEVEL: LevelFilter = LevelFilter::Debug;

/// The level of our own targets (a `LevelFilter` as usize; changed by SIGHUP).
static OWN_LEVEL: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);

/// How each line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStyle {
    /// `2026-11-22T13:00:00.000Z INFO  target: message` (a terminal, a log file).
    Timestamped,
    /// `<6>INFO  target: message`: the journal, which adds the time and reads the priority.
    Journal,
}

/// The filter and line format, without the global logger (so tests can use it directly).
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// How lines start.
    pub style: LineStyle,
    /// Level of targets that are not ours.
    pub dependency_level: LevelFilter,
}

/// How far `-v`/`-q` move the configured level of our own targets: each `-v` one level more,
/// each `-q` one less (`-vv` counts two), clamped to `off` … `trace`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verbosity(pub i32);

impl Verbosity {
    /// The configured level moved by this verbosity.
    pub fn apply(self, configured: LevelFilter) -> LevelFilter {
        use LevelFilter::*;
        let levels = [Off, Error, Warn, Info, Debug, Trace];
        let at = levels.iter().position(|l| *l == configured).unwrap_or(3) as i32;
        levels[(at + self.0).clamp(0, 5) as usize]
    }
}

/// The crates of this project: their targets follow the configured level.
const OWN_CRATES: [&str; 4] = ["fleet_agent", "fleet_widgets", "fleet_receiver", "fleet_wire"];

/// True for targets of this project (`fleet_agent::…`, `fleet_widgets::…`, `fleet_receiver::…`,
/// `fleet_wire::…`).
pub fn is_own_target(target: &str) -> bool {
    OWN_CRATES.iter().any(|own| target.strip_prefix(own).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")))
}

/// The target as a line shows it: the module path inside the binary as it was before the
/// receiver and the wire formats became crates (`run`, `receiver::routes`, `envelope`), so log
/// lines and what people grep for did not change with the split.
fn shown_target(target: &str) -> std::borrow::Cow<'_, str> {
    if let Some(rest) = target.strip_prefix("fleet_receiver") {
        if rest.is_empty() || rest.starts_with("::") {
            return format!("receiver{rest}").into();
        }
    }
    target.trim_start_matches("fleet_agent::").trim_start_matches("fleet_wire::").into()
}

/// The `sd-daemon(3)` priority prefix for a level.
pub fn journal_prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

impl Format {
    /// Whether a line of `level` from `target` is printed when our own level is `own`.
    pub fn enabled(&self, own: LevelFilter, target: &str, level: Level) -> bool {
        if is_own_target(target) {
            level <= own
        } else {
            level <= self.dependency_level
        }
    }

    /// The whole line, newline included.
    pub fn line(&self, level: Level, target: &str, message: &std::fmt::Arguments<'_>) -> String {
        let target = shown_target(target);
        match self.style {
            LineStyle::Timestamped => format!("{} {level:<5} {target}: {message}\n", Timestamp::now().to_rfc3339()),
            LineStyle::Journal => format!("{}{level:<5} {target}: {message}\n", journal_prefix(level)),
        }
    }
}

struct StderrLogger {
    format: Format,
}

fn own_level() -> LevelFilter {
    const LEVELS: [LevelFilter; 6] = [
        LevelFilter::Off,
        LevelFilter::Error,
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ];
    LEVELS[OWN_LEVEL.load(Ordering::Relaxed).min(5)]
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.format.enabled(own_level(), metadata.target(), metadata.level())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = self.format.line(record.level(), record.target(), record.args());
        // One write call per line so concurrent threads (the receiver's workers) do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// The dependency level from the text of [`ENV_DEPENDENCY_LEVEL`] (`None`: unset), capped at
/// [`MAX_DEPENDENCY_LEVEL`]; an unreadable value keeps the default.
pub fn dependency_level(text: Option<&str>) -> LevelFilter {
    text.and_then(|t| t.trim().parse::<LevelFilter>().ok())
        .unwrap_or(DEFAULT_DEPENDENCY_LEVEL)
        .min(MAX_DEPENDENCY_LEVEL)
}

/// True when `JOURNAL_STREAM` (`DEVICE:INODE`) names the file stderr is open on: systemd
/// connected stderr to the journal (a child whose stderr was redirected inherits the variable
/// but not the stream, and gets plain lines).
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    stderr_identity().is_some_and(|(d, i)| d == dev && i == ino)
}

#[cfg(unix)]
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn stderr_identity() -> Option<(u64, u64)> {
    None
}

/// `<3>` when stderr is the journal, else nothing: for the `error: …` lines commands print
/// themselves (a config refused by `validate` in `ExecStartPre=` shows under `journalctl -p err`).
pub fn error_line_prefix() -> &'static str {
    if stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref()) {
        journal_prefix(Level::Error)
    } else {
        ""
    }
}

/// Install the logger (once per process; later calls only change the level).
pub fn init(level: LevelFilter) {
    let journal = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    let format = Format {
        style: if journal { LineStyle::Journal } else { LineStyle::Timestamped },
        dependency_level: dependency_level(std::env::var(ENV_DEPENDENCY_LEVEL).ok().as_deref()),
    };
    let _ = log::set_boxed_logger(Box::new(StderrLogger { format }));
    set_level(level);
}

/// Change our own level (SIGHUP reload); dependencies keep theirs.
pub fn set_level(level: LevelFilter) {
    OWN_LEVEL.store(level as usize, Ordering::Relaxed);
    let dependencies = dependency_level(std::env::var(ENV_DEPENDENCY_LEVEL).ok().as_deref());
    log::set_max_level(level.max(dependencies));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_have_their_own_level_capped_at_debug() {
        let format = Format { style: LineStyle::Timestamped, dependency_level: dependency_level(None) };
        assert!(format.enabled(LevelFilter::Trace, "fleet_agent::sender", Level::Trace));
        assert!(format.enabled(LevelFilter::Trace, "fleet_widgets::ping", Level::Trace));
        assert!(!format.enabled(LevelFilter::Trace, "fleet_http::client", Level::Trace));
        assert!(!format.enabled(LevelFilter::Trace, "fleet_http::client", Level::Debug));
        assert!(!format.enabled(LevelFilter::Trace, "fleet_agentx", Level::Debug), "a lookalike is not ours");
        assert!(format.enabled(LevelFilter::Error, "rustls::conn", Level::Warn));
        assert!(!format.enabled(LevelFilter::Warn, "fleet_agent::run", Level::Info));
        assert_eq!(dependency_level(Some("trace")), LevelFilter::Debug, "never trace: it dumps the API key");
        assert_eq!(dependency_level(Some("error")), LevelFilter::Error);
        assert_eq!(dependency_level(Some("loud")), LevelFilter::Warn);
    }

    #[test]
    fn journal_lines_carry_the_sd_daemon_priority_and_no_time() {
        let journal = Format { style: LineStyle::Journal, dependency_level: LevelFilter::Warn };
        let line = |level| journal.line(level, "fleet_agent::sender", &format_args!("hello"));
        assert_eq!(line(Level::Error), "<3>ERROR sender: hello\n");
        assert_eq!(line(Level::Warn), "<4>WARN  sender: hello\n");
        assert_eq!(line(Level::Info), "<6>INFO  sender: hello\n");
        assert_eq!(line(Level::Debug), "<7>DEBUG sender: hello\n");
        assert_eq!(line(Level::Trace), "<7>TRACE sender: hello\n");
        let plain = Format { style: LineStyle::Timestamped, dependency_level: LevelFilter::Warn };
        let text = plain.line(Level::Warn, "fleet_agent::run", &format_args!("x"));
        assert!(text.starts_with("20") && text.ends_with(" WARN  run: x\n"), "{text}");
    }

    #[test]
    fn the_receiver_and_wire_crates_are_ours_and_keep_their_old_names_in_lines() {
        let format = Format { style: LineStyle::Journal, dependency_level: LevelFilter::Warn };
        assert!(format.enabled(LevelFilter::Info, "fleet_receiver::routes", Level::Info));
        assert!(format.enabled(LevelFilter::Info, "fleet_receiver", Level::Info));
        assert!(format.enabled(LevelFilter::Debug, "fleet_wire::envelope", Level::Debug));
        assert!(!format.enabled(LevelFilter::Trace, "fleet_receiverx", Level::Debug), "a lookalike is not ours");
        let line = |target| format.line(Level::Info, target, &format_args!("m"));
        assert_eq!(line("fleet_receiver::routes"), "<6>INFO  receiver::routes: m\n");
        assert_eq!(line("fleet_receiver"), "<6>INFO  receiver: m\n");
        assert_eq!(line("fleet_wire::envelope"), "<6>INFO  envelope: m\n");
        assert_eq!(line("fleet_receiverx::a"), "<6>INFO  fleet_receiverx::a: m\n");
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(Some("1:2")), "another file than stderr");
        if let Some((dev, ino)) = stderr_identity() {
            assert!(stderr_is_journal(Some(&format!("{dev}:{ino}"))));
        }
    }
}
