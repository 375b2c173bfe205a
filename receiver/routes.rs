//! One connection: read a head, check the credentials, route, answer; again while the client
//! keeps the connection alive. Endpoint semantics are in the module docs of [`super`].

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;
use serde_json::{json, Map, Value};

use super::auth::{Access, Credentials};
use super::export::{self, ExportFormat};
use super::http::{self, BodyFraming, ChunkedBody, Conn, Deadline, HttpError, Request, Response};
use super::storage::{self, BatchOutcome, LogFilter, Storage, StoreError};
use super::{Gate, Limits};
use fleet_wire::envelope::{self, EnvelopeError};
use fleet_wire::keys::Key32;
use fleet_wire::record::BatchBody;

/// Exact body of the answer to a body that does not authenticate (senders key off it).
pub const DECRYPTION_FAILED: &str = "Decryption failed";
/// Answer to a plaintext body when the receiver has a key.
pub const PLAINTEXT_REFUSED: &str =
    "plaintext body refused: this receiver requires sealed (encrypted) payloads (docs/v2-protocol.md)";
/// Answer to a sealed body when the receiver has no key.
pub const NO_KEY: &str =
    "sealed body received but this receiver has no encryption key (start it with --encryption-key-file)";

/// Longest wait of a read for a free export slot before 503.
const EXPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything the connection threads share.
pub struct Shared {
    /// Who may write and who may read.
    pub credentials: Credentials,
    /// Fleet keys, current first (empty: plaintext test mode).
    pub keys: Vec<Key32>,
    /// The store (any backend).
    pub store: Arc<dyn Storage>,
    /// Time and size limits.
    pub limits: Limits,
    /// TLS, if serving HTTPS.
    pub tls: Option<Arc<ServerConfig>>,
    /// Set when shutting down: idle kept-alive connections end.
    pub stop: AtomicBool,
    /// Permits to do the work of a request (open, parse, store).
    pub workers: Gate,
    /// Permits to run an export.
    pub exports: Gate,
    /// Bytes of request bodies in memory, all connections together.
    pub bodies: Gate,
}

/// Serve one accepted connection to the end (several requests with keep-alive).
pub fn serve(tcp: TcpStream, shared: &Shared) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_write_timeout(Some(shared.limits.read_timeout));
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut conn = match Conn::new(tcp, shared.tls.as_ref()) {
        Ok(conn) => conn,
        Err(e) => {
            log::warn!("cannot start a TLS session for {peer}: {e}");
            return;
        }
    };
    let mut pending = Vec::new();
    let mut first = true;
    loop {
        if !first && pending.is_empty() && !http::wait_for_next(&mut conn, shared.limits.keep_alive_idle, &shared.stop)
        {
            break;
        }
        first = false;
        let started = Instant::now();
        let deadline =
            Deadline { until: Instant::now() + shared.limits.head_deadline, idle: shared.limits.read_timeout };
        let mut request = match http::read_head(&mut conn, std::mem::take(&mut pending), deadline) {
            Ok(request) => request,
            Err(HttpError::Closed) => break,
            Err(HttpError::Io(e)) => {
                log::debug!("{peer}: {e}");
                break;
            }
            Err(e) => {
                let status = match e {
                    HttpError::Timeout => 408,
                    HttpError::HeadTooLarge => 431,
                    _ => 400,
                };
                log::debug!("{peer}: {e} ({status})");
                let _ = http::write_response(&mut conn, &Response::error(status, &e.to_string()), false);
                break;
            }
        };
        if request.framing() == BodyFraming::None {
            request.body_done = true;
        }
        let response = route(&mut conn, &mut request, shared);
        let keep = request.keep_alive() && !shared.stop.load(Ordering::SeqCst);
        let status = match &response {
            Some(response) => {
                if let Err(e) = http::write_response(&mut conn, response, keep) {
                    log::debug!("{peer}: writing the answer failed: {e}");
                    break;
                }
                response.status
            }
            None => 200,
        };
        log::debug!(
            "{peer} {} {} -> {status} in {} ms",
            request.method,
            redacted_path(&request.path),
            started.elapsed().as_millis()
        );
        if !keep || (response.is_none() && !request.body_done) {
            break;
        }
        pending = request.take_leftover();
    }
    conn.close();
}

/// The path as logged: a speedtest key in it is replaced by `…`.
fn redacted_path(path: &str) -> String {
    match speedtest_path(path) {
        Some((Some(_), rest)) => format!("/speedtest/key/…/{rest}"),
        _ => path.to_string(),
    }
}

