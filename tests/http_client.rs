//! The sender's HTTP client against the real peers (docs/http-client.md, "Reuse"): one
//! kept-alive connection to the bundled receiver, plain and over TLS, and a new connection per
//! request to the Atlas server (HTTP/1.0, closes every connection), counted by a loopback relay
//! in front of each.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_agent::sender::http::{HttpClient, HttpSettings};
use fleet_receiver::Receiver;
use fleet_wire::keys::SecretString;

use crate::receiver::{config, fast_limits, key, report_json, sealed_batch, API_KEY};
use crate::sender::start_atlas_mock;

/// A relay on 127.0.0.1 forwarding each connection to `upstream` (`host:port`); returns its
/// port and the count of connections it accepted.
fn counting_relay(upstream: String) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(&upstream) else { continue };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            };
            pipe(client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            pipe(server, client);
        }
    });
    (port, accepted)
}

fn settings(pinned: &[[u8; 32]]) -> HttpSettings<'_> {
    HttpSettings {
        ca_file: None,
        pinned,
        verify_tls: true,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
    }
}

fn host_port(url: &str) -> String {
    url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/').to_string()
}

#[test]
fn the_bundled_receiver_keeps_one_connection_for_every_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx =
        Receiver::start_with_limits(config(&dir.path().join("store"), vec![key(0)]), fast_limits()).expect("start");
    let (port, accepted) = counting_relay(host_port(&rx.url()));
    let client =
        HttpClient::new(&format!("http://127.0.0.1:{port}"), Some(SecretString::new(API_KEY.into())), &settings(&[]))
            .map_err(|e| e.to_string())
            .expect("client");
    for seq in 1..=5 {
        let answer = client.post_json("/api/v2/batches", &sealed_batch(&key(0), "reuse", seq, 3)).expect("posted");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.contains("\"stored\":3"), "{}", answer.body);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "five batches over one connection");
    rx.shutdown();
}

#[test]
fn over_tls_the_handshake_is_made_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    let mut config = config(&dir.path().join("store"), vec![key(0)]);
    config.tls = Some((cert_path, key_path));
    let rx = Receiver::start_with_limits(config, fast_limits()).expect("start");
    let (port, accepted) = counting_relay(host_port(&rx.url()));
    let pin = fleet_agent::sender::http::tls::fingerprint(certified.cert.der());
    let pins = [pin];
    let client = HttpClient::new(
        &format!("https://127.0.0.1:{port}"),
        Some(SecretString::new(API_KEY.into())),
        &settings(&pins),
    )
    .map_err(|e| e.to_string())
    .expect("client");
    for seq in 1..=4 {
        let answer = client.post_json("/api/v2/batches", &sealed_batch(&key(0), "tls-reuse", seq, 2)).expect("posted");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "four batches over one TLS session");
    rx.shutdown();
}

#[test]
fn the_atlas_server_gets_a_new_connection_for_every_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.jsonl");
    let (_server, url) = start_atlas_mock(&capture);
    let (port, accepted) = counting_relay(host_port(&url));
    let client =
        HttpClient::new(&format!("http://127.0.0.1:{port}"), Some(SecretString::new(API_KEY.into())), &settings(&[]))
            .map_err(|e| e.to_string())
            .expect("client");
    for _ in 0..3 {
        let answer = client.post_json("/api/fleet/report", &report_json("atlas-machine")).expect("posted");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let commands = client.get("/api/fleet/commands/atlas-machine").expect("polled");
    assert_eq!(commands.status, 200, "{}", commands.body);
    assert_eq!(accepted.load(Ordering::SeqCst), 4, "HTTP/1.0 closes: one connection per request");
    let lines = std::fs::read_to_string(&capture).expect("capture");
    assert_eq!(lines.lines().filter(|l| l.contains("/api/fleet/report")).count(), 3, "each report arrived once");
}
