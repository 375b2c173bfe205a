//! What each Atlas command does here. Every function returns an [`Outcome`] (acked as
//! `completed` when `success`, else `failed`); none panics on what the server sent.
//!
//! Ack messages go to the server in plaintext (Atlas reads acks unsealed), so they never
//! carry telemetry or secrets: fixed texts, command names, pids and exit codes only.

use std::path::Path;
use std::time::Duration;

use fleet_widgets::{Host, Os};
use serde_json::{Map, Value};

use crate::transport_key;
use fleet_wire::envelope;
use fleet_wire::keys::Key32;

/// Longest a DNS-flush or kill command may run.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The actions Atlas's agent knows (`atlas/fleet_agent.py`, `_execute_command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandAction {
    /// Switch to a new transport key sent sealed with the current one.
    RotateEncryptionKey,
    /// Stop cleanly and start again (re-executes the binary).
    RestartAgent,
    /// Flush the OS resolver cache.
    ClearDnsCache,
    /// SIGTERM a process by pid (off unless `commands.allow` lists it).
    KillProcess,
}

impl CommandAction {
    /// Every action, in documentation order.
    pub const ALL: [CommandAction; 4] = [
        CommandAction::RotateEncryptionKey,
        CommandAction::RestartAgent,
        CommandAction::ClearDnsCache,
        CommandAction::KillProcess,
    ];
    /// Allowed when the config has no `commands.allow`: Atlas does not authenticate commands,
    /// so only the self-authenticating rotation and two harmless actions run by default.
    pub const DEFAULT_ALLOW: [CommandAction; 3] =
        [CommandAction::RotateEncryptionKey, CommandAction::RestartAgent, CommandAction::ClearDnsCache];

    /// The wire (and config) name.
    pub fn name(self) -> &'static str {
        match self {
            CommandAction::RotateEncryptionKey => "rotate_encryption_key",
            CommandAction::RestartAgent => "restart_agent",
            CommandAction::ClearDnsCache => "clear_dns_cache",
            CommandAction::KillProcess => "kill_process",
        }
    }

    /// The action with this wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// The result acknowledged to the server as `result: {success, message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `completed` when true, `failed` otherwise.
    pub success: bool,
    /// Short human text (no secrets, no telemetry).
    pub message: String,
}

impl Outcome {
    /// A success.
    pub fn ok(message: impl Into<String>) -> Self {
        Outcome { success: true, message: message.into() }
    }

    /// A failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Outcome { success: false, message: message.into() }
    }
}

/// `rotate_encryption_key`: open `params.encrypted_new_key` (a v1 envelope, as a JSON object or
/// a string holding one) with `current`, read `{"new_key": B64}`, check the key, persist it in
/// `state_dir`, and only then replace `current`. Any failure changes nothing.
pub fn rotate_key(params: &Map<String, Value>, current: &mut Option<Key32>, state_dir: &Path, id: &str) -> Outcome {
    let Some(key) = current.as_ref() else {
        return Outcome::failed("E2EE not enabled on this agent (no encryption_key)");
    };
    let envelope_object = match params.get("encrypted_new_key") {
        Some(Value::Object(object)) => object.clone(),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            _ => return Outcome::failed("Invalid key rotation payload: encrypted_new_key is not an envelope"),
        },
        Some(_) => return Outcome::failed("Invalid key rotation payload: encrypted_new_key is not an envelope"),
        None => return Outcome::failed("Missing encrypted_new_key parameter"),
    };
    let current_kid = envelope::kid(key);
    let plaintext = match envelope::open_v1_value(key, &envelope_object) {
        Ok(plaintext) => zeroize::Zeroizing::new(plaintext),
        Err(envelope::EnvelopeError::Decrypt) => {
            return Outcome::failed(format!(
                "Key rotation failed: the payload does not decrypt with the current key (id {current_kid})"
            ))
        }
        Err(e) => return Outcome::failed(format!("Key rotation failed: {e}")),
    };
    let new_key = match serde_json::from_slice::<Value>(&plaintext) {
        Ok(Value::Object(object)) => match object.get("new_key").and_then(Value::as_str).map(Key32::from_base64) {
            Some(Ok(new_key)) => new_key,
            Some(Err(e)) => return Outcome::failed(format!("Key rotation failed: new_key {e}")),
            None => return Outcome::failed("Invalid key rotation payload: no new_key"),
        },
        _ => return Outcome::failed("Invalid key rotation payload: not a JSON object"),
    };
    let new_kid = envelope::kid(&new_key);
    if new_kid == current_kid {
        return Outcome::ok(format!("Encryption key already in use (id {new_kid})"));
    }
    if let Err(e) = transport_key::store_rotated(state_dir, &new_key, &current_kid, Some(id)) {
        log::error!("command {id}: keeping key id {current_kid}: {e}");
        return Outcome::failed("Key rotation failed: the new key could not be stored durably");
    }
    *current = Some(new_key);
    Outcome::ok(format!("Encryption key rotated successfully (key id {current_kid} -> {new_kid})"))
}