/// A speedtest path: `(key in the path, "down" | "up")`.
fn speedtest_path(path: &str) -> Option<(Option<&str>, &str)> {
    let direction = |name: &str| match name {
        "down" | "__down" => Some("down"),
        "up" | "__up" => Some("up"),
        _ => None,
    };
    match path {
        "/speedtest/down" | "/__down" => return Some((None, "down")),
        "/speedtest/up" | "/__up" => return Some((None, "up")),
        _ => {}
    }
    let rest = path.strip_prefix("/speedtest/key/")?;
    let (key, name) = rest.rsplit_once('/')?;
    Some((Some(key), direction(name)?))
}

/// The answer, or `None` if the handler streamed its own.
fn route(conn: &mut Conn, request: &mut Request, shared: &Shared) -> Option<Response> {
    let method = request.method.clone();
    let path = request.path.clone();
    if let Some((path_key, direction)) = speedtest_path(&path) {
        let expected = if direction == "down" { "GET" } else { "POST" };
        if method != expected {
            return Some(Response::error(405, &format!("{path} accepts {expected}")));
        }
        let path_key = path_key.and_then(http::percent_decode_path);
        if shared.credentials.write(request, path_key.as_deref()) != Access::Allowed {
            return Some(Response::error(401, "missing or wrong X-API-Key"));
        }
        return match direction {
            "down" => speedtest_down(conn, request, shared),
            _ => Some(speedtest_up(conn, request, shared)),
        };
    }
    let allowed: &[&str] = match path.as_str() {
        "/api/health" | "/api/fleet/machines" => &["GET"],
        "/api/fleet/report" | "/api/v2/batches" => &["POST"],
        "/api/fleet/widget-logs" => &["GET", "POST"],
        _ => return Some(Response::error(404, &format!("no such endpoint: {path}"))),
    };
    if !allowed.contains(&method.as_str()) {
        return Some(Response::error(405, &format!("{path} accepts {}", allowed.join(", "))));
    }
    if path == "/api/health" {
        return Some(health(shared));
    }
    if method == "GET" {
        match shared.credentials.read(request) {
            Access::Allowed => {}
            Access::Unauthorized => {
                return Some(Response::error(401, "missing or wrong read token (Authorization: Bearer TOKEN)"))
            }
            Access::Forbidden => return Some(Response::error(403, shared.credentials.read_forbidden_message())),
        }
        return match path.as_str() {
            "/api/fleet/machines" => Some(machines(shared)),
            _ => export_logs(conn, request, shared),
        };
    }
    if shared.credentials.write(request, None) != Access::Allowed {
        return Some(Response::error(401, "missing or wrong X-API-Key"));
    }
    let len = match body_length(request, shared) {
        Ok(len) => len,
        Err(response) => return Some(response),
    };
    let Some(_memory) = shared.bodies.acquire(len as u64, shared.limits.read_timeout) else {
        return Some(busy("too many request bodies in memory"));
    };
    let body = match read_body(conn, request, len, shared) {
        Ok(body) => body,
        Err(response) => return Some(response),
    };
    let Some(_worker) = shared.workers.acquire(1, shared.limits.read_timeout) else {
        return Some(busy("every worker is busy"));
    };
    Some(match path.as_str() {
        "/api/fleet/report" => report(&body, shared),
        "/api/fleet/widget-logs" => widget_logs(&body, shared),
        _ => batch(&body, shared),
    })
}

/// Seconds a busy receiver asks the client to wait (`Retry-After` when every worker, body or
/// export slot is taken).
pub const BUSY_RETRY_AFTER_S: u32 = 1;
/// Seconds asked while the store's database is unavailable: longer than [`BUSY_RETRY_AFTER_S`],
/// so that a fleet does not hammer a database that is recovering.
pub const DATABASE_RETRY_AFTER_S: u32 = 5;

/// 503 with `Retry-After: 1` (the agent backs off at least that long and resends).
fn busy(why: &str) -> Response {
    unavailable(why, BUSY_RETRY_AFTER_S)
}

/// 503 with `Retry-After: seconds`.
fn unavailable(why: &str, seconds: u32) -> Response {
    Response { retry_after: Some(seconds), ..Response::error(503, &format!("{why}, retry in a moment")) }
}

