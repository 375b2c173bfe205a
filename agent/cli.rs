//! Command-line parsing: the argument reader every command uses ([`Args`]), the options every
//! command accepts ([`Common`]), exit codes and error printing. Hand-written (a few flags do
//! not earn a parser crate's size). Dispatch lives in [`crate::commands`]; both are the
//! command line, on top of the library: no library module imports them.
//!
//! Exit codes: 0 ok, 1 runtime error, 2 usage or config error.

use std::fmt;
use std::path::PathBuf;

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;

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

    /// `-v`/`-q` as the library takes them ([`crate::log::Verbosity`]).
    pub fn verbosity(&self) -> crate::log::Verbosity {
        crate::log::Verbosity(self.verbosity)
    }

    /// The log level: the config's, moved by `-v`/`-q`.
    pub fn log_level(&self, configured: log::LevelFilter) -> log::LevelFilter {
        self.verbosity().apply(configured)
    }
}

/// Print an error and its `source()` chain to stderr, each cause once.
pub fn print_error(error: &dyn std::error::Error) {
    let mut text = Vec::new();
    let _ = write_error(&mut text, error);
    // Under systemd each line is a journal entry: each gets priority `err`.
    let prefix = crate::log::error_line_prefix();
    let lines: String = String::from_utf8_lossy(&text).lines().map(|line| format!("{prefix}{line}\n")).collect();
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), lines.as_bytes());
}

/// Write `error: …` and one `  caused by: …` line per cause. A cause whose text the line
/// above already holds (a `Display` that embeds its source) is not repeated.
pub fn write_error(out: &mut dyn std::io::Write, error: &dyn std::error::Error) -> std::io::Result<()> {
    let mut shown = error.to_string();
    writeln!(out, "error: {shown}")?;
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !shown.contains(&text) {
            writeln!(out, "  caused by: {text}")?;
        }
        shown = text;
        source = cause.source();
    }
    Ok(())
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

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "opening the spool: {}", self.0)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_is_printed_once() {
        let mut out = Vec::new();
        let error = Outer(std::io::Error::other("disk on fire"));
        write_error(&mut out, &error).expect("write");
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text, "error: opening the spool: disk on fire\n", "the embedded cause is not repeated");
        let mut out = Vec::new();
        let plain = crate::config::ConfigError::Read {
            path: "/x/c.json".into(),
            error: std::io::Error::other("permission denied"),
        };
        write_error(&mut out, &plain).expect("write");
        assert_eq!(String::from_utf8_lossy(&out).matches("permission denied").count(), 1);
    }
}
