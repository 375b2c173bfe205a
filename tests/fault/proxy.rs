//! The faulty network: an HTTP/1.x proxy on 127.0.0.1 between the agent and the server.
//!
//! One request per connection (the agent opens a new connection for each request and both
//! servers close after answering). For each request the proxy takes the schedule's fate for
//! its number, acts it out, and logs an [`Exchange`]: the body the agent sent, what the
//! server answered to each forwarded copy, and what (if anything) was relayed to the agent.
//! The upstream addresses can change at any time (a restarted server gets a new port). With
//! several servers the proxy is a load balancer: the schedule routes each request number to
//! one of them (the next in turn, or one drawn at random: [`Schedule::route`]), a server that
//! is down or refuses the connection is passed over for the next (nothing was sent to it
//! yet), and the two copies of a concurrent duplicate go to different servers, so two
//! receivers race on the same batch. While no server is up a forwarded request finds no one
//! and the agent's connection is closed.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::schedule::{Fate, Schedule};
use super::wire::RecordId;

/// Longest a proxy thread waits on a socket.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request or answer head.
const MAX_HEAD: usize = 64 * 1024;

/// One request through the proxy.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Request number (the schedule's fate index).
    pub n: u64,
    /// Request path (`/api/v2/batches`, …).
    pub path: String,
    /// What the proxy did.
    pub fate: Fate,
    /// The whole body the agent sent (`None`: the agent did not finish sending it).
    pub body: Option<Vec<u8>>,
    /// The server's answer to each forwarded copy (`None`: no answer).
    pub upstream: Vec<Option<Answer>>,
    /// The server (slot) each copy that found one went to.
    pub servers: Vec<usize>,
    /// Status relayed to the agent, complete (`None`: the agent got no answer).
    pub relayed: Option<u16>,
}

/// What a server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The body says `"duplicate": true` (a v2 receiver found the batch stored already).
    pub duplicate: bool,
}

impl Answer {
    fn of(message: &Message) -> Option<Answer> {
        let duplicate = serde_json::from_slice::<serde_json::Value>(&message.body)
            .is_ok_and(|body| body["duplicate"] == serde_json::Value::Bool(true));
        Some(Answer { status: message.status()?, duplicate })
    }
}

/// Tells the proxy which record identities a body carries (for [`Fate::Reject`]).
pub type Identify = dyn Fn(&str, &[u8]) -> Vec<RecordId> + Send + Sync;

struct Shared {
    schedule: Arc<Schedule>,
    identify: Box<Identify>,
    /// One slot per server; `None`: that one is down.
    upstreams: Mutex<Vec<Option<SocketAddr>>>,
    faults: AtomicBool,
    next: AtomicU64,
    log: Mutex<Vec<Exchange>>,
    /// Identities that reached the server at least once (never rejected afterwards).
    forwarded: Mutex<HashSet<RecordId>>,
    stop: AtomicBool,
    /// Connections being handled.
    active: AtomicU64,
    /// Per server slot: requests sent to it and not yet answered.
    busy: [AtomicU64; MAX_SLOTS],
}

