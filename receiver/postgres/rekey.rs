//! `receive rekey` for a PostgreSQL store: every row sealed again under a new store key, in
//! place (`docs/receiver-store-postgres.md`, "Re-keying").
//!
//! 1. Every row of every table is opened first with the old keys (and the new one; plaintext
//!    rows too with `--from-plaintext`): if one does not open, the command stops naming it and
//!    nothing is changed.
//! 2. The new key's id is registered in `store_keys` (from now on a receiver without the new
//!    key refuses to start rather than fail on its rows).
//! 3. Each table is walked in primary-key order, [`CHUNK`] rows per transaction: the rows not
//!    under the new key are locked (`FOR UPDATE`), opened, sealed under the new key and
//!    updated, and the transaction commits. A kill at any point leaves every row whole under
//!    the old or the new key (a store half-way reads with both); run the command again to
//!    finish.
//! 4. When no row is left under another key, the other ids are removed from `store_keys`.
//!
//! Receivers may keep running, given both keys (new first) so that what they write meanwhile is
//! sealed under the new key; rows still arriving under an old key make step 4 refuse.

use serde_json::{Map, Value};

use super::rows::{self, seq_value, text_value, Sealed, Table};
use super::{config, database, error_text, pool::Pool, schema, schema_error};
use crate::seal::{self, RowError, StoreKeys};
use crate::storage::{PostgresLocation, StoreError};

/// Rows re-sealed per transaction.
pub const CHUNK: i64 = 500;

/// What [`rekey`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rekeyed {
    /// Rows sealed again under the new key.
    pub rows: u64,
    /// Rows that were under it already.
    pub already: u64,
}

/// One table's rows for re-keying: the primary key, the clear fields and the sealed columns.
struct Stored {
    key: (i64, i32),
    clear: Map<String, Value>,
    row_id: u64,
    sealed: Sealed,
}

/// The rows of `table` after primary key `after` (`(id, 0)`, or `(batch_id, idx)` for
/// records), at most [`CHUNK`], optionally locked.
fn chunk(
    client: &mut impl postgres::GenericClient,
    table: Table,
    after: (i64, i32),
    lock: bool,
) -> Result<Vec<Stored>, postgres::Error> {
    let lock = if lock { " FOR UPDATE OF t" } else { "" };
    let query = match table {
        Table::Records => format!(
            "SELECT t.batch_id, t.idx, b.machine_id, b.seq, b.received_at, t.widget, t.record_kind, t.store_kid, t.nonce,
                    t.payload
             FROM records t JOIN batches b ON b.id = t.batch_id
             WHERE (t.batch_id, t.idx) > ($1, $2) ORDER BY t.batch_id, t.idx LIMIT $3{lock}"
        ),
        Table::Batches => format!(
            "SELECT t.id, 0, t.machine_id, t.seq, t.received_at, t.records::text, NULL::text, t.store_kid, t.nonce, t.payload
             FROM batches t WHERE (t.id, 0) > ($1, $2) ORDER BY t.id LIMIT $3{lock}"
        ),
        Table::Reports | Table::WidgetLogs => format!(
            "SELECT t.id, 0, t.machine_id, NULL::bigint, t.received_at, {widget}, NULL::text, t.store_kid, t.nonce, t.payload
             FROM {table} t WHERE (t.id, 0) > ($1, $2) ORDER BY t.id LIMIT $3{lock}",
            widget = if table == Table::WidgetLogs { "t.widget" } else { "NULL::text" },
            table = table.name()
        ),
    };
    let rows = client.query(&query, &[&after.0, &after.1, &CHUNK])?;
    Ok(rows
        .iter()
        .map(|row| {
            let key: (i64, i32) = (row.get(0), row.get(1));
            let mut clear = Map::new();
            clear.insert("received_at".into(), Value::from(row.get::<_, String>(4)));
            clear.insert("machine_id".into(), Value::from(row.get::<_, String>(2)));
            clear.insert("kind".into(), Value::from(table.kind()));
            if let Some(seq) = row.get::<_, Option<i64>>(3) {
                clear.insert("seq".into(), Value::from(seq_value(seq)));
            }
            match table {
                Table::Records => {
                    clear.insert("index".into(), Value::from(key.1));
                    clear.insert("widget".into(), text_value(row.get(5)));
                    clear.insert("record_kind".into(), text_value(row.get(6)));
                }
                Table::Batches => {
                    let records: Option<String> = row.get(5);
                    let records = records.and_then(|r| r.parse::<i64>().ok()).unwrap_or(0);
                    clear.insert("records".into(), Value::from(records));
                }
                Table::WidgetLogs => {
                    clear.insert("widget".into(), text_value(row.get(5)));
                }
                Table::Reports => {}
            }
            let row_id = match table {
                Table::Batches | Table::Records => 0,
                Table::Reports | Table::WidgetLogs => seq_value(key.0),
            };
            Stored {
                key,
                clear,
                row_id,
                sealed: Sealed { store_kid: row.get(7), nonce: row.get(8), payload: row.get(9) },
            }
        })
        .collect())
}

/// The tables in re-keying order.
const TABLES: [Table; 4] = [Table::Batches, Table::Records, Table::Reports, Table::WidgetLogs];

/// The keys a re-keying opens rows with.
struct Openers<'k> {
    old: &'k StoreKeys,
    new: &'k StoreKeys,
    from_plaintext: bool,
}

