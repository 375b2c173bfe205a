//! One connection, one request: read the head, route, answer. Endpoint semantics are in the
//! module docs of [`super`].

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;
use serde_json::{json, Map, Value};

use super::export;
use super::http::{self, BodyFraming, Conn, Deadline, HttpError, Request, Response};
use super::store::{self, BatchOutcome, Store, StoreError, MAX_EXPORT_ROWS};
use super::Limits;
use crate::envelope::{self, EnvelopeError};
use crate::keys::{Key32, SecretString};
use crate::record::BatchBody;

/// Exact body of the answer to a body that does not authenticate (senders key off it).
pub const DECRYPTION_FAILED: &str = "Decryption failed";
/// Answer to a plaintext body when the receiver has a key.
pub const PLAINTEXT_REFUSED: &str =
    "plaintext body refused: this receiver requires sealed (encrypted) payloads, see DESIGN section 4";
/// Answer to a sealed body when the receiver has no key.
pub const NO_KEY: &str =
    "sealed body received but this receiver has no encryption key (start it with --encryption-key)";

/// Everything the workers share.
pub struct Shared {
    /// `X-API-Key` required on every endpoint but health and speedtest (`None`: no check).
    pub api_key: Option<SecretString>,
    /// Fleet keys, current first (empty: plaintext test mode).
    pub keys: Vec<Key32>,
    /// The store.
    pub store: Store,
    /// Time and size limits.
    pub limits: Limits,
    /// TLS, if serving HTTPS.
    pub tls: Option<Arc<ServerConfig>>,
}

/// Serve one accepted connection to the end.
pub fn serve(tcp: TcpStream, shared: &Shared) {
    let started = Instant::now();
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
    let deadline = Deadline { until: Instant::now() + shared.limits.read_timeout, idle: shared.limits.read_timeout };
    let mut request = match http::read_head(&mut conn, deadline) {
        Ok(request) => request,
        Err(HttpError::Closed) => return,
        Err(HttpError::Io(e)) => {
            log::debug!("{peer}: {e}");
            return;
        }
        Err(e) => {
            let status = match e {
                HttpError::Timeout => 408,
                HttpError::HeadTooLarge => 431,
                _ => 400,
            };
            log::debug!("{peer}: {e} ({status})");
            let _ = http::write_response(&mut conn, &Response::error(status, &e.to_string()));
            conn.close();
            return;
        }
    };
    let response = route(&mut conn, &mut request, shared);
    let status = match &response {
        Some(response) => {
            if let Err(e) = http::write_response(&mut conn, response) {
                log::debug!("{peer}: writing the answer failed: {e}");
            }
            response.status
        }
        None => 200,
    };
    log::debug!("{peer} {} {} -> {status} in {} ms", request.method, request.path, started.elapsed().as_millis());
    conn.close();
}

/// The answer, or `None` if the handler streamed its own.
fn route(conn: &mut Conn, request: &mut Request, shared: &Shared) -> Option<Response> {
    let method = request.method.as_str();
    let path = request.path.clone();
    let allowed: &[&str] = match path.as_str() {
        "/api/health" | "/api/fleet/machines" | "/speedtest/down" | "/__down" => &["GET"],
        "/api/fleet/report" | "/api/v2/batches" | "/speedtest/up" | "/__up" => &["POST"],
        "/api/fleet/widget-logs" => &["GET", "POST"],
        _ => return Some(Response::error(404, &format!("no such endpoint: {path}"))),
    };
    if !allowed.contains(&method) {
        return Some(Response::error(405, &format!("{path} accepts {}", allowed.join(", "))));
    }
    match path.as_str() {
        "/api/health" => return Some(health(shared)),
        "/speedtest/down" | "/__down" => return speedtest_down(conn, request, shared),
        "/speedtest/up" | "/__up" => return Some(speedtest_up(conn, request, shared)),
        _ => {}
    }
    if !authorized(request, shared) {
        return Some(Response::error(401, "missing or wrong X-API-Key"));
    }
    Some(match (method, path.as_str()) {
        ("GET", "/api/fleet/machines") => machines(shared),
        ("GET", "/api/fleet/widget-logs") => export_logs(request, shared),
        _ => match read_body(conn, request, shared) {
            Err(response) => response,
            Ok(body) => match path.as_str() {
                "/api/fleet/report" => report(&body, shared),
                "/api/fleet/widget-logs" => widget_logs(&body, shared),
                _ => batch(&body, shared),
            },
        },
    })
}

