//! Response heads: the status line and header fields (parsed by `httparse`), and the body
//! framing they announce (RFC 9112 §6.3), checked strictly.
//!
//! A head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields; only `HTTP/1.0` and
//! `HTTP/1.1` are accepted; obsolete line folding, a `Content-Length` that is not plain digits
//! (a sign, a list, an overflow), two `Content-Length` fields (even equal ones), a
//! `Transfer-Encoding` other than exactly `chunked`, `Transfer-Encoding` together with
//! `Content-Length`, or `Transfer-Encoding` in an HTTP/1.0 answer are errors: each is either a
//! broken server or an attempt to desynchronise the framing (docs/http-client.md).

use std::fmt;

/// Largest response head (status line and fields), and the size of a connection's buffer.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 64;

/// Why a response head is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The head is longer than [`MAX_HEAD`] bytes.
    TooLarge,
    /// The head has more than [`MAX_HEADERS`] fields.
    TooManyHeaders,
    /// Not an HTTP/1.x status line or field syntax; says where (`httparse`'s error).
    Malformed(String),
    /// The body framing is invalid or ambiguous; says why.
    Framing(&'static str),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "response head larger than {MAX_HEAD} bytes"),
            HeadError::TooManyHeaders => write!(f, "response head with more than {MAX_HEADERS} header fields"),
            HeadError::Malformed(what) => write!(f, "malformed response head ({what})"),
            HeadError::Framing(what) => write!(f, "invalid response framing: {what}"),
        }
    }
}

impl std::error::Error for HeadError {}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304, an answer to HEAD or a 2xx to CONNECT).
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection (no length given: HTTP/1.0 style).
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code (100..=999, as `httparse` accepts three digits).
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Every field's lowercase name and raw value, back to back (one allocation per head).
    fields: Vec<u8>,
    /// Where each field is in `fields`: name start, value start (= name end), value end.
    spans: Vec<(usize, usize, usize)>,
    /// `Content-Length`, validated.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` was given.
    pub chunked: bool,
    /// `Connection: close` was given.
    pub close: bool,
}

impl ResponseHead {
    /// The first field called `name` (any case), when its value is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.fields().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The header fields in order: lowercase name, raw value.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.spans.iter().map(|&(name, value, end)| {
            // Names are tokens (checked by httparse): ASCII.
            (std::str::from_utf8(&self.fields[name..value]).unwrap_or(""), &self.fields[value..end])
        })
    }

    /// The body framing of this answer to a request with `method`.
    pub fn framing(&self, method: &str) -> Framing {
        match self.status {
            100..=199 | 204 | 304 => Framing::Empty,
            200..=299 if method == "CONNECT" => Framing::Empty,
            _ if method == "HEAD" => Framing::Empty,
            _ if self.chunked => Framing::Chunked,
            _ => self.content_length.map_or(Framing::UntilClose, Framing::Length),
        }
    }

    /// True when the connection may carry another request after this answer's body: HTTP/1.1
    /// without `Connection: close`, and a body delimited by its framing rather than by closing.
    pub fn keeps_alive(&self, method: &str) -> bool {
        self.minor_version == 1 && !self.close && self.framing(method) != Framing::UntilClose
    }
}

/// Parse a head at the start of `buf`: `Ok(None)` when it is incomplete (and may still fit),
/// else the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if length > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let status = response.code.ok_or_else(|| HeadError::Malformed("no status code".into()))?;
    let minor_version = response.version.ok_or_else(|| HeadError::Malformed("no version".into()))?;
    let mut head = ResponseHead {
        status,
        minor_version,
        fields: Vec::with_capacity(response.headers.iter().map(|f| f.name.len() + f.value.len()).sum()),
        spans: Vec::with_capacity(response.headers.len()),
        content_length: None,
        chunked: false,
        close: false,
    };
    let mut transfer_encodings = 0;
    for field in response.headers.iter() {
        let start = head.fields.len();
        head.fields.extend(field.name.bytes().map(|b| b.to_ascii_lowercase()));
        let value = head.fields.len();
        head.fields.extend_from_slice(field.value);
        head.spans.push((start, value, head.fields.len()));
        match &head.fields[start..value] {
            b"content-length" => {
                if head.content_length.is_some() {
                    return Err(HeadError::Framing("more than one Content-Length"));
                }
                head.content_length = Some(parse_length(field.value)?);
            }
            b"transfer-encoding" => {
                transfer_encodings += 1;
                if transfer_encodings > 1 || !trim(field.value).eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::Framing("a Transfer-Encoding other than exactly `chunked`"));
                }
                head.chunked = true;
            }
            b"connection" => {
                head.close |= field.value.split(|b| *b == b',').any(|t| trim(t).eq_ignore_ascii_case(b"close"));
            }
            _ => {}
        }
    }
    if head.chunked && head.content_length.is_some() {
        return Err(HeadError::Framing("both Transfer-Encoding and Content-Length"));
    }
    if head.chunked && minor_version == 0 {
        return Err(HeadError::Framing("Transfer-Encoding in an HTTP/1.0 answer"));
    }
    Ok(Some((head, length)))
}

