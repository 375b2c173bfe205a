//! Shared helpers for the integration tests: the binary, temp dirs, config files.

#![allow(dead_code)] // each test module uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built `fleet-agent` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fleet-agent")
}

/// A `fleet-agent` command with a clean environment for the variables it reads.
pub fn agent() -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_remove("FLEET_ENCRYPTION_KEY").env_remove("FLEET_API_KEY").env_remove("JOURNAL_STREAM");
    cmd
}

/// Run `fleet-agent args…` to completion.
pub fn run(args: &[&str]) -> Output {
    agent().args(args).output().expect("fleet-agent runs")
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Write `json` to `dir/name` with the given permission bits; returns the path.
pub fn write_config(dir: &Path, name: &str, json: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, json).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod config");
    path
}

/// A fixed valid key (bytes 0x00..0x1f), the DESIGN test-vector key.
pub const TEST_KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Path as &str for command arguments.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A `"widgets"` member to put in every config a test runs `once` or `run` with: ping only
/// loopback (one request), never a speedtest. Keeps tests fast and off outside hosts.
pub const SAFE_WIDGETS: &str =
    r#""widgets":{"ping":{"targets":["127.0.0.1"],"count":1},"speedtest":{"enabled":false}}"#;
