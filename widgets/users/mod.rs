//! `users`: the logged-in sessions as Atlas's agent reports them (`metrics.users`, psutil's
//! `users()`): `[{name, terminal, host, started}]`. Unknown `host`/`started` are left out.
//! Runs every 60 s by default.
//!
//! Linux: the login records file read directly (`/run/utmp`, else `/var/run/utmp`; neither
//! present = nobody logged in), parsed by the pure [`utmp`] parser into what `who` would list:
//! one `open`, a read or two and a `close`, plus a `kill(pid, 0)` per session, instead of a
//! process started every minute. macOS (whose utmpx records differ) and replays of a Mac:
//! `who`, parsed by [`parse`].

pub mod parse;
pub mod utmp;

use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

use crate::host::DEFAULT_COMMAND_TIMEOUT;
use crate::{no_options, CollectError, Host, HostError, Os, ParseError, Sample, Timestamp, Widget, WidgetSpec};
use parse::Session;
use utmp::Layout;

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "users",
    summary: "Logged-in sessions: name, terminal, host, start time (utmp on Linux, `who` on macOS)",
    enabled_by_default: true,
    default_interval_s: Some(60),
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(UsersWidget::default()),
};

/// Where Linux keeps the records of who is logged in, in the order tried (`/var/run` is a
/// link to `/run` on current systems; the second path serves older ones without `/run`).
pub const UTMP_PATHS: [&str; 2] = ["/run/utmp", "/var/run/utmp"];

/// A utmp file larger than this is refused rather than read into memory: at 384 bytes a
/// record it is 2,730 sessions and terminals, far beyond any real machine.
pub const MAX_UTMP_BYTES: usize = 1024 * 1024;

/// Holds the utmp reader's buffer between runs.
pub struct UsersWidget {
    reader: UtmpReader,
}

impl Default for UsersWidget {
    fn default() -> Self {
        UsersWidget { reader: UtmpReader::new(UTMP_PATHS.iter().map(PathBuf::from).collect()) }
    }
}

impl UsersWidget {
    /// A widget whose Linux reading tries `paths` instead of [`UTMP_PATHS`] (tests).
    pub fn with_utmp_paths(paths: Vec<PathBuf>) -> Self {
        UsersWidget { reader: UtmpReader::new(paths) }
    }
}

impl Widget for UsersWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let sessions = match (host.os(), Layout::native()) {
            (Os::Other, _) => return Err(CollectError::Unsupported("no login records on this OS".to_string())),
            // The records are this machine's, so only a Linux build reads them for a Linux host.
            (Os::Linux, Some(layout)) if cfg!(target_os = "linux") => {
                self.reader.sessions(layout, &chrono::Local, process_exists)?
            }
            _ => who_sessions(host)?,
        };
        let data = serde_json::to_value(sessions).unwrap_or(Value::Array(Vec::new()));
        Ok(vec![Sample::metric("users", data)])
    }
}

/// `who`, parsed: macOS, and a Linux host replayed on another OS.
fn who_sessions(host: &dyn Host) -> Result<Vec<Session>, CollectError> {
    let out = host.run(&["who"], DEFAULT_COMMAND_TIMEOUT)?;
    parse::parse_who(&out.stdout).map_err(|error| CollectError::Parse { source: "who".to_string(), error })
}

/// True unless `kill(pid, 0)` says the process does not exist (`ESRCH`), as coreutils' `who`
/// decides: a process of another user (`EPERM`) exists.
fn process_exists(pid: i32) -> bool {
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH),
        None => true,
    }
}

/// Reads the first utmp file of its list that exists into a buffer kept between runs.
pub struct UtmpReader {
    paths: Vec<PathBuf>,
    buf: Vec<u8>,
    /// The incomplete trailing record's length at the last read, so a file that stays cut
    /// short is logged once, not every minute.
    last_trailing: usize,
    /// How many reads found an incomplete trailing record (ignored).
    pub partial_reads: u64,
}

impl UtmpReader {
    /// A reader trying `paths` in order.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        UtmpReader { paths, buf: Vec::new(), last_trailing: 0, partial_reads: 0 }
    }

    /// The sessions `who` would list now: no file at any path is no session; any other
    /// failure to read, a file over [`MAX_UTMP_BYTES`] or records not of `layout` are errors
    /// naming the path.
    pub fn sessions<Tz: chrono::TimeZone>(
        &mut self,
        layout: Layout,
        zone: &Tz,
        is_alive: impl Fn(i32) -> bool,
    ) -> Result<Vec<Session>, CollectError> {
        let Some(path) = self.read()? else {
            return Ok(Vec::new());
        };
        let file = utmp::parse_utmp(&self.buf, layout)
            .map_err(|error| CollectError::Parse { source: path.display().to_string(), error })?;
        if file.trailing_bytes != 0 {
            self.partial_reads += 1;
            if file.trailing_bytes != self.last_trailing {
                log::warn!(
                    "{}: ignored an incomplete last record ({} of {} bytes)",
                    path.display(),
                    file.trailing_bytes,
                    layout.record_size()
                );
            }
        }
        self.last_trailing = file.trailing_bytes;
        Ok(utmp::user_sessions(&file, zone, is_alive))
    }

    /// Read the first existing file into `buf`; `None` when none exists.
    fn read(&mut self) -> Result<Option<PathBuf>, CollectError> {
        for path in &self.paths {
            let file = match std::fs::File::open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(path, e)),
            };
            self.buf.clear();
            // `take` bounds memory whatever the file; a plain loop of `read`s avoids the
            // `fstat` and `lseek` that `read_to_end` spends on a size hint.
            let mut bounded = file.take(MAX_UTMP_BYTES as u64 + 1);
            let mut chunk = [0u8; 8192];
            loop {
                match bounded.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_error(path, e)),
                }
            }
            if self.buf.len() > MAX_UTMP_BYTES {
                self.buf = Vec::new();
                return Err(CollectError::Parse {
                    source: path.display().to_string(),
                    error: ParseError::Unrecognised("a utmp file of at most 1 MiB"),
                });
            }
            return Ok(Some(path.clone()));
        }
        Ok(None)
    }
}

fn io_error(path: &std::path::Path, error: std::io::Error) -> CollectError {
    let path = path.display().to_string();
    CollectError::Host(match error.kind() {
        std::io::ErrorKind::PermissionDenied => HostError::PermissionDenied(path),
        _ => HostError::Io { action: "reading", path, message: error.to_string() },
    })
}

#[cfg(test)]
mod tests;
