//! The v2 protocol (`POST /api/v2/batches`, `docs/v2-protocol.md`): every spool record, in
//! sealed batches of at most 500 records and 1 MiB, each with a persisted, strictly increasing
//! `seq`. The batch's description (seq, spool start and end, record count, key id) is written
//! into the spool's state record before it is sent, so after a crash it is rebuilt from the
//! spool and resent with the same seq and records (the receiver answers a duplicate). A seq
//! always carries exactly the records it was first built with, also when it is resealed under
//! a new key. This module owns that seq and in-flight state; it shares only the [`Link`] with
//! other protocols.
//!
//! One durable state write per batch: the ack of batch N is made in memory
//! ([`Link::ack_later`]) and becomes durable in the same write as the description of batch
//! N+1, before N+1 is sent (or with the lazy save or at shutdown when no batch follows). If
//! the agent dies before that write, N is resent under the SAME seq after the restart and the
//! receiver answers it as a duplicate: nothing is lost, nothing is stored twice, and the spool
//! deletes no segment before its ack is durable. After the ack the description stays as the
//! record of the last seq used (the spool's cursor, past its records, says it is done).
//!
//! Sends are coalesced: a push round starts at most every `send_interval` (a retry after a
//! failure comes when the backoff says), then drains the spool until the deadline; while a
//! backlog remains, the next round starts at the next cycle.

use std::time::{Duration, Instant};

use fleet_widgets::Timestamp;

use super::link::Link;
use super::state::{Inflight, SenderState};
use super::verdict::Verdict;
use super::{Sender, Step, MAX_BATCH_PLAINTEXT, MAX_BATCH_RECORDS};
use crate::random::random_unit;
use crate::spool::{Acked, Cursor, Spool};
use fleet_wire::envelope;
use fleet_wire::record::{Dropped, Record};

/// How long after a send round's interval an ack made in memory waits for the next batch
/// to carry it before it is written on its own.
const ACK_SLACK: Duration = Duration::from_secs(1);

/// Pushes spool records as sealed, sequenced v2 batches.
pub struct V2Sender {
    link: Link,
    send_interval: Duration,
    next_send: Instant,
    /// `409` answers since the last other answer.
    collisions_in_a_row: u32,
    /// The batch in flight (or the last one), with its body when this process built it; its
    /// description (no body) is `link.state.inflight`.
    current: Option<Inflight>,
    /// An ack made in memory is written on its own at this time if no batch carried it.
    ack_deadline: Option<Instant>,
    /// The last batch's plaintext buffer (then its ciphertext), kept for the next batch when
    /// it is at most [`BUFFER_KEEP`] bytes.
    plaintext: Vec<u8>,
}

/// Largest buffer (batch plaintext, sealed body) kept from one batch to the next: a batch of
/// 20 s of the system widgets at interval 1 s is about 8 KiB sealed, of every default widget
/// about 120 KiB. Kept buffers spare the allocator its page-sized churn (BENCHMARKS.md,
/// "Branch alloc"); larger ones (a backlog drain) are given back, as resident memory is a
/// budget too.
const BUFFER_KEEP: usize = 64 * 1024;

/// `buf` emptied for reuse, or a new buffer in place of one grown past [`BUFFER_KEEP`].
fn reuse(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() > BUFFER_KEEP {
        return Vec::new();
    }
    buf.clear();
    buf
}

impl V2Sender {
    /// A v2 sender over `link`, starting a push round at most every `send_interval`.
    pub fn new(mut link: Link, send_interval: Duration) -> Self {
        // A body read back from an older release's inflight.json is kept in memory only.
        let current = link.state.inflight.take();
        link.state.inflight = current.as_ref().map(Inflight::describe);
        V2Sender {
            link,
            send_interval,
            next_send: Instant::now(),
            collisions_in_a_row: 0,
            current,
            ack_deadline: None,
            plaintext: Vec::new(),
        }
    }

