//! The seeded fault schedule: everything random in a fault run comes from here.
//!
//! A seed fixes the run's shape (protocol options, collection interval, how long the faults
//! last, the mix of network faults, how the proxy spreads requests over several receivers),
//! the timeline of process faults (kill -9 and restart of either side or of any one of the
//! receivers sharing a database, SIGTERM restarts, key rotations, a full spool disk), and the
//! fate and receiver of the n-th request through the proxy. So `FLEET_FAULT_SEED=N` replays
//! the same schedule: the same process events at the same offsets and the same fate for the
//! same request number. What the OS does in between (which cycle a kill lands in) still
//! varies from run to run.

use std::fmt;
use std::time::Duration;

/// splitmix64: small, fast, and every seed (0 included) gives a good stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The stream for `seed`'s `lane` (independent sub-streams: the timeline, request fates).
    pub fn lane(seed: u64, lane: u64) -> Rng {
        let mut mixer = Rng(seed ^ lane.wrapping_mul(0xd1b5_4a32_d192_ed03));
        Rng(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 for n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Which wire protocol the run exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Sealed sequenced batches to the bundled receiver (exactly once).
    V2,
    /// Atlas reports and widget logs to the Python stand-in (widget logs at least once).
    Atlas,
}

/// The servers behind the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Servers {
    /// One server at a time, killed and restarted on the same store (v2: now and then a second
    /// receiver is started on the same store while the first runs, as an admin's mistake).
    One,
    /// This many receivers serving one shared database at once (PostgreSQL) behind the proxy
    /// as behind a load balancer, each killed -9 and restarted on its own timeline.
    Shared(usize),
}

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Forward it and relay the answer.
    Pass,
    /// Read it, then close the connection: the server never sees it.
    DropRequest,
    /// Forward it, read the server's answer, then close without relaying it (the server
    /// stored the batch; the agent does not know).
    DropAnswer,
    /// Wait this many ms, forward, wait again, relay.
    Delay(u64),
    /// Forward it twice (both at once when `concurrent`), relay one answer.
    Duplicate {
        /// Send both copies at the same time instead of one after the other.
        concurrent: bool,
    },
    /// Read part of the body, then reset the agent's connection; with `upstream` the server
    /// gets the same part of the body before its connection is closed.
    ResetMidBody {
        /// Also tear the body towards the server.
        upstream: bool,
    },
    /// Answer this status (429 or 503) without forwarding.
    Refuse(u16),
    /// Answer `400` (refused for good: the agent keeps it in `rejected/`) without forwarding.
    /// Only for content never forwarded before (see the proxy): a server that stored a batch
    /// and then refuses its resend would be lying, which is not the fault under test.
    Reject,
}

impl Fate {
    /// A short stable name, for the fault counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fate::Pass => "pass",
            Fate::DropRequest => "drop-request",
            Fate::DropAnswer => "drop-answer",
            Fate::Delay(_) => "delay",
            Fate::Duplicate { concurrent: false } => "duplicate",
            Fate::Duplicate { concurrent: true } => "duplicate-concurrent",
            Fate::ResetMidBody { upstream: false } => "reset-mid-body",
            Fate::ResetMidBody { upstream: true } => "reset-mid-body-upstream",
            Fate::Refuse(429) => "answer-429",
            Fate::Refuse(_) => "answer-503",
            Fate::Reject => "answer-400-reject",
        }
    }
}

/// A process or disk event of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// kill -9 the agent.
    KillAgent,
    /// SIGTERM the agent and wait for it to stop.
    TermAgent,
    /// Start the agent again.
    StartAgent,
    /// kill -9 the server (receiver or Atlas stand-in).
    KillServer,
    /// Start the server again (on a new port; the proxy follows).
    StartServer,
    /// Start a second receiver on the same store while the first runs (an admin's mistake);
    /// requests then alternate between the two. A receiver that locks its store refuses.
    SecondServer,
    /// kill -9 the older of two receivers.
    RetireServer,
    /// kill -9 receiver number N of a shared database ([`Servers::Shared`]).
    KillReceiver(usize),
    /// kill -9 receiver number N of a shared database while it works on a request (the
    /// first moment within a second that it holds one; else when the second is up): the
    /// kill lands before, during or after its database transaction.
    KillReceiverBusy(usize),
    /// Start receiver number N of a shared database again (on a new port; the proxy follows).
    StartReceiver(usize),
    /// SIGSTOP receiver number N of a shared database while it works on a request (as
    /// [`Action::KillReceiverBusy`]): a process frozen with its transaction open (a VM paused, a
    /// debugger, swap), its locks held; the load balancer still sends it requests.
    PauseReceiver(usize),
    /// SIGCONT it.
    ResumeReceiver(usize),
    /// Rewrite the agent's config with the other transport key and SIGHUP it.
    RotateKey,
    /// Fill the spool's file system.
    FillDisk,
    /// Free it again.
    FreeDisk,
}

