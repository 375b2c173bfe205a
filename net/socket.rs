//! Sockets under a deadline: every read and write of a request, TLS records included, ends by
//! the request's deadline, however slowly the server sends.
//!
//! The socket's `SO_RCVTIMEO` / `SO_SNDTIMEO` bound one blocking call. Before each call the
//! timeout in force is compared with the time left; only when it is longer is it set again, to
//! half the time left (so a request usually sets each timeout once, and a reused connection
//! whose timeout is already short enough sets none). A call that times out before the deadline
//! is simply made again. A server that drips a byte at a time therefore cannot hold a request
//! past its deadline: each call is bounded, and the deadline is checked before every one.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

/// The shortest socket timeout set (a zero timeout means "none" to the kernel).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// A TCP socket whose reads and writes stop at `deadline`.
#[derive(Debug)]
pub struct TimedSocket {
    tcp: TcpStream,
    deadline: Instant,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// The error of an operation past its deadline.
pub fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the request's deadline passed")
}

impl TimedSocket {
    /// Wrap a connected socket.
    pub fn new(tcp: TcpStream, deadline: Instant) -> Self {
        TimedSocket { tcp, deadline, read_timeout: None, write_timeout: None }
    }

    /// Start a new request's deadline.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// The socket (for `poll`).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The time left, or a timeout error.
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        Ok(left)
    }
}

/// The timeout to set before a call with `left` to go, if the one in force (`current`) is too long.
fn shorter(current: Option<Duration>, left: Duration) -> Option<Duration> {
    match current {
        Some(t) if t <= left => None,
        _ => Some((left / 2).max(MIN_TIMEOUT).min(left.max(MIN_TIMEOUT))),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl Read for TimedSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.left()?;
            if let Some(timeout) = shorter(self.read_timeout, left) {
                self.tcp.set_read_timeout(Some(timeout))?;
                self.read_timeout = Some(timeout);
            }
            match self.tcp.read(buf) {
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for TimedSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let left = self.left()?;
            if let Some(timeout) = shorter(self.write_timeout, left) {
                self.tcp.set_write_timeout(Some(timeout))?;
                self.write_timeout = Some(timeout);
            }
            match self.tcp.write(buf) {
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's byte stream: plain TCP, or TLS (rustls) over TCP.
pub enum Stream {
    /// `http://`.
    Plain(TimedSocket),
    /// `https://`.
    Tls(Box<StreamOwned<ClientConnection, TimedSocket>>),
}

impl Stream {
    /// The timed socket underneath.
    pub fn socket(&mut self) -> &mut TimedSocket {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(stream) => &mut stream.sock,
        }
    }

    /// True when the server has sent something or closed: an idle connection must be quiet.
    /// One `poll` with a zero timeout (TLS: a pending close_notify shows as readable too).
    pub fn is_stale(&mut self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let tcp = self.socket().tcp();
        let mut fds = [PollFd::new(tcp, PollFlags::IN)];
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        match poll(&mut fds, Some(&zero)) {
            Ok(0) => false,
            Ok(_) | Err(_) => true,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buf),
            Stream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buf),
            Stream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// The addresses of `host:port`: an IP literal as is, a name through the system resolver on
/// the calling thread (`getaddrinfo`: its own timeouts apply, see docs/http-client.md).
pub fn resolve(host: &str, port: u16, literal: Option<SocketAddr>) -> io::Result<Vec<SocketAddr>> {
    if let Some(addr) = literal {
        return Ok(vec![addr]);
    }
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")));
    }
    Ok(addrs)
}

/// Connect to the first address that answers, each attempt within `connect_timeout` and the
/// deadline; `TCP_NODELAY` is set (a request is written in as few writes as possible).
pub fn connect(addrs: &[SocketAddr], connect_timeout: Duration, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        match TcpStream::connect_timeout(addr, connect_timeout.min(left)) {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_only_shrink_and_stay_positive() {
        let s = Duration::from_secs;
        assert_eq!(shorter(None, s(30)), Some(s(15)));
        assert_eq!(shorter(Some(s(15)), s(29)), None, "still within the deadline: not set again");
        assert_eq!(shorter(Some(s(15)), s(14)), Some(s(7)));
        assert_eq!(shorter(Some(s(1)), Duration::from_micros(10)), Some(MIN_TIMEOUT));
    }
}
