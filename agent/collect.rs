//! Runs the enabled widgets on their own schedules and turns samples into [`Record`]s.
//!
//! A widget that reports `Unsupported` is noted once at info level and not asked again. A
//! widget error is logged once per distinct message (a broken `iw` does not fill the log every
//! ten seconds) and its recovery is logged once too.

use std::time::{Duration, Instant};

use fleet_widgets::{find, CollectError, Host, Sample, Timestamp, Widget};

use crate::config::WidgetConfig;
use fleet_wire::record::Record;

struct Scheduled {
    widget: Box<dyn Widget>,
    interval: Duration,
    jitter: Duration,
    next_due: Instant,
    unsupported: bool,
    last_error: Option<String>,
}

/// The set of enabled widgets with their schedules.
pub struct Collector {
    widgets: Vec<Scheduled>,
}

impl Collector {
    /// Build every enabled widget of `configs` (in registry order), all due now.
    pub fn new(configs: &[WidgetConfig], now: Instant) -> Self {
        let widgets = configs
            .iter()
            .filter(|c| c.enabled)
            .filter_map(|c| find(c.name).map(|spec| (c, spec)))
            .map(|(c, spec)| Scheduled {
                widget: (spec.build)(&c.options),
                interval: c.interval,
                jitter: c.jitter,
                next_due: now + random_fraction(c.jitter),
                unsupported: false,
                last_error: None,
            })
            .collect();
        Collector { widgets }
    }

    /// Names of the widgets that run (enabled and not found unsupported).
    pub fn active(&self) -> Vec<&'static str> {
        self.widgets.iter().filter(|w| !w.unsupported).map(|w| w.widget.name()).collect()
    }

    /// The earliest time a widget is due, `None` when nothing is left to run.
    pub fn next_due(&self) -> Option<Instant> {
        self.widgets.iter().filter(|w| !w.unsupported).map(|w| w.next_due).min()
    }

    /// Run every widget due at `now` and reschedule it one interval later (skipping missed
    /// slots after a sleep rather than bursting to catch up).
    pub fn collect_due(&mut self, host: &dyn Host, now: Instant, ts: Timestamp) -> Vec<Record> {
        // Most widgets give one sample: sized once, not grown record by record.
        let mut records = Vec::with_capacity(self.widgets.len());
        let at = Stamp::new(ts);
        for entry in self.widgets.iter_mut().filter(|w| !w.unsupported && w.next_due <= now) {
            entry.next_due += entry.interval;
            if entry.next_due <= now {
                entry.next_due = now + entry.interval;
            }
            entry.next_due += random_fraction(entry.jitter);
            run_one(entry, host, &at, &mut records);
        }
        records
    }

    /// Run every active widget once, whatever its schedule, and hand over what widgets hold
    /// back (`once`, SIGUSR1: a forced collection closes open ping windows early).
    pub fn collect_all(&mut self, host: &dyn Host, ts: Timestamp) -> Vec<Record> {
        let mut records = Vec::new();
        let at = Stamp::new(ts);
        for entry in self.widgets.iter_mut().filter(|w| !w.unsupported) {
            run_one(entry, host, &at, &mut records);
        }
        records.extend(self.flush(ts));
        records
    }

    /// What widgets hold back (open ping windows), as records: call before stopping so
    /// nothing measured is lost.
    pub fn flush(&mut self, ts: Timestamp) -> Vec<Record> {
        let at = Stamp::new(ts);
        self.widgets.iter_mut().flat_map(|entry| entry.widget.flush(ts)).map(|sample| at.record(sample)).collect()
    }
}

/// A cycle's time and its RFC 3339 text, formatted once for all the cycle's records.
struct Stamp {
    ts: Timestamp,
    text: String,
}

impl Stamp {
    fn new(ts: Timestamp) -> Self {
        Stamp { ts, text: ts.to_rfc3339() }
    }

    fn record(&self, sample: Sample) -> Record {
        record_at(sample, self.text.clone())
    }
}

/// A widget's sample taken at `ts` as a record: the sample's fields unchanged, its name as the
/// record's `widget`.
pub fn record_of(sample: Sample, ts: Timestamp) -> Record {
    record_at(sample, ts.to_rfc3339())
}

fn record_at(sample: Sample, ts: String) -> Record {
    Record {
        ts,
        widget: sample.name,
        kind: sample.kind,
        level: sample.level,
        message: sample.message,
        data: sample.data,
    }
}

/// A uniformly random duration in `[0, max)`.
fn random_fraction(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    max.mul_f64(crate::random::random_unit())
}

fn run_one(entry: &mut Scheduled, host: &dyn Host, at: &Stamp, records: &mut Vec<Record>) {
    let name = entry.widget.name();
    match entry.widget.collect(host, at.ts) {
        Ok(samples) => {
            if entry.last_error.take().is_some() {
                log::info!("widget {name} recovered");
            }
            records.extend(samples.into_iter().map(|s| at.record(s)));
        }
        Err(CollectError::Unsupported(why)) => {
            log::info!("widget {name} does not apply on this machine: {why}");
            entry.unsupported = true;
        }
        Err(error) => {
            let text = error.to_string();
            if entry.last_error.as_deref() != Some(text.as_str()) {
                log::warn!("widget {name}: {text}");
                entry.last_error = Some(text);
            }
        }
    }
}
