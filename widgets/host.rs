//! The machine as widgets see it: files, directory listings and commands.
//!
//! The agent provides the real implementation (with a root path, a command timeout and an
//! output cap); [`FixtureHost`] serves captured outputs for tests and for `once --replay`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Which operating system's commands and files a host speaks for. Parsers are chosen by this,
/// not by `cfg!(target_os)`, so a Linux CI can replay a Mac.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// macOS (Darwin).
    Macos,
    /// Linux.
    Linux,
    /// Anything else: platform widgets report `Unsupported`.
    Other,
}

impl Os {
    /// The OS this binary was built for.
    pub fn current() -> Os {
        if cfg!(target_os = "macos") {
            Os::Macos
        } else if cfg!(target_os = "linux") {
            Os::Linux
        } else {
            Os::Other
        }
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// Exit code; `None` when it was killed by a signal.
    pub status: Option<i32>,
    /// Standard output, lossily decoded as UTF-8, cut at the host's output cap.
    pub stdout: String,
    /// Standard error, lossily decoded, cut at the cap.
    pub stderr: String,
    /// True when stdout or stderr was cut at the cap.
    pub truncated: bool,
}

impl CommandOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// A file, directory or command could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The file or directory does not exist.
    NotFound(String),
    /// The program is not installed (not on the search path, or not in the replay manifest).
    CommandNotFound(String),
    /// The command did not finish in time and was killed.
    Timeout {
        /// The command line.
        command: String,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// Permission was denied reading the path or running the program.
    PermissionDenied(String),
    /// Any other I/O error: what was being done, on which path, and the OS's message.
    Io {
        /// What was being done, e.g. `"reading"`.
        action: &'static str,
        /// The path or command.
        path: String,
        /// The OS error text.
        message: String,
    },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NotFound(path) => write!(f, "{path}: not found"),
            HostError::CommandNotFound(cmd) => write!(f, "{cmd}: command not found"),
            HostError::Timeout { command, after } => {
                write!(f, "{command}: timed out after {} ms", after.as_millis())
            }
            HostError::PermissionDenied(path) => write!(f, "{path}: permission denied"),
            HostError::Io { action, path, message } => write!(f, "{action} {path}: {message}"),
        }
    }
}

impl std::error::Error for HostError {}

/// Everything a widget may ask of the machine.
pub trait Host {
    /// The OS whose files and commands this host serves.
    fn os(&self) -> Os;
    /// Read a whole text file by absolute path (the host maps it under its root).
    fn read_file(&self, path: &str) -> Result<String, HostError>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn list_dir(&self, path: &str) -> Result<Vec<String>, HostError>;
    /// Run `argv[0]` with the rest as arguments, killing it after `timeout`. A non-zero exit
    /// is not an error here: the output is returned with its status.
    fn run(&self, argv: &[&str], timeout: Duration) -> Result<CommandOutput, HostError>;
    /// True when widgets may open sockets to measure the network (ICMP, HTTP). False under
    /// replay, where only captured outputs are used.
    fn network_allowed(&self) -> bool;
    /// True when the process runs as root (macOS `wdutil` needs it; RAW ICMP sockets too).
    fn is_root(&self) -> bool;
}

/// Default time a command may run.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Strip the fixtures' source header: leading lines that start with `# `, then one blank line.
/// Text without such a header is returned unchanged.
pub fn strip_fixture_header(text: &str) -> &str {
    let mut rest = text;
    let mut saw_header = false;
    while let Some(line_end) = rest.find('\n') {
        let line = &rest[..line_end];
        if line.starts_with("# ") {
            saw_header = true;
            rest = &rest[line_end + 1..];
        } else {
            break;
        }
    }
    if !saw_header {
        return text;
    }
    if let Some(after_blank) = rest.strip_prefix("\r\n").or_else(|| rest.strip_prefix('\n')) {
        after_blank
    } else {
        text
    }
}

/// A host that answers from memory: files by absolute path and commands by their argv joined
/// with single spaces. A command key ending in ` *` matches any further arguments. Anything
/// not in the maps is "not found" / "not installed". Used by tests and by `once --replay`.
#[derive(Debug, Clone)]
pub struct FixtureHost {
    os: Os,
    files: BTreeMap<String, String>,
    commands: BTreeMap<String, CommandOutput>,
    root: bool,
}

impl FixtureHost {
    /// An empty host speaking for `os`.
    pub fn new(os: Os) -> Self {
        FixtureHost { os, files: BTreeMap::new(), commands: BTreeMap::new(), root: true }
    }

