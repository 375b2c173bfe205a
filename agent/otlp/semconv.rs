//! What each widget's numbers become in OpenTelemetry: metric names, units, instrument kinds and
//! attributes, following the OpenTelemetry semantic conventions for system and hardware metrics
//! where one exists (`system.cpu.utilization`, `system.memory.usage`, `hw.battery.charge`, …)
//! and a `fleet.*` name where none does. The table is [`METRICS`]; the mapping of a widget's
//! `data` object is [`map_widget`]. The document (names, units, attributes, and which record
//! field each comes from) is `docs/otlp-forwarding.md`; a test holds the two together.
//!
//! Conventions applied everywhere:
//! - percentages become ratios (`percent / 100`, unit `1`), as the conventions' `*.utilization`
//!   gauges are;
//! - milliseconds become seconds (durations in `s`);
//! - booleans become gauges of 0 or 1;
//! - cumulative counters (bytes, packets, operations since boot) are monotonic cumulative sums
//!   without a start time (the agent does not know when the counter started);
//! - strings are attributes only where listed (an interface name, a ping target); the rest
//!   travels in the log records of widget logs, never as a metric label (unbounded cardinality).
//!
//! Do not rename a metric or attribute: dashboards and alerts are built on these names.

use std::collections::BTreeSet;

use serde_json::{Map, Number, Value};

/// How a metric is aggregated (OTLP `gauge` or cumulative `sum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    /// A sampled value (`gauge`).
    Gauge,
    /// A cumulative counter that only grows (`sum`, monotonic, cumulative temporality).
    Counter,
    /// A cumulative value that can go up and down (`sum`, not monotonic, cumulative).
    UpDownCounter,
}

impl Instrument {
    /// The name used in the document's tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Instrument::Gauge => "Gauge",
            Instrument::Counter => "Counter",
            Instrument::UpDownCounter => "UpDownCounter",
        }
    }
}

/// One metric: name, unit (UCUM), instrument and description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    /// Metric name.
    pub name: &'static str,
    /// Unit, UCUM (`By`, `s`, `1`, `{packet}`, …).
    pub unit: &'static str,
    /// Gauge or sum.
    pub instrument: Instrument,
    /// One line for the collector's metadata.
    pub description: &'static str,
}

const fn spec(name: &'static str, unit: &'static str, instrument: Instrument, description: &'static str) -> MetricSpec {
    MetricSpec { name, unit, instrument, description }
}

use Instrument::{Counter, Gauge, UpDownCounter};

