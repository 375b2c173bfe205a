//! Where a v2 run's receivers store, as a parameter of the run: the file store in a directory
//! (one receiver at a time: it locks the directory) or a PostgreSQL database of the run's own,
//! shared by every receiver. The harness reads it back only through the receiver's storage
//! seam, so the oracle is the same for both.
//!
//! PostgreSQL comes from the test environment (docs in STORAGE.md of issue 15, `.ci/run`):
//! `FLEET_TEST_POSTGRES` is a libpq URL of a server where that role may CREATE DATABASE (its
//! password, if any, in `FLEET_TEST_POSTGRES_PASSWORD`); each run creates a database with a
//! fresh name and drops it at the end (kept, and named, when the run failed). Without the URL
//! a PostgreSQL campaign is skipped with one line, or fails under `FLEET_REQUIRE_POSTGRES=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

use crate::support::{receiver_args, s, write_secret};

/// Which storage backend a campaign's receivers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The file store (the embedded default).
    File,
    /// PostgreSQL (`--store postgres://…`), from `FLEET_TEST_POSTGRES`.
    Postgres,
}

impl Backend {
    /// Whether this backend can be tested here: `Err(why)` when PostgreSQL is not configured
    /// (a campaign then skips, or fails when `FLEET_REQUIRE_POSTGRES=1`).
    pub fn available(self) -> Result<(), String> {
        match self {
            Backend::File => Ok(()),
            Backend::Postgres => server_url().map(|_| ()),
        }
    }
}

/// The test server's URL from `FLEET_TEST_POSTGRES`.
fn server_url() -> Result<String, String> {
    match std::env::var("FLEET_TEST_POSTGRES") {
        Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_string()),
        _ => Err("FLEET_TEST_POSTGRES is not set (a libpq URL of a server where the role may CREATE DATABASE)".into()),
    }
}

/// One run's store.
pub enum Store {
    /// The file store in this directory.
    Dir(PathBuf),
    /// A database of the run's own on the test server.
    Postgres(Database),
}

impl Store {
    /// A fresh store for the run in `dir` (named after `seed`).
    pub fn create(backend: Backend, dir: &Path, seed: u64) -> Result<Store, String> {
        match backend {
            Backend::File => Ok(Store::Dir(dir.join("store"))),
            Backend::Postgres => Database::create(dir, seed).map(Store::Postgres),
        }
    }

    /// The `receive` arguments serving this store on `listen` with the API key and transport
    /// keys given (secrets in files beside the store, the store sealed under the test key).
    pub fn receiver_args(&self, listen: &str, api_key: &str, keys: &[&str]) -> Vec<String> {
        match self {
            Store::Dir(dir) => receiver_args(dir, listen, api_key, keys),
            Store::Postgres(db) => {
                let mut args = receiver_args(&db.secrets, listen, api_key, keys);
                let at = args.iter().position(|a| a == "--store").expect("receiver_args names the store") + 1;
                args[at] = db.url.clone();
                args.push("--store-password-file".into());
                args.push(s(&db.password_file).into());
                args
            }
        }
    }

    /// The committed rows of `machine_id`'s records stream (each batch's `record` rows, then its
    /// `batch` row), read through the receiver's storage seam.
    pub fn read_records(&self, machine_id: &str) -> Result<Vec<Map<String, Value>>, String> {
        match self {
            Store::Dir(dir) => crate::support::store_reader(dir).read_records(machine_id).map_err(|e| e.to_string()),
            Store::Postgres(db) => {
                Err(format!("reading {} needs the storage seam (issue 15), not merged yet", db.name))
            }
        }
    }

    /// For the report: where it is.
    pub fn describe(&self) -> String {
        match self {
            Store::Dir(dir) => format!("store {}", dir.display()),
            Store::Postgres(db) => format!("PostgreSQL database {}", db.name),
        }
    }

    /// Keep it after the run (a failing seed's evidence): a database is then not dropped.
    pub fn keep(&mut self) {
        if let Store::Postgres(db) = self {
            db.keep = true;
        }
    }
}

/// A database of one run's own, dropped on drop unless kept.
pub struct Database {
    /// Its name.
    pub name: String,
    /// The test server's URL (the role's maintenance database).
    server: String,
    /// The receivers' URL: the server's, naming this database.
    url: String,
    /// The role's password (may be empty).
    password: String,
    /// The password in a file, for `--store-password-file`.
    password_file: PathBuf,
    /// Where the receivers' other secret files go.
    secrets: PathBuf,
    keep: bool,
}

impl Database {
    fn create(dir: &Path, seed: u64) -> Result<Database, String> {
        let server = server_url()?;
        let password = std::env::var("FLEET_TEST_POSTGRES_PASSWORD").unwrap_or_default();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("fleet_fault_{seed}_{}_{nanos}", std::process::id());
        let url = with_database(&server, &name)?;
        let secrets = dir.join("store");
        let password_file =
            write_secret(&PathBuf::from(format!("{}.secrets", secrets.display())), "store.password", &password);
        let db = Database { name, server, url, password, password_file, secrets, keep: false };
        db.sql(&format!("CREATE DATABASE {}", db.name))?;
        Ok(db)
    }

    /// Run one statement on the server's maintenance database with `psql`.
    fn sql(&self, statement: &str) -> Result<(), String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &self.server, "-c", statement])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .map_err(|e| format!("running psql for `{statement}`: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("psql `{statement}`: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if !self.keep {
            // FORCE: a receiver killed -9 may leave a session the server has not reaped yet.
            let _ = self.sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// `url` with its database (the path) replaced by `name`, the query kept.
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let scheme_end = url.find("://").ok_or_else(|| format!("FLEET_TEST_POSTGRES is not a URL: {url}"))? + 3;
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}

#[test]
fn the_receivers_url_names_the_runs_database() {
    let cases = [
        ("postgres://fleet@127.0.0.1:5432/postgres", "postgres://fleet@127.0.0.1:5432/d"),
        ("postgres://fleet@127.0.0.1:5432", "postgres://fleet@127.0.0.1:5432/d"),
        ("postgresql://fleet@h/postgres?sslmode=disable", "postgresql://fleet@h/d?sslmode=disable"),
    ];
    for (server, want) in cases {
        assert_eq!(with_database(server, "d").as_deref(), Ok(want));
    }
    assert!(with_database("fleet@h/postgres", "d").is_err());
}
