//! The PostgreSQL storage backend (cargo feature `postgres`): `receive --store
//! postgres://USER@HOST:PORT/DBNAME`, the password from `--store-password-file` or
//! `FLEET_STORE_PASSWORD`. Schema, row format, AAD and test vectors:
//! `docs/receiver-store-postgres.md`.
//!
//! - **Stateless receivers.** A [`PgStore`] keeps nothing but a bounded pool of connections
//!   ([`pool`]): exactly-once is the database's `UNIQUE (machine_id, seq)`, so any number of
//!   receivers, on any hosts, may serve one database at once, and start-up reads no rows
//!   (it migrates the schema, reads the few rows of `store_keys`, and is done).
//! - **One transaction per batch.** A v2 batch is ONE `INSERT … ON CONFLICT DO NOTHING`
//!   statement whose data-modifying CTEs insert the batch row, its record rows and its
//!   `forward_queue` entry: committed together (and durably: `synchronous_commit`) before the
//!   receiver answers 200, or not at all. When the `(machine_id, seq)` exists (also when
//!   another receiver commits it at the same moment: the insert waits for that transaction,
//!   then does nothing) the stored digest decides: the same is [`BatchOutcome::Duplicate`],
//!   another [`BatchOutcome::Conflict`] (409).
//! - **Sealed at rest** as in the file store ([`rows`]): index columns in clear, the rest
//!   AES-256-GCM under the store key, bound to the table and the row.
//! - **Outages** are [`StoreError::Database`] (the receiver answers 503; the agent keeps its
//!   records and retries); a broken connection is dropped and the next request reconnects.
//! - **Forwarding** (`--forward-otlp`): an outbox, `forward_queue`, filled in the same
//!   statement as the rows while forwarding is on for the database ([`set_forwarding`]; off,
//!   nothing is queued, so the outbox is bounded when nobody forwards); [`StorageRead::forward_pending`] takes its oldest entries with
//!   `FOR UPDATE SKIP LOCKED` (receivers share the work), hands the rows to `push` and
//!   deletes the entries in the same transaction when `push` succeeded.
//! - **Re-keying** ([`rekey`]) re-seals rows in place, chunk by chunk, beside running receivers.

pub mod pool;
pub mod rekey;
pub mod rows;
pub mod schema;

use std::collections::HashMap;

use fleet_wire::record::{records_digest, BatchBody};
use fleet_wire::time::Timestamp;
use postgres::config::SslMode;
use postgres::{Config, Row};
use serde_json::{json, Map, Value};

use self::pool::{Conn, Pool};
use self::rows::{seq_column, seq_value, text_column, text_value, Sealed, Table};
use crate::seal::{self, RowError, StoreKeys};
use crate::storage::{
    check_machine_id, BatchOutcome, Committed, PostgresLocation, ReadStats, RowProblem, Storage, StorageRead,
    StoreError, Stream,
};

/// Connections a [`PgStore`] opens at most, unless the URL says `?pool_max=N`.
pub const DEFAULT_POOL_MAX: usize = 8;
/// Most connections `pool_max` may ask for.
pub const MAX_POOL_MAX: usize = 64;
/// Rows fetched per round trip when reading.
const FETCH: i32 = 512;

/// A PostgreSQL store: a pool of connections and the store keys. See the module docs.
pub struct PgStore {
    pool: Pool,
    keys: StoreKeys,
    describe: String,
}

/// Open `location` for the running receiver (migrating its schema first).
pub fn open_storage(location: &PostgresLocation, keys: StoreKeys) -> Result<Box<dyn Storage>, StoreError> {
    Ok(Box::new(PgStore::open(location, keys)?))
}

/// Open `location` for reading (`receive ls|show|verify`): never migrates or writes.
pub fn open_reader(location: &PostgresLocation, keys: StoreKeys) -> Result<Box<dyn StorageRead>, StoreError> {
    Ok(Box::new(PgStore::open_reader(location, keys)?))
}

/// Bring the schema of `location` to this build's version (`fleet-agent receive migrate`):
/// the version found and the version left. Idempotent; safe beside running receivers.
pub fn migrate(location: &PostgresLocation) -> Result<schema::Migrated, StoreError> {
    let (config, _) = config(location)?;
    let pool = Pool::new(config, 1);
    let describe = location.to_string();
    let mut conn = pool.get().map_err(|e| pool_error(&describe, "connecting to", e))?;
    schema::migrate(conn.client()).map_err(|e| schema_error(&describe, e))
}

/// What [`set_forwarding`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardingSet {
    /// Whether forwarding was on before.
    pub was_enabled: bool,
    /// `forward_queue` entries removed (turning it off empties the queue; 0 when turning on).
    pub emptied: u64,
}

