//! Live probes: ICMP echo over DGRAM ("ping") or RAW sockets, and TCP connect time.
//!
//! Every socket operation has a timeout. An ICMP probe sends its requests in one burst and
//! lasts at most `timeout` after it (see [`super::burst`] for why and how it is timed); a TCP
//! probe connects `count` times `interval` apart and lasts at most `count × interval +
//! timeout`. Each probe returns one entry per request sent: the round trip in ms, or `None`
//! when no answer came in time.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::{TimeSpec, TimeVal};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::burst::{Arrival, Burst, SentAt};
use super::icmp::{self, Family};

/// How often and how long to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Requests per target.
    pub count: u16,
    /// Time between the TCP fallback's connects (ICMP requests leave in one burst).
    pub interval: Duration,
    /// How long to wait for an answer to each request.
    pub timeout: Duration,
}

impl Timing {
    /// Upper bound of one probe's duration, whatever the method.
    pub fn bound(&self) -> Duration {
        self.interval * u32::from(self.count) + self.timeout
    }
}

/// Which kind of ICMP socket to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpSocket {
    /// Unprivileged `SOCK_DGRAM` ping socket.
    Dgram,
    /// `SOCK_RAW`, needs root or `CAP_NET_RAW`.
    Raw,
}

/// The ICMP socket could not be opened (permission, unsupported): try the next method.
#[derive(Debug)]
pub struct SocketUnavailable {
    /// Which socket was tried.
    pub kind: IcmpSocket,
    /// The OS error.
    pub error: io::Error,
}

impl fmt::Display for SocketUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            IcmpSocket::Dgram => "unprivileged ICMP",
            IcmpSocket::Raw => "raw ICMP",
        };
        write!(f, "opening {kind} socket: {}", self.error)
    }
}

/// Payload: 16 random bytes (identifies this run, since Linux rewrites the ICMP id) then a
/// fixed pattern up to the classic 56 bytes.
fn payload() -> Vec<u8> {
    let mut token = [0u8; 16];
    if getrandom::fill(&mut token).is_err() {
        // Extremely unlikely; fall back to the clock so concurrent runs still differ.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        token[..16].copy_from_slice(&nanos.as_nanos().to_be_bytes());
    }
    let mut payload = token.to_vec();
    payload.extend((0u8..40).map(|i| 0x20 + i));
    payload
}

/// Send `timing.count` echo requests to `addr` in one burst (back to back) and collect the
/// replies that arrive within `timing.timeout`, matched by sequence number AND payload and
/// timed by the kernel's receive timestamps ([`super::burst`]). The thread sleeps only while
/// nothing is queued: replies already there are read without waiting. `Err` only when the
/// socket cannot be opened; send errors count as losses.
pub fn icmp_echo(addr: IpAddr, kind: IcmpSocket, timing: Timing) -> Result<Vec<Option<f64>>, SocketUnavailable> {
    let (domain, protocol, family) = match addr {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, Family::V4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, Family::V6),
    };
    let ty = match kind {
        IcmpSocket::Dgram => Type::DGRAM,
        IcmpSocket::Raw => Type::RAW,
    };
    let socket = Socket::new(domain, ty, Some(protocol)).map_err(|error| SocketUnavailable { kind, error })?;
    // Without timestamps (an old kernel) the round trips are send-to-read times: still bounded,
    // only late by however long the reads of earlier replies took.
    let _ = enable_receive_timestamps(&socket);
    let target = SockAddr::from(SocketAddr::new(addr, 0));
    let payload = payload();
    let mut id_bytes = [0u8; 2];
    let _ = getrandom::fill(&mut id_bytes);
    let id = u16::from_be_bytes(id_bytes);
    let count = usize::from(timing.count);
    let mut burst = Burst::new(count, payload.clone(), timing.timeout);
    for seq in 0..count {
        let packet = icmp::echo_request(family, id, seq as u16, &payload);
        let at = SentAt { wall: SystemTime::now(), mono: Instant::now() };
        if socket.send_to(&packet, &target).is_ok() {
            burst.sent(seq, at);
        }
    }
    let deadline = Instant::now() + timing.timeout;
    let mut buf = [0u8; 2048];
    // Drain what is queued without blocking; block (one wake-up) only when the queue is empty.
    let mut wait = false;
    let mut gathered = false;
    while !burst.complete() {
        if wait {
            let now = Instant::now();
            if now >= deadline || socket.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).is_err()
            {
                break;
            }
        }
        let (len, kernel) = match receive_timestamped(&socket, &mut buf, !wait) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if let Some(pause) = gather_pause(&burst, wait, gathered, deadline) {
                    // The first replies are in and the rest of the burst follows within about
                    // one more round trip: one timed sleep for all of them, not a wake-up per
                    // reply (the kernel's timestamps keep their round trips exact).
                    gathered = true;
                    std::thread::sleep(pause);
                    continue;
                }
                // Empty queue: wait for the next reply (or, after a wait, the deadline).
                wait = true;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        wait = false;
        let read = Instant::now();
        if let Some(reply) = icmp::parse_echo_reply(family, &buf[..len]) {
            burst.reply(&reply, Arrival { kernel, read });
        }
    }
    Ok(burst.into_rtts())
}

