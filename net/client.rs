//! The client: one request at a time over at most one kept-alive connection.
//!
//! A request is written as one head (`Host`, `User-Agent`, `Content-Length` when there is a
//! body, then the caller's fields) and its body; the answer's head is read into the
//! connection's buffer (skipping 1xx answers), and its body is read through [`Response`] as
//! its framing says. When the body has been read to its end, the answer allowed keep-alive
//! and nothing follows it, the connection is kept for the next request (docs/http-client.md,
//! "Reuse").

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::chunked::{ChunkError, ChunkedDecoder};
use crate::head::{parse_head, Framing, HeadError, ResponseHead, MAX_HEAD};
use crate::proxy::Proxy;
use crate::socket::{self, Stream, TimedSocket};
use crate::url::{check_path, Url};
use crate::Error;

/// Most informational (1xx) answers skipped before the real one.
pub const MAX_INFORMATIONAL: usize = 8;

/// How a [`Client`] connects.
#[derive(Clone)]
pub struct Config {
    /// Bound on establishing the TCP connection (each address tried).
    pub connect_timeout: Duration,
    /// Bound on a whole request: connecting, TLS, writing, and reading the answer to its end.
    pub timeout: Duration,
    /// TLS configuration for `https://` (none: `https://` URLs are refused).
    pub tls: Option<Arc<ClientConfig>>,
    /// `User-Agent` of every request.
    pub user_agent: String,
    /// The proxy to tunnel through ([`Proxy::from_env`] for the usual environment variables).
    pub proxy: Option<Proxy>,
    /// How long an idle connection is kept for reuse (zero: never reused).
    pub max_idle: Duration,
}

/// A request body.
pub enum Body<'a> {
    /// No body (and no `Content-Length`).
    Empty,
    /// These bytes, with their `Content-Length`.
    Bytes(&'a [u8]),
    /// `len` bytes read from `reader` while sending (an upload); never resent.
    Reader {
        /// `Content-Length`: the reader must yield exactly this many bytes.
        len: u64,
        /// The source.
        reader: &'a mut dyn Read,
    },
}

/// One request (`'b`: the body's borrow, kept apart because a reader makes it invariant).
pub struct Request<'a, 'b> {
    /// `GET`, `POST`, …: an uppercase token.
    pub method: &'a str,
    /// The absolute URL.
    pub url: &'a str,
    /// Extra header fields (values may be secrets: they are never logged).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: Body<'b>,
    /// True when sending this request twice is harmless (docs/http-client.md, "Retry"): only
    /// then, and only with a replayable body, is it sent again on a fresh connection after a
    /// reused one failed before any byte of the answer arrived.
    pub resendable: bool,
}

/// An open connection and its buffer.
struct Connection {
    stream: Stream,
    /// Read buffer (the head must fit); bytes `start..end` are read but not yet used.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// `scheme://host:port` of the origin it reaches.
    origin: String,
    idle_since: Instant,
}

impl Connection {
    fn new(stream: Stream, origin: String, buf: Box<[u8]>) -> Self {
        Connection { stream, buf, start: 0, end: 0, origin, idle_since: Instant::now() }
    }

    /// Read more bytes into the buffer (compacting it first); 0 at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Ok(0);
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Read the next head. `got_bytes` is set as soon as any byte of an answer arrives.
    fn read_head(&mut self, got_bytes: &mut bool) -> Result<ResponseHead, Error> {
        loop {
            match parse_head(&self.buf[self.start..self.end]).map_err(Error::Head)? {
                Some((head, used)) => {
                    self.start += used;
                    return Ok(head);
                }
                None if self.end - self.start == self.buf.len() => return Err(Error::Head(HeadError::TooLarge)),
                None => {}
            }
            match self.fill() {
                Ok(0) if self.start == self.end && !*got_bytes => return Err(Error::Closed),
                Ok(0) => return Err(Error::Head(HeadError::Malformed("the connection closed within the head".into()))),
                Ok(_) => *got_bytes = true,
                Err(e) => return Err(Error::from_io(e, "reading the answer")),
            }
        }
    }
}