/// Turn OTLP forwarding on or off for the database of `location` (migrating its schema
/// first): while it is on, every insert also queues its rows in `forward_queue` in the same
/// statement, whichever receiver makes it; while it is off nothing is queued, so the outbox
/// stays empty (docs/receiver-store-postgres.md, "Forwarding"). A receiver started with
/// `--forward-otlp` turns it on before it accepts requests; `receive migrate --forwarding
/// off` turns it off and empties the queue.
///
/// Turning it off takes `forward_queue` in ACCESS EXCLUSIVE mode first: inserts in flight
/// (which hold it in ROW EXCLUSIVE mode until they commit) finish before the queue is
/// emptied, and inserts that start meanwhile wait, then see forwarding off; so no entry
/// survives the switch.
pub fn set_forwarding(location: &PostgresLocation, enabled: bool) -> Result<ForwardingSet, StoreError> {
    let describe = location.to_string();
    let mut client = connect(location)?;
    schema::migrate(&mut client).map_err(|e| schema_error(&describe, e))?;
    let what = if enabled { "turning forwarding on in" } else { "turning forwarding off in" };
    let failed = |e: postgres::Error| database(&describe, what, error_text(&e));
    let mut tx = client.transaction().map_err(failed)?;
    let mut emptied = 0;
    if !enabled {
        tx.batch_execute("LOCK TABLE forward_queue IN ACCESS EXCLUSIVE MODE").map_err(failed)?;
        let queued: i64 = tx.query_one("SELECT count(*) FROM forward_queue", &[]).map_err(failed)?.get(0);
        emptied = u64::try_from(queued).unwrap_or(0);
    }
    let was_enabled: bool = tx.query_one("SELECT enabled FROM forwarding FOR UPDATE", &[]).map_err(failed)?.get(0);
    tx.execute("UPDATE forwarding SET enabled = $1, changed_at = now()", &[&enabled]).map_err(failed)?;
    if !enabled {
        tx.batch_execute("TRUNCATE forward_queue").map_err(failed)?;
    }
    tx.commit().map_err(failed)?;
    Ok(ForwardingSet { was_enabled, emptied })
}

/// The driver, for tools and tests that need raw SQL beside a store (creating scratch
/// databases, tampering with rows to prove they are refused).
#[doc(hidden)]
pub use ::postgres as driver;

/// One connection to `location`, outside any pool (tools and tests; the receiver uses a
/// [`PgStore`]).
pub fn connect(location: &PostgresLocation) -> Result<postgres::Client, StoreError> {
    let (config, _) = config(location)?;
    let describe = location.to_string();
    Pool::new(config, 1).take().map_err(|e| pool_error(&describe, "connecting to", e))
}

/// The message of a PostgreSQL error: the server's (severity, message, SQLSTATE) or the
/// driver's with its causes. Never holds a password (the driver does not echo it).
pub fn error_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// True when `e` means the connection is gone (closed, the server shutting down or terminating
/// it, a connection-class SQLSTATE): it must not go back to the pool, and idempotent work may be
/// tried again on a new one.
fn broken(conn: &mut Conn<'_>, e: &postgres::Error) -> bool {
    let code = e.code().map(|c| c.code()).unwrap_or("");
    e.is_closed() || conn.client().is_closed() || code.starts_with("08") || code.starts_with("57P")
}

fn database(describe: &str, what: &str, detail: String) -> StoreError {
    StoreError::Database { what: format!("{what} {describe}"), detail }
}

fn pool_error(describe: &str, what: &str, e: pool::PoolError) -> StoreError {
    database(describe, what, e.to_string())
}

fn schema_error(describe: &str, e: schema::SchemaError) -> StoreError {
    match e {
        schema::SchemaError::Query(e) => database(describe, "migrating the schema of", error_text(&e)),
        schema::SchemaError::TooNew { found } => StoreError::Unsupported {
            store: describe.to_string(),
            why: format!(
                "the database's schema is version {found}, newer than this fleet-agent's ({}): upgrade fleet-agent",
                schema::LATEST
            ),
        },
        schema::SchemaError::NotMigrated { found } => StoreError::Unsupported {
            store: describe.to_string(),
            why: format!(
                "the database's schema is version {found}, this fleet-agent reads version {}: run `fleet-agent \
                 receive migrate --store URL` (or start a receiver, which migrates)",
                schema::LATEST
            ),
        },
    }
}

/// The driver's configuration for `location`, and the pool size. Query parameters: `sslmode`
/// (`disable` or `prefer`: this build has no TLS to PostgreSQL) and `pool_max` (1..=64).
fn config(location: &PostgresLocation) -> Result<(Config, usize), StoreError> {
    let unsupported = |why: String| StoreError::Unsupported { store: location.to_string(), why };
    let mut config = Config::new();
    config.user(&location.user).dbname(&location.dbname).port(location.port).ssl_mode(SslMode::Disable);
    if location.is_socket() {
        config.host_path(&location.host);
    } else {
        config.host(&location.host);
    }
    if let Some(password) = &location.password {
        config.password(password.expose());
    }
    let mut pool_max = DEFAULT_POOL_MAX;
    for (key, value) in &location.params {
        match (key.as_str(), value.as_str()) {
            ("sslmode", "disable" | "prefer") => {}
            ("sslmode", other) => {
                return Err(unsupported(format!(
                    "sslmode={other}: this fleet-agent speaks to PostgreSQL without TLS; connect over a Unix socket \
                     (postgres://USER@%2Frun%2Fpostgresql/DB), a private network or a tunnel, with sslmode=disable"
                )))
            }
            ("pool_max", text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_POOL_MAX).contains(&n) => pool_max = n,
                _ => return Err(unsupported(format!("pool_max={text}: give a number from 1 to {MAX_POOL_MAX}"))),
            },
            (other, _) => {
                return Err(unsupported(format!("unknown URL parameter `{other}` (known: sslmode, pool_max)")));
            }
        }
    }
    Ok((config, pool_max))
}