fn body_length(request: &Request, shared: &Shared) -> Result<usize, Response> {
    let max = shared.limits.max_body;
    match request.framing() {
        BodyFraming::Length(len) if len > max as u64 => {
            Err(Response::error(413, &format!("body of {len} bytes exceeds the limit of {max} bytes")))
        }
        BodyFraming::Length(len) => Ok(len as usize),
        BodyFraming::Chunked => {
            Err(Response::error(411, "Transfer-Encoding is not supported: send the body with Content-Length"))
        }
        BodyFraming::None => Err(Response::error(411, "Content-Length required")),
        BodyFraming::Invalid => Err(Response::error(400, "invalid Content-Length")),
    }
}

fn read_body(conn: &mut Conn, request: &mut Request, len: usize, shared: &Shared) -> Result<Vec<u8>, Response> {
    http::continue_if_expected(conn, request);
    let deadline = Deadline { until: shared.limits.body_deadline(len as u64), idle: shared.limits.read_timeout };
    http::read_body(conn, request, len, deadline).map_err(|e| match e {
        HttpError::Timeout => Response::error(408, &format!("{e}: a body must arrive at 16 KiB/s or faster")),
        _ => Response::error(400, &e.to_string()),
    })
}

/// A 200 JSON object with its fields in the order given (`status` first, as Atlas answers).
fn ok(fields: &[(&str, Value)]) -> Response {
    Response::ordered_json(200, fields)
}

fn bad(message: &str) -> Response {
    Response::error(400, message)
}

fn store_failed(error: &StoreError) -> Response {
    match error {
        StoreError::MachineId(_) => bad(&error.to_string()),
        // The database is down, unreachable or overloaded: nothing was stored, the agent keeps
        // its records and resends after Retry-After (the receiver reconnects on its own).
        StoreError::Database { .. } => {
            log::error!("storing failed: {error}");
            unavailable("the store's database is unavailable", DATABASE_RETRY_AFTER_S)
        }
        _ => {
            log::error!("storing failed: {error}");
            Response::error(500, "storing failed")
        }
    }
}

fn health(shared: &Shared) -> Response {
    ok(&[
        ("status", json!("ok")),
        ("version", json!(env!("CARGO_PKG_VERSION"))),
        ("e2ee", json!(!shared.keys.is_empty())),
        ("protocols", json!(["1", "2"])),
    ])
}

/// Parse a body as a JSON object, naming the problem.
fn object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, Response> {
    envelope::parse_object(bytes).map_err(|e| match e {
        EnvelopeError::Json(why) => bad(&format!("{what} is not a JSON object: {why}")),
        other => bad(&other.to_string()),
    })
}

/// Open a v1 body (or take it as plaintext in test mode): the payload object and whether it was sealed.
fn open_v1(body: &[u8], shared: &Shared) -> Result<(Map<String, Value>, bool), Response> {
    let outer = object(body, "body")?;
    if shared.keys.is_empty() {
        return if envelope::is_sealed(&outer) { Err(bad(NO_KEY)) } else { Ok((outer, false)) };
    }
    for key in &shared.keys {
        match envelope::open_v1_value(key, &outer) {
            Ok(plaintext) => return Ok((object(&plaintext, "decrypted payload")?, true)),
            Err(EnvelopeError::Decrypt) => continue,
            Err(EnvelopeError::NotSealed) => return Err(bad(PLAINTEXT_REFUSED)),
            Err(e) => return Err(bad(&e.to_string())),
        }
    }
    Err(bad(DECRYPTION_FAILED))
}

fn field<'a>(object: &'a Map<String, Value>, name: &str, what: &str) -> Result<&'a Value, Response> {
    object.get(name).ok_or_else(|| bad(&format!("{what}: field `{name}` is missing")))
}

fn string_field<'a>(object: &'a Map<String, Value>, name: &str, what: &str) -> Result<&'a str, Response> {
    field(object, name, what)?.as_str().ok_or_else(|| bad(&format!("{what}: field `{name}` must be a string")))
}

fn machine_id<'a>(object: &'a Map<String, Value>, what: &str) -> Result<&'a str, Response> {
    let id = string_field(object, "machine_id", what)?;
    storage::check_machine_id(id).map_err(|e| bad(&format!("{what}: {e}")))?;
    Ok(id)
}

fn report(body: &[u8], shared: &Shared) -> Response {
    let (report, e2ee) = match open_v1(body, shared) {
        Ok(opened) => opened,
        Err(response) => return response,
    };
    let checked = (|| {
        let id = machine_id(&report, "report")?;
        for name in ["machine_info", "metrics"] {
            if !field(&report, name, "report")?.is_object() {
                return Err(bad(&format!("report: field `{name}` must be an object")));
            }
        }
        Ok(id.to_string())
    })();
    let id = match checked {
        Ok(id) => id,
        Err(response) => return response,
    };
    let id = id.as_str();
    match shared.store.append_report(id, &Value::Object(report), e2ee) {
        Ok(()) => ok(&[("status", json!("ok")), ("e2ee_verified", json!(e2ee)), ("machine_id", json!(id))]),
        Err(e) => store_failed(&e),
    }
}

