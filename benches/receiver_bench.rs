//! `fleet-bench receiver [--quick]`: throughput of the bundled receiver on loopback (v2 batches
//! of 100 records, sealed, each stored and fsynced before its 200) with a plaintext store and
//! with a store sealed at rest, in the same run, and the RSS of the real `fleet-agent receive`
//! process (VmRSS from /proc after start and after the run).
//!
//! Needs the `fleet-agent` binary next to `fleet-bench` (`cargo build --release --bins`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_widgets::{Level, SampleKind};
use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::record::{BatchBody, Dropped, Record};
use serde_json::json;

/// The API key the bench receiver expects.
pub const API_KEY: &str = "bench-api-key";
const RECORDS_PER_BATCH: usize = 100;
const CLIENTS: usize = 2;

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process stopped with SIGTERM (and reaped) on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Run the bench; prints its figures on stdout.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut quick = false;
    let mut export_mb = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--export-store-mb" => {
                let text = rest.next().ok_or("--export-store-mb needs a number")?;
                export_mb =
                    Some(text.parse::<u64>().map_err(|_| format!("--export-store-mb: `{text}` is not a number"))?);
            }
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    let export_mb = export_mb.unwrap_or(if quick { 10 } else { 100 });
    let batches = if quick { 200 } else { 2000 };
    let exe = std::env::current_exe().map_err(|e| format!("locating fleet-bench: {e}"))?;
    let agent_bin = exe.with_file_name("fleet-agent");
    if !agent_bin.exists() {
        return Err(format!("{} not found: run `cargo build --release --bins` first", agent_bin.display()));
    }
    let scratch = Scratch(std::env::temp_dir().join(format!("fleet-bench-receiver-{}", std::process::id())));
    let key = Key32::generate().map_err(|e| e.to_string())?;

    let store_key = Key32::generate().map_err(|e| e.to_string())?;
    let bodies = seal_batches(&key, batches)?;
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!("receiver: {batches} v2 batches x {RECORDS_PER_BATCH} records ({} KiB sealed), {CLIENTS} clients, loopback HTTP", bytes / 1024);
    for (store_name, sealed) in [("plaintext", None), ("sealed", Some(&store_key))] {
        let store = scratch.0.join(format!("store-{store_name}"));
        let (child, url) = spawn_receiver_with(&agent_bin, &store, &key, sealed)?;
        let child = Running(child);
        std::thread::sleep(Duration::from_millis(500));
        let idle_rss = vm_rss(child.0.id())?;
        let started = Instant::now();
        post_all(&url, bodies.clone())?;
        let elapsed = started.elapsed();
        let loaded_rss = vm_rss(child.0.id())?;
        drop(child);
        let store_bytes = dir_bytes(&store);
        let rate = batches as f64 / elapsed.as_secs_f64();
        println!(
            "receiver ({store_name} store): {rate:.0} batches/s ({:.0} records/s), {:.2} ms per batch, store {} KiB",
            rate * RECORDS_PER_BATCH as f64,
            elapsed.as_secs_f64() * 1000.0 / batches as f64,
            store_bytes / 1024
        );
        println!("receiver ({store_name} store): idle RSS {idle_rss} KiB, after the run {loaded_rss} KiB");
        println!(
            "{}",
            json!({
                "bench": "receiver_v2", "store": store_name, "batches": batches, "records_per_batch": RECORDS_PER_BATCH,
                "clients": CLIENTS, "sealed_bytes": bytes, "seconds": elapsed.as_secs_f64(), "batches_per_s": rate.round(),
                "records_per_s": (rate * RECORDS_PER_BATCH as f64).round(), "store_bytes": store_bytes,
                "idle_vm_rss_kib": idle_rss, "vm_rss_kib_after": loaded_rss,
            })
        );
    }
    exports(&agent_bin, &scratch.0.join("store-export"), &key, &store_key, export_mb)
}

/// Concurrent exports of a store sealed at rest.
const EXPORTS: usize = 16;