fn now() -> String {
    Timestamp::now().to_rfc3339()
}

/// The v2 batch: its row, its records and its forward_queue entry in one statement (one
/// transaction). Returns the new batch id, or no row when `(machine_id, seq)` exists.
const INSERT_BATCH: &str = "
WITH b AS (
    INSERT INTO batches (machine_id, seq, records, received_at, digest, store_kid, nonce, payload)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT ON CONSTRAINT batches_machine_seq DO NOTHING
    RETURNING id
), r AS (
    INSERT INTO records (batch_id, idx, widget, record_kind, store_kid, nonce, payload)
    SELECT b.id, u.idx, u.widget, u.record_kind, u.store_kid, u.nonce, u.payload
    FROM b CROSS JOIN unnest($9::integer[], $10::text[], $11::text[], $12::text[], $13::bytea[], $14::bytea[])
        AS u (idx, widget, record_kind, store_kid, nonce, payload)
), q AS (
    INSERT INTO forward_queue (batch_id) SELECT id FROM b WHERE EXISTS (SELECT 1 FROM forwarding WHERE enabled)
)
SELECT id FROM b";

/// The digest of a stored batch.
const STORED_DIGEST: &str = "SELECT digest FROM batches WHERE machine_id = $1 AND seq = $2";

/// The committed rows of batches (each batch's records, then the batch), in `ORDER BY`.
const BATCH_ROWS: &str = "
SELECT b.id, b.machine_id, b.seq, b.records, b.received_at, b.digest, b.store_kid, b.nonce, b.payload,
       r.idx, r.widget, r.record_kind, r.store_kid, r.nonce, r.payload
FROM batches b LEFT JOIN records r ON r.batch_id = b.id";

/// Columns of [`BATCH_ROWS`] (do not reorder without the query).
mod col {
    pub const ID: usize = 0;
    pub const MACHINE: usize = 1;
    pub const SEQ: usize = 2;
    pub const RECORDS: usize = 3;
    pub const RECEIVED: usize = 4;
    pub const DIGEST: usize = 5;
    pub const KID: usize = 6;
    pub const NONCE: usize = 7;
    pub const PAYLOAD: usize = 8;
    pub const IDX: usize = 9;
    pub const WIDGET: usize = 10;
    pub const RECORD_KIND: usize = 11;
    pub const R_KID: usize = 12;
    pub const R_NONCE: usize = 13;
    pub const R_PAYLOAD: usize = 14;
}

/// What reading rows produced: an opened row or a problem, in order.
enum Item {
    Row(Map<String, Value>),
    Problem(RowProblem),
}

/// The batch columns of a [`BATCH_ROWS`] row.
struct BatchHead {
    id: i64,
    machine_id: String,
    seq: i64,
    records: i32,
    received_at: String,
    digest: String,
    sealed: Sealed,
}

impl BatchHead {
    fn of(row: &Row) -> BatchHead {
        BatchHead {
            id: row.get(col::ID),
            machine_id: row.get(col::MACHINE),
            seq: row.get(col::SEQ),
            records: row.get(col::RECORDS),
            received_at: row.get(col::RECEIVED),
            digest: row.get(col::DIGEST),
            sealed: Sealed { store_kid: row.get(col::KID), nonce: row.get(col::NONCE), payload: row.get(col::PAYLOAD) },
        }
    }

    /// The clear fields every row of this batch has (`kind` aside).
    fn clear(&self, kind: Table) -> Map<String, Value> {
        let mut clear = Map::new();
        clear.insert("received_at".into(), Value::from(self.received_at.as_str()));
        clear.insert("machine_id".into(), Value::from(self.machine_id.as_str()));
        clear.insert("kind".into(), Value::from(kind.kind()));
        clear.insert("seq".into(), Value::from(seq_value(self.seq)));
        clear
    }
}

/// Turns the rows of [`BATCH_ROWS`] (ordered by batch, then index) into row objects: each
/// batch's records, then its commit row, checking that the batch holds all its records and
/// that the clear digest is the sealed one. `out` gets the batch id, the machine and the
/// item, and returns false to stop.
struct BatchAssembler<'k> {
    keys: &'k StoreKeys,
    /// The batch being read and how many of its record rows were seen.
    current: Option<(BatchHead, u64)>,
}

type Out<'a> = dyn FnMut(i64, &str, Item) -> bool + 'a;

