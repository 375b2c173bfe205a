//! The system under test for one seed: a real `fleet-agent run`, a real server (the bundled
//! `fleet-agent receive` on the file store or on PostgreSQL, several of them sharing one
//! database, or the Python Atlas stand-in), the faulty proxy between them, and a spool on a
//! small tmpfs that can be filled up. It plays the schedule's timeline, heals, drains and
//! gathers the [`Evidence`] the oracle checks.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_wire::keys::Key32;

use super::oracle::{parse_counters, Evidence, Life};
use super::proxy::Proxy;
use super::schedule::{Action, Protocol, Schedule, Servers};
use super::store::{Backend, Store};
use super::wire;
use crate::support::{agent, fill_up, s, start_agent, write_config, Proc, TinyFs, CHEAP_WIDGETS};

/// The machine id of every run.
pub const MACHINE: &str = "fault-machine";
const API_KEY: &str = "fault-api-key";
/// The two transport keys a run rotates between (the receiver holds both).
const KEYS: [&str; 2] =
    ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="];
/// Size of the spool's tmpfs.
const DISK_KIB: u64 = 4096;
/// Longest wait for the agent to stop on SIGTERM (a request in flight, then a 3 s last push).
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for a receiver to be busy, to kill it then.
const BUSY_WAIT: Duration = Duration::from_secs(1);
/// Longest wait for the healed backlog to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Where the spool lives: a tmpfs that can be filled, or a plain directory.
pub enum Disk {
    /// A mounted tmpfs (root only), unmounted on drop.
    Tmpfs {
        /// The mount, held for its drop.
        _mount: TinyFs,
    },
    /// No mount possible here (why): the disk-full fault is skipped.
    Plain(String),
}

impl Disk {
    /// Whether a tmpfs can be mounted here (tried once in a scratch directory).
    pub fn can_mount() -> bool {
        let scratch = tempfile::tempdir().expect("tempdir");
        matches!(Disk::prepare(&scratch.path().join("disk")), Disk::Tmpfs { .. })
    }

    /// Mount a tmpfs at `at`, or say why not.
    pub fn prepare(at: &Path) -> Disk {
        match TinyFs::mount(at, DISK_KIB) {
            Ok(fs) => Disk::Tmpfs { _mount: fs },
            Err(why) => {
                let _ = std::fs::create_dir_all(at);
                Disk::Plain(why)
            }
        }
    }
}

/// The server behind the proxy.
enum Server {
    /// `fleet-agent receive` on this store.
    Receiver { store: Store },
    /// The Python Atlas stand-in, capturing every request to this file.
    Atlas { capture: PathBuf },
}

/// A running server.
struct Running {
    /// Its receiver number with [`Servers::Shared`] (0 otherwise).
    slot: usize,
    proc: Proc,
    url: String,
}

/// One seed's processes and files.
pub struct World {
    schedule: Arc<Schedule>,
    dir: PathBuf,
    spool: PathBuf,
    config: PathBuf,
    server: Server,
    proxy: Proxy,
    agent: Option<Proc>,
    /// Running servers, oldest first.
    servers: Vec<Running>,
    server_starts: usize,
    key: usize,
    lives: Vec<(PathBuf, bool)>,
    filler: Option<PathBuf>,
    /// Process and disk events executed, by kind.
    pub actions: BTreeMap<&'static str, u64>,
    /// Problems seen while playing (an agent that would not stop, exited by itself, …).
    pub violations: Vec<String>,
    /// Things worth knowing that break no invariant.
    pub notes: Vec<String>,
}

fn keys_of(schedule: &Schedule) -> Vec<Key32> {
    if schedule.sealed {
        KEYS.iter().map(|k| Key32::from_base64(k).expect("test key")).collect()
    } else {
        Vec::new()
    }
}

