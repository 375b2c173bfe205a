//! The storage seam's promises, run against every backend ([`crate::backends`]): exactly-once
//! per `(machine_id, seq)` across restarts and concurrent writers, 409 on a digest mismatch,
//! rows sealed at rest, the reads (summaries, exports, newest rows, verify) and forwarding
//! (at-least-once, never a row skipped, the cursor surviving a restart). The file store's own
//! adversaries (torn tails, a failed cursor write, rekey) follow at the end.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::Rng;
use fleet_receiver::storage::{BatchOutcome, Committed, LogFilter, RowQuery};
use fleet_receiver::store::{FileReader, CURSOR_FILE, RECORDS_FILE};
use fleet_receiver::{Receiver, Storage, StorageRead, StoreError, StoreKeys, StoreSource, Stream};
use fleet_widgets::{Level, SampleKind};
use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::record::{BatchBody, Dropped, Record};
use serde_json::{json, Map, Value};

use crate::backends::{backends, file_store, TestStore};
use crate::receiver::{config, fast_limits, key, post, read, sealed_batch, store_key};

fn keys() -> StoreKeys {
    StoreKeys::new(&[store_key()])
}

/// A second store key.
fn other_key() -> Key32 {
    Key32::from_bytes([0x77; 32])
}

/// A batch of `records` records of `machine_id`; `marker` goes into every record's message.
fn batch(machine_id: &str, seq: u64, records: u64, marker: &str) -> BatchBody {
    BatchBody {
        machine_id: machine_id.into(),
        seq,
        sent_at: "2026-11-22T13:00:00Z".into(),
        records: (0..records)
            .map(|n| Record {
                ts: format!("2026-11-22T13:{:02}:{:02}.000Z", seq % 60, n % 60),
                widget: if n % 2 == 0 { "cpu".into() } else { "ping".into() },
                kind: if n % 2 == 0 { SampleKind::Metric } else { SampleKind::Log },
                level: Level::Info,
                message: format!("{marker} {seq}/{n}"),
                data: json!({"n": n, "note": marker}),
            })
            .collect(),
        dropped: Dropped::default(),
    }
}

fn widget_log(widget: &str, message: &str) -> Value {
    json!({"timestamp": "2026-11-22T13:00:00", "level": "info", "widget_type": widget, "message": message,
           "data": {"rssi": -50}})
}

fn seqs(rows: &[Map<String, Value>]) -> Vec<u64> {
    rows.iter().filter(|r| r["kind"] == "batch").filter_map(|r| r["seq"].as_u64()).collect()
}

#[test]
fn a_batch_is_stored_once_across_duplicates_and_restarts() {
    for store in backends() {
        let name = store.name;
        let writer = store.open(keys());
        for seq in 0..3 {
            assert_eq!(writer.append_batch(&batch("mac-01", seq, 4, "x"), None).ok(), Some(BatchOutcome::Stored(4)));
        }
        assert_eq!(writer.append_batch(&batch("mac-01", 1, 4, "x"), None).ok(), Some(BatchOutcome::Duplicate));
        let mut resent = batch("mac-01", 2, 4, "x");
        resent.sent_at = "2026-11-23T00:00:00Z".into();
        resent.dropped.count = 9;
        assert_eq!(writer.append_batch(&resent, None).ok(), Some(BatchOutcome::Duplicate), "{name}: records decide");
        drop(writer);
        let writer = store.open(keys());
        for seq in 0..3 {
            let outcome = writer.append_batch(&batch("mac-01", seq, 4, "x"), None);
            assert_eq!(outcome.ok(), Some(BatchOutcome::Duplicate), "{name}: seq {seq} after a restart");
        }
        let rows = writer.read_records("mac-01").expect("read");
        assert_eq!(seqs(&rows), [0, 1, 2], "{name}");
        assert_eq!(rows.len(), 15, "{name}: 3 batches of 4 records plus their commit rows");
        let summary = writer.machine("mac-01").expect("summary");
        assert_eq!((summary.batch_count, summary.record_count), (3, 12), "{name}");
    }
}

