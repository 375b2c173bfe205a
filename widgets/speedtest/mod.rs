//! `speedtest`: download/upload rate, idle and loaded latency. One widget-log entry per run.
//!
//! Methods (option `method`): `http` (default, [`http`]), `ookla` (`speedtest -f json`),
//! `networkquality` (macOS `networkQuality -c`). Skipped, without a sample, while the machine
//! runs on battery below `min_battery_percent`. Under replay only the two commands' captured
//! outputs are used. See `README.md`.

pub mod http;
pub mod parse;
pub mod power;

use std::time::Duration;

use serde_json::{json, Value};

use crate::{CollectError, Host, HostError, Level, Os, Sample, Timestamp, Widget, WidgetOptions, WidgetSpec};
use parse::{SpeedResult, ToolOutcome};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "speedtest",
    summary: "Download/upload Mbps, idle and loaded latency (HTTP, Ookla CLI or networkQuality)",
    enabled_by_default: false,
    default_interval_s: Some(21600),
    default_jitter_s: 1800,
    validate: |options| SpeedtestConfig::from_options(options).map(|_| ()),
    build: |options| Box::new(SpeedtestWidget::new(SpeedtestConfig::from_options(options).unwrap_or_default())),
};

/// How to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Built-in HTTP test against a Cloudflare-style endpoint.
    Http,
    /// Ookla's `speedtest` CLI.
    Ookla,
    /// macOS `networkQuality`.
    NetworkQuality,
}

impl Method {
    /// The wire and config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Http => "http",
            Method::Ookla => "ookla",
            Method::NetworkQuality => "networkquality",
        }
    }
}

/// The widget's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedtestConfig {
    /// Option `method`, default `http`.
    pub method: Method,
    /// Option `url`: base URL of the HTTP test, default `https://speed.cloudflare.com`.
    pub url: String,
    /// Option `max_bytes`: bytes per run, both directions together, default 50 MB.
    pub max_bytes: u64,
    /// Option `connections`: parallel connections, default 4.
    pub connections: usize,
    /// Option `min_battery_percent`: skip on battery below this, default 30.
    pub min_battery_percent: f64,
    /// Time limit per HTTP phase (15 s; shorter in tests).
    pub phase_limit: Duration,
}

impl Default for SpeedtestConfig {
    fn default() -> Self {
        SpeedtestConfig {
            method: Method::Http,
            url: "https://speed.cloudflare.com".to_string(),
            max_bytes: 50_000_000,
            connections: 4,
            min_battery_percent: 30.0,
            phase_limit: Duration::from_secs(15),
        }
    }
}

/// Every option [`SpeedtestConfig::from_options`] accepts, named in the error for an unknown
/// one (keep in step with its `match`; a test checks each is accepted).
pub const OPTIONS: &[&str] = &["method", "url", "max_bytes", "connections", "min_battery_percent"];

impl SpeedtestConfig {
    /// Read and validate the `widgets.speedtest` options; the error names the offending key.
    pub fn from_options(options: &WidgetOptions) -> Result<SpeedtestConfig, String> {
        let mut config = SpeedtestConfig::default();
        for (key, value) in options {
            match key.as_str() {
                "method" => {
                    config.method = match value.as_str() {
                        Some("http") => Method::Http,
                        Some("ookla") => Method::Ookla,
                        Some("networkquality") => Method::NetworkQuality,
                        _ => return Err("`method` must be \"http\", \"ookla\" or \"networkquality\"".to_string()),
                    }
                }
                "url" => {
                    let url = value.as_str().unwrap_or("");
                    let ok = (url.starts_with("https://") || url.starts_with("http://"))
                        && url.len() <= 2048
                        && !url.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#');
                    if !ok {
                        return Err("`url` must be an http(s) base URL without query".to_string());
                    }
                    config.url = url.trim_end_matches('/').to_string();
                }
                "max_bytes" => {
                    config.max_bytes = value
                        .as_u64()
                        .filter(|b| (10_000..=10_000_000_000).contains(b))
                        .ok_or("`max_bytes` must be an integer from 10000 to 10000000000")?;
                }
                "connections" => {
                    config.connections = value
                        .as_u64()
                        .filter(|c| (1..=16).contains(c))
                        .map(|c| c as usize)
                        .ok_or("`connections` must be an integer from 1 to 16")?;
                }
                "min_battery_percent" => {
                    config.min_battery_percent = value
                        .as_f64()
                        .filter(|p| (0.0..=100.0).contains(p))
                        .ok_or("`min_battery_percent` must be from 0 to 100")?;
                }
                other => return Err(format!("unknown option `{other}` (speedtest options: {})", OPTIONS.join(", "))),
            }
        }
        Ok(config)
    }
}

