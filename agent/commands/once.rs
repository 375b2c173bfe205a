//! `fleet-agent once`: collect every enabled widget once and print one JSON object.

use std::path::PathBuf;
use std::time::Instant;

use fleet_widgets::{Host, SampleKind, Timestamp};
use serde_json::{json, Value};

use super::{load_config, usage_error, Command};
use crate::cli::{print_error, Args, Common, EXIT_OK, EXIT_USAGE};
use crate::collect::Collector;
use crate::host::SystemHost;
use crate::report::{widget_log_entry, LatestReport};

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "once",
    help: "\
Usage: fleet-agent once [--config FILE] [--network] [--replay DIR] [-v|-q]

Collect every enabled widget once and print ONE JSON object to stdout:
  {\"machine_id\", \"machine_info\": {…}, \"metrics\": {…}, \"widget_logs\": […]}
the Atlas report plus the widget-log entries. Needs no config file (defaults apply). Nothing
is sent or stored, and nothing reaches the network: the widgets that would (ping, speedtest)
are skipped unless the config enables them explicitly (\"enabled\": true) or --network is given
(under --replay they read the captured outputs and run).

  --network      also run the enabled network widgets (ping, speedtest) as `run` would

  --replay DIR   run the widgets against captured outputs: DIR/replay.json maps commands
                 and files to files in DIR (see the README, \"Replay\"). Widgets that
                 read the machine in process still read this one; no network
                 measurement is made.
",
    run,
};

fn run(mut args: Args) -> u8 {
    let common = match Common::take(&mut args) {
        Ok(common) => common,
        Err(e) => return usage_error("once", &e),
    };
    let network = args.flag(&["--network"]);
    let replay = match args.value("--replay") {
        Ok(replay) => replay.map(PathBuf::from),
        Err(e) => return usage_error("once", &e),
    };
    if let Err(e) = args.finish() {
        return usage_error("once", &e);
    }
    let mut config = match load_config(&common) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // A replay allows no network at all (its ping and speedtest read captured outputs).
    if !network && replay.is_none() {
        let skipped = keep_off_the_network(&mut config.widgets);
        if !skipped.is_empty() {
            eprintln!(
                "note: not running {} (they reach the network): pass --network, or set \"enabled\": true for them",
                skipped.join(", ")
            );
        }
    }
    crate::log::init(common.log_level(config.log_level.min(log::LevelFilter::Warn)));
    // Under replay every widget (machine_info's serial, model and computer name included)
    // reads the captured outputs; in-process readings still describe this machine.
    let host: Box<dyn Host> = match replay {
        None => Box::new(SystemHost::new()),
        Some(dir) => match crate::replay::load(&dir) {
            Ok(host) => Box::new(host),
            Err(e) => {
                print_error(&e);
                return EXIT_USAGE;
            }
        },
    };
    let mut collector = Collector::new(&config.widgets, Instant::now());
    let records = collector.collect_all(host.as_ref(), Timestamp::now());
    println!("{}", once_json(&config.machine_id, &records));
    EXIT_OK
}

/// Widgets that send packets off the machine (ICMP/TCP to targets, HTTP transfers).
pub const NETWORK_WIDGETS: &[&str] = &["ping", "speedtest"];

/// Turn off the network widgets that are enabled only by default (not by an explicit
/// `"enabled": true`); returns their names.
pub fn keep_off_the_network(widgets: &mut [crate::config::WidgetConfig]) -> Vec<&'static str> {
    let mut skipped = Vec::new();
    for widget in widgets.iter_mut() {
        if NETWORK_WIDGETS.contains(&widget.name) && widget.enabled && !widget.enabled_explicitly {
            widget.enabled = false;
            skipped.push(widget.name);
        }
    }
    skipped
}

/// The `once` object: the Atlas report plus `widget_logs`.
pub fn once_json(machine_id: &str, records: &[fleet_wire::record::Record]) -> Value {
    let mut report = LatestReport::new();
    let mut logs = Vec::new();
    for record in records {
        report.update(record);
        if record.kind == SampleKind::Log {
            logs.push(widget_log_entry(record));
        }
    }
    let mut body = report.to_json(machine_id);
    if let Value::Object(map) = &mut body {
        map.insert("widget_logs".to_string(), json!(logs));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    struct NoEnv;

    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn the_defaults_reach_no_outside_host() {
        // Built-in defaults: ping (to 1.1.1.1) is on, the speed test is opt-in.
        let mut config = Config::load_with_env(None, &NoEnv).map_err(|e| e.len()).expect("defaults");
        assert_eq!(keep_off_the_network(&mut config.widgets), ["ping"]);
        assert!(config.widgets.iter().filter(|w| NETWORK_WIDGETS.contains(&w.name)).all(|w| !w.enabled));
        assert!(config.widgets.iter().any(|w| w.name == "cpu" && w.enabled), "local widgets still run");
    }

    #[test]
    fn an_explicitly_enabled_network_widget_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.json");
        std::fs::write(&path, r#"{"widgets":{"speedtest":{"enabled":true},"ping":{"targets":["127.0.0.1"]}}}"#)
            .expect("write");
        let mut config = Config::load_with_env(Some(&path), &NoEnv).map_err(|e| e.len()).expect("loads");
        assert_eq!(keep_off_the_network(&mut config.widgets), ["ping"], "ping only by default: skipped");
        assert!(config.widgets.iter().any(|w| w.name == "speedtest" && w.enabled));
    }
}
