//! The TLS cryptography every connection of this project uses: the sender's client, the
//! speedtest's client and the receiver's server all build their rustls configuration with
//! [`crypto_provider`], so the binary links one set of algorithms.
//!
//! It is rustls' *ring* provider without ChaCha20-Poly1305. Every TLS 1.3 server must offer
//! `TLS_AES_128_GCM_SHA256` (RFC 8446, section 9.1), and TLS 1.2 servers of the last fifteen
//! years offer `TLS_ECDHE_*_WITH_AES_*_GCM_*`, so AES-GCM alone reaches every server a fleet
//! runs; the ChaCha20-Poly1305 code (ring's assembly and rustls' glue, about 52 KB of a
//! binary budgeted at 2.5 MiB) only served peers without AES instructions, which x86_64 and
//! arm64 laptops all have. A peer that offers ChaCha20-Poly1305 only is refused in the
//! handshake (a `handshake_failure` alert), which the sender explains.
//!
//! The provider is assembled from ring's pieces rather than filtered from
//! `rustls::crypto::ring::default_provider()`: that function's suite table refers to the
//! ChaCha20-Poly1305 suites, so calling it at all links them.
//!
//! | | offered |
//! |---|---|
//! | TLS 1.3 suites | `TLS_AES_256_GCM_SHA384`, `TLS_AES_128_GCM_SHA256` |
//! | TLS 1.2 suites | `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`, `…_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`, `…_AES_128_GCM_SHA256` |
//! | key exchange | X25519, secp256r1, secp384r1 (ring's, in its order) |
//! | signatures | ring's: ECDSA P-256/P-384, Ed25519, RSA-PSS and RSA PKCS#1 2048–8192 bits |

use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use std::sync::Arc;
use webpki::ring as algs;

/// rustls' *ring* provider with the AES-GCM cipher suites only (the module's table lists what
/// it offers): what every `ClientConfig` and `ServerConfig` of this project is built with.
pub fn crypto_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &RingParts,
        key_provider: &RingParts,
    }
}

/// The random numbers and the private-key loader of the provider: the operating system's
/// generator, and ring's signing keys (RSA, ECDSA, Ed25519), as ring's own provider does.
#[derive(Debug)]
struct RingParts;

impl SecureRandom for RingParts {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        getrandom::fill(buf).map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for RingParts {
    fn load_private_key(&self, key_der: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        rustls::crypto::ring::sign::any_supported_type(&key_der)
    }
}

/// The certificate and handshake signatures webpki verifies with ring: the same table as
/// rustls' *ring* provider (private there; the test `the_same_signatures_as_rings_provider`
/// compares them).
static SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        algs::ECDSA_P256_SHA256,
        algs::ECDSA_P256_SHA384,
        algs::ECDSA_P384_SHA256,
        algs::ECDSA_P384_SHA384,
        algs::ED25519,
        algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        algs::RSA_PKCS1_2048_8192_SHA256,
        algs::RSA_PKCS1_2048_8192_SHA384,
        algs::RSA_PKCS1_2048_8192_SHA512,
        algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        // For TLS 1.2 the curve is not fixed by the scheme; for TLS 1.3 it is.
        (SignatureScheme::ECDSA_NISTP384_SHA384, &[algs::ECDSA_P384_SHA384, algs::ECDSA_P256_SHA384]),
        (SignatureScheme::ECDSA_NISTP256_SHA256, &[algs::ECDSA_P256_SHA256, algs::ECDSA_P384_SHA256]),
        (SignatureScheme::ED25519, &[algs::ED25519]),
        (SignatureScheme::RSA_PSS_SHA512, &[algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
        (SignatureScheme::RSA_PSS_SHA384, &[algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
        (SignatureScheme::RSA_PSS_SHA256, &[algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
        (SignatureScheme::RSA_PKCS1_SHA512, &[algs::RSA_PKCS1_2048_8192_SHA512]),
        (SignatureScheme::RSA_PKCS1_SHA384, &[algs::RSA_PKCS1_2048_8192_SHA384]),
        (SignatureScheme::RSA_PKCS1_SHA256, &[algs::RSA_PKCS1_2048_8192_SHA256]),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CipherSuite, NamedGroup, ProtocolVersion};

    fn suites(provider: &CryptoProvider) -> Vec<(CipherSuite, ProtocolVersion)> {
        provider.cipher_suites.iter().map(|s| (s.suite(), s.version().version)).collect()
    }

    #[test]
    fn aes_gcm_suites_only_for_tls_1_3_and_1_2() {
        use CipherSuite::*;
        use ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(
            suites(&crypto_provider()),
            [
                (TLS13_AES_256_GCM_SHA384, TLSv1_3),
                (TLS13_AES_128_GCM_SHA256, TLSv1_3),
                (TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLSv1_2),
                (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLSv1_2),
                (TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLSv1_2),
                (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLSv1_2),
            ]
        );
    }

    /// Everything but the ChaCha20-Poly1305 suites is ring's provider as it is: the same suites
    /// in the same order, key exchange groups, signature table and key loader behaviour.
    #[test]
    fn rings_provider_minus_chacha20_poly1305() {
        let ring = rustls::crypto::ring::default_provider();
        let ours = crypto_provider();
        let without_chacha: Vec<_> =
            suites(&ring).into_iter().filter(|(suite, _)| !format!("{suite:?}").contains("CHACHA20")).collect();
        assert_eq!(suites(&ours), without_chacha);
        assert_eq!(suites(&ring).len(), suites(&ours).len() + 3, "ring's three ChaCha20-Poly1305 suites");
        let groups = |p: &CryptoProvider| p.kx_groups.iter().map(|g| g.name()).collect::<Vec<NamedGroup>>();
        assert_eq!(groups(&ours), groups(&ring));
        assert_eq!(groups(&ours), [NamedGroup::X25519, NamedGroup::secp256r1, NamedGroup::secp384r1]);
    }

    #[test]
    fn the_same_signatures_as_rings_provider() {
        let ring = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let ours = crypto_provider().signature_verification_algorithms;
        assert_eq!(ours.supported_schemes(), ring.supported_schemes());
        assert_eq!(format!("{:?}", ours.all), format!("{:?}", ring.all));
        assert_eq!(format!("{:?}", ours.mapping), format!("{:?}", ring.mapping));
    }

    #[test]
    fn random_bytes_and_a_bad_private_key() {
        let provider = crypto_provider();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        provider.secure_random.fill(&mut a).expect("random");
        provider.secure_random.fill(&mut b).expect("random");
        assert_ne!(a, b);
        let garbage = PrivateKeyDer::Pkcs8(vec![0x30, 0x03, 0x02, 0x01, 0x00].into());
        assert!(provider.key_provider.load_private_key(garbage).is_err());
    }

    #[test]
    fn builds_client_and_server_configs_for_tls_1_2_and_1_3() {
        let provider = Arc::new(crypto_provider());
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        for version in versions {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[version])
                .expect("client versions");
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[version])
                .expect("server versions");
        }
    }
}
