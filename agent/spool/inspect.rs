//! Read-only views of a spool directory for `status` and `spool verify`: they create, lock,
//! repair and delete nothing, so they are safe while `run` has the spool open.

use std::fmt;
use std::path::{Path, PathBuf};

use super::cursor::{self, Cursor};
use super::keys::MasterKey;
use super::recovery::{self, list_segments, record_ts, scan, unacked_in, HeaderState, Problem, SegmentScan};
use super::segment::{self, Step};
use super::{SpoolError, SpoolStats};

/// Stats of the spool in `dir` computed by reading only; `Ok(None)` if `dir` does not exist.
/// Counts what a fresh open would keep (good records; torn tails and unreadable segments
/// are not counted as unacknowledged).
pub fn inspect(dir: &Path) -> Result<Option<SpoolStats>, SpoolError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let master = MasterKey::load(dir)?;
    let cursor::State { cursor: acked, counters, .. } = cursor::load_state(dir)?.unwrap_or_default();
    let mut ledger = cursor::load_ledger(dir)?;
    let mut appended_since = 0;
    let mut stats = SpoolStats::default();
    for id in list_segments(dir)? {
        let path = dir.join(segment::file_name(id));
        let scan = match scan(&path, id, master.as_ref()) {
            Ok(scan) => scan,
            // Deleted (acknowledged) by a running agent since it was listed.
            Err(_) if !path.exists() => continue,
            Err(e) => return Err(e),
        };
        // As the spool counts them: without a zeroed horizon (the live segment's, or a crashed
        // writer's that the next open cuts).
        stats.bytes += scan.file_bytes - scan.zero_tail;
        stats.segments += 1;
        if id <= ledger.through_segment {
            continue; // already counted as dropped; the next open deletes it
        }
        appended_since += unacked_in(id, scan.record_count(), counters.appended_through);
        // What the next open will count as dropped (an unreadable segment, a damaged last record).
        if scan.header != HeaderState::Ok || matches!(scan.problem, Some(Problem::Bad { .. })) {
            if ledger.quarantined != Some(id) {
                ledger.add(unacked_in(id, scan.record_count(), acked), scan.first_ts, scan.last_ts);
            }
            continue;
        }
        let damaged = scan.damaged_tail();
        if ledger.damaged_tail != Some(Cursor { segment: id, index: scan.good }) {
            ledger.add(unacked_in(id, scan.good + damaged, acked).min(damaged), None, None);
        }
        let unacked = unacked_in(id, scan.good, acked);
        if unacked == 0 {
            continue;
        }
        stats.unacked_records += unacked;
        if stats.oldest.is_none() {
            stats.oldest = if id == acked.segment && acked.index > 0 {
                master.as_ref().and_then(|m| ts_at(&path, m, acked.index))
            } else {
                scan.first_ts
            };
        }
        stats.newest = scan.last_ts.or(stats.newest);
    }
    let mut counters = counters;
    counters.appended += appended_since;
    let rejected = super::rejected::records(dir)?;
    stats.counts = super::RecordCounts::from_parts(&counters, &ledger, rejected, stats.unacked_records);
    stats.dropped = ledger.to_dropped();
    Ok(Some(stats))
}

fn ts_at(path: &Path, master: &MasterKey, index: u64) -> Option<super::Timestamp> {
    let (mut frames, header) = segment::open(path, None).ok()?;
    frames.set_cipher(master.open_segment(&header.ok()?).ok()?);
    if frames.skip(index).ok()? != Step::Record {
        return None;
    }
    match frames.next(true).ok()? {
        Step::Record => record_ts(&frames.buf),
        _ => None,
    }
}

/// Visit every unacknowledged, readable record of the spool in `dir`, oldest first, decrypted
/// with its master key. Read-only (safe while `run` runs: a segment deleted meanwhile is
/// skipped). Stops at the first damaged frame of a segment (the next open quarantines or cuts
/// it). `Ok(false)` if there is no spool or no master key.
pub fn visit_unacked(dir: &Path, mut visit: impl FnMut(&fleet_wire::record::Record)) -> Result<bool, SpoolError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let Some(master) = MasterKey::load(dir)? else { return Ok(false) };
    let acked = cursor::load_cursor(dir)?.unwrap_or_default();
    let through = cursor::load_ledger(dir)?.through_segment;
    for id in list_segments(dir)? {
        if id < acked.segment || id <= through {
            continue;
        }
        let path = dir.join(segment::file_name(id));
        let Ok((mut frames, header)) = segment::open(&path, None) else { continue };
        let Ok(header) = header else { continue };
        let Ok(cipher) = master.open_segment(&header) else { continue };
        frames.set_cipher(cipher);
        if id == acked.segment && frames.skip(acked.index)? != Step::Record && acked.index > 0 {
            continue;
        }
        while frames.next(true)? == Step::Record {
            if let Ok(record) = serde_json::from_slice::<fleet_wire::record::Record>(&frames.buf) {
                visit(&record);
            }
        }
    }
    Ok(true)
}

