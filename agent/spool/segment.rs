//! One segment file: naming, creation, appending frames, and walking its frames.
//!
//! The walker ([`FrameReader`]) reads one frame at a time into one reusable buffer, so
//! memory is bounded by the largest frame, never by the segment or the spool. It classifies
//! every position as a good record, the clean end, a torn tail (a crash mid-write: safe to
//! truncate) or a bad frame (corruption with data after it: the segment is quarantined).
//!
//! The writer keeps a *zeroed horizon*: zero bytes written ahead of the last record (up to
//! [`HORIZON_CHUNK`] at a time), so most appends overwrite blocks inside the file's size and
//! their `fdatasync` has no inode (size) to write. The walker treats zeros after the last
//! record as the clean end, and a partial frame followed only by zeros as a torn tail (see
//! "Zeroed horizon" in docs/spool-format.md).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{self, FrameHeaderError, HeaderError, SegmentHeader, FRAME_HEADER_LEN, HEADER_LEN};
use super::keys::{MasterKey, SegmentCipher};
use super::{fsio, SpoolError};

/// Extension of segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// `00000000000000000042.seg` for id 42 (20 digits: every u64, sorts by name).
pub fn file_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// The id of a segment file name, or `None` if `name` is not one (other files in the spool
/// directory belong to someone else and are left alone).
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How far the zeroed horizon reaches: the file is extended with zeros to the next multiple
/// of this size (never past `spool.segment_bytes`, nor past what `spool.max_bytes` leaves).
/// Measured in BENCHMARKS.md, "Branch zerotail".
pub const HORIZON_CHUNK: u64 = 64 * 1024;

/// Zeros for extending the horizon: one page, written as many times as the extension needs in
/// one `pwritev` (a 64 KiB array would be 64 KiB of the binary: issue 16's size budget).
static ZEROS: [u8; 4096] = [0; 4096];

/// Write `len` zero bytes at `offset` (one `pwritev` per 64 KiB, repeated on a short write).
fn write_zeros_at(file: &File, mut offset: u64, mut len: u64) -> std::io::Result<()> {
    const SLICES: usize = (HORIZON_CHUNK as usize).div_ceil(ZEROS.len());
    while len > 0 {
        let mut slices = [std::io::IoSlice::new(&[]); SLICES];
        let mut left = len;
        for slice in &mut slices {
            let take = left.min(ZEROS.len() as u64) as usize;
            *slice = std::io::IoSlice::new(&ZEROS[..take]);
            left -= take as u64;
        }
        let written = match rustix::io::pwritev(file, &slices, offset) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
            Ok(n) => n as u64,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += written;
        len -= written;
    }
    Ok(())
}

/// The open, appendable newest segment. Only ever written by the process that created it
/// (see "Nonces" in the module docs).
pub struct SegmentWriter {
    file: File,
    path: PathBuf,
    id: u64,
    cipher: SegmentCipher,
    len: u64,
    /// The file's size: `len` plus the zeroed horizon.
    size: u64,
    /// The horizon never reaches past this (`spool.segment_bytes`).
    size_limit: u64,
    next_index: u64,
    /// Test hook: fail a write after this many more bytes (simulates ENOSPC).
    #[cfg(test)]
    pub fail_after: Option<usize>,
    /// Test hook: writing the horizon's zeros fails halfway (ENOSPC).
    #[cfg(test)]
    pub fail_zeros: bool,
}

