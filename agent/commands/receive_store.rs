//! `fleet-agent receive ls|show|verify|rekey`: look at and look after a receiver's store
//! without curl or reading files: everything goes through the storage seam
//! ([`fleet_receiver::StorageRead`], any backend) and, for the file store, [`rekey`].

use serde_json::Value;

use super::receive::{keys, refuse_removed_flags, store_keys, store_location};
use super::usage_error;
use crate::cli::{print_error, Args, Common, UsageError, EXIT_OK, EXIT_RUNTIME};
use fleet_receiver::storage::{NewestRows, RowQuery};
use fleet_receiver::store::rekey;
use fleet_receiver::summary::{print_summary, row_line};
use fleet_receiver::{open_reader, StorageRead, StoreKeys, StoreLocation};

/// Run `receive SUB args…`; the exit code.
pub fn run(sub: &str, mut args: Args) -> u8 {
    let common = match Common::take(&mut args).and_then(|c| refuse_removed_flags(&mut args).map(|()| c)) {
        Ok(common) => common,
        Err(e) => return usage_error("receive", &e),
    };
    crate::log::init(common.log_level(log::LevelFilter::Warn));
    let result = match sub {
        "ls" => ls(args),
        "show" => show(args),
        "verify" => verify(args),
        "migrate" => migrate(args),
        _ => rekey_command(args),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(e)) => usage_error("receive", &e),
        Err(Failure::Store(e)) => {
            print_error(&e);
            EXIT_RUNTIME
        }
    }
}

enum Failure {
    Usage(UsageError),
    Store(fleet_receiver::StoreError),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Failure::Usage(e)
    }
}

impl From<fleet_receiver::StoreError> for Failure {
    fn from(e: fleet_receiver::StoreError) -> Self {
        Failure::Store(e)
    }
}

/// `--store DIR_OR_URL` and the store keys: a reader of any backend (a directory must exist).
fn reader(args: &mut Args) -> Result<Box<dyn StorageRead>, Failure> {
    let location = store_location(args)?;
    if let StoreLocation::Dir(dir) = &location {
        if !dir.is_dir() {
            return Err(UsageError(format!("no store at {}", dir.display())).into());
        }
    }
    let keys = store_keys(args, false)?;
    Ok(open_reader(&location, keys)?)
}

fn ls(mut args: Args) -> Result<u8, Failure> {
    let reader = reader(&mut args)?;
    args.finish()?;
    reader.check_keys()?;
    let summaries = reader.machines()?;
    print_summary(&summaries, "Machines in the store (decrypted):");
    Ok(EXIT_OK)
}

fn show(mut args: Args) -> Result<u8, Failure> {
    let reader = reader(&mut args)?;
    let widget = args.value("--widget")?;
    let since = args.value("--since")?;
    if let Some(since) = &since {
        let date = since.get(..10).unwrap_or("");
        if !(date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-') {
            return Err(UsageError(format!(
                "--since: `{since}` is not a UTC time like 2026-11-22 or 2026-11-22T13:00:00Z"
            ))
            .into());
        }
    }
    let limit = match args.value("--limit")? {
        None => 50,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| UsageError(format!("--limit: `{text}` is not a positive number")))?,
    };
    let json = args.flag(&["--json"]);
    let machine = args.positional().ok_or_else(|| UsageError("receive show needs a MACHINE".into()))?;
    args.finish()?;
    reader.check_keys()?;
    if !reader.machine_ids()?.contains(&machine) {
        return Err(UsageError(format!("no machine `{machine}` in {} (see `receive ls`)", reader.describe())).into());
    }
    let query = RowQuery { widget, since, limit };
    let NewestRows { rows: newest, bad } = reader.newest(&machine, &query)?;
    for (received, row) in &newest {
        if json {
            println!("{}", Value::Object(row.clone()));
            continue;
        }
        println!("{}", row_line(received, row));
    }
    if newest.is_empty() && !json {
        println!("no rows match");
    }
    if bad > 0 {
        eprintln!(
            "warning: {bad} rows of {machine} did not authenticate and were skipped (run `fleet-agent receive verify`)"
        );
    }
    Ok(EXIT_OK)
}

