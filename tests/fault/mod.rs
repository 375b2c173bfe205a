//! Deterministic fault injection of the whole pipeline (issue 11), in the manner of
//! FoundationDB's simulation tests, Jepsen and TigerBeetle's VOPR: real `fleet-agent run` and
//! server processes on 127.0.0.1, a proxy between them that drops requests, drops answers,
//! delays, duplicates (one after the other or at once), resets mid-body and answers 429/503
//! or refuses for good, while a seeded timeline kill -9s and restarts either side, SIGTERMs
//! the agent, starts a second receiver on the same store, changes its transport key with
//! SIGHUP (the receiver holds both keys) and fills the spool's disk (a tmpfs; skipped with a
//! message where it cannot be mounted). Then everything is healed, the backlog drained, and
//! the oracle ([`oracle`]) checked.
//!
//! The campaigns:
//! - v2 to one receiver on the file store;
//! - Atlas to the Python stand-in;
//! - v2 to two receivers sharing one PostgreSQL database (issue 15): the proxy spreads the
//!   requests over both like a load balancer (round robin, random choice or a mix, per seed)
//!   and sends the two copies of a concurrent duplicate to different receivers, while a
//!   timeline lane per receiver kills it -9 (at a random moment, or while it holds a request)
//!   or freezes it (SIGSTOP while it holds a request, then SIGCONT) and brings it back; both
//!   start at the same moment on the empty database, and now and then both are down;
//! - the race: two receivers on one PostgreSQL database get every batch at the same moment
//!   (the proxy duplicating each request to both): each seq is stored exactly once, both
//!   receivers answer 2xx, and for each new batch exactly one says it stored it.
//!
//! The oracle reads and verifies the store only through the receiver's storage seam
//! ([`store`]), so it is the same for both backends. The PostgreSQL campaigns need a test
//! build with `--features postgres` and `FLEET_TEST_POSTGRES` (see [`store`]; `.ci/run`
//! starts a private server); without them they print that they were skipped, or fail under
//! `FLEET_REQUIRE_POSTGRES=1`.
//!
//! Seeds: each run prints `FLEET_FAULT_SEED=N` with its schedule; a failure lists the failing
//! seeds and their violations.
//!
//! - `FLEET_FAULT_SEED=N` replays one seed (same schedule, same fate and receiver for each
//!   request number) in every campaign the test filter selects.
//! - `FLEET_FAULT_SEEDS=K` runs K seeds (default: 6 for v2, 3 for Atlas, 4 for v2 on shared
//!   PostgreSQL, 2 for the race), numbered from `FLEET_FAULT_BASE` (default: from the clock,
//!   so a local run explores new seeds; `.ci/run` fixes it at 1000), plus the next seed with
//!   each feature of the campaign's coverage list that none of them has.
//! - `FLEET_FAULT_JOBS=J` runs J seeds at once (default 1).
//! - `FLEET_FAULT_KEEP=1` keeps every seed's files (and database), not only a failing one's.
//!
//! A long campaign (the debug build: the release profile's LTO makes the test build slow, and
//! the processes mostly wait): `FLEET_FAULT_SEEDS=500 FLEET_FAULT_JOBS=2 cargo test --test
//! integration fault:: -- --nocapture` (about 40 minutes on 2 cores); the PostgreSQL ones:
//! `FLEET_FAULT_SEEDS=200 FLEET_FAULT_JOBS=2 cargo test --features postgres --test integration
//! fault::v2_to_two -- --nocapture` (about 15 minutes).

