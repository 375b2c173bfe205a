//! Sealed envelopes: the JSON bodies that carry encrypted payloads over HTTP
//! (`docs/v2-protocol.md`).
//!
//! Two versions, both AES-256-GCM (96-bit nonce, 128-bit tag appended to the ciphertext),
//! both with standard padded base64 (`A-Z a-z 0-9 + /`, `=` padding) for binary fields.
//!
//! # v1 (Atlas-compatible)
//!
//! ```text
//! {"encrypted":true,"version":"1","nonce":B64(12 bytes),"ciphertext":B64(ct || tag16)}
//! key   = the 32-byte fleet key itself
//! AAD   = empty
//! ```
//!
//! The plaintext is an Atlas report or widget-log JSON document. Nothing binds a v1 body to a
//! machine or a moment: the Atlas server accepts replays (a known property of that protocol).
//!
//! # v2 (ours: sealed, sequenced batches)
//!
//! ```text
//! {"encrypted":true,"version":"2","kid":K,"machine_id":M,"seq":N,"nonce":B64(12),"ciphertext":B64(ct || tag16)}
//! kid       = lowercase hex of SHA-256("fleet-agent/kid" || fleet key), first 16 digits (8 bytes)
//! batch key = HKDF-SHA256(ikm = fleet key, salt = "fleet-agent/v2", info = "batch:" || M), 32 bytes
//! AAD       = "fleet-agent/v2\n" || K || "\n" || M || "\n" || decimal(N)
//! ```
//!
//! `seq` is a JSON integer (`0..=2^64-1`). The AAD binds the ciphertext to its kid, machine and
//! sequence number, and the per-machine batch key means one machine's batch never opens as
//! another's. The plaintext is a [`crate::record::BatchBody`] whose `machine_id`/`seq` repeat the
//! envelope's (the receiver checks they agree). Field order when sealing is as shown; readers
//! must not depend on it.
//!
//! # Errors
//!
//! Shape problems (not JSON, missing field, wrong type, bad base64, wrong nonce length) name the
//! field. Everything that depends on the key (wrong key, tampered ciphertext, tag, nonce or AAD)
//! is the single opaque [`EnvelopeError::Decrypt`], so a server answer is never an oracle.
//!
//! # Test vectors
//!
//! Key bytes `00..1f`, nonce bytes `00..0b` (more in `tests/vectors/v1.json` and `v2.json`,
//! produced by `tests/vectors/generate.py` with Python `cryptography`):
//!
//! - v1, plaintext `{"machine_id":"vec-01","machine_info":{},"metrics":{}}`: ciphertext
//!   `PCC7eqaNq3XoHv7vk9NaG+a1qgTBWXNeVQaG7XQHZe1ofsiTjftp5ViGEoj89UFbnXta9iertU3dbCQWIWM2aiFxYROAzA==`.
//! - v2, machine `vec-01`, seq 7: kid `d1c81e9b5253ca4a`, batch key
//!   `78c06c9e1219e3083f07639eb7dbd7c4732ffb0058710aaec4e0987e3d95ed25`, plaintext
//!   `{"machine_id":"vec-01","seq":7,"sent_at":"2026-11-22T00:00:00Z","records":[],"dropped":{"count":0}}`:
//!   ciphertext `YhcKPl4s7/g6RnEEbjaL+D/aucC2yTDQZarjju385KgTS8LJC4GOj1dj24eow9AQzhg8nwAjg9En7uR0uQNMLKrjvPTVLRGiGqLoMht2J9VWjtKP4j07r5oW8qBMJGO18HmayYgTaPw6MCUHuKZXiX7jGQ==`.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{AeadInOut, Aes256Gcm, Key};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hkdf::Hkdf;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::Key32;

/// AES-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes (appended to the ciphertext).
pub const TAG_LEN: usize = 16;
/// HKDF salt for v2 batch keys, and the first line of the v2 AAD.
pub const V2_LABEL: &str = "fleet-agent/v2";
/// Prefix hashed with the fleet key to make its key id.
const KID_LABEL: &[u8] = b"fleet-agent/kid";