/// `Content-Length`: one or more ASCII digits (optional surrounding whitespace), within `u64`.
fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    let digits = trim(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Framing("a Content-Length that is not a plain number"));
    }
    digits
        .iter()
        .try_fold(0u64, |n, d| n.checked_mul(10).and_then(|n| n.checked_add(u64::from(d - b'0'))))
        .ok_or(HeadError::Framing("a Content-Length beyond 64 bits"))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    fn head(text: &str) -> ResponseHead {
        match parse(text) {
            Ok(Some((head, _))) => head,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn framings() {
        let ok = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\nbody");
        assert_eq!((ok.status, ok.minor_version, ok.framing("POST")), (200, 1, Framing::Length(12)));
        assert_eq!(ok.header("x-a"), Some("b"));
        assert!(ok.keeps_alive("POST"));
        assert_eq!(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n").framing("GET"), Framing::Chunked);
        let atlas = head("HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6 Python/3.12\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(atlas.framing("POST"), Framing::Length(2));
        assert!(!atlas.keeps_alive("POST"), "HTTP/1.0 closes");
        let open = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(open.framing("GET"), Framing::UntilClose);
        assert!(!open.keeps_alive("GET"));
        let close = head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
        assert!(close.close && !close.keeps_alive("GET"));
        assert_eq!(head("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").framing("GET"), Framing::Empty);
        assert_eq!(head("HTTP/1.1 304 Not Modified\r\n\r\n").framing("GET"), Framing::Empty);
        assert_eq!(head("HTTP/1.1 100 Continue\r\n\r\n").framing("POST"), Framing::Empty);
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n").framing("HEAD"), Framing::Empty);
        assert_eq!(head("HTTP/1.1 200 Connection established\r\n\r\n").framing("CONNECT"), Framing::Empty);
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n").content_length,
            Some(u64::MAX)
        );
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert_eq!(parse("HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn rejections() {
        let error = |text: &str| parse(text).err();
        let framing = |text: &str| matches!(error(text), Some(HeadError::Framing(_)));
        let malformed = |text: &str| matches!(error(text), Some(HeadError::Malformed(_)));
        assert!(malformed("SSH-2.0-OpenSSH_9.6\r\n\r\n"));
        assert!(malformed("HTTP/2 200\r\n\r\n"));
        assert!(malformed("HTTP/1.1 2000 OK\r\n\r\n"));
        assert!(malformed("HTTP/1.1 abc OK\r\n\r\n"));
        assert!(malformed("HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n"), "obs-fold");
        assert!(malformed("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"));
        assert!(framing("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(error(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), Some(HeadError::TooManyHeaders));
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(error(&long), Some(HeadError::TooLarge));
    }

    /// The reference encoder: a status line and fields as a server writes them.
    fn encode(status: u16, minor: u8, fields: &[(String, String)]) -> String {
        let mut text = format!("HTTP/1.{minor} {status} Reason phrase\r\n");
        for (name, value) in fields {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text
    }

    proptest! {
        #[test]
        fn round_trips_with_the_reference_encoder(
            status in 100u16..1000,
            minor in 0u8..2,
            fields in proptest::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?"), 0..20),
            length in proptest::option::of(any::<u64>()),
        ) {
            let mut all = fields.clone();
            if let Some(length) = length {
                all.push(("Content-Length".to_string(), length.to_string()));
            }
            let text = encode(status, minor, &all);
            let (head, used) = parse_head(text.as_bytes())
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .ok_or_else(|| TestCaseError::fail("incomplete"))?;
            prop_assert_eq!(used, text.len());
            prop_assert_eq!((head.status, head.minor_version, head.content_length), (status, minor, length));
            let got: Vec<(String, String)> = head.fields()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            let want: Vec<(String, String)> = all.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect();
            prop_assert_eq!(got, want);
            for cut in [0, used / 2, used.saturating_sub(1)] {
                prop_assert_eq!(parse_head(&text.as_bytes()[..cut]), Ok(None));
            }
        }

        #[test]
        fn never_panics_on_any_input(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_head(&input);
            let with_prefix = [b"HTTP/1.1 200 OK\r\n".as_slice(), &input].concat();
            if let Ok(Some((head, _))) = parse_head(&with_prefix) {
                let _ = (head.framing("GET"), head.keeps_alive("POST"));
            }
        }
    }
}
