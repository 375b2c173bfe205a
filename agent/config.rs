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

use crate::sender::commands::CommandAction;
use crate::transport_key::KeySource;
use fleet_wire::keys::{Key32, SecretString};

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
/// Longest accepted `machine_id`, bytes (the wire contract's limit, which the receiver applies too).
pub const MAX_MACHINE_ID_BYTES: usize = fleet_wire::MAX_MACHINE_ID_BYTES;
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
    server_cert_sha256: Option<OneOrMany>,
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
            | "server_cert_sha256"
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

/// A string or a list of strings (`server_cert_sha256`: one pin, or several during a renewal).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
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
    /// The config file says `"enabled": true` (not just the widget's default): `once` runs
    /// network widgets without `--network` only then.
    pub enabled_explicitly: bool,
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
    /// SHA-256 fingerprints of the server certificates accepted as they are (a self-signed
    /// server); when non-empty, no other certificate is accepted.
    pub server_cert_sha256: Vec<[u8; 32]>,
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
    /// An environment variable that overrides a field has an unacceptable value.
    Env {
        /// The variable (`FLEET_ENCRYPTION_KEY`).
        var: &'static str,
        /// What is wrong.
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
            ConfigError::Field { path: None, field, problem } => {
                write!(f, "config (built-in defaults): field `{field}`: {problem}")
            }
            ConfigError::Env { var, problem } => write!(f, "environment variable {var}: {problem}"),
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
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let raw = match path {
            None => RawConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| vec![ConfigError::Read { path: path.to_path_buf(), error }])?;
                let (raw, problems, translated) = parse_file(path, &text);
                errors.extend(problems);
                warnings = translated;
                if raw.api_key.is_some() || raw.encryption_key.is_some() {
                    if let Err(e) = check_private(path) {
                        errors.push(e);
                    }
                }
                raw
            }
        };
        // A file that is not JSON at all has nothing more to check.
        if errors.iter().any(|e| matches!(e, ConfigError::Parse { message, .. } if message.starts_with(SYNTAX))) {
            return Err(errors);
        }
        match resolve(raw, path, env) {
            Ok(mut config) if errors.is_empty() => {
                config.warnings = warnings;
                Ok(config)
            }
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }
}

/// Parse a config file: ours (see [`parse_raw`]), or an Atlas `agent-config.json` (see
/// [`crate::atlas_config`]), which is translated first. Returns what could be read, every
/// problem, and the warnings of a translation.
fn parse_file(path: &Path, text: &str) -> (RawConfig, Vec<ConfigError>, Vec<String>) {
    let parse_error = |message: String| ConfigError::Parse { path: path.to_path_buf(), message };
    if let Ok(Value::Object(file)) = serde_json::from_str::<Value>(text) {
        if crate::atlas_config::is_atlas_agent_config(&Value::Object(file.clone())) {
            let translated = match crate::atlas_config::translate(file) {
                Ok(translated) => translated,
                Err(problems) => {
                    let errors = problems
                        .into_iter()
                        .map(|(field, problem)| ConfigError::Field { path: Some(path.to_path_buf()), field, problem })
                        .collect();
                    return (RawConfig::default(), errors, Vec::new());
                }
            };
            let native = serde_json::to_string(&Value::Object(translated.native)).unwrap_or_default();
            let (raw, problems) = parse_raw(&native);
            let mut warnings = Vec::new();
            if !translated.ignored.is_empty() {
                warnings.push(format!(
                    "config {} is an Atlas agent-config.json; ignoring what has no meaning for this agent: {}",
                    path.display(),
                    translated.ignored.join(", ")
                ));
            }
            return (raw, problems.into_iter().map(parse_error).collect(), warnings);
        }
    }
    let (raw, problems) = parse_raw(text);
    (raw, problems.into_iter().map(parse_error).collect(), Vec::new())
}

/// How a JSON syntax error's message starts.
const SYNTAX: &str = "not valid JSON: ";

