//! `once --replay DIR`: run the widgets against captured outputs instead of the machine.
//!
//! # Manifest: `DIR/replay.json`
//!
//! ```json
//! {
//!   "os": "macos",
//!   "files":    { "/sys/class/power_supply/BAT0/uevent": "bat0-uevent.txt" },
//!   "commands": { "pmset -g batt": "pmset.txt", "ping *": "ping.txt" }
//! }
//! ```
//!
//! - `os` (required): `"macos"` or `"linux"`, the OS whose commands and files the widgets use.
//! - `files` (optional): absolute path on the replayed machine → file relative to `DIR`.
//!   Directory listings (`/sys/class/power_supply`) are derived from these keys.
//! - `commands` (optional): the argv joined by single spaces → file relative to `DIR`; a key
//!   ending in ` *` matches any further arguments (the longest such prefix wins). A replayed
//!   command exits with status 0. A command not listed behaves as "not installed".
//! - Unknown keys are errors. Every referenced file must exist inside `DIR` (no absolute
//!   paths, no `..`, no symlink out of it) and be at most [`MAX_REPLAY_FILE`] bytes.
//!
//! Content is used verbatim (lossily decoded as UTF-8), except that a leading source header
//! (lines starting with `# ` followed by one blank line, as in `shared/fixtures/`) is skipped.
//! The replay host reports root (as the launchd/systemd service runs), so `wdutil info` is
//! tried when listed, and allows no network: ICMP and HTTP measurements are off. Widgets that
//! read the machine in process (cpu, memory, disk, network, processes, system and part of
//! machine_info: `/proc` on Linux, `sysinfo` on macOS) still describe the live machine.
//!
//! Test vector: `tests/replay/linux-thinkpad/replay.json` replays a ThinkPad on battery
//! (`metrics.battery.percent` 85.0, `time_left` 28955 s) associated on 5 GHz channel 60.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use fleet_widgets::{FixtureHost, Os};
use serde::Deserialize;

/// The manifest's file name inside the replay directory.
pub const MANIFEST: &str = "replay.json";

/// Largest replayed file, the same cap the real host puts on a command's output.
pub const MAX_REPLAY_FILE: u64 = crate::host::DEFAULT_OUTPUT_CAP as u64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    os: String,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    commands: BTreeMap<String, String>,
}

