//! TLS as admins set it up, against the bundled receiver's HTTPS with rcgen-made certificates:
//! a self-signed CA:TRUE certificate (what `openssl req -x509` makes) pinned by fingerprint, a
//! private CA with a leaf in `ca_file`, and every refusal explained in a sentence with the fix,
//! logged as one error per slow retry rather than a warning per attempt.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_agent::sender::http::tls::{fingerprint, fingerprint_text};
use fleet_agent::sender::http::{HttpClient, HttpError, HttpSettings};

use crate::support::{agent_config, s, start_agent, stored_records, wait_for, Proc, TEST_KEY_B64};

/// PEM files of one server identity.
pub(crate) struct Identity {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// SHA-256 of the certificate's DER.
    pub(crate) fingerprint: [u8; 32],
    /// A PEM file with the certificate and its CA, and the CA's fingerprint.
    pub(crate) chain: Option<(PathBuf, [u8; 32])>,
}

fn write_identity(dir: &Path, name: &str, cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Identity {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    Identity { cert: cert_path, key: key_path, fingerprint: fingerprint(cert.der()), chain: None }
}

/// `openssl req -x509 -newkey … -subj /CN=fleet -addext subjectAltName=IP:127.0.0.1`: a
/// self-signed certificate with basicConstraints CA:TRUE.
pub(crate) fn self_signed_ca_true(dir: &Path) -> Identity {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "fleet");
    let cert = params.self_signed(&key).expect("self-signed");
    write_identity(dir, "self-signed", &cert, &key)
}

/// A private CA (written to `ca.pem`) and a leaf for `names` signed by it.
fn private_ca_and_leaf(dir: &Path, names: &[&str]) -> (PathBuf, Identity) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fleet private CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write ca");
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("p");
    let cert = params.signed_by(&key, &ca).expect("signed");
    let mut leaf = write_identity(dir, "leaf", &cert, &key);
    // The chain the server sends: its certificate, then the CA's.
    let chain = dir.join("chain.pem");
    std::fs::write(&chain, format!("{}{}", cert.pem(), ca.pem())).expect("write chain");
    leaf.chain = Some((chain, fingerprint(ca.der())));
    (ca_path, leaf)
}

/// `fleet-agent receive` over HTTPS with `identity`; the process and its URL.
pub(crate) fn start_tls_receiver(store: &Path, identity: &Identity) -> (Proc, String) {
    let mut cmd = crate::support::agent();
    cmd.args(crate::support::receiver_args(store, "127.0.0.1:0", "test-api-key", &[TEST_KEY_B64]));
    cmd.args(["--tls-cert", s(&identity.cert), "--tls-key", s(&identity.key)]);
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().expect("rx");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let url = line.trim().strip_prefix("listening on ").expect("url").to_string();
    assert!(url.starts_with("https://"), "{url}");
    (Proc { child }, url)
}

/// One POST with the library's client; `Ok(status)` once TLS is through.
pub(crate) fn post(url: &str, ca_file: Option<&Path>, pinned: &[[u8; 32]]) -> Result<u16, HttpError> {
    post_with(url, ca_file, pinned, true)
}

fn post_with(url: &str, ca_file: Option<&Path>, pinned: &[[u8; 32]], verify_tls: bool) -> Result<u16, HttpError> {
    let settings = HttpSettings {
        ca_file,
        pinned,
        verify_tls,
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(5),
    };
    let client = HttpClient::new(url, None, &settings)?;
    client.post_json("/api/v2/batches", b"{}").map(|r| r.status)
}

#[test]
fn a_self_signed_ca_certificate_is_explained_and_works_when_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = self_signed_ca_true(dir.path());
    let (_receiver, url) = start_tls_receiver(&dir.path().join("store"), &identity);
    let fp = fingerprint_text(&identity.fingerprint);

    // In ca_file: rustls refuses a CA certificate as the server's own (CaUsedAsEndEntity).
    let error = post(&url, Some(&identity.cert), &[]).expect_err("CA:TRUE as end entity");
    let text = error.to_string();
    assert!(error.needs_admin(), "{text}");
    assert!(text.contains("CA certificate") && text.contains("server_cert_sha256") && text.contains(&fp), "{text}");
    assert!(!text.contains("OtherError"), "a sentence, not a debug dump: {text}");

    // Trusted by nobody: the same fix is offered.
    let error = post(&url, None, &[]).expect_err("untrusted");
    let text = error.to_string();
    assert!(error.needs_admin() && text.contains("server_cert_sha256") && text.contains(&fp), "{text}");

    // Pinned: through (the receiver answers; the empty batch is its business).
    let status = post(&url, None, &[identity.fingerprint]).map_err(|e| e.to_string()).expect("pinned");
    assert!((200..500).contains(&status), "{status}");
    // Among several pins (a renewal), too.
    assert!(post(&url, None, &[[7; 32], identity.fingerprint]).is_ok());

    // verify_ssl: false (Atlas compatibility) still connects.
    assert!(post_with(&url, None, &[], false).is_ok());

    // A wrong pin: refused, with the fingerprint the server showed.
    let error = post(&url, None, &[[7; 32]]).expect_err("wrong pin");
    let text = error.to_string();
    assert!(error.needs_admin() && text.contains("not one pinned") && text.contains(&fp), "{text}");
}

