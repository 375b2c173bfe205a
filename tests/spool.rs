//! The spool against damaged files, a lost key, a model, real `kill -9`s and a search for
//! plaintext. Library-level tests use `fleet_agent::spool` directly; the crash and
//! no-plaintext tests run the real binary.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleet_agent::config::{FsyncPolicy, SpoolConfig};
use fleet_agent::spool::{Acked, Cursor, RecordCounts, Spool};
use fleet_widgets::{Level, SampleKind, Timestamp};
use fleet_wire::record::Record;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use serde_json::json;

use crate::support::{agent, s, stderr, write_config};

fn config(dir: &Path, segment_bytes: u64) -> SpoolConfig {
    SpoolConfig { dir: dir.to_path_buf(), max_bytes: 1 << 30, segment_bytes, fsync: FsyncPolicy::Batch }
}

/// Same, with `fsync: never`, for tests that open hundreds of spools and do not test durability
/// against power loss (a process crash loses nothing under any policy).
fn config_never(dir: &Path, segment_bytes: u64) -> SpoolConfig {
    SpoolConfig { fsync: FsyncPolicy::Never, ..config(dir, segment_bytes) }
}

fn record(n: u64) -> Record {
    Record {
        ts: Timestamp(1_763_800_000_000 + n as i64).to_rfc3339(),
        widget: "wifi".into(),
        kind: SampleKind::Log,
        level: Level::Info,
        message: format!("reading {n}"),
        data: json!({ "n": n, "ssid": "canary-network" }),
    }
}

fn records(range: std::ops::Range<u64>) -> Vec<Record> {
    range.map(record).collect()
}

fn read_all(spool: &mut Spool) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = spool.acked_cursor();
    loop {
        let batch = spool.read_from(at, 50, usize::MAX).expect("read");
        if batch.records.is_empty() {
            return out;
        }
        out.extend(batch.records);
        at = batch.next;
    }
}

/// `*.seg` files in `dir`, ascending.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    list.sort();
    list
}

fn quarantined(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir.join("quarantine")) {
        Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A spool dir holding one segment with `n` records; returns the segment path and the offset
/// where the last record's frame starts.
fn one_segment(dir: &Path, n: u64) -> (PathBuf, u64) {
    let mut spool = Spool::open(&config(dir, 1 << 20)).expect("open");
    spool.append(&records(0..n - 1)).expect("append");
    let segment = segments(dir).pop().expect("a segment");
    // The records' length (while the spool is open the file is longer: its zeroed horizon).
    let last_start = spool.stats().bytes;
    spool.append(&records(n - 1..n)).expect("append");
    (segment, last_start)
}

/// Copy the files (not directories) of `from` into a fresh temp dir.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(from).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            fs::copy(&path, to.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    to
}

#[test]
fn round_trip_and_reopen_after_clean_close() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    let cfg = config(&dir, 4096);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..25)).expect("append");
    spool.sync().expect("sync");
    assert_eq!(spool.dir(), dir);
    drop(spool);
    let mut spool = Spool::open(&cfg).expect("reopen");
    assert_eq!(read_all(&mut spool), records(0..25));
    let stats = spool.stats();
    assert_eq!(stats.unacked_records, 25);
    assert!(stats.segments >= 2, "rotated: {stats:?}");
    assert_eq!(stats.dropped.count, 0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&dir).expect("meta").permissions().mode() & 0o777, 0o700);
    let key = fs::metadata(dir.join("master.key")).expect("meta");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record() {
    let origin = tempfile::tempdir().expect("tempdir");
    let (segment, last_start) = one_segment(origin.path(), 3);
    let full = fs::metadata(&segment).expect("meta").len();
    let name = segment.file_name().expect("name").to_owned();
    for cut in last_start..full {
        let dir = copy_dir(origin.path());
        let seg = dir.path().join(&name);
        fs::OpenOptions::new().write(true).open(&seg).expect("open").set_len(cut).expect("truncate");
        let mut spool = Spool::open(&config(dir.path(), 1 << 20)).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(read_all(&mut spool), records(0..2), "cut at {cut}");
        assert_eq!(fs::metadata(&seg).expect("meta").len(), last_start, "torn tail truncated (cut {cut})");
        assert!(quarantined(dir.path()).is_empty(), "a torn tail is not corruption (cut {cut})");
        spool.append(&records(10..11)).expect("append after recovery");
        assert_eq!(read_all(&mut spool), [records(0..2), records(10..11)].concat());
    }
}

#[test]
fn a_zero_filled_tail_is_a_clean_end_cut_back_not_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, _) = one_segment(dir.path(), 2);
    let len = fs::metadata(&segment).expect("meta").len();
    fs::OpenOptions::new().write(true).open(&segment).expect("open").set_len(len + 300).expect("extend");
    let mut spool = Spool::open(&config(dir.path(), 1 << 20)).expect("open");
    assert_eq!(read_all(&mut spool), records(0..2));
    assert_eq!(fs::metadata(&segment).expect("meta").len(), len);
}