/// Parse the file strictly: what could be read (every member that was fine) and one message
/// per bad member (none when all is well), so `validate` lists every problem at once rather
/// than serde's first. A syntax error gives one message starting with [`SYNTAX`].
fn parse_raw(text: &str) -> (RawConfig, Vec<String>) {
    let error = match serde_json::from_str::<RawConfig>(text) {
        Ok(raw) => return (raw, Vec::new()),
        Err(error) => error,
    };
    let value = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return (RawConfig::default(), vec![format!("must be a JSON object ({error})")]),
        Err(syntax) => return (RawConfig::default(), vec![format!("{SYNTAX}{syntax}")]),
    };
    // Each member on its own: every field is optional, so `{key: value}` fails only for that key.
    let mut good = Map::new();
    let mut problems = Vec::new();
    for (key, value) in value {
        let alone = Value::Object(Map::from_iter([(key.clone(), value.clone())]));
        match serde_json::from_value::<RawConfig>(alone) {
            Ok(_) => {
                good.insert(key, value);
            }
            Err(e) => match (key.as_str(), value) {
                ("spool", Value::Object(spool)) => {
                    let mut good_spool = Map::new();
                    for (sub, v) in spool {
                        let alone = serde_json::json!({ "spool": { sub.clone(): v.clone() } });
                        match serde_json::from_value::<RawConfig>(alone) {
                            Ok(_) => {
                                good_spool.insert(sub, v);
                            }
                            Err(e) => problems.push(friendly(&format!("spool.{sub}"), &e.to_string())),
                        }
                    }
                    good.insert(key, Value::Object(good_spool));
                }
                _ => problems.push(friendly(&key, &e.to_string())),
            },
        }
    }
    let raw = serde_json::from_value::<RawConfig>(Value::Object(good)).unwrap_or_default();
    (raw, problems)
}

/// serde's message about `field`, in the words of the README: ``field `interval`: must be a
/// number of seconds, found string "x"`` rather than ``invalid type: string "x", expected f64``.
fn friendly(field: &str, message: &str) -> String {
    if message.starts_with("unknown field") {
        // serde: "unknown field `colour`, expected one of `server_url`, …": add the likely one.
        let quoted = |s: &str| s.split('`').skip(1).step_by(2).map(str::to_string).collect::<Vec<_>>();
        let names = quoted(message);
        if let Some((unknown, known)) = names.split_first() {
            if let Some(near) = closest(unknown, known.iter().map(String::as_str)) {
                return format!("{message} (did you mean `{near}`?)");
            }
        }
        return message.to_string();
    }
    if message.contains("untagged enum OneOrMany") {
        return format!("field `{field}`: must be a string or a list of strings");
    }
    let Some(rest) = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: ")) else {
        return format!("field `{field}`: {message}");
    };
    let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let seconds = field == "interval" || field.ends_with("_interval") || field.ends_with("interval_s");
    let wanted = match expected {
        "f64" | "f32" if seconds => "a number of seconds".to_string(),
        "f64" | "f32" => "a number".to_string(),
        "u64" | "u32" | "usize" if field.ends_with("bytes") => "a whole number of bytes".to_string(),
        "u64" | "u32" | "usize" => "a whole number".to_string(),
        "a boolean" => "true or false".to_string(),
        "string or list of strings" | "untagged enum OneOrMany" => "a string or a list of strings".to_string(),
        "struct RawSpool" => "an object".to_string(),
        "a map" => "an object".to_string(),
        other => other.to_string(),
    };
    format!("field `{field}`: must be {wanted}, found {found}")
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

/// A key that does not decode, with the way to a good one (and a word on hex, the usual
/// mistake: `openssl rand -hex 32`).
fn key_problem(text: &str, error: &fleet_wire::keys::KeyError) -> String {
    let hint = "keys are standard base64 of 32 bytes; make one with `fleet-agent keygen`";
    let trimmed = text.trim();
    if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("looks like hex (64 hex digits), not base64: {hint}")
    } else {
        format!("{error}: {hint}")
    }
}

