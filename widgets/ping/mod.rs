//! `ping`: reachability and round-trip latency to a few targets. The widget may probe every
//! interval, but it logs one summary per target per window (`window_s`, default 120 s: sent,
//! received, loss, min/avg/max/jitter over the window), so a machine stays far below the
//! 10,000 rows a day Atlas reads for its 24 h analysis (720 a day per target at defaults
//! instead of 8,640) without losing a lost packet or a latency spike.
//!
//! Methods, first that works: unprivileged ICMP echo (`SOCK_DGRAM`), RAW ICMP (root or
//! `CAP_NET_RAW`), the system `ping -c N <target>` (output parsed by [`parse::parse_ping`]),
//! TCP connect time to port 443. Sockets are used only when [`Host::network_allowed`]; under
//! replay only the `ping` command's captured output is used. See `README.md`.

pub mod burst;
pub mod icmp;
pub mod parse;
pub mod probe;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{CollectError, Host, Level, Sample, Timestamp, Widget, WidgetOptions, WidgetSpec};
use parse::PingOutput;
use probe::{IcmpSocket, Timing};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "ping",
    summary: "Packet loss, latency and jitter to configured targets (ICMP, else `ping`, else TCP)",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: |options| PingConfig::from_options(options).map(|_| ()),
    build: |options| Box::new(PingWidget::new(PingConfig::from_options(options).unwrap_or_default())),
};

/// How a target was measured (the `method` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Unprivileged ICMP echo (`SOCK_DGRAM`).
    Icmp,
    /// RAW ICMP socket.
    IcmpRaw,
    /// The system `ping` command.
    Command,
    /// TCP connect time.
    Tcp,
}

impl Method {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Icmp => "icmp",
            Method::IcmpRaw => "icmp_raw",
            Method::Command => "command",
            Method::Tcp => "tcp",
        }
    }

    /// Every method, in the order they are tried.
    pub const ALL: [Method; 4] = [Method::Icmp, Method::IcmpRaw, Method::Command, Method::Tcp];
}

/// The widget's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PingConfig {
    /// Hosts or IP addresses (option `targets`, default `["1.1.1.1"]`).
    pub targets: Vec<String>,
    /// Echo requests per target (option `count`, default 5, 1..=100).
    pub count: u16,
    /// Seconds to wait for each reply (option `timeout_s`, default 2, at most 30).
    pub timeout: Duration,
    /// Port for the TCP fallback (option `tcp_port`, default 443).
    pub tcp_port: u16,
    /// Time between the TCP fallback's connects (200 ms, the shortest `ping` allows an
    /// unprivileged user). ICMP requests leave in one burst (`README.md`, "Probe pattern"); the
    /// command fallback keeps its own 1 s spacing.
    pub interval: Duration,
    /// Methods to try, in order (all by default; tests force one).
    pub methods: Vec<Method>,
    /// Length of the summary window (option `window_s`, default 120 s, at most a day; 0 logs
    /// every run).
    pub window: Duration,
}

/// Default summary window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            targets: vec!["1.1.1.1".to_string()],
            count: 5,
            timeout: Duration::from_secs(2),
            tcp_port: 443,
            interval: Duration::from_millis(200),
            methods: Method::ALL.to_vec(),
            window: DEFAULT_WINDOW,
        }
    }
}

/// Most targets one run may have, to keep a run short.
const MAX_TARGETS: usize = 16;

/// Every option [`PingConfig::from_options`] accepts, named in the error for an unknown one
/// (keep in step with its `match`; a test checks each is accepted).
pub const OPTIONS: &[&str] = &["targets", "count", "timeout_s", "tcp_port", "window_s"];

