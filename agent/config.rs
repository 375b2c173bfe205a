//! Configuration: a JSON file, a superset of the Atlas agent's `config.json`.
//!
//! Loading is two steps: parse the raw file strictly (unknown keys are errors naming the key),
//! then resolve it into a validated [`Config`] (keys decoded, paths and intervals checked,
//! environment overrides applied). Every field, its default and meaning is listed in the
//! README's "Configuration" section; keep the two in sync.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_widgets::{WidgetOptions, ALL};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::keys::{Key32, SecretString};
use crate::sender::commands::CommandAction;
use crate::transport_key::KeySource;

/// Environment variable that overrides `encryption_key`.
pub const ENV_ENCRYPTION_KEY: &str = "FLEET_ENCRYPTION_KEY";
/// Environment variable that overrides `api_key`.
pub const ENV_API_KEY: &str = "FLEET_API_KEY";

/// Default config file location on this OS.
pub fn default_config_path() -> PathBuf {
    if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/FleetAgent/config.json")
    } else {
        PathBuf::from("/etc/fleet-agent/config.json")
    }
}

/// Default spool (state) directory on this OS.
pub fn default_spool_dir() -> PathBuf {
    if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/FleetAgent/spool")
    } else {
        PathBuf::from("/var/lib/fleet-agent")
    }
}

/// Default collection interval, seconds (the Atlas agent's default).
pub const DEFAULT_INTERVAL_S: f64 = 10.0;
/// Default spool cap.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default spool segment size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024;
/// Longest accepted `machine_id`, bytes.
pub const MAX_MACHINE_ID_BYTES: usize = 128;
/// Default `send_interval`, seconds: a laptop's radio wakes for a push every 20 s at most, and
/// the Atlas dashboard (online within 30 s of the last report) never shows it as late.
pub const DEFAULT_SEND_INTERVAL_S: f64 = 20.0;
/// `send_interval` bounds with the Atlas protocol: at least Atlas's own report interval (so no
/// more requests than its agent makes), at most its 30 s online window.
pub const ATLAS_SEND_INTERVAL_S: (f64, f64) = (10.0, 30.0);
/// Default `widget_log_interval`, seconds.
pub const DEFAULT_WIDGET_LOG_INTERVAL_S: f64 = 120.0;

/// The config file exactly as written. Unknown keys are rejected by serde with the key's name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server_url: Option<String>,
    api_key: Option<String>,
    encryption_key: Option<String>,
    verify_ssl: Option<bool>,
    interval: Option<f64>,
    machine_id: Option<String>,
    protocol: Option<String>,
    ca_file: Option<PathBuf>,
    spool: Option<RawSpool>,
    widgets: Option<Map<String, Value>>,
    log_level: Option<String>,
    send_interval: Option<f64>,
    widget_log_interval: Option<f64>,
    commands: Option<RawCommands>,
}

/// The top-level keys of our own config format (an Atlas `agent-config.json` may carry them).
pub fn is_native_key(key: &str) -> bool {
    matches!(
        key,
        "server_url"
            | "api_key"
            | "encryption_key"
            | "verify_ssl"
            | "interval"
            | "machine_id"
            | "protocol"
            | "ca_file"
            | "spool"
            | "widgets"
            | "log_level"
            | "send_interval"
            | "widget_log_interval"
            | "commands"
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommands {
    allow: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
    segment_bytes: Option<u64>,
    fsync: Option<String>,
}

/// Which server protocol the sender speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The Atlas fleet server (`/api/fleet/report`, `/api/fleet/widget-logs`, v1 envelopes).
    Atlas,
    /// Sealed sequenced batches (`/api/v2/batches`).
    V2,
}

impl Protocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Atlas => "atlas",
            Protocol::V2 => "v2",
        }
    }
}

/// When the spool calls `fsync` (see the spool module for what each can lose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record frame.
    Always,
    /// Once per `append` call (one collection cycle). The default.
    Batch,
    /// Never; the OS flushes when it likes.
    Never,
}

/// Validated spool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory holding segments, keys and cursors.
    pub dir: PathBuf,
    /// Cap on the bytes of all segments; the oldest segment is dropped past it.
    pub max_bytes: u64,
    /// Size at which a segment is closed and a new one started.
    pub segment_bytes: u64,
    /// Durability policy.
    pub fsync: FsyncPolicy,
}