#[test]
fn a_reused_seq_with_other_records_is_a_conflict_that_stores_nothing() {
    for store in backends() {
        let name = store.name;
        let writer = store.open(keys());
        assert_eq!(writer.append_batch(&batch("m", 7, 2, "a"), None).ok(), Some(BatchOutcome::Stored(2)));
        let outcome = writer.append_batch(&batch("m", 7, 3, "a"), None);
        assert!(matches!(outcome, Ok(BatchOutcome::Conflict { .. })), "{name}: {outcome:?}");
        let outcome = writer.append_batch(&batch("m", 7, 2, "b"), None);
        assert!(matches!(outcome, Ok(BatchOutcome::Conflict { .. })), "{name}: other messages: {outcome:?}");
        drop(writer);
        let writer = store.open(keys());
        assert!(matches!(writer.append_batch(&batch("m", 7, 1, "a"), None), Ok(BatchOutcome::Conflict { .. })));
        assert_eq!(writer.append_batch(&batch("m", 7, 2, "a"), None).ok(), Some(BatchOutcome::Duplicate));
        let rows = writer.read_records("m").expect("read");
        assert_eq!(rows.len(), 3, "{name}: only the first batch");
        assert!(rows.iter().filter(|r| r["kind"] == "record").all(|r| r["record"]["message"] != "b 7/0"));
    }
}

#[test]
fn the_receiver_answers_409_on_a_digest_mismatch_and_200_to_a_resend() {
    for store in backends() {
        let name = store.name;
        let mut cfg = config(Path::new("unused"), vec![key(0)]);
        cfg.store = StoreSource::Location { location: store.location.clone(), keys: keys() };
        let rx = Receiver::start_with_limits(cfg, fast_limits()).expect("start");
        assert_eq!(post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "mac-09", 5, 2)).status, 200, "{name}");
        let answer = post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "mac-09", 5, 3));
        assert_eq!(answer.status, 409, "{name}: {}", answer.body);
        let answer = post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "mac-09", 5, 2));
        assert_eq!((answer.status, answer.json()["duplicate"].clone()), (200, json!(true)), "{name}");
        rx.shutdown();
        assert_eq!(seqs(&store.reader(keys()).read_records("mac-09").expect("read")), [5], "{name}");
    }
}

#[test]
fn concurrent_writers_store_each_batch_exactly_once() {
    for store in backends() {
        let name = store.name;
        let writer = store.open(keys());
        let writer: &dyn Storage = writer.as_ref();
        let stored = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let stored = &stored;
                scope.spawn(move || {
                    // Every thread offers every seq of two machines, in its own order.
                    for i in 0..24u64 {
                        let seq = (i * 5 + thread * 7) % 24;
                        let machine = if (i + thread) % 2 == 0 { "mac-a" } else { "mac-b" };
                        match writer.append_batch(&batch(machine, seq, 3, "c"), None) {
                            Ok(BatchOutcome::Stored(_)) => {
                                stored.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Ok(BatchOutcome::Duplicate) => {}
                            other => panic!("{name}: {other:?}"),
                        }
                    }
                });
            }
        });
        for machine in ["mac-a", "mac-b"] {
            let mut got = seqs(&writer.read_records(machine).expect("read"));
            let stored_count = got.len();
            got.sort();
            got.dedup();
            assert_eq!(got.len(), stored_count, "{name}: {machine} has a seq twice");
        }
        let total: usize = ["mac-a", "mac-b"].iter().map(|m| seqs(&writer.read_records(m).expect("read")).len()).sum();
        assert_eq!(total, stored.load(std::sync::atomic::Ordering::SeqCst), "{name}: Stored answers = rows");
    }
}