/// The candidate within two edits of `name` (a typo), if exactly one is closest.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut previous = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let substitution = previous + usize::from(ca != *cb);
                previous = row[j + 1];
                row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
            }
        }
        row[b.len()]
    }
    // The candidates within two edits, the nearest one and how many share its distance: one
    // pass, no sort (a sort of `(usize, &str)` linked its own 7 KB copy of the sort code).
    let (mut within, mut nearest, mut at_nearest) = (0, None::<(usize, &str)>, 0);
    for candidate in candidates {
        let d = distance(name, candidate);
        if d > 2 {
            continue;
        }
        within += 1;
        match nearest {
            Some((best, _)) if best < d => {}
            Some((best, _)) if best == d => at_nearest += 1,
            _ => (nearest, at_nearest) = (Some((d, candidate)), 1),
        }
    }
    match nearest? {
        // The only one within reach: a suggestion unless it is the name itself.
        (d, only) if within == 1 => Some(only).filter(|_| d > 0),
        // Several: the nearest, if no other is as near.
        (_, first) if at_nearest == 1 => Some(first),
        _ => None,
    }
}

/// `server_url` is a base URL: scheme, host, optional port; no credentials (they would be sent
/// as Basic auth and written to the spool's `state.bin`), no path, query or fragment (the agent
/// appends its own paths).
pub fn check_server_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("must start with https:// or http://, found {url:?}"));
    };
    if scheme != "https" && scheme != "http" {
        return Err(format!("must start with https:// or http://, found {url:?}"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err("holds credentials (user:password@): they would be sent and stored in clear; remove them \
                    and put the server's key in api_key"
            .to_string());
    }
    if authority.is_empty() {
        return Err(format!("has no host, found {url:?}"));
    }
    let port = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, after)) => after.strip_prefix(':'),
            None => return Err(format!("has an unclosed IPv6 bracket, found {url:?}")),
        },
        None => authority.rsplit_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("has a bad port {port:?}"));
        }
    }
    if !(tail.is_empty() || tail == "/") {
        return Err(format!(
            "must be the server's base URL without a path, query or fragment (the agent adds /api/…): \
             use {scheme}://{authority}, found {url:?}"
        ));
    }
    Ok(())
}

/// A SHA-256 fingerprint as `openssl x509 -fingerprint -sha256` prints it (`AB:CD:…`) or as 64
/// hex digits; case does not matter.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let text =
        text.strip_prefix("sha256 Fingerprint=").or_else(|| text.strip_prefix("SHA256 Fingerprint=")).unwrap_or(text);
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let problem = || {
        format!(
            "must be the certificate's SHA-256 fingerprint, 64 hex digits (colons allowed), as printed by \
             `openssl x509 -noout -fingerprint -sha256 -in server.pem`; found {text:?}"
        )
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(problem());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| problem())?;
    }
    Ok(out)
}