impl World {
    /// Start the server(s) (v2: on `backend`), the proxy and the agent for `schedule` in `dir`
    /// (spool under `disk`).
    pub fn start(schedule: Arc<Schedule>, backend: Backend, dir: &Path, disk_root: &Path) -> World {
        let keys = keys_of(&schedule);
        let identify: Box<super::proxy::Identify> = match schedule.protocol {
            Protocol::V2 => Box::new(move |path, body| {
                if path != "/api/v2/batches" {
                    return Vec::new();
                }
                wire::open_batch(body, &keys).map(|b| b.ids).unwrap_or_default()
            }),
            Protocol::Atlas => Box::new(move |path, body| {
                if path != "/api/fleet/widget-logs" {
                    return Vec::new();
                }
                wire::open_widget_logs(body, &keys).unwrap_or_default()
            }),
        };
        let proxy = Proxy::start(Arc::clone(&schedule), identify);
        let server = match schedule.protocol {
            Protocol::V2 => Server::Receiver {
                store: Store::create(backend, dir).unwrap_or_else(|e| panic!("no store for the run: {e}")),
            },
            Protocol::Atlas => Server::Atlas { capture: dir.join("capture.jsonl") },
        };
        let mut world = World {
            spool: disk_root.join("spool"),
            config: dir.join("agent.json"),
            dir: dir.to_path_buf(),
            schedule,
            server,
            proxy,
            agent: None,
            servers: Vec::new(),
            server_starts: 0,
            key: 0,
            lives: Vec::new(),
            filler: None,
            actions: BTreeMap::new(),
            violations: Vec::new(),
            notes: Vec::new(),
        };
        world.filler = Some(disk_root.join("filler"));
        match world.schedule.servers {
            Servers::One => world.start_server(0).expect("the server starts"),
            Servers::Shared(receivers) => {
                let slots: Vec<usize> = (0..receivers).collect();
                for (slot, started) in world.start_servers(&slots).into_iter().enumerate() {
                    started.unwrap_or_else(|e| panic!("receiver {slot} did not start beside the others: {e}"));
                }
            }
        }
        world.write_config(world.schedule.interval);
        world.start_agent();
        world
    }

    /// Start a server as receiver number `slot` (with one server: a second one when one runs
    /// already) and point the proxy at all of them.
    fn start_server(&mut self, slot: usize) -> Result<(), String> {
        self.start_servers(&[slot]).remove(0)
    }

    /// Start receivers `slots` all at the same moment (as a deployment starts its replicas: on
    /// a fresh database they race to create the schema) and point the proxy at every server
    /// that came up; what each start did.
    fn start_servers(&mut self, slots: &[usize]) -> Vec<Result<(), String>> {
        let launches: Vec<(Command, PathBuf)> = slots
            .iter()
            .map(|_| {
                let log = self.dir.join(format!("server-{}.log", self.server_starts));
                self.server_starts += 1;
                (self.server_command(), log)
            })
            .collect();
        let started: Vec<Result<(Proc, String), String>> = std::thread::scope(|scope| {
            let launched: Vec<_> =
                launches.into_iter().map(|(command, log)| scope.spawn(move || spawn_server(command, &log))).collect();
            launched.into_iter().map(|l| l.join().unwrap_or_else(|_| Err("the launcher panicked".into()))).collect()
        });
        let results = slots
            .iter()
            .zip(started)
            .map(|(&slot, started)| {
                let (proc, url) = started?;
                self.servers.push(Running { slot, proc, url });
                Ok(())
            })
            .collect();
        self.point_proxy();
        results
    }

