//! `Transfer-Encoding: chunked` response bodies (RFC 9112 §7.1), decoded incrementally.
//!
//! ```text
//! chunk      = size-in-hex [ BWS ";" extension ] CRLF  data  CRLF      (size > 0)
//! last-chunk = "0"+        [ BWS ";" extension ] CRLF
//! trailers   = *( field-line CRLF )  CRLF
//! ```
//!
//! Strict and bounded (docs/http-client.md, "Limits"): line ends are CRLF (a bare LF is an
//! error), a size is one or more hex digits whose value must fit in a `u64` (checked, never
//! wrapping), a size line (digits and extensions) is at most [`MAX_CHUNK_LINE`] bytes,
//! extensions and trailer fields are read and ignored, the trailer section is at most
//! [`MAX_TRAILER_BYTES`] bytes and [`MAX_TRAILERS`] lines. The decoder never allocates.

use std::fmt;

/// Longest chunk-size line (hex digits, whitespace and extensions, without CRLF).
pub const MAX_CHUNK_LINE: usize = 1024;
/// Largest trailer section (all field lines, without their CRLFs).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Most trailer field lines.
pub const MAX_TRAILERS: usize = 64;

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A size line does not start with a hex digit, or has other bytes after its digits than
    /// whitespace and `;` extensions.
    BadSize,
    /// A chunk size does not fit in 64 bits.
    SizeOverflow,
    /// A size line is longer than [`MAX_CHUNK_LINE`] bytes.
    LineTooLong,
    /// A line does not end in CRLF, or a chunk's data is not followed by CRLF.
    MissingCrlf,
    /// The trailer section exceeds [`MAX_TRAILER_BYTES`] bytes or [`MAX_TRAILERS`] lines.
    TrailersTooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "bad chunk size line",
            ChunkError::SizeOverflow => "chunk size does not fit in 64 bits",
            ChunkError::LineTooLong => "chunk size line too long",
            ChunkError::MissingCrlf => "chunk framing without CRLF",
            ChunkError::TrailersTooLarge => "chunked trailers too large",
        })
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits (`digits` so far, at least one before anything else).
    Size { value: u64, digits: usize },
    /// After the digits: whitespace before `;` or CR.
    AfterSize { value: u64 },
    /// In an extension, until CR.
    Extension { value: u64 },
    /// CR of the size line seen; LF expected.
    SizeLf { value: u64 },
    /// Data bytes left in the current chunk.
    Data { left: u64 },
    /// CR after a chunk's data expected.
    DataCr,
    /// LF after a chunk's data expected.
    DataLf,
    /// Start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// CR of a trailer line seen (`empty`: the final empty line); LF expected.
    TrailerLf { empty: bool },
    /// The body is complete.
    Done,
}

/// An incremental decoder: feed it bytes as they arrive.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current size line.
    line: usize,
    /// Bytes of trailer lines so far.
    trailer_bytes: usize,
    /// Trailer lines so far.
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder { state: State::Size { value: 0, digits: 0 }, line: 0, trailer_bytes: 0, trailers: 0 }
    }

    /// True once the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from `input` into `out`: returns `(consumed, produced)`. Stops when `input` is used
    /// up, `out` is full or the body is complete (bytes after the body are not consumed).
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        let (mut i, mut o) = (0usize, 0usize);
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data { left } => {
                    if o == out.len() {
                        break;
                    }
                    let room = (input.len() - i).min(out.len() - o);
                    let n = usize::try_from(left).map_or(room, |left| left.min(room));
                    out[o..o + n].copy_from_slice(&input[i..i + n]);
                    (i, o) = (i + n, o + n);
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                }
                _ => {
                    self.step(input[i])?;
                    i += 1;
                }
            }
        }
        Ok((i, o))
    }

    /// One framing byte (every state but `Data` and `Done`).
    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { value, digits } => {
                self.count_line()?;
                match (hex(byte), digits) {
                    (Some(d), _) => {
                        let value =
                            value.checked_mul(16).and_then(|v| v.checked_add(d)).ok_or(ChunkError::SizeOverflow)?;
                        State::Size { value, digits: digits + 1 }
                    }
                    (None, 0) => return Err(ChunkError::BadSize),
                    (None, _) => return self.after_size(value, byte),
                }
            }
            State::AfterSize { value } => {
                self.count_line()?;
                return self.after_size(value, byte);
            }
            State::Extension { value } => {
                self.count_line()?;
                match byte {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(ChunkError::MissingCrlf),
                    _ => State::Extension { value },
                }
            }
            State::SizeLf { value } => {
                if byte != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.line = 0;
                if value == 0 {
                    State::TrailerStart
                } else {
                    State::Data { left: value }
                }
            }
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size { value: 0, digits: 0 },
            State::DataCr | State::DataLf => return Err(ChunkError::MissingCrlf),
            State::TrailerStart => match byte {
                b'\r' => State::TrailerLf { empty: true },
                b'\n' => return Err(ChunkError::MissingCrlf),
                _ => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkError::TrailersTooLarge);
                    }
                    self.count_trailer()?;
                    State::TrailerLine
                }
            },
            State::TrailerLine => match byte {
                b'\r' => State::TrailerLf { empty: false },
                b'\n' => return Err(ChunkError::MissingCrlf),
                _ => {
                    self.count_trailer()?;
                    State::TrailerLine
                }
            },
            State::TrailerLf { empty } => match (byte, empty) {
                (b'\n', true) => State::Done,
                (b'\n', false) => State::TrailerStart,
                _ => return Err(ChunkError::MissingCrlf),
            },
            State::Data { .. } | State::Done => self.state,
        };
        Ok(())
    }

    /// A byte after the size's digits: whitespace, `;` or CR.
    fn after_size(&mut self, value: u64, byte: u8) -> Result<(), ChunkError> {
        self.state = match byte {
            b' ' | b'\t' => State::AfterSize { value },
            b';' => State::Extension { value },
            b'\r' => State::SizeLf { value },
            b'\n' => return Err(ChunkError::MissingCrlf),
            _ => return Err(ChunkError::BadSize),
        };
        Ok(())
    }

    fn count_line(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError::TrailersTooLarge);
        }
        Ok(())
    }
}

