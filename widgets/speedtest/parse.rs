//! Pure parsers for third-party speed test outputs, compiled and tested on every OS.
//!
//! - Ookla `speedtest -f json`: one JSON object per line; the one with `"type":"result"` holds
//!   `ping.{latency,jitter}` (ms), `download`/`upload` `.bandwidth` (bytes/s), `.bytes`,
//!   `.elapsed` (ms), newer CLIs `download.latency.iqm` (ms, loaded latency), `server.{name,
//!   host}`, `packetLoss` (%). `{"type":"log","level":"error","message":…}` is an error.
//! - macOS `networkQuality -c`: one pretty-printed JSON object with `dl_throughput` /
//!   `ul_throughput` (bits/s), `responsiveness` (RPM, round trips per minute under load; with
//!   `-s` `dl_responsiveness`/`ul_responsiveness`), `base_rtt` (ms, idle), `il_h2_req_resp`
//!   (idle request times, ms), `dl_bytes_transferred`/`ul_bytes_transferred`, `start_date` /
//!   `end_date` (`2026-10-05 18:28:46.411`), `test_endpoint`; `error_code` ≠ 0 is an error.

use serde_json::Value;

use crate::ParseError;

/// One speed test's figures, whatever produced them. Rates in Mbps (10^6 bit/s), times in ms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpeedResult {
    /// Download rate, Mbps.
    pub download_mbps: Option<f64>,
    /// Upload rate, Mbps.
    pub upload_mbps: Option<f64>,
    /// Idle latency, ms.
    pub ping_ms: Option<f64>,
    /// Idle latency jitter, ms.
    pub jitter_ms: Option<f64>,
    /// Latency while the download saturates the link, ms.
    pub loaded_latency_ms: Option<f64>,
    /// Responsiveness under load, round trips per minute (networkQuality).
    pub responsiveness_rpm: Option<f64>,
    /// Server name or host.
    pub server: Option<String>,
    /// Bytes downloaded.
    pub bytes_down: Option<u64>,
    /// Bytes uploaded.
    pub bytes_up: Option<u64>,
    /// Wall-clock duration of the test, seconds.
    pub duration_s: Option<f64>,
}

/// The tool ran but reported that the test failed (offline, no server).
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutcome {
    /// A result.
    Result(SpeedResult),
    /// The tool's own error message.
    Failed(String),
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_f64().filter(|x| x.is_finite() && *x >= 0.0)
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Parse Ookla `speedtest -f json` (or `json-pretty`) output.
pub fn parse_ookla(output: &str) -> Result<ToolOutcome, ParseError> {
    let output = output.trim();
    if output.is_empty() {
        return Err(ParseError::Empty);
    }
    // Pretty output is one multi-line object; plain output is one object per line.
    let objects: Vec<Value> = match serde_json::from_str::<Value>(output) {
        Ok(v) => vec![v],
        Err(_) => output.lines().filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok()).collect(),
    };
    if objects.is_empty() {
        return Err(ParseError::Unrecognised("Ookla speedtest JSON"));
    }
    if let Some(result) = objects.iter().find(|o| o.get("type").and_then(Value::as_str) == Some("result")) {
        return ookla_result(result).map(ToolOutcome::Result);
    }
    let error = objects.iter().find(|o| o.get("level").and_then(Value::as_str) == Some("error"));
    match error.and_then(|o| text(o, "message").or_else(|| text(o, "error"))) {
        Some(message) => Ok(ToolOutcome::Failed(message)),
        None => Err(ParseError::MissingField("type: result")),
    }
}

fn ookla_result(v: &Value) -> Result<SpeedResult, ParseError> {
    let mbps = |dir: &str| num(v, &[dir, "bandwidth"]).map(|bytes_per_s| bytes_per_s * 8.0 / 1e6);
    let download_mbps = mbps("download").ok_or(ParseError::MissingField("download.bandwidth"))?;
    let bytes = |dir: &str| num(v, &[dir, "bytes"]).map(|b| b as u64);
    let elapsed_ms = ["download", "upload"].iter().filter_map(|dir| num(v, &[dir, "elapsed"])).sum::<f64>();
    let server = v.get("server").and_then(|s| match (text(s, "name"), text(s, "location")) {
        (Some(name), Some(loc)) => Some(format!("{name} ({loc})")),
        (name, _) => name.or_else(|| text(s, "host")),
    });
    Ok(SpeedResult {
        download_mbps: Some(download_mbps),
        upload_mbps: mbps("upload"),
        ping_ms: num(v, &["ping", "latency"]),
        jitter_ms: num(v, &["ping", "jitter"]),
        loaded_latency_ms: num(v, &["download", "latency", "iqm"]),
        responsiveness_rpm: None,
        server,
        bytes_down: bytes("download"),
        bytes_up: bytes("upload"),
        duration_s: (elapsed_ms > 0.0).then_some(elapsed_ms / 1000.0),
    })
}

