//! The transport (fleet) key in use and where it came from: the config file, the environment,
//! or a remote rotation (`rotate_encryption_key`, see `sender::commands`).
//!
//! A rotated key is kept in the state directory, not in the config: under systemd the config
//! is read-only, and a package upgrade that reinstalls the config must not undo a rotation.
//!
//! # `<spool.dir>/transport-key.json` (mode 0600, written atomically and durably)
//!
//! ```text
//! {"version":1,"key":B64(32 bytes),"kid":K,"replaces":[K0,K1,…],"command_id":S|null,"rotated_at":T}
//! ```
//!
//! - `kid` is the v2 key id of `key` (16 hex digits, `envelope::kid`).
//! - `replaces` lists the key ids this key superseded, oldest first (every rotation appends the
//!   key it replaced), at most [`MAX_REPLACED`].
//! - `command_id` is the Atlas command that produced it: a command delivered again (its ack
//!   was lost) is recognised as done instead of failing to open with the new key.
//!
//! Precedence: the rotated key wins over the configured (or environment) key when the
//! configured key is the rotated key itself or one it replaced (the config was never edited, or
//! was reinstalled by an upgrade). A configured key the rotation never saw is an admin's
//! deliberate re-key: it wins, and the stale file is reported at every start. With no key
//! configured at all, the rotated key is still used (fail closed: encryption, once on, is not
//! turned off by a config that lost its key); delete the file to turn encryption off.
//! Do not rename fields: `status` and older agents read them. Documented, with the command
//! that writes it, in `docs/atlas-commands.md`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spool::fsio::write_atomic;
use fleet_wire::envelope;
use fleet_wire::keys::Key32;

/// File name of the rotated key inside the state (spool) directory.
pub const ROTATED_KEY_FILE: &str = "transport-key.json";
/// Most key ids remembered in `replaces`.
pub const MAX_REPLACED: usize = 16;
/// Format version written in the file.
const VERSION: u32 = 1;

/// Where the transport key in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `encryption_key` in the config file.
    Config,
    /// The `FLEET_ENCRYPTION_KEY` environment variable.
    Environment,
    /// A remote `rotate_encryption_key` command, kept in [`ROTATED_KEY_FILE`].
    Rotated,
}

impl KeySource {
    /// How `status` and the log name it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Config => "config",
            KeySource::Environment => "environment",
            KeySource::Rotated => "rotated",
        }
    }
}

/// The transport key to use, with its id and origin.
pub struct ActiveKey {
    /// The key.
    pub key: Key32,
    /// Its v2 key id.
    pub kid: String,
    /// Where it came from.
    pub source: KeySource,
}

/// The rotated-key file could not be read or written.
#[derive(Debug)]
pub enum TransportKeyError {
    /// Reading or writing the file failed.
    Io {
        /// What was being done.
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error text.
        error: String,
    },
    /// The file is not a valid rotated-key record (the agent refuses to guess a key).
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key).
        problem: String,
    },
}

impl fmt::Display for TransportKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportKeyError::Io { doing, path, error } => write!(f, "{doing} {}: {error}", path.display()),
            TransportKeyError::Invalid { path, problem } => write!(
                f,
                "rotated transport key {} is invalid: {problem} (remove it to fall back to the config's encryption_key)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TransportKeyError {}

/// The file's content. Not `Debug`: it holds the key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotatedKeyFile {
    version: u32,
    key: String,
    kid: String,
    #[serde(default)]
    replaces: Vec<String>,
    #[serde(default)]
    command_id: Option<String>,
    rotated_at: String,
}

/// A rotated key as read from the state directory.
pub struct RotatedKey {
    /// The key.
    pub key: Key32,
    /// Its key id.
    pub kid: String,
    /// Key ids it superseded, oldest first.
    pub replaces: Vec<String>,
    /// The command that installed it.
    pub command_id: Option<String>,
    /// When (RFC 3339 UTC).
    pub rotated_at: String,
}

