//! The per-stage split of one collection cycle, measured in this process with the agent's own
//! library: each widget's `collect` (on this machine, through the same `SystemHost` as `run`),
//! the spool append of one cycle's records (`fsync: batch`, one fsync per append), the JSON
//! encoding and the AES-256-GCM seal of one v2 batch of those records, and one send round of
//! the v2 sender to the bundled receiver on loopback (`Sender::flush`: read back from the
//! spool, seal, POST, acknowledge, save the sender's state). `run` pushes at most every
//! `send_interval`, so a round carries several cycles there; here each carries one.
//!
//! CPU is the calling thread's run time from `/proc/thread-self/schedstat` (nanoseconds), so
//! each figure is that stage alone; helper threads a stage starts would not be in it (the HTTP
//! client starts none: it resolves names on the calling thread), but are in the whole-process
//! figures of `footprint_run`. Each
//! stage runs once to warm up, then `iterations` times; the figure is the mean.

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_agent::config::Config;
use fleet_agent::host::SystemHost;
use fleet_agent::spool::Spool;
use fleet_widgets::{CollectError, Timestamp, WidgetOptions};
use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::record::{BatchBody, Dropped, Record};
use serde_json::json;

use crate::proc_stats::thread_cpu_ns;
use crate::receiver_bench::API_KEY;

/// Mean CPU and wall time of one call.
struct Cost {
    cpu_us: f64,
    wall_us: f64,
}

/// Run `f` once to warm up, then `iterations` times; the mean per call.
fn measure<T>(iterations: usize, mut f: impl FnMut() -> Result<T, String>) -> Result<(Cost, T), String> {
    f()?;
    let (cpu0, wall0) = (thread_cpu_ns()?, Instant::now());
    let mut last = None;
    for _ in 0..iterations {
        last = Some(f()?);
    }
    let (cpu, wall) = (thread_cpu_ns()? - cpu0, wall0.elapsed());
    let n = iterations.max(1) as f64;
    let cost = Cost { cpu_us: cpu as f64 / 1000.0 / n, wall_us: wall.as_secs_f64() * 1e6 / n };
    Ok((cost, last.ok_or("no iterations")?))
}

