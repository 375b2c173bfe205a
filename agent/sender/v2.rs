//! The v2 protocol (`POST /api/v2/batches`, `docs/v2-protocol.md`): every spool record, in
//! sealed batches of at most 500 records and 1 MiB, each with a persisted, strictly increasing
//! `seq`. The batch is written to `inflight.json` before it is sent, so after a crash it is
//! resent with the same seq and content. A seq always carries exactly the records it was first
//! built with (its start cursor and record count are persisted), also when it is resealed under
//! a new key or rebuilt because no key is configured. After the ack, `inflight.json` stays as
//! the record of the last seq used (the spool's cursor, past its records, says it is done), so
//! a send costs one durable sender write (`inflight.json`) besides the spool's cursor. This
//! module owns that seq and in-flight state; it shares only the [`Link`] with other protocols.
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
use crate::spool::{Acked, Cursor, ReadBatch, Spool};
use fleet_wire::envelope;
use fleet_wire::record::{Dropped, Record};

/// Pushes spool records as sealed, sequenced v2 batches.
pub struct V2Sender {
    link: Link,
    send_interval: Duration,
    next_send: Instant,
    /// `409` answers since the last other answer.
    collisions_in_a_row: u32,
    /// `inflight.json` was written this turn (the turn's one durable sender write).
    wrote_inflight: bool,
    /// `inflight.json` holds a batch this process saw acknowledged (not read back from disk).
    finished: bool,
}

impl V2Sender {
    /// A v2 sender over `link`, starting a push round at most every `send_interval`.
    pub fn new(link: Link, send_interval: Duration) -> Self {
        V2Sender {
            link,
            send_interval,
            next_send: Instant::now(),
            collisions_in_a_row: 0,
            wrote_inflight: false,
            finished: false,
        }
    }

    fn send_batch(&mut self, spool: &mut Spool) -> Step {
        // The file on disk is the batch this process just finished: no need to read it back.
        let on_disk = if self.finished { Ok(None) } else { Inflight::load(&self.link.spool_dir) };
        let inflight = match on_disk {
            // The last batch, acknowledged (its file stays as the record of the last seq used).
            Ok(Some(done)) if done.end <= spool.acked_cursor() => {
                self.seq_used(done.seq);
                match self.build_batch(spool) {
                    Ok(Some(inflight)) => inflight,
                    Ok(None) => return Step::Idle,
                    Err(e) => return self.link.local_failure(&e),
                }
            }
            Ok(Some(inflight)) if inflight.kid == self.link.kid && !inflight.body.is_empty() => inflight,
            Ok(Some(stale)) => {
                if stale.kid != self.link.kid {
                    log::info!(
                        "in-flight batch {} was sealed with key id {}; resealing it with key id {}",
                        stale.seq,
                        stale.kid.as_deref().unwrap_or("(none)"),
                        self.link.kid.as_deref().unwrap_or("(none)")
                    );
                }
                match self.rebuild_batch(spool, &stale, stale.seq) {
                    Ok(Some(inflight)) => inflight,
                    Ok(None) => return self.finish(spool, &stale, 0),
                    Err(e) => return self.link.local_failure(&e),
                }
            }
            Ok(None) => match self.build_batch(spool) {
                Ok(Some(inflight)) => inflight,
                Ok(None) => return Step::Idle,
                Err(e) => return self.link.local_failure(&e),
            },
            Err(e) => return self.link.local_failure(&e),
        };
        let verdict = self.link.post("/api/v2/batches", inflight.body.as_bytes());
        if !matches!(verdict, Some(Verdict::Conflict { .. })) {
            self.collisions_in_a_row = 0;
        }
        match verdict {
            Some(Verdict::Ack) => self.finish(spool, &inflight, inflight.records),
            Some(Verdict::Conflict { reason }) => self.seq_collision(spool, &inflight, &reason),
            Some(Verdict::Reject { reason }) => {
                let start = inflight.start.unwrap_or(spool.acked_cursor());
                let records = match spool.read_from(start, inflight.records as usize, usize::MAX) {
                    Ok(batch) => batch.records,
                    Err(e) => return self.link.local_failure(&format!("reading the spool: {e}")),
                };
                let what = format!("batch-{}", inflight.seq);
                if let Step::Wait = self.link.set_aside(spool, start, &records, &what, &reason) {
                    return Step::Wait;
                }
                self.finish(spool, &inflight, 0)
            }
            _ => Step::Wait,
        }
    }