    fn send_batch(&mut self, spool: &mut Spool) -> Step {
        enum Next {
            Build,
            Send,
            Rebuild(Inflight),
        }
        let next = match &self.current {
            // The last batch, acknowledged (its description stays as the record of the last seq).
            Some(done) if done.end <= spool.acked_cursor() => {
                let seq = done.seq;
                self.seq_used(seq);
                Next::Build
            }
            Some(inflight) if inflight.kid == self.link.kid && !inflight.body.is_empty() => Next::Send,
            Some(stale) => Next::Rebuild(stale.describe()),
            None => Next::Build,
        };
        let built = match next {
            Next::Build => self.build_batch(spool),
            Next::Send => Ok(true),
            Next::Rebuild(stale) => {
                if stale.kid != self.link.kid {
                    log::info!(
                        "in-flight batch {} was sealed with key id {}; resealing it with key id {}",
                        stale.seq,
                        stale.kid.as_deref().unwrap_or("(none)"),
                        self.link.kid.as_deref().unwrap_or("(none)")
                    );
                }
                match self.rebuild_batch(spool, &stale, stale.seq) {
                    Ok(true) => Ok(true),
                    Ok(false) => return self.finish(spool, &stale, 0, true),
                    Err(e) => Err(e),
                }
            }
        };
        match built {
            Ok(true) => {}
            Ok(false) => return Step::Idle,
            Err(e) => return self.link.local_failure(&e),
        }
        let Some(inflight) = self.current.as_ref() else { return Step::Idle };
        let sent = inflight.describe();
        let verdict = self.link.post("/api/v2/batches", inflight.body.as_bytes());
        if !matches!(verdict, Some(Verdict::Conflict { .. })) {
            self.collisions_in_a_row = 0;
        }
        match verdict {
            // The receiver recognises a resend of this seq: the ack waits for the next write.
            Some(Verdict::Ack) => self.finish(spool, &sent, sent.records, false),
            Some(Verdict::Conflict { reason }) => self.seq_collision(spool, &sent, &reason),
            Some(Verdict::Reject { reason }) => {
                let start = sent.start.unwrap_or(spool.acked_cursor());
                let records = match spool.read_from(start, sent.records as usize, usize::MAX) {
                    Ok(batch) => batch.records,
                    Err(e) => return self.link.local_failure(&format!("reading the spool: {e}")),
                };
                let what = format!("batch-{}", sent.seq);
                if let Step::Wait = self.link.set_aside(spool, start, &records, &what, &reason) {
                    return Step::Wait;
                }
                self.finish(spool, &sent, 0, true)
            }
            _ => Step::Wait,
        }
    }

    /// `409`: the receiver stored other records under this `(machine_id, seq)`: another agent
    /// sends under our machine id with the same seq numbers (two machines with one id, a
    /// cloned disk image with its `state.bin`, a restored backup). The records are ours and
    /// not stored: move to a fresh, random seq range and send the same records again under a
    /// new seq. Nothing is acked, nothing is lost, and nothing is stored twice (the receiver
    /// stored nothing of ours under the old seq).
    fn seq_collision(&mut self, spool: &mut Spool, inflight: &Inflight, reason: &str) -> Step {
        let fresh = fresh_seq_base(self.link.state.next_seq.max(inflight.seq + 1));
        let message = format!(
            "server holds other records under machine_id {:?} seq {} ({reason}): another agent reports \
             with this machine_id and the same seq numbers (two machines with one machine_id, a cloned disk \
             image, a restored backup?); give each machine its own machine_id. Records are kept and resent \
             under a fresh seq range starting at {fresh}",
            self.link.machine_id, inflight.seq
        );
        log::error!("{message}");
        self.link.record_error(&message);
        self.link.state.seq_collisions += 1;
        self.link.state.next_seq = fresh;
        let seq = self.link.state.next_seq;
        self.collisions_in_a_row += 1;
        // The rebuilt batch's write carries the fresh range (one write).
        match self.rebuild_batch(spool, inflight, seq) {
            // A server that answers 409 to every fresh seq is not a collision: back off.
            Ok(true) if self.collisions_in_a_row >= 3 => {
                self.link.retry_at = Some(Instant::now() + self.link.backoff.next_delay(random_unit(), None));
                Step::Wait
            }
            Ok(true) => Step::Continue,
            Ok(false) => match self.link.save_now(spool) {
                Ok(()) => self.finish(spool, inflight, 0, true),
                Err(e) => self.link.local_failure(&e),
            },
            Err(e) => self.link.local_failure(&e),
        }
    }

    /// Build (and persist) the next batch from the spool under a new seq (from the records
    /// the spool still holds in memory when it can: see [`Spool::read_raw_from`]). `Ok(false)`:
    /// nothing to send.
    fn build_batch(&mut self, spool: &mut Spool) -> Result<bool, String> {
        let start = spool.acked_cursor();
        let seq = self.link.state.next_seq;
        let mut plaintext = reuse(std::mem::take(&mut self.plaintext));
        let result = match self.read_into(spool, &mut plaintext, seq, start, MAX_BATCH_RECORDS, MAX_BATCH_PLAINTEXT) {
            Ok((0, _)) => Ok(false),
            Ok((records, next)) => self.seal_batch(spool, seq, start, records, next, &mut plaintext).map(|()| true),
            Err(e) => Err(e),
        };
        self.plaintext = plaintext;
        result
    }

