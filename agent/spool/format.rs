//! The spool's byte layouts: segment header and record frame (the spec is in the parent
//! module's docs, "On-disk format"). Pure encode/decode functions, no I/O.
//!
//! Every constant and field offset here is persisted on laptops in the field: do not reorder,
//! resize or renumber anything without bumping [`VERSION`] and keeping a reader for the old one.

use std::fmt;

/// First 8 bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"FLEETSPL";
/// Segment format version written by this code (byte 8 of the header).
pub const VERSION: u8 = 1;
/// Segment header length in bytes.
pub const HEADER_LEN: usize = 88;
/// Bytes of the header covered by the key-wrapping AAD (magic .. key id).
pub const HEADER_AAD_LEN: usize = 28;
/// Frame header length: body length, its complement, nonce.
pub const FRAME_HEADER_LEN: usize = 20;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Per-record overhead on disk: frame header plus tag.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + TAG_LEN;
/// Largest record (JSON bytes) the spool accepts.
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Largest frame body (ciphertext + tag) a reader accepts.
pub const MAX_BODY_LEN: u32 = (MAX_RECORD_BYTES + TAG_LEN) as u32;
/// Length of a wrapped data key: 32 key bytes + tag.
pub const WRAPPED_KEY_LEN: usize = 32 + TAG_LEN;

/// A decoded segment header. Field order = byte order on disk: do not reorder.
#[derive(Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's id (also its file name).
    pub segment_id: u64,
    /// Which master key wrapped the data key (not secret).
    pub key_id: [u8; 8],
    /// Random nonce used to wrap the data key.
    pub wrap_nonce: [u8; 12],
    /// The data key sealed under the master key, with its tag.
    pub wrapped_key: [u8; WRAPPED_KEY_LEN],
}

impl fmt::Debug for SegmentHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wrapped key is ciphertext, but there is no reason to print it.
        f.debug_struct("SegmentHeader").field("segment_id", &self.segment_id).finish_non_exhaustive()
    }
}

/// Why a segment header is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short(usize),
    /// The first 8 bytes are not [`MAGIC`]: not a spool segment.
    Magic,
    /// A format version this code does not know (never overwritten).
    Version(u8),
    /// The reserved bytes 9..12 are not zero.
    Reserved,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short(n) => write!(f, "header is {n} bytes, expected {HEADER_LEN}"),
            HeaderError::Magic => f.write_str("bad magic (not a spool segment)"),
            HeaderError::Version(v) => write!(f, "unknown format version {v} (this agent writes {VERSION})"),
            HeaderError::Reserved => f.write_str("reserved header bytes are not zero"),
        }
    }
}

/// The key-wrapping AAD: header bytes 0..28 (magic, version, reserved, segment id, key id).
pub fn header_aad(segment_id: u64, key_id: &[u8; 8]) -> [u8; HEADER_AAD_LEN] {
    let mut aad = [0u8; HEADER_AAD_LEN];
    aad[0..8].copy_from_slice(&MAGIC);
    aad[8] = VERSION;
    // 9..12 reserved, zero.
    aad[12..20].copy_from_slice(&segment_id.to_le_bytes());
    aad[20..28].copy_from_slice(key_id);
    aad
}

impl SegmentHeader {
    /// The 88 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..HEADER_AAD_LEN].copy_from_slice(&header_aad(self.segment_id, &self.key_id));
        out[28..40].copy_from_slice(&self.wrap_nonce);
        out[40..88].copy_from_slice(&self.wrapped_key);
        out
    }

    /// Parse the first [`HEADER_LEN`] bytes of `bytes`. Checks magic, then version, then the
    /// reserved bytes, so a future version is reported as such.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if bytes.len() < 9 || bytes[0..8] != MAGIC {
            return Err(if bytes.len() >= 8 && bytes[0..8] != MAGIC {
                HeaderError::Magic
            } else {
                HeaderError::Short(bytes.len())
            });
        }
        if bytes[8] != VERSION {
            return Err(HeaderError::Version(bytes[8]));
        }
        if bytes.len() < HEADER_LEN {
            return Err(HeaderError::Short(bytes.len()));
        }
        if bytes[9..12] != [0, 0, 0] {
            return Err(HeaderError::Reserved);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[12..20]);
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&bytes[20..28]);
        let mut wrap_nonce = [0u8; 12];
        wrap_nonce.copy_from_slice(&bytes[28..40]);
        let mut wrapped_key = [0u8; WRAPPED_KEY_LEN];
        wrapped_key.copy_from_slice(&bytes[40..88]);
        Ok(SegmentHeader { segment_id: u64::from_le_bytes(id), key_id, wrap_nonce, wrapped_key })
    }
}