    /// `409`: the receiver stored other records under this `(machine_id, seq)`: another agent
    /// sends under our machine id with the same seq numbers (two machines with one id, a
    /// cloned disk image with its `sender.json`, a restored backup). The records are ours and
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
        if let Err(e) = self.link.save_now() {
            return self.link.local_failure(&e);
        }
        let seq = self.link.state.next_seq;
        self.collisions_in_a_row += 1;
        match self.rebuild_batch(spool, inflight, seq) {
            // A server that answers 409 to every fresh seq is not a collision: back off.
            Ok(Some(_)) if self.collisions_in_a_row >= 3 => {
                self.link.retry_at = Some(Instant::now() + self.link.backoff.next_delay(random_unit(), None));
                Step::Wait
            }
            Ok(Some(_)) => Step::Continue,
            Ok(None) => self.finish(spool, inflight, 0),
            Err(e) => self.link.local_failure(&e),
        }
    }

    /// Build (and persist) the next batch from the spool under a new seq (from the records
    /// the spool still holds in memory when it can: see [`Spool::read_raw_from`]).
    fn build_batch(&mut self, spool: &mut Spool) -> Result<Option<Inflight>, String> {
        let start = spool.acked_cursor();
        let batch = spool
            .read_raw_from(start, MAX_BATCH_RECORDS, MAX_BATCH_PLAINTEXT)
            .map_err(|e| format!("reading the spool: {e}"))?;
        if batch.records.is_empty() {
            return Ok(None);
        }
        let seq = self.link.state.next_seq;
        self.seal_batch(spool, seq, start, batch).map(Some)
    }

    /// Rebuild `old` (resealing it, or rebuilding a body that was not kept) under `seq` with
    /// EXACTLY the records it carried: the `records` records from its start cursor, which must
    /// end at its end cursor. If the spool no longer holds them all (a damaged segment was
    /// quarantined, the size cap dropped one; both counted as dropped), the seq cannot be sent
    /// again with other content: the batch is rebuilt from what is left under a NEW seq.
    /// `Ok(None)`: nothing of it is left.
    fn rebuild_batch(&mut self, spool: &mut Spool, old: &Inflight, seq: u64) -> Result<Option<Inflight>, String> {
        let start = old.start.unwrap_or(spool.acked_cursor()).max(spool.acked_cursor());
        let batch = spool
            .read_raw_from(start, old.records as usize, usize::MAX)
            .map_err(|e| format!("reading the spool: {e}"))?;
        if batch.records.is_empty() {
            log::warn!("none of the records of in-flight batch {} is left in the spool", old.seq);
            return Ok(None);
        }
        if batch.records.len() as u64 == old.records && batch.next == old.end {
            return self.seal_batch(spool, seq, start, batch).map(Some);
        }
        self.link.state.next_seq = self.link.state.next_seq.max(seq + 1).max(old.seq + 1);
        let fresh = self.link.state.next_seq;
        log::warn!(
            "in-flight batch {} cannot be rebuilt as sent ({} of {} records left in the spool, the rest counted \
             as dropped); sending what is left as batch {fresh}",
            old.seq,
            batch.records.len(),
            old.records
        );
        self.seal_batch(spool, fresh, start, batch).map(Some)
    }

    /// Seal `batch` (records read from `start`) as `seq` and persist it as the in-flight batch.
    fn seal_batch(
        &mut self,
        spool: &Spool,
        seq: u64,
        start: Cursor,
        batch: ReadBatch<Vec<u8>>,
    ) -> Result<Inflight, String> {
        let records = batch.records.len() as u64;
        let sent_at = Timestamp::now().to_rfc3339();
        let plaintext = batch_plaintext(&self.link.machine_id, seq, &sent_at, &batch.records, &spool.stats().dropped)
            .map_err(|e| format!("encoding batch {seq}: {e}"))?;
        let sealed = match &self.link.key {
            Some(key) => envelope::seal_v2(key, &self.link.machine_id, seq, &plaintext).map_err(|e| e.to_string())?,
            None => plaintext,
        };
        let body = String::from_utf8(sealed).map_err(|_| format!("batch {seq} body is not UTF-8"))?;
        let inflight = Inflight { seq, start: Some(start), end: batch.next, records, kid: self.link.kid.clone(), body };
        inflight.save(&self.link.spool_dir)?;
        self.wrote_inflight = true;
        self.finished = false;
        Ok(inflight)
    }

    /// Acknowledged (or set aside): ack the spool up to the batch's end. That one durable
    /// write (the spool's own cursor) is the commit point: `inflight.json` stays as it is and,
    /// its records now acknowledged, records the last seq used, so `next_seq` needs no durable
    /// write of its own (`sender.json` may lag; the next batch, or a restart, takes
    /// `max(next_seq, last seq + 1)`). A crash before the ack only causes a resend the receiver
    /// recognises.
    fn finish(&mut self, spool: &mut Spool, inflight: &Inflight, delivered: u64) -> Step {
        self.seq_used(inflight.seq);
        let step = self.link.ack(spool, inflight.end, Acked { delivered, superseded: 0 });
        self.finished = !matches!(step, Step::Wait);
        step
    }

    /// `seq` was used (sent and acknowledged, or set aside): never use it again.
    fn seq_used(&mut self, seq: u64) {
        if self.link.state.next_seq <= seq {
            self.link.state.next_seq = seq.saturating_add(1);
            self.link.touch();
        }
    }

    fn push_round(&mut self, spool: &mut Spool, deadline: Instant) {
        if self.link.backing_off() {
            return;
        }
        self.next_send = Instant::now() + self.send_interval;
        // At least one request per round, even when collection overran its slot.
        loop {
            match self.send_batch(spool) {
                Step::Continue if Instant::now() < deadline => continue,
                // Cut by the deadline with more to send (a backlog): go on at the next cycle.
                Step::Continue => {
                    self.next_send = Instant::now();
                    break;
                }
                _ => break,
            }
        }
    }
}

