//! The TLS settings of every HTTPS client in fleet-agent (the sender's client and the
//! speedtest): rustls with the ring provider, trusting Mozilla's root certificates from
//! `webpki-root-certs`, plus any extra CA certificates the caller adds (`ca_file`).
//!
//! One root store for the whole binary: ureq's own `rustls` feature would link a second copy
//! of Mozilla's roots (`webpki-roots`, as trust anchors) beside this one (the certificates,
//! which `ca_file` needs because ureq takes extra roots only as certificates), so ureq is
//! built with `rustls-no-provider` and every client gets its provider and roots from here.
//! Nothing may use ureq's default `TlsConfig`: without `webpki-roots` its default roots panic
//! on the first HTTPS request.

use std::sync::Arc;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// Mozilla's root certificates (borrowed from the binary, not copied) followed by `extra`.
pub fn roots_with(extra: Vec<Certificate<'static>>) -> RootCerts {
    let mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|der| Certificate::from_der(der.as_ref()));
    RootCerts::Specific(Arc::new(mozilla.chain(extra).collect()))
}

/// TLS settings trusting Mozilla's roots plus `extra`; `verify: false` turns certificate
/// verification off (Atlas's `verify_ssl: false`; the caller warns about it).
pub fn tls_config(extra: Vec<Certificate<'static>>, verify: bool) -> TlsConfig {
    TlsConfig::builder()
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(roots_with(extra))
        .disable_verification(!verify)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mozilla_roots_come_first_and_extra_roots_follow() {
        let extra = Certificate::from_der(b"not parsed here").to_owned();
        let RootCerts::Specific(roots) = roots_with(vec![extra]) else {
            panic!("expected specific roots");
        };
        assert_eq!(roots.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() + 1);
        assert!(roots.len() > 100, "Mozilla's store holds well over 100 roots");
        assert_eq!(roots.last().map(|c| c.der()), Some(&b"not parsed here"[..]));
    }
}
