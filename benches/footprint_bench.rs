//! `fleet-bench footprint [--quick] [--seconds N] [--threads N] [--agent FILE] [--no-collectd]
//! [--no-stages]`: what the agent costs a laptop, side by side with collectd.
//!
//! 1. The size of the binary (`fleet-agent` beside `fleet-bench`, or `--agent FILE`).
//! 2. Host load: idle threads are added until the host has [`LAPTOP_THREADS`] (`--threads N`:
//!    exactly N), so every reader of `/proc` pays what it pays on a laptop.
//! 3. The per-stage split of a cycle in this process ([`crate::stages_bench`]): collect per
//!    widget, spool append, encode, seal, push.
//! 4. Subjects launched together and measured over the same minutes, each sending to the
//!    bundled receiver (or, for collectd, to 127.0.0.1) on loopback:
//!    - `default`: every default widget but speedtest (ping: one echo to 127.0.0.1), interval
//!      1 s, v2;
//!    - `system`: cpu, memory and system only, interval 1 s, v2;
//!    - `laptop`: the default config (interval 10 s, Atlas protocol, every default widget but
//!      speedtest, ping to 127.0.0.1 with its default count): CPU and wake-ups per minute;
//!    - `collectd` (when installed): the comparable plugin set at interval 1 s
//!      ([`crate::collectd_subject`]).
//!
//!    At 2 and 10 minutes (`--quick`: 5 and 15 s; `--seconds N`: N/5 and N): VmRSS and VmHWM
//!    (`/proc/PID/status`), CPU (utime + stime of `/proc/PID/stat`, all threads, 10 ms ticks)
//!    per cycle, and wake-ups (voluntary context switches of every thread) per minute. A cycle
//!    of a v2 agent is a set of records sharing one timestamp, counted at the receiver; one of
//!    the Atlas agent (metrics folded into reports) and of collectd is one interval.
//! 5. Then `strace -c -f` is attached to every subject for a window (60 s; `--quick`: 5 s):
//!    syscalls per cycle and per minute, and the five most frequent (strace's own overhead
//!    is why it comes after the CPU figures). Skipped, with a line saying so, without strace.
//! 6. Ratios agent / collectd of each figure.
//!
//! Prints one JSON object per line. Needs `cargo build --release --bins` (or
//! `packaging/linux/build-binary.sh --bins`, which measures the static binary that ships).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_receiver::{open_reader, StoreKeys, StoreLocation};
use fleet_widgets::Timestamp;
use fleet_wire::keys::Key32;
use serde_json::{json, Value};

use crate::collectd_subject;
use crate::host_load::{IdleLoad, LAPTOP_THREADS};
use crate::proc_stats::{
    cpu_seconds, host_threads, live_threads_cpu_ns, status_kib, wakeups, StraceCount, SyscallCounts,
};
use crate::receiver_bench::{spawn_receiver, Running, Scratch, API_KEY};

/// Command-line options.
struct Options {
    checkpoints: Vec<u64>,
    strace_window: Duration,
    stage_iterations: usize,
    threads: Option<u64>,
    agent: Option<PathBuf>,
    collectd: bool,
    stages: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        checkpoints: vec![120, 600],
        strace_window: Duration::from_secs(60),
        stage_iterations: 50,
        threads: None,
        agent: None,
        collectd: true,
        stages: true,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => {
                options.checkpoints = vec![5, 15];
                options.strace_window = Duration::from_secs(5);
                options.stage_iterations = 5;
            }
            "--seconds" => {
                let seconds: u64 = value(arg)?.parse().map_err(|_| "--seconds needs a whole number")?;
                if seconds < 10 {
                    return Err("--seconds must be at least 10".to_string());
                }
                options.checkpoints = vec![seconds / 5, seconds];
            }
            "--threads" => options.threads = Some(value(arg)?.parse().map_err(|_| "--threads needs a whole number")?),
            "--agent" => options.agent = Some(PathBuf::from(value(arg)?)),
            "--no-collectd" => options.collectd = false,
            "--no-stages" => options.stages = false,
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(options)
}

