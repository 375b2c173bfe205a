//! The storage seam: every write and every read of what the receiver stores goes through the
//! two traits here, [`Storage`] (the running receiver's appends) and [`StorageRead`] (listings,
//! exports, `receive ls|show|verify`, the OTLP forwarder, tests). Two implementations: the file
//! store ([`crate::store`], the embedded default, JSON Lines per machine) and PostgreSQL
//! (cargo feature `postgres`, `crate::postgres`). Where to store is a [`StoreLocation`]
//! (`--store DIR_OR_URL`), opened with [`open_storage`] or [`open_reader`].
//!
//! A backend implements a handful of primitives (list machines, visit the rows of one stream
//! of one machine, append, forward); everything built from rows (summaries, the widget-log
//! export, `receive show`'s newest rows, `receive verify`) is a provided method here, so each
//! backend gets the same behaviour. A backend may override a provided method with a faster
//! query, as long as the answer is the same (the storage tests run against every backend).
//!
//! Rows are the decrypted row objects of `docs/receiver-store.md` (`received_at`,
//! `machine_id`, `kind`, …): the same for every backend.

pub mod location;
mod views;

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::seal::{RowError, StoreKeys};
use fleet_wire::keys::KeyError;
use fleet_wire::record::BatchBody;

pub use location::{LocationError, PostgresLocation, StoreLocation};
pub use views::{
    LogFilter, LogRow, MachineCheck, MachineSummary, NewestRows, RowQuery, ShownRow, WidgetSummary,
    MAX_PROBLEMS_PER_MACHINE,
};

/// Longest accepted machine id, in bytes.
pub const MAX_MACHINE_ID: usize = fleet_wire::MAX_MACHINE_ID_BYTES;

/// Which stored stream a row belongs to (file store: `reports.jsonl`, `widget-logs.jsonl`,
/// `records.jsonl`). Do not reorder: [`Stream::ALL`] is the order rows are read and checked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Stream {
    /// v1 (Atlas) reports, one row each.
    Reports,
    /// v1 widget-log entries, one row each.
    WidgetLogs,
    /// v2 records and their batch commit rows (each batch's `record` rows, then its `batch` row).
    Records,
}

impl Stream {
    /// Every stream, in reading order.
    pub const ALL: [Stream; 3] = [Stream::Reports, Stream::WidgetLogs, Stream::Records];

    /// A short stable name (`reports`, `widget-logs`, `records`): for messages, the forwarding
    /// cursor and the PostgreSQL schema.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Reports => "reports",
            Stream::WidgetLogs => "widget-logs",
            Stream::Records => "records",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One committed unit handed to the forwarder by [`StorageRead::forward_pending`]: decrypted
/// rows of one machine and stream, oldest first. For [`Stream::Records`] the rows are whole
/// batches, each batch's `record` rows followed by its `batch` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The machine.
    pub machine_id: String,
    /// The stream the rows come from.
    pub stream: Stream,
    /// The rows, decrypted, in commit order.
    pub rows: Vec<Map<String, Value>>,
}

/// What happened to a v2 batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored now, with this many records.
    Stored(usize),
    /// This `(machine_id, seq)` was stored before with the same records: nothing written.
    Duplicate,
    /// This `(machine_id, seq)` was stored before with OTHER records (another sender uses the
    /// same seq numbers): nothing written, nothing to acknowledge.
    Conflict {
        /// Digest of the records stored under this seq.
        stored: String,
        /// Digest of the records offered now.
        offered: String,
    },
}

/// How reading a stream went: rows opened, rows that failed (tampered, unreadable), and torn
/// bytes or uncommitted rows at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// Rows that opened.
    pub good: u64,
    /// Rows that did not (skipped, never returned).
    pub bad: u64,
    /// A torn last line (1) plus uncommitted record rows (never acknowledged).
    pub torn: u64,
}

impl ReadStats {
    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: ReadStats) {
        self.good += other.good;
        self.bad += other.bad;
        self.torn += other.torn;
    }
}