impl<'k> BatchAssembler<'k> {
    fn new(keys: &'k StoreKeys) -> Self {
        BatchAssembler { keys, current: None }
    }

    /// Feed one result row; false: `out` asked to stop.
    fn feed(&mut self, row: Row, out: &mut Out<'_>) -> bool {
        let id: i64 = row.get(col::ID);
        if self.current.as_ref().is_some_and(|(head, _)| head.id != id) && !self.finish(out) {
            return false;
        }
        let (head, seen) = self.current.get_or_insert_with(|| (BatchHead::of(&row), 0));
        let Some(idx) = row.get::<_, Option<i32>>(col::IDX) else { return true };
        *seen += 1;
        let mut clear = head.clear(Table::Records);
        clear.insert("index".into(), Value::from(idx));
        clear.insert("widget".into(), text_value(row.get(col::WIDGET)));
        clear.insert("record_kind".into(), text_value(row.get(col::RECORD_KIND)));
        let sealed =
            Sealed { store_kid: row.get(col::R_KID), nonce: row.get(col::R_NONCE), payload: row.get(col::R_PAYLOAD) };
        let item = match rows::open(self.keys, Table::Records, 0, clear, sealed) {
            Ok(opened) => Item::Row(opened),
            Err(problem) => {
                Item::Problem(RowProblem { location: format!("records row (batch {id}, index {idx})"), problem })
            }
        };
        let machine_id = head.machine_id.clone();
        out(id, &machine_id, item)
    }

    /// Emit the commit row of the batch being read (if any); false: `out` asked to stop.
    fn finish(&mut self, out: &mut Out<'_>) -> bool {
        let Some((head, seen)) = self.current.take() else { return true };
        let location = format!("batches row {}", head.id);
        let mut clear = head.clear(Table::Batches);
        clear.insert("records".into(), Value::from(head.records));
        let item = match rows::open(self.keys, Table::Batches, 0, clear, head.sealed) {
            Ok(opened) if opened.get("digest").and_then(Value::as_str) != Some(head.digest.as_str()) => {
                Item::Problem(RowProblem { location, problem: RowError::Tampered })
            }
            Ok(_) if i64::try_from(seen).ok() != Some(i64::from(head.records)) => Item::Problem(RowProblem {
                location,
                problem: RowError::Malformed(format!("the batch has {seen} of its {} record rows", head.records)),
            }),
            Ok(opened) => Item::Row(opened),
            Err(problem) => Item::Problem(RowProblem { location, problem }),
        };
        out(head.id, &head.machine_id, item)
    }
}

