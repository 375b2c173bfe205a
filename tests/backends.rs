//! The storage backends the storage tests run against ([`backends`]): the same test body runs
//! once per backend, each time on a store of its own.
//!
//! - The file store, always (a temporary directory).
//! - PostgreSQL, when the tests are built with `--features postgres` and env
//!   `FLEET_TEST_POSTGRES` names a server (`postgres://fleet@127.0.0.1:PORT/postgres`, the
//!   password, if any, in `FLEET_TEST_POSTGRES_PASSWORD`) on which that role may CREATE
//!   DATABASE: every store is a fresh database with a random name, dropped when the test ends,
//!   so tests run in parallel. Databases are made and dropped with `psql` (the server's
//!   client, installed with it by `.ci/run`), so this support needs no client crate of its own.
//!
//! Without PostgreSQL each test prints one line saying so; with env `FLEET_REQUIRE_POSTGRES=1`
//! (set by `.ci/run`) a missing server or a build without the feature is a failure instead.

use std::path::{Path, PathBuf};

use fleet_receiver::{open_reader, open_storage, Storage, StorageRead, StoreKeys, StoreLocation};

/// Env: a libpq URL of a PostgreSQL server for the tests.
pub const POSTGRES_ENV: &str = "FLEET_TEST_POSTGRES";
/// Env: the password of [`POSTGRES_ENV`]'s role.
pub const POSTGRES_PASSWORD_ENV: &str = "FLEET_TEST_POSTGRES_PASSWORD";
/// Env: `1` makes a missing PostgreSQL a failure.
pub const REQUIRE_POSTGRES_ENV: &str = "FLEET_REQUIRE_POSTGRES";

/// One backend's fresh, empty store for one test; removed when dropped.
pub struct TestStore {
    /// `file` or `postgres`, for assertion messages.
    pub name: &'static str,
    /// Where it is (give it to a receiver or a command).
    pub location: StoreLocation,
    guard: Guard,
}

enum Guard {
    Dir(#[allow(dead_code, reason = "held for its Drop: removes the directory")] tempfile::TempDir),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Database),
}

impl TestStore {
    /// Open it for writing, as a receiver does (dropping the result is a receiver stopping;
    /// opening again is its restart).
    pub fn open(&self, keys: StoreKeys) -> Box<dyn Storage> {
        open_storage(&self.location, keys).unwrap_or_else(|e| panic!("{}: opening the store: {e}", self.name))
    }

    /// Open it for reading only.
    pub fn reader(&self, keys: StoreKeys) -> Box<dyn StorageRead> {
        open_reader(&self.location, keys).unwrap_or_else(|e| panic!("{}: opening a reader: {e}", self.name))
    }

    /// The `--store` value naming it on a command line (a URL never holds the password).
    pub fn store_arg(&self) -> String {
        match &self.location {
            StoreLocation::Dir(dir) => dir.display().to_string(),
            StoreLocation::Postgres(postgres) => postgres.to_string(),
        }
    }

    /// The environment a command needs besides [`Self::store_arg`] (the PostgreSQL password).
    pub fn store_env(&self) -> Vec<(&'static str, String)> {
        match &self.location {
            StoreLocation::Postgres(postgres) => {
                postgres.password.iter().map(|p| ("FLEET_STORE_PASSWORD", p.expose().to_string())).collect()
            }
            StoreLocation::Dir(_) => Vec::new(),
        }
    }

    /// The directory of a file store (`None` for other backends).
    pub fn dir(&self) -> Option<&Path> {
        self.location.dir()
    }