/// Where the body of the current answer stands.
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A configured client. `Sync`: its one idle connection is behind a mutex, so a shared client
/// serialises nothing but the hand-over of that connection.
pub struct Client {
    config: Config,
    idle: Mutex<Option<Connection>>,
    /// The buffer of the last connection closed, for the next one: a sender that opens a
    /// connection per send round (the server closed the idle one) does not allocate (and, with
    /// musl, map and unmap) 16 KiB each time.
    spare: Mutex<Option<Box<[u8]>>>,
}

impl Client {
    /// A client with `config`.
    pub fn new(config: Config) -> Self {
        Client { config, idle: Mutex::new(None), spare: Mutex::new(None) }
    }

    /// Send `request` and read the answer's head; its body is read through the [`Response`].
    pub fn send(&self, mut request: Request<'_, '_>) -> Result<Response<'_>, Error> {
        let deadline = Instant::now() + self.config.timeout;
        let url = Url::parse(request.url).map_err(Error::Url)?;
        check_request(&request)?;
        let origin = format!("{}://{}", if url.tls { "https" } else { "http" }, url.host_port());
        let replayable = !matches!(request.body, Body::Reader { .. });
        let mut head = Vec::with_capacity(256);
        write_head(&mut head, &request, &url, &self.config.user_agent);
        if let Some(mut conn) = self.take_idle(&origin) {
            log::debug!("reusing the idle connection to {origin}");
            conn.stream.socket().set_deadline(deadline);
            let mut got_bytes = false;
            match exchange(&mut conn, &head, &mut request, &mut got_bytes) {
                Ok(answer) => return Ok(self.response(conn, answer, &request)),
                Err(e) if !got_bytes && request.resendable && replayable && !e.is_timeout() => {
                    log::debug!("a reused connection failed before any answer ({e}); sending again on a new one");
                }
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.open(&url, origin, deadline)?;
        let mut got_bytes = false;
        let answer = exchange(&mut conn, &head, &mut request, &mut got_bytes)?;
        Ok(self.response(conn, answer, &request))
    }

    fn response(&self, conn: Connection, head: ResponseHead, request: &Request<'_, '_>) -> Response<'_> {
        let framing = head.framing(request.method);
        let reusable = head.keeps_alive(request.method) && self.config.max_idle > Duration::ZERO;
        let body = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let mut response = Response { client: self, head, conn: Some(conn), body, reusable };
        response.finish_if_done();
        response
    }

    /// The idle connection, if it reaches `origin`, is young enough and still quiet.
    fn take_idle(&self, origin: &str) -> Option<Connection> {
        let mut conn = self.idle.lock().ok()?.take()?;
        if conn.origin != origin || conn.idle_since.elapsed() > self.config.max_idle || conn.stream.is_stale() {
            log::debug!("the idle connection is not reused (closed by the server, too old, or another origin)");
            self.close(conn);
            return None;
        }
        Some(conn)
    }

    /// Close `conn`, keeping its buffer for the next connection.
    fn close(&self, conn: Connection) {
        let Connection { buf, .. } = conn;
        if let Ok(mut spare) = self.spare.lock() {
            *spare = Some(buf);
        }
    }

    /// A buffer for a new connection: the last closed one's (its old bytes are never read:
    /// only `start..end` holds data), else a new one.
    fn buffer(&self) -> Box<[u8]> {
        let spare = self.spare.lock().ok().and_then(|mut spare| spare.take());
        spare.unwrap_or_else(|| vec![0u8; MAX_HEAD].into_boxed_slice())
    }

