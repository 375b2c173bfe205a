//! `fleet-bench scale [--quick] [options]`: many simulated machines against several receiver
//! processes sharing one PostgreSQL, beside the file store, in one run (issue 15).
//!
//! 1. **Workload** (seeded, `--seed N`): `--machines N` simulated machines, each with its own
//!    machine id and seqs counting up from 1, each batch one collection cycle of
//!    `--records-per-batch R` records shaped like the default widgets' (cpu, memory, disk,
//!    network, processes, system, a ping log entry; values drawn from the seed), 10 s apart.
//!    Every batch is a real v2 body: `BatchBody` JSON sealed by `fleet_wire::envelope::seal_v2`
//!    under one fleet key, the bytes an agent POSTs (keys and nonces come from the OS, as in
//!    the agent). Batches are sealed before the clock starts, so the generator's crypto does
//!    not compete with the servers; the seal and open costs per batch are reported apart.
//! 2. **Configurations**, each on a fresh store: the file store behind one receiver, then
//!    PostgreSQL behind 1, 2 and 4 receivers (`--receivers 1,2,4`) when a server is given
//!    (`--postgres URL`, else env `FLEET_TEST_POSTGRES`; password in env
//!    `FLEET_TEST_POSTGRES_PASSWORD`; the role must be allowed to CREATE DATABASE: every
//!    configuration gets its own database, dropped afterwards). Without one the bench says so
//!    and runs the file store alone. Receivers are real `fleet-agent receive` processes (the
//!    binary beside `fleet-bench`, built with `--features postgres` for the PostgreSQL runs),
//!    stores sealed at rest, on loopback HTTP, each with its default 4 workers (`--workers N`
//!    gives them more) and, on PostgreSQL, its default pool of 8 connections.
//! 3. **Load**: `--clients C` client threads, each owning the machines `m % C == thread`, so
//!    one machine's batches go one at a time and in order, as an agent sends them. Each
//!    request goes to the next receiver round-robin (a stand-in for the load balancer).
//!    Closed loop (as fast as answers come) for `--seconds S`, or paced at `--rate B`
//!    batches/s in all (latency then counts from when a batch was due, so a server that
//!    falls behind shows it).
//! 4. **Figures** per configuration, one JSON line each (`"bench":"scale"`): batches/s,
//!    records/s, p50/p99/max latency of a 200; per receiver VmRSS after start, steady VmRSS
//!    (median over the second half of the run) and VmHWM; CPU seconds of the receivers,
//!    PostgreSQL (postmaster and its children, when the server is local), the generator and
//!    the whole host (busy cores and iowait from `/proc/stat`); what one 8 KiB `fdatasync`
//!    cost in the scratch directory just before the load (other work on a shared disk moves
//!    it tenfold, and every 200 waits for one); PostgreSQL WAL written and
//!    WAL syncs (`pg_stat_wal`); store size: `pg_database_size` and each table's
//!    `pg_total_relation_size` (minus the freshly migrated, empty database) or the file
//!    store's bytes (apparent and allocated), each also per million records.
//!
//! Also: `--batches N` (most batches sealed up front; the run ends early, and says so, when
//! they are all sent), `--no-postgres`, `--no-file-store`.
//!
//! Database administration (create, size, drop) goes through `psql`, which comes with the
//! PostgreSQL packages, so the bench itself needs no database client crate.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_widgets::{Level, SampleKind, Timestamp};
use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::record::{BatchBody, Dropped, Record};
use serde_json::{json, Value};

use crate::proc_stats::{cpu_seconds, status_kib};
use crate::receiver_bench::{write_secret, Running, Scratch, API_KEY};

/// Seconds between two cycles of one simulated machine (the agent's default interval).
const CYCLE_SECONDS: u64 = 10;
/// Unix time of every machine's first cycle (2026-12-01T00:00:00Z).
const FIRST_CYCLE: u64 = 1_796_083_200;

