//! `state.bin`: the spool's one small state record (ack cursor, record counters and the
//! sender's state), updated in place. The format, with test vectors: docs/state-record.md.
//!
//! The file has a fixed size, two slots of [`SLOT_LEN`] bytes (A at offset 0, B at
//! [`SLOT_LEN`]). A write puts the next generation into the slot that does NOT hold the
//! current state, with one positioned write, then `fdatasync`: no temp file, no rename, no
//! directory fsync and no change of the file's size or blocks, so on ext4 (and other
//! journalling file systems) the sync writes one data block and waits for no journal commit.
//! On open the valid slot with the higher generation wins. A write cut short by a crash (any
//! prefix of it, or its sectors in any order) fails the slot's checksum and is ignored: the
//! other slot holds the previous state, which is what an atomic rename guaranteed before.
//!
//! ```text
//! slot (SLOT_LEN = 4096 bytes; integers little-endian)
//!   0    8   magic "FLEETST8"
//!   8    1   format version = 1
//!   9    3   reserved, zero
//!   12   8   generation u64 (>= 1; the higher valid one wins)
//!   20   4   payload length n u32 (<= MAX_PAYLOAD)
//!   24   n   payload: compact JSON (see cursor.rs)
//!   24+n 32  SHA-256 of bytes 0 .. 24+n
//!   rest     ignored (zero when the file is created; stale bytes of older writes)
//! ```
//!
//! Do not reorder, resize or reuse a field: bump [`VERSION`] instead. An unknown version in a
//! slot whose checksum holds is refused with an error naming the file (a newer agent's file
//! is never overwritten).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{fsio, SpoolError};

/// Name of the state record file in the spool directory.
pub const STATE_FILE: &str = "state.bin";
/// Bytes per slot (one page, one block of common file systems).
pub const SLOT_LEN: usize = 4096;
/// Slots in the file.
const SLOTS: usize = 2;
/// Slot magic.
pub const MAGIC: &[u8; 8] = b"FLEETST8";
/// Format version of a slot.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
const HEADER_LEN: usize = 24;
/// Bytes of the checksum after the payload.
const SUM_LEN: usize = 32;
/// Largest payload a slot holds.
pub const MAX_PAYLOAD: usize = SLOT_LEN - HEADER_LEN - SUM_LEN;

/// What one slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Never written (all zero, or past the end of a short file).
    Empty,
    /// A whole write.
    Valid {
        /// Its generation.
        generation: u64,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A write cut short, or damaged: the checksum (or the magic, or the length) does not hold.
    Damaged,
    /// A whole write in a version this agent does not know.
    UnknownVersion(u8),
}

/// The bytes of a slot holding `payload` at `generation`: header, payload and checksum (the
/// rest of the slot is left as it is on disk). `None` if the payload does not fit.
pub fn encode_slot(generation: u64, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + SUM_LEN);
    encode_slot_into(&mut out, generation, payload).then_some(out)
}

/// [`encode_slot`] into `out` (emptied first); false if the payload does not fit.
fn encode_slot_into(out: &mut Vec<u8>, generation: u64, payload: &[u8]) -> bool {
    out.clear();
    if payload.len() > MAX_PAYLOAD {
        return false;
    }
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let sum: [u8; SUM_LEN] = Sha256::digest(&out[..]).into();
    out.extend_from_slice(&sum);
    true
}

/// Classify the bytes of one slot (shorter than [`SLOT_LEN`] if the file is short).
pub fn decode_slot(bytes: &[u8]) -> Slot {
    if bytes.iter().all(|&b| b == 0) {
        return Slot::Empty;
    }
    if bytes.len() < HEADER_LEN + SUM_LEN || &bytes[..8] != MAGIC {
        return Slot::Damaged;
    }
    let len = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]) as usize;
    if len > MAX_PAYLOAD || bytes.len() < HEADER_LEN + len + SUM_LEN {
        return Slot::Damaged;
    }
    let end = HEADER_LEN + len;
    let sum: [u8; SUM_LEN] = Sha256::digest(&bytes[..end]).into();
    if sum[..] != bytes[end..end + SUM_LEN] {
        return Slot::Damaged;
    }
    if bytes[8] != VERSION {
        return Slot::UnknownVersion(bytes[8]);
    }
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&bytes[12..20]);
    Slot::Valid { generation: u64::from_le_bytes(generation), payload: bytes[HEADER_LEN..end].to_vec() }
}

/// The state found in a file's two slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The newest valid payload (`None`: both slots empty).
    pub payload: Option<Vec<u8>>,
    /// Its generation (0: none).
    pub generation: u64,
    /// The slot it is in (0 = A, 1 = B).
    pub slot: usize,
    /// Slots found damaged and ignored (a write cut short by a crash, or corruption).
    pub damaged: Vec<usize>,
}

