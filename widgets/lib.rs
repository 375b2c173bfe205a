//! Pluggable collectors ("widgets") for fleet-agent.
//!
//! A widget turns readings of the machine into [`Sample`]s. Widgets never touch the machine
//! directly: every file read and command run goes through a [`Host`], so every widget runs in
//! tests against captured outputs (`testdata/`) on any OS. Platform readings are split into a
//! thin reader (one command or file through `Host`) and a pure parser `fn(&str) -> Result<T,
//! ParseError>` that is compiled and tested everywhere.
//!
//! Adding a widget is one folder under `widgets/` and one line in [`ALL`]; a conventions test
//! (`conventions.rs`) checks the folder has a `README.md` and `testdata/` and is listed in the
//! registry and in the root README's widget table.

pub mod error;
pub mod host;
pub mod procfs;
pub mod sample;
pub use fleet_wire::time;

pub mod units;

#[cfg(test)]
mod conventions;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod golden;

pub mod battery;
pub mod cpu;
pub mod disk;
pub mod machine;
pub mod memory;
pub mod network;
pub mod ping;
pub mod processes;
pub mod security;
pub mod speedtest;
pub mod system;
pub mod temperature;
pub mod users;
pub mod wifi;

pub use error::{CollectError, ParseError};
pub use host::{CommandOutput, FixtureHost, Host, HostError, Os};
pub use sample::{Level, Sample, SampleKind};
pub use time::Timestamp;

use serde_json::{Map, Value};

/// Options for one widget, straight from the `widgets.<name>` object of the config (minus the
/// generic `enabled` and `interval` keys, which the agent handles). Each widget validates the
/// keys it knows in [`WidgetSpec::validate`]; unknown keys are an error naming the key.
pub type WidgetOptions = Map<String, Value>;

/// A collector. `collect` is called once per the widget's interval, on the agent's one thread.
pub trait Widget {
    /// The widget's registry name, e.g. `"cpu"`.
    fn name(&self) -> &'static str;
    /// Take one reading. `Err(CollectError::Unsupported)` means "does not apply on this
    /// machine" (no battery, no WiFi) and is not logged as an error.
    fn collect(&mut self, host: &dyn Host, now: Timestamp) -> Result<Vec<Sample>, CollectError>;

    /// Hand over what the widget holds back (a ping window still open) at `now`: called by
    /// `once`, on a forced collection and before the agent stops, so nothing measured is lost.
    /// Most widgets hold nothing back.
    fn flush(&mut self, _now: Timestamp) -> Vec<Sample> {
        Vec::new()
    }
}

/// A registry entry: how to build a widget and what it is by default.
pub struct WidgetSpec {
    /// Registry name, also the key under `widgets` in the config.
    pub name: &'static str,
    /// One line for `--help` and the README table.
    pub summary: &'static str,
    /// Whether the widget runs when the config does not mention it.
    pub enabled_by_default: bool,
    /// Default interval in seconds when the config gives none (`None` = the global interval).
    pub default_interval_s: Option<u64>,
    /// Default random delay, in seconds, added to each scheduled run (0 = none), so a fleet's
    /// heavy measurements (speedtest) do not all start at the same moment.
    pub default_jitter_s: u64,
    /// Check widget-specific options; the error names the offending key.
    pub validate: fn(&WidgetOptions) -> Result<(), String>,
    /// Build the widget from its (already validated) options.
    pub build: fn(&WidgetOptions) -> Box<dyn Widget>,
}

/// Accepts only an empty option map: for widgets with no options of their own.
pub fn no_options(options: &WidgetOptions) -> Result<(), String> {
    match options.keys().next() {
        None => Ok(()),
        Some(key) => Err(format!("unknown option `{key}` (this widget has no options of its own)")),
    }
}

/// Every widget, in the order they run within a cycle. Do not reorder without reason: the
/// machine-info widget runs first so a report always has it.
pub static ALL: &[&WidgetSpec] = &[
    &machine::SPEC,
    &cpu::SPEC,
    &memory::SPEC,
    &disk::SPEC,
    &network::SPEC,
    &processes::SPEC,
    &system::SPEC,
    &battery::SPEC,
    &wifi::SPEC,
    &ping::SPEC,
    &security::SPEC,
    &users::SPEC,
    &temperature::SPEC,
    &speedtest::SPEC,
];

/// Look a widget up by its registry name.
pub fn find(name: &str) -> Option<&'static WidgetSpec> {
    ALL.iter().copied().find(|spec| spec.name == name)
}