fn resolve(raw: RawConfig, path: Option<&Path>, env: &dyn Env) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut field_error = |field: &str, problem: String| {
        errors.push(ConfigError::Field { path: path.map(Path::to_path_buf), field: field.to_string(), problem });
    };

    let server_url = raw.server_url.filter(|s| !s.is_empty());
    if let Some(url) = &server_url {
        if let Err(problem) = check_server_url(url) {
            field_error("server_url", problem);
        }
    }

    let api_key = env.var(ENV_API_KEY).or(raw.api_key).filter(|k| !k.is_empty()).map(SecretString::new);

    let mut env_errors = Vec::new();
    let encryption_key_source =
        if env.var(ENV_ENCRYPTION_KEY).is_some() { KeySource::Environment } else { KeySource::Config };
    let encryption_key = match env.var(ENV_ENCRYPTION_KEY) {
        Some(text) => Key32::from_base64(&text)
            .map_err(|e| env_errors.push(ConfigError::Env { var: ENV_ENCRYPTION_KEY, problem: key_problem(&text, &e) }))
            .ok(),
        None => match raw.encryption_key.filter(|k| !k.is_empty()) {
            None => None,
            Some(text) => {
                Key32::from_base64(&text).map_err(|e| field_error("encryption_key", key_problem(&text, &e))).ok()
            }
        },
    };

    let verify_ssl = raw.verify_ssl.unwrap_or(true);
    let pins = match raw.server_cert_sha256 {
        None => Vec::new(),
        Some(OneOrMany::One(text)) => vec![text],
        Some(OneOrMany::Many(list)) => list,
    };
    let mut server_cert_sha256 = Vec::new();
    for (i, text) in pins.iter().enumerate() {
        match parse_fingerprint(text) {
            Ok(pin) => server_cert_sha256.push(pin),
            Err(problem) => {
                let field =
                    if pins.len() == 1 { "server_cert_sha256".to_string() } else { format!("server_cert_sha256[{i}]") };
                field_error(&field, problem);
            }
        }
    }
    if !pins.is_empty() {
        if !verify_ssl {
            field_error("server_cert_sha256", "pins a certificate, but verify_ssl is false: remove one of them".into());
        }
        if raw.ca_file.is_some() {
            field_error(
                "server_cert_sha256",
                "and ca_file are alternatives (a pinned certificate or a CA): keep one".into(),
            );
        }
        if server_url.as_deref().is_some_and(|u| u.starts_with("http://")) {
            field_error("server_cert_sha256", "needs an https:// server_url".into());
        }
    }

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
        match std::fs::read_to_string(ca) {
            Err(e) => field_error("ca_file", format!("{} is not a readable file: {e}", ca.display())),
            Ok(pem) if !pem.contains("-----BEGIN CERTIFICATE-----") => field_error(
                "ca_file",
                format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", ca.display()),
            ),
            Ok(_) => {}
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

    errors.extend(env_errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        path: path.map(Path::to_path_buf),
        server_url,
        api_key,
        encryption_key,
        verify_ssl,
        interval,
        machine_id,
        protocol,
        ca_file: raw.ca_file,
        server_cert_sha256,
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
            let hint =
                closest(name, names.iter().copied()).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
            field_error(&format!("widgets.{name}"), format!("unknown widget (known: {}){hint}", names.join(", ")));
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
        let enabled_option = options.remove("enabled");
        let enabled_explicitly = enabled_option == Some(Value::Bool(true));
        let enabled = match enabled_option {
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
            let problem = match problem.strip_prefix("unknown option `").and_then(|r| r.split_once('`')) {
                Some((unknown, rest)) => {
                    // The widget lists its options as "(ping options: a, b, c)".
                    let listed = rest.split_once("options: ").map_or("", |(_, l)| l.trim_end_matches(')'));
                    let known = listed.split(", ").filter(|o| !o.is_empty()).chain(["enabled", "interval", "jitter"]);
                    let hint = closest(unknown, known).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
                    format!("{problem}; every widget also takes enabled, interval and jitter{hint}")
                }
                None => problem,
            };
            field_error(&format!("widgets.{}", spec.name), problem);
        }
        widgets.push(WidgetConfig { name: spec.name, enabled, enabled_explicitly, interval, jitter, options });
    }
    widgets
}