/// Pick the newest valid slot of a whole file's bytes. Both slots damaged is an error naming
/// `path`; so is a valid slot of an unknown version. A damaged slot next to an empty one is
/// the first write cut short: no state yet.
pub fn pick(path: &Path, bytes: &[u8]) -> Result<Loaded, SpoolError> {
    let mut loaded = Loaded { payload: None, generation: 0, slot: 0, damaged: Vec::new() };
    for slot in 0..SLOTS {
        let start = (slot * SLOT_LEN).min(bytes.len());
        let end = ((slot + 1) * SLOT_LEN).min(bytes.len());
        match decode_slot(&bytes[start..end]) {
            Slot::Empty => {}
            Slot::Damaged => loaded.damaged.push(slot),
            Slot::UnknownVersion(version) => {
                return Err(SpoolError::UnknownStateVersion { path: path.to_path_buf(), version: version.into() })
            }
            Slot::Valid { generation, payload } => {
                if loaded.payload.is_none() || generation > loaded.generation {
                    loaded = Loaded { payload: Some(payload), generation, slot, damaged: loaded.damaged };
                }
            }
        }
    }
    // One slot empty and the other damaged is the very first write cut short (only one write
    // ever went to this file, or the other slot would hold one): the state before it was none.
    if loaded.payload.is_none() && loaded.damaged.len() == SLOTS {
        return Err(SpoolError::StateDamaged { path: path.to_path_buf() });
    }
    Ok(loaded)
}

/// Read `dir/state.bin` (read-only, safe while the agent writes it: a slot being written is
/// ignored, the other one holds the previous state). `Ok(None)` if absent.
pub fn read(dir: &Path) -> Result<Option<Loaded>, SpoolError> {
    let path = dir.join(STATE_FILE);
    let mut bytes = Vec::with_capacity(SLOTS * SLOT_LEN);
    match File::open(&path) {
        Ok(file) => {
            file.take((SLOTS * SLOT_LEN) as u64).read_to_end(&mut bytes).map_err(SpoolError::io("reading", &path))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SpoolError::io("reading", &path)(e)),
    };
    let loaded = pick(&path, &bytes)?;
    for slot in &loaded.damaged {
        log::warn!(
            "spool state {} slot {} is damaged (a write cut short by a crash, or corruption); ignored, using slot {} \
             (generation {})",
            path.display(),
            slot_name(*slot),
            slot_name(loaded.slot),
            loaded.generation
        );
    }
    Ok(Some(loaded))
}

/// `A` or `B`.
pub fn slot_name(slot: usize) -> char {
    if slot == 0 {
        'A'
    } else {
        'B'
    }
}

/// The open state record, written in place.
pub struct StateFile {
    path: PathBuf,
    file: Option<File>,
    generation: u64,
    /// Damaged slots found on open (logged; [`StateFile::damaged_on_open`]).
    damaged_on_open: usize,
    /// The buffers of the last write (payload, slot), kept for the next: at most a slot each.
    payload: Vec<u8>,
    slot: Vec<u8>,
    /// Test hook: the crash of [`StateFile::crash_at_write`].
    #[cfg(test)]
    pub(crate) crash: Option<CrashAt>,
}

/// Test hook: a crash during a state write.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrashAt {
    /// Writes to let through before the one that is cut.
    pub writes_before: u64,
    /// Bytes of the cut write that reach the disk (may be all of them: a crash before the
    /// write returned).
    pub keep: usize,
    /// Set once the crash happened: every later write fails without touching the file.
    pub crashed: bool,
}

impl StateFile {
    /// Open `dir/state.bin` for writing and read its newest state (`None`: no file yet, or both
    /// slots empty). The file is created by the first [`StateFile::write`].
    pub fn open(dir: &Path) -> Result<(StateFile, Option<Vec<u8>>), SpoolError> {
        let path = dir.join(STATE_FILE);
        let loaded = read(dir)?;
        let file = match loaded {
            Some(_) => {
                Some(OpenOptions::new().read(true).write(true).open(&path).map_err(SpoolError::io("opening", &path))?)
            }
            None => None,
        };
        let (generation, damaged, payload) = match loaded {
            Some(loaded) => (loaded.generation, loaded.damaged.len(), loaded.payload),
            None => (0, 0, None),
        };
        let state = StateFile {
            path,
            file,
            generation,
            damaged_on_open: damaged,
            payload: Vec::new(),
            slot: Vec::new(),
            #[cfg(test)]
            crash: None,
        };
        Ok((state, payload))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Slots found damaged (and ignored) when the file was opened.
    pub fn damaged_on_open(&self) -> usize {
        self.damaged_on_open
    }

    /// The generation of the newest state written or read.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Write `payload` as the next generation into the slot not holding the current state,
    /// then (if `durable`) `fdatasync`. The first write creates the file at its full size
    /// (temp file, fsync, rename, directory fsync: once in the spool's life).
    pub fn write(&mut self, payload: &[u8], durable: bool) -> Result<(), SpoolError> {
        let mut slot = std::mem::take(&mut self.slot);
        let result = self.write_slot(&mut slot, payload, durable);
        self.slot = slot;
        result
    }

    /// [`StateFile::write`] of the payload that `fill` writes into an empty buffer (kept from
    /// one write to the next: a state write every send round allocates nothing).
    pub fn write_with(
        &mut self,
        durable: bool,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), SpoolError>,
    ) -> Result<(), SpoolError> {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        let result = fill(&mut payload).and_then(|()| self.write(&payload, durable));
        if payload.capacity() <= SLOT_LEN {
            self.payload = payload;
        }
        result
    }

