//! Unit tests of the spool facade (file-level corruption tests live in `tests/spool.rs`).

use fleet_widgets::{Level, SampleKind};
use serde_json::json;

use super::*;

fn config(dir: &Path, segment_bytes: u64, max_bytes: u64, fsync: FsyncPolicy) -> SpoolConfig {
    SpoolConfig { dir: dir.to_path_buf(), max_bytes, segment_bytes, fsync }
}

fn record(n: i64) -> Record {
    Record {
        ts: Timestamp(1_763_800_000_000 + n * 1000).to_rfc3339(),
        widget: "cpu".into(),
        kind: SampleKind::Metric,
        level: Level::Info,
        message: String::new(),
        data: json!({ "n": n, "pad": "x".repeat(200) }),
    }
}

fn records(range: std::ops::Range<i64>) -> Vec<Record> {
    range.map(record).collect()
}

fn read_all(spool: &mut Spool, from: Cursor) -> (Vec<Record>, Cursor) {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let batch = spool.read_from(at, 7, usize::MAX).expect("read");
        if batch.records.is_empty() {
            return (out, at);
        }
        out.extend(batch.records);
        at = batch.next;
    }
}

fn read_unacked(spool: &mut Spool) -> (Vec<Record>, Cursor) {
    let from = spool.acked_cursor();
    read_all(spool, from)
}

fn segment_files(dir: &Path) -> Vec<u64> {
    recovery::list_segments(dir).expect("list")
}

#[test]
fn append_read_ack_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096, 1 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..40)).expect("append");
    let (got, end) = read_unacked(&mut spool);
    assert_eq!(got, records(0..40));
    assert!(segment_files(dir.path()).len() > 2, "rotated at 4 KiB");
    let stats = spool.stats();
    assert_eq!(stats.unacked_records, 40);
    assert_eq!(stats.oldest, record(0).timestamp());
    assert_eq!(stats.newest, record(39).timestamp());

    // Ack half, reopen: the ack and the rest survive; fully acked segments are gone.
    let half = spool.read_from(Cursor::default(), 20, usize::MAX).expect("read").next;
    spool.ack(half).expect("ack");
    assert_eq!(spool.stats().oldest, record(20).timestamp());
    drop(spool);
    let mut spool = Spool::open(&cfg).expect("reopen");
    assert_eq!(spool.acked_cursor(), half);
    let (rest, _) = read_unacked(&mut spool);
    assert_eq!(rest, records(20..40));
    assert_eq!(spool.stats().unacked_records, 20);
    assert!(segment_files(dir.path()).iter().all(|id| *id >= half.segment));

    // Appends after reopen go to a new segment and read after the old ones.
    spool.append(&records(40..45)).expect("append");
    let (rest, _) = read_unacked(&mut spool);
    assert_eq!(rest, records(20..45));
    spool.ack(end).expect("ack old end");
    let (tail, last) = read_unacked(&mut spool);
    assert_eq!(tail, records(40..45));
    spool.ack(last).expect("ack all");
    assert_eq!(spool.stats().unacked_records, 0);
    assert_eq!(spool.stats().oldest, None);
    assert_eq!(segment_files(dir.path()).len(), 1, "only the live segment remains");
    drop(spool);
    let mut spool = Spool::open(&cfg).expect("reopen");
    assert_eq!(spool.stats().segments, 0, "a fully acked closed segment is deleted on open");
    assert!(spool.ack(Cursor { segment: u64::MAX, index: 0 }).is_err());
}

#[test]
fn max_bytes_and_max_records_bound_a_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(&config(dir.path(), 1 << 20, 4 << 20, FsyncPolicy::Never)).expect("open");
    spool.append(&records(0..10)).expect("append");
    let one = serde_json::to_vec(&record(0)).expect("json").len();
    let batch = spool.read_from(Cursor::default(), 100, 1).expect("read");
    assert_eq!(batch.records.len(), 1, "at least one record even over max_bytes");
    let batch = spool.read_from(batch.next, 100, 3 * one + 2).expect("read");
    assert_eq!(batch.records, records(1..4));
    let batch = spool.read_from(batch.next, 2, usize::MAX).expect("read");
    assert_eq!(batch.records, records(4..6));
    assert_eq!(batch.next.index, 6);
    let empty = spool.read_from(Cursor { segment: batch.next.segment, index: 10 }, 5, usize::MAX).expect("read");
    assert!(empty.records.is_empty());
    assert_eq!(empty.next, Cursor { segment: batch.next.segment, index: 10 });
    // A cursor before every existing segment starts at the oldest record.
    let from_zero = spool.read_from(Cursor { segment: 0, index: 99 }, 1, usize::MAX).expect("read");
    assert_eq!(from_zero.records, records(0..1));
}

