//! Scanning segments: recovery on open (repairs: truncate torn tails, quarantine the
//! unreadable) and `verify` (reports only, changes nothing). Both share [`scan`], which never
//! panics on any byte sequence and holds one frame in memory at a time.

use std::fs;
use std::path::{Path, PathBuf};

use fleet_widgets::Timestamp;

use super::cursor::{Cursor, Ledger};
use super::format::{HeaderError, HEADER_LEN};
use super::keys::{MasterKey, UnwrapError};
use super::segment::{self, Step};
use super::{fsio, SpoolError};

/// Name of the directory unreadable segments are moved to.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A readable segment as the spool tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment id.
    pub id: u64,
    /// Bytes of the file that hold good data (header + good frames).
    pub bytes: u64,
    /// Good records.
    pub records: u64,
    /// Time of the first record.
    pub first_ts: Option<Timestamp>,
    /// Time of the last record.
    pub last_ts: Option<Timestamp>,
}

/// The state of a segment's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderState {
    /// Readable with the master key.
    Ok,
    /// Not a usable header (short, bad magic, reserved bits, wrong id, corrupt wrapped key).
    Bad(String),
    /// A format version this agent does not know.
    UnknownVersion(u8),
    /// Written under another master key.
    OtherKey,
    /// No master key to read it with.
    NoKey,
}

/// What is wrong at the end of, or inside, a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A crash mid-write: `bytes` from `offset` are not a whole, authentic frame.
    Torn {
        /// Where the torn frame starts.
        offset: u64,
        /// Bytes from there to the end.
        bytes: u64,
        /// What was found.
        reason: String,
        /// Whole records the cut destroys (1 when the last frame is complete but damaged: it
        /// was stored once, so recovery counts it as dropped; 0 for a write cut short).
        damaged: u64,
    },
    /// A damaged frame with data after it.
    Bad {
        /// Index of the first bad frame.
        index: u64,
        /// Its offset.
        offset: u64,
        /// What was found.
        reason: String,
    },
}

/// Everything a scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// Segment id (from the file name).
    pub id: u64,
    /// The file.
    pub path: PathBuf,
    /// File size.
    pub file_bytes: u64,
    /// Header state.
    pub header: HeaderState,
    /// Records that authenticate, before the first problem.
    pub good: u64,
    /// Offset just after them.
    pub good_end: u64,
    /// Time of the first good record.
    pub first_ts: Option<Timestamp>,
    /// Time of the last good record (before the first problem).
    pub last_ts: Option<Timestamp>,
    /// The first problem, if any.
    pub problem: Option<Problem>,
    /// Frames that do not authenticate (or cannot be framed), from the first problem on.
    pub bad: u64,
    /// Good frames after the first bad one (verify reports them; recovery counts them dropped).
    pub good_after_bad: u64,
    /// Frames found without a key to check them (header not readable with the master key).
    pub unchecked: u64,
    /// Zero bytes after the last good record, when the segment ends cleanly: the zeroed
    /// horizon of a writer that did not close it (a crash), not a problem. Recovery cuts them.
    pub zero_tail: u64,
}

impl SegmentScan {
    /// Records this segment holds or held (for dropped accounting when it is quarantined).
    pub fn record_count(&self) -> u64 {
        self.good + self.bad + self.good_after_bad + self.unchecked + self.damaged_tail()
    }

    /// Whole records a torn-tail cut destroys (see [`Problem::Torn`]).
    pub fn damaged_tail(&self) -> u64 {
        match &self.problem {
            Some(Problem::Torn { damaged, .. }) => *damaged,
            _ => 0,
        }
    }

    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.header == HeaderState::Ok && self.problem.is_none()
    }
}

/// The timestamp of a record's JSON. Fast path: records serialize `ts` first
/// (`{"ts":"…",`); anything else is parsed in full.
pub fn record_ts(json: &[u8]) -> Option<Timestamp> {
    if let Some(rest) = json.strip_prefix(b"{\"ts\":\"") {
        if let Some(end) = rest.iter().position(|b| *b == b'"') {
            if let Ok(text) = std::str::from_utf8(&rest[..end]) {
                if let Some(ts) = Timestamp::parse_rfc3339(text) {
                    return Some(ts);
                }
            }
        }
    }
    serde_json::from_slice::<fleet_wire::record::Record>(json).ok().and_then(|r| r.timestamp())
}