    fn write_slot(&mut self, bytes: &mut Vec<u8>, payload: &[u8], durable: bool) -> Result<(), SpoolError> {
        let generation = self.generation + 1;
        if !encode_slot_into(bytes, generation, payload) {
            return Err(SpoolError::StateTooLarge { path: self.path.clone(), bytes: payload.len(), max: MAX_PAYLOAD });
        }
        let bytes = &bytes[..];
        let file = match self.file.take() {
            Some(file) => file,
            None => self.create(durable)?,
        };
        let slot = (generation % SLOTS as u64) as usize;
        #[cfg(test)]
        if let Some(crash) = self.crash.as_mut() {
            let dead =
                || Err(SpoolError::io("writing (simulated crash)", &self.path)(std::io::ErrorKind::Other.into()));
            if crash.crashed {
                self.file = Some(file);
                return dead();
            }
            if crash.writes_before == 0 {
                crash.crashed = true;
                let keep = crash.keep.min(bytes.len());
                let _ = file.write_all_at(&bytes[..keep], (slot * SLOT_LEN) as u64);
                self.file = Some(file);
                return dead();
            }
            crash.writes_before -= 1;
        }
        let written = file.write_all_at(bytes, (slot * SLOT_LEN) as u64).and_then(|()| {
            if durable {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        self.file = Some(file);
        written.map_err(SpoolError::io("writing", &self.path))?;
        self.generation = generation;
        Ok(())
    }

    /// Create the file (both slots zero) and open it.
    fn create(&self, durable: bool) -> Result<File, SpoolError> {
        let tmp = fsio::tmp_path(&self.path);
        let _ = std::fs::remove_file(&tmp);
        fsio::write_new(&tmp, &[0u8; SLOTS * SLOT_LEN], durable)?;
        std::fs::rename(&tmp, &self.path).map_err(SpoolError::io("renaming into place", &self.path))?;
        if durable {
            fsio::sync_dir(fsio::parent(&self.path))?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(SpoolError::io("opening", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(slots: [&[u8]; 2]) -> Vec<u8> {
        let mut file = vec![0u8; SLOTS * SLOT_LEN];
        for (i, bytes) in slots.iter().enumerate() {
            file[i * SLOT_LEN..i * SLOT_LEN + bytes.len()].copy_from_slice(bytes);
        }
        file
    }

    fn payload_of(loaded: &Loaded) -> &[u8] {
        loaded.payload.as_deref().unwrap_or_default()
    }

    /// The test vector of docs/state-record.md.
    #[test]
    fn a_slot_is_header_payload_and_checksum_as_documented() {
        let slot = encode_slot(7, br#"{"segment":1,"index":2}"#).expect("fits");
        let hex: String = slot.iter().map(|b| format!("{b:02x}")).collect();
        // Computed independently (Python hashlib) for docs/state-record.md.
        assert_eq!(
            hex,
            concat!(
                "464c454554535438",                                                 // magic "FLEETST8"
                "01000000",                                                         // version 1, reserved
                "0700000000000000",                                                 // generation 7
                "17000000",                                                         // payload length 23
                "7b227365676d656e74223a312c22696e646578223a327d",                   // {"segment":1,"index":2}
                "2caffe69bf3deb90381fbe495baa0ca9e2017cc387fed49d12aa132b9b8df51d", // SHA-256
            )
        );
        assert_eq!(decode_slot(&slot), Slot::Valid { generation: 7, payload: br#"{"segment":1,"index":2}"#.to_vec() });
    }

    #[test]
    fn the_newer_valid_slot_wins_and_a_damaged_one_is_ignored() {
        let path = Path::new("state.bin");
        let a = encode_slot(4, b"old").expect("a");
        let b = encode_slot(5, b"new").expect("b");
        let loaded = pick(path, &file_with([&a, &b])).expect("pick");
        assert_eq!((payload_of(&loaded), loaded.generation, loaded.slot), (&b"new"[..], 5, 1));
        let mut flipped = b.clone();
        flipped[30] ^= 1;
        let loaded = pick(path, &file_with([&a, &flipped])).expect("pick");
        assert_eq!((payload_of(&loaded), loaded.damaged.clone()), (&b"old"[..], vec![1]));
        // Both damaged: a clear error naming the file.
        let mut flipped_a = a.clone();
        flipped_a[25] ^= 0x80;
        let err = pick(path, &file_with([&flipped_a, &flipped])).expect_err("both damaged");
        assert!(matches!(err, SpoolError::StateDamaged { .. }), "{err}");
        assert!(err.to_string().contains("state.bin"), "{err}");
        // The very first write cut short (the other slot never written): no state yet.
        let loaded = pick(path, &file_with([&[], &flipped])).expect("first write torn");
        assert_eq!((loaded.payload, loaded.damaged), (None, vec![1]));
        // Empty file: nothing stored yet.
        assert_eq!(pick(path, &[]).expect("empty").payload, None);
        assert_eq!(pick(path, &vec![0; 2 * SLOT_LEN]).expect("zero").payload, None);
        // A newer agent's slot: refused, never overwritten.
        let mut newer = encode_slot(6, b"x").expect("c");
        newer[8] = 2;
        let end = newer.len() - SUM_LEN;
        let sum: [u8; SUM_LEN] = Sha256::digest(&newer[..end]).into();
        newer[end..].copy_from_slice(&sum);
        assert!(matches!(
            pick(path, &file_with([&a, &newer])),
            Err(SpoolError::UnknownStateVersion { version: 2, .. })
        ));
    }

    /// A crash during the write of generation g+1 over generation g-1 (the other slot holds g):
    /// the write reached the disk up to any byte, or any subset of its 512-byte sectors in any
    /// order. The state read back is g or g+1, whole, never a mix, never an error.
    #[test]
    fn a_write_torn_at_any_byte_or_sector_reads_back_as_the_old_or_the_new_state() {
        let path = Path::new("state.bin");
        let older = encode_slot(1, &[b'o'; 900]).expect("older");
        let current = encode_slot(2, &[b'c'; 700]).expect("current");
        let next = encode_slot(3, &[b'n'; 1500]).expect("next");
        let before = file_with([&current, &older]);
        // Generation 3 goes to slot B (3 % 2), over generation 1.
        let start = SLOT_LEN;
        for cut in 0..=next.len() {
            let mut file = before.clone();
            file[start..start + cut].copy_from_slice(&next[..cut]);
            let loaded = pick(path, &file).expect("never an error");
            match loaded.generation {
                2 => assert_eq!(payload_of(&loaded), &[b'c'; 700][..], "cut {cut}"),
                3 => {
                    assert_eq!(cut, next.len(), "only a whole write is taken");
                    assert_eq!(payload_of(&loaded), &[b'n'; 1500][..]);
                }
                other => panic!("cut {cut}: generation {other}"),
            }
            assert!(loaded.damaged.is_empty() || loaded.damaged == [1], "cut {cut}");
        }
        // Sectors persisted in any order: every subset of the 4 sectors the write spans.
        let sectors = next.len().div_ceil(512);
        for mask in 0u32..(1 << sectors) {
            let mut file = before.clone();
            for sector in 0..sectors {
                if mask & (1 << sector) != 0 {
                    let from = sector * 512;
                    let to = (from + 512).min(next.len());
                    file[start + from..start + to].copy_from_slice(&next[from..to]);
                }
            }
            let loaded = pick(path, &file).expect("never an error");
            let whole = mask == (1 << sectors) - 1;
            assert_eq!(loaded.generation, if whole { 3 } else { 2 }, "mask {mask:b}");
        }
    }

    #[test]
    fn writes_alternate_slots_in_place_and_reopen_at_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut state, payload) = StateFile::open(dir.path()).expect("open");
        assert_eq!(payload, None);
        assert!(!dir.path().join(STATE_FILE).exists(), "created by the first write only");
        for n in 0..5u8 {
            state.write(&[n; 10], true).expect("write");
        }
        let len = std::fs::metadata(dir.path().join(STATE_FILE)).expect("meta").len();
        assert_eq!(len, (2 * SLOT_LEN) as u64, "fixed size");
        let (state, payload) = StateFile::open(dir.path()).expect("reopen");
        assert_eq!((payload, state.generation()), (Some(vec![4; 10]), 5));
        assert!(matches!(
            StateFile::open(dir.path()).map(|(mut s, _)| s.write(&[0; MAX_PAYLOAD + 1], true)),
            Ok(Err(SpoolError::StateTooLarge { .. }))
        ));
    }
}