fn print(stage: &str, widget: Option<&str>, cost: &Cost, extra: serde_json::Value) {
    let mut line = json!({"bench": "footprint_stage", "stage": stage, "cpu_us": round(cost.cpu_us),
                          "wall_us": round(cost.wall_us)});
    if let Some(widget) = widget {
        line["widget"] = json!(widget);
    }
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
    println!("{line}");
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The widget options the bench uses: one echo to 127.0.0.1 for ping (the default target is
/// an outside host and the default count takes seconds), the defaults for the others.
pub fn bench_options(widget: &str) -> WidgetOptions {
    match widget {
        "ping" => json!({"targets": ["127.0.0.1"], "count": 1}).as_object().cloned().unwrap_or_default(),
        _ => WidgetOptions::new(),
    }
}

/// Measure every stage; prints one `footprint_stage` line each.
pub fn run(iterations: usize, dir: &Path, url: &str, key: &Key32) -> Result<(), String> {
    let host = SystemHost::new();
    let mut records: Vec<Record> = Vec::new();
    let mut total_cpu_us = 0.0;
    for spec in fleet_widgets::ALL.iter().filter(|s| s.enabled_by_default && s.name != "speedtest") {
        let options = bench_options(spec.name);
        (spec.validate)(&options).map_err(|e| format!("{}: {e}", spec.name))?;
        let mut widget = (spec.build)(&options);
        let collect = |widget: &mut Box<dyn fleet_widgets::Widget>| widget.collect(&host, Timestamp::now());
        match collect(&mut widget) {
            Err(CollectError::Unsupported(why)) => {
                println!(
                    "{}",
                    json!({"bench": "footprint_stage", "stage": "collect", "widget": spec.name,
                           "unsupported": why.to_string()})
                );
                continue;
            }
            Err(e) => return Err(format!("widget {}: {e}", spec.name)),
            Ok(_) => {}
        }
        let (cost, samples) = measure(iterations, || collect(&mut widget).map_err(|e| format!("{}: {e}", spec.name)))?;
        let every = spec.default_interval_s.map_or("interval".to_string(), |s| format!("{s} s"));
        print("collect", Some(spec.name), &cost, json!({"samples": samples.len(), "runs_every": every}));
        if spec.default_interval_s.is_none() {
            total_cpu_us += cost.cpu_us;
        }
        let ts = Timestamp::now();
        records.extend(samples.into_iter().map(|s| fleet_agent::collect::record_of(s, ts)));
    }

    let config_path = dir.join("stages.json");
    let config = json!({
        "server_url": url, "api_key": API_KEY, "encryption_key": key.to_base64().as_str(),
        "machine_id": "bench-footprint-stages", "protocol": "v2", "interval": 1, "log_level": "warn",
        "spool": {"dir": dir.join("spool"), "fsync": "batch"},
    });
    write_private(&config_path, &config.to_string())?;
    let config = Config::load(Some(&config_path)).map_err(|errors| format!("bench config: {errors:?}"))?;

    let mut spool = Spool::open(&config.spool).map_err(|e| format!("opening the spool: {e}"))?;
    let (cost, ()) = measure(iterations, || spool.append(&records).map_err(|e| format!("spool append: {e}")))?;
    print("spool", None, &cost, json!({"records": records.len(), "fsync": "batch"}));
    total_cpu_us += cost.cpu_us;

    let body = BatchBody {
        machine_id: config.machine_id.clone(),
        seq: 1,
        sent_at: Timestamp::now().to_rfc3339(),
        records: records.clone(),
        dropped: Dropped::default(),
    };
    let (cost, plaintext) =
        measure(iterations, || serde_json::to_vec(&body).map_err(|e| format!("encoding a batch: {e}")))?;
    print("encode", None, &cost, json!({"bytes": plaintext.len()}));
    let (cost, sealed) = measure(iterations, || {
        envelope::seal_v2(key, &config.machine_id, 1, &plaintext).map_err(|e| format!("sealing: {e}"))
    })?;
    print("seal", None, &cost, json!({"bytes": sealed.len()}));
    // AES-256-GCM throughput on a large body (a backlog drain seals 500-record batches): where
    // opt-level "z" against "s" shows (BENCHMARKS.md).
    let large = vec![0x5au8; 256 * 1024];
    let (cost, _) = measure(iterations, || {
        envelope::seal_v2(key, &config.machine_id, 1, &large).map_err(|e| format!("sealing: {e}"))
    })?;
    let mib_per_cpu_s = (large.len() as f64 / 1048576.0) / (cost.cpu_us / 1e6);
    print("seal_256k", None, &cost, json!({"bytes": large.len(), "mib_per_cpu_s": round(mib_per_cpu_s)}));
    // The other direction, as the receiver opens a batch: JSON, base64 and AES-256-GCM open.
    let sealed_large = envelope::seal_v2(key, &config.machine_id, 1, &large).map_err(|e| format!("sealing: {e}"))?;
    let (cost, opened) = measure(iterations, || {
        envelope::open_v2(std::slice::from_ref(key), &sealed_large).map_err(|e| format!("opening: {e}"))
    })?;
    if opened.plaintext != large {
        return Err("open_256k: the opened plaintext differs from what was sealed".into());
    }
    let mib_per_cpu_s = (large.len() as f64 / 1048576.0) / (cost.cpu_us / 1e6);
    print("open_256k", None, &cost, json!({"bytes": large.len(), "mib_per_cpu_s": round(mib_per_cpu_s)}));

    // One send round: `run` hands the cycle to the sender (`accept`), spools what it returns,
    // and pushes when the send interval is due; `flush` forces that round now (and saves the
    // sender's state, which `push` does at most every 60 s), so each iteration is one round
    // carrying one cycle.
    let mut sender = fleet_agent::sender::build(&config, url, config.spool.dir.clone())
        .map_err(|e| format!("building the sender: {e}"))?;
    let mut push_cpu = 0u64;
    let mut push_wall = Duration::ZERO;
    for round in 0..=iterations {
        let to_spool = sender.accept(records.clone(), spool.stats().unacked_records);
        spool.append(&to_spool).map_err(|e| format!("spool append: {e}"))?;
        let (cpu0, wall0) = (thread_cpu_ns()?, Instant::now());
        sender.flush(&mut spool, Instant::now() + Duration::from_secs(5));
        if round > 0 {
            push_cpu += thread_cpu_ns()? - cpu0;
            push_wall += wall0.elapsed();
        }
    }
    let n = iterations.max(1) as f64;
    let cost = Cost { cpu_us: push_cpu as f64 / 1000.0 / n, wall_us: push_wall.as_secs_f64() * 1e6 / n };
    let unacked = spool.stats().unacked_records;
    if unacked != 0 {
        return Err(format!("push: {unacked} records left unacknowledged (is the receiver up?)"));
    }
    print(
        "push",
        None,
        &cost,
        json!({"records": records.len(), "protocol": "v2",
               "includes": "one send round (Sender::flush): read back, encode, seal, POST, ack, state save"}),
    );
    total_cpu_us += cost.cpu_us;
    println!(
        "{}",
        json!({"bench": "footprint_stage", "stage": "cycle_sum", "cpu_us": round(total_cpu_us),
               "note": "collect of the widgets due every cycle + spool + push (encode and seal are inside push)"})
    );
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}
