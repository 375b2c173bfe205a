//! The receiver's minimal HTTP/1.1, with keep-alive.
//!
//! A request head is read into a 16 KiB buffer and parsed by `httparse` (at most 64 headers)
//! under one deadline for the whole head; the body is read only after the route has checked
//! the credentials and the declared `Content-Length` against its cap, so an oversized body is
//! answered 413 without being read, and under a deadline that grows with its length (a
//! minimum transfer rate). Chunked request bodies are refused (411): both the Atlas agent and
//! ours always send a length. Large answers (exports) are streamed with chunked
//! transfer-encoding ([`ChunkedBody`]), or delimited by closing the connection for HTTP/1.0.
//!
//! A connection is kept open after an answer when the request was HTTP/1.1 without
//! `Connection: close` and its body was read to the end; otherwise the answer says
//! `Connection: close` and the connection ends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::json;

/// Largest request head accepted (request line + headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 64;

/// A client connection, plain TCP or TLS over TCP.
pub enum Conn {
    /// `http://`.
    Plain(TcpStream),
    /// `https://` (rustls 0.23, the same TLS stack as the agent's client).
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Conn {
    /// Wrap an accepted socket, starting a TLS session if `tls` is set (the handshake runs on
    /// the first read, under the read timeout).
    pub fn new(tcp: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<Conn> {
        match tls {
            None => Ok(Conn::Plain(tcp)),
            Some(config) => {
                let session = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
                Ok(Conn::Tls(Box::new(StreamOwned::new(session, tcp))))
            }
        }
    }

    /// The underlying socket (timeouts, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(stream) => &stream.sock,
        }
    }

    /// Finish the exchange: TLS close_notify, half-close, then discard a little of whatever the
    /// client is still sending (bounded) so that the kernel does not answer it with a reset that
    /// would destroy the response before the client has read it.
    pub fn close(mut self) {
        if let Conn::Tls(stream) = &mut self {
            stream.conn.send_close_notify();
        }
        let _ = self.flush();
        let tcp = self.tcp();
        let _ = tcp.shutdown(Shutdown::Write);
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 8192];
        let mut budget = 1024 * 1024usize;
        let mut raw = tcp;
        while budget > 0 {
            match raw.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.read(buf),
            Conn::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.write(buf),
            Conn::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(tcp) => tcp.flush(),
            Conn::Tls(stream) => stream.flush(),
        }
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum HttpError {
    /// The client closed the connection before sending a complete request.
    Closed,
    /// The client was too slow (idle timeout or overall deadline).
    Timeout,
    /// The head exceeds [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers.
    HeadTooLarge,
    /// The head is not valid HTTP/1.x; says what.
    Malformed(String),
    /// The body ended before its `Content-Length`.
    ShortBody,
    /// A socket or TLS error.
    Io(io::Error),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Closed => f.write_str("client closed the connection before a complete request"),
            HttpError::Timeout => f.write_str("request timed out"),
            HttpError::HeadTooLarge => write!(f, "request head larger than {MAX_HEAD} bytes or {MAX_HEADERS} headers"),
            HttpError::Malformed(why) => write!(f, "malformed request: {why}"),
            HttpError::ShortBody => f.write_str("request body shorter than its Content-Length"),
            HttpError::Io(e) => write!(f, "reading the request failed: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

fn classify(error: io::Error) -> HttpError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            HttpError::Closed
        }
        _ => HttpError::Io(error),
    }
}

/// Time limits for one request.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// When the whole request must have arrived.
    pub until: Instant,
    /// Longest wait for any single read.
    pub idle: Duration,
}

impl Deadline {
    /// Set the socket's read timeout for the next read; `Timeout` once the deadline has passed.
    fn arm(&self, conn: &Conn) -> Result<(), HttpError> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout);
        }
        let wait = left.min(self.idle).max(Duration::from_millis(1));
        conn.tcp().set_read_timeout(Some(wait)).map_err(HttpError::Io)
    }
}

/// A parsed request head (the body is read separately).
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ….
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string (after `?`, may be empty).
    pub query: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// `HTTP/1.1` (true) or `HTTP/1.0`.
    pub http11: bool,
    /// True once the body (if any) has been read to its end: only then can the connection
    /// carry another request.
    pub body_done: bool,
    /// Bytes after the head that arrived with it (body, or the next pipelined request).
    leftover: Vec<u8>,
}

/// What the head says about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No `Content-Length` and no `Transfer-Encoding`.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding` present (chunked or other): refused.
    Chunked,
    /// `Content-Length` unparsable or given twice with different values.
    Invalid,
}