#[test]
fn cap_drops_oldest_segments_with_exact_accounting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096, 3 * 4096, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    let mut written = 0i64;
    for _ in 0..30 {
        spool.append(&records(written..written + 3)).expect("append");
        written += 3;
        assert!(spool.stats().bytes <= cfg.max_bytes, "{} > cap", spool.stats().bytes);
    }
    let stats = spool.stats();
    let (kept, _) = read_unacked(&mut spool);
    assert_eq!(stats.unacked_records as usize, kept.len());
    assert_eq!(stats.dropped.count as usize + kept.len(), written as usize, "every record is kept or counted");
    let first_kept = kept.first().and_then(Record::timestamp).expect("kept some");
    assert_eq!(kept, records(written - kept.len() as i64..written), "the newest are kept, in order");
    assert_eq!(stats.dropped.oldest, Some(record(0).ts.clone()));
    assert_eq!(stats.dropped.newest, Some(Timestamp(first_kept.0 - 1000).to_rfc3339()));
    drop(spool);
    let spool = Spool::open(&cfg).expect("reopen");
    assert_eq!(spool.stats().dropped, stats.dropped, "the ledger persists");
}

#[test]
fn cap_counts_only_unacked_records_of_a_partly_acked_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096, 2 * 4096, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..10)).expect("append");
    let part = spool.read_from(Cursor::default(), 4, usize::MAX).expect("read");
    spool.ack(part.next).expect("ack");
    let mut n = 10;
    while spool.stats().dropped.count == 0 {
        spool.append(&records(n..n + 1)).expect("append");
        n += 1;
        assert!(n < 200, "cap never reached");
    }
    let dropped = spool.stats().dropped;
    assert_eq!(dropped.oldest, Some(record(4).ts.clone()), "acked records are not counted as dropped");
    let (kept, _) = read_unacked(&mut spool);
    assert_eq!(dropped.count as usize + kept.len() + 4, n as usize);
}

#[test]
fn full_disk_keeps_what_was_stored_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1 << 20, 4 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..5)).expect("append");
    if let Some(w) = spool.writer.as_mut() {
        w.fail_after = Some(100);
    }
    let err = spool.append(&records(5..10)).expect_err("disk full");
    assert!(err.is_io_kind(std::io::ErrorKind::StorageFull), "{err}");
    assert!(err.to_string().contains("writing segment"), "{err}");
    let (got, _) = read_all(&mut spool, Cursor::default());
    assert_eq!(got, records(0..5), "nothing stored before is lost, nothing half-written is read");
    spool.append(&records(10..12)).expect("works again once space returns");
    let (got, _) = read_all(&mut spool, Cursor::default());
    assert_eq!(got, [records(0..5), records(10..12)].concat());
    drop(spool);
    let mut spool = Spool::open(&cfg).expect("reopen");
    let (got, _) = read_all(&mut spool, Cursor::default());
    assert_eq!(got, [records(0..5), records(10..12)].concat());
}

