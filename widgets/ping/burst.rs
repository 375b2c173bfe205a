//! The replies of one burst of echo requests, matched and timed. Pure: no socket, no clock.
//!
//! A run sends its `count` requests back to back, then reads the replies: on a fast path they
//! are queued before the last request has left (no wake-up at all); else the thread wakes when
//! the first arrives, sleeps once for about one more round trip (the fastest so far) while the
//! rest of the burst comes in, and reads them together: two wake-ups for the burst, whatever
//! `count`, plus one at the timeout when a reply is lost. So the time a reply is *read*
//! says little about when it *arrived*; the round trip is taken from the kernel's receive
//! timestamp (`SO_TIMESTAMPNS` on Linux, `SO_TIMESTAMP` on macOS: wall-clock time of arrival)
//! minus the wall-clock time just before the request was sent.
//!
//! Linux stamps arrivals only while some socket of the host wants timestamps, and switches
//! that on a moment after the first one asks (deferred work): with no other timestamping socket
//! open (chronyd, ntpd do keep one), replies that arrive within that moment, in practice only
//! on loopback where they are queued while the burst is still being sent, are stamped when
//! they are read, so their round trip is the send-to-read time: microseconds late, never early.
//!
//! The wall clock can be stepped (NTP, a user) between the two, so a kernel round trip is only
//! believed when it lies between 0 and the monotonic time from the send to the read (plus
//! [`CLOCK_SLACK`]); otherwise, and when the socket gives no timestamp, the monotonic send-to-
//! read time is used, as before this module existed. A reply counts once per sequence number
//! (duplicates are ignored), only with this run's payload token, and only within `timeout` of
//! its request; every request without such a reply is a loss.

use std::time::{Duration, Instant, SystemTime};

use super::icmp::EchoReply;

/// Tolerance between the wall and monotonic clocks when checking a kernel timestamp (their
/// rates differ by at most NTP's slew, 500 ppm: 1 ms covers a 2 s wait).
pub const CLOCK_SLACK: Duration = Duration::from_millis(1);

/// When a request left, on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentAt {
    /// Wall-clock time, comparable with the kernel's receive timestamps.
    pub wall: SystemTime,
    /// Monotonic time, the bound a round trip cannot exceed.
    pub mono: Instant,
}

/// When a reply arrived, as far as the receiver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The kernel's receive timestamp (wall clock), when the socket delivers one.
    pub kernel: Option<SystemTime>,
    /// Monotonic time the reply was read.
    pub read: Instant,
}

/// How a reply was taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// The first answer to a request we sent, within the timeout.
    Answer,
    /// A second answer to the same request (not counted).
    Duplicate,
    /// Not ours (other payload, sequence number out of range or never sent), or too late.
    Ignored,
}

/// One run's requests and their answers.
#[derive(Debug, Clone)]
pub struct Burst {
    payload: Vec<u8>,
    timeout: Duration,
    sent: Vec<Option<SentAt>>,
    rtts: Vec<Option<f64>>,
}

impl Burst {
    /// A burst of `count` requests carrying `payload`, answers accepted within `timeout`.
    pub fn new(count: usize, payload: Vec<u8>, timeout: Duration) -> Self {
        Burst { payload, timeout, sent: vec![None; count], rtts: vec![None; count] }
    }

    /// Request `seq` left at `at` (a request whose send failed is never marked: a loss).
    pub fn sent(&mut self, seq: usize, at: SentAt) {
        if let Some(slot) = self.sent.get_mut(seq) {
            *slot = Some(at);
        }
    }

    /// Take `reply` into account.
    pub fn reply(&mut self, reply: &EchoReply<'_>, arrival: Arrival) -> Matched {
        let seq = usize::from(reply.seq);
        if reply.payload != self.payload.as_slice() {
            return Matched::Ignored;
        }
        let Some(Some(sent)) = self.sent.get(seq).copied() else { return Matched::Ignored };
        if self.rtts[seq].is_some() {
            return Matched::Duplicate;
        }
        let rtt = round_trip(sent, arrival);
        if rtt > self.timeout {
            return Matched::Ignored;
        }
        self.rtts[seq] = Some(rtt.as_secs_f64() * 1000.0);
        Matched::Answer
    }

    /// True when every request that was sent has its answer (nothing left to wait for).
    pub fn complete(&self) -> bool {
        self.sent.iter().zip(&self.rtts).all(|(sent, rtt)| sent.is_none() || rtt.is_some())
    }

    /// The shortest round trip answered so far.
    pub fn fastest(&self) -> Option<Duration> {
        self.rtts.iter().flatten().copied().reduce(f64::min).map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }

    /// One entry per request, in sequence order: the round trip in ms, `None` when lost.
    pub fn into_rtts(self) -> Vec<Option<f64>> {
        self.rtts
    }
}

