//! The encrypted spool: durable, bounded, crash-safe local storage of [`Record`]s, sealed at
//! rest. The format, with test vectors: docs/spool-format.md.
//!
//! Every collected record is appended here first; the sender reads the oldest unacknowledged
//! records, ships them, and acknowledges them, after which they are deleted. Nothing readable
//! is ever written: each record is sealed with AES-256-GCM under its segment's random data
//! key, and the data key is wrapped by the spool master key (`master.key`, never leaves the
//! machine, separate from the transport key).
//!
//! # Directory
//!
//! ```text
//! <spool.dir>/                      mode 0700
//!   master.key                      0600  base64(32 random bytes) + "\n"   (see keys.rs)
//!   spool.lock                      0600  empty; held with flock by the open Spool
//!   00000000000000000001.seg        segments, append-only, oldest = lowest id
//!   00000000000000000002.seg
//!   state.bin                       0600  ack position, record counters and the sender's
//!                                         state: two slots updated in place (state_file.rs)
//!   dropped.json                    dropped-records ledger
//!   quarantine/                     unreadable segments, moved here, never deleted
//!   rejected/                       records a server refused for good, sealed (see rejected.rs)
//!   (anything else)                 someone else's (the sender's files): never touched
//! ```
//!
//! # On-disk format, version 1
//!
//! A segment is a header followed by frames. All integers are little-endian unless noted.
//! Do not reorder, resize or reuse any field: bump [`format::VERSION`] instead. An unknown
//! version is refused with an error naming the file, and the file is never overwritten.
//!
//! ```text
//! segment header (88 bytes)
//!   0   8   magic "FLEETSPL"
//!   8   1   format version = 1
//!   9   3   reserved, zero
//!   12  8   segment id u64 (equals the file name)
//!   20  8   master key id (first 8 bytes of SHA-256("fleet-agent/spool-kid" || master key))
//!   28  12  wrap nonce (random)
//!   40  48  data key (32) sealed with AES-256-GCM under the master key, + tag (16);
//!           AAD = header bytes 0..28 (magic, version, reserved, segment id, key id)
//!
//! record frame (20 + n bytes; n = JSON length + 16)
//!   0   4   body length n, u32
//!   4   4   !n (bitwise NOT of the length): tells a flipped length from a torn tail
//!   8   12  nonce = 00 00 00 00 || record index u64 big-endian
//!   20  n   AES-256-GCM(data key, nonce, record JSON) ciphertext || 16-byte tag;
//!           AAD = "FLEETSPL" || version (1) || segment id u64 || record index u64  (25 bytes)
//! ```
//!
//! Test vector (from `format.rs` tests): the frame header of record 2 with a 48-byte body is
//! `30000000 cfffffff 000000000000000000000002`.
//!
//! Binding the segment id and index into the AAD (and the nonce) means a frame cannot be
//! reordered, duplicated or moved to another segment without failing authentication.
//! Overhead: 88 bytes per segment and 36 bytes per record.
//!
//! Why a frame is `len | !len | nonce | ciphertext` and not just `len | nonce | ciphertext`:
//! the frame carries the length's complement. Without it a bit flip that enlarges a middle frame's length would
//! look like a torn tail and recovery would truncate good records after it; with it, the flip
//! is recognised as corruption and the segment is quarantined instead.
//!
//! # Nonces
//!
//! Counter nonces (the record index) under a per-segment random data key. A data key is used
//! by exactly one writer, in one process lifetime, with a strictly increasing index: every
//! open starts a new segment, and a segment whose write failed is never appended to again (a
//! torn frame's nonce is never reused for different plaintext). So no (key, nonce) pair
//! repeats. Data-key wraps use random 96-bit nonces under the master key: one wrap per
//! segment keeps the count many orders of magnitude below the 2^32 bound of NIST SP 800-38D.
//!
//! # Durability (`spool.fsync`)
//!
//! - `always`: fsync after every record. Loses nothing that `append` returned for, at one
//!   fsync per record.
//! - `batch` (default): one fsync per `append` call (one collection cycle). A crash loses at
//!   most the call in progress, which never returned.
//! - `never`: the OS writes back when it likes (typically within 30 s). A power loss can lose
//!   the last seconds of records; a process crash (kill -9) loses nothing, since the data is
//!   in the page cache.
//!
//! New segment names and ledger replacements are fsynced (file and directory) under `always`
//! and `batch`; a state write is one positioned write of a `state.bin` slot and an
//! `fdatasync` (no rename, no directory sync).
//!
//! # One durable state write
//!
//! An ack, the counters it moves and the sender's bookkeeping are one write of `state.bin`
//! ([`Spool::ack_counted_with`]). A sender whose server recognises a resend (v2: same seq,
//! same records, answered as a duplicate) may acknowledge without a write
//! ([`Spool::ack_later`]): the ack becomes durable with the next state write (v2 writes its
//! next in-flight batch before sending it), and until then no segment it covers is deleted,
//! so a crash only means that batch is sent again. `status` reads `state.bin`: it never shows
//! as delivered what is not durably acknowledged.
//!
//! # Recovery on open
//!
//! Every segment is walked frame by frame and authenticated (one frame in memory at a time):
//! - zeros after the last good record (the live segment's zeroed horizon: zeros written ahead
//!   of the records so an append's `fdatasync` has no size change to write, see segment.rs
//!   and docs/spool-format.md) are the clean end, cut quietly;
//! - a torn tail (short frame, a partial frame followed by zeros, or a last frame that does
//!   not authenticate) is truncated back to the last good record and logged with the bytes cut;
//!   a last frame that is whole but does not authenticate was stored once and is damaged, so
//!   it is also counted as dropped (a write cut short never returned, so it is not);
//! - a bad frame with data after it, a bad header, or a segment written under another (or a
//!   missing) master key: the segment is moved to `quarantine/` (never deleted) and its
//!   unacknowledged records are counted as dropped (past a frame whose length field is
//!   destroyed, the walk finds the next sound frame header, so every frame is counted);
//! - an unknown format version (a flipped version byte, or a newer agent's spool): the
//!   segment is quarantined and counted like any unreadable one, and start-up goes on.
//!
//! Opening writes nothing (so `run` starts on a full disk and holds its records in memory)
//! unless a record is about to leave what a later recount finds: a quarantine or the cut of a
//! damaged last record is preceded by the counter and ledger writes (recovery.rs), and on a
//! full disk such a repair still fails the open.
//!
//! # Bounds
//!
//! Past `spool.max_bytes` (segments plus `rejected/`) the oldest rejected batch, then the
//! oldest whole segment is deleted; its records are added to the persistent dropped ledger
//! (count, oldest and newest time) before the file is removed.
//!
//! # Accounting
//!
//! [`SpoolStats::counts`] says where every record ever accepted is: delivered, superseded
//! (Atlas metric records the report carries), dropped, rejected or still in the backlog; the
//! totals are persisted crash-consistently (cursor.rs) and always add up. Memory is one frame plus one batch, independent of the backlog.