/// A stored row that does not open, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// Where the row is, for people: `/store/mac-01/records.jsonl line 3` (file store, 1-based
    /// line) or `records row 812` (PostgreSQL: table and row id).
    pub location: String,
    /// What is wrong.
    pub problem: RowError,
}

/// A storage operation that failed, naming what it was working on. The same enum with and
/// without the `postgres` feature.
#[derive(Debug)]
pub enum StoreError {
    /// A file system call failed.
    Io {
        /// What was being done.
        doing: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A database call failed (PostgreSQL: connecting, a query, a transaction).
    Database {
        /// What was being done, and where (`inserting a batch into postgres://fleet@db:5432/fleet`).
        what: String,
        /// The server's or the driver's message (never a password).
        detail: String,
    },
    /// The machine id cannot be stored (empty, too long, control characters).
    MachineId(String),
    /// A row cannot be opened with the keys given (wrong key, no key, plaintext in a sealed
    /// store, tampered). Nothing was changed.
    Row {
        /// Where the row is (see [`RowProblem::location`]).
        location: String,
        /// What is wrong.
        problem: RowError,
        /// The ids of the keys given (empty: plaintext mode).
        given: Vec<String>,
    },
    /// Another receiver (or a rekey) has this file store open.
    Locked {
        /// The store directory.
        store: PathBuf,
        /// The pid written in the lock file by the holder (`None`: unreadable).
        pid: Option<u32>,
    },
    /// The location names a backend this build does not have (a `postgres://` store in a
    /// build without the `postgres` cargo feature), or an operation this backend does not do.
    Unsupported {
        /// The store, as [`StorageRead::describe`] would name it.
        store: String,
        /// What is missing and how to get it.
        why: String,
    },
    /// The forwarder's `push` failed ([`StorageRead::forward_pending`]): nothing advanced,
    /// the same rows come again.
    Forward {
        /// The store, as [`StorageRead::describe`] names it.
        store: String,
        /// What `push` said.
        why: String,
    },
    /// The OS random number generator failed (nonces).
    Random(KeyError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { doing, path, source } => write!(f, "{doing} {}: {source}", path.display()),
            StoreError::Database { what, detail } => write!(f, "{what}: {detail}"),
            StoreError::MachineId(why) => write!(f, "invalid machine_id: {why}"),
            StoreError::Row { location, problem, given } => {
                write!(f, "{location}: {problem}")?;
                match problem {
                    RowError::UnknownKey(_) if given.is_empty() => Ok(()),
                    RowError::UnknownKey(_) => write!(f, " (store key ids given: {})", given.join(", ")),
                    RowError::NeedKey(_) => f.write_str(" (give it with --store-key-file or FLEET_STORE_KEY)"),
                    RowError::Plaintext => f.write_str(
                        " (seal the store first: fleet-agent receive rekey --store DIR --from-plaintext --new-key-file FILE)",
                    ),
                    _ => Ok(()),
                }
            }
            StoreError::Locked { store, pid } => {
                let holder = pid.map_or_else(|| "another process".to_string(), |pid| format!("process {pid}"));
                write!(
                    f,
                    "store {} is in use by {holder} (another receiver or a rekey; two writers on one store would cut \
                     each other's batches): stop it or use another --store",
                    store.display()
                )
            }
            StoreError::Unsupported { store, why } => write!(f, "{store}: {why}"),
            StoreError::Forward { store, why } => {
                write!(f, "forwarding from {store} failed (nothing advanced; the rows come again): {why}")
            }
            StoreError::Random(e) => write!(f, "making nonces: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Row { problem, .. } => Some(problem),
            StoreError::Random(e) => Some(e),
            StoreError::Database { .. }
            | StoreError::MachineId(_)
            | StoreError::Locked { .. }
            | StoreError::Unsupported { .. }
            | StoreError::Forward { .. } => None,
        }
    }
}

/// Check that a machine id can be stored: 1..=128 bytes (the agent's own limit), no control
/// characters. Every backend refuses other ids with [`StoreError::MachineId`].
pub fn check_machine_id(machine_id: &str) -> Result<(), StoreError> {
    if machine_id.is_empty() {
        return Err(StoreError::MachineId("empty".into()));
    }
    if machine_id.len() > MAX_MACHINE_ID {
        return Err(StoreError::MachineId(format!("{} bytes, at most {MAX_MACHINE_ID}", machine_id.len())));
    }
    if machine_id.chars().any(char::is_control) {
        return Err(StoreError::MachineId("contains control characters".into()));
    }
    Ok(())
}

/// Reads of a store: what `receive ls|show|verify`, the exports, the listings and the OTLP
/// forwarder use. Usable beside a running receiver.
pub trait StorageRead: Send + Sync {
    /// The store for logs and errors: `store /var/lib/fleet-store` or
    /// `postgres://user@host:5432/db` (never a password).
    fn describe(&self) -> String;