impl SegmentWriter {
    /// Create segment `id` in `dir`: the header is written to `<name>.tmp`, fsynced and renamed
    /// into place, so a `.seg` file always starts with a whole header. `sync_dir` makes the
    /// new name durable. `size_limit` bounds the zeroed horizon (`spool.segment_bytes`).
    pub fn create(
        dir: &Path,
        id: u64,
        master: &MasterKey,
        sync_dir: bool,
        size_limit: u64,
    ) -> Result<SegmentWriter, SpoolError> {
        let path = dir.join(file_name(id));
        let tmp = fsio::tmp_path(&path);
        let (header, cipher) = master.new_segment(id)?;
        let _ = std::fs::remove_file(&tmp);
        if let Err(e) = fsio::write_new(&tmp, &header.encode(), sync_dir) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).map_err(SpoolError::io("creating segment", &path))?;
        if sync_dir {
            fsio::sync_dir(dir)?;
        }
        let file = OpenOptions::new().write(true).open(&path).map_err(SpoolError::io("opening segment", &path))?;
        Ok(SegmentWriter {
            file,
            path,
            id,
            cipher,
            len: HEADER_LEN as u64,
            size: HEADER_LEN as u64,
            size_limit,
            next_index: 0,
            #[cfg(test)]
            fail_after: None,
            #[cfg(test)]
            fail_zeros: false,
        })
    }

    /// Segment id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes written (and not rolled back).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Zero bytes written past [`SegmentWriter::len`] (the horizon): disk use beyond the
    /// records.
    pub fn slack(&self) -> u64 {
        self.size - self.len
    }

    /// Index the next record gets.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The segment's record cipher.
    pub fn cipher(&self) -> &SegmentCipher {
        &self.cipher
    }

    /// Append already sealed frames holding `records` records, at the logical end (inside the
    /// zeroed horizon when it reaches that far). When the frames reach past the horizon, the
    /// file is first extended with zeros to the next [`HORIZON_CHUNK`] boundary (bounded by
    /// `size_limit` and by `room`, the bytes of disk the spool's cap still allows), in one
    /// write; the next `fdatasync` makes both durable.
    pub fn write(&mut self, frames: &[u8], records: u64, room: u64) -> Result<(), SpoolError> {
        let end = self.len + frames.len() as u64;
        if end > self.size {
            let want = end.next_multiple_of(HORIZON_CHUNK).min(self.size_limit).min(self.size.saturating_add(room));
            if want > end {
                // Zeros from the frames' end to the boundary; a crash between this write and
                // the frames' leaves zeros where the frames go: a clean end. Best effort: on a
                // nearly full disk the records may still fit where the zeros do not; then the
                // zeros are cut back and the frames appended as without a horizon.
                let zeros = want - end;
                #[cfg(test)]
                let extended = if self.fail_zeros {
                    let _ = write_zeros_at(&self.file, end, zeros / 2);
                    Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
                } else {
                    write_zeros_at(&self.file, end, zeros)
                };
                #[cfg(not(test))]
                let extended = write_zeros_at(&self.file, end, zeros);
                match extended {
                    Ok(()) => self.size = want,
                    Err(e) => {
                        log::debug!("extending segment {} with zeros: {e}", self.path.display());
                        self.file.set_len(self.size).map_err(SpoolError::io("truncating segment", &self.path))?;
                    }
                }
            }
        }
        #[cfg(test)]
        if let Some(budget) = self.fail_after {
            if frames.len() > budget {
                let _ = self.file.write_all_at(&frames[..budget], self.len);
                self.fail_after = Some(0);
                return Err(SpoolError::io("writing segment", &self.path)(std::io::Error::from(
                    std::io::ErrorKind::StorageFull,
                )));
            }
            self.fail_after = Some(budget - frames.len());
        }
        self.file.write_all_at(frames, self.len).map_err(SpoolError::io("writing segment", &self.path))?;
        self.len = end;
        self.size = self.size.max(end);
        self.next_index += records;
        Ok(())
    }

    /// fsync the segment's data.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.file.sync_data().map_err(SpoolError::io("syncing segment", &self.path))
    }

    /// Cut the file back to `len` bytes and `next_index` records (after a failed write or
    /// sync). The writer must not be used for new records afterwards (see "Nonces").
    pub fn roll_back(&mut self, len: u64, next_index: u64) -> Result<(), SpoolError> {
        self.len = len;
        self.size = len;
        self.next_index = next_index;
        self.file.set_len(len).map_err(SpoolError::io("truncating segment", &self.path))?;
        self.file.sync_all().map_err(SpoolError::io("syncing segment", &self.path))
    }
}

impl Drop for SegmentWriter {
    /// A closed segment keeps no horizon: its size is its records' length again (best effort,
    /// not synced; a crash before or after leaves zeros, which recovery cuts).
    fn drop(&mut self) {
        if self.size > self.len {
            let _ = self.file.set_len(self.len);
        }
    }
}

