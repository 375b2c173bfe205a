//! Pure parsers for the Linux process reader: `/proc/PID/stat`, `/etc/passwd` and
//! `/proc/meminfo`, compiled and tested on every OS.

use crate::ParseError;

/// The fields of `/proc/PID/stat` the processes widget uses (see `proc_pid_stat(5)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PidStat<'a> {
    /// Field 1, the process id.
    pub pid: u32,
    /// Field 2 without its parentheses: the command name (`comm`, at most 15 bytes on most
    /// kernels). It may itself hold spaces and parentheses.
    pub name: &'a str,
    /// Field 3, the state letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Fields 14 + 15: user plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Field 22: start time after boot, in clock ticks (tells a reused pid from the old one).
    pub start_ticks: u64,
    /// Field 24: resident set size, in pages.
    pub rss_pages: u64,
}

/// Parse one `/proc/PID/stat` line. The name is found between the first `(` and the *last*
/// `)`, because a process may name itself `a) (b`.
pub fn parse_proc_pid_stat(text: &str) -> Result<PidStat<'_>, ParseError> {
    let text = text.trim_end();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let open = text.find('(').ok_or(ParseError::Unrecognised("`PID (comm) state …`"))?;
    let close = text.rfind(')').filter(|c| *c > open).ok_or(ParseError::Unrecognised("`PID (comm) state …`"))?;
    let pid_text = text[..open].trim();
    let pid = pid_text.parse().map_err(|_| ParseError::bad_value("pid", pid_text))?;
    let name = &text[open + 1..close];
    // Fields after the name, numbered from 3 (state).
    let mut rest = text[close + 1..].split_ascii_whitespace();
    let state_text = rest.next().ok_or(ParseError::MissingField("state"))?;
    let state = state_text.chars().next().ok_or(ParseError::MissingField("state"))?;
    let mut field = |from: &mut usize, number: usize, name: &'static str| -> Result<u64, ParseError> {
        let value = rest.nth(number - *from - 1).ok_or(ParseError::MissingField(name))?;
        *from = number;
        value.parse().map_err(|_| ParseError::bad_value(name, value))
    };
    let mut at = 3;
    let utime = field(&mut at, 14, "utime")?;
    let stime = field(&mut at, 15, "stime")?;
    let start_ticks = field(&mut at, 22, "starttime")?;
    let rss = field(&mut at, 24, "rss")?;
    Ok(PidStat { pid, name, state, cpu_ticks: utime.saturating_add(stime), start_ticks, rss_pages: rss })
}

/// `(uid, name)` of every well-formed `/etc/passwd` entry (`name:x:uid:gid:…`), in file
/// order. Comment, blank and malformed lines are skipped; an input with no entry is an error.
pub fn parse_passwd(text: &str) -> Result<Vec<(u32, String)>, ParseError> {
    let users: Vec<(u32, String)> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next().filter(|n| !n.is_empty())?;
            let uid = fields.nth(1)?.trim().parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect();
    if users.is_empty() {
        return Err(if text.trim().is_empty() { ParseError::Empty } else { ParseError::Unrecognised("passwd lines") });
    }
    Ok(users)
}

/// One `/proc/meminfo` value in bytes (`Key:   123 kB`); `None` when the key is absent or
/// not a number.
pub fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name != key {
            return None;
        }
        let mut parts = value.split_ascii_whitespace();
        let number: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") => number.checked_mul(1024),
            None => Some(number),
            Some(_) => None,
        }
    })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(text: &str) -> Result<u64, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    meminfo_bytes(text, "MemTotal").ok_or(ParseError::MissingField("MemTotal"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        if name.starts_with("proc-PID-stat") {
            Some(result_json(parse_proc_pid_stat(body)))
        } else if name.starts_with("etc-passwd") {
            Some(result_json(parse_passwd(body)))
        } else if name.starts_with("proc-meminfo") {
            Some(result_json(parse_meminfo_total(body)))
        } else {
            None
        }
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("processes", render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust(
            "processes",
            |text| {
                let _ = parse_proc_pid_stat(text);
                let _ = parse_passwd(text);
                let _ = parse_meminfo_total(text);
            },
            render,
        );
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_is_kept_whole() {
        let stat = fixture("processes", "proc-PID-stat--name-with-space-and-parens-captured.txt");
        let parsed = parse_proc_pid_stat(&stat).expect("parses");
        assert_eq!(parsed.name, "we ird) (x");
        assert_eq!(parsed.state, 'S');
        assert_eq!(parsed.rss_pages, 390);
    }

    #[test]
    fn kernel_threads_have_no_resident_memory() {
        let text = fixture("processes", "proc-PID-stat--kthreadd-kernel-thread-captured.txt");
        let parsed = parse_proc_pid_stat(&text).expect("parses");
        assert_eq!((parsed.pid, parsed.name, parsed.rss_pages), (2, "kthreadd", 0));
    }

    #[test]
    fn truncated_and_garbage_stat_lines_are_errors() {
        assert_eq!(parse_proc_pid_stat(""), Err(ParseError::Empty));
        assert_eq!(parse_proc_pid_stat("12 (x) S 1 2"), Err(ParseError::MissingField("utime")));
        assert!(parse_proc_pid_stat("x (y) S").is_err());
        assert!(parse_proc_pid_stat("no parens at all").is_err());
    }

    #[test]
    fn passwd_and_meminfo() {
        let users = parse_passwd(&fixture("processes", "etc-passwd--captured.txt")).expect("passwd");
        assert_eq!(users.first(), Some(&(0, "root".to_string())));
        assert_eq!(parse_passwd("# only a comment\n"), Err(ParseError::Unrecognised("passwd lines")));
        assert_eq!(meminfo_bytes("MemTotal:  2048 kB\n", "MemTotal"), Some(2_097_152));
        assert_eq!(meminfo_bytes("HugePages_Total:  3\n", "HugePages_Total"), Some(3));
        assert_eq!(parse_meminfo_total("SwapTotal: 0 kB\n"), Err(ParseError::MissingField("MemTotal")));
    }
}