impl PgStore {
    /// Open for the running receiver: connect, migrate the schema (idempotent, serialized by
    /// an advisory lock), check that every stored key id is one of `keys`, and register the
    /// sealing key's id. Reads no rows.
    pub fn open(location: &PostgresLocation, keys: StoreKeys) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(location, keys)?;
        {
            let mut conn = store.conn("connecting to")?;
            schema::migrate(conn.client()).map_err(|e| schema_error(&store.describe, e))?;
        }
        store.check_keys()?;
        let kid = store.keys.current_kid().unwrap_or("").to_string();
        store.with_client("registering the store key id in", |conn| {
            conn.client()
                .execute("INSERT INTO store_keys (store_kid) VALUES ($1) ON CONFLICT DO NOTHING", &[&kid])
                .map(drop)
        })?;
        Ok(store)
    }

    /// Open for reading: connect and check the schema version (never migrates or writes).
    pub fn open_reader(location: &PostgresLocation, keys: StoreKeys) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(location, keys)?;
        {
            let mut conn = store.conn("connecting to")?;
            schema::check(conn.client()).map_err(|e| schema_error(&store.describe, e))?;
        }
        Ok(store)
    }

    fn connect(location: &PostgresLocation, keys: StoreKeys) -> Result<PgStore, StoreError> {
        let (config, pool_max) = config(location)?;
        Ok(PgStore { pool: Pool::new(config, pool_max), keys, describe: location.to_string() })
    }

    fn conn(&self, what: &str) -> Result<Conn<'_>, StoreError> {
        self.pool.get().map_err(|e| pool_error(&self.describe, what, e))
    }

    /// Run `work` on a pooled connection; a failure becomes [`StoreError::Database`] saying
    /// `what` was being done.
    fn with_client<T>(
        &self,
        what: &str,
        work: impl FnOnce(&mut Conn<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn(what)?;
        work(&mut conn).map_err(|e| {
            if broken(&mut conn, &e) {
                conn.discard();
            }
            database(&self.describe, what, error_text(&e))
        })
    }

    /// [`Self::with_client`] for idempotent work (reads of a few rows, the batch insert, whose
    /// unique key makes a repeat a duplicate): when the connection turns out to be broken (the
    /// server restarted or failed over since it was last used), once more on a new one.
    fn with_client_retrying<T>(
        &self,
        what: &str,
        mut work: impl FnMut(&mut Conn<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        {
            let mut conn = self.conn(what)?;
            match work(&mut conn) {
                Ok(value) => return Ok(value),
                Err(e) if !broken(&mut conn, &e) => return Err(database(&self.describe, what, error_text(&e))),
                Err(e) => {
                    conn.discard();
                    log::info!("{what} {}: {} (connecting again)", self.describe, error_text(&e));
                }
            }
        }
        self.with_client(what, work)
    }

    fn nonces(&self, n: usize) -> Result<Vec<[u8; 12]>, StoreError> {
        if self.keys.is_plaintext() {
            return Ok(vec![[0u8; 12]; n]);
        }
        seal::nonces(n).map_err(StoreError::Random)
    }

    /// Read rows with a portal, [`FETCH`] at a time, in a read-only transaction (one
    /// snapshot): memory stays bounded whatever the table's size. `each` returns false to stop.
    fn stream(
        &self,
        what: &str,
        query: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        mut each: impl FnMut(Row) -> bool,
    ) -> Result<(), StoreError> {
        self.with_client(what, |conn| {
            let mut tx = conn.client().build_transaction().read_only(true).start()?;
            let portal = tx.bind(query, params)?;
            'fetch: loop {
                let rows = tx.query_portal(&portal, FETCH)?;
                if rows.is_empty() {
                    break;
                }
                for row in rows {
                    if !each(row) {
                        break 'fetch;
                    }
                }
            }
            tx.commit()
        })
    }

    fn visit_v1(
        &self,
        machine_id: &str,
        table: Table,
        visit: &mut dyn FnMut(Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Result<ReadStats, StoreError> {
        let widget = if table == Table::WidgetLogs { "widget" } else { "NULL::text" };
        let query = format!(
            "SELECT id, received_at, {widget}, store_kid, nonce, payload FROM {} WHERE machine_id = $1 ORDER BY id",
            table.name()
        );
        let mut stats = ReadStats::default();
        let what = format!("reading {} of {machine_id:?} from", table.name());
        self.stream(&what, &query, &[&machine_id], |row| {
            let id: i64 = row.get(0);
            let mut clear = Map::new();
            clear.insert("received_at".into(), Value::from(row.get::<_, String>(1)));
            clear.insert("machine_id".into(), Value::from(machine_id));
            clear.insert("kind".into(), Value::from(table.kind()));
            if table == Table::WidgetLogs {
                clear.insert("widget".into(), text_value(row.get(2)));
            }
            let sealed = Sealed { store_kid: row.get(3), nonce: row.get(4), payload: row.get(5) };
            match rows::open(&self.keys, table, seq_value(id), clear, sealed) {
                Ok(opened) => {
                    stats.good += 1;
                    visit(opened)
                }
                Err(e) => {
                    stats.bad += 1;
                    problem(RowProblem { location: format!("{} row {id}", table.name()), problem: e });
                    true
                }
            }
        })?;
        Ok(stats)
    }

    fn visit_records(
        &self,
        machine_id: &str,
        visit: &mut dyn FnMut(Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Result<ReadStats, StoreError> {
        let query = format!("{BATCH_ROWS} WHERE b.machine_id = $1 ORDER BY b.seq, r.idx");
        let mut stats = ReadStats::default();
        let mut assembler = BatchAssembler::new(&self.keys);
        let mut out = |_: i64, _: &str, item: Item| match item {
            Item::Row(row) => {
                stats.good += 1;
                visit(row)
            }
            Item::Problem(p) => {
                stats.bad += 1;
                problem(p);
                true
            }
        };
        let mut go_on = true;
        self.stream(&format!("reading the records of {machine_id:?} from"), &query, &[&machine_id], |row| {
            go_on = assembler.feed(row, &mut out);
            go_on
        })?;
        if go_on {
            assembler.finish(&mut out);
        }
        Ok(stats)
    }

    /// Rows of the queued entries `picked` (queue order), grouped into units of one machine
    /// and stream. Rows that do not open are logged and left out (they never will).
    fn load_units(
        &self,
        tx: &mut postgres::Transaction<'_>,
        picked: &[Picked],
    ) -> Result<Vec<Committed>, postgres::Error> {
        let mut loaded: HashMap<(Table, i64), Loaded> = HashMap::new();
        let skip = |location: String, problem: RowError| {
            log::warn!("forwarding {}: {location} does not open ({problem}): not forwarded", self.describe);
        };
        let batch_ids: Vec<i64> = picked.iter().filter(|p| p.table == Table::Batches).map(|p| p.id).collect();
        if !batch_ids.is_empty() {
            let mut assembler = BatchAssembler::new(&self.keys);
            let mut out = |id: i64, machine_id: &str, item: Item| {
                let entry = loaded.entry((Table::Batches, id)).or_insert_with(|| (machine_id.to_string(), Vec::new()));
                match item {
                    Item::Row(row) => entry.1.push(row),
                    Item::Problem(p) => skip(p.location, p.problem),
                }
                true
            };
            let query = format!("{BATCH_ROWS} WHERE b.id = ANY($1) ORDER BY b.id, r.idx");
            for row in tx.query(&query, &[&batch_ids])? {
                assembler.feed(row, &mut out);
            }
            assembler.finish(&mut out);
        }
        for table in [Table::Reports, Table::WidgetLogs] {
            let ids: Vec<i64> = picked.iter().filter(|p| p.table == table).map(|p| p.id).collect();
            if ids.is_empty() {
                continue;
            }
            let widget = if table == Table::WidgetLogs { "widget" } else { "NULL::text" };
            let query = format!(
                "SELECT id, machine_id, received_at, {widget}, store_kid, nonce, payload FROM {} WHERE id = ANY($1)",
                table.name()
            );
            for row in tx.query(&query, &[&ids])? {
                let id: i64 = row.get(0);
                let machine_id: String = row.get(1);
                let mut clear = Map::new();
                clear.insert("received_at".into(), Value::from(row.get::<_, String>(2)));
                clear.insert("machine_id".into(), Value::from(machine_id.clone()));
                clear.insert("kind".into(), Value::from(table.kind()));
                if table == Table::WidgetLogs {
                    clear.insert("widget".into(), text_value(row.get(3)));
                }
                let sealed = Sealed { store_kid: row.get(4), nonce: row.get(5), payload: row.get(6) };
                match rows::open(&self.keys, table, seq_value(id), clear, sealed) {
                    Ok(opened) => loaded.insert((table, id), (machine_id, vec![opened])),
                    Err(problem) => {
                        skip(format!("{} row {id}", table.name()), problem);
                        None
                    }
                };
            }
        }
        let mut units: Vec<Committed> = Vec::new();
        for p in picked {
            let Some((machine_id, rows)) = loaded.remove(&(p.table, p.id)) else { continue };
            let stream = match p.table {
                Table::Reports => Stream::Reports,
                Table::WidgetLogs => Stream::WidgetLogs,
                Table::Batches | Table::Records => Stream::Records,
            };
            match units.last_mut() {
                Some(last) if last.machine_id == machine_id && last.stream == stream => last.rows.extend(rows),
                _ => units.push(Committed { machine_id, stream, rows }),
            }
        }
        units.retain(|u| !u.rows.is_empty());
        Ok(units)
    }
}

/// The machine and the opened rows of a queued entry.
type Loaded = (String, Vec<Map<String, Value>>);

/// A `forward_queue` entry taken by [`StorageRead::forward_pending`].
struct Picked {
    queue_id: i64,
    table: Table,
    id: i64,
}

impl StorageRead for PgStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn keys(&self) -> &StoreKeys {
        &self.keys
    }

    fn machine_ids(&self) -> Result<Vec<String>, StoreError> {
        // A skip scan over each table's (machine_id, …) index: one index probe per machine,
        // however many rows each has.
        let skip = |table: &str| {
            format!(
                "{table}_ids (id) AS ((SELECT machine_id FROM {table} ORDER BY machine_id LIMIT 1) UNION ALL \
                 SELECT (SELECT machine_id FROM {table} WHERE machine_id > {table}_ids.id ORDER BY machine_id LIMIT 1) \
                 FROM {table}_ids WHERE {table}_ids.id IS NOT NULL)"
            )
        };
        let query = format!(
            "WITH RECURSIVE {}, {}, {} SELECT id FROM batches_ids WHERE id IS NOT NULL UNION \
             SELECT id FROM reports_ids WHERE id IS NOT NULL UNION SELECT id FROM widget_logs_ids WHERE id IS NOT NULL",
            skip("batches"),
            skip("reports"),
            skip("widget_logs")
        );
        let mut ids: Vec<String> = self
            .with_client_retrying("listing the machines of", |conn| conn.client().query(&query, &[]))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn visit(
        &self,
        machine_id: &str,
        stream: Stream,
        visit: &mut dyn FnMut(Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Result<ReadStats, StoreError> {
        match stream {
            Stream::Reports => self.visit_v1(machine_id, Table::Reports, visit, problem),
            Stream::WidgetLogs => self.visit_v1(machine_id, Table::WidgetLogs, visit, problem),
            Stream::Records => self.visit_records(machine_id, visit, problem),
        }
    }

    fn machine_bytes(&self, machine_id: &str) -> Result<u64, StoreError> {
        let query = "SELECT
            (SELECT coalesce(sum(pg_column_size(b.*)), 0)::bigint FROM batches b WHERE b.machine_id = $1)
          + (SELECT coalesce(sum(pg_column_size(r.*)), 0)::bigint FROM records r JOIN batches b ON b.id = r.batch_id
             WHERE b.machine_id = $1)
          + (SELECT coalesce(sum(pg_column_size(t.*)), 0)::bigint FROM reports t WHERE t.machine_id = $1)
          + (SELECT coalesce(sum(pg_column_size(t.*)), 0)::bigint FROM widget_logs t WHERE t.machine_id = $1)";
        let bytes: i64 = self
            .with_client_retrying("measuring a machine's rows in", |conn| {
                conn.client().query_one(query, &[&machine_id])
            })?
            .get(0);
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    fn check_keys(&self) -> Result<(), StoreError> {
        // `store_keys` holds every key id rows were ever sealed with ('' for plaintext rows):
        // each writer registers its sealing key at start, before it writes a row.
        let kids: Vec<String> = self
            .with_client_retrying("reading the store key ids of", |conn| {
                conn.client().query("SELECT store_kid FROM store_keys ORDER BY first_used", &[])
            })?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for kid in kids {
            let problem = match (kid.as_str(), self.keys.is_plaintext()) {
                ("", true) => continue,
                ("", false) => RowError::Plaintext,
                (kid, true) => RowError::NeedKey(kid.to_string()),
                (kid, false) if self.keys.has(kid) => continue,
                (kid, false) => RowError::UnknownKey(kid.to_string()),
            };
            return Err(StoreError::Row {
                location: format!("{} (table store_keys: rows were written under this key)", self.describe),
                problem,
                given: self.keys.kids(),
            });
        }
        Ok(())
    }

    fn forward_pending(
        &self,
        max_rows: usize,
        push: &mut dyn FnMut(&[Committed]) -> Result<(), String>,
    ) -> Result<usize, StoreError> {
        let budget = max_rows.max(1);
        let limit = i64::try_from(budget).unwrap_or(i64::MAX);
        let mut conn = self.conn("forwarding from")?;
        let failed = |e: postgres::Error| database(&self.describe, "forwarding from", error_text(&e));
        let mut tx = conn.client().transaction().map_err(failed)?;
        let queued = tx
            .query(
                "SELECT q.id, q.batch_id, q.report_id, q.widget_log_id, coalesce(b.records, 0)
                 FROM forward_queue q LEFT JOIN batches b ON b.id = q.batch_id
                 ORDER BY q.id LIMIT $1 FOR UPDATE OF q SKIP LOCKED",
                &[&limit],
            )
            .map_err(failed)?;
        let mut picked = Vec::new();
        let mut rows = 0usize;
        for row in queued {
            if rows >= budget {
                break;
            }
            let (batch, report, log): (Option<i64>, Option<i64>, Option<i64>) = (row.get(1), row.get(2), row.get(3));
            let (table, id) = match (batch, report, log) {
                (Some(id), _, _) => (Table::Batches, id),
                (None, Some(id), _) => (Table::Reports, id),
                (None, None, Some(id)) => (Table::WidgetLogs, id),
                (None, None, None) => continue,
            };
            let records: i32 = row.get(4);
            rows += if table == Table::Batches { usize::try_from(records).unwrap_or(0) + 1 } else { 1 };
            picked.push(Picked { queue_id: row.get(0), table, id });
        }
        if picked.is_empty() {
            return Ok(0);
        }
        let units = self.load_units(&mut tx, &picked).map_err(failed)?;
        let forwarded = units.iter().map(|u| u.rows.len()).sum();
        if !units.is_empty() {
            push(&units).map_err(|why| StoreError::Forward { store: self.describe.clone(), why })?;
        }
        let done: Vec<i64> = picked.iter().map(|p| p.queue_id).collect();
        tx.execute("DELETE FROM forward_queue WHERE id = ANY($1)", &[&done]).map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(forwarded)
    }
}

impl Storage for PgStore {
    fn append_report(&self, machine_id: &str, report: &Value, e2ee: bool) -> Result<(), StoreError> {
        let row =
            json!({"received_at": now(), "machine_id": machine_id, "kind": "report", "e2ee": e2ee, "report": report});
        self.append_v1(machine_id, Table::Reports, vec![row]).map(drop)
    }

    fn append_widget_logs(&self, machine_id: &str, logs: &[Value], e2ee: bool) -> Result<usize, StoreError> {
        let received_at = now();
        let rows = logs
            .iter()
            .map(|log| {
                let widget = log.get("widget_type").and_then(Value::as_str).unwrap_or("");
                json!({"received_at": received_at, "machine_id": machine_id, "kind": "widget-log",
                       "widget": widget, "e2ee": e2ee, "log": log})
            })
            .collect();
        self.append_v1(machine_id, Table::WidgetLogs, rows)
    }

    fn append_batch(&self, batch: &BatchBody, kid: Option<&str>) -> Result<BatchOutcome, StoreError> {
        let machine_id = batch.machine_id.as_str();
        check_machine_id(machine_id)?;
        let digest = records_digest(&batch.records);
        let received_at = now();
        let count = batch.records.len();
        let nonces = self.nonces(count + 1)?;
        let (mut idx, mut widgets, mut kinds, mut kids, mut record_nonces, mut payloads) =
            (Vec::with_capacity(count), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (index, (record, nonce)) in batch.records.iter().zip(&nonces).enumerate() {
            let record = serde_json::to_value(record).unwrap_or(Value::Null);
            let row = json!({"received_at": received_at, "machine_id": machine_id, "kind": "record",
                "seq": batch.seq, "index": index, "widget": record.get("widget").cloned().unwrap_or(Value::Null),
                "record_kind": record.get("kind").cloned().unwrap_or(Value::Null), "record": record});
            let Value::Object(row) = row else { continue };
            idx.push(i32::try_from(index).unwrap_or(i32::MAX));
            widgets.push(text_column(&row, "widget"));
            kinds.push(text_column(&row, "record_kind"));
            let sealed = rows::seal(&self.keys, Table::Records, 0, row, nonce);
            kids.push(sealed.store_kid);
            record_nonces.push(sealed.nonce);
            payloads.push(sealed.payload);
        }
        let mut commit = json!({"received_at": received_at, "machine_id": machine_id, "kind": "batch",
            "seq": batch.seq, "records": count, "sent_at": batch.sent_at, "dropped": batch.dropped,
            "digest": digest});
        if let (Some(kid), Value::Object(map)) = (kid, &mut commit) {
            map.insert("kid".into(), Value::from(kid));
        }
        let Value::Object(commit) = commit else { return Ok(BatchOutcome::Stored(0)) };
        let last_nonce = nonces.last().copied().unwrap_or([0u8; 12]);
        let sealed = rows::seal(&self.keys, Table::Batches, 0, commit, &last_nonce);
        let seq = seq_column(batch.seq);
        let records = i32::try_from(count).unwrap_or(i32::MAX);
        let what = format!("storing batch {} of {machine_id:?} in", batch.seq);
        // Two tries: a unique violation can only come from a race the statement lost in a way
        // ON CONFLICT does not cover (none known); the second try then sees the winner's row.
        for _ in 0..2 {
            let inserted = self.with_client_retrying(&what, |conn| {
                let statement = conn.prepared(INSERT_BATCH)?;
                conn.client().query_opt(
                    &statement,
                    &[
                        &machine_id,
                        &seq,
                        &records,
                        &received_at,
                        &digest,
                        &sealed.store_kid,
                        &sealed.nonce,
                        &sealed.payload,
                        &idx,
                        &widgets,
                        &kinds,
                        &kids,
                        &record_nonces,
                        &payloads,
                    ],
                )
            });
            match inserted {
                Ok(Some(_)) => return Ok(BatchOutcome::Stored(count)),
                Ok(None) => {}
                Err(StoreError::Database { detail, .. }) if detail.contains("SQLSTATE 23505") => {}
                Err(e) => return Err(e),
            }
            let stored = self.with_client_retrying(&what, |conn| {
                let statement = conn.prepared(STORED_DIGEST)?;
                conn.client().query_opt(&statement, &[&machine_id, &seq])
            })?;
            if let Some(stored) = stored {
                let stored: String = stored.get(0);
                return Ok(if stored == digest {
                    BatchOutcome::Duplicate
                } else {
                    BatchOutcome::Conflict { stored, offered: digest }
                });
            }
        }
        Err(database(&self.describe, &what, "the batch neither inserts nor exists (retried once)".into()))
    }
}

impl PgStore {
    /// Seal and insert v1 rows (one statement: all or none); how many.
    fn append_v1(&self, machine_id: &str, table: Table, rows: Vec<Value>) -> Result<usize, StoreError> {
        check_machine_id(machine_id)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let count = rows.len();
        let nonces = self.nonces(count)?;
        let what = format!("storing {} of {machine_id:?} in", table.name());
        let n = i64::try_from(count).unwrap_or(i64::MAX);
        let ids: Vec<i64> = self
            .with_client(&what, |conn| {
                conn.client().query(
                    &format!(
                        "SELECT nextval(pg_get_serial_sequence('{}', 'id')) FROM generate_series(1, $1::bigint)",
                        table.name()
                    ),
                    &[&n],
                )
            })?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let (mut received, mut widgets, mut kids, mut row_nonces, mut payloads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((row, nonce), id) in rows.into_iter().zip(&nonces).zip(&ids) {
            let Value::Object(row) = row else { continue };
            received.push(text_column(&row, "received_at").unwrap_or_default());
            widgets.push(text_column(&row, "widget"));
            let sealed = rows::seal(&self.keys, table, seq_value(*id), row, nonce);
            kids.push(sealed.store_kid);
            row_nonces.push(sealed.nonce);
            payloads.push(sealed.payload);
        }
        let (widget_column, widget_param) =
            if table == Table::WidgetLogs { (", widget", ", u.widget") } else { ("", "") };
        let query = format!(
            "WITH rows AS (
                INSERT INTO {table} (id, machine_id, received_at{widget_column}, store_kid, nonce, payload)
                SELECT u.id, $1, u.received_at{widget_param}, u.store_kid, u.nonce, u.payload
                FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bytea[])
                    AS u (id, received_at, widget, store_kid, nonce, payload)
                RETURNING id
             )
             INSERT INTO forward_queue ({queue})
                 SELECT id FROM rows WHERE EXISTS (SELECT 1 FROM forwarding WHERE enabled)",
            table = table.name(),
            queue = if table == Table::WidgetLogs { "widget_log_id" } else { "report_id" },
        );
        self.with_client(&what, |conn| {
            conn.client().execute(&query, &[&machine_id, &ids, &received, &widgets, &kids, &row_nonces, &payloads])
        })?;
        Ok(count)
    }
}