mod cursor;
mod error;
pub mod format;
pub(crate) mod fsio;
mod inspect;
mod keys;
mod recent;
mod recovery;
pub mod rejected;
mod segment;
pub mod state_file;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fleet_widgets::Timestamp;

pub use cursor::{load_cursor, load_state, Cursor, State};
pub use error::SpoolError;
pub use inspect::{backlog_by_widget, inspect, verify, visit_unacked, VerifyReport, WidgetBacklog};
pub use recovery::{HeaderState, Problem, SegmentScan, QUARANTINE_DIR};

use crate::config::{FsyncPolicy, SpoolConfig};
pub use cursor::Counters;
use cursor::Ledger;
use fleet_wire::record::{Dropped, Record};
use format::{FRAME_OVERHEAD, HEADER_LEN, MAX_RECORD_BYTES};
use keys::MasterKey;
use recovery::{record_ts, unacked_in, SegmentInfo};
use segment::{FrameReader, SegmentWriter, Step};

/// Name of the lock file.
pub const LOCK_FILE: &str = "spool.lock";
/// Extra attempts (10 ms apart) to take the lock before reporting [`SpoolError::Locked`].
const LOCK_TRIES: u32 = 30;

/// Records read by [`Spool::read_from`] (or, as their JSON, by [`Spool::read_raw_from`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadBatch<T = Record> {
    /// The records, oldest first.
    pub records: Vec<T>,
    /// The position after the last returned record (ack this once they are delivered).
    /// When `records` is empty, nothing readable is unacknowledged beyond the cursor given
    /// (`next` is that cursor, or past records that could not be decoded and were counted as
    /// dropped).
    pub next: Cursor,
}

/// What the spool holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of the segments' headers and records (the live segment's file is up to one
    /// zeroed horizon longer; the cap counts that too).
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Records not yet acknowledged.
    pub unacked_records: u64,
    /// Records dropped so far (cap, corruption, unreadable segments).
    pub dropped: Dropped,
    /// Time of the oldest unacknowledged record.
    pub oldest: Option<Timestamp>,
    /// Time of the newest unacknowledged record.
    pub newest: Option<Timestamp>,
    /// The record accounting (what `status` reports under `records`).
    pub counts: RecordCounts,
}

/// Where every record the spool ever accepted is now. Persisted, crash-consistent totals:
/// `accepted == delivered + superseded + dropped + rejected + backlog` at every moment
/// (see cursor.rs), apart from an undecodable record, which is counted as dropped when it
/// is skipped and leaves the backlog with the next ack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// Records ever accepted into the spool, plus those dropped before reaching it.
    pub accepted: u64,
    /// Records the server acknowledged.
    pub delivered: u64,
    /// Atlas only: metric records acknowledged because the report carries their values.
    pub superseded: u64,
    /// Records dropped (size cap, damage, unreadable segments, the in-memory hold, the bound
    /// on `rejected/`).
    pub dropped: u64,
    /// Records in `rejected/` (refused by the server for good; `spool requeue-rejected`).
    pub rejected: u64,
    /// Records in the spool not yet acknowledged.
    pub backlog: u64,
}

impl RecordCounts {
    fn from_parts(counters: &Counters, ledger: &Ledger, rejected: u64, backlog: u64) -> Self {
        RecordCounts {
            accepted: (counters.appended + ledger.unspooled).saturating_sub(counters.requeued),
            delivered: counters.delivered,
            superseded: counters.superseded,
            dropped: ledger.count,
            rejected,
            backlog,
        }
    }
}

/// What an ack delivered, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acked {
    /// Records the server acknowledged.
    pub delivered: u64,
    /// Atlas metric records the report carries (acknowledged without being sent).
    pub superseded: u64,
}

struct ReadState {
    segment: u64,
    frames: FrameReader,
}