/// One widget's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WidgetConfig {
    /// Registry name.
    pub name: &'static str,
    /// Whether it runs.
    pub enabled: bool,
    /// How often it runs.
    pub interval: Duration,
    /// Up to this much random delay is added to every run (including the first).
    pub jitter: Duration,
    /// Widget-specific options (already validated by the widget).
    pub options: WidgetOptions,
}

/// The validated configuration the agent runs with.
pub struct Config {
    /// The file it came from (`None` = built-in defaults).
    pub path: Option<PathBuf>,
    /// Base URL of the server, e.g. `https://fleet.example.com:8443`.
    pub server_url: Option<String>,
    /// Sent as `X-API-Key`.
    pub api_key: Option<SecretString>,
    /// Transport key; when set, nothing is sent in plaintext.
    pub encryption_key: Option<Key32>,
    /// Verify the server's TLS certificate (Atlas compatibility allows `false`, with a warning).
    pub verify_ssl: bool,
    /// Global collection interval (and the default of each widget).
    pub interval: Duration,
    /// This machine's identity on the server.
    pub machine_id: String,
    /// Server protocol.
    pub protocol: Protocol,
    /// Extra PEM CA bundle trusted beside the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Spool settings.
    pub spool: SpoolConfig,
    /// Every registry widget, enabled or not, in registry order.
    pub widgets: Vec<WidgetConfig>,
    /// Log verbosity.
    pub log_level: log::LevelFilter,
    /// Longest time between two pushes (Atlas: reports) when there is something to send.
    pub send_interval: Duration,
    /// Atlas: widget logs go with the report at most this often (sooner while catching up).
    pub widget_log_interval: Duration,
    /// Atlas command channel: the actions this agent executes when the server asks.
    pub commands_allow: Vec<CommandAction>,
    /// Where `encryption_key` came from (before a rotated key in the state directory, see
    /// [`crate::transport_key::resolve`]).
    pub encryption_key_source: KeySource,
    /// Things to log at start (not errors): e.g. keys of an Atlas `agent-config.json` ignored.
    pub warnings: Vec<String>,
}

/// A configuration problem. Every variant names the file (when there is one) and the field.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is not valid JSON or has an unknown key or a value of the wrong type.
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message (names the key and line).
        message: String,
    },
    /// A field's value is not acceptable.
    Field {
        /// The file, or `None` for defaults/environment.
        path: Option<PathBuf>,
        /// The field, dotted (`spool.fsync`, `widgets.ping.targets`).
        field: String,
        /// What is wrong and what was found.
        problem: String,
    },
    /// The file holds a secret but group or others can read it.
    InsecureMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "reading config {}: {error}", path.display()),
            ConfigError::Parse { path, message } => write!(f, "config {}: {message}", path.display()),
            ConfigError::Field { path: Some(path), field, problem } => {
                write!(f, "config {}: field `{field}`: {problem}", path.display())
            }
            ConfigError::Field { path: None, field, problem } => write!(f, "config: field `{field}`: {problem}"),
            ConfigError::InsecureMode { path, mode } => write!(
                f,
                "config {} holds a key but has mode {mode:04o} (readable by group or others); run: chmod 600 {}",
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Where secrets that override the file come from (the process environment in production,
/// a map in tests).
pub trait Env {
    /// The variable's value, if set and non-empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Load `path`, or the built-in defaults when `path` is `None`, applying the process
    /// environment overrides. Returns every problem found, not just the first.
    pub fn load(path: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
        Self::load_with_env(path, &ProcessEnv)
    }

    /// [`Config::load`] with an explicit environment.
    pub fn load_with_env(path: Option<&Path>, env: &dyn Env) -> Result<Config, Vec<ConfigError>> {
        let raw = match path {
            None => RawConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| vec![ConfigError::Read { path: path.to_path_buf(), error }])?;
                let (raw, warnings) = parse_file(path, &text)?;
                if raw.api_key.is_some() || raw.encryption_key.is_some() {
                    check_private(path).map_err(|e| vec![e])?;
                }
                let mut config = resolve(raw, Some(path), env)?;
                config.warnings.extend(warnings);
                return Ok(config);
            }
        };
        resolve(raw, path, env)
    }
}

