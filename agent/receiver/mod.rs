//! The bundled receiver (`fleet-agent receive`, DESIGN section 7): a small synchronous HTTP(S)
//! server that opens v1 (Atlas) and v2 envelopes and stores what arrives, for tests, demos and
//! small setups.
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
//! | `GET /api/fleet/machines` | `X-API-Key` | `{"machines":[MachineSummary…]}` ([`store::MachineSummary`]) |
//! | `GET /api/fleet/widget-logs?format=json\|csv&widget_type=&machine_id=` | `X-API-Key` | JSON `{"count":n,"truncated":false,"logs":[…]}` or CSV (see [`export`]); at most 100,000 rows |
//! | `GET /api/health` | none | `{"status":"ok","version":V,"e2ee":B,"protocols":["1","2"]}` |
//! | `GET /speedtest/down?bytes=N`, `GET /__down?bytes=N` | none | N zero bytes (N capped at 1 GiB), streamed from a static buffer |
//! | `POST /speedtest/up`, `POST /__up` | none | reads and discards the body (up to 1 GiB): `{"status":"ok","bytes":n}` |
//!
//! The speedtest endpoints (the `__down`/`__up` names are Cloudflare's, which the speedtest
//! widget appends to its base URL) need no key, like the public services they stand in for.
//!
//! Errors: 400 for malformed JSON, wrong types, missing fields, bad base64, wrong nonce length,
//! invalid machine ids; exactly `{"error":"Decryption failed"}` when a sealed body does not
//! authenticate under any configured key (wrong key, unknown v2 `kid`, tampered bytes); 400
//! naming the problem for a plaintext body when the receiver has a key (and for a sealed body
//! when it has none); 401 missing or wrong `X-API-Key`; 404/405; 408 slow client; 411 chunked or
//! missing length; 413 too large; 431 head over 16 KiB; 500 only when the disk fails.
//!
//! Without an encryption key the receiver is in test mode: it accepts plaintext payloads (the
//! same JSON that would be sealed; for v2 the `BatchBody` itself) and logs a warning at start.
//! Without an API key it accepts every request, also with a warning.
//!
//! Success answers are JSON objects with `status` first, as the Atlas server writes them.
//!
//! Storage: see [`store`] (per machine JSON Lines, fsynced before the 200, exactly-once v2).
//! The read endpoints stream the files on each request (one batch in memory at a time); the
//! export keeps its rows in memory, hence its row cap.

pub mod export;
pub mod http;
pub mod routes;
pub mod store;
pub mod tls;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver as Queue};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::keys::{Key32, SecretString};
pub use store::{machines, MachineSummary, StoreError, WidgetSummary};

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
    /// Required `X-API-Key` (`None`: accept every request, with a warning).
    pub api_key: Option<String>,
    /// Fleet keys, current first; several during a rotation. Empty: plaintext test mode.
    pub encryption_keys: Vec<Key32>,
    /// Store directory (created, mode 0700).
    pub store: PathBuf,
    /// PEM certificate chain and private key for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Worker threads (clamped to 1..=64; 0 means the default, 4).
    pub workers: usize,
}

/// Time and size limits (defaults: 10 s idle, 60 s per body, 10 MiB bodies, 1 GiB speedtests).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for any read, and the whole budget for the request head.
    pub read_timeout: Duration,
    /// Budget for reading a request body (API endpoints).
    pub body_deadline: Duration,
    /// Budget for a speedtest upload.
    pub speedtest_deadline: Duration,
    /// Largest API body (413 beyond).
    pub max_body: usize,
    /// Largest speedtest download or upload.
    pub max_speedtest: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(10),
            body_deadline: Duration::from_secs(60),
            speedtest_deadline: Duration::from_secs(120),
            max_body: 10 * 1024 * 1024,
            max_speedtest: 1024 * 1024 * 1024,
        }
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
    /// Opening or repairing the store failed.
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

/// A running receiver. Dropping it shuts it down like [`Receiver::shutdown`].
pub struct Receiver {
    local_addr: SocketAddr,
    https: bool,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Receiver {
    /// Bind, open the store, spawn the worker pool; returns once listening.
    pub fn start(config: ReceiverConfig) -> Result<Receiver, ReceiverError> {
        Receiver::start_with_limits(config, Limits::default())
    }

    /// [`Receiver::start`] with other limits (tests use short timeouts).
    pub fn start_with_limits(config: ReceiverConfig, limits: Limits) -> Result<Receiver, ReceiverError> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::server_config(cert, key)?),
            None => None,
        };
        let store = store::Store::open(&config.store).map_err(ReceiverError::Store)?;
        let listener =
            TcpListener::bind(config.listen).map_err(|source| ReceiverError::Bind { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| ReceiverError::Bind { addr: config.listen, source })?;
        let https = tls.is_some();
        let shared = Arc::new(routes::Shared {
            api_key: config.api_key.map(SecretString::new),
            keys: config.encryption_keys,
            store,
            limits,
            tls,
        });
        let workers = match config.workers {
            0 => DEFAULT_WORKERS,
            n => n.min(MAX_WORKERS),
        };
        let (queue_in, queue_out) = sync_channel::<TcpStream>(workers * 4);
        let queue_out = Arc::new(Mutex::new(queue_out));
        let stop = Arc::new(AtomicBool::new(false));
        let mut receiver = Receiver { local_addr, https, stop: Arc::clone(&stop), acceptor: None, workers: Vec::new() };
        for i in 0..workers {
            let queue = Arc::clone(&queue_out);
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("receiver-{i}"))
                .spawn(move || work(&queue, &shared))
                .map_err(ReceiverError::Spawn)?;
            receiver.workers.push(handle);
        }
        let handle = std::thread::Builder::new()
            .name("receiver-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match stream {
                        Ok(stream) => {
                            if queue_in.send(stream).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            log::warn!("accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
            .map_err(ReceiverError::Spawn)?;
        receiver.acceptor = Some(handle);
        Ok(receiver)
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

    /// Stop accepting, let the workers finish the requests they hold, join every thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&connectable(self.local_addr), Duration::from_secs(1));
        let _ = acceptor.join();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
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

fn work(queue: &Mutex<Queue<TcpStream>>, shared: &routes::Shared) {
    loop {
        let next = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        match next {
            Ok(stream) => routes::serve(stream, shared),
            Err(_) => return,
        }
    }
}
