//! The HTTP client the sender posts with: `fleet-http` (the workspace's own small HTTP/1.1
//! client, docs/http-client.md) over rustls (ring), with the agent's trust modes.
//!
//! - Trust ([`tls`]): Mozilla's roots (webpki); with `ca_file`, those plus every certificate in
//!   the PEM file (a private CA); with `server_cert_sha256`, exactly the pinned certificates (a
//!   self-signed server). `verify_ssl: false` disables verification (Atlas compatibility) and
//!   is warned about at every start by the caller. A failed handshake becomes
//!   [`HttpError::Tls`]: a sentence with the fix, which the sender treats as a configuration
//!   problem (an error and a slow retry), not as a network blip.
//! - Cheap per request: a server given as an IP literal is used as is (no resolver, a name is
//!   resolved on the calling thread); the buffer is 16 KiB, allocated once per connection; one
//!   idle connection is kept for reuse when the server allows it (HTTP/1.1 keep-alive, probed
//!   before reuse; the Atlas server closes every connection, so there each request connects
//!   anew).
//! - Every request: `Content-Type: application/json`, an explicit `Content-Length` (the body
//!   is a byte slice, never chunked), `X-API-Key` when configured, never `Authorization`
//!   (except the one header the receiver's OTLP forwarder may be given, [`HttpClient::with_header`]).
//! - Every request may be sent twice (docs/http-client.md, "Retry"): a v2 batch keeps its seq
//!   and records (the server answers `duplicate`), an Atlas report, command ack or command poll
//!   is sent again by the sender after any transport error anyway, and an OTLP push is
//!   at-least-once (docs/otlp-forwarding.md). So the client may resend one on a fresh
//!   connection when a reused one fails before any byte of the answer.
//! - Redirects are not followed (a 3xx is reported back as a status), so a hostile or
//!   misconfigured server cannot send the agent, or its API key, to another host.
//! - Bounded: connect timeout and one whole-request deadline on every read and write; an
//!   answer whose body is longer than [`MAX_RESPONSE_BYTES`], truncated or malformed is a
//!   transport error (no half-read answer is acted on).

pub mod tls;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use fleet_wire::keys::SecretString;
use tls::{TlsConnector, Trust};