    /// Rebuild `old` (resealing it, or rebuilding a body that was not kept) under `seq` with
    /// EXACTLY the records it carried: the `records` records from its start cursor, which must
    /// end at its end cursor. If the spool no longer holds them all (a damaged segment was
    /// quarantined, the size cap dropped one; both counted as dropped), the seq cannot be sent
    /// again with other content: the batch is rebuilt from what is left under a NEW seq.
    /// `Ok(false)`: nothing of it is left.
    fn rebuild_batch(&mut self, spool: &mut Spool, old: &Inflight, seq: u64) -> Result<bool, String> {
        let start = old.start.unwrap_or(spool.acked_cursor()).max(spool.acked_cursor());
        let mut plaintext = reuse(std::mem::take(&mut self.plaintext));
        let result = self.rebuild_into(spool, old, seq, start, &mut plaintext);
        self.plaintext = plaintext;
        result
    }

    fn rebuild_into(
        &mut self,
        spool: &mut Spool,
        old: &Inflight,
        seq: u64,
        start: Cursor,
        plaintext: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let (records, next) = self.read_into(spool, plaintext, seq, start, old.records as usize, usize::MAX)?;
        if records == 0 {
            log::warn!("none of the records of in-flight batch {} is left in the spool", old.seq);
            return Ok(false);
        }
        if records as u64 == old.records && next == old.end {
            return self.seal_batch(spool, seq, start, records, next, plaintext).map(|()| true);
        }
        self.link.state.next_seq = self.link.state.next_seq.max(seq + 1).max(old.seq + 1);
        let fresh = self.link.state.next_seq;
        log::warn!(
            "in-flight batch {} cannot be rebuilt as sent ({records} of {} records left in the spool, the rest \
             counted as dropped); sending what is left as batch {fresh}",
            old.seq,
            old.records
        );
        // The plaintext names its seq: read again under the fresh one (a rare path).
        plaintext.clear();
        let (records, next) = self.read_into(spool, plaintext, fresh, start, records, usize::MAX)?;
        self.seal_batch(spool, fresh, start, records, next, plaintext).map(|()| true)
    }

