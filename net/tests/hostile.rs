//! The client against scripted loopback servers, one case per way a server can be broken or
//! hostile, each with its exact outcome (docs/http-client.md, "Limits" and "Reuse").

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fleet_http::chunked::ChunkError;
use fleet_http::head::HeadError;
use fleet_http::{Body, Client, Config, Error, Request};

const LIMIT: u64 = 64 * 1024;

/// A loopback server running `handler(connection number, socket)` for each connection; returns
/// its URL and the count of accepted connections.
fn serve(handler: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let handler = Arc::clone(&handler);
            thread::spawn(move || handler(n, stream));
        }
    });
    (url, accepted)
}

/// Read one request (head and `Content-Length` body); false at end of stream.
fn read_request(reader: &mut BufReader<TcpStream>) -> bool {
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).is_ok()
}

/// A server that answers each connection's first request with `answer`, then closes.
fn answer_once(answer: Vec<u8>) -> String {
    serve(move |_, stream| {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        if read_request(&mut reader) {
            let mut stream = stream;
            let _ = stream.write_all(&answer);
        }
    })
    .0
}

/// A server answering every request on a connection with `answer` (keep-alive).
fn answer_always(answer: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    serve(move |_, stream| {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut stream = stream;
        while read_request(&mut reader) {
            if stream.write_all(answer).is_err() {
                return;
            }
        }
    })
}

fn client(timeout: Duration) -> Client {
    Client::new(config(timeout))
}

fn post<'a>(url: &'a str, body: &'a [u8]) -> Request<'a, 'a> {
    Request { method: "POST", url, headers: &[], body: Body::Bytes(body), resendable: true }
}

/// POST and read the whole body.
fn exchange(client: &Client, url: &str) -> Result<(u16, Vec<u8>), Error> {
    let response = client.send(post(url, b"{}"))?;
    let status = response.status();
    Ok((status, response.read_to_vec(LIMIT)?))
}

fn outcome(url: &str) -> Result<(u16, Vec<u8>), Error> {
    exchange(&client(Duration::from_secs(3)), url)
}

#[test]
fn a_garbage_status_line_is_malformed() {
    let url = answer_once(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec());
    assert!(matches!(outcome(&url), Err(Error::Head(HeadError::Malformed(_)))), "{:?}", outcome(&url));
}

#[test]
fn an_oversized_head_is_refused() {
    let head = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let url = answer_once(head.into_bytes());
    assert!(matches!(outcome(&url), Err(Error::Head(HeadError::TooLarge))), "{:?}", outcome(&url));
}

#[test]
fn too_many_headers_are_refused() {
    let fields: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let url = answer_once(format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 0\r\n\r\n").into_bytes());
    assert!(matches!(outcome(&url), Err(Error::Head(HeadError::TooManyHeaders))), "{:?}", outcome(&url));
}

#[test]
fn conflicting_content_lengths_are_refused() {
    let url = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_vec());
    assert!(matches!(outcome(&url), Err(Error::Head(HeadError::Framing(_)))), "{:?}", outcome(&url));
    let url = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok".to_vec());
    assert!(matches!(outcome(&url), Err(Error::Head(HeadError::Framing(_)))), "{:?}", outcome(&url));
}

#[test]
fn a_bad_chunk_size_is_refused() {
    let url = answer_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n".to_vec());
    assert!(matches!(outcome(&url), Err(Error::Chunked(ChunkError::BadSize))), "{:?}", outcome(&url));
}

#[test]
fn a_chunk_size_overflow_is_refused() {
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nok\r\n".to_vec();
    let url = answer_once(answer);
    assert!(matches!(outcome(&url), Err(Error::Chunked(ChunkError::SizeOverflow))), "{:?}", outcome(&url));
}