#[test]
fn a_horizon_that_does_not_fit_on_the_disk_is_cut_and_the_records_still_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1 << 20, 4 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..5)).expect("append");
    let path = dir.path().join(segment::file_name(spool.writer.as_ref().expect("writer").id()));
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), segment::HORIZON_CHUNK, "a horizon");
    if let Some(w) = spool.writer.as_mut() {
        w.fail_zeros = true;
    }
    // Past the first chunk: every extension fails halfway; the records are appended anyway.
    let mut n = 5;
    while spool.stats().bytes < 2 * segment::HORIZON_CHUNK {
        spool.append(&records(n..n + 10)).expect("records are stored without a horizon");
        n += 10;
        let size = std::fs::metadata(&path).expect("meta").len();
        assert_eq!(size, spool.stats().bytes.max(segment::HORIZON_CHUNK), "half-written zeros are cut");
    }
    let (got, _) = read_all(&mut spool, Cursor::default());
    assert_eq!(got, records(0..n));
    drop(spool);
    let mut spool = Spool::open(&cfg).expect("reopen");
    let (got, _) = read_all(&mut spool, Cursor::default());
    assert_eq!(got, records(0..n));
    assert_eq!(spool.stats().dropped.count, 0);
}

#[test]
fn a_second_open_is_refused_and_strangers_are_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096, 1 << 20, FsyncPolicy::Always);
    std::fs::write(dir.path().join("commands.json"), "{}").expect("write");
    std::fs::create_dir(dir.path().join("rejected")).expect("mkdir");
    let mut spool = Spool::open(&cfg).expect("open");
    assert!(matches!(Spool::open(&cfg), Err(SpoolError::Locked { .. })));
    spool.append(&records(0..3)).expect("append");
    let all = spool.read_from(Cursor::default(), 10, usize::MAX).expect("read");
    spool.ack(all.next).expect("ack");
    drop(spool);
    let _spool = Spool::open(&cfg).expect("reopen after close");
    assert!(dir.path().join("commands.json").exists());
    assert!(dir.path().join("rejected").is_dir());
}

#[test]
fn oversized_records_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(&config(dir.path(), 4096, 1 << 20, FsyncPolicy::Batch)).expect("open");
    let mut big = record(1);
    big.data = json!("y".repeat(MAX_RECORD_BYTES));
    let err = spool.append(&[record(0), big]).expect_err("too large");
    assert!(matches!(err, SpoolError::RecordTooLarge { index: 1, .. }), "{err}");
    assert_eq!(spool.stats().unacked_records, 0);
}

#[test]
fn damage_found_while_reading_quarantines_and_reading_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096, 1 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..40)).expect("append");
    let ids = segment_files(dir.path());
    let per_segment = spool.segments.front().map(|s| s.records).expect("segments");
    // Rot in the middle of the first (verified, closed) segment after open.
    let first = dir.path().join(segment::file_name(ids[0]));
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[HEADER_LEN + 400] ^= 0x08;
    std::fs::write(&first, &bytes).expect("write");
    // And the second segment disappears behind the spool's back.
    std::fs::remove_file(dir.path().join(segment::file_name(ids[1]))).expect("remove");
    let (got, _) = read_unacked(&mut spool);
    let lost = spool.stats().dropped.count;
    assert!(got.len() < 40 && !got.is_empty());
    assert_eq!(got.len() as u64 + lost, 40, "every record is returned or counted as dropped");
    assert_eq!(got.last(), records(39..40).last(), "reading goes on past the damage");
    assert!(lost >= per_segment, "{lost}");
    assert!(dir.path().join(QUARANTINE_DIR).join(segment::file_name(ids[0])).exists());
    spool.append(&records(40..41)).expect("append");
}

#[test]
fn a_failure_after_a_rollover_reports_the_stored_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096, 1 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..3)).expect("append");
    spool.fail_segment_create = true;
    // ~250 bytes a frame: 30 records cross the 4 KiB segment boundary; the first segment's
    // part is committed, then creating the next segment fails (disk full).
    let (stored, result) = spool.append_counted(&records(3..33));
    let err = result.expect_err("disk full at the rollover");
    assert!(err.is_io_kind(std::io::ErrorKind::StorageFull), "{err}");
    assert!(stored > 0 && stored < 30, "a strict prefix was stored: {stored}");
    let (got, _) = read_all(&mut spool, Cursor::default());
    assert_eq!(got, records(0..3 + stored as i64), "exactly the reported prefix is readable");
    spool.fail_segment_create = false;
    // The caller retries only the rest: every record once, in order.
    let (again, result) = spool.append_counted(&records(3 + stored as i64..33));
    result.expect("works again");
    assert_eq!(again, 30 - stored);
    let (got, _) = read_all(&mut spool, Cursor::default());
    assert_eq!(got, records(0..33));
}

