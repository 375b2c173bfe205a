//! Pure parts of the disk reader: `/proc/diskstats` and the `df`/psutil usage arithmetic,
//! compiled and tested on every OS.

use crate::units::round1;
use crate::ParseError;

/// Bytes per sector in `/proc/diskstats` (always 512, whatever the device's sector size).
pub const DISKSTATS_SECTOR: u64 = 512;

/// I/O counters summed over whole disks (partitions are not added twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskIo {
    /// Completed reads.
    pub read_count: u64,
    /// Completed writes.
    pub write_count: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Rows of the table (all devices), to notice added or removed devices.
    pub rows: u32,
}

/// Parse `/proc/diskstats` (`major minor name reads merged sectors ms writes merged sectors
/// …`), summing the devices for which `is_disk(name)` holds, as psutil's
/// `disk_io_counters()` does with the whole disks of `/sys/block`.
pub fn parse_diskstats(text: &str, is_disk: impl Fn(&str) -> bool) -> Result<DiskIo, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut io = DiskIo::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_ascii_whitespace();
        let name = fields.nth(2).ok_or(ParseError::MissingField("device name"))?;
        let mut values = [0u64; 7];
        for slot in values.iter_mut() {
            let field = fields.next().ok_or(ParseError::MissingField("write counters"))?;
            *slot = field.parse().map_err(|_| ParseError::bad_value("diskstats counter", field))?;
        }
        io.rows += 1;
        if !is_disk(name) {
            continue;
        }
        io.read_count = io.read_count.saturating_add(values[0]);
        io.read_bytes = io.read_bytes.saturating_add(values[2].saturating_mul(DISKSTATS_SECTOR));
        io.write_count = io.write_count.saturating_add(values[4]);
        io.write_bytes = io.write_bytes.saturating_add(values[6].saturating_mul(DISKSTATS_SECTOR));
    }
    Ok(io)
}

/// Usage of one filesystem with `df`'s and psutil's meaning.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DiskUsage {
    /// Size in bytes (`f_blocks × f_frsize`).
    pub total: u64,
    /// `total − free blocks`: what is really used, the root reserve not counted as used.
    pub used: u64,
    /// Free to unprivileged users (`f_bavail × f_frsize`).
    pub free: u64,
    /// `used / (used + free) × 100`, one decimal: `df`'s `Use%`, 100 when users can write
    /// no more even if root still can.
    pub percent: f64,
}

/// [`DiskUsage`] from `statvfs` numbers.
pub fn usage_from_statvfs(blocks: u64, blocks_free: u64, blocks_avail: u64, fragment_size: u64) -> DiskUsage {
    let total = blocks.saturating_mul(fragment_size);
    let free = blocks_avail.saturating_mul(fragment_size);
    let used = total.saturating_sub(blocks_free.saturating_mul(fragment_size));
    let denominator = used.saturating_add(free);
    let percent = if denominator == 0 { 0.0 } else { round1(used as f64 * 100.0 / denominator as f64) };
    DiskUsage { total, used, free, percent }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};

    /// The whole disks of the capture machine's `/sys/block`.
    fn whole_disk(name: &str) -> bool {
        name == "vda" || name == "zram0" || name.starts_with("loop")
    }

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        name.starts_with("proc-diskstats").then(|| result_json(parse_diskstats(body, whole_disk)))
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("disk", render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust("disk", |text| drop(parse_diskstats(text, |_| true)), render);
    }

    #[test]
    fn reads_and_writes_of_whole_disks_in_bytes() {
        let io = parse_diskstats(&fixture("disk", "proc-diskstats--vda-loop-zram-captured.txt"), |n| n == "vda");
        let io = io.expect("parses");
        let line = fixture("disk", "proc-diskstats--vda-loop-zram-captured.txt");
        let vda: Vec<u64> = line
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some("vda"))
            .map(|l| l.split_whitespace().skip(3).filter_map(|f| f.parse().ok()).collect())
            .unwrap_or_default();
        assert_eq!((io.read_count, io.write_count), (vda[0], vda[4]));
        assert_eq!((io.read_bytes, io.write_bytes), (vda[2] * 512, vda[6] * 512));
        assert_eq!(parse_diskstats("   7 0 loop0 1 2\n", |_| true), Err(ParseError::MissingField("write counters")));
    }

    #[test]
    fn usage_counts_the_root_reserve_as_neither_used_nor_free() {
        // 100 GiB in 4 KiB blocks, 16 GiB used, 5 % reserved for root: df says 17 %.
        let block = 4096;
        let blocks = 100 * 262_144;
        let bfree = 84 * 262_144;
        let bavail = bfree - 5 * 262_144;
        let usage = usage_from_statvfs(blocks, bfree, bavail, block);
        assert_eq!(usage.total, 100 << 30);
        assert_eq!(usage.used, 16 << 30);
        assert_eq!(usage.free, 79 << 30);
        assert_eq!(usage.percent, 16.8);
        assert_eq!(usage_from_statvfs(0, 0, 0, 4096).percent, 0.0);
        // Full for users, root reserve left: 100 %.
        assert_eq!(usage_from_statvfs(100, 5, 0, 1).percent, 100.0);
    }
}