    fn keep(&self, mut conn: Connection) {
        conn.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            *idle = Some(conn);
        }
    }

    /// Resolve, connect (through the proxy's tunnel when one applies), and start TLS.
    fn open(&self, url: &Url, origin: String, deadline: Instant) -> Result<Connection, Error> {
        let proxy = self.config.proxy.as_ref().filter(|p| p.applies_to(&url.host));
        let target = proxy.map_or(url, |p| &p.url);
        let addrs = socket::resolve(&target.host, target.port, target.ip_literal())
            .map_err(|e| Error::Resolve { host: target.host.clone(), source: e })?;
        let tcp = socket::connect(&addrs, self.config.connect_timeout, deadline).map_err(Error::Connect)?;
        let mut socket = TimedSocket::new(tcp, deadline);
        if let Some(proxy) = proxy {
            tunnel(&mut socket, proxy, url)?;
        }
        let stream = if url.tls {
            let config = self.config.tls.clone().ok_or(Error::Url("https:// needs a TLS configuration".into()))?;
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| Error::Url(format!("{} is not a valid TLS name", url.host)))?;
            let mut session = ClientConnection::new(config, name).map_err(Error::Tls)?;
            while session.is_handshaking() {
                session.complete_io(&mut socket).map_err(|e| Error::from_io(e, "the TLS handshake"))?;
            }
            Stream::Tls(Box::new(StreamOwned::new(session, socket)))
        } else {
            Stream::Plain(socket)
        };
        log::debug!("connected to {origin}{}", if proxy.is_some() { " through the proxy" } else { "" });
        Ok(Connection::new(stream, origin, self.buffer()))
    }
}

/// `CONNECT host:port` through the proxy; any 2xx opens the tunnel.
fn tunnel(socket: &mut TimedSocket, proxy: &Proxy, url: &Url) -> Result<(), Error> {
    let target = url.host_port();
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(authorization) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).map_err(|e| Error::Proxy(format!("writing CONNECT: {e}")))?;
    // Read byte by byte: nothing after the proxy's head may be consumed (it is the server's).
    let mut buf = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        match socket.read(&mut byte) {
            Ok(0) => return Err(Error::Proxy("the proxy closed the connection".into())),
            Ok(_) => buf.push(byte[0]),
            Err(e) => return Err(Error::Proxy(format!("reading the CONNECT answer: {e}"))),
        }
        if buf.ends_with(b"\r\n\r\n") || buf.len() >= MAX_HEAD {
            break;
        }
    }
    match parse_head(&buf) {
        Ok(Some((head, _))) if (200..300).contains(&head.status) => Ok(()),
        Ok(Some((head, _))) => Err(Error::Proxy(format!("the proxy answered {} to CONNECT {target}", head.status))),
        Ok(None) => Err(Error::Proxy("the proxy's answer head is too large".into())),
        Err(e) => Err(Error::Proxy(e.to_string())),
    }
}

/// Refuse what cannot be written safely: a method that is not a token, a field name that is
/// not a token, a value with CR, LF or NUL (header injection).
fn check_request(request: &Request<'_, '_>) -> Result<(), Error> {
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token(request.method) {
        return Err(Error::Request(format!("bad method {:?}", request.method)));
    }
    for (name, value) in request.headers {
        if !token(name) {
            return Err(Error::Request(format!("bad header name {name:?}")));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Error::Request(format!("the value of {name} holds a line break")));
        }
    }
    Ok(())
}

/// The request head (`url.path` was checked by [`Url::parse`]).
fn write_head(out: &mut Vec<u8>, request: &Request<'_, '_>, url: &Url, user_agent: &str) {
    debug_assert!(check_path(&url.path).is_ok());
    let mut line = |parts: &[&str]| {
        parts.iter().for_each(|p| out.extend_from_slice(p.as_bytes()));
        out.extend_from_slice(b"\r\n");
    };
    line(&[request.method, " ", &url.path, " HTTP/1.1"]);
    line(&["Host: ", &url.authority()]);
    line(&["User-Agent: ", user_agent]);
    let length = match &request.body {
        Body::Empty if request.method == "POST" || request.method == "PUT" => Some(0),
        Body::Empty => None,
        Body::Bytes(bytes) => Some(bytes.len() as u64),
        Body::Reader { len, .. } => Some(*len),
    };
    if let Some(length) = length {
        line(&["Content-Length: ", &length.to_string()]);
    }
    for (name, value) in request.headers {
        line(&[name, ": ", value]);
    }
    line(&[]);
}