/// Build a sealed store of about `megabytes` (v2 log records, through the store API), then
/// run [`EXPORTS`] concurrent JSON/CSV exports of all of it against the real receiver, and
/// report the receiver's peak RSS (VmHWM) and the export rate.
fn exports(bin: &Path, store: &Path, key: &Key32, store_key: &Key32, megabytes: u64) -> Result<(), String> {
    use fleet_receiver::{open_storage, StoreKeys, StoreLocation};
    let started = Instant::now();
    let rows = {
        let location = StoreLocation::Dir(store.to_path_buf());
        let writer = open_storage(&location, StoreKeys::new(&[store_key.clone_secret()])).map_err(|e| e.to_string())?;
        let mut rows = 0u64;
        let mut seq = 0u64;
        while dir_bytes(store) < megabytes * 1024 * 1024 {
            for m in 0..4 {
                let records = (0..RECORDS_PER_BATCH as u64)
                    .map(|i| Record {
                        ts: "2026-11-22T13:00:00.000Z".into(),
                        widget: "ping".into(),
                        kind: SampleKind::Log,
                        level: Level::Info,
                        message: format!("ping #{i}"),
                        data: json!({"latency": 12.5, "target": "1.1.1.1", "pad": "y".repeat(200)}),
                    })
                    .collect();
                let batch = BatchBody {
                    machine_id: format!("export-{m}"),
                    seq,
                    sent_at: "2026-11-22T13:00:00Z".into(),
                    records,
                    dropped: Dropped::default(),
                };
                writer.append_batch(&batch, None).map_err(|e| e.to_string())?;
                rows += RECORDS_PER_BATCH as u64;
            }
            seq += 1;
        }
        rows
    };
    let store_bytes = dir_bytes(store);
    println!(
        "receiver exports: built a {} MB sealed store ({rows} rows) in {:.1}s",
        store_bytes / 1_000_000,
        started.elapsed().as_secs_f64()
    );
    let secrets = PathBuf::from(format!("{}.secrets", store.display()));
    std::fs::create_dir_all(&secrets).map_err(|e| e.to_string())?;
    write_secret(&secrets.join("read-token"), "bench-read-token")?;
    let (child, url) = spawn_receiver_with_args(
        bin,
        store,
        key,
        Some(store_key),
        &["--read-token-file".into(), secrets.join("read-token").display().to_string()],
    )?;
    let child = Running(child);
    std::thread::sleep(Duration::from_millis(300));
    let before = vm_hwm(child.0.id())?;
    let started = Instant::now();
    let sent: Result<Vec<u64>, String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..EXPORTS)
            .map(|i| {
                let url = url.clone();
                scope.spawn(move || -> Result<u64, String> {
                    let format = if i % 2 == 0 { "json" } else { "csv" };
                    let agent = bench_client(Duration::from_secs(3600));
                    let target = format!("{url}/api/fleet/widget-logs?format={format}");
                    let mut response = agent
                        .send(fleet_http::Request {
                            method: "GET",
                            url: &target,
                            headers: &[("Authorization", "Bearer bench-read-token")],
                            body: fleet_http::Body::Empty,
                            resendable: true,
                        })
                        .map_err(|e| format!("export: {e}"))?;
                    std::io::copy(&mut response, &mut std::io::sink()).map_err(|e| format!("reading the export: {e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| "export thread panicked".to_string())?).collect()
    });
    let sent = sent?;
    let elapsed = started.elapsed();
    let peak = vm_hwm(child.0.id())?;
    drop(child);
    let total: u64 = sent.iter().sum();
    println!(
        "receiver exports: {EXPORTS} concurrent exports of the {} MB store: {} MB sent in {:.1}s ({:.0} rows/s in all); peak RSS {peak} KiB (before: {before} KiB)",
        store_bytes / 1_000_000,
        total / 1_000_000,
        elapsed.as_secs_f64(),
        (rows * EXPORTS as u64) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{}",
        json!({
            "bench": "receiver_exports", "exports": EXPORTS, "store_bytes": store_bytes, "rows": rows,
            "bytes_sent": total, "seconds": elapsed.as_secs_f64(), "vm_hwm_kib_before": before, "vm_hwm_kib": peak,
        })
    );
    Ok(())
}

/// VmHWM (peak RSS) of `pid` in KiB.
fn vm_hwm(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("reading /proc: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc status".to_string())
}

/// Bytes of the files under `dir` (one level of machine dirs).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// Write `text` to `path`, mode 0600 (a secret file for the receiver).
pub fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Start `fleet-agent receive` with a plaintext store (the sender and footprint benches).
pub fn spawn_receiver(bin: &Path, store: &Path, key: &Key32) -> Result<(Child, String), String> {
    spawn_receiver_with(bin, store, key, None)
}

/// Start `fleet-agent receive` on an ephemeral loopback port, its store sealed under
/// `store_key` (`None`: `--store-plaintext`); returns it and its URL. The secrets go in files
/// beside the store.
pub fn spawn_receiver_with(
    bin: &Path,
    store: &Path,
    key: &Key32,
    store_key: Option<&Key32>,
) -> Result<(Child, String), String> {
    spawn_receiver_with_args(bin, store, key, store_key, &[])
}

/// [`spawn_receiver_with`] with more arguments.
fn spawn_receiver_with_args(
    bin: &Path,
    store: &Path,
    key: &Key32,
    store_key: Option<&Key32>,
    extra: &[String],
) -> Result<(Child, String), String> {
    let secrets = PathBuf::from(format!("{}.secrets", store.display()));
    std::fs::create_dir_all(&secrets).map_err(|e| format!("creating {}: {e}", secrets.display()))?;
    write_secret(&secrets.join("api-key"), API_KEY)?;
    let mut command = Command::new(bin);
    command.args(["receive", "--listen", "127.0.0.1:0", "-q"]).arg("--api-key-file").arg(secrets.join("api-key"));
    match store_key {
        Some(store_key) => {
            write_secret(&secrets.join("store.key"), &store_key.to_base64())?;
            command.arg("--store-key-file").arg(secrets.join("store.key"));
        }
        None => {
            command.arg("--store-plaintext");
        }
    }
    let mut child = command
        .args(extra)
        .arg("--store")
        .arg(store)
        .env("FLEET_ENCRYPTION_KEY", key.to_base64().as_str())
        .env_remove("FLEET_STORE_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("reading the listening line: {e}"))?;
    match line.trim().strip_prefix("listening on ") {
        Some(url) => Ok((child, url.to_string())),
        None => {
            let _ = child.kill();
            Err(format!("unexpected first line from the receiver: {line:?}"))
        }
    }
}

fn seal_batches(key: &Key32, batches: usize) -> Result<Vec<Vec<u8>>, String> {
    (0..batches as u64)
        .map(|seq| {
            let records = (0..RECORDS_PER_BATCH as u64)
                .map(|i| Record {
                    ts: "2026-11-22T13:00:00.000Z".into(),
                    widget: "ping".into(),
                    kind: SampleKind::Log,
                    level: Level::Info,
                    message: "ping".into(),
                    data: json!({"latency": 12.5 + i as f64, "packet_loss": 0.0, "target": "1.1.1.1"}),
                })
                .collect();
            let body = BatchBody {
                machine_id: "bench-01".into(),
                seq,
                sent_at: "2026-11-22T13:00:00Z".into(),
                records,
                dropped: Dropped::default(),
            };
            let plain = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
            envelope::seal_v2(key, "bench-01", seq, &plain).map_err(|e| e.to_string())
        })
        .collect()
}

fn post_all(url: &str, bodies: Vec<Vec<u8>>) -> Result<(), String> {
    let mut shares: Vec<Vec<Vec<u8>>> = (0..CLIENTS).map(|_| Vec::new()).collect();
    for (i, body) in bodies.into_iter().enumerate() {
        shares[i % CLIENTS].push(body);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || -> Result<(), String> {
                    let agent = bench_client(Duration::from_secs(30));
                    let target = format!("{url}/api/v2/batches");
                    for body in share {
                        let response = agent
                            .send(fleet_http::Request {
                                method: "POST",
                                url: &target,
                                headers: &[("X-API-Key", API_KEY), ("Content-Type", "application/json")],
                                body: fleet_http::Body::Bytes(&body[..]),
                                resendable: true,
                            })
                            .map_err(|e| format!("POST failed: {e}"))?;
                        let status = response.status();
                        let text = response.read_to_vec(1 << 20).map_err(|e| e.to_string())?;
                        let text = String::from_utf8_lossy(&text);
                        if status != 200 || !text.contains("\"stored\":100") {
                            return Err(format!("unexpected answer {status}: {text}"));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| "client thread panicked".to_string())?)
    })
}

/// VmRSS of `pid` in KiB.
pub fn vm_rss(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("reading /proc: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc status".to_string())
}

/// A plain-HTTP client for the bench's loopback requests (one kept-alive connection).
fn bench_client(timeout: Duration) -> fleet_http::Client {
    fleet_http::Client::new(fleet_http::Config {
        connect_timeout: timeout,
        timeout,
        tls: None,
        user_agent: "fleet-bench".into(),
        proxy: None,
        max_idle: Duration::from_secs(30),
    })
}