/// Parse a config file: ours, or an Atlas `agent-config.json` (see [`crate::atlas_config`]),
/// which is translated first; returns the warnings the translation made.
fn parse_file(path: &Path, text: &str) -> Result<(RawConfig, Vec<String>), Vec<ConfigError>> {
    let parse_error = |message: String| vec![ConfigError::Parse { path: path.to_path_buf(), message }];
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        if crate::atlas_config::is_atlas_agent_config(&value) {
            let Value::Object(file) = value else { return Err(parse_error("not a JSON object".into())) };
            let translated = crate::atlas_config::translate(file).map_err(|problems| {
                problems
                    .into_iter()
                    .map(|(field, problem)| ConfigError::Field { path: Some(path.to_path_buf()), field, problem })
                    .collect::<Vec<_>>()
            })?;
            let raw: RawConfig =
                serde_json::from_value(Value::Object(translated.native)).map_err(|e| parse_error(e.to_string()))?;
            let mut warnings = Vec::new();
            if !translated.ignored.is_empty() {
                warnings.push(format!(
                    "config {} is an Atlas agent-config.json; ignoring what has no meaning for this agent: {}",
                    path.display(),
                    translated.ignored.join(", ")
                ));
            }
            return Ok((raw, warnings));
        }
    }
    let raw = serde_json::from_str(text).map_err(|e| parse_error(parse_message(text, &e)))?;
    Ok((raw, Vec::new()))
}

/// Refuse a secret-holding file readable by group or others.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::InsecureMode { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

/// Checks a machine id: non-empty, at most 128 bytes, no control characters.
pub fn validate_machine_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".to_string());
    }
    if id.len() > MAX_MACHINE_ID_BYTES {
        return Err(format!("is {} bytes long, at most {MAX_MACHINE_ID_BYTES} allowed", id.len()));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!("holds control character {c:?}"));
    }
    Ok(())
}

fn parse_interval(field: &str, seconds: f64) -> Result<Duration, String> {
    if !seconds.is_finite() || !(0.05..=86_400.0).contains(&seconds) {
        return Err(format!("must be between 0.05 and 86400 seconds, found {seconds}"));
    }
    let _ = field;
    Ok(Duration::from_secs_f64(seconds))
}