#[test]
fn rows_are_sealed_at_rest_and_need_the_right_key() {
    let markers = ["MARKER-REC-8812", "MARKER-LOG-3391", "MARKER-HOST-6620"];
    for store in backends() {
        let name = store.name;
        let writer = store.open(keys());
        writer.append_batch(&batch("mac-01", 1, 2, markers[0]), Some("kid-1")).expect("batch");
        writer.append_widget_logs("mac-01", &[widget_log("wifi", markers[1])], true).expect("logs");
        let report = json!({"machine_id": "mac-01", "machine_info": {"hostname": markers[2]}, "metrics": {"cpu": 1}});
        writer.append_report("mac-01", &report, true).expect("report");
        drop(writer);
        let raw = String::from_utf8_lossy(&store.raw()).into_owned();
        assert!(raw.contains("mac-01"), "{name}: the dump holds the store");
        for secret in markers.iter().chain(&["rssi", "\"note\"", "hostname"]) {
            assert!(!raw.contains(secret), "{name}: {secret} in clear at rest");
        }
        let reader = store.reader(keys());
        reader.check_keys().expect("the right key");
        assert_eq!(reader.read_records("mac-01").expect("read")[0]["record"]["data"]["note"], markers[0], "{name}");
        assert_eq!(reader.read_v1("mac-01", Stream::WidgetLogs).expect("read")[0]["log"]["message"], markers[1]);
        let reports = reader.read_v1("mac-01", Stream::Reports).expect("read");
        assert_eq!(reports[0]["report"]["machine_info"]["hostname"], markers[2], "{name}");
        // Another key, or none: a clear error naming the stored key id; nothing opens.
        let kid = fleet_receiver::seal::store_kid(&store_key());
        let wrong = store.reader(StoreKeys::new(&[other_key()]));
        match wrong.check_keys() {
            Err(e @ StoreError::Row { .. }) => assert!(e.to_string().contains(&kid), "{name}: {e}"),
            other => panic!("{name}: {other:?}"),
        }
        let stats = wrong.visit("mac-01", Stream::Records, &mut |_| true, &mut |_| {}).expect("visit");
        assert_eq!((stats.good, stats.bad), (0, 3), "{name}");
        let err = store.reader(StoreKeys::plaintext()).check_keys().expect_err("no key");
        assert!(err.to_string().contains("--store-key-file"), "{name}: {err}");
        // A writer refuses to start with the wrong key.
        let refused = fleet_receiver::open_storage(&store.location, StoreKeys::new(&[other_key()]));
        assert!(matches!(refused, Err(StoreError::Row { .. })), "{name}: {:?}", refused.err());
    }
}

/// Two machines: v2 batches, v1 widget logs of two widgets, a v1 report.
fn fill(writer: &dyn Storage) {
    for seq in 0..3 {
        writer.append_batch(&batch("mac-01", seq, 4, "r"), None).expect("batch");
    }
    writer.append_batch(&batch("mac-02", 0, 2, "r"), None).expect("batch");
    let logs = [widget_log("wifi", "w1"), widget_log("ping", "p1"), widget_log("wifi", "w2")];
    writer.append_widget_logs("mac-02", &logs, true).expect("logs");
    let report = json!({"machine_id": "mac-02", "machine_info": {}, "metrics": {"cpu": {"percent": 3}}});
    writer.append_report("mac-02", &report, true).expect("report");
}