/// An open spool directory. One per directory (a lock file enforces it).
pub struct Spool {
    dir: PathBuf,
    fsync: FsyncPolicy,
    segment_bytes: u64,
    max_bytes: u64,
    master: MasterKey,
    _lock: File,
    segments: VecDeque<SegmentInfo>,
    writer: Option<SegmentWriter>,
    next_id: u64,
    acked: Cursor,
    /// The ack cursor `state.bin` holds (behind `acked` while an ack waits for the next write):
    /// segments are deleted only once they are acknowledged durably.
    durable_acked: Cursor,
    /// The state record, written in place.
    state_file: state_file::StateFile,
    /// The sender's state last written (opaque; written again with every state write).
    sender: Option<serde_json::Value>,
    /// Files of an older release still to remove once `state.bin` holds their values.
    legacy: Vec<PathBuf>,
    ledger: Ledger,
    /// Record counters (see cursor.rs); `appended` is exact for the records in memory.
    counters: Counters,
    /// Committed batches in `rejected/`, oldest first.
    rejected: Vec<rejected::RejectedBatch>,
    reader: Option<ReadState>,
    /// The JSON of the newest committed records (see recent.rs).
    recent: recent::Recent,
    /// The buffers of [`Spool::append`], kept between calls.
    scratch: Scratch,
    oldest_unacked: Option<Timestamp>,
    /// Undecodable records before this position have been counted as dropped.
    undecodable_counted: Cursor,
    /// Test hook: creating a segment fails with `StorageFull` (a disk full at a rollover).
    #[cfg(test)]
    fail_segment_create: bool,
}