/// Every metric the forwarder emits. Do not reorder casually: the document lists them in this
/// order (a test checks every name is documented).
pub static METRICS: &[MetricSpec] = &[
    spec(
        "system.cpu.utilization",
        "1",
        Gauge,
        "CPU busy fraction over the last interval, all CPUs (no attribute) or one (cpu.logical_number)",
    ),
    spec("system.cpu.physical.count", "{cpu}", UpDownCounter, "Physical processor cores"),
    spec("system.cpu.logical.count", "{cpu}", UpDownCounter, "Logical processor cores (threads)"),
    spec("system.cpu.load_average.1m", "{thread}", Gauge, "Load average over 1 minute"),
    spec("system.cpu.load_average.5m", "{thread}", Gauge, "Load average over 5 minutes"),
    spec("system.cpu.load_average.15m", "{thread}", Gauge, "Load average over 15 minutes"),
    spec("fleet.cpu.interval", "s", Gauge, "Length of the interval the CPU utilization was measured over"),
    spec("system.memory.limit", "By", UpDownCounter, "Total physical memory"),
    spec("system.memory.usage", "By", UpDownCounter, "Memory in use (system.memory.state=used)"),
    spec("system.memory.utilization", "1", Gauge, "Fraction of memory in use"),
    spec(
        "fleet.memory.available",
        "By",
        UpDownCounter,
        "Memory available for new programs without swapping (Linux MemAvailable)",
    ),
    spec("system.paging.usage", "By", UpDownCounter, "Swap used and free"),
    spec("system.paging.utilization", "1", Gauge, "Fraction of swap in use"),
    spec("system.filesystem.limit", "By", UpDownCounter, "Filesystem capacity"),
    spec(
        "system.filesystem.usage",
        "By",
        UpDownCounter,
        "Filesystem bytes used, free (to unprivileged users) and reserved",
    ),
    spec("system.filesystem.utilization", "1", Gauge, "Fraction of the filesystem used, as df's Use%"),
    spec("system.disk.io", "By", Counter, "Disk bytes read and written since boot"),
    spec("system.disk.operations", "{operation}", Counter, "Disk reads and writes since boot"),
    spec("system.network.io", "By", Counter, "Bytes received and transmitted since boot, all interfaces but loopback"),
    spec("system.network.packet.count", "{packet}", Counter, "Packets received and transmitted since boot"),
    spec("system.network.errors", "{error}", Counter, "Receive and transmit errors since boot"),
    spec("system.network.packet.dropped", "{packet}", Counter, "Packets dropped on receive and transmit since boot"),
    spec("system.network.connection.count", "{connection}", UpDownCounter, "Open sockets"),
    spec(
        "fleet.network.interface.count",
        "{interface}",
        UpDownCounter,
        "Network interfaces counted in system.network.*",
    ),
    spec("fleet.network.interface.up", "1", Gauge, "1 when the interface is up"),
    spec("fleet.network.interface.speed", "Mbit/s", Gauge, "Link speed the interface reports"),
    spec("fleet.vpn.connected", "1", Gauge, "1 when a VPN tunnel interface is up"),
    spec("fleet.vpn.interface.count", "{interface}", UpDownCounter, "VPN tunnel interfaces up"),
    spec("system.process.count", "{process}", UpDownCounter, "Processes (every pid, kernel threads included)"),
    spec(
        "fleet.process.cpu.utilization",
        "1",
        Gauge,
        "A top process's CPU use over the interval, as a fraction of ONE core (can exceed 1)",
    ),
    spec(
        "fleet.process.memory.utilization",
        "1",
        Gauge,
        "A top process's resident memory as a fraction of physical memory",
    ),
    spec("system.uptime", "s", Gauge, "Time since boot"),
    spec("fleet.system.boot_time", "s", Gauge, "Boot time, seconds since the Unix epoch"),
    spec("hw.temperature", "Cel", Gauge, "Temperature of a component (hw.id: cpu, battery)"),
    spec("fleet.users.sessions", "{session}", UpDownCounter, "Logged-in sessions"),
    spec("fleet.security.enabled", "1", Gauge, "1 when the protection (fleet.security.feature) is on"),
    spec("hw.battery.charge", "1", Gauge, "Battery charge fraction"),
    spec("hw.battery.time_left", "s", Gauge, "Time until the battery is empty (discharging) or full (charging)"),
    spec("fleet.battery.cycle_count", "{cycle}", Gauge, "Battery charge cycles"),
    spec("fleet.battery.health", "1", Gauge, "Full-charge capacity over design capacity"),
    spec("fleet.battery.plugged", "1", Gauge, "1 on external power"),
    spec("fleet.battery.charging", "1", Gauge, "1 while charging"),
    spec("fleet.wifi.connected", "1", Gauge, "1 when associated with a network"),
    spec("fleet.wifi.rssi", "dBm", Gauge, "Received signal strength"),
    spec("fleet.wifi.noise", "dBm", Gauge, "Noise floor"),
    spec("fleet.wifi.snr", "dB", Gauge, "Signal-to-noise ratio"),
    spec("fleet.wifi.channel", "{channel}", Gauge, "Radio channel number"),
    spec("fleet.wifi.channel.width", "MHz", Gauge, "Channel width"),
    spec("fleet.wifi.tx_rate", "Mbit/s", Gauge, "Transmit rate"),
    spec("fleet.wifi.quality", "1", Gauge, "Link quality score as a fraction"),
    spec("fleet.wifi.signal_strength", "1", Gauge, "Atlas's signal strength score as a fraction"),
    spec("fleet.ping.sent", "{packet}", Gauge, "Probes sent in the window"),
    spec("fleet.ping.received", "{packet}", Gauge, "Answers received in the window"),
    spec("fleet.ping.packet_loss", "1", Gauge, "Fraction of probes lost"),
    spec("fleet.ping.rtt", "s", Gauge, "Round-trip time (fleet.ping.statistic: avg, min, max, jitter)"),
    spec("fleet.ping.runs", "{run}", Gauge, "Probe runs in the window"),
    spec("fleet.ping.failed_runs", "{run}", Gauge, "Probe runs that failed in the window"),
    spec("fleet.ping.window", "s", Gauge, "Length of the window the figures cover"),
    spec("fleet.speedtest.throughput", "Mbit/s", Gauge, "Measured throughput (network.io.direction)"),
    spec("fleet.speedtest.latency", "s", Gauge, "Latency (fleet.speedtest.phase: idle, loaded) and jitter"),
    spec("fleet.speedtest.responsiveness", "{rpm}", Gauge, "Round trips per minute under load (networkQuality)"),
    spec("fleet.speedtest.io", "By", Gauge, "Bytes moved by the test (network.io.direction)"),
    spec("fleet.speedtest.duration", "s", Gauge, "Duration of the test"),
    spec("fleet.machine.info", "1", Gauge, "Always 1: the machine's description as attributes"),
    spec(
        "fleet.agent.dropped",
        "{record}",
        Counter,
        "Records the agent lost before sending (spool cap, damage, full disk), cumulative",
    ),
];

