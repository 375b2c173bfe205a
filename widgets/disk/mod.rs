//! `disk`: usage of the root filesystem with `df`/psutil semantics (`used = total − free
//! blocks`, `percent = used / (used + available to users) × 100`), and cumulative I/O
//! counters since boot (`read_count`, `write_count`, `read_bytes`, `write_bytes`) summed over
//! whole disks.
//!
//! Usage: `statvfs("/")` on every Unix. Counters: Linux `/proc/diskstats`, kept open between
//! cycles ([`crate::procfs::ProcFile`]), for the disks listed in `/sys/block` (listed again only
//! when the number of rows changes; pure parser in [`parse`]); macOS `sysinfo` (bytes only).

pub mod parse;

use serde_json::json;

use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};
use parse::{usage_from_statvfs, DiskIo, DiskUsage};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "disk",
    summary: "Root filesystem total/used/free (bytes) and percent as df; cumulative read/write counts and bytes",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(DiskWidget::default()),
};

/// Usage of the filesystem holding `path`, from `statvfs`.
pub fn filesystem_usage(path: &str) -> Result<DiskUsage, CollectError> {
    let st = rustix::fs::statvfs(path).map_err(|e| CollectError::Other(format!("statvfs {path}: {e}")))?;
    Ok(usage_from_statvfs(st.f_blocks, st.f_bfree, st.f_bavail, st.f_frsize))
}

/// State between cycles: the read buffer, `/proc/diskstats` kept open (Linux) and the
/// whole-disk names of `/sys/block`.
pub struct DiskWidget {
    buf: String,
    #[cfg(target_os = "linux")]
    diskstats: crate::procfs::ProcFile,
    whole_disks: Vec<String>,
    rows_seen: u32,
    #[cfg(not(target_os = "linux"))]
    disks: Option<sysinfo::Disks>,
}

#[cfg_attr(
    not(target_os = "linux"),
    expect(clippy::derivable_impls, reason = "derivable without the Linux kept files")
)]
impl Default for DiskWidget {
    fn default() -> Self {
        DiskWidget {
            buf: String::new(),
            #[cfg(target_os = "linux")]
            diskstats: crate::procfs::ProcFile::new("/proc/diskstats"),
            whole_disks: Vec::new(),
            rows_seen: 0,
            #[cfg(not(target_os = "linux"))]
            disks: None,
        }
    }
}

impl DiskWidget {
    #[cfg(target_os = "linux")]
    fn io(&mut self) -> Result<DiskIo, CollectError> {
        let path = "/proc/diskstats";
        self.diskstats.read_into(&mut self.buf).map_err(|e| CollectError::Other(format!("reading {path}: {e}")))?;
        let parse = |disks: &[String], text: &str| {
            parse::parse_diskstats(text, |name| disks.iter().any(|d| d == name))
                .map_err(|error| CollectError::Parse { source: path.to_string(), error })
        };
        let mut io = parse(&self.whole_disks, &self.buf)?;
        if io.rows != self.rows_seen {
            // Devices came or went: list the whole disks again (`/sys/block` holds no partitions).
            self.whole_disks = std::fs::read_dir("/sys/block")
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            self.rows_seen = io.rows;
            io = parse(&self.whole_disks, &self.buf)?;
        }
        Ok(io)
    }

    #[cfg(not(target_os = "linux"))]
    fn io(&mut self) -> Result<DiskIo, CollectError> {
        use sysinfo::{DiskRefreshKind, Disks};
        let _ = (&self.buf, &self.whole_disks, self.rows_seen);
        let kind = DiskRefreshKind::nothing().with_io_usage();
        let disks = match &mut self.disks {
            Some(disks) => {
                disks.refresh_specifics(true, kind);
                disks
            }
            None => {
                let disks = Disks::new_with_refreshed_list_specifics(kind)
                    .map_err(|e| CollectError::Other(format!("listing disks: {e}")))?;
                self.disks.insert(disks)
            }
        };
        // Several mounts of one device share its counters.
        let mut per_device: std::collections::BTreeMap<&std::ffi::OsStr, (u64, u64)> = Default::default();
        for disk in disks.iter() {
            let usage = disk.usage();
            per_device.insert(disk.name(), (usage.total_read_bytes, usage.total_written_bytes));
        }
        let mut io = DiskIo::default();
        for (read, written) in per_device.values() {
            io.read_bytes = io.read_bytes.saturating_add(*read);
            io.write_bytes = io.write_bytes.saturating_add(*written);
        }
        Ok(io)
    }
}

impl Widget for DiskWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let usage = filesystem_usage("/")?;
        let io = self.io()?;
        let mut data = json!({
            "total": usage.total,
            "used": usage.used,
            "free": usage.free,
            "percent": usage.percent,
            "read_bytes": io.read_bytes,
            "write_bytes": io.write_bytes,
        });
        if cfg!(target_os = "linux") {
            if let Some(map) = data.as_object_mut() {
                map.insert("read_count".to_string(), json!(io.read_count));
                map.insert("write_count".to_string(), json!(io.write_count));
            }
        }
        Ok(vec![Sample::metric("disk", data)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixtureHost, Os};

    #[test]
    fn root_usage_matches_df() {
        let samples = DiskWidget::default().collect(&FixtureHost::new(Os::Linux), Timestamp(0)).expect("disk");
        let d = &samples[0].data;
        let total = d["total"].as_u64().expect("total");
        let used = d["used"].as_u64().expect("used");
        let free = d["free"].as_u64().expect("free");
        assert!(used + free <= total);
        for key in ["read_bytes", "write_bytes", "read_count", "write_count"] {
            assert!(d[key].is_u64(), "{key}");
        }
        // `df -P /` reports 1024-byte blocks: used and available, and Use% rounded up.
        let out = std::process::Command::new("df").args(["-P", "-k", "/"]).output().expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        let cols: Vec<u64> = text
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().skip(1).take(3).filter_map(|c| c.parse().ok()).collect())
            .unwrap_or_default();
        assert_eq!(cols.len(), 3, "{text}");
        let tolerance = 64 * 1024 * 1024;
        assert!((cols[1] * 1024).abs_diff(used) < tolerance, "df used {} KiB, ours {used}", cols[1]);
        assert!((cols[2] * 1024).abs_diff(free) < tolerance, "df avail {} KiB, ours {free}", cols[2]);
    }
}