impl Openers<'_> {
    /// Open a stored row with the new key (rows already under it), the old keys, or (with
    /// `from_plaintext`) as plaintext.
    fn open(&self, stored: &Stored, table: Table) -> Result<Map<String, Value>, RowError> {
        let keys = match stored.sealed.store_kid.as_deref() {
            None if self.from_plaintext => &StoreKeys::plaintext(),
            Some(kid) if self.new.has(kid) => self.new,
            _ => self.old,
        };
        rows::open(keys, table, stored.row_id, stored.clear.clone(), stored.sealed.clone())
    }

    fn given(&self) -> Vec<String> {
        self.old.kids().into_iter().chain(self.new.kids()).collect()
    }
}

fn location_of(table: Table, key: (i64, i32)) -> String {
    match table {
        Table::Records => format!("records row (batch {}, index {})", key.0, key.1),
        _ => format!("{} row {}", table.name(), key.0),
    }
}

/// Re-seal every row of the store at `location` under `new` (see the module docs).
/// `old` opens the rows (rows already under the new key open with `new`), the first key of
/// `new` seals them; `from_plaintext` also accepts plaintext rows.
pub fn rekey(
    location: &PostgresLocation,
    old: &StoreKeys,
    new: &StoreKeys,
    from_plaintext: bool,
) -> Result<Rekeyed, StoreError> {
    let describe = location.to_string();
    let (config, _) = config(location)?;
    let mut client = Pool::new(config, 1).take().map_err(|e| database(&describe, "connecting to", e.to_string()))?;
    client.batch_execute("SET statement_timeout = 0").map_err(|e| database(&describe, "setting up", error_text(&e)))?;
    schema::check(&mut client).map_err(|e| schema_error(&describe, e))?;
    let failed = |what: &'static str| {
        let describe = describe.as_str();
        move |e: postgres::Error| database(describe, what, error_text(&e))
    };
    let Some(new_kid) = new.current_kid().map(str::to_string) else {
        return Err(StoreError::Unsupported { store: describe.clone(), why: "rekey needs a new store key".into() });
    };
    let openers = Openers { old, new, from_plaintext };
    // 1. Everything opens, or nothing changes.
    for table in TABLES {
        let mut after = (i64::MIN, i32::MIN);
        loop {
            let rows = chunk(&mut client, table, after, false).map_err(failed("reading"))?;
            let Some(last) = rows.last() else { break };
            after = last.key;
            for stored in &rows {
                if let Err(problem) = openers.open(stored, table) {
                    return Err(StoreError::Row {
                        location: format!("{describe}: {}", location_of(table, stored.key)),
                        problem,
                        given: openers.given(),
                    });
                }
            }
        }
    }
    // 2. Readers and receivers from now on need the new key.
    client
        .execute("INSERT INTO store_keys (store_kid) VALUES ($1) ON CONFLICT DO NOTHING", &[&new_kid])
        .map_err(failed("registering the new key id in"))?;
    // 3. Chunk by chunk, each in its own transaction.
    let mut done = Rekeyed::default();
    for table in TABLES {
        let mut after = (i64::MIN, i32::MIN);
        loop {
            let mut tx = client.transaction().map_err(failed("rekeying"))?;
            let rows = chunk(&mut tx, table, after, true).map_err(failed("rekeying"))?;
            let Some(last) = rows.last() else { break };
            after = last.key;
            let todo: Vec<&Stored> =
                rows.iter().filter(|s| s.sealed.store_kid.as_deref() != Some(new_kid.as_str())).collect();
            done.already += (rows.len() - todo.len()) as u64;
            let nonces = seal::nonces(todo.len()).map_err(StoreError::Random)?;
            let update = match table {
                Table::Records => {
                    "UPDATE records SET store_kid = $3, nonce = $4, payload = $5 WHERE batch_id = $1 AND idx = $2"
                        .to_string()
                }
                _ => format!(
                    "UPDATE {} SET store_kid = $3, nonce = $4, payload = $5 WHERE id = $1 AND $2::integer = 0",
                    table.name()
                ),
            };
            for (stored, nonce) in todo.iter().zip(&nonces) {
                // Checked in step 1; a row changed since (by hand) stops here, this chunk undone.
                let row = openers.open(stored, table).map_err(|problem| StoreError::Row {
                    location: format!("{describe}: {}", location_of(table, stored.key)),
                    problem,
                    given: openers.given(),
                })?;
                let sealed = rows::seal(new, table, stored.row_id, row, nonce);
                tx.execute(&update, &[&stored.key.0, &stored.key.1, &sealed.store_kid, &sealed.nonce, &sealed.payload])
                    .map_err(failed("rekeying"))?;
                done.rows += 1;
            }
            tx.commit().map_err(failed("rekeying"))?;
        }
    }
    // 4. Forget the old ids once no row needs them.
    let mut left = 0i64;
    for table in TABLES {
        let query = format!("SELECT count(*) FROM {} WHERE store_kid IS DISTINCT FROM $1", table.name());
        left += client.query_one(&query, &[&new_kid]).map_err(failed("counting rows in"))?.get::<_, i64>(0);
    }
    if left > 0 {
        return Err(StoreError::Unsupported {
            store: describe.clone(),
            why: format!(
                "{left} rows arrived under another store key while rekeying: give every receiver the new key first \
                 (--store-key-file NEW --store-key-file OLD), then run rekey again"
            ),
        });
    }
    client
        .execute("DELETE FROM store_keys WHERE store_kid <> $1", &[&new_kid])
        .map_err(failed("forgetting the old key ids in"))?;
    Ok(done)
}