#[test]
fn a_flipped_bit_in_every_byte_is_detected() {
    let origin = tempfile::tempdir().expect("tempdir");
    let (segment, last_start) = one_segment(origin.path(), 3);
    let original = fs::read(&segment).expect("read");
    let name = segment.file_name().expect("name").to_owned();
    for at in 0..original.len() {
        let dir = copy_dir(origin.path());
        let mut bytes = original.clone();
        bytes[at] ^= 1 << (at % 8);
        fs::write(dir.path().join(&name), &bytes).expect("write");
        // A flipped version byte too: the segment is quarantined, start-up goes on.
        let mut spool = Spool::open(&config_never(dir.path(), 1 << 20)).unwrap_or_else(|e| panic!("byte {at}: {e}"));
        let got = read_all(&mut spool);
        let moved = quarantined(dir.path());
        // Every loss is counted: what is read plus what is counted dropped is what was stored.
        let counts = spool.stats().counts;
        assert_eq!(got.len() as u64 + spool.stats().dropped.count, 3, "byte {at}: a record lost uncounted");
        assert_eq!(counts.accepted, 3, "byte {at}");
        assert_eq!(counts.accepted, counts.dropped + counts.backlog, "byte {at}");
        if moved.is_empty() {
            // Only damage to the last record's body may look like a torn tail; it is cut off
            // and counted as dropped.
            assert!(at as u64 >= last_start + 20, "byte {at}: damage before the last body must quarantine");
            assert_eq!(got, records(0..2), "byte {at}");
            assert_eq!(spool.stats().dropped.count, 1, "byte {at}: the damaged last record is counted");
        } else {
            assert!(got.is_empty(), "byte {at}: nothing is read from a quarantined segment");
            assert_eq!(moved.len(), 1);
            assert_eq!(fs::read(&moved[0]).expect("read"), bytes, "byte {at}: quarantined as found");
            let dropped = spool.stats().dropped.count;
            assert!((1..=3).contains(&dropped), "byte {at}: dropped {dropped}");
        }
    }
}

#[test]
fn wrong_or_missing_master_key_quarantines_and_goes_on() {
    for missing in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), 4096);
        let mut spool = Spool::open(&cfg).expect("open");
        spool.append(&records(0..30)).expect("append");
        drop(spool);
        let before: Vec<(PathBuf, Vec<u8>)> =
            segments(dir.path()).into_iter().map(|p| (p.clone(), fs::read(&p).expect("read"))).collect();
        let key = dir.path().join("master.key");
        if missing {
            fs::remove_file(&key).expect("remove key");
        } else {
            fs::write(&key, format!("{}\n", crate::support::TEST_KEY_B64)).expect("replace key");
        }
        let mut spool = Spool::open(&cfg).expect("open with another key");
        assert!(read_all(&mut spool).is_empty());
        assert_eq!(spool.stats().dropped.count, 30, "unreadable records are counted");
        let moved = quarantined(dir.path());
        assert_eq!(moved.len(), before.len(), "every segment moved aside");
        for (path, bytes) in &before {
            let aside = dir.path().join("quarantine").join(path.file_name().expect("name"));
            assert_eq!(&fs::read(aside).expect("kept"), bytes, "never changed or deleted");
        }
        spool.append(&records(100..103)).expect("goes on with a new segment");
        assert_eq!(read_all(&mut spool), records(100..103));
        let new_ids = segments(dir.path());
        assert!(new_ids.iter().all(|p| !before.iter().any(|(b, _)| b == p)), "new segment ids never reuse old ones");
    }
}

#[test]
fn unknown_version_quarantines_the_segment_and_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, _) = one_segment(dir.path(), 2);
    let mut bytes = fs::read(&segment).expect("read");
    bytes[8] = 9;
    fs::write(&segment, &bytes).expect("write");
    let mut spool = Spool::open(&config(dir.path(), 1 << 20)).expect("starts");
    assert!(read_all(&mut spool).is_empty());
    assert_eq!(spool.stats().dropped.count, 2, "its records are counted as dropped");
    let moved = quarantined(dir.path());
    assert_eq!(moved.len(), 1);
    assert_eq!(fs::read(&moved[0]).expect("read"), bytes, "kept as found, never deleted");
    assert!(!segment.exists());
    spool.append(&records(5..6)).expect("goes on");
    assert_eq!(read_all(&mut spool), records(5..6));
}

#[test]
fn a_cursor_into_a_vanished_segment_continues_at_the_oldest_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..30)).expect("append");
    drop(spool);
    let first = segments(dir.path()).remove(0);
    fs::remove_file(&first).expect("remove");
    let mut spool = Spool::open(&cfg).expect("open");
    let all = read_all(&mut spool);
    let batch = spool.read_from(Cursor { segment: 1, index: 3 }, 1, usize::MAX).expect("read");
    assert_eq!(batch.records.first(), all.first());
    assert_eq!(all.last(), records(29..30).last());
}

