//! The receiver's store sealed at rest: known-answer vectors, no plaintext at rest, refusal
//! without a key, wrong keys, tampered rows (verify, exports), rekey under `kill -9`, and the
//! `receive ls/show/verify/rekey` commands, with the real binary where it matters. The tests
//! that hold for every backend run over [`crate::backends::backends`] (no plaintext at rest,
//! `receive ls/show/verify`); the others are about the file store's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_receiver::seal::{store_kid, StoreKeys as Keys};
use fleet_receiver::storage::LogFilter;
use fleet_receiver::store::{self, RECORDS_FILE, WIDGET_LOGS_FILE};
use fleet_receiver::{open_reader, open_storage, StorageRead, StoreKeys, StoreLocation, StoreSource, Stream};
use fleet_widgets::{Level, SampleKind};
use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::record::{BatchBody, Dropped, Record};
use serde_json::{json, Value};

use crate::backends::{backends, TestStore};
use crate::receiver::{key, logs_json, post, read, report_json, sealed_batch, start, store_key};
use crate::support::{self, s, write_secret, TEST_KEY_B64, TEST_STORE_KEY_B64};

/// A second store key (bytes 0x60..0x7f).
fn other_key() -> Key32 {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = 0x60 + i as u8;
    }
    Key32::from_bytes(bytes)
}

/// A reader of the directory store `store` (no lock: a receiver may be running).
fn dir_reader(store: &Path, keys: StoreKeys) -> Box<dyn StorageRead> {
    open_reader(&StoreLocation::Dir(store.to_path_buf()), keys).expect("a directory store opens")
}

use crate::backends::files as all_files;

/// Every data file under `dir` with its bytes (to prove nothing changed; the lock file, which
/// every opener writes its pid into, is left out).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    all_files(dir)
        .into_iter()
        .filter(|p| !p.ends_with(store::LOCK_FILE))
        .map(|p| (p.clone(), std::fs::read(&p).expect("read")))
        .collect()
}

