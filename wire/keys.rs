//! Secret keys: the transport (fleet) key and the spool master key are both 32 random bytes.
//!
//! [`Key32`] has no `Debug`/`Display`, so a key cannot reach a log by accident, and it zeroizes
//! its bytes on drop. Keys travel as standard padded base64 (the Atlas `encryption_key`).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

/// A 256-bit secret key. Deliberately not `Debug`, `Clone` only explicitly via [`Key32::clone_secret`].
pub struct Key32([u8; 32]);

impl Drop for Key32 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why a text is not a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The text holds characters outside the standard base64 alphabet; names the first one.
    Alphabet {
        /// Offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// The text is base64 but malformed (bad padding or length).
    Encoding(String),
    /// The text decodes, but not to 32 bytes.
    Length(usize),
    /// The OS random number generator failed.
    Random(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Alphabet { found, at } => write!(
                f,
                "not standard base64: character {found:?} at offset {at} (expected A-Z a-z 0-9 + / and = padding)"
            ),
            KeyError::Encoding(why) => write!(f, "malformed base64: {why}"),
            KeyError::Length(n) => write!(f, "decodes to {n} bytes, expected exactly 32"),
            KeyError::Random(why) => write!(f, "OS random number generator failed: {why}"),
        }
    }
}

impl std::error::Error for KeyError {}

impl Key32 {
    /// Wrap raw bytes (the caller's copy should be zeroized by the caller).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key32(bytes)
    }

    /// 32 fresh bytes from the OS CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Key32(bytes))
    }

    /// Decode standard padded base64 of exactly 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if let Some((at, found)) =
            text.char_indices().find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/' || *c == '='))
        {
            return Err(KeyError::Alphabet { found, at });
        }
        let decoded = Zeroizing::new(STANDARD.decode(text).map_err(|e| KeyError::Encoding(e.to_string()))?);
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| KeyError::Length(decoded.len()))?;
        Ok(Key32(bytes))
    }

    /// Standard padded base64 (44 characters). Returned in a zeroizing string.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    /// The raw bytes, for the cipher.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An explicit copy (keys are not `Clone`, so copies are visible in review).
    pub fn clone_secret(&self) -> Self {
        Key32(self.0)
    }
}

/// A secret string (API key): no `Debug`, zeroized on drop.
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wrap a secret.
    pub fn new(value: String) -> Self {
        SecretString(Zeroizing::new(value))
    }

    /// The secret, for the one place that must send it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_errors_name_the_problem() {
        let key = Key32::generate().expect("random");
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(Key32::from_base64(&text).expect("decodes").as_bytes(), key.as_bytes());
        assert_eq!(Key32::from_base64("AAAA").err(), Some(KeyError::Length(3)));
        assert_eq!(Key32::from_base64("ab-c").err(), Some(KeyError::Alphabet { found: '-', at: 2 }));
        assert!(matches!(Key32::from_base64("A"), Err(KeyError::Encoding(_))));
    }
}