/// Path of the rotated-key file in `state_dir`.
pub fn rotated_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ROTATED_KEY_FILE)
}

/// Read the rotated key, if there is one.
pub fn load_rotated(state_dir: &Path) -> Result<Option<RotatedKey>, TransportKeyError> {
    let path = rotated_key_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TransportKeyError::Io { doing: "reading", path, error: e.to_string() }),
    };
    let invalid = |problem: String| TransportKeyError::Invalid { path: path.clone(), problem };
    let file: RotatedKeyFile =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON of the expected shape: {e}")))?;
    if file.version != VERSION {
        return Err(invalid(format!("unsupported version {}", file.version)));
    }
    let key = Key32::from_base64(&file.key).map_err(|e| invalid(format!("field `key`: {e}")))?;
    let kid = envelope::kid(&key);
    if kid != file.kid {
        return Err(invalid(format!("field `kid` is {} but the key's id is {kid}", file.kid)));
    }
    Ok(Some(RotatedKey { key, kid, replaces: file.replaces, command_id: file.command_id, rotated_at: file.rotated_at }))
}

/// Persist `new_key` as the rotated key, replacing `current_kid` (durable before it returns).
pub fn store_rotated(
    state_dir: &Path,
    new_key: &Key32,
    current_kid: &str,
    command_id: Option<&str>,
) -> Result<(), TransportKeyError> {
    let path = rotated_key_path(state_dir);
    let mut replaces = match load_rotated(state_dir) {
        Ok(Some(previous)) => previous.replaces,
        _ => Vec::new(),
    };
    let kid = envelope::kid(new_key);
    if current_kid != kid && !replaces.iter().any(|k| k == current_kid) {
        replaces.push(current_kid.to_string());
    }
    replaces.retain(|k| *k != kid);
    if replaces.len() > MAX_REPLACED {
        replaces.drain(..replaces.len() - MAX_REPLACED);
    }
    let file = RotatedKeyFile {
        version: VERSION,
        key: new_key.to_base64().to_string(),
        kid,
        replaces,
        command_id: command_id.map(str::to_string),
        rotated_at: fleet_widgets::Timestamp::now().to_rfc3339(),
    };
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&file).map_err(|e| TransportKeyError::Io {
        doing: "encoding",
        path: path.clone(),
        error: e.to_string(),
    })?);
    write_atomic(&path, &bytes, true).map_err(|e| TransportKeyError::Io {
        doing: "writing",
        path,
        error: e.to_string(),
    })
}

/// Decide which key to use: the configured one (`configured`, from `source`) or the rotated one
/// in `state_dir` (rules in the module docs). Returns a warning to log, if any.
pub fn resolve(
    configured: Option<&Key32>,
    source: KeySource,
    state_dir: &Path,
) -> Result<(Option<ActiveKey>, Option<String>), TransportKeyError> {
    let from_config = || configured.map(|key| ActiveKey { key: key.clone_secret(), kid: envelope::kid(key), source });
    let Some(rotated) = load_rotated(state_dir)? else {
        return Ok((from_config(), None));
    };
    let path = rotated_key_path(state_dir);
    match configured {
        None => {
            let warning = format!(
                "no encryption_key is configured, but {} holds a rotated key (id {}): using it; remove the file to \
                 send unencrypted",
                path.display(),
                rotated.kid
            );
            Ok((Some(ActiveKey { key: rotated.key, kid: rotated.kid, source: KeySource::Rotated }), Some(warning)))
        }
        Some(key) => {
            let configured_kid = envelope::kid(key);
            if configured_kid == rotated.kid || rotated.replaces.contains(&configured_kid) {
                Ok((Some(ActiveKey { key: rotated.key, kid: rotated.kid, source: KeySource::Rotated }), None))
            } else {
                let warning = format!(
                    "the configured encryption_key (id {configured_kid}, from {}) is neither the rotated key (id {}) \
                     nor one it replaced: using the configured key; {} is ignored",
                    source.as_str(),
                    rotated.kid,
                    path.display()
                );
                Ok((from_config(), Some(warning)))
            }
        }
    }
}