// ---------------------------------------------------------------------------------------
/// The v2 sender builds a batch from the records the spool holds in memory; after a restart
/// (or past the memory bound) it rebuilds it from the segments. Both must be the same bytes,
/// or a resent seq would carry other content: floats that a lossy parse would change in the
/// last digit, several records per cycle, a segment rollover, a partial ack.
#[test]
fn a_batch_from_memory_is_byte_for_byte_the_batch_rebuilt_from_the_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 2048);
    let mut spool = Spool::open(&cfg).expect("open");
    let cycle = |c: u64| -> Vec<Record> {
        let ts = Timestamp(1_763_800_000_000 + c as i64 * 1000).to_rfc3339();
        ["cpu", "memory", "system"]
            .iter()
            .enumerate()
            .map(|(i, widget)| Record {
                ts: ts.clone(),
                widget: widget.to_string(),
                kind: SampleKind::Metric,
                level: Level::Info,
                message: String::new(),
                data: json!({"percent": 0.1 + 0.2 * c as f64, "tiny": 1e-300 * (i + 1) as f64,
                             "third": 1.0 / 3.0 + c as f64, "n": u64::MAX - c, "s": "é\"\n\u{1}"}),
            })
            .collect()
    };
    for c in 0..12 {
        spool.append(&cycle(c)).expect("append");
    }
    assert!(segments(dir.path()).len() > 1, "the records span a rollover");
    let half = spool.read_from(spool.acked_cursor(), 7, usize::MAX).expect("read").next;
    spool.ack(half).expect("ack");
    let start = spool.acked_cursor();
    let memory = spool.read_raw_from(start, 500, 700 * 1024).expect("from memory");
    let dropped = spool.stats().dropped;
    let body = |records: &[Vec<u8>]| {
        fleet_agent::sender::v2::batch_plaintext("m1", 42, "2026-11-22T13:00:00.000Z", records, &dropped)
            .expect("plaintext")
    };
    let built = body(&memory.records);
    drop(spool);
    let mut reopened = Spool::open(&cfg).expect("reopen");
    let disk = reopened.read_raw_from(start, 500, 700 * 1024).expect("from the segments");
    assert_eq!(memory.records.len(), 12 * 3 - 7);
    assert_eq!(disk, memory);
    assert_eq!(body(&disk.records), built, "the rebuilt batch is the same bytes");
    let records: Vec<Record> = (0..12).flat_map(cycle).skip(7).collect();
    let reference = fleet_wire::record::BatchBody {
        machine_id: "m1".into(),
        seq: 42,
        sent_at: "2026-11-22T13:00:00.000Z".into(),
        records,
        dropped,
    };
    assert_eq!(built, serde_json::to_vec(&reference).expect("json"), "and what serde gives for the records");
}

// Model-based property test: the spool behaves like an in-memory queue across random
// appends, reads, acks, clean reopens and crashes that tear the last append.

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Read(u8),
    Ack,
    Reopen,
    /// Append this many records, then die with the newest segment cut at this fraction
    /// (per mille) of the bytes that append added to it.
    CrashDuringAppend(u8, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6).prop_map(Op::Append),
        3 => (1u8..12).prop_map(Op::Read),
        2 => Just(Op::Ack),
        1 => Just(Op::Reopen),
        1 => ((1u8..6), (0u16..=1000)).prop_map(|(n, cut)| Op::CrashDuringAppend(n, cut)),
    ]
}

struct Model {
    /// Surviving, unacked records in order.
    queue: VecDeque<Record>,
    /// How many of `queue` the reader has consumed.
    read: usize,
    next_n: u64,
}

fn frame_len(record: &Record) -> u64 {
    36 + serde_json::to_vec(record).expect("json").len() as u64
}