#[test]
fn summaries_exports_newest_rows_and_verify_read_every_backend_alike() {
    let mut answers = Vec::new();
    for store in backends() {
        let name = store.name;
        fill(store.open(keys()).as_ref());
        let reader = store.reader(keys());
        assert_eq!(reader.machine_ids().expect("ids"), ["mac-01", "mac-02"], "{name}");
        let machines = reader.machines().expect("machines");
        assert_eq!((machines[0].batch_count, machines[0].record_count), (3, 12), "{name}");
        assert_eq!((machines[1].report_count, machines[1].widget_log_count), (1, 3), "{name}");
        assert_eq!(machines[1].latest_metrics, json!({"cpu": {"percent": 3}}), "{name}: the v1 report's metrics");
        assert!(machines.iter().all(|m| m.bytes > 0 && m.unreadable_rows == 0), "{name}");
        let widgets: Vec<(String, String, u64)> =
            machines[0].widgets.iter().map(|w| (w.widget.clone(), w.kind.clone(), w.count)).collect();
        assert_eq!(widgets, [("cpu".into(), "metric".into(), 6), ("ping".into(), "log".into(), 6)], "{name}");
        // The export: v1 widget logs and v2 log records, filtered.
        let export = |filter: LogFilter| {
            let mut rows = Vec::new();
            let stats = reader
                .widget_logs(&filter, &mut |row| {
                    rows.push((row.machine_id, row.widget_type, row.message));
                    true
                })
                .expect("export");
            assert_eq!(stats.bad, 0);
            rows
        };
        let all = export(LogFilter::default());
        assert_eq!(all.len(), 6 + 1 + 3, "{name}: 6 ping records, 1 of mac-02, 3 widget logs");
        let wifi = export(LogFilter { widget_type: Some("wifi".into()), machine_id: None });
        assert_eq!(wifi.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(), ["w1", "w2"], "{name}");
        let only = export(LogFilter { widget_type: None, machine_id: Some("mac-02".into()) });
        assert!(only.iter().all(|r| r.0 == "mac-02") && only.len() == 4, "{name}: {only:?}");
        let mut stop_after = 2;
        reader
            .widget_logs(&LogFilter::default(), &mut |_| {
                stop_after -= 1;
                stop_after > 0
            })
            .expect("export");
        assert_eq!(stop_after, 0, "{name}: visit stops when asked");
        // Newest rows: no commit rows, newest first, bounded.
        let query = RowQuery { widget: Some("ping".into()), since: None, limit: 3 };
        let newest = reader.newest("mac-01", &query).expect("newest");
        assert_eq!(newest.rows.len(), 3, "{name}");
        assert!(newest.rows.iter().all(|(_, r)| r["kind"] == "record" && r["widget"] == "ping"), "{name}");
        assert!(newest.rows.windows(2).all(|w| w[0].0 >= w[1].0), "{name}: newest first");
        let all_rows = reader.newest("mac-02", &RowQuery { widget: None, since: None, limit: 100 }).expect("newest");
        assert_eq!(all_rows.rows.len(), 2 + 3 + 1, "{name}: records, widget logs, report");
        let later = RowQuery { widget: None, since: Some("2999-01-01".into()), limit: 10 };
        assert!(reader.newest("mac-02", &later).expect("newest").rows.is_empty(), "{name}");
        // Verify: every row counted good.
        let checks = reader.verify().expect("verify");
        let totals: Vec<(String, u64, u64)> =
            checks.iter().map(|c| (c.machine_id.clone(), c.total().good, c.total().bad)).collect();
        assert_eq!(totals, [("mac-01".into(), 15, 0), ("mac-02".into(), 3 + 3 + 1, 0)], "{name}");
        answers.push((all, wifi, only));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "every backend gives the same export");
}

/// Forward until nothing is pending; every handed-out unit, in order.
fn drain(storage: &dyn StorageRead, max_rows: usize) -> Vec<Committed> {
    let mut all = Vec::new();
    loop {
        let mut got = Vec::new();
        let n = storage
            .forward_pending(max_rows, &mut |units| {
                got.extend_from_slice(units);
                Ok(())
            })
            .expect("forward");
        assert_eq!(n, got.iter().map(|u| u.rows.len()).sum::<usize>(), "the count is the rows handed out");
        if n == 0 {
            return all;
        }
        all.extend(got);
    }
}

/// Per machine and stream, the rows forwarded, in order.
fn by_stream(units: &[Committed]) -> BTreeMap<(String, Stream), Vec<Map<String, Value>>> {
    let mut out: BTreeMap<(String, Stream), Vec<Map<String, Value>>> = BTreeMap::new();
    for unit in units {
        out.entry((unit.machine_id.clone(), unit.stream)).or_default().extend(unit.rows.iter().cloned());
    }
    out
}

/// Every committed row of the store per machine and stream (the oracle).
fn stored(reader: &dyn StorageRead) -> BTreeMap<(String, Stream), Vec<Map<String, Value>>> {
    let mut out = BTreeMap::new();
    for id in reader.machine_ids().expect("ids") {
        for stream in Stream::ALL {
            let rows = reader.read_stream(&id, stream).expect("read");
            if !rows.is_empty() {
                out.insert((id.clone(), stream), rows);
            }
        }
    }
    out
}