/// What the walker found at the current position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A whole frame; its plaintext (or, when not decrypting, its body) is in the buffer.
    Record,
    /// The clean end of the segment.
    End,
    /// An incomplete or unauthenticated last frame: a crash mid-write. Everything from the
    /// current offset on can be truncated.
    Torn(String),
    /// A damaged frame with data after it. `skip` is the frame's full length if its header is
    /// sound (so a walker can step over it), `None` if the rest cannot be framed.
    Bad {
        /// What is wrong.
        reason: String,
        /// Bytes to step over this frame, when known.
        skip: Option<u64>,
    },
}

/// Reads a segment's header, then its frames one by one.
pub struct FrameReader {
    reader: BufReader<File>,
    path: PathBuf,
    offset: u64,
    end: u64,
    index: u64,
    cipher: Option<SegmentCipher>,
    /// The last `Torn` was a whole frame that does not authenticate (damage, not a torn write).
    torn_complete: bool,
    /// The last record's plaintext (or body, when not decrypting).
    pub buf: Vec<u8>,
}

/// Open `path` and read its header. `end` limits the walk (the writer's length for the live
/// segment); `None` = the file's size. Returns the reader positioned at the first frame and
/// the header (or why it is unusable).
pub fn open(path: &Path, end: Option<u64>) -> Result<(FrameReader, Result<SegmentHeader, HeaderError>), SpoolError> {
    let file = File::open(path).map_err(SpoolError::io("opening segment", path))?;
    let size = file.metadata().map_err(SpoolError::io("reading metadata of segment", path))?.len();
    let end = end.map_or(size, |e| e.min(size));
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut head = vec![0u8; HEADER_LEN.min(end as usize)];
    reader.read_exact(&mut head).map_err(SpoolError::io("reading segment header", path))?;
    let header = SegmentHeader::decode(&head);
    let frames = FrameReader {
        reader,
        path: path.to_path_buf(),
        offset: HEADER_LEN as u64,
        end,
        index: 0,
        cipher: None,
        torn_complete: false,
        buf: Vec::new(),
    };
    Ok((frames, header))
}

impl FrameReader {
    /// Use `cipher` to authenticate and decrypt frames.
    pub fn set_cipher(&mut self, cipher: SegmentCipher) {
        self.cipher = Some(cipher);
    }

    /// Whether the last [`Step::Torn`] was a complete frame that fails authentication: a
    /// damaged record (accepted once, so its loss is counted), not a write cut short.
    pub fn torn_was_complete(&self) -> bool {
        self.torn_complete
    }

    /// Byte offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Index of the next frame.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Bytes in the segment (as walked).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Extend the walk limit (the live segment grew). The buffer is dropped then: it may hold
    /// zeros of the horizon read ahead past the old end, since overwritten by records.
    pub fn set_end(&mut self, end: u64) -> Result<(), SpoolError> {
        if end > self.end {
            self.seek_to(self.offset)?;
        }
        self.end = end;
        Ok(())
    }