/// How long to sleep before reading the rest of a burst, once: when the queue has just been
/// drained (not after a timed-out wait), some reply is in and no pause was taken yet. The
/// pause is the fastest round trip so far, cut at the deadline.
pub(super) fn gather_pause(burst: &Burst, waited: bool, gathered: bool, deadline: Instant) -> Option<Duration> {
    if waited || gathered {
        return None;
    }
    let pause = burst.fastest()?.min(deadline.saturating_duration_since(Instant::now()));
    (!pause.is_zero()).then_some(pause)
}

/// Ask the kernel to stamp every received datagram with its arrival time (wall clock):
/// `SO_TIMESTAMPNS` on Linux, `SO_TIMESTAMP` elsewhere. False when the socket refuses.
pub fn enable_receive_timestamps(socket: &Socket) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let option = sockopt::ReceiveTimestampns;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let option = sockopt::ReceiveTimestamp;
    setsockopt(socket, option, &true).is_ok()
}

/// Read one datagram into `buf` with its kernel receive timestamp (when
/// [`enable_receive_timestamps`] succeeded), without blocking when `dont_wait`, else within the
/// socket's read timeout. A datagram longer than `buf` is cut.
pub fn receive_timestamped(
    socket: &Socket,
    buf: &mut [u8],
    dont_wait: bool,
) -> io::Result<(usize, Option<SystemTime>)> {
    let mut control = nix::cmsg_space!(TimeSpec, TimeVal);
    let flags = if dont_wait { MsgFlags::MSG_DONTWAIT } else { MsgFlags::empty() };
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut control), flags).map_err(io::Error::from)?;
    let mut stamp = None;
    if let Ok(messages) = message.cmsgs() {
        for cmsg in messages {
            stamp = match cmsg {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                ControlMessageOwned::ScmTimestampns(ts) => wall_time(ts.tv_sec(), ts.tv_nsec()),
                ControlMessageOwned::ScmTimestamp(tv) => wall_time(tv.tv_sec(), micros_as_nanos(tv.tv_usec())),
                _ => stamp,
            };
        }
    }
    Ok((message.bytes, stamp))
}

/// A `timeval`'s microseconds (`i64` on Linux, `i32` on macOS) in nanoseconds.
fn micros_as_nanos(micros: impl Into<i64>) -> i64 {
    micros.into().saturating_mul(1000)
}

/// Seconds and nanoseconds since the epoch as a time (`None` before 1970 or out of range).
fn wall_time(secs: i64, nanos: i64) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok()?;
    let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Time `timing.count` TCP connects to `addr`. A refused connection is an answer too (the RST
/// took one round trip); timeouts and other errors are losses.
pub fn tcp_connect(addr: SocketAddr, timing: Timing) -> Vec<Option<f64>> {
    let mut rtts = Vec::with_capacity(usize::from(timing.count));
    for i in 0..timing.count {
        let start = Instant::now();
        let rtt = match TcpStream::connect_timeout(&addr, timing.timeout) {
            Ok(_) => Some(start.elapsed()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(start.elapsed()),
            Err(_) => None,
        };
        rtts.push(rtt.map(|d| d.as_secs_f64() * 1000.0));
        if i + 1 < timing.count {
            sleep_until(start + timing.interval);
        }
    }
    rtts
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}
