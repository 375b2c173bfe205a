//! `fleet-agent validate`: check a config file before starting (systemd `ExecStartPre=`).

use super::{print_config_errors, usage_error, Command};
use crate::cli::{Args, Common, EXIT_OK, EXIT_USAGE};
use crate::config::Config;

/// Registry entry.
pub static COMMAND: Command = Command {
    name: "validate",
    help: "\
Usage: fleet-agent validate [--config FILE]

Check the config: prints `ok` and exits 0, or prints every error found (each naming the file,
or the environment variable, and the field) and exits 2. Without --config and without a file
at the OS default path it validates the built-in defaults and says so. Checks JSON syntax,
unknown keys, value types, key encoding, server_url (a base URL, no credentials), pinned
certificate fingerprints, intervals, the machine id, widget options, and that a file holding a
key is not readable by group or others.
",
    run,
};

fn run(mut args: Args) -> u8 {
    let common = match Common::take(&mut args) {
        Ok(common) => common,
        Err(e) => return usage_error("validate", &e),
    };
    if let Err(e) = args.finish() {
        return usage_error("validate", &e);
    }
    let path = common.config_path();
    match Config::load(path.as_deref()) {
        Ok(config) if path.is_some() => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            println!("ok");
            EXIT_OK
        }
        Ok(_) => {
            println!("ok (no config file at {}: built-in defaults)", crate::config::default_config_path().display());
            EXIT_OK
        }
        Err(errors) => {
            print_config_errors(&errors);
            EXIT_USAGE
        }
    }
}
