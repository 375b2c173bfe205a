//! The receiver's minimal HTTP/1.1: one request per connection, `Connection: close` answers.
//!
//! A request head is read into a 16 KiB buffer and parsed by `httparse` (at most 64 headers);
//! the body is read only after the route has checked the API key and the declared
//! `Content-Length` against its cap, so an oversized body is answered 413 without being read.
//! Chunked bodies are refused (411): both the Atlas agent and ours always send a length.
//! Every read runs under an idle timeout and an overall deadline, so a slow client holds a
//! worker for a bounded time.

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
    /// Bytes of the body that arrived with the head.
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

    /// A query parameter, percent-decoded (`+` is a space); the first occurrence.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').filter_map(|pair| pair.split_once('=').or(Some((pair, "")))).find_map(|(k, v)| {
            (percent_decode(k).as_deref() == Some(name)).then(|| percent_decode(v).unwrap_or_default())
        })
    }
}

/// Decode `%XX` and `+`; `None` if the result is not UTF-8 or an escape is malformed.
pub fn percent_decode(text: &str) -> Option<String> {
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
            b'+' => {
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

/// Read and parse the request head.
pub fn read_head(conn: &mut Conn, deadline: Deadline) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        deadline.arm(conn)?;
        let n = match conn.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(HttpError::Closed),
            Ok(0) => return Err(HttpError::Malformed("connection closed inside the request head".into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let target = parsed.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                return Ok(Request {
                    method: parsed.method.unwrap_or("").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    headers,
                    leftover: buf[len..].to_vec(),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HttpError::HeadTooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
            Err(e) => return Err(HttpError::Malformed(e.to_string())),
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
    body.truncate(len);
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
    Ok(body)
}

/// Read and discard `len` body bytes; how many arrived.
pub fn discard_body(conn: &mut Conn, request: &mut Request, len: u64, deadline: Deadline) -> Result<u64, HttpError> {
    let mut seen = (std::mem::take(&mut request.leftover).len() as u64).min(len);
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
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response { status, content_type: "application/json", body: value.to_string().into_bytes() }
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
        Response { status, content_type: "application/json", body: body.into_bytes() }
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

/// Write a response head for a body of `len` bytes.
pub fn write_head(conn: &mut Conn, status: u16, content_type: &str, len: u64) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        reason(status)
    );
    conn.write_all(head.as_bytes())
}

/// Write a whole response (head and body in one buffer: one segment for small answers).
pub fn write_response(conn: &mut Conn, response: &Response) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&response.body);
    conn.write_all(&out)?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_and_query_params() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        let request = Request {
            method: "GET".into(),
            path: "/x".into(),
            query: "format=csv&widget_type=ping&machine_id=m%2F1&flag".into(),
            headers: vec![],
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
