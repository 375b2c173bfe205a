//! `rejected/`: records a server refused for good (a 4xx other than 400 Decryption failed,
//! 401/403/404/405 and 409), kept sealed at rest and counted, until `fleet-agent spool
//! requeue-rejected` puts them back once the cause is fixed.
//!
//! # Layout
//!
//! ```text
//! <spool.dir>/rejected/
//!   00000000000000000042.seg   the records, in the spool's segment format (sealed with a fresh
//!                              data key wrapped by master.key; the id comes from the spool's
//!                              segment ids, so it never repeats)
//!   00000000000000000042.json  the commit mark, written after the .seg is complete:
//!                              {"version":1,"id":42,"from":{"segment":7,"index":120},
//!                               "what":"batch-1763800000123","reason":"HTTP 400: …",
//!                               "records":12,"bytes":4711,"at":"2026-11-22T13:00:00.000Z"}
//! ```
//!
//! A `.seg` without its `.json` is the leftover of a crash while setting aside (its records
//! were never acknowledged in the spool, so they are still there) and is deleted on open.
//! `from` (the spool position of the first record) makes setting aside idempotent: a crash
//! after the mark but before the ack re-sends the batch; if the server refuses it again, the
//! existing mark is found and nothing is written twice. The mark holds no payload: the
//! reason is the server's answer (at most 200 characters).
//!
//! # Bound
//!
//! Bytes in `rejected/` count toward `spool.max_bytes`. Past the cap, the oldest rejected
//! batches are dropped first (their records added to the dropped ledger, which also records
//! the newest dropped id, so a crash between the ledger write and the delete never counts a
//! batch twice), then the oldest spool segments.
//!
//! Files of older versions (`<ms>-batch-N.json`, the body as sent) are left alone and not
//! counted (they are not records this module can read).

use std::fs;
use std::path::{Path, PathBuf};

use fleet_widgets::Timestamp;
use serde::{Deserialize, Serialize};

use super::cursor::{self, Cursor};
use super::keys::MasterKey;
use super::segment::{self, SegmentWriter, Step};
use super::{fsio, FsyncPolicy, Spool, SpoolError};
use fleet_wire::record::Record;

/// Folder inside the spool directory.
pub const REJECTED_DIR: &str = "rejected";
const MARK_VERSION: u64 = 1;
/// Longest reason kept in a mark.
const MAX_REASON: usize = 200;

/// The commit mark of one rejected batch (`<id>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedBatch {
    version: u64,
    /// Its id (the `.seg` file's name).
    pub id: u64,
    /// Spool position of its first record when it was set aside.
    pub from: Cursor,
    /// What was refused (`batch-<seq>`, `widget-logs`).
    pub what: String,
    /// The server's answer.
    pub reason: String,
    /// Records it holds.
    pub records: u64,
    /// Bytes of its `.seg` file.
    pub bytes: u64,
    /// When it was set aside (RFC 3339 UTC).
    pub at: String,
}

/// The rejected batches in `spool_dir`, oldest first (read-only; none if there is no folder).
pub fn list(spool_dir: &Path) -> Result<Vec<RejectedBatch>, SpoolError> {
    let dir = spool_dir.join(REJECTED_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SpoolError::io("listing", &dir)(e)),
    };
    let mut batches = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let Ok(bytes) = fs::read(entry.path()) else { continue };
        match serde_json::from_slice::<RejectedBatch>(&bytes) {
            Ok(mark) if mark.version == MARK_VERSION && mark.id == id => batches.push(mark),
            _ => log::warn!("{}: not a rejected-batch mark; ignored", entry.path().display()),
        }
    }
    batches.sort_by_key(|b| b.id);
    Ok(batches)
}

/// Records held in `rejected/` (read-only).
pub fn records(spool_dir: &Path) -> Result<u64, SpoolError> {
    Ok(list(spool_dir)?.iter().map(|b| b.records).sum())
}

fn seg_path(spool_dir: &Path, id: u64) -> PathBuf {
    spool_dir.join(REJECTED_DIR).join(segment::file_name(id))
}

fn mark_path(spool_dir: &Path, id: u64) -> PathBuf {
    spool_dir.join(REJECTED_DIR).join(format!("{id:020}.json"))
}

/// The records of rejected batch `id`, decrypted with the spool's master key.
pub fn read_batch(spool_dir: &Path, master: &MasterKey, id: u64) -> Result<Vec<Record>, SpoolError> {
    let path = seg_path(spool_dir, id);
    let (mut frames, header) = segment::open(&path, None)?;
    let header =
        header.map_err(|e| SpoolError::io("reading rejected batch", &path)(std::io::Error::other(e.to_string())))?;
    let cipher = master.open_segment(&header).map_err(|_| {
        SpoolError::io("opening rejected batch", &path)(std::io::Error::other(
            "written under another master key (or damaged)",
        ))
    })?;
    frames.set_cipher(cipher);
    let mut records = Vec::new();
    loop {
        match frames.next(true)? {
            Step::Record => match serde_json::from_slice::<Record>(&frames.buf) {
                Ok(record) => records.push(record),
                Err(e) => log::error!("{}: record {}: not a record ({e})", path.display(), records.len()),
            },
            Step::End => break,
            Step::Torn(why) | Step::Bad { reason: why, .. } => {
                return Err(SpoolError::io("reading rejected batch", &path)(std::io::Error::other(why)));
            }
        }
    }
    Ok(records)
}

/// What `requeue-rejected` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Rejected batches put back.
    pub batches: u64,
    /// Their records.
    pub records: u64,
}