/// The spec of a metric name, `None` for a name not in [`METRICS`].
pub fn find(name: &str) -> Option<&'static MetricSpec> {
    METRICS.iter().find(|m| m.name == name)
}

/// An attribute value of a data point.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

/// A number as OTLP carries it: `asInt` or `asDouble`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
}

impl Num {
    /// A JSON number as an OTLP number: integers that fit `i64` stay integers.
    pub fn of(number: &Number) -> Option<Num> {
        if let Some(i) = number.as_i64() {
            return Some(Num::Int(i));
        }
        number.as_f64().filter(|f| f.is_finite()).map(Num::Double)
    }

    /// The value as a double.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Double(d) => d,
        }
    }
}

/// One data point: which metric, its attributes (in this order), its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The metric (always one of [`METRICS`]).
    pub metric: &'static MetricSpec,
    /// Attributes of this point.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// The value.
    pub value: Num,
}

/// Collects points and remembers which fields of the data were used.
struct Out {
    points: Vec<Point>,
    used: BTreeSet<String>,
}

type Attrs = Vec<(&'static str, AttrValue)>;

fn s(value: &str) -> AttrValue {
    AttrValue::Str(value.to_string())
}

impl Out {
    fn push(&mut self, name: &'static str, attributes: Attrs, value: Num) {
        // Every name used below is in METRICS (the test `every_emitted_metric_is_in_the_table`).
        if let Some(metric) = find(name) {
            self.points.push(Point { metric, attributes, value });
        }
    }

    /// The field `key` of `data` (path prefix `at`), marked as used.
    fn get<'a>(&mut self, data: &'a Map<String, Value>, at: &str, key: &str) -> Option<&'a Value> {
        let value = data.get(key)?;
        self.used.insert(format!("{at}{key}"));
        Some(value)
    }

    fn num(&mut self, data: &Map<String, Value>, at: &str, key: &str) -> Option<Num> {
        match self.get(data, at, key)? {
            Value::Number(n) => Num::of(n),
            _ => None,
        }
    }

    fn flag(&mut self, data: &Map<String, Value>, at: &str, key: &str) -> Option<Num> {
        self.get(data, at, key)?.as_bool().map(|b| Num::Int(i64::from(b)))
    }

    fn text(&mut self, data: &Map<String, Value>, at: &str, key: &str) -> Option<String> {
        self.get(data, at, key)?.as_str().map(str::to_string)
    }

    /// `data[key]` as-is into `name`.
    fn value(&mut self, data: &Map<String, Value>, at: &str, key: &str, name: &'static str, attributes: Attrs) {
        if let Some(v) = self.num(data, at, key) {
            self.push(name, attributes, v);
        }
    }

    /// `data[key]` (a boolean) as 0 or 1 into `name`.
    fn boolean(&mut self, data: &Map<String, Value>, at: &str, key: &str, name: &'static str, attributes: Attrs) {
        if let Some(v) = self.flag(data, at, key) {
            self.push(name, attributes, v);
        }
    }

    /// `data[key] / divisor` (a percentage as a ratio, milliseconds as seconds) into `name`.
    fn scaled(
        &mut self,
        data: &Map<String, Value>,
        at: &str,
        key: &str,
        divisor: f64,
        name: &'static str,
        attributes: Attrs,
    ) {
        if let Some(v) = self.num(data, at, key) {
            self.push(name, attributes, Num::Double(v.as_f64() / divisor));
        }
    }
}

