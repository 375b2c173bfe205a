//! The command line's top: [`main`] parses `argv` and dispatches on [`ALL`], the registry of
//! commands (one file per command; adding a command is a file here and one line in `ALL`).
//! Every command answers `--help`.
//!
//! Exit codes: 0 ok, 1 runtime error, 2 usage or config error ([`crate::cli`]).
//!
//! Layering: commands use the library ([`crate::run`], [`crate::demo`], the receiver crate,
//! …) and [`crate::cli`], the argument reader they share; nothing in the library uses either
//! (`-v`/`-q` reach the service loop as a [`crate::log::Verbosity`]).

mod demo;
mod keygen;
mod once;
mod receive;
mod receive_store;
mod run;
mod spool;
mod status;
mod validate;

use std::ffi::OsString;
use std::process::ExitCode;

use crate::cli::{Args, Common, EXIT_OK, EXIT_USAGE};
use crate::config::{Config, ConfigError};

const MAIN_HELP: &str = "\
fleet-agent: endpoint telemetry agent with an encrypted spool and sealed batches

Usage: fleet-agent [global options] <command> [options]
       fleet-agent help <command>

Commands:
  run        the service loop: collect, spool, send (used by launchd/systemd)
  once       collect every enabled widget once and print one JSON object
  demo       start a receiver on 127.0.0.1, run the agent against it, show what arrived
  keygen     print a new random key (base64 of 32 bytes)
  validate   check a config file: prints `ok` or every error (exit 2)
  status     show configuration, spool and sender state
  receive    run the bundled receiver
  spool      inspect the spool (`spool verify`)

Global options (before or after the command):
  --config FILE   config file (default: the OS default path if it exists, else built-in defaults)
  -v, -vv, -q     more / less logging (moves log_level)
  -h, --help      help for fleet-agent or a command (`fleet-agent help CMD` too)
  -V, --version   print the version
";

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

/// Move the global options given before the command (`fleet-agent -v --config F run`) out of
/// `argv`; they are handed to the command with its own arguments, where order does not matter.
fn leading_globals(argv: &mut Vec<String>) -> Vec<String> {
    let mut globals = Vec::new();
    while let Some(first) = argv.first() {
        let takes_value = first == "--config";
        let is_global = takes_value || first.starts_with("--config=") || matches!(first.as_str(), "-v" | "-vv" | "-q");
        if !is_global {
            break;
        }
        globals.push(argv.remove(0));
        if takes_value && !argv.is_empty() {
            globals.push(argv.remove(0));
        }
    }
    globals
}

/// Parse `argv` and run the command; the process exit code.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let mut argv: Vec<String> = argv.into_iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let globals = leading_globals(&mut argv);
    if argv.is_empty() {
        eprint!("{MAIN_HELP}");
        return ExitCode::from(EXIT_USAGE);
    }
    let command = argv.remove(0);
    match command.as_str() {
        "-h" | "--help" | "help" => match argv.first().map(String::as_str) {
            None => {
                print!("{MAIN_HELP}");
                ExitCode::from(EXIT_OK)
            }
            Some(name) => match find(name) {
                Some(command) => {
                    print!("{}", command.help);
                    ExitCode::from(EXIT_OK)
                }
                None => unknown_command(name),
            },
        },
        "-V" | "--version" => {
            println!("fleet-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::from(EXIT_OK)
        }
        name => match find(name) {
            Some(command) => {
                argv.extend(globals);
                let mut args = Args::new(argv);
                if args.flag(&["-h", "--help"]) {
                    print!("{}", command.help);
                    return ExitCode::from(EXIT_OK);
                }
                ExitCode::from((command.run)(args))
            }
            None => unknown_command(name),
        },
    }
}

fn unknown_command(name: &str) -> ExitCode {
    eprintln!("error: unknown command `{name}`\n");
    eprint!("{MAIN_HELP}");
    ExitCode::from(EXIT_USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_options_before_the_command_are_moved_after_it() {
        let mut argv: Vec<String> =
            ["-v", "--config", "a.json", "-q", "--config=b.json", "run", "-v"].iter().map(|s| s.to_string()).collect();
        let globals = leading_globals(&mut argv);
        assert_eq!(globals, ["-v", "--config", "a.json", "-q", "--config=b.json"]);
        assert_eq!(argv, ["run", "-v"]);
        let mut only: Vec<String> = vec!["--config".into()];
        assert_eq!(leading_globals(&mut only), ["--config"], "the command then reports the missing value");
    }

    /// The layering the module docs promise: outside `agent/commands/`, no file names
    /// `crate::commands` in code, and none but `cli.rs` itself names `crate::cli` (doc
    /// comments may point at them), so the command line sits on top of the library and never
    /// the reverse.
    #[test]
    fn no_library_module_uses_the_command_line() {
        fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
            let entries = std::fs::read_dir(dir).expect("read agent/");
            for entry in entries {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    if !path.ends_with("commands") || path.parent().is_some_and(|p| p.ends_with("sender")) {
                        visit(&path, found);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("main.rs") {
                    let is_cli = path.ends_with("cli.rs");
                    let text = std::fs::read_to_string(&path).expect("read source");
                    for (n, line) in text.lines().enumerate() {
                        let code = !line.trim_start().starts_with("//");
                        if code && (line.contains("crate::commands") || (!is_cli && line.contains("crate::cli"))) {
                            found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        let agent = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("agent");
        let mut found = Vec::new();
        visit(&agent, &mut found);
        assert!(found.is_empty(), "library modules importing the command line:\n{}", found.join("\n"));
    }
}