    /// Read the next frame. With `decrypt` (and a cipher set) the body is authenticated and
    /// the plaintext left in [`FrameReader::buf`]; without, the frame is only framed.
    pub fn next(&mut self, decrypt: bool) -> Result<Step, SpoolError> {
        let remaining = self.end.saturating_sub(self.offset);
        if remaining == 0 {
            return Ok(Step::End);
        }
        if remaining < FRAME_HEADER_LEN as u64 {
            if self.rest_is_zero(remaining)? {
                return Ok(Step::End);
            }
            return Ok(Step::Torn(format!("short frame header ({remaining} bytes)")));
        }
        let mut head = [0u8; FRAME_HEADER_LEN];
        self.read_exact(&mut head)?;
        let body_len = match format::decode_frame_header(&head, self.index) {
            Ok(len) => u64::from(len),
            // Zeros from here on: the zeroed horizon (or a file extended by a crash), the
            // clean end. A header begun and followed only by zeros: a write cut short.
            Err(_) if self.rest_is_zero(remaining - FRAME_HEADER_LEN as u64)? => {
                return Ok(if head == [0; FRAME_HEADER_LEN] {
                    Step::End
                } else {
                    Step::Torn("partial frame header followed by zeros".into())
                });
            }
            Err(e) => {
                let skip = match e {
                    FrameHeaderError::Nonce => Some(
                        FRAME_HEADER_LEN as u64 + u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]])),
                    ),
                    _ => None,
                };
                let skip = skip.filter(|s| *s <= remaining);
                self.unread(FRAME_HEADER_LEN as u64)?;
                return Ok(Step::Bad { reason: e.to_string(), skip });
            }
        };
        let frame_len = FRAME_HEADER_LEN as u64 + body_len;
        if frame_len > remaining {
            self.unread(FRAME_HEADER_LEN as u64)?;
            return Ok(Step::Torn(format!("short frame body ({remaining} of {frame_len} bytes)")));
        }
        self.buf.clear();
        self.buf.resize(body_len as usize, 0);
        let mut body = std::mem::take(&mut self.buf);
        let read = self.read_exact(&mut body);
        self.buf = body;
        read?;
        if decrypt {
            if let Some(cipher) = &self.cipher {
                let last_byte = self.buf.last().copied();
                if cipher.open_body(self.index, &mut self.buf).is_err() {
                    let step = if frame_len == remaining {
                        self.torn_complete = true;
                        Step::Torn("last frame does not authenticate".into())
                    } else if self.rest_is_zero(remaining - frame_len)? {
                        // The last frame before the zeroed horizon. A write cut short inside
                        // the horizon leaves the frame's end zero; a whole frame (its tag's
                        // last byte is not zero) that fails is damage to a stored record.
                        if last_byte == Some(0) {
                            Step::Torn("partial frame followed by zeros".into())
                        } else {
                            self.torn_complete = true;
                            Step::Torn("last frame does not authenticate".into())
                        }
                    } else {
                        Step::Bad { reason: "frame does not authenticate".into(), skip: Some(frame_len) }
                    };
                    // Back to the frame's start (`rest_is_zero` may have moved the position).
                    self.seek_to(self.offset)?;
                    return Ok(step);
                }
            }
        }
        self.offset += frame_len;
        self.index += 1;
        Ok(Step::Record)
    }

    /// Read the next frame like [`FrameReader::next`] with decryption, then step back so the
    /// same frame is read again next time (the plaintext stays in the buffer).
    pub fn peek(&mut self) -> Result<Step, SpoolError> {
        let (offset, index) = (self.offset, self.index);
        let step = self.next(true)?;
        if step == Step::Record {
            self.unread(self.offset - offset)?;
            self.offset = offset;
            self.index = index;
        }
        Ok(step)
    }

    /// The JSON length of the next frame, from its header alone (`None` if the next frame is
    /// not a sound one). The position does not move.
    pub fn peek_plaintext_len(&mut self) -> Result<Option<u64>, SpoolError> {
        if self.end.saturating_sub(self.offset) < FRAME_HEADER_LEN as u64 {
            return Ok(None);
        }
        let mut head = [0u8; FRAME_HEADER_LEN];
        self.read_exact(&mut head)?;
        self.unread(FRAME_HEADER_LEN as u64)?;
        Ok(format::decode_frame_header(&head, self.index).ok().map(|len| u64::from(len) - format::TAG_LEN as u64))
    }

    /// Step over a bad frame of `len` bytes (as reported by [`Step::Bad`]) and count it.
    pub fn skip_bad(&mut self, len: u64) -> Result<(), SpoolError> {
        self.seek_to(self.offset + len)?;
        self.index += 1;
        Ok(())
    }

    /// Skip `n` frames without decrypting; stops early at anything that is not a record.
    pub fn skip(&mut self, n: u64) -> Result<Step, SpoolError> {
        for _ in 0..n {
            match self.next(false)? {
                Step::Record => {}
                other => return Ok(other),
            }
        }
        Ok(Step::Record)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), SpoolError> {
        self.reader.read_exact(buf).map_err(SpoolError::io("reading segment", &self.path))
    }

    /// Go back to `self.offset` after reading `n` bytes past it.
    fn unread(&mut self, n: u64) -> Result<(), SpoolError> {
        self.reader.seek_relative(-(n as i64)).map_err(SpoolError::io("seeking in segment", &self.path))
    }

    /// After a bad frame whose length cannot be trusted (so it cannot be stepped over): find
    /// the next sound frame header by scanning forward byte by byte, and continue there. A
    /// sound header has a length that matches its complement, the four zero bytes of the
    /// nonce, and an index above the current one that still fits in the rest of the file: 64
    /// bits of structure that random ciphertext matches with negligible probability. Returns
    /// how many frames the gap held (the index difference), or `None` when no later frame is
    /// found. Memory: one 64 KiB window.
    pub fn resync(&mut self) -> Result<Option<u64>, SpoolError> {
        const WINDOW: usize = 64 * 1024;
        let start = self.offset + 1;
        let mut window: Vec<u8> = Vec::with_capacity(WINDOW + FRAME_HEADER_LEN);
        let mut window_at = start;
        self.seek_to(start)?;
        let mut chunk = vec![0u8; WINDOW];
        while window_at + FRAME_HEADER_LEN as u64 <= self.end {
            let want = ((self.end - self.offset) as usize).min(WINDOW);
            if want > 0 {
                self.read_exact(&mut chunk[..want])?;
                self.offset += want as u64;
                window.extend_from_slice(&chunk[..want]);
            }
            let mut i = 0;
            while i + FRAME_HEADER_LEN <= window.len() {
                let at = window_at + i as u64;
                if let Some(index) = self.sound_header(&window[i..i + FRAME_HEADER_LEN], at) {
                    let gap = index - self.index;
                    self.seek_to(at)?;
                    self.index = index;
                    return Ok(Some(gap));
                }
                i += 1;
            }
            if want == 0 {
                break;
            }
            // Keep the last bytes: a header may straddle two windows.
            window.drain(..i);
            window_at += i as u64;
        }
        self.seek_to(self.end)?;
        Ok(None)
    }

    /// The index of a plausible frame header at `at`, if `head` is one (see [`Self::resync`]).
    fn sound_header(&self, head: &[u8], at: u64) -> Option<u64> {
        let word = |r: std::ops::Range<usize>| head.get(r).and_then(|b| <[u8; 4]>::try_from(b).ok());
        let len = u32::from_le_bytes(word(0..4)?);
        let check = u32::from_le_bytes(word(4..8)?);
        if check != !len || word(8..12)? != [0; 4] {
            return None;
        }
        let index = u64::from_be_bytes(head.get(12..20).and_then(|b| <[u8; 8]>::try_from(b).ok())?);
        let fits = at + FRAME_HEADER_LEN as u64 + u64::from(len) <= self.end;
        let max_gap = (at - HEADER_LEN as u64) / FRAME_HEADER_LEN as u64 + 1;
        (index > self.index && index - self.index <= max_gap && fits).then_some(index)
    }

    fn seek_to(&mut self, offset: u64) -> Result<(), SpoolError> {
        self.reader.seek(SeekFrom::Start(offset)).map_err(SpoolError::io("seeking in segment", &self.path))?;
        self.offset = offset;
        Ok(())
    }

    /// Whether the next `n` bytes (after what was just read) are all zero; the read position
    /// is restored to `self.offset`.
    fn rest_is_zero(&mut self, n: u64) -> Result<bool, SpoolError> {
        let mut chunk = [0u8; 4096];
        let mut left = n;
        let mut zero = true;
        while left > 0 && zero {
            let take = left.min(chunk.len() as u64) as usize;
            self.read_exact(&mut chunk[..take])?;
            zero = chunk[..take].iter().all(|b| *b == 0);
            left -= take as u64;
        }
        self.seek_to(self.offset)?;
        Ok(zero)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_file_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for other in [
            "42.seg",
            "00000000000000000042.seg.tmp",
            "state.bin",
            "9999999999999999999x.seg",
            "99999999999999999999.seg",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }
}
