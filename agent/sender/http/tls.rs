//! TLS for the sender's client: our own rustls configuration plugged into ureq as a connector,
//! so that the agent can
//!
//! - trust Mozilla's roots, those plus a private CA (`ca_file`), or exactly the certificates
//!   whose SHA-256 fingerprints are pinned (`server_cert_sha256`, for a self-signed server:
//!   the certificate is the trust anchor, as with an SSH host key, so its names, CA flag and
//!   dates are not checked; the handshake signature is, with the pinned certificate's key);
//! - remember the fingerprint of the certificate a server presented, and turn a handshake
//!   failure into a [`TlsFailure`]: a sentence saying what is wrong and how to fix it, with
//!   that fingerprint where pinning is the fix.
//!
//! The transport below mirrors ureq's own rustls transport (ureq 3.5, `unversioned` API: the
//! version is pinned in `Cargo.lock`), with buffers sized by the agent's config.

use std::fmt;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use sha2::{Digest, Sha256};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport, TransportAdapter,
};

/// Which server certificates are accepted.
pub enum Trust {
    /// Chains to Mozilla's roots, plus these extra CA certificates (`ca_file`).
    Roots(Vec<CertificateDer<'static>>),
    /// Exactly the certificates with these SHA-256 fingerprints (`server_cert_sha256`).
    Pinned(Vec<[u8; 32]>),
    /// Anything (`verify_ssl: false`, Atlas compatibility; warned about at every start).
    Off,
}

/// `AB:CD:…`, as `openssl x509 -noout -fingerprint -sha256` prints it.
pub fn fingerprint_text(fingerprint: &[u8; 32]) -> String {
    fingerprint.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// SHA-256 of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// The certificate check: pins, roots, or nothing; it remembers the last certificate seen.
struct Verifier {
    trust: VerifierTrust,
    algorithms: WebPkiSupportedAlgorithms,
    /// Fingerprint of the end-entity certificate of the last handshake.
    presented: Mutex<Option<[u8; 32]>>,
}

enum VerifierTrust {
    Roots(Arc<WebPkiServerVerifier>),
    Pinned(Vec<[u8; 32]>),
    Off,
}

/// The pinned fingerprints do not include the server's certificate (`ca_in_chain`: but they
/// name a CA certificate the server sent along, a common mix-up).
#[derive(Debug)]
struct PinMismatch {
    ca_in_chain: bool,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("certificate fingerprint is not pinned")
    }
}

impl std::error::Error for PinMismatch {}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier")
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity.as_ref());
        if let Ok(mut presented) = self.presented.lock() {
            *presented = Some(seen);
        }
        match &self.trust {
            VerifierTrust::Off => Ok(ServerCertVerified::assertion()),
            VerifierTrust::Pinned(pins) if pins.contains(&seen) => Ok(ServerCertVerified::assertion()),
            VerifierTrust::Pinned(pins) => {
                let ca_in_chain = intermediates.iter().any(|c| pins.contains(&fingerprint(c.as_ref())));
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                    PinMismatch { ca_in_chain },
                )))))
            }
            VerifierTrust::Roots(webpki) => {
                webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.trust {
            VerifierTrust::Off => Ok(HandshakeSignatureValid::assertion()),
            _ => rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.trust {
            VerifierTrust::Off => Ok(HandshakeSignatureValid::assertion()),
            _ => rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A ureq connector that wraps the TCP transport in TLS with our configuration.
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    verifier: Arc<Verifier>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConnector")
    }
}

impl TlsConnector {
    /// Build the rustls configuration (`fleet_wire::tls::crypto_provider`; TLS 1.2 and 1.3) for `trust`.
    pub fn new(trust: Trust) -> Result<Self, String> {
        let provider = Arc::new(fleet_wire::tls::crypto_provider());
        let algorithms = provider.signature_verification_algorithms;
        let trust = match trust {
            Trust::Off => VerifierTrust::Off,
            Trust::Pinned(pins) => VerifierTrust::Pinned(pins),
            Trust::Roots(extra) => {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                for cert in extra {
                    roots.add(cert).map_err(|e| format!("a certificate in it is not a usable CA: {e}"))?;
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("building the certificate verifier: {e}"))?;
                VerifierTrust::Roots(webpki)
            }
        };
        let verifier = Arc::new(Verifier { trust, algorithms, presented: Mutex::new(None) });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(TlsConnector { config: Arc::new(config), verifier })
    }

    fn failure(&self, host: &str, error: std::io::Error) -> ureq::Error {
        let rustls_error = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
        match rustls_error {
            Some(error) => {
                let presented = self.verifier.presented.lock().ok().and_then(|mut p| p.take());
                ureq::Error::Other(Box::new(TlsFailure { host: host.to_string(), error, presented }))
            }
            None => ureq::Error::from(error),
        }
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else { return Err(ureq::Error::ConnectionFailed) };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_string();
        let name = ServerName::try_from(host.clone())
            .map_err(|_| ureq::Error::Tls("server_url host is not a valid TLS name"))?;
        if let Ok(mut presented) = self.verifier.presented.lock() {
            *presented = None;
        }
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        if let Err(error) = conn.complete_io(&mut sock) {
            return Err(self.failure(&host, error));
        }
        let buffers = LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(Either::B(TlsTransport { buffers, stream: StreamOwned::new(conn, sock) })))
    }
}