#[test]
fn store_rows_match_vectors_from_an_independent_implementation() {
    let path = format!("{}/tests/vectors/store-rows.json", env!("CARGO_MANIFEST_DIR"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    let vectors = doc["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 4);
    for v in vectors {
        let name = v["name"].as_str().expect("name");
        let key = Key32::from_base64(v["key"].as_str().expect("key")).expect("key");
        assert_eq!(store_kid(&key), v["store_kid"], "{name}");
        let keys = Keys::new(&[key]);
        use base64::Engine as _;
        let nonce: [u8; 12] = base64::engine::general_purpose::STANDARD
            .decode(v["nonce"].as_str().expect("nonce"))
            .expect("b64")
            .try_into()
            .expect("12 bytes");
        let file = v["file"].as_str().expect("file");
        let line = v["line"].as_u64().expect("line");
        let row = v["row"].as_object().expect("row").clone();
        let clear: serde_json::Map<String, Value> = row
            .iter()
            .filter(|(k, _)| fleet_receiver::seal::CLEAR_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let aad: String = fleet_receiver::seal::aad(file, line, &clear).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(aad, v["aad_hex"].as_str().expect("aad"), "{name}: AAD");
        let stored = keys.seal(file, line, row.clone(), &nonce);
        assert_eq!(
            Value::Object(stored.clone()).to_string(),
            v["stored"].as_str().expect("stored"),
            "{name}: sealed bytes"
        );
        let parsed: Value = serde_json::from_str(v["stored"].as_str().expect("stored")).expect("json");
        let opened = keys.open(file, line, parsed.as_object().expect("object").clone()).expect("opens");
        assert_eq!(opened, row, "{name}: opens to the row");
        assert!(keys.open(file, line + 1, stored).is_err(), "{name}: bound to its line");
    }
}

/// A receiver (fleet key `key(0)`, the test store key) on `store`, any backend.
fn start_on(store: &TestStore) -> fleet_receiver::Receiver {
    let mut config = crate::receiver::config(Path::new("unused"), vec![key(0)]);
    config.store = StoreSource::Location { location: store.location.clone(), keys: StoreKeys::new(&[store_key()]) };
    fleet_receiver::Receiver::start_with_limits(config, crate::receiver::fast_limits()).expect("start")
}

#[test]
fn nothing_readable_lands_on_disk_with_a_store_key() {
    for store in backends() {
        nothing_readable_at_rest(&store);
    }
}

fn nothing_readable_at_rest(store: &TestStore) {
    let name = store.name;
    let rx = start_on(store);
    let markers = ["MARKER-LOG-7731", "MARKER-HOST-5512", "MARKER-REC-9921", "MARKER-DATA-4410"];
    let mut report: Value = serde_json::from_slice(&report_json("mac-01")).expect("json");
    report["machine_info"]["hostname"] = json!(markers[1]);
    let body = envelope::seal_v1(&key(0), &serde_json::to_vec(&report).expect("json")).expect("seal");
    assert_eq!(post(&rx.url(), "/api/fleet/report", &body).status, 200);
    let body = envelope::seal_v1(&key(0), &logs_json("mac-01", markers[0])).expect("seal");
    assert_eq!(post(&rx.url(), "/api/fleet/widget-logs", &body).status, 200);
    let batch = BatchBody {
        machine_id: "mac-01".into(),
        seq: 1,
        sent_at: "2026-11-22T13:00:00Z".into(),
        records: vec![Record {
            ts: "2026-11-22T13:00:00.000Z".into(),
            widget: "ping".into(),
            kind: SampleKind::Log,
            level: Level::Info,
            message: markers[2].into(),
            data: json!({"note": markers[3]}),
        }],
        dropped: Dropped::default(),
    };
    let plain = serde_json::to_vec(&batch).expect("json");
    let body = envelope::seal_v2(&key(0), "mac-01", 1, &plain).expect("seal");
    assert_eq!(post(&rx.url(), "/api/v2/batches", &body).status, 200);
    rx.shutdown();
    if let Some(dir) = store.dir() {
        let files = all_files(dir);
        assert!(files.iter().any(|f| f.ends_with(RECORDS_FILE)), "{files:?}");
    }
    let raw = store.raw();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("mac-01"), "{name}: the raw bytes hold the store");
    for marker in markers {
        assert!(!text.contains(marker), "{name}: {marker} in clear at rest");
    }
    for secret in ["1.1.1.1", "latency", "packet_loss", "\"message\"", "\"data\""] {
        assert!(!text.contains(secret), "{name}: {secret} in clear at rest");
    }
    // And every marker comes back through the reader with the key.
    let reader = store.reader(StoreKeys::new(&[store_key()]));
    let logs = reader.read_v1("mac-01", Stream::WidgetLogs).expect("read");
    assert_eq!(logs[0]["log"]["message"], markers[0]);
    let records = reader.read_records("mac-01").expect("read");
    assert_eq!(records[0]["record"]["data"]["note"], markers[3]);
}

/// Run the binary receiver on `store` with these extra arguments until it prints its line or
/// exits; (exit code if it exited, stderr so far).
fn try_start(store: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, Option<support::Proc>) {
    use std::io::{BufRead, Read};
    let mut cmd = support::agent();
    cmd.args(["receive", "--listen", "127.0.0.1:0", "--store", s(store)]).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    if line.starts_with("listening on ") {
        return (None, String::new(), Some(support::Proc { child }));
    }
    let status = child.wait().expect("wait");
    let mut err = String::new();
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
    (status.code(), err, None)
}

#[test]
fn the_binary_refuses_to_start_without_a_store_key_and_warns_at_every_plaintext_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (code, err, _) = try_start(&store, &[], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no store key") && err.contains("--store-plaintext"), "{err}");
    assert!(!store.exists(), "nothing created");
    for _ in 0..2 {
        let mut cmd = support::agent();
        cmd.args(["receive", "--listen", "127.0.0.1:0", "--store", s(&store), "--store-plaintext"]);
        let mut child =
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
        let mut line = String::new();
        use std::io::{BufRead, Read};
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
        assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
        let proc = support::Proc { child };
        proc.signal("-TERM");
        let mut proc = proc;
        assert_eq!(proc.wait(Duration::from_secs(10)).code(), Some(0));
        let mut err = String::new();
        proc.child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
        assert!(err.contains("NOT encrypted at rest"), "warned at every start: {err}");
    }
    // FLEET_STORE_KEY works as well as a file, and a key on the command line is refused.
    let (code, err, proc) = try_start(&dir.path().join("s2"), &[], &[("FLEET_STORE_KEY", TEST_STORE_KEY_B64)]);
    assert!(proc.is_some(), "{code:?} {err}");
    let (code, err, _) = try_start(&dir.path().join("s3"), &["--store-key", TEST_STORE_KEY_B64], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--store-key-file"), "{err}");
}

/// A directory store of `machines` machines written under `keys`.
fn make_store(dir: &Path, keys: StoreKeys, machines: usize, batches: u64) {
    fill_store(&StoreLocation::Dir(dir.to_path_buf()), keys, machines, batches);
}

/// A store (any backend) of `machines` machines, `batches` batches of 20 records each and one
/// widget-log body each, written under `keys`.
fn fill_store(location: &StoreLocation, keys: StoreKeys, machines: usize, batches: u64) {
    let store = open_storage(location, keys).expect("open");
    for m in 0..machines {
        let machine = format!("mac-{m:02}");
        for seq in 0..batches {
            let records = (0..20u64)
                .map(|n| Record {
                    ts: format!("2026-11-22T13:{:02}:{:02}.000Z", seq % 60, n % 60),
                    widget: if n % 2 == 0 { "cpu".into() } else { "ping".into() },
                    kind: if n % 2 == 0 { SampleKind::Metric } else { SampleKind::Log },
                    level: Level::Info,
                    message: format!("row {seq}/{n}"),
                    data: json!({"n": n, "pad": "x".repeat(64)}),
                })
                .collect();
            let batch = BatchBody {
                machine_id: machine.clone(),
                seq,
                sent_at: "2026-11-22T13:00:00Z".into(),
                records,
                dropped: Dropped::default(),
            };
            store.append_batch(&batch, Some("d1c81e9b5253ca4a")).expect("append");
        }
        let logs: Value = serde_json::from_slice(&logs_json(&machine, "hello")).expect("json");
        store.append_widget_logs(&machine, logs["logs"].as_array().expect("logs"), true).expect("logs");
    }
}

#[test]
fn a_wrong_store_key_is_a_clear_error_and_nothing_is_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    make_store(&store, StoreKeys::new(&[store_key()]), 2, 3);
    // A torn tail a successful open would cut.
    use std::io::Write as _;
    let records = store.join("mac-00").join(RECORDS_FILE);
    std::fs::OpenOptions::new().append(true).open(&records).expect("open").write_all(b"{\"torn").expect("write");
    let before = snapshot(&store);
    let secrets = dir.path().join("secrets");
    let wrong = write_secret(&secrets, "wrong.key", &other_key().to_base64());
    let (code, err, _) = try_start(&store, &["--store-key-file", s(&wrong)], &[]);
    assert_eq!(code, Some(1), "{err}");
    let right_kid = store_kid(&store_key());
    let wrong_kid = store_kid(&other_key());
    assert!(err.contains(&right_kid) && err.contains(&wrong_kid), "names both key ids: {err}");
    assert!(err.contains("mac-00") && err.contains(".jsonl"), "names the file: {err}");
    assert!(snapshot(&store) == before, "nothing rewritten");
    // No key at all on a sealed store.
    let (code, err, _) = try_start(&store, &["--store-plaintext"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&right_kid) && err.contains("--store-key-file"), "{err}");
    assert!(snapshot(&store) == before, "nothing rewritten");
    // A plaintext store opened with a key: refused too, pointing at rekey --from-plaintext.
    let plain = dir.path().join("plain");
    make_store(&plain, StoreKeys::plaintext(), 1, 1);
    let plain_before = snapshot(&plain);
    let right = write_secret(&secrets, "right.key", TEST_STORE_KEY_B64);
    let (code, err, _) = try_start(&plain, &["--store-key-file", s(&right)], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("plaintext row") && err.contains("--from-plaintext"), "{err}");
    assert!(snapshot(&plain) == plain_before, "nothing rewritten");
    // The right key opens it (and cuts the torn tail).
    let (_, err, proc) = try_start(&store, &["--store-key-file", s(&right)], &[]);
    assert!(proc.is_some(), "{err}");
}

fn verify_output(store: &Path, key_file: &Path) -> (Option<i32>, String) {
    let out = support::run(&["receive", "verify", "--store", s(store), "--store-key-file", s(key_file)]);
    (out.status.code(), support::stdout(&out) + &support::stderr(&out))
}

#[test]
fn moved_swapped_or_edited_rows_are_reported_by_verify_and_skipped_by_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let rx = start(&store, vec![key(0)]);
    for seq in 1..=3 {
        assert_eq!(post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "mac-01", seq, 4)).status, 200);
    }
    for n in 0..2 {
        let body = envelope::seal_v1(&key(0), &logs_json(if n == 0 { "mac-01" } else { "mac-02" }, "x")).expect("seal");
        assert_eq!(post(&rx.url(), "/api/fleet/widget-logs", &body).status, 200);
    }
    let all = read(&rx.url(), "/api/fleet/widget-logs?format=json").json();
    assert_eq!((all["count"].clone(), all["skipped_tampered"].clone()), (json!(10), json!(0)));
    rx.shutdown();
    let key_file = write_secret(&dir.path().join("secrets"), "store.key", TEST_STORE_KEY_B64);
    let (code, out) = verify_output(&store, &key_file);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("all good"), "{out}");

    // Swap two record rows of mac-01 (both log records), and move mac-02's first widget-log
    // row into mac-01's widget-log file in place of its first row.
    let records = store.join("mac-01").join(RECORDS_FILE);
    let mut lines: Vec<String> = std::fs::read_to_string(&records).expect("read").lines().map(String::from).collect();
    lines.swap(1, 3);
    std::fs::write(&records, lines.join("\n") + "\n").expect("write");
    let theirs = std::fs::read_to_string(store.join("mac-02").join(WIDGET_LOGS_FILE)).expect("read");
    let ours_path = store.join("mac-01").join(WIDGET_LOGS_FILE);
    let mut ours: Vec<String> = std::fs::read_to_string(&ours_path).expect("read").lines().map(String::from).collect();
    ours[0] = theirs.lines().next().expect("line").to_string();
    std::fs::write(&ours_path, ours.join("\n") + "\n").expect("write");

    let (code, out) = verify_output(&store, &key_file);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not authenticate"), "{out}");
    let mac01 = out.lines().find(|l| l.starts_with("mac-01")).expect("mac-01 line");
    let counts: Vec<u64> = mac01.split_whitespace().skip(1).map(|n| n.parse().expect("count")).collect();
    assert_eq!(counts[1], 3, "two swapped rows and one moved row are bad: {out}");

    let rx = start(&store, vec![key(0)]);
    let all = read(&rx.url(), "/api/fleet/widget-logs?format=json").json();
    assert_eq!(all["skipped_tampered"], 3, "{all}");
    assert_eq!(all["count"], 7);
    let csv = read(&rx.url(), "/api/fleet/widget-logs?format=csv");
    assert!(csv.body.ends_with("# skipped 3 tampered rows (run `fleet-agent receive verify`)\r\n"), "{}", csv.body);
    rx.shutdown();
}

