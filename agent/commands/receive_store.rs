//! `fleet-agent receive ls|show|verify|rekey`: look at and look after a receiver's store
//! without curl or reading files: everything goes through [`StoreReader`] and [`rekey`].

use std::collections::VecDeque;

use serde_json::{Map, Value};

use super::receive::{keys, refuse_removed_flags, store_dir, store_keys};
use super::usage_error;
use crate::cli::{print_error, Args, Common, UsageError, EXIT_OK, EXIT_RUNTIME};
use fleet_receiver::store::{rekey, StoreReader, FILES, RECORDS_FILE};
use fleet_receiver::StoreKeys;

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

/// `--store DIR` and the store keys, checked against every row's key id.
fn reader(args: &mut Args) -> Result<StoreReader, Failure> {
    let dir = store_dir(args)?;
    if !dir.is_dir() {
        return Err(UsageError(format!("no store at {}", dir.display())).into());
    }
    let keys = store_keys(args, false)?;
    Ok(StoreReader::new(&dir, keys))
}

fn ls(mut args: Args) -> Result<u8, Failure> {
    let reader = reader(&mut args)?;
    args.finish()?;
    reader.check_keys()?;
    let summaries = reader.machines()?;
    fleet_receiver::summary::print_summary(&summaries, "Machines in the store (decrypted):");
    Ok(EXIT_OK)
}

/// One row of `show`: (received_at, stored row).
type Shown = (String, Map<String, Value>);

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
        return Err(
            UsageError(format!("no machine `{machine}` in {} (see `receive ls`)", reader.root().display())).into()
        );
    }
    // The newest `limit` rows of each file (bounded memory), then merged newest first.
    let mut newest: Vec<Shown> = Vec::new();
    let mut bad = 0;
    for file in FILES {
        let mut last: VecDeque<Shown> = VecDeque::with_capacity(limit);
        let mut keep = |row: Map<String, Value>| {
            let received = row.get("received_at").and_then(Value::as_str).unwrap_or("").to_string();
            let kind = row.get("kind").and_then(Value::as_str).unwrap_or("");
            let row_widget = row.get("widget").and_then(Value::as_str);
            let wanted = kind != "batch"
                && widget.as_deref().is_none_or(|w| row_widget == Some(w))
                && since.as_deref().is_none_or(|s| received.as_str() >= s);
            if wanted {
                if last.len() == limit {
                    last.pop_front();
                }
                last.push_back((received, row));
            }
            true
        };
        let stats = if file == RECORDS_FILE {
            reader.visit_records(&machine, &mut keep)?
        } else {
            reader.visit_v1(&machine, file, &mut keep)?
        };
        bad += stats.bad;
        newest.extend(last);
    }
    // Files were read oldest first: reversed, a stable sort keeps rows of one instant newest first.
    newest.reverse();
    newest.sort_by(|a, b| b.0.cmp(&a.0));
    newest.truncate(limit);
    for (received, row) in &newest {
        if json {
            println!("{}", Value::Object(row.clone()));
            continue;
        }
        let kind = row.get("kind").and_then(Value::as_str).unwrap_or("?");
        let widget = row.get("widget").and_then(Value::as_str).unwrap_or("-");
        let body =
            row.get("record").or_else(|| row.get("log")).or_else(|| row.get("report").and_then(|r| r.get("metrics")));
        let data = body.map(|b| b.get("data").unwrap_or(b)).unwrap_or(&Value::Null);
        println!("{received}  {kind:<10} {widget:<12} {}", fleet_receiver::summary::compact(data, 120));
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
            println!("  {} line {}: {}", problem.path.display(), problem.line + 1, problem.problem);
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
    let dir = store_dir(&mut args)?;
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