/// What is measured side by side.
enum Kind {
    /// `fleet-agent run` with this config.
    Agent { variant: &'static Variant },
    /// collectd at interval 1 s.
    Collectd,
}

struct Subject {
    name: &'static str,
    interval_s: u64,
    kind: Kind,
    process: Running,
    started: Instant,
    points: Vec<Checkpoint>,
    syscalls: Option<Syscalls>,
}

/// One look at a running subject.
struct Checkpoint {
    after_s: u64,
    at: String,
    elapsed_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
    cpu_s: f64,
    /// Nanoseconds of the live threads (precise; see `live_threads_cpu_ns`).
    cpu_live_ns: u64,
    wakeups: u64,
}

/// The strace window of a subject.
struct Syscalls {
    counts: SyscallCounts,
    from: String,
    to: String,
    seconds: f64,
}

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    let agent_bin = match &options.agent {
        Some(path) => path.clone(),
        None => {
            std::env::current_exe().map_err(|e| format!("locating fleet-bench: {e}"))?.with_file_name("fleet-agent")
        }
    };
    let size = std::fs::metadata(&agent_bin)
        .map_err(|e| format!("{}: {e} (run `cargo build --release --bins` first)", agent_bin.display()))?
        .len();
    println!(
        "{}",
        json!({"bench": "footprint_binary", "path": agent_bin.display().to_string(), "bytes": size,
               "mib": size as f64 / 1048576.0, "stripped": is_stripped(&agent_bin), "static": is_static(&agent_bin)})
    );

    let threads_before = host_threads();
    let add = options.threads.unwrap_or(LAPTOP_THREADS.saturating_sub(threads_before));
    let load = IdleLoad::spawn(add)?;
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "{}",
        json!({"bench": "footprint_host", "threads_before": threads_before, "threads_added": add,
               "processes_added": load.processes(), "threads_now": host_threads()})
    );

    let scratch = Scratch(std::env::temp_dir().join(format!("fleet-bench-footprint-{}", std::process::id())));
    let key = Key32::generate().map_err(|e| e.to_string())?;
    let store = scratch.0.join("store");
    let (receiver, url) = spawn_receiver(&agent_bin, &store, &key)?;
    let receiver = Running(receiver);

    if options.stages {
        let dir = scratch.0.join("stages");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        crate::stages_bench::run(options.stage_iterations, &dir, &url, &key)?;
    }

    let mut subjects = start_subjects(&options, &agent_bin, &scratch.0, &url, &key)?;
    let started = Instant::now();
    for &after_s in &options.checkpoints {
        std::thread::sleep(Duration::from_secs(after_s).saturating_sub(started.elapsed()));
        for subject in &mut subjects {
            let pid = subject.process.0.id();
            subject.points.push(Checkpoint {
                after_s,
                at: Timestamp::now().to_rfc3339(),
                elapsed_s: subject.started.elapsed().as_secs_f64(),
                rss_kib: status_kib(pid, "VmRSS")?,
                hwm_kib: status_kib(pid, "VmHWM")?,
                cpu_s: cpu_seconds(pid)?,
                cpu_live_ns: live_threads_cpu_ns(pid)?,
                wakeups: wakeups(pid)?,
            });
        }
        eprintln!("footprint: {after_s} s done");
    }
    count_syscalls(&mut subjects, &scratch.0, options.strace_window)?;

    let mut results = Vec::new();
    for subject in subjects {
        let Subject { name, interval_s, kind, process, points, syscalls, .. } = subject;
        drop(process); // SIGTERM: an agent's final push delivers its last cycles
        let cycles_at = cycle_counter(&kind, &store)?;
        results.push(report(name, interval_s, &points, syscalls.as_ref(), cycles_at.as_deref()));
    }
    print_ratios(&results);
    drop(receiver);
    drop(load);
    Ok(())
}

