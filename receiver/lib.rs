//! The bundled receiver (`fleet-agent receive`, `docs/architecture.md`): a small synchronous
//! HTTP(S) server that opens v1 (Atlas) and v2 envelopes and stores what arrives, for tests,
//! demos and small setups.
//!
//! Its own crate: it knows nothing of the agent and shares with it only the wire contract,
//! [`fleet_wire`] (records, envelopes, keys, the batch digest). The agent's `receive` command
//! parses flags and key files and runs a [`Receiver`].
//!
//! # Why `std::net` + `httparse` + rustls, and no HTTP server crate
//!
//! Measured on these machines: `tiny_http`'s TLS feature brings rustls 0.20 and ring 0.16, a
//! second TLS stack beside the client's rustls 0.23, and it stalled about 40 ms per POST on
//! Nagle's algorithm. Here a `TcpListener` feeds accepted sockets to a fixed pool of worker
//! threads (default 4) through a bounded queue; each socket gets `set_nodelay(true)`, an idle
//! read timeout and an overall deadline; requests are parsed with `httparse` and HTTPS uses the
//! rustls 0.23 + ring already linked for the agent's client. No async runtime, one TLS stack,
//! a few hundred lines of HTTP that only has to handle what the agent and curl send.
//!
//! HTTP/1.1, one request per connection, every answer `Connection: close` with a
//! `Content-Length` (the Atlas server also closes every connection). Bodies need
//! `Content-Length`; `Transfer-Encoding` (chunked) is answered 411. Bodies over 10 MiB are
//! answered 413 before any of the body is read. Every error is JSON `{"error": "..."}`.
//!
//! # Endpoints
//!
//! | endpoint | auth | answer |
//! |---|---|---|
//! | `POST /api/fleet/report` | `X-API-Key` | v1 body, plaintext an Atlas report `{machine_id, machine_info{}, metrics{}}`: `{"status":"ok","e2ee_verified":true,"machine_id":M}` |
//! | `POST /api/fleet/widget-logs` | `X-API-Key` | v1 body, plaintext `{machine_id, logs:[{timestamp, level, widget_type, message, data}]}`: `{"status":"ok","logs_stored":n,"e2ee_verified":true}` |
//! | `POST /api/v2/batches` | `X-API-Key` | v2 body, plaintext a `BatchBody` whose `machine_id`/`seq` equal the envelope's: `{"status":"ok","stored":n}`, or for a `(machine_id, seq)` stored before `{"status":"ok","duplicate":true}` (nothing stored) |
//! | `GET /api/fleet/machines` | `Authorization: Bearer` read token | `{"machines":[MachineSummary…]}` ([`storage::MachineSummary`]) |
//! | `GET /api/fleet/widget-logs?format=json\|csv&widget_type=&machine_id=` | read token | JSON `{"logs":[…],"count":n,"truncated":B,"skipped_tampered":n}` or CSV (see [`export`]), streamed; at most `max_export_bytes` |
//! | `GET /api/health` | none | `{"status":"ok","version":V,"e2ee":B,"protocols":["1","2"]}` |
//! | `GET /speedtest/down?bytes=N`, `GET /__down?bytes=N` | `X-API-Key` | N zero bytes (N capped at 1 GiB), streamed from a static buffer |
//! | `POST /speedtest/up`, `POST /__up` | `X-API-Key` | reads and discards the body (up to 1 GiB): `{"status":"ok","bytes":n}` |
//!
//! The speedtest endpoints (the `__down`/`__up` names are Cloudflare's, which the speedtest
//! widget appends to its base URL) need the API key: as `X-API-Key`, or, for clients that
//! cannot set a header (the speedtest widget), in the path: base URL
//! `http(s)://HOST/speedtest/key/API_KEY`, i.e. `/speedtest/key/API_KEY/__down` (the key as
//! written, or percent-encoded; a `+` there is a `+`, as RFC 3986 has it for paths). Credentials
//! are described in [`auth`]: the API key writes, the read token reads (the API key gets 403
//! there).
//!
//! Errors: 400 for malformed JSON, wrong types, missing fields, bad base64, wrong nonce length,
//! invalid machine ids; exactly `{"error":"Decryption failed"}` when a sealed body does not
//! authenticate under any configured key (wrong key, unknown v2 `kid`, tampered bytes); 400
//! naming the problem for a plaintext body when the receiver has a key (and for a sealed body
//! when it has none); 401 missing or wrong credential; 403 the API key on a read; 404/405;
//! 408 slow client; 411 chunked or missing length; 413 too large; 431 head over 16 KiB; 500
//! only when the disk fails; 503 when full (connections, body memory), with `Retry-After`.
//!
//! Without an encryption key the receiver is in test mode: it accepts plaintext payloads (the
//! same JSON that would be sealed; for v2 the `BatchBody` itself) and logs a warning at start.
//! Without an API key it accepts every request, also with a warning.
//!
//! Success answers are JSON objects with `status` first, as the Atlas server writes them.
//!
//! Storage: one seam, [`storage`] (the [`Storage`] and [`StorageRead`] traits; `--store
//! DIR_OR_URL`): the file store [`store`] (per machine JSON Lines, fsynced before the 200,
//! exactly-once v2, each row sealed under the store key: [`seal`]) or PostgreSQL (cargo feature
//! `postgres`). The read endpoints stream the rows on each request (one batch in memory at a
//! time) and write their answer as they go.