#[test]
fn a_private_ca_in_ca_file_and_a_wrong_host_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, leaf) = private_ca_and_leaf(dir.path(), &["127.0.0.1", "localhost"]);
    let (_receiver, url) = start_tls_receiver(&dir.path().join("store"), &leaf);
    assert!(post(&url, Some(&ca), &[]).is_ok(), "the leaf chains to ca_file");
    let error = post(&url, None, &[]).expect_err("CA not given");
    assert!(error.to_string().contains("not signed by a CA"), "{error}");
    // A leaf pinned directly works as well (no CA needed).
    assert!(post(&url, None, &[leaf.fingerprint]).is_ok());

    // Pinning the CA instead of the server's certificate: named as the mix-up it is.
    let (chain, ca_fingerprint) = leaf.chain.clone().expect("chain");
    let with_chain = Identity { cert: chain, key: leaf.key.clone(), fingerprint: leaf.fingerprint, chain: None };
    let (_chain_receiver, chain_url) = start_tls_receiver(&dir.path().join("store-chain"), &with_chain);
    assert!(post(&chain_url, Some(&ca), &[]).is_ok(), "a chain with its CA verifies too");
    let error = post(&chain_url, None, &[ca_fingerprint]).expect_err("a CA pin is not a server pin");
    let text = error.to_string();
    assert!(text.contains("pins a CA of the server's chain") && text.contains("ca_file"), "{text}");
    assert!(text.contains(&fingerprint_text(&leaf.fingerprint)), "{text}");

    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let (ca, leaf) = private_ca_and_leaf(&other, &["fleet.example.com"]);
    let (_receiver, url) = start_tls_receiver(&other.join("store"), &leaf);
    let error = post(&url, Some(&ca), &[]).expect_err("name mismatch");
    let text = error.to_string();
    assert!(
        error.needs_admin() && text.contains("not valid for 127.0.0.1") && text.contains("subjectAltName"),
        "{text}"
    );
}

#[test]
fn plain_http_on_a_tls_port_and_tls_on_a_plain_port_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (receiver, url) = crate::support::start_receiver(&dir.path().join("store"), "127.0.0.1:0", "k", &[]);
    let https = url.replace("http://", "https://");
    let error = post(&https, None, &[]).expect_err("no TLS there");
    let text = error.to_string();
    assert!(error.needs_admin() && text.contains("did not answer in TLS") && text.contains("http://"), "{text}");
    drop(receiver);

    let identity = self_signed_ca_true(dir.path());
    let (_tls_receiver, url) = start_tls_receiver(&dir.path().join("store-tls"), &identity);
    let error = post(&url.replace("https://", "http://"), None, &[]).expect_err("TLS there");
    let text = error.to_string();
    assert!(error.needs_admin() && text.contains("did not answer in HTTP") && text.contains("https://"), "{text}");
}

#[test]
fn the_agent_logs_one_error_with_the_fix_and_delivers_once_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = self_signed_ca_true(dir.path());
    let store = dir.path().join("store");
    let (_receiver, url) = start_tls_receiver(&store, &identity);

    // The usual first try: the self-signed certificate as ca_file. Three seconds at interval
    // 0.2 s: one error with the fix, then a slow retry; no warning per attempt.
    let wrong = dir.path().join("wrong");
    std::fs::create_dir(&wrong).expect("mkdir");
    let extra = format!(r#","ca_file":"{}""#, s(&identity.cert));
    let config = agent_config(&wrong, "c.json", &url, Some(TEST_KEY_B64), "v2", &extra);
    let log_path = wrong.join("agent.log");
    let mut agent = start_agent(&config, &log_path);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.terminate(Duration::from_secs(8)).code(), Some(0));
    let log = std::fs::read_to_string(&log_path).expect("log");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") && l.contains("TLS with")).collect();
    assert_eq!(errors.len(), 1, "one error per slow retry: {log}");
    assert!(errors[0].contains("server_cert_sha256") && errors[0].contains("retrying in 300s"), "{}", errors[0]);
    assert!(!log.lines().any(|l| l.contains("WARN") && l.contains("POST")), "no warning per attempt: {log}");
    assert!(stored_records(&store, "test-machine").is_empty());

    // The fix the message gives: pin the fingerprint. Everything kept is delivered.
    let pinned = dir.path().join("pinned");
    std::fs::create_dir(&pinned).expect("mkdir");
    std::fs::rename(wrong.join("spool"), pinned.join("spool")).expect("keep the spool");
    let extra = format!(r#","server_cert_sha256":"{}""#, fingerprint_text(&identity.fingerprint));
    let config = agent_config(&pinned, "c.json", &url, Some(TEST_KEY_B64), "v2", &extra);
    let mut agent = start_agent(&config, &pinned.join("agent.log"));
    let delivered = wait_for(Duration::from_secs(10), || stored_records(&store, "test-machine").len() >= 20);
    assert_eq!(agent.terminate(Duration::from_secs(8)).code(), Some(0));
    let log = std::fs::read_to_string(pinned.join("agent.log")).unwrap_or_default();
    assert!(delivered, "pinned delivery; log: {log}");
    assert_eq!(crate::support::spool_unacked(&pinned.join("spool")), 0, "the backlog of the failed run too");
}