    /// Every byte the backend holds at rest, to look for plaintext: a file store's files, a
    /// PostgreSQL database's `pg_dump --data-only`.
    pub fn raw(&self) -> Vec<u8> {
        match &self.guard {
            Guard::Dir(dir) => {
                let mut out = Vec::new();
                for file in files(dir.path()) {
                    out.extend(std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
                }
                out
            }
            #[cfg(feature = "postgres")]
            Guard::Postgres(database) => database.dump(),
        }
    }
}

/// Every file under `dir`, sorted (none if it does not exist).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A fresh file store in a temporary directory.
pub fn file_store() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = StoreLocation::Dir(dir.path().join("store"));
    TestStore { name: "file", location, guard: Guard::Dir(dir) }
}

/// A fresh store of every backend available to this run (see the module docs).
pub fn backends() -> Vec<TestStore> {
    let mut all = vec![file_store()];
    all.extend(postgres_store());
    all
}

/// Whether a run without PostgreSQL must fail.
fn postgres_required() -> bool {
    std::env::var(REQUIRE_POSTGRES_ENV).is_ok_and(|v| v == "1")
}

/// Skipped: one line, or a failure when PostgreSQL is required.
fn skip_postgres(why: &str) -> Option<TestStore> {
    assert!(!postgres_required(), "{REQUIRE_POSTGRES_ENV}=1 but {why}");
    eprintln!("storage test: PostgreSQL backend skipped ({why})");
    None
}

#[cfg(not(feature = "postgres"))]
fn postgres_store() -> Option<TestStore> {
    skip_postgres(&format!(
        "built without the cargo feature `postgres`: run `cargo test --features postgres` with {POSTGRES_ENV} \
         (and {POSTGRES_PASSWORD_ENV} if the role has a password)"
    ))
}

#[cfg(feature = "postgres")]
fn postgres_store() -> Option<TestStore> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => {
            let database = postgres::Database::create(&url);
            let location = database.location();
            // A receiver migrates at start, a reader never does (docs/receiver-store-postgres.md):
            // migrate now, as `receive migrate` would, so that a test may read an empty store first.
            if let StoreLocation::Postgres(postgres) = &location {
                fleet_receiver::postgres::migrate(postgres).unwrap_or_else(|e| panic!("migrating {postgres}: {e}"));
                // The forwarding tests run against every backend: the outbox is filled only while
                // forwarding is on (as a receiver started with --forward-otlp turns it on).
                fleet_receiver::postgres::set_forwarding(postgres, true)
                    .unwrap_or_else(|e| panic!("turning forwarding on in {postgres}: {e}"));
            }
            Some(TestStore { name: "postgres", location, guard: Guard::Postgres(database) })
        }
        _ => skip_postgres(&format!("{POSTGRES_ENV} is not set")),
    }
}

/// Fresh PostgreSQL databases through `psql` (see the module docs).
#[cfg(feature = "postgres")]
mod postgres {
    use std::process::Command;

    use fleet_receiver::StoreLocation;
    use fleet_wire::keys::SecretString;

    /// A database made for one test, dropped (`WITH (FORCE)`: connections the test left
    /// open are cut) when this is dropped.
    pub struct Database {
        /// The server URL as given (its database is the one we connect to for CREATE/DROP).
        admin_url: String,
        password: Option<String>,
        name: String,
    }

    /// `psql`, `pg_dump`: on PATH, else in the newest `/usr/lib/postgresql/*/bin`.
    fn tool(name: &str) -> String {
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .any(|dir| dir.join(name).is_file());
        if on_path {
            return name.to_string();
        }
        let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin").join(name))
            .filter(|p| p.is_file())
            .collect();
        versions.sort();
        versions.pop().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| name.to_string())
    }

    impl Database {
        /// Make a database with a random name on the server at `url`.
        pub fn create(url: &str) -> Database {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).expect("random");
            let name = format!("fleet_test_{}", random.iter().map(|b| format!("{b:02x}")).collect::<String>());
            let password = std::env::var(super::POSTGRES_PASSWORD_ENV).ok().filter(|p| !p.is_empty());
            let database = Database { admin_url: url.to_string(), password, name };
            database.psql(&format!("CREATE DATABASE {}", database.name));
            database
        }

        /// The store location of this database (with the password attached).
        pub fn location(&self) -> StoreLocation {
            let Ok(StoreLocation::Postgres(mut location)) = StoreLocation::parse(&self.admin_url) else {
                panic!("{}: {} is not a postgres:// URL", super::POSTGRES_ENV, self.admin_url);
            };
            location.dbname = self.name.clone();
            if let Some(password) = &self.password {
                location = location.with_password(SecretString::new(password.clone()));
            }
            StoreLocation::Postgres(location)
        }

        fn command(&self, tool_name: &str) -> Command {
            let mut command = Command::new(tool(tool_name));
            if let Some(password) = &self.password {
                command.env("PGPASSWORD", password);
            }
            command
        }

        fn psql(&self, sql: &str) {
            let out = self
                .command("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.admin_url, "-c", sql])
                .output()
                .unwrap_or_else(|e| panic!("running psql (install PostgreSQL's client): {e}"));
            assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }

        /// `pg_dump --data-only` of the database: every stored byte, as text.
        pub fn dump(&self) -> Vec<u8> {
            let StoreLocation::Postgres(location) = self.location() else { panic!("a postgres location") };
            let out = self
                .command("pg_dump")
                .args(["--data-only", "-h", &location.host, "-p", &location.port.to_string()])
                .args(["-U", &location.user, "-d", &self.name])
                .output()
                .unwrap_or_else(|e| panic!("running pg_dump: {e}"));
            assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        }
    }

    impl Drop for Database {
        /// Never panics (it may run while a failed test unwinds): a database left behind is
        /// named on stderr.
        fn drop(&mut self) {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let out = self.command("psql").args(["-X", "-q", "-d", &self.admin_url, "-c", &sql]).output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!("could not drop test database {}: {out:?}", self.name);
            }
        }
    }
}