#[test]
fn a_destroyed_frame_length_still_counts_every_frame_of_the_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1 << 20, 4 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..10)).expect("append");
    drop(spool);
    let id = segment_files(dir.path())[0];
    let path = dir.path().join(segment::file_name(id));
    let mut bytes = std::fs::read(&path).expect("read");
    // Walk to frame 3 and ruin its length and the complement (no longer steppable).
    let mut at = HEADER_LEN;
    for _ in 0..3 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 20 + len;
    }
    for b in &mut bytes[at..at + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).expect("write");
    let master = MasterKey::load(dir.path()).expect("key").expect("present");
    let scan = recovery::scan(&path, id, Some(&master)).expect("scan");
    assert_eq!((scan.good, scan.bad, scan.good_after_bad), (3, 1, 6), "{scan:?}");
    assert_eq!(scan.record_count(), 10);
    // Recovery quarantines it and counts all ten as dropped.
    let spool = Spool::open(&cfg).expect("reopen");
    assert_eq!(spool.stats().dropped.count, 10);
}

/// Opening must not need a write (a start on a full disk): records appended since the last
/// state write are counted from the segments in memory, the file is left as it was,
/// and the next ack writes the counters; no reopen in between counts anything twice.
#[test]
fn opening_a_clean_spool_writes_nothing_and_counts_stay_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096, 1 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..10)).expect("append");
    let (_, end) = read_all(&mut spool, Cursor::default());
    spool.ack_counted(end, Acked { delivered: 10, superseded: 0 }).expect("ack");
    spool.append(&records(10..40)).expect("append");
    drop(spool);
    let cursor_file = dir.path().join(super::state_file::STATE_FILE);
    let before = std::fs::read(&cursor_file).expect("state.bin");
    let expected = RecordCounts { accepted: 40, delivered: 10, backlog: 30, ..RecordCounts::default() };
    for _ in 0..3 {
        let spool = Spool::open(&cfg).expect("reopen");
        assert_eq!(spool.stats().counts, expected);
        assert_eq!(std::fs::read(&cursor_file).expect("state.bin"), before, "open wrote state.bin");
        assert_eq!(inspect(dir.path()).expect("inspect").expect("a spool").counts, expected, "status agrees");
    }
    let mut spool = Spool::open(&cfg).expect("reopen");
    let (got, end) = read_unacked(&mut spool);
    assert_eq!(got, records(10..40));
    spool.ack_counted(end, Acked { delivered: 30, superseded: 0 }).expect("ack");
    assert_ne!(std::fs::read(&cursor_file).expect("state.bin"), before, "the ack wrote the counters");
    drop(spool);
    let spool = Spool::open(&cfg).expect("reopen");
    let drained = RecordCounts { accepted: 40, delivered: 40, ..RecordCounts::default() };
    assert_eq!(spool.stats().counts, drained);
    assert_eq!(inspect(dir.path()).expect("inspect").expect("a spool").counts, drained);
}

