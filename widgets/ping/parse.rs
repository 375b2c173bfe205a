//! Pure parser for the output of the system `ping -c N <target>`, compiled and tested on
//! every OS.
//!
//! Three formats are understood, all ending in a statistics block:
//!
//! ```text
//! iputils:  64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=2.98 ms
//!           5 packets transmitted, 3 received, +1 duplicates, +2 errors, 40% packet loss, time 4005ms
//!           rtt min/avg/max/mdev = 0.646/73.819/797.744/228.927 ms, pipe 2
//! BusyBox:  64 bytes from 10.0.0.1: seq=0 ttl=64 time=0.936 ms (DUP!)
//!           10 packets transmitted, 9 packets received, 2 duplicates, 10% packet loss
//!           round-trip min/avg/max = 0.613/0.930/1.219 ms
//! macOS:    64 bytes from 10.0.0.1: icmp_seq=0 ttl=64 time=0.235 ms
//!           2 packets transmitted, 2 packets received, +13 duplicates, 0.0% packet loss
//!           round-trip min/avg/max/stddev = 0.235/226.389/1084.262/nan ms
//! ```
//!
//! Reply lines may carry a `[unix.time]` prefix (`-D`). The round-trip line is absent when
//! nothing was received; `nan` is accepted for the deviation only. Output without a
//! statistics line is an error; when it carries a `ping: …` message (e.g. `ping: permission
//! denied (are you root?)`) that message is the error's value.

use crate::ParseError;

/// What one `ping` run reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PingOutput {
    /// Echo requests sent.
    pub transmitted: u64,
    /// Distinct replies received (duplicates not counted).
    pub received: u64,
    /// Duplicate replies (`+N duplicates`).
    pub duplicates: u64,
    /// ICMP errors such as "Destination Host Unreachable" (`+N errors`).
    pub errors: u64,
    /// Packet loss in percent as printed by `ping`.
    pub packet_loss: f64,
    /// Round-trip minimum in ms (`None` when nothing was received).
    pub min_ms: Option<f64>,
    /// Round-trip average in ms.
    pub avg_ms: Option<f64>,
    /// Round-trip maximum in ms.
    pub max_ms: Option<f64>,
    /// `mdev`/`stddev` in ms (`None` when absent or `nan`).
    pub stddev_ms: Option<f64>,
    /// Per-reply round trips in ms, in output order, only the first reply per sequence number
    /// (empty for `-q`).
    pub rtts_ms: Vec<f64>,
}

/// Parse the whole output (stdout followed by stderr) of one `ping` run.
pub fn parse_ping(text: &str) -> Result<PingOutput, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut out = PingOutput::default();
    let mut saw_stats = false;
    let mut ping_error: Option<&str> = None;
    let mut seen_seqs = std::collections::HashSet::new();
    for raw in text.lines() {
        let line = strip_timestamp(raw.trim());
        if line.contains("packets transmitted") {
            parse_stats_line(line, &mut out)?;
            saw_stats = true;
        } else if line.starts_with("rtt ") || line.starts_with("round-trip ") {
            parse_rtt_line(line, &mut out)?;
        } else if line.contains("bytes from") && !line.contains("(DUP!)") {
            // macOS marks no duplicates for broadcast replies: keep the first reply per seq.
            let first = reply_seq(line).is_none_or(|seq| seen_seqs.insert(seq));
            if let (true, Some(rtt)) = (first, reply_time(line)?) {
                out.rtts_ms.push(rtt);
            }
        } else if let Some(msg) = line.strip_prefix("ping: ") {
            ping_error.get_or_insert(msg);
        }
    }
    if !saw_stats {
        return Err(match ping_error {
            Some(msg) => ParseError::bad_value("ping", msg),
            None => ParseError::MissingField("packets transmitted"),
        });
    }
    if out.received > out.transmitted {
        return Err(ParseError::bad_value("received", &out.received.to_string()));
    }
    if out.received > 0 && out.avg_ms.is_none() && !out.rtts_ms.is_empty() {
        // Interrupted runs (^C) may lack the round-trip line: derive it from the replies.
        let n = out.rtts_ms.len() as f64;
        out.min_ms = out.rtts_ms.iter().copied().reduce(f64::min);
        out.max_ms = out.rtts_ms.iter().copied().reduce(f64::max);
        out.avg_ms = Some(out.rtts_ms.iter().sum::<f64>() / n);
    }
    Ok(out)
}

/// `[1596881133.081556] 64 bytes …` → `64 bytes …` (iputils `-D`).
fn strip_timestamp(line: &str) -> &str {
    if line.starts_with('[') {
        if let Some(end) = line.find("] ") {
            return &line[end + 2..];
        }
    }
    line
}

/// `icmp_seq=2` (iputils, macOS) or `seq=0` (BusyBox) of a reply line.
fn reply_seq(line: &str) -> Option<u64> {
    line.split_whitespace().find_map(|word| {
        let value = word.strip_prefix("icmp_seq=").or_else(|| word.strip_prefix("seq="))?;
        value.trim_end_matches(',').parse().ok()
    })
}