    /// Write the plaintext of batch `seq` into `plaintext` (empty): up to `max_records` records
    /// from `start`, at most `max_bytes` of them (see [`Spool::read_raw_joined`]). Returns how
    /// many records it holds and the position after them.
    fn read_into(
        &self,
        spool: &mut Spool,
        plaintext: &mut Vec<u8>,
        seq: u64,
        start: Cursor,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(usize, Cursor), String> {
        let sent_at = Timestamp::now().to_rfc3339();
        batch_head(plaintext, &self.link.machine_id, seq, &sent_at)
            .map_err(|e| format!("encoding batch {seq}: {e}"))?;
        let read = spool.read_raw_joined(start, max_records, max_bytes, plaintext);
        let read = read.map_err(|e| format!("reading the spool: {e}"))?;
        batch_tail(plaintext, &spool.stats().dropped).map_err(|e| format!("encoding batch {seq}: {e}"))?;
        Ok(read)
    }

    /// Seal the batch `plaintext` (`records` records read from `start`, up to `next`) as `seq`
    /// and persist its description as the in-flight batch: one durable state write, which
    /// also carries the ack of the batch before it. The body is sealed into the buffer of the
    /// batch it replaces.
    fn seal_batch(
        &mut self,
        spool: &mut Spool,
        seq: u64,
        start: Cursor,
        records: usize,
        next: Cursor,
        plaintext: &mut Vec<u8>,
    ) -> Result<(), String> {
        let old_body = self.current.as_mut().map(|c| std::mem::take(&mut c.body).into_bytes());
        let mut body = reuse(old_body.unwrap_or_default());
        match &self.link.key {
            Some(key) => envelope::seal_v2_into(key, &self.link.machine_id, seq, plaintext, &mut body)
                .map_err(|e| e.to_string())?,
            None => body.extend_from_slice(plaintext),
        }
        let body = String::from_utf8(body).map_err(|_| format!("batch {seq} body is not UTF-8"))?;
        let inflight =
            Inflight { seq, start: Some(start), end: next, records: records as u64, kid: self.link.kid.clone(), body };
        self.link.state.inflight = Some(inflight.describe());
        self.current = Some(inflight);
        // Not sent before its description is durable (an error here: nothing is sent).
        self.link.save_now(spool)
    }

    /// Acknowledged (or set aside): ack the spool up to the batch's end. The description stays
    /// as it is and, its records now acknowledged, records the last seq used, so `next_seq`
    /// needs no write of its own (a restart takes `max(next_seq, last seq + 1)`). With
    /// `durable` false the ack is made in memory and becomes durable with the next state write
    /// (see the module docs); records set aside (`rejected/`) are acknowledged durably at once.
    fn finish(&mut self, spool: &mut Spool, inflight: &Inflight, delivered: u64, durable: bool) -> Step {
        self.seq_used(inflight.seq);
        let counts = Acked { delivered, superseded: 0 };
        if durable {
            self.link.ack(spool, inflight.end, counts)
        } else {
            // The next round (at most a send_interval away) carries it; a quiet agent writes it
            // on its own a little after that.
            // (An earlier ack was carried by this batch's own write: the deadline starts anew.)
            self.ack_deadline = Some(Instant::now() + self.send_interval + ACK_SLACK);
            self.link.ack_later(spool, inflight.end, counts)
        }
    }

    /// `seq` was used (sent and acknowledged, or set aside): never use it again.
    fn seq_used(&mut self, seq: u64) {
        if self.link.state.next_seq <= seq {
            self.link.state.next_seq = seq.saturating_add(1);
            self.link.touch();
        }
    }

    /// One push round; returns how many batches it delivered (or set aside).
    fn push_round(&mut self, spool: &mut Spool, deadline: Instant) -> u32 {
        if self.link.backing_off() {
            return 0;
        }
        self.next_send = Instant::now() + self.send_interval;
        let mut done = 0;
        // At least one request per round, even when collection overran its slot.
        loop {
            match self.send_batch(spool) {
                Step::Continue if Instant::now() < deadline => done += 1,
                // Cut by the deadline with more to send (a backlog): go on at the next cycle.
                Step::Continue => {
                    self.next_send = Instant::now();
                    return done + 1;
                }
                _ => return done,
            }
        }
    }
}

impl Sender for V2Sender {
    fn accept(&mut self, records: Vec<Record>, _backlog: u64) -> Vec<Record> {
        records
    }

    fn push(&mut self, spool: &mut Spool, deadline: Instant) {
        // A retry that is due, or the coalescing interval: whichever the state asks for.
        let due = match self.link.retry_at {
            Some(at) => Instant::now() >= at,
            None => Instant::now() >= self.next_send,
        };
        let saved = self.link.last_saved();
        let delivered = if due { self.push_round(spool, deadline) } else { 0 };
        if !spool.state_pending() {
            self.ack_deadline = None;
        }
        // A round that drained a backlog (several batches, a write each) ends with its last ack
        // written too: one more write for many, and `status` shows the drain at once.
        let drained = delivered > 1;
        if spool.state_pending() && (drained || self.ack_deadline.is_some_and(|at| Instant::now() >= at)) {
            // No batch carried the ack (no new records): written on its own.
            if self.link.save_now(spool).is_ok() {
                self.ack_deadline = None;
            }
        } else if self.link.last_saved() == saved {
            // At most one state write per turn: bookkeeping waits for a turn that wrote none.
            self.link.save_lazily(spool);
        }
    }

    fn flush(&mut self, spool: &mut Spool, deadline: Instant) {
        self.push_round(spool, deadline);
        let _ = self.link.save_now(spool);
    }

    fn save(&mut self, spool: &mut Spool) {
        let _ = self.link.save_now(spool); // logged inside
    }

