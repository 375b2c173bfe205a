//! The sender's persistent state, kept in the spool's state record (`<spool.dir>/state.bin`,
//! docs/state-record.md) under `"sender"`, so an ack and the bookkeeping that goes with it
//! are one durable write.
//!
//! `{"next_seq":N,"last_success":T|null,"last_error":{"at":T,"message":S}|null,
//! "retry_at":T|null,"consecutive_failures":N,"rejected":N,"sent_records":N,"seq_collisions":N,
//! "kid":K|null,"key_source":S|null,"server":S|null,"protocol":S,"inflight":{...}}`. `status`
//! reads it; it holds no secret and no payload. Long texts (an error message, the server URL)
//! are cut to [`MAX_TEXT`] bytes so the record fits its slot.
//!
//! `inflight` (v2): `{"seq":N,"start":{"segment":S,"index":I},"end":{"segment":S,"index":I},
//! "records":N,"kid":K|null}`, the batch that was built and maybe sent but not acknowledged,
//! written before it is first sent. `start`, `records` and `end` pin down exactly which spool
//! records the seq carries: after a restart the body is rebuilt from them (exactly `records`
//! records read from `start`, which must end at `end`) and sealed again under the SAME seq, so
//! the receiver recognises a batch it already stored (its identity is the records' digest,
//! docs/v2-protocol.md) and stores it once. The body itself is never stored: it may be up to
//! 1 MiB, and without a transport key it is plaintext, which must not land outside the
//! encrypted spool. Records appended since are never added to a seq that may already be stored
//! (that lost them: issue 11, defect 1). A batch written before `start` existed is read with
//! `start` = the spool's ack cursor, which is where every in-flight batch starts.
//!
//! Older releases kept this in `sender.json` and `inflight.json` (with the body); the spool
//! migrates them into `state.bin` when it opens (spool/cursor.rs).

use std::path::{Path, PathBuf};

use fleet_widgets::Timestamp;
use serde::{Deserialize, Serialize};

use crate::spool::fsio::{create_private_dir, write_atomic};
use crate::spool::Cursor;

/// Longest error message or server URL kept in the state record (longer ones are cut at a
/// character boundary; the log has them whole).
pub const MAX_TEXT: usize = 1024;
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
    /// v2: the batch built and maybe sent but not acknowledged (or the last one acknowledged:
    /// the spool's cursor past its end says so; it records the last seq used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inflight: Option<Inflight>,
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
            inflight: None,
        }
    }
}

impl SenderState {
    /// Read the state from the spool's state record in `spool_dir` (or the files of an older
    /// release); none stored gives a fresh state, an unreadable one is an error naming the
    /// file (the seq must not silently restart).
    pub fn load(spool_dir: &Path) -> Result<Self, String> {
        Ok(Self::load_stored(spool_dir)?.unwrap_or_default())
    }

    /// The stored state, `None` if no sender has run with this spool.
    pub fn load_stored(spool_dir: &Path) -> Result<Option<Self>, String> {
        let stored = crate::spool::load_state(spool_dir).map_err(|e| e.to_string())?;
        match stored.and_then(|state| state.sender) {
            Some(value) => serde_json::from_value(value).map(Some).map_err(|e| {
                format!("{}: the sender's state: {e}", spool_dir.join(crate::spool::state_file::STATE_FILE).display())
            }),
            None => Ok(None),
        }
    }

    /// What is written into the state record: this state with long texts cut to [`MAX_TEXT`]
    /// bytes (never a body).
    pub fn to_stored(&self) -> Result<serde_json::Value, String> {
        let mut value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let Some(error) = value.pointer_mut("/last_error/message") {
            cut(error);
        }
        if let Some(server) = value.get_mut("server") {
            cut(server);
        }
        Ok(value)
    }
}

/// Cut a JSON string to at most [`MAX_TEXT`] bytes, at a character boundary.
fn cut(value: &mut serde_json::Value) {
    if let serde_json::Value::String(text) = value {
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
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
    /// The exact request body (in memory only: never written; rebuilt after a restart).
    #[serde(default, skip_serializing)]
    pub body: String,
}

impl Inflight {
    /// The same batch without its body (what the state record holds).
    pub fn describe(&self) -> Inflight {
        Inflight {
            seq: self.seq,
            start: self.start,
            end: self.end,
            records: self.records,
            kid: self.kid.clone(),
            body: String::new(),
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