fn hex(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference encoder: each non-empty chunk as `hex[;ext]CRLF data CRLF`, then `0`,
    /// the trailers and the final CRLF.
    fn encode(chunks: &[Vec<u8>], extension: bool, upper: bool, trailers: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            let size = if upper { format!("{:X}", chunk.len()) } else { format!("{:x}", chunk.len()) };
            out.extend_from_slice(size.as_bytes());
            if extension {
                out.extend_from_slice(b" ;name=\"value\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for trailer in trailers {
            out.extend_from_slice(trailer.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Decode `input` fed in pieces of `step` bytes into an output buffer of `room` bytes.
    fn decode_all(input: &[u8], step: usize, room: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let (mut body, mut at, mut out) = (Vec::new(), 0, vec![0u8; room]);
        while at < input.len() && !decoder.is_done() {
            let end = (at + step).min(input.len());
            let mut piece = &input[at..end];
            while !piece.is_empty() && !decoder.is_done() {
                let (used, made) = decoder.decode(piece, &mut out)?;
                body.extend_from_slice(&out[..made]);
                piece = &piece[used..];
                at += used;
                if used == 0 && made == 0 {
                    break;
                }
            }
            if at < end {
                break;
            }
        }
        Ok((body, at, decoder.is_done()))
    }

    #[test]
    fn known_bodies() {
        let body = b"4\r\nWiki\r\n5;x=y\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nEXTRA";
        let (decoded, used, done) = decode_all(body, 1000, 7).expect("valid");
        assert_eq!(decoded, b"Wikipedia in\r\n\r\nchunks.");
        assert!(done);
        assert_eq!(&body[used..], b"EXTRA", "bytes after the body are left alone");
    }

    #[test]
    fn rejections() {
        let case = |input: &[u8]| decode_all(input, 1000, 64).err();
        assert_eq!(case(b"x\r\n"), Some(ChunkError::BadSize));
        assert_eq!(case(b"\r\n"), Some(ChunkError::BadSize));
        assert_eq!(case(b"-1\r\n"), Some(ChunkError::BadSize));
        assert_eq!(case(b"5 x\r\n"), Some(ChunkError::BadSize));
        assert_eq!(case(b"10000000000000000\r\n"), Some(ChunkError::SizeOverflow), "2^64");
        assert_eq!(case(b"ffffffffffffffff0\r\n"), Some(ChunkError::SizeOverflow));
        assert_eq!(case(b"5\nhello\r\n"), Some(ChunkError::MissingCrlf), "bare LF");
        assert_eq!(case(b"5\r\nhelloX\r\n"), Some(ChunkError::MissingCrlf), "data longer than its size");
        assert_eq!(case(b"0\r\nA: b\n\r\n"), Some(ChunkError::MissingCrlf));
        let long = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert_eq!(case(&long), Some(ChunkError::LineTooLong));
        let zeros = vec![b'0'; MAX_CHUNK_LINE + 1];
        assert_eq!(case(&zeros), Some(ChunkError::LineTooLong), "leading zeros are bounded too");
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILERS {
            trailers.extend_from_slice(b"A: b\r\n");
        }
        assert_eq!(case(&trailers), Some(ChunkError::TrailersTooLarge));
        let big = [b"0\r\nA: ".as_slice(), &vec![b'b'; MAX_TRAILER_BYTES]].concat();
        assert_eq!(case(&big), Some(ChunkError::TrailersTooLarge));
        assert_eq!(
            decode_all(b"ffffffffffffffff\r\nab", 1000, 64).map(|(b, _, d)| (b, d)),
            Ok((b"ab".to_vec(), false))
        );
    }

    proptest! {
        #[test]
        fn round_trips_with_the_reference_encoder(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            extension in any::<bool>(),
            upper in any::<bool>(),
            trailers in proptest::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..4),
            step in 1usize..64,
            room in 1usize..64,
        ) {
            let encoded = encode(&chunks, extension, upper, &trailers);
            let (body, used, done) = decode_all(&encoded, step, room).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(done);
            prop_assert_eq!(used, encoded.len());
            prop_assert_eq!(body, chunks.concat());
        }

        #[test]
        fn never_panics_on_any_input(input in proptest::collection::vec(any::<u8>(), 0..512), step in 1usize..32) {
            let _ = decode_all(&input, step, 16);
        }

        #[test]
        fn never_panics_on_near_valid_input(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
            flip in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let mut encoded = encode(&chunks, false, false, &[]);
            let at = flip % encoded.len();
            encoded[at] = byte;
            let _ = decode_all(&encoded, 7, 5);
        }
    }
}