    fn next_wakeup(&self) -> Option<Instant> {
        // New records arrive with a collection, which wakes the loop anyway: no extra wake-up
        // for the coalescing interval, only for a retry, or for an ack that no batch carried
        // (a quiet agent; a collection comes first in a steady cycle).
        match (self.link.retry_at, self.ack_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn state(&self) -> &SenderState {
        &self.link.state
    }

    fn kid(&self) -> Option<&str> {
        self.link.kid.as_deref()
    }
}

/// The plaintext of a v2 batch from its records' JSON as the spool stores it: byte for byte
/// `serde_json::to_vec(&BatchBody { .. })` of the same records (field order and form are
/// [`fleet_wire::record::BatchBody`]'s; a test holds the two side by side), without parsing and serializing every
/// record again. The sender writes the same bytes in place: `batch_head`, the records
/// joined by commas ([`Spool::read_raw_joined`]), `batch_tail`.
pub fn batch_plaintext(
    machine_id: &str,
    seq: u64,
    sent_at: &str,
    records: &[Vec<u8>],
    dropped: &Dropped,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 256);
    batch_head(&mut out, machine_id, seq, sent_at)?;
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(record);
    }
    batch_tail(&mut out, dropped)?;
    Ok(out)
}

/// The start of a batch's plaintext, up to the opening `[` of its records.
fn batch_head(out: &mut Vec<u8>, machine_id: &str, seq: u64, sent_at: &str) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"machine_id\":");
    serde_json::to_writer(&mut *out, machine_id)?;
    out.extend_from_slice(b",\"seq\":");
    serde_json::to_writer(&mut *out, &seq)?;
    out.extend_from_slice(b",\"sent_at\":");
    serde_json::to_writer(&mut *out, sent_at)?;
    out.extend_from_slice(b",\"records\":[");
    Ok(())
}

/// The end of a batch's plaintext, from the closing `]` of its records.
fn batch_tail(out: &mut Vec<u8>, dropped: &Dropped) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"],\"dropped\":");
    serde_json::to_writer(&mut *out, dropped)?;
    out.push(b'}');
    Ok(())
}

/// The start of a fresh seq range after a collision: at least `floor` and the clock (in ms,
/// like a new agent's first seq), plus a random offset below 2^40, so two agents that collided
/// (both holding the same state record) move to different ranges.
pub fn fresh_seq_base(floor: u64) -> u64 {
    let offset = (random_unit() * (1u64 << 40) as f64) as u64;
    floor.max(Timestamp::now().0.max(1) as u64).saturating_add(1 + offset)
}

#[cfg(test)]
mod tests {
    use super::{batch_plaintext, fresh_seq_base};
    use fleet_widgets::{Level, SampleKind};
    use fleet_wire::record::{BatchBody, Dropped, Record};
    use serde_json::json;

    #[test]
    fn a_batch_from_stored_json_is_byte_for_byte_the_serialized_batch_body() {
        let records = vec![
            Record {
                ts: "2026-11-22T13:00:00.123Z".into(),
                widget: "cpu".into(),
                kind: SampleKind::Metric,
                level: Level::Info,
                message: String::new(),
                data: json!({"percent": 0.1_f64 + 0.2, "per_core": [0.1, 1e-7, 3.0], "z": null, "a": "\"q\"\n"}),
            },
            Record {
                ts: "2026-11-22T13:00:00.123Z".into(),
                widget: "wifi".into(),
                kind: SampleKind::Log,
                level: Level::Warning,
                message: "ssid \u{e9}t\u{e9} \u{1f4f6}".into(),
                data: json!({"rssi": -71, "big": u64::MAX, "neg": i64::MIN}),
            },
        ];
        let dropped = Dropped {
            count: 3,
            oldest: Some("2026-11-21T00:00:00.000Z".into()),
            newest: Some("2026-11-22T00:00:00.000Z".into()),
        };
        for (records, dropped) in [(records.clone(), dropped), (Vec::new(), Dropped::default())] {
            let raw: Vec<Vec<u8>> = records.iter().map(|r| serde_json::to_vec(r).expect("record")).collect();
            let body = BatchBody {
                machine_id: "m-\"1\"".into(),
                seq: 1_764_000_000_123,
                sent_at: "2026-11-22T13:00:01.000Z".into(),
                records,
                dropped: dropped.clone(),
            };
            let expected = serde_json::to_vec(&body).expect("body");
            let built = batch_plaintext(&body.machine_id, body.seq, &body.sent_at, &raw, &dropped).expect("built");
            assert_eq!(String::from_utf8_lossy(&built), String::from_utf8_lossy(&expected));
        }
    }

    #[test]
    fn fresh_seq_ranges_move_forward_and_apart() {
        let a = fresh_seq_base(10);
        let b = fresh_seq_base(10);
        assert!(a > 10 && b > 10);
        assert_ne!(a, b, "two agents that collided pick different ranges");
        assert!(fresh_seq_base(u64::MAX - 1) == u64::MAX);
    }
}

#[cfg(test)]
#[path = "v2_crash_tests.rs"]
mod crash_tests;