/// The points of one widget's `data` (a v2 record's `data`, a v1 report's `metrics.<widget>`,
/// a v1 widget log's `data`). An unknown widget, or data of an unexpected shape, gives none
/// (its log records are still forwarded).
pub fn map_widget(widget: &str, data: &Value) -> Vec<Point> {
    mapped(widget, data).points
}

/// The numeric and boolean fields of `data` no metric uses, as paths (`top_cpu[].pid`): what a
/// test checks is empty for every widget's real output ("map every numeric field").
pub fn unmapped_fields(widget: &str, data: &Value) -> Vec<String> {
    let out = mapped(widget, data);
    let mut leaves = Vec::new();
    numeric_leaves(data, "", &mut leaves);
    leaves.retain(|path| !out.used.contains(path));
    leaves.dedup();
    leaves
}

fn numeric_leaves(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Number(_) | Value::Bool(_) if !at.is_empty() => out.push(at.to_string()),
        Value::Object(map) => {
            for (key, v) in map {
                let path =
                    if at.is_empty() || at.ends_with('.') { format!("{at}{key}") } else { format!("{at}.{key}") };
                numeric_leaves(v, &path, out);
            }
        }
        Value::Array(items) => {
            let path = format!("{at}[]");
            for item in items {
                numeric_leaves(item, &path, out);
            }
        }
        _ => {}
    }
}

fn mapped(widget: &str, data: &Value) -> Out {
    let mut out = Out { points: Vec::new(), used: BTreeSet::new() };
    match (widget, data) {
        ("users", Value::Array(sessions)) => {
            out.push("fleet.users.sessions", vec![], Num::Int(sessions.len() as i64));
        }
        (_, Value::Object(d)) => match widget {
            "cpu" => cpu(&mut out, d),
            "memory" => memory(&mut out, d),
            "disk" => disk(&mut out, d),
            "network" => network(&mut out, d),
            "vpn" => vpn(&mut out, d),
            "processes" => processes(&mut out, d),
            "system" => system(&mut out, d),
            "temperature" => temperature(&mut out, d),
            "security" => security(&mut out, d),
            "battery" => battery(&mut out, d),
            "wifi" => wifi(&mut out, d),
            "ping" => ping(&mut out, d),
            "speedtest" => speedtest(&mut out, d),
            "machine_info" => machine_info(&mut out, d),
            _ => {}
        },
        _ => {}
    }
    out
}

