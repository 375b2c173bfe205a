//! The service loop (`fleet-agent run`): one thread, synchronous.
//!
//! Each turn: handle signals, run the widgets that are due, hand their records on, then sleep
//! until the next widget is due or a signal arrives. SIGTERM/SIGINT end the loop after the
//! current step; SIGHUP reloads the config (a bad new config is logged and the old one kept);
//! SIGUSR1 runs every widget now.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_widgets::Timestamp;

use crate::cli::Common;
use crate::collect::Collector;
use crate::config::Config;
use crate::host::SystemHost;
use crate::record::Record;
use crate::signals::Signals;
use crate::spool::{Spool, SpoolError};

/// Longest single sleep, so a clock change cannot stall the loop for long.
const MAX_SLEEP: Duration = Duration::from_secs(60);

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
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Signals(e) => write!(f, "installing signal handlers: {e}"),
            RunError::Spool { dir, .. } => write!(f, "opening the spool in {}", dir.display()),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Signals(e) => Some(e),
            RunError::Spool { error, .. } => Some(error),
        }
    }
}

/// The running agent: configuration, widgets and where records go.
pub struct Agent {
    config: Config,
    config_path: Option<PathBuf>,
    common: Common,
    collector: Collector,
    host: SystemHost,
    /// Where every cycle's records go (opened by `run`).
    spool: Option<Spool>,
}

impl Agent {
    /// Build the agent from a loaded config.
    pub fn new(config: Config, config_path: Option<PathBuf>, common: Common) -> Self {
        let collector = Collector::new(&config.widgets, Instant::now());
        Agent { config, config_path, common, collector, host: SystemHost::new(), spool: None }
    }

    /// Run until SIGTERM/SIGINT.
    pub fn run(&mut self) -> Result<(), RunError> {
        let mut signals = Signals::install().map_err(RunError::Signals)?;
        // Spool: open (and recover) before the first collection.
        let spool = Spool::open(&self.config.spool)
            .map_err(|error| RunError::Spool { dir: self.config.spool.dir.clone(), error })?;
        self.spool = Some(spool);
        log::info!(
            "started: machine_id {}, {} widgets ({}), interval {}s",
            self.config.machine_id,
            self.collector.active().len(),
            self.collector.active().join(", "),
            self.config.interval.as_secs_f64()
        );
        while !signals.terminating() {
            if signals.take_reload() {
                self.reload();
            }
            let records = if signals.take_collect_now() {
                log::info!("SIGUSR1: collecting now");
                self.collector.collect_all(&self.host, Timestamp::now())
            } else {
                self.collector.collect_due(&self.host, Instant::now(), Timestamp::now())
            };
            self.deliver(records);
            let wait = self
                .collector
                .next_due()
                .map(|due| due.saturating_duration_since(Instant::now()))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            signals.sleep(wait);
        }
        // Spool: make everything collected durable before exiting (matters under `fsync: never`).
        if let Some(Err(e)) = self.spool.as_mut().map(Spool::sync) {
            log::error!("spool: final sync: {e}");
        }
        log::info!("stopping");
        Ok(())
    }

    fn deliver(&mut self, records: Vec<Record>) {
        for record in &records {
            log::debug!("collected {} ({} bytes of data)", record.widget, record.data.to_string().len());
        }
        // Spool: every cycle's records are appended (one fsync per cycle under `batch`).
        if let (Some(spool), false) = (self.spool.as_mut(), records.is_empty()) {
            if let Err(e) = spool.append(&records) {
                log::error!("spool: storing {} records: {e}", records.len());
            }
        }
    }

    fn reload(&mut self) {
        match Config::load(self.config_path.as_deref()) {
            Ok(config) => {
                crate::log::set_level(self.common.log_level(config.log_level));
                self.collector = Collector::new(&config.widgets, Instant::now());
                self.config = config;
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