    /// The keys rows are opened (and, by a [`Storage`], sealed) with.
    fn keys(&self) -> &StoreKeys;

    /// Every machine id in the store, sorted bytewise (empty if the store is empty or does not
    /// exist yet).
    fn machine_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Visit the rows of one stream of one machine, decrypted, in commit order; `visit`
    /// returns false to stop. [`Stream::Records`]: committed rows only (each batch's `record`
    /// rows, then its `batch` row). Rows that do not open (tampered, wrong key, another
    /// machine's row) are counted `bad` and reported to `problem`, never visited. An unknown
    /// machine has no rows.
    fn visit(
        &self,
        machine_id: &str,
        stream: Stream,
        visit: &mut dyn FnMut(Map<String, Value>) -> bool,
        problem: &mut dyn FnMut(RowProblem),
    ) -> Result<ReadStats, StoreError>;

    /// Bytes the store spends on a machine (file store: its files; PostgreSQL: its rows).
    fn machine_bytes(&self, machine_id: &str) -> Result<u64, StoreError>;

    /// Check that every stored row's key id is one of [`Self::keys`] (or that every row is
    /// plaintext in a plaintext store): the first row that is not is [`StoreError::Row`]
    /// naming it and its key id. Reads only clear fields; changes nothing.
    fn check_keys(&self) -> Result<(), StoreError>;

    /// Hand `push` the oldest committed rows not yet forwarded (about `max_rows`, whole
    /// batches, grouped by machine and stream); if `push` returns Ok, the forwarding position
    /// advances durably before this returns; if it returns Err nothing advances and the same
    /// rows come again (at-least-once) and this returns [`StoreError::Forward`] with `push`'s
    /// message. Ok: the number of rows forwarded (0: nothing pending, and `push` was not
    /// called). Uncommitted rows are never handed out; rows that do not open are skipped with
    /// a warning (`receive verify` lists them), never handed out.
    fn forward_pending(
        &self,
        max_rows: usize,
        push: &mut dyn FnMut(&[Committed]) -> Result<(), String>,
    ) -> Result<usize, StoreError>;

    /// Summarize one machine (counts, last seen, latest metrics, per widget count and sample).
    fn machine(&self, machine_id: &str) -> Result<MachineSummary, StoreError> {
        views::machine(self, machine_id)
    }

    /// Summaries of every machine, sorted by machine id.
    fn machines(&self) -> Result<Vec<MachineSummary>, StoreError> {
        self.machine_ids()?.iter().map(|id| self.machine(id)).collect()
    }

    /// Stream every widget-log row matching `filter` (v1 widget logs and v2 `log` records):
    /// machines in id order, each machine's v1 rows then v2 rows, in arrival order. `visit`
    /// returns false to stop. Rows that do not open are skipped and counted in `bad`.
    fn widget_logs(&self, filter: &LogFilter, visit: &mut dyn FnMut(LogRow) -> bool) -> Result<ReadStats, StoreError> {
        views::widget_logs(self, filter, visit)
    }

    /// The newest rows of `machine_id` matching `query`, newest first (batch commit rows are
    /// never shown): what `receive show` prints. At most `query.limit` rows of each stream are
    /// held, whatever the store's size.
    fn newest(&self, machine_id: &str, query: &RowQuery) -> Result<NewestRows, StoreError> {
        views::newest(self, machine_id, query)
    }