fn cpu(out: &mut Out, d: &Map<String, Value>) {
    out.scaled(d, "", "percent", 100.0, "system.cpu.utilization", vec![]);
    if let Some(Value::Array(cores)) = out.get(d, "", "per_core") {
        out.used.insert("per_core[]".into());
        for (i, core) in cores.iter().enumerate() {
            if let Some(v) = core.as_f64() {
                out.push(
                    "system.cpu.utilization",
                    vec![("cpu.logical_number", AttrValue::Int(i as i64))],
                    Num::Double(v / 100.0),
                );
            }
        }
    }
    out.value(d, "", "count", "system.cpu.physical.count", vec![]);
    out.value(d, "", "threads", "system.cpu.logical.count", vec![]);
    if let Some(Value::Array(load)) = out.get(d, "", "load_avg") {
        out.used.insert("load_avg[]".into());
        let names = ["system.cpu.load_average.1m", "system.cpu.load_average.5m", "system.cpu.load_average.15m"];
        for (name, v) in names.into_iter().zip(load) {
            if let Some(v) = v.as_f64() {
                out.push(name, vec![], Num::Double(v));
            }
        }
    }
    out.value(d, "", "interval_s", "fleet.cpu.interval", vec![]);
}

fn state(key: &'static str, value: &str) -> Attrs {
    vec![(key, s(value))]
}

fn memory(out: &mut Out, d: &Map<String, Value>) {
    out.value(d, "", "total", "system.memory.limit", vec![]);
    out.value(d, "", "used", "system.memory.usage", state("system.memory.state", "used"));
    out.scaled(d, "", "percent", 100.0, "system.memory.utilization", state("system.memory.state", "used"));
    out.value(d, "", "available", "fleet.memory.available", vec![]);
    let swap_used = out.num(d, "", "swap_used");
    let swap_total = out.num(d, "", "swap_total");
    if let Some(used) = swap_used {
        out.push("system.paging.usage", state("system.paging.state", "used"), used);
    }
    if let (Some(Num::Int(total)), Some(Num::Int(used))) = (swap_total, swap_used) {
        out.push(
            "system.paging.usage",
            state("system.paging.state", "free"),
            Num::Int(total.saturating_sub(used).max(0)),
        );
    }
    out.scaled(d, "", "swap_percent", 100.0, "system.paging.utilization", state("system.paging.state", "used"));
}

/// Capacity, usage by state and utilization of one filesystem (`attributes` name it).
fn filesystem(out: &mut Out, d: &Map<String, Value>, at: &str, attributes: &Attrs) {
    let with_state = |state: &str| {
        let mut a = attributes.clone();
        a.push(("system.filesystem.state", s(state)));
        a
    };
    let total = out.num(d, at, "total");
    let used = out.num(d, at, "used");
    let free = out.num(d, at, "free");
    if let Some(total) = total {
        out.push("system.filesystem.limit", attributes.clone(), total);
    }
    if let Some(used) = used {
        out.push("system.filesystem.usage", with_state("used"), used);
    }
    if let Some(free) = free {
        out.push("system.filesystem.usage", with_state("free"), free);
    }
    // The root reserve: neither used nor free to users (so the three states add up to the limit).
    if let (Some(Num::Int(total)), Some(Num::Int(used)), Some(Num::Int(free))) = (total, used, free) {
        let reserved = total.saturating_sub(used).saturating_sub(free);
        if reserved > 0 {
            out.push("system.filesystem.usage", with_state("reserved"), Num::Int(reserved));
        }
    }
    out.scaled(d, at, "percent", 100.0, "system.filesystem.utilization", with_state("used"));
}

fn disk(out: &mut Out, d: &Map<String, Value>) {
    filesystem(out, d, "", &vec![("system.filesystem.mountpoint", s("/"))]);
    out.value(d, "", "read_bytes", "system.disk.io", state("disk.io.direction", "read"));
    out.value(d, "", "write_bytes", "system.disk.io", state("disk.io.direction", "write"));
    out.value(d, "", "read_count", "system.disk.operations", state("disk.io.direction", "read"));
    out.value(d, "", "write_count", "system.disk.operations", state("disk.io.direction", "write"));
}