fn run_model(ops: &[Op]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_never(dir.path(), 4096);
    let mut spool = Some(Spool::open(&cfg).expect("open"));
    let mut model = Model { queue: VecDeque::new(), read: 0, next_n: 0 };
    let mut cursor = Cursor::default();
    for op in ops {
        let live = spool.as_mut().expect("open spool");
        match op {
            Op::Append(n) => {
                let batch = records(model.next_n..model.next_n + u64::from(*n));
                model.next_n += u64::from(*n);
                live.append(&batch).expect("append");
                model.queue.extend(batch);
            }
            Op::Read(n) => {
                // The JSON of what this process appended comes from memory; after
                // `forget_recent` the same read goes to the segments: the same bytes.
                let n_max = usize::from(*n);
                let from_memory =
                    [live.read_raw_from(cursor, n_max, 150), live.read_raw_from(cursor, n_max, usize::MAX)];
                let mut joined_memory = b"x".to_vec();
                let joined_memory_read =
                    live.read_raw_joined(cursor, n_max, 150, &mut joined_memory).expect("joined read");
                live.forget_recent();
                let from_disk = [live.read_raw_from(cursor, n_max, 150), live.read_raw_from(cursor, n_max, usize::MAX)];
                let mut joined_disk = b"x".to_vec();
                let joined_disk_read = live.read_raw_joined(cursor, n_max, 150, &mut joined_disk).expect("joined read");
                let [memory_limited, memory] = from_memory.map(|b| b.expect("raw read"));
                let [disk_limited, disk] = from_disk.map(|b| b.expect("raw read"));
                assert_eq!(memory_limited, disk_limited, "a byte limit cuts both at the same record");
                assert_eq!(memory, disk, "memory and segments give the same bytes");
                // The sender's form: the same records, appended to what the buffer held, joined by commas.
                let expected_joined = [b"x".to_vec(), memory_limited.records.join(&b","[..])].concat();
                let expected_read = (memory_limited.records.len(), memory_limited.next);
                assert_eq!(
                    (joined_memory_read, &joined_memory),
                    (expected_read, &expected_joined),
                    "joined, from memory"
                );
                assert_eq!(
                    (joined_disk_read, &joined_disk),
                    (expected_read, &expected_joined),
                    "joined, from the segments"
                );
                let batch = live.read_from(cursor, n_max, usize::MAX).expect("read");
                let expected: Vec<Record> =
                    model.queue.iter().skip(model.read).take(usize::from(*n)).cloned().collect();
                assert_eq!(batch.records, expected);
                let parsed: Vec<Record> =
                    disk.records.iter().map(|json| serde_json::from_slice(json).expect("a record")).collect();
                assert_eq!((parsed, disk.next), (expected.clone(), batch.next));
                model.read += expected.len();
                cursor = batch.next;
            }
            Op::Ack => {
                live.ack(cursor).expect("ack");
                model.queue.drain(..model.read);
                model.read = 0;
                assert_eq!(live.stats().unacked_records, model.queue.len() as u64);
            }
            Op::Reopen => {
                drop(spool.take());
                spool = Some(Spool::open(&cfg).expect("reopen"));
                cursor = spool.as_ref().expect("open").acked_cursor();
                model.read = 0;
            }
            Op::CrashDuringAppend(n, per_mille) => {
                let mut files = segments(dir.path());
                let newest_before = files.pop();
                // The newest segment's records' length: its file is longer while the spool is
                // open (the zeroed horizon); the closed ones are exact.
                let closed: u64 = files.iter().map(|p| fs::metadata(p).expect("meta").len()).sum();
                let len_before = newest_before.as_ref().map_or(0, |_| live.stats().bytes - closed);
                let batch = records(model.next_n..model.next_n + u64::from(*n));
                model.next_n += u64::from(*n);
                live.append(&batch).expect("append");
                drop(spool.take()); // the process dies: no sync, no cleanup
                let newest = segments(dir.path()).pop().expect("a segment");
                let len_after = fs::metadata(&newest).expect("meta").len();
                let base = if Some(&newest) == newest_before.as_ref() { len_before } else { 88 };
                // Which of this append's records went to the newest segment.
                let mut in_newest = 0;
                let mut size = 0;
                while size < len_after - base {
                    in_newest += 1;
                    size += frame_len(&batch[batch.len() - in_newest]);
                }
                assert_eq!(size, len_after - base, "frame sizes add up");
                let cut = base + (len_after - base) * u64::from(*per_mille) / 1000;
                let file = fs::OpenOptions::new().write(true).open(&newest).expect("open");
                file.set_len(cut).expect("cut");
                if per_mille % 2 == 1 {
                    // The write was cut inside a zeroed horizon: zeros follow the cut.
                    file.set_len(cut + 1 + u64::from(*per_mille) * 64).expect("zeros after the cut");
                }
                let mut survive = batch.len() - in_newest;
                let mut end = base;
                for record in &batch[batch.len() - in_newest..] {
                    end += frame_len(record);
                    if end <= cut {
                        survive += 1;
                    }
                }
                model.queue.extend(batch.into_iter().take(survive));
                spool = Some(Spool::open(&cfg).expect("reopen after crash"));
                cursor = spool.as_ref().expect("open").acked_cursor();
                model.read = 0;
            }
        }
    }
    let live = spool.as_mut().expect("open");
    let expected: Vec<Record> = model.queue.iter().cloned().collect();
    assert_eq!(read_all(live), expected, "final contents");
    assert_eq!(live.stats().unacked_records, expected.len() as u64);
    assert_eq!(live.stats().dropped.count, 0, "nothing is ever dropped below the cap");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn spool_matches_a_queue_model(ops in proptest::collection::vec(op(), 1..40)) {
        run_model(&ops);
    }
}

// ---------------------------------------------------------------------------------------
// The real binary: kill -9 in a loop, and no plaintext on disk.

/// A config for `run`: fast interval, only cheap widgets, spool in `dir/spool`.
fn run_config(dir: &Path, machine_id: &str, cheap_only: bool) -> PathBuf {
    let mut widgets = serde_json::Map::new();
    for spec in fleet_widgets::ALL {
        let expensive = ["processes", "machine_info", "ping", "speedtest"].contains(&spec.name);
        if expensive && (cheap_only || spec.name != "machine_info") {
            widgets.insert(spec.name.to_string(), json!({ "enabled": false }));
        }
        if spec.name == "machine_info" && !cheap_only {
            widgets.insert(spec.name.to_string(), json!({ "enabled": true, "interval": 0.05 }));
        }
    }
    let body = json!({
        "machine_id": machine_id,
        "interval": 0.05,
        "spool": { "dir": dir.join("spool"), "fsync": "batch" },
        "widgets": widgets,
        "log_level": "warn",
    });
    write_config(dir, "config.json", &body.to_string(), 0o600)
}

/// Read everything in the spool with the library (this also runs recovery, as `run` would).
fn spooled(dir: &Path) -> Vec<Record> {
    let mut spool = Spool::open(&config(&dir.join("spool"), 1 << 20)).expect("open after kill");
    read_all(&mut spool)
}