/// Parse macOS `networkQuality -c` output.
pub fn parse_network_quality(output: &str) -> Result<ToolOutcome, ParseError> {
    let output = output.trim();
    if output.is_empty() {
        return Err(ParseError::Empty);
    }
    let v: Value = serde_json::from_str(output).map_err(|_| ParseError::Unrecognised("networkQuality -c JSON"))?;
    if !v.is_object() {
        return Err(ParseError::Unrecognised("networkQuality -c JSON object"));
    }
    if let Some(code) = v.get("error_code").and_then(Value::as_i64).filter(|c| *c != 0) {
        let domain = text(&v, "error_domain").unwrap_or_else(|| "error".to_string());
        return Ok(ToolOutcome::Failed(format!("networkQuality failed: {domain} {code}")));
    }
    let rate = |key: &str| num(&v, &[key]).map(|bits| bits / 1e6);
    let download_mbps = rate("dl_throughput").ok_or(ParseError::MissingField("dl_throughput"))?;
    let rpm = num(&v, &["responsiveness"]).or_else(|| num(&v, &["dl_responsiveness"])).filter(|r| *r > 0.0);
    let idle: Vec<f64> = v
        .get("il_h2_req_resp")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).filter(|x| x.is_finite()).collect())
        .unwrap_or_default();
    let duration_s = match (text(&v, "start_date"), text(&v, "end_date")) {
        (Some(start), Some(end)) => match (nq_date_ms(&start), nq_date_ms(&end)) {
            (Some(s), Some(e)) if e >= s => Some((e - s) as f64 / 1000.0),
            _ => None,
        },
        _ => None,
    };
    Ok(ToolOutcome::Result(SpeedResult {
        download_mbps: Some(download_mbps),
        upload_mbps: rate("ul_throughput"),
        ping_ms: num(&v, &["base_rtt"]),
        jitter_ms: crate::ping::jitter(&idle).filter(|_| idle.len() >= 2),
        loaded_latency_ms: rpm.map(|r| 60_000.0 / r),
        responsiveness_rpm: rpm,
        server: text(&v, "test_endpoint"),
        bytes_down: num(&v, &["dl_bytes_transferred"]).map(|b| b as u64),
        bytes_up: num(&v, &["ul_bytes_transferred"]).map(|b| b as u64),
        duration_s,
    }))
}

/// `2026-10-05 18:28:46.411` → milliseconds since an arbitrary epoch (only differences are
/// used; days are counted with the civil-from-days algorithm so month ends are right).
fn nq_date_ms(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant), proleptic Gregorian.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe;
    Some(((days * 24 + h) * 60 + min) * 60_000 + sec * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ookla_log_error_and_garbage() {
        let text = r#"{"type":"log","timestamp":"2024-01-01T00:00:00Z","message":"Configuration - Couldn't resolve host name (HostNotFoundException)","level":"error"}"#;
        assert_eq!(
            parse_ookla(text),
            Ok(ToolOutcome::Failed("Configuration - Couldn't resolve host name (HostNotFoundException)".into()))
        );
        assert_eq!(parse_ookla(""), Err(ParseError::Empty));
        assert!(parse_ookla("nope").is_err());
        assert!(parse_ookla(r#"{"type":"result"}"#).is_err());
    }

    #[test]
    fn dates_span_midnight_and_month_ends() {
        let a = nq_date_ms("2026-02-28 23:59:59.500").expect("date");
        let b = nq_date_ms("2026-03-01 00:00:00.5").expect("date");
        assert_eq!(b - a, 1000);
        assert_eq!(nq_date_ms("2026-13-01 00:00:00"), None);
        assert_eq!(nq_date_ms("x"), None);
    }
}
