//! Reading the `agent-config.json` that Atlas's installer builder writes
//! (`atlas/fleet_agent_builder.py`, `create_agent_config`), so a fleet installed with it
//! switches agents without editing files:
//!
//! ```text
//! {"fleet_server": {"url", "api_key", "encryption_key"},
//!  "dashboard_auth": {…}, "agent": {"report_interval", "retry_attempts", "retry_delay"},
//!  "widgets": {"enabled", "order", "log_interval", "wifi", "ping", "speedtest", … one bool per dashboard widget},
//!  "tools": {"order", "metrics", "logs", "commands", "autostart"}}
//! ```
//!
//! A file with a top-level `fleet_server` object is read this way; it is translated into our
//! own config keys and then validated like any config. What has a meaning here is mapped:
//!
//! | Atlas key | ours |
//! |---|---|
//! | `fleet_server.url`, `.api_key`, `.encryption_key` | `server_url`, `api_key`, `encryption_key` (empty or null: none) |
//! | `agent.report_interval` | `interval` (Atlas collects and reports every `report_interval`) |
//! | `widgets.log_interval` | `widget_log_interval` |
//! | `widgets.wifi`, `.ping`, `.speedtest` (bool) | `widgets.<name>.enabled` (Atlas starts those monitors only when true) |
//! | `widgets.wifi_interval`, `.ping_interval`, `.speedtest_interval` | `widgets.<name>.interval` |
//! | `widgets.enabled: false`, `tools.logs: false` | wifi, ping and speedtest off (Atlas sends no widget logs then) |
//! | `tools.commands: false` | `commands.allow: []` (commands are acknowledged as refused) |
//!
//! Our own top-level keys (`machine_id`, `protocol`, `spool`, …) may be added to the file and
//! are taken as they are; a key given both ways is an error. Everything else (the dashboard
//! widget switches, orders, `dashboard_auth`, retry settings, …) has no meaning for this agent
//! and is ignored with ONE warning listing it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Widgets whose Atlas switch and `<name>_interval` map onto ours (same names).
const LOG_WIDGETS: [&str; 3] = ["wifi", "ping", "speedtest"];

/// A translated file: our config keys, and the Atlas keys that were ignored.
#[derive(Debug)]
pub struct Translated {
    /// Our config, as JSON (validated afterwards like any config file).
    pub native: Map<String, Value>,
    /// Dotted names of the keys ignored, sorted.
    pub ignored: Vec<String>,
}

/// True when `value` looks like an Atlas `agent-config.json` (a `fleet_server` object).
pub fn is_atlas_agent_config(value: &Value) -> bool {
    value.get("fleet_server").is_some_and(Value::is_object)
}

/// A field problem: dotted field name and what is wrong.
pub type FieldProblem = (String, String);

/// Translate an Atlas agent config into our keys. Returns every problem found.
pub fn translate(file: Map<String, Value>) -> Result<Translated, Vec<FieldProblem>> {
    let mut native = Map::new();
    let mut mapped = Map::new();
    let mut ignored = Vec::new();
    let mut problems: Vec<FieldProblem> = Vec::new();
    let mut widgets = Widgets::new();
    let mut log_widgets_off = false;

    for (key, value) in file {
        match key.as_str() {
            "fleet_server" => {
                let Value::Object(server) = value else { continue };
                for (field, value) in server {
                    let ours = match field.as_str() {
                        "url" => "server_url",
                        "api_key" => "api_key",
                        "encryption_key" => "encryption_key",
                        _ => {
                            ignored.push(format!("fleet_server.{field}"));
                            continue;
                        }
                    };
                    match value {
                        Value::Null => {}
                        Value::String(text) if text.is_empty() => {}
                        Value::String(text) => {
                            mapped.insert(ours.to_string(), Value::String(text));
                        }
                        other => {
                            problems.push((format!("fleet_server.{field}"), format!("must be a string, found {other}")))
                        }
                    }
                }
            }
            "agent" => match value {
                Value::Object(agent) => {
                    for (field, value) in agent {
                        if field == "report_interval" {
                            if value.is_number() {
                                mapped.insert("interval".to_string(), value);
                            } else {
                                problems
                                    .push(("agent.report_interval".into(), format!("must be a number, found {value}")));
                            }
                        } else {
                            ignored.push(format!("agent.{field}"));
                        }
                    }
                }
                _ => ignored.push("agent".into()),
            },
            "widgets" => match value {
                Value::Object(entries) => translate_widgets(
                    entries,
                    &mut widgets,
                    &mut mapped,
                    &mut log_widgets_off,
                    &mut ignored,
                    &mut problems,
                ),
                _ => ignored.push("widgets".into()),
            },
            "tools" => match value {
                Value::Object(tools) => {
                    for (field, value) in tools {
                        match (field.as_str(), &value) {
                            ("commands", Value::Bool(on)) => {
                                if !on {
                                    mapped.insert("commands".into(), serde_json::json!({ "allow": [] }));
                                }
                            }
                            ("logs", Value::Bool(on)) => log_widgets_off |= !on,
                            _ => ignored.push(format!("tools.{field}")),
                        }
                    }
                }
                _ => ignored.push("tools".into()),
            },
            _ if super::config::is_native_key(&key) => {
                native.insert(key, value);
            }
            _ => ignored.push(key),
        }
    }
    if log_widgets_off {
        for name in LOG_WIDGETS {
            widget_entry(&mut widgets, name).insert("enabled".into(), Value::Bool(false));
        }
    }
    if !widgets.is_empty() {
        let section = widgets.into_iter().map(|(name, options)| (name, Value::Object(options))).collect();
        mapped.insert("widgets".into(), Value::Object(section));
    }
    for (key, value) in mapped {
        if native.contains_key(&key) {
            problems.push((key.clone(), "is given both as an Atlas key and as our own key; keep one".into()));
        } else {
            native.insert(key, value);
        }
    }
    ignored.sort();
    if problems.is_empty() {
        Ok(Translated { native, ignored })
    } else {
        Err(problems)
    }
}