#[test]
fn kill_9_loop_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = run_config(dir.path(), "kill-loop", true);
    let mut seen: Vec<Record> = Vec::new();
    let started = Instant::now();
    for i in 0..20u64 {
        let mut child = agent()
            .args(["run", "--config", s(&config)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run starts");
        // Kill at varying points: during start-up, recovery, collection or a write.
        std::thread::sleep(Duration::from_millis(40 + (i * 37) % 260));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let now = spooled(dir.path());
        assert!(now.len() >= seen.len(), "iteration {i}: records lost ({} < {})", now.len(), seen.len());
        assert_eq!(&now[..seen.len()], &seen[..], "iteration {i}: earlier records changed");
        seen = now;
        assert!(started.elapsed() < Duration::from_secs(40), "loop bounded");
    }
    assert!(seen.len() > 20, "records were collected: {}", seen.len());
    let mut keys = HashSet::new();
    let mut last = Timestamp(0);
    for record in &seen {
        assert!(keys.insert((record.ts.clone(), record.widget.clone())), "duplicate {} {}", record.ts, record.widget);
        let ts = record.timestamp().expect("our timestamp");
        assert!(ts >= last, "timestamps never go back: {} after {}", record.ts, last.to_rfc3339());
        last = ts;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_plaintext_under_the_spool_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let machine_id = "canary-machine-7f3a9c";
    let config = run_config(dir.path(), machine_id, false);
    let child = agent()
        .args(["run", "--config", s(&config)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts");
    std::thread::sleep(Duration::from_millis(1200));
    let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let out = child.wait_with_output().expect("exits");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = spooled(dir.path());
    assert!(records.iter().any(|r| r.widget == "machine_info"), "machine_info was spooled");
    let hostname = fleet_widgets::machine::hostname();
    let mut needles: Vec<Vec<u8>> = vec![machine_id.as_bytes().to_vec()];
    if hostname.len() >= 4 {
        needles.push(hostname.into_bytes());
    }
    for record in &records {
        needles.push(serde_json::to_vec(record).expect("json"));
        let data = record.data.to_string();
        if data.len() >= 8 {
            needles.push(data.into_bytes());
        }
    }
    let mut files = Vec::new();
    files_under(&dir.path().join("spool"), &mut files);
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "seg")), "{files:?}");
    for file in files {
        let bytes = fs::read(&file).expect("read");
        for needle in &needles {
            assert!(
                !contains(&bytes, needle),
                "{} holds plaintext {:?}",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn status_and_verify_read_without_changing_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let body = json!({ "machine_id": "m", "spool": { "dir": spool_dir } });
    let config = write_config(dir.path(), "c.json", &body.to_string(), 0o600);

    let out = crate::support::run(&["status", "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(crate::support::stdout(&out).contains("(no spool yet)"));
    assert!(!spool_dir.exists(), "status creates nothing");

    let mut spool = Spool::open(&config_never(&spool_dir, 4096)).expect("open");
    spool.append(&records(0..30)).expect("append");
    let first = spool.read_from(Cursor::default(), 5, usize::MAX).expect("read");
    spool.ack(first.next).expect("ack");
    drop(spool);

    let out = crate::support::run(&["status", "--config", s(&config)]);
    let text = crate::support::stdout(&out);
    assert!(text.contains("unacked:   25 records"), "{text}");
    assert!(text.contains(&format!("oldest:    {}", record(5).ts)), "{text}");
    assert!(text.contains(&format!("newest:    {}", record(29).ts)), "{text}");
    assert!(text.contains("dropped:   0"), "{text}");

    let out = crate::support::run(&["spool", "verify", "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(0), "{}{}", crate::support::stdout(&out), stderr(&out));
    assert!(crate::support::stdout(&out).contains("all good"));

    let victim = segments(&spool_dir).remove(0);
    let mut bytes = fs::read(&victim).expect("read");
    bytes[200] ^= 0x40;
    fs::write(&victim, &bytes).expect("write");
    let listing = |d: &Path| {
        let mut all = Vec::new();
        files_under(d, &mut all);
        all.sort();
        all.into_iter().map(|p| (fs::read(&p).expect("read"), p)).collect::<Vec<_>>()
    };
    let before = listing(&spool_dir);
    let out = crate::support::run(&["spool", "verify", "--config", s(&config)]);
    let text = crate::support::stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("BAD"), "{text}");
    assert_eq!(listing(&spool_dir), before, "verify changes nothing");
    assert_eq!(crate::support::run(&["spool", "--config", s(&config)]).status.code(), Some(2));
    assert_eq!(crate::support::run(&["spool", "frob", "--config", s(&config)]).status.code(), Some(2));
}

/// The accounting invariant every spool state must satisfy.
fn assert_balanced(counts: RecordCounts, context: &str) {
    assert_eq!(
        counts.accepted,
        counts.delivered + counts.superseded + counts.dropped + counts.rejected + counts.backlog,
        "{context}: {counts:?}"
    );
}

#[test]
fn rejected_records_are_kept_sealed_counted_and_requeued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..10)).expect("append");
    let start = spool.acked_cursor();
    let batch = spool.read_from(start, 4, usize::MAX).expect("read");
    spool.set_aside(start, &batch.records, "batch-1", "HTTP 422: no").expect("set aside");
    spool.set_aside(start, &batch.records, "batch-1", "HTTP 422: no").expect("idempotent");
    spool.ack_counted(batch.next, Acked::default()).expect("ack");
    let counts = spool.stats().counts;
    assert_eq!((counts.accepted, counts.rejected, counts.backlog), (10, 4, 6), "{counts:?}");
    assert_balanced(counts, "after set aside");
    // Sealed at rest: no record text in rejected/.
    for entry in fs::read_dir(dir.path().join("rejected")).expect("rejected/").flatten() {
        let bytes = fs::read(entry.path()).expect("read");
        assert!(!String::from_utf8_lossy(&bytes).contains("wifi"), "{} holds plaintext", entry.path().display());
    }
    drop(spool);
    let inspected = fleet_agent::spool::inspect(dir.path()).expect("inspect").expect("spool").counts;
    assert_eq!(inspected, counts, "status reads the same persisted counters");
    let mut spool = Spool::open(&cfg).expect("reopen");
    assert_eq!(spool.stats().counts, counts, "persisted across a restart");
    let done = spool.requeue_rejected().expect("requeue");
    assert_eq!((done.batches, done.records), (1, 4));
    let counts = spool.stats().counts;
    assert_eq!((counts.accepted, counts.rejected, counts.backlog), (10, 0, 10), "{counts:?}");
    assert!(fleet_agent::spool::rejected::list(dir.path()).expect("list").is_empty());
    assert_eq!(read_all(&mut spool), [records(4..10), records(0..4)].concat(), "sent again, after the rest");
}

#[test]
fn rejected_is_bounded_by_max_bytes_oldest_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SpoolConfig { max_bytes: 6000, ..config(dir.path(), 1500) };
    let mut spool = Spool::open(&cfg).expect("open");
    let mut next = 0;
    for round in 0..12 {
        spool.append(&records(next..next + 5)).expect("append");
        next += 5;
        let start = spool.acked_cursor();
        let batch = spool.read_from(start, 5, usize::MAX).expect("read");
        spool.set_aside(start, &batch.records, &format!("batch-{round}"), "HTTP 400").expect("set aside");
        spool.ack_counted(batch.next, Acked::default()).expect("ack");
        let counts = spool.stats().counts;
        assert_balanced(counts, &format!("round {round}"));
        assert_eq!(counts.accepted, next);
    }
    let counts = spool.stats().counts;
    assert!(counts.dropped > 0 && counts.rejected > 0, "oldest dropped, newest kept: {counts:?}");
    let on_disk: u64 = fs::read_dir(dir.path().join("rejected"))
        .expect("list")
        .flatten()
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(on_disk <= 6000 + 1024, "rejected/ stays near the cap: {on_disk} bytes");
    drop(spool);
    let reopened = Spool::open(&cfg).expect("reopen").stats().counts;
    assert_eq!(reopened, counts, "persisted");
}

#[test]
fn counters_survive_restarts_and_match_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 2048);
    for round in 0..5u64 {
        let mut spool = Spool::open(&cfg).expect("open");
        spool.append(&records(round * 20..round * 20 + 20)).expect("append");
        let batch = spool.read_from(spool.acked_cursor(), 15, usize::MAX).expect("read");
        spool.ack_counted(batch.next, Acked { delivered: 15, superseded: 0 }).expect("ack");
        let counts = spool.stats().counts;
        assert_balanced(counts, &format!("round {round}"));
        assert_eq!((counts.accepted, counts.delivered), ((round + 1) * 20, (round + 1) * 15));
        // No shutdown step exists: the counters come from state.bin and the segments.
        drop(spool);
        let seen = fleet_agent::spool::inspect(dir.path()).expect("inspect").expect("spool").counts;
        assert_eq!(seen, counts, "round {round}");
    }
}

#[test]
fn an_interrupted_set_aside_leaves_nothing_counted_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 4096);
    let mut spool = Spool::open(&cfg).expect("open");
    spool.append(&records(0..6)).expect("append");
    let start = spool.acked_cursor();
    let batch = spool.read_from(start, 3, usize::MAX).expect("read");
    spool.set_aside(start, &batch.records, "batch-9", "HTTP 422").expect("set aside");
    drop(spool);
    // A crash before the ack: a second, uncommitted set-aside of the same records is also on
    // disk (its .seg written, its mark not), as is a mark's temp file.
    let rejected = dir.path().join("rejected");
    let committed = fleet_agent::spool::rejected::list(dir.path()).expect("list");
    assert_eq!(committed.len(), 1);
    let seg = rejected.join(format!("{:020}.seg", committed[0].id));
    fs::copy(&seg, rejected.join(format!("{:020}.seg", committed[0].id + 100))).expect("copy");
    fs::write(rejected.join(format!("{:020}.json.tmp", committed[0].id + 100)), b"{").expect("tmp");
    let mut spool = Spool::open(&cfg).expect("reopen");
    let names: Vec<String> = fs::read_dir(&rejected)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "only the committed batch is left: {names:?}");
    // The batch is refused again after the restart: kept once.
    let batch = spool.read_from(start, 3, usize::MAX).expect("read");
    spool.set_aside(start, &batch.records, "batch-9", "HTTP 422").expect("idempotent");
    spool.ack_counted(batch.next, Acked::default()).expect("ack");
    let counts = spool.stats().counts;
    assert_eq!((counts.accepted, counts.rejected, counts.backlog), (6, 3, 3), "{counts:?}");
    assert_balanced(counts, "after the restart");
}

