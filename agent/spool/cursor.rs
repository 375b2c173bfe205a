//! Read positions and the spool's state: the ack cursor with its record counters and the
//! sender's state in one record updated in place (`state.bin`, see state_file.rs and
//! docs/state-record.md), and the dropped-records ledger (`dropped.json`).
//!
//! The record's payload is compact JSON; the ledger is JSON replaced atomically (write
//! `.tmp`, fsync, rename, fsync the directory), mode 0600. It is written only when records are
//! dropped (size cap, damage), which is rare, so it keeps its own file. Neither holds record
//! content: positions, counts and timestamps as integers (milliseconds), so no byte sequence
//! of a record's JSON is stored in clear.
//!
//! ```text
//! state.bin     slot payload {"segment":12,"index":40,"appended":5000,"appended_through":{"segment":14,"index":7},
//!                "delivered":4400,"superseded":0,"requeued":0,"sender":{...the sender's state...}}
//! dropped.json  {"version":1,"count":310,"oldest_ms":1763800000000,"newest_ms":1763803600000,"through_segment":9,
//!                "unspooled":25,"rejected_through":0,"quarantined":4,"damaged_tail":{"segment":6,"index":99}}
//! ```
//!
//! `sender` is the sender's own state (sender/state.rs), opaque to the spool: it is written in
//! the same slot write as the ack that goes with it, so an ack and its bookkeeping are one
//! durable write.
//!
//! The counters (all added after version 1 of the old `cursor.json` shipped, absent = 0) make
//! the record accounting of `status` crash-consistent: `delivered` is written in the same
//! write as the ack that delivered the records; `appended` counts the records before
//! `appended_through`, and the ones after it are counted from the segments on open, so an
//! append needs no extra write. `appended_through` is brought up to date before any segment is
//! deleted or quarantined. The ledger's `quarantined` / `damaged_tail` name the last loss
//! counted before its segment was moved or its damaged last record cut, so a crash in between
//! never counts it twice.
//! Records ever accepted = `appended - requeued + unspooled`; at any moment that equals
//! delivered + superseded + dropped (`count`) + rejected (records in `rejected/`) + backlog.
//!
//! `through_segment` is the newest segment the size cap has dropped: the ledger is written
//! before the segment is deleted, so if the agent dies in between, recovery deletes leftover
//! segments with an id at or below it without counting them twice.
//!
//! # Files of an older release
//!
//! `cursor.json` (`{"version":1,"segment":S,"index":I,` + the counters `}`), `sender.json`
//! (the sender's state) and `inflight.json` (v2's in-flight batch) are read when present, and
//! what they hold wins over `state.bin` (they are newer: `state.bin` never exists before them
//! unless a migration was cut short, and then it holds the same values). Opening the spool
//! writes the merged state into `state.bin` (durably), and only then removes the old files
//! and syncs the directory: a crash anywhere in between migrates the same values again.

use std::path::{Path, PathBuf};

use fleet_widgets::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state_file::{self, StateFile};
use super::{fsio, SpoolError};
use fleet_wire::record::Dropped;

/// Name of the ack cursor file of older releases (migrated into `state.bin`).
pub const CURSOR_FILE: &str = "cursor.json";
/// The sender's state file of older releases (migrated into `state.bin`).
pub const LEGACY_SENDER_FILE: &str = "sender.json";
/// v2's in-flight batch file of older releases (migrated into `state.bin`).
pub const LEGACY_INFLIGHT_FILE: &str = "inflight.json";
/// The key of the in-flight batch inside the sender's state.
const INFLIGHT_KEY: &str = "inflight";
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorFile {
    version: u64,
    segment: u64,
    index: u64,
    #[serde(flatten)]
    counters: Counters,
}

/// The payload of a `state.bin` slot. Do not rename or reorder fields: they are the stored
/// format. The counters are spelled out (not `#[serde(flatten)]`, which costs code size).
#[derive(Serialize, Deserialize)]
struct Payload<'a> {
    segment: u64,
    index: u64,
    #[serde(default)]
    appended: u64,
    #[serde(default)]
    appended_through: Cursor,
    #[serde(default)]
    delivered: u64,
    #[serde(default)]
    superseded: u64,
    #[serde(default)]
    requeued: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender: Option<std::borrow::Cow<'a, Value>>,
}

