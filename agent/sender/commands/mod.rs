//! The Atlas command channel: poll `GET /api/fleet/commands/{machine_id}` at start and every
//! [`POLL_INTERVAL`], execute each command, and acknowledge it with
//! `POST /api/fleet/command/{machine_id}/ack` `{"id", "status": "completed"|"failed",
//! "result": {"success", "message"}}`, as `atlas/fleet_agent.py` does.
//!
//! - Only actions listed in `commands.allow` run (default: [`CommandAction::DEFAULT_ALLOW`]);
//!   others, and unknown actions, are acknowledged `failed` with a message naming the action.
//!   Every executed or refused command is logged with its id.
//! - The server keeps a command pending until its ack arrives and sends it again at every poll,
//!   so an ack that is lost must not make it run twice (a restart loop, or a rotation that no
//!   longer opens with the new key). Each finished command is written to
//!   `<spool.dir>/commands.json` BEFORE it is acknowledged; a command seen again is only
//!   acknowledged again, with the result it had. Format:
//!   `{"done":[{"id":S,"action":S,"success":B,"message":S},…]}`, newest last, at most
//!   [`DONE_MAX`] entries. A rotation's own commit point is the rotated-key file, which names
//!   its command (see [`crate::transport_key`]).
//! - Acks are plaintext JSON (Atlas reads them unsealed); they carry no telemetry or secrets.
//!
//! The wire, the actions and the files are written down in `docs/atlas-commands.md`.

pub mod actions;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_widgets::Host;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use actions::{CommandAction, Outcome};

use super::http::HttpClient;
use crate::spool::fsio::write_atomic;
use crate::transport_key;
use fleet_wire::keys::Key32;

/// Time between two polls (Atlas's `command_poll_interval`).
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Finished commands remembered in `commands.json`.
pub const DONE_MAX: usize = 64;
/// Most commands handled from one poll (the rest wait for the next poll).
pub const MAX_COMMANDS_PER_POLL: usize = 16;
/// File name of the finished-command log in the state directory.
pub const DONE_FILE: &str = "commands.json";

/// A command as the server sends it: `{"id", "action", "params", "created_at"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCommand {
    /// The server's id (a UUID in Atlas).
    pub id: String,
    /// The action name.
    pub action: String,
    /// Its parameters.
    pub params: Map<String, Value>,
}

/// Read a poll answer `{"commands": [...]}`; malformed entries are skipped (they cannot be
/// acknowledged without an id).
pub fn parse_commands(body: &str) -> Result<Vec<ServerCommand>, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let list = match value.get("commands") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err("`commands` is not a list".into()),
        None => return Ok(Vec::new()),
    };
    let mut commands = Vec::new();
    for entry in list {
        let id = match entry.get("id") {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 256 => id.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        let action = entry.get("action").and_then(Value::as_str).unwrap_or("").chars().take(64).collect();
        let params = entry.get("params").and_then(Value::as_object).cloned().unwrap_or_default();
        commands.push(ServerCommand { id, action, params });
    }
    Ok(commands)
}

/// One finished command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DoneEntry {
    id: String,
    action: String,
    success: bool,
    message: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DoneLog {
    done: Vec<DoneEntry>,
}

/// What a poll asks of the sender.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// The transport key was replaced (the sender re-derives its key id).
    pub key_changed: bool,
    /// `restart_agent` was acknowledged: stop cleanly and start again.
    pub restart: bool,
    /// Requests made (the poll and the acks), for the request budget.
    pub requests: u32,
}

/// Polls, executes and acknowledges commands.
pub struct CommandChannel {
    allow: Vec<CommandAction>,
    state_dir: PathBuf,
    host: Box<dyn Host>,
    next_poll: Instant,
    done: DoneLog,
    last_error: Option<String>,
}