#[test]
fn forwarding_is_at_least_once_never_skips_a_row_and_survives_a_restart() {
    for store in backends() {
        let name = store.name;
        let writer = store.open(keys());
        fill(writer.as_ref());
        // A failing push: an error naming it, and the same rows come again.
        let mut first = Vec::new();
        let failed = writer.forward_pending(5, &mut |units| {
            first = units.to_vec();
            Err("collector down".into())
        });
        match failed {
            Err(e @ StoreError::Forward { .. }) => assert!(e.to_string().contains("collector down"), "{name}: {e}"),
            other => panic!("{name}: {other:?}"),
        }
        assert!(!first.is_empty(), "{name}");
        let mut again = Vec::new();
        writer
            .forward_pending(5, &mut |units| {
                again = units.to_vec();
                Err("still down".into())
            })
            .expect_err("still failing");
        assert_eq!(again, first, "{name}: nothing advanced on an error");
        // Whole batches, about max_rows at a time.
        let units = drain(writer.as_ref(), 5);
        assert_eq!(units.first().map(|u| &u.rows), first.first().map(|u| &u.rows), "{name}: the same rows first");
        for unit in units.iter().filter(|u| u.stream == Stream::Records) {
            let last = unit.rows.last().expect("rows");
            assert_eq!(last["kind"], "batch", "{name}: a records unit ends with a commit row");
            let records = unit.rows.iter().filter(|r| r["kind"] == "record").count() as u64;
            let commits: u64 =
                unit.rows.iter().filter(|r| r["kind"] == "batch").filter_map(|r| r["records"].as_u64()).sum();
            assert_eq!(records, commits, "{name}: whole batches");
        }
        assert_eq!(by_stream(&units), stored(writer.as_ref()), "{name}: every committed row exactly once");
        assert_eq!(drain(writer.as_ref(), 5).len(), 0, "{name}: nothing pending");
        // Restart: the position survives; only what is new comes.
        drop(writer);
        let writer = store.open(keys());
        assert_eq!(drain(writer.as_ref(), 100).len(), 0, "{name}: nothing again after a restart");
        writer.append_batch(&batch("mac-01", 3, 2, "new"), None).expect("batch");
        writer.append_widget_logs("mac-03", &[widget_log("ping", "n1")], true).expect("logs");
        let fresh = by_stream(&drain(writer.as_ref(), 100));
        let keys_seen: Vec<(String, Stream)> = fresh.keys().cloned().collect();
        assert_eq!(keys_seen, [("mac-01".into(), Stream::Records), ("mac-03".into(), Stream::WidgetLogs)], "{name}");
        assert_eq!(seqs(&fresh[&("mac-01".to_string(), Stream::Records)]), [3], "{name}");
    }
}

