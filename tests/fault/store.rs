//! Where a v2 run's receivers store, as a parameter of the run: the file store in a directory
//! (one receiver at a time: it locks the directory) or a PostgreSQL database of the run's own,
//! shared by every receiver. The harness reads it back only through the receiver's storage
//! seam, so the oracle is the same for both.
//!
//! PostgreSQL comes from the test environment, as for the storage tests ([`crate::backends`],
//! `.ci/postgres.sh`): `FLEET_TEST_POSTGRES` is a libpq URL of a server where that role may
//! CREATE DATABASE (its password, if any, in `FLEET_TEST_POSTGRES_PASSWORD`); each run gets a
//! database with a fresh name, dropped at the end (kept, and named, when the run failed).
//! Without the URL, or in a test build without the `postgres` feature, a PostgreSQL campaign
//! is skipped with one line, or fails under `FLEET_REQUIRE_POSTGRES=1`.

use std::path::{Path, PathBuf};

use fleet_receiver::{StorageRead, StoreKeys, StoreLocation};
use fleet_wire::keys::Key32;
use serde_json::{Map, Value};

use crate::backends::TestStore;
use crate::support::{receiver_args, s, write_secret, TEST_STORE_KEY_B64};

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
    /// A database of the run's own on the test server ([`crate::backends`]).
    Postgres(Box<Database>),
}

impl Store {
    /// A fresh store for the run in `dir`.
    pub fn create(backend: Backend, dir: &Path) -> Result<Store, String> {
        match backend {
            Backend::File => Ok(Store::Dir(dir.join("store"))),
            Backend::Postgres => Database::create(dir).map(|db| Store::Postgres(Box::new(db))),
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
                args[at] = db.test().store_arg();
                if let Some(file) = &db.password_file {
                    args.push("--store-password-file".into());
                    args.push(s(file).into());
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
            Store::Postgres(db) => db.test().location.clone(),
        };
        fleet_receiver::open_reader(&location, StoreKeys::new(&[key])).map_err(|e| e.to_string())
    }

    /// For the report: where it is.
    pub fn describe(&self) -> String {
        match self {
            Store::Dir(dir) => format!("store {}", dir.display()),
            Store::Postgres(db) => format!("PostgreSQL database {}", db.test().store_arg()),
        }
    }

    /// Keep it after the run (a failing seed's evidence): a database is then not dropped.
    pub fn keep(&mut self) {
        if let Store::Postgres(db) = self {
            // Forgotten, so never dropped.
            std::mem::forget(db.test.take());
        }
    }
}

/// A database of one run's own: a [`TestStore`] of the PostgreSQL backend, dropped with it.
pub struct Database {
    /// `Some` until kept.
    test: Option<TestStore>,
    /// The role's password in a file, for `--store-password-file` (`None`: it needs none).
    password_file: Option<PathBuf>,
    /// Where the receivers' other secret files go.
    secrets: PathBuf,
}

impl Database {
    fn create(dir: &Path) -> Result<Database, String> {
        let test = crate::backends::backends()
            .into_iter()
            .find(|store| matches!(store.location, StoreLocation::Postgres(_)))
            .ok_or("no PostgreSQL for the run")?;
        let secrets = dir.join("store");
        let password_file =
            test.store_env().into_iter().find(|(name, _)| *name == "FLEET_STORE_PASSWORD").map(|(_, password)| {
                let dir = PathBuf::from(format!("{}.secrets", secrets.display()));
                write_secret(&dir, "store.password", &password)
            });
        Ok(Database { test: Some(test), password_file, secrets })
    }

    fn test(&self) -> &TestStore {
        self.test.as_ref().expect("the database is there until kept")
    }
}