/// Unacknowledged records of one widget (and kind) in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidgetBacklog {
    /// Widget (metrics key or widget-log type).
    pub widget: String,
    /// `metric`, `log`, `machine_info`.
    pub kind: String,
    /// How many.
    pub records: u64,
    /// Oldest record's time (as stored, RFC 3339).
    pub oldest: String,
    /// Newest record's time.
    pub newest: String,
}

/// The backlog per widget (sorted by widget, then kind), read-only; `None` if there is no
/// spool or no master key. Prints nothing of the records' contents.
pub fn backlog_by_widget(dir: &Path) -> Result<Option<Vec<WidgetBacklog>>, SpoolError> {
    let mut by: std::collections::BTreeMap<(String, String), WidgetBacklog> = Default::default();
    let found = visit_unacked(dir, |record| {
        let kind = serde_json::to_value(record.kind).ok().and_then(|v| v.as_str().map(str::to_string));
        let kind = kind.unwrap_or_default();
        let entry = by.entry((record.widget.clone(), kind.clone())).or_insert_with(|| WidgetBacklog {
            widget: record.widget.clone(),
            kind,
            records: 0,
            oldest: record.ts.clone(),
            newest: record.ts.clone(),
        });
        entry.records += 1;
        if record.ts < entry.oldest {
            entry.oldest = record.ts.clone();
        }
        if record.ts > entry.newest {
            entry.newest = record.ts.clone();
        }
    })?;
    Ok(found.then(|| by.into_values().collect()))
}

/// What `spool verify` found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The spool directory.
    pub dir: PathBuf,
    /// Whether `master.key` was found.
    pub has_key: bool,
    /// The acknowledged position.
    pub acked: Cursor,
    /// One scan per segment, ascending.
    pub segments: Vec<SegmentScan>,
}

impl VerifyReport {
    /// True when every segment is readable and whole.
    pub fn all_good(&self) -> bool {
        self.segments.iter().all(SegmentScan::is_clean)
    }
}

/// Walk every segment in `dir` and report good, torn and bad records, changing nothing.
pub fn verify(dir: &Path) -> Result<VerifyReport, SpoolError> {
    if !dir.is_dir() {
        return Err(SpoolError::io("opening spool directory", dir)(std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
    let master = MasterKey::load(dir)?;
    let acked = cursor::load_cursor(dir)?.unwrap_or_default();
    let mut segments = Vec::new();
    for id in recovery::list_segments(dir)? {
        segments.push(scan(&dir.join(segment::file_name(id)), id, master.as_ref())?);
    }
    Ok(VerifyReport { dir: dir.to_path_buf(), has_key: master.is_some(), acked, segments })
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "spool {}: {} segments, acked up to segment {} record {}",
            self.dir.display(),
            self.segments.len(),
            self.acked.segment,
            self.acked.index
        )?;
        if !self.has_key {
            writeln!(f, "no master key: records cannot be checked")?;
        }
        for s in &self.segments {
            let name = s.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let status = match (&s.header, &s.problem) {
                (HeaderState::Ok, None) => "ok".to_string(),
                (HeaderState::Ok, Some(Problem::Torn { offset, bytes, reason, .. })) => {
                    format!("TORN tail: {bytes} bytes at offset {offset} ({reason})")
                }
                (HeaderState::Ok, Some(Problem::Bad { index, offset, reason })) => {
                    format!("BAD from record {index} at offset {offset} ({reason})")
                }
                (HeaderState::Bad(reason), _) => format!("BAD header ({reason})"),
                (HeaderState::UnknownVersion(v), _) => format!("UNKNOWN format version {v}"),
                (HeaderState::OtherKey, _) => "UNREADABLE: written under another master key".into(),
                (HeaderState::NoKey, _) => "UNCHECKED: no master key".into(),
            };
            let torn = u64::from(matches!(s.problem, Some(Problem::Torn { .. })));
            writeln!(
                f,
                "{name}  {} bytes  good {}  torn {torn}  bad {}  {status}",
                s.file_bytes,
                s.good + s.good_after_bad,
                s.bad + s.unchecked
            )?;
        }
        Ok(())
    }
}
