//! `fleet-agent demo`: the whole pipeline on one machine, with nothing to set up.
//!
//! Generates a fresh transport key and API key, starts the bundled receiver on
//! `127.0.0.1:0` in-process, writes a temporary config (mode 0600) pointing the agent at it
//! with every widget enabled (ping to 127.0.0.1, speedtest against the receiver's own
//! `/__down` and `/__up`), runs the agent for a few cycles with the v2 protocol and then
//! briefly with the Atlas protocol, and prints what the receiver stored, decrypted. Everything
//! lives in one temporary directory that is removed at the end.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::Config;
use crate::log::Verbosity;
use crate::run::Agent;
use crate::spool::fsio::create_private_dir;
use fleet_receiver::summary::print_summary;
use fleet_receiver::{open_reader, Receiver, ReceiverConfig, StoreKeys, StoreLocation, StoreSource};
use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::keys::SecretString;

/// How long the agent runs with each protocol.
#[derive(Debug, Clone, Copy)]
pub struct DemoPlan {
    /// Seconds with the v2 protocol.
    pub v2: Duration,
    /// Seconds with the Atlas protocol.
    pub atlas: Duration,
    /// Collection interval.
    pub interval: Duration,
}

impl Default for DemoPlan {
    fn default() -> Self {
        DemoPlan { v2: Duration::from_secs(6), atlas: Duration::from_secs(3), interval: Duration::from_secs(1) }
    }
}

/// Why the demo failed.
#[derive(Debug)]
pub enum DemoError {
    /// A file system step failed (path named).
    Io {
        /// What was being done.
        doing: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Generating a key failed.
    Key(fleet_wire::keys::KeyError),
    /// The receiver did not start.
    Receiver(fleet_receiver::ReceiverError),
    /// The generated config was refused (a bug: it names the field).
    Config(String),
    /// The agent failed.
    Agent(crate::run::RunError),
    /// The store could not be summarised.
    Store(fleet_receiver::StoreError),
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Io { doing, path, source } => write!(f, "{doing} {}: {source}", path.display()),
            DemoError::Key(e) => write!(f, "generating keys: {e}"),
            DemoError::Receiver(e) => write!(f, "starting the receiver: {e}"),
            DemoError::Config(e) => write!(f, "demo config: {e}"),
            DemoError::Agent(e) => write!(f, "running the agent: {e}"),
            DemoError::Store(e) => write!(f, "reading the receiver's store: {e}"),
        }
    }
}

impl std::error::Error for DemoError {}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, DemoError> {
        let mut tag = [0u8; 6];
        getrandom::fill(&mut tag).map_err(|e| DemoError::Key(fleet_wire::keys::KeyError::Random(e.to_string())))?;
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("fleet-agent-demo-{}-{hex}", std::process::id()));
        create_private_dir(&path).map_err(|e| DemoError::Io {
            doing: "creating",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_config(path: &Path, config: &Value) -> Result<(), DemoError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |doing, source| DemoError::Io { doing, path: path.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("creating", e))?;
    file.write_all(config.to_string().as_bytes()).map_err(|e| io("writing", e))
}

/// Run the demo and print its summary to stdout.
pub fn run(plan: DemoPlan, verbosity: Verbosity) -> Result<(), DemoError> {
    let started = Instant::now();
    let dir = TempDir::new()?;
    let key = Key32::generate().map_err(DemoError::Key)?;
    let api_key = Key32::generate().map_err(DemoError::Key)?.to_base64().chars().take(24).collect::<String>();
    let store_key = Key32::generate().map_err(DemoError::Key)?;
    let store = dir.0.join("store");
    let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let receiver = Receiver::start(ReceiverConfig {
        listen,
        api_key: Some(SecretString::new(api_key.clone())),
        read_token: None,
        encryption_keys: vec![key.clone_secret()],
        store: StoreSource::dir(&store, StoreKeys::new(&[store_key.clone_secret()])),
        tls: None,
        workers: 2,
    })
    .map_err(DemoError::Receiver)?;
    let url = receiver.url();
    // The speedtest widget cannot send headers: the API key goes in the path (see receiver docs).
    let speedtest_url = format!("{url}/speedtest/key/{api_key}");
    let machine_id = format!("demo-{}", fleet_widgets::machine::hostname());
    println!("fleet-agent demo");
    println!(
        "  receiver   {url}  (in-process, store {} sealed under store key id {})",
        store.display(),
        fleet_receiver::seal::store_kid(&store_key)
    );
    println!(
        "  agent      machine_id {machine_id}, key id {}, spool {}",
        envelope::kid(&key),
        dir.0.join("spool").display()
    );

    let mut phases = Vec::new();
    for (protocol, duration) in [("v2", plan.v2), ("atlas", plan.atlas)] {
        if duration.is_zero() {
            continue;
        }
        let config = json!({
            "server_url": url,
            "api_key": api_key,
            "encryption_key": key.to_base64().as_str(),
            "machine_id": machine_id,
            "protocol": protocol,
            "interval": plan.interval.as_secs_f64(),
            "spool": {"dir": dir.0.join(format!("spool-{protocol}")), "fsync": "batch"},
            "widgets": {
                "ping": {"targets": ["127.0.0.1"], "count": 3},
                "speedtest": {"enabled": true, "url": speedtest_url, "max_bytes": 20_000_000, "connections": 2, "jitter": 0, "min_battery_percent": 0},
            },
            "log_level": "warn",
        });
        let path = dir.0.join(format!("config-{protocol}.json"));
        write_config(&path, &config)?;
        let config = Config::load(Some(&path)).map_err(|errors| {
            DemoError::Config(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        crate::log::set_level(verbosity.apply(config.log_level));
        let phase_start = Instant::now();
        let mut agent = Agent::new(config, Some(path), verbosity);
        agent.run_until(Some(Instant::now() + duration)).map_err(DemoError::Agent)?;
        phases.push(format!("{protocol} {:.1}s", phase_start.elapsed().as_secs_f64()));
    }
    receiver.shutdown();
    let summaries = open_reader(&StoreLocation::Dir(store), StoreKeys::new(&[store_key]))
        .and_then(|reader| reader.machines())
        .map_err(DemoError::Store)?;
    println!("  ran        {} (wall {:.1}s)", phases.join(", "), started.elapsed().as_secs_f64());
    println!();
    print_summary(&summaries, "What the receiver stored (decrypted):");
    Ok(())
}