    /// Authenticate every row of every machine (`receive verify`): per machine and stream the
    /// counts, and the first problems (at most [`MAX_PROBLEMS_PER_MACHINE`]). Changes nothing.
    fn verify(&self) -> Result<Vec<MachineCheck>, StoreError> {
        views::verify(self)
    }

    /// The committed rows of a machine's v2 stream, collected (see [`Self::visit`]).
    fn read_records(&self, machine_id: &str) -> Result<Vec<Map<String, Value>>, StoreError> {
        self.read_stream(machine_id, Stream::Records)
    }

    /// The rows of one of a machine's v1 streams ([`Stream::Reports`] or
    /// [`Stream::WidgetLogs`]), collected.
    fn read_v1(&self, machine_id: &str, stream: Stream) -> Result<Vec<Map<String, Value>>, StoreError> {
        self.read_stream(machine_id, stream)
    }

    /// The rows of one stream of a machine, collected; rows that do not open are skipped.
    fn read_stream(&self, machine_id: &str, stream: Stream) -> Result<Vec<Map<String, Value>>, StoreError> {
        let mut rows = Vec::new();
        self.visit(
            machine_id,
            stream,
            &mut |row| {
                rows.push(row);
                true
            },
            &mut |_| {},
        )?;
        Ok(rows)
    }
}

/// Writes: the running receiver. Every append is durable before it returns Ok (the receiver
/// answers 200 only then); a v2 batch is stored exactly once per `(machine_id, seq)`.
pub trait Storage: StorageRead {
    /// Store one v1 report, durably.
    fn append_report(&self, machine_id: &str, report: &Value, e2ee: bool) -> Result<(), StoreError>;

    /// Store v1 widget-log entries, durably; how many.
    fn append_widget_logs(&self, machine_id: &str, logs: &[Value], e2ee: bool) -> Result<usize, StoreError>;

    /// Store a v2 batch exactly once: its records and its commit row together or not at all;
    /// a repeated `(machine_id, seq)` is [`BatchOutcome::Duplicate`] with the same records
    /// ([`fleet_wire::record::records_digest`]) and [`BatchOutcome::Conflict`] with others.
    fn append_batch(&self, batch: &BatchBody, kid: Option<&str>) -> Result<BatchOutcome, StoreError>;
}

/// Open the store at `location` for the running receiver (file store: takes its lock, checks
/// every row's key, repairs torn tails; PostgreSQL: connects and checks the schema).
pub fn open_storage(location: &StoreLocation, keys: StoreKeys) -> Result<Box<dyn Storage>, StoreError> {
    match location {
        StoreLocation::Dir(dir) => Ok(Box::new(crate::store::FileStore::open(dir, keys)?)),
        #[cfg(feature = "postgres")]
        StoreLocation::Postgres(postgres) => crate::postgres::open_storage(postgres, keys),
        #[cfg(not(feature = "postgres"))]
        StoreLocation::Postgres(postgres) => Err(no_postgres(postgres)),
    }
}

/// Open the store at `location` for reading only (the look commands, tests): the file store's
/// reader takes no lock and changes nothing, so it works beside a running receiver.
pub fn open_reader(location: &StoreLocation, keys: StoreKeys) -> Result<Box<dyn StorageRead>, StoreError> {
    match location {
        StoreLocation::Dir(dir) => Ok(Box::new(crate::store::FileReader::new(dir, keys))),
        #[cfg(feature = "postgres")]
        StoreLocation::Postgres(postgres) => crate::postgres::open_reader(postgres, keys),
        #[cfg(not(feature = "postgres"))]
        StoreLocation::Postgres(postgres) => Err(no_postgres(postgres)),
    }
}

#[cfg(not(feature = "postgres"))]
fn no_postgres(postgres: &PostgresLocation) -> StoreError {
    StoreError::Unsupported {
        store: postgres.to_string(),
        why: "this fleet-agent was built without PostgreSQL support: build it with the cargo feature `postgres` \
              (cargo build --release --features postgres)"
            .into(),
    }
}