pub mod auth;
pub mod export;
pub mod http;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod routes;
pub mod seal;
pub mod startup;
pub mod storage;
pub mod store;
pub mod summary;
pub mod tls;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fleet_wire::keys::{Key32, SecretString};
pub use seal::StoreKeys;
pub use storage::{
    open_reader, open_storage, MachineSummary, Storage, StorageRead, StoreError, StoreLocation, Stream, WidgetSummary,
};

/// Default listen address of `fleet-agent receive`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8768";
/// Default worker threads.
pub const DEFAULT_WORKERS: usize = 4;
/// Most worker threads accepted.
pub const MAX_WORKERS: usize = 64;

/// What to serve and where to store it.
pub struct ReceiverConfig {
    /// Address to listen on (port 0: pick a free one, see [`Receiver::local_addr`]).
    pub listen: SocketAddr,
    /// Required `X-API-Key` on writes (`None`: accept every write, with a warning).
    pub api_key: Option<SecretString>,
    /// Required bearer token on reads (`None`: reads over HTTP are disabled).
    pub read_token: Option<SecretString>,
    /// Fleet keys, current first; several during a rotation. Empty: plaintext test mode.
    pub encryption_keys: Vec<Key32>,
    /// Where to store, and with which store keys.
    pub store: StoreSource,
    /// PEM certificate chain and private key for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Worker threads (clamped to 1..=64; 0 means the default, 4).
    pub workers: usize,
}

impl ReceiverConfig {
    /// Refuse credentials that contradict each other ([`startup::credential_conflict`]).
    pub fn check(&self) -> Result<(), startup::CredentialConflict> {
        match startup::credential_conflict(
            &self.encryption_keys,
            self.store.keys(),
            self.api_key.as_ref(),
            self.read_token.as_ref(),
        ) {
            Some(conflict) => Err(conflict),
            None => Ok(()),
        }
    }

    /// Log what this configuration accepts and how it stores ([`startup::announce`]).
    pub fn announce(&self) {
        startup::announce(self);
    }
}

/// Where a receiver stores: a location it opens at start, or a storage opened already.
pub enum StoreSource {
    /// Open `location` at start with [`open_storage`] (file store: created, mode 0700).
    Location {
        /// Where.
        location: StoreLocation,
        /// Store keys (the first seals new rows; the others only open rows), or plaintext.
        keys: StoreKeys,
    },
    /// A storage opened by the caller (tests, benchmarks, a forwarder sharing it); its keys
    /// are its own.
    Open(Arc<dyn Storage>),
}

impl StoreSource {
    /// A file store directory with its keys.
    pub fn dir(dir: impl Into<PathBuf>, keys: StoreKeys) -> StoreSource {
        StoreSource::Location { location: StoreLocation::Dir(dir.into()), keys }
    }

    /// The store keys.
    pub fn keys(&self) -> &StoreKeys {
        match self {
            StoreSource::Location { keys, .. } => keys,
            StoreSource::Open(storage) => storage.keys(),
        }
    }

