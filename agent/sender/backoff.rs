//! Retry pacing: exponential backoff with full jitter (AWS architecture blog, "Exponential
//! Backoff and Jitter"): after the n-th consecutive failure wait a uniformly random time in
//! `[0, min(MAX, BASE * 2^n)]`, but at least `Retry-After` when the server sent one, and at
//! least [`MIN_DELAY`] so a failing server is never hammered.

use std::time::Duration;

/// Delay scale of the first retry.
pub const BASE: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
pub const MAX: Duration = Duration::from_secs(300);
/// Shortest delay between attempts.
pub const MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest `Retry-After` honoured (a server asking for more gets this).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Consecutive-failure state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forget failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Record a failure and return how long to wait. `unit` is a uniform random number in
    /// `[0, 1)` (injected so tests are exact); `retry_after` is the server's request.
    pub fn next_delay(&mut self, unit: f64, retry_after: Option<Duration>) -> Duration {
        let ceiling = BASE.saturating_mul(1u32 << self.failures.min(16)).min(MAX);
        self.failures = self.failures.saturating_add(1);
        let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
        let asked = retry_after.map(|d| d.min(MAX_RETRY_AFTER)).unwrap_or(Duration::ZERO);
        jittered.max(asked).max(MIN_DELAY)
    }

    /// The slow-retry delay used for a key mismatch or an authentication failure: the
    /// maximum, since only an admin can fix it.
    pub fn slow_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_to_five_minutes_with_full_jitter() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<u64> = (0..12).map(|_| backoff.next_delay(0.999_999, None).as_secs()).collect();
        assert_eq!(ceilings, vec![0, 1, 3, 7, 15, 31, 63, 127, 255, 299, 299, 299]);
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(0.0, None), MIN_DELAY);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
    }

    #[test]
    fn retry_after_is_a_floor_with_a_cap() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(0.0, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(backoff.next_delay(0.0, Some(Duration::from_secs(999_999))), MAX_RETRY_AFTER);
        assert_eq!(backoff.slow_delay(), MAX);
    }
}