/// Most bytes of a response body that are read (enough for any JSON answer).
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Size of a connection's buffer (`fleet-http`'s, allocated once per connection): a response
/// head must fit; requests are written from it in one write when they fit too.
pub const BUFFER_BYTES: usize = fleet_http::head::MAX_HEAD;
/// How long an idle connection is kept for reuse (it is probed before use, and dropped when the
/// server has closed it).
pub const MAX_IDLE: Duration = Duration::from_secs(30);

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Retry-After`, when given in seconds or as an HTTP date in the future.
    pub retry_after: Option<Duration>,
    /// The start of the body (at most [`MAX_RESPONSE_BYTES`]), lossily decoded.
    pub body: String,
    /// `Location`, for 3xx answers (logged, never followed).
    pub location: Option<String>,
}

/// The request did not produce a response.
#[derive(Debug)]
pub enum HttpError {
    /// The `ca_file` could not be read or holds no certificate.
    CaFile {
        /// The file.
        path: String,
        /// What was wrong.
        problem: String,
    },
    /// TLS failed in a way only an admin can fix (certificate, pin, TLS on one side only):
    /// the message says how.
    Tls(String),
    /// Connecting, sending or receiving failed (includes timeouts and TLS failures a retry may
    /// cure).
    Transport(String),
}

impl HttpError {
    /// True when retrying soon cannot help (a configuration problem, not a network blip).
    pub fn needs_admin(&self) -> bool {
        matches!(self, HttpError::CaFile { .. } | HttpError::Tls(_))
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::CaFile { path, problem } => write!(f, "ca_file {path}: {problem}"),
            HttpError::Tls(message) | HttpError::Transport(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// TLS and timeout settings for [`HttpClient::new`].
pub struct HttpSettings<'a> {
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<&'a Path>,
    /// SHA-256 fingerprints of the only certificates accepted (empty: no pinning).
    pub pinned: &'a [[u8; 32]],
    /// False disables certificate verification.
    pub verify_tls: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, receive).
    pub request_timeout: Duration,
}

/// A configured client for one server.
pub struct HttpClient {
    client: fleet_http::Client,
    tls: TlsConnector,
    base_url: String,
    api_key: Option<SecretString>,
    header: Option<(String, SecretString)>,
}

fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let ca_error = |problem: String| HttpError::CaFile { path: path.display().to_string(), problem };
    let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ca_error("holds no CERTIFICATE block".to_string()));
    }
    Ok(certs)
}

impl HttpClient {
    /// A client posting to `base_url` (no trailing slash needed).
    pub fn new(base_url: &str, api_key: Option<SecretString>, settings: &HttpSettings<'_>) -> Result<Self, HttpError> {
        let trust = if !settings.verify_tls {
            Trust::Off
        } else if !settings.pinned.is_empty() {
            Trust::Pinned(settings.pinned.to_vec())
        } else {
            Trust::Roots(match settings.ca_file {
                None => Vec::new(),
                Some(path) => load_ca_file(path)?,
            })
        };
        let tls = TlsConnector::new(trust).map_err(|problem| HttpError::CaFile {
            path: settings.ca_file.map_or_else(|| "(none)".into(), |p| p.display().to_string()),
            problem,
        })?;
        let client = fleet_http::Client::new(fleet_http::Config {
            connect_timeout: settings.connect_timeout,
            timeout: settings.request_timeout,
            tls: Some(tls.config()),
            user_agent: concat!("fleet-agent/", env!("CARGO_PKG_VERSION")).to_string(),
            proxy: fleet_http::Proxy::from_env(),
            max_idle: MAX_IDLE,
        });
        Ok(HttpClient { client, tls, base_url: base_url.trim_end_matches('/').to_string(), api_key, header: None })
    }

    /// Send `name: value` with every request (an OTLP collector's `Authorization`); the value
    /// is a secret and never logged.
    pub fn with_header(mut self, name: &str, value: SecretString) -> Self {
        self.header = Some((name.to_string(), value));
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// POST `body` (JSON) to `path` (e.g. `/api/v2/batches`).
    pub fn post_json(&self, path: &str, body: &[u8]) -> Result<HttpResponse, HttpError> {
        self.send("POST", path, Some(body))
    }

    /// GET `path` (the Atlas command poll), with `X-API-Key` when configured.
    pub fn get(&self, path: &str) -> Result<HttpResponse, HttpError> {
        self.send("GET", path, None)
    }

    fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<HttpResponse, HttpError> {
        let url = format!("{}{path}", self.base_url);
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(3);
        if method == "POST" {
            headers.push(("Content-Type", "application/json"));
        }
        if let Some(key) = &self.api_key {
            headers.push(("X-API-Key", key.expose()));
        }
        if let Some((name, value)) = &self.header {
            if method == "POST" {
                headers.push((name.as_str(), value.expose()));
            }
        }
        self.tls.forget_presented();
        // Every request of the agent may be sent twice (module doc).
        let body = body.map_or(fleet_http::Body::Empty, fleet_http::Body::Bytes);
        let request = fleet_http::Request { method, url: &url, headers: &headers, body, resendable: true };
        let fail = |e: fleet_http::Error| self.classify_error(e);
        let response = self.client.send(request).map_err(fail)?;
        let status = response.status();
        let retry_after = response.header("retry-after").and_then(parse_retry_after);
        let location = response.header("location").map(str::to_string);
        let body = response.read_to_vec(MAX_RESPONSE_BYTES).map_err(fail)?;
        let body = String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(HttpResponse { status, retry_after, body, location })
    }

    /// A client error as the sender sees it: a TLS failure that needs an admin, or a transport
    /// error.
    fn classify_error(&self, error: fleet_http::Error) -> HttpError {
        match error {
            // Not HTTP at all: typically a TLS server behind an http:// URL.
            fleet_http::Error::Head(fleet_http::head::HeadError::Malformed(e))
                if self.base_url.starts_with("http://") =>
            {
                HttpError::Tls(format!(
                    "the server did not answer in HTTP ({e}): if it serves HTTPS, use an https:// server_url; \
                     otherwise check the port"
                ))
            }
            fleet_http::Error::Tls(e) => {
                let host = fleet_http::url::Url::parse(&self.base_url).map(|u| u.host).unwrap_or_default();
                let failure = self.tls.failure(&host, e);
                if failure.needs_admin() {
                    HttpError::Tls(failure.to_string())
                } else {
                    HttpError::Transport(failure.to_string())
                }
            }
            other => HttpError::Transport(other.to_string()),
        }
    }
}

/// `Retry-After` as seconds (`120`) or an HTTP date (`Sun, 22 Nov 2026 13:00:00 GMT`).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let now = chrono::Utc::now();
    let delta = when.signed_duration_since(now).to_std().ok()?;
    Some(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), None, "a past date is no wait");
        let future = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = parse_retry_after(&future).map(|d| d.as_secs());
        assert!(wait.is_some_and(|s| (85..=90).contains(&s)), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here").expect("write");
        let settings = HttpSettings {
            ca_file: Some(&empty),
            pinned: &[],
            verify_tls: true,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        let error = HttpClient::new("https://127.0.0.1:1", None, &settings).err().map(|e| e.to_string());
        assert!(error.as_deref().is_some_and(|e| e.contains("empty.pem") && e.contains("no CERTIFICATE")), "{error:?}");
    }

    fn settings() -> HttpSettings<'static> {
        HttpSettings {
            ca_file: None,
            pinned: &[],
            verify_tls: true,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// A loopback HTTP/1.1 server answering every request `200 ok`, with `Connection: close`
    /// when `close`; returns its URL and the count of accepted connections.
    fn counting_server(close: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut writer = stream;
                    loop {
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let connection = if close { "Connection: close\r\n" } else { "" };
                        let answer = format!("HTTP/1.1 200 OK\r\n{connection}Content-Length: 2\r\n\r\nok");
                        if writer.write_all(answer.as_bytes()).is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[test]
    fn connections_are_reused_when_the_server_keeps_them_alive() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = counting_server(false);
        let client = HttpClient::new(&url, None, &settings()).map_err(|e| e.to_string()).expect("client");
        for _ in 0..5 {
            let response = client.post_json("/x", b"{\"a\":1}").map_err(|e| e.to_string()).expect("answer");
            assert_eq!((response.status, response.body.as_str()), (200, "ok"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for five requests");

        let (url, accepted) = counting_server(true);
        let client = HttpClient::new(&url, None, &settings()).map_err(|e| e.to_string()).expect("client");
        for _ in 0..3 {
            let response = client.post_json("/x", b"{}").map_err(|e| e.to_string()).expect("answer");
            assert_eq!(response.status, 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "a server that closes gets a new connection each time");
    }

    #[test]
    fn bodies_larger_than_the_buffers_are_sent_whole() {
        let (url, _) = counting_server(false);
        let client = HttpClient::new(&url, None, &settings()).map_err(|e| e.to_string()).expect("client");
        let body = vec![b'x'; 5 * BUFFER_BYTES + 17];
        let response = client.post_json("/x", &body).map_err(|e| e.to_string()).expect("answer");
        assert_eq!(response.status, 200);
    }

    #[test]
    fn ip_literals_need_no_resolver() {
        let literal = |text: &str| fleet_http::url::Url::parse(text).expect("url").ip_literal();
        assert_eq!(literal("http://127.0.0.1:8768/x"), Some("127.0.0.1:8768".parse().expect("addr")));
        assert_eq!(literal("https://[::1]/x"), Some("[::1]:443".parse().expect("addr")));
        assert_eq!(literal("http://10.1.2.3/x"), Some("10.1.2.3:80".parse().expect("addr")));
        assert_eq!(literal("https://fleet.example.com/x"), None);
    }

    #[test]
    fn a_refused_connection_is_a_network_error_not_an_admin_one() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let client = HttpClient::new(&format!("http://127.0.0.1:{port}"), None, &settings())
            .map_err(|e| e.to_string())
            .expect("client");
        let error = client.post_json("/x", b"{}").expect_err("nobody listens");
        assert!(!error.needs_admin(), "{error}");
        assert!(error.to_string().contains("refused"), "{error}");
    }
}
