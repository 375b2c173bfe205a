//! Small numeric helpers shared by widgets, so rounding is done one way everywhere.

/// `part / whole` as a percentage rounded to one decimal; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    round1(part as f64 * 100.0 / whole as f64)
}

/// Round to one decimal place (JSON-friendly; NaN and infinities become 0).
pub fn round1(x: f64) -> f64 {
    if x.is_finite() {
        (x * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// Round to two decimal places (NaN and infinities become 0).
pub fn round2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_and_guards_zero() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(5, 0), 0.0);
        assert_eq!(round1(f64::NAN), 0.0);
        assert_eq!(round2(1.23456), 1.23);
    }
}
