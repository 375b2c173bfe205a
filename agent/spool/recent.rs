//! The plaintext (record JSON) of the newest committed records, kept in memory so a batch of
//! what was just appended is built without reading it back, decrypting and parsing it.
//!
//! An entry is added only once its frame is committed (written, and fsynced unless the policy
//! is `never`), under the position it has on disk, with the very bytes that were sealed into
//! the frame: a batch built from here is byte for byte the batch a read of the segment gives
//! (`Spool::read_raw_from` on a fresh open; tests/spool.rs holds the two side by side).
//! Entries leave with the ack that covers them, with their segment (deleted, dropped by the
//! cap, quarantined), and oldest first past [`MAX_BYTES`] or [`MAX_RECORDS`]: reading then
//! goes to the segment for the older ones, as after a restart. Memory: at most
//! [`MAX_BYTES`] of JSON.

use std::collections::VecDeque;

use super::Cursor;

/// Most bytes of record JSON kept. Resident memory is a budget too (3 MiB): at the default
/// config (interval 10 s, a send every 20 s) a send round finds all its records here; at
/// interval 1 s with every default widget (about 4.5 KiB a cycle, 90 KiB a round) the older
/// third is read from the segment.
pub const MAX_BYTES: usize = 64 * 1024;
/// Most records kept (a v2 batch holds at most 500).
pub const MAX_RECORDS: usize = 500;

/// Committed records, oldest first, at strictly increasing positions.
///
/// The JSON of every record lives in one buffer, one record after the other (`buf[start..]`);
/// an entry is a position and where its bytes are. The buffer is kept across pushes and acks
/// (compacted in place when its end is reached), so a steady agent allocates nothing here: a
/// record per allocation made the allocator take and give back whole pages every cycle
/// (BENCHMARKS.md, "Branch alloc").
#[derive(Default)]
pub struct Recent {
    /// Position, offset in `buf` and length of each record kept.
    entries: VecDeque<(Cursor, usize, usize)>,
    buf: Vec<u8>,
    /// Where the oldest kept record starts in `buf` (the bytes before it are free).
    start: usize,
}

impl Recent {
    /// Keep the JSON of the record committed at `at` (after every position already kept).
    pub fn push(&mut self, at: Cursor, json: &[u8]) {
        if self.entries.back().is_some_and(|(last, _, _)| *last >= at) {
            // Out of order cannot happen (positions only grow); never serve a stale entry.
            self.clear();
        }
        while !self.entries.is_empty()
            && (self.bytes() + json.len() > MAX_BYTES || self.entries.len() + 1 > MAX_RECORDS)
        {
            self.pop_front();
        }
        if json.len() > MAX_BYTES {
            return;
        }
        if self.buf.len() + json.len() > self.buf.capacity() {
            self.compact();
            let needed = self.buf.len() + json.len();
            if needed > self.buf.capacity() {
                // Grown by doubling up to the bound, never past it.
                let target = needed.max((self.buf.capacity() * 2).min(MAX_BYTES));
                self.buf.reserve_exact(target - self.buf.len());
            }
        }
        self.entries.push_back((at, self.buf.len(), json.len()));
        self.buf.extend_from_slice(json);
    }

    /// The JSON of the record at `at`, if kept.
    pub fn get(&self, at: Cursor) -> Option<&[u8]> {
        let i = self.entries.binary_search_by_key(&at, |(pos, _, _)| *pos).ok()?;
        self.entries.get(i).and_then(|&(_, offset, len)| self.buf.get(offset..offset + len))
    }

    /// Forget every record before `cursor` (acknowledged).
    pub fn forget_before(&mut self, cursor: Cursor) {
        while self.entries.front().is_some_and(|(pos, _, _)| *pos < cursor) {
            self.pop_front();
        }
    }

    /// Forget the records of segment `id` (deleted, dropped or quarantined).
    pub fn forget_segment(&mut self, id: u64) {
        if !self.entries.iter().any(|(pos, _, _)| pos.segment == id) {
            return;
        }
        // Rare (a segment goes while records of it are kept): rebuilt without them.
        let old = std::mem::take(self);
        for (pos, offset, len) in old.entries {
            if pos.segment != id {
                self.push(pos, &old.buf[offset..offset + len]);
            }
        }
    }

    /// Forget everything (the buffer is kept for the next records).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.buf.clear();
        self.start = 0;
    }

    /// Records kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of JSON kept.
    fn bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    fn pop_front(&mut self) {
        self.entries.pop_front();
        match self.entries.front() {
            Some(&(_, offset, _)) => self.start = offset,
            None => self.clear(),
        }
    }

    /// Move the kept records to the front of the buffer.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.buf.drain(..self.start);
        for entry in &mut self.entries {
            entry.1 -= self.start;
        }
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, index: u64) -> Cursor {
        Cursor { segment, index }
    }

    #[test]
    fn kept_until_acked_or_their_segment_goes_and_bounded() {
        let mut recent = Recent::default();
        for i in 0..3 {
            recent.push(at(1, i), &[b'a'; 10]);
        }
        recent.push(at(2, 0), b"x");
        assert_eq!(recent.get(at(1, 1)), Some(&[b'a'; 10][..]));
        assert_eq!(recent.get(at(2, 0)), Some(&b"x"[..]));
        assert_eq!(recent.get(at(2, 1)), None);
        recent.forget_before(at(1, 2));
        assert_eq!((recent.get(at(1, 1)), recent.len()), (None, 2));
        recent.forget_segment(1);
        assert_eq!((recent.len(), recent.bytes()), (1, 1));
        recent.push(at(2, 0), b"stale");
        assert_eq!(recent.get(at(2, 0)), Some(&b"stale"[..]), "an out-of-order push drops what was kept");
        assert_eq!(recent.len(), 1);

        let mut big = Recent::default();
        for i in 0..(MAX_RECORDS as u64 + 5) {
            big.push(at(1, i), b"{}");
        }
        assert_eq!(big.len(), MAX_RECORDS);
        assert_eq!(big.get(at(1, 4)), None, "the oldest leave first");
        big.push(at(1, 2000), &vec![0; MAX_BYTES]);
        assert_eq!((big.len(), big.bytes()), (1, MAX_BYTES));
        big.push(at(1, 2001), &vec![0; MAX_BYTES + 1]);
        assert_eq!((big.len(), big.bytes()), (0, 0), "a record over the bound is not kept");
    }
}
