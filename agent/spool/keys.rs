//! Spool keys: the master key file, per-segment data keys wrapped by it, and the record
//! cipher of one segment.
//!
//! `master.key` holds the standard padded base64 of 32 random bytes and a newline (45 bytes),
//! mode 0600. It is created once, atomically (written to `master.key.tmp`, fsynced, then
//! hard-linked into place, which fails rather than overwrite an existing key), and never
//! rewritten. It is separate from the transport key and never leaves the machine.
//!
//! Key id (8 bytes, not secret, stored in each segment header) = the first 8 bytes of
//! SHA-256(`"fleet-agent/spool-kid"` ‖ master key). A segment whose key id differs from the
//! current master key's was written under another key and cannot be read.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Nonce, Tag};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::format::{self, SegmentHeader, FRAME_HEADER_LEN, TAG_LEN, WRAPPED_KEY_LEN};
use super::{fsio, SpoolError};
use fleet_wire::keys::Key32;

/// File name of the master key inside the spool directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The spool master key and its id. No `Debug`; the key zeroizes on drop.
pub struct MasterKey {
    cipher: Aes256Gcm,
    id: [u8; 8],
}

/// The key id of `key`.
pub fn key_id(key: &Key32) -> [u8; 8] {
    let mut hasher = Sha256::new();
    hasher.update(b"fleet-agent/spool-kid");
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

fn cipher_for(key: &Key32) -> Aes256Gcm {
    Aes256Gcm::new(key.as_bytes().into())
}

fn random<const N: usize>() -> Result<[u8; N], SpoolError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SpoolError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Why a segment's data key could not be unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrapError {
    /// The segment was written under another master key.
    OtherKey,
    /// Same key id, but the wrapped key does not authenticate (corrupt header).
    Corrupt,
}

impl MasterKey {
    /// Wrap a key (for tests and the loader).
    pub fn from_key(key: &Key32) -> Self {
        MasterKey { cipher: cipher_for(key), id: key_id(key) }
    }

    /// The key id stored in segment headers.
    #[cfg(test)]
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// Read `dir/master.key`; `Ok(None)` if it does not exist.
    pub fn load(dir: &Path) -> Result<Option<MasterKey>, SpoolError> {
        let path = dir.join(MASTER_KEY_FILE);
        let text = match fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SpoolError::io("reading", path)(e)),
        };
        let text = std::str::from_utf8(&text)
            .map_err(|_| SpoolError::MasterKey { path: path.clone(), problem: "not base64 text".into() })?;
        let key = Key32::from_base64(text)
            .map_err(|e| SpoolError::MasterKey { path: path.clone(), problem: e.to_string() })?;
        Ok(Some(MasterKey::from_key(&key)))
    }

    /// Read `dir/master.key`, or create it with a fresh random key. Returns the key and
    /// whether it was just created. Warns (and tightens to 0600) if the file is readable by
    /// group or others.
    pub fn load_or_create(dir: &Path) -> Result<(MasterKey, bool), SpoolError> {
        let path = dir.join(MASTER_KEY_FILE);
        if let Some(key) = Self::load(dir)? {
            tighten_mode(&path)?;
            return Ok((key, false));
        }
        let key = Key32::generate().map_err(|e| SpoolError::Random(e.to_string()))?;
        // Built at its final capacity so no reallocation leaves a copy of the key behind.
        let mut text = Zeroizing::new(String::with_capacity(45));
        text.push_str(&key.to_base64());
        text.push('\n');
        let tmp = fsio::tmp_path(&path);
        let _ = fs::remove_file(&tmp);
        fsio::write_new(&tmp, text.as_bytes(), true)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                fsio::sync_dir(dir)?;
                Ok((MasterKey::from_key(&key), true))
            }
            // Someone else created it between our read and link: use theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => match Self::load(dir)? {
                Some(key) => Ok((key, false)),
                None => Err(SpoolError::io("creating", path)(e)),
            },
            Err(e) => Err(SpoolError::io("creating", path)(e)),
        }
    }

    /// A fresh data key for segment `segment_id`: its header (with the key wrapped) and its
    /// record cipher.
    pub fn new_segment(&self, segment_id: u64) -> Result<(SegmentHeader, SegmentCipher), SpoolError> {
        let data_key = Key32::from_bytes(random::<32>()?);
        let wrap_nonce = random::<12>()?;
        let aad = format::header_aad(segment_id, &self.id);
        let mut wrapped = [0u8; WRAPPED_KEY_LEN];
        wrapped[..32].copy_from_slice(data_key.as_bytes());
        let tag = self
            .cipher
            .encrypt_inout_detached(&Nonce::<Aes256Gcm>::from(wrap_nonce), &aad, (&mut wrapped[..32]).into())
            .map_err(|_| SpoolError::Seal)?;
        wrapped[32..].copy_from_slice(&tag);
        let header = SegmentHeader { segment_id, key_id: self.id, wrap_nonce, wrapped_key: wrapped };
        Ok((header, SegmentCipher { cipher: cipher_for(&data_key), segment_id }))
    }

    /// The record cipher of an existing segment.
    pub fn open_segment(&self, header: &SegmentHeader) -> Result<SegmentCipher, UnwrapError> {
        if header.key_id != self.id {
            return Err(UnwrapError::OtherKey);
        }
        let aad = format::header_aad(header.segment_id, &header.key_id);
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&header.wrapped_key[..32]);
        let tag = Tag::<Aes256Gcm>::try_from(&header.wrapped_key[32..]).map_err(|_| UnwrapError::Corrupt)?;
        self.cipher
            .decrypt_inout_detached(&Nonce::<Aes256Gcm>::from(header.wrap_nonce), &aad, (&mut key[..]).into(), &tag)
            .map_err(|_| UnwrapError::Corrupt)?;
        let data_key = Key32::from_bytes(*key);
        Ok(SegmentCipher { cipher: cipher_for(&data_key), segment_id: header.segment_id })
    }
}

