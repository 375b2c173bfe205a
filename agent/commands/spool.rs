//! `fleet-agent spool verify`: walk every spool segment and report good, torn and bad records,
//! changing nothing.

use super::{load_config, usage_error, Command};
use crate::cli::{print_error, Args, Common, UsageError, EXIT_OK, EXIT_RUNTIME};
use crate::spool::verify;

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "spool",
    help: "\
Usage: fleet-agent spool verify [--config FILE]

Walk every segment of the spool (spool.dir in the config) and authenticate every record.
Prints one line per segment: its size, good records, torn tail (0/1), bad records, status.
Changes nothing (safe while `fleet-agent run` is running; a segment being written may show
a torn tail). Exit 0 if every segment is whole and readable, 1 otherwise, 2 on usage errors.
",
    run,
};

fn run(mut args: Args) -> u8 {
    let common = match Common::take(&mut args) {
        Ok(common) => common,
        Err(e) => return usage_error("spool", &e),
    };
    match args.positional().as_deref() {
        Some("verify") => {}
        Some(other) => return usage_error("spool", &UsageError(format!("unknown subcommand `{other}`"))),
        None => return usage_error("spool", &UsageError("missing subcommand (verify)".into())),
    }
    if let Err(e) = args.finish() {
        return usage_error("spool", &e);
    }
    let config = match load_config(&common) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match verify(&config.spool.dir) {
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
