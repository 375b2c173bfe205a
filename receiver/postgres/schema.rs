//! The PostgreSQL schema and its migrations (`docs/receiver-store-postgres.md`, "Schema").
//!
//! Migrations are numbered from 1 and applied in order, each at most once: the applied ones
//! are rows of `fleet_schema_version`. [`migrate`] runs in ONE transaction that first takes a
//! transaction-scoped advisory lock ([`MIGRATION_LOCK`]), so two receivers starting at once
//! on an empty database apply each migration once (the second waits, then finds nothing to
//! do), and a failed migration leaves the database as it was (PostgreSQL's DDL is
//! transactional). Every statement is also written to be harmless when repeated (`IF NOT
//! EXISTS`). A database whose version is newer than this build's is refused, never written.
//!
//! Do not edit a migration that has shipped: add the next number.

use postgres::GenericClient;

/// `pg_advisory_xact_lock` key held while migrating: `fleet` in ASCII (0x666c656574).
pub const MIGRATION_LOCK: i64 = 0x66_6c_65_65_74;

/// One migration: its number, a name for the version table, and its SQL.
pub struct Migration {
    /// 1, 2, …: the schema version once applied.
    pub version: i32,
    /// What it does, in a few words.
    pub name: &'static str,
    /// The statements (run with the simple query protocol, in the migration's transaction).
    pub sql: &'static str,
}

/// Every migration, in order. The last one's `version` is [`LATEST`].
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "batches, records, reports, widget_logs, forward_queue, store_keys",
        sql: r#"
CREATE TABLE IF NOT EXISTS batches (
    id          bigserial PRIMARY KEY,
    machine_id  text      NOT NULL,
    seq         bigint    NOT NULL,
    records     integer   NOT NULL,
    received_at text      NOT NULL,
    digest      text      NOT NULL,
    store_kid   text,
    nonce       bytea,
    payload     bytea     NOT NULL,
    CONSTRAINT batches_machine_seq UNIQUE (machine_id, seq)
);
CREATE TABLE IF NOT EXISTS records (
    batch_id    bigint    NOT NULL REFERENCES batches (id),
    idx         integer   NOT NULL,
    widget      text,
    record_kind text,
    store_kid   text,
    nonce       bytea,
    payload     bytea     NOT NULL,
    PRIMARY KEY (batch_id, idx)
);
CREATE TABLE IF NOT EXISTS reports (
    id          bigserial PRIMARY KEY,
    machine_id  text      NOT NULL,
    received_at text      NOT NULL,
    store_kid   text,
    nonce       bytea,
    payload     bytea     NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_machine ON reports (machine_id, id);
CREATE TABLE IF NOT EXISTS widget_logs (
    id          bigserial PRIMARY KEY,
    machine_id  text      NOT NULL,
    received_at text      NOT NULL,
    widget      text,
    store_kid   text,
    nonce       bytea,
    payload     bytea     NOT NULL
);
CREATE INDEX IF NOT EXISTS widget_logs_machine ON widget_logs (machine_id, id);
CREATE TABLE IF NOT EXISTS forward_queue (
    id            bigserial PRIMARY KEY,
    batch_id      bigint    UNIQUE REFERENCES batches (id),
    report_id     bigint    UNIQUE REFERENCES reports (id),
    widget_log_id bigint    UNIQUE REFERENCES widget_logs (id),
    CONSTRAINT forward_queue_one_row CHECK (num_nonnulls(batch_id, report_id, widget_log_id) = 1)
);
CREATE TABLE IF NOT EXISTS store_keys (
    store_kid   text      PRIMARY KEY,
    first_used  timestamptz NOT NULL DEFAULT now()
);
"#,
    },
    Migration {
        version: 2,
        name: "forwarding: forward_queue is filled only while forwarding is on",
        // One row: whether inserts add their rows to forward_queue. Off until a receiver
        // started with --forward-otlp turns it on (`set_forwarding`); entries queued before
        // this migration stay until forwarded or until forwarding is turned off.
        sql: r#"
CREATE TABLE IF NOT EXISTS forwarding (
    singleton   boolean   PRIMARY KEY DEFAULT true CONSTRAINT forwarding_one_row CHECK (singleton),
    enabled     boolean   NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO forwarding (singleton, enabled) VALUES (true, false) ON CONFLICT (singleton) DO NOTHING;
"#,
    },
];

/// The schema version this build writes and reads.
pub const LATEST: i32 = 2;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS fleet_schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// What [`migrate`] did: the version found and the version left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version before (0: an empty database).
    pub from: i32,
    /// The schema version after ([`LATEST`]).
    pub to: i32,
}

/// Why the schema cannot be used.
#[derive(Debug)]
pub enum SchemaError {
    /// A query failed (connection lost, no privilege, …).
    Query(postgres::Error),
    /// The database was migrated by a newer fleet-agent.
    TooNew {
        /// The database's version.
        found: i32,
    },
    /// The database has no (or an older) schema and this is a read-only open.
    NotMigrated {
        /// The database's version (0: none).
        found: i32,
    },
}

impl From<postgres::Error> for SchemaError {
    fn from(e: postgres::Error) -> SchemaError {
        SchemaError::Query(e)
    }
}

/// Bring the schema to [`LATEST`] (see the module docs); safe to run any number of times,
/// from any number of processes at once.
pub fn migrate(client: &mut postgres::Client) -> Result<Migrated, SchemaError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(VERSION_TABLE)?;
    let from: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM fleet_schema_version", &[])?.get(0);
    if from > LATEST {
        return Err(SchemaError::TooNew { found: from });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.batch_execute(migration.sql)?;
        tx.execute(
            "INSERT INTO fleet_schema_version (version, name) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
            &[&migration.version, &migration.name],
        )?;
    }
    tx.commit()?;
    Ok(Migrated { from, to: LATEST })
}

/// The database's schema version (0: never migrated), without changing anything.
pub fn version(client: &mut impl GenericClient) -> Result<i32, postgres::Error> {
    let exists: bool = client.query_one("SELECT to_regclass('fleet_schema_version') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client.query_one("SELECT coalesce(max(version), 0) FROM fleet_schema_version", &[])?.get(0))
}

/// Check that the database is at [`LATEST`] (for readers, which never migrate).
pub fn check(client: &mut impl GenericClient) -> Result<(), SchemaError> {
    match version(client)? {
        LATEST => Ok(()),
        found if found > LATEST => Err(SchemaError::TooNew { found }),
        found => Err(SchemaError::NotMigrated { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i as i32 + 1, "{}", migration.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(LATEST));
    }

    #[test]
    fn every_create_is_repeatable() {
        for migration in MIGRATIONS {
            for statement in migration.sql.split(';').map(str::trim).filter(|s| s.starts_with("CREATE")) {
                assert!(statement.contains("IF NOT EXISTS"), "migration {}: {statement}", migration.version);
            }
        }
    }
}
