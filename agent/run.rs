//! The service loop (`fleet-agent run`): one thread, synchronous.
//!
//! Each turn: handle signals, run the widgets that are due, hand their records on, then sleep
//! until the next widget is due or a signal arrives. SIGTERM/SIGINT end the loop after the
//! current step; SIGHUP reloads the config (a bad new config is logged and the old one kept);
//! SIGUSR1 runs every widget now.
//!
//! Records pass through the sender ([`crate::sender::Sender::accept`]: Atlas keeps metrics in
//! memory for its report, and holds fresh widget logs for a direct post when it is due this
//! cycle), the rest go to the spool (durable), then the sender pushes within a deadline: the
//! time until the next widget is due, so sending never delays collection by more than one
//! request's timeout. What the sender held and did not deliver
//! ([`crate::sender::Sender::take_unsent`]) is stored in the spool before the loop sleeps. When the spool cannot take records (disk full), they are
//! held in memory up to [`PENDING_MAX_RECORDS`] (oldest dropped past that, counted and logged)
//! and written as soon as the disk accepts them again. On SIGTERM the loop stops, the spool is
//! fsynced and one last push is tried for at most [`FINAL_PUSH`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_widgets::Timestamp;

use crate::collect::Collector;
use crate::config::Config;
use crate::host::SystemHost;
use crate::log::Verbosity;
use crate::progress::{Counts, Progress};
use crate::sender::{self, Sender, SenderError};
use crate::signals::Signals;
use crate::spool::{Spool, SpoolError};
use fleet_wire::record::Record;

/// Longest single sleep, so a clock change cannot stall the loop for long.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Records held in memory while the spool refuses writes (disk full).
pub const PENDING_MAX_RECORDS: usize = 10_000;
/// Time allowed for the last push at shutdown.
pub const FINAL_PUSH: Duration = Duration::from_secs(3);
/// Most stored records kept until the next store (a cycle of every widget is a few dozen;
/// the flush of a hold after a full disk is dropped at once).
const RETIRED_KEEP: usize = 256;

/// Why the loop could not start or had to stop.
#[derive(Debug)]
pub enum RunError {
    /// Installing signal handlers failed.
    Signals(std::io::Error),
    /// The spool could not be opened (the error names the file or directory).
    Spool {
        /// The configured spool directory.
        dir: PathBuf,
        /// What went wrong.
        error: SpoolError,
    },
    /// The sender could not be set up (bad `ca_file`, unreadable sender state).
    Sender(SenderError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Signals(e) => write!(f, "installing signal handlers: {e}"),
            RunError::Spool { dir, .. } => write!(f, "opening the spool in {}", dir.display()),
            RunError::Sender(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Signals(e) => Some(e),
            RunError::Spool { error, .. } => Some(error),
            RunError::Sender(e) => Some(e),
        }
    }
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT, or the time limit.
    Stopped,
    /// A `restart_agent` command: the caller starts the agent again (re-executes itself).
    Restart,
}

/// The running agent: configuration, widgets, the spool and the sender.
pub struct Agent {
    config: Config,
    config_path: Option<PathBuf>,
    /// `-v`/`-q`, applied to the config's level again on every reload.
    verbosity: Verbosity,
    collector: Collector,
    host: SystemHost,
    spool: Option<Spool>,
    sender: Option<Box<dyn Sender>>,
    pending: VecDeque<Record>,
    /// The records the last store wrote, dropped at the next store, once the next cycle's
    /// records exist: the allocator's pages that hold a cycle's values (the widgets' JSON
    /// maps) then never empty between two cycles. musl's allocator gives an empty page group
    /// back to the OS and maps it again next cycle: an `mmap`/`munmap` pair, page faults and
    /// a TLB flush every cycle (BENCHMARKS.md, "Branch alloc"). At most [`RETIRED_KEEP`].
    retired: Vec<Record>,
    pending_dropped: u64,
    /// Oldest and newest time of the records in `pending_dropped`.
    pending_dropped_span: Option<(Timestamp, Timestamp)>,
    spool_error: Option<String>,
    progress: Option<Progress>,
}

impl Agent {
    /// Build the agent from a loaded config (nothing is opened until [`Agent::run`]).
    pub fn new(config: Config, config_path: Option<PathBuf>, verbosity: Verbosity) -> Self {
        let collector = Collector::new(&config.widgets, Instant::now());
        Agent {
            config,
            config_path,
            verbosity,
            collector,
            host: SystemHost::new(),
            spool: None,
            sender: None,
            pending: VecDeque::new(),
            retired: Vec::new(),
            pending_dropped: 0,
            pending_dropped_span: None,
            spool_error: None,
            progress: None,
        }
    }

