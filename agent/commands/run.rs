//! `fleet-agent run`: the service loop.

use super::{load_config, usage_error, Command};
use crate::cli::{print_error, Args, Common, EXIT_OK, EXIT_RUNTIME};
use crate::run::Agent;

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "run",
    help: "\
Usage: fleet-agent run [--config FILE] [-v|-q]

The service loop: every widget runs on its own interval (default `interval`, 10 s).
Signals: SIGTERM/SIGINT stop (exit 0), SIGHUP reloads the config (a bad new config is logged
and the old one kept), SIGUSR1 collects now.
",
    run,
};

fn run(mut args: Args) -> u8 {
    // First, before anything that can take time: a SIGTERM or SIGHUP from here on is handled
    // by the loop (stop cleanly, reload), never by the default action (see signals.rs).
    if let Err(e) = crate::signals::Signals::install() {
        print_error(&crate::run::RunError::Signals(e));
        return EXIT_RUNTIME;
    }
    let common = match Common::take(&mut args) {
        Ok(common) => common,
        Err(e) => return usage_error("run", &e),
    };
    if let Err(e) = args.finish() {
        return usage_error("run", &e);
    }
    let config = match load_config(&common) {
        Ok(config) => config,
        Err(code) => return code,
    };
    crate::log::init(common.log_level(config.log_level));
    let path = common.config_path();
    match Agent::new(config, path, common).run() {
        Ok(()) => EXIT_OK,
        Err(e) => {
            print_error(&e);
            EXIT_RUNTIME
        }
    }
}
