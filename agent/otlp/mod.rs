//! OTLP out: `fleet-agent receive --forward-otlp URL` sends every committed record, decrypted,
//! to an OpenTelemetry Collector as OTLP/HTTP JSON, at least once, from a durable cursor kept
//! by the store. The whole behaviour (metric names, attributes, answers, cursor, counters) and
//! test vectors: `docs/otlp-forwarding.md`.
//!
//! - [`semconv`]: widget data to metric points (names and units of the OpenTelemetry semantic
//!   conventions where one exists);
//! - [`encode`]: stored rows to `ExportMetricsServiceRequest` / `ExportLogsServiceRequest` JSON;
//! - [`forwarder`]: the thread that loops on the store's `forward_pending` and posts;
//! - [`source`]: the narrow view of the store the forwarder needs.

pub mod encode;
pub mod forwarder;
pub mod semconv;
pub mod source;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::sender::http::{HttpClient, HttpError, HttpSettings};
use fleet_wire::keys::SecretString;

/// Connect timeout of a request to the collector.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout (a push of about 500 rows is a few hundred KiB).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The collector URL or its options are wrong (a usage error naming the flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfigError(pub String);

impl fmt::Display for OtlpConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OtlpConfigError {}

/// Check a collector base URL: `http(s)://host[:port][/path]`, no credentials, no query, not
/// already ending in a signal path (`/v1/metrics` and `/v1/logs` are appended).
pub fn check_url(url: &str) -> Result<String, OtlpConfigError> {
    let bad = |why: &str| Err(OtlpConfigError(format!("--forward-otlp `{url}`: {why}")));
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return bad(
            "must start with http:// or https:// (the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318)",
        );
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return bad("has no host");
    }
    if authority.contains('@') {
        return bad("must not hold user:password@ (give a header with --forward-otlp-header-file)");
    }
    if rest.contains('?') || rest.contains('#') {
        return bad("must not hold a query or a fragment");
    }
    let base = url.trim_end_matches('/');
    if base.ends_with("/v1/metrics") || base.ends_with("/v1/logs") {
        return bad("give the base URL: /v1/metrics and /v1/logs are appended");
    }
    Ok(base.to_string())
}

/// Parse a header file's text: one `Name: value` line (e.g. `Authorization: Bearer …`).
pub fn parse_header(text: &str) -> Result<(String, SecretString), OtlpConfigError> {
    let line = text.trim();
    let bad = |why: &str| Err(OtlpConfigError(format!("--forward-otlp-header-file: {why}")));
    if line.contains('\n') || line.contains('\r') {
        return bad("must hold exactly one line `Name: value`");
    }
    let Some((name, value)) = line.split_once(':') else { return bad("must be one line `Name: value`") };
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
        return bad("the header name must be letters, digits, - or _");
    }
    if value.is_empty() || value.chars().any(char::is_control) {
        return bad("the header value must not be empty or hold control characters");
    }
    let reserved = ["content-type", "content-length", "host", "transfer-encoding", "connection"];
    if reserved.contains(&name.to_ascii_lowercase().as_str()) {
        return bad("that header is set by the forwarder itself");
    }
    Ok((name.to_string(), SecretString::new(value.to_string())))
}

/// The HTTP client for the collector at `url` (checked with [`check_url`]): Mozilla's roots
/// plus `ca_file`'s certificates for https, the header if any.
pub fn collector_client(
    url: &str,
    header: Option<(String, SecretString)>,
    ca_file: Option<&Path>,
) -> Result<HttpClient, OtlpConfigError> {
    let base = check_url(url)?;
    let settings = HttpSettings {
        ca_file,
        pinned: &[],
        verify_tls: true,
        connect_timeout: CONNECT_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
    };
    let client = HttpClient::new(&base, None, &settings)
        .map_err(|e: HttpError| OtlpConfigError(format!("--forward-otlp-ca-file: {e}")))?;
    Ok(match header {
        Some((name, value)) => client.with_header(&name, value),
        None => client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(check_url("http://127.0.0.1:4318/").as_deref(), Ok("http://127.0.0.1:4318"));
        assert_eq!(check_url("https://otel.example.com/otlp").as_deref(), Ok("https://otel.example.com/otlp"));
        let err = |u: &str| check_url(u).err().map(|e| e.0).unwrap_or_default();
        assert!(err("127.0.0.1:4318").contains("http://"));
        assert!(err("http://u:p@host:4318").contains("user:password"));
        assert!(err("http://host:4318/v1/metrics").contains("base URL"));
        assert!(err("http:///x").contains("no host"));
        assert!(err("http://h/?a=1").contains("query"));
    }

    #[test]
    fn header_files_hold_one_name_and_value() {
        let (name, value) = parse_header("Authorization: Bearer abc\n").map_err(|e| e.0).expect("parses");
        assert_eq!((name.as_str(), value.expose()), ("Authorization", "Bearer abc"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("Bad Name: x").is_err());
        assert!(parse_header("X-Key:").is_err());
        assert!(parse_header("A: b\nC: d").is_err());
        assert!(parse_header("Content-Length: 3").is_err());
    }
}