/// A write cut short by a crash (a torn partial frame) and a segment left with only its
/// header are repaired at open without writing the counters: neither holds a record, so a
/// later recount finds the same records (a restart on a full disk after a kill mid-write).
#[test]
fn a_torn_partial_write_and_an_empty_segment_are_repaired_without_a_state_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1 << 20, 1 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..5)).expect("append");
    let (_, end) = read_all(&mut spool, Cursor::default());
    spool.ack(end).expect("ack");
    spool.append(&records(5..12)).expect("append");
    drop(spool);
    let cursor_file = dir.path().join(super::state_file::STATE_FILE);
    let before = std::fs::read(&cursor_file).expect("state.bin");
    // The next life's segment: its one record never reached the disk (a kill before the write
    // got there), only the header did.
    let mut spool = Spool::open(&cfg).expect("reopen");
    spool.append(&records(12..13)).expect("append");
    drop(spool);
    let segments = segment_files(dir.path());
    let [.., last, empty] = segments[..] else { panic!("two segments: {segments:?}") };
    let empty_path = dir.path().join(segment::file_name(empty));
    std::fs::OpenOptions::new().write(true).open(&empty_path).and_then(|f| f.set_len(HEADER_LEN as u64)).expect("cut");
    let path = dir.path().join(segment::file_name(last));
    let mut bytes = std::fs::read(&path).expect("segment");
    bytes.extend_from_slice(&[0x30, 0, 0, 0, 0xcf, 0xff]); // a frame header cut short
    std::fs::write(&path, &bytes).expect("torn tail");
    // As that life left it: its open did not write the counters (records 5..12 uncounted).
    std::fs::write(&cursor_file, &before).expect("state.bin");
    let expected = RecordCounts { accepted: 12, backlog: 7, ..RecordCounts::default() };
    let spool = Spool::open(&cfg).expect("reopen");
    assert_eq!(spool.stats().counts, expected);
    assert_eq!(std::fs::read(&cursor_file).expect("state.bin"), before, "open wrote state.bin");
    assert_eq!(std::fs::metadata(&path).expect("segment").len(), bytes.len() as u64 - 6, "tail cut");
    assert!(!empty_path.exists(), "empty segment removed");
    assert!(!dir.path().join(QUARANTINE_DIR).exists(), "nothing quarantined");
    drop(spool);
    let mut spool = Spool::open(&cfg).expect("reopen");
    assert_eq!(spool.stats().counts, expected);
    let (got, _) = read_unacked(&mut spool);
    assert_eq!(got, records(5..12));
}

/// Flip one byte inside the used part of slot `slot` of `state.bin`.
fn damage_slot(dir: &Path, slot: usize) {
    let path = dir.join(state_file::STATE_FILE);
    let mut bytes = std::fs::read(&path).expect("state.bin");
    bytes[slot * state_file::SLOT_LEN + 30] ^= 0x40;
    std::fs::write(&path, bytes).expect("write");
}

/// A slot whose checksum fails (a write cut short, or corruption) is ignored, counted and
/// logged: the other slot holds the state before it. The next write goes into the damaged
/// slot. Both slots damaged: opening fails with an error naming the file and saying what the
/// operator does; `inspect` (behind `status`) fails the same way, nothing guessed.
#[test]
fn a_damaged_state_slot_is_ignored_and_both_damaged_fail_closed_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1 << 20, 1 << 20, FsyncPolicy::Batch);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..10)).expect("append");
    let three = Cursor { segment: 1, index: 3 };
    let six = Cursor { segment: 1, index: 6 };
    spool.ack_counted(three, Acked { delivered: 3, superseded: 0 }).expect("ack 3"); // generation 1: slot B
    spool.ack_counted(six, Acked { delivered: 3, superseded: 0 }).expect("ack 6"); // generation 2: slot A
    drop(spool);
    damage_slot(dir.path(), 0);
    let mut spool = Spool::open(&cfg).expect("one damaged slot is no error");
    assert_eq!((spool.acked_cursor(), spool.damaged_state_slots()), (three, 1));
    assert_eq!(spool.stats().counts.delivered, 3, "the state before the damaged write, whole");
    spool.ack_counted(six, Acked { delivered: 3, superseded: 0 }).expect("ack 6 again"); // into slot A
    drop(spool);
    let spool = Spool::open(&cfg).expect("reopen");
    assert_eq!((spool.acked_cursor(), spool.damaged_state_slots(), spool.stats().counts.delivered), (six, 0, 6));
    drop(spool);
    damage_slot(dir.path(), 0);
    damage_slot(dir.path(), 1);
    let err = Spool::open(&cfg).err().expect("both damaged: fail closed");
    assert!(matches!(err, SpoolError::StateDamaged { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().join("state.bin").display().to_string()) && text.contains("Move it aside"),
        "{text}"
    );
    assert!(inspect(dir.path()).is_err(), "status does not guess either");
    // The operator moves it aside: the spool opens and resends from the oldest record.
    std::fs::rename(dir.path().join("state.bin"), dir.path().join("state.bin.damaged")).expect("aside");
    let spool = Spool::open(&cfg).expect("reopen");
    assert_eq!((spool.acked_cursor(), spool.stats().unacked_records), (Cursor::default(), 10));
}