fn resolve(raw: RawConfig, path: Option<&Path>, env: &dyn Env) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut field_error = |field: &str, problem: String| {
        errors.push(ConfigError::Field { path: path.map(Path::to_path_buf), field: field.to_string(), problem });
    };

    let server_url = raw.server_url.filter(|s| !s.is_empty());
    if let Some(url) = &server_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < "http://x".len() {
            field_error("server_url", format!("must start with https:// or http://, found {url:?}"));
        }
    }

    let api_key = env.var(ENV_API_KEY).or(raw.api_key).filter(|k| !k.is_empty()).map(SecretString::new);

    let (key_text, key_field, encryption_key_source) = match env.var(ENV_ENCRYPTION_KEY) {
        Some(text) => (Some(text), ENV_ENCRYPTION_KEY, KeySource::Environment),
        None => (raw.encryption_key.filter(|k| !k.is_empty()), "encryption_key", KeySource::Config),
    };
    let encryption_key = match key_text {
        None => None,
        Some(text) => match Key32::from_base64(&text) {
            Ok(key) => Some(key),
            Err(e) => {
                field_error(key_field, e.to_string());
                None
            }
        },
    };

    let interval_s = raw.interval.unwrap_or(DEFAULT_INTERVAL_S);
    let interval = parse_interval("interval", interval_s).unwrap_or_else(|problem| {
        field_error("interval", problem);
        Duration::from_secs_f64(DEFAULT_INTERVAL_S)
    });

    let machine_id = match raw.machine_id {
        Some(id) => id,
        None => sysinfo_hostname(),
    };
    if let Err(problem) = validate_machine_id(&machine_id) {
        field_error("machine_id", problem);
    }

    let protocol = match raw.protocol.as_deref() {
        None | Some("atlas") => Protocol::Atlas,
        Some("v2") => Protocol::V2,
        Some(other) => {
            field_error("protocol", format!("must be \"atlas\" or \"v2\", found {other:?}"));
            Protocol::Atlas
        }
    };

    if let Some(ca) = &raw.ca_file {
        if !ca.is_file() {
            field_error("ca_file", format!("{} is not a readable file", ca.display()));
        }
    }

    let raw_spool = raw.spool.unwrap_or_default();
    let fsync = match raw_spool.fsync.as_deref() {
        None | Some("batch") => FsyncPolicy::Batch,
        Some("always") => FsyncPolicy::Always,
        Some("never") => FsyncPolicy::Never,
        Some(other) => {
            field_error("spool.fsync", format!("must be \"always\", \"batch\" or \"never\", found {other:?}"));
            FsyncPolicy::Batch
        }
    };
    let segment_bytes = raw_spool.segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES);
    if !(4096..=256 * 1024 * 1024).contains(&segment_bytes) {
        field_error("spool.segment_bytes", format!("must be between 4096 and 268435456, found {segment_bytes}"));
    }
    let max_bytes = raw_spool.max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
    if max_bytes < 2 * segment_bytes {
        field_error(
            "spool.max_bytes",
            format!("must be at least twice spool.segment_bytes ({}), found {max_bytes}", 2 * segment_bytes),
        );
    }
    let spool = SpoolConfig { dir: raw_spool.dir.unwrap_or_else(default_spool_dir), max_bytes, segment_bytes, fsync };

    let widgets = resolve_widgets(raw.widgets.unwrap_or_default(), interval, &mut field_error);

    let log_level = match raw.log_level.as_deref() {
        None => log::LevelFilter::Info,
        Some(text) => match text.parse::<log::LevelFilter>() {
            Ok(level) => level,
            Err(_) => {
                field_error("log_level", format!("must be off, error, warn, info, debug or trace, found {text:?}"));
                log::LevelFilter::Info
            }
        },
    };

    let (send_interval, widget_log_interval) =
        resolve_send_intervals(raw.send_interval, raw.widget_log_interval, protocol, &mut field_error);
    let commands_allow = resolve_commands(raw.commands.unwrap_or_default(), &mut field_error);

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        path: path.map(Path::to_path_buf),
        server_url,
        api_key,
        encryption_key,
        verify_ssl: raw.verify_ssl.unwrap_or(true),
        interval,
        machine_id,
        protocol,
        ca_file: raw.ca_file,
        spool,
        widgets,
        log_level,
        send_interval,
        widget_log_interval,
        commands_allow,
        encryption_key_source,
        warnings: Vec::new(),
    })
}

/// `send_interval` (Atlas: 10..=30 s) and `widget_log_interval`, with their defaults.
fn resolve_send_intervals(
    send: Option<f64>,
    widget_logs: Option<f64>,
    protocol: Protocol,
    field_error: &mut impl FnMut(&str, String),
) -> (Duration, Duration) {
    let send_s = send.unwrap_or(DEFAULT_SEND_INTERVAL_S);
    let (low, high) = ATLAS_SEND_INTERVAL_S;
    let send_interval = match parse_interval("send_interval", send_s) {
        Ok(_) if protocol == Protocol::Atlas && !(low..=high).contains(&send_s) => {
            field_error(
                "send_interval",
                format!(
                    "must be between {low} and {high} seconds with protocol \"atlas\" (Atlas's own agent reports \
                     every 10 s, and its dashboard shows a machine as late 30 s after its last report), found {send_s}"
                ),
            );
            Duration::from_secs_f64(DEFAULT_SEND_INTERVAL_S)
        }
        Ok(interval) => interval,
        Err(problem) => {
            field_error("send_interval", problem);
            Duration::from_secs_f64(DEFAULT_SEND_INTERVAL_S)
        }
    };
    let widget_log_interval =
        parse_interval("widget_log_interval", widget_logs.unwrap_or(DEFAULT_WIDGET_LOG_INTERVAL_S)).unwrap_or_else(
            |problem| {
                field_error("widget_log_interval", problem);
                Duration::from_secs_f64(DEFAULT_WIDGET_LOG_INTERVAL_S)
            },
        );
    (send_interval, widget_log_interval)
}

/// `commands.allow`: known action names only (a typo must not silently refuse a command).
fn resolve_commands(raw: RawCommands, field_error: &mut impl FnMut(&str, String)) -> Vec<CommandAction> {
    let Some(names) = raw.allow else { return CommandAction::DEFAULT_ALLOW.to_vec() };
    let mut allow = Vec::new();
    for name in names {
        match CommandAction::from_name(&name) {
            Some(action) if !allow.contains(&action) => allow.push(action),
            Some(_) => {}
            None => {
                let known: Vec<&str> = CommandAction::ALL.iter().map(|a| a.name()).collect();
                field_error("commands.allow", format!("unknown action {name:?} (known: {})", known.join(", ")));
            }
        }
    }
    allow
}