fn start_subjects(
    options: &Options,
    agent_bin: &Path,
    scratch: &Path,
    url: &str,
    key: &Key32,
) -> Result<Vec<Subject>, String> {
    let mut subjects = Vec::new();
    for variant in &VARIANTS {
        let dir = scratch.join(variant.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let config = write_config(&dir, url, key, variant)?;
        let child = Command::new(agent_bin)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("FLEET_ENCRYPTION_KEY")
            .env_remove("FLEET_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", agent_bin.display()))?;
        subjects.push(Subject {
            name: variant.name,
            interval_s: variant.interval_s,
            kind: Kind::Agent { variant },
            process: Running(child),
            started: Instant::now(),
            points: Vec::new(),
            syscalls: None,
        });
    }
    if !options.collectd {
        return Ok(subjects);
    }
    match collectd_subject::find().and_then(|binary| collectd_subject::spawn(&binary, &scratch.join("collectd"), 1)) {
        Ok(process) => {
            subjects.push(Subject {
                name: "collectd",
                interval_s: 1,
                kind: Kind::Collectd,
                process,
                started: Instant::now(),
                points: Vec::new(),
                syscalls: None,
            });
        }
        Err(why) => println!("{}", json!({"bench": "footprint_collectd", "skipped": why})),
    }
    Ok(subjects)
}

