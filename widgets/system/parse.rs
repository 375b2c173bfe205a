//! Pure part of the Linux boot-time reader, compiled and tested on every OS: the `btime`
//! line of `/proc/stat` (the kernel's `Documentation/filesystems/proc.rst`: "the time at which
//! the system booted, in seconds since the Unix epoch").

use crate::ParseError;

/// The boot time of `/proc/stat`'s `btime 1418183276` line, Unix seconds.
pub fn parse_proc_stat_btime(text: &str) -> Result<u64, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let line = text.lines().find(|line| line.starts_with("btime ")).ok_or(ParseError::MissingField("btime"))?;
    let value = line.split_ascii_whitespace().nth(1).unwrap_or("");
    value.parse().map_err(|_| ParseError::bad_value("btime", line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        name.starts_with("proc-stat").then(|| result_json(parse_proc_stat_btime(body)))
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("system", render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust("system", |text| drop(parse_proc_stat_btime(text)), render);
    }

    #[test]
    fn btime_after_the_interrupt_counters() {
        assert_eq!(parse_proc_stat_btime(&fixture("system", "proc-stat--btime-node_exporter.txt")), Ok(1_418_183_276));
        assert_eq!(parse_proc_stat_btime("cpu  1 2 3 4\n"), Err(ParseError::MissingField("btime")));
        assert!(parse_proc_stat_btime("btime soon\n").is_err());
        assert!(parse_proc_stat_btime("btime -5\n").is_err());
    }
}