/// One line for `status`: the key id in use and where it came from (read only).
pub fn describe(config: &crate::config::Config) -> String {
    match resolve(config.encryption_key.as_ref(), config.encryption_key_source, &config.spool.dir) {
        Ok((None, _)) => "none (bodies are sent unsealed)".to_string(),
        Ok((Some(active), warning)) => {
            let origin = match active.source {
                KeySource::Rotated => match load_rotated(&config.spool.dir) {
                    Ok(Some(rotated)) => format!(
                        "rotated {} by command {}, kept in {}",
                        rotated.rotated_at,
                        rotated.command_id.as_deref().unwrap_or("-"),
                        rotated_key_path(&config.spool.dir).display()
                    ),
                    _ => "rotated".to_string(),
                },
                other => other.as_str().to_string(),
            };
            let note = warning.map(|w| format!("; warning: {w}")).unwrap_or_default();
            format!("id {} (from {origin}){note}", active.kid)
        }
        Err(e) => format!("unreadable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key32 {
        Key32::from_bytes([byte; 32])
    }

    #[test]
    fn rotated_key_wins_over_the_key_it_replaced_and_survives_a_second_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (k0, k1, k2) = (key(0), key(1), key(2));
        let (active, warning) = resolve(Some(&k0), KeySource::Config, dir.path()).expect("resolve");
        assert_eq!(active.map(|a| a.source), Some(KeySource::Config));
        assert!(warning.is_none());

        store_rotated(dir.path(), &k1, &envelope::kid(&k0), Some("cmd-1")).expect("store");
        store_rotated(dir.path(), &k2, &envelope::kid(&k1), Some("cmd-2")).expect("store");
        let rotated = load_rotated(dir.path()).expect("load").expect("present");
        assert_eq!(rotated.replaces, vec![envelope::kid(&k0), envelope::kid(&k1)]);
        assert_eq!(rotated.command_id.as_deref(), Some("cmd-2"));

        for configured in [&k0, &k1, &k2] {
            let (active, warning) = resolve(Some(configured), KeySource::Environment, dir.path()).expect("resolve");
            let active = active.expect("a key");
            assert_eq!((active.source, active.kid.as_str()), (KeySource::Rotated, envelope::kid(&k2).as_str()));
            assert!(warning.is_none());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(rotated_key_path(dir.path())).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_new_configured_key_wins_and_no_key_keeps_the_rotated_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        store_rotated(dir.path(), &key(1), &envelope::kid(&key(0)), None).expect("store");
        let (active, warning) = resolve(Some(&key(9)), KeySource::Config, dir.path()).expect("resolve");
        assert_eq!(active.map(|a| (a.source, a.kid)), Some((KeySource::Config, envelope::kid(&key(9)))));
        assert!(warning.is_some_and(|w| w.contains("ignored")));
        let (active, warning) = resolve(None, KeySource::Config, dir.path()).expect("resolve");
        assert_eq!(active.map(|a| a.source), Some(KeySource::Rotated));
        assert!(warning.is_some());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it_never_a_silent_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = rotated_key_path(dir.path());
        for text in [
            "not json",
            r#"{"version":1,"key":"AAAA","kid":"x","rotated_at":"t"}"#,
            r#"{"version":2,"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","kid":"x","rotated_at":"t"}"#,
            r#"{"version":1,"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","kid":"0000","rotated_at":"t"}"#,
        ] {
            std::fs::write(&path, text).expect("write");
            let error = resolve(Some(&key(0)), KeySource::Config, dir.path()).err().map(|e| e.to_string());
            assert!(error.as_deref().is_some_and(|e| e.contains(ROTATED_KEY_FILE)), "{text}: {error:?}");
        }
    }
}