/// Attach strace to every subject at once for `window`.
fn count_syscalls(subjects: &mut [Subject], scratch: &Path, window: Duration) -> Result<(), String> {
    let mut attached = Vec::new();
    for (i, subject) in subjects.iter().enumerate() {
        let out = scratch.join(format!("strace-{}.txt", subject.name));
        match StraceCount::attach(subject.process.0.id(), &out)? {
            Some(strace) => attached.push((i, strace)),
            None => {
                println!(
                    "{}",
                    json!({"bench": "footprint_syscalls", "skipped": "strace is not installed (apt-get install strace)"})
                );
                return Ok(());
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500)); // strace attaches to every thread
    let (from, start) = (Timestamp::now().to_rfc3339(), Instant::now());
    std::thread::sleep(window);
    let to = Timestamp::now().to_rfc3339();
    let seconds = start.elapsed().as_secs_f64();
    for (i, strace) in attached {
        match strace.finish() {
            Ok(counts) => subjects[i].syscalls = Some(Syscalls { counts, from: from.clone(), to: to.clone(), seconds }),
            // e.g. ptrace not allowed (kernel.yama.ptrace_scope, a container): say so, go on.
            Err(why) => println!(
                "{}",
                json!({"bench": "footprint_syscalls", "widgets": subjects[i].name,
                       "skipped": format!("strace counted nothing: {why}")})
            ),
        }
    }
    Ok(())
}

/// Cycles completed between two moments (RFC 3339 UTC, comparable as text).
type CycleCounter = dyn Fn(Option<&str>, &str) -> u64;

/// For a v2 agent: distinct record timestamps at the receiver. `None` (cycles counted by
/// interval, in [`report`]) for collectd and for the Atlas agent, whose metrics reach the
/// server folded into reports every `send_interval`, not as records per cycle.
fn cycle_counter(kind: &Kind, store: &Path) -> Result<Option<Box<CycleCounter>>, String> {
    let times: Vec<String> = match kind {
        Kind::Collectd => return Ok(None),
        Kind::Agent { variant } if variant.protocol == "atlas" => return Ok(None),
        Kind::Agent { variant } => {
            // The bench's receiver keeps a plaintext store (receiver_bench::spawn_receiver).
            let location = StoreLocation::Dir(store.to_path_buf());
            let reader = open_reader(&location, StoreKeys::plaintext()).map_err(|e| e.to_string())?;
            let lines = reader.read_records(variant.machine).map_err(|e| e.to_string())?;
            let stamps: BTreeSet<String> = lines
                .iter()
                .filter(|l| l.get("kind").and_then(Value::as_str) == Some("record"))
                .filter_map(|l| l.get("record")?.get("ts")?.as_str().map(str::to_string))
                .collect();
            stamps.into_iter().collect()
        }
    };
    Ok(Some(Box::new(move |from, to| {
        times.iter().filter(|t| from.is_none_or(|f| t.as_str() > f) && t.as_str() <= to).count() as u64
    })))
}

/// Print a subject's lines; returns its steady figures for the ratios.
fn report(
    name: &'static str,
    interval_s: u64,
    points: &[Checkpoint],
    syscalls: Option<&Syscalls>,
    cycles_between: Option<&CycleCounter>,
) -> Figures {
    // Without a counter: one cycle per interval since the start.
    let cycles_until = |p: &Checkpoint| match cycles_between {
        Some(count) => count(None, &p.at),
        None => (p.elapsed_s / interval_s as f64).floor() as u64,
    };
    let mut previous: Option<&Checkpoint> = None;
    let mut figures = Figures { name, ..Figures::default() };
    for point in points {
        let cycles = cycles_until(point);
        let (cpu_since, cycles_since, minutes_since, wakeups_since) = match previous {
            Some(p) => (
                point.cpu_s - p.cpu_s,
                cycles - cycles_until(p),
                (point.elapsed_s - p.elapsed_s) / 60.0,
                point.wakeups - p.wakeups,
            ),
            None => (point.cpu_s, cycles, point.elapsed_s / 60.0, point.wakeups),
        };
        // The live threads' nanoseconds: precise where ticks are coarse (a 0.5 ms cycle is 0.05
        // ticks), for a process whose threads live on (the agent's one thread; collectd's).
        let live_ms = (point.cpu_live_ns - previous.map_or(0, |p| p.cpu_live_ns)) as f64 / 1e6;
        let line = json!({
            "bench": "footprint_run", "widgets": name, "interval_s": interval_s, "after_s": point.after_s,
            "vm_rss_kib": point.rss_kib, "vm_hwm_kib": point.hwm_kib,
            "cpu_s": point.cpu_s, "cycles": cycles,
            "cpu_ms_per_cycle": per(point.cpu_s * 1000.0, cycles as f64),
            "cpu_ms_per_cycle_since_previous": previous.and_then(|_| per(cpu_since * 1000.0, cycles_since as f64)),
            "cpu_ms_per_min_since_previous": per(cpu_since * 1000.0, minutes_since),
            "live_threads_cpu_ms_per_cycle_since_previous": previous.and_then(|_| per(live_ms, cycles_since as f64)),
            "live_threads_cpu_ms_per_min_since_previous": per(live_ms, minutes_since),
            "wakeups": point.wakeups,
            "wakeups_per_min_since_previous": per(wakeups_since as f64, minutes_since),
            "cycles_per_min_since_previous": per(cycles_since as f64, minutes_since),
        });
        println!("{line}");
        figures.rss_kib = point.rss_kib as f64;
        figures.cpu_ms_per_cycle = per(cpu_since * 1000.0, cycles_since as f64);
        figures.wakeups_per_min = per(wakeups_since as f64, minutes_since);
        previous = Some(point);
    }
    if let Some(s) = syscalls {
        let cycles = match cycles_between {
            Some(count) => count(Some(&s.from), &s.to),
            None => (s.seconds / interval_s as f64).round() as u64,
        };
        let top: Vec<Value> = s.counts.by_name.iter().take(5).map(|(n, c)| json!({"syscall": n, "calls": c})).collect();
        figures.syscalls_per_cycle = per(s.counts.total as f64, cycles as f64);
        println!(
            "{}",
            json!({"bench": "footprint_syscalls", "widgets": name, "window_s": s.seconds, "calls": s.counts.total,
                   "cycles": cycles, "per_cycle": figures.syscalls_per_cycle,
                   "per_min": per(s.counts.total as f64, s.seconds / 60.0), "top": top})
        );
    }
    figures
}

/// `a / b`, `None` when `b` is zero.
fn per(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| (a / b * 1000.0).round() / 1000.0)
}

