//! HTTPS for the receiver: a rustls 0.23 server config from PEM files, with the same TLS
//! algorithms as the agent's client (`fleet_wire::tls::crypto_provider`: ring, AES-GCM suites
//! only).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::ReceiverError;

fn tls_error(path: &Path, why: impl std::fmt::Display) -> ReceiverError {
    ReceiverError::Tls { path: path.to_path_buf(), why: why.to_string() }
}

/// Load the certificate chain and private key (PEM) into a server config.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ReceiverError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_error(cert, format!("reading certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(cert, format!("parsing certificates: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(cert, "no certificate found in the PEM file"));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, format!("reading the private key: {e}")))?;
    let provider = Arc::new(fleet_wire::tls::crypto_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| tls_error(&PathBuf::from(key), format!("certificate and key do not form a usable pair: {e}")))?;
    Ok(Arc::new(config))
}