/// An established TLS connection (ureq's rustls transport, with our configuration).
pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// A TLS handshake that failed: what rustls said, in a sentence with the fix.
#[derive(Debug, Clone)]
pub struct TlsFailure {
    /// The server's host name or address.
    pub host: String,
    /// rustls' error.
    pub error: rustls::Error,
    /// Fingerprint of the certificate the server presented, when it got that far.
    pub presented: Option<[u8; 32]>,
}

impl TlsFailure {
    /// True when retrying soon cannot help: a certificate or protocol mismatch that needs an
    /// admin (a wrong pin, an untrusted or expired certificate, plain HTTP on the port).
    pub fn needs_admin(&self) -> bool {
        use rustls::Error as E;
        matches!(
            self.error,
            E::InvalidCertificate(_)
                | E::InvalidMessage(_)
                | E::PeerIncompatible(_)
                | E::NoCertificatesPresented
                | E::UnsupportedNameType
                | E::AlertReceived(
                    rustls::AlertDescription::HandshakeFailure
                        | rustls::AlertDescription::ProtocolVersion
                        | rustls::AlertDescription::InsufficientSecurity
                        | rustls::AlertDescription::UnrecognisedName
                )
        )
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.host;
        let seen = self.presented.as_ref().map(fingerprint_text);
        let pin_hint = |f: &mut fmt::Formatter<'_>| match &seen {
            Some(fp) => write!(
                f,
                "pin it with \"server_cert_sha256\": \"{fp}\" after checking that this is the fingerprint \
                 `openssl x509 -noout -fingerprint -sha256 -in server.pem` prints on the server"
            ),
            None => f.write_str("pin it with server_cert_sha256"),
        };
        let certificate = match &self.error {
            rustls::Error::InvalidCertificate(e) => Some(e),
            _ => None,
        };
        match certificate {
            Some(CertificateError::Other(other)) if other.0.downcast_ref::<PinMismatch>().is_some() => {
                let ca_in_chain = other.0.downcast_ref::<PinMismatch>().is_some_and(|m| m.ca_in_chain);
                let seen = seen.as_deref().unwrap_or("?");
                if ca_in_chain {
                    write!(
                        f,
                        "TLS with {host}: server_cert_sha256 pins a CA of the server's chain, not the server's own \
                         certificate (SHA-256 {seen}): pin that one instead, or put the CA in ca_file"
                    )
                } else {
                    write!(
                        f,
                        "TLS with {host}: the server's certificate (SHA-256 {seen}) is not one pinned in \
                         server_cert_sha256; if the server's certificate was replaced, pin the new one after checking \
                         it on the server"
                    )
                }
            }
            Some(CertificateError::Other(other)) if format!("{:?}", other.0).contains("CaUsedAsEndEntity") => {
                write!(
                    f,
                    "TLS with {host}: the server presents a CA certificate (CA:TRUE, what `openssl req -x509` makes \
                     by default) as its own, which TLS refuses even when it is in ca_file. For a self-signed \
                     server, "
                )?;
                pin_hint(f)?;
                f.write_str(
                    "; or issue the server a leaf certificate from a private CA (README, \"Server certificates\")",
                )
            }
            Some(CertificateError::UnknownIssuer) => {
                write!(
                    f,
                    "TLS with {host}: the server's certificate is not signed by a CA this agent trusts. For a private \
                     CA, set ca_file to the CA's certificate (PEM); for a self-signed certificate, "
                )?;
                pin_hint(f)
            }
            Some(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => write!(
                f,
                "TLS with {host}: the server's certificate is not valid for {host} ({}): use a server_url with a \
                 name the certificate holds, or reissue it with {host} in its subjectAltName",
                self.error
            ),
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => write!(
                f,
                "TLS with {host}: the server's certificate has expired ({}): renew it on the server, or check \
                 this machine's clock",
                self.error
            ),
            Some(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => write!(
                f,
                "TLS with {host}: the server's certificate is not valid yet ({}): check this machine's clock",
                self.error
            ),
            Some(CertificateError::Revoked) => {
                write!(f, "TLS with {host}: the server's certificate has been revoked: the server needs a new one")
            }
            Some(_) => write!(
                f,
                "TLS with {host}: the server's certificate was refused ({}): check it on the server, or set \
                 ca_file / server_cert_sha256",
                self.error
            ),
            None => match &self.error {
                rustls::Error::InvalidMessage(_) => write!(
                    f,
                    "TLS with {host}: the server did not answer in TLS ({}): if it serves plain HTTP, use an \
                     http:// server_url; otherwise check the port",
                    self.error
                ),
                rustls::Error::PeerIncompatible(_) | rustls::Error::AlertReceived(_) => write!(
                    f,
                    "TLS with {host}: the server refused the handshake ({}): it must speak TLS 1.2 or 1.3 with an \
                     AES-GCM cipher suite (this agent offers no other: not ChaCha20-Poly1305 alone, nor CBC or RC4)",
                    self.error
                ),
                other => write!(f, "TLS with {host}: {other}"),
            },
        }
    }
}

impl std::error::Error for TlsFailure {}