/// Our `widgets` section being built: widget name -> its options.
type Widgets = BTreeMap<String, Map<String, Value>>;

fn widget_entry<'a>(widgets: &'a mut Widgets, name: &str) -> &'a mut Map<String, Value> {
    widgets.entry(name.to_string()).or_default()
}

fn translate_widgets(
    entries: Map<String, Value>,
    widgets: &mut Widgets,
    mapped: &mut Map<String, Value>,
    log_widgets_off: &mut bool,
    ignored: &mut Vec<String>,
    problems: &mut Vec<FieldProblem>,
) {
    let registry: Vec<&str> = fleet_widgets::ALL.iter().map(|spec| spec.name).collect();
    for (field, value) in entries {
        let interval_of = field.strip_suffix("_interval").filter(|name| LOG_WIDGETS.contains(name));
        match (field.as_str(), value) {
            ("enabled", Value::Bool(on)) => *log_widgets_off |= !on,
            ("log_interval", value) if value.is_number() => {
                mapped.insert("widget_log_interval".into(), value);
            }
            ("log_interval", value) => {
                problems.push(("widgets.log_interval".into(), format!("must be a number, found {value}")))
            }
            (name, Value::Bool(on)) if LOG_WIDGETS.contains(&name) => {
                widget_entry(widgets, name).insert("enabled".into(), Value::Bool(on));
            }
            (_, value) if interval_of.is_some() => {
                let name = interval_of.unwrap_or_default();
                if value.is_number() {
                    widget_entry(widgets, name).insert("interval".into(), value);
                } else {
                    problems.push((format!("widgets.{field}"), format!("must be a number, found {value}")));
                }
            }
            (name, Value::Object(options)) if registry.contains(&name) => {
                let entry = widget_entry(widgets, name);
                for (option, value) in options {
                    entry.insert(option, value);
                }
            }
            _ => ignored.push(format!("widgets.{field}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `create_agent_config` writes with its defaults (all widgets and tools on).
    fn builder_output() -> Value {
        json!({
            "fleet_server": {"url": "https://fleet.example.com:8778", "api_key": "k", "encryption_key": null},
            "dashboard_auth": {"enabled": true, "auth_mode": "local"},
            "agent": {"report_interval": 30, "retry_attempts": 3, "retry_delay": 5},
            "widgets": {"enabled": true, "order": ["system_monitor", "wifi"], "log_interval": 300,
                        "system_monitor": true, "wifi": true, "speedtest": true, "ping": false, "processes": true},
            "tools": {"order": ["metrics"], "metrics": true, "logs": true, "commands": false, "autostart": true}
        })
    }

    #[test]
    fn builder_output_maps_what_has_a_meaning_and_lists_the_rest() {
        let value = builder_output();
        assert!(is_atlas_agent_config(&value));
        let Value::Object(file) = value else { panic!("object") };
        let translated = translate(file).expect("translates");
        assert_eq!(
            Value::Object(translated.native),
            json!({
                "server_url": "https://fleet.example.com:8778", "api_key": "k", "interval": 30,
                "widget_log_interval": 300, "commands": {"allow": []},
                "widgets": {"wifi": {"enabled": true}, "speedtest": {"enabled": true}, "ping": {"enabled": false}}
            })
        );
        assert_eq!(
            translated.ignored,
            [
                "agent.retry_attempts",
                "agent.retry_delay",
                "dashboard_auth",
                "tools.autostart",
                "tools.metrics",
                "tools.order",
                "widgets.order",
                "widgets.processes",
                "widgets.system_monitor"
            ]
        );
    }

    #[test]
    fn widget_logs_off_and_native_keys_and_conflicts() {
        let file = json!({
            "fleet_server": {"url": "http://127.0.0.1:1", "extra": 1}, "widgets": {"enabled": false, "ping_interval": 5},
            "machine_id": "m1", "spool": {"dir": "/tmp/x"}
        });
        let Value::Object(file) = file else { panic!("object") };
        let translated = translate(file).expect("translates");
        assert_eq!(translated.native["machine_id"], "m1");
        assert_eq!(translated.native["widgets"]["ping"], json!({"interval": 5, "enabled": false}));
        assert_eq!(translated.native["widgets"]["wifi"]["enabled"], false);
        assert_eq!(translated.ignored, ["fleet_server.extra"]);

        let file = json!({"fleet_server": {"url": 5}, "server_url": "http://x", "agent": {"report_interval": "x"}});
        let Value::Object(file) = file else { panic!("object") };
        let fields: Vec<String> = translate(file).expect_err("bad").into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["agent.report_interval", "fleet_server.url"]);
        let file = json!({"fleet_server": {"url": "http://a"}, "server_url": "http://b"});
        let Value::Object(file) = file else { panic!("object") };
        assert_eq!(translate(file).expect_err("conflict")[0].0, "server_url");
    }
}
