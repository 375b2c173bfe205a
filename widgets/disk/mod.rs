//! `disk`: usage of the root filesystem and cumulative I/O byte counters since boot, summed
//! over the distinct block devices that hold mounted filesystems.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use sysinfo::{DiskRefreshKind, Disks};

use crate::units::percent;
use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "disk",
    summary: "Root filesystem total/used/free (bytes) and percent; cumulative read/write bytes",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(DiskWidget::default()),
};

/// Holds the disk list between cycles (refreshed in place, no re-enumeration cost).
#[derive(Default)]
pub struct DiskWidget {
    disks: Option<Disks>,
}

impl Widget for DiskWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let disks = match &mut self.disks {
            Some(disks) => {
                disks.refresh_specifics(true, DiskRefreshKind::nothing().with_storage().with_io_usage());
                disks
            }
            None => {
                let kind = DiskRefreshKind::nothing().with_storage().with_io_usage();
                let disks = Disks::new_with_refreshed_list_specifics(kind)
                    .map_err(|e| CollectError::Other(format!("listing disks: {e}")))?;
                self.disks.insert(disks)
            }
        };
        let root = disks
            .iter()
            .find(|d| d.mount_point() == Path::new("/"))
            .ok_or_else(|| CollectError::Other("no filesystem mounted at /".to_string()))?;
        let total = root.total_space();
        let free = root.available_space();
        let used = total.saturating_sub(free);
        // Several mounts of one device (bind mounts, btrfs subvolumes) share its counters.
        let mut per_device: BTreeMap<&std::ffi::OsStr, (u64, u64)> = BTreeMap::new();
        for disk in disks.iter() {
            let usage = disk.usage();
            per_device.insert(disk.name(), (usage.total_read_bytes, usage.total_written_bytes));
        }
        let (read, written) = per_device.values().fold((0u64, 0u64), |(r, w), (dr, dw)| (r + dr, w + dw));
        let data = json!({
            "total": total,
            "used": used,
            "free": free,
            "percent": percent(used, total),
            "read_bytes": read,
            "write_bytes": written,
        });
        Ok(vec![Sample::metric("disk", data)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixtureHost, Os};

    #[test]
    fn root_usage_is_consistent() {
        let samples = DiskWidget::default().collect(&FixtureHost::new(Os::Linux), Timestamp(0)).expect("disk");
        let d = &samples[0].data;
        let total = d["total"].as_u64().expect("total");
        assert_eq!(d["used"].as_u64().zip(d["free"].as_u64()).map(|(u, f)| u + f), Some(total));
        assert!(d["read_bytes"].is_u64() && d["write_bytes"].is_u64());
    }
}