fn network(out: &mut Out, d: &Map<String, Value>) {
    let receive = || state("network.io.direction", "receive");
    let transmit = || state("network.io.direction", "transmit");
    out.value(d, "", "bytes_recv", "system.network.io", receive());
    out.value(d, "", "bytes_sent", "system.network.io", transmit());
    out.value(d, "", "packets_recv", "system.network.packet.count", receive());
    out.value(d, "", "packets_sent", "system.network.packet.count", transmit());
    out.value(d, "", "errin", "system.network.errors", receive());
    out.value(d, "", "errout", "system.network.errors", transmit());
    out.value(d, "", "dropin", "system.network.packet.dropped", receive());
    out.value(d, "", "dropout", "system.network.packet.dropped", transmit());
    out.value(d, "", "connections", "system.network.connection.count", vec![]);
    out.value(d, "", "interfaces", "fleet.network.interface.count", vec![]);
}

fn vpn(out: &mut Out, d: &Map<String, Value>) {
    let client: Attrs = out.text(d, "", "vpn_client").map(|c| vec![("fleet.vpn.client", s(&c))]).unwrap_or_default();
    out.boolean(d, "", "connected", "fleet.vpn.connected", client);
    out.value(d, "", "interface_count", "fleet.vpn.interface.count", vec![]);
}

fn processes(out: &mut Out, d: &Map<String, Value>) {
    out.value(d, "", "total", "system.process.count", vec![]);
    // One set of points per process, even when it is in both top lists.
    let mut seen = BTreeSet::new();
    for list in ["top_cpu", "top_memory"] {
        let Some(Value::Array(entries)) = out.get(d, "", list) else { continue };
        let at = format!("{list}[].");
        for entry in entries {
            let Value::Object(p) = entry else { continue };
            let pid = out.num(p, &at, "pid");
            let cpu = out.num(p, &at, "cpu");
            let memory = out.num(p, &at, "memory");
            let Some(Num::Int(pid)) = pid else { continue };
            if !seen.insert(pid) {
                continue;
            }
            let mut attributes = vec![("process.pid", AttrValue::Int(pid))];
            if let Some(name) = p.get("name").and_then(Value::as_str) {
                attributes.push(("process.executable.name", s(name)));
            }
            if let Some(user) = p.get("user").and_then(Value::as_str) {
                attributes.push(("process.owner", s(user)));
            }
            if let Some(cpu) = cpu {
                out.push("fleet.process.cpu.utilization", attributes.clone(), Num::Double(cpu.as_f64() / 100.0));
            }
            if let Some(memory) = memory {
                out.push("fleet.process.memory.utilization", attributes, Num::Double(memory.as_f64() / 100.0));
            }
        }
    }
}

fn system(out: &mut Out, d: &Map<String, Value>) {
    // The conventions ask for a double (the highest precision available).
    if let Some(uptime) = out.num(d, "", "uptime") {
        out.push("system.uptime", vec![], Num::Double(uptime.as_f64()));
    }
    out.value(d, "", "boot_time", "fleet.system.boot_time", vec![]);
}

fn temperature(out: &mut Out, d: &Map<String, Value>) {
    // The widget reports Celsius (`"unit": "C"`); anything else is not forwarded as Cel.
    if out.text(d, "", "unit").as_deref() == Some("C") {
        out.value(d, "", "cpu", "hw.temperature", state("hw.id", "cpu"));
    }
}

fn security(out: &mut Out, d: &Map<String, Value>) {
    // `unknown` lists the checks that could not be read: their `false` is a placeholder.
    let unknown: Vec<String> = match out.get(d, "", "unknown") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    for feature in ["firewall", "filevault", "gatekeeper", "sip"] {
        let key = format!("{feature}_enabled");
        let value = out.flag(d, "", &key);
        if let Some(value) = value.filter(|_| !unknown.iter().any(|u| u == feature)) {
            out.push("fleet.security.enabled", state("fleet.security.feature", feature), value);
        }
    }
}