    /// The store for logs: `store DIR` or a URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreSource::Location { location, .. } => location.to_string(),
            StoreSource::Open(storage) => storage.describe(),
        }
    }

    /// The storage: opened now, or the one given.
    pub fn open(self) -> Result<Arc<dyn Storage>, StoreError> {
        match self {
            StoreSource::Location { location, keys } => open_storage(&location, keys).map(Arc::from),
            StoreSource::Open(storage) => Ok(storage),
        }
    }
}

/// Time and size limits (see the module docs for what each one bounds).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for any single read or write.
    pub read_timeout: Duration,
    /// The whole request head must arrive within this.
    pub head_deadline: Duration,
    /// An idle kept-alive connection is closed after this.
    pub keep_alive_idle: Duration,
    /// Time every body gets on top of its length at [`Limits::min_body_rate`].
    pub body_grace: Duration,
    /// Slowest accepted body transfer, bytes per second.
    pub min_body_rate: u64,
    /// Budget for a speedtest upload.
    pub speedtest_deadline: Duration,
    /// Largest API body (413 beyond).
    pub max_body: usize,
    /// Request bodies held in memory at once, all connections together (at least `max_body`).
    pub body_budget: usize,
    /// Largest speedtest download or upload.
    pub max_speedtest: u64,
    /// Connections served at once (more are answered 503 at once).
    pub max_connections: usize,
    /// Largest export answer, bytes (the export stops there and says it was truncated).
    pub max_export_bytes: u64,
    /// Reads (exports, machine lists) run at once; more wait up to a minute, then 503.
    pub max_exports: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(10),
            head_deadline: Duration::from_secs(10),
            keep_alive_idle: Duration::from_secs(5),
            body_grace: Duration::from_secs(10),
            min_body_rate: 16 * 1024,
            speedtest_deadline: Duration::from_secs(120),
            max_body: 10 * 1024 * 1024,
            body_budget: 64 * 1024 * 1024,
            max_speedtest: 1024 * 1024 * 1024,
            max_connections: 256,
            max_export_bytes: 256 * 1024 * 1024,
            max_exports: 16,
        }
    }
}

impl Limits {
    /// Deadline for a body of `len` bytes starting now.
    pub fn body_deadline(&self, len: u64) -> Instant {
        let secs = len / self.min_body_rate.max(1);
        Instant::now() + self.body_grace + Duration::from_secs(secs)
    }
}

/// Why the receiver could not start.
#[derive(Debug)]
pub enum ReceiverError {
    /// Binding the listen address failed.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Opening or repairing the store failed (a wrong store key is one of these).
    Store(StoreError),
    /// The TLS certificate or key could not be used.
    Tls {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Starting a thread failed.
    Spawn(std::io::Error),
}

impl fmt::Display for ReceiverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiverError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ReceiverError::Store(e) => write!(f, "cannot open the store: {e}"),
            ReceiverError::Tls { path, why } => write!(f, "TLS setup failed for {}: {why}", path.display()),
            ReceiverError::Spawn(e) => write!(f, "cannot start a receiver thread: {e}"),
        }
    }
}

impl std::error::Error for ReceiverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReceiverError::Bind { source, .. } => Some(source),
            ReceiverError::Store(e) => Some(e),
            ReceiverError::Spawn(e) => Some(e),
            ReceiverError::Tls { .. } => None,
        }
    }
}

/// A counting semaphore: `cap` units shared by every connection thread.
pub struct Gate {
    used: Mutex<u64>,
    freed: Condvar,
    cap: u64,
}

/// Units held from a [`Gate`], given back on drop.
pub struct Permit<'a> {
    gate: &'a Gate,
    units: u64,
}

impl Gate {
    /// A gate of `cap` units.
    pub fn new(cap: u64) -> Gate {
        Gate { used: Mutex::new(0), freed: Condvar::new(), cap: cap.max(1) }
    }