/// Write the request and read the answer's head, skipping 1xx answers.
fn exchange(
    conn: &mut Connection,
    head: &[u8],
    request: &mut Request<'_, '_>,
    got_bytes: &mut bool,
) -> Result<ResponseHead, Error> {
    conn.start = 0;
    conn.end = 0;
    if let Err(e) = send_body(conn, head, &mut request.body) {
        // The server may have answered early (a 413 before the body was read) and closed:
        // its answer, when it is already here, says more than the broken pipe.
        // The connection is not reused after a failed write.
        return match read_final_head(conn, got_bytes) {
            Ok(mut head) => {
                head.close = true;
                Ok(head)
            }
            Err(_) => Err(e),
        };
    }
    read_final_head(conn, got_bytes)
}

fn send_body(conn: &mut Connection, head: &[u8], body: &mut Body<'_>) -> Result<(), Error> {
    let write_error = |e: io::Error| Error::from_io(e, "sending the request");
    match body {
        // One write for a head and a small body (one TCP segment or TLS record).
        Body::Bytes(bytes) if head.len() + bytes.len() <= conn.buf.len() => {
            conn.buf[..head.len()].copy_from_slice(head);
            conn.buf[head.len()..head.len() + bytes.len()].copy_from_slice(bytes);
            let total = head.len() + bytes.len();
            conn.stream.write_all(&conn.buf[..total]).map_err(write_error)?;
        }
        Body::Bytes(bytes) => {
            conn.stream.write_all(head).map_err(write_error)?;
            conn.stream.write_all(bytes).map_err(write_error)?;
        }
        Body::Empty => conn.stream.write_all(head).map_err(write_error)?,
        Body::Reader { len, reader } => {
            conn.stream.write_all(head).map_err(write_error)?;
            let mut left = *len;
            while left > 0 {
                let room = usize::try_from(left).map_or(conn.buf.len(), |l| l.min(conn.buf.len()));
                let n = match reader.read(&mut conn.buf[..room]) {
                    Ok(0) => return Err(Error::Request(format!("the body ended {left} bytes before its length"))),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::Request(format!("reading the body to send: {e}"))),
                };
                conn.stream.write_all(&conn.buf[..n]).map_err(write_error)?;
                left -= n as u64;
            }
        }
    }
    conn.stream.flush().map_err(write_error)
}

fn read_final_head(conn: &mut Connection, got_bytes: &mut bool) -> Result<ResponseHead, Error> {
    for _ in 0..=MAX_INFORMATIONAL {
        let head = conn.read_head(got_bytes)?;
        match head.status {
            101 => return Err(Error::Head(HeadError::Framing("101 Switching Protocols without an upgrade request"))),
            100..=199 => continue,
            _ => return Ok(head),
        }
    }
    Err(Error::Head(HeadError::Framing("too many informational (1xx) answers")))
}

/// An answer: its head, and its body as a [`Read`]er. Read the body to its end (or use
/// [`Response::read_to_vec`]) for the connection to be reused; dropping the response earlier
/// closes it.
pub struct Response<'c> {
    client: &'c Client,
    head: ResponseHead,
    conn: Option<Connection>,
    body: BodyState,
    reusable: bool,
}

impl std::fmt::Debug for Response<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Response({})", self.head.status)
    }
}