/// The spool's persisted state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// The ack cursor.
    pub cursor: Cursor,
    /// The record counters.
    pub counters: Counters,
    /// The sender's state (opaque to the spool; `None`: no sender has run).
    pub sender: Option<Value>,
}

/// The state as found: `state.bin` merged with the files of an older release.
pub struct Found {
    /// The state (`None`: nothing stored yet).
    pub state: Option<State>,
    /// Old files present (to remove once their values are durable in `state.bin`).
    pub legacy: Vec<PathBuf>,
}

/// Read `dir/cursor.json` (an older release's file) or `state.bin`: the ack cursor.
pub fn load_cursor(dir: &Path) -> Result<Option<Cursor>, SpoolError> {
    Ok(load_state(dir)?.map(|state| state.cursor))
}

/// Read the persisted state read-only (safe while the agent runs): `state.bin` with the files
/// of an older release winning (see the module docs). `Ok(None)` if nothing is stored.
pub fn load_state(dir: &Path) -> Result<Option<State>, SpoolError> {
    let payload = state_file::read(dir)?.and_then(|loaded| loaded.payload);
    Ok(merge(dir, payload)?.state)
}

/// Open `state.bin` for writing and read the state (merged with old files).
pub fn open_state(dir: &Path) -> Result<(StateFile, Found), SpoolError> {
    let (file, payload) = StateFile::open(dir)?;
    let found = merge(dir, payload)?;
    Ok((file, found))
}

/// Parse a slot payload and lay the old files over it.
fn merge(dir: &Path, payload: Option<Vec<u8>>) -> Result<Found, SpoolError> {
    let mut state = match payload {
        Some(bytes) => {
            let payload = serde_json::from_slice::<Payload>(&bytes).map_err(|e| SpoolError::StateUnreadable {
                path: dir.join(state_file::STATE_FILE),
                problem: format!("a whole slot holds no state record ({e})"),
            })?;
            Some(State {
                cursor: Cursor { segment: payload.segment, index: payload.index },
                counters: Counters {
                    appended: payload.appended,
                    appended_through: payload.appended_through,
                    delivered: payload.delivered,
                    superseded: payload.superseded,
                    requeued: payload.requeued,
                },
                sender: payload.sender.map(std::borrow::Cow::into_owned),
            })
        }
        None => None,
    };
    let mut legacy = Vec::new();
    let path = dir.join(CURSOR_FILE);
    if let Some(text) = read_optional(&path)? {
        legacy.push(path.clone());
        match serde_json::from_slice::<CursorFile>(&text) {
            Ok(file) if file.version == STATE_VERSION => {
                let state = state.get_or_insert_with(State::default);
                state.cursor = Cursor { segment: file.segment, index: file.index };
                state.counters = file.counters;
            }
            Ok(file) => return Err(SpoolError::UnknownStateVersion { path, version: file.version }),
            Err(e) => {
                log::warn!("spool cursor {} is unreadable ({e}); resending from the oldest record", path.display());
                if let Some(state) = state.as_mut() {
                    state.cursor = Cursor::default();
                }
            }
        }
    }
    let path = dir.join(LEGACY_SENDER_FILE);
    if let Some(text) = read_optional(&path)? {
        let mut sender = parse_object(&path, &text)?;
        legacy.push(path);
        let state = state.get_or_insert_with(State::default);
        if let Some(inflight) =
            state.sender.as_mut().and_then(|s| s.as_object_mut()).and_then(|s| s.remove(INFLIGHT_KEY))
        {
            sender.insert(INFLIGHT_KEY.into(), inflight);
        }
        state.sender = Some(Value::Object(sender));
    }
    let path = dir.join(LEGACY_INFLIGHT_FILE);
    if let Some(text) = read_optional(&path)? {
        let inflight = parse_object(&path, &text)?;
        legacy.push(path);
        let state = state.get_or_insert_with(State::default);
        let sender = state.sender.get_or_insert_with(|| Value::Object(Default::default()));
        if let Some(sender) = sender.as_object_mut() {
            sender.insert(INFLIGHT_KEY.into(), Value::Object(inflight));
        }
    }
    Ok(Found { state, legacy })
}

fn parse_object(path: &Path, text: &[u8]) -> Result<serde_json::Map<String, Value>, SpoolError> {
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(SpoolError::StateUnreadable { path: path.to_path_buf(), problem: "not a JSON object".into() }),
        Err(e) => Err(SpoolError::StateUnreadable { path: path.to_path_buf(), problem: e.to_string() }),
    }
}