impl Request {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// How the body is delimited.
    pub fn framing(&self) -> BodyFraming {
        if self.header("transfer-encoding").is_some() {
            return BodyFraming::Chunked;
        }
        let mut lengths = self.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.trim());
        let Some(first) = lengths.next() else {
            return BodyFraming::None;
        };
        if lengths.any(|other| other != first) || first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return BodyFraming::Invalid;
        }
        first.parse().map(BodyFraming::Length).unwrap_or(BodyFraming::Invalid)
    }

    /// True if the connection may carry another request after this one's answer.
    pub fn keep_alive(&self) -> bool {
        let close =
            self.header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        self.http11 && !close && self.body_done
    }

    /// Bytes received after this request (the start of a pipelined next request).
    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.leftover)
    }

    /// A query parameter, percent-decoded (`+` is a space); the first occurrence.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').filter_map(|pair| pair.split_once('=').or(Some((pair, "")))).find_map(|(k, v)| {
            (percent_decode(k).as_deref() == Some(name)).then(|| percent_decode(v).unwrap_or_default())
        })
    }
}

/// Decode a query string's `%XX` and `+` (a space in form encoding); `None` if the result is
/// not UTF-8 or an escape is malformed.
pub fn percent_decode(text: &str) -> Option<String> {
    decode(text, true)
}

/// Decode a path segment's `%XX`; a `+` stays a `+` there (RFC 3986: only a query string's form
/// encoding makes it a space). An API key in the speedtest path (base64 keys hold `+`) is
/// compared as written.
pub fn percent_decode_path(text: &str) -> Option<String> {
    decode(text, false)
}

fn decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Read and parse the request head; `pending` holds bytes already received (pipelined after
/// the previous request). The whole head must arrive before `deadline.until`.
pub fn read_head(conn: &mut Conn, pending: Vec<u8>, deadline: Deadline) -> Result<Request, HttpError> {
    let mut buf = pending;
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            if let Some(request) = parse_head(&buf)? {
                return Ok(request);
            }
        }
        deadline.arm(conn)?;
        let n = match conn.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(HttpError::Closed),
            Ok(0) => return Err(HttpError::Malformed("connection closed inside the request head".into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parse a head from `buf`: `None` if it is not complete yet.
fn parse_head(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let target = parsed.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let headers = parsed
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            Ok(Some(Request {
                method: parsed.method.unwrap_or("").to_string(),
                path: path.to_string(),
                query: query.to_string(),
                headers,
                http11: parsed.version == Some(1),
                body_done: false,
                leftover: buf[len..].to_vec(),
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

/// Wait until the first byte of a next request is readable, for at most `idle`, checking
/// `stop` every 200 ms; false if the connection should end (idle, closed, stopping).
pub fn wait_for_next(conn: &mut Conn, idle: Duration, stop: &std::sync::atomic::AtomicBool) -> bool {
    let until = Instant::now() + idle;
    loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if conn.tcp().set_read_timeout(Some(left.min(Duration::from_millis(200)))).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        match conn.tcp().peek(&mut probe) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Answer `100 Continue` if the client asked for it (curl does for large bodies).
pub fn continue_if_expected(conn: &mut Conn, request: &Request) {
    if request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").and_then(|()| conn.flush());
    }
}

/// Read exactly `len` body bytes (the caller has checked `len` against its cap).
pub fn read_body(conn: &mut Conn, request: &mut Request, len: usize, deadline: Deadline) -> Result<Vec<u8>, HttpError> {
    let mut body = std::mem::take(&mut request.leftover);
    if body.len() > len {
        // Pipelined bytes of the next request: keep them for it.
        request.leftover = body.split_off(len);
    }
    body.reserve_exact(len - body.len());
    let mut chunk = [0u8; 16 * 1024];
    while body.len() < len {
        deadline.arm(conn)?;
        let want = (len - body.len()).min(chunk.len());
        match conn.read(&mut chunk[..want]) {
            Ok(0) => return Err(HttpError::ShortBody),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify(e)),
        }
    }
    request.body_done = true;
    Ok(body)
}

/// Read and discard `len` body bytes; how many arrived.
pub fn discard_body(conn: &mut Conn, request: &mut Request, len: u64, deadline: Deadline) -> Result<u64, HttpError> {
    let mut early = std::mem::take(&mut request.leftover);
    if early.len() as u64 > len {
        request.leftover = early.split_off(len as usize);
    }
    let mut seen = early.len() as u64;
    let mut chunk = vec![0u8; 64 * 1024];
    while seen < len {
        deadline.arm(conn)?;
        let want = (len - seen).min(chunk.len() as u64) as usize;
        match conn.read(&mut chunk[..want]) {
            Ok(0) => return Err(HttpError::ShortBody),
            Ok(n) => seen += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify(e)),
        }
    }
    request.body_done = true;
    Ok(seen)
}

/// A complete response with a small in-memory body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// `Retry-After` in seconds (503 answers: when the client should try again).
    pub retry_after: Option<u32>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response { status, content_type: "application/json", body: value.to_string().into_bytes(), retry_after: None }
    }

    /// A JSON object whose fields keep the given order (serde_json's map would sort them).
    pub fn ordered_json(status: u16, fields: &[(&str, serde_json::Value)]) -> Response {
        let mut body = String::from("{");
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&serde_json::Value::from(*name).to_string());
            body.push(':');
            body.push_str(&value.to_string());
        }
        body.push('}');
        Response { status, content_type: "application/json", body: body.into_bytes(), retry_after: None }
    }

    /// `{"error": message}` with a 4xx/5xx status.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &json!({ "error": message }))
    }
}