    /// The command that runs the server.
    fn server_command(&self) -> Command {
        match &self.server {
            Server::Receiver { store } => {
                let mut cmd = agent();
                // Secrets in files beside the store, the store sealed under the test store key.
                let keys: &[&str] = if self.schedule.sealed { &KEYS } else { &[] };
                cmd.args(store.receiver_args("127.0.0.1:0", API_KEY, keys));
                cmd
            }
            Server::Atlas { capture } => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/atlas_mock.py");
                let mut cmd = Command::new("python3");
                // Rate limit lifted: the proxy injects the 429s.
                cmd.args([s(&script), s(capture), "--rate-limit", "1000000"]);
                cmd
            }
        }
    }

    /// Tell the proxy which servers run: every running one (one server), or one slot per
    /// receiver of the shared database, empty while that one is down.
    fn point_proxy(&self) {
        let urls: Vec<Option<String>> = match self.schedule.servers {
            Servers::One => self.servers.iter().map(|r| Some(r.url.clone())).collect(),
            Servers::Shared(receivers) => {
                (0..receivers).map(|slot| self.servers.iter().find(|r| r.slot == slot).map(|r| r.url.clone())).collect()
            }
        };
        self.proxy.set_upstreams(&urls);
    }

    /// kill -9 the oldest servers until `keep` run.
    fn kill_servers(&mut self, keep: usize) {
        while self.servers.len() > keep {
            self.servers.remove(0).proc.kill9();
        }
        self.point_proxy();
    }

    /// Wait (at most [`BUSY_WAIT`]) for receiver `slot` to hold a request; count `idle` if it
    /// did not.
    fn wait_busy(&mut self, slot: usize, idle: &'static str) {
        let started = Instant::now();
        while !self.proxy.busy(slot) && started.elapsed() < BUSY_WAIT {
            std::thread::sleep(Duration::from_micros(200));
        }
        if !self.proxy.busy(slot) {
            *self.actions.entry(idle).or_insert(0) += 1;
        }
    }

    /// Send `signal` to receiver `slot` of the shared database (if it runs).
    fn signal_receiver(&self, slot: usize, signal: &str) {
        if let Some(running) = self.servers.iter().find(|r| r.slot == slot) {
            running.proc.signal(signal);
        }
    }

    /// kill -9 receiver number `slot` of the shared database (the proxy first forgets it, as a
    /// load balancer's health check would a moment later; requests already on their way to it
    /// meet the kill).
    fn kill_receiver(&mut self, slot: usize) {
        if let Some(at) = self.servers.iter().position(|r| r.slot == slot) {
            let mut running = self.servers.remove(at);
            running.proc.kill9();
        }
        self.point_proxy();
    }

    fn write_config(&self, interval: f64) {
        let mut extra =
            if self.schedule.sealed { format!(r#","encryption_key":"{}""#, KEYS[self.key]) } else { String::new() };
        if let Some(send_interval) = self.schedule.send_interval {
            extra.push_str(&format!(r#","send_interval":{send_interval}"#));
        }
        // Only the widgets [`World::per_cycle`] counts: cpu, memory, system (Atlas: ping too).
        let (protocol, widgets) = match self.schedule.protocol {
            Protocol::V2 => ("v2", CHEAP_WIDGETS.to_string()),
            Protocol::Atlas => (
                "atlas",
                CHEAP_WIDGETS.replace(
                    r#""ping":{"enabled":false}"#,
                    r#""ping":{"targets":["127.0.0.1"],"count":1,"tcp_port":9}"#,
                ),
            ),
        };
        let json = format!(
            r#"{{"server_url":"{}","api_key":"{API_KEY}","machine_id":"{MACHINE}","protocol":"{protocol}",
                "interval":{interval}{extra},"log_level":"debug",
                "spool":{{"dir":"{}","segment_bytes":{}}},{widgets}}}"#,
            self.proxy.url(),
            s(&self.spool),
            self.schedule.segment_bytes,
        );
        // Atomically, as config management does: an agent starting meanwhile reads either.
        let temp = write_config(&self.dir, "agent.json.tmp", &json, 0o600);
        std::fs::rename(&temp, &self.config).expect("config renamed into place");
    }

    /// Records per collection cycle (cpu, memory, system; ping too for Atlas).
    pub fn per_cycle(&self) -> u64 {
        self.counted_widgets().len() as u64
    }

    /// The widgets the agent runs (see [`World::write_config`]).
    fn counted_widgets(&self) -> &'static [&'static str] {
        match self.schedule.protocol {
            Protocol::V2 => &["cpu", "memory", "system"],
            Protocol::Atlas => &["cpu", "memory", "system", "ping"],
        }
    }

    fn start_agent(&mut self) {
        let log = self.dir.join(format!("agent-{}.log", self.lives.len()));
        self.agent = Some(start_agent(&self.config, &log));
        self.lives.push((log, false));
    }

    /// Note an agent that exited on its own since the last look (e.g. its spool could not be
    /// opened on a full disk).
    fn reap_agent(&mut self) {
        let Some(agent) = self.agent.as_mut() else { return };
        if let Ok(Some(status)) = agent.child.try_wait() {
            let life = self.lives.len() - 1;
            self.lives[life].1 = true;
            self.notes.push(format!("agent life {life} exited by itself ({status}): {}", self.last_log_line(life)));
            self.agent = None;
        }
    }

    /// Whether life `life` logged its `started:` line (signal handlers installed, spool open).
    fn started(&self, life: usize) -> bool {
        std::fs::read_to_string(&self.lives[life].0).is_ok_and(|text| text.contains(" started: "))
    }

    fn last_log_line(&self, life: usize) -> String {
        let text = std::fs::read_to_string(&self.lives[life].0).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.contains(" ureq"));
        lines.clone().rev().find(|l| l.contains("ERROR")).or(lines.next_back()).unwrap_or("").to_string()
    }

    fn kill_agent(&mut self) {
        self.reap_agent();
        if let Some(mut agent) = self.agent.take() {
            agent.kill9();
            let life = self.lives.len() - 1;
            self.lives[life].1 = true;
        }
    }

    /// SIGTERM and wait; an agent that does not stop in time, or stops with an error, is a
    /// violation (and is killed).
    fn stop_agent(&mut self) {
        self.reap_agent();
        let Some(mut agent) = self.agent.take() else { return };
        let life = self.lives.len() - 1;
        agent.signal("-TERM");
        let started = Instant::now();
        loop {
            match agent.child.try_wait() {
                Ok(Some(status)) if status.code() == Some(0) => return,
                Ok(Some(status)) if !self.started(life) => {
                    // SIGTERM before the handlers were installed (a slow start): the default
                    // action ends it before it opened the spool, so nothing can be lost.
                    self.notes.push(format!("agent life {life} got SIGTERM before it started ({status})"));
                    self.lives[life].1 = true;
                    return;
                }
                Ok(Some(status)) => {
                    self.violations.push(format!("agent life {life} exited with {status} on SIGTERM"));
                    return;
                }
                _ if started.elapsed() > STOP_LIMIT => {
                    self.violations.push(format!("agent life {life} did not stop within {STOP_LIMIT:?} of SIGTERM"));
                    agent.kill9();
                    self.lives[life].1 = true;
                    return;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn fill_disk(&mut self) {
        if let Some(filler) = &self.filler {
            fill_up(filler);
        }
    }

    fn free_disk(&mut self) {
        if let Some(filler) = &self.filler {
            let _ = std::fs::remove_file(filler);
        }
    }

    /// Play the timeline (events run late if an earlier one took long, never early).
    pub fn play(&mut self, disk: &Disk) {
        let started = Instant::now();
        let timeline = self.schedule.timeline.clone();
        for (at, action) in timeline {
            if let Some(wait) = at.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            match action {
                Action::KillAgent => self.kill_agent(),
                Action::TermAgent => self.stop_agent(),
                Action::StartAgent => {
                    self.reap_agent();
                    if self.agent.is_none() {
                        self.start_agent();
                    }
                }
                Action::KillServer => self.kill_servers(0),
                Action::StartServer => {
                    if self.servers.is_empty() {
                        if let Err(e) = self.start_server(0) {
                            self.violations.push(format!("the server did not start: {e}"));
                        }
                    }
                }
                Action::KillReceiver(slot) => self.kill_receiver(slot),
                Action::KillReceiverBusy(slot) => {
                    self.wait_busy(slot, "kill-9-receiver-busy-found-idle");
                    self.kill_receiver(slot);
                }
                Action::PauseReceiver(slot) => {
                    self.wait_busy(slot, "sigstop-receiver-busy-found-idle");
                    self.signal_receiver(slot, "-STOP");
                }
                Action::ResumeReceiver(slot) => self.signal_receiver(slot, "-CONT"),
                Action::StartReceiver(slot) => {
                    if let Err(e) = self.start_server(slot) {
                        self.violations.push(format!("receiver {slot} did not start again: {e}"));
                    }
                }
                Action::SecondServer => {
                    if let Err(e) = self.start_server(0) {
                        // What a receiver that locks its store must do.
                        self.notes.push(format!("a second receiver on the same store refused to start: {e}"));
                    }
                }
                Action::RetireServer => self.kill_servers(1),
                Action::RotateKey => {
                    self.key ^= 1;
                    self.write_config(self.schedule.interval);
                    self.reap_agent();
                    if let Some(agent) = &self.agent {
                        agent.signal("-HUP");
                    }
                }
                Action::FillDisk => match disk {
                    Disk::Tmpfs { .. } => self.fill_disk(),
                    Disk::Plain(_) => continue,
                },
                Action::FreeDisk => match disk {
                    Disk::Tmpfs { .. } => self.free_disk(),
                    Disk::Plain(_) => continue,
                },
            }
            *self.actions.entry(action.kind()).or_insert(0) += 1;
        }
        if let Some(wait) = self.schedule.length.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }

    /// Heal everything (network, disk, server), stop the agent, then let a fresh agent that
    /// collects once drain the backlog, and stop it.
    pub fn heal_and_drain(&mut self) {
        self.proxy.set_faults(false);
        self.free_disk();
        match self.schedule.servers {
            Servers::One => {
                self.kill_servers(1);
                if self.servers.is_empty() {
                    if let Err(e) = self.start_server(0) {
                        self.violations.push(format!("the server did not start after healing: {e}"));
                    }
                }
            }
            // Every receiver up: the drain is spread over all of them.
            Servers::Shared(receivers) => {
                for slot in 0..receivers {
                    if !self.servers.iter().any(|r| r.slot == slot) {
                        if let Err(e) = self.start_server(slot) {
                            self.violations.push(format!("receiver {slot} did not start after healing: {e}"));
                        }
                    }
                }
            }
        }
        // A fresh process also forgets any backoff the faults built up. It collects one cycle
        // at its start (interval one day), sends everything and is stopped once the spool
        // looks drained; the verdict is taken on the stopped agent's spool (its SIGTERM path
        // pushes once more), so stopping a little early cannot fake a loss.
        self.stop_agent();
        self.write_config(86_400.0);
        self.start_agent();
        let life = self.lives.len() - 1;
        let started = Instant::now();
        let collected = || {
            let log = std::fs::read_to_string(&self.lives[life].0).unwrap_or_default();
            log.matches(" collected ").count() as u64 >= self.per_cycle()
        };
        let spool = self.spool.clone();
        // Nothing unacknowledged is nothing in flight (an acknowledged in-flight batch stays as
        // the record of the last seq used).
        let drained = || backlog(&spool) == Some(0);
        let mut calm = 0;
        while calm < 3 && started.elapsed() < DRAIN_LIMIT {
            std::thread::sleep(Duration::from_millis(50));
            calm = if collected() && drained() { calm + 1 } else { 0 };
        }
        self.stop_agent();
        if !drained() {
            self.violations.push(format!(
                "the backlog did not drain within {DRAIN_LIMIT:?} of healing ({} unacknowledged; last error: {})",
                backlog(&spool).map_or("?".to_string(), |n| n.to_string()),
                self.last_log_line(life)
            ));
        }
    }

    /// Copy the spool (on a tmpfs that is unmounted at the end) next to the kept files.
    pub fn keep_spool(&self) {
        copy_dir(&self.spool, &self.dir.join("spool-kept"));
    }

    /// Everything the oracle needs (after [`World::heal_and_drain`]).
    pub fn evidence(&mut self) -> Evidence {
        let lives: Vec<Life> = self
            .lives
            .iter()
            .map(|(log, killed)| Life { log: std::fs::read_to_string(log).unwrap_or_default(), killed: *killed })
            .collect();
        let stats = fleet_agent::spool::inspect(&self.spool).ok().flatten();
        let rejected = match fleet_agent::spool::rejected::list(&self.spool) {
            Ok(batches) => batches.into_iter().map(|b| (b.what, b.records)).collect(),
            Err(e) => {
                self.violations.push(format!("rejected/ cannot be listed: {e}"));
                Vec::new()
            }
        };
        // Anything else there holds no records: a refused Atlas report, or litter (an atomic
        // write that a kill -9 interrupted).
        let partial: Vec<String> = std::fs::read_dir(self.spool.join("rejected"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<String>>()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|n: &String| !rejected_name(n))
            .collect();
        let status = agent().args(["status", "--json", "--config", s(&self.config)]).output();
        let counters = match status {
            Ok(out) if !out.stdout.is_empty() => parse_counters(&String::from_utf8_lossy(&out.stdout)),
            Ok(out) => {
                Err(format!("printed nothing ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
            }
            Err(e) => Err(format!("could not run: {e}")),
        };
        if !partial.is_empty() {
            self.notes.push(format!("in rejected/ but not a kept record batch: {partial:?}"));
        }
        // The kill allowance counts records per cycle: a widget the harness does not count
        // (one added to the agent since) would make it wrong.
        let uncounted: std::collections::BTreeSet<&str> = lives
            .iter()
            .flat_map(|life| life.log.lines())
            .filter_map(|line| line.split(" collected ").nth(1)?.split(' ').next())
            .filter(|widget| !self.counted_widgets().contains(widget))
            .collect();
        if !uncounted.is_empty() {
            self.violations.push(format!(
                "the agent collected widgets the harness does not count per cycle: {uncounted:?} (turn them off in \
                 World::write_config)"
            ));
        }
        Evidence {
            exchanges: self.proxy.exchanges(Duration::from_secs(25)),
            keys: keys_of(&self.schedule),
            lives,
            per_cycle: self.per_cycle(),
            spool_dropped: stats.as_ref().map_or(0, |s| s.dropped.count),
            spool_backlog: stats.as_ref().map_or(0, |s| s.unacked_records),
            rejected,
            counters,
        }
    }

    /// What the v2 receivers stored.
    pub fn stored_batches(&self) -> Result<Vec<wire::Batch>, String> {
        match &self.server {
            Server::Receiver { store } => wire::stored_batches(store, MACHINE),
            Server::Atlas { .. } => Err("not a v2 run".into()),
        }
    }

    /// Every row of the v2 store authenticated through the storage seam: what does not open.
    pub fn verify_store(&self) -> Result<Vec<String>, String> {
        match &self.server {
            Server::Receiver { store } => store.verify(),
            Server::Atlas { .. } => Ok(Vec::new()),
        }
    }

    /// Keep the v2 store after the run (a database is then not dropped); where it is.
    pub fn keep_store(&mut self) -> Option<String> {
        match &mut self.server {
            Server::Receiver { store } => {
                let described = store.describe();
                store.keep();
                Some(described)
            }
            Server::Atlas { .. } => None,
        }
    }

    /// Servers that panicked: a receiver must answer any request, and survive any kill of its
    /// peer, without a panic.
    pub fn server_panics(&self) -> Vec<String> {
        (0..self.server_starts)
            .filter_map(|i| {
                let log = std::fs::read_to_string(self.dir.join(format!("server-{i}.log"))).unwrap_or_default();
                let line = log.lines().find(|l| l.contains("panicked"))?;
                Some(format!("server start {i} panicked: {}", line.trim()))
            })
            .collect()
    }

    /// What the Atlas stand-in captured.
    pub fn captured_logs(&self) -> Result<BTreeMap<wire::RecordId, usize>, String> {
        match &self.server {
            Server::Atlas { capture } => wire::captured_widget_logs(capture, &keys_of(&self.schedule)),
            Server::Receiver { .. } => Err("not an Atlas run".into()),
        }
    }

    /// The tail of every agent log, for a failure report.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, (log, killed)) in self.lives.iter().enumerate() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let interesting: Vec<&str> =
                text.lines().filter(|l| !l.contains(" collected ") && !l.contains(" ureq")).collect();
            let tail = &interesting[interesting.len().saturating_sub(lines)..];
            out.push_str(&format!(
                "--- agent life {i} ({}):\n{}\n",
                if *killed { "killed" } else { "stopped" },
                tail.join("\n")
            ));
        }
        for i in 0..self.server_starts {
            let text = std::fs::read_to_string(self.dir.join(format!("server-{i}.log"))).unwrap_or_default();
            let interesting: Vec<&str> =
                text.lines().filter(|l| ["ERROR", "WARN", "panicked"].iter().any(|w| l.contains(w))).collect();
            if !interesting.is_empty() {
                let tail = &interesting[interesting.len().saturating_sub(lines)..];
                out.push_str(&format!("--- server start {i}:\n{}\n", tail.join("\n")));
            }
        }
        out
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The servers go before their store (a database is dropped with it).
        self.servers.clear();
        self.free_disk();
    }
}

/// `<20 digits>.seg` or `<20 digits>.json`: the files of a kept rejected batch.
fn rejected_name(name: &str) -> bool {
    let stem = name.strip_suffix(".seg").or_else(|| name.strip_suffix(".json"));
    stem.is_some_and(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::create_dir_all(to);
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            let _ = std::fs::copy(&path, to.join(entry.file_name()));
        }
    }
}

/// Unacknowledged records in the spool, `None` while it cannot be read: the read-only
/// inspection can meet a segment the running agent deletes as it reads (see the findings).
fn backlog(spool: &Path) -> Option<u64> {
    fleet_agent::spool::inspect(spool).ok().map(|stats| stats.map_or(0, |s| s.unacked_records))
}

/// Spawn a server that prints `listening on URL` when ready (stderr to `log`); the process and
/// its URL, or what it said before it exited.
fn spawn_server(mut command: Command, log: &Path) -> Result<(Proc, String), String> {
    let stderr = std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let mut child =
        command.stdout(Stdio::piped()).stderr(stderr).spawn().map_err(|e| format!("spawning the server: {e}"))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    }
    let mut proc = Proc { child };
    match line.trim().strip_prefix("listening on ") {
        Some(url) => Ok((proc, url.to_string())),
        None => {
            proc.kill9();
            let said = std::fs::read_to_string(log).unwrap_or_default();
            Err(said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing)").trim().to_string())
        }
    }
}