    /// Run until SIGTERM/SIGINT (or a `restart_agent` command).
    pub fn run(&mut self) -> Result<Exit, RunError> {
        self.run_until(None)
    }

    /// Run until SIGTERM/SIGINT, a `restart_agent` command, or until `limit` has passed (`demo`).
    pub fn run_until(&mut self, limit: Option<Instant>) -> Result<Exit, RunError> {
        let mut signals = Signals::install().map_err(RunError::Signals)?;
        for warning in &self.config.warnings {
            log::warn!("{warning}");
        }
        self.open()?;
        log::info!(
            "started: machine_id {}, {} widgets ({}), interval {}s, server {} ({})",
            self.config.machine_id,
            self.collector.active().len(),
            self.collector.active().join(", "),
            self.config.interval.as_secs_f64(),
            self.config.server_url.as_deref().unwrap_or("none: spooling only"),
            self.config.protocol.as_str(),
        );
        // The key the sender uses (a rotated one wins over the config's, see transport_key).
        let kid = match self.sender.as_ref() {
            Some(sender) => sender.kid().map(str::to_string),
            None => self.config.encryption_key.as_ref().map(fleet_wire::envelope::kid),
        };
        log::info!("{}", Progress::start_line(kid.as_deref()));
        let delivered = self.sender.as_ref().map_or(0, |s| s.state().sent_records);
        self.progress = Some(Progress::new(Instant::now(), delivered));
        while !signals.terminating() && limit.is_none_or(|at| Instant::now() < at) {
            if signals.take_reload() {
                self.reload();
            }
            let records = if signals.take_collect_now() {
                log::info!("SIGUSR1: collecting now");
                self.collector.collect_all(&self.host, Timestamp::now())
            } else {
                self.collector.collect_due(&self.host, Instant::now(), Timestamp::now())
            };
            self.store(records);
            let next_collection = self.collector.next_due().unwrap_or_else(|| Instant::now() + MAX_SLEEP);
            let deadline = limit.map_or(next_collection, |at| at.min(next_collection));
            self.push(deadline);
            self.store_unsent();
            if self.sender.as_ref().is_some_and(|s| s.restart_requested()) {
                log::info!("restart_agent: stopping to start again");
                self.shutdown();
                return Ok(Exit::Restart);
            }
            let mut wake = next_collection;
            if let Some(at) = self.sender.as_ref().and_then(|s| s.next_wakeup()) {
                wake = wake.min(at);
            }
            if let Some(at) = limit {
                wake = wake.min(at);
            }
            signals.sleep(wake.saturating_duration_since(Instant::now()).min(MAX_SLEEP));
        }
        self.shutdown();
        Ok(Exit::Stopped)
    }

    fn open(&mut self) -> Result<(), RunError> {
        let spool = Spool::open(&self.config.spool)
            .map_err(|error| RunError::Spool { dir: self.config.spool.dir.clone(), error })?;
        self.sender = self.build_sender(spool.dir().to_path_buf()).map_err(RunError::Sender)?;
        self.spool = Some(spool);
        Ok(())
    }

    fn build_sender(&self, spool_dir: PathBuf) -> Result<Option<Box<dyn Sender>>, SenderError> {
        match self.config.server_url.as_deref() {
            Some(url) => sender::build(&self.config, url, spool_dir).map(Some),
            None => {
                log::warn!("no server_url: records are kept in the spool and not sent");
                Ok(None)
            }
        }
    }

    fn push(&mut self, deadline: Instant) {
        if let (Some(sender), Some(spool)) = (self.sender.as_mut(), self.spool.as_mut()) {
            sender.push(spool, deadline);
        }
        self.report_progress();
    }

    /// The periodic `info` line (see [`crate::progress`]): counts are gathered only when due.
    fn report_progress(&mut self) {
        let now = Instant::now();
        let Some(progress) = self.progress.as_mut().filter(|p| p.due(now)) else { return };
        let state = self.sender.as_ref().map(|s| s.state());
        let counts = Counts {
            delivered_total: state.map(|s| s.sent_records),
            backlog: self.spool.as_ref().map_or(0, |s| s.stats().unacked_records) + self.pending.len() as u64,
            failing: state
                .filter(|s| s.consecutive_failures > 0)
                .and_then(|s| s.last_error.as_ref())
                .map(|e| e.message.clone()),
            last_success: state.and_then(|s| s.last_success.clone()),
        };
        log::info!("{}", progress.line(now, &counts));
    }