/// The widget-log data of a result.
pub fn result_json(result: &SpeedResult, method: Method) -> Value {
    let r = |x: Option<f64>| x.map(crate::units::round2);
    json!({
        "download": r(result.download_mbps),
        "upload": r(result.upload_mbps),
        "ping": r(result.ping_ms),
        "jitter": r(result.jitter_ms),
        "loaded_latency": r(result.loaded_latency_ms),
        "responsiveness": r(result.responsiveness_rpm),
        "server": result.server,
        "bytes_down": result.bytes_down,
        "bytes_up": result.bytes_up,
        "duration_s": r(result.duration_s),
        "method": method.as_str(),
    })
}

/// A failed test: level `error` with the reason in `error`.
pub fn failure_sample(method: Method, error: &str) -> Sample {
    let mut data = result_json(&SpeedResult::default(), method);
    data["error"] = json!(error);
    Sample::log("speedtest", Level::Error, "speedtest", data)
}

/// A parser of a speed test tool's output.
type ToolParser = fn(&str) -> Result<ToolOutcome, crate::ParseError>;

/// How long a speed test command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one speed test per interval.
pub struct SpeedtestWidget {
    /// Settings.
    pub config: SpeedtestConfig,
}

impl SpeedtestWidget {
    /// A widget with `config`.
    pub fn new(config: SpeedtestConfig) -> Self {
        SpeedtestWidget { config }
    }

    fn run_tool(&self, host: &dyn Host, method: Method) -> Result<Vec<Sample>, CollectError> {
        let (argv, parser): (&[&str], ToolParser) = match method {
            Method::Ookla => (&["speedtest", "-f", "json"], parse::parse_ookla),
            _ => (&["networkQuality", "-c"], parse::parse_network_quality),
        };
        if method == Method::NetworkQuality && host.os() != Os::Macos {
            return Err(CollectError::Unsupported("networkQuality exists only on macOS".to_string()));
        }
        let out = match host.run(argv, COMMAND_TIMEOUT) {
            Ok(out) => out,
            Err(HostError::CommandNotFound(cmd)) => {
                return Err(CollectError::Unsupported(format!("{cmd} is not installed")));
            }
            Err(e) => return Ok(vec![failure_sample(method, &e.to_string())]),
        };
        let text = if out.stdout.trim().is_empty() { &out.stderr } else { &out.stdout };
        match parser(text) {
            Ok(ToolOutcome::Result(result)) => {
                Ok(vec![Sample::log("speedtest", Level::Info, "speedtest", result_json(&result, method))])
            }
            Ok(ToolOutcome::Failed(message)) => Ok(vec![failure_sample(method, &message)]),
            Err(error) => Err(CollectError::Parse { source: argv.join(" "), error }),
        }
    }
}

impl Widget for SpeedtestWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        if let Some(pct) = power::on_battery_percent(host) {
            if pct < self.config.min_battery_percent {
                log::debug!("speedtest skipped: on battery at {pct} % (below {} %)", self.config.min_battery_percent);
                return Ok(Vec::new());
            }
        }
        match self.config.method {
            Method::Http => {
                if !host.network_allowed() {
                    log::debug!("speedtest skipped: the http method needs the network (replay)");
                    return Ok(Vec::new());
                }
                let plan = http::HttpPlan {
                    url: self.config.url.clone(),
                    max_bytes: self.config.max_bytes,
                    connections: self.config.connections,
                    phase_limit: self.config.phase_limit,
                    request_timeout: Duration::from_secs(5),
                };
                Ok(vec![match http::run(&plan) {
                    Ok(result) => {
                        Sample::log("speedtest", Level::Info, "speedtest", result_json(&result, Method::Http))
                    }
                    Err(e) => failure_sample(Method::Http, &e.to_string()),
                }])
            }
            method => self.run_tool(host, method),
        }
    }
}

#[cfg(test)]
mod tests;