impl PingConfig {
    /// Read and validate the `widgets.ping` options; the error names the offending key.
    pub fn from_options(options: &WidgetOptions) -> Result<PingConfig, String> {
        let mut config = PingConfig::default();
        for (key, value) in options {
            match key.as_str() {
                "targets" => {
                    let list = value.as_array().ok_or("`targets` must be a list of host names or addresses")?;
                    if list.is_empty() || list.len() > MAX_TARGETS {
                        return Err(format!("`targets` must have 1 to {MAX_TARGETS} entries"));
                    }
                    config.targets = list
                        .iter()
                        .map(|t| t.as_str().filter(|t| valid_target(t)).map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or(
                            "`targets` entries must be host names or IP addresses (no spaces, not starting with `-`)",
                        )?;
                }
                "count" => {
                    config.count = value
                        .as_u64()
                        .filter(|c| (1..=100).contains(c))
                        .map(|c| c as u16)
                        .ok_or("`count` must be an integer from 1 to 100")?;
                }
                "timeout_s" => {
                    let secs =
                        value.as_f64().filter(|s| *s > 0.0 && *s <= 30.0).ok_or("`timeout_s` must be in (0, 30]")?;
                    config.timeout = Duration::from_secs_f64(secs);
                }
                "tcp_port" => {
                    config.tcp_port = value
                        .as_u64()
                        .filter(|p| (1..=65535).contains(p))
                        .map(|p| p as u16)
                        .ok_or("`tcp_port` must be a port number")?;
                }
                "window_s" => {
                    let secs = value
                        .as_f64()
                        .filter(|s| (0.0..=86_400.0).contains(s))
                        .ok_or("`window_s` must be a number of seconds from 0 to 86400")?;
                    config.window = Duration::from_secs_f64(secs);
                }
                other => return Err(format!("unknown option `{other}` (ping options: {})", OPTIONS.join(", "))),
            }
        }
        Ok(config)
    }

    fn timing(&self) -> Timing {
        Timing { count: self.count, interval: self.interval, timeout: self.timeout }
    }
}

/// A host name or address safe to pass to `ping` as one argument.
fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && target.len() <= 253
        && !target.starts_with('-')
        && target.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '%'))
}

/// The result for one target, whatever the method.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// How it was measured.
    pub method: Method,
    /// Requests sent.
    pub sent: u64,
    /// Answers received (duplicates not counted).
    pub received: u64,
    /// Loss in percent.
    pub packet_loss: f64,
    /// Average round trip, ms (`None` when nothing was received).
    pub avg_ms: Option<f64>,
    /// Minimum round trip, ms.
    pub min_ms: Option<f64>,
    /// Maximum round trip, ms.
    pub max_ms: Option<f64>,
    /// Mean absolute difference of consecutive round trips, ms (`None` when the individual
    /// round trips are unknown, e.g. `ping -q` output, or nothing was received).
    pub jitter_ms: Option<f64>,
    /// How many differences `jitter_ms` averages (to weigh it in a window).
    pub jitter_pairs: u64,
    /// The first and last round trips of the run in send order, ms (`None` when unknown or
    /// nothing was received): a window pairs one run's last with the next run's first.
    pub ends_ms: Option<(f64, f64)>,
}

impl Measurement {
    /// From per-request round trips (`None` = lost).
    pub fn from_rtts(method: Method, rtts: &[Option<f64>]) -> Measurement {
        let got: Vec<f64> = rtts.iter().flatten().copied().collect();
        let sent = rtts.len() as u64;
        let received = got.len() as u64;
        let lost = sent - received;
        Measurement {
            method,
            sent,
            received,
            packet_loss: if sent == 0 { 100.0 } else { lost as f64 * 100.0 / sent as f64 },
            avg_ms: (!got.is_empty()).then(|| got.iter().sum::<f64>() / got.len() as f64),
            min_ms: got.iter().copied().reduce(f64::min),
            max_ms: got.iter().copied().reduce(f64::max),
            jitter_ms: jitter(&got),
            jitter_pairs: got.len().saturating_sub(1) as u64,
            ends_ms: got.first().zip(got.last()).map(|(a, b)| (*a, *b)),
        }
    }

    /// From parsed `ping` command output.
    pub fn from_command(out: &PingOutput) -> Measurement {
        let received = out.received > 0;
        Measurement {
            method: Method::Command,
            sent: out.transmitted,
            received: out.received,
            packet_loss: out.packet_loss,
            avg_ms: out.avg_ms.filter(|_| received),
            min_ms: out.min_ms.filter(|_| received),
            max_ms: out.max_ms.filter(|_| received),
            jitter_ms: jitter(&out.rtts_ms).filter(|_| received),
            jitter_pairs: if received { out.rtts_ms.len().saturating_sub(1) as u64 } else { 0 },
            ends_ms: out.rtts_ms.first().zip(out.rtts_ms.last()).map(|(a, b)| (*a, *b)).filter(|_| received),
        }
    }

    /// The widget-log data for `target`.
    pub fn to_json(&self, target: &str) -> Value {
        json!({
            "target": target,
            "method": self.method.as_str(),
            "sent": self.sent,
            "received": self.received,
            "packet_loss": round3(self.packet_loss),
            "latency": self.avg_ms.map(round3),
            "min": self.min_ms.map(round3),
            "max": self.max_ms.map(round3),
            "jitter": self.jitter_ms.map(round3),
        })
    }
}