/// Command-line options.
struct Options {
    quick: bool,
    machines: usize,
    records_per_batch: usize,
    clients: usize,
    seconds: f64,
    /// Paced load, batches/s in all (`None`: closed loop).
    rate: Option<f64>,
    seed: u64,
    receivers: Vec<usize>,
    /// Most batches sealed up front (the run ends early if they are all sent).
    max_batches: usize,
    postgres: Option<String>,
    file_store: bool,
    /// `receive --workers N` (`None`: the receiver's default).
    workers: Option<usize>,
    /// The run's scratch directory (stores, secrets, the fsync probe).
    scratch: PathBuf,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut options = Options {
        quick,
        machines: if quick { 1_000 } else { 10_000 },
        records_per_batch: 7,
        clients: 16,
        seconds: if quick { 4.0 } else { 30.0 },
        rate: None,
        seed: 1,
        receivers: vec![1, 2, 4],
        max_batches: 0,
        postgres: std::env::var("FLEET_TEST_POSTGRES").ok().filter(|s| !s.is_empty()),
        file_store: true,
        workers: None,
        scratch: std::env::temp_dir().join(format!("fleet-bench-scale-{}", std::process::id())),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        fn number<T: std::str::FromStr>(name: &str, text: String) -> Result<T, String> {
            text.parse().map_err(|_| format!("{name}: `{text}` is not a valid number"))
        }
        match arg.as_str() {
            "--quick" => {}
            "--machines" => options.machines = number(arg, value(arg)?)?,
            "--records-per-batch" => options.records_per_batch = number(arg, value(arg)?)?,
            "--clients" => options.clients = number(arg, value(arg)?)?,
            "--seconds" => options.seconds = number(arg, value(arg)?)?,
            "--rate" => options.rate = Some(number(arg, value(arg)?)?),
            "--seed" => options.seed = number(arg, value(arg)?)?,
            "--batches" => options.max_batches = number(arg, value(arg)?)?,
            "--receivers" => {
                options.receivers =
                    value(arg)?.split(',').map(|n| number(arg, n.trim().to_string())).collect::<Result<_, _>>()?
            }
            "--postgres" => options.postgres = Some(value(arg)?),
            "--no-postgres" => options.postgres = None,
            "--no-file-store" => options.file_store = false,
            "--workers" => options.workers = Some(number(arg, value(arg)?)?),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if options.machines == 0 || options.clients == 0 || options.records_per_batch == 0 {
        return Err("--machines, --clients and --records-per-batch must be at least 1".into());
    }
    if options.receivers.contains(&0) {
        return Err("--receivers: every count must be at least 1".into());
    }
    if options.seconds.is_nan() || options.seconds <= 0.0 || options.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--seconds and --rate must be positive".into());
    }
    if options.max_batches == 0 {
        // Enough for the run: the paced rate, or a closed loop well above what this machine
        // has done (about 2,000 batches/s); the run ends early, and says so, past it.
        // Paced: a tenth more than the run asks for, so the clock ends it, not the supply.
        let per_second = options.rate.unwrap_or(if quick { 4_000.0 } else { 3_000.0 });
        let needed = (per_second * options.seconds).ceil() as usize;
        options.max_batches = if options.rate.is_some() { needed + needed.div_ceil(10) } else { needed };
    }
    Ok(options)
}

/// Run the bench; prints its figures on stdout.
pub fn run(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    let exe = std::env::current_exe().map_err(|e| format!("locating fleet-bench: {e}"))?;
    let agent_bin = exe.with_file_name("fleet-agent");
    if !agent_bin.exists() {
        return Err(format!("{} not found: run `cargo build --release --bins` first", agent_bin.display()));
    }
    let scratch = Scratch(options.scratch.clone());
    std::fs::create_dir_all(&scratch.0).map_err(|e| format!("creating {}: {e}", scratch.0.display()))?;
    let fleet_key = Key32::generate().map_err(|e| e.to_string())?;
    let store_key = Key32::generate().map_err(|e| e.to_string())?;
    let keys = Keys::write(&scratch.0, &fleet_key, &store_key)?;

    let workload = Workload::seal(&options, &fleet_key)?;
    let open_us = open_cost_us(&fleet_key, &workload)?;
    println!(
        "scale: {} machines, {} records a batch ({} bytes sealed on average), {} batches sealed in {:.1}s \
         ({:.1} us a batch, one thread); opening one costs {open_us:.1} us; {} clients, {}",
        options.machines,
        options.records_per_batch,
        workload.bytes / workload.batches.max(1),
        workload.batches,
        workload.seal_seconds,
        workload.seal_seconds * 1e6 / workload.batches.max(1) as f64,
        options.clients,
        match options.rate {
            Some(rate) => format!("paced at {rate} batches/s for {} s", options.seconds),
            None => format!("closed loop for {} s", options.seconds),
        }
    );
    println!(
        "{}",
        json!({
            "bench": "scale_workload", "seed": options.seed, "machines": options.machines,
            "records_per_batch": options.records_per_batch, "batches_sealed": workload.batches,
            "mean_sealed_bytes": workload.bytes / workload.batches.max(1),
            "seal_us_per_batch": round2(workload.seal_seconds * 1e6 / workload.batches.max(1) as f64),
            "open_us_per_batch": round2(open_us), "clients": options.clients, "rate": options.rate,
            "seconds": options.seconds, "quick": options.quick, "receiver_workers": options.workers,
        })
    );

    if options.file_store {
        let store = scratch.0.join("file-store");
        let target = Target::File(store.clone());
        let figures = measure(&options, &agent_bin, &keys, &target, 1, &workload, &mut || Ok(()))?;
        let (apparent, allocated) = tree_bytes(&store);
        figures.report("file", 1, json!({ "store_bytes": apparent, "store_bytes_allocated": allocated }), apparent);
    }
    match &options.postgres {
        None => println!(
            "scale: PostgreSQL configurations skipped: no server (set FLEET_TEST_POSTGRES or pass --postgres URL); \
             the file store alone was measured"
        ),
        Some(url) => {
            let server = Postgres::new(url, &scratch.0)?;
            for &receivers in &options.receivers {
                let database = format!("fleet_scale_{}_{receivers}", std::process::id());
                let result =
                    postgres_configuration(&options, &agent_bin, &keys, &server, &database, receivers, &workload);
                let dropped = server.drop_database(&database);
                result?;
                dropped?;
            }
        }
    }
    Ok(())
}

/// One PostgreSQL configuration: a fresh database, migrated, measured, sized.
fn postgres_configuration(
    options: &Options,
    agent_bin: &Path,
    keys: &Keys,
    server: &Postgres,
    database: &str,
    receivers: usize,
    workload: &Workload,
) -> Result<(), String> {
    server.create_database(database)?;
    let location = server.location(database);
    migrate(agent_bin, &location, server)?;
    let target = Target::Postgres {
        location,
        database: database.to_string(),
        password_file: server.password_file.clone(),
        server,
    };
    // Sized once the receivers are up, before the load.
    let mut before = None;
    let figures = measure(options, agent_bin, keys, &target, receivers, workload, &mut || {
        before = Some((server.sizes(database)?, server.wal()));
        Ok(())
    })?;
    let (empty, wal_before) = before.ok_or("the database was not sized before the load")?;
    let wal_after = server.wal();
    let full = server.sizes(database)?;
    let grown = full.database.saturating_sub(empty.database);
    let tables: BTreeMap<String, Value> = full
        .tables
        .iter()
        .map(|(name, (bytes, rows))| (name.clone(), json!({ "bytes": bytes, "rows": rows })))
        .collect();
    let wal = match (wal_before, wal_after) {
        (Some(before), Some(after)) => json!({
            "wal_bytes": after.bytes.saturating_sub(before.bytes),
            "wal_syncs": after.syncs.saturating_sub(before.syncs),
            "wal_writes": after.writes.saturating_sub(before.writes),
            "wal_bytes_per_batch": after.bytes.saturating_sub(before.bytes) / figures.batches.max(1),
            "batches_per_wal_sync": round2(figures.batches as f64 / after.syncs.saturating_sub(before.syncs).max(1) as f64),
        }),
        _ => Value::Null,
    };
    figures.report(
        "postgres",
        receivers,
        json!({
            "database_bytes": full.database, "database_bytes_empty": empty.database, "tables": tables, "wal": wal,
        }),
        grown,
    );
    Ok(())
}

/// Where the receivers store.
enum Target<'a> {
    /// The file store (one receiver: it holds the store's lock).
    File(PathBuf),
    /// A PostgreSQL database.
    Postgres { location: String, database: String, password_file: PathBuf, server: &'a Postgres },
}

/// The secret files every receiver reads.
struct Keys {
    api_key: PathBuf,
    fleet_key: PathBuf,
    store_key: PathBuf,
}

impl Keys {
    fn write(dir: &Path, fleet_key: &Key32, store_key: &Key32) -> Result<Keys, String> {
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).map_err(|e| format!("creating {}: {e}", secrets.display()))?;
        let keys = Keys {
            api_key: secrets.join("api-key"),
            fleet_key: secrets.join("fleet.key"),
            store_key: secrets.join("store.key"),
        };
        write_secret(&keys.api_key, API_KEY)?;
        write_secret(&keys.fleet_key, &fleet_key.to_base64())?;
        write_secret(&keys.store_key, &store_key.to_base64())?;
        Ok(keys)
    }

