//! What a receiver checks and says before it starts, whoever starts it (`fleet-agent receive`
//! today): credentials that contradict each other are refused ([`credential_conflict`]), and
//! the security posture (API key, read token, transport keys, store sealing) is logged at every
//! start ([`announce`]), warnings included, so a plaintext store or an open write endpoint never
//! goes unsaid.

use std::fmt;

use fleet_wire::keys::{Key32, SecretString};

use crate::seal::{store_kid, StoreKeys};
use crate::ReceiverConfig;

/// Credentials of a receiver that contradict each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialConflict {
    /// A store key is also a fleet (transport) key, which every laptop holds.
    StoreKeyIsFleetKey,
    /// The read token equals the agents' API key, so every laptop could read every machine.
    ReadTokenIsApiKey,
}

impl fmt::Display for CredentialConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialConflict::StoreKeyIsFleetKey => f.write_str(
                "the store key must not be a fleet (transport) key: every laptop holds that one; make a store key with `fleet-agent keygen`",
            ),
            CredentialConflict::ReadTokenIsApiKey => f.write_str("the read token must differ from the agents' API key"),
        }
    }
}

impl std::error::Error for CredentialConflict {}

/// The first contradiction among a receiver's credentials, if any. A store key is recognised
/// by its key id ([`store_kid`]), so the store keys' bytes need not be kept beside the ciphers.
pub fn credential_conflict(
    encryption_keys: &[Key32],
    store_keys: &StoreKeys,
    api_key: Option<&SecretString>,
    read_token: Option<&SecretString>,
) -> Option<CredentialConflict> {
    if encryption_keys.iter().any(|key| store_keys.has(&store_kid(key))) {
        return Some(CredentialConflict::StoreKeyIsFleetKey);
    }
    if let (Some(api), Some(read)) = (api_key, read_token) {
        if api.expose() == read.expose() {
            return Some(CredentialConflict::ReadTokenIsApiKey);
        }
    }
    None
}

/// Log what this configuration accepts and how it stores: a warning for every weakened
/// default (no API key, plaintext bodies, a plaintext store), the key ids otherwise.
pub fn announce(config: &ReceiverConfig) {
    if config.api_key.is_none() {
        log::warn!("no API key configured (--api-key-file / FLEET_API_KEY): accepting writes from anyone");
    }
    if config.read_token.is_none() {
        log::info!("no read token (--read-token-file / FLEET_READ_TOKEN): reads over HTTP are disabled");
    }
    if config.encryption_keys.is_empty() {
        log::warn!(
            "no encryption key (--encryption-key-file / FLEET_ENCRYPTION_KEY): test mode, plaintext bodies accepted"
        );
    } else {
        let kids: Vec<String> = config.encryption_keys.iter().map(fleet_wire::envelope::kid).collect();
        log::info!("sealed bodies only; key ids {}", kids.join(", "));
    }
    let keys = config.store.keys();
    if keys.is_plaintext() {
        log::warn!(
            "--store-plaintext: the store is NOT encrypted at rest; anyone who can read {} reads every machine's data",
            config.store.describe()
        );
    } else {
        log::info!("store sealed at rest; store key ids {}", keys.kids().join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key32 {
        Key32::from_bytes([byte; 32])
    }

    #[test]
    fn contradicting_credentials_are_named() {
        let store = StoreKeys::new(&[key(1), key(2)]);
        let secret = |text: &str| SecretString::new(text.to_string());
        assert_eq!(credential_conflict(&[key(3)], &store, None, None), None);
        assert_eq!(
            credential_conflict(&[key(3), key(2)], &store, None, None),
            Some(CredentialConflict::StoreKeyIsFleetKey),
            "an older store key counts too"
        );
        assert_eq!(credential_conflict(&[key(1)], &StoreKeys::plaintext(), None, None), None);
        let (api, read) = (secret("a"), secret("a"));
        assert_eq!(
            credential_conflict(&[], &store, Some(&api), Some(&read)),
            Some(CredentialConflict::ReadTokenIsApiKey)
        );
        assert_eq!(credential_conflict(&[], &store, Some(&api), Some(&secret("b"))), None);
        assert_eq!(credential_conflict(&[], &store, Some(&api), None), None);
    }
}
