//! The cipher suites this project speaks (`fleet_wire::tls::crypto_provider`: AES-GCM only,
//! TLS 1.3 and 1.2): against servers that offer one suite family only, each a rustls server in
//! this process on loopback, and against the bundled receiver with clients that offer one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig, ServerConnection, StreamOwned, SupportedProtocolVersion};

use crate::tls::{post, self_signed_ca_true, start_tls_receiver, Identity};

/// ring's full provider (the one rustls would pick) cut down to the suites named with `family`
/// (`"CHACHA20"`, `"AES_128_GCM"`, …).
fn ring_with(family: &str) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|suite| format!("{:?}", suite.suite()).contains(family));
    assert!(!provider.cipher_suites.is_empty(), "ring has {family} suites");
    Arc::new(provider)
}

/// A one-connection HTTPS server on 127.0.0.1 with `identity`, the suites of `provider` and
/// the protocol `version`: it answers `200` to one request. Its URL, and the handshake's
/// outcome on the server's side (the negotiated suite, or rustls' error).
fn one_shot_server(
    identity: &Identity,
    provider: Arc<CryptoProvider>,
    version: &'static SupportedProtocolVersion,
) -> (String, JoinHandle<Result<String, String>>) {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&identity.cert).expect("cert").collect::<Result<_, _>>().expect("certs");
    let key = PrivateKeyDer::from_pem_file(&identity.key).expect("key");
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        let connection = ServerConnection::new(Arc::new(config)).map_err(|e| e.to_string())?;
        let mut tls = BufReader::new(StreamOwned::new(connection, tcp));
        let mut content_length = 0;
        loop {
            let mut line = String::new();
            tls.read_line(&mut line).map_err(|e| e.to_string())?;
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = value.trim().parse().map_err(|_| format!("content-length {value:?}"))?;
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; content_length];
        tls.read_exact(&mut body).map_err(|e| e.to_string())?;
        let tls = tls.get_mut();
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        let suite = tls.conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite()));
        suite.ok_or_else(|| "no suite negotiated".to_string())
    });
    (url, server)
}

#[test]
fn servers_offering_aes_gcm_only_are_reached_with_tls_1_3_and_1_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = self_signed_ca_true(dir.path());
    let cases = [
        ("AES_128_GCM", &rustls::version::TLS13, "TLS13_AES_128_GCM_SHA256"),
        ("AES_256_GCM", &rustls::version::TLS13, "TLS13_AES_256_GCM_SHA384"),
        // rcgen's key is ECDSA P-256: the ECDHE-ECDSA suites.
        ("AES_128_GCM", &rustls::version::TLS12, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        ("AES_256_GCM", &rustls::version::TLS12, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ];
    for (family, version, expected) in cases {
        let (url, server) = one_shot_server(&identity, ring_with(family), version);
        let status = post(&url, None, &[identity.fingerprint]).map_err(|e| e.to_string());
        let negotiated = server.join().expect("server thread");
        assert_eq!(status, Ok(200), "{family} {version:?}; server: {negotiated:?}");
        assert_eq!(negotiated.as_deref(), Ok(expected));
    }
}

#[test]
fn a_server_offering_chacha20_poly1305_only_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = self_signed_ca_true(dir.path());
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (url, server) = one_shot_server(&identity, ring_with("CHACHA20"), version);
        let error = post(&url, None, &[identity.fingerprint]).expect_err("no suite in common");
        let text = error.to_string();
        assert!(error.needs_admin(), "{text}");
        assert!(
            text.contains("refused the handshake") && text.contains("AES-GCM") && text.contains("ChaCha20-Poly1305"),
            "{version:?}: {text}"
        );
        let on_the_server = server.join().expect("server thread").expect_err("handshake refused");
        assert!(on_the_server.contains("NoCipherSuitesInCommon"), "{on_the_server}");
    }
}

/// A TLS client of the test with `provider` (any certificate accepted: only the suites count
/// here), against `url` (`https://127.0.0.1:port`): the negotiated suite, or the handshake's
/// error.
fn handshake_with(url: &str, provider: Arc<CryptoProvider>) -> Result<String, String> {
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    let address = url.strip_prefix("https://").expect("https url");
    let tcp = TcpStream::connect(address).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(connection, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| e.to_string())?;
    }
    Ok(format!("{:?}", tls.conn.negotiated_cipher_suite().expect("suite").suite()))
}

#[test]
fn the_receiver_speaks_aes_gcm_and_refuses_a_chacha20_poly1305_only_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = self_signed_ca_true(dir.path());
    let (_receiver, url) = start_tls_receiver(&dir.path().join("store"), &identity);
    assert_eq!(handshake_with(&url, ring_with("AES_128_GCM")).as_deref(), Ok("TLS13_AES_128_GCM_SHA256"));
    let mut tls12_only = (*ring_with("ECDHE_ECDSA_WITH_AES_256_GCM")).clone();
    tls12_only.cipher_suites.retain(|s| s.version() == &rustls::version::TLS12);
    assert_eq!(handshake_with(&url, Arc::new(tls12_only)).as_deref(), Ok("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"));
    let refused = handshake_with(&url, ring_with("CHACHA20")).expect_err("no suite in common");
    assert!(refused.contains("HandshakeFailure"), "{refused}");
}

/// Accepts any certificate: these tests are about the suites, `tls.rs` about certificates.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}