/// `clear_dns_cache`: what Atlas runs on macOS (`dscacheutil -flushcache`, then
/// `killall -HUP mDNSResponder`; the daemon is root, so no `sudo`), `resolvectl flush-caches`
/// on Linux (systemd-resolved; other resolvers keep no cache to flush here).
pub fn clear_dns_cache(host: &dyn Host) -> Outcome {
    let steps: &[&[&str]] = match host.os() {
        Os::Macos => &[&["dscacheutil", "-flushcache"], &["killall", "-HUP", "mDNSResponder"]],
        Os::Linux => &[&["resolvectl", "flush-caches"]],
        Os::Other => return Outcome::failed("clear_dns_cache is not supported on this OS"),
    };
    for argv in steps {
        if let Some(failure) = run_step(host, argv) {
            return Outcome::failed(format!("Error clearing DNS cache: {failure}"));
        }
    }
    Outcome::ok("DNS cache cleared")
}

/// `kill_process`: SIGTERM `params.pid` (as Atlas's `terminate()`), refusing pids 0 and 1 and
/// the agent itself.
pub fn kill_process(params: &Map<String, Value>, host: &dyn Host) -> Outcome {
    let pid = match params.get("pid") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => return Outcome::failed("Missing PID parameter"),
    };
    let Some(pid) = pid.filter(|&p| p > 1 && p <= u64::from(u32::MAX)) else {
        return Outcome::failed("Invalid PID parameter");
    };
    if pid == u64::from(std::process::id()) {
        return Outcome::failed(format!("Refusing to kill the agent itself (PID: {pid}); use restart_agent"));
    }
    let pid_text = pid.to_string();
    match run_step(host, &["kill", "-TERM", &pid_text]) {
        None => Outcome::ok(format!("Process (PID: {pid}) terminated")),
        Some(failure) => Outcome::failed(format!("Could not terminate process {pid}: {failure}")),
    }
}

