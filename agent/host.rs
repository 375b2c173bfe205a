//! The real [`Host`]: files under a root directory and commands run with a timeout and an
//! output cap.
//!
//! Commands run with `LC_ALL=C` (parsers expect English, `.` decimals) and a `PATH` that
//! includes the system directories where `ioreg`, `system_profiler`, `iw` and `ping` live,
//! whatever the service manager's environment was. Output beyond the cap is read and dropped
//! so a chatty command can neither block on a full pipe nor grow memory. Both output pipes are
//! read on the calling thread, waiting in one `poll` on the two (no reader threads).

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use fleet_widgets::{CommandOutput, Host, HostError, Os};

/// Default cap on each of stdout and stderr.
pub const DEFAULT_OUTPUT_CAP: usize = 4 * 1024 * 1024;

/// Search path for commands, independent of the caller's environment.
const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Files, directories and commands of this machine.
pub struct SystemHost {
    root: PathBuf,
    output_cap: usize,
    root_user: bool,
}

impl SystemHost {
    /// The machine itself (root `/`).
    pub fn new() -> Self {
        Self::with_root(PathBuf::from("/"))
    }

    /// Files are read under `root` (tests point this at a fake tree).
    pub fn with_root(root: PathBuf) -> Self {
        SystemHost { root, output_cap: DEFAULT_OUTPUT_CAP, root_user: effective_uid_is_root() }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Default for SystemHost {
    fn default() -> Self {
        Self::new()
    }
}

fn io_error(action: &'static str, path: &Path, error: std::io::Error) -> HostError {
    match error.kind() {
        std::io::ErrorKind::NotFound => HostError::NotFound(path.display().to_string()),
        std::io::ErrorKind::PermissionDenied => HostError::PermissionDenied(path.display().to_string()),
        _ => HostError::Io { action, path: path.display().to_string(), message: error.to_string() },
    }
}

/// Read `reader` to the end, keeping at most `cap` bytes; returns (text, truncated).
fn read_capped(mut reader: impl Read, cap: usize) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

/// One output pipe of a child, read into a capped buffer on the calling thread.
struct Capture<P> {
    /// `None` once it reached end of file (or failed).
    pipe: Option<P>,
    kept: Vec<u8>,
    truncated: bool,
}

impl<P: Read + AsFd> Capture<P> {
    fn new(pipe: Option<P>) -> Self {
        Capture { pipe, kept: Vec::new(), truncated: false }
    }

    /// Read what the pipe holds now (one read: it never blocks after `poll` said readable).
    fn read_ready(&mut self, cap: usize) {
        let Some(pipe) = self.pipe.as_mut() else { return };
        let mut buf = [0u8; 8192];
        match pipe.read(&mut buf) {
            Ok(0) => self.pipe = None,
            Ok(n) => {
                let room = cap.saturating_sub(self.kept.len());
                self.truncated |= n > room;
                self.kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => self.pipe = None,
        }
    }

    fn into_output(self) -> (String, bool) {
        (String::from_utf8_lossy(&self.kept).into_owned(), self.truncated)
    }
}

/// Read the child's stdout and stderr to end of file on this thread, waiting in one `poll` on
/// both (no reader threads: a run wakes the agent once per burst of output, usually once).
/// False when `deadline` passed first.
fn capture_until<A: Read + AsFd, B: Read + AsFd>(
    out: &mut Capture<A>,
    err: &mut Capture<B>,
    cap: usize,
    deadline: Instant,
) -> bool {
    loop {
        let (out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(2);
            if let Some(pipe) = out.pipe.as_ref() {
                fds.push(PollFd::new(pipe, PollFlags::IN));
            }
            if let Some(pipe) = err.pipe.as_ref() {
                fds.push(PollFd::new(pipe, PollFlags::IN));
            }
            if fds.is_empty() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let timeout = Timespec::try_from(left).unwrap_or(Timespec { tv_sec: 60, tv_nsec: 0 });
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return false,
            }
            // Readable, end of file (HUP) or an error: a read tells which.
            let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
            let first = fds.first().is_some_and(ready);
            let second = fds.get(1).is_some_and(ready);
            match (out.pipe.is_some(), err.pipe.is_some()) {
                (true, true) => (first, second),
                (true, false) => (first, false),
                _ => (false, first),
            }
        };
        if out_ready {
            out.read_ready(cap);
        }
        if err_ready {
            err.read_ready(cap);
        }
    }
}

/// Wait for a child whose output is closed until `deadline`, killing it past that (`None`).
/// It has usually exited already; else it is polled (1 ms, doubling, 50 ms at most).
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<std::process::ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl Host for SystemHost {
    fn os(&self) -> Os {
        Os::current()
    }

    fn read_file(&self, path: &str) -> Result<String, HostError> {
        let full = self.resolve(path);
        let file = std::fs::File::open(&full).map_err(|e| io_error("opening", &full, e))?;
        let (text, _) = read_capped(file, self.output_cap);
        Ok(text)
    }

    fn list_dir(&self, path: &str) -> Result<Vec<String>, HostError> {
        let full = self.resolve(path);
        let entries = std::fs::read_dir(&full).map_err(|e| io_error("listing", &full, e))?;
        let mut names: Vec<String> =
            entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        Ok(names)
    }

    fn run(&self, argv: &[&str], timeout: Duration) -> Result<CommandOutput, HostError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(HostError::CommandNotFound(String::new()));
        };
        let line = argv.join(" ");
        let mut child = Command::new(program)
            .args(args)
            .env("PATH", COMMAND_PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => HostError::CommandNotFound(program.to_string()),
                std::io::ErrorKind::PermissionDenied => HostError::PermissionDenied(program.to_string()),
                _ => HostError::Io { action: "running", path: line.clone(), message: e.to_string() },
            })?;
        let cap = self.output_cap;
        let deadline = Instant::now() + timeout;
        let mut stdout = Capture::new(child.stdout.take());
        let mut stderr = Capture::new(child.stderr.take());
        let status = if capture_until(&mut stdout, &mut stderr, cap, deadline) {
            wait_until(&mut child, deadline)
        } else {
            let _ = child.kill();
            child.wait().map(|_| None)
        }
        .map_err(|e| HostError::Io { action: "waiting for", path: line.clone(), message: e.to_string() })?;
        let (stdout, out_cut) = stdout.into_output();
        let (stderr, err_cut) = stderr.into_output();
        match status {
            None => Err(HostError::Timeout { command: line, after: timeout }),
            Some(status) => Ok(CommandOutput { status: status.code(), stdout, stderr, truncated: out_cut || err_cut }),
        }
    }

    fn network_allowed(&self) -> bool {
        true
    }

    fn is_root(&self) -> bool {
        self.root_user
    }
}

