//! The sender's persistent state, `<spool.dir>/sender.json`, and the in-flight v2 batch,
//! `<spool.dir>/inflight.json`. Both are written atomically (temp, fsync, rename, fsync dir).
//!
//! `sender.json`: `{"next_seq":N,"last_success":T|null,"last_error":{"at":T,"message":S}|null,
//! "retry_at":T|null,"consecutive_failures":N,"rejected":N,"sent_records":N,"seq_collisions":N,"kid":K|null,"key_source":S|null,"server":S|null,
//! "protocol":S}`. `status` reads it; it holds no secret and no payload.
//!
//! `inflight.json`: `{"seq":N,"start":{"segment":S,"index":I},"end":{"segment":S,"index":I},
//! "records":N,"kid":K|null,"body":S}` where `body` is the request body exactly as sent (the
//! sealed v2 envelope), so a batch that was sent but not acknowledged is resent after a restart
//! with the SAME seq and content, and the receiver stores it once. `start`, `records` and `end`
//! pin down exactly which spool records the seq carries: when the body has to be rebuilt
//! (without a transport key `body` is left empty on disk, since no plaintext record may land
//! outside the encrypted spool; after a key change it is resealed), exactly `records` records
//! are read from `start`, and they must end at `end`. Records appended since are never added
//! to a seq that may already be stored (that lost them: issue 11, defect 1). A file written
//! before `start` existed is read with `start` = the spool's ack cursor, which is where every
//! in-flight batch starts (the cursor does not move while a batch is in flight).

use std::path::{Path, PathBuf};

use fleet_widgets::Timestamp;
use serde::{Deserialize, Serialize};

use crate::spool::fsio::{create_private_dir, write_atomic};
use crate::spool::Cursor;

/// File name of the sender state inside the spool directory.
pub const STATE_FILE: &str = "sender.json";
/// File name of the in-flight v2 batch inside the spool directory.
pub const INFLIGHT_FILE: &str = "inflight.json";
/// Folder (inside the spool directory) for payloads a server refused for good.
pub const REJECTED_DIR: &str = "rejected";

/// A dated error message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEvent {
    /// When (RFC 3339 UTC).
    pub at: String,
    /// What went wrong (no secrets, no payload).
    pub message: String,
}

/// What `status` shows and what must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SenderState {
    /// Sequence number of the next new v2 batch.
    pub next_seq: u64,
    /// Last acknowledged request (RFC 3339 UTC).
    pub last_success: Option<String>,
    /// Last failure.
    pub last_error: Option<ErrorEvent>,
    /// Next attempt not before (RFC 3339 UTC), when backing off.
    pub retry_at: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Payloads moved to `rejected/`.
    pub rejected: u64,
    /// Records acknowledged by the server since the spool was created.
    pub sent_records: u64,
    /// `409` answers: times another sender's batches were found under our `(machine_id, seq)`.
    pub seq_collisions: u64,
    /// Transport key id in use (16 hex digits, the v2 `kid` formula; `None`: no key).
    pub kid: Option<String>,
    /// Where that key came from: `config` or `environment` (`FLEET_ENCRYPTION_KEY`).
    pub key_source: Option<String>,
    /// The server it sends to.
    pub server: Option<String>,
    /// `atlas` or `v2`.
    pub protocol: String,
}

impl Default for SenderState {
    fn default() -> Self {
        SenderState {
            // Start from the clock, not 1: if this file is ever lost, new batches still get
            // numbers the receiver has not seen, instead of being discarded as duplicates.
            next_seq: Timestamp::now().0.max(1) as u64,
            last_success: None,
            last_error: None,
            retry_at: None,
            consecutive_failures: 0,
            rejected: 0,
            sent_records: 0,
            seq_collisions: 0,
            kid: None,
            key_source: None,
            server: None,
            protocol: String::new(),
        }
    }
}

impl SenderState {
    /// Read the state from `spool_dir`; a missing file gives a fresh state, a corrupt one is
    /// an error naming it (the seq must not silently restart).
    pub fn load(spool_dir: &Path) -> Result<Self, String> {
        let path = spool_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SenderState::default()),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Persist durably.
    pub fn save(&self, spool_dir: &Path) -> Result<(), String> {
        let path = spool_dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_atomic(&path, &bytes, true).map_err(|e| e.to_string())
    }
}

/// A v2 batch that has been built (and maybe sent) but not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inflight {
    /// Its sequence number.
    pub seq: u64,
    /// Spool cursor of its first record (`None` in files written before it was recorded: the
    /// ack cursor).
    #[serde(default)]
    pub start: Option<Cursor>,
    /// Spool cursor just past its last record (acked on success).
    pub end: Cursor,
    /// How many records it carries (exactly these are resent under `seq`).
    pub records: u64,
    /// Key id it was sealed with (`None`: sent unsealed). A batch sealed with another key than
    /// the current one is resealed (same seq, same records) instead of resent.
    #[serde(default)]
    pub kid: Option<String>,
    /// The exact request body.
    pub body: String,
}

impl Inflight {
    fn path(spool_dir: &Path) -> PathBuf {
        spool_dir.join(INFLIGHT_FILE)
    }

    /// The in-flight batch, if any.
    pub fn load(spool_dir: &Path) -> Result<Option<Self>, String> {
        let path = Self::path(spool_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Persist durably (before the first send). An unsealed body (no transport key) is NOT
    /// written: plaintext records never land outside the encrypted spool. Such a batch is
    /// rebuilt from the spool after a restart, with the same seq.
    pub fn save(&self, spool_dir: &Path) -> Result<(), String> {
        let path = Self::path(spool_dir);
        let unsealed;
        let stored = match self.kid {
            Some(_) => self,
            None => {
                unsealed = Inflight { body: String::new(), kid: None, ..*self };
                &unsealed
            }
        };
        let bytes = serde_json::to_vec(stored).map_err(|e| e.to_string())?;
        write_atomic(&path, &bytes, true).map_err(|e| e.to_string())
    }

    /// Forget it (after the ack is durable).
    pub fn clear(spool_dir: &Path) -> Result<(), String> {
        match std::fs::remove_file(Self::path(spool_dir)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", Self::path(spool_dir).display())),
        }
    }
}

/// Keep a refused payload in `rejected/`: the body as sent when it was sealed; without a
/// transport key only a note of what was refused (`sealed` false), since plaintext records
/// must not land outside the encrypted spool.
pub fn store_rejected(spool_dir: &Path, name: &str, body: &[u8], sealed: bool) -> Result<PathBuf, String> {
    let note;
    let body = if sealed {
        body
    } else {
        note =
            serde_json::json!({"sealed": false, "bytes": body.len(), "note": "unsealed payload not kept"}).to_string();
        note.as_bytes()
    };
    let dir = spool_dir.join(REJECTED_DIR);
    create_private_dir(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!("{}-{name}.json", Timestamp::now().0));
    write_atomic(&path, body, true).map_err(|e| e.to_string())?;
    Ok(path)
}