/// A crash during recovery, between counting a loss and making the cut or the move, must not
/// count it twice: recovery counts first (naming what it counts), then changes the file.
#[test]
fn a_crash_between_counting_and_cutting_or_moving_counts_once() {
    // The damaged last record.
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, _) = one_segment(dir.path(), 3);
    let mut bytes = fs::read(&segment).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    fs::write(&segment, &bytes).expect("write");
    let counts = Spool::open(&config(dir.path(), 1 << 20)).expect("open").stats().counts;
    assert_eq!((counts.accepted, counts.dropped, counts.backlog), (3, 1, 2), "{counts:?}");
    // As if the process died after the ledger write, before the cut.
    fs::write(&segment, &bytes).expect("restore the damaged file");
    let again = Spool::open(&config(dir.path(), 1 << 20)).expect("reopen").stats().counts;
    assert_eq!(again, counts, "counted once");

    // The quarantined segment.
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, _) = one_segment(dir.path(), 3);
    let mut bytes = fs::read(&segment).expect("read");
    bytes[100] ^= 0x01;
    fs::write(&segment, &bytes).expect("write");
    let counts = Spool::open(&config(dir.path(), 1 << 20)).expect("open").stats().counts;
    assert_eq!((counts.accepted, counts.dropped, counts.backlog), (3, 3, 0), "{counts:?}");
    // As if the process died after the ledger write, before the move.
    let moved = quarantined(dir.path());
    fs::rename(&moved[0], &segment).expect("put it back");
    let again = Spool::open(&config(dir.path(), 1 << 20)).expect("reopen").stats().counts;
    assert_eq!(again, counts, "counted once");
    assert!(!segment.exists(), "moved aside again");
}

