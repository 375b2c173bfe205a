//! Pure parser of the Linux login-records file (`/run/utmp`; `/var/log/wtmp` has the same
//! records), glibc's `struct utmp`, compiled and tested on every OS. The byte layout, its
//! sources and test vectors: `docs/utmp-format.md`.
//!
//! ```text
//! offset  size  field          (Compat32: x86_64, i386, arm, riscv64 — 384-byte records)
//!      0     2  ut_type        i16 little-endian: 7 = USER_PROCESS
//!      2     2  (padding)
//!      4     4  ut_pid         i32
//!      8    32  ut_line        tty, NUL-padded, not always NUL-terminated
//!     40     4  ut_id
//!     44    32  ut_user        login name, NUL-padded, not always NUL-terminated
//!     76   256  ut_host        remote host or X display
//!    332     4  ut_exit
//!    336     4  ut_session     i32             (Long64: i64 at 336)
//!    340     4  ut_tv.tv_sec   u32             (Long64: i64 at 344)
//!    344     4  ut_tv.tv_usec  i32             (Long64: i64 at 352)
//!    348    16  ut_addr_v6                     (Long64: at 360)
//!    364    20  reserved                       (Long64: at 376, then 4 bytes of padding)
//!    384        end of record                  (Long64: 400: aarch64, loongarch64)
//! ```
//!
//! What `who` lists, and so what [`user_sessions`] keeps: records of type `USER_PROCESS` with
//! a non-empty user whose process still exists (coreutils reads the default file with
//! gnulib's `READ_UTMP_CHECK_PIDS`: a record whose `ut_pid` is positive and gone, `kill(pid,
//! 0)` failing with `ESRCH`, is left out).

use chrono::{Datelike, TimeZone, Timelike};

use super::parse::Session;
use crate::ParseError;

/// `ut_type` of a logged-in user's session.
pub const USER_PROCESS: i16 = 7;

/// The highest `ut_type` glibc defines (`ACCOUNTING`); anything above means the bytes are not
/// utmp records of the expected layout.
pub const MAX_TYPE: i16 = 9;

/// Which of glibc's two 64-bit-era record layouts a file uses. They differ only from
/// `ut_session` on (see the module doc); the file carries no marker, the writer's
/// architecture decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 384-byte records, `ut_session` and `ut_tv` as 32-bit fields
    /// (`__WORDSIZE_TIME64_COMPAT32`): x86_64, and every 32-bit target (whose `long` is 32
    /// bits anyway).
    Compat32,
    /// 400-byte records, `long ut_session` and `struct timeval ut_tv`: aarch64 and
    /// loongarch64, whose glibc defines `__WORDSIZE_TIME64_COMPAT32` as 0.
    Long64,
}

impl Layout {
    /// Bytes per record.
    pub const fn record_size(self) -> usize {
        match self {
            Layout::Compat32 => 384,
            Layout::Long64 => 400,
        }
    }

    /// The layout glibc writes on the architecture this binary was built for; `None` on a
    /// big-endian one (the parser reads little-endian fields only; `who` is used there).
    pub const fn native() -> Option<Layout> {
        if cfg!(target_endian = "big") {
            None
        } else if cfg!(any(target_arch = "aarch64", target_arch = "loongarch64")) {
            Some(Layout::Long64)
        } else {
            Some(Layout::Compat32)
        }
    }

    /// Offset and width of `ut_tv.tv_sec`.
    const fn tv_sec(self) -> (usize, usize) {
        match self {
            Layout::Compat32 => (340, 4),
            Layout::Long64 => (344, 8),
        }
    }
}

/// Offsets of the fields both layouts share. Do not reorder: this is glibc's `struct utmp`.
const TYPE_AT: usize = 0;
const PID_AT: usize = 4;
const LINE: (usize, usize) = (8, 32);
const USER: (usize, usize) = (44, 32);
const HOST: (usize, usize) = (76, 256);