/// Why an envelope could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is not a JSON object; carries the parser's message (position, not content).
    Json(String),
    /// The body is a JSON object without `"encrypted": true`: a plaintext payload.
    NotSealed,
    /// A required field is absent.
    Missing(&'static str),
    /// A field is present but malformed (wrong type, bad base64, wrong length, wrong value).
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The envelope names a version this function does not open (e.g. v2 at the v1 endpoint).
    Version(String),
    /// No configured key has the envelope's `kid` (a key mismatch: the sender uses another key).
    UnknownKid(String),
    /// Authentication failed: wrong key, or ciphertext, tag, nonce or AAD altered. Opaque on purpose.
    Decrypt,
    /// The OS random number generator failed while making a nonce.
    Random(String),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Json(why) => write!(f, "envelope is not a JSON object: {why}"),
            EnvelopeError::NotSealed => f.write_str("body is not a sealed envelope (\"encrypted\": true missing)"),
            EnvelopeError::Missing(field) => write!(f, "envelope field `{field}` is missing"),
            EnvelopeError::Field { field, why } => write!(f, "envelope field `{field}` is invalid: {why}"),
            EnvelopeError::Version(found) => write!(f, "unsupported envelope version {found}"),
            EnvelopeError::UnknownKid(kid) => write!(f, "no configured key has key id {kid}"),
            EnvelopeError::Decrypt => f.write_str("decryption failed"),
            EnvelopeError::Random(why) => write!(f, "OS random number generator failed while making a nonce: {why}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// A fresh random nonce.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], EnvelopeError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| EnvelopeError::Random(e.to_string()))?;
    Ok(nonce)
}

fn cipher(key: &Key32) -> Aes256Gcm {
    let key: &Key<Aes256Gcm> = key.as_bytes().into();
    Aes256Gcm::new(key)
}

fn encrypt(key: &Key32, nonce: &[u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    // AES-GCM encryption fails only for inputs over 64 GiB, which no caller can hold in memory;
    // an empty result then makes the body fail authentication rather than panic.
    cipher(key).encrypt(nonce.into(), Payload { msg: plaintext, aad }).unwrap_or_default()
}

fn decrypt(key: &Key32, nonce: &[u8; NONCE_LEN], ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    cipher(key).decrypt(nonce.into(), Payload { msg: ciphertext, aad }).map_err(|_| EnvelopeError::Decrypt)
}

#[derive(Serialize)]
struct V1Body<'a> {
    encrypted: bool,
    version: &'static str,
    nonce: &'a str,
    ciphertext: &'a str,
}

/// The v2 body as serde writes it: the reference the hand-written body of
/// `seal_v2_into_with_nonce` is tested against.
#[cfg(test)]
#[derive(Serialize)]
struct V2Body<'a> {
    encrypted: bool,
    version: &'static str,
    kid: &'a str,
    machine_id: &'a str,
    seq: u64,
    nonce: &'a str,
    ciphertext: &'a str,
}

/// Seal `plaintext` as a v1 (Atlas) body with a random nonce.
pub fn seal_v1(key: &Key32, plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    Ok(seal_v1_with_nonce(key, random_nonce()?, plaintext))
}

/// Seal `plaintext` as a v1 body with the given nonce (tests and vectors; never reuse a nonce).
pub fn seal_v1_with_nonce(key: &Key32, nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    let ciphertext = STANDARD.encode(encrypt(key, &nonce, plaintext, b""));
    let nonce = STANDARD.encode(nonce);
    let body = V1Body { encrypted: true, version: "1", nonce: &nonce, ciphertext: &ciphertext };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Open a v1 body: the plaintext bytes.
pub fn open_v1(key: &Key32, body: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    open_v1_value(key, &parse_object(body)?)
}

/// Open a v1 envelope already parsed as JSON (the receiver parses once to tell sealed from plain).
pub fn open_v1_value(key: &Key32, body: &Map<String, Value>) -> Result<Vec<u8>, EnvelopeError> {
    check_sealed(body)?;
    check_version(body, "1")?;
    let nonce = nonce_field(body)?;
    let ciphertext = ciphertext_field(body)?;
    decrypt(key, &nonce, &ciphertext, b"")
}

/// The key id of a fleet key: 16 lowercase hex digits of SHA-256(`fleet-agent/kid` ‖ key).
pub fn kid(key: &Key32) -> String {
    kid_hex(key).iter().map(|&b| char::from(b)).collect()
}

/// [`kid`] as ASCII bytes, without allocating.
fn kid_hex(key: &Key32) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hasher = Sha256::new();
    hasher.update(KID_LABEL);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let mut hex = [0u8; 16];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(&digest[..8]) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    hex
}