/// The nonce of record `index` in a segment: 4 zero bytes, then the index as u64 big-endian.
/// Unique per data key because each data key belongs to one segment, written by one process
/// with a strictly increasing index (see "Nonces" in the module docs).
pub fn record_nonce(index: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..12].copy_from_slice(&index.to_be_bytes());
    nonce
}

/// The AAD of record `index` in segment `segment_id`: magic, version, segment id (u64 LE),
/// index (u64 LE). Binds the record to its place.
pub fn record_aad(segment_id: u64, index: u64) -> [u8; 25] {
    let mut aad = [0u8; 25];
    aad[0..8].copy_from_slice(&MAGIC);
    aad[8] = VERSION;
    aad[9..17].copy_from_slice(&segment_id.to_le_bytes());
    aad[17..25].copy_from_slice(&index.to_le_bytes());
    aad
}

/// The 20-byte frame header of record `index` with a body of `body_len` bytes.
pub fn encode_frame_header(index: u64, body_len: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut out = [0u8; FRAME_HEADER_LEN];
    out[0..4].copy_from_slice(&body_len.to_le_bytes());
    out[4..8].copy_from_slice(&(!body_len).to_le_bytes());
    out[8..20].copy_from_slice(&record_nonce(index));
    out
}

/// Why a frame header is not the one expected at this position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHeaderError {
    /// The length and its complement disagree (a flipped bit, zeros, or garbage).
    LengthCheck,
    /// The length is consistent but outside `TAG_LEN + 1 ..= MAX_BODY_LEN`.
    LengthRange(u32),
    /// The stored nonce is not the one for this record index (moved or reordered frame).
    Nonce,
}

impl fmt::Display for FrameHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameHeaderError::LengthCheck => f.write_str("frame length check failed"),
            FrameHeaderError::LengthRange(n) => write!(f, "frame length {n} out of range"),
            FrameHeaderError::Nonce => f.write_str("frame nonce does not match its position"),
        }
    }
}

/// Check a frame header read at record position `index`; returns the body length.
pub fn decode_frame_header(bytes: &[u8; FRAME_HEADER_LEN], index: u64) -> Result<u32, FrameHeaderError> {
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let check = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if check != !len {
        return Err(FrameHeaderError::LengthCheck);
    }
    if len <= TAG_LEN as u32 || len > MAX_BODY_LEN {
        return Err(FrameHeaderError::LengthRange(len));
    }
    if bytes[8..20] != record_nonce(index) {
        return Err(FrameHeaderError::Nonce);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_layout() {
        let header = SegmentHeader {
            segment_id: 0x0102_0304_0506_0708,
            key_id: [0xaa; 8],
            wrap_nonce: [0xbb; 12],
            wrapped_key: [0xcc; WRAPPED_KEY_LEN],
        };
        let bytes = header.encode();
        assert_eq!(&bytes[0..9], b"FLEETSPL\x01");
        assert_eq!(&bytes[9..12], &[0, 0, 0]);
        assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
    }

    #[test]
    fn header_errors_are_specific() {
        let good = SegmentHeader { segment_id: 1, key_id: [0; 8], wrap_nonce: [0; 12], wrapped_key: [0; 48] }.encode();
        assert_eq!(SegmentHeader::decode(&good[..40]), Err(HeaderError::Short(40)));
        assert_eq!(SegmentHeader::decode(&good[..3]), Err(HeaderError::Short(3)));
        let mut bad = good;
        bad[0] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::Magic));
        let mut future = good;
        future[8] = 2;
        assert_eq!(SegmentHeader::decode(&future[..20]), Err(HeaderError::Version(2)));
        let mut reserved = good;
        reserved[10] = 1;
        assert_eq!(SegmentHeader::decode(&reserved), Err(HeaderError::Reserved));
    }

    #[test]
    fn frame_header_test_vector_and_checks() {
        let header = encode_frame_header(2, 0x30);
        // len 48 LE, !48 LE, nonce 00000000 0000000000000002.
        assert_eq!(header, [0x30, 0, 0, 0, 0xcf, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(decode_frame_header(&header, 2), Ok(0x30));
        assert_eq!(decode_frame_header(&header, 3), Err(FrameHeaderError::Nonce));
        for bit in 0..64 {
            let mut flipped = header;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode_frame_header(&flipped, 2), Err(FrameHeaderError::LengthCheck), "bit {bit}");
        }
        assert_eq!(decode_frame_header(&[0; 20], 0), Err(FrameHeaderError::LengthCheck));
        assert_eq!(decode_frame_header(&encode_frame_header(0, 16), 0), Err(FrameHeaderError::LengthRange(16)));
    }

    #[test]
    fn aad_binds_segment_and_index() {
        assert_eq!(
            record_aad(1, 2),
            [b'F', b'L', b'E', b'E', b'T', b'S', b'P', b'L', 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_ne!(record_aad(1, 2), record_aad(2, 1));
    }
}