/// Write the state into the next slot of `file` (durably unless the policy is `never`).
pub fn store(
    file: &mut StateFile,
    cursor: Cursor,
    counters: &Counters,
    sender: Option<&Value>,
    durable: bool,
) -> Result<(), SpoolError> {
    let payload = Payload {
        segment: cursor.segment,
        index: cursor.index,
        appended: counters.appended,
        appended_through: counters.appended_through,
        delivered: counters.delivered,
        superseded: counters.superseded,
        requeued: counters.requeued,
        sender: sender.map(std::borrow::Cow::Borrowed),
    };
    file.write_with(durable, |buf| {
        serde_json::to_writer(buf, &payload).map_err(|e| SpoolError::Encode { index: 0, message: e.to_string() })
    })
}

/// Remove the files of an older release once `state.bin` holds their values durably, then
/// sync the directory (if `durable`).
pub fn remove_legacy(dir: &Path, legacy: &[PathBuf], durable: bool) -> Result<(), SpoolError> {
    if legacy.is_empty() {
        return Ok(());
    }
    for path in legacy {
        match std::fs::remove_file(path) {
            Ok(()) => log::info!("migrated {} into {}", path.display(), state_file::STATE_FILE),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("removing migrated state file", path)(e)),
        }
    }
    if durable {
        fsio::sync_dir(dir)?;
    }
    Ok(())
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
    fn the_state_round_trips_and_old_files_win_and_refuse_unknown_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(load_cursor(dir.path()), Ok(None)));
        let (mut file, found) = open_state(dir.path()).expect("open");
        assert!(found.state.is_none() && found.legacy.is_empty());
        let sender = serde_json::json!({"next_seq": 5});
        store(&mut file, Cursor { segment: 12, index: 40 }, &Counters::default(), Some(&sender), true).expect("store");
        let state = load_state(dir.path()).expect("load").expect("stored");
        assert_eq!((state.cursor, state.sender), (Cursor { segment: 12, index: 40 }, Some(sender.clone())));
        // An older release's cursor.json wins (a cut migration, or a downgrade in between).
        std::fs::write(dir.path().join(CURSOR_FILE), r#"{"version":1,"segment":13,"index":1}"#).expect("old file");
        assert_eq!(load_cursor(dir.path()).ok().flatten(), Some(Cursor { segment: 13, index: 1 }));
        std::fs::write(dir.path().join(CURSOR_FILE), r#"{"version":2,"segment":1,"index":0}"#).expect("write");
        assert!(matches!(load_cursor(dir.path()), Err(SpoolError::UnknownStateVersion { version: 2, .. })));
        std::fs::write(dir.path().join(CURSOR_FILE), "garbage").expect("write");
        assert!(matches!(load_cursor(dir.path()), Ok(Some(Cursor { segment: 0, index: 0 }))));
        std::fs::remove_file(dir.path().join(CURSOR_FILE)).expect("rm");
        // sender.json replaces the sender's state but keeps the in-flight batch of state.bin
        // unless inflight.json is there too.
        let with_inflight = serde_json::json!({"next_seq": 5, "inflight": {"seq": 4}});
        store(&mut file, Cursor { segment: 12, index: 40 }, &Counters::default(), Some(&with_inflight), true)
            .expect("store");
        std::fs::write(dir.path().join(LEGACY_SENDER_FILE), r#"{"next_seq":9}"#).expect("write");
        let state = load_state(dir.path()).expect("load").expect("stored");
        assert_eq!(state.sender, Some(serde_json::json!({"next_seq": 9, "inflight": {"seq": 4}})));
        std::fs::write(dir.path().join(LEGACY_INFLIGHT_FILE), r#"{"seq":8,"body":"x"}"#).expect("write");
        let state = load_state(dir.path()).expect("load").expect("stored");
        assert_eq!(state.sender, Some(serde_json::json!({"next_seq": 9, "inflight": {"seq": 8, "body": "x"}})));
        std::fs::write(dir.path().join(LEGACY_SENDER_FILE), "garbage").expect("write");
        let err = load_state(dir.path()).expect_err("unreadable sender.json");
        assert!(err.to_string().contains("sender.json"), "{err}");

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
