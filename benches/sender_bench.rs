//! `fleet-bench sender [--quick]`: how fast `fleet-agent run` drains a backlog to the bundled
//! receiver on loopback, per protocol (atlas = v1 widget-log batches, v2 = sealed batches),
//! and its peak RSS (VmHWM) while draining.
//!
//! The backlog (v2: 100,000 widget-log records of about 200 bytes, `--quick` 5,000; atlas:
//! 2,500, `--quick` 500, since Atlas mode drains at most what its request budget allows, one
//! 500-entry batch per report while catching up: the figure is budget-bound, not CPU-bound) is
//! written with the library's `Spool::append` straight into the agent's spool directory, then
//! `fleet-agent run` starts (interval 60 s, one cheap widget) and the clock runs until the
//! spool (read-only `inspect`, which reads the durable ack in `state.bin`: a v2 round that
//! drains a backlog writes its last ack at its end) holds no unacknowledged record. The time includes the agent's start (opening and authenticating the whole
//! spool).
//!
//! Prints one JSON object per line. Needs `cargo build --release --bins`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_agent::config::Config;
use fleet_agent::spool::Spool;
use fleet_widgets::{Level, SampleKind, Timestamp};
use fleet_wire::keys::Key32;
use fleet_wire::record::Record;
use serde_json::json;

use crate::proc_stats::status_kib;
use crate::receiver_bench::{spawn_receiver, Running, Scratch, API_KEY};

const MACHINE: &str = "bench-sender";
/// Longest wait for one drain before giving up (a stuck agent must not hang CI).
const DRAIN_LIMIT: Duration = Duration::from_secs(900);

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    if let Some(other) = args.iter().find(|a| *a != "--quick") {
        return Err(format!("unexpected argument `{other}`"));
    }
    let v2_records: u64 = if quick { 5_000 } else { 100_000 };
    let atlas_records: u64 = if quick { 500 } else { 2_500 };
    let exe = std::env::current_exe().map_err(|e| format!("locating fleet-bench: {e}"))?;
    let agent_bin = exe.with_file_name("fleet-agent");
    if !agent_bin.exists() {
        return Err(format!("{} not found: run `cargo build --release --bins` first", agent_bin.display()));
    }
    for (protocol, records) in [("atlas", atlas_records), ("v2", v2_records)] {
        drain(&agent_bin, protocol, records)?;
    }
    Ok(())
}

fn drain(agent_bin: &Path, protocol: &str, records: u64) -> Result<(), String> {
    let scratch = Scratch(std::env::temp_dir().join(format!("fleet-bench-sender-{protocol}-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| format!("creating {}: {e}", scratch.0.display()))?;
    let key = Key32::generate().map_err(|e| e.to_string())?;
    let (receiver, url) = spawn_receiver(agent_bin, &scratch.0.join("store"), &key)?;
    let _receiver = Running(receiver);
    let config_path = write_config(&scratch.0, &url, &key, protocol)?;
    let config = Config::load(Some(&config_path))
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;

    let started = Instant::now();
    let spool_bytes = fill_spool(&config, records)?;
    let fill_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let agent = Running(
        Command::new(agent_bin)
            .args(["run", "--config"])
            .arg(&config_path)
            .env_remove("FLEET_ENCRYPTION_KEY")
            .env_remove("FLEET_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", agent_bin.display()))?,
    );
    let pid = agent.0.id();
    let spool_dir = config.spool.dir.clone();
    let mut hwm = 0;
    loop {
        if backlog(&spool_dir) == Some(0) {
            break;
        }
        if started.elapsed() > DRAIN_LIMIT {
            return Err(format!("{protocol}: the backlog was not drained within {DRAIN_LIMIT:?}"));
        }
        hwm = hwm.max(status_kib(pid, "VmHWM")?);
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    hwm = hwm.max(status_kib(pid, "VmHWM")?);
    let rss = status_kib(pid, "VmRSS")?;
    drop(agent);
    let stored = stored_at_receiver(&scratch.0.join("store"), protocol)?;
    if stored < records {
        return Err(format!("{protocol}: the receiver stored {stored} of {records} records"));
    }
    println!(
        "{}",
        json!({
            "bench": "sender_drain", "protocol": protocol, "records": records,
            "spool_bytes": spool_bytes, "fill_seconds": fill_s, "seconds": seconds,
            "records_per_s": (records as f64 / seconds).round(),
            "vm_hwm_kib": hwm, "vm_rss_kib_after": rss, "stored_at_receiver": stored,
        })
    );
    Ok(())
}

/// A config for `run`: only the cpu widget, every 60 s, so the drain has the process to itself.
fn write_config(dir: &Path, url: &str, key: &Key32, protocol: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let off = json!({"enabled": false});
    let config = json!({
        "server_url": url, "api_key": API_KEY, "encryption_key": key.to_base64().as_str(),
        "machine_id": MACHINE, "protocol": protocol, "interval": 60, "log_level": "warn",
        "spool": {"dir": dir.join("spool")},
        "widgets": {"memory": off, "system": off, "disk": off, "network": off, "processes": off,
                    "battery": off, "wifi": off, "ping": off, "speedtest": off, "machine_info": off,
                    "security": off, "users": off, "temperature": off},
    });
    let path = dir.join("agent.json");
    std::fs::write(&path, config.to_string()).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(path)
}

/// Append `records` widget-log records (10 s apart, ending now) to the configured spool.
fn fill_spool(config: &Config, records: u64) -> Result<u64, String> {
    let mut spool = Spool::open(&config.spool).map_err(|e| e.to_string())?;
    let first = Timestamp::now().0 - records as i64 * 10_000;
    let mut n = 0;
    while n < records {
        let chunk: Vec<Record> = (n..(n + 1000).min(records))
            .map(|i| Record {
                ts: Timestamp(first + i as i64 * 10_000).to_rfc3339(),
                widget: "wifi".into(),
                kind: SampleKind::Log,
                level: Level::Info,
                message: "connected".into(),
                data: json!({"n": i, "ssid": "office", "rssi": -52, "channel": 36, "tx_rate": 866.7}),
            })
            .collect();
        n += chunk.len() as u64;
        spool.append(&chunk).map_err(|e| e.to_string())?;
    }
    let stats = spool.stats();
    if stats.unacked_records != records {
        return Err(format!("spool holds {} records, expected {records}", stats.unacked_records));
    }
    Ok(stats.bytes)
}

/// Unacknowledged records in the spool (`None` while it cannot be read yet).
fn backlog(spool_dir: &Path) -> Option<u64> {
    fleet_agent::spool::inspect(spool_dir).ok().flatten().map(|stats| stats.unacked_records)
}

fn stored_at_receiver(store: &Path, protocol: &str) -> Result<u64, String> {
    use fleet_receiver::{open_reader, StoreKeys, StoreLocation, Stream};
    let location = StoreLocation::Dir(store.to_path_buf());
    let reader = open_reader(&location, StoreKeys::plaintext()).map_err(|e| e.to_string())?;
    let lines = match protocol {
        "atlas" => reader.read_v1(MACHINE, Stream::WidgetLogs),
        _ => reader.read_records(MACHINE),
    }
    .map_err(|e| e.to_string())?;
    let is_backlog = |line: &serde_json::Map<String, serde_json::Value>| {
        let entry = line.get("record").or_else(|| line.get("log"));
        entry.and_then(|e| e.get("widget").or_else(|| e.get("widget_type"))).and_then(|w| w.as_str()) == Some("wifi")
    };
    Ok(lines.iter().filter(|l| is_backlog(l)).count() as u64)
}
