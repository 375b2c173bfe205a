//! Non-secret randomness (jitter, temporary names) from the OS CSPRNG, in one place.

/// A uniform random number in `[0, 1)` (0.5 if the OS generator fails: jitter then degrades
/// to a fixed midpoint, which is harmless).
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_is_in_range() {
        for _ in 0..100 {
            assert!((0.0..1.0).contains(&super::random_unit()));
        }
    }
}
