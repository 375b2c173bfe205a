//! Shared helpers for the integration tests: the binary, temp dirs, config files.

#![allow(dead_code)] // each test module uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built `fleet-agent` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fleet-agent")
}

/// A `fleet-agent` command with a clean environment for the variables it reads.
pub fn agent() -> Command {
    let mut cmd = Command::new(bin());
    for var in ["FLEET_ENCRYPTION_KEY", "FLEET_API_KEY", "FLEET_READ_TOKEN", "FLEET_STORE_KEY", "JOURNAL_STREAM"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Run `fleet-agent args…` to completion.
pub fn run(args: &[&str]) -> Output {
    agent().args(args).output().expect("fleet-agent runs")
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Write `json` to `dir/name` with the given permission bits; returns the path.
pub fn write_config(dir: &Path, name: &str, json: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, json).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod config");
    path
}

/// A fixed valid key (bytes 0x00..0x1f), the key of the test vectors in tests/vectors/ and docs/v2-protocol.md.
pub const TEST_KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Path as &str for command arguments.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A `"widgets"` member to put in every config a test runs `once` or `run` with: ping only
/// loopback (one request), never a speedtest. Keeps tests fast and off outside hosts.
pub const SAFE_WIDGETS: &str =
    r#""widgets":{"ping":{"targets":["127.0.0.1"],"count":1},"speedtest":{"enabled":false}}"#;

/// A `"widgets"` member that turns off every widget but cpu, memory and system: cheap, local,
/// one record each per cycle (what the sender, torture and fault oracles count).
pub const CHEAP_WIDGETS: &str = r#""widgets":{"machine_info":{"enabled":false},"disk":{"enabled":false},"network":{"enabled":false},"processes":{"enabled":false},"battery":{"enabled":false},"wifi":{"enabled":false},"ping":{"enabled":false},"speedtest":{"enabled":false},"security":{"enabled":false},"users":{"enabled":false},"temperature":{"enabled":false}}"#;

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing running.
pub struct Proc {
    /// The child.
    pub child: std::process::Child,
}

impl Proc {
    /// Send `signal` (e.g. `"-TERM"`, `"-9"`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGTERM and wait (at most `limit`) for the exit status.
    pub fn terminate(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.wait(limit)
    }

    /// Wait (at most `limit`) for the process to exit.
    pub fn wait(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(start.elapsed() < limit, "process {} did not exit within {limit:?}", self.child.id());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The store key of every receiver the tests start (bytes 0x40..0x5f; not a transport key).
pub const TEST_STORE_KEY_B64: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";
/// The read token of every receiver the tests start.
pub const TEST_READ_TOKEN: &str = "test-read-token";

/// Write a secret file (mode 0600) `dir/name`, unless it already holds `text` (a restart on a
/// full disk writes nothing); returns its path.
pub fn write_secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return path;
    }
    std::fs::create_dir_all(dir).expect("secrets dir");
    write_config(dir, name, text, 0o600)
}

/// The arguments of `fleet-agent receive` serving `store` with these secrets, written to files
/// in `STORE.secrets/` (secrets are never on the command line): the API key, the test read
/// token, each transport key, and the test store key (the store is sealed at rest).
pub fn receiver_args(store: &Path, listen: &str, api_key: &str, keys: &[&str]) -> Vec<String> {
    let secrets = PathBuf::from(format!("{}.secrets", store.display()));
    let mut args: Vec<String> =
        vec!["receive".into(), "--listen".into(), listen.into(), "--store".into(), s(store).into()];
    let mut file = |flag: &str, name: &str, text: &str| {
        args.push(flag.into());
        args.push(s(&write_secret(&secrets, name, text)).into());
    };
    file("--api-key-file", "api-key", api_key);
    file("--read-token-file", "read-token", TEST_READ_TOKEN);
    file("--store-key-file", "store.key", TEST_STORE_KEY_B64);
    for (i, key) in keys.iter().enumerate() {
        file("--encryption-key-file", &format!("fleet-{i}.key"), key);
    }
    args
}

/// A reader of a store written by [`start_receiver`] (the test store key).
pub fn store_reader(store: &Path) -> Box<dyn fleet_receiver::StorageRead> {
    let key = fleet_wire::keys::Key32::from_base64(TEST_STORE_KEY_B64).expect("test store key");
    let location = fleet_receiver::StoreLocation::Dir(store.to_path_buf());
    fleet_receiver::open_reader(&location, fleet_receiver::StoreKeys::new(&[key])).expect("a directory store opens")
}

/// Start `fleet-agent receive` on `listen` (e.g. `127.0.0.1:0`) with an API key and the
/// encryption keys given, the store sealed under [`TEST_STORE_KEY_B64`] and reads open to
/// [`TEST_READ_TOKEN`] (see [`receiver_args`]); returns the process and its URL from the
/// `listening on` line.
pub fn start_receiver(store: &Path, listen: &str, api_key: &str, keys: &[&str]) -> (Proc, String) {
    use std::io::BufRead;
    let mut cmd = agent();
    cmd.args(receiver_args(store, listen, api_key, keys));
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().expect("receiver starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("listening line");
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected {line:?}")).to_string();
    (Proc { child }, url)
}

/// Start `fleet-agent run --config CONFIG` with stderr captured to `log` (for diagnosis).
pub fn start_agent(config: &Path, log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("agent log file");
    let child = agent()
        .args(["run", "--config", s(config)])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent starts");
    Proc { child }
}

/// A config for `run` with only cheap widgets (cpu, memory, system; the rest off), the given
/// protocol, server, key (`None`: no key) and interval, spooling into `dir/spool`. `extra` is
/// spliced into the top-level object (start it with a comma).
pub fn agent_config(
    dir: &Path,
    name: &str,
    server_url: &str,
    key: Option<&str>,
    protocol: &str,
    extra: &str,
) -> PathBuf {
    let key = key.map(|k| format!(r#","encryption_key":"{k}""#)).unwrap_or_default();
    // v2 pushes every cycle here (the default coalesces 20 s); Atlas keeps its defaults.
    let key = if protocol == "v2" { format!(r#"{key},"send_interval":0.2"#) } else { key };
    let json = format!(
        r#"{{"server_url":"{server_url}","api_key":"test-api-key","machine_id":"test-machine","protocol":"{protocol}",
            "interval":0.2{key},"spool":{{"dir":"{}"}},"log_level":"debug",
            {CHEAP_WIDGETS}{extra}}}"#,
        s(&dir.join("spool"))
    );
    write_config(dir, name, &json, 0o600)
}

/// The v2 record lines a receiver store holds for `machine_id` (committed batches only).
pub fn stored_records(store: &Path, machine_id: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let lines = store_reader(store).read_records(machine_id).expect("store readable");
    lines.into_iter().filter(|line| line.get("kind").and_then(|k| k.as_str()) == Some("record")).collect()
}

/// Unacknowledged records in a spool (read-only; safe while an agent runs).
pub fn spool_unacked(spool: &Path) -> u64 {
    fleet_agent::spool::inspect(spool).expect("spool readable").map_or(0, |stats| stats.unacked_records)
}

/// Poll `condition` every 50 ms for at most `limit`; true if it became true.
pub fn wait_for(limit: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    condition()
}

/// A size-limited tmpfs, unmounted (lazily) on drop.
pub struct TinyFs(PathBuf);

impl TinyFs {
    /// Mount `size_kib` KiB of tmpfs at `at`; `Err` says why not (not root, no permission).
    pub fn mount(at: &Path, size_kib: u64) -> Result<TinyFs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k,mode=0700"), "tmpfs", s(at)])
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if output.status.success() {
            Ok(TinyFs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", s(&self.0)]).status();
    }
}

/// Fill the filesystem holding `path` with a file until the disk is full; returns its size.
pub fn fill_up(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let block = vec![0xa5u8; 4096];
    let mut written = 0;
    while let Ok(n) = file.write(&block) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let _ = file.sync_all();
    written
}

/// xorshift64*: a small deterministic generator, so seeded tests replay from their seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is mapped to 1: xorshift never leaves the zero state).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index in `0..len` (0 when `len` is 0).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}
