//! `fleet-agent demo`: receiver + agent on loopback with fresh keys.

use super::{usage_error, Command};
use crate::cli::{print_error, Args, Common, EXIT_OK, EXIT_RUNTIME};
use crate::demo::{self, DemoPlan};

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "demo",
    help: "\
Usage: fleet-agent demo [-v|-q]

Start the bundled receiver on 127.0.0.1 (a free port), run the agent against it with every
widget (ping to 127.0.0.1, speedtest against the receiver), fresh keys and a temporary spool,
first with the v2 protocol, then with the Atlas protocol, and print what the receiver stored,
decrypted. Everything is removed at the end. Takes about 10 seconds; no config is read.
",
    run,
};

fn run(mut args: Args) -> u8 {
    let common = match Common::take(&mut args) {
        Ok(common) => common,
        Err(e) => return usage_error("demo", &e),
    };
    if let Err(e) = args.finish() {
        return usage_error("demo", &e);
    }
    crate::log::init(common.log_level(log::LevelFilter::Warn));
    match demo::run(DemoPlan::default(), common.verbosity()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            print_error(&e);
            EXIT_RUNTIME
        }
    }
}
