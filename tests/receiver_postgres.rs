//! The PostgreSQL storage backend (`receiver/postgres/`, docs/receiver-store-postgres.md)
//! against a real server, the way its adversaries would use it: two receivers racing the same
//! batch, someone reading the database (no plaintext anywhere), someone editing rows (they no
//! longer open), a server that goes away (a clear error, then a reconnect), migrations run
//! twice and by two processes at once, and a large store at start-up (no rows read).
//!
//! Server: env `FLEET_TEST_POSTGRES` (`postgres://fleet@127.0.0.1:PORT/postgres`, password in
//! `FLEET_TEST_POSTGRES_PASSWORD`), a role that may CREATE DATABASE; `.ci/postgres.sh start`
//! makes one. Each test creates its own database and drops it after, so tests run in parallel.
//! Without the variable each test prints that it was skipped, unless `FLEET_REQUIRE_POSTGRES=1`
//! (set by `.ci/run`), which makes it fail. Known-answer vectors of the sealed rows need no
//! server.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fleet_receiver::postgres::driver::Client;
use fleet_receiver::postgres::rows::{self, Sealed, Table};
use fleet_receiver::postgres::{self as pg, PgStore};
use fleet_receiver::seal::{StoreKeys, CLEAR_FIELDS};
use fleet_receiver::storage::{
    BatchOutcome, Committed, PostgresLocation, Storage, StorageRead, StoreError, StoreLocation, Stream,
};
use fleet_wire::keys::{Key32, SecretString};
use fleet_wire::record::{BatchBody, Dropped, Level, Record, SampleKind};
use serde_json::{json, Map, Value};

/// A scratch database on the test server, dropped (with its connections) when this is.
pub struct TestDb {
    admin: PostgresLocation,
    /// The scratch database, with the password attached.
    pub location: PostgresLocation,
}

impl TestDb {
    /// A fresh database, or `None` (after printing why) when no server is configured and
    /// `FLEET_REQUIRE_POSTGRES` is not `1`.
    pub fn create(test: &str) -> Option<TestDb> {
        let Ok(url) = std::env::var("FLEET_TEST_POSTGRES") else {
            assert!(
                std::env::var("FLEET_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{test}: FLEET_REQUIRE_POSTGRES=1 but FLEET_TEST_POSTGRES is not set (.ci/postgres.sh start)"
            );
            println!("skipped {test}: no PostgreSQL (set FLEET_TEST_POSTGRES, see .ci/postgres.sh)");
            return None;
        };
        let Ok(StoreLocation::Postgres(mut admin)) = StoreLocation::parse(&url) else {
            panic!("FLEET_TEST_POSTGRES={url} is not a postgres:// URL");
        };
        if let Ok(password) = std::env::var("FLEET_TEST_POSTGRES_PASSWORD") {
            admin = admin.with_password(SecretString::new(password));
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("random");
        let name = format!("fleet_test_{}", random.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let mut client = pg::connect(&admin).unwrap_or_else(|e| panic!("{test}: cannot reach {admin}: {e}"));
        client.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        let mut location = admin.clone();
        location.dbname = name;
        Some(TestDb { admin, location })
    }

    /// A raw connection to the scratch database (the adversary's view).
    pub fn client(&self) -> Client {
        pg::connect(&self.location).expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut client) = pg::connect(&self.admin) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.location.dbname));
        }
    }
}

fn key(first: u8) -> Key32 {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = first.wrapping_add(i as u8);
    }
    Key32::from_bytes(bytes)
}

fn keys() -> StoreKeys {
    StoreKeys::new(&[key(0x40)])
}

fn record(widget: &str, message: &str, value: f64) -> Record {
    Record {
        ts: "2026-11-22T13:00:00.000Z".into(),
        widget: widget.into(),
        kind: SampleKind::Metric,
        level: Level::Info,
        message: message.into(),
        data: json!({"value": value}),
    }
}

fn batch(machine_id: &str, seq: u64, records: Vec<Record>) -> BatchBody {
    BatchBody {
        machine_id: machine_id.into(),
        seq,
        sent_at: "2026-11-22T13:00:01Z".into(),
        records,
        dropped: Dropped::default(),
    }
}

fn count(client: &mut Client, query: &str) -> i64 {
    client.query_one(query, &[]).expect(query).get(0)
}