fn battery(out: &mut Out, d: &Map<String, Value>) {
    let id = || state("hw.id", "battery");
    let with_state = |state: &str| vec![("hw.id", s("battery")), ("hw.battery.state", s(state))];
    out.scaled(d, "", "percent", 100.0, "hw.battery.charge", id());
    out.value(d, "", "time_left", "hw.battery.time_left", with_state("discharging"));
    out.value(d, "", "time_to_full", "hw.battery.time_left", with_state("charging"));
    out.value(d, "", "cycle_count", "fleet.battery.cycle_count", id());
    out.scaled(d, "", "health_percent", 100.0, "fleet.battery.health", id());
    out.value(d, "", "temperature_c", "hw.temperature", id());
    out.boolean(d, "", "plugged", "fleet.battery.plugged", id());
    out.boolean(d, "", "charging", "fleet.battery.charging", id());
}

fn wifi(out: &mut Out, d: &Map<String, Value>) {
    let interface: Attrs =
        out.text(d, "", "interface").map(|i| vec![("network.interface.name", s(&i))]).unwrap_or_default();
    let a = || interface.clone();
    out.boolean(d, "", "connected", "fleet.wifi.connected", a());
    // Whether macOS hid the SSID: says nothing about the link (the log record keeps it).
    let _ = out.get(d, "", "ssid_redacted");
    out.value(d, "", "rssi", "fleet.wifi.rssi", a());
    out.value(d, "", "noise", "fleet.wifi.noise", a());
    out.value(d, "", "snr", "fleet.wifi.snr", a());
    out.value(d, "", "channel", "fleet.wifi.channel", a());
    out.value(d, "", "channel_width_mhz", "fleet.wifi.channel.width", a());
    out.value(d, "", "tx_rate", "fleet.wifi.tx_rate", a());
    out.scaled(d, "", "quality_score", 100.0, "fleet.wifi.quality", a());
    out.scaled(d, "", "signal_strength", 100.0, "fleet.wifi.signal_strength", a());
}

fn ping(out: &mut Out, d: &Map<String, Value>) {
    let mut target: Attrs = Vec::new();
    if let Some(t) = out.text(d, "", "target") {
        target.push(("server.address", s(&t)));
    }
    if let Some(m) = out.text(d, "", "method") {
        target.push(("fleet.ping.method", s(&m)));
    }
    let a = || target.clone();
    let stat = |name: &str| {
        let mut attributes = target.clone();
        attributes.push(("fleet.ping.statistic", s(name)));
        attributes
    };
    out.value(d, "", "sent", "fleet.ping.sent", a());
    out.value(d, "", "received", "fleet.ping.received", a());
    out.scaled(d, "", "packet_loss", 100.0, "fleet.ping.packet_loss", a());
    out.scaled(d, "", "latency", 1000.0, "fleet.ping.rtt", stat("avg"));
    out.scaled(d, "", "min", 1000.0, "fleet.ping.rtt", stat("min"));
    out.scaled(d, "", "max", 1000.0, "fleet.ping.rtt", stat("max"));
    out.scaled(d, "", "jitter", 1000.0, "fleet.ping.rtt", stat("jitter"));
    out.value(d, "", "runs", "fleet.ping.runs", a());
    out.value(d, "", "failed_runs", "fleet.ping.failed_runs", a());
    out.value(d, "", "window_s", "fleet.ping.window", a());
}