/// The effective uid from `/proc/self/status` (`Uid:` real effective saved fs).
pub fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// True when running as root. Linux reads `/proc/self/status`; elsewhere a file we create is
/// owned by our effective uid, which avoids `unsafe` FFI for `geteuid`.
fn effective_uid_is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        return parse_effective_uid(&status) == Some(0);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let probe = std::env::temp_dir().join(format!("fleet-agent-uid-{}", std::process::id()));
        let uid = std::fs::File::create(&probe).and_then(|f| f.metadata()).map(|m| m.uid()).ok();
        let _ = std::fs::remove_file(&probe);
        uid == Some(0)
    }
    #[cfg(not(unix))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_commands_with_status_cap_and_timeout() {
        let mut host = SystemHost::new();
        let out = host.run(&["sh", "-c", "echo hi; echo err >&2; exit 3"], Duration::from_secs(5)).expect("runs");
        assert_eq!((out.stdout.as_str(), out.stderr.as_str(), out.status), ("hi\n", "err\n", Some(3)));
        host.output_cap = 10;
        let out = host.run(&["sh", "-c", "head -c 100000 /dev/zero"], Duration::from_secs(5)).expect("runs");
        assert!(out.truncated && out.stdout.len() == 10);
        let started = Instant::now();
        let slow = host.run(&["sleep", "5"], Duration::from_millis(200));
        assert!(matches!(slow, Err(HostError::Timeout { .. })));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            host.run(&["no-such-program-xyz"], Duration::from_secs(1)).err(),
            Some(HostError::CommandNotFound("no-such-program-xyz".into()))
        );
    }

    #[test]
    fn both_pipes_are_read_to_the_end_on_one_thread_without_deadlock() {
        let host = SystemHost::new();
        // 1 MiB on each pipe, interleaved: far past a pipe's 64 KiB buffer, so reading one pipe
        // to its end before the other would block the child forever.
        let script = "for i in $(seq 1 16); do head -c 65536 /dev/zero | tr '\\0' o; head -c 65536 /dev/zero | tr '\\0' e >&2; done";
        let out = host.run(&["sh", "-c", script], Duration::from_secs(20)).expect("runs");
        assert_eq!((out.stdout.len(), out.stderr.len(), out.status), (1 << 20, 1 << 20, Some(0)));
        assert!(out.stdout.bytes().all(|b| b == b'o') && out.stderr.bytes().all(|b| b == b'e'));
        assert!(!out.truncated);
        let quiet = host.run(&["true"], Duration::from_secs(5)).expect("runs");
        assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str(), quiet.status), ("", "", Some(0)));
    }

    #[test]
    fn a_command_that_keeps_its_output_open_or_closes_it_early_ends_at_the_deadline() {
        let host = SystemHost::new();
        let started = Instant::now();
        // Prints, then sleeps with stdout still open: the poll waits until the deadline.
        let held = host.run(&["sh", "-c", "echo partial; sleep 5"], Duration::from_millis(300));
        assert!(matches!(held, Err(HostError::Timeout { .. })), "{held:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // Closes both pipes, then keeps running: the exit wait gives up at the deadline too.
        let started = Instant::now();
        let closed = host.run(&["sh", "-c", "exec >&- 2>&-; sleep 5"], Duration::from_millis(300));
        assert!(matches!(closed, Err(HostError::Timeout { .. })), "{closed:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn files_are_read_under_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sys/x")).expect("mkdir");
        std::fs::write(dir.path().join("sys/x/a"), "A").expect("write");
        let host = SystemHost::with_root(dir.path().to_path_buf());
        assert_eq!(host.read_file("/sys/x/a"), Ok("A".to_string()));
        assert_eq!(host.list_dir("/sys/x"), Ok(vec!["a".to_string()]));
        assert!(matches!(host.read_file("/nope"), Err(HostError::NotFound(_))));
    }

    #[test]
    fn effective_uid_from_proc_status() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Uid: 5"), None);
    }
}
