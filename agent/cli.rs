//! Command-line parsing and dispatch. Hand-written (a few flags do not earn a parser crate's
//! size); every command answers `--help`.
//!
//! Exit codes: 0 ok, 1 runtime error, 2 usage or config error.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::commands;

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;

const MAIN_HELP: &str = "\
fleet-agent: endpoint telemetry agent with an encrypted spool and sealed batches

Usage: fleet-agent <command> [options]

Commands:
  run        the service loop: collect, spool, send (used by launchd/systemd)
  once       collect every enabled widget once and print one JSON object
  demo       start a receiver on 127.0.0.1, run the agent against it, show what arrived
  keygen     print a new random key (base64 of 32 bytes)
  validate   check a config file: prints `ok` or every error (exit 2)
  status     show configuration, spool and sender state
  receive    run the bundled receiver
  spool      inspect the spool (`spool verify`)

Global options:
  --config FILE   config file (default: the OS default path if it exists, else built-in defaults)
  -v, -q          more / less logging (overrides log_level)
  -h, --help      help for fleet-agent or a command
  -V, --version   print the version
";

/// A command-line mistake; printed with the command's usage hint, exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The arguments after the command name, consumed option by option. Whatever is left at
/// [`Args::finish`] is an error, so a misspelt flag never goes unnoticed.
#[derive(Debug)]
pub struct Args {
    rest: Vec<String>,
}

impl Args {
    /// Wrap the arguments (after the command name).
    pub fn new(rest: Vec<String>) -> Self {
        Args { rest }
    }

    /// Remove a boolean flag (any of `names`); true if it was present.
    pub fn flag(&mut self, names: &[&str]) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| !names.contains(&a.as_str()));
        self.rest.len() != before
    }

    /// Count and remove every occurrence of a flag.
    pub fn count(&mut self, name: &str) -> usize {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        before - self.rest.len()
    }

    /// Remove `--name VALUE` or `--name=VALUE`; the last one wins.
    pub fn value(&mut self, name: &str) -> Result<Option<String>, UsageError> {
        Ok(self.values(name)?.pop())
    }

    /// Remove every `--name VALUE` / `--name=VALUE`, in order (a flag that may repeat).
    pub fn values(&mut self, name: &str) -> Result<Vec<String>, UsageError> {
        let mut found = Vec::new();
        let mut i = 0;
        while i < self.rest.len() {
            if self.rest[i] == name {
                if i + 1 >= self.rest.len() {
                    return Err(UsageError(format!("{name} needs a value")));
                }
                found.push(self.rest.remove(i + 1));
                self.rest.remove(i);
            } else if let Some(v) = self.rest[i].strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                found.push(v.to_string());
                self.rest.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// Remove the first argument if it is one of `names` (a subcommand); which one.
    pub fn subcommand(&mut self, names: &[&str]) -> Option<String> {
        let first = self.rest.first()?;
        names.contains(&first.as_str()).then(|| self.rest.remove(0))
    }

    /// Remove the next positional argument (not starting with `-`).
    pub fn positional(&mut self) -> Option<String> {
        let i = self.rest.iter().position(|a| !a.starts_with('-'))?;
        Some(self.rest.remove(i))
    }

    /// Fail on anything not consumed.
    pub fn finish(self) -> Result<(), UsageError> {
        match self.rest.first() {
            None => Ok(()),
            Some(arg) => Err(UsageError(format!("unexpected argument `{arg}`"))),
        }
    }
}

/// Options every command accepts.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `-v` count minus `-q` count.
    pub verbosity: i32,
}

impl Common {
    /// Take the common options out of `args`.
    pub fn take(args: &mut Args) -> Result<Self, UsageError> {
        let config = args.value("--config")?.map(PathBuf::from);
        let verbosity = args.count("-v") as i32 - args.count("-q") as i32 + 2 * args.count("-vv") as i32;
        Ok(Common { config, verbosity })
    }

    /// The config file to load: `--config`, else the OS default if it exists, else none.
    pub fn config_path(&self) -> Option<PathBuf> {
        match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(crate::config::default_config_path()).filter(|p| p.exists()),
        }
    }

    /// The log level: the config's, moved by `-v`/`-q`.
    pub fn log_level(&self, configured: log::LevelFilter) -> log::LevelFilter {
        use log::LevelFilter::*;
        let levels = [Off, Error, Warn, Info, Debug, Trace];
        let at = levels.iter().position(|l| *l == configured).unwrap_or(3) as i32;
        levels[(at + self.verbosity).clamp(0, 5) as usize]
    }
}

/// Print an error and its `source()` chain to stderr.
pub fn print_error(error: &dyn std::error::Error) {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

/// Parse `argv` and run the command; the process exit code.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let mut argv: Vec<String> = argv.into_iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    if argv.is_empty() {
        eprint!("{MAIN_HELP}");
        return ExitCode::from(EXIT_USAGE);
    }
    let command = argv.remove(0);
    let args = Args::new(argv);
    match command.as_str() {
        "-h" | "--help" | "help" => {
            print!("{MAIN_HELP}");
            ExitCode::from(EXIT_OK)
        }
        "-V" | "--version" => {
            println!("fleet-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::from(EXIT_OK)
        }
        name => match commands::find(name) {
            Some(command) => {
                let mut args = args;
                if args.flag(&["-h", "--help"]) {
                    print!("{}", command.help);
                    return ExitCode::from(EXIT_OK);
                }
                ExitCode::from((command.run)(args))
            }
            None => {
                eprintln!("error: unknown command `{name}`\n");
                eprint!("{MAIN_HELP}");
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::new(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn values_flags_and_leftovers() {
        let mut a = args(&["--config", "a.json", "-v", "-v", "--listen=1.2.3.4:5", "x"]);
        assert_eq!(a.value("--config"), Ok(Some("a.json".into())));
        assert_eq!(a.value("--listen"), Ok(Some("1.2.3.4:5".into())));
        assert_eq!(a.count("-v"), 2);
        assert_eq!(a.positional(), Some("x".into()));
        assert_eq!(a.finish(), Ok(()));
        assert!(args(&["--config"]).value("--config").is_err());
        assert_eq!(args(&["--bogus"]).finish(), Err(UsageError("unexpected argument `--bogus`".into())));
    }

    #[test]
    fn verbosity_moves_the_level() {
        let common = Common { config: None, verbosity: 1 };
        assert_eq!(common.log_level(log::LevelFilter::Info), log::LevelFilter::Debug);
        let quiet = Common { config: None, verbosity: -9 };
        assert_eq!(quiet.log_level(log::LevelFilter::Info), log::LevelFilter::Off);
    }
}