/// Walk segment `id` at `path`. Read-only.
pub fn scan(path: &Path, id: u64, master: Option<&MasterKey>) -> Result<SegmentScan, SpoolError> {
    let (mut reader, header) = segment::open(path, None)?;
    let mut scan = SegmentScan {
        id,
        path: path.to_path_buf(),
        file_bytes: reader.end(),
        header: HeaderState::Ok,
        good: 0,
        good_end: HEADER_LEN as u64,
        first_ts: None,
        last_ts: None,
        problem: None,
        bad: 0,
        good_after_bad: 0,
        unchecked: 0,
        zero_tail: 0,
    };
    let state = match header {
        Ok(h) if h.segment_id != id => {
            Err(HeaderState::Bad(format!("header names segment {}, file name {id}", h.segment_id)))
        }
        Ok(h) => match master.map(|m| m.open_segment(&h)) {
            None => Err(HeaderState::NoKey),
            Some(Ok(cipher)) => Ok(cipher),
            Some(Err(UnwrapError::OtherKey)) => Err(HeaderState::OtherKey),
            Some(Err(UnwrapError::Corrupt)) => Err(HeaderState::Bad("wrapped data key does not authenticate".into())),
        },
        Err(HeaderError::Version(v)) => Err(HeaderState::UnknownVersion(v)),
        Err(e) => Err(HeaderState::Bad(e.to_string())),
    };
    match state {
        Ok(cipher) => reader.set_cipher(cipher),
        Err(state) => {
            scan.header = state;
            // Count the frames without checking them (for the dropped ledger and the report).
            while reader.next(false)? == Step::Record {
                scan.unchecked += 1;
            }
            return Ok(scan);
        }
    }
    loop {
        let offset = reader.offset();
        match reader.next(true)? {
            Step::Record => {
                if scan.problem.is_none() {
                    scan.good += 1;
                    scan.good_end = reader.offset();
                    let ts = record_ts(&reader.buf);
                    if scan.good == 1 {
                        scan.first_ts = ts;
                    }
                    scan.last_ts = ts;
                } else {
                    scan.good_after_bad += 1;
                }
            }
            Step::End => {
                if scan.problem.is_none() {
                    scan.zero_tail = reader.end() - reader.offset();
                }
                break;
            }
            Step::Torn(reason) => {
                if scan.problem.is_none() {
                    let damaged = u64::from(reader.torn_was_complete());
                    scan.problem = Some(Problem::Torn { offset, bytes: reader.end() - offset, reason, damaged });
                } else {
                    scan.bad += 1;
                }
                break;
            }
            Step::Bad { reason, skip } => {
                scan.bad += 1;
                if scan.problem.is_none() {
                    scan.problem = Some(Problem::Bad { index: reader.index(), offset, reason });
                }
                match skip {
                    Some(len) => reader.skip_bad(len)?,
                    // The length is unusable: find the next sound frame, so the frames in
                    // between are counted (dropped) and the ones after are too.
                    None => match reader.resync()? {
                        Some(gap) => scan.bad += gap - 1,
                        None => break,
                    },
                }
            }
        }
    }
    Ok(scan)
}