    /// The credential arguments of `receive`.
    fn args(&self, command: &mut Command) {
        command
            .arg("--api-key-file")
            .arg(&self.api_key)
            .arg("--encryption-key-file")
            .arg(&self.fleet_key)
            .arg("--store-key-file")
            .arg(&self.store_key)
            .env_remove("FLEET_ENCRYPTION_KEY")
            .env_remove("FLEET_STORE_KEY")
            .env_remove("FLEET_API_KEY");
    }
}

/// `fleet-agent receive migrate`: the schema, before any receiver starts (as
/// docs/receiver-store-postgres.md runs it).
fn migrate(bin: &Path, location: &str, server: &Postgres) -> Result<(), String> {
    let output = Command::new(bin)
        .args(["receive", "migrate", "--store", location])
        .arg("--store-password-file")
        .arg(&server.password_file)
        .env_remove("FLEET_STORE_PASSWORD")
        .output()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`fleet-agent receive migrate --store {location}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Start one `fleet-agent receive` on an ephemeral loopback port; returns it and its URL.
fn spawn_receiver(
    bin: &Path,
    keys: &Keys,
    target: &Target,
    workers: Option<usize>,
) -> Result<(Running, String), String> {
    let mut command = Command::new(bin);
    command.args(["receive", "--listen", "127.0.0.1:0", "-q"]);
    if let Some(workers) = workers {
        command.arg("--workers").arg(workers.to_string());
    }
    keys.args(&mut command);
    match target {
        Target::File(dir) => {
            command.arg("--store").arg(dir);
        }
        Target::Postgres { location, password_file, .. } => {
            command.arg("--store").arg(location).arg("--store-password-file").arg(password_file);
        }
    }
    let mut child = command
        .env_remove("FLEET_STORE_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let running = Running(child);
    read.map_err(|e| format!("reading the listening line: {e}"))?;
    match line.trim().strip_prefix("listening on ") {
        Some(url) => Ok((running, url.to_string())),
        None => Err(format!("the receiver did not start (first line {line:?}; its errors are above)")),
    }
}

/// Sealed batches, split among the client threads.
struct Workload {
    /// Per client thread, its batches in sending order.
    per_client: Vec<Arc<Vec<Vec<u8>>>>,
    batches: usize,
    bytes: usize,
    seal_seconds: f64,
    records_per_batch: usize,
}

impl Workload {
    /// Build and seal `options.max_batches` batches: cycle after cycle, every machine once
    /// per cycle; machine `m` belongs to client `m % clients`.
    fn seal(options: &Options, key: &Key32) -> Result<Workload, String> {
        let mut rng = Rng::new(options.seed);
        let machines: Vec<Machine> = (0..options.machines).map(|m| Machine::new(m, &mut rng)).collect();
        let mut per_client: Vec<Vec<Vec<u8>>> = (0..options.clients).map(|_| Vec::new()).collect();
        let started = Instant::now();
        let mut bytes = 0;
        let mut batches = 0;
        'cycles: for cycle in 0u64.. {
            for (m, machine) in machines.iter().enumerate() {
                if batches == options.max_batches {
                    break 'cycles;
                }
                let body = machine.batch(cycle, options.records_per_batch, &mut rng);
                let plain = serde_json::to_vec(&body).map_err(|e| format!("encoding a batch: {e}"))?;
                let sealed = envelope::seal_v2(key, &body.machine_id, body.seq, &plain).map_err(|e| e.to_string())?;
                bytes += sealed.len();
                batches += 1;
                per_client[m % options.clients].push(sealed);
            }
        }
        Ok(Workload {
            per_client: per_client.into_iter().map(Arc::new).collect(),
            batches,
            bytes,
            seal_seconds: started.elapsed().as_secs_f64(),
            records_per_batch: options.records_per_batch,
        })
    }
}

/// What the receiver does to every batch before storing it: open the envelope and parse the
/// body. Microseconds per batch, over up to 2,000 of the workload's batches.
fn open_cost_us(key: &Key32, workload: &Workload) -> Result<f64, String> {
    let sample: Vec<&Vec<u8>> = workload.per_client.iter().flat_map(|c| c.iter()).take(2_000).collect();
    let keys = [key.clone_secret()];
    let started = Instant::now();
    for body in &sample {
        let opened = envelope::open_v2(&keys, body).map_err(|e| format!("opening a sealed batch: {e}"))?;
        let _: BatchBody =
            serde_json::from_slice(&opened.plaintext).map_err(|e| format!("parsing an opened batch: {e}"))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / sample.len().max(1) as f64)
}

/// One simulated machine: its id and the constants of its readings.
struct Machine {
    id: String,
    memory_total: u64,
    disk_total: u64,
    cores: u64,
    boot_time: u64,
}

/// Process names a simulated machine's top lists draw from.
const PROCESSES: &[&str] = &[
    "WindowServer",
    "kernel_task",
    "Google Chrome Helper (Renderer)",
    "Slack Helper",
    "mds_stores",
    "Code Helper (Plugin)",
    "zoom.us",
    "Finder",
    "systemd",
    "firefox",
    "Xorg",
    "gnome-shell",
    "fleet-agent",
];

impl Machine {
    fn new(index: usize, rng: &mut Rng) -> Machine {
        Machine {
            id: format!("scale-{index:06}"),
            memory_total: [8u64, 16, 32, 64][rng.below(4) as usize] << 30,
            disk_total: [256u64, 512, 1024][rng.below(3) as usize] * 1_000_000_000,
            cores: [4u64, 8, 10, 12][rng.below(4) as usize],
            boot_time: FIRST_CYCLE - 60 - rng.below(1_000_000),
        }
    }

    /// The batch of cycle `cycle` (seq `cycle + 1`): `records` records, the default widgets'
    /// shapes in turn.
    fn batch(&self, cycle: u64, records: usize, rng: &mut Rng) -> BatchBody {
        let seconds = FIRST_CYCLE + cycle * CYCLE_SECONDS;
        let ts = Timestamp((seconds * 1000 + rng.below(1000)) as i64).to_rfc3339();
        let records = (0..records).map(|i| self.record(i, &ts, cycle, rng)).collect();
        BatchBody {
            machine_id: self.id.clone(),
            seq: cycle + 1,
            sent_at: ts.clone(),
            records,
            dropped: Dropped::default(),
        }
    }

    fn record(&self, index: usize, ts: &str, cycle: u64, rng: &mut Rng) -> Record {
        let percent = |rng: &mut Rng| (rng.below(10_000) as f64) / 100.0;
        let (widget, kind, message, data) = match index % 7 {
            0 => (
                "cpu",
                SampleKind::Metric,
                String::new(),
                json!({
                    "count": self.cores, "threads": self.cores,
                    "load_avg": [percent(rng) / 25.0, percent(rng) / 25.0, percent(rng) / 25.0],
                    "per_core": (0..self.cores).map(|_| percent(rng)).collect::<Vec<_>>(),
                    "percent": percent(rng),
                }),
            ),
            1 => {
                let used = rng.below(self.memory_total);
                (
                    "memory",
                    SampleKind::Metric,
                    String::new(),
                    json!({
                        "total": self.memory_total, "used": used, "available": self.memory_total - used,
                        "percent": (used * 1000 / self.memory_total) as f64 / 10.0,
                        "swap_total": 0, "swap_used": 0, "swap_percent": 0.0,
                    }),
                )
            }
            2 => {
                let used = rng.below(self.disk_total);
                (
                    "disk",
                    SampleKind::Metric,
                    String::new(),
                    json!({
                        "total": self.disk_total, "used": used, "free": self.disk_total - used,
                        "percent": (used * 1000 / self.disk_total) as f64 / 10.0,
                        "read_bytes": cycle * 40_000 + rng.below(1 << 30), "write_bytes": cycle * 90_000 + rng.below(1 << 30),
                        "read_count": cycle * 12 + rng.below(1 << 20), "write_count": cycle * 30 + rng.below(1 << 20),
                    }),
                )
            }
            3 => (
                "network",
                SampleKind::Metric,
                String::new(),
                json!({
                    "bytes_recv": cycle * 250_000 + rng.below(1 << 32), "bytes_sent": cycle * 60_000 + rng.below(1 << 30),
                    "packets_recv": cycle * 400 + rng.below(1 << 24), "packets_sent": cycle * 200 + rng.below(1 << 24),
                    "errin": 0, "errout": 0, "dropin": rng.below(3), "dropout": 0,
                    "connections": rng.below(300), "interfaces": 2 + rng.below(4),
                }),
            ),
            4 => {
                let top = |rng: &mut Rng| {
                    (0..5)
                        .map(|_| {
                            json!({
                                "pid": 1 + rng.below(60_000),
                                "name": PROCESSES[rng.below(PROCESSES.len() as u64) as usize],
                                "user": if rng.below(3) == 0 { "root" } else { "user" },
                                "cpu": percent(rng), "memory": percent(rng) / 4.0,
                            })
                        })
                        .collect::<Vec<_>>()
                };
                let top_cpu = top(rng);
                let top_memory = top(rng);
                (
                    "processes",
                    SampleKind::Metric,
                    String::new(),
                    json!({ "total": 200 + rng.below(400), "top_cpu": top_cpu, "top_memory": top_memory }),
                )
            }
            5 => (
                "system",
                SampleKind::Metric,
                String::new(),
                json!({ "boot_time": self.boot_time, "uptime": FIRST_CYCLE + cycle * CYCLE_SECONDS - self.boot_time }),
            ),
            _ => {
                let latency = 5.0 + (rng.below(5_000) as f64) / 100.0;
                (
                    "ping",
                    SampleKind::Log,
                    format!("1.1.1.1: {latency:.1} ms"),
                    json!({ "target": "1.1.1.1", "latency": latency, "packet_loss": 0.0, "sent": 4, "received": 4 }),
                )
            }
        };
        Record { ts: ts.to_string(), widget: widget.into(), kind, level: Level::Info, message, data }
    }
}

/// xorshift64*: the workload's only randomness, so a seed replays it exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: never the all-zero state.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What one configuration measured.
struct Figures {
    batches: u64,
    records_per_batch: usize,
    failed: BTreeMap<String, u64>,
    seconds: f64,
    /// Every 200's latency, microseconds, sorted.
    latencies_us: Vec<u64>,
    exhausted: bool,
    receivers: Vec<ReceiverFigures>,
    receivers_cpu: f64,
    postgres_cpu: Option<f64>,
    generator_cpu: f64,
    host: HostCpu,
    /// [`fsync_probe`] just before the load.
    fsync_us: f64,
}

/// One receiver process's figures.
struct ReceiverFigures {
    idle_rss_kib: u64,
    steady_rss_kib: u64,
    hwm_kib: u64,
    cpu_seconds: f64,
}

impl Figures {
    /// Print the human line and the JSON line; `stored_bytes` is what the store grew by.
    fn report(&self, store: &str, receivers: usize, extra: Value, stored_bytes: u64) {
        let rate = self.batches as f64 / self.seconds;
        let records = self.batches * self.records_per_batch as u64;
        let per_million = (stored_bytes * 1_000_000).checked_div(records).unwrap_or(0);
        let percentile = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let index = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
            self.latencies_us[index] as f64 / 1000.0
        };
        let (p50, p99) = (percentile(0.50), percentile(0.99));
        let max = self.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0;
        println!(
            "scale ({store}, {receivers} receiver{}): {rate:.0} batches/s ({:.0} records/s), p50 {p50:.1} ms, p99 {p99:.1} ms, \
             {} MB stored per million records; CPU s: receivers {:.1}, postgres {}, generator {:.1}; host {:.2} cores busy, \
             iowait {:.0}%, an 8 KiB fdatasync took {:.2} ms just before{}{}",
            if receivers == 1 { "" } else { "s" },
            rate * self.records_per_batch as f64,
            per_million / 1_000_000,
            self.receivers_cpu,
            self.postgres_cpu.map_or("n/a".to_string(), |c| format!("{c:.1}")),
            self.generator_cpu,
            self.host.busy_cores,
            self.host.iowait_share * 100.0,
            self.fsync_us / 1000.0,
            if self.exhausted { "; ran out of sealed batches before the time was up (--batches)" } else { "" },
            if self.failed.is_empty() { String::new() } else { format!("; FAILED answers: {:?}", self.failed) },
        );
        let receivers_json: Vec<Value> = self
            .receivers
            .iter()
            .map(|r| {
                json!({
                    "idle_vm_rss_kib": r.idle_rss_kib, "steady_vm_rss_kib": r.steady_rss_kib, "vm_hwm_kib": r.hwm_kib,
                    "cpu_seconds": round2(r.cpu_seconds),
                })
            })
            .collect();
        let mut line = json!({
            "bench": "scale", "store": store, "receivers": receivers, "batches": self.batches, "records": records,
            "seconds": round2(self.seconds), "batches_per_s": rate.round(),
            "records_per_s": (rate * self.records_per_batch as f64).round(),
            "latency_ms": { "p50": round2(p50), "p99": round2(p99), "max": round2(max) },
            "failed": self.failed, "ran_out_of_batches": self.exhausted,
            "receiver_processes": receivers_json,
            "cpu_seconds": {
                "receivers": round2(self.receivers_cpu), "postgres": self.postgres_cpu.map(round2),
                "generator": round2(self.generator_cpu),
            },
            "host": {
                "busy_cores": round2(self.host.busy_cores), "iowait_share": round2(self.host.iowait_share),
                "fsync_us_before": self.fsync_us.round(),
            },
            "stored_bytes": stored_bytes, "stored_bytes_per_million_records": per_million,
        });
        if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
            line.extend(extra);
        }
        println!("{line}");
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Start `receivers` receivers on `target`, drive the workload through them, stop them.
fn measure(
    options: &Options,
    bin: &Path,
    keys: &Keys,
    target: &Target,
    receivers: usize,
    workload: &Workload,
    ready: &mut dyn FnMut() -> Result<(), String>,
) -> Result<Figures, String> {
    // One at a time: each is ready (schema checked, listening) before the next starts.
    let mut running = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..receivers {
        let (child, url) = spawn_receiver(bin, keys, target, options.workers)?;
        running.push(child);
        urls.push(url);
    }
    let pids: Vec<u32> = running.iter().map(|r| r.0.id()).collect();
    ready()?;
    let fsync_us = fsync_probe(&options.scratch, Duration::from_millis(500))?;
    std::thread::sleep(Duration::from_millis(300));
    let idle: Vec<u64> = pids.iter().map(|&pid| status_kib(pid, "VmRSS")).collect::<Result<_, _>>()?;
    let postmaster = match target {
        Target::Postgres { server, database, .. } => server.postmaster_pid(database),
        Target::File(_) => None,
    };
    let cpu_before: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect::<Result<_, _>>()?;
    let postgres_before = postmaster.and_then(tree_cpu_seconds);
    let generator_before = cpu_seconds(std::process::id())?;
    let host_before = HostTicks::read()?;

    let stop_sampling = AtomicBool::new(false);
    let samples: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let outcome = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            while !stop_sampling.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let rss: Vec<u64> = pids.iter().map(|&pid| status_kib(pid, "VmRSS").unwrap_or(0)).collect();
                if let Ok(mut samples) = samples.lock() {
                    samples.push(rss);
                }
            }
        });
        let outcome = drive(options, &urls, workload);
        stop_sampling.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        outcome
    });
    let seconds = started.elapsed().as_secs_f64();
    let host = HostTicks::read()?.since(&host_before);
    let generator_cpu = cpu_seconds(std::process::id())? - generator_before;
    let postgres_cpu = match (postmaster.and_then(tree_cpu_seconds), postgres_before) {
        (Some(after), Some(before)) => Some(after - before),
        _ => None,
    };
    let samples = samples.into_inner().unwrap_or_default();
    let mut figures_each = Vec::new();
    for (i, &pid) in pids.iter().enumerate() {
        // Steady: the median of the second half of the samples.
        let mut steady: Vec<u64> = samples.iter().skip(samples.len() / 2).filter_map(|s| s.get(i).copied()).collect();
        steady.sort_unstable();
        figures_each.push(ReceiverFigures {
            idle_rss_kib: idle[i],
            steady_rss_kib: steady.get(steady.len() / 2).copied().unwrap_or(0),
            hwm_kib: status_kib(pid, "VmHWM")?,
            cpu_seconds: cpu_seconds(pid)? - cpu_before[i],
        });
    }
    drop(running);
    let mut outcome = outcome?;
    outcome.latencies_us.sort_unstable();
    Ok(Figures {
        batches: outcome.ok,
        records_per_batch: workload.records_per_batch,
        failed: outcome.failed,
        seconds: outcome.seconds.min(seconds),
        latencies_us: outcome.latencies_us,
        exhausted: outcome.exhausted,
        receivers_cpu: figures_each.iter().map(|r| r.cpu_seconds).sum(),
        receivers: figures_each,
        postgres_cpu,
        generator_cpu,
        host,
        fsync_us,
    })
}

/// What the client threads saw.
#[derive(Default)]
struct Outcome {
    ok: u64,
    failed: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
    exhausted: bool,
    seconds: f64,
}

/// The client threads: each sends its machines' batches in order, round-robin over `urls`,
/// until the time is up or its batches run out.
fn drive(options: &Options, urls: &[String], workload: &Workload) -> Result<Outcome, String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let expected = format!("\"stored\":{}", workload.records_per_batch);
    let per_thread_interval = options.rate.map(|rate| Duration::from_secs_f64(options.clients as f64 / rate));
    let results: Vec<Result<Outcome, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = workload
            .per_client
            .iter()
            .enumerate()
            .map(|(client, batches)| {
                let expected = expected.as_str();
                scope.spawn(move || -> Result<Outcome, String> {
                    let agent = fleet_http::Client::new(fleet_http::Config {
                        connect_timeout: Duration::from_secs(60),
                        timeout: Duration::from_secs(60),
                        tls: None,
                        user_agent: "fleet-bench".into(),
                        proxy: None,
                        max_idle: Duration::from_secs(30),
                    });
                    let mut outcome = Outcome { latencies_us: Vec::with_capacity(batches.len()), ..Outcome::default() };
                    // Paced clients start spread over one interval, not all at once.
                    let mut due = per_thread_interval
                        .map(|interval| started + interval.mul_f64(client as f64 / options.clients as f64));
                    for (i, body) in batches.iter().enumerate() {
                        if let Some(at) = due {
                            let now = Instant::now();
                            if at > now {
                                std::thread::sleep(at - now);
                            }
                        }
                        let sent = due.unwrap_or_else(Instant::now);
                        if Instant::now() >= deadline {
                            outcome.seconds = started.elapsed().as_secs_f64();
                            return Ok(outcome);
                        }
                        let url = &urls[(client + i) % urls.len()];
                        let target = format!("{url}/api/v2/batches");
                        let answer = agent.send(fleet_http::Request {
                            method: "POST",
                            url: &target,
                            headers: &[("X-API-Key", API_KEY), ("Content-Type", "application/json")],
                            body: fleet_http::Body::Bytes(&body[..]),
                            resendable: true,
                        });
                        match answer {
                            Ok(response) => {
                                let status = response.status();
                                let text = response
                                    .read_to_vec(1 << 20)
                                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                                    .unwrap_or_default();
                                if status == 200 && text.contains(expected) {
                                    outcome.ok += 1;
                                    outcome.latencies_us.push(sent.elapsed().as_micros() as u64);
                                } else {
                                    *outcome.failed.entry(format!("{status}")).or_default() += 1;
                                    if outcome.failed.len() == 1 && outcome.failed.values().sum::<u64>() == 1 {
                                        eprintln!("scale: first unexpected answer: {status} {text}");
                                    }
                                }
                            }
                            Err(e) => *outcome.failed.entry(format!("error: {e}")).or_default() += 1,
                        }
                        if let (Some(at), Some(interval)) = (due.as_mut(), per_thread_interval) {
                            *at += interval;
                        }
                    }
                    outcome.exhausted = true;
                    outcome.seconds = started.elapsed().as_secs_f64();
                    Ok(outcome)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| "client thread panicked".to_string())?).collect()
    });
    let mut total = Outcome::default();
    for result in results {
        let outcome = result?;
        total.ok += outcome.ok;
        for (why, n) in outcome.failed {
            *total.failed.entry(why).or_default() += n;
        }
        total.latencies_us.extend(outcome.latencies_us);
        total.exhausted |= outcome.exhausted;
        total.seconds = total.seconds.max(outcome.seconds);
    }
    Ok(total)
}

/// Host CPU time from the `cpu` line of `/proc/stat`, in clock ticks.
struct HostTicks {
    total: u64,
    idle: u64,
    iowait: u64,
}

/// Host CPU over a run.
struct HostCpu {
    /// Cores busy on average (user + system + irq + steal …).
    busy_cores: f64,
    /// Share of the CPU time spent idle waiting for I/O.
    iowait_share: f64,
}

impl HostTicks {
    fn read() -> Result<HostTicks, String> {
        let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("reading /proc/stat: {e}"))?;
        let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or("/proc/stat: no `cpu` line")?;
        let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        if fields.len() < 5 {
            return Err(format!("/proc/stat: short `cpu` line {line:?}"));
        }
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        Ok(HostTicks { total: fields.iter().take(8).sum(), idle: fields[3], iowait: fields[4] })
    }

    fn since(&self, before: &HostTicks) -> HostCpu {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let idle = self.idle.saturating_sub(before.idle) as f64;
        let iowait = self.iowait.saturating_sub(before.iowait) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        HostCpu { busy_cores: (total - idle - iowait) / total * cores, iowait_share: iowait / total }
    }
}

/// CPU seconds of `root` and its live children (PostgreSQL's postmaster and its backends),
/// plus the children it already reaped (cutime + cstime). `None` when `/proc` lacks it.
fn tree_cpu_seconds(root: u32) -> Option<f64> {
    let ticks = clock_ticks();
    let stat = |pid: &str| -> Option<Vec<u64>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = text.rsplit_once(')')?.1;
        // Field 3 (state) is index 0: ppid 4 -> 1, utime 14 -> 11, stime 15 -> 12,
        // cutime 16 -> 13, cstime 17 -> 14.
        Some(after.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect())
    };
    let own = stat(&root.to_string())?;
    let mut total = own.get(10..14)?.iter().sum::<u64>();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some(fields) = stat(&name) {
            if fields.first() == Some(&(root as u64)) {
                total += fields.get(10..12).map_or(0, |t| t.iter().sum());
            }
        }
    }
    Some(total as f64 / ticks)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The disk's commit cost right now: 8 KiB written and `fdatasync`ed over and over for
/// `window` in `dir` (what a WAL flush or a file-store append costs). Microseconds per sync.
fn fsync_probe(dir: &Path, window: Duration) -> Result<f64, String> {
    use std::io::{Seek, Write};
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let block = [0x5au8; 8192];
    let started = Instant::now();
    let mut syncs = 0u32;
    while started.elapsed() < window {
        file.rewind()
            .and_then(|()| file.write_all(&block))
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("syncing {}: {e}", path.display()))?;
        syncs += 1;
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&path);
    Ok(elapsed.as_secs_f64() * 1e6 / f64::from(syncs.max(1)))
}

/// Bytes under `dir`, recursively: (apparent length, allocated blocks).
fn tree_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    entries.flatten().fold((0, 0), |(apparent, allocated), entry| {
        let Ok(meta) = entry.metadata() else { return (apparent, allocated) };
        if meta.is_dir() {
            let (a, b) = tree_bytes(&entry.path());
            (apparent + a, allocated + b)
        } else {
            (apparent + meta.len(), allocated + meta.blocks() * 512)
        }
    })
}

/// A PostgreSQL server the bench may create databases on, driven through `psql`.
struct Postgres {
    /// `postgres://user@host:port/` (no database, no password).
    base: String,
    /// The database `psql` connects to for administration (the URL's, else `postgres`).
    admin_database: String,
    password: Option<String>,
    password_file: PathBuf,
}