/// The v2 batch key of `machine_id`: HKDF-SHA256(fleet key, salt `fleet-agent/v2`, info `batch:`+id).
pub fn batch_key(key: &Key32, machine_id: &str) -> Key32 {
    let hk = Hkdf::<Sha256>::new(Some(V2_LABEL.as_bytes()), key.as_bytes());
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    let _ = hk.expand_multi_info(&[b"batch:".as_slice(), machine_id.as_bytes()], okm.as_mut());
    Key32::from_bytes(*okm)
}

/// The v2 associated data: `fleet-agent/v2\n{kid}\n{machine_id}\n{seq}`.
pub fn v2_aad(kid: &str, machine_id: &str, seq: u64) -> Vec<u8> {
    format!("{V2_LABEL}\n{kid}\n{machine_id}\n{seq}").into_bytes()
}

/// Seal a v2 batch plaintext for `machine_id`/`seq` with a random nonce.
pub fn seal_v2(key: &Key32, machine_id: &str, seq: u64, plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    Ok(seal_v2_with_nonce(key, machine_id, seq, random_nonce()?, plaintext))
}

/// Seal a v2 batch with the given nonce (tests and vectors; never reuse a nonce).
pub fn seal_v2_with_nonce(
    key: &Key32,
    machine_id: &str,
    seq: u64,
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut buf = plaintext.to_vec();
    let mut out = Vec::new();
    seal_v2_into_with_nonce(key, machine_id, seq, nonce, &mut buf, &mut out);
    out
}

/// [`seal_v2`] into buffers the caller keeps: `out` is cleared and receives the body, byte for
/// byte what [`seal_v2`] returns; `plaintext` is encrypted in place (it is left holding the
/// ciphertext and tag). A sender that seals a batch every few seconds reuses both buffers
/// instead of allocating four copies of the batch (ciphertext, base64, JSON) each time.
pub fn seal_v2_into(
    key: &Key32,
    machine_id: &str,
    seq: u64,
    plaintext: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    seal_v2_into_with_nonce(key, machine_id, seq, random_nonce()?, plaintext, out);
    Ok(())
}

/// The body of [`seal_v2_with_nonce`], written field by field in `V2Body`'s order (what
/// `serde_json::to_vec(&V2Body { .. })` gives: base64 and hex need no escaping).
fn seal_v2_into_with_nonce(
    key: &Key32,
    machine_id: &str,
    seq: u64,
    nonce: [u8; NONCE_LEN],
    plaintext: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    let kid = kid_hex(key);
    out.clear();
    // The AAD is built in `out` first (same bytes as `v2_aad`), then replaced by the body.
    out.extend_from_slice(V2_LABEL.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&kid);
    out.push(b'\n');
    out.extend_from_slice(machine_id.as_bytes());
    out.push(b'\n');
    push_u64(out, seq);
    let cipher = cipher(&batch_key(key, machine_id));
    match cipher.encrypt_inout_detached(&nonce.into(), out.as_slice(), plaintext.as_mut_slice().into()) {
        Ok(tag) => plaintext.extend_from_slice(&tag),
        // Only for inputs over 64 GiB (see `encrypt`): an empty ciphertext fails authentication.
        Err(_) => plaintext.clear(),
    }
    out.clear();
    out.extend_from_slice(b"{\"encrypted\":true,\"version\":\"2\",\"kid\":\"");
    out.extend_from_slice(&kid);
    out.extend_from_slice(b"\",\"machine_id\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, machine_id);
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, seq);
    out.extend_from_slice(b",\"nonce\":\"");
    push_base64(out, &nonce);
    out.extend_from_slice(b"\",\"ciphertext\":\"");
    push_base64(out, plaintext);
    out.extend_from_slice(b"\"}");
}

/// Append `value` in decimal.
fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Append `bytes` in standard base64 (with padding).
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let Some(len) = base64::encoded_len(bytes.len(), true) else { return };
    let at = out.len();
    out.resize(at + len, 0);
    // The slice is exactly the encoded length, so encoding cannot fail.
    let _ = STANDARD.encode_slice(bytes, &mut out[at..]);
}