#[test]
fn a_body_longer_than_the_limit_is_refused() {
    let big = vec![b'x'; LIMIT as usize + 1];
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len());
    let url = answer_once([head.as_bytes(), &big].concat());
    assert!(matches!(outcome(&url), Err(Error::BodyTooLarge(LIMIT))), "{:?}", outcome(&url));
    // Chunked, in small chunks: the same limit.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..=LIMIT / 1000 {
        chunked.extend_from_slice(b"3e8\r\n");
        chunked.extend_from_slice(&[b'y'; 1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let url = answer_once(chunked);
    assert!(matches!(outcome(&url), Err(Error::BodyTooLarge(LIMIT))), "{:?}", outcome(&url));
    // Exactly the limit is fine.
    let exact = vec![b'z'; LIMIT as usize];
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", exact.len());
    let url = answer_once([head.as_bytes(), &exact].concat());
    assert_eq!(outcome(&url).map(|(s, b)| (s, b.len())).ok(), Some((200, LIMIT as usize)));
}

#[test]
fn an_early_close_mid_body_is_truncation() {
    let url = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..".to_vec());
    assert!(matches!(outcome(&url), Err(Error::Truncated(_))), "{:?}", outcome(&url));
    let url = answer_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec());
    assert!(matches!(outcome(&url), Err(Error::Truncated(_))), "{:?}", outcome(&url));
    let url = answer_once(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec());
    assert!(matches!(outcome(&url), Err(Error::Head(HeadError::Malformed(_)))), "{:?}", outcome(&url));
    let url = answer_once(Vec::new());
    assert!(matches!(outcome(&url), Err(Error::Closed)), "{:?}", outcome(&url));
}