/// One seeded schedule of appends (new batches, resends, widget logs), forwarding rounds whose
/// push fails a third of the time, and restarts; then a final drain. The oracle: the rows
/// handed to successful pushes are, per machine and stream, exactly the stored rows in commit
/// order (none lost, none twice, none out of order).
fn forwarding_schedule(store: &TestStore, seed: u64) {
    let name = store.name;
    let mut rng = Rng::seeded(seed);
    let mut writer = store.open(keys());
    let mut next_seq = [0u64; 3];
    let mut delivered: Vec<Committed> = Vec::new();
    let mut logs = 0u64;
    for step in 0..80 {
        let machine = rng.index(3);
        let id = format!("mac-{machine}");
        match rng.below(20) {
            0..=7 => {
                let seq = next_seq[machine];
                next_seq[machine] += 1;
                let outcome = writer.append_batch(&batch(&id, seq, 1 + rng.below(4), "s"), None);
                assert!(matches!(outcome, Ok(BatchOutcome::Stored(_))), "{name} seed {seed} step {step}: {outcome:?}");
            }
            8 if next_seq[machine] > 0 => {
                let seq = rng.below(next_seq[machine]);
                let outcome = writer.append_batch(&batch(&id, seq, 1, "s"), None);
                assert!(outcome.is_ok(), "{name} seed {seed} step {step}: resend {outcome:?}");
            }
            9..=11 => {
                let entries: Vec<Value> = (0..1 + rng.below(3))
                    .map(|_| {
                        logs += 1;
                        widget_log("ping", &format!("log-{logs}"))
                    })
                    .collect();
                writer.append_widget_logs(&id, &entries, true).expect("logs");
            }
            12..=18 => {
                let fail = rng.below(3) == 0;
                let max_rows = 1 + rng.below(8) as usize;
                let mut got = Vec::new();
                let result = writer.forward_pending(max_rows, &mut |units| {
                    if fail {
                        return Err("down".into());
                    }
                    got.extend_from_slice(units);
                    Ok(())
                });
                match result {
                    Ok(n) => assert_eq!(n, got.iter().map(|u| u.rows.len()).sum::<usize>(), "{name} seed {seed}"),
                    Err(StoreError::Forward { .. }) if fail => {}
                    Err(e) => panic!("{name} seed {seed} step {step}: {e}"),
                }
                delivered.extend(got);
            }
            _ => {
                drop(writer);
                writer = store.open(keys());
            }
        }
    }
    delivered.extend(drain(writer.as_ref(), 7));
    if let Some(difference) = first_difference(&by_stream(&delivered), &stored(writer.as_ref())) {
        panic!("{name} seed {seed} (replay: FLEET_FORWARD_SEED={seed}): {difference}");
    }
}

/// Where forwarded rows first differ from the stored ones (short, for a failing seed).
fn first_difference(
    got: &BTreeMap<(String, Stream), Vec<Map<String, Value>>>,
    want: &BTreeMap<(String, Stream), Vec<Map<String, Value>>>,
) -> Option<String> {
    let short = |row: &Map<String, Value>| {
        let message = row.get("record").or_else(|| row.get("log")).and_then(|r| r.get("message"));
        format!("{} seq {} {}", row["kind"], row.get("seq").unwrap_or(&Value::Null), message.unwrap_or(&Value::Null))
    };
    let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    for key in keys {
        let (got, want) = (got.get(key).cloned().unwrap_or_default(), want.get(key).cloned().unwrap_or_default());
        if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
            return Some(format!(
                "{key:?}: {} rows forwarded, {} stored; row {i}: forwarded {:?}, stored {:?}",
                got.len(),
                want.len(),
                got.get(i).map(short),
                want.get(i).map(short)
            ));
        }
    }
    None
}

#[test]
fn forwarding_under_seeded_schedules_delivers_every_row_once_in_order() {
    // FLEET_FORWARD_SEEDS=N runs more schedules (replay one: FLEET_FORWARD_SEED=S).
    let seeds: Vec<u64> = match std::env::var("FLEET_FORWARD_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let count = std::env::var("FLEET_FORWARD_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6u64);
            (1..=count).map(|n| 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n)).collect()
        }
    };
    for seed in seeds {
        for store in backends() {
            forwarding_schedule(&store, seed);
        }
    }
}

// ---- The file store's own adversaries --------------------------------------------------------

fn records_path(store: &TestStore, machine: &str) -> std::path::PathBuf {
    store.dir().expect("a file store").join(machine).join(RECORDS_FILE)
}

fn append_raw(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    std::fs::OpenOptions::new().append(true).open(path).expect("open").write_all(bytes).expect("write");
}

