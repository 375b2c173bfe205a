//! What a server's answer means for the payload (docs/architecture.md, "Server answers").

use std::time::Duration;

use super::http::HttpResponse;

/// The sender's decision for one answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the server has it; drop it from the spool.
    Ack,
    /// 408, 429, 5xx, 3xx: keep it and retry after a backoff (at least `retry_after`).
    Retry {
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
        /// For the log and `status`.
        reason: String,
    },
    /// `400 Decryption failed`: the server holds another key. Keep everything, retry slowly.
    KeyMismatch,
    /// 401/403/404/405 (the API key or the URL is wrong, not the payload), or a TLS failure
    /// only an admin can fix (certificate, pin): keep, retry slowly. `reason` holds the hint.
    Misconfigured {
        /// For the log and `status`.
        reason: String,
    },
    /// `409` (v2): the server holds OTHER records under this `(machine_id, seq)`: the seq space
    /// collides with another sender's. Keep the records, resend them under a fresh seq.
    Conflict {
        /// For the log and `status`.
        reason: String,
    },
    /// Any other 4xx: this payload will never be accepted. Move it to `rejected/`.
    Reject {
        /// For the log and `status`.
        reason: String,
    },
}

/// Classify an answer.
pub fn classify(response: &HttpResponse) -> Verdict {
    let status = response.status;
    let snippet: String = response.body.chars().take(200).collect();
    match status {
        200..=299 => Verdict::Ack,
        400 if response.body.contains("Decryption failed") => Verdict::KeyMismatch,
        401 | 403 | 404 | 405 => {
            Verdict::Misconfigured { reason: format!("HTTP {status}: {snippet}: check api_key and server_url") }
        }
        408 | 425 | 429 | 500..=599 => {
            Verdict::Retry { retry_after: response.retry_after, reason: format!("HTTP {status}") }
        }
        300..=399 => Verdict::Retry {
            retry_after: None,
            reason: format!(
                "HTTP {status} redirect to {} (not followed; fix server_url)",
                response.location.as_deref().unwrap_or("?")
            ),
        },
        409 => Verdict::Conflict { reason: format!("HTTP 409: {snippet}") },
        400..=499 => Verdict::Reject { reason: format!("HTTP {status}: {snippet}") },
        _ => Verdict::Retry { retry_after: None, reason: format!("unexpected HTTP {status}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, retry_after: None, body: body.to_string(), location: None }
    }

    #[test]
    fn statuses_map_to_the_documented_verdicts() {
        assert_eq!(classify(&answer(200, "")), Verdict::Ack);
        assert_eq!(classify(&answer(201, "")), Verdict::Ack);
        assert_eq!(classify(&answer(400, r#"{"error":"Decryption failed"}"#)), Verdict::KeyMismatch);
        assert!(matches!(classify(&answer(400, r#"{"error":"missing machine_id"}"#)), Verdict::Reject { .. }));
        assert!(matches!(classify(&answer(413, "")), Verdict::Reject { .. }));
        assert!(matches!(classify(&answer(409, "{}")), Verdict::Conflict { .. }));
        assert!(matches!(classify(&answer(401, "")), Verdict::Misconfigured { .. }));
        assert!(matches!(classify(&answer(404, "")), Verdict::Misconfigured { .. }));
        let mut limited = answer(429, "");
        limited.retry_after = Some(Duration::from_secs(3));
        assert_eq!(
            classify(&limited),
            Verdict::Retry { retry_after: Some(Duration::from_secs(3)), reason: "HTTP 429".into() }
        );
        assert!(matches!(classify(&answer(503, "")), Verdict::Retry { .. }));
        assert!(matches!(classify(&answer(302, "")), Verdict::Retry { .. }));
    }
}
