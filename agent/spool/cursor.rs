//! Read positions and the two small state files: the ack cursor (`cursor.json`) and the
//! dropped-records ledger (`dropped.json`).
//!
//! Both are JSON with a `version` field, replaced atomically (write `.tmp`, fsync, rename,
//! fsync the directory), mode 0600. Neither holds record content: positions, counts and
//! timestamps as integers (milliseconds), so no byte sequence of a record's JSON is stored
//! in clear.
//!
//! ```text
//! cursor.json   {"version":1,"segment":12,"index":40,"appended":5000,"appended_through":{"segment":14,"index":7},
//!                "delivered":4400,"superseded":0,"requeued":0}
//! dropped.json  {"version":1,"count":310,"oldest_ms":1763800000000,"newest_ms":1763803600000,"through_segment":9,
//!                "unspooled":25,"rejected_through":0,"quarantined":4,"damaged_tail":{"segment":6,"index":99}}
//! ```
//!
//! The counters (all added after version 1 shipped, absent = 0) make the record accounting
//! of `status` crash-consistent: `delivered` is written in the same atomic replace as the ack
//! that delivered the records; `appended` counts the records before `appended_through`, and
//! the ones after it are counted from the segments on open, so an append needs no extra write.
//! `appended_through` is brought up to date before any segment is deleted or quarantined.
//! The ledger's `quarantined` / `damaged_tail` name the last loss counted before its segment
//! was moved or its damaged last record cut, so a crash in between never counts it twice.
//! Records ever accepted = `appended - requeued + unspooled`; at any moment that equals
//! delivered + superseded + dropped (`count`) + rejected (records in `rejected/`) + backlog.
//!
//! `through_segment` is the newest segment the size cap has dropped: the ledger is written
//! before the segment is deleted, so if the agent dies in between, recovery deletes leftover
//! segments with an id at or below it without counting them twice.

use std::path::Path;

use fleet_widgets::Timestamp;
use serde::{Deserialize, Serialize};

use super::{fsio, SpoolError};
use fleet_wire::record::Dropped;

/// Name of the ack cursor file.
pub const CURSOR_FILE: &str = "cursor.json";
/// Name of the dropped ledger file.
pub const DROPPED_FILE: &str = "dropped.json";
const STATE_VERSION: u64 = 1;

/// A position in the spool: the next record to read is record `index` of segment `segment`.
/// Ordered by segment, then index. Segment ids only grow, so positions compare in write order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Segment id.
    pub segment: u64,
    /// Record index within the segment.
    pub index: u64,
}

/// Record counters kept with the ack cursor in `cursor.json` (so an ack and the count of what
/// it delivered are one atomic write). All are totals since the spool was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Records appended to segments before `appended_through` (records at or after it are
    /// counted from the segments themselves on open).
    #[serde(default)]
    pub appended: u64,
    /// The position just past the last record `appended` counts.
    #[serde(default)]
    pub appended_through: Cursor,
    /// Records the server acknowledged.
    #[serde(default)]
    pub delivered: u64,
    /// Atlas metric records acknowledged because the report (the server's heartbeat) carries
    /// their newest values, not sent one by one.
    #[serde(default)]
    pub superseded: u64,
    /// Records put back from `rejected/` (appended a second time).
    #[serde(default)]
    pub requeued: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorFile {
    version: u64,
    segment: u64,
    index: u64,
    #[serde(flatten)]
    counters: Counters,
}

/// Read `dir/cursor.json`: `Ok(None)` if absent. An unreadable file is reported (the caller
/// restarts from the oldest record: duplicates are better than loss); an unknown version is
/// an error.
pub fn load_cursor(dir: &Path) -> Result<Option<Cursor>, SpoolError> {
    Ok(load_state(dir)?.map(|(cursor, _)| cursor))
}

/// Read `dir/cursor.json` with its counters (see [`load_cursor`]; files written before the
/// counters existed read as zero counters).
pub fn load_state(dir: &Path) -> Result<Option<(Cursor, Counters)>, SpoolError> {
    let path = dir.join(CURSOR_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    match serde_json::from_slice::<CursorFile>(&text) {
        Ok(file) if file.version == STATE_VERSION => {
            Ok(Some((Cursor { segment: file.segment, index: file.index }, file.counters)))
        }
        Ok(file) => Err(SpoolError::UnknownStateVersion { path, version: file.version }),
        Err(e) => {
            log::warn!("spool cursor {} is unreadable ({e}); resending from the oldest record", path.display());
            Ok(None)
        }
    }
}

/// Replace `dir/cursor.json` (durably unless the policy is `never`).
pub fn store_cursor(dir: &Path, cursor: Cursor, counters: &Counters, durable: bool) -> Result<(), SpoolError> {
    let file = CursorFile { version: STATE_VERSION, segment: cursor.segment, index: cursor.index, counters: *counters };
    let bytes = serde_json::to_vec(&file).map_err(|e| SpoolError::Encode { index: 0, message: e.to_string() })?;
    fsio::write_atomic(&dir.join(CURSOR_FILE), &bytes, durable)
}

/// The persisted dropped-records ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    version: u64,
    /// Records dropped so far.
    pub count: u64,
    /// Oldest dropped record's time (ms since the epoch), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ms: Option<i64>,
    /// Newest dropped record's time (ms since the epoch), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_ms: Option<i64>,
    /// Newest segment id dropped by the size cap (0 = none).
    #[serde(default)]
    pub through_segment: u64,
    /// Of `count`: records dropped before they reached the spool (the in-memory hold while
    /// the disk was full). They count as accepted too.
    #[serde(default)]
    pub unspooled: u64,
    /// Newest `rejected/` file id dropped by the bound on `rejected/` (0 = none): its records
    /// are in `count`; a file with an id at or below it is a leftover, deleted uncounted.
    #[serde(default)]
    pub rejected_through: u64,
    /// The last segment counted as dropped when it was quarantined: if it is still in place
    /// (a crash between this write and the move), it is moved without being counted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<u64>,
    /// The last damaged final record counted as dropped before it was cut (segment, index):
    /// if it is still there (a crash before the cut), it is cut without being counted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged_tail: Option<Cursor>,
}