#[test]
fn file_store_a_failed_cursor_write_after_a_good_push_hands_the_rows_out_again() {
    let store = file_store();
    let dir = store.dir().expect("dir").to_path_buf();
    let writer = store.open(keys());
    fill(writer.as_ref());
    // What a crash between push's Ok and the cursor's rename leaves: the rows were pushed, the
    // cursor was not written. A directory where the temporary cursor goes makes the write fail.
    let blocker = dir.join(format!("{CURSOR_FILE}.tmp"));
    std::fs::create_dir(&blocker).expect("mkdir");
    let mut pushed = Vec::new();
    let failed = writer.forward_pending(1000, &mut |units| {
        pushed = units.to_vec();
        Ok(())
    });
    assert!(matches!(failed, Err(StoreError::Io { .. })), "{:?}", failed.err());
    assert!(!pushed.is_empty());
    assert!(!dir.join(CURSOR_FILE).exists(), "no cursor written");
    std::fs::remove_dir(&blocker).expect("rmdir");
    // In the same process and after a restart alike, the same rows come again.
    let again = drain(writer.as_ref(), 1000);
    assert_eq!(by_stream(&again), by_stream(&pushed));
    drop(writer);
    let writer = store.open(keys());
    assert!(drain(writer.as_ref(), 1000).is_empty(), "the cursor written by the good round holds");
}

#[test]
fn file_store_an_uncommitted_tail_is_never_forwarded() {
    // Plaintext rows, so that the copied rows below open where they land (sealed rows are bound
    // to their line and would be passed over anyway).
    let keys = StoreKeys::plaintext;
    let store = file_store();
    let writer = store.open(keys());
    writer.append_batch(&batch("mac-01", 0, 2, "ok"), None).expect("batch");
    // While the receiver runs: the leftover of an append whose undo failed (record rows and even
    // a commit row that were never acknowledged) sits after the last good append.
    let path = records_path(&store, "mac-01");
    let copy = std::fs::read(&path).expect("read");
    append_raw(&path, &copy);
    let running = drain(writer.as_ref(), 1000);
    assert_eq!(seqs(&running[0].rows), [0], "only the acknowledged batch");
    assert_eq!(running.len(), 1);
    drop(writer);
    // With no receiver (a reader takes the lock): record rows without their commit row and a
    // torn last line are never handed out.
    std::fs::write(&path, &copy).expect("restore");
    let store_dir = store.dir().expect("dir").to_path_buf();
    std::fs::remove_file(store_dir.join(CURSOR_FILE)).expect("forget the cursor");
    let uncommitted = String::from_utf8(copy.clone()).expect("utf8");
    let first_record = uncommitted.lines().next().expect("line");
    append_raw(&path, format!("{first_record}\n{{\"kind\":\"rec").as_bytes());
    let reader = FileReader::new(&store_dir, keys());
    let units = drain(&reader, 1000);
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].rows.len(), 3, "2 records and their commit row, nothing of the tail");
    // A receiver cuts the tail on open; then the next batch is forwarded and nothing else.
    let writer = store.open(keys());
    writer.append_batch(&batch("mac-01", 1, 1, "next"), None).expect("batch");
    let next = drain(writer.as_ref(), 1000);
    assert_eq!(seqs(&next[0].rows), [1]);
    assert_eq!(next[0].rows.len(), 2);
}

#[test]
fn file_store_a_reader_forwards_only_while_no_receiver_holds_the_store() {
    let store = file_store();
    let writer = store.open(keys());
    fill(writer.as_ref());
    let dir = store.dir().expect("dir").to_path_buf();
    let reader = FileReader::new(&dir, keys());
    let locked = reader.forward_pending(10, &mut |_| Ok(()));
    assert!(matches!(locked, Err(StoreError::Locked { .. })), "{:?}", locked.err());
    drop(writer);
    assert_eq!(by_stream(&drain(&reader, 10)), stored(&reader));
    let empty = FileReader::new(&dir.join("nowhere"), keys());
    assert_eq!(empty.forward_pending(10, &mut |_| Ok(())).ok(), Some(0), "no store: nothing pending");
    assert!(!dir.join("nowhere").exists(), "nothing created");
}

