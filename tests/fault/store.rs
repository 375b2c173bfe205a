//! Where a v2 run's receivers store, as a parameter of the run: the file store in a directory
//! (one receiver at a time: it locks the directory) or a PostgreSQL database of the run's own,
//! shared by every receiver. The harness reads it back only through the receiver's storage
//! seam, so the oracle is the same for both.
//!
//! PostgreSQL comes from the test environment, as for the backend's own tests
//! (`tests/receiver_postgres.rs`, `.ci/postgres.sh`): `FLEET_TEST_POSTGRES` is a libpq URL of
//! a server where that role may CREATE DATABASE (its password, if any, in
//! `FLEET_TEST_POSTGRES_PASSWORD`); each run creates a database with a fresh name and drops it
//! at the end (kept, and named, when the run failed). Without the URL, or in a test build
//! without the `postgres` feature, a PostgreSQL campaign is skipped with one line, or fails
//! under `FLEET_REQUIRE_POSTGRES=1`.

use std::path::{Path, PathBuf};

use fleet_receiver::{StorageRead, StoreKeys, StoreLocation};
use fleet_wire::keys::Key32;
use serde_json::{Map, Value};

#[cfg(feature = "postgres")]
use crate::support::write_secret;
use crate::support::{receiver_args, TEST_STORE_KEY_B64};

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
    /// or this test build lacks the `postgres` feature (a campaign then skips, or fails when
    /// `FLEET_REQUIRE_POSTGRES=1`).
    pub fn available(self) -> Result<(), String> {
        match self {
            Backend::File => Ok(()),
            Backend::Postgres if !cfg!(feature = "postgres") => {
                Err("this test build has no PostgreSQL backend (cargo test --features postgres)".into())
            }
            Backend::Postgres => match std::env::var("FLEET_TEST_POSTGRES") {
                Ok(url) if !url.trim().is_empty() => Ok(()),
                _ => Err("no PostgreSQL (set FLEET_TEST_POSTGRES, see .ci/postgres.sh)".into()),
            },
        }
    }
}

/// One run's store.
pub enum Store {
    /// The file store in this directory.
    Dir(PathBuf),
    /// A database of the run's own on the test server.
    #[cfg(feature = "postgres")]
    Postgres(Box<Database>),
}

impl Store {
    /// A fresh store for the run in `dir`.
    pub fn create(backend: Backend, dir: &Path) -> Result<Store, String> {
        match backend {
            Backend::File => Ok(Store::Dir(dir.join("store"))),
            #[cfg(feature = "postgres")]
            Backend::Postgres => Database::create(dir).map(|db| Store::Postgres(Box::new(db))),
            #[cfg(not(feature = "postgres"))]
            Backend::Postgres => Err(Backend::Postgres.available().err().unwrap_or_default()),
        }
    }

    /// The `receive` arguments serving this store on `listen` with the API key and transport
    /// keys given (secrets in files beside the store, the store sealed under the test key).
    pub fn receiver_args(&self, listen: &str, api_key: &str, keys: &[&str]) -> Vec<String> {
        match self {
            Store::Dir(dir) => receiver_args(dir, listen, api_key, keys),
            #[cfg(feature = "postgres")]
            Store::Postgres(db) => {
                let mut args = receiver_args(&db.secrets, listen, api_key, keys);
                let at = args.iter().position(|a| a == "--store").expect("receiver_args names the store") + 1;
                args[at] = db.location().to_string();
                if let Some(file) = &db.password_file {
                    args.push("--store-password-file".into());
                    args.push(crate::support::s(file).into());
                }
                args
            }
        }
    }

    /// The committed rows of `machine_id`'s records stream (each batch's `record` rows, then its
    /// `batch` row), read through the receiver's storage seam ([`fleet_receiver::open_reader`]).
    pub fn read_records(&self, machine_id: &str) -> Result<Vec<Map<String, Value>>, String> {
        self.reader()?.read_records(machine_id).map_err(|e| e.to_string())
    }

    /// Every stored row of every machine authenticated ([`StorageRead::verify`]): the problems.
    pub fn verify(&self) -> Result<Vec<String>, String> {
        let checks = self.reader()?.verify().map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        for check in checks {
            let total = check.total();
            if total.bad > 0 || total.torn > 0 {
                problems.push(format!(
                    "{}: {} bad and {} torn rows (e.g. {})",
                    check.machine_id,
                    total.bad,
                    total.torn,
                    check.problems.first().map_or("?".to_string(), |p| format!("{} {}", p.location, p.problem))
                ));
            }
        }
        Ok(problems)
    }

    fn reader(&self) -> Result<Box<dyn StorageRead>, String> {
        let key = Key32::from_base64(TEST_STORE_KEY_B64).expect("test store key");
        let location = match self {
            Store::Dir(dir) => StoreLocation::Dir(dir.clone()),
            #[cfg(feature = "postgres")]
            Store::Postgres(db) => StoreLocation::Postgres(db.location().clone()),
        };
        fleet_receiver::open_reader(&location, StoreKeys::new(&[key])).map_err(|e| e.to_string())
    }

    /// For the report: where it is.
    pub fn describe(&self) -> String {
        match self {
            Store::Dir(dir) => format!("store {}", dir.display()),
            #[cfg(feature = "postgres")]
            Store::Postgres(db) => format!("PostgreSQL database {}", db.location()),
        }
    }

    /// Keep it after the run (a failing seed's evidence): a database is then not dropped.
    pub fn keep(&mut self) {
        match self {
            Store::Dir(_) => {}
            #[cfg(feature = "postgres")]
            Store::Postgres(db) => db.keep = true,
        }
    }
}

/// A database of one run's own (see [`crate::receiver_postgres::TestDb`]), dropped with it.
#[cfg(feature = "postgres")]
pub struct Database {
    /// Always `Some` until dropped (taken out to be forgotten when kept).
    test: Option<crate::receiver_postgres::TestDb>,
    keep: bool,
    /// The role's password in a file, for `--store-password-file` (`None`: it needs none).
    password_file: Option<PathBuf>,
    /// Where the receivers' other secret files go.
    secrets: PathBuf,
}

#[cfg(feature = "postgres")]
impl Database {
    fn create(dir: &Path) -> Result<Database, String> {
        let test = crate::receiver_postgres::TestDb::create("fault run").ok_or("no PostgreSQL")?;
        let secrets = dir.join("store");
        let password_file = std::env::var("FLEET_TEST_POSTGRES_PASSWORD").ok().map(|password| {
            let dir = PathBuf::from(format!("{}.secrets", secrets.display()));
            write_secret(&dir, "store.password", &password)
        });
        Ok(Database { test: Some(test), keep: false, password_file, secrets })
    }

    fn location(&self) -> &fleet_receiver::storage::PostgresLocation {
        &self.test.as_ref().expect("the database is there until dropped").location
    }
}

#[cfg(feature = "postgres")]
impl Drop for Database {
    fn drop(&mut self) {
        if self.keep {
            // Not dropped: the failing seed's database stays for a look.
            std::mem::forget(self.test.take());
        }
    }
}