fn resolve_widgets(
    mut raw: Map<String, Value>,
    global_interval: Duration,
    field_error: &mut impl FnMut(&str, String),
) -> Vec<WidgetConfig> {
    let known: BTreeMap<&str, ()> = ALL.iter().map(|spec| (spec.name, ())).collect();
    for name in raw.keys() {
        if !known.contains_key(name.as_str()) {
            let names: Vec<&str> = known.keys().copied().collect();
            field_error(&format!("widgets.{name}"), format!("unknown widget (known: {})", names.join(", ")));
        }
    }
    let mut widgets = Vec::new();
    for spec in ALL {
        let mut options = match raw.remove(spec.name) {
            None => Map::new(),
            Some(Value::Object(map)) => map,
            Some(other) => {
                field_error(&format!("widgets.{}", spec.name), format!("must be an object, found {other}"));
                Map::new()
            }
        };
        let enabled = match options.remove("enabled") {
            None => spec.enabled_by_default,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                field_error(&format!("widgets.{}.enabled", spec.name), format!("must be true or false, found {other}"));
                spec.enabled_by_default
            }
        };
        let default_interval = spec.default_interval_s.map(Duration::from_secs).unwrap_or(global_interval);
        let interval = match options.remove("interval") {
            None => default_interval,
            Some(value) => match value.as_f64().ok_or_else(|| format!("must be a number of seconds, found {value}")) {
                Ok(seconds) => parse_interval("interval", seconds).unwrap_or_else(|problem| {
                    field_error(&format!("widgets.{}.interval", spec.name), problem);
                    default_interval
                }),
                Err(problem) => {
                    field_error(&format!("widgets.{}.interval", spec.name), problem);
                    default_interval
                }
            },
        };
        let jitter = match options.remove("jitter") {
            None => Duration::from_secs(spec.default_jitter_s),
            Some(value) => match value.as_f64().filter(|s| s.is_finite() && (0.0..=86_400.0).contains(s)) {
                Some(seconds) => Duration::from_secs_f64(seconds),
                None => {
                    field_error(
                        &format!("widgets.{}.jitter", spec.name),
                        format!("must be a number of seconds between 0 and 86400, found {value}"),
                    );
                    Duration::from_secs(spec.default_jitter_s)
                }
            },
        };
        if let Err(problem) = (spec.validate)(&options) {
            field_error(&format!("widgets.{}", spec.name), problem);
        }
        widgets.push(WidgetConfig { name: spec.name, enabled, interval, jitter, options });
    }
    widgets
}

fn sysinfo_hostname() -> String {
    fleet_widgets::machine::hostname()
}

/// serde's message, prefixed with the dotted field it is about when serde does not name it
/// (a value of the wrong type: `invalid type: string "x", expected f64 at line 1 column 15`
/// becomes ``field `interval`: invalid type: …``).
fn parse_message(text: &str, error: &serde_json::Error) -> String {
    let message = error.to_string();
    if error.classify() != serde_json::error::Category::Data || message.contains("field `") {
        return message;
    }
    match field_at(text, error.line(), error.column()) {
        Some(field) if !field.is_empty() => format!("field `{field}`: {message}"),
        _ => message,
    }
}

