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
    let last_start = fs::metadata(&segment).expect("meta").len();
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
fn a_zero_filled_tail_is_torn_not_corrupt() {
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
                let newest_before = segments(dir.path()).pop();
                let len_before = newest_before.as_ref().map_or(0, |p| fs::metadata(p).expect("meta").len());
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
                fs::OpenOptions::new().write(true).open(&newest).expect("open").set_len(cut).expect("cut");
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
