//! One file per command; [`ALL`] is the registry the CLI dispatches on. Adding a command is a
//! file here and one line in `ALL`.

mod demo;
mod keygen;
mod once;
mod receive;
mod receive_store;
mod run;
mod spool;
mod status;
mod validate;

use crate::cli::{Args, Common, EXIT_USAGE};
use crate::config::{Config, ConfigError};

/// A subcommand: its name, its `--help` text and its entry point (returns the exit code).
pub struct Command {
    /// What the user types.
    pub name: &'static str,
    /// Printed for `fleet-agent <name> --help`.
    pub help: &'static str,
    /// Runs the command on the remaining arguments.
    pub run: fn(Args) -> u8,
}

/// Every command.
pub static ALL: &[&Command] = &[
    &run::COMMAND,
    &once::COMMAND,
    &demo::COMMAND,
    &keygen::COMMAND,
    &validate::COMMAND,
    &status::COMMAND,
    &receive::COMMAND,
    &spool::COMMAND,
];

/// Look a command up by name.
pub fn find(name: &str) -> Option<&'static Command> {
    ALL.iter().copied().find(|c| c.name == name)
}

/// Print every config error to stderr (one per line).
pub fn print_config_errors(errors: &[ConfigError]) {
    let prefix = crate::log::error_line_prefix();
    for error in errors {
        eprintln!("{prefix}error: {error}");
    }
}

/// Load the config named by the common options, printing errors; `Err(exit code)` on failure.
pub fn load_config(common: &Common) -> Result<Config, u8> {
    Config::load(common.config_path().as_deref()).map_err(|errors| {
        print_config_errors(&errors);
        EXIT_USAGE
    })
}

/// Print a usage error with a pointer to `--help`; returns exit code 2.
pub fn usage_error(command: &str, error: &crate::cli::UsageError) -> u8 {
    eprintln!("error: {error}\nrun `fleet-agent {command} --help` for usage");
    EXIT_USAGE
}