/// The reason phrase for the statuses the receiver uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn connection(keep_alive: bool) -> &'static str {
    if keep_alive {
        "keep-alive"
    } else {
        "close"
    }
}

/// Write a response head for a body of `len` bytes.
pub fn write_head(conn: &mut Conn, status: u16, content_type: &str, len: u64, keep_alive: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: {}\r\n\r\n",
        reason(status),
        connection(keep_alive)
    );
    conn.write_all(head.as_bytes())
}

/// Write a whole response (head and body in one buffer: one segment for small answers).
pub fn write_response(conn: &mut Conn, response: &Response, keep_alive: bool) -> io::Result<()> {
    let retry_after = response.retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{retry_after}Connection: {}\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        connection(keep_alive)
    )
    .into_bytes();
    out.extend_from_slice(&response.body);
    conn.write_all(&out)?;
    conn.flush()
}

/// A streamed answer of unknown length: chunked transfer-encoding for HTTP/1.1 (the connection
/// may then be kept), else delimited by closing the connection. Buffers up to 64 KiB, so a
/// stream of small writes becomes a few large chunks; memory stays constant however long the
/// answer.
pub struct ChunkedBody<'a> {
    conn: &'a mut Conn,
    chunked: bool,
    buf: Vec<u8>,
    /// Body bytes written so far (before chunk framing).
    pub written: u64,
}

/// Buffer size of [`ChunkedBody`].
const CHUNK: usize = 64 * 1024;

impl<'a> ChunkedBody<'a> {
    /// Write the head (200 with `content_type`) and start the body.
    pub fn start(conn: &'a mut Conn, content_type: &str, http11: bool, keep_alive: bool) -> io::Result<Self> {
        let head = if http11 {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
                connection(keep_alive)
            )
        } else {
            format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n")
        };
        conn.write_all(head.as_bytes())?;
        Ok(ChunkedBody { conn, chunked: http11, buf: Vec::with_capacity(CHUNK), written: 0 })
    }

    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.chunked {
            let size = format!("{:x}\r\n", self.buf.len());
            self.conn.write_all(size.as_bytes())?;
            self.buf.extend_from_slice(b"\r\n");
        }
        self.conn.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// End the body (the last chunk) and flush.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush_chunk()?;
        if self.chunked {
            self.conn.write_all(b"0\r\n\r\n")?;
        }
        self.conn.flush()
    }
}

impl Write for ChunkedBody<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_and_query_params() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode_path("a%20b+c%2Fd").as_deref(), Some("a b+c/d"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        let request = Request {
            method: "GET".into(),
            path: "/x".into(),
            query: "format=csv&widget_type=ping&machine_id=m%2F1&flag".into(),
            headers: vec![],
            http11: true,
            body_done: true,
            leftover: vec![],
        };
        assert_eq!(request.query_param("format").as_deref(), Some("csv"));
        assert_eq!(request.query_param("machine_id").as_deref(), Some("m/1"));
        assert_eq!(request.query_param("flag").as_deref(), Some(""));
        assert_eq!(request.query_param("missing"), None);
    }

    #[test]
    fn framing_rules() {
        let with = |headers: &[(&str, &str)]| Request {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            http11: true,
            body_done: false,
            leftover: vec![],
        };
        assert_eq!(with(&[]).framing(), BodyFraming::None);
        assert_eq!(with(&[("content-length", "12")]).framing(), BodyFraming::Length(12));
        assert_eq!(with(&[("content-length", "-1")]).framing(), BodyFraming::Invalid);
        assert_eq!(with(&[("content-length", "99999999999999999999999")]).framing(), BodyFraming::Invalid);
        assert_eq!(with(&[("content-length", "1"), ("content-length", "2")]).framing(), BodyFraming::Invalid);
        assert_eq!(with(&[("transfer-encoding", "chunked"), ("content-length", "2")]).framing(), BodyFraming::Chunked);
    }
}