/// A server that drips `answer` one byte every 50 ms.
fn dripping(answer: &'static [u8]) -> String {
    serve(move |_, stream| {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut stream = stream;
        if read_request(&mut reader) {
            for byte in answer {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    })
    .0
}

#[test]
fn a_server_dripping_bytes_cannot_hold_a_request_past_its_deadline() {
    let deadline = Duration::from_millis(800);
    // The body drips: 200 bytes at 20 a second would take 10 s.
    let body =
        b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n".iter().chain([b'x'; 200].iter()).copied().collect::<Vec<_>>();
    let url = dripping(Box::leak(body.into_boxed_slice()));
    let started = Instant::now();
    let result = exchange(&client(deadline), &url);
    let took = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(took >= deadline && took < deadline + Duration::from_millis(400), "took {took:?}");
    // The head drips.
    let url = dripping(
        b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
    );
    let started = Instant::now();
    let result = exchange(&client(deadline), &url);
    let took = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(took >= deadline && took < deadline + Duration::from_millis(400), "took {took:?}");
}

#[test]
fn a_server_that_drips_then_falls_silent_is_cut_at_the_deadline_not_a_socket_timeout_later() {
    // 18 bytes 50 ms apart (900 ms), then nothing: the socket timeout in force when the silence
    // starts must already be within the 1.2 s deadline.
    let deadline = Duration::from_millis(1200);
    let url = serve(|_, stream| {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut stream = stream;
        if read_request(&mut reader) {
            for byte in b"HTTP/1.1 200 OK\r\nX:" {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            thread::sleep(Duration::from_secs(5));
        }
    })
    .0;
    let started = Instant::now();
    let result = exchange(&client(deadline), &url);
    let took = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(took >= deadline && took < deadline + Duration::from_millis(200), "took {took:?}");
}

#[test]
fn informational_answers_are_skipped() {
    let url = answer_once(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            .to_vec(),
    );
    assert_eq!(outcome(&url).ok(), Some((200, b"ok".to_vec())));
    let url = answer_once(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".to_vec());
    assert!(matches!(outcome(&url), Err(Error::Head(HeadError::Framing(_)))), "{:?}", outcome(&url));
    let endless: Vec<u8> = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(20);
    let url = answer_once(endless);
    assert!(matches!(outcome(&url), Err(Error::Head(HeadError::Framing(_)))), "{:?}", outcome(&url));
}

#[test]
fn a_close_after_the_head_of_a_keep_alive_answer_is_truncation_and_the_next_request_connects_anew() {
    let (url, accepted) = serve(|n, stream| {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut stream = stream;
        if read_request(&mut reader) {
            let answer: &[u8] = if n == 0 {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            };
            let _ = stream.write_all(answer);
        }
    });
    let client = client(Duration::from_secs(3));
    assert!(matches!(exchange(&client, &url), Err(Error::Truncated(_))));
    assert_eq!(exchange(&client, &url).ok(), Some((200, b"hello".to_vec())));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn keep_alive_answers_reuse_one_connection_in_every_framing() {
    let (url, accepted) = answer_always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let client = client(Duration::from_secs(3));
    for _ in 0..5 {
        assert_eq!(exchange(&client, &url).ok(), Some((200, b"ok".to_vec())));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let (url, accepted) = answer_always(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\nok\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    for _ in 0..3 {
        assert_eq!(exchange(&client, &url).ok(), Some((200, b"ok!".to_vec())));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let (url, accepted) = answer_always(b"HTTP/1.1 204 No Content\r\n\r\n");
    for _ in 0..3 {
        assert_eq!(exchange(&client, &url).ok(), Some((204, Vec::new())));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn answers_that_forbid_reuse_get_a_new_connection_each_time() {
    // HTTP/1.0 (the Atlas server), `Connection: close`, a body delimited by closing, and an
    // answer followed by stray bytes.
    for answer in [
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".as_slice(),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSTRAY",
    ] {
        let (url, accepted) = serve(move |_, stream| {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut stream = stream;
            while read_request(&mut reader) {
                if stream.write_all(answer).is_err() {
                    return;
                }
            }
        });
        let client = client(Duration::from_secs(3));
        for _ in 0..3 {
            assert_eq!(exchange(&client, &url).ok(), Some((200, b"ok".to_vec())), "{answer:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "{}", String::from_utf8_lossy(answer));
    }
    let url = answer_once(b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec());
    assert_eq!(outcome(&url).ok(), Some((200, b"until close".to_vec())));
}

#[test]
fn an_idle_connection_the_server_closed_is_not_reused() {
    let (url, accepted) = serve(|_, stream| {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut stream = stream;
        if read_request(&mut reader) {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            // Keep-alive announced, then closed while idle.
            thread::sleep(Duration::from_millis(50));
        }
    });
    let client = client(Duration::from_secs(3));
    assert_eq!(exchange(&client, &url).ok(), Some((200, b"ok".to_vec())));
    thread::sleep(Duration::from_millis(300));
    // Not resendable: only the probe (not a resend) can make this succeed.
    let once = Request { method: "POST", url: &url, headers: &[], body: Body::Bytes(b"{}"), resendable: false };
    let answer = client.send(once).and_then(|r| Ok((r.status(), r.read_to_vec(LIMIT)?)));
    assert_eq!(answer.ok(), Some((200, b"ok".to_vec())));
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the probe saw the close: a new connection");
}

/// First connection: answers one request, then reads the second and closes without a byte
/// (a server's idle timeout racing the client's reuse); later connections answer everything.
fn racing_server() -> (String, Arc<AtomicUsize>) {
    serve(|n, stream| {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut stream = stream;
        let mut served = 0;
        while read_request(&mut reader) {
            if n == 0 && served == 1 {
                return;
            }
            served += 1;
            if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_reused_connection_failing_before_any_answer_byte_is_retried_only_when_resendable() {
    let (url, accepted) = racing_server();
    let client = client(Duration::from_secs(3));
    assert_eq!(exchange(&client, &url).ok(), Some((200, b"ok".to_vec())));
    assert_eq!(exchange(&client, &url).ok(), Some((200, b"ok".to_vec())), "resent on a fresh connection");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    let (url, accepted) = racing_server();
    assert_eq!(exchange(&client, &url).ok(), Some((200, b"ok".to_vec())));
    let once = Request { method: "POST", url: &url, headers: &[], body: Body::Bytes(b"{}"), resendable: false };
    assert!(matches!(client.send(once), Err(Error::Closed)), "not resendable: the failure is reported");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn requests_that_could_inject_lines_are_refused_before_connecting() {
    let client = client(Duration::from_secs(1));
    let bad_value = Request {
        method: "GET",
        url: "http://127.0.0.1:9/",
        headers: &[("X-A", "b\r\nX-Injected: 1")],
        body: Body::Empty,
        resendable: true,
    };
    assert!(matches!(client.send(bad_value), Err(Error::Request(_))));
    let bad_name = Request {
        method: "GET",
        url: "http://127.0.0.1:9/",
        headers: &[("X A", "b")],
        body: Body::Empty,
        resendable: true,
    };
    assert!(matches!(client.send(bad_name), Err(Error::Request(_))));
    let bad_path =
        Request { method: "GET", url: "http://127.0.0.1:9/a b", headers: &[], body: Body::Empty, resendable: true };
    assert!(matches!(client.send(bad_path), Err(Error::Url(_))));
}

#[test]
fn a_streamed_body_is_sent_with_its_length_and_must_match_it() {
    let (url, _) = answer_always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let client = client(Duration::from_secs(3));
    let data = vec![7u8; 100_000];
    let mut reader: &[u8] = &data;
    let request = Request {
        method: "POST",
        url: &url,
        headers: &[],
        body: Body::Reader { len: 100_000, reader: &mut reader },
        resendable: false,
    };
    let response = client.send(request).map_err(|e| e.to_string()).expect("sent");
    assert_eq!(response.status(), 200);
    let mut short: &[u8] = &data[..10];
    let request = Request {
        method: "POST",
        url: &url,
        headers: &[],
        body: Body::Reader { len: 100, reader: &mut short },
        resendable: false,
    };
    assert!(matches!(client.send(request), Err(Error::Request(_))));
}

#[test]
fn redirects_are_returned_not_followed() {
    let url = answer_once(
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\n\r\n".to_vec(),
    );
    let client = client(Duration::from_secs(3));
    let response = client.send(post(&url, b"{}")).map_err(|e| e.to_string()).expect("answer");
    assert_eq!((response.status(), response.header("location")), (302, Some("http://127.0.0.1:9/elsewhere")));
}

/// A proxy on loopback: answers each `CONNECT` with `status`, and on 200 relays to the target
/// it names; returns its URL and the CONNECT request heads it received.
fn connect_proxy(status: u16) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    let (url, _) = serve(move |_, client| {
        let mut reader = BufReader::new(client.try_clone().expect("clone"));
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        seen.lock().expect("lock").push(head);
        let mut client = client;
        if status != 200 {
            let _ = client.write_all(format!("HTTP/1.1 {status} No\r\nContent-Length: 0\r\n\r\n").as_bytes());
            return;
        }
        let Ok(server) = TcpStream::connect(&target) else { return };
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let (mut from_server, mut to_client) = (server.try_clone().expect("clone"), client.try_clone().expect("clone"));
        thread::spawn(move || {
            let _ = std::io::copy(&mut from_server, &mut to_client);
        });
        let mut to_server = server;
        let _ = std::io::copy(&mut reader, &mut to_server);
    });
    (url, heads)
}

fn proxied_client(proxy_url: &str, no_proxy: &str) -> Client {
    let vars = [("HTTP_PROXY".to_string(), proxy_url.to_string()), ("NO_PROXY".to_string(), no_proxy.to_string())];
    let proxy = fleet_http::Proxy::from_vars(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
    assert!(proxy.is_some());
    Client::new(Config { proxy, ..config(Duration::from_secs(3)) })
}

fn config(timeout: Duration) -> Config {
    Config {
        connect_timeout: Duration::from_secs(2),
        timeout,
        tls: None,
        user_agent: "hostile-test".into(),
        proxy: None,
        max_idle: Duration::from_secs(30),
    }
}

#[test]
fn requests_go_through_a_connect_tunnel_and_a_refusing_proxy_is_an_error() {
    let (target, accepted) = answer_always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let (proxy, heads) = connect_proxy(200);
    let client = proxied_client(&proxy.replace("http://", "http://user:secret@"), "");
    for _ in 0..2 {
        assert_eq!(exchange(&client, &target).ok(), Some((200, b"ok".to_vec())));
    }
    let heads = heads.lock().expect("lock").clone();
    let authority = target.trim_start_matches("http://");
    assert_eq!(heads.len(), 1, "one tunnel, kept alive: {heads:?}");
    assert!(heads[0].starts_with(&format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n")), "{heads:?}");
    assert!(heads[0].contains("Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=\r\n"), "{heads:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    let (refusing, _) = connect_proxy(407);
    let result = exchange(&proxied_client(&refusing, ""), &target);
    assert!(matches!(&result, Err(Error::Proxy(why)) if why.contains("407")), "{result:?}");
    // NO_PROXY: straight to the target.
    assert_eq!(exchange(&proxied_client(&refusing, "127.0.0.1"), &target).ok(), Some((200, b"ok".to_vec())));
}