/// Segment ids in `dir`, ascending. Other files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(SpoolError::io("listing", dir))? {
        let entry = entry.map_err(SpoolError::io("listing", dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(segment::parse_file_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The largest segment id ever used in `dir` (live or quarantined), so new ids never repeat.
pub fn max_id_seen(dir: &Path, live: &[u64]) -> u64 {
    let mut max = live.last().copied().unwrap_or(0);
    if let Ok(entries) = fs::read_dir(dir.join(QUARANTINE_DIR)) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Quarantined names may carry a `.N` suffix.
            let base = name.split(segment::SEGMENT_SUFFIX).next().unwrap_or("");
            if let Ok(id) = base.parse::<u64>() {
                max = max.max(id);
            }
        }
    }
    max
}

/// Records of segment `id` (holding `count`) not yet acknowledged by `acked`.
pub fn unacked_in(id: u64, count: u64, acked: Cursor) -> u64 {
    match id.cmp(&acked.segment) {
        std::cmp::Ordering::Less => 0,
        std::cmp::Ordering::Equal => count.saturating_sub(acked.index),
        std::cmp::Ordering::Greater => count,
    }
}

/// What recovery left.
pub struct Recovered {
    /// Readable segments, ascending.
    pub segments: Vec<SegmentInfo>,
    /// Largest id seen anywhere (next segment = this + 1).
    pub max_id: u64,
}

/// Bring `dir` to a consistent state: drop our temp files and leftovers of an interrupted cap
/// drop, truncate torn tails, quarantine unreadable segments (counting their unacked records
/// in `ledger`, like a damaged last record that is cut), delete empty ones. A segment of an
/// unknown format version (a flipped version byte, or a newer agent's spool) is quarantined
/// like any unreadable one: start-up goes on.
///
/// Crash-safe accounting: every segment is scanned first; records appended since
/// `counters.appended_through` are added to `counters.appended`, and the state is written
/// (with `acked`) BEFORE any record leaves what a later recount would find (a quarantine, a
/// damaged last record cut); each cut or move is preceded by its ledger write, which names the
/// cut position or segment, so a crash in between never counts it twice or not at all. A
/// clean spool, a torn partial write or an empty segment needs no write at all, so the spool
/// opens on a full disk.
pub fn recover(
    dir: &Path,
    master: &MasterKey,
    ledger: &mut Ledger,
    acked: Cursor,
    counters: &mut super::cursor::Counters,
    durable: bool,
    store_state: &mut dyn FnMut(Cursor, &super::cursor::Counters) -> Result<(), SpoolError>,
) -> Result<Recovered, SpoolError> {
    remove_temp_files(dir)?;
    let mut ids = list_segments(dir)?;
    let max_id = max_id_seen(dir, &ids).max(ledger.through_segment).max(acked.segment);
    let mut removed_any = false;
    ids.retain(|&id| {
        if id <= ledger.through_segment {
            let path = dir.join(segment::file_name(id));
            log::info!("removing segment {} already counted as dropped", path.display());
            removed_any |= fs::remove_file(&path).is_ok();
            return false;
        }
        true
    });
    let mut scans = Vec::with_capacity(ids.len());
    for &id in &ids {
        scans.push(scan(&dir.join(segment::file_name(id)), id, Some(master))?);
    }
    let appended_since: u64 =
        scans.iter().map(|scan| unacked_in(scan.id, scan.record_count(), counters.appended_through)).sum();
    if appended_since > 0 {
        let persisted_through = counters.appended_through;
        counters.appended += appended_since;
        if let Some(last) = scans.last() {
            counters.appended_through = Cursor { segment: last.id, index: last.record_count() };
        }
        // Opening needs no write when nothing below changes what a recount would find (a
        // disk-full start must work): the counters in memory are then authoritative, and
        // state.bin is brought up to date by the next ack or before the next segment is
        // deleted or moved; until then a restart recounts the same segments. Written now
        // when a record is about to leave the recount (a quarantine, a damaged last record
        // cut), and for a state older than the counters, whose acknowledged segments
        // are deleted just after this (see cursor.rs).
        let leaving =
            scans.iter().any(|scan| scan.damaged_tail() > 0 || (!repairable(scan) && scan.record_count() > 0));
        if leaving || acked > persisted_through {
            store_state(acked, counters)?;
        }
    }
    let mut segments = Vec::new();
    let mut other_key = 0;
    for scan in scans {
        if !repairable(&scan) {
            if matches!(scan.header, HeaderState::OtherKey | HeaderState::NoKey) {
                other_key += 1;
            }
            let why = match (&scan.header, &scan.problem) {
                (HeaderState::Ok, Some(Problem::Bad { index, offset, reason })) => {
                    format!("record {index} at offset {offset}: {reason}")
                }
                (HeaderState::OtherKey | HeaderState::NoKey, _) => "written under another master key".into(),
                (HeaderState::UnknownVersion(v), _) => {
                    format!("unknown format version {v} in its header: damaged, or written by a newer agent")
                }
                (HeaderState::Bad(reason), _) => reason.clone(),
                _ => "unreadable".into(),
            };
            let lost = unacked_in(scan.id, scan.record_count(), acked);
            let counted_before = ledger.quarantined == Some(scan.id);
            if lost > 0 && !counted_before {
                ledger.add(lost, scan.first_ts, scan.last_ts);
                ledger.quarantined = Some(scan.id);
                super::cursor::store_ledger(dir, ledger, durable)?;
            }
            let to = fsio::move_aside(&scan.path, &dir.join(QUARANTINE_DIR), durable)?;
            log::error!(
                "segment {} is unreadable ({why}); moved to {}, {lost} unacknowledged records counted as dropped",
                scan.path.display(),
                to.display()
            );
            continue;
        }
        if let Some(Problem::Torn { offset, bytes, reason, damaged }) = &scan.problem {
            log::warn!(
                "segment {}: torn tail ({reason}); truncating {bytes} bytes at offset {offset} after {} good records",
                scan.path.display(),
                scan.good
            );
            let lost = unacked_in(scan.id, scan.good + damaged, acked).min(*damaged);
            let at = Cursor { segment: scan.id, index: scan.good };
            if lost > 0 && ledger.damaged_tail != Some(at) {
                // A whole record that was stored and is now damaged: its loss is counted.
                log::error!(
                    "segment {}: its last record is damaged; {lost} record counted as dropped",
                    scan.path.display()
                );
                ledger.add(lost, scan.last_ts, scan.last_ts);
                ledger.damaged_tail = Some(at);
                super::cursor::store_ledger(dir, ledger, durable)?;
            }
            truncate(&scan.path, *offset)?;
        } else if scan.zero_tail > 0 && scan.good > 0 {
            // The zeroed horizon of a segment that was live when the agent stopped without
            // closing it: a clean end. It is never appended to again, so its size is made its
            // records' length (the cap and `status` count exact sizes).
            log::debug!("segment {}: cutting a zeroed horizon of {} bytes", scan.path.display(), scan.zero_tail);
            truncate(&scan.path, scan.good_end)?;
        }
        if scan.good == 0 {
            // A header and nothing else: no records to keep.
            fs::remove_file(&scan.path).map_err(SpoolError::io("removing empty segment", &scan.path))?;
            removed_any = true;
            continue;
        }
        segments.push(SegmentInfo {
            id: scan.id,
            bytes: scan.good_end,
            records: scan.good,
            first_ts: scan.first_ts,
            last_ts: scan.last_ts,
        });
    }
    if other_key > 0 {
        log::error!(
            "{other_key} segments were written under a different or missing master key ({}); \
             they are in {} (never deleted) and the spool goes on with new segments",
            dir.join(super::keys::MASTER_KEY_FILE).display(),
            dir.join(QUARANTINE_DIR).display()
        );
    }
    if removed_any && durable {
        fsio::sync_dir(dir)?;
    }
    Ok(Recovered { segments, max_id })
}

/// True when recovery keeps the segment (cutting a torn tail at most); false when it is
/// quarantined.
fn repairable(scan: &SegmentScan) -> bool {
    scan.header == HeaderState::Ok && !matches!(scan.problem, Some(Problem::Bad { .. }))
}

fn truncate(path: &Path, len: u64) -> Result<(), SpoolError> {
    let file = fs::OpenOptions::new().write(true).open(path).map_err(SpoolError::io("opening segment", path))?;
    file.set_len(len).map_err(SpoolError::io("truncating segment", path))?;
    file.sync_all().map_err(SpoolError::io("syncing segment", path))
}

/// Remove our own leftover temp files (`<segment>.seg.tmp`, `master.key.tmp`, `state.bin.tmp`,
/// `cursor.json.tmp`, `dropped.json.tmp`) from an interrupted write. Nothing else is touched.
fn remove_temp_files(dir: &Path) -> Result<(), SpoolError> {
    for entry in fs::read_dir(dir).map_err(SpoolError::io("listing", dir))?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(base) = name.strip_suffix(".tmp") else { continue };
        let ours = segment::parse_file_name(base).is_some()
            || [
                super::keys::MASTER_KEY_FILE,
                super::cursor::CURSOR_FILE,
                super::cursor::DROPPED_FILE,
                super::state_file::STATE_FILE,
            ]
            .contains(&base);
        if ours {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}