/// Store key ids of every row of every file: one set per file.
fn kids_per_file(store: &Path) -> Vec<(PathBuf, std::collections::BTreeSet<String>)> {
    all_files(store)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| {
            let kids = std::fs::read_to_string(&p)
                .expect("read")
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).expect("each line whole JSON");
                    v["store_kid"].as_str().unwrap_or("plaintext").to_string()
                })
                .collect();
            (p, kids)
        })
        .collect()
}

/// Every row of the store opened (with both keys), per file, as text: the oracle that a rekey
/// changed nothing but the sealing.
fn contents(store: &Path) -> BTreeMap<String, Vec<Value>> {
    let reader = dir_reader(store, StoreKeys::new(&[other_key(), store_key()]));
    let mut out = BTreeMap::new();
    for id in reader.machine_ids().expect("ids") {
        let mut rows: Vec<Value> = reader.read_records(&id).expect("records").into_iter().map(Value::Object).collect();
        rows.extend(reader.read_v1(&id, Stream::WidgetLogs).expect("logs").into_iter().map(Value::Object));
        out.insert(id, rows);
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Waits (polling file names only: a file being written is never read) until a rekey temp file
/// has appeared and then disappeared, i.e. the rekey renamed its first rewritten file into place;
/// gives up after `limit`.
fn wait_for_a_first_rekeyed_file(store: &Path, limit: Duration) {
    let temp_files = || -> std::collections::BTreeSet<PathBuf> {
        all_files(store).into_iter().filter(|p| p.to_string_lossy().ends_with(store::REKEY_SUFFIX)).collect()
    };
    let deadline = Instant::now() + limit;
    let mut first: Option<PathBuf> = None;
    while Instant::now() < deadline {
        let now = temp_files();
        match &first {
            None => first = now.into_iter().next(),
            Some(path) if !now.contains(path) => return,
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn rekey_killed_at_any_point_leaves_every_file_whole_under_the_old_or_the_new_key() {
    let iterations: usize = std::env::var("FLEET_REKEY_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let dir = tempfile::tempdir().expect("tempdir");
    let original = dir.path().join("original");
    make_store(&original, StoreKeys::new(&[store_key()]), 6, 40);
    let expected = contents(&original);
    let secrets = dir.path().join("secrets");
    let old = write_secret(&secrets, "old.key", TEST_STORE_KEY_B64);
    let new = write_secret(&secrets, "new.key", &other_key().to_base64());
    let (old_kid, new_kid) = (store_kid(&store_key()), store_kid(&other_key()));
    let rekey = |store: &Path| {
        support::agent()
            .args(["receive", "rekey", "--store", s(store), "--old-key-file", s(&old), "--new-key-file", s(&new)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn rekey")
    };
    // How long a whole rekey takes here, to spread the kills over it.
    let timing = dir.path().join("timing");
    copy_dir(&original, &timing);
    let started = Instant::now();
    assert!(rekey(&timing).wait().expect("wait").success());
    let full = started.elapsed();
    assert_eq!(contents(&timing), expected);

    let mut rng = 0x5eed_4e6b_u64;
    let mut mixed_seen = 0;
    // The first `iterations` kills land at seeded random moments of a timed rekey. Process
    // start-up dominates that time on a loaded machine, so if none of them landed mid-way, up to
    // 40 more are aimed: each waits until the rekey has finished its first file (a temp file seen,
    // then gone), then kills at once.
    let mut i = 0;
    while i < iterations || (mixed_seen == 0 && i < iterations + 40) {
        let store = dir.path().join(format!("kill-{i}"));
        copy_dir(&original, &store);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = full.mul_f64((rng % 1000) as f64 / 1000.0);
        let mut child = rekey(&store);
        if i < iterations {
            std::thread::sleep(delay);
        } else {
            wait_for_a_first_rekeyed_file(&store, Duration::from_secs(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        i += 1;
        // Every file is whole (every line JSON) under exactly one key.
        let per_file = kids_per_file(&store);
        let mut file_kids = std::collections::BTreeSet::new();
        for (path, kids) in &per_file {
            assert_eq!(kids.len(), 1, "iteration {i} (kill after {delay:?}): {} mixes keys {kids:?}", path.display());
            file_kids.extend(kids.iter().cloned());
        }
        assert!(file_kids.iter().all(|k| *k == old_kid || *k == new_kid), "{file_kids:?}");
        if file_kids.len() == 2 {
            mixed_seen += 1;
            if mixed_seen == 1 {
                // A receiver given both keys serves the half-way store: exports read every row.
                let mut config = crate::receiver::config(&store, vec![key(0)]);
                config.store = StoreSource::dir(&store, StoreKeys::new(&[other_key(), store_key()]));
                let rx = fleet_receiver::Receiver::start_with_limits(config, crate::receiver::fast_limits())
                    .expect("a receiver opens the store half-way with both keys");
                let all = read(&rx.url(), "/api/fleet/widget-logs?format=json").json();
                let logs: usize = expected
                    .values()
                    .map(|rows| rows.iter().filter(|r| r["record_kind"] == "log" || r["kind"] == "widget-log").count())
                    .sum();
                assert_eq!((all["count"].as_u64(), all["skipped_tampered"].as_u64()), (Some(logs as u64), Some(0)));
                rx.shutdown();
            }
        }
        // Readable mid-way with both keys: the same rows, nothing bad.
        assert_eq!(contents(&store), expected, "iteration {i}: rows unchanged");
        let both = dir_reader(&store, StoreKeys::new(&[other_key(), store_key()]));
        let exported = both.widget_logs(&LogFilter::default(), &mut |_| true).expect("export");
        assert_eq!(exported.bad, 0);
        // A rerun finishes the job.
        assert!(rekey(&store).wait().expect("wait").success(), "iteration {i}: rerun");
        for (path, kids) in kids_per_file(&store) {
            assert!(kids.len() == 1 && kids.contains(&new_kid), "{}: {kids:?}", path.display());
        }
        assert!(all_files(&store).iter().all(|p| !p.to_string_lossy().ends_with(store::REKEY_SUFFIX)));
        let only_new = dir_reader(&store, StoreKeys::new(&[other_key()]));
        assert!(only_new.verify().expect("verify").iter().all(|c| c.total().bad == 0));
        assert_eq!(contents(&store), expected);
    }
    eprintln!("rekey kill loop: {i} kills over {full:?}, {mixed_seen} left a store mid-way");
    assert!(mixed_seen > 0, "no kill landed mid-way in {i} tries: the kills were not spread over the rekey");
    // The old key alone can no longer read it: a clear error naming the new key id.
    let store = dir.path().join("kill-0");
    let err = dir_reader(&store, StoreKeys::new(&[store_key()])).check_keys().expect_err("old key refused");
    assert!(err.to_string().contains(&new_kid), "{err}");
    // A wrong old key: nothing rewritten, named.
    let fresh = dir.path().join("fresh");
    copy_dir(&original, &fresh);
    let before = snapshot(&fresh);
    let out =
        support::run(&["receive", "rekey", "--store", s(&fresh), "--old-key-file", s(&new), "--new-key-file", s(&new)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(support::stderr(&out).contains(&old_kid), "{}", support::stderr(&out));
    assert!(snapshot(&fresh) == before, "nothing rewritten");
}

#[test]
fn rekey_is_refused_while_a_receiver_holds_the_store_and_seals_a_plaintext_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_rx, _url) = support::start_receiver(&store, "127.0.0.1:0", "k", &[TEST_KEY_B64]);
    let secrets = dir.path().join("secrets");
    let old = write_secret(&secrets, "old.key", TEST_STORE_KEY_B64);
    let new = write_secret(&secrets, "new.key", &other_key().to_base64());
    let out =
        support::run(&["receive", "rekey", "--store", s(&store), "--old-key-file", s(&old), "--new-key-file", s(&new)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(support::stderr(&out).contains("in use"), "{}", support::stderr(&out));
    drop(_rx);

    let plain = dir.path().join("plain");
    make_store(&plain, StoreKeys::plaintext(), 2, 2);
    let before = contents_plain(&plain);
    let out = support::run(&["receive", "rekey", "--store", s(&plain), "--from-plaintext", "--new-key-file", s(&new)]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let reader = dir_reader(&plain, StoreKeys::new(&[other_key()]));
    reader.check_keys().expect("all sealed now");
    assert_eq!(reader.read_records("mac-00").expect("read"), before);
}

fn contents_plain(store: &Path) -> Vec<serde_json::Map<String, Value>> {
    dir_reader(store, StoreKeys::plaintext()).read_records("mac-00").expect("read")
}

#[test]
fn receive_ls_and_show_print_the_store_decrypted() {
    for store in backends() {
        ls_and_show(&store);
    }
}

/// Run the binary with `args` and the store's environment.
fn run_on(store: &TestStore, args: &[&str]) -> std::process::Output {
    let mut command = support::agent();
    command.args(args);
    for (k, v) in store.store_env() {
        command.env(k, v);
    }
    command.output().expect("run fleet-agent")
}

fn ls_and_show(backend: &TestStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = backend.name;
    let store_arg = backend.store_arg();
    let store = store_arg.as_str();
    fill_store(&backend.location, StoreKeys::new(&[store_key()]), 2, 3);
    let key_file = write_secret(&dir.path().join("secrets"), "store.key", TEST_STORE_KEY_B64);
    let out = run_on(backend, &["receive", "ls", "--store", store, "--store-key-file", s(&key_file)]);
    assert_eq!(out.status.code(), Some(0), "{name}: {}", support::stderr(&out));
    let text = support::stdout(&out);
    assert!(text.contains("machine mac-00: 3 v2 batches with 60 records"), "{name}: {text}");
    assert!(text.contains("machine mac-01"), "{text}");
    assert!(text.contains("last seen 20") && text.contains("KiB on disk"), "{text}");
    assert!(text.lines().any(|l| l.contains("ping") && l.contains("30")), "records per widget: {text}");
    // Without the key: a clear error naming the key id, not garbage.
    let out = run_on(backend, &["receive", "ls", "--store", store]);
    assert_eq!(out.status.code(), Some(1), "{name}");
    assert!(support::stderr(&out).contains(&store_kid(&store_key())), "{}", support::stderr(&out));

    let show = |extra: &[&str]| {
        let mut args = vec!["receive", "show", "--store", store, "--store-key-file", s(&key_file)];
        args.extend_from_slice(extra);
        let out = run_on(backend, &args);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", support::stderr(&out));
        support::stdout(&out)
    };
    let json_lines = show(&["mac-00", "--json", "--widget", "ping", "--limit", "5"]);
    let rows: Vec<Value> = json_lines.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r["widget"] == "ping" && r["machine_id"] == "mac-00"));
    let records: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "record").collect();
    assert_eq!(records[0]["record"]["message"], "row 2/19", "newest first");
    assert_eq!(records[1]["record"]["message"], "row 2/17");
    let text = show(&["mac-01", "--widget", "wifi"]);
    assert!(text.contains("widget-log") && text.contains("rssi"), "{text}");
    assert_eq!(show(&["mac-01", "--since", "2999-01-01"]).trim(), "no rows match");
    let out = run_on(backend, &["receive", "show", "--store", store, "--store-key-file", s(&key_file), "nope"]);
    assert_eq!(out.status.code(), Some(2), "{name}");
    // verify reads every row of every backend; all good here.
    let out = run_on(backend, &["receive", "verify", "--store", store, "--store-key-file", s(&key_file)]);
    let text = support::stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{name}: {text}{}", support::stderr(&out));
    assert!(text.contains("all good") && text.contains("mac-01"), "{name}: {text}");
}

/// A build without the cargo feature `postgres` names the feature for a postgres:// store,
/// from the receiver and from every store command; rekey is the file store's in every build.
#[test]
fn a_postgres_store_is_a_clear_error_without_the_feature_and_for_rekey() {
    let url = "postgres://fleet@127.0.0.1:9/fleet";
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = write_secret(&dir.path().join("secrets"), "store.key", TEST_STORE_KEY_B64);
    if cfg!(not(feature = "postgres")) {
        let (code, err, _) = try_start(Path::new(url), &["--store-plaintext"], &[]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("feature `postgres`") && err.contains(url), "{err}");
        for sub in ["ls", "verify"] {
            let out = support::run(&["receive", sub, "--store", url, "--store-key-file", s(&key_file)]);
            assert_eq!(out.status.code(), Some(1));
            assert!(support::stderr(&out).contains("feature `postgres`"), "{}", support::stderr(&out));
        }
    }
    let out = support::run(&[
        "receive",
        "rekey",
        "--store",
        url,
        "--old-key-file",
        s(&key_file),
        "--new-key-file",
        s(&key_file),
    ]);
    assert_eq!(out.status.code(), Some(1));
    // The server build rekeys PostgreSQL stores (there is no server at this URL); the laptop
    // build says what it lacks.
    let expected = if cfg!(feature = "postgres") { url } else { "directory store" };
    assert!(support::stderr(&out).contains(expected), "{}", support::stderr(&out));
    let out = support::run(&["receive", "ls", "--store", "postgres://fleet:secret@127.0.0.1/fleet"]);
    assert_eq!(out.status.code(), Some(2));
    let err = support::stderr(&out);
    assert!(err.contains("--store-password-file") && !err.contains("secret@"), "{err}");
}

#[test]
fn file_store_old_seqs_beyond_the_digest_window_are_still_exactly_once() {
    // The running receiver keeps only the last RECENT_DIGESTS digests per machine: a resend of
    // an older seq reads its digest back from the (sealed) commit line, before and after a restart.
    let window = store::RECENT_DIGESTS as u64;
    assert!(window <= 64, "memory per machine stays small: {window} digests");
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start(dir.path(), vec![key(0)]);
    for seq in 1..=window * 3 {
        let answer = post(&rx.url(), "/api/v2/batches", &sealed_batch(&key(0), "mac-old", seq, 2));
        assert_eq!(answer.status, 200, "{seq}: {}", answer.body);
    }
    let before = snapshot(dir.path());
    let check = |url: &str| {
        for seq in [1, 2, window] {
            let resent = post(url, "/api/v2/batches", &sealed_batch(&key(0), "mac-old", seq, 2));
            assert_eq!((resent.status, resent.body.as_str()), (200, r#"{"status":"ok","duplicate":true}"#), "{seq}");
            let other = post(url, "/api/v2/batches", &sealed_batch(&key(0), "mac-old", seq, 3));
            assert_eq!(other.status, 409, "{seq}: other records under an old seq: {}", other.body);
        }
    };
    check(&rx.url());
    rx.shutdown();
    assert_eq!(snapshot(dir.path()), before, "nothing written by the resends");
    let rx = start(dir.path(), vec![key(0)]);
    check(&rx.url());
    rx.shutdown();
    assert_eq!(snapshot(dir.path()), before, "nothing written after the restart either");
    let seqs: Vec<u64> = dir_reader(dir.path(), StoreKeys::new(&[store_key()]))
        .read_records("mac-old")
        .expect("read")
        .iter()
        .filter(|row| row["kind"] == "batch")
        .filter_map(|row| row["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (1..=window * 3).collect::<Vec<_>>(), "each batch stored once");
}

/// A file store whose `append_batch` can be made to fail as a database outage does, or to
/// block until released (to hold the receiver's only worker).
struct Flaky {
    inner: Box<dyn fleet_receiver::Storage>,
    outage: std::sync::atomic::AtomicBool,
    /// While set, `append_batch` reports `entered` and waits for `release`.
    hold: std::sync::Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl StorageRead for Flaky {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn keys(&self) -> &StoreKeys {
        self.inner.keys()
    }
    fn machine_ids(&self) -> Result<Vec<String>, fleet_receiver::StoreError> {
        self.inner.machine_ids()
    }
    fn visit(
        &self,
        machine_id: &str,
        stream: Stream,
        visit: &mut dyn FnMut(serde_json::Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(fleet_receiver::storage::RowProblem),
    ) -> Result<fleet_receiver::storage::ReadStats, fleet_receiver::StoreError> {
        self.inner.visit(machine_id, stream, visit, problem)
    }
    fn machine_bytes(&self, machine_id: &str) -> Result<u64, fleet_receiver::StoreError> {
        self.inner.machine_bytes(machine_id)
    }
    fn check_keys(&self) -> Result<(), fleet_receiver::StoreError> {
        self.inner.check_keys()
    }
    fn forward_pending(
        &self,
        max_rows: usize,
        push: &mut dyn FnMut(&[fleet_receiver::storage::Committed]) -> Result<(), String>,
    ) -> Result<usize, fleet_receiver::StoreError> {
        self.inner.forward_pending(max_rows, push)
    }
}

impl fleet_receiver::Storage for Flaky {
    fn append_report(&self, machine_id: &str, report: &Value, e2ee: bool) -> Result<(), fleet_receiver::StoreError> {
        self.inner.append_report(machine_id, report, e2ee)
    }
    fn append_widget_logs(
        &self,
        machine_id: &str,
        logs: &[Value],
        e2ee: bool,
    ) -> Result<usize, fleet_receiver::StoreError> {
        self.inner.append_widget_logs(machine_id, logs, e2ee)
    }
    fn append_batch(
        &self,
        batch: &BatchBody,
        kid: Option<&str>,
    ) -> Result<fleet_receiver::storage::BatchOutcome, fleet_receiver::StoreError> {
        if self.outage.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(fleet_receiver::StoreError::Database {
                what: "storing a batch in postgres://fleet@db/fleet".into(),
                detail: "connection refused".into(),
            });
        }
        if let Some((entered, release)) = self.hold.lock().expect("hold").take() {
            entered.send(()).expect("entered");
            let _ = release.recv_timeout(Duration::from_secs(30));
        }
        self.inner.append_batch(batch, kid)
    }
}

/// One raw HTTP/1.1 POST of a v2 batch; the whole answer as text (head and body).
fn raw_post(url: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(address).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let head = format!(
        "POST /api/v2/batches HTTP/1.1\r\nHost: {address}\r\nX-API-Key: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        crate::receiver::API_KEY,
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("head");
    conn.write_all(body).expect("body");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    answer
}

#[test]
fn a_503_for_a_database_outage_or_a_busy_receiver_carries_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner =
        open_storage(&StoreLocation::Dir(dir.path().to_path_buf()), StoreKeys::new(&[store_key()])).expect("store");
    let flaky = std::sync::Arc::new(Flaky {
        inner,
        outage: std::sync::atomic::AtomicBool::new(true),
        hold: std::sync::Mutex::new(None),
    });
    let mut config = crate::receiver::config(dir.path(), vec![key(0)]);
    config.store = StoreSource::Open(flaky.clone());
    config.workers = 1;
    let rx = fleet_receiver::Receiver::start_with_limits(config, crate::receiver::fast_limits()).expect("start");
    // The database is down: 503 with Retry-After, nothing stored.
    let answer = raw_post(&rx.url(), &sealed_batch(&key(0), "mac-503", 1, 2));
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("\r\nRetry-After: 5\r\n"), "a database outage asks for 5 s: {answer}");
    assert!(answer.contains("database is unavailable"), "{answer}");
    // It is back: the resend is stored.
    flaky.outage.store(false, std::sync::atomic::Ordering::SeqCst);
    let answer = raw_post(&rx.url(), &sealed_batch(&key(0), "mac-503", 1, 2));
    assert!(answer.starts_with("HTTP/1.1 200 ") && !answer.contains("Retry-After"), "{answer}");
    // The only worker is held by a slow store: the next request waits, then 503 with Retry-After.
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    *flaky.hold.lock().expect("hold") = Some((entered_tx, release_rx));
    let url = rx.url();
    let slow = std::thread::spawn(move || raw_post(&url, &sealed_batch(&key(0), "mac-503", 2, 2)));
    entered_rx.recv_timeout(Duration::from_secs(10)).expect("the first request holds the worker");
    let answer = raw_post(&rx.url(), &sealed_batch(&key(0), "mac-503", 3, 2));
    release_tx.send(()).expect("release");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("\r\nRetry-After: 1\r\n"), "busy asks for 1 s: {answer}");
    assert!(answer.contains("every worker is busy"), "{answer}");
    assert!(slow.join().expect("slow").starts_with("HTTP/1.1 200 "));
    rx.shutdown();
}
