//! A dependency-free UTC timestamp.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC. Stored and compared as an integer; formatted as
/// RFC 3339 with a `Z` (`2026-11-22T13:00:00.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time (a clock before 1970 reads as the epoch).
    pub fn now() -> Self {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp(ms)
    }

    /// Whole seconds since the epoch.
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T13:00:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.as_secs();
        let ms = self.0.rem_euclid(1000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60);
        }
        // Digits written in place: a record's time is formatted every cycle, and the
        // formatting machinery costs ten times this.
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let fields = [(0, 4, y as u64), (5, 2, u64::from(m)), (8, 2, u64::from(d))];
        let clock = [(11, 2, (rem / 3600) as u64), (14, 2, (rem % 3600 / 60) as u64), (17, 2, (rem % 60) as u64)];
        for (at, width, mut value) in fields.into_iter().chain(clock).chain([(20, 3, ms as u64)]) {
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        // ASCII digits and separators: one allocation of the exact size.
        std::str::from_utf8(&text).map(str::to_owned).unwrap_or_default()
    }

    /// Parse the output of [`Timestamp::to_rfc3339`] (also accepts no fraction). Returns `None`
    /// on anything else.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let text = text.strip_suffix('Z')?;
        let (date, time) = text.split_once('T')?;
        let mut dp = date.splitn(3, '-');
        let y: i64 = dp.next()?.parse().ok()?;
        let m: u32 = dp.next()?.parse().ok()?;
        let d: u32 = dp.next()?.parse().ok()?;
        let (hms, frac) = match time.split_once('.') {
            Some((hms, frac)) => (hms, frac),
            None => (time, "0"),
        };
        let mut tp = hms.splitn(3, ':');
        let h: i64 = tp.next()?.parse().ok()?;
        let mi: i64 = tp.next()?.parse().ok()?;
        let s: i64 = tp.next()?.parse().ok()?;
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 || frac.len() > 9 {
            return None;
        }
        // The first three characters of the fraction, padded with zeros (on the stack: a record's
        // time is parsed on every append).
        let mut digits = *b"000";
        let mut chars = frac.chars();
        for digit in &mut digits {
            match chars.next() {
                Some(c) if c.is_ascii() => *digit = c as u8,
                Some(_) => return None,
                None => break,
            }
        }
        let ms: i64 = std::str::from_utf8(&digits).ok()?.parse().ok()?;
        let days = days_from_civil(y, m, d);
        Some(Timestamp(((days * 86_400) + h * 3600 + mi * 60 + s) * 1000 + ms))
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01; inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_and_parse_back() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_305_600_123, "2026-11-22T00:00:00.123Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(Timestamp(ms).to_rfc3339(), text);
            assert_eq!(Timestamp::parse_rfc3339(text), Some(Timestamp(ms)));
        }
        assert_eq!(Timestamp::parse_rfc3339("2026-11-22T00:00:00Z"), Some(Timestamp(1_795_305_600_000)));
        // Every field's digits, and years outside 0..=9999 in the general form.
        assert_eq!(Timestamp(253_402_300_799_999).to_rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(1_234_567_890_007).to_rfc3339(), "2009-02-13T23:31:30.007Z");
        assert_eq!(Timestamp(253_402_300_800_000).to_rfc3339(), "10000-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::parse_rfc3339("2026-13-22T00:00:00Z"), None);
        assert_eq!(Timestamp::parse_rfc3339("garbage"), None);
    }
}