fn authorized(request: &Request, shared: &Shared) -> bool {
    let Some(expected) = &shared.api_key else {
        return true;
    };
    let Some(given) = request.header("x-api-key") else {
        return false;
    };
    // Constant time in the key's length: no early exit on the first differing byte.
    let (a, b) = (given.as_bytes(), expected.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_body(conn: &mut Conn, request: &mut Request, shared: &Shared) -> Result<Vec<u8>, Response> {
    let max = shared.limits.max_body;
    let len = match request.framing() {
        BodyFraming::Length(len) if len > max as u64 => {
            return Err(Response::error(413, &format!("body of {len} bytes exceeds the limit of {max} bytes")))
        }
        BodyFraming::Length(len) => len as usize,
        BodyFraming::Chunked => {
            return Err(Response::error(411, "Transfer-Encoding is not supported: send the body with Content-Length"))
        }
        BodyFraming::None => return Err(Response::error(411, "Content-Length required")),
        BodyFraming::Invalid => return Err(Response::error(400, "invalid Content-Length")),
    };
    http::continue_if_expected(conn, request);
    let deadline = Deadline { until: Instant::now() + shared.limits.body_deadline, idle: shared.limits.read_timeout };
    http::read_body(conn, request, len, deadline).map_err(|e| match e {
        HttpError::Timeout => Response::error(408, &e.to_string()),
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
        StoreError::Io { .. } | StoreError::Locked { .. } => {
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
    store::check_machine_id(id).map_err(|e| bad(&format!("{what}: {e}")))?;
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
    match store::machines(shared.store.root()) {
        Ok(list) => ok(&[("machines", json!(list))]),
        Err(e) => store_failed(&e),
    }
}

fn export_logs(request: &Request, shared: &Shared) -> Response {
    let format = request.query_param("format").unwrap_or_else(|| "json".into());
    if format != "json" && format != "csv" {
        return bad("format must be json or csv");
    }
    let widget_type = request.query_param("widget_type").filter(|w| !w.is_empty());
    let machine_id = request.query_param("machine_id").filter(|m| !m.is_empty());
    let found = store::widget_logs(shared.store.root(), widget_type.as_deref(), machine_id.as_deref(), MAX_EXPORT_ROWS);
    let (rows, truncated) = match found {
        Ok(found) => found,
        Err(e) => return store_failed(&e),
    };
    if format == "csv" {
        Response { status: 200, content_type: "text/csv; charset=utf-8", body: export::to_csv(&rows).into_bytes() }
    } else {
        ok(&[("count", json!(rows.len())), ("truncated", json!(truncated)), ("logs", json!(rows))])
    }
}

/// Zeros streamed by the download test (static: never allocated per request).
static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];

fn speedtest_down(conn: &mut Conn, request: &Request, shared: &Shared) -> Option<Response> {
    let bytes = match request.query_param("bytes") {
        None => 0,
        Some(text) => match text.parse::<u64>() {
            Ok(n) => n.min(shared.limits.max_speedtest),
            Err(_) => return Some(bad("bytes must be a non-negative integer")),
        },
    };
    let streamed = (|| -> std::io::Result<()> {
        http::write_head(conn, 200, "application/octet-stream", bytes)?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            conn.write_all(&ZEROS[..n])?;
            left -= n as u64;
        }
        conn.flush()
    })();
    if let Err(e) = streamed {
        log::debug!("speedtest download stopped: {e}");
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
