//! `fleet-agent run`: the service loop.

use super::{load_config, usage_error, Command};
use crate::cli::{print_error, Args, Common, EXIT_OK, EXIT_RUNTIME};
use crate::run::{Agent, Exit};

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
    let exit = Agent::new(config, path, common.verbosity()).run();
    match exit {
        Ok(Exit::Stopped) => EXIT_OK,
        Ok(Exit::Restart) => restart(),
        Err(e) => {
            print_error(&e);
            EXIT_RUNTIME
        }
    }
}

/// `restart_agent`: the agent has stopped cleanly (spool synced, lock released with it);
/// replace this process with a fresh start of the same binary and arguments. The pid stays
/// the same, so launchd and systemd see one service that never stopped. After an upgrade
/// replaced the binary, the new one starts.
fn restart() -> u8 {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next();
    let exe = match std::env::current_exe() {
        Ok(path) => {
            // Linux names a replaced binary "<path> (deleted)": start the file now at <path>.
            let text = path.to_string_lossy();
            match text.strip_suffix(" (deleted)") {
                Some(original) => std::path::PathBuf::from(original),
                None => path,
            }
        }
        Err(_) => match &argv0 {
            Some(arg) => std::path::PathBuf::from(arg),
            None => return EXIT_RUNTIME,
        },
    };
    let error = std::process::Command::new(&exe).args(args).exec();
    log::error!(
        "restart_agent: could not start {} again: {error}; exiting so the service manager restarts it",
        exe.display()
    );
    EXIT_RUNTIME
}
