//! fleet-agent's HTTP/1.1 client: small, strict and synchronous (docs/http-client.md says what
//! it speaks, its limits, and when it reuses a connection).
//!
//! One job: send a request with a known length to one server and read its answer, under one
//! deadline, over plain TCP, TLS (rustls, with the caller's [`rustls::ClientConfig`]) or an
//! HTTP proxy's `CONNECT` tunnel, keeping at most one idle connection for the next request.
//! Used by the sender and the OTLP forwarder (`agent/sender/http.rs`, which adds the trust
//! modes) and by the speedtest widget (`widgets/speedtest/http.rs`).
//!
//! - [`url`]: the URLs it accepts; [`head`]: response heads and framing; [`chunked`]: chunked
//!   bodies; [`socket`]: deadlines on every read and write; [`proxy`]: `*_PROXY`/`NO_PROXY`;
//!   [`client`]: requests, answers, reuse.

pub mod chunked;
pub mod client;
pub mod head;
pub mod proxy;
pub mod socket;
pub mod url;

use std::fmt;
use std::io;
use std::sync::Arc;

pub use client::{Body, Client, Config, Request, Response};
pub use head::ResponseHead;
pub use proxy::Proxy;
/// The rustls this client is built with (for callers building a [`Config::tls`]).
pub use rustls;

/// Why a request produced no (complete) answer.
#[derive(Debug)]
pub enum Error {
    /// The URL is not one this client speaks (says why).
    Url(String),
    /// The request cannot be written as given: a bad method or header, or a body reader that
    /// failed or ended early.
    Request(String),
    /// The host name did not resolve.
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect(io::Error),
    /// The proxy refused or broke the `CONNECT` tunnel.
    Proxy(String),
    /// TLS failed (handshake or record): rustls' error.
    Tls(rustls::Error),
    /// The request's deadline passed while doing this.
    Timeout(&'static str),
    /// The server closed the connection before answering.
    Closed,
    /// The answer's head is malformed, too large or frames its body ambiguously.
    Head(head::HeadError),
    /// The chunked body is malformed.
    Chunked(chunked::ChunkError),
    /// The body ended before its framing said it would.
    Truncated(String),
    /// The body is longer than the caller's limit (bytes).
    BodyTooLarge(u64),
    /// A socket error while doing this.
    Io {
        /// What was being done.
        doing: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Url(why) => write!(f, "bad URL: {why}"),
            Error::Request(why) => write!(f, "bad request: {why}"),
            Error::Resolve { host, source } => write!(f, "resolving {host}: {source}"),
            Error::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                f.write_str("connection refused (is the server running, and is the port right?)")
            }
            Error::Connect(e) if e.kind() == io::ErrorKind::TimedOut => f.write_str("timed out connecting"),
            Error::Connect(e) => write!(f, "connecting: {e}"),
            Error::Proxy(why) => write!(f, "proxy: {why}"),
            Error::Tls(e) => write!(f, "TLS: {e}"),
            Error::Timeout(doing) => write!(f, "timed out {doing}"),
            Error::Closed => f.write_str("the server closed the connection without answering"),
            Error::Head(e) => e.fmt(f),
            Error::Chunked(e) => write!(f, "invalid response body: {e}"),
            Error::Truncated(what) => write!(f, "truncated response body: {what}"),
            Error::BodyTooLarge(limit) => write!(f, "response body larger than {limit} bytes"),
            Error::Io { doing, source } => write!(f, "{doing}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Resolve { source, .. } | Error::Io { source, .. } | Error::Connect(source) => Some(source),
            Error::Tls(e) => Some(e),
            Error::Head(e) => Some(e),
            Error::Chunked(e) => Some(e),
            _ => None,
        }
    }
}

/// A TLS configuration trusting Mozilla's roots (webpki-roots), TLS 1.2 and 1.3, with
/// `provider`'s cipher suites: what a client of public servers (the speedtest) needs.
pub fn mozilla_roots_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