#[test]
fn sealed_rows_match_the_python_vectors() {
    let path = format!("{}/tests/vectors/store-rows-postgres.json", env!("CARGO_MANIFEST_DIR"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    let vectors = doc["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 5);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let unhex = |text: &str| {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect::<Vec<u8>>()
    };
    for v in vectors {
        let name = v["name"].as_str().expect("name");
        let keys = StoreKeys::from_base64(&[v["key"].as_str().expect("key").to_string()]).expect("key");
        let table = match v["table"].as_str().expect("table") {
            "batches" => Table::Batches,
            "records" => Table::Records,
            "reports" => Table::Reports,
            "widget_logs" => Table::WidgetLogs,
            other => panic!("{other}"),
        };
        assert_eq!(table.name(), v["table"]);
        let row_id = v["row_id"].as_u64().expect("row_id");
        let row = v["row"].as_object().expect("row").clone();
        let columns = &v["columns"];
        let clear: Map<String, Value> = row
            .iter()
            .filter(|(k, _)| CLEAR_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(hex(&fleet_receiver::seal::aad(table.name(), row_id, &clear)), v["aad_hex"], "{name}: AAD");
        let nonce: [u8; 12] = unhex(columns["nonce"].as_str().expect("nonce")).try_into().expect("12 bytes");
        let sealed = rows::seal(&keys, table, row_id, row.clone(), &nonce);
        assert_eq!(sealed.store_kid.as_deref(), columns["store_kid"].as_str(), "{name}");
        assert_eq!(hex(&sealed.payload), columns["payload"], "{name}: payload");
        if let Some(seq) = columns["seq"].as_i64() {
            assert_eq!(rows::seq_column(row["seq"].as_u64().expect("seq")), seq, "{name}: seq column");
        }
        let stored = Sealed {
            store_kid: columns["store_kid"].as_str().map(str::to_string),
            nonce: Some(nonce.to_vec()),
            payload: unhex(columns["payload"].as_str().expect("payload")),
        };
        assert_eq!(rows::open(&keys, table, row_id, clear.clone(), stored.clone()).as_ref(), Ok(&row), "{name}: opens");
        assert!(rows::open(&keys, table, row_id + 1, clear, stored).is_err(), "{name}: another row id does not open");
    }
}

#[test]
fn two_receivers_racing_one_batch_store_it_once() {
    let Some(db) = TestDb::create("two_receivers_racing_one_batch_store_it_once") else { return };
    pg::set_forwarding(&db.location, true).expect("forwarding on: each stored batch is queued once");
    let a = Arc::new(PgStore::open(&db.location, keys()).expect("open a"));
    let b = Arc::new(PgStore::open(&db.location, keys()).expect("open b"));
    const SEQS: u64 = 40;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [Arc::clone(&a), Arc::clone(&b)]
        .into_iter()
        .map(|store| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for seq in 1..=SEQS {
                    let body = batch("mac-race", seq, vec![record("cpu", "same", seq as f64), record("mem", "", 1.0)]);
                    barrier.wait();
                    outcomes.push(store.append_batch(&body, Some("kid")).expect("append"));
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<Vec<BatchOutcome>> = racers.into_iter().map(|r| r.join().expect("racer")).collect();
    for (seq, pair) in outcomes[0].iter().zip(&outcomes[1]).enumerate() {
        let pair = [pair.0, pair.1];
        let stored = pair.iter().filter(|o| ***o == BatchOutcome::Stored(2)).count();
        let duplicate = pair.iter().filter(|o| ***o == BatchOutcome::Duplicate).count();
        assert_eq!((stored, duplicate), (1, 1), "seq {}: {pair:?}", seq + 1);
    }
    // The same seqs with other records, from both at once: a conflict for both, nothing written.
    let barrier = Arc::new(Barrier::new(2));
    let conflicting: Vec<_> = [Arc::clone(&a), Arc::clone(&b)]
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                store.append_batch(&batch("mac-race", 7, vec![record("cpu", "other", i as f64)]), None).expect("append")
            })
        })
        .collect();
    for racer in conflicting {
        assert!(matches!(racer.join().expect("racer"), BatchOutcome::Conflict { .. }));
    }
    let mut client = db.client();
    assert_eq!(count(&mut client, "SELECT count(*) FROM batches"), SEQS as i64);
    assert_eq!(count(&mut client, "SELECT count(*) FROM records"), 2 * SEQS as i64);
    assert_eq!(count(&mut client, "SELECT count(*) FROM forward_queue"), SEQS as i64);
    let rows = a.read_records("mac-race").expect("read");
    assert_eq!(rows.len(), 3 * SEQS as usize, "each batch: two records and its commit row");
    assert_eq!(rows[2]["kind"], "batch");
    assert_eq!(rows[0]["record"]["message"], "same");
}

/// `pg_dump` of the scratch database (data only): what an adversary with the database gets.
fn dump(db: &TestDb) -> String {
    let candidates = std::iter::once("pg_dump".to_string()).chain(
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin/pg_dump").to_string_lossy().into_owned()),
    );
    for program in candidates {
        let output = std::process::Command::new(&program)
            .args(["--data-only", "--host", &db.location.host, "--port", &db.location.port.to_string()])
            .args(["--username", &db.location.user, "--dbname", &db.location.dbname])
            .env("PGPASSWORD", db.location.password.as_ref().map(|p| p.expose()).unwrap_or(""))
            .output();
        match output {
            Ok(output) if output.status.success() => return String::from_utf8_lossy(&output.stdout).into_owned(),
            Ok(output) => panic!("{program}: {}", String::from_utf8_lossy(&output.stderr)),
            Err(_) => continue,
        }
    }
    panic!("pg_dump not found (apt-get install postgresql-client)");
}

#[test]
fn nothing_in_the_database_is_plaintext() {
    let Some(db) = TestDb::create("nothing_in_the_database_is_plaintext") else { return };
    let store = PgStore::open(&db.location, keys()).expect("open");
    let marker = "MARKER-d41d8cd9";
    store
        .append_batch(&batch("mac-01", 1, vec![record("cpu", marker, 12345.678)]), Some("transport-kid"))
        .expect("batch");
    store
        .append_report("mac-01", &json!({"machine_id": "mac-01", "metrics": {"cpu": {"percent": marker}}}), true)
        .expect("report");
    let logs = [json!({"timestamp": "2026-11-22T14:00:00", "level": "info", "widget_type": "wifi", "message": marker})];
    store.append_widget_logs("mac-01", &logs, true).expect("logs");
    let dumped = dump(&db);
    assert!(dumped.contains("mac-01") && dumped.contains("wifi"), "the dump holds the clear index columns:\n{dumped}");
    for secret in [marker, "12345.678", "percent", "transport-kid", "2026-11-22T14:00:00"] {
        assert!(!dumped.contains(secret), "{secret} in the dump:\n{dumped}");
    }
    // And it all reads back.
    assert_eq!(store.read_records("mac-01").expect("records")[0]["record"]["message"], marker);
    assert_eq!(
        store.read_v1("mac-01", Stream::Reports).expect("reports")[0]["report"]["metrics"]["cpu"]["percent"],
        marker
    );
    assert_eq!(store.read_v1("mac-01", Stream::WidgetLogs).expect("logs")[0]["log"]["message"], marker);
}

#[test]
fn edited_moved_and_deleted_rows_are_refused() {
    let Some(db) = TestDb::create("edited_moved_and_deleted_rows_are_refused") else { return };
    let store = PgStore::open(&db.location, keys()).expect("open");
    for (machine, seq) in [("mac-01", 1), ("mac-01", 2), ("mac-02", 1)] {
        let records = vec![record("cpu", "a", 1.0), record("mem", "b", 2.0)];
        assert_eq!(store.append_batch(&batch(machine, seq, records), None).expect("append"), BatchOutcome::Stored(2));
    }
    store.append_report("mac-01", &json!({"n": 1}), false).expect("report");
    store.append_report("mac-01", &json!({"n": 2}), false).expect("report");
    let bad = |stream| {
        let mut problems = Vec::new();
        let stats = store.visit("mac-01", stream, &mut |_| true, &mut |p| problems.push(p.location)).expect("visit");
        (stats.good, stats.bad, problems)
    };
    assert_eq!(bad(Stream::Records).1, 0);
    let mut client = db.client();
    // Swap two records of a batch (their index is authenticated).
    client
        .batch_execute(
            "UPDATE records SET idx = -1 - idx WHERE batch_id = (SELECT id FROM batches WHERE machine_id = 'mac-01' AND seq = 1);
             UPDATE records SET idx = 2 + idx WHERE idx < 0",
        )
        .expect("swap");
    assert_eq!(bad(Stream::Records).1, 2, "two swapped records");
    // Move a batch to another seq; edit its clear digest.
    client.batch_execute("UPDATE batches SET seq = 9 WHERE machine_id = 'mac-01' AND seq = 2").expect("move");
    let (_, bad_rows, problems) = bad(Stream::Records);
    assert_eq!(bad_rows, 2 + 3, "the moved batch and its two records: {problems:?}");
    client.batch_execute("UPDATE batches SET seq = 2 WHERE machine_id = 'mac-01' AND seq = 9").expect("back");
    client.batch_execute("UPDATE batches SET digest = 'x' WHERE machine_id = 'mac-01' AND seq = 2").expect("digest");
    assert_eq!(bad(Stream::Records).1, 2 + 1, "the commit row whose clear digest was edited");
    // Another machine's records moved under mac-01's batch: they do not open there.
    client
        .batch_execute(
            "DELETE FROM records WHERE batch_id = (SELECT id FROM batches WHERE machine_id = 'mac-01' AND seq = 2);
             UPDATE records SET batch_id = (SELECT id FROM batches WHERE machine_id = 'mac-01' AND seq = 2)
               WHERE batch_id = (SELECT id FROM batches WHERE machine_id = 'mac-02')",
        )
        .expect("move records");
    let (_, bad_rows, problems) = bad(Stream::Records);
    assert_eq!(bad_rows, 2 + 3, "two foreign records and the commit row: {problems:?}");
    // A deleted record: its batch says so.
    client.batch_execute("DELETE FROM records WHERE idx = 1").expect("delete");
    assert!(bad(Stream::Records).2.iter().any(|p| p.starts_with("batches row")));
    // Reports swapped between rows.
    client
        .batch_execute("DELETE FROM forward_queue; UPDATE reports SET id = -id; UPDATE reports SET id = CASE WHEN id = -1 THEN 2 ELSE 1 END")
        .expect("swap reports");
    assert_eq!(bad(Stream::Reports), (0, 2, vec!["reports row 1".to_string(), "reports row 2".to_string()]));
    // verify (the provided method every backend shares) sees the same.
    let checks = store.verify().expect("verify");
    assert!(checks.iter().any(|c| c.machine_id == "mac-01" && c.total().bad > 0));
}

#[test]
fn migrate_twice_and_at_once_changes_nothing() {
    let Some(db) = TestDb::create("migrate_twice_and_at_once_changes_nothing") else { return };
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let location = db.location.clone();
            std::thread::spawn(move || pg::migrate(&location).map_err(|e| e.to_string()))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().expect("thread").expect("migrate")).collect();
    assert_eq!(
        results.iter().filter(|m| m.from == 0).count(),
        1,
        "one migrated, the others found it done: {results:?}"
    );
    assert!(results.iter().all(|m| m.to == pg::schema::LATEST));
    let mut client = db.client();
    let schema = |client: &mut Client| -> Vec<String> {
        client
            .query(
                "SELECT table_name || '.' || column_name || ':' || data_type FROM information_schema.columns
                 WHERE table_schema = 'public' ORDER BY 1",
                &[],
            )
            .expect("columns")
            .iter()
            .map(|r| r.get(0))
            .chain(
                client
                    .query("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1", &[])
                    .expect("indexes")
                    .iter()
                    .map(|r| r.get(0)),
            )
            .collect()
    };
    let versions = |client: &mut Client| -> Vec<String> {
        client
            .query("SELECT version || ' ' || applied_at FROM fleet_schema_version ORDER BY 1", &[])
            .expect("versions")
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let (before, applied) = (schema(&mut client), versions(&mut client));
    assert!(before.iter().any(|c| c == "batches.payload:bytea"), "{before:?}");
    let store = PgStore::open(&db.location, keys()).expect("open migrates again");
    store.append_batch(&batch("m", 1, vec![record("cpu", "", 1.0)]), None).expect("append");
    let again = pg::migrate(&db.location).expect("migrate");
    assert_eq!((again.from, again.to), (pg::schema::LATEST, pg::schema::LATEST));
    assert_eq!(schema(&mut client), before);
    assert_eq!(versions(&mut client), applied);
    assert_eq!(count(&mut client, "SELECT count(*) FROM batches"), 1, "rows untouched");
    // A database from a newer fleet-agent is refused, not written.
    client.batch_execute("INSERT INTO fleet_schema_version (version, name) VALUES (999, 'future')").expect("future");
    let err = PgStore::open(&db.location, keys()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("newer than this fleet-agent"), "{err}");
    let err = PgStore::open_reader(&db.location, keys()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn a_reader_never_migrates_and_says_what_to_run() {
    let Some(db) = TestDb::create("a_reader_never_migrates_and_says_what_to_run") else { return };
    let err = PgStore::open_reader(&db.location, keys()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("receive migrate"), "{err}");
    assert_eq!(count(&mut db.client(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), 0);
}

#[test]
fn keys_are_checked_at_start_without_reading_rows() {
    let Some(db) = TestDb::create("keys_are_checked_at_start_without_reading_rows") else { return };
    let store = PgStore::open(&db.location, keys()).expect("open");
    store.append_batch(&batch("m", 1, vec![record("cpu", "", 1.0)]), None).expect("append");
    drop(store);
    let other = StoreKeys::new(&[key(0x41)]);
    match PgStore::open(&db.location, other) {
        Err(StoreError::Row { problem, given, .. }) => {
            assert!(matches!(problem, fleet_receiver::seal::RowError::UnknownKey(_)), "{problem:?}");
            assert_eq!(given.len(), 1);
        }
        other => panic!("{:?}", other.err()),
    }
    assert!(matches!(PgStore::open(&db.location, StoreKeys::plaintext()), Err(StoreError::Row { .. })));
    // Both keys (a rekey half-way): fine, and the old rows still open.
    let both = StoreKeys::new(&[key(0x41), key(0x40)]);
    let store = PgStore::open(&db.location, both).expect("open with both keys");
    assert_eq!(store.read_records("m").expect("read").len(), 2);
}

/// The rows PostgreSQL says were read from the store's tables so far (sequential and index
/// fetches), after the backends that read them have exited (statistics flush at exit).
fn rows_read(client: &mut Client) -> i64 {
    client.batch_execute("SELECT pg_stat_clear_snapshot()").expect("clear");
    count(
        client,
        "SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)::bigint FROM pg_stat_user_tables
         WHERE relname IN ('batches', 'records', 'reports', 'widget_logs', 'forward_queue')",
    )
}

#[test]
fn start_up_reads_no_rows_however_large_the_store() {
    let Some(db) = TestDb::create("start_up_reads_no_rows_however_large_the_store") else { return };
    pg::migrate(&db.location).expect("migrate");
    let started = Instant::now();
    drop(PgStore::open(&db.location, keys()).expect("open empty"));
    let empty = started.elapsed();
    let batches: i64 = std::env::var("FLEET_PG_STARTUP_BATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut client = db.client();
    client.batch_execute("SET statement_timeout = 0").expect("no timeout for the filling");
    // A large store, written by SQL (rows need not open for this: start-up must not look).
    client
        .execute(
            "INSERT INTO batches (machine_id, seq, records, received_at, digest, store_kid, nonce, payload)
             SELECT 'mac-' || (i % 1000), i, 2, '2026-11-22T13:00:00.000Z', md5(i::text), $1, '\\x00', decode(repeat('ab', 200), 'hex')
             FROM generate_series(1, $2::bigint) AS i",
            &[&keys().current_kid().unwrap_or_default(), &batches],
        )
        .expect("fill batches");
    client
        .batch_execute(
            "INSERT INTO records (batch_id, idx, widget, record_kind, store_kid, nonce, payload)
             SELECT id, k, 'cpu', 'metric', store_kid, nonce, payload FROM batches, generate_series(0, 1) AS k;
             ANALYZE",
        )
        .expect("fill records");
    let size: i64 = client.query_one("SELECT pg_database_size(current_database())", &[]).expect("size").get(0);
    // Let the statistics of the filling session settle, then open (twice, as two receivers).
    std::thread::sleep(Duration::from_millis(1200));
    let before = rows_read(&mut client);
    let started = Instant::now();
    let a = PgStore::open(&db.location, keys()).expect("open a");
    let b = PgStore::open(&db.location, keys()).expect("open b");
    let large = started.elapsed() / 2;
    drop((a, b));
    std::thread::sleep(Duration::from_millis(1200));
    let read = rows_read(&mut client) - before;
    println!(
        "start-up: {:.1} ms on an empty database, {:.1} ms with {batches} batches and {} records ({} MiB)",
        empty.as_secs_f64() * 1000.0,
        large.as_secs_f64() * 1000.0,
        2 * batches,
        size / (1024 * 1024)
    );
    assert_eq!(read, 0, "opening read {read} rows of the store's tables");
    // The counter counts: reading one machine's rows shows up in it.
    let reader = PgStore::open_reader(&db.location, keys()).expect("reader");
    let mut problems = 0;
    reader.visit("mac-1", Stream::Records, &mut |_| true, &mut |_| problems += 1).expect("visit");
    assert!(problems > 0, "the filler's rows do not open (they are not sealed)");
    drop(reader);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(rows_read(&mut client) - before > 0, "reading rows is counted");
}

#[test]
fn an_outage_is_a_database_error_then_the_store_reconnects() {
    let Some(db) = TestDb::create("an_outage_is_a_database_error_then_the_store_reconnects") else { return };
    let store = PgStore::open(&db.location, keys()).expect("open");
    assert_eq!(
        store.append_batch(&batch("m", 1, vec![record("cpu", "", 1.0)]), None).expect("1"),
        BatchOutcome::Stored(1)
    );
    // The server drops every connection of the store (as a restart or a failover would).
    let mut admin = db.client();
    let kill = "SELECT count(pg_terminate_backend(pid))::bigint FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()";
    assert!(count(&mut admin, kill) >= 1);
    let mut errors = 0;
    let mut stored = None;
    for attempt in 0..3 {
        match store.append_batch(&batch("m", 2, vec![record("cpu", "", 2.0)]), None) {
            Ok(outcome) => {
                stored = Some((attempt, outcome));
                break;
            }
            Err(StoreError::Database { what, detail }) => {
                assert!(what.contains(&db.location.to_string()), "{what}");
                assert!(!detail.contains(db.location.password.as_ref().map(|p| p.expose()).unwrap_or("\u{0}")));
                errors += 1;
            }
            Err(other) => panic!("not a database error: {other}"),
        }
    }
    // Stored, or (if the server committed it just before the connection died) a duplicate of
    // itself on the new connection: either way exactly once.
    assert!(
        matches!(stored, Some((_, BatchOutcome::Stored(1) | BatchOutcome::Duplicate))),
        "{stored:?} after {errors} errors"
    );
    assert_eq!(count(&mut admin, "SELECT count(*) FROM batches WHERE seq = 2"), 1);
    assert_eq!(errors, 0, "a broken connection is replaced within the request (the insert is idempotent)");
    // A server that is not there: a clear error, quickly.
    let mut nowhere = db.location.clone();
    nowhere.port = 1;
    let started = Instant::now();
    let err = PgStore::open(&nowhere, keys()).err().expect("no server");
    assert!(matches!(err, StoreError::Database { .. }), "{err}");
    assert!(err.to_string().contains(":1/"), "names the server: {err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn forwarders_on_two_receivers_share_the_queue_exactly() {
    let Some(db) = TestDb::create("forwarders_on_two_receivers_share_the_queue_exactly") else { return };
    pg::set_forwarding(&db.location, true).expect("forwarding on");
    let a = Arc::new(PgStore::open(&db.location, keys()).expect("open a"));
    let b = Arc::new(PgStore::open(&db.location, keys()).expect("open b"));
    for seq in 1..=60 {
        a.append_batch(&batch(&format!("mac-{}", seq % 3), seq, vec![record("cpu", "", seq as f64)]), None)
            .expect("append");
    }
    a.append_report("mac-0", &json!({"n": 1}), false).expect("report");
    // A push that fails advances nothing.
    let failed = a.forward_pending(10, &mut |_| Err("collector down".into()));
    assert!(matches!(failed, Err(StoreError::Forward { .. })), "{failed:?}");
    assert_eq!(count(&mut db.client(), "SELECT count(*) FROM forward_queue"), 61);
    let forwarders: Vec<_> = [a, b]
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                let mut seen: Vec<(String, Stream, String)> = Vec::new();
                loop {
                    let mut push = |units: &[Committed]| {
                        for unit in units {
                            for row in &unit.rows {
                                let id = format!(
                                    "{} {} {}",
                                    row["kind"],
                                    row.get("seq").unwrap_or(&Value::Null),
                                    row.get("index").unwrap_or(&Value::Null)
                                );
                                seen.push((unit.machine_id.clone(), unit.stream, id));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                        Ok(())
                    };
                    if store.forward_pending(8, &mut push).expect("forward") == 0 {
                        return seen;
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<(String, Stream, String)> =
        forwarders.into_iter().flat_map(|f| f.join().expect("forwarder")).collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, all.len(), "nothing forwarded twice");
    assert_eq!(total, 60 * 2 + 1, "every record and commit row, and the report");
    assert_eq!(count(&mut db.client(), "SELECT count(*) FROM forward_queue"), 0);
}

#[test]
fn forward_queue_is_filled_only_while_forwarding_is_on() {
    let Some(db) = TestDb::create("forward_queue_is_filled_only_while_forwarding_is_on") else { return };
    let queued = |db: &TestDb| count(&mut db.client(), "SELECT count(*) FROM forward_queue");
    // Receiver A runs without --forward-otlp and nobody forwards: the outbox stays empty.
    let a = PgStore::open(&db.location, keys()).expect("open a");
    for seq in 1..=200 {
        a.append_batch(&batch("mac-a", seq, vec![record("cpu", "", seq as f64)]), None).expect("append");
    }
    a.append_report("mac-a", &json!({"n": 1}), false).expect("report");
    a.append_widget_logs("mac-a", &[json!({"widget": "cpu", "message": "m"})], false).expect("logs");
    assert_eq!(queued(&db), 0, "no forwarder: nothing queued");
    assert_eq!(count(&mut db.client(), "SELECT count(*) FROM batches"), 200);
    // Receiver B starts with --forward-otlp (it turns forwarding on for the database): A's
    // new rows are queued too, though A was started without the flag and is not restarted.
    let on = pg::set_forwarding(&db.location, true).expect("forwarding on");
    assert_eq!(on, pg::ForwardingSet { was_enabled: false, emptied: 0 });
    let b = PgStore::open(&db.location, keys()).expect("open b");
    for seq in 201..=210 {
        a.append_batch(&batch("mac-a", seq, vec![record("cpu", "", seq as f64)]), None).expect("append a");
        b.append_batch(&batch("mac-b", seq, vec![record("cpu", "", seq as f64)]), None).expect("append b");
    }
    a.append_report("mac-a", &json!({"n": 2}), false).expect("report");
    a.append_widget_logs("mac-a", &[json!({"widget": "cpu", "message": "m"})], false).expect("logs");
    assert_eq!(queued(&db), 22, "both receivers' new batches, the report and the log");
    let mut forwarded = 0;
    let n = a
        .forward_pending(1000, &mut |units| {
            forwarded += units.iter().map(|u| u.rows.len()).sum::<usize>();
            Ok(())
        })
        .expect("forward");
    assert_eq!((n, forwarded), (22 * 2 - 2, 22 * 2 - 2), "each batch's record and commit row, the v1 rows");
    for seq in 211..=215 {
        a.append_batch(&batch("mac-a", seq, vec![record("cpu", "", seq as f64)]), None).expect("append");
    }
    assert_eq!(queued(&db), 5);
    // Off: the queue is emptied and stays empty.
    let off = pg::set_forwarding(&db.location, false).expect("forwarding off");
    assert_eq!(off, pg::ForwardingSet { was_enabled: true, emptied: 5 });
    for seq in 216..=230 {
        b.append_batch(&batch("mac-b", seq, vec![record("cpu", "", seq as f64)]), None).expect("append");
    }
    assert_eq!(queued(&db), 0, "off: emptied, nothing queued");
    assert_eq!(a.forward_pending(10, &mut |_| Ok(())).expect("forward"), 0);
    // Off while inserts run on another thread: no entry survives the switch.
    pg::set_forwarding(&db.location, true).expect("forwarding on again");
    let writer = std::thread::spawn(move || {
        for seq in 1000..1300 {
            b.append_batch(&batch("mac-b", seq, vec![record("cpu", "", seq as f64)]), None).expect("append");
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    pg::set_forwarding(&db.location, false).expect("forwarding off during inserts");
    writer.join().expect("writer");
    assert_eq!(queued(&db), 0, "no entry queued after forwarding was turned off");
}

#[test]
fn urls_with_unknown_parameters_or_tls_are_refused() {
    for (url, expected) in [
        ("postgres://fleet@127.0.0.1:1/db?sslmode=require", "without TLS"),
        ("postgres://fleet@127.0.0.1:1/db?pool_max=0", "pool_max"),
        ("postgres://fleet@127.0.0.1:1/db?application_name=x", "unknown URL parameter"),
    ] {
        let Ok(StoreLocation::Postgres(location)) = StoreLocation::parse(url) else { panic!("{url}") };
        let err = PgStore::open(&location, keys()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(expected), "{url}: {err}");
    }
}

/// A loopback TCP relay between receivers and the database server: `cut` drops every
/// connection and refuses new ones (the database is unreachable), `restore` lets them through.
struct Relay {
    port: u16,
    down: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(upstream: String) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (down2, open2) = (Arc::clone(&down), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if down2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                let pairs = [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())];
                if let Ok(mut open) = open2.lock() {
                    open.extend(client.try_clone().into_iter().chain(server.try_clone()));
                }
                for pair in pairs {
                    if let (Ok(mut from), Ok(mut to)) = pair {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        Relay { port, down, open }
    }

    fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `fleet-agent receive` on `store` (a postgres location with its password): the process and
/// its URL, or its exit status and stderr if it did not start.
fn receiver(
    dir: &std::path::Path,
    store: &PostgresLocation,
    fleet_key: &str,
) -> Result<(crate::support::Proc, String), String> {
    receiver_with(dir, store, fleet_key, &[])
}

/// [`receiver`] with more arguments.
fn receiver_with(
    dir: &std::path::Path,
    store: &PostgresLocation,
    fleet_key: &str,
    extra: &[&str],
) -> Result<(crate::support::Proc, String), String> {
    use crate::support::{agent, s, write_secret, TEST_STORE_KEY_B64};
    use std::io::BufRead;
    let password = store.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
    let mut cmd = agent();
    cmd.args(["receive", "--listen", "127.0.0.1:0", "--store", &store.to_string()])
        .args(["--store-password-file", s(&write_secret(dir, "db-password", &password))])
        .args(["--api-key-file", s(&write_secret(dir, "api-key", "test-api-key"))])
        .args(["--store-key-file", s(&write_secret(dir, "store.key", TEST_STORE_KEY_B64))])
        .args(["--encryption-key-file", s(&write_secret(dir, "fleet.key", fleet_key))])
        .args(extra);
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("receiver spawns");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("stdout");
    match line.trim().strip_prefix("listening on ") {
        Some(url) => Ok((crate::support::Proc { child }, url.to_string())),
        None => {
            let output = child.wait_with_output().expect("exit");
            Err(format!("{} {}", output.status, String::from_utf8_lossy(&output.stderr)))
        }
    }
}

#[test]
fn receiver_processes_share_one_database_and_answer_503_while_it_is_unreachable() {
    use crate::receiver::{post, sealed_batch};
    let Some(db) = TestDb::create("receiver_processes_share_one_database_and_answer_503_while_it_is_unreachable")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = Key32::from_bytes([7u8; 32]);
    let fleet_b64 = fleet.to_base64().to_string();
    let relay = Relay::start(format!("{}:{}", db.location.host, db.location.port));
    let mut via_relay = db.location.clone();
    via_relay.port = relay.port;
    let (_a, url_a) = receiver(dir.path(), &db.location, &fleet_b64).expect("receiver a starts");
    let (_b, url_b) = receiver(dir.path(), &via_relay, &fleet_b64).expect("receiver b starts");
    // The same batch to both at once: stored by one, a duplicate for the other.
    let body = sealed_batch(&fleet, "mac-01", 1, 3);
    let answers: Vec<_> = [url_a.clone(), url_b.clone()]
        .into_iter()
        .map(|url| {
            let body = body.clone();
            std::thread::spawn(move || post(&url, "/api/v2/batches", &body))
        })
        .collect();
    let mut answers: Vec<(u16, Value)> =
        answers.into_iter().map(|a| a.join().expect("post")).map(|a| (a.status, a.json())).collect();
    answers.sort_by_key(|(_, body)| body.to_string());
    assert_eq!(
        answers,
        vec![(200, json!({"status": "ok", "duplicate": true})), (200, json!({"status": "ok", "stored": 3}))],
    );
    // Other records under the same seq, through the other receiver: 409.
    assert_eq!(post(&url_b, "/api/v2/batches", &sealed_batch(&fleet, "mac-01", 1, 2)).status, 409);
    // The database unreachable for b: 503 (nothing acknowledged), while a goes on storing.
    relay.cut();
    let next = sealed_batch(&fleet, "mac-01", 2, 2);
    let answer = post(&url_b, "/api/v2/batches", &next);
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(post(&url_a, "/api/v2/batches", &sealed_batch(&fleet, "mac-02", 1, 1)).status, 200);
    // A receiver cannot start without its database, and says why (without the password).
    let err = receiver(dir.path(), &via_relay, &fleet_b64).err().expect("no start without the database");
    assert!(err.contains(&via_relay.to_string()), "{err}");
    let password = db.location.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
    assert!(password.is_empty() || !err.contains(&password), "{err}");
    // Back: b reconnects by itself; the resend is stored once.
    relay.restore();
    let answer = post(&url_b, "/api/v2/batches", &next);
    assert_eq!((answer.status, answer.json()["stored"].clone()), (200, json!(2)), "{}", answer.body);
    let store = PgStore::open_reader(&db.location, keys()).expect("reader");
    assert_eq!(store.read_records("mac-01").expect("read").len(), 3 + 1 + 2 + 1);
    assert_eq!(store.machine_ids().expect("machines"), vec!["mac-01".to_string(), "mac-02".to_string()]);
}

#[test]
fn rekey_reseals_every_row_in_place_and_refuses_a_store_it_cannot_open() {
    use fleet_receiver::postgres::rekey::rekey;
    let Some(db) = TestDb::create("rekey_reseals_every_row_in_place_and_refuses_a_store_it_cannot_open") else {
        return;
    };
    let (old, new) = (StoreKeys::new(&[key(0x40)]), StoreKeys::new(&[key(0x60)]));
    let store = PgStore::open(&db.location, keys()).expect("open");
    for seq in 1..=3 {
        store
            .append_batch(&batch("mac-01", seq, vec![record("cpu", "r", 1.0), record("mem", "s", 2.0)]), None)
            .expect("b");
    }
    store.append_report("mac-01", &json!({"n": 1}), true).expect("report");
    let logs = [json!({"widget_type": "wifi", "message": "a"}), json!({"widget_type": "ping", "message": "b"})];
    store.append_widget_logs("mac-02", &logs, true).expect("logs");
    let before: Vec<_> =
        ["mac-01", "mac-02"].iter().flat_map(|m| Stream::ALL.map(|s| store.read_stream(m, s).expect("read"))).collect();
    drop(store);
    let mut client = db.client();
    // A row that does not open: nothing is changed.
    let received: String = client.query_one("SELECT received_at FROM reports", &[]).expect("report").get(0);
    client.batch_execute("UPDATE reports SET received_at = 'x'").expect("tamper");
    let err = rekey(&db.location, &old, &new, false).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("reports row"), "{err}");
    let old_kid = old.current_kid().unwrap_or_default().to_string();
    for table in ["batches", "records", "reports", "widget_logs"] {
        let left =
            count(&mut client, &format!("SELECT count(*) FROM {table} WHERE store_kid IS DISTINCT FROM '{old_kid}'"));
        assert_eq!(left, 0, "{table}: nothing re-sealed");
    }
    assert_eq!(count(&mut client, "SELECT count(*) FROM store_keys"), 1, "the new key was not registered");
    client.execute("UPDATE reports SET received_at = $1", &[&received]).expect("untamper");
    let done = rekey(&db.location, &old, &new, false).expect("rekey");
    assert_eq!((done.rows, done.already), (3 * 3 + 1 + 2, 0));
    let new_kid = new.current_kid().unwrap_or_default().to_string();
    for table in ["batches", "records", "reports", "widget_logs"] {
        let left =
            count(&mut client, &format!("SELECT count(*) FROM {table} WHERE store_kid IS DISTINCT FROM '{new_kid}'"));
        assert_eq!(left, 0, "{table}");
    }
    let kids: Vec<String> =
        client.query("SELECT store_kid FROM store_keys", &[]).expect("kids").iter().map(|r| r.get(0)).collect();
    assert_eq!(kids, vec![new_kid]);
    // The new key alone reads every row as it was.
    let reader = PgStore::open_reader(&db.location, StoreKeys::new(&[key(0x60)])).expect("reader");
    reader.check_keys().expect("only the new key is needed");
    let after: Vec<_> = ["mac-01", "mac-02"]
        .iter()
        .flat_map(|m| Stream::ALL.map(|s| reader.read_stream(m, s).expect("read")))
        .collect();
    assert_eq!(after, before);
    assert!(matches!(PgStore::open(&db.location, old), Err(StoreError::Row { .. })), "the old key alone is refused");
    // Again: nothing to do.
    let again = rekey(&db.location, &StoreKeys::new(&[key(0x40)]), &new, false).expect("again");
    assert_eq!((again.rows, again.already), (0, 12));
}

#[test]
fn rekey_from_plaintext_seals_a_plaintext_store() {
    use fleet_receiver::postgres::rekey::rekey;
    let Some(db) = TestDb::create("rekey_from_plaintext_seals_a_plaintext_store") else { return };
    let store = PgStore::open(&db.location, StoreKeys::plaintext()).expect("open");
    store.append_batch(&batch("m", 1, vec![record("cpu", "MARKER-plain", 1.0)]), None).expect("b");
    drop(store);
    let new = StoreKeys::new(&[key(0x60)]);
    let err = rekey(&db.location, &StoreKeys::new(&[key(0x40)]), &new, false).err().map(|e| e.to_string());
    assert!(err.unwrap_or_default().contains("plaintext row"), "plaintext rows need --from-plaintext");
    rekey(&db.location, &StoreKeys::plaintext(), &new, true).expect("rekey");
    assert!(!dump(&db).contains("MARKER-plain"));
    let reader = PgStore::open_reader(&db.location, StoreKeys::new(&[key(0x60)])).expect("reader");
    reader.check_keys().expect("keys");
    assert_eq!(reader.read_records("m").expect("read")[0]["record"]["message"], "MARKER-plain");
}

#[test]
fn a_receiver_with_forward_otlp_turns_queueing_on_for_every_receiver_and_migrate_turns_it_off() {
    use crate::receiver::{post, sealed_batch};
    use crate::support::{agent, s, write_secret};
    let Some(db) =
        TestDb::create("a_receiver_with_forward_otlp_turns_queueing_on_for_every_receiver_and_migrate_turns_it_off")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = Key32::from_bytes([7u8; 32]);
    let fleet_b64 = fleet.to_base64().to_string();
    let queued = || count(&mut db.client(), "SELECT count(*) FROM forward_queue");
    let (_a, url_a) = receiver(dir.path(), &db.location, &fleet_b64).expect("receiver a starts");
    for seq in 1..=5 {
        assert_eq!(post(&url_a, "/api/v2/batches", &sealed_batch(&fleet, "mac-01", seq, 2)).status, 200);
    }
    assert_eq!(queued(), 0, "nobody forwards: nothing queued");
    // b forwards to a collector that is down (nothing listens on port 1): its forwarder keeps
    // failing, so what is queued stays queued.
    let (_b, _url_b) = receiver_with(dir.path(), &db.location, &fleet_b64, &["--forward-otlp", "http://127.0.0.1:1"])
        .expect("receiver b starts");
    for seq in 6..=8 {
        assert_eq!(post(&url_a, "/api/v2/batches", &sealed_batch(&fleet, "mac-01", seq, 2)).status, 200);
    }
    assert_eq!(queued(), 3, "a (without --forward-otlp) queues its new batches once b turned forwarding on");
    let password = db.location.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
    let output = agent()
        .args(["receive", "migrate", "--store", &db.location.to_string(), "--forwarding", "off"])
        .args(["--store-password-file", s(&write_secret(dir.path(), "db-password", &password))])
        .output()
        .expect("migrate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("forwarding off (was on): 3 queued entries removed"), "{stdout}");
    assert_eq!(queued(), 0, "emptied");
    assert_eq!(post(&url_a, "/api/v2/batches", &sealed_batch(&fleet, "mac-01", 9, 2)).status, 200);
    assert_eq!(queued(), 0, "off: nothing queued");
    let bad = agent()
        .args(["receive", "migrate", "--store", &db.location.to_string(), "--forwarding", "maybe"])
        .args(["--store-password-file", s(&write_secret(dir.path(), "db-password", &password))])
        .output()
        .expect("migrate runs");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither `on` nor `off`"));
}