/// The round trip of a request sent at `sent` whose reply arrived at `arrival`: the kernel's
/// timestamp when it is consistent with the monotonic clock, else the monotonic time to the read.
pub fn round_trip(sent: SentAt, arrival: Arrival) -> Duration {
    let upper = arrival.read.saturating_duration_since(sent.mono);
    arrival
        .kernel
        .and_then(|at| at.duration_since(sent.wall).ok())
        .filter(|rtt| *rtt <= upper + CLOCK_SLACK)
        .unwrap_or(upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"run-token-0123456789";

    fn reply(seq: u16, payload: &[u8]) -> EchoReply<'_> {
        EchoReply { id: 7, seq, payload }
    }

    /// A burst of `count` sent at a common origin, request `i` sent `i` × 10 µs later.
    fn burst(count: usize) -> (Burst, SystemTime, Instant) {
        let (wall, mono) = (SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000), Instant::now());
        let mut burst = Burst::new(count, TOKEN.to_vec(), Duration::from_secs(2));
        for i in 0..count {
            let offset = Duration::from_micros(10 * i as u64);
            burst.sent(i, SentAt { wall: wall + offset, mono: mono + offset });
        }
        (burst, wall, mono)
    }

    #[test]
    fn round_trips_come_from_kernel_timestamps_even_when_read_much_later() {
        let (mut b, wall, mono) = burst(3);
        // All three arrive within 1 ms of their request but are read together 500 ms later.
        let read = mono + Duration::from_millis(500);
        for (seq, arrived_us) in [(0u16, 800u64), (1, 850), (2, 1_020)] {
            let kernel = Some(wall + Duration::from_micros(arrived_us));
            assert_eq!(b.reply(&reply(seq, TOKEN), Arrival { kernel, read }), Matched::Answer);
        }
        assert!(b.complete());
        let rtts: Vec<f64> = b.into_rtts().into_iter().map(|r| (r.expect("answered") * 1000.0).round()).collect();
        assert_eq!(rtts, [800.0, 840.0, 1_000.0], "µs: arrival minus each request's own send time");
    }

    #[test]
    fn missing_replies_are_losses_and_duplicates_foreign_and_late_ones_do_not_count() {
        let (mut b, wall, mono) = burst(5);
        let at =
            |ms: u64| Arrival { kernel: Some(wall + Duration::from_millis(ms)), read: mono + Duration::from_secs(3) };
        assert_eq!(b.reply(&reply(1, TOKEN), at(5)), Matched::Answer);
        assert!(!b.complete(), "four requests still unanswered");
        assert_eq!(b.reply(&reply(1, TOKEN), at(6)), Matched::Duplicate);
        assert_eq!(b.reply(&reply(3, b"another run's token!"), at(5)), Matched::Ignored);
        assert_eq!(b.reply(&reply(9, TOKEN), at(5)), Matched::Ignored, "sequence number never sent");
        assert_eq!(b.reply(&reply(4, TOKEN), at(2_500)), Matched::Ignored, "after the 2 s timeout");
        let rtts = b.into_rtts();
        assert_eq!(rtts.iter().filter(|r| r.is_some()).count(), 1);
        let m = super::super::Measurement::from_rtts(super::super::Method::IcmpRaw, &rtts);
        assert_eq!((m.sent, m.received, m.packet_loss), (5, 1, 80.0));
    }

    #[test]
    fn a_request_that_failed_to_send_is_lost_and_not_waited_for() {
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let mut b = Burst::new(3, TOKEN.to_vec(), Duration::from_secs(2));
        b.sent(0, SentAt { wall, mono });
        b.sent(2, SentAt { wall, mono });
        let arrival = Arrival { kernel: Some(wall + Duration::from_millis(1)), read: mono + Duration::from_millis(2) };
        assert_eq!(b.reply(&reply(1, TOKEN), arrival), Matched::Ignored, "seq 1 never left");
        b.reply(&reply(0, TOKEN), arrival);
        b.reply(&reply(2, TOKEN), arrival);
        assert!(b.complete(), "nothing left to wait for");
        assert_eq!(b.into_rtts().iter().map(Option::is_some).collect::<Vec<_>>(), [true, false, true]);
    }

    #[test]
    fn a_stepped_wall_clock_or_no_timestamp_falls_back_to_the_monotonic_time() {
        let (wall, mono) = (SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000), Instant::now());
        let sent = SentAt { wall, mono };
        let read = mono + Duration::from_millis(30);
        let rtt = |kernel| round_trip(sent, Arrival { kernel, read });
        assert_eq!(rtt(Some(wall + Duration::from_millis(12))), Duration::from_millis(12), "consistent: kernel");
        assert_eq!(rtt(None), Duration::from_millis(30), "no timestamp: send to read");
        assert_eq!(rtt(Some(wall - Duration::from_secs(3600))), Duration::from_millis(30), "clock stepped back");
        assert_eq!(rtt(Some(wall + Duration::from_secs(60))), Duration::from_millis(30), "clock stepped forward");
        assert_eq!(rtt(Some(wall + Duration::from_micros(30_500))), Duration::from_micros(30_500), "within the slack");
    }
}