/// Most server slots the proxy tracks as busy.
const MAX_SLOTS: usize = 4;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running proxy; stopped (accept loop joined) on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on a free loopback port; faults on.
    pub fn start(schedule: Arc<Schedule>, identify: Box<Identify>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            schedule,
            identify,
            upstreams: Mutex::new(Vec::new()),
            faults: AtomicBool::new(true),
            next: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            forwarded: Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
            active: AtomicU64::new(0),
            busy: Default::default(),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = Arc::clone(&shared);
                    shared.active.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        handle(conn, &shared);
                        shared.active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Proxy { addr, shared, accept: Some(accept) }
    }

    /// The URL the agent is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Point at the servers: one slot each, with its URL while it runs.
    pub fn set_upstreams(&self, urls: &[Option<String>]) {
        let addrs = urls
            .iter()
            .map(|url| url.as_ref().map(|url| url.trim_start_matches("http://").parse().expect("server address")));
        *lock(&self.shared.upstreams) = addrs.collect();
    }

    /// Whether server `slot` holds a request it has not answered yet.
    pub fn busy(&self, slot: usize) -> bool {
        self.shared.busy.get(slot).is_some_and(|n| n.load(Ordering::SeqCst) > 0)
    }

    /// Turn the network faults off (heal) or on.
    pub fn set_faults(&self, on: bool) {
        self.shared.faults.store(on, Ordering::SeqCst);
    }

    /// Every exchange, in request-number order, once no request is in progress (at most
    /// `limit` of waiting; a handler still busy then is left out).
    pub fn exchanges(&self, limit: Duration) -> Vec<Exchange> {
        let started = std::time::Instant::now();
        while self.shared.active.load(Ordering::SeqCst) > 0 && started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut log = lock(&self.shared.log).clone();
        log.sort_by_key(|e| e.n);
        log
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A request or an answer: its head (text), its body and its status (answers).
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Message {
    fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    fn content_length(&self) -> Option<usize> {
        self.head_text().lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
    }

    fn status(&self) -> Option<u16> {
        self.head_text().split_whitespace().nth(1)?.parse().ok()
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Read a head (through the blank line); `buf` keeps what was read past it.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(at + 4);
            return Some(std::mem::replace(buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Read `len` body bytes (`None`: to the end of the stream), starting with `buf`.
fn read_body(stream: &mut TcpStream, mut buf: Vec<u8>, len: Option<usize>) -> Option<Vec<u8>> {
    match len {
        Some(len) => {
            if buf.len() < len {
                let start = buf.len();
                buf.resize(len, 0);
                stream.read_exact(&mut buf[start..]).ok()?;
            }
            buf.truncate(len);
            Some(buf)
        }
        None => {
            stream.read_to_end(&mut buf).ok()?;
            Some(buf)
        }
    }
}

/// A connection to a server for copy `copy` (0 or 1) of request `n`: to the one the schedule
/// routes it to (the other copy to the next one), or, when that one is down or refuses the
/// connection, to the next one up, as a load balancer does.
/// The connection and the server's slot.
fn connect(shared: &Shared, n: u64, copy: usize) -> Option<(usize, TcpStream)> {
    let slots = lock(&shared.upstreams).clone();
    if slots.is_empty() {
        return None;
    }
    let first = shared.schedule.route(n, slots.len()) + copy;
    (0..slots.len()).map(|i| (first + i) % slots.len()).find_map(|slot| {
        let addr = slots[slot]?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok().map(|conn| (slot, conn))
    })
}

/// Send copy `copy` of request `n` to a server and read its whole answer; the server's slot.
fn forward(shared: &Shared, n: u64, copy: usize, request: &Message) -> (Option<usize>, Option<Message>) {
    match connect(shared, n, copy) {
        Some((slot, server)) => (Some(slot), ask(shared, slot, server, request)),
        None => (None, None),
    }
}

/// Send a request on a connection to server `slot` and read its whole answer (the server
/// counts as busy meanwhile).
fn ask(shared: &Shared, slot: usize, server: TcpStream, request: &Message) -> Option<Message> {
    let busy = shared.busy.get(slot);
    busy.inspect(|n| {
        n.fetch_add(1, Ordering::SeqCst);
    });
    let answer = exchange_with(server, request);
    busy.inspect(|n| {
        n.fetch_sub(1, Ordering::SeqCst);
    });
    answer
}

/// Write a request on a connection and read the whole answer.
fn exchange_with(mut server: TcpStream, request: &Message) -> Option<Message> {
    server.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    server.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    server.write_all(&request.bytes()).ok()?;
    let mut buf = Vec::new();
    let head = read_head(&mut server, &mut buf)?;
    let mut answer = Message { head, body: Vec::new() };
    answer.body = read_body(&mut server, buf, answer.content_length())?;
    Some(answer)
}

fn canned(status: u16, reason: &str, body: &str) -> Message {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    Message { head: head.into_bytes(), body: body.as_bytes().to_vec() }
}

fn relay(agent: &mut TcpStream, answer: &Message) -> Option<u16> {
    agent.write_all(&answer.bytes()).ok()?;
    agent.flush().ok()?;
    let _ = agent.shutdown(Shutdown::Write);
    answer.status()
}

fn handle(mut agent: TcpStream, shared: &Shared) {
    let _ = agent.set_read_timeout(Some(IO_TIMEOUT));
    let _ = agent.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::new();
    let Some(head) = read_head(&mut agent, &mut buf) else { return };
    let mut request = Message { head, body: Vec::new() };
    let path = request.head_text().split_whitespace().nth(1).unwrap_or("").to_string();
    let n = shared.next.fetch_add(1, Ordering::SeqCst);
    let mut fate = if shared.faults.load(Ordering::SeqCst) { shared.schedule.fate(n) } else { Fate::Pass };
    let len = request.content_length().unwrap_or(0);
    let mut exchange =
        Exchange { n, path: path.clone(), fate, body: None, upstream: Vec::new(), servers: Vec::new(), relayed: None };

    if let Fate::ResetMidBody { upstream: tear_upstream } = fate {
        // Take part of the body and go: what is left unread makes the kernel send a reset.
        let part = len / 2;
        let mut taken = buf;
        if taken.len() < part {
            let start = taken.len();
            taken.resize(part, 0);
            let _ = agent.read_exact(&mut taken[start..]);
        }
        taken.truncate(part);
        if tear_upstream {
            if let Some((slot, mut server)) = connect(shared, n, 0) {
                let _ = server.write_all(&request.head);
                let _ = server.write_all(&taken);
                exchange.upstream.push(None);
                exchange.servers.push(slot);
            }
        }
        drop(agent);
        lock(&shared.log).push(exchange);
        return;
    }

    let Some(body) = read_body(&mut agent, buf, Some(len)) else {
        lock(&shared.log).push(exchange);
        return;
    };
    request.body = body;
    exchange.body = Some(request.body.clone());
    let ids = (shared.identify)(&path, &request.body);
    if fate == Fate::Reject && ids.iter().any(|id| lock(&shared.forwarded).contains(id)) {
        fate = Fate::Pass;
        exchange.fate = fate;
    }
    let send = |exchange: &mut Exchange| {
        lock(&shared.forwarded).extend(ids.iter().cloned());
        let (slot, answer) = forward(shared, n, 0, &request);
        exchange.upstream.push(answer.as_ref().and_then(Answer::of));
        exchange.servers.extend(slot);
        answer
    };
    match fate {
        Fate::Pass => {
            if let Some(answer) = send(&mut exchange) {
                exchange.relayed = relay(&mut agent, &answer);
            }
        }
        Fate::Delay(ms) => {
            std::thread::sleep(Duration::from_millis(ms / 2));
            if let Some(answer) = send(&mut exchange) {
                std::thread::sleep(Duration::from_millis(ms / 2));
                exchange.relayed = relay(&mut agent, &answer);
            }
        }
        Fate::DropRequest => {}
        Fate::DropAnswer => {
            send(&mut exchange);
        }
        Fate::Duplicate { concurrent: false } => {
            send(&mut exchange);
            if let Some(answer) = send(&mut exchange) {
                exchange.relayed = relay(&mut agent, &answer);
            }
        }
        Fate::Duplicate { concurrent: true } => {
            lock(&shared.forwarded).extend(ids.iter().cloned());
            // Both connections are open before either copy is written, so the two servers
            // get the same batch within microseconds of each other.
            let both = Barrier::new(2);
            let copy = |copy: usize| {
                let server = connect(shared, n, copy);
                both.wait();
                match server {
                    Some((slot, server)) => (Some(slot), ask(shared, slot, server, &request)),
                    None => (None, None),
                }
            };
            let ((slot_a, a), (slot_b, b)) = std::thread::scope(|scope| {
                let a = scope.spawn(|| copy(0));
                let b = scope.spawn(|| copy(1));
                (a.join().unwrap_or((None, None)), b.join().unwrap_or((None, None)))
            });
            exchange.upstream.push(a.as_ref().and_then(Answer::of));
            exchange.upstream.push(b.as_ref().and_then(Answer::of));
            exchange.servers.extend(slot_a.into_iter().chain(slot_b));
            if let Some(answer) = a.or(b) {
                exchange.relayed = relay(&mut agent, &answer);
            }
        }
        Fate::Refuse(status) => {
            let reason = if status == 429 { "Too Many Requests" } else { "Service Unavailable" };
            exchange.relayed = relay(&mut agent, &canned(status, reason, ""));
        }
        Fate::Reject => {
            let body = r#"{"error":"fault harness: this payload is refused for good"}"#;
            exchange.relayed = relay(&mut agent, &canned(400, "Bad Request", body));
        }
        // Acted out before the body was read.
        Fate::ResetMidBody { .. } => {}
    }
    lock(&shared.log).push(exchange);
}

mod self_test {
    //! The proxy as a load balancer, against two stand-in servers that answer every request
    //! with their own number: requests go where [`Schedule::route`] says, a server that is
    //! down is passed over, and the copies of a concurrent duplicate reach both.

    use super::*;
    use crate::fault::schedule::{Protocol, Servers};

    /// A server answering `{"server":N}` to each request (reading one head, no body).
    fn stand_in(number: usize) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("address");
        let serve = std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = Vec::new();
                if read_head(&mut conn, &mut buf).is_none() {
                    return; // the test's signal to stop
                }
                let body = format!(r#"{{"server":{number}}}"#);
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        (addr, serve)
    }

    fn stop(addr: SocketAddr, serve: JoinHandle<()>) {
        drop(TcpStream::connect(addr));
        let _ = serve.join();
    }

    /// Send one empty POST through the proxy; the number of the server that answered.
    fn ask_through(proxy: &Proxy) -> Option<usize> {
        let mut conn = TcpStream::connect(proxy.addr).ok()?;
        conn.write_all(b"POST /api/v2/batches HTTP/1.1\r\nContent-Length: 0\r\n\r\n").ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1)?).ok()?;
        body["server"].as_u64().map(|n| n as usize)
    }

    #[test]
    fn requests_go_where_the_schedule_routes_them_and_a_down_server_is_passed_over() {
        // A seed that mixes routing, so both round robin and random choices are exercised.
        let seed = (0..).find(|&s| Schedule::generate(s, Protocol::V2, Servers::Shared(2), false).random_routing == 30);
        let schedule = Arc::new(Schedule::generate(seed.expect("a seed"), Protocol::V2, Servers::Shared(2), false));
        let proxy = Proxy::start(Arc::clone(&schedule), Box::new(|_, _| Vec::new()));
        proxy.set_faults(false);
        let servers: Vec<(SocketAddr, JoinHandle<()>)> = (0..2).map(stand_in).collect();
        let urls: Vec<Option<String>> = servers.iter().map(|(addr, _)| Some(format!("http://{addr}"))).collect();
        proxy.set_upstreams(&urls);
        let answered: Vec<Option<usize>> = (0..40).map(|_| ask_through(&proxy)).collect();
        let routed: Vec<Option<usize>> = (0..40).map(|n| Some(schedule.route(n, 2))).collect();
        assert_eq!(answered, routed, "each request answered by the server the schedule routes it to");
        assert!(routed.contains(&Some(0)) && routed.contains(&Some(1)), "both servers get requests");
        let exchanges = proxy.exchanges(Duration::from_secs(5));
        assert!(exchanges.iter().all(|e| e.servers == vec![schedule.route(e.n, 2)]), "each exchange names its server");

        // Server 0 down (the slot still listed, as a balancer that has not noticed): every
        // request reaches server 1.
        let mut servers = servers.into_iter();
        let (addr0, serve0) = servers.next().expect("server 0");
        stop(addr0, serve0);
        let answered: Vec<Option<usize>> = (0..10).map(|_| ask_through(&proxy)).collect();
        assert_eq!(answered, vec![Some(1); 10]);
        // Told that it is down: the same.
        proxy.set_upstreams(&[None, urls[1].clone()]);
        let answered: Vec<Option<usize>> = (0..10).map(|_| ask_through(&proxy)).collect();
        assert_eq!(answered, vec![Some(1); 10]);
        let (addr1, serve1) = servers.next().expect("server 1");
        stop(addr1, serve1);
    }

    #[test]
    fn the_copies_of_a_concurrent_duplicate_reach_both_servers() {
        let schedule = Arc::new(Schedule::racing(3, 2));
        let proxy = Proxy::start(Arc::clone(&schedule), Box::new(|_, _| Vec::new()));
        let servers: Vec<(SocketAddr, JoinHandle<()>)> = (0..2).map(stand_in).collect();
        let urls: Vec<Option<String>> = servers.iter().map(|(addr, _)| Some(format!("http://{addr}"))).collect();
        proxy.set_upstreams(&urls);
        for _ in 0..10 {
            assert!(ask_through(&proxy).is_some());
        }
        for exchange in proxy.exchanges(Duration::from_secs(5)) {
            let mut servers = exchange.servers.clone();
            servers.sort_unstable();
            assert_eq!(servers, vec![0, 1], "request #{}: one copy to each server", exchange.n);
            assert!(exchange.upstream.iter().all(|a| a.is_some_and(|a| a.status == 200)));
        }
        for (addr, serve) in servers {
            stop(addr, serve);
        }
    }
}