/// The dotted path (`spool.max_bytes`, `widgets.ping.targets[0]`) of the JSON value being
/// read at 1-based `line` and `column` (bytes) of `text`, found by walking the text up to
/// there. `None` when the position is outside `text`.
fn field_at(text: &str, line: usize, column: usize) -> Option<String> {
    enum Frame {
        Object { key: Option<String>, in_key: bool },
        Array { index: usize },
    }
    let line_start: usize = text.split_inclusive('\n').take(line.checked_sub(1)?).map(str::len).sum();
    let end = (line_start + column).min(text.len());
    let bytes = text.as_bytes().get(..end)?;
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let mut last = b' ';
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object { key, in_key: true }) = stack.last_mut() {
                    *key = Some(String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]).into_owned());
                }
            }
            b'{' => stack.push(Frame::Object { key: None, in_key: true }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { in_key, .. }) = stack.last_mut() {
                    *in_key = false;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { in_key, .. }) => *in_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            last = b;
        }
        i += 1;
    }
    // An error reported right after `[` or `{` is about that container, not its contents.
    if matches!(last, b'[' | b'{') {
        stack.pop();
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MapEnv(Vec<(&'static str, &'static str)>);

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        }
    }

    fn resolve_json(json: &str, env: &MapEnv) -> Result<Config, Vec<ConfigError>> {
        let raw: RawConfig = serde_json::from_str(json).expect("test json parses");
        resolve(raw, Some(Path::new("/t/config.json")), env)
    }

    fn field_errors(result: Result<Config, Vec<ConfigError>>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .into_iter()
                .filter_map(|e| match e {
                    ConfigError::Field { field, .. } => Some(field),
                    _ => None,
                })
                .collect(),
        }
    }

    #[test]
    fn defaults_resolve() {
        let config = resolve_json("{}", &MapEnv(vec![])).map_err(|e| e.len()).expect("defaults are valid");
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.protocol, Protocol::Atlas);
        assert!(config.verify_ssl);
        assert_eq!(config.spool.fsync, FsyncPolicy::Batch);
        assert_eq!(config.widgets.len(), ALL.len());
        assert!(!config.machine_id.is_empty());
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let json = r#"{"encryption_key":"c2hvcnQ=","interval":0,"machine_id":"","protocol":"v9",
            "spool":{"fsync":"sometimes"},"widgets":{"cpu":{"enabled":"yes"},"nope":{}},"log_level":"loud"}"#;
        let fields = field_errors(resolve_json(json, &MapEnv(vec![])));
        for expected in [
            "encryption_key",
            "interval",
            "machine_id",
            "protocol",
            "spool.fsync",
            "widgets.nope",
            "widgets.cpu.enabled",
            "log_level",
        ] {
            assert!(fields.iter().any(|f| f == expected), "{expected} not in {fields:?}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let env = MapEnv(vec![(ENV_ENCRYPTION_KEY, key), (ENV_API_KEY, "from-env")]);
        let config = resolve_json(r#"{"api_key":"from-file","encryption_key":"bad"}"#, &env).map_err(|e| e.len());
        let config = config.expect("env key replaces the bad file key");
        assert_eq!(config.api_key.as_ref().map(SecretString::expose), Some("from-env"));
        assert_eq!(config.encryption_key.as_ref().map(|k| k.as_bytes()[31]), Some(31));
        let bad_env = MapEnv(vec![(ENV_ENCRYPTION_KEY, "!!")]);
        assert_eq!(field_errors(resolve_json("{}", &bad_env)), vec![ENV_ENCRYPTION_KEY.to_string()]);
    }

    #[test]
    fn machine_id_limits() {
        assert!(validate_machine_id("laptop-42").is_ok());
        assert!(validate_machine_id("").is_err());
        assert!(validate_machine_id(&"x".repeat(129)).is_err());
        assert!(validate_machine_id(&"x".repeat(128)).is_ok());
        assert!(validate_machine_id("a\nb").is_err());
    }

    #[test]
    fn type_errors_name_the_field() {
        let cases = [
            (r#"{"interval":"x"}"#, "field `interval`: invalid type: string"),
            (r#"{"spool":{"max_bytes":"big"}}"#, "field `spool.max_bytes`: invalid type"),
            (r#"{"machine_id":[1,2]}"#, "field `machine_id`: invalid type: sequence"),
            ("{\n  \"spool\": {\"dir\": \"/x\",\n  \"fsync\": 3}}", "field `spool.fsync`"),
            (r#"{"widgets":[1]}"#, "field `widgets`: invalid type: sequence"),
            (r#"{"bogus":1}"#, "unknown field `bogus`"),
        ];
        for (text, want) in cases {
            let error = serde_json::from_str::<RawConfig>(text).map(|_| ()).expect_err(text);
            let message = parse_message(text, &error);
            assert!(message.starts_with(want) || message.contains(want), "{text}: {message}");
        }
        assert_eq!(field_at(r#"{"a":{"b":["x","y",{"c":"#, 1, 24).as_deref(), Some("a.b[2].c"));
    }
}