impl Action {
    /// A short stable name, for the fault counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::KillAgent => "kill-9-agent",
            Action::TermAgent => "sigterm-agent",
            Action::StartAgent => "start-agent",
            Action::KillServer => "kill-9-server",
            Action::StartServer => "start-server",
            Action::SecondServer => "second-receiver-same-store",
            Action::RetireServer => "retire-first-receiver",
            Action::KillReceiver(_) => "kill-9-receiver",
            Action::KillReceiverBusy(_) => "kill-9-receiver-busy",
            Action::StartReceiver(_) => "start-receiver",
            Action::PauseReceiver(_) => "sigstop-receiver-busy",
            Action::ResumeReceiver(_) => "sigcont-receiver",
            Action::RotateKey => "sighup-key-change",
            Action::FillDisk => "disk-full",
            Action::FreeDisk => "disk-freed",
        }
    }
}

/// Everything one seed decides.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The seed.
    pub seed: u64,
    /// The protocol under test.
    pub protocol: Protocol,
    /// The servers behind the proxy.
    pub servers: Servers,
    /// Per cent of requests the proxy sends to a receiver drawn at random instead of the next
    /// one in turn (round robin), with several receivers.
    pub random_routing: u64,
    /// Bodies sealed with a transport key (false: no key at all, the plaintext test mode).
    pub sealed: bool,
    /// Seconds between collections.
    pub interval: f64,
    /// v2: seconds between push rounds (the agent's `send_interval`; its 20 s default would
    /// leave a few-second run with a push at each start only). Atlas: its default.
    pub send_interval: Option<f64>,
    /// Spool segment size (small, so rotations happen).
    pub segment_bytes: u64,
    /// How long faults are injected before healing.
    pub length: Duration,
    /// Process and disk events, sorted by offset.
    pub timeline: Vec<(Duration, Action)>,
    /// Weights of the network fates (per mille; the rest passes).
    mix: Vec<(FateKind, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum FateKind {
    DropRequest,
    DropAnswer,
    Delay,
    Duplicate,
    Reset,
    Refuse,
    Reject,
    /// Always a concurrent duplicate ([`Schedule::racing`]).
    Race,
}

impl Schedule {
    /// The schedule of `seed` with `servers`; `disk_full` says whether the spool disk can be
    /// filled here.
    pub fn generate(seed: u64, protocol: Protocol, servers: Servers, disk_full: bool) -> Schedule {
        let mut rng = Rng::lane(seed, 1);
        // A quarter of the v2 runs have no transport key (the in-flight batch is then rebuilt
        // from the spool on every retry); Atlas runs are always sealed, like real Atlas fleets.
        let sealed = protocol == Protocol::Atlas || !rng.percent(25);
        let interval = [0.05, 0.1, 0.15, 0.2][rng.below(4) as usize];
        let segment_bytes = [8192, 32768, 1 << 20][rng.below(3) as usize];
        let length_ms = rng.between(3000, 6000);
        let mut mix = Vec::new();
        // Each kind is present in most runs, with a weight that varies from run to run.
        for (kind, max) in [
            (FateKind::DropRequest, 80),
            (FateKind::DropAnswer, 120),
            (FateKind::Delay, 80),
            (FateKind::Duplicate, 80),
            (FateKind::Reset, 60),
            (FateKind::Refuse, 60),
            (FateKind::Reject, 15),
        ] {
            if rng.percent(80) {
                mix.push((kind, rng.between(max / 4, max)));
            }
        }
        let mut timeline = Vec::new();
        // Disk lane first: a SIGTERM during a full disk would lose the held records at exit by
        // design (there is nowhere to write them), so agent restarts in those windows are kill -9.
        let mut full_windows = Vec::new();
        if disk_full {
            let mut t = rng.between(200, 1500);
            for _ in 0..rng.between(1, 2) {
                let hold = rng.between(300, 1500);
                if t + hold >= length_ms {
                    break;
                }
                timeline.push((t, Action::FillDisk));
                timeline.push((t + hold, Action::FreeDisk));
                full_windows.push(t..=t + hold);
                t += hold + rng.between(300, 1500);
            }
        }
        // Agent lane: kill -9 (or SIGTERM) and restart after a pause.
        let mut t = 0;
        loop {
            t += rng.between(300, 1500);
            let down = rng.between(0, 400);
            if t + down + 100 >= length_ms {
                break;
            }
            let term = rng.percent(20) && !full_windows.iter().any(|w| w.contains(&t));
            timeline.push((t, if term { Action::TermAgent } else { Action::KillAgent }));
            timeline.push((t + down, Action::StartAgent));
            t += down;
        }
        // Server lanes.
        let mut random_routing = 0;
        match servers {
            Servers::One => {
                let mut t = 0;
                loop {
                    t += rng.between(500, 2500);
                    let down = rng.between(0, 600);
                    if t + down + 100 >= length_ms {
                        break;
                    }
                    // A quarter of the v2 server faults are a second receiver on the same store.
                    if protocol == Protocol::V2 && rng.percent(25) {
                        timeline.push((t, Action::SecondServer));
                        timeline.push((t + down, Action::RetireServer));
                    } else {
                        timeline.push((t, Action::KillServer));
                        timeline.push((t + down, Action::StartServer));
                    }
                    t += down;
                }
            }
            Servers::Shared(receivers) => {
                // Drawn from a lane of their own. Routing: round robin only, random only, or a mix.
                let mut rng = Rng::lane(seed, 2);
                random_routing = [0, 30, 100][rng.below(3) as usize];
                for slot in 0..receivers {
                    let mut t = 0;
                    loop {
                        t += rng.between(400, 2500);
                        let down = rng.between(0, 800);
                        if t + down + 100 >= length_ms {
                            break;
                        }
                        // Kill -9 at a random moment, kill -9 while busy, or freeze while busy.
                        let (stop, start) = match rng.below(5) {
                            0 | 1 => (Action::KillReceiver(slot), Action::StartReceiver(slot)),
                            2 | 3 => (Action::KillReceiverBusy(slot), Action::StartReceiver(slot)),
                            _ => (Action::PauseReceiver(slot), Action::ResumeReceiver(slot)),
                        };
                        timeline.push((t, stop));
                        timeline.push((t + down, start));
                        t += down;
                    }
                }
            }
        }
        // Key lane.
        if sealed {
            for _ in 0..rng.between(0, 3) {
                timeline.push((rng.between(100, length_ms - 100), Action::RotateKey));
            }
        }
        // Stable sort: same-time events keep their lane order (a stop before its start).
        timeline.sort_by_key(|(t, _)| *t);
        let timeline = timeline.into_iter().map(|(t, a)| (Duration::from_millis(t), a)).collect();
        // Drawn from a lane of their own, so the lanes above keep their schedules.
        let send_interval = (protocol == Protocol::V2).then(|| {
            let mut rng = Rng::lane(seed, 3);
            [interval, 0.1, 0.25, 0.5][rng.below(4) as usize]
        });
        Schedule {
            seed,
            protocol,
            servers,
            random_routing,
            sealed,
            interval,
            send_interval,
            segment_bytes,
            length: Duration::from_millis(length_ms),
            timeline,
            mix,
        }
    }

    /// A schedule of `seed` for [`Servers::Shared`] where nothing fails: no process event, and
    /// every request is sent to two receivers at the same moment (the proxy duplicating it), so
    /// that receivers race on the same `(machine_id, seq)` again and again.
    pub fn racing(seed: u64, receivers: usize) -> Schedule {
        let mut schedule = Schedule::generate(seed, Protocol::V2, Servers::Shared(receivers), false);
        schedule.timeline.clear();
        schedule.mix = vec![(FateKind::Race, 1000)];
        // A push round every 0.1 s for 6 s: some fifty races.
        schedule.send_interval = Some(0.1);
        schedule.length = Duration::from_secs(6);
        schedule
    }

    /// The fate of request number `n` (0-based, counted by the proxy over the whole run).
    pub fn fate(&self, n: u64) -> Fate {
        let mut rng = Rng::lane(self.seed, 1000 + n);
        let mut roll = rng.below(1000);
        for &(kind, weight) in &self.mix {
            if roll >= weight {
                roll -= weight;
                continue;
            }
            return match kind {
                FateKind::DropRequest => Fate::DropRequest,
                FateKind::DropAnswer => Fate::DropAnswer,
                FateKind::Delay => Fate::Delay(rng.between(10, 800)),
                FateKind::Race => Fate::Duplicate { concurrent: true },
                FateKind::Duplicate => Fate::Duplicate { concurrent: rng.percent(50) },
                FateKind::Reset => Fate::ResetMidBody { upstream: rng.percent(50) },
                FateKind::Refuse => Fate::Refuse(if rng.percent(50) { 429 } else { 503 }),
                FateKind::Reject => Fate::Reject,
            };
        }
        Fate::Pass
    }
}

impl Schedule {
    /// Which of `slots` receivers request `n` goes to first (a load balancer: the next one in
    /// turn, or with [`Schedule::random_routing`] per cent one at random).
    pub fn route(&self, n: u64, slots: usize) -> usize {
        let slots = slots.max(1) as u64;
        let mut rng = Rng::lane(self.seed, 1_000_000_000 + n);
        let slot = if rng.percent(self.random_routing) { rng.below(slots) } else { n % slots };
        slot as usize
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({:?}, {}, {}interval {}s, {}segments {} B, faults for {} ms; network mix per mille: ",
            self.seed,
            self.protocol,
            if self.sealed { "sealed" } else { "no transport key" },
            match self.servers {
                Servers::One => String::new(),
                Servers::Shared(n) => {
                    format!("{n} receivers on one database, {}% routed at random, ", self.random_routing)
                }
            },
            self.interval,
            self.send_interval.map_or(String::new(), |s| format!("pushes every {s}s, ")),
            self.segment_bytes,
            self.length.as_millis()
        )?;
        let mix: Vec<String> = self.mix.iter().map(|(kind, w)| format!("{kind:?} {w}")).collect();
        write!(f, "{}; timeline:", mix.join(", "))?;
        for (at, action) in &self.timeline {
            write!(f, " {}ms {}", at.as_millis(), action.kind())?;
        }
        f.write_str(")")
    }
}

#[test]
fn a_seed_always_gives_the_same_schedule_and_fates() {
    for servers in [Servers::One, Servers::Shared(2)] {
        for seed in [0, 1, 42, u64::MAX] {
            let a = Schedule::generate(seed, Protocol::V2, servers, true);
            let b = Schedule::generate(seed, Protocol::V2, servers, true);
            assert_eq!(a.to_string(), b.to_string());
            let fates = |s: &Schedule| (0..200).map(|n| (s.fate(n), s.route(n, 2))).collect::<Vec<_>>();
            assert_eq!(fates(&a), fates(&b));
            assert!(a.timeline.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
        }
        let differ = (0..20).filter(|&s| {
            Schedule::generate(s, Protocol::V2, servers, true).to_string()
                != Schedule::generate(s + 1, Protocol::V2, servers, true).to_string()
        });
        assert_eq!(differ.count(), 20, "neighbouring seeds differ");
    }
}

#[test]
fn shared_receivers_are_each_killed_and_restarted_and_requests_reach_all_of_them() {
    let mut killed = [0; 2];
    let mut routed = [0; 2];
    for seed in 0..50 {
        let schedule = Schedule::generate(seed, Protocol::V2, Servers::Shared(2), true);
        let mut down = [false; 2];
        for (_, action) in &schedule.timeline {
            match *action {
                Action::KillReceiver(slot) | Action::KillReceiverBusy(slot) => {
                    assert!(!down[slot], "seed {seed}: receiver {slot} killed twice without a start");
                    down[slot] = true;
                    killed[slot] += 1;
                }
                Action::PauseReceiver(slot) => {
                    assert!(!down[slot], "seed {seed}: receiver {slot} paused while down");
                    down[slot] = true;
                }
                Action::StartReceiver(slot) | Action::ResumeReceiver(slot) => {
                    assert!(down[slot], "seed {seed}: receiver {slot} started while running");
                    down[slot] = false;
                }
                Action::KillServer | Action::StartServer | Action::SecondServer | Action::RetireServer => {
                    panic!("seed {seed}: a one-server event with shared receivers: {schedule}")
                }
                _ => {}
            }
        }
        assert_eq!(down, [false; 2], "seed {seed}: every killed receiver comes back");
        for n in 0..100 {
            routed[schedule.route(n, 2)] += 1;
        }
    }
    assert!(killed.iter().all(|&k| k > 25), "each receiver is killed in most seeds: {killed:?}");
    assert!(routed.iter().all(|&r| r > 2000), "requests spread over both receivers: {routed:?}");
    // The one-server schedules of a seed do not change when shared receivers are added.
    let one = Schedule::generate(7, Protocol::V2, Servers::One, true);
    assert!(one.timeline.iter().all(|(_, a)| !matches!(a, Action::KillReceiver(_) | Action::StartReceiver(_))));
    assert!((0..100).all(|n| one.route(n, 2) == n as usize % 2), "one server: plain alternation");
    let racing = Schedule::racing(7, 2);
    assert!(racing.timeline.is_empty());
    assert!((0..100).all(|n| racing.fate(n) == Fate::Duplicate { concurrent: true }));
}