/// An opened v2 envelope: the authenticated header fields and the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedV2 {
    /// Key id of the key that opened it.
    pub kid: String,
    /// The sending machine (authenticated through the AAD and the batch key).
    pub machine_id: String,
    /// The batch sequence number (authenticated through the AAD).
    pub seq: u64,
    /// The batch plaintext (a `BatchBody` JSON document, not yet parsed).
    pub plaintext: Vec<u8>,
}

/// Open a v2 body with whichever of `keys` has the envelope's kid.
pub fn open_v2(keys: &[Key32], body: &[u8]) -> Result<OpenedV2, EnvelopeError> {
    open_v2_value(keys, &parse_object(body)?)
}

/// Open a v2 envelope already parsed as JSON.
pub fn open_v2_value(keys: &[Key32], body: &Map<String, Value>) -> Result<OpenedV2, EnvelopeError> {
    check_sealed(body)?;
    check_version(body, "2")?;
    let kid_text = string_field(body, "kid")?;
    if kid_text.len() != 16 || !kid_text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(EnvelopeError::Field { field: "kid", why: "expected 16 lowercase hex digits".into() });
    }
    let machine_id = string_field(body, "machine_id")?;
    let seq = match body.get("seq") {
        None => return Err(EnvelopeError::Missing("seq")),
        Some(value) => value.as_u64().ok_or_else(|| EnvelopeError::Field {
            field: "seq",
            why: "expected an integer from 0 to 18446744073709551615".into(),
        })?,
    };
    let nonce = nonce_field(body)?;
    let ciphertext = ciphertext_field(body)?;
    let key =
        keys.iter().find(|k| kid(k) == kid_text).ok_or_else(|| EnvelopeError::UnknownKid(kid_text.to_string()))?;
    let aad = v2_aad(kid_text, machine_id, seq);
    let plaintext = decrypt(&batch_key(key, machine_id), &nonce, &ciphertext, &aad)?;
    Ok(OpenedV2 { kid: kid_text.to_string(), machine_id: machine_id.to_string(), seq, plaintext })
}

/// Parse a body as a JSON object (serde_json bounds nesting at 128 levels).
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, EnvelopeError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(EnvelopeError::Json("expected a JSON object".into())),
        Err(e) => Err(EnvelopeError::Json(e.to_string())),
    }
}

/// True if the object says `"encrypted": true` (a sealed envelope, not a plaintext payload).
pub fn is_sealed(body: &Map<String, Value>) -> bool {
    body.get("encrypted") == Some(&Value::Bool(true))
}

fn check_sealed(body: &Map<String, Value>) -> Result<(), EnvelopeError> {
    match body.get("encrypted") {
        Some(Value::Bool(true)) => Ok(()),
        None | Some(Value::Bool(false)) => Err(EnvelopeError::NotSealed),
        Some(_) => Err(EnvelopeError::Field { field: "encrypted", why: "expected true".into() }),
    }
}

fn check_version(body: &Map<String, Value>, expected: &str) -> Result<(), EnvelopeError> {
    let version = string_field(body, "version")?;
    if version == expected {
        Ok(())
    } else {
        Err(EnvelopeError::Version(format!("{version:?} (expected {expected:?})")))
    }
}

fn string_field<'a>(body: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, EnvelopeError> {
    match body.get(field) {
        None => Err(EnvelopeError::Missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(EnvelopeError::Field { field, why: "expected a string".into() }),
    }
}

fn base64_field(body: &Map<String, Value>, field: &'static str) -> Result<Vec<u8>, EnvelopeError> {
    let text = string_field(body, field)?;
    STANDARD.decode(text).map_err(|e| EnvelopeError::Field { field, why: format!("not standard padded base64: {e}") })
}

fn nonce_field(body: &Map<String, Value>) -> Result<[u8; NONCE_LEN], EnvelopeError> {
    let bytes = base64_field(body, "nonce")?;
    bytes.as_slice().try_into().map_err(|_| EnvelopeError::Field {
        field: "nonce",
        why: format!("decodes to {} bytes, expected {NONCE_LEN}", bytes.len()),
    })
}

