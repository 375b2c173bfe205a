//! Test-only: reading one HTTP/1.x request on a loopback stand-in server, for the lib's unit
//! tests that play a server (the v2 crash tests, Atlas's direct-post tests). Integration tests
//! have their own in `tests/`.

use std::io::BufRead;

/// One request: its request line (with the line end) and its body (`Content-Length` bytes).
pub struct Request {
    /// `POST /api/fleet/report HTTP/1.1\r\n`, as read.
    pub line: String,
    /// The body.
    pub body: Vec<u8>,
}

/// Read the request line, the head and a `Content-Length` body from `reader`; `None` when the
/// connection ends first.
pub fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { line, body })
}