    /// SIGTERM: make the spool durable, then one last push with a short deadline.
    fn shutdown(&mut self) {
        log::info!("stopping");
        // What widgets hold back (open ping windows) is stored, not lost.
        let held = self.collector.flush(Timestamp::now());
        self.store(held);
        self.store_unsent();
        if let Some(Err(e)) = self.spool.as_mut().map(Spool::sync) {
            log::error!("spool: final sync: {e}");
        }
        if let (Some(sender), Some(spool)) = (self.sender.as_mut(), self.spool.as_mut()) {
            sender.flush(spool, Instant::now() + FINAL_PUSH);
        }
        if !self.pending.is_empty() {
            log::error!("{} records could not be written to the spool and are lost at exit", self.pending.len());
            for record in std::mem::take(&mut self.pending) {
                self.note_unspooled(&record);
            }
        }
        self.count_unspooled();
        if self.pending_dropped > 0 {
            log::error!("{} records dropped from memory could not be counted in the spool", self.pending_dropped);
        }
    }

    /// Append records to the spool; while it refuses (disk full), hold them in memory, bounded.
    fn store(&mut self, records: Vec<Record>) {
        for record in &records {
            log::debug!("collected {} ({} bytes of data)", record.widget, record.data.to_string().len());
        }
        // The sender keeps what it needs only in memory (Atlas: metrics, in its report; fresh
        // widget logs until its post this cycle, when nothing waits before them).
        let records = match self.sender.as_mut() {
            Some(sender) => {
                let backlog = self.pending.len() as u64 + self.spool.as_ref().map_or(0, Spool::unacked_records);
                sender.accept(records, backlog)
            }
            None => records,
        };
        self.keep(records);
    }

    /// What the sender held for a direct post and did not deliver: into the spool, now.
    fn store_unsent(&mut self) {
        let unsent = self.sender.as_mut().map(|s| s.take_unsent()).unwrap_or_default();
        if !unsent.is_empty() {
            log::debug!("{} widget-log records not posted directly: storing them in the spool", unsent.len());
            self.keep(unsent);
        }
    }

    /// Append `records` (already past the sender) to the spool, behind any held in memory.
    fn keep(&mut self, records: Vec<Record>) {
        self.pending.extend(records);
        while self.pending.len() > PENDING_MAX_RECORDS {
            if let Some(dropped) = self.pending.pop_front() {
                self.note_unspooled(&dropped);
            }
        }
        self.count_unspooled();
        let Some(spool) = self.spool.as_mut() else { return };
        if self.pending.is_empty() {
            return;
        }
        // No copy: the held records are appended straight from the buffer.
        let batch_len = self.pending.len();
        // A failed append may have stored a prefix (a segment rollover before the disk filled
        // up): forget exactly that prefix, so the retry does not store it twice.
        let (stored, result) = spool.append_counted(self.pending.make_contiguous());
        let stored = stored.min(self.pending.len());
        self.retired.clear();
        if stored <= RETIRED_KEEP {
            self.retired.extend(self.pending.drain(..stored));
        } else {
            self.retired = Vec::new();
            self.pending.drain(..stored);
        }
        match result {
            Ok(()) => {
                self.pending.clear();
                if self.spool_error.take().is_some() {
                    log::info!("spool: writing again ({batch_len} held records stored)");
                }
                self.count_unspooled();
            }
            Err(e) => {
                // Logged once per episode: the text changes while the disk stays full (the
                // write that failed, then the next segment that cannot be created).
                let text = e.to_string();
                if self.spool_error.is_none() {
                    log::error!(
                        "spool: storing {} records: {text}; holding up to {PENDING_MAX_RECORDS} in memory",
                        batch_len - stored
                    );
                } else if self.spool_error.as_deref() != Some(text.as_str()) {
                    log::debug!("spool: still failing: {text}");
                }
                self.spool_error = Some(text);
            }
        }
    }

    /// A held record dropped from memory (the hold is full): remembered until the spool's
    /// ledger takes the count.
    fn note_unspooled(&mut self, record: &Record) {
        self.pending_dropped += 1;
        if let Some(ts) = record.timestamp() {
            self.pending_dropped_span = Some(match self.pending_dropped_span {
                Some((oldest, newest)) => (Timestamp(oldest.0.min(ts.0)), Timestamp(newest.0.max(ts.0))),
                None => (ts, ts),
            });
        }
    }