mod oracle;
mod proxy;
mod schedule;
mod store;
mod wire;
mod world;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use schedule::{Action, Protocol, Schedule, Servers};
use store::Backend;
use world::{Disk, World};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// What a campaign runs: each seed's schedule and where the receivers store.
#[derive(Clone, Copy)]
struct Setup {
    /// The schedule of a seed (`disk_full`: whether the spool disk can be filled here).
    schedule: fn(seed: u64, disk_full: bool) -> Schedule,
    /// Where v2 receivers store.
    backend: Backend,
    /// Seeds run by default.
    default_seeds: u64,
    /// Schedule features every run of this campaign covers.
    coverage: &'static [Feature],
    /// Checks of this campaign beyond the oracle's.
    extra: fn(&oracle::Evidence) -> Vec<String>,
}

/// v2 to one receiver on the file store.
const V2_FILE: Setup = Setup {
    schedule: |seed, disk_full| Schedule::generate(seed, Protocol::V2, Servers::One, disk_full),
    backend: Backend::File,
    default_seeds: 6,
    coverage: &[
        |s| !s.sealed,
        |s| s.timeline.iter().any(|(_, a)| *a == Action::RotateKey),
        |s| s.timeline.iter().any(|(_, a)| *a == Action::SecondServer),
    ],
    extra: |_| Vec::new(),
};

/// Atlas to the Python stand-in.
const ATLAS: Setup = Setup {
    schedule: |seed, disk_full| Schedule::generate(seed, Protocol::Atlas, Servers::One, disk_full),
    backend: Backend::File,
    default_seeds: 3,
    coverage: &[|s| s.timeline.iter().any(|(_, a)| *a == Action::RotateKey)],
    extra: |_| Vec::new(),
};

/// v2 to two receivers sharing one PostgreSQL database, each killed and restarted at random.
const V2_SHARED_POSTGRES: Setup = Setup {
    schedule: |seed, disk_full| Schedule::generate(seed, Protocol::V2, Servers::Shared(2), disk_full),
    backend: Backend::Postgres,
    default_seeds: 4,
    coverage: &[
        |s| !s.sealed,
        |s| s.timeline.iter().any(|(_, a)| *a == Action::RotateKey),
        |s| s.random_routing == 0,
        |s| s.random_routing == 100,
        both_receivers_down_at_once,
        |s| s.timeline.iter().any(|(_, a)| matches!(a, Action::KillReceiverBusy(_))),
        |s| s.timeline.iter().any(|(_, a)| matches!(a, Action::PauseReceiver(_))),
    ],
    extra: |_| Vec::new(),
};

/// Two receivers on one PostgreSQL database given every batch at the same moment.
const RACE_POSTGRES: Setup = Setup {
    schedule: |seed, _| Schedule::racing(seed, 2),
    backend: Backend::Postgres,
    default_seeds: 2,
    coverage: &[],
    extra: oracle::check_race,
};

/// Whether the timeline has a moment when every shared receiver is down.
fn both_receivers_down_at_once(schedule: &Schedule) -> bool {
    let Servers::Shared(receivers) = schedule.servers else { return false };
    let mut down = 0;
    schedule.timeline.iter().any(|(_, action)| {
        match action {
            Action::KillReceiver(_) | Action::KillReceiverBusy(_) => down += 1,
            Action::StartReceiver(_) => down -= 1,
            // A frozen receiver is not down for the load balancer, only slow.
            Action::PauseReceiver(_) | Action::ResumeReceiver(_) => {}
            _ => {}
        }
        down == receivers
    })
}

/// The seeds to run: `FLEET_FAULT_SEED` alone, or `FLEET_FAULT_SEEDS` from the base, plus, when
/// none of those has it, the next seed with each feature of the campaign's coverage list, so
/// that even a short CI run always meets the paths that broke before (a run without a key, a
/// key change, a second receiver, both shared receivers down at once).
fn seeds(setup: &Setup) -> Vec<u64> {
    if let Some(seed) = env_u64("FLEET_FAULT_SEED") {
        return vec![seed];
    }
    let count = env_u64("FLEET_FAULT_SEEDS").unwrap_or(setup.default_seeds);
    let base = env_u64("FLEET_FAULT_BASE").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos());
        (nanos as u64 % 1_000_000_000) * 1000
    });
    let mut seeds: Vec<u64> = (base..base + count).collect();
    let disk_full = Disk::can_mount();
    let mut next = base + count;
    for feature in setup.coverage {
        let has = |seed: u64| feature(&(setup.schedule)(seed, disk_full));
        if !seeds.iter().any(|&seed| has(seed)) {
            // Every feature has a fair chance per seed: the search ends within a few steps.
            while !has(next) {
                next += 1;
            }
            seeds.push(next);
            next += 1;
        }
    }
    seeds
}