/// `receive migrate`: the PostgreSQL schema brought to this build's version
/// (docs/receiver-store-postgres.md, "Migrations"), safe beside running receivers.
fn migrate(mut args: Args) -> Result<u8, Failure> {
    let location = store_location(&mut args)?;
    let forwarding = match args.value("--forwarding")?.as_deref() {
        None => None,
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(other) => return Err(UsageError(format!("--forwarding: `{other}` is neither `on` nor `off`")).into()),
    };
    args.finish()?;
    let StoreLocation::Postgres(postgres) = location else {
        return Err(UsageError(
            "receive migrate is for a PostgreSQL store (--store postgres://USER@HOST/DBNAME): a directory store has \
             no schema"
                .into(),
        )
        .into());
    };
    #[cfg(feature = "postgres")]
    {
        let migrated = fleet_receiver::postgres::migrate(&postgres)?;
        println!("schema version {} (was {}) in {postgres}", migrated.to, migrated.from);
        if let Some(enabled) = forwarding {
            let set = fleet_receiver::postgres::set_forwarding(&postgres, enabled)?;
            let was = if set.was_enabled { "on" } else { "off" };
            if enabled {
                println!("forwarding on (was {was})");
            } else {
                println!("forwarding off (was {was}): {} queued entries removed", set.emptied);
            }
        }
        Ok(EXIT_OK)
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = forwarding;
        Err(fleet_receiver::StoreError::Unsupported {
            store: postgres.to_string(),
            why: "this fleet-agent was built without PostgreSQL support: build it with the cargo feature `postgres` \
                  (cargo build --release --features postgres)"
                .into(),
        }
        .into())
    }
}

fn verify(mut args: Args) -> Result<u8, Failure> {
    let reader = reader(&mut args)?;
    args.finish()?;
    let checks = reader.verify()?;
    let mut any_bad = false;
    println!("{:<32} {:>10} {:>6} {:>6}", "machine", "good", "bad", "torn");
    for check in &checks {
        let total = check.total();
        any_bad |= total.bad > 0;
        println!("{:<32} {:>10} {:>6} {:>6}", check.machine_id, total.good, total.bad, total.torn);
        for problem in &check.problems {
            println!("  {}: {}", problem.location, problem.problem);
        }
    }
    if checks.is_empty() {
        println!("(no machines)");
    }
    if any_bad {
        println!("bad rows found: they were changed, moved or swapped, or need another store key; exports skip them");
        Ok(EXIT_RUNTIME)
    } else {
        println!("all good (torn: rows of a crash never acknowledged, cut when the receiver next starts)");
        Ok(EXIT_OK)
    }
}

fn rekey_command(mut args: Args) -> Result<u8, Failure> {
    let location = store_location(&mut args)?;
    let old = keys(&mut args, "--old-key-file", "FLEET_STORE_KEY")?;
    let new = keys(&mut args, "--new-key-file", "FLEET_NEW_STORE_KEY")?;
    let from_plaintext = args.flag(&["--from-plaintext"]);
    args.finish()?;
    if new.len() != 1 {
        return Err(UsageError(
            "receive rekey needs exactly one --new-key-file FILE (make one with `fleet-agent keygen`)".into(),
        )
        .into());
    }
    if old.is_empty() && !from_plaintext {
        return Err(UsageError(
            "receive rekey needs --old-key-file FILE (or --from-plaintext to seal a plaintext store)".into(),
        )
        .into());
    }
    let dir =
        match location {
            StoreLocation::Dir(dir) => dir,
            #[cfg(feature = "postgres")]
            StoreLocation::Postgres(postgres) => {
                // Re-sealed in place, chunk by chunk (docs/receiver-store-postgres.md, "Re-keying").
                let (old, new) = (StoreKeys::new(&old), StoreKeys::new(&new));
                let done = fleet_receiver::postgres::rekey::rekey(&postgres, &old, &new, from_plaintext)?;
                println!(
                    "rekeyed {postgres}: {} rows sealed again under store key id {}, {} already under it",
                    done.rows,
                    new.current_kid().unwrap_or("?"),
                    done.already
                );
                return Ok(EXIT_OK);
            }
            #[cfg(not(feature = "postgres"))]
            StoreLocation::Postgres(postgres) => return Err(fleet_receiver::StoreError::Unsupported {
                store: postgres.to_string(),
                why: "receive rekey rewrites a directory store here; a PostgreSQL store needs a build with the cargo \
                      feature `postgres`"
                    .into(),
            }
            .into()),
        };
    if !dir.is_dir() {
        return Err(UsageError(format!("no store at {}", dir.display())).into());
    }
    let (old, new) = (StoreKeys::new(&old), StoreKeys::new(&new));
    let report = rekey(&dir, &old, &new, from_plaintext)?;
    println!(
        "rekeyed {}: {} files rewritten ({} rows) under store key id {}, {} already under it, {} torn lines dropped",
        dir.display(),
        report.rewritten,
        report.rows,
        new.current_kid().unwrap_or("?"),
        report.already,
        report.torn_dropped
    );
    Ok(EXIT_OK)
}
