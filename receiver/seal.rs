//! Rows of the receiver's store sealed at rest: AES-256-GCM under a store key that is not the
//! transport key. Format and test vectors: `docs/receiver-store-sealing.md`.
//!
//! A stored line is a JSON object. Sealing splits it in two: the index fields needed to find
//! rows stay in clear ([`CLEAR_FIELDS`]: receive time, machine id, line kind, seq, position in
//! the batch, record count of a batch line, widget name, record kind), everything else (the
//! report, the log entry, the record with its data, a batch's transport key id, send time and
//! dropped counts) is encrypted into `sealed`:
//!
//! ```text
//! {CLEAR FIELDS…,"store_kid":K,"nonce":B64(12 random bytes),"sealed":B64(ciphertext || tag16)}
//!   plaintext = compact JSON object of the other fields
//!   AAD       = "fleet-agent store row v1" 0x00 FILE 0x00 LINE 0x00
//!               then for each clear field present, in CLEAR_FIELDS order: NAME "=" JSON(VALUE) 0x0A
//! ```
//!
//! `FILE` is the file's name (`records.jsonl`, …) and `LINE` the 0-based line number in it
//! (decimal), and the machine id is a clear field: a row moved to another machine, another
//! file or another line, or one whose clear fields were edited, does not authenticate. `K` is
//! [`store_kid`], so a reader knows which of its keys a row needs (a store half-way through a
//! `rekey` holds both ids). Do not reorder [`CLEAR_FIELDS`]: the AAD depends on the order.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use fleet_wire::keys::{Key32, KeyError};

/// Fields left in clear, in AAD order. Do not reorder.
pub const CLEAR_FIELDS: [&str; 8] =
    ["received_at", "machine_id", "kind", "seq", "index", "records", "widget", "record_kind"];
/// Field holding the store key id of a sealed row.
pub const KID_FIELD: &str = "store_kid";
/// Field holding the nonce of a sealed row.
pub const NONCE_FIELD: &str = "nonce";
/// Field holding the ciphertext of a sealed row.
pub const SEALED_FIELD: &str = "sealed";
/// First bytes of every row's AAD.
pub const AAD_LABEL: &[u8] = b"fleet-agent store row v1";
const KID_LABEL: &[u8] = b"fleet-agent store key id v1";
const NONCE_LEN: usize = 12;

/// The id of a store key: the first 8 bytes of SHA-256(`fleet-agent store key id v1` || key),
/// hex. Tells which key a row needs without revealing it.
pub fn store_kid(key: &Key32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(KID_LABEL);
    hasher.update(key.as_bytes());
    hasher.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The store keys of a receiver or a store command: the first seals new rows, every one opens
/// rows carrying its id. None: the store is plaintext (`--store-plaintext`).
#[derive(Default)]
pub struct StoreKeys {
    keys: Vec<(String, Aes256Gcm)>,
}

impl StoreKeys {
    /// No keys: rows are written and read in plaintext.
    pub fn plaintext() -> StoreKeys {
        StoreKeys::default()
    }

    /// These keys, current (sealing) first.
    pub fn new(keys: &[Key32]) -> StoreKeys {
        let keys = keys
            .iter()
            .map(|k| {
                let key: &Key<Aes256Gcm> = k.as_bytes().into();
                (store_kid(k), Aes256Gcm::new(key))
            })
            .collect();
        StoreKeys { keys }
    }

    /// Parse base64 key texts (from files or the environment).
    pub fn from_base64(texts: &[String]) -> Result<StoreKeys, KeyError> {
        let keys = texts.iter().map(|t| Key32::from_base64(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(StoreKeys::new(&keys))
    }

    /// True without keys.
    pub fn is_plaintext(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every key id, current first.
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|(kid, _)| kid.clone()).collect()
    }

    /// The id of the sealing key.
    pub fn current_kid(&self) -> Option<&str> {
        self.keys.first().map(|(kid, _)| kid.as_str())
    }

    /// True if one of the keys has this id.
    pub fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == kid)
    }

    fn cipher(&self, kid: &str) -> Option<&Aes256Gcm> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, c)| c)
    }
}