    /// Add the records dropped from memory to the spool's dropped ledger (and to the accepted
    /// total), as soon as the ledger can be written: nothing is only logged.
    fn count_unspooled(&mut self) {
        if self.pending_dropped == 0 {
            return;
        }
        let Some(spool) = self.spool.as_mut() else { return };
        let span = self.pending_dropped_span;
        match spool.count_unspooled(self.pending_dropped, span.map(|s| s.0), span.map(|s| s.1)) {
            Ok(()) => {
                log::error!(
                    "spool: {} records were dropped from memory while it was failing (counted as dropped)",
                    self.pending_dropped
                );
                self.pending_dropped = 0;
                self.pending_dropped_span = None;
            }
            Err(e) => log::debug!("spool: counting {} records dropped from memory: {e}", self.pending_dropped),
        }
    }

    fn reload(&mut self) {
        match Config::load(self.config_path.as_deref()) {
            Ok(config) => {
                crate::log::set_level(self.verbosity.apply(config.log_level));
                if config.spool != self.config.spool {
                    log::warn!("SIGHUP: spool settings changed; they take effect at the next restart");
                }
                // The old sender's held records go to the spool, and its state to state.bin,
                // before it is replaced.
                self.store_unsent();
                if let (Some(sender), Some(spool)) = (self.sender.as_mut(), self.spool.as_mut()) {
                    sender.save(spool);
                }
                let old = std::mem::replace(&mut self.config, config);
                let spool_dir = self.spool.as_ref().map(|s| s.dir().to_path_buf()).unwrap_or(old.spool.dir.clone());
                match self.build_sender(spool_dir) {
                    Ok(sender) => self.sender = sender,
                    Err(e) => log::error!("SIGHUP: keeping the old sender: {e}"),
                }
                self.config.spool = old.spool;
                // Open ping windows are handed over, not dropped with the old widgets.
                let held = self.collector.flush(Timestamp::now());
                self.store(held);
                self.collector = Collector::new(&self.config.widgets, Instant::now());
                log::info!("SIGHUP: configuration reloaded");
            }
            Err(errors) => {
                for error in errors {
                    log::error!("SIGHUP: keeping the old configuration: {error}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    struct NoEnv;

    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn a_failing_spool_holds_records_in_memory_up_to_the_bound_then_stores_them_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::load_with_env(None, &NoEnv).expect("defaults");
        config.spool.dir = dir.path().join("spool");
        let mut agent = Agent::new(config, None, Verbosity::default());
        let mut spool = Spool::open(&agent.config.spool).expect("open");
        spool.fail_new_segments(true);
        agent.spool = Some(spool);
        let record = |n: usize| Record {
            ts: Timestamp(1_763_800_000_000 + n as i64).to_rfc3339(),
            widget: "cpu".into(),
            kind: fleet_widgets::SampleKind::Metric,
            level: fleet_widgets::Level::Info,
            message: String::new(),
            data: serde_json::json!({ "n": n }),
        };
        let total = PENDING_MAX_RECORDS + 25;
        for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
            agent.store(chunk.iter().map(|&n| record(n)).collect());
        }
        assert_eq!(agent.pending.len(), PENDING_MAX_RECORDS, "bounded");
        let counts = agent.spool.as_ref().expect("spool").stats().counts;
        assert_eq!((counts.dropped, counts.accepted), (25, 25), "the oldest are dropped and counted in the ledger");
        assert_eq!(agent.pending_dropped, 0, "nothing left only in memory");
        assert!(agent.spool_error.is_some());

        let spool = agent.spool.as_mut().expect("spool");
        spool.fail_new_segments(false);
        agent.store(Vec::new());
        assert!(agent.pending.is_empty() && agent.spool_error.is_none() && agent.pending_dropped == 0);
        let spool = agent.spool.as_mut().expect("spool");
        let mut at = spool.acked_cursor();
        let mut stored = Vec::new();
        loop {
            let batch = spool.read_from(at, 5000, usize::MAX).expect("read");
            if batch.records.is_empty() {
                break;
            }
            stored.extend(batch.records.iter().map(|r| r.data["n"].as_u64().expect("n") as usize));
            at = batch.next;
        }
        assert_eq!(stored, (25..total).collect::<Vec<_>>(), "the newest 10,000, once, in order");
        let counts = spool.stats().counts;
        assert_eq!(counts.accepted, total as u64, "every record accepted: stored or counted dropped");
        assert_eq!(counts.accepted, counts.dropped + counts.backlog);
        drop(agent);
        let reopened = crate::spool::inspect(&dir.path().join("spool")).expect("inspect").expect("spool").counts;
        assert_eq!((reopened.accepted, reopened.dropped, reopened.backlog), (total as u64, 25, 10_000), "persisted");
    }
}

#[cfg(test)]
#[path = "run_atlas_direct_tests.rs"]
mod atlas_direct_tests;