/// The steady figures of one subject (the last checkpoint, since the previous one).
#[derive(Default)]
struct Figures {
    name: &'static str,
    rss_kib: f64,
    cpu_ms_per_cycle: Option<f64>,
    wakeups_per_min: Option<f64>,
    syscalls_per_cycle: Option<f64>,
}

/// `footprint_vs_collectd`: each 1 s agent subject's figures divided by collectd's.
fn print_ratios(results: &[Figures]) {
    let Some(collectd) = results.iter().find(|f| f.name == "collectd") else { return };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
        _ => None,
    };
    for agent in results.iter().filter(|f| f.name == "default" || f.name == "system") {
        println!(
            "{}",
            json!({"bench": "footprint_vs_collectd", "widgets": agent.name, "interval_s": 1,
                   "cpu_per_cycle": ratio(agent.cpu_ms_per_cycle, collectd.cpu_ms_per_cycle),
                   "vm_rss": ratio(Some(agent.rss_kib), Some(collectd.rss_kib)),
                   "wakeups_per_min": ratio(agent.wakeups_per_min, collectd.wakeups_per_min),
                   "syscalls_per_cycle": ratio(agent.syscalls_per_cycle, collectd.syscalls_per_cycle)})
        );
    }
}

/// A widget set measured.
pub struct Variant {
    name: &'static str,
    machine: &'static str,
    interval_s: u64,
    protocol: &'static str,
    widgets: &'static str,
}

/// See the module documentation.
const VARIANTS: [Variant; 3] = [
    Variant {
        name: "default",
        machine: "bench-footprint-default",
        interval_s: 1,
        protocol: "v2",
        widgets: r#"{"ping":{"targets":["127.0.0.1"],"count":1},"speedtest":{"enabled":false}}"#,
    },
    Variant {
        name: "system",
        machine: "bench-footprint-system",
        interval_s: 1,
        protocol: "v2",
        widgets: r#"{"disk":{"enabled":false},"network":{"enabled":false},"processes":{"enabled":false},
            "battery":{"enabled":false},"wifi":{"enabled":false},"ping":{"enabled":false},
            "speedtest":{"enabled":false},"machine_info":{"enabled":false},"security":{"enabled":false},
            "users":{"enabled":false},"temperature":{"enabled":false}}"#,
    },
    Variant {
        name: "laptop",
        machine: "bench-footprint-laptop",
        interval_s: 10,
        protocol: "atlas",
        widgets: r#"{"ping":{"targets":["127.0.0.1"]},"speedtest":{"enabled":false}}"#,
    },
];

fn write_config(dir: &Path, url: &str, key: &Key32, variant: &Variant) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let widgets: Value = serde_json::from_str(variant.widgets).map_err(|e| e.to_string())?;
    let config = json!({
        "server_url": url, "api_key": API_KEY, "encryption_key": key.to_base64().as_str(),
        "machine_id": variant.machine, "protocol": variant.protocol, "interval": variant.interval_s,
        "log_level": "warn", "spool": {"dir": dir.join("spool")}, "widgets": widgets,
    });
    let path = dir.join("agent.json");
    std::fs::write(&path, config.to_string()).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(path)
}

/// Whether the ELF has no `.symtab` (what `strip` removes), by asking `file(1)` when present.
fn is_stripped(path: &Path) -> Option<bool> {
    let text = file_says(path)?;
    if text.contains("not stripped") {
        Some(false)
    } else {
        Some(text.contains("stripped")).filter(|s| *s)
    }
}

/// Whether the ELF is statically linked (`file(1)`: "statically linked" or "static-pie").
fn is_static(path: &Path) -> Option<bool> {
    let text = file_says(path)?;
    Some(text.contains("statically linked") || text.contains("static-pie"))
}

fn file_says(path: &Path) -> Option<String> {
    let output = Command::new("file").arg(path).output().ok()?;
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}