/// `… time=0.262 ms` → 0.262; `None` for reply lines without a time (e.g. unreachable).
fn reply_time(line: &str) -> Result<Option<f64>, ParseError> {
    let Some(start) = line.find("time=") else { return Ok(None) };
    let value = line[start + 5..].split_whitespace().next().unwrap_or("");
    let value = value.strip_suffix("ms").unwrap_or(value);
    finite(value, "time").map(Some)
}

/// The `N packets transmitted, …` line; comma-separated `<number> <words>` items.
fn parse_stats_line(line: &str, out: &mut PingOutput) -> Result<(), ParseError> {
    let mut saw_received = false;
    for item in line.split(',').map(str::trim) {
        let Some((number, words)) = item.split_once(' ') else { continue };
        let number = number.trim_start_matches('+');
        let count = |field| number.parse::<u64>().map_err(|_| ParseError::bad_value(field, number));
        if words.ends_with("transmitted") {
            out.transmitted = count("packets transmitted")?;
        } else if words == "received" || words == "packets received" {
            out.received = count("received")?;
            saw_received = true;
        } else if words.starts_with("duplicates") {
            out.duplicates = count("duplicates")?;
        } else if words.starts_with("errors") {
            out.errors = count("errors")?;
        } else if words == "packet loss" {
            let pct = number.strip_suffix('%').ok_or_else(|| ParseError::bad_value("packet loss", number))?;
            let pct = finite(pct, "packet loss")?;
            if !(0.0..=100.0).contains(&pct) {
                return Err(ParseError::bad_value("packet loss", number));
            }
            out.packet_loss = pct;
        }
    }
    if !saw_received {
        return Err(ParseError::MissingField("received"));
    }
    Ok(())
}

/// `rtt min/avg/max/mdev = a/b/c/d ms[, pipe N]` or `round-trip min/avg/max[/stddev] = … ms`.
fn parse_rtt_line(line: &str, out: &mut PingOutput) -> Result<(), ParseError> {
    let (_, values) = line.split_once('=').ok_or(ParseError::MissingField("round-trip values"))?;
    let values = values.split_whitespace().next().ok_or(ParseError::MissingField("round-trip values"))?;
    let mut parts = values.split('/');
    let mut next = |field| parts.next().ok_or(ParseError::MissingField(field));
    out.min_ms = Some(finite(next("min")?, "min")?);
    out.avg_ms = Some(finite(next("avg")?, "avg")?);
    out.max_ms = Some(finite(next("max")?, "max")?);
    out.stddev_ms = match parts.next() {
        None | Some("nan") => None,
        Some(dev) => Some(finite(dev, "stddev")?),
    };
    Ok(())
}

/// A finite, non-negative number.
fn finite(text: &str, field: &'static str) -> Result<f64, ParseError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(ParseError::bad_value(field, text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iputils_summary_with_duplicates_and_pipe() {
        let text = "PING x (1.2.3.4) 56(84) bytes of data.\n\n--- x ping statistics ---\n\
                    1688 packets transmitted, 1553 received, +1 duplicates, 7% packet loss, time 2987ms\n\
                    rtt min/avg/max/mdev = 0.282/0.642/11.699/0.699 ms, pipe 2, ipg/ewma 1.770/0.782 ms\n";
        let out = parse_ping(text).expect("parses");
        assert_eq!((out.transmitted, out.received, out.duplicates), (1688, 1553, 1));
        assert_eq!(out.packet_loss, 7.0);
        assert_eq!(
            (out.min_ms, out.avg_ms, out.max_ms, out.stddev_ms),
            (Some(0.282), Some(0.642), Some(11.699), Some(0.699))
        );
    }

    #[test]
    fn errors_without_summary_are_typed() {
        assert_eq!(parse_ping(""), Err(ParseError::Empty));
        assert_eq!(
            parse_ping("PING 1.1.1.1 (1.1.1.1): 56 data bytes\nping: permission denied (are you root?)\n"),
            Err(ParseError::bad_value("ping", "permission denied (are you root?)"))
        );
        assert_eq!(parse_ping("garbage\n"), Err(ParseError::MissingField("packets transmitted")));
        assert!(parse_ping("3 packets transmitted, 4 received, 0% packet loss\n").is_err());
        assert!(parse_ping("3 packets transmitted, 3 received, 0% packet loss\nrtt min/avg/max/mdev = nan/1/1/1 ms\n")
            .is_err());
    }

    #[test]
    fn interrupted_run_without_rtt_line_derives_it_from_replies() {
        let text = "64 bytes from a: icmp_seq=1 ttl=64 time=1.0 ms\n64 bytes from a: icmp_seq=2 ttl=64 time=3.0 ms\n\
                    ^C\n3 packets transmitted, 2 received, 33% packet loss\n";
        let out = parse_ping(text).expect("parses");
        assert_eq!((out.min_ms, out.avg_ms, out.max_ms), (Some(1.0), Some(2.0), Some(3.0)));
    }
}