impl CommandChannel {
    /// A channel for the actions in `allow`, keeping its log in `state_dir`; the first poll is
    /// due at once.
    pub fn new(allow: Vec<CommandAction>, state_dir: PathBuf, host: Box<dyn Host>) -> Self {
        let path = state_dir.join(DONE_FILE);
        let done = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!("{}: unreadable ({e}); starting a new finished-command log", path.display());
                DoneLog::default()
            }),
            Err(_) => DoneLog::default(),
        };
        CommandChannel { allow, state_dir, host, next_poll: Instant::now(), done, last_error: None }
    }

    /// When the next poll is due.
    pub fn next_poll(&self) -> Instant {
        self.next_poll
    }

    /// Poll once if due (at `next_poll`, or within [`super::DUE_SLACK`] of it), executing and
    /// acknowledging what arrived. `key` is the transport key in use; a rotation replaces it.
    pub fn poll_if_due(&mut self, client: &HttpClient, machine_id: &str, key: &mut Option<Key32>) -> Effects {
        let now = Instant::now();
        if !super::due(now, self.next_poll, POLL_INTERVAL) {
            return Effects::default();
        }
        self.next_poll = now + POLL_INTERVAL;
        let id_path = encode_path_segment(machine_id);
        let mut effects = Effects { requests: 1, ..Effects::default() };
        let answer = match client.get(&format!("/api/fleet/commands/{id_path}")) {
            Ok(response) if response.status == 200 => parse_commands(&response.body),
            Ok(response) if response.status == 404 => {
                Err("HTTP 404: this server has no Atlas command channel".to_string())
            }
            Ok(response) => Err(format!("HTTP {}", response.status)),
            Err(e) => Err(e.to_string()),
        };
        let commands = match answer {
            Ok(commands) => {
                self.last_error = None;
                commands
            }
            Err(e) => {
                // Once per distinct failure: the report path already logs an unreachable server.
                if self.last_error.as_deref() != Some(e.as_str()) {
                    // A server without the channel (the bundled receiver) is not a fault.
                    if e.starts_with("HTTP 404") {
                        log::info!("polling commands: {e}; next poll in {}s", POLL_INTERVAL.as_secs());
                    } else {
                        log::warn!("polling commands: {e}; next poll in {}s", POLL_INTERVAL.as_secs());
                    }
                    self.last_error = Some(e);
                }
                return effects;
            }
        };
        for command in commands.into_iter().take(MAX_COMMANDS_PER_POLL) {
            let (outcome, restart) = self.handle(&command, key, &mut effects);
            effects.restart |= restart;
            effects.requests += 1;
            self.ack(client, &id_path, &command, &outcome);
        }
        effects
    }

    /// Execute (or recognise as done) one command; records it before returning.
    fn handle(&mut self, command: &ServerCommand, key: &mut Option<Key32>, effects: &mut Effects) -> (Outcome, bool) {
        let id = &command.id;
        if let Some(done) = self.done.done.iter().find(|d| d.id == *id) {
            log::info!("command {id} ({}) was already executed; acknowledging it again", done.action);
            return (Outcome { success: done.success, message: done.message.clone() }, false);
        }
        let action = CommandAction::from_name(&command.action);
        if action == Some(CommandAction::RotateEncryptionKey) && self.rotation_already_applied(id) {
            log::info!("command {id} (rotate_encryption_key) was already applied; acknowledging it again");
            let outcome = Outcome::ok("Encryption key rotated successfully");
            self.record(command, &outcome);
            return (outcome, false);
        }
        let (outcome, restart) = match action {
            None => {
                log::warn!("command {id}: unknown action {:?}; acknowledged as failed", command.action);
                (Outcome::failed(format!("Unknown action: {}", command.action)), false)
            }
            Some(action) if !self.allow.contains(&action) => {
                log::warn!("command {id}: {} refused: not in commands.allow", action.name());
                (
                    Outcome::failed(format!("Action {} is not allowed by this agent (commands.allow)", action.name())),
                    false,
                )
            }
            Some(action) => {
                log::info!("command {id}: executing {}", action.name());
                let result = self.execute(action, command, key, effects);
                if result.0.success {
                    log::info!("command {id}: {} completed: {}", action.name(), result.0.message);
                } else {
                    log::warn!("command {id}: {} failed: {}", action.name(), result.0.message);
                }
                result
            }
        };
        self.record(command, &outcome);
        (outcome, restart)
    }

    fn execute(
        &mut self,
        action: CommandAction,
        command: &ServerCommand,
        key: &mut Option<Key32>,
        effects: &mut Effects,
    ) -> (Outcome, bool) {
        match action {
            CommandAction::RotateEncryptionKey => {
                let outcome = actions::rotate_key(&command.params, key, &self.state_dir, &command.id);
                effects.key_changed |= outcome.success;
                (outcome, false)
            }
            CommandAction::RestartAgent => (Outcome::ok("Agent restart initiated"), true),
            CommandAction::ClearDnsCache => (actions::clear_dns_cache(self.host.as_ref()), false),
            CommandAction::KillProcess => (actions::kill_process(&command.params, self.host.as_ref()), false),
        }
    }

    fn rotation_already_applied(&self, id: &str) -> bool {
        matches!(transport_key::load_rotated(&self.state_dir), Ok(Some(rotated)) if rotated.command_id.as_deref() == Some(id))
    }

    /// Remember a finished command durably (before its ack).
    fn record(&mut self, command: &ServerCommand, outcome: &Outcome) {
        self.done.done.push(DoneEntry {
            id: command.id.clone(),
            action: command.action.clone(),
            success: outcome.success,
            message: outcome.message.clone(),
        });
        if self.done.done.len() > DONE_MAX {
            let excess = self.done.done.len() - DONE_MAX;
            self.done.done.drain(..excess);
        }
        let path = self.state_dir.join(DONE_FILE);
        let saved = serde_json::to_vec(&self.done)
            .map_err(|e| e.to_string())
            .and_then(|bytes| write_atomic(&path, &bytes, true).map_err(|e| e.to_string()));
        if let Err(e) = saved {
            log::error!("command {}: could not record it in {}: {e}", command.id, path.display());
        }
    }

    fn ack(&mut self, client: &HttpClient, id_path: &str, command: &ServerCommand, outcome: &Outcome) {
        let status = if outcome.success { "completed" } else { "failed" };
        let body = json!({
            "id": command.id,
            "status": status,
            "result": { "success": outcome.success, "message": outcome.message },
        })
        .to_string();
        match client.post_json(&format!("/api/fleet/command/{id_path}/ack"), body.as_bytes()) {
            Ok(response) if (200..300).contains(&response.status) => {
                log::info!("command {} acknowledged ({status})", command.id)
            }
            Ok(response) => log::warn!(
                "command {}: ack answered HTTP {}; it will be acknowledged again at the next poll",
                command.id,
                response.status
            ),
            Err(e) => {
                log::warn!("command {}: ack failed ({e}); it will be acknowledged again at the next poll", command.id)
            }
        }
    }

    /// The state directory (tests).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// Percent-encode a path segment (everything but RFC 3986 unreserved characters).
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_answers_are_read_defensively() {
        let body = r#"{"commands":[{"id":"a","action":"restart_agent","params":{},"created_at":"x"},
            {"action":"no id"},{"id":7,"action":"clear_dns_cache"},{"id":"b","params":[1]}]}"#;
        let commands = parse_commands(body).expect("parses");
        let ids: Vec<&str> = commands.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "7", "b"]);
        assert_eq!(commands[2].action, "");
        assert!(parse_commands("{}").expect("empty").is_empty());
        assert!(parse_commands("nope").is_err());
        assert!(parse_commands(r#"{"commands":3}"#).is_err());
    }

    #[test]
    fn machine_ids_are_encoded_in_paths() {
        assert_eq!(encode_path_segment("Mac-mini.local"), "Mac-mini.local");
        assert_eq!(encode_path_segment("a b/c?"), "a%20b%2Fc%3F");
    }
}