fn speedtest(out: &mut Out, d: &Map<String, Value>) {
    let mut base: Attrs = Vec::new();
    if let Some(server) = out.text(d, "", "server") {
        base.push(("server.address", s(&server)));
    }
    if let Some(method) = out.text(d, "", "method") {
        base.push(("fleet.speedtest.method", s(&method)));
    }
    let with = |key: &'static str, value: &str| {
        let mut attributes = base.clone();
        attributes.push((key, s(value)));
        attributes
    };
    out.value(d, "", "download", "fleet.speedtest.throughput", with("network.io.direction", "receive"));
    out.value(d, "", "upload", "fleet.speedtest.throughput", with("network.io.direction", "transmit"));
    out.scaled(d, "", "ping", 1000.0, "fleet.speedtest.latency", with("fleet.speedtest.phase", "idle"));
    out.scaled(d, "", "loaded_latency", 1000.0, "fleet.speedtest.latency", with("fleet.speedtest.phase", "loaded"));
    out.scaled(d, "", "jitter", 1000.0, "fleet.speedtest.latency", with("fleet.speedtest.phase", "jitter"));
    out.value(d, "", "responsiveness", "fleet.speedtest.responsiveness", base.clone());
    out.value(d, "", "bytes_down", "fleet.speedtest.io", with("network.io.direction", "receive"));
    out.value(d, "", "bytes_up", "fleet.speedtest.io", with("network.io.direction", "transmit"));
    out.value(d, "", "duration_s", "fleet.speedtest.duration", base.clone());
}

/// `os` as the conventions' `os.type` (`linux`, `darwin`).
fn os_type(os: &str) -> String {
    match os {
        "Darwin" | "macOS" => "darwin".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

/// `architecture` as the conventions' `host.arch` (`amd64`, `arm64`, …), else as given.
fn host_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "amd64" => "amd64".to_string(),
        "aarch64" | "arm64" => "arm64".to_string(),
        "x86" | "i386" | "i686" => "x86".to_string(),
        other => other.to_string(),
    }
}

/// A machine_info string field, its attribute name, and how its value is normalized.
type InfoString = (&'static str, &'static str, fn(&str) -> String);

fn machine_info(out: &mut Out, d: &Map<String, Value>) {
    // The description: one gauge of 1 whose attributes are the machine's strings.
    let mut info: Attrs = Vec::new();
    let strings: [InfoString; 11] = [
        ("os", "os.type", os_type),
        ("os_version", "os.version", str::to_string),
        ("os_name", "os.description", str::to_string),
        ("architecture", "host.arch", host_arch),
        ("processor", "host.cpu.model.name", str::to_string),
        ("model", "device.model.identifier", str::to_string),
        ("hostname", "fleet.hostname", str::to_string),
        ("computer_name", "fleet.computer_name", str::to_string),
        ("serial_number", "fleet.serial_number", str::to_string),
        ("kernel_version", "fleet.kernel_version", str::to_string),
        ("local_ip", "fleet.local_ip", str::to_string),
    ];
    for (key, attribute, convert) in strings {
        if let Some(text) = out.text(d, "", key) {
            info.push((attribute, s(&convert(&text))));
        }
    }
    out.push("fleet.machine.info", info, Num::Int(1));
    out.value(d, "", "cpu_count", "system.cpu.physical.count", vec![]);
    out.value(d, "", "cpu_threads", "system.cpu.logical.count", vec![]);
    out.value(d, "", "total_memory", "system.memory.limit", vec![]);
    out.value(d, "", "boot_time", "fleet.system.boot_time", vec![]);
    if let Some(Value::Array(disks)) = out.get(d, "", "disks") {
        for disk in disks {
            let Value::Object(fs) = disk else { continue };
            let mut attributes: Attrs = Vec::new();
            for (key, attribute) in [
                ("device", "system.device"),
                ("mountpoint", "system.filesystem.mountpoint"),
                ("fstype", "system.filesystem.type"),
            ] {
                if let Some(text) = fs.get(key).and_then(Value::as_str) {
                    attributes.push((attribute, s(text)));
                }
            }
            filesystem(out, fs, "disks[].", &attributes);
        }
    }
    if let Some(Value::Array(interfaces)) = out.get(d, "", "network_interfaces") {
        for interface in interfaces {
            let Value::Object(i) = interface else { continue };
            let name: Attrs = i
                .get("name")
                .and_then(Value::as_str)
                .map(|n| vec![("network.interface.name", s(n))])
                .unwrap_or_default();
            out.boolean(i, "network_interfaces[].", "is_up", "fleet.network.interface.up", name.clone());
            out.value(i, "network_interfaces[].", "speed", "fleet.network.interface.speed", name);
        }
    }
}