/// An older release's files: every combination of `cursor.json`, `sender.json` and
/// `inflight.json` is migrated into `state.bin` on open (values kept, old files removed), and
/// a crash at each point of the migration (during the creation of `state.bin`, its first write
/// cut short, after the write before any removal, after some removals) migrates the same values
/// again.
#[test]
fn every_old_file_set_migrates_and_a_crash_at_every_step_migrates_again() {
    let cursor_json = r#"{"version":1,"segment":1,"index":4,"appended":0,"appended_through":{"segment":0,"index":0},"delivered":4,"superseded":0,"requeued":0}"#;
    let sender_json = r#"{"next_seq":77,"sent_records":4,"protocol":"v2"}"#;
    let inflight_json =
        r#"{"seq":76,"start":{"segment":1,"index":0},"end":{"segment":1,"index":4},"records":4,"kid":null,"body":""}"#;
    let files = [(cursor::CURSOR_FILE, cursor_json), ("sender.json", sender_json), ("inflight.json", inflight_json)];
    for set in 1u8..8 {
        let chosen: Vec<(&str, &str)> =
            files.iter().enumerate().filter(|(i, _)| set & (1 << i) != 0).map(|(_, f)| *f).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), 1 << 20, 1 << 20, FsyncPolicy::Batch);
        let mut spool = Spool::open(&cfg).expect("open");
        spool.append(&records(0..10)).expect("append");
        drop(spool);
        assert!(!dir.path().join("state.bin").exists());
        let write_old = |which: &[(&str, &str)]| {
            for (name, text) in which {
                std::fs::write(dir.path().join(name), text).expect("old file");
            }
        };
        let mut expected_sender = serde_json::Map::new();
        if set & 2 != 0 {
            expected_sender = serde_json::from_str(sender_json).expect("json");
        }
        if set & 4 != 0 {
            expected_sender.insert("inflight".into(), serde_json::from_str(inflight_json).expect("json"));
        }
        let expected_sender = (set & 6 != 0).then_some(serde_json::Value::Object(expected_sender));
        let expected_cursor = if set & 1 != 0 { Cursor { segment: 1, index: 4 } } else { Cursor::default() };
        let check = |step: &str| {
            let spool = Spool::open(&cfg).unwrap_or_else(|e| panic!("set {set}, {step}: {e}"));
            assert_eq!(spool.acked_cursor(), expected_cursor, "set {set}, {step}");
            assert_eq!(spool.sender_state(), expected_sender.as_ref(), "set {set}, {step}");
            assert_eq!(spool.stats().counts.delivered, if set & 1 != 0 { 4 } else { 0 }, "set {set}, {step}");
            assert_eq!(spool.stats().counts.accepted, 10, "set {set}, {step}");
            for (name, _) in &files {
                assert!(!dir.path().join(name).exists(), "set {set}, {step}: {name} removed");
            }
            drop(spool);
            let state = load_state(dir.path()).expect("read-only").expect("state");
            assert_eq!((state.cursor, state.sender.as_ref()), (expected_cursor, expected_sender.as_ref()));
        };
        // A crash while state.bin was being created (its temp file, never renamed).
        write_old(&chosen);
        std::fs::write(dir.path().join("state.bin.tmp"), [0u8; 100]).expect("tmp");
        check("a crash while state.bin was created");
        // A crash after the state write, before any removal; after some removals.
        write_old(&chosen);
        check("a crash before the old files were removed");
        for keep in 0..chosen.len() {
            write_old(&chosen[keep..keep + 1]);
            check("a crash after some removals");
        }
        // A crash during the first write of a fresh state.bin (cut in the middle of the slot).
        std::fs::remove_file(dir.path().join("state.bin")).expect("rm");
        write_old(&chosen);
        let payload = br#"{"segment":1,"index":4}"#;
        let slot = state_file::encode_slot(1, payload).expect("slot");
        let mut file = vec![0u8; 2 * state_file::SLOT_LEN];
        file[state_file::SLOT_LEN..state_file::SLOT_LEN + 40].copy_from_slice(&slot[..40]);
        std::fs::write(dir.path().join("state.bin"), file).expect("torn first write");
        check("a crash during the first write");
    }
}
