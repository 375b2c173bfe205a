//! `fleet-bench footprint [--quick]`: what the agent costs a laptop.
//!
//! - the size of the release binary (`target/release/fleet-agent`, stripped by the release
//!   profile);
//! - VmRSS and VmHWM of `fleet-agent run` at interval 1 s, sending v2 to the bundled receiver
//!   on loopback, after 2 and 10 minutes (`--quick`: 5 and 15 seconds);
//! - CPU time (utime + stime from `/proc/PID/stat`) per collection cycle, with every default
//!   widget except speedtest (ping: one echo to 127.0.0.1). A cycle is one set of records
//!   sharing a timestamp; they are counted at the receiver after a clean stop. The figure
//!   includes spooling and sending, i.e. everything the process does. A second agent with
//!   only the system widgets (cpu, memory, system) runs beside it.
//!
//! Prints one JSON object per line. Needs `cargo build --release --bins`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_widgets::Timestamp;
use fleet_wire::keys::Key32;
use serde_json::json;

use crate::proc_stats::{cpu_seconds, status_kib};
use crate::receiver_bench::{spawn_receiver, Running, Scratch, API_KEY};

/// One look at the running agent.
struct Checkpoint {
    after_s: u64,
    at: String,
    rss_kib: u64,
    hwm_kib: u64,
    cpu_s: f64,
}

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    if let Some(other) = args.iter().find(|a| *a != "--quick") {
        return Err(format!("unexpected argument `{other}`"));
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating fleet-bench: {e}"))?;
    let agent_bin = exe.with_file_name("fleet-agent");
    let size = std::fs::metadata(&agent_bin)
        .map_err(|e| format!("{}: {e} (run `cargo build --release --bins` first)", agent_bin.display()))?
        .len();
    println!(
        "{}",
        json!({"bench": "footprint_binary", "path": agent_bin.display().to_string(), "bytes": size,
               "mib": size as f64 / 1048576.0, "stripped": is_stripped(&agent_bin)})
    );

    let checkpoints: &[u64] = if quick { &[5, 15] } else { &[120, 600] };
    let scratch = Scratch(std::env::temp_dir().join(format!("fleet-bench-footprint-{}", std::process::id())));
    let key = Key32::generate().map_err(|e| e.to_string())?;
    let store = scratch.0.join("store");
    let (receiver, url) = spawn_receiver(&agent_bin, &store, &key)?;
    let receiver = Running(receiver);

    // Both variants run side by side (CPU time is per process, so they do not blur each
    // other's figures, and the bench takes the wall time of one).
    let started = Instant::now();
    let mut agents = Vec::new();
    for variant in &VARIANTS {
        let dir = scratch.0.join(variant.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let config = write_config(&dir, &url, &key, variant)?;
        let child = Command::new(&agent_bin)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("FLEET_ENCRYPTION_KEY")
            .env_remove("FLEET_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", agent_bin.display()))?;
        agents.push(Running(child));
    }
    let mut seen: Vec<Vec<Checkpoint>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for &after_s in checkpoints {
        std::thread::sleep(Duration::from_secs(after_s).saturating_sub(started.elapsed()));
        for (agent, points) in agents.iter().zip(&mut seen) {
            let pid = agent.0.id();
            points.push(Checkpoint {
                after_s,
                at: Timestamp::now().to_rfc3339(),
                rss_kib: status_kib(pid, "VmRSS")?,
                hwm_kib: status_kib(pid, "VmHWM")?,
                cpu_s: cpu_seconds(pid)?,
            });
        }
        eprintln!("footprint: {after_s} s done");
    }
    drop(agents); // SIGTERM: the final push delivers the last cycles

    for (variant, points) in VARIANTS.iter().zip(&seen) {
        let times = stored(&store, variant.machine)?;
        let cycles: BTreeSet<&String> = times.iter().collect();
        let mut previous: Option<(f64, usize)> = None;
        for point in points {
            let done = cycles.iter().filter(|ts| ts.as_str() <= point.at.as_str()).count();
            let records = times.iter().filter(|ts| ts.as_str() <= point.at.as_str()).count();
            let steady = previous.map(|(cpu, n)| (point.cpu_s - cpu) * 1000.0 / (done.saturating_sub(n).max(1)) as f64);
            println!(
                "{}",
                json!({
                    "bench": "footprint_run", "widgets": variant.name, "interval_s": 1, "after_s": point.after_s,
                    "vm_rss_kib": point.rss_kib, "vm_hwm_kib": point.hwm_kib,
                    "cpu_s": point.cpu_s, "cycles": done, "records": records,
                    "cpu_ms_per_cycle": point.cpu_s * 1000.0 / done.max(1) as f64,
                    "cpu_ms_per_cycle_since_previous": steady,
                })
            );
            previous = Some((point.cpu_s, done));
        }
    }
    drop(receiver);
    Ok(())
}

/// A widget set measured.
struct Variant {
    name: &'static str,
    machine: &'static str,
    widgets: &'static str,
}

/// `default`: every default widget except speedtest; ping sends one echo to 127.0.0.1 (the
/// default `count` of 5 would take seconds per cycle and the default target is an outside
/// host). `system`: cpu, memory and system only (DESIGN section 8's "system widgets").
const VARIANTS: [Variant; 2] = [
    Variant {
        name: "default",
        machine: "bench-footprint-default",
        widgets: r#"{"ping":{"targets":["127.0.0.1"],"count":1},"speedtest":{"enabled":false}}"#,
    },
    Variant {
        name: "system",
        machine: "bench-footprint-system",
        widgets: r#"{"disk":{"enabled":false},"network":{"enabled":false},"processes":{"enabled":false},
            "battery":{"enabled":false},"wifi":{"enabled":false},"ping":{"enabled":false},
            "speedtest":{"enabled":false},"machine_info":{"enabled":false},"security":{"enabled":false},
            "users":{"enabled":false},"temperature":{"enabled":false}}"#,
    },
];

fn write_config(dir: &Path, url: &str, key: &Key32, variant: &Variant) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let widgets: serde_json::Value = serde_json::from_str(variant.widgets).map_err(|e| e.to_string())?;
    let config = json!({
        "server_url": url, "api_key": API_KEY, "encryption_key": key.to_base64().as_str(),
        "machine_id": variant.machine, "protocol": "v2", "interval": 1, "log_level": "warn",
        "spool": {"dir": dir.join("spool")}, "widgets": widgets,
    });
    let path = dir.join("agent.json");
    std::fs::write(&path, config.to_string()).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(path)
}

/// The `ts` of every record stored for `machine` (a cycle's records share one).
fn stored(store: &Path, machine: &str) -> Result<Vec<String>, String> {
    use fleet_receiver::{StoreKeys, StoreReader};
    let lines = StoreReader::new(store, StoreKeys::plaintext()).read_records(machine).map_err(|e| e.to_string())?;
    Ok(lines
        .iter()
        .filter(|l| l.get("kind").and_then(|k| k.as_str()) == Some("record"))
        .filter_map(|l| l.get("record")?.get("ts")?.as_str().map(str::to_string))
        .collect())
}

/// Whether the ELF has no `.symtab` (what `strip` removes), by asking `file(1)` when present.
fn is_stripped(path: &Path) -> Option<bool> {
    let output = Command::new("file").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("not stripped") {
        Some(false)
    } else if text.contains("stripped") {
        Some(true)
    } else {
        None
    }
}