/// Sizes of one database.
struct Sizes {
    database: u64,
    /// Table name -> (pg_total_relation_size, rows).
    tables: BTreeMap<String, (u64, u64)>,
}

/// Cluster-wide WAL counters (`pg_stat_wal`).
struct Wal {
    bytes: u64,
    syncs: u64,
    writes: u64,
}

impl Postgres {
    fn new(url: &str, scratch: &Path) -> Result<Postgres, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| format!("--postgres {url}: not a postgres:// URL"))?;
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.split_once('@').is_some_and(|(user, _)| user.contains(':')) {
            return Err("--postgres: put the password in FLEET_TEST_POSTGRES_PASSWORD, not in the URL".into());
        }
        let database = database.split('?').next().unwrap_or("");
        let password = std::env::var("FLEET_TEST_POSTGRES_PASSWORD").ok().filter(|p| !p.is_empty());
        let password_file = scratch.join("secrets").join("postgres-password");
        write_secret(&password_file, password.as_deref().unwrap_or(""))?;
        let server = Postgres {
            base: format!("postgres://{authority}/"),
            admin_database: if database.is_empty() { "postgres".into() } else { database.into() },
            password,
            password_file,
        };
        let settings = server.query(
            &server.admin_database,
            "SELECT name, setting, coalesce(unit, '') FROM pg_settings WHERE name IN ('server_version', 'shared_buffers', \
             'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay', 'max_connections', 'checkpoint_timeout', \
             'max_wal_size', 'work_mem') ORDER BY 1",
        )?;
        let settings: BTreeMap<String, String> = settings
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('|');
                let (name, value, unit) = (fields.next()?, fields.next()?, fields.next().unwrap_or(""));
                Some((name.to_string(), format!("{value}{}", if unit.is_empty() { "" } else { " " }) + unit))
            })
            .collect();
        println!("scale: PostgreSQL {} at {}", settings.get("server_version").map_or("?", String::as_str), server.base);
        println!("{}", json!({ "bench": "scale_postgres", "url": server.base, "settings": settings }));
        Ok(server)
    }

    /// The `--store` location of `database`.
    fn location(&self, database: &str) -> String {
        format!("{}{database}", self.base)
    }

    /// Run `sql` on `database`; unaligned, tuples only, `|`-separated.
    fn query(&self, database: &str, sql: &str) -> Result<String, String> {
        let mut command = Command::new("psql");
        command.args(["--no-psqlrc", "--quiet", "--tuples-only", "--no-align", "--set", "ON_ERROR_STOP=1"]);
        command.arg("--dbname").arg(self.location(database)).arg("--command").arg(sql);
        match &self.password {
            Some(password) => command.env("PGPASSWORD", password),
            None => command.env_remove("PGPASSWORD"),
        };
        let output = command.output().map_err(|e| format!("starting psql (install postgresql-client): {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("psql `{sql}` on {database}: {}", String::from_utf8_lossy(&output.stderr).trim()))
        }
    }

    fn create_database(&self, database: &str) -> Result<(), String> {
        self.query(&self.admin_database, &format!("CREATE DATABASE {database}")).map(drop)
    }

    fn drop_database(&self, database: &str) -> Result<(), String> {
        self.query(&self.admin_database, &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).map(drop)
    }

    /// `pg_database_size` and every table's size and row count (ANALYZEd first, counted exactly).
    fn sizes(&self, database: &str) -> Result<Sizes, String> {
        self.query(database, "VACUUM ANALYZE")?;
        let size = self.query(database, &format!("SELECT pg_database_size('{database}')"))?;
        let tables = self.query(
            database,
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )?;
        let mut sizes = Sizes {
            database: size.trim().parse().map_err(|_| format!("pg_database_size: {size:?}"))?,
            tables: BTreeMap::new(),
        };
        for line in tables.lines().filter(|l| !l.is_empty()) {
            let Some((name, bytes)) = line.split_once('|') else { continue };
            let rows = self.query(database, &format!("SELECT count(*) FROM \"{name}\""))?;
            sizes
                .tables
                .insert(name.to_string(), (bytes.trim().parse().unwrap_or(0), rows.trim().parse().unwrap_or(0)));
        }
        Ok(sizes)
    }

    /// `pg_stat_wal` (PostgreSQL 14+); `None` where it is not readable.
    fn wal(&self) -> Option<Wal> {
        let text = self.query(&self.admin_database, "SELECT wal_bytes, wal_sync, wal_write FROM pg_stat_wal").ok()?;
        let fields: Vec<u64> =
            text.trim().split('|').filter_map(|v| v.trim().parse::<f64>().ok().map(|v| v as u64)).collect();
        match fields[..] {
            [bytes, syncs, writes] => Some(Wal { bytes, syncs, writes }),
            _ => None,
        }
    }

    /// The postmaster's pid when the server runs on this host: the parent of a backend
    /// serving `database` (found by its process title, `postgres: USER DATABASE HOST …`,
    /// while a `pg_sleep` keeps it alive). `None` for a server elsewhere.
    fn postmaster_pid(&self, database: &str) -> Option<u32> {
        let mut command = Command::new("psql");
        command.args(["--no-psqlrc", "--quiet", "--command", "SELECT pg_sleep(3)", "--dbname"]);
        command.arg(self.location(database)).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        let sleeper = Running(command.spawn().ok()?);
        let title = format!(" {database} ");
        let found = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
                let pid = entry.file_name().to_string_lossy().into_owned();
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline);
                if !cmdline.starts_with("postgres: ") || !cmdline.contains(&title) {
                    return None;
                }
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok())
            })
        });
        drop(sleeper);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seed: u64) -> Result<Options, String> {
        let args: Vec<String> =
            ["--machines", "5", "--clients", "2", "--batches", "12", "--seed", &seed.to_string(), "--no-postgres"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        parse(&args)
    }

    /// The plaintexts of a workload, opened back with `key`, in client order.
    fn opened(workload: &Workload, key: &Key32) -> Result<Vec<BatchBody>, String> {
        let keys = [key.clone_secret()];
        let mut bodies = Vec::new();
        for sealed in workload.per_client.iter().flat_map(|c| c.iter()) {
            let opened = envelope::open_v2(&keys, sealed).map_err(|e| e.to_string())?;
            let body: BatchBody = serde_json::from_slice(&opened.plaintext).map_err(|e| e.to_string())?;
            if (opened.machine_id.as_str(), opened.seq) != (body.machine_id.as_str(), body.seq) {
                return Err(format!(
                    "envelope {}/{} holds batch {}/{}",
                    opened.machine_id, opened.seq, body.machine_id, body.seq
                ));
            }
            bodies.push(body);
        }
        Ok(bodies)
    }

    #[test]
    fn the_workload_is_real_v2_batches_each_machine_in_order_on_one_client() -> Result<(), String> {
        let key = Key32::from_bytes([7; 32]);
        let workload = Workload::seal(&options(1)?, &key)?;
        assert_eq!(workload.batches, 12);
        let bodies = opened(&workload, &key)?;
        assert_eq!(bodies.len(), 12);
        let mut next_seq = BTreeMap::new();
        for (client, batches) in workload.per_client.iter().enumerate() {
            let keys = [key.clone_secret()];
            for sealed in batches.iter() {
                let opened = envelope::open_v2(&keys, sealed).map_err(|e| e.to_string())?;
                let index: usize = opened.machine_id.trim_start_matches("scale-").parse().map_err(|_| "machine id")?;
                assert_eq!(index % 2, client, "machine {index} must belong to client {client}");
                let expected = next_seq.entry(opened.machine_id.clone()).or_insert(1u64);
                assert_eq!(opened.seq, *expected, "{}: seqs go up by one, in order", opened.machine_id);
                *expected += 1;
            }
        }
        for body in &bodies {
            assert_eq!(body.records.len(), 7);
            let widgets: Vec<&str> = body.records.iter().map(|r| r.widget.as_str()).collect();
            assert_eq!(widgets, ["cpu", "memory", "disk", "network", "processes", "system", "ping"]);
            assert!(body.records.iter().all(|r| r.timestamp().is_some()), "every ts parses");
        }
        Ok(())
    }

    #[test]
    fn one_seed_replays_the_same_workload_and_another_does_not() -> Result<(), String> {
        let key = Key32::from_bytes([9; 32]);
        let first = opened(&Workload::seal(&options(42)?, &key)?, &key)?;
        let again = opened(&Workload::seal(&options(42)?, &key)?, &key)?;
        let other = opened(&Workload::seal(&options(43)?, &key)?, &key)?;
        assert_eq!(first, again);
        assert_ne!(first, other);
        Ok(())
    }

    #[test]
    fn options_are_checked() {
        let parse_all = |args: &[&str]| parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(parse_all(&["--receivers", "1,0"]).is_err());
        assert!(parse_all(&["--seconds", "0"]).is_err());
        assert!(parse_all(&["--rate", "-5"]).is_err());
        assert!(parse_all(&["--machines", "many"]).is_err());
        assert!(parse_all(&["--frobnicate"]).is_err());
        let quick = parse_all(&["--quick", "--no-postgres"]);
        assert!(quick.as_ref().is_ok_and(|o| o.quick && o.machines == 1_000 && o.postgres.is_none()));
        let paced = parse_all(&["--rate", "100", "--seconds", "10"]);
        assert!(paced.as_ref().is_ok_and(|o| o.max_batches == 1_100), "a tenth more than the run needs");
    }
}