fn ciphertext_field(body: &Map<String, Value>) -> Result<Vec<u8>, EnvelopeError> {
    let bytes = base64_field(body, "ciphertext")?;
    if bytes.len() < TAG_LEN {
        return Err(EnvelopeError::Field {
            field: "ciphertext",
            why: format!("decodes to {} bytes, shorter than the {TAG_LEN}-byte tag", bytes.len()),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(first: u8) -> Key32 {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = first.wrapping_add(i as u8);
        }
        Key32::from_bytes(bytes)
    }

    const NONCE: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    /// The body as it was built before it was written by hand: serde over `V2Body`.
    fn serde_v2_body(key: &Key32, machine_id: &str, seq: u64, nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
        let kid = kid(key);
        let ciphertext = encrypt(&batch_key(key, machine_id), &nonce, plaintext, &v2_aad(&kid, machine_id, seq));
        let ciphertext = STANDARD.encode(ciphertext);
        let nonce = STANDARD.encode(nonce);
        let body = V2Body {
            encrypted: true,
            version: "2",
            kid: &kid,
            machine_id,
            seq,
            nonce: &nonce,
            ciphertext: &ciphertext,
        };
        serde_json::to_vec(&body).expect("body")
    }

    #[test]
    fn the_hand_written_v2_body_is_byte_for_byte_the_serde_body_and_buffers_are_reused() {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for (machine_id, seq, plaintext) in [
            ("m-1", 0u64, &b""[..]),
            ("m \"q\" \\ \u{e9}\u{1f4f6}\n\u{1}", u64::MAX, &b"{\"records\":[]}"[..]),
            ("host.example", 1_764_000_000_123, &[7u8; 1000][..]),
        ] {
            let expected = serde_v2_body(&key(3), machine_id, seq, NONCE, plaintext);
            assert_eq!(
                String::from_utf8_lossy(&seal_v2_with_nonce(&key(3), machine_id, seq, NONCE, plaintext)),
                String::from_utf8_lossy(&expected)
            );
            buf.clear();
            buf.extend_from_slice(plaintext);
            seal_v2_into_with_nonce(&key(3), machine_id, seq, NONCE, &mut buf, &mut out);
            assert_eq!(out, expected, "{machine_id}");
            let opened = open_v2(&[key(3)], &out).expect("opens");
            assert_eq!((opened.machine_id.as_str(), opened.seq, &opened.plaintext[..]), (machine_id, seq, plaintext));
        }
        assert_eq!(kid(&key(3)).len(), 16);
    }

    #[test]
    fn design_v1_vector() {
        let body = seal_v1_with_nonce(&key(0), NONCE, br#"{"machine_id":"vec-01","machine_info":{},"metrics":{}}"#);
        let text = String::from_utf8(body.clone()).expect("utf-8");
        assert_eq!(
            text,
            r#"{"encrypted":true,"version":"1","nonce":"AAECAwQFBgcICQoL","ciphertext":"PCC7eqaNq3XoHv7vk9NaG+a1qgTBWXNeVQaG7XQHZe1ofsiTjftp5ViGEoj89UFbnXta9iertU3dbCQWIWM2aiFxYROAzA=="}"#
        );
        assert_eq!(
            open_v1(&key(0), &body).as_deref(),
            Ok(&br#"{"machine_id":"vec-01","machine_info":{},"metrics":{}}"#[..])
        );
        assert_eq!(open_v1(&key(1), &body), Err(EnvelopeError::Decrypt));
    }

    #[test]
    fn design_v2_vector_kid_and_batch_key() {
        assert_eq!(kid(&key(0)), "d1c81e9b5253ca4a");
        let bk = batch_key(&key(0), "vec-01");
        let hex: String = bk.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "78c06c9e1219e3083f07639eb7dbd7c4732ffb0058710aaec4e0987e3d95ed25");
        let plain =
            br#"{"machine_id":"vec-01","seq":7,"sent_at":"2026-11-22T00:00:00Z","records":[],"dropped":{"count":0}}"#;
        let body = seal_v2_with_nonce(&key(0), "vec-01", 7, NONCE, plain);
        let map = parse_object(&body).expect("object");
        assert_eq!(
            map.get("ciphertext").and_then(Value::as_str),
            Some("YhcKPl4s7/g6RnEEbjaL+D/aucC2yTDQZarjju385KgTS8LJC4GOj1dj24eow9AQzhg8nwAjg9En7uR0uQNMLKrjvPTVLRGiGqLoMht2J9VWjtKP4j07r5oW8qBMJGO18HmayYgTaPw6MCUHuKZXiX7jGQ==")
        );
        let opened = open_v2(&[key(5), key(0)], &body).expect("opens with the second key");
        assert_eq!(
            opened,
            OpenedV2 { kid: "d1c81e9b5253ca4a".into(), machine_id: "vec-01".into(), seq: 7, plaintext: plain.to_vec() }
        );
    }

    #[test]
    fn v2_binds_machine_seq_and_kid() {
        let body = seal_v2(&key(0), "m1", 3, b"{}").expect("seal");
        let mut map = parse_object(&body).expect("object");
        for (field, value) in [("machine_id", Value::from("m2")), ("seq", Value::from(4u64))] {
            let mut altered = map.clone();
            altered.insert(field.into(), value);
            assert_eq!(open_v2_value(&[key(0)], &altered), Err(EnvelopeError::Decrypt), "{field}");
        }
        assert_eq!(open_v2(&[key(1)], &body), Err(EnvelopeError::UnknownKid(kid(&key(0)))));
        map.insert("kid".into(), Value::from(kid(&key(1))));
        // Right kid for key 1, but the ciphertext was made under key 0.
        assert_eq!(open_v2_value(&[key(1)], &map), Err(EnvelopeError::Decrypt));
    }

    #[test]
    fn shape_errors_name_the_field() {
        let k = [key(0)];
        assert!(matches!(open_v1(&k[0], b"not json"), Err(EnvelopeError::Json(_))));
        assert!(matches!(open_v1(&k[0], b"[1]"), Err(EnvelopeError::Json(_))));
        assert_eq!(open_v1(&k[0], br#"{"machine_id":"x"}"#), Err(EnvelopeError::NotSealed));
        assert_eq!(open_v1(&k[0], br#"{"encrypted":true,"version":"1"}"#), Err(EnvelopeError::Missing("nonce")));
        let bad_b64 = br#"{"encrypted":true,"version":"1","nonce":"!!","ciphertext":"AAAA"}"#;
        assert!(matches!(open_v1(&k[0], bad_b64), Err(EnvelopeError::Field { field: "nonce", .. })));
        let short_nonce = br#"{"encrypted":true,"version":"1","nonce":"AAAA","ciphertext":"AAAA"}"#;
        assert!(matches!(open_v1(&k[0], short_nonce), Err(EnvelopeError::Field { field: "nonce", .. })));
        let short_ct = br#"{"encrypted":true,"version":"1","nonce":"AAECAwQFBgcICQoL","ciphertext":"AAAA"}"#;
        assert!(matches!(open_v1(&k[0], short_ct), Err(EnvelopeError::Field { field: "ciphertext", .. })));
        assert!(matches!(open_v1(&k[0], br#"{"encrypted":true,"version":"2"}"#), Err(EnvelopeError::Version(_))));
        let huge_seq = br#"{"encrypted":true,"version":"2","kid":"d1c81e9b5253ca4a","machine_id":"m","seq":1e30}"#;
        assert!(matches!(open_v2(&k, huge_seq), Err(EnvelopeError::Field { field: "seq", .. })));
        let neg_seq = br#"{"encrypted":true,"version":"2","kid":"d1c81e9b5253ca4a","machine_id":"m","seq":-1}"#;
        assert!(matches!(open_v2(&k, neg_seq), Err(EnvelopeError::Field { field: "seq", .. })));
        let bad_kid = br#"{"encrypted":true,"version":"2","kid":"XYZ","machine_id":"m","seq":1}"#;
        assert!(matches!(open_v2(&k, bad_kid), Err(EnvelopeError::Field { field: "kid", .. })));
        let deep = "[".repeat(10_000);
        assert!(matches!(open_v1(&k[0], deep.as_bytes()), Err(EnvelopeError::Json(_))));
    }

    #[test]
    fn random_nonces_round_trip() {
        let a = seal_v1(&key(9), b"hello").expect("seal");
        let b = seal_v1(&key(9), b"hello").expect("seal");
        assert_ne!(a, b);
        assert_eq!(open_v1(&key(9), &a).as_deref(), Ok(&b"hello"[..]));
    }
}