// ---------------------------------------------------------------------------------------
// The zeroed horizon (docs/spool-format.md, "Zeroed horizon")

/// The horizon's chunk (`segment::HORIZON_CHUNK`): the live segment's file is extended with
/// zeros to the next multiple of it.
const HORIZON: u64 = 64 * 1024;

/// A live spool's files copied while its writer is open (so the newest segment ends in its
/// zeroed horizon): `before` records, then one append of `batch` more. Returns the copy, the
/// segment's name, and where that last append starts and ends in it.
fn live_snapshot(before: u64, batch: u64) -> (tempfile::TempDir, std::ffi::OsString, u64, u64) {
    let origin = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(&config(origin.path(), 1 << 20)).expect("open");
    for chunk in (0..before).collect::<Vec<_>>().chunks(50) {
        spool.append(&records(chunk[0]..chunk[chunk.len() - 1] + 1)).expect("append");
    }
    let start = spool.stats().bytes;
    spool.append(&records(before..before + batch)).expect("append");
    let end = spool.stats().bytes;
    let snapshot = copy_dir(origin.path());
    drop(spool);
    let segment = segments(snapshot.path()).pop().expect("a segment");
    assert_eq!(segments(snapshot.path()).len(), 1, "one segment");
    let size = fs::metadata(&segment).expect("meta").len();
    assert_eq!(size, end.next_multiple_of(HORIZON), "the live segment ends in a zeroed horizon");
    assert_eq!(fs::metadata(segments(origin.path()).pop().expect("seg")).expect("meta").len(), end, "closed: exact");
    (snapshot, segment.file_name().expect("name").to_owned(), start, end)
}

/// Overwrite `from..to` of `path` with zeros (what a write cut short inside the horizon leaves).
fn zero_range(path: &Path, from: u64, to: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[from as usize..to as usize].fill(0);
    fs::write(path, bytes).expect("write");
}

/// Records from `first` whose frames end at or before `cut`, starting at `start`.
fn whole_before(first: u64, count: u64, start: u64, cut: u64) -> u64 {
    let mut end = start;
    (first..first + count)
        .take_while(|&n| {
            end += frame_len(&record(n));
            end <= cut
        })
        .count() as u64
}

/// The spool in `dir` after a write cut at `cut` (zeros from there to `end`): nothing is
/// quarantined or dropped, the whole frames before the cut are read, the file is cut back to
/// them, and appending goes on.
fn assert_torn_in_horizon(dir: &Path, name: &std::ffi::OsString, before: u64, batch: u64, start: u64, cut: u64) {
    let seg = dir.join(name);
    let mut spool = Spool::open(&config(dir, 1 << 20)).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
    let kept = before + whole_before(before, batch, start, cut);
    assert_eq!(read_all(&mut spool), records(0..kept), "cut at {cut}");
    assert!(quarantined(dir).is_empty(), "a write cut short in the horizon is not corruption (cut {cut})");
    let stats = spool.stats();
    assert_eq!(stats.dropped.count, 0, "cut {cut}: a write never accepted is not a loss");
    assert_eq!(stats.counts.accepted, kept, "cut {cut}");
    let exact = start + (before..kept).map(|n| frame_len(&record(n))).sum::<u64>();
    assert_eq!(fs::metadata(&seg).expect("meta").len(), exact, "cut {cut}: cut back to the whole frames");
    spool.append(&records(1000..1001)).expect("append after recovery");
    assert_eq!(read_all(&mut spool), [records(0..kept), records(1000..1001)].concat(), "cut {cut}");
}

#[test]
fn a_write_cut_short_inside_the_zeroed_horizon_is_a_torn_tail_at_every_byte() {
    // One record, then three records in one append (a multi-frame write cut anywhere).
    for (before, batch) in [(2, 1), (2, 3)] {
        let (origin, name, start, end) = live_snapshot(before, batch);
        for cut in start..end {
            let dir = copy_dir(origin.path());
            zero_range(&dir.path().join(&name), cut, end);
            assert_torn_in_horizon(dir.path(), &name, before, batch, start, cut);
        }
    }
}

#[test]
fn an_append_that_extends_the_horizon_cut_at_every_byte_and_a_torn_horizon_chunk() {
    // The append that crosses the first chunk's end: it wrote a new zero chunk and its frames;
    // a crash between the two leaves zeros where its frames go (cut = start).
    let mut before = 0;
    let size = |n: u64| 88 + (0..n).map(|i| frame_len(&record(i))).sum::<u64>();
    while size(before + 3) <= HORIZON {
        before += 1;
    }
    assert!(size(before) < HORIZON);
    let (origin, name, start, end) = live_snapshot(before, 3);
    assert!(start < HORIZON && end > HORIZON);
    for cut in start..end {
        let dir = copy_dir(origin.path());
        zero_range(&dir.path().join(&name), cut, end);
        assert_torn_in_horizon(dir.path(), &name, before, 3, start, cut);
    }
    // The zero chunk itself torn: the file ends anywhere in it (not a multiple of anything).
    for size in [end + 1, end + 7, end + 4095, 2 * HORIZON - 1] {
        let dir = copy_dir(origin.path());
        let seg = dir.path().join(&name);
        fs::OpenOptions::new().write(true).open(&seg).expect("open").set_len(size).expect("cut");
        let report = fleet_agent::spool::verify(dir.path()).expect("verify");
        assert!(report.all_good(), "size {size}: zeros after the last record are a clean end");
        assert_torn_in_horizon(dir.path(), &name, before, 3, start, end);
    }
}

