//! Who may do what: the agents' API key writes, the read token reads.
//!
//! | endpoint | credential |
//! |---|---|
//! | `POST /api/fleet/report`, `POST /api/fleet/widget-logs`, `POST /api/v2/batches`, speedtest | `X-API-Key: API_KEY` (every laptop holds it) |
//! | `GET /api/fleet/machines`, `GET /api/fleet/widget-logs` (exports) | `Authorization: Bearer READ_TOKEN` |
//! | `GET /api/health` | none |
//!
//! The API key on a read endpoint is answered 403 (it is a real credential, but not for
//! reads); no or a wrong credential is 401. Without a read token configured every read is
//! 403: reads are then only possible on the store itself (`fleet-agent receive ls/show`).
//! Every comparison is constant-time in the secret's length.

use fleet_wire::keys::SecretString;

use super::http::Request;

/// The receiver's credentials.
#[derive(Default)]
pub struct Credentials {
    /// Required `X-API-Key` on write and speedtest endpoints (`None`: no check, with a warning).
    pub api_key: Option<SecretString>,
    /// Required bearer token on read endpoints (`None`: reads disabled).
    pub read_token: Option<SecretString>,
}

/// What a request's credentials allow on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Go on.
    Allowed,
    /// 401: no credential, or a wrong one.
    Unauthorized,
    /// 403: a valid credential of the wrong kind (the API key on a read), or reads disabled.
    Forbidden,
}

/// Equality that does not stop at the first differing byte (timing reveals only the length).
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn matches(given: Option<&str>, expected: &SecretString) -> bool {
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.expose().as_bytes()))
}

/// The bearer token of an `Authorization` header, if it has one.
pub fn bearer(request: &Request) -> Option<&str> {
    let value = request.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Credentials {
    /// May this request write (ingest, speedtest)? `path_key` is a key carried in the URL path
    /// (speedtest clients that cannot set headers).
    pub fn write(&self, request: &Request, path_key: Option<&str>) -> Access {
        let Some(expected) = &self.api_key else {
            return Access::Allowed;
        };
        if matches(request.header("x-api-key"), expected) || matches(path_key, expected) {
            Access::Allowed
        } else {
            Access::Unauthorized
        }
    }

    /// May this request read (machine list, exports)?
    pub fn read(&self, request: &Request) -> Access {
        let token = bearer(request);
        if let Some(expected) = &self.read_token {
            if matches(token, expected) {
                return Access::Allowed;
            }
        }
        let api_key =
            self.api_key.as_ref().is_some_and(|k| matches(request.header("x-api-key"), k) || matches(token, k));
        if api_key || self.read_token.is_none() {
            Access::Forbidden
        } else {
            Access::Unauthorized
        }
    }

    /// The 403 message for a read.
    pub fn read_forbidden_message(&self) -> &'static str {
        if self.read_token.is_none() {
            "reads are disabled: start the receiver with --read-token-file (or FLEET_READ_TOKEN) and send Authorization: Bearer TOKEN"
        } else {
            "the agents' API key may only write: reads need Authorization: Bearer READ_TOKEN"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(constant_time_eq(b"", b""));
    }
}
