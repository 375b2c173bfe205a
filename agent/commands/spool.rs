//! `fleet-agent spool verify | show | requeue-rejected`: look inside the spool, or put the
//! batches a server refused back into it.

use super::{load_config, usage_error, Command};
use crate::cli::{print_error, Args, Common, UsageError, EXIT_OK, EXIT_RUNTIME};
use crate::spool::{rejected, verify, visit_unacked, Spool, SpoolError};

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "spool",
    help: "\
Usage: fleet-agent spool verify [--config FILE]
       fleet-agent spool show [--config FILE] [--limit N]
       fleet-agent spool requeue-rejected [--config FILE]

verify            Walk every segment of the spool (spool.dir in the config) and authenticate
                  every record. Prints one line per segment: its size, good records, torn tail
                  (0/1), bad records, status. Changes nothing (safe while `fleet-agent run` is
                  running; a segment being written may show a torn tail). Exit 0 if every
                  segment is whole and readable, 1 otherwise.
show              Print the unacknowledged records, decrypted, one JSON object per line, oldest
                  first (at most N with --limit), then the batches kept in rejected/ (what,
                  why, how many records). Changes nothing. The output holds the collected data
                  in clear: it goes to your terminal only.
requeue-rejected  Put every batch the server refused for good (kept, sealed, in rejected/)
                  back into the spool, to be sent again, once the cause is fixed (a receiver
                  started without its key, a server bug). Needs the agent stopped (it holds the
                  spool's lock); prints how many batches and records went back.

Exit codes: 0 success, 1 failure (problems found by verify, spool locked or unreadable),
2 usage or config error.
",
    run,
};

fn run(mut args: Args) -> u8 {
    let common = match Common::take(&mut args) {
        Ok(common) => common,
        Err(e) => return usage_error("spool", &e),
    };
    let subcommand = args.positional();
    let limit = match args.value("--limit") {
        Ok(None) => None,
        Ok(Some(text)) => match text.parse::<u64>() {
            Ok(n) if subcommand.as_deref() == Some("show") => Some(n),
            Ok(_) => return usage_error("spool", &UsageError("--limit is for `spool show`".into())),
            Err(_) => return usage_error("spool", &UsageError(format!("--limit: not a count: {text:?}"))),
        },
        Err(e) => return usage_error("spool", &e),
    };
    match subcommand.as_deref() {
        Some("verify" | "show" | "requeue-rejected") => {}
        Some(other) => return usage_error("spool", &UsageError(format!("unknown subcommand `{other}`"))),
        None => return usage_error("spool", &UsageError("missing subcommand (verify, show, requeue-rejected)".into())),
    }
    if let Err(e) = args.finish() {
        return usage_error("spool", &e);
    }
    let config = match load_config(&common) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match subcommand.as_deref() {
        Some("show") => show(&config.spool.dir, limit),
        Some("requeue-rejected") => requeue(&config),
        _ => verify_spool(&config.spool.dir),
    }
}

fn verify_spool(dir: &std::path::Path) -> u8 {
    match verify(dir) {
        Ok(report) => {
            print!("{report}");
            if report.all_good() {
                println!("all good");
                EXIT_OK
            } else {
                println!("problems found (run `fleet-agent run` to recover: torn tails are truncated, bad segments quarantined)");
                EXIT_RUNTIME
            }
        }
        Err(e) => {
            print_error(&e);
            EXIT_RUNTIME
        }
    }
}

fn show(dir: &std::path::Path, limit: Option<u64>) -> u8 {
    let mut shown = 0u64;
    let result = visit_unacked(dir, |record| {
        if limit.is_none_or(|n| shown < n) {
            println!("{}", serde_json::to_string(record).unwrap_or_default());
            shown += 1;
        }
    });
    match result {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("no spool (or no master key) in {}", dir.display());
            return EXIT_RUNTIME;
        }
        Err(e) => {
            print_error(&e);
            return EXIT_RUNTIME;
        }
    }
    match rejected::list(dir) {
        Ok(batches) => {
            for batch in batches {
                eprintln!(
                    "rejected: {} ({} records) at {}: {} [{}]",
                    batch.what,
                    batch.records,
                    batch.at,
                    batch.reason,
                    dir.join(rejected::REJECTED_DIR).join(format!("{:020}.seg", batch.id)).display()
                );
            }
            EXIT_OK
        }
        Err(e) => {
            print_error(&e);
            EXIT_RUNTIME
        }
    }
}

fn requeue(config: &crate::config::Config) -> u8 {
    let mut spool = match Spool::open(&config.spool) {
        Ok(spool) => spool,
        Err(e @ SpoolError::Locked { .. }) => {
            eprintln!("error: {e}: stop `fleet-agent run` first, then requeue, then start it again");
            return EXIT_RUNTIME;
        }
        Err(e) => {
            print_error(&e);
            return EXIT_RUNTIME;
        }
    };
    match spool.requeue_rejected() {
        Ok(done) => {
            println!(
                "put {} rejected batches ({} records) back into {}; they are sent again when the agent runs",
                done.batches,
                done.records,
                config.spool.dir.display()
            );
            EXIT_OK
        }
        Err(e) => {
            print_error(&e);
            EXIT_RUNTIME
        }
    }
}
