//! Pure part of the Linux memory reader: `/proc/meminfo`, compiled and tested on every OS.

use crate::ParseError;

/// The `/proc/meminfo` values the widget reports, in bytes (the file says `kB`: KiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`; on kernels before 3.14, which lack it, `MemFree + Buffers + Cached +
    /// SReclaimable - Shmem` (what `sysinfo`, and so the macOS reading's crate, computes).
    pub available: u64,
    /// `SwapTotal` (0 when absent).
    pub swap_total: u64,
    /// `SwapFree` (0 when absent).
    pub swap_free: u64,
}

/// Parse `/proc/meminfo` (`Key:   value kB` lines). `MemTotal` is required; a line whose
/// value is not a number is an error only for the keys read here.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let (mut total, mut available, mut swap_total, mut swap_free) = (None, None, None, None);
    let (mut free, mut buffers, mut cached, mut reclaimable, mut shmem) = (0, 0, 0, 0, 0);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let slot = match key {
            "MemTotal" => total.insert(0),
            "MemAvailable" => available.insert(0),
            "MemFree" => &mut free,
            "Buffers" => &mut buffers,
            "Cached" => &mut cached,
            "SReclaimable" => &mut reclaimable,
            "Shmem" => &mut shmem,
            "SwapTotal" => swap_total.insert(0),
            "SwapFree" => swap_free.insert(0),
            _ => continue,
        };
        let value = rest.split_whitespace().next().unwrap_or("");
        let kib: u64 = value.parse().map_err(|_| ParseError::bad_value("meminfo value", line))?;
        *slot = kib.saturating_mul(1024);
        // With MemAvailable the estimate's terms are not needed: the rest of the file (two
        // thirds of it) is not looked at.
        if total.is_some() && available.is_some() && swap_total.is_some() && swap_free.is_some() {
            break;
        }
    }
    let (swap_total, swap_free) = (swap_total.unwrap_or(0), swap_free.unwrap_or(0));
    let total = total.ok_or(ParseError::MissingField("MemTotal"))?;
    let available = available.unwrap_or_else(|| {
        free.saturating_add(buffers).saturating_add(cached).saturating_add(reclaimable).saturating_sub(shmem)
    });
    Ok(MemInfo { total, available, swap_total, swap_free })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        name.starts_with("proc-meminfo").then(|| result_json(parse_meminfo(body)))
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("memory", render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust("memory", |text| drop(parse_meminfo(text)), render);
    }

    #[test]
    fn kib_become_bytes_and_old_kernels_estimate_available() {
        let info = parse_meminfo(&fixture("memory", "proc-meminfo--24gib-no-swap-captured.txt")).expect("parses");
        assert_eq!(info.total % 1024, 0);
        assert!(info.available > 0 && info.available <= info.total);
        // Before Linux 3.14 there is no MemAvailable line.
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\nSReclaimable: 5 kB\n\
                   Shmem: 15 kB\nSwapTotal: 64 kB\nSwapFree: 60 kB\n";
        let info = parse_meminfo(old).expect("parses");
        assert_eq!(info, MemInfo { total: 1_024_000, available: 300 * 1024, swap_total: 65_536, swap_free: 61_440 });
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), Err(ParseError::MissingField("MemTotal")));
        assert!(parse_meminfo("MemTotal: lots kB\n").is_err());
    }
}