/// A replay directory could not be used. Every variant names the manifest and, where there
/// is one, the key.
#[derive(Debug)]
pub enum ReplayError {
    /// The manifest could not be read (missing directory or `replay.json`).
    ReadManifest {
        /// The manifest path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The manifest is not valid JSON or has an unknown key or a value of the wrong type.
    ParseManifest {
        /// The manifest path.
        path: PathBuf,
        /// serde's message (names the key and line).
        message: String,
    },
    /// `os` is not `macos` or `linux`.
    UnknownOs {
        /// The manifest path.
        path: PathBuf,
        /// What was found.
        os: String,
    },
    /// A key is malformed: a `files` key that is not absolute, a `commands` key that is not
    /// argv joined by single spaces.
    BadKey {
        /// The manifest path.
        path: PathBuf,
        /// `files` or `commands`.
        section: &'static str,
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A referenced file is absolute, contains `..`, or resolves outside the directory.
    EscapesDir {
        /// The manifest path.
        path: PathBuf,
        /// The key that references it.
        key: String,
        /// The referenced file as written.
        file: String,
    },
    /// A referenced file could not be read or is too large.
    ReadFile {
        /// The manifest path.
        path: PathBuf,
        /// The key that references it.
        key: String,
        /// The referenced file.
        file: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::ReadManifest { path, error } => {
                write!(f, "reading replay manifest {}: {error}", path.display())
            }
            ReplayError::ParseManifest { path, message } => write!(f, "replay manifest {}: {message}", path.display()),
            ReplayError::UnknownOs { path, os } => {
                write!(
                    f,
                    "replay manifest {}: field `os`: expected \"macos\" or \"linux\", found {os:?}",
                    path.display()
                )
            }
            ReplayError::BadKey { path, section, key, problem } => {
                write!(f, "replay manifest {}: {section} key {key:?}: {problem}", path.display())
            }
            ReplayError::EscapesDir { path, key, file } => write!(
                f,
                "replay manifest {}: key {key:?}: file {file:?} is outside the replay directory",
                path.display()
            ),
            ReplayError::ReadFile { path, key, file, problem } => {
                write!(f, "replay manifest {}: key {key:?}: reading {}: {problem}", path.display(), file.display())
            }
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::ReadManifest { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Load `dir/replay.json` and every file it names into a [`FixtureHost`].
pub fn load(dir: &Path) -> Result<FixtureHost, ReplayError> {
    let manifest = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest)
        .map_err(|error| ReplayError::ReadManifest { path: manifest.clone(), error })?;
    let raw: RawManifest = serde_json::from_str(&text)
        .map_err(|e| ReplayError::ParseManifest { path: manifest.clone(), message: e.to_string() })?;
    let os = match raw.os.as_str() {
        "macos" => Os::Macos,
        "linux" => Os::Linux,
        _ => return Err(ReplayError::UnknownOs { path: manifest, os: raw.os }),
    };
    let root = dir.canonicalize().map_err(|error| ReplayError::ReadManifest { path: manifest.clone(), error })?;
    let mut host = FixtureHost::new(os);
    for (key, file) in &raw.files {
        if !key.starts_with('/') {
            return Err(bad_key(&manifest, "files", key, "must be an absolute path"));
        }
        let content = read_referenced(&manifest, &root, key, file)?;
        host = host.with_file(key, &content);
    }
    for (key, file) in &raw.commands {
        let normalised: Vec<&str> = key.split(' ').filter(|w| !w.is_empty()).collect();
        if key.is_empty() || normalised.join(" ") != *key || key == "*" {
            return Err(bad_key(&manifest, "commands", key, "must be the argv joined by single spaces"));
        }
        let content = read_referenced(&manifest, &root, key, file)?;
        host = host.with_command(key, &content);
    }
    Ok(host)
}

fn bad_key(manifest: &Path, section: &'static str, key: &str, problem: &'static str) -> ReplayError {
    ReplayError::BadKey { path: manifest.to_path_buf(), section, key: key.to_string(), problem }
}

/// Read `file` (relative to the canonical `root`), refusing anything that leaves it.
fn read_referenced(manifest: &Path, root: &Path, key: &str, file: &str) -> Result<String, ReplayError> {
    let escapes =
        || ReplayError::EscapesDir { path: manifest.to_path_buf(), key: key.to_string(), file: file.to_string() };
    let relative = Path::new(file);
    if file.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(escapes());
    }
    let joined = root.join(relative);
    let read_error = |problem: String| ReplayError::ReadFile {
        path: manifest.to_path_buf(),
        key: key.to_string(),
        file: joined.clone(),
        problem,
    };
    let resolved = joined.canonicalize().map_err(|e| read_error(e.to_string()))?;
    if !resolved.starts_with(root) {
        return Err(escapes());
    }
    let handle = std::fs::File::open(&resolved).map_err(|e| read_error(e.to_string()))?;
    let mut bytes = Vec::new();
    handle.take(MAX_REPLAY_FILE + 1).read_to_end(&mut bytes).map_err(|e| read_error(e.to_string()))?;
    if bytes.len() as u64 > MAX_REPLAY_FILE {
        return Err(read_error(format!("larger than {MAX_REPLAY_FILE} bytes")));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_widgets::host::DEFAULT_COMMAND_TIMEOUT;
    use fleet_widgets::{Host, HostError};

    fn dir_with(manifest: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(MANIFEST), manifest).expect("manifest");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("file");
        }
        dir
    }

    #[test]
    fn loads_files_commands_wildcards_and_strips_headers() {
        let dir = dir_with(
            r#"{"os": "linux",
                "files": {"/sys/class/power_supply/BAT0/uevent": "sub/bat.txt"},
                "commands": {"iw dev wlan0 link": "link.txt", "ping *": "ping.txt"}}"#,
            &[
                ("sub/bat.txt", "# source: x\n# command: cat\n\nPOWER_SUPPLY_CAPACITY=50\n"),
                ("link.txt", "Not connected.\n"),
                ("ping.txt", "PING\n"),
            ],
        );
        let host = load(dir.path()).expect("loads");
        let t = DEFAULT_COMMAND_TIMEOUT;
        assert_eq!(host.os(), Os::Linux);
        assert_eq!(host.read_file("/sys/class/power_supply/BAT0/uevent"), Ok("POWER_SUPPLY_CAPACITY=50\n".into()));
        assert_eq!(host.list_dir("/sys/class/power_supply"), Ok(vec!["BAT0".to_string()]));
        assert_eq!(host.run(&["iw", "dev", "wlan0", "link"], t).map(|o| o.stdout), Ok("Not connected.\n".into()));
        assert_eq!(host.run(&["ping", "-c", "3", "x"], t).map(|o| o.stdout), Ok("PING\n".into()));
        assert_eq!(host.run(&["iw", "dev"], t), Err(HostError::CommandNotFound("iw".into())));
        assert!(!host.network_allowed() && host.is_root());
    }

    #[test]
    fn manifest_errors_name_the_file_and_key() {
        let missing = tempfile::tempdir().expect("tempdir");
        let e = load(missing.path()).expect_err("no manifest").to_string();
        assert!(e.starts_with("reading replay manifest") && e.contains("replay.json"), "{e}");

        let bad_json = dir_with("{\"os\": ", &[]);
        assert!(matches!(load(bad_json.path()), Err(ReplayError::ParseManifest { .. })));
        let unknown_key = dir_with(r#"{"os": "linux", "extra": 1}"#, &[]);
        assert!(load(unknown_key.path()).expect_err("unknown key").to_string().contains("extra"));

        let os = dir_with(r#"{"os": "windows"}"#, &[]);
        let e = load(os.path()).expect_err("bad os").to_string();
        assert!(e.contains("field `os`") && e.contains("\"windows\""), "{e}");

        for file in ["../outside.txt", "/etc/hostname", "a/../../b", ""] {
            let manifest = format!(r#"{{"os": "linux", "commands": {{"iw dev": "{file}"}}}}"#);
            let dir = dir_with(&manifest, &[]);
            match load(dir.path()) {
                Err(ReplayError::EscapesDir { key, .. }) => assert_eq!(key, "iw dev"),
                other => panic!("{file}: {other:?}"),
            }
        }

        let absent = dir_with(r#"{"os": "macos", "commands": {"pmset -g batt": "nope.txt"}}"#, &[]);
        let e = load(absent.path()).expect_err("missing file").to_string();
        assert!(e.contains("\"pmset -g batt\"") && e.contains("nope.txt"), "{e}");

        let relative = dir_with(r#"{"os": "linux", "files": {"proc/net/wireless": "x"}}"#, &[("x", "")]);
        assert!(load(relative.path()).expect_err("relative key").to_string().contains("absolute"));
        let spaces = dir_with(r#"{"os": "linux", "commands": {"iw  dev": "x"}}"#, &[("x", "")]);
        assert!(load(spaces.path()).expect_err("double space").to_string().contains("single spaces"));
    }

    #[test]
    fn symlinks_out_of_the_directory_are_refused() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "s").expect("write");
        let dir = dir_with(r#"{"os": "linux", "commands": {"iw dev": "link"}}"#, &[]);
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).expect("symlink");
        assert!(matches!(load(dir.path()), Err(ReplayError::EscapesDir { .. })));
    }
}