/// Mean absolute difference of consecutive round trips; 0 for one, `None` for none.
pub fn jitter(rtts: &[f64]) -> Option<f64> {
    match rtts.len() {
        0 => None,
        1 => Some(0.0),
        n => Some(rtts.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (n - 1) as f64),
    }
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// Resolve `target` to one address (IPv4 preferred), giving up after `timeout`: the system
/// resolver has no timeout of its own, so it runs on a helper thread that is abandoned if slow.
pub fn resolve(target: &str, timeout: Duration) -> Result<IpAddr, String> {
    if let Ok(ip) = target.parse::<IpAddr>() {
        return Ok(ip);
    }
    let (tx, rx) = mpsc::channel();
    let name = target.to_string();
    std::thread::Builder::new()
        .name("ping-resolve".to_string())
        .spawn(move || {
            let _ = tx.send((name.as_str(), 0).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(|e| format!("resolving {target}: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) => addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .map(|a| a.ip())
            .ok_or_else(|| format!("resolving {target}: no address")),
        Ok(Err(e)) => Err(format!("resolving {target}: {e}")),
        Err(_) => Err(format!("resolving {target}: timed out after {} ms", timeout.as_millis())),
    }
}

/// Measure one target with the first method that works; `Err` lists why each one failed.
pub fn measure(host: &dyn Host, config: &PingConfig, target: &str) -> Result<Measurement, String> {
    let timing = config.timing();
    let mut errors: Vec<String> = Vec::new();
    let mut address: Option<Result<IpAddr, String>> = None;
    let mut addr = |errors: &mut Vec<String>| -> Option<IpAddr> {
        let resolved = address.get_or_insert_with(|| resolve(target, config.timeout));
        match resolved {
            Ok(ip) => Some(*ip),
            Err(e) => {
                if !errors.contains(e) {
                    errors.push(e.clone());
                }
                None
            }
        }
    };
    for method in &config.methods {
        match method {
            Method::Icmp | Method::IcmpRaw => {
                if !host.network_allowed() {
                    continue;
                }
                let Some(ip) = addr(&mut errors) else { continue };
                let kind = if *method == Method::Icmp { IcmpSocket::Dgram } else { IcmpSocket::Raw };
                match probe::icmp_echo(ip, kind, timing) {
                    Ok(rtts) => return Ok(Measurement::from_rtts(*method, &rtts)),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Method::Command => {
                let count = config.count.to_string();
                // `ping` spaces its requests 1 s apart (not the sockets' pacing): `count` s.
                let spaced = Timing { interval: Duration::from_secs(1), ..timing };
                let limit = spaced.bound() + Duration::from_secs(5);
                match host.run(&["ping", "-c", &count, target], limit) {
                    Ok(out) => {
                        let text = format!("{}\n{}", out.stdout, out.stderr);
                        match parse::parse_ping(&text) {
                            Ok(parsed) => return Ok(Measurement::from_command(&parsed)),
                            Err(e) => errors.push(format!("parsing output of ping: {e}")),
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Method::Tcp => {
                if !host.network_allowed() {
                    continue;
                }
                let Some(ip) = addr(&mut errors) else { continue };
                let rtts = probe::tcp_connect(SocketAddr::new(ip, config.tcp_port), timing);
                return Ok(Measurement::from_rtts(Method::Tcp, &rtts));
            }
        }
    }
    if errors.is_empty() {
        errors.push("no method available".to_string());
    }
    Err(errors.join("; "))
}

/// The sample for one run of one target alone (a window of one run): info, warning at 100 %
/// loss, error (with `error`) when no method worked.
pub fn sample_for(target: &str, result: &Result<Measurement, String>) -> Sample {
    let mut window = Window::default();
    window.add(Timestamp(0), result);
    window.take_summary(target, Duration::ZERO)
}

/// One target's runs since its window opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    started: Option<Timestamp>,
    /// The latest run, kept across windows (the gap between runs predicts the next one).
    last_run: Option<Timestamp>,
    /// The last round trip of the latest run that had one, kept across windows: jitter pairs
    /// it with the next run's first.
    last_rtt_ms: Option<f64>,
    runs: u64,
    failed_runs: u64,
    sent: u64,
    received: u64,
    rtt_sum_ms: f64,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
    jitter_sum_ms: f64,
    jitter_pairs: u64,
    method: Option<Method>,
    last_error: Option<String>,
}

impl Window {
    /// Add one run's result taken at `now`.
    pub fn add(&mut self, now: Timestamp, result: &Result<Measurement, String>) {
        self.started.get_or_insert(now);
        self.last_run = Some(now);
        self.runs += 1;
        match result {
            Ok(m) => {
                self.method = Some(m.method);
                self.sent += m.sent;
                self.received += m.received;
                if let Some(avg) = m.avg_ms {
                    self.rtt_sum_ms += avg * m.received as f64;
                }
                self.min_ms = [self.min_ms, m.min_ms].into_iter().flatten().reduce(f64::min);
                self.max_ms = [self.max_ms, m.max_ms].into_iter().flatten().reduce(f64::max);
                if let Some(jitter) = m.jitter_ms {
                    self.jitter_sum_ms += jitter * m.jitter_pairs as f64;
                    self.jitter_pairs += m.jitter_pairs;
                }
                if let Some((first, last)) = m.ends_ms {
                    if let Some(previous) = self.last_rtt_ms {
                        self.jitter_sum_ms += (first - previous).abs();
                        self.jitter_pairs += 1;
                    }
                    self.last_rtt_ms = Some(last);
                }
            }
            Err(error) => {
                self.failed_runs += 1;
                self.last_error = Some(error.clone());
            }
        }
    }

    /// The summary sample of the window for `target` (`window` is its configured length),
    /// and a fresh window. Level: `error` when every run failed (with the last `error`),
    /// `warning` when nothing answered, else `info`.
    pub fn take_summary(&mut self, target: &str, window: Duration) -> Sample {
        let w = std::mem::replace(
            self,
            Window { last_run: self.last_run, last_rtt_ms: self.last_rtt_ms, ..Window::default() },
        );
        let mut data = json!({
            "target": target,
            "method": w.method.map(Method::as_str),
            "sent": w.sent,
            "received": w.received,
            "packet_loss": (w.sent > 0).then(|| round3((w.sent - w.received.min(w.sent)) as f64 * 100.0 / w.sent as f64)),
            "latency": (w.received > 0).then(|| round3(w.rtt_sum_ms / w.received as f64)),
            "min": w.min_ms.map(round3),
            "max": w.max_ms.map(round3),
            "jitter": (w.jitter_pairs > 0)
                .then(|| round3(w.jitter_sum_ms / w.jitter_pairs as f64))
                .or_else(|| (w.received == 1).then_some(0.0)),
            "runs": w.runs,
            "failed_runs": w.failed_runs,
            "window_s": window.as_secs_f64(),
        });
        let level = if w.failed_runs == w.runs {
            if let (Some(map), Some(error)) = (data.as_object_mut(), w.last_error) {
                map.insert("error".to_string(), json!(error));
            }
            Level::Error
        } else if w.received == 0 {
            Level::Warning
        } else {
            Level::Info
        };
        Sample::log("ping", level, "ping", data)
    }
}

/// Pings each configured target in turn and logs one summary per target per window.
pub struct PingWidget {
    /// Settings.
    pub config: PingConfig,
    /// One open window per target, in `config.targets` order.
    pub windows: Vec<Window>,
}

impl PingWidget {
    /// A widget with empty windows.
    pub fn new(config: PingConfig) -> Self {
        let windows = vec![Window::default(); config.targets.len()];
        PingWidget { config, windows }
    }

    /// Fold one run's `result` for target number `index`, taken at `now`, into its window;
    /// the summaries that are due come out. A window closes before a run that falls past its
    /// end, or right after a run when the next one (expected one run gap later) would.
    pub fn record(&mut self, index: usize, now: Timestamp, result: &Result<Measurement, String>) -> Vec<Sample> {
        let window = self.config.window;
        let window_ms = window.as_millis() as i64;
        let target = self.config.targets.get(index).cloned().unwrap_or_default();
        if self.windows.len() <= index {
            self.windows.resize(index + 1, Window::default());
        }
        let w = &mut self.windows[index];
        let mut out = Vec::new();
        let gap = w.last_run.map(|last| now.0 - last.0);
        if w.started.is_some_and(|start| now.0 - start.0 >= window_ms) {
            out.push(w.take_summary(&target, window));
        }
        w.add(now, result);
        let start = w.started.unwrap_or(now);
        if window_ms == 0 || gap.is_some_and(|gap| now.0 + gap >= start.0 + window_ms) {
            out.push(w.take_summary(&target, window));
        }
        out
    }
}

impl Widget for PingWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let mut samples = Vec::new();
        for index in 0..self.config.targets.len() {
            let result = measure(host, &self.config, &self.config.targets[index]);
            samples.extend(self.record(index, now, &result));
        }
        Ok(samples)
    }

    fn flush(&mut self, _now: Timestamp) -> Vec<Sample> {
        let window = self.config.window;
        let targets = &self.config.targets;
        self.windows
            .iter_mut()
            .zip(targets)
            .filter(|(w, _)| w.runs > 0)
            .map(|(w, target)| w.take_summary(target, window))
            .collect()
    }
}

#[cfg(test)]
mod tests;