    /// Serve `content` (fixture header stripped) at absolute `path`.
    pub fn with_file(mut self, path: &str, content: &str) -> Self {
        self.files.insert(path.to_string(), strip_fixture_header(content).to_string());
        self
    }

    /// Answer the command line `key` (argv joined by spaces, optionally ending in ` *`) with
    /// `stdout` (fixture header stripped) and exit status 0.
    pub fn with_command(mut self, key: &str, stdout: &str) -> Self {
        let output = CommandOutput {
            status: Some(0),
            stdout: strip_fixture_header(stdout).to_string(),
            ..CommandOutput::default()
        };
        self.commands.insert(key.to_string(), output);
        self
    }

    /// Answer the command line `key` with a full output (status, stderr).
    pub fn with_command_output(mut self, key: &str, output: CommandOutput) -> Self {
        self.commands.insert(key.to_string(), output);
        self
    }

    /// Whether [`Host::is_root`] reports root (default true, as the launchd daemon runs).
    pub fn with_root(mut self, root: bool) -> Self {
        self.root = root;
        self
    }

    fn lookup_command(&self, line: &str) -> Option<&CommandOutput> {
        if let Some(out) = self.commands.get(line) {
            return Some(out);
        }
        // Longest wildcard prefix wins, so `ping -c *` beats `ping *`.
        self.commands
            .iter()
            .filter_map(|(key, out)| {
                let prefix = key.strip_suffix(" *")?;
                let matches = line == prefix || line.strip_prefix(prefix).is_some_and(|r| r.starts_with(' '));
                matches.then_some((prefix.len(), out))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, out)| out)
    }
}

impl Host for FixtureHost {
    fn os(&self) -> Os {
        self.os
    }

    fn read_file(&self, path: &str) -> Result<String, HostError> {
        self.files.get(path).cloned().ok_or_else(|| HostError::NotFound(path.to_string()))
    }

    fn list_dir(&self, path: &str) -> Result<Vec<String>, HostError> {
        let dir = format!("{}/", path.trim_end_matches('/'));
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(&dir))
            .filter_map(|rest| rest.split('/').next())
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(HostError::NotFound(path.to_string()));
        }
        Ok(names)
    }

    fn run(&self, argv: &[&str], _timeout: Duration) -> Result<CommandOutput, HostError> {
        let line = argv.join(" ");
        match self.lookup_command(&line) {
            Some(out) => Ok(out.clone()),
            None => Err(HostError::CommandNotFound(argv.first().copied().unwrap_or("").to_string())),
        }
    }

    fn network_allowed(&self) -> bool {
        false
    }

    fn is_root(&self) -> bool {
        self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_stripped_only_when_followed_by_a_blank_line() {
        assert_eq!(strip_fixture_header("# source: x\n# command: y\n\nbody\n"), "body\n");
        assert_eq!(strip_fixture_header("# not a header\nbody\n"), "# not a header\nbody\n");
        assert_eq!(strip_fixture_header("body\n"), "body\n");
    }

    #[test]
    fn commands_match_exactly_or_by_wildcard_and_dirs_derive_from_files() {
        let host = FixtureHost::new(Os::Linux)
            .with_command("ping *", "generic")
            .with_command("ping -c *", "specific")
            .with_command("iw dev", "list")
            .with_file("/sys/class/power_supply/BAT0/uevent", "x")
            .with_file("/sys/class/power_supply/AC/uevent", "y");
        let t = DEFAULT_COMMAND_TIMEOUT;
        assert_eq!(host.run(&["ping", "-c", "3", "127.0.0.1"], t).map(|o| o.stdout), Ok("specific".into()));
        assert_eq!(host.run(&["ping", "x"], t).map(|o| o.stdout), Ok("generic".into()));
        assert_eq!(host.run(&["iw", "dev"], t).map(|o| o.stdout), Ok("list".into()));
        assert_eq!(host.run(&["iw", "dev", "wlan0", "link"], t), Err(HostError::CommandNotFound("iw".into())));
        assert_eq!(host.run(&["pingx"], t), Err(HostError::CommandNotFound("pingx".into())));
        assert_eq!(host.list_dir("/sys/class/power_supply"), Ok(vec!["AC".to_string(), "BAT0".to_string()]));
        assert!(matches!(host.list_dir("/nope"), Err(HostError::NotFound(_))));
    }
}