/// Does a schedule have some feature?
type Feature = fn(&Schedule) -> bool;

/// Fault-count names of the copies each shared receiver got.
const RECEIVER_COPIES: [&str; 4] =
    ["copies-to-receiver-0", "copies-to-receiver-1", "copies-to-receiver-2", "copies-to-receiver-3"];

/// What one seed did and found.
struct Outcome {
    seed: u64,
    schedule: String,
    faults: BTreeMap<&'static str, u64>,
    requests: u64,
    violations: Vec<String>,
    notes: Vec<String>,
    kept_dir: Option<String>,
    seconds: f64,
}

/// Run one seed from start to oracle.
fn run_seed(seed: u64, setup: &Setup) -> Outcome {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let disk_root = dir.path().join("disk");
    let disk = Disk::prepare(&disk_root);
    let schedule = Arc::new((setup.schedule)(seed, matches!(disk, Disk::Tmpfs { .. })));
    println!("FLEET_FAULT_SEED={seed}: {schedule}");
    let mut world = World::start(Arc::clone(&schedule), setup.backend, dir.path(), &disk_root);
    world.play(&disk);
    world.heal_and_drain();
    let evidence = world.evidence();
    let mut violations = std::mem::take(&mut world.violations);
    violations.extend(world.server_panics());
    violations.extend((setup.extra)(&evidence));
    match schedule.protocol {
        Protocol::V2 => {
            match world.stored_batches() {
                Ok(stored) => violations.extend(oracle::check_v2(&evidence, &stored)),
                Err(e) => violations.push(format!("the store cannot be read: {e}")),
            }
            match world.verify_store() {
                Ok(problems) => {
                    violations.extend(problems.into_iter().map(|p| format!("a stored row does not verify: {p}")))
                }
                Err(e) => violations.push(format!("the store cannot be verified: {e}")),
            }
        }
        Protocol::Atlas => match world.captured_logs() {
            Ok(captured) => violations.extend(oracle::check_atlas(&evidence, &captured)),
            Err(e) => violations.push(format!("the capture cannot be read: {e}")),
        },
    }
    let mut faults = world.actions.clone();
    faults.remove("start-agent");
    faults.remove("start-server");
    faults.remove("disk-freed");
    for exchange in &evidence.exchanges {
        *faults.entry(exchange.fate.kind()).or_insert(0) += 1;
        if matches!(schedule.servers, Servers::Shared(_)) {
            for &slot in &exchange.servers {
                *faults.entry(RECEIVER_COPIES.get(slot).copied().unwrap_or("copies-to-receiver-4+")).or_insert(0) += 1;
            }
            // A copy a receiver got but never answered: cut by its kill (or torn on purpose).
            let unanswered = exchange.upstream.iter().filter(|a| a.is_none()).count() as u64;
            *faults.entry("copies-unanswered").or_insert(0) += unanswered;
        }
    }
    if let Disk::Plain(why) = &disk {
        world.notes.push(format!("disk-full fault skipped: the spool tmpfs cannot be mounted here ({why})"));
    }
    let mut notes = std::mem::take(&mut world.notes);
    let keep = !violations.is_empty() || std::env::var_os("FLEET_FAULT_KEEP").is_some();
    let kept_dir = if !keep {
        None
    } else {
        if !violations.is_empty() {
            notes.push(world.log_tails(8));
        }
        if let Some(store) = world.keep_store() {
            notes.push(format!("kept: {store}"));
        }
        world.keep_spool();
        drop(world);
        drop(disk);
        Some(dir.keep().display().to_string())
    };
    Outcome {
        seed,
        schedule: schedule.to_string(),
        faults,
        requests: evidence.exchanges.len() as u64,
        violations,
        notes,
        kept_dir,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Run the seeds (on `FLEET_FAULT_JOBS` threads), print a summary, fail on any violation.
/// A campaign whose backend is not configured here is skipped with one line (a failure under
/// `FLEET_REQUIRE_POSTGRES=1`).
fn campaign(name: &str, setup: Setup) {
    if let Err(why) = setup.backend.available() {
        let required = std::env::var("FLEET_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        assert!(!required, "{name}: FLEET_REQUIRE_POSTGRES=1 but {why}");
        println!("skipped: {name}: {why}");
        return;
    }
    let seeds = seeds(&setup);
    let jobs = env_u64("FLEET_FAULT_JOBS").unwrap_or(1).max(1) as usize;
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(seeds.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(i) else { return };
                // A panic in one seed (a harness bug or a process that would not start) is
                // that seed's failure, not the end of the campaign.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, &setup)))
                    .unwrap_or_else(|panic| {
                        let why = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Outcome {
                            seed,
                            schedule: (setup.schedule)(seed, true).to_string(),
                            faults: BTreeMap::new(),
                            requests: 0,
                            violations: vec![format!("the run panicked: {why}")],
                            notes: Vec::new(),
                            kept_dir: None,
                            seconds: 0.0,
                        }
                    });
                println!(
                    "FLEET_FAULT_SEED={seed}: {} requests, {:.1}s, {}",
                    outcome.requests,
                    outcome.seconds,
                    if outcome.violations.is_empty() {
                        "ok".to_string()
                    } else {
                        format!("{} VIOLATIONS", outcome.violations.len())
                    }
                );
                if let Some(dir) = &outcome.kept_dir {
                    println!("  files kept in {dir}");
                }
                for note in &outcome.notes {
                    println!("  note: {note}");
                }
                outcomes.lock().unwrap_or_else(|p| p.into_inner()).push(outcome);
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes.sort_by_key(|o| o.seed);
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for outcome in &outcomes {
        for (kind, n) in &outcome.faults {
            *totals.entry(kind).or_insert(0) += n;
        }
    }
    println!("{name}: {} seeds, faults by kind: {totals:?}", outcomes.len());
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.violations.is_empty()).collect();
    let mut report = String::new();
    for outcome in &failed {
        report.push_str(&format!(
            "\nFLEET_FAULT_SEED={} ({})\n  schedule: {}\n  files kept in {}\n",
            outcome.seed,
            outcome.faults.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
            outcome.schedule,
            outcome.kept_dir.as_deref().unwrap_or("?")
        ));
        for violation in &outcome.violations {
            report.push_str(&format!("  VIOLATION: {violation}\n"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} seeds broke an invariant (replay one with FLEET_FAULT_SEED=N):{report}",
        failed.len(),
        outcomes.len()
    );
}

#[test]
fn v2_under_a_seeded_fault_schedule_stores_every_record_exactly_once_or_counts_it() {
    campaign("v2, file store", V2_FILE);
}

#[test]
fn atlas_under_a_seeded_fault_schedule_delivers_every_widget_log_at_least_once() {
    campaign("Atlas", ATLAS);
}

#[test]
fn v2_to_two_receivers_on_one_postgres_killed_at_random_stores_every_record_exactly_once_or_counts_it() {
    campaign("v2, two receivers on one PostgreSQL", V2_SHARED_POSTGRES);
}

#[test]
fn two_receivers_on_one_postgres_given_the_same_batch_at_once_store_it_exactly_once() {
    campaign("race, two receivers on one PostgreSQL", RACE_POSTGRES);
}
