//! `fleet-bench spool`: append throughput per fsync policy, read throughput, bytes on disk per
//! record. Prints one JSON object per line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fleet_agent::config::{FsyncPolicy, SpoolConfig};
use fleet_agent::spool::{Cursor, Spool};
use fleet_widgets::{Level, SampleKind, Timestamp};
use fleet_wire::record::Record;
use serde_json::json;

/// Entry point: `fleet-bench spool [--quick] [--dir DIR]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let dir = args.iter().position(|a| a == "--dir").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    spool(quick, dir)
}

/// A record whose JSON is exactly `size` bytes.
fn record_of_size(n: u64, size: usize) -> Record {
    let mut record = Record {
        ts: Timestamp(1_763_800_000_000 + n as i64).to_rfc3339(),
        widget: "wifi".into(),
        kind: SampleKind::Log,
        level: Level::Info,
        message: String::new(),
        data: json!({ "n": n, "pad": "" }),
    };
    let base = serde_json::to_vec(&record).map(|v| v.len()).unwrap_or(0);
    record.data = json!({ "n": n, "pad": "x".repeat(size.saturating_sub(base)) });
    record
}

/// A fresh, empty directory for one measurement.
fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn policy_name(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Always => "always",
        FsyncPolicy::Batch => "batch",
        FsyncPolicy::Never => "never",
    }
}

fn spool(quick: bool, dir: Option<PathBuf>) -> Result<(), String> {
    const RECORD_BYTES: usize = 300;
    let root = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("fleet-bench-{}", std::process::id())));
    // (policy, records per append call, total records)
    let runs: &[(FsyncPolicy, usize, u64)] = if quick {
        &[(FsyncPolicy::Always, 1, 100), (FsyncPolicy::Batch, 10, 2_000), (FsyncPolicy::Never, 10, 20_000)]
    } else {
        &[
            (FsyncPolicy::Always, 1, 1_000),
            (FsyncPolicy::Batch, 10, 10_000),
            (FsyncPolicy::Batch, 100, 100_000),
            (FsyncPolicy::Never, 10, 200_000),
        ]
    };
    for &(policy, per_call, total) in runs {
        let dir = fresh_dir(&root, policy_name(policy))?;
        let config = SpoolConfig { dir: dir.clone(), max_bytes: 1 << 40, segment_bytes: 1 << 20, fsync: policy };
        let mut spool = Spool::open(&config).map_err(|e| e.to_string())?;
        let batch: Vec<Record> = (0..per_call as u64).map(|n| record_of_size(n, RECORD_BYTES)).collect();
        let started = Instant::now();
        let mut written = 0u64;
        while written < total {
            spool.append(&batch).map_err(|e| e.to_string())?;
            written += per_call as u64;
        }
        let seconds = started.elapsed().as_secs_f64();
        let stats = spool.stats();
        println!(
            "{}",
            json!({
                "bench": "spool_append", "fsync": policy_name(policy), "record_json_bytes": RECORD_BYTES,
                "records_per_append": per_call, "records": written, "seconds": seconds,
                "records_per_s": (written as f64 / seconds).round(),
                "bytes_on_disk": stats.bytes, "bytes_per_record": stats.bytes as f64 / written as f64,
                "overhead_per_record": stats.bytes as f64 / written as f64 - RECORD_BYTES as f64,
            })
        );
        if policy == FsyncPolicy::Never {
            drop(spool);
            read(&config, written)?;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Reopen (recovery walks and authenticates everything), then drain in batches of 500 with acks.
fn read(config: &SpoolConfig, expected: u64) -> Result<(), String> {
    let started = Instant::now();
    let mut spool = Spool::open(config).map_err(|e| e.to_string())?;
    let open_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut at = Cursor::default();
    let mut read = 0u64;
    loop {
        let batch = spool.read_from(at, 500, 1 << 20).map_err(|e| e.to_string())?;
        if batch.records.is_empty() {
            break;
        }
        read += batch.records.len() as u64;
        at = batch.next;
        spool.ack(at).map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if read != expected {
        return Err(format!("read {read} records, expected {expected}"));
    }
    println!(
        "{}",
        json!({
            "bench": "spool_read", "records": read, "open_recovery_seconds": open_seconds,
            "open_recovery_records_per_s": (read as f64 / open_seconds).round(),
            "seconds": seconds, "records_per_s": (read as f64 / seconds).round(), "batch": 500, "acked": "every batch (fsync: never)",
        })
    );
    Ok(())
}