fn sysinfo_hostname() -> String {
    fleet_widgets::machine::hostname()
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
        let errors = resolve_json("{}", &bad_env).err().expect("bad env key");
        assert!(matches!(errors.as_slice(), [ConfigError::Env { var: ENV_ENCRYPTION_KEY, .. }]), "{errors:?}");
        let text = errors[0].to_string();
        assert!(
            text.starts_with("environment variable FLEET_ENCRYPTION_KEY: ") && !text.contains("config.json"),
            "{text}"
        );
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
    fn every_bad_member_is_named_in_plain_words() {
        let text = r#"{"interval":"x","colour":1,"spool":{"max_bytes":"big","fsync":"batch"},"machine_id":[1,2],
            "widgets":[1],"verify_ssl":"yes","server_cert_sha256":5}"#;
        let (raw, problems) = parse_raw(text);
        let all = problems.join("\n");
        for want in [
            "field `interval`: must be a number of seconds, found string \"x\"",
            "unknown field `colour`, expected one of",
            "field `spool.max_bytes`: must be a whole number of bytes, found string \"big\"",
            "field `machine_id`: must be a string, found sequence",
            "field `widgets`: must be an object, found sequence",
            "field `verify_ssl`: must be true or false",
            "field `server_cert_sha256`: must be a string or a list of strings",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
        assert!(!all.contains("f64"), "no serde type names: {all}");
        assert_eq!(raw.spool.and_then(|s| s.fsync).as_deref(), Some("batch"), "the good members are kept");
        let (_, syntax) = parse_raw(r#"{"interval": 10,"#);
        assert!(syntax.len() == 1 && syntax[0].starts_with(SYNTAX), "{syntax:?}");
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("intervall", ["interval", "machine_id"].into_iter()), Some("interval"));
        assert_eq!(closest("zzz", ["interval"].into_iter()), None);
        // Exactly one within reach: suggested unless it is the name itself.
        assert_eq!(closest("interval", ["interval"].into_iter()), None);
        assert_eq!(closest("interva", ["zzz", "interval"].into_iter()), Some("interval"));
        // Several within reach: the nearest if it is the only one that near (an exact match too).
        assert_eq!(closest("interval", ["intervals", "interval"].into_iter()), Some("interval"));
        assert_eq!(closest("colour", ["colours", "color"].into_iter()), None);
        assert_eq!(closest("colour", ["colour2", "color", "cilor"].into_iter()), None);
        assert_eq!(closest("colour", ["cilor", "colour22", "colours"].into_iter()), Some("colours"));
        assert_eq!(closest("ab", ["ab", "ab"].into_iter()), None);
        let (_, problems) = parse_raw(r#"{"sever_url":"https://x","widgets":{"pign":{}}}"#);
        assert!(problems[0].contains("did you mean `server_url`?"), "{problems:?}");
        let errors = resolve_json(r#"{"widgets":{"pign":{}}}"#, &MapEnv(vec![])).err().expect("unknown widget");
        assert!(errors[0].to_string().contains("did you mean `ping`?"), "{}", errors[0]);
        let errors = resolve_json(r#"{"widgets":{"ping":{"targetz":[]},"cpu":{"intervall":5}}}"#, &MapEnv(vec![]))
            .err()
            .expect("unknown options");
        let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(text.contains("did you mean `targets`?") && text.contains("did you mean `interval`?"), "{text}");
    }

    #[test]
    fn server_urls_are_base_urls_without_credentials() {
        for good in [
            "https://fleet.example.com",
            "https://fleet.example.com:8443/",
            "http://127.0.0.1:8768",
            "https://[::1]:443",
        ] {
            assert_eq!(check_server_url(good), Ok(()), "{good}");
        }
        let cases = [
            ("https://user:s3cr3t@fleet.example.com", "credentials"),
            ("https://fleet.example.com/api/fleet", "without a path"),
            ("https://fleet.example.com?x=1", "without a path"),
            ("ftp://fleet.example.com", "https://"),
            ("https://", "no host"),
            ("https://fleet.example.com:99999", "bad port"),
        ];
        for (url, needle) in cases {
            let problem = check_server_url(url).expect_err(url);
            assert!(problem.contains(needle), "{url}: {problem}");
            assert!(!problem.contains("s3cr3t"), "the password is not echoed: {problem}");
        }
    }

    #[test]
    fn fingerprints_in_openssl_or_plain_hex() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colons), Ok([0xab; 32]));
        assert_eq!(parse_fingerprint(&format!("sha256 Fingerprint={colons}")), Ok([0xab; 32]));
        assert_eq!(parse_fingerprint(&"0f".repeat(32)), Ok([0x0f; 32]));
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        let pinned = resolve_json(
            &format!(r#"{{"server_url":"https://h","server_cert_sha256":["{colons}","{}"]}}"#, "01".repeat(32)),
            &MapEnv(vec![]),
        )
        .map_err(|e| e.len())
        .expect("two pins");
        assert_eq!(pinned.server_cert_sha256.len(), 2);
        let conflicts = field_errors(resolve_json(
            &format!(
                r#"{{"server_url":"http://h","verify_ssl":false,"ca_file":"/nonexistent.pem","server_cert_sha256":"{colons}"}}"#
            ),
            &MapEnv(vec![]),
        ));
        assert_eq!(conflicts.iter().filter(|f| *f == "server_cert_sha256").count(), 3, "{conflicts:?}");
    }

    #[test]
    fn key_errors_point_at_keygen_and_recognise_hex() {
        let hex = "00".repeat(32);
        let error =
            resolve_json(&format!(r#"{{"encryption_key":"{hex}"}}"#), &MapEnv(vec![])).err().expect("hex refused");
        let text = error.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(text.contains("looks like hex") && text.contains("fleet-agent keygen"), "{text}");
        let error = resolve_json(r#"{"encryption_key":"c2hvcnQ="}"#, &MapEnv(vec![])).err().expect("short");
        assert!(error[0].to_string().contains("5 bytes") && error[0].to_string().contains("keygen"));
    }
}