impl Ledger {
    /// Add `count` records spanning `oldest..=newest` (either may be unknown).
    pub fn add(&mut self, count: u64, oldest: Option<Timestamp>, newest: Option<Timestamp>) {
        self.count += count;
        if let Some(t) = oldest.or(newest) {
            self.oldest_ms = Some(self.oldest_ms.map_or(t.0, |o| o.min(t.0)));
        }
        if let Some(t) = newest.or(oldest) {
            self.newest_ms = Some(self.newest_ms.map_or(t.0, |n| n.max(t.0)));
        }
    }

    /// As reported upstream.
    pub fn to_dropped(&self) -> Dropped {
        Dropped {
            count: self.count,
            oldest: self.oldest_ms.map(|ms| Timestamp(ms).to_rfc3339()),
            newest: self.newest_ms.map(|ms| Timestamp(ms).to_rfc3339()),
        }
    }
}

/// Read `dir/dropped.json` (absent = nothing dropped). An unreadable ledger is logged and
/// restarted from zero; an unknown version is an error.
pub fn load_ledger(dir: &Path) -> Result<Ledger, SpoolError> {
    let path = dir.join(DROPPED_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(Ledger { version: STATE_VERSION, ..Ledger::default() });
    };
    match serde_json::from_slice::<Ledger>(&text) {
        Ok(ledger) if ledger.version == STATE_VERSION => Ok(ledger),
        Ok(ledger) => Err(SpoolError::UnknownStateVersion { path, version: ledger.version }),
        Err(e) => {
            log::error!("spool dropped ledger {} is unreadable ({e}); counting from zero", path.display());
            Ok(Ledger { version: STATE_VERSION, ..Ledger::default() })
        }
    }
}

/// Replace `dir/dropped.json` (durably unless the policy is `never`).
pub fn store_ledger(dir: &Path, ledger: &Ledger, durable: bool) -> Result<(), SpoolError> {
    let mut ledger = ledger.clone();
    ledger.version = STATE_VERSION;
    let bytes = serde_json::to_vec(&ledger).map_err(|e| SpoolError::Encode { index: 0, message: e.to_string() })?;
    fsio::write_atomic(&dir.join(DROPPED_FILE), &bytes, durable)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, SpoolError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SpoolError::io("reading", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_round_trip_and_refuse_unknown_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(load_cursor(dir.path()), Ok(None)));
        store_cursor(dir.path(), Cursor { segment: 12, index: 40 }, &Counters::default(), true).expect("store");
        let text = std::fs::read_to_string(dir.path().join(CURSOR_FILE)).expect("read");
        assert!(text.starts_with(r#"{"version":1,"segment":12,"index":40,"appended":0,"#), "{text}");
        std::fs::write(dir.path().join(CURSOR_FILE), r#"{"version":1,"segment":12,"index":40}"#).expect("old file");
        assert_eq!(load_cursor(dir.path()).ok().flatten(), Some(Cursor { segment: 12, index: 40 }));
        std::fs::write(dir.path().join(CURSOR_FILE), r#"{"version":2,"segment":1,"index":0}"#).expect("write");
        assert!(matches!(load_cursor(dir.path()), Err(SpoolError::UnknownStateVersion { version: 2, .. })));
        std::fs::write(dir.path().join(CURSOR_FILE), "garbage").expect("write");
        assert!(matches!(load_cursor(dir.path()), Ok(None)));

        let mut ledger = load_ledger(dir.path()).expect("empty");
        assert_eq!(ledger.to_dropped(), Dropped::default());
        ledger.add(3, Some(Timestamp(2000)), Some(Timestamp(5000)));
        ledger.add(2, Some(Timestamp(1000)), None);
        ledger.through_segment = 4;
        store_ledger(dir.path(), &ledger, false).expect("store");
        let back = load_ledger(dir.path()).expect("load");
        assert_eq!(back, ledger);
        assert_eq!(back.to_dropped().count, 5);
        assert_eq!(back.to_dropped().oldest.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(back.to_dropped().newest.as_deref(), Some("1970-01-01T00:00:05.000Z"));
    }
}