impl Spool {
    /// Keep `records` (refused by the server for good; the first was at spool position
    /// `from`) in `rejected/`, sealed, and count them. Idempotent per `from`: a batch refused
    /// again after a crash is not kept twice. Call before acknowledging them.
    pub fn set_aside(&mut self, from: Cursor, records: &[Record], what: &str, reason: &str) -> Result<(), SpoolError> {
        if records.is_empty() || self.rejected.iter().any(|b| b.from == from) {
            return Ok(());
        }
        let dir = self.dir.join(REJECTED_DIR);
        fsio::create_private_dir(&dir)?;
        let durable = self.durable();
        let id = self.next_id;
        self.next_id += 1;
        // Written once and closed: no zeroed horizon (size limit 0).
        let mut writer = SegmentWriter::create(&dir, id, &self.master, durable, 0)?;
        let mut frames = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let json = serde_json::to_vec(record).map_err(|e| SpoolError::Encode { index, message: e.to_string() })?;
            writer.cipher().seal_frame(index as u64, &json, &mut frames)?;
        }
        let written = writer.write(&frames, records.len() as u64, 0).and_then(|()| writer.sync());
        if let Err(e) = written {
            let _ = fs::remove_file(seg_path(&self.dir, id));
            return Err(e);
        }
        let mark = RejectedBatch {
            version: MARK_VERSION,
            id,
            from,
            what: what.to_string(),
            reason: reason.chars().take(MAX_REASON).collect(),
            records: records.len() as u64,
            bytes: writer.len(),
            at: Timestamp::now().to_rfc3339(),
        };
        let bytes = serde_json::to_vec(&mark).map_err(|e| SpoolError::Encode { index: 0, message: e.to_string() })?;
        fsio::write_atomic(&mark_path(&self.dir, id), &bytes, durable)?;
        self.rejected.push(mark);
        if let Err(e) = self.enforce_cap() {
            log::error!("enforcing the size cap: {e}");
        }
        Ok(())
    }

    /// Bytes in `rejected/` (counted toward `spool.max_bytes`).
    pub(super) fn rejected_bytes(&self) -> u64 {
        self.rejected.iter().map(|b| b.bytes).sum()
    }

    /// Records in `rejected/`.
    pub(super) fn rejected_records(&self) -> u64 {
        self.rejected.iter().map(|b| b.records).sum()
    }

    /// Drop the oldest rejected batch, counting its records as dropped. False if none.
    pub(super) fn drop_oldest_rejected(&mut self) -> Result<bool, SpoolError> {
        if self.rejected.is_empty() {
            return Ok(false);
        }
        let oldest = self.rejected.remove(0);
        self.ledger.add(oldest.records, None, None);
        self.ledger.rejected_through = self.ledger.rejected_through.max(oldest.id);
        cursor::store_ledger(&self.dir, &self.ledger, self.durable())?;
        remove_batch(&self.dir, oldest.id);
        log::warn!(
            "over its cap of {} bytes; dropped rejected batch {} ({}, {} records, refused: {})",
            self.max_bytes,
            oldest.id,
            oldest.what,
            oldest.records,
            oldest.reason
        );
        Ok(true)
    }

    /// Put every rejected batch back into the spool (oldest first) and forget it, so the
    /// sender sends its records again (under new seqs). For after the cause is fixed (a
    /// receiver that lacked the key). An interruption between appending a batch and deleting
    /// its files can put that one batch back twice; the counters stay exact otherwise.
    pub fn requeue_rejected(&mut self) -> Result<Requeued, SpoolError> {
        let mut done = Requeued::default();
        while let Some(batch) = self.rejected.first().cloned() {
            let records = read_batch(&self.dir, &self.master, batch.id)?;
            self.append(&records)?;
            self.counters.requeued += records.len() as u64;
            // Records the segment no longer holds (damaged) were counted as rejected: dropped now.
            let lost = batch.records.saturating_sub(records.len() as u64);
            if lost > 0 {
                self.ledger.add(lost, None, None);
                cursor::store_ledger(&self.dir, &self.ledger, self.durable())?;
            }
            self.store_state()?;
            remove_batch(&self.dir, batch.id);
            self.rejected.remove(0);
            done.batches += 1;
            done.records += records.len() as u64;
        }
        if self.fsync != FsyncPolicy::Never && done.batches > 0 {
            fsio::sync_dir(&self.dir.join(REJECTED_DIR))?;
        }
        Ok(done)
    }
}

fn remove_batch(spool_dir: &Path, id: u64) {
    for path in [mark_path(spool_dir, id), seg_path(spool_dir, id)] {
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("removing {}: {e}", path.display());
            }
        }
    }
}

/// On open: the committed rejected batches (oldest first), after deleting leftovers (a `.seg`
/// without its mark, files of batches the ledger already counts as dropped). Also the largest
/// id used, so new ids never repeat.
pub(super) fn recover(spool_dir: &Path, rejected_through: u64) -> Result<(Vec<RejectedBatch>, u64), SpoolError> {
    let dir = spool_dir.join(REJECTED_DIR);
    let mut batches = list(spool_dir)?;
    let mut max_id = 0;
    for batch in batches.iter().filter(|b| b.id <= rejected_through) {
        log::info!("removing rejected batch {} already counted as dropped", batch.id);
        remove_batch(spool_dir, batch.id);
    }
    batches.retain(|b| b.id > rejected_through);
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".json.tmp") {
                // An interrupted mark write: the batch was never committed.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(id) = segment::parse_file_name(name.strip_suffix(".tmp").unwrap_or(name)) else { continue };
            max_id = max_id.max(id);
            if name.ends_with(".tmp") || !batches.iter().any(|b| b.id == id) {
                log::warn!("removing {} (an interrupted set-aside; its records are still in the spool)", name);
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    let max_id = max_id.max(batches.last().map_or(0, |b| b.id));
    Ok((batches, max_id))
}