impl Response<'_> {
    /// Status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// The first header field called `name` (any case), when its value is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The whole head.
    pub fn head(&self) -> &ResponseHead {
        &self.head
    }

    /// The body, whole; more than `limit` bytes is [`Error::BodyTooLarge`].
    pub fn read_to_vec(mut self, limit: u64) -> Result<Vec<u8>, Error> {
        // One allocation when the length is known (and within the limit).
        let expected = match self.body {
            BodyState::Length(n) => usize::try_from(n.min(limit)).unwrap_or(0),
            _ => 0,
        };
        let mut body = Vec::with_capacity(expected);
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.read_body(&mut chunk)?;
            if n == 0 {
                return Ok(body);
            }
            if body.len() as u64 + n as u64 > limit {
                return Err(Error::BodyTooLarge(limit));
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }

    /// Read body bytes into `out`; 0 at the end of the body.
    pub fn read_body(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        if out.is_empty() || matches!(self.body, BodyState::Done) {
            return Ok(0);
        }
        let Some(conn) = self.conn.as_mut() else { return Ok(0) };
        match pull(conn, &mut self.body, out) {
            Ok(0) => match self.body {
                BodyState::Done => {
                    self.finish_if_done();
                    Ok(0)
                }
                BodyState::UntilClose => {
                    self.body = BodyState::Done;
                    self.conn = None;
                    Ok(0)
                }
                BodyState::Length(left) => {
                    Err(self.fail(Error::Truncated(format!("the connection closed with {left} body bytes missing"))))
                }
                BodyState::Chunked(_) => {
                    Err(self.fail(Error::Truncated("the connection closed before the last chunk".into())))
                }
            },
            Ok(n) => {
                self.finish_if_done();
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Drop the connection after an error.
    fn fail(&mut self, error: Error) -> Error {
        self.conn = None;
        self.body = BodyState::Done;
        error
    }

    /// Hand the connection back for reuse once the body is complete, when allowed and when the
    /// server sent nothing more.
    fn finish_if_done(&mut self) {
        if !matches!(self.body, BodyState::Done) {
            return;
        }
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.start == conn.end {
                self.client.keep(conn);
            } else {
                self.client.close(conn);
            }
        }
    }
}

/// Body bytes from the connection's buffer (refilled from the socket when empty) as `body`'s
/// framing allows; 0 when the connection reached its end or the body is complete.
fn pull(conn: &mut Connection, body: &mut BodyState, out: &mut [u8]) -> Result<usize, Error> {
    loop {
        if matches!(body, BodyState::Done) {
            return Ok(0);
        }
        // A TLS peer that closes without close_notify is an error here (truncation), not an end.
        if conn.start == conn.end && conn.fill().map_err(|e| Error::from_io(e, "reading the body"))? == 0 {
            return Ok(0);
        }
        let available = &conn.buf[conn.start..conn.end];
        match body {
            BodyState::Length(left) => {
                let n = usize::try_from(*left).map_or(available.len(), |l| l.min(available.len())).min(out.len());
                out[..n].copy_from_slice(&available[..n]);
                conn.start += n;
                *left -= n as u64;
                if *left == 0 {
                    *body = BodyState::Done;
                }
                return Ok(n);
            }
            BodyState::UntilClose => {
                let n = available.len().min(out.len());
                out[..n].copy_from_slice(&available[..n]);
                conn.start += n;
                return Ok(n);
            }
            BodyState::Chunked(decoder) => {
                let (used, made) = decoder.decode(available, out)?;
                conn.start += used;
                if decoder.is_done() {
                    *body = BodyState::Done;
                }
                if made > 0 {
                    return Ok(made);
                }
            }
            BodyState::Done => return Ok(0),
        }
    }
}

impl Read for Response<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_body(buf).map_err(io::Error::other)
    }
}

impl Error {
    /// An I/O error while `doing`: a timeout, a TLS failure (rustls' error), or a socket error.
    pub(crate) fn from_io(e: io::Error, doing: &'static str) -> Error {
        if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) {
            return Error::Timeout(doing);
        }
        if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Error::Tls(tls.clone());
        }
        Error::Io { doing, source: e }
    }

    fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }
}

impl From<ChunkError> for Error {
    fn from(e: ChunkError) -> Self {
        Error::Chunked(e)
    }
}
