//! Live probes: ICMP echo over DGRAM ("ping") or RAW sockets, and TCP connect time.
//!
//! Every socket operation has a timeout and a probe never runs longer than
//! `count × interval + timeout`. Each probe returns one entry per request sent: the round trip
//! in ms, or `None` when no answer came in time.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::icmp::{self, Family};

/// How often and how long to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Requests per target.
    pub count: u16,
    /// Time between requests.
    pub interval: Duration,
    /// How long to wait for an answer to each request.
    pub timeout: Duration,
}

impl Timing {
    /// Upper bound of one probe's duration.
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

/// Send `timing.count` echo requests to `addr` and collect replies matched by sequence number
/// AND payload. `Err` only when the socket cannot be opened; send errors count as losses.
pub fn icmp_echo(addr: IpAddr, kind: IcmpSocket, timing: Timing) -> Result<Vec<Option<f64>>, SocketUnavailable> {
    let (domain, protocol, family) = match addr {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, Family::V4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, Family::V6),
    };
    let ty = match kind {
        IcmpSocket::Dgram => Type::DGRAM,
        IcmpSocket::Raw => Type::RAW,
    };
    let mut socket = Socket::new(domain, ty, Some(protocol)).map_err(|error| SocketUnavailable { kind, error })?;
    let target = SockAddr::from(SocketAddr::new(addr, 0));
    let payload = payload();
    let mut id_bytes = [0u8; 2];
    let _ = getrandom::fill(&mut id_bytes);
    let id = u16::from_be_bytes(id_bytes);
    let count = usize::from(timing.count);
    let mut sent_at: Vec<Option<Instant>> = vec![None; count];
    let mut rtts: Vec<Option<f64>> = vec![None; count];
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let packet = icmp::echo_request(family, id, seq as u16, &payload);
        let start = Instant::now();
        if socket.send_to(&packet, &target).is_ok() {
            sent_at[seq] = Some(start);
        }
        let last = seq + 1 == count;
        let until = if last { start + timing.timeout } else { start + timing.interval };
        loop {
            let now = Instant::now();
            let all_answered = sent_at.iter().zip(&rtts).all(|(sent, rtt)| sent.is_none() || rtt.is_some());
            if now >= until || (last && all_answered) {
                break;
            }
            if socket.set_read_timeout(Some((until - now).max(Duration::from_millis(1)))).is_err() {
                break;
            }
            let len = match socket.read(&mut buf) {
                Ok(len) => len,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let received = Instant::now();
            let Some(reply) = icmp::parse_echo_reply(family, &buf[..len]) else { continue };
            let index = usize::from(reply.seq);
            if reply.payload != payload.as_slice() || index >= count {
                continue;
            }
            if let (Some(sent), None) = (sent_at[index], rtts[index]) {
                let rtt = received.duration_since(sent);
                if rtt <= timing.timeout {
                    rtts[index] = Some(rtt.as_secs_f64() * 1000.0);
                }
            }
        }
        if !last {
            sleep_until(start + timing.interval);
        }
    }
    Ok(rtts)
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