/// Why a stored row could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// The line is not a JSON object, or a sealing field is missing or malformed.
    Malformed(String),
    /// A plaintext row in a store read with keys (fail closed: it may have been put there).
    Plaintext,
    /// A sealed row read without keys (plaintext mode).
    NeedKey(String),
    /// The row's store key id is none of the keys given.
    UnknownKey(String),
    /// The row does not authenticate under its key: changed, moved or swapped.
    Tampered,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowError::Malformed(why) => write!(f, "malformed row: {why}"),
            RowError::Plaintext => f.write_str("plaintext row in a sealed store"),
            RowError::NeedKey(kid) => write!(f, "row sealed with store key id {kid}, but no store key was given"),
            RowError::UnknownKey(kid) => write!(f, "row sealed with store key id {kid}, which no given store key has"),
            RowError::Tampered => f.write_str("row does not authenticate (changed, moved or swapped)"),
        }
    }
}

impl std::error::Error for RowError {}

/// The AAD of a row at `line` of `file` with these clear fields (see the module docs).
pub fn aad(file: &str, line: u64, clear: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(AAD_LABEL);
    out.push(0);
    out.extend_from_slice(file.as_bytes());
    out.push(0);
    out.extend_from_slice(line.to_string().as_bytes());
    out.push(0);
    for name in CLEAR_FIELDS {
        if let Some(value) = clear.get(name) {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// Fresh nonces for `n` rows, from one call to the OS random number generator.
pub fn nonces(n: usize) -> Result<Vec<[u8; NONCE_LEN]>, KeyError> {
    let mut bytes = vec![0u8; n * NONCE_LEN];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes.chunks_exact(NONCE_LEN).map(|c| c.try_into().unwrap_or([0u8; NONCE_LEN])).collect())
}

impl StoreKeys {
    /// The stored form of `row` at `line` of `file`: sealed under the current key, or the row
    /// itself in plaintext mode.
    pub fn seal(&self, file: &str, line: u64, row: Map<String, Value>, nonce: &[u8; NONCE_LEN]) -> Map<String, Value> {
        let Some((kid, cipher)) = self.keys.first() else {
            return row;
        };
        let (mut clear, mut secret) = (Map::new(), Map::new());
        for (name, value) in row {
            if CLEAR_FIELDS.contains(&name.as_str()) {
                clear.insert(name, value);
            } else {
                secret.insert(name, value);
            }
        }
        let aad = aad(file, line, &clear);
        let plaintext = Value::Object(secret).to_string();
        // AES-GCM fails only for inputs over 64 GiB; a row is at most a 10 MiB body.
        let ciphertext =
            cipher.encrypt(nonce.into(), Payload { msg: plaintext.as_bytes(), aad: &aad }).unwrap_or_default();
        clear.insert(KID_FIELD.into(), Value::from(kid.as_str()));
        clear.insert(NONCE_FIELD.into(), Value::from(STANDARD.encode(nonce)));
        clear.insert(SEALED_FIELD.into(), Value::from(STANDARD.encode(ciphertext)));
        clear
    }

    /// The row as it was before [`StoreKeys::seal`], checking that it belongs at `line` of `file`.
    pub fn open(&self, file: &str, line: u64, stored: Map<String, Value>) -> Result<Map<String, Value>, RowError> {
        let sealed = stored.contains_key(SEALED_FIELD);
        if !sealed {
            return if self.is_plaintext() { Ok(stored) } else { Err(RowError::Plaintext) };
        }
        let kid = row_kid(&stored).ok_or_else(|| RowError::Malformed(format!("`{KID_FIELD}` missing")))?;
        if self.is_plaintext() {
            return Err(RowError::NeedKey(kid.to_string()));
        }
        let cipher = self.cipher(kid).ok_or_else(|| RowError::UnknownKey(kid.to_string()))?;
        let field = |name: &str| {
            stored
                .get(name)
                .and_then(Value::as_str)
                .and_then(|t| STANDARD.decode(t).ok())
                .ok_or_else(|| RowError::Malformed(format!("`{name}` missing or not base64")))
        };
        let nonce: [u8; NONCE_LEN] =
            field(NONCE_FIELD)?.try_into().map_err(|_| RowError::Malformed("nonce is not 12 bytes".into()))?;
        let ciphertext = field(SEALED_FIELD)?;
        let mut clear = Map::new();
        for (name, value) in stored {
            if CLEAR_FIELDS.contains(&name.as_str()) {
                clear.insert(name, value);
            } else if ![KID_FIELD, NONCE_FIELD, SEALED_FIELD].contains(&name.as_str()) {
                // A field that is neither clear nor sealed was added after sealing.
                return Err(RowError::Tampered);
            }
        }
        let aad = aad(file, line, &clear);
        let plaintext =
            cipher.decrypt((&nonce).into(), Payload { msg: &ciphertext, aad: &aad }).map_err(|_| RowError::Tampered)?;
        let Ok(Value::Object(secret)) = serde_json::from_slice::<Value>(&plaintext) else {
            return Err(RowError::Tampered);
        };
        for (name, value) in secret {
            if clear.contains_key(&name) {
                return Err(RowError::Tampered);
            }
            clear.insert(name, value);
        }
        Ok(clear)
    }
}

/// The store key id of a stored row (`None`: plaintext row).
pub fn row_kid(stored: &Map<String, Value>) -> Option<&str> {
    stored.get(KID_FIELD).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(first: u8) -> Key32 {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = first.wrapping_add(i as u8);
        }
        Key32::from_bytes(bytes)
    }

    fn row() -> Map<String, Value> {
        let value = json!({"received_at": "2026-11-22T13:00:00.000Z", "machine_id": "mac-01", "kind": "record",
            "seq": 7, "index": 0, "widget": "ping", "record_kind": "log",
            "record": {"ts": "2026-11-22T13:00:00.000Z", "widget": "ping", "kind": "log", "level": "info",
                       "message": "SECRET-MARKER", "data": {"latency": 1.5}}});
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn seal_open_round_trip_and_nothing_secret_in_clear() {
        let keys = StoreKeys::new(&[key(0x40)]);
        let sealed = keys.seal("records.jsonl", 3, row(), &[9u8; 12]);
        let text = Value::Object(sealed.clone()).to_string();
        assert!(!text.contains("SECRET-MARKER") && !text.contains("latency"), "{text}");
        assert_eq!(sealed["machine_id"], "mac-01");
        assert_eq!(keys.open("records.jsonl", 3, sealed).as_ref(), Ok(&row()));
    }

    #[test]
    fn moved_swapped_edited_rows_do_not_open() {
        let keys = StoreKeys::new(&[key(0x40)]);
        let sealed = keys.seal("records.jsonl", 3, row(), &[9u8; 12]);
        assert_eq!(keys.open("records.jsonl", 4, sealed.clone()), Err(RowError::Tampered), "other line");
        assert_eq!(keys.open("widget-logs.jsonl", 3, sealed.clone()), Err(RowError::Tampered), "other file");
        for (field, value) in [("machine_id", json!("mac-02")), ("seq", json!(8)), ("widget", json!("cpu"))] {
            let mut edited = sealed.clone();
            edited.insert(field.into(), value);
            assert_eq!(keys.open("records.jsonl", 3, edited), Err(RowError::Tampered), "{field}");
        }
        let mut added = sealed.clone();
        added.insert("record".into(), json!({}));
        assert_eq!(keys.open("records.jsonl", 3, added), Err(RowError::Tampered));
        let other = StoreKeys::new(&[key(0x41)]);
        assert!(matches!(other.open("records.jsonl", 3, sealed.clone()), Err(RowError::UnknownKey(_))));
        assert!(matches!(StoreKeys::plaintext().open("records.jsonl", 3, sealed), Err(RowError::NeedKey(_))));
        assert_eq!(keys.open("records.jsonl", 3, row()), Err(RowError::Plaintext));
    }

    #[test]
    fn key_ids_differ_from_transport_key_ids() {
        assert_ne!(store_kid(&key(0)), fleet_wire::envelope::kid(&key(0)));
        assert_eq!(store_kid(&key(0)).len(), 16);
    }
}