#[test]
fn file_store_forwarding_goes_on_after_a_rekey_without_repeating_rows() {
    let store = file_store();
    let dir = store.dir().expect("dir").to_path_buf();
    let writer = store.open(keys());
    fill(writer.as_ref());
    let first = drain(writer.as_ref(), 1000);
    writer.append_batch(&batch("mac-01", 9, 2, "after"), None).expect("batch");
    drop(writer);
    let both = StoreKeys::new(&[other_key(), store_key()]);
    let report = fleet_receiver::store::rekey(&dir, &keys(), &StoreKeys::new(&[other_key()]), false).expect("rekey");
    assert!(report.rewritten > 0);
    let reader = FileReader::new(&dir, both);
    let rest = drain(&reader, 1000);
    let rest = by_stream(&rest);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(seqs(&rest[&("mac-01".to_string(), Stream::Records)]), [9], "only the batch after the first round");
    let mut all = by_stream(&first);
    for (k, rows) in rest {
        all.entry(k).or_default().extend(rows);
    }
    assert_eq!(all, stored(&reader), "every row once across the rekey");
}

#[test]
fn file_store_a_damaged_cursor_is_a_clear_error() {
    let store = file_store();
    let writer = store.open(keys());
    fill(writer.as_ref());
    drop(writer);
    let dir = store.dir().expect("dir").to_path_buf();
    std::fs::write(dir.join(CURSOR_FILE), b"{\"version\":1,\"positions\":").expect("write");
    let writer = store.open(keys());
    let err = writer.forward_pending(10, &mut |_| Ok(())).expect_err("damaged");
    let text = err.to_string();
    assert!(text.contains(CURSOR_FILE) && text.contains("delete it"), "{text}");
    std::fs::remove_file(dir.join(CURSOR_FILE)).expect("rm");
    assert_eq!(by_stream(&drain(writer.as_ref(), 10)), stored(writer.as_ref()), "deleted: everything again");
}

#[test]
fn file_store_rows_that_do_not_open_are_passed_over_not_forwarded() {
    let store = file_store();
    let writer = store.open(keys());
    writer.append_batch(&batch("mac-01", 0, 2, "a"), None).expect("batch");
    writer.append_batch(&batch("mac-01", 1, 2, "b"), None).expect("batch");
    drop(writer);
    // Swap the two record rows of the first batch: both fail to authenticate.
    let path = records_path(&store, "mac-01");
    let mut lines: Vec<String> = std::fs::read_to_string(&path).expect("read").lines().map(String::from).collect();
    lines.swap(0, 1);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    let reader = FileReader::new(store.dir().expect("dir"), keys());
    let units = drain(&reader, 1000);
    let rows = &by_stream(&units)[&("mac-01".to_string(), Stream::Records)];
    assert_eq!(rows.len(), 4, "the first commit row and the whole second batch");
    assert!(rows
        .iter()
        .all(|r| r["kind"] == "batch" || r["record"]["message"].as_str().is_some_and(|m| m.starts_with('b'))));
    // And the verify of the same store names both rows.
    let checks = reader.verify().expect("verify");
    assert_eq!(checks[0].total().bad, 2);
    assert!(checks[0].problems.iter().all(|p| p.location.contains("records.jsonl line ")), "{:?}", checks[0].problems);
}

#[test]
fn the_readers_export_matches_the_http_export_and_the_receiver_forwards_from_its_own_store() {
    // The receiver's export and a reader's widget_logs are the same provided method.
    let store = file_store();
    let dir = store.dir().expect("dir").to_path_buf();
    let rx = Receiver::start_with_limits(config(&dir, vec![key(0)]), fast_limits()).expect("start");
    let body = envelope::seal_v1(&key(0), &crate::receiver::logs_json("mac-01", "hello")).expect("seal");
    assert_eq!(post(&rx.url(), "/api/fleet/widget-logs", &body).status, 200);
    let http = read(&rx.url(), "/api/fleet/widget-logs?format=json").json();
    // The running receiver's own storage forwards (the file store's lock is its own).
    let forwarded = drain(rx.storage().as_ref(), 100);
    assert_eq!(forwarded.iter().map(|u| u.rows.len()).sum::<usize>(), 2, "the two widget logs");
    rx.shutdown();
    let mut count = 0;
    store
        .reader(keys())
        .widget_logs(&LogFilter::default(), &mut |_| {
            count += 1;
            true
        })
        .expect("export");
    assert_eq!(http["count"], json!(count));
}