#[test]
fn zeros_after_the_last_record_are_a_clean_end_and_a_zero_body_an_empty_segment() {
    let (origin, name, start, end) = live_snapshot(2, 1);
    let report = fleet_agent::spool::verify(origin.path()).expect("verify");
    assert!(report.all_good(), "a live segment's horizon is not a problem: {report}");
    assert_eq!(report.segments[0].zero_tail, HORIZON - end);
    let status = fleet_agent::spool::inspect(origin.path()).expect("inspect").expect("a spool");
    assert_eq!(status.bytes, end, "status counts the records' bytes, not the horizon");
    assert_torn_in_horizon(origin.path(), &name, 2, 1, start, end);

    // A segment whose body is all zeros (a crash after the first zero chunk, before any
    // record reached the disk): an empty segment, removed; nothing counted.
    let (origin, name, _, end) = live_snapshot(2, 1);
    zero_range(&origin.path().join(&name), 88, end);
    let mut spool = Spool::open(&config(origin.path(), 1 << 20)).expect("open");
    assert!(read_all(&mut spool).is_empty());
    assert!(quarantined(origin.path()).is_empty());
    assert_eq!(spool.stats().dropped.count, 0);
    assert!(!origin.path().join(&name).exists(), "an empty segment is removed");
}

#[test]
fn a_flipped_bit_with_a_zeroed_horizon_after_it_is_still_detected() {
    let (origin, name, last_start, end) = live_snapshot(2, 1);
    let original = fs::read(origin.path().join(&name)).expect("read");
    for at in 0..end as usize {
        let dir = copy_dir(origin.path());
        let mut bytes = original.clone();
        bytes[at] ^= 1 << (at % 8);
        fs::write(dir.path().join(&name), &bytes).expect("write");
        let mut spool = Spool::open(&config_never(dir.path(), 1 << 20)).unwrap_or_else(|e| panic!("byte {at}: {e}"));
        let got = read_all(&mut spool);
        let moved = quarantined(dir.path());
        let stats = spool.stats();
        assert_eq!(stats.counts.accepted, stats.counts.dropped + stats.counts.backlog, "byte {at}");
        if (at as u64) < last_start + 20 {
            // The header, a middle frame, the last frame's header: corruption, quarantined
            // as before, its records counted.
            assert_eq!(moved.len(), 1, "byte {at}: damage before the last body must quarantine");
            assert!(got.is_empty(), "byte {at}");
            assert_eq!(fs::read(&moved[0]).expect("read"), bytes, "byte {at}: quarantined as found");
            assert!((1..=3).contains(&stats.dropped.count), "byte {at}: dropped {}", stats.dropped.count);
            assert_eq!(got.len() as u64 + stats.dropped.count, 3, "byte {at}: a record lost uncounted");
        } else {
            // The last frame's body: a whole frame (its last byte is not zero) is a damaged
            // record, cut and counted; one ending in zero is read as a write cut short.
            assert!(moved.is_empty(), "byte {at}");
            assert_eq!(got, records(0..2), "byte {at}");
            let damaged = u64::from(bytes[end as usize - 1] != 0);
            assert_eq!(stats.dropped.count, damaged, "byte {at}");
            assert_eq!(stats.counts.accepted, 2 + damaged, "byte {at}");
        }
    }
}

#[test]
fn every_fsync_policy_keeps_a_horizon_within_segment_bytes_and_the_cap() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Batch, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SpoolConfig { fsync, ..config(dir.path(), 1 << 20) };
        let mut spool = Spool::open(&cfg).expect("open");
        spool.append(&records(0..3)).expect("append");
        let seg = segments(dir.path()).pop().expect("segment");
        assert_eq!(fs::metadata(&seg).expect("meta").len(), HORIZON, "{fsync:?}");
        let bytes = spool.stats().bytes;
        drop(spool);
        assert_eq!(fs::metadata(&seg).expect("meta").len(), bytes, "{fsync:?}: closed segments are exact");
    }
    // Small segments: the horizon stops at `segment_bytes`.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(&config(dir.path(), 4096)).expect("open");
    spool.append(&records(0..2)).expect("append");
    assert_eq!(fs::metadata(segments(dir.path()).pop().expect("seg")).expect("meta").len(), 4096);
    drop(spool);
    // A small cap: files on disk (horizon included) never pass it.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SpoolConfig { max_bytes: 20_000, ..config(dir.path(), 8192) };
    let mut spool = Spool::open(&cfg).expect("open");
    for n in 0..200 {
        spool.append(&records(n * 3..n * 3 + 3)).expect("append");
        let on_disk: u64 = segments(dir.path()).iter().map(|p| fs::metadata(p).expect("meta").len()).sum();
        assert!(on_disk <= cfg.max_bytes, "append {n}: {on_disk} bytes on disk > cap");
    }
    let stats = spool.stats();
    assert_eq!(stats.dropped.count + stats.unacked_records, 600, "every record kept or counted");
}