/// Run one step; `None` on exit 0, else what went wrong (first line of stderr at most).
fn run_step(host: &dyn Host, argv: &[&str]) -> Option<String> {
    match host.run(argv, ACTION_TIMEOUT) {
        Ok(output) if output.success() => None,
        Ok(output) => {
            let line = output.stderr.lines().next().unwrap_or("").chars().take(160).collect::<String>();
            let status = output.status.map_or_else(|| "killed".to_string(), |s| format!("exit {s}"));
            Some(format!(
                "{} ({status}){}",
                argv.join(" "),
                if line.is_empty() { String::new() } else { format!(": {line}") }
            ))
        }
        Err(e) => Some(format!("{}: {e}", argv.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_widgets::{CommandOutput, FixtureHost};
    use serde_json::json;

    fn key(byte: u8) -> Key32 {
        Key32::from_bytes([byte; 32])
    }

    fn sealed_rotation(with: &Key32, payload: &Value) -> Map<String, Value> {
        let body = envelope::seal_v1(with, payload.to_string().as_bytes()).expect("seal");
        let mut params = Map::new();
        params.insert("encrypted_new_key".into(), serde_json::from_slice(&body).expect("json"));
        params
    }

    #[test]
    fn rotation_opens_with_the_current_key_persists_then_switches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new_b64 = key(7).to_base64().to_string();
        let params = sealed_rotation(&key(1), &json!({ "new_key": new_b64 }));
        let mut current = Some(key(1));
        let outcome = rotate_key(&params, &mut current, dir.path(), "c1");
        assert!(outcome.success, "{outcome:?}");
        assert_eq!(current.as_ref().map(envelope::kid), Some(envelope::kid(&key(7))));
        let stored = transport_key::load_rotated(dir.path()).expect("load").expect("stored");
        assert_eq!((stored.kid, stored.command_id.as_deref()), (envelope::kid(&key(7)), Some("c1")));
        assert!(!outcome.message.contains(&new_b64), "no key in the ack");
    }

    #[test]
    fn a_bad_payload_fails_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new_b64 = key(7).to_base64().to_string();
        let cases = [
            sealed_rotation(&key(2), &json!({ "new_key": new_b64 })), // sealed with another key
            sealed_rotation(&key(1), &json!({ "new_key": "c2hvcnQ=" })), // not 32 bytes
            sealed_rotation(&key(1), &json!({ "other": 1 })),
            sealed_rotation(&key(1), &json!(["new_key"])),
            Map::new(),
            json!({"encrypted_new_key": "garbage"}).as_object().cloned().unwrap_or_default(),
            json!({"encrypted_new_key": {"encrypted": true, "version": "1", "nonce": "AAAA", "ciphertext": ""}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ];
        for params in cases {
            let mut current = Some(key(1));
            let outcome = rotate_key(&params, &mut current, dir.path(), "c2");
            assert!(!outcome.success, "{params:?}");
            assert_eq!(current.as_ref().map(envelope::kid), Some(envelope::kid(&key(1))), "{params:?}");
            assert!(transport_key::load_rotated(dir.path()).expect("load").is_none(), "nothing stored");
        }
        let mut none = None;
        assert!(!rotate_key(&sealed_rotation(&key(1), &json!({})), &mut none, dir.path(), "c3").success);
    }

    #[test]
    fn dns_flush_runs_what_atlas_runs_and_reports_failures() {
        let mac = FixtureHost::new(Os::Macos)
            .with_command("dscacheutil -flushcache", "")
            .with_command("killall -HUP mDNSResponder", "");
        assert_eq!(clear_dns_cache(&mac), Outcome::ok("DNS cache cleared"));
        let linux = FixtureHost::new(Os::Linux).with_command_output(
            "resolvectl flush-caches",
            CommandOutput {
                status: Some(1),
                stderr: "Failed to flush caches: Unit dbus.socket not found.\n".into(),
                ..Default::default()
            },
        );
        let outcome = clear_dns_cache(&linux);
        assert!(
            !outcome.success && outcome.message.contains("resolvectl flush-caches (exit 1): Failed"),
            "{outcome:?}"
        );
        let missing = clear_dns_cache(&FixtureHost::new(Os::Linux));
        assert!(!missing.success && missing.message.contains("resolvectl"), "{missing:?}");
    }

    #[test]
    fn kill_checks_the_pid() {
        let host = FixtureHost::new(Os::Linux).with_command("kill -TERM 4242", "");
        assert!(kill_process(json!({"pid": 4242}).as_object().expect("object"), &host).success);
        for params in
            [json!({}), json!({"pid": 1}), json!({"pid": -5}), json!({"pid": "x"}), json!({"pid": std::process::id()})]
        {
            assert!(!kill_process(params.as_object().expect("object"), &host).success, "{params}");
        }
        assert!(!kill_process(json!({"pid": 777}).as_object().expect("object"), &host).success, "not found");
    }
}