/// One record, the fields `who` shows decoded. Text fields end at their first NUL or at the
/// field's end when there is none; bytes that are not UTF-8 become U+FFFD, as the agent
/// decodes `who`'s output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UtmpRecord {
    /// `ut_type` (0 to 9; 7 = `USER_PROCESS`).
    #[serde(rename = "type")]
    pub kind: i16,
    /// `ut_pid`.
    pub pid: i32,
    /// `ut_line`: the terminal.
    pub line: String,
    /// `ut_user`: the login name.
    pub user: String,
    /// `ut_host`: remote host or X display; empty for a local login.
    pub host: String,
    /// `ut_tv.tv_sec`: seconds since the epoch (UTC) when the record was written.
    pub time: i64,
}

/// A parsed file: its whole records, and the bytes of an incomplete last one (a file cut
/// short or read while being extended), which are ignored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UtmpFile {
    /// Every whole record, in file order.
    pub records: Vec<UtmpRecord>,
    /// Length of the incomplete trailing record (0 when the size is a multiple of the record
    /// size).
    pub trailing_bytes: usize,
}

/// Parse a utmp/wtmp file of `layout`. An empty file is no record. Fails only when a record's
/// `ut_type` is outside 0..=9: the bytes are then not records of this layout (another
/// architecture's file, or not a utmp file at all), and no session is guessed from them.
pub fn parse_utmp(bytes: &[u8], layout: Layout) -> Result<UtmpFile, ParseError> {
    let size = layout.record_size();
    let chunks = bytes.chunks_exact(size);
    let trailing_bytes = chunks.remainder().len();
    let mut records = Vec::with_capacity(bytes.len() / size);
    for (index, record) in chunks.enumerate() {
        let kind = i16::from_le_bytes([record[TYPE_AT], record[TYPE_AT + 1]]);
        if !(0..=MAX_TYPE).contains(&kind) {
            return Err(ParseError::BadValue { field: "ut_type", value: format!("record {index}: {kind}") });
        }
        let pid = i32::from_le_bytes(word(record, PID_AT));
        let (at, width) = layout.tv_sec();
        let time = if width == 4 {
            // glibc declares the 32-bit tv_sec unsigned since 2.41 (times past 2038); the
            // same bits before then.
            i64::from(u32::from_le_bytes(word(record, at)))
        } else {
            i64::from_le_bytes(dword(record, at))
        };
        records.push(UtmpRecord {
            kind,
            pid,
            line: text(record, LINE),
            user: text(record, USER),
            host: text(record, HOST),
            time,
        });
    }
    Ok(UtmpFile { records, trailing_bytes })
}

/// The sessions `who` lists, as the widget reports them: `USER_PROCESS` records with a user,
/// whose `pid` is 0 or negative or for which `is_alive(pid)` is true; login times formatted
/// in `zone` to the minute, as `who` prints them.
pub fn user_sessions<Tz: TimeZone>(file: &UtmpFile, zone: &Tz, is_alive: impl Fn(i32) -> bool) -> Vec<Session> {
    file.records
        .iter()
        .filter(|r| r.kind == USER_PROCESS && !r.user.is_empty() && (r.pid <= 0 || is_alive(r.pid)))
        .map(|r| Session {
            name: r.user.trim_end_matches(' ').to_string(),
            terminal: r.line.clone(),
            host: Some(r.host.trim().to_string()).filter(|h| !h.is_empty()),
            started: started_text(r.time, zone),
        })
        .collect()
}

/// `secs` as naive local ISO-8601 in `zone`, to the minute with `:00` seconds
/// (`2013-01-16T23:44:00`): what the widget made of `who`'s `2013-01-16 23:44`. `None` when
/// the year has not four digits (`who` then prints no date the widget can read).
pub fn started_text<Tz: TimeZone>(secs: i64, zone: &Tz) -> Option<String> {
    let local = chrono::DateTime::from_timestamp(secs, 0)?.with_timezone(zone).naive_local();
    if !(0..=9999).contains(&local.year()) {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:00",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute()
    ))
}

fn word(record: &[u8], at: usize) -> [u8; 4] {
    [record[at], record[at + 1], record[at + 2], record[at + 3]]
}

fn dword(record: &[u8], at: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&record[at..at + 8]);
    out
}

/// A fixed-width text field: up to its first NUL, lossily decoded.
fn text(record: &[u8], (at, width): (usize, usize)) -> String {
    let field = &record[at..at + width];
    let end = field.iter().position(|b| *b == 0).unwrap_or(width);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
#[path = "utmp_tests.rs"]
mod tests;