fn widget_logs(body: &[u8], shared: &Shared) -> Response {
    let (payload, e2ee) = match open_v1(body, shared) {
        Ok(opened) => opened,
        Err(response) => return response,
    };
    let checked = (|| {
        let id = machine_id(&payload, "widget logs")?;
        let logs = field(&payload, "logs", "widget logs")?
            .as_array()
            .ok_or_else(|| bad("widget logs: field `logs` must be an array"))?;
        for (i, entry) in logs.iter().enumerate() {
            let what = format!("widget logs: logs[{i}]");
            let entry = entry.as_object().ok_or_else(|| bad(&format!("{what} must be an object")))?;
            for name in ["timestamp", "level", "widget_type", "message"] {
                string_field(entry, name, &what)?;
            }
            field(entry, "data", &what)?;
        }
        Ok((id, logs))
    })();
    let (id, logs) = match checked {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    match shared.store.append_widget_logs(id, logs, e2ee) {
        Ok(n) => ok(&[("status", json!("ok")), ("logs_stored", json!(n)), ("e2ee_verified", json!(e2ee))]),
        Err(e) => store_failed(&e),
    }
}

fn batch(body: &[u8], shared: &Shared) -> Response {
    let outer = match object(body, "body") {
        Ok(outer) => outer,
        Err(response) => return response,
    };
    let (plaintext, envelope_ids, kid) = if shared.keys.is_empty() {
        if envelope::is_sealed(&outer) {
            return bad(NO_KEY);
        }
        (body.to_vec(), None, None)
    } else {
        match envelope::open_v2_value(&shared.keys, &outer) {
            Ok(opened) => (opened.plaintext, Some((opened.machine_id, opened.seq)), Some(opened.kid)),
            Err(EnvelopeError::NotSealed) => return bad(PLAINTEXT_REFUSED),
            Err(EnvelopeError::UnknownKid(kid)) => {
                let from = outer.get("machine_id").and_then(Value::as_str).unwrap_or("?");
                log::warn!("v2 batch from {from:?} sealed with key id {kid}, which no configured key has");
                return bad(DECRYPTION_FAILED);
            }
            Err(EnvelopeError::Decrypt) => return bad(DECRYPTION_FAILED),
            Err(e) => return bad(&e.to_string()),
        }
    };
    let batch: BatchBody = match serde_json::from_slice(&plaintext) {
        Ok(batch) => batch,
        Err(e) => return bad(&format!("batch plaintext is not a valid batch: {e}")),
    };
    if let Some((id, seq)) = envelope_ids {
        if batch.machine_id != id || batch.seq != seq {
            return bad("batch plaintext machine_id/seq do not match the envelope's");
        }
    }
    match shared.store.append_batch(&batch, kid.as_deref()) {
        Ok(BatchOutcome::Stored(n)) => ok(&[("status", json!("ok")), ("stored", json!(n))]),
        Ok(BatchOutcome::Duplicate) => ok(&[("status", json!("ok")), ("duplicate", json!(true))]),
        Ok(BatchOutcome::Conflict { stored, offered }) => {
            let error = format!(
                "seq {} of machine {:?} was stored with other records: seq space collision (another sender uses \
                 this machine_id and seq); nothing stored",
                batch.seq, batch.machine_id
            );
            log::warn!("{error} (stored digest {stored}, offered {offered})");
            Response::ordered_json(
                409,
                &[
                    ("error", json!(error)),
                    ("machine_id", json!(batch.machine_id)),
                    ("seq", json!(batch.seq)),
                    ("stored_digest", json!(stored)),
                    ("offered_digest", json!(offered)),
                ],
            )
        }
        Err(e) => store_failed(&e),
    }
}

fn machines(shared: &Shared) -> Response {
    let Some(_slot) = shared.exports.acquire(1, EXPORT_WAIT) else {
        return busy("every export slot is busy");
    };
    match shared.store.machines() {
        Ok(list) => ok(&[("machines", json!(list))]),
        Err(e) => store_failed(&e),
    }
}

/// Stream the widget-log export (JSON or CSV) straight from the store to the client, in
/// constant memory, up to `max_export_bytes`; tampered rows are skipped and counted.
fn export_logs(conn: &mut Conn, request: &mut Request, shared: &Shared) -> Option<Response> {
    let format = match request.query_param("format").as_deref() {
        None | Some("json") => ExportFormat::Json,
        Some("csv") => ExportFormat::Csv,
        Some(_) => return Some(bad("format must be json or csv")),
    };
    let filter = LogFilter {
        widget_type: request.query_param("widget_type").filter(|w| !w.is_empty()),
        machine_id: request.query_param("machine_id").filter(|m| !m.is_empty()),
    };
    let Some(_slot) = shared.exports.acquire(1, EXPORT_WAIT) else {
        return Some(busy("every export slot is busy"));
    };
    let keep = request.keep_alive();
    let mut body = match ChunkedBody::start(conn, format.content_type(), request.http11, keep) {
        Ok(body) => body,
        Err(e) => {
            log::debug!("export: writing the head failed: {e}");
            request.body_done = false;
            return None;
        }
    };
    let mut writer = export::Writer::new(format, shared.limits.max_export_bytes);
    let streamed = writer.start(&mut body).and_then(|()| {
        let mut failed = None;
        let stats = shared.store.widget_logs(&filter, &mut |row| match writer.row(&mut body, &row) {
            Ok(more) => more,
            Err(e) => {
                failed = Some(e);
                false
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let stats = stats.map_err(std::io::Error::other)?;
        if stats.bad > 0 {
            log::warn!("export skipped {} tampered or unreadable rows (run `fleet-agent receive verify`)", stats.bad);
        }
        writer.finish(&mut body, stats.bad)
    });
    match streamed.and_then(|()| body.finish()) {
        Ok(()) => {}
        Err(e) => {
            // The status line is gone already: end the connection so the client sees a cut answer.
            log::warn!("export stopped: {e}");
            request.body_done = false;
        }
    }
    None
}

fn speedtest_down(conn: &mut Conn, request: &mut Request, shared: &Shared) -> Option<Response> {
    let bytes = match request.query_param("bytes") {
        None => 0,
        Some(text) => match text.parse::<u64>() {
            Ok(n) => n.min(shared.limits.max_speedtest),
            Err(_) => return Some(bad("bytes must be a non-negative integer")),
        },
    };
    // Zeros on the stack, filled per request: a static zero block would sit in the binary.
    let zeros = [0u8; 16 * 1024];
    let streamed = (|| -> std::io::Result<()> {
        http::write_head(conn, 200, "application/octet-stream", bytes, request.keep_alive())?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            conn.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        conn.flush()
    })();
    if let Err(e) = streamed {
        log::debug!("speedtest download stopped: {e}");
        request.body_done = false;
    }
    None
}

fn speedtest_up(conn: &mut Conn, request: &mut Request, shared: &Shared) -> Response {
    let max = shared.limits.max_speedtest;
    let len = match request.framing() {
        BodyFraming::Length(len) if len > max => {
            return Response::error(413, &format!("upload of {len} bytes exceeds the limit of {max} bytes"))
        }
        BodyFraming::Length(len) => len,
        BodyFraming::None => 0,
        BodyFraming::Chunked => {
            return Response::error(411, "Transfer-Encoding is not supported: send the body with Content-Length")
        }
        BodyFraming::Invalid => return bad("invalid Content-Length"),
    };
    http::continue_if_expected(conn, request);
    let deadline =
        Deadline { until: Instant::now() + shared.limits.speedtest_deadline, idle: shared.limits.read_timeout };
    match http::discard_body(conn, request, len, deadline) {
        Ok(n) => ok(&[("status", json!("ok")), ("bytes", json!(n))]),
        Err(e @ HttpError::Timeout) => Response::error(408, &e.to_string()),
        Err(e) => bad(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speedtest_paths_and_the_key_never_logged() {
        assert_eq!(speedtest_path("/__down"), Some((None, "down")));
        assert_eq!(speedtest_path("/speedtest/up"), Some((None, "up")));
        assert_eq!(speedtest_path("/speedtest/key/s3cret/__up"), Some((Some("s3cret"), "up")));
        assert_eq!(speedtest_path("/speedtest/key/s3cret/down"), Some((Some("s3cret"), "down")));
        assert_eq!(speedtest_path("/speedtest/key/s3cret/other"), None);
        assert_eq!(speedtest_path("/api/health"), None);
        assert_eq!(redacted_path("/speedtest/key/s3cret/__down"), "/speedtest/key/…/down");
        assert_eq!(redacted_path("/api/v2/batches"), "/api/v2/batches");
    }
}