impl Spool {
    /// Open (creating if needed) the spool in `config.dir`: the directory (0700), the master
    /// key (0600, atomically), then recovery (see the module docs). Fails on I/O errors, an
    /// unreadable master key file, an unknown segment version, or if another process has the
    /// spool open.
    pub fn open(config: &SpoolConfig) -> Result<Spool, SpoolError> {
        let dir = config.dir.clone();
        fsio::create_private_dir(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(SpoolError::io("opening lock", &lock_path))?;
        // A few tries: a child forked by this process (a widget's command) shares the lock
        // until it execs, so a close-then-reopen in one process can briefly see it held.
        let mut tries = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries < LOCK_TRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { path: lock_path }),
                Err(std::fs::TryLockError::Error(e)) => return Err(SpoolError::io("locking", lock_path)(e)),
            }
        }
        let (master, created) = MasterKey::load_or_create(&dir)?;
        if created {
            log::info!("created a new master key in {}", dir.join(keys::MASTER_KEY_FILE).display());
        }
        let mut ledger = cursor::load_ledger(&dir)?;
        let (mut state_file, found) = cursor::open_state(&dir)?;
        let state = found.state.unwrap_or_default();
        let (acked, mut counters, sender) = (state.cursor, state.counters, state.sender);
        let durable = config.fsync != FsyncPolicy::Never;
        let mut legacy = found.legacy;
        if !legacy.is_empty() {
            // Migration: the old files' values durable in state.bin first, then the files go.
            // On a full disk (state.bin cannot be created) it waits for the next state write.
            let migrated = cursor::store(&mut state_file, acked, &counters, sender.as_ref(), durable)
                .and_then(|()| cursor::remove_legacy(&dir, &legacy, durable));
            match migrated {
                Ok(()) => legacy.clear(),
                Err(e) if e.is_io_kind(std::io::ErrorKind::StorageFull) => {
                    log::warn!("migrating the state files into state.bin: {e}; retried at the next state write")
                }
                Err(e) => return Err(e),
            }
        }
        let mut store = |at: Cursor, counters: &Counters| {
            cursor::store(&mut state_file, at, counters, sender.as_ref(), durable)?;
            cursor::remove_legacy(&dir, &legacy, durable)?;
            legacy.clear();
            Ok(())
        };
        let recovered = recovery::recover(&dir, &master, &mut ledger, acked, &mut counters, durable, &mut store)?;
        let (rejected, rejected_max_id) = rejected::recover(&dir, ledger.rejected_through)?;
        let mut spool = Spool {
            dir,
            fsync: config.fsync,
            segment_bytes: config.segment_bytes,
            max_bytes: config.max_bytes,
            master,
            _lock: lock,
            segments: recovered.segments.into(),
            writer: None,
            next_id: recovered.max_id.max(rejected_max_id).saturating_add(1),
            acked,
            durable_acked: acked,
            state_file,
            sender,
            legacy,
            ledger,
            counters,
            rejected,
            reader: None,
            recent: recent::Recent::default(),
            scratch: Scratch::default(),
            oldest_unacked: None,
            undecodable_counted: Cursor::default(),
            #[cfg(test)]
            fail_segment_create: false,
        };
        spool.collect_garbage()?;
        spool.refresh_oldest();
        let stats = spool.stats();
        log::info!(
            "opened {}: {} segments, {} bytes, {} unacknowledged records, {} dropped so far",
            spool.dir.display(),
            stats.segments,
            stats.bytes,
            stats.unacked_records,
            stats.dropped.count
        );
        Ok(spool)
    }

    /// Test hook: while `on`, creating a segment fails with `StorageFull` (a full disk), so
    /// every append that needs a new segment fails.
    #[cfg(test)]
    pub(crate) fn fail_new_segments(&mut self, on: bool) {
        self.fail_segment_create = on;
        if on {
            self.writer = None;
        }
    }

    /// Test hook: the `writes_before + 1`-th state write from now is cut after `keep` bytes and
    /// fails, like every state write after it (the process is dead; drop the spool).
    #[cfg(test)]
    pub(crate) fn crash_at_state_write(&mut self, writes_before: u64, keep: usize) {
        self.state_file.crash = Some(state_file::CrashAt { writes_before, keep, crashed: false });
    }

    /// Test hook: whether the simulated crash of [`Spool::crash_at_state_write`] happened.
    #[cfg(test)]
    pub(crate) fn crashed(&self) -> bool {
        self.state_file.crash.is_some_and(|c| c.crashed)
    }

    /// Test hook: state writes so far (the generation of `state.bin`).
    #[cfg(test)]
    pub(crate) fn state_generation(&self) -> u64 {
        self.state_file.generation()
    }

    /// State slots found damaged (and ignored, logged) when the spool was opened: a write cut
    /// short by a crash, or corruption.
    pub fn damaged_state_slots(&self) -> usize {
        self.state_file.damaged_on_open()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append `records` (sealed, in order). Under `batch` one fsync covers the call; under
    /// `always` every record is fsynced. On error nothing stored before is lost, a prefix of
    /// `records` may have been stored (reading shows exactly which; [`Spool::append_counted`]
    /// says how many), and the next call starts a fresh segment, so it works again once the
    /// cause (a full disk) is gone.
    pub fn append(&mut self, records: &[Record]) -> Result<(), SpoolError> {
        self.append_counted(records).1
    }

    /// [`Spool::append`], also returning how many leading records of `records` were stored
    /// (committed to a segment) whatever the outcome. A caller that retries after an error
    /// must retry only the records after that prefix, or the prefix is stored twice: a call
    /// that crosses a segment boundary commits the first segment's part before it creates the
    /// next segment, which can fail on a full disk.
    pub fn append_counted(&mut self, records: &[Record]) -> (usize, Result<(), SpoolError>) {
        let mut stored = 0u64;
        let result = self.append_inner(records, &mut stored);
        (stored as usize, result)
    }

    fn append_inner(&mut self, records: &[Record], stored: &mut u64) -> Result<(), SpoolError> {
        // The buffers of the last call, kept across calls (see `Scratch`).
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.append_with(records, stored, &mut scratch);
        scratch.reset();
        self.scratch = scratch;
        result
    }

    fn append_with(&mut self, records: &[Record], stored: &mut u64, scratch: &mut Scratch) -> Result<(), SpoolError> {
        // Every record is serialized before anything is written: one that cannot be stores none.
        // The records of one cycle share their time: parse its text once.
        let mut last_ts: Option<(&str, Option<Timestamp>)> = None;
        for (index, record) in records.iter().enumerate() {
            let from = scratch.json.len();
            serde_json::to_writer(&mut scratch.json, record)
                .map_err(|e| SpoolError::Encode { index, message: e.to_string() })?;
            let len = scratch.json.len() - from;
            if len > MAX_RECORD_BYTES {
                return Err(SpoolError::RecordTooLarge { index, bytes: len });
            }
            let ts = match last_ts {
                Some((text, ts)) if text == record.ts => ts,
                _ => record.timestamp(),
            };
            last_ts = Some((&record.ts, ts));
            scratch.records.push((from..from + len, ts));
        }
        let Scratch { json, records: encoded, pending } = scratch;
        for (range, ts) in encoded.iter() {
            let frame_len = (FRAME_OVERHEAD + range.len()) as u64;
            if let Some(writer) = &self.writer {
                let used = writer.len() + pending.bytes.len() as u64;
                let has_records = writer.next_index() + pending.count > 0;
                if has_records && used + frame_len > self.segment_bytes {
                    *stored += self.commit(pending, json)?;
                    self.close_writer()?;
                }
            }
            if self.writer.is_none() {
                self.start_segment()?;
            }
            let Some(writer) = &self.writer else {
                return Err(SpoolError::Seal);
            };
            writer.cipher().seal_frame(
                writer.next_index() + pending.count,
                &json[range.clone()],
                &mut pending.bytes,
            )?;
            pending.count += 1;
            pending.first_ts = pending.first_ts.or(*ts);
            pending.last_ts = ts.or(pending.last_ts);
            pending.plain.push(range.clone());
            if self.fsync == FsyncPolicy::Always {
                *stored += self.commit(pending, json)?;
            }
        }
        *stored += self.commit(pending, json)?;
        if let Err(e) = self.enforce_cap() {
            // The records are stored; the cap is retried on the next append.
            log::error!("enforcing the size cap: {e}");
        }
        if self.oldest_unacked.is_none() {
            self.refresh_oldest();
        }
        Ok(())
    }

    /// Up to `max_records` unacknowledged-or-not records starting at `cursor`, at most
    /// `max_bytes` of JSON (but always at least one record if any is available). A cursor in a
    /// segment that no longer exists continues at the next existing record. Streams frame by
    /// frame: only the returned batch is held in memory.
    pub fn read_from(&mut self, cursor: Cursor, max_records: usize, max_bytes: usize) -> Result<ReadBatch, SpoolError> {
        let mut records = Vec::new();
        let next = self.read_batch(cursor, max_records, max_bytes, false, |json, _| {
            serde_json::from_slice::<Record>(json).map(|record| records.push(record))
        })?;
        Ok(ReadBatch { records, next })
    }

    /// [`Spool::read_from`], each record as the JSON stored in its frame, byte for byte (what a
    /// v2 batch carries). Records this process committed and still holds in memory (see
    /// recent.rs) come from there: no read, no decryption, no parsing; older ones are read from
    /// their segment and checked to be records like [`Spool::read_from`] does. Either way the
    /// result is the same bytes.
    pub fn read_raw_from(
        &mut self,
        cursor: Cursor,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch<Vec<u8>>, SpoolError> {
        let mut records = Vec::new();
        let next = self.read_batch(cursor, max_records, max_bytes, true, |json, trusted| {
            check_record(json, trusted).map(|()| records.push(json.to_vec()))
        })?;
        Ok(ReadBatch { records, next })
    }

    /// [`Spool::read_raw_from`] into `out`: the records' JSON appended one after the other,
    /// separated by commas (the inside of a v2 batch's `records` array), with no allocation per
    /// record. Returns how many records were appended and the position after the last one
    /// (the `next` of [`ReadBatch`]).
    pub fn read_raw_joined(
        &mut self,
        cursor: Cursor,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(usize, Cursor), SpoolError> {
        let mut count = 0;
        let next = self.read_batch(cursor, max_records, max_bytes, true, |json, trusted| {
            check_record(json, trusted)?;
            if count > 0 {
                out.push(b',');
            }
            out.extend_from_slice(json);
            count += 1;
            Ok::<(), serde_json::Error>(())
        })?;
        Ok((count, next))
    }

    /// Test hook: forget the records held in memory, so reads go to the segments.
    #[doc(hidden)]
    pub fn forget_recent(&mut self) {
        self.recent.clear();
    }

    /// The walk behind [`Spool::read_from`] and its raw forms: `add` takes each record's JSON
    /// (an error: the record is skipped and counted as dropped), with `true` when it comes from
    /// `recent` (this process serialized it: unread and unchecked), which `from_memory` allows.
    /// Returns the position after the last record added (see [`ReadBatch::next`]).
    fn read_batch<E: std::fmt::Display>(
        &mut self,
        cursor: Cursor,
        max_records: usize,
        max_bytes: usize,
        from_memory: bool,
        mut add: impl FnMut(&[u8], bool) -> Result<(), E>,
    ) -> Result<Cursor, SpoolError> {
        let mut next = cursor;
        let mut count = 0usize;
        let mut bytes = 0usize;
        let mut pos = cursor;
        while count < max_records {
            let Some(at) = self.locate(pos) else { break };
            if let Some(json) = self.recent.get(at).filter(|_| from_memory) {
                if count > 0 && bytes + json.len() > max_bytes {
                    break;
                }
                bytes += json.len();
                // Serialized by this process: a record.
                if add(json, true).is_ok() {
                    count += 1;
                }
                pos = Cursor { segment: at.segment, index: at.index + 1 };
                next = pos;
                continue;
            }
            let Some(seg) = self.segments.iter().find(|s| s.id == at.segment).cloned() else { break };
            let ready = self.position_reader(&seg, at.index)?;
            let Some(state) = self.reader.as_mut().filter(|_| ready) else {
                if count > 0 {
                    break;
                }
                self.quarantine_live(seg.id, at.index, "segment header is no longer readable")?;
                continue;
            };
            if let Some(len) = state.frames.peek_plaintext_len()? {
                if count > 0 && bytes + len as usize > max_bytes {
                    break;
                }
            }
            match state.frames.next(true)? {
                Step::Record => {
                    bytes += state.frames.buf.len();
                    pos = Cursor { segment: at.segment, index: at.index + 1 };
                    match add(&state.frames.buf, false) {
                        Ok(()) => count += 1,
                        Err(e) if at >= self.undecodable_counted => {
                            // Authentic but not a record this version understands (written by
                            // another version?): skipped and counted once per process.
                            log::error!("segment {} record {}: not a record ({e}); skipped", at.segment, at.index);
                            self.undecodable_counted = pos;
                            self.ledger.add(1, None, None);
                            cursor::store_ledger(&self.dir, &self.ledger, self.durable())?;
                        }
                        Err(_) => {}
                    }
                    next = pos;
                }
                other => {
                    if count > 0 {
                        break;
                    }
                    let why = match other {
                        Step::Torn(reason) | Step::Bad { reason, .. } => reason,
                        _ => "segment ends early".into(),
                    };
                    self.quarantine_live(seg.id, at.index, &format!("record {}: {why}", at.index))?;
                }
            }
        }
        Ok(next)
    }

    /// Acknowledge everything before `cursor` (durably: one `state.bin` write), then delete
    /// segments that are fully acknowledged. A cursor at or before the current ack is ignored.
    pub fn ack(&mut self, cursor: Cursor) -> Result<(), SpoolError> {
        self.ack_counted(cursor, Acked::default())
    }

    /// [`Spool::ack`], adding `counts` to the delivered / superseded counters in the SAME
    /// write as the new cursor: after a crash the counters match the ack exactly.
    pub fn ack_counted(&mut self, cursor: Cursor, counts: Acked) -> Result<(), SpoolError> {
        self.ack_inner(cursor, counts, None, true)
    }

    /// [`Spool::ack_counted`] with the sender's state (opaque to the spool) in the same write:
    /// an ack and its bookkeeping are one durable write. With a cursor at or before the
    /// current ack, only the sender's state is written.
    pub fn ack_counted_with(
        &mut self,
        cursor: Cursor,
        counts: Acked,
        sender: serde_json::Value,
    ) -> Result<(), SpoolError> {
        if cursor <= self.acked {
            return self.store_sender(sender);
        }
        self.ack_inner(cursor, counts, Some(sender), true)
    }

    /// Acknowledge up to `cursor` and count `counts` in memory only: durable with the next
    /// state write ([`Spool::store_sender`], [`Spool::sync_state`], any ack or a segment's
    /// deletion). Until then no segment it covers is deleted, so after a crash its records are
    /// read again: only for a protocol whose server recognises the resend (v2's seq).
    pub fn ack_later(&mut self, cursor: Cursor, counts: Acked) -> Result<(), SpoolError> {
        self.ack_inner(cursor, counts, None, false)
    }

    fn ack_inner(
        &mut self,
        cursor: Cursor,
        counts: Acked,
        sender: Option<serde_json::Value>,
        write: bool,
    ) -> Result<(), SpoolError> {
        if cursor <= self.acked {
            return Ok(());
        }
        let beyond = cursor.segment >= self.next_id
            || self.segments.iter().any(|s| s.id == cursor.segment && cursor.index > s.records);
        if beyond {
            return Err(SpoolError::CursorBeyondEnd { cursor });
        }
        let mut counters = self.counters;
        counters.delivered += counts.delivered;
        counters.superseded += counts.superseded;
        if write {
            counters.appended_through = self.end_position();
            self.write_state(cursor, counters, sender)?;
        }
        self.counters = counters;
        self.acked = cursor;
        self.recent.forget_before(cursor);
        self.collect_garbage()?;
        self.refresh_oldest();
        Ok(())
    }

    /// Write the sender's state (opaque to the spool) durably now, with the spool's state as it
    /// is in memory (an ack made with [`Spool::ack_later`] becomes durable with it).
    pub fn store_sender(&mut self, sender: serde_json::Value) -> Result<(), SpoolError> {
        let mut counters = self.counters;
        counters.appended_through = self.end_position();
        self.write_state(self.acked, counters, Some(sender))?;
        self.counters = counters;
        self.collect_garbage()
    }

    /// Make an ack made with [`Spool::ack_later`] durable now, if one is waiting.
    pub fn sync_state(&mut self) -> Result<(), SpoolError> {
        if self.acked == self.durable_acked {
            return Ok(());
        }
        self.store_state()?;
        self.collect_garbage()
    }

    /// True while an ack made with [`Spool::ack_later`] is not durable yet.
    pub fn state_pending(&self) -> bool {
        self.acked != self.durable_acked
    }

    /// The sender's state as last written (or read on open; `None`: none yet).
    pub fn sender_state(&self) -> Option<&serde_json::Value> {
        self.sender.as_ref()
    }

    /// The one place `state.bin` is written: `cursor` with `counters` and the sender's state
    /// (`sender`, else the last one written), then the removal of files of an older release
    /// if a migration is still due.
    fn write_state(
        &mut self,
        cursor: Cursor,
        counters: Counters,
        sender: Option<serde_json::Value>,
    ) -> Result<(), SpoolError> {
        let durable = self.durable();
        let sender_ref = sender.as_ref().or(self.sender.as_ref());
        cursor::store(&mut self.state_file, cursor, &counters, sender_ref, durable)?;
        if let Some(sender) = sender {
            self.sender = Some(sender);
        }
        cursor::remove_legacy(&self.dir, &self.legacy, durable)?;
        self.legacy.clear();
        self.durable_acked = cursor;
        Ok(())
    }

    /// Where unacknowledged data starts (read from here).
    pub fn acked_cursor(&self) -> Cursor {
        self.acked
    }

    /// Records not yet acknowledged (what [`Spool::stats`] calls `unacked_records`, without
    /// the rest of the stats).
    pub fn unacked_records(&self) -> u64 {
        self.segments.iter().map(|s| unacked_in(s.id, s.records, self.acked)).sum()
    }

    /// Count `count` records a server acknowledged that never reached a segment (Atlas's
    /// fresh widget logs posted straight from memory, docs/architecture.md): added to the
    /// accepted (`appended`) and `delivered` counters together, in memory, durable with the
    /// next state write. A crash before it forgets both (the records were only in memory), so
    /// the accounting adds up after any crash and never counts a record delivered that was
    /// not.
    pub fn count_delivered_unspooled(&mut self, count: u64) {
        self.counters.appended += count;
        self.counters.delivered += count;
    }

    /// Sizes, counts and times.
    pub fn stats(&self) -> SpoolStats {
        let unacked_records = self.unacked_records();
        let newest =
            self.segments.iter().rev().find(|s| unacked_in(s.id, s.records, self.acked) > 0).and_then(|s| s.last_ts);
        SpoolStats {
            bytes: self.segments.iter().map(|s| s.bytes).sum(),
            segments: self.segments.len() as u64,
            unacked_records,
            dropped: self.ledger.to_dropped(),
            oldest: if unacked_records > 0 { self.oldest_unacked } else { None },
            newest,
            counts: RecordCounts::from_parts(&self.counters, &self.ledger, self.rejected_records(), unacked_records),
        }
    }

    /// Count `count` records dropped before they reached the spool (the in-memory hold of
    /// `run` while the disk is full), spanning `oldest..=newest`: they are added to `dropped`
    /// and to the accepted total (one ledger write).
    pub fn count_unspooled(
        &mut self,
        count: u64,
        oldest: Option<Timestamp>,
        newest: Option<Timestamp>,
    ) -> Result<(), SpoolError> {
        if count == 0 {
            return Ok(());
        }
        let mut ledger = self.ledger.clone();
        ledger.add(count, oldest, newest);
        ledger.unspooled += count;
        cursor::store_ledger(&self.dir, &ledger, self.durable())?;
        self.ledger = ledger;
        Ok(())
    }

    /// The position just past the last stored record.
    fn end_position(&self) -> Cursor {
        match self.segments.back() {
            Some(seg) => Cursor { segment: seg.id, index: seg.records },
            None => Cursor { segment: self.next_id.saturating_sub(1), index: u64::MAX },
        }
    }

    /// Write `state.bin` with the counters brought up to date (before a segment is deleted
    /// or moved aside, so the records it held stay counted as appended).
    fn store_state(&mut self) -> Result<(), SpoolError> {
        self.counters.appended_through = self.end_position();
        self.write_state(self.acked, self.counters, None)
    }

    /// fsync the live segment now (at shutdown, and under `never` when wanted).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        match &mut self.writer {
            Some(writer) => writer.sync(),
            None => Ok(()),
        }
    }

    /// Whether state changes are fsynced (every policy but `never`).
    fn durable(&self) -> bool {
        self.fsync != FsyncPolicy::Never
    }

    /// Write `pending` to the live segment (and fsync unless `never`); returns how many
    /// records that stored. On failure the segment is cut back and closed for good.
    fn commit(&mut self, pending: &mut Pending, json: &[u8]) -> Result<u64, SpoolError> {
        if pending.count == 0 {
            return Ok(0);
        }
        let count = pending.count;
        // The zeroed horizon may only take disk the cap still allows.
        let room = self.max_bytes.saturating_sub(self.disk_bytes());
        let Some(writer) = self.writer.as_mut() else {
            return Err(SpoolError::Seal);
        };
        let (len, next_index) = (writer.len(), writer.next_index());
        let sync = self.fsync != FsyncPolicy::Never;
        let result =
            writer.write(&pending.bytes, pending.count, room).and_then(|()| if sync { writer.sync() } else { Ok(()) });
        if let Err(e) = result {
            if let Err(undo) = writer.roll_back(len, next_index) {
                log::error!("undoing a failed write: {undo}");
            }
            let id = writer.id();
            self.writer = None;
            if next_index == 0 {
                self.remove_segment(id);
            }
            pending.clear();
            return Err(e);
        }
        let (id, bytes, records) = (writer.id(), writer.len(), writer.next_index());
        for (index, range) in (next_index..).zip(pending.plain.drain(..)) {
            self.recent.push(Cursor { segment: id, index }, &json[range]);
        }
        self.counters.appended += count;
        if let Some(seg) = self.segments.iter_mut().find(|s| s.id == id) {
            seg.bytes = bytes;
            seg.records = records;
            seg.first_ts = seg.first_ts.or(pending.first_ts);
            seg.last_ts = pending.last_ts.or(seg.last_ts);
        }
        pending.clear();
        Ok(count)
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        let id = self.next_id;
        #[cfg(test)]
        if self.fail_segment_create {
            let path = self.dir.join(segment::file_name(id));
            return Err(SpoolError::io("creating segment", &path)(std::io::ErrorKind::StorageFull.into()));
        }
        let writer =
            SegmentWriter::create(&self.dir, id, &self.master, self.fsync != FsyncPolicy::Never, self.segment_bytes)?;
        self.next_id += 1;
        self.segments.push_back(SegmentInfo {
            id,
            bytes: HEADER_LEN as u64,
            records: 0,
            first_ts: None,
            last_ts: None,
        });
        self.writer = Some(writer);
        Ok(())
    }

    fn close_writer(&mut self) -> Result<(), SpoolError> {
        self.writer = None;
        self.collect_garbage()
    }

    /// Delete closed segments that are fully acknowledged.
    fn collect_garbage(&mut self) -> Result<(), SpoolError> {
        let live = self.writer.as_ref().map(SegmentWriter::id);
        let mut removed = false;
        while let Some(seg) = self.segments.front() {
            if Some(seg.id) == live || unacked_in(seg.id, seg.records, self.durable_acked) > 0 {
                break;
            }
            let path = self.dir.join(segment::file_name(seg.id));
            std::fs::remove_file(&path).map_err(SpoolError::io("removing acknowledged segment", &path))?;
            log::debug!("removed acknowledged segment {}", path.display());
            let id = seg.id;
            self.forget(id);
            removed = true;
        }
        if removed && self.fsync != FsyncPolicy::Never {
            fsio::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Disk the cap counts: the segments' records, the live segment's zeroed horizon and
    /// `rejected/`.
    fn disk_bytes(&self) -> u64 {
        let slack = self.writer.as_ref().map_or(0, SegmentWriter::slack);
        self.segments.iter().map(|s| s.bytes).sum::<u64>() + slack + self.rejected_bytes()
    }

    /// While over the cap (segments plus `rejected/`): drop the oldest rejected batches, then
    /// the oldest closed segments, counting their records.
    fn enforce_cap(&mut self) -> Result<(), SpoolError> {
        let live = self.writer.as_ref().map(SegmentWriter::id);
        let mut dropped_any = false;
        while self.disk_bytes() > self.max_bytes {
            if self.drop_oldest_rejected()? {
                continue;
            }
            let Some(seg) = self.segments.front().cloned() else { break };
            if Some(seg.id) == live {
                break;
            }
            let lost = unacked_in(seg.id, seg.records, self.acked);
            let oldest = if seg.id == self.acked.segment && self.acked.index > 0 {
                self.ts_at(&seg, self.acked.index).or(seg.first_ts)
            } else {
                seg.first_ts
            };
            self.store_state()?;
            if lost > 0 {
                self.ledger.add(lost, oldest, seg.last_ts);
            }
            self.ledger.through_segment = self.ledger.through_segment.max(seg.id);
            cursor::store_ledger(&self.dir, &self.ledger, self.durable())?;
            let path = self.dir.join(segment::file_name(seg.id));
            std::fs::remove_file(&path).map_err(SpoolError::io("removing segment over the cap", &path))?;
            log::warn!(
                "over its cap of {} bytes; dropped segment {} with {lost} unacknowledged records",
                self.max_bytes,
                path.display()
            );
            self.forget(seg.id);
            dropped_any = true;
        }
        if dropped_any {
            if self.fsync != FsyncPolicy::Never {
                fsio::sync_dir(&self.dir)?;
            }
            self.refresh_oldest();
        }
        Ok(())
    }

    /// Move a segment found damaged while reading (at record `from`) to quarantine and count
    /// its records from `from` on as dropped. Reads only stop at damage with an empty batch, so
    /// in the sender's flow (read from the ack cursor, deliver, ack) everything before `from`
    /// has been acknowledged and the count is exact; a reader that reads ahead of its acks
    /// could lose the read-ahead records of this one segment uncounted.
    fn quarantine_live(&mut self, id: u64, from: u64, why: &str) -> Result<(), SpoolError> {
        let Some(seg) = self.segments.iter().find(|s| s.id == id).cloned() else {
            return Ok(());
        };
        if self.writer.as_ref().map(SegmentWriter::id) == Some(id) {
            self.writer = None;
        }
        let path = self.dir.join(segment::file_name(id));
        let lost = unacked_in(id, seg.records, self.acked).min(seg.records.saturating_sub(from));
        // Counted before the move, naming the segment: after a crash in between, recovery
        // moves it without counting it again.
        self.store_state()?;
        let oldest = if from == 0 { seg.first_ts } else { None };
        self.ledger.add(lost, oldest, seg.last_ts);
        self.ledger.quarantined = Some(id);
        cursor::store_ledger(&self.dir, &self.ledger, self.durable())?;
        if path.exists() {
            let to = fsio::move_aside(&path, &self.dir.join(QUARANTINE_DIR), self.durable())?;
            log::error!(
                "segment {} became unreadable ({why}); moved to {}, {lost} unacknowledged records counted as dropped",
                path.display(),
                to.display()
            );
        } else {
            log::error!("segment {} vanished; {lost} unacknowledged records counted as dropped", path.display());
        }
        self.forget(id);
        self.refresh_oldest();
        Ok(())
    }

    /// Remove an (empty) segment file after a failed first write.
    fn remove_segment(&mut self, id: u64) {
        let path = self.dir.join(segment::file_name(id));
        if let Err(e) = std::fs::remove_file(&path) {
            log::warn!("removing empty segment {}: {e}", path.display());
        }
        self.forget(id);
    }

    fn forget(&mut self, id: u64) {
        self.segments.retain(|s| s.id != id);
        self.recent.forget_segment(id);
        if self.reader.as_ref().is_some_and(|r| r.segment == id) {
            self.reader = None;
        }
    }

    /// The first readable position at or after `pos`.
    fn locate(&self, pos: Cursor) -> Option<Cursor> {
        self.segments.iter().find_map(|s| match s.id.cmp(&pos.segment) {
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal => (pos.index < s.records).then_some(pos),
            std::cmp::Ordering::Greater => (s.records > 0).then_some(Cursor { segment: s.id, index: 0 }),
        })
    }

    /// Put the cached reader at record `index` of `seg`. `Ok(false)` if the segment's header
    /// or frames before `index` are no longer readable.
    fn position_reader(&mut self, seg: &SegmentInfo, index: u64) -> Result<bool, SpoolError> {
        let reusable = self.reader.as_ref().is_some_and(|r| r.segment == seg.id && r.frames.index() <= index);
        if !reusable {
            self.reader = None;
            let path = self.dir.join(segment::file_name(seg.id));
            if !path.exists() {
                return Ok(false);
            }
            let (mut frames, header) = segment::open(&path, Some(seg.bytes))?;
            let Ok(header) = header else { return Ok(false) };
            let Ok(cipher) = self.master.open_segment(&header) else { return Ok(false) };
            frames.set_cipher(cipher);
            self.reader = Some(ReadState { segment: seg.id, frames });
        }
        let Some(state) = self.reader.as_mut() else { return Ok(false) };
        state.frames.set_end(seg.bytes)?;
        let skip = index - state.frames.index();
        Ok(state.frames.skip(skip)? == Step::Record)
    }

    /// The time of record `index` of `seg` (from memory, else one frame decrypted), if readable.
    fn ts_at(&mut self, seg: &SegmentInfo, index: u64) -> Option<Timestamp> {
        if let Some(json) = self.recent.get(Cursor { segment: seg.id, index }) {
            return record_ts(json);
        }
        if !self.position_reader(seg, index).ok()? {
            return None;
        }
        let state = self.reader.as_mut()?;
        match state.frames.peek() {
            Ok(Step::Record) => record_ts(&state.frames.buf),
            _ => None,
        }
    }

    fn refresh_oldest(&mut self) {
        let first = self.segments.iter().find(|s| unacked_in(s.id, s.records, self.acked) > 0).cloned();
        self.oldest_unacked = match first {
            None => None,
            Some(seg) if seg.id == self.acked.segment && self.acked.index > 0 => self.ts_at(&seg, self.acked.index),
            Some(seg) => seg.first_ts,
        };
    }
}

/// Whether a frame's JSON is a record this version understands (`trusted`: serialized by
/// this process, not checked again).
fn check_record(json: &[u8], trusted: bool) -> Result<(), serde_json::Error> {
    if trusted {
        return Ok(());
    }
    serde_json::from_slice::<Record>(json).map(|_| ())
}

/// Sealed frames not yet written.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    count: u64,
    /// Where the JSON sealed into each frame is in [`Scratch::json`], in order (kept in
    /// `recent` once committed).
    plain: Vec<std::ops::Range<usize>>,
    first_ts: Option<Timestamp>,
    last_ts: Option<Timestamp>,
}

impl Pending {
    /// Empty, keeping the buffers.
    fn clear(&mut self) {
        self.bytes.clear();
        self.plain.clear();
        self.count = 0;
        self.first_ts = None;
        self.last_ts = None;
    }
}

/// The buffers of an append, kept by the spool from one call to the next: a steady agent
/// serializes and seals every cycle's records without allocating (BENCHMARKS.md, "Branch
/// alloc"). Bounded: past [`SCRATCH_KEEP`] bytes (a large batch, such as records held while
/// the disk was full) they are given back after the call.
#[derive(Default)]
struct Scratch {
    /// The JSON of the call's records, one after the other.
    json: Vec<u8>,
    /// Where each record's JSON is in `json`, and its time.
    records: Vec<(std::ops::Range<usize>, Option<Timestamp>)>,
    pending: Pending,
}

/// Most bytes of buffer [`Scratch`] keeps between appends (a 1 s cycle of every default
/// widget is about 4.5 KiB of JSON).
const SCRATCH_KEEP: usize = 64 * 1024;

impl Scratch {
    /// Empty for the next call; buffers grown past [`SCRATCH_KEEP`] are given back.
    fn reset(&mut self) {
        self.json.clear();
        self.records.clear();
        self.pending.clear();
        if self.json.capacity() > SCRATCH_KEEP || self.pending.bytes.capacity() > SCRATCH_KEEP {
            *self = Scratch::default();
        }
    }
}

#[cfg(test)]
mod tests;