impl Sender for V2Sender {
    fn accept(&mut self, records: Vec<Record>) -> Vec<Record> {
        records
    }

    fn push(&mut self, spool: &mut Spool, deadline: Instant) {
        // A retry that is due, or the coalescing interval: whichever the state asks for.
        let due = match self.link.retry_at {
            Some(at) => Instant::now() >= at,
            None => Instant::now() >= self.next_send,
        };
        if due {
            self.push_round(spool, deadline);
        }
        // At most one durable sender write per turn: bookkeeping waits for a turn without a
        // new in-flight batch.
        if !std::mem::take(&mut self.wrote_inflight) {
            self.link.save_lazily();
        }
    }

    fn flush(&mut self, spool: &mut Spool, deadline: Instant) {
        self.push_round(spool, deadline);
        self.wrote_inflight = false;
        let _ = self.link.save_now();
    }

    fn next_wakeup(&self) -> Option<Instant> {
        // New records arrive with a collection, which wakes the loop anyway: no extra wake-up
        // for the coalescing interval, only for a retry.
        self.link.retry_at
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
/// record again.
pub fn batch_plaintext(
    machine_id: &str,
    seq: u64,
    sent_at: &str,
    records: &[Vec<u8>],
    dropped: &Dropped,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 256);
    out.extend_from_slice(b"{\"machine_id\":");
    serde_json::to_writer(&mut out, machine_id)?;
    out.extend_from_slice(b",\"seq\":");
    serde_json::to_writer(&mut out, &seq)?;
    out.extend_from_slice(b",\"sent_at\":");
    serde_json::to_writer(&mut out, sent_at)?;
    out.extend_from_slice(b",\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(record);
    }
    out.extend_from_slice(b"],\"dropped\":");
    serde_json::to_writer(&mut out, dropped)?;
    out.push(b'}');
    Ok(out)
}

/// The start of a fresh seq range after a collision: at least `floor` and the clock (in ms,
/// like a new agent's first seq), plus a random offset below 2^40, so two agents that collided
/// (both holding the same `sender.json`) move to different ranges.
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