    /// Take `units` (clamped to the cap), waiting at most `wait`; `None` if there was no room.
    pub fn acquire(&self, units: u64, wait: Duration) -> Option<Permit<'_>> {
        let units = units.min(self.cap);
        let until = Instant::now() + wait;
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + units > self.cap {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            used = self.freed.wait_timeout(used, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        *used += units;
        Some(Permit { gate: self, units })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.gate.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.units;
        self.gate.freed.notify_all();
    }
}

/// Stack of a connection thread (the parsers are iterative or depth-limited).
const CONNECTION_STACK: usize = 512 * 1024;

/// A running receiver. Dropping it shuts it down like [`Receiver::shutdown`].
pub struct Receiver {
    local_addr: SocketAddr,
    https: bool,
    shared: Arc<routes::Shared>,
    active: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Bind, open the store, start accepting; returns once listening.
    pub fn start(config: ReceiverConfig) -> Result<Receiver, ReceiverError> {
        Receiver::start_with_limits(config, Limits::default())
    }

    /// [`Receiver::start`] with other limits (tests use short timeouts).
    pub fn start_with_limits(config: ReceiverConfig, limits: Limits) -> Result<Receiver, ReceiverError> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::server_config(cert, key)?),
            None => None,
        };
        let store = config.store.open().map_err(ReceiverError::Store)?;
        let listener =
            TcpListener::bind(config.listen).map_err(|source| ReceiverError::Bind { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| ReceiverError::Bind { addr: config.listen, source })?;
        let https = tls.is_some();
        let workers = match config.workers {
            0 => DEFAULT_WORKERS,
            n => n.min(MAX_WORKERS),
        } as u64;
        let shared = Arc::new(routes::Shared {
            credentials: auth::Credentials { api_key: config.api_key, read_token: config.read_token },
            keys: config.encryption_keys,
            store,
            limits,
            tls,
            stop: AtomicBool::new(false),
            workers: Gate::new(workers),
            exports: Gate::new(limits.max_exports as u64),
            bodies: Gate::new(limits.body_budget.max(limits.max_body) as u64),
        });
        let active = Arc::new(AtomicUsize::new(0));
        let accept_shared = Arc::clone(&shared);
        let accept_active = Arc::clone(&active);
        let handle = std::thread::Builder::new()
            .name("receiver-accept".into())
            .spawn(move || accept(&listener, &accept_shared, &accept_active))
            .map_err(ReceiverError::Spawn)?;
        Ok(Receiver { local_addr, https, shared, active, acceptor: Some(handle) })
    }

    /// The storage this receiver writes to, for work beside it in the same process (the OTLP
    /// forwarder's `forward_pending`): the one store, never a second opening of it.
    pub fn storage(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.shared.store)
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` or `https://ADDR`, with a loopback host if bound to an unspecified address.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", connectable(self.local_addr))
    }

    /// `http://ADDR` or `https://ADDR` with the address really listened on (`0.0.0.0:8768`
    /// stays `0.0.0.0:8768`, port 0 becomes the chosen port).
    pub fn listening_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Stop accepting, let the connections finish the requests they hold (at most the head
    /// deadline plus a second for a client in the middle of its head), then return.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&connectable(self.local_addr), Duration::from_secs(1));
        let _ = acceptor.join();
        let until = Instant::now() + self.shared.limits.head_deadline + Duration::from_secs(1);
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The address a local client connects to (loopback instead of 0.0.0.0 / ::).
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

/// Counts a connection thread for as long as it lives.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answer sent, without reading anything, to a connection over `max_connections`.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 51\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{\"error\":\"too many connections, retry in a moment\"}";

fn accept(listener: &TcpListener, shared: &Arc<routes::Shared>, active: &Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= shared.limits.max_connections {
            use std::io::{Read as _, Write as _};
            // Never block accept on this client: non-blocking, a fresh socket's send buffer takes
            // the 150 bytes. What the client sent already is read first, so that closing does
            // not reset the connection before it has read the 503.
            let _ = stream.set_nonblocking(true);
            let mut sink = [0u8; 4096];
            for _ in 0..4 {
                if !matches!((&stream).read(&mut sink), Ok(n) if n > 0) {
                    break;
                }
            }
            let _ = (&stream).write_all(BUSY);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let guard = Active(Arc::clone(active));
        let mine = Arc::clone(shared);
        let spawned =
            std::thread::Builder::new().name("receiver-conn".into()).stack_size(CONNECTION_STACK).spawn(move || {
                let _guard = guard;
                routes::serve(stream, &mine);
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a connection thread: {e}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
