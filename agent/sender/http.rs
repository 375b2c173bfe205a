//! The HTTP client the sender posts with: `ureq` 3 over rustls (ring), one request per call.
//!
//! - Trust: Mozilla's roots (webpki); with `ca_file`, those plus every certificate in the PEM
//!   file (a private CA). `verify_ssl: false` disables verification (Atlas compatibility) and is
//!   warned about at every start by the caller.
//! - Every request: `Content-Type: application/json`, an explicit `Content-Length` (the body
//!   is a byte slice, never chunked), `X-API-Key` when configured, never `Authorization`.
//! - Redirects are not followed (a 3xx is reported back as a status), so a hostile or
//!   misconfigured server cannot send the agent, or its API key, to another host.
//! - Bounded: connect and whole-request timeouts; at most [`MAX_RESPONSE_BYTES`] of a response
//!   body is read.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::keys::SecretString;

/// Most bytes of a response body that are read (enough for any JSON answer).
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

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
    /// Connecting, TLS, sending or receiving failed (includes timeouts).
    Transport(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::CaFile { path, problem } => write!(f, "ca_file {path}: {problem}"),
            HttpError::Transport(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// TLS and timeout settings for [`HttpClient::new`].
pub struct HttpSettings<'a> {
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<&'a Path>,
    /// False disables certificate verification.
    pub verify_tls: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, receive).
    pub request_timeout: Duration,
}

/// A configured client for one server.
pub struct HttpClient {
    agent: ureq::Agent,
    base_url: String,
    api_key: Option<SecretString>,
}

fn load_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, HttpError> {
    let ca_error = |problem: String| HttpError::CaFile { path: path.display().to_string(), problem };
    let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| ca_error(format!("bad PEM: {e}")))? {
            ureq::tls::PemItem::Certificate(cert) => certs.push(cert),
            _ => continue,
        }
    }
    if certs.is_empty() {
        return Err(ca_error("holds no CERTIFICATE block".to_string()));
    }
    Ok(certs)
}

impl HttpClient {
    /// A client posting to `base_url` (no trailing slash needed).
    pub fn new(base_url: &str, api_key: Option<SecretString>, settings: &HttpSettings<'_>) -> Result<Self, HttpError> {
        let roots = match settings.ca_file {
            None => RootCerts::WebPki,
            Some(path) => {
                let mut certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .map(|der| Certificate::from_der(der.as_ref()).to_owned())
                    .collect();
                certs.extend(load_ca_file(path)?);
                RootCerts::Specific(Arc::new(certs))
            }
        };
        let tls = TlsConfig::builder().root_certs(roots).disable_verification(!settings.verify_tls).build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_global(Some(settings.request_timeout))
            .max_idle_connections(0)
            .user_agent(concat!("fleet-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HttpClient { agent: config.into(), base_url: base_url.trim_end_matches('/').to_string(), api_key })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// POST `body` (JSON) to `path` (e.g. `/api/v2/batches`).
    pub fn post_json(&self, path: &str, body: &[u8]) -> Result<HttpResponse, HttpError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.agent.post(&url).header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("X-API-Key", key.expose());
        }
        let response = request.send(body).map_err(|e| HttpError::Transport(describe(&e)))?;
        Ok(read_response(response))
    }

    /// GET `path` (the Atlas command poll), with `X-API-Key` when configured.
    pub fn get(&self, path: &str) -> Result<HttpResponse, HttpError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.agent.get(&url);
        if let Some(key) = &self.api_key {
            request = request.header("X-API-Key", key.expose());
        }
        let response = request.call().map_err(|e| HttpError::Transport(describe(&e)))?;
        Ok(read_response(response))
    }
}

/// Status, `Retry-After`, `Location` and at most [`MAX_RESPONSE_BYTES`] of the body.
fn read_response(mut response: ureq::http::Response<ureq::Body>) -> HttpResponse {
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
    let location = header("location");
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    HttpResponse { status, retry_after, body, location }
}

fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(what) => format!("timed out ({what})"),
        other => other.to_string(),
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
            verify_tls: true,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        let error = HttpClient::new("https://127.0.0.1:1", None, &settings).err().map(|e| e.to_string());
        assert!(error.as_deref().is_some_and(|e| e.contains("empty.pem") && e.contains("no CERTIFICATE")), "{error:?}");
    }
}