fn tighten_mode(path: &PathBuf) -> Result<(), SpoolError> {
    let mode = fs::metadata(path).map_err(SpoolError::io("reading metadata of", path))?.permissions().mode();
    if mode & 0o077 != 0 {
        log::warn!("spool master key {} had mode {:04o}; setting 0600", path.display(), mode & 0o7777);
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(SpoolError::io("chmod", path))?;
    }
    Ok(())
}

/// A frame did not authenticate (crypto failures are opaque: no reason is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

/// The record cipher of one segment (its unwrapped data key). No `Debug`.
pub struct SegmentCipher {
    cipher: Aes256Gcm,
    segment_id: u64,
}

impl SegmentCipher {
    /// Append the frame of record `index` (header, ciphertext, tag) to `out`.
    pub fn seal_frame(&self, index: u64, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SpoolError> {
        let body_len = u32::try_from(plaintext.len() + TAG_LEN).map_err(|_| SpoolError::Seal)?;
        out.extend_from_slice(&format::encode_frame_header(index, body_len));
        let start = out.len();
        out.extend_from_slice(plaintext);
        let nonce = Nonce::<Aes256Gcm>::from(format::record_nonce(index));
        let aad = format::record_aad(self.segment_id, index);
        match self.cipher.encrypt_inout_detached(&nonce, &aad, (&mut out[start..]).into()) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(_) => {
                out.truncate(start - FRAME_HEADER_LEN);
                Err(SpoolError::Seal)
            }
        }
    }

    /// Decrypt a frame body (ciphertext + tag) of record `index` in place; on success `body`
    /// holds the plaintext.
    pub fn open_body(&self, index: u64, body: &mut Vec<u8>) -> Result<(), Unauthentic> {
        let Some(split) = body.len().checked_sub(TAG_LEN) else {
            return Err(Unauthentic);
        };
        let tag = Tag::<Aes256Gcm>::try_from(&body[split..]).map_err(|_| Unauthentic)?;
        let nonce = Nonce::<Aes256Gcm>::from(format::record_nonce(index));
        let aad = format::record_aad(self.segment_id, index);
        self.cipher.decrypt_inout_detached(&nonce, &aad, (&mut body[..split]).into(), &tag).map_err(|_| Unauthentic)?;
        body.truncate(split);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_key(&Key32::from_bytes([byte; 32]))
    }

    #[test]
    fn wrap_unwrap_and_wrong_key() {
        let master = key(1);
        let (header, cipher) = master.new_segment(7).expect("segment");
        let mut frame = Vec::new();
        cipher.seal_frame(0, b"{\"x\":1}", &mut frame).expect("seal");
        let reopened = master.open_segment(&header).map_err(|_| "unwrap").expect("unwrap");
        let mut body = frame[FRAME_HEADER_LEN..].to_vec();
        assert_eq!(reopened.open_body(0, &mut body), Ok(()));
        assert_eq!(body, b"{\"x\":1}");
        let mut moved = frame[FRAME_HEADER_LEN..].to_vec();
        assert_eq!(reopened.open_body(1, &mut moved), Err(Unauthentic), "index is bound");
        assert!(matches!(key(2).open_segment(&header), Err(UnwrapError::OtherKey)));
        let mut tampered = header.clone();
        tampered.segment_id = 8;
        assert!(matches!(master.open_segment(&tampered), Err(UnwrapError::Corrupt)), "segment id is bound");
    }

    #[test]
    fn key_id_test_vector() {
        // SHA-256("fleet-agent/spool-kid" || 0x00..0x1f), first 8 bytes.
        let id = key_id(&Key32::from_bytes(std::array::from_fn(|i| i as u8)));
        let mut hasher = Sha256::new();
        hasher.update(b"fleet-agent/spool-kid");
        hasher.update((0u8..32).collect::<Vec<u8>>());
        assert_eq!(id[..], hasher.finalize()[..8]);
    }

    #[test]
    fn master_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, created) = MasterKey::load_or_create(dir.path()).expect("create");
        assert!(created);
        let path = dir.path().join(MASTER_KEY_FILE);
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).expect("read").len(), 45);
        let (second, created) = MasterKey::load_or_create(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(first.id(), second.id());
        assert!(!dir.path().join("master.key.tmp").exists());
        fs::write(&path, "short\n").expect("write");
        assert!(matches!(MasterKey::load_or_create(dir.path()), Err(SpoolError::MasterKey { .. })));
        assert_eq!(fs::read(&path).expect("read"), b"short\n", "a bad key file is left untouched");
    }
}
