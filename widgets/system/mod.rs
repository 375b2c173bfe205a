//! `system`: uptime and boot time (seconds; boot time as Unix seconds).
//!
//! Linux: uptime is `CLOCK_BOOTTIME`, the clock `/proc/uptime` prints, read without opening a
//! file (libc's `clock_gettime`, a vDSO call); the boot time is the `btime` line of `/proc/stat` (pure parser in [`parse`]). Other
//! OSes: `sysinfo`.

pub mod parse;

use serde_json::json;

use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "system",
    summary: "Uptime (s) and boot time (Unix s)",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(SystemWidget::default()),
};

/// Seconds the wall clock may move against uptime before the boot time is read again.
const CLOCK_STEP_S: i64 = 2;

/// Whole seconds since boot, suspended time included (what `/proc/uptime`'s first field and
/// `sysinfo` say, cut to the second).
pub fn uptime() -> Result<u64, CollectError> {
    #[cfg(target_os = "linux")]
    {
        use nix::time::{clock_gettime, ClockId};
        let since_boot = clock_gettime(ClockId::CLOCK_BOOTTIME)
            .map_err(|e| CollectError::Other(format!("reading CLOCK_BOOTTIME: {e}")))?;
        u64::try_from(since_boot.tv_sec()).map_err(|_| CollectError::Other("CLOCK_BOOTTIME is negative".to_string()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        sysinfo::System::uptime().map_err(|e| CollectError::Other(format!("reading uptime: {e}")))
    }
}

/// When the machine booted, Unix seconds. Linux: `btime` of `/proc/stat`; elsewhere `sysinfo`.
pub fn boot_time() -> Result<u64, CollectError> {
    #[cfg(target_os = "linux")]
    {
        let path = "/proc/stat";
        let mut text = String::new();
        crate::procfs::read_into(path, &mut text).map_err(|e| CollectError::Other(format!("reading {path}: {e}")))?;
        parse::parse_proc_stat_btime(&text).map_err(|error| CollectError::Parse { source: path.to_string(), error })
    }
    #[cfg(not(target_os = "linux"))]
    {
        sysinfo::System::boot_time().map_err(|e| CollectError::Other(format!("reading boot time: {e}")))
    }
}

/// Uptime is read each cycle; the boot time is kept until the wall clock moves against uptime
/// by more than 2 s (a clock change), then read again. On Linux that spares a read of all of
/// `/proc/stat` every cycle.
#[derive(Default)]
pub struct SystemWidget {
    boot: Option<u64>,
}

impl Widget for SystemWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let uptime = uptime()?;
        let booted_by_clock = now.as_secs().saturating_sub_unsigned(uptime);
        let boot = match self.boot {
            Some(boot) if booted_by_clock.abs_diff(boot as i64) <= CLOCK_STEP_S as u64 => boot,
            _ => *self.boot.insert(boot_time()?),
        };
        Ok(vec![Sample::metric("system", json!({ "uptime": uptime, "boot_time": boot }))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixtureHost, Os};

    #[test]
    fn boot_time_plus_uptime_is_about_now() {
        let now = Timestamp::now();
        let mut widget = SystemWidget::default();
        let samples = widget.collect(&FixtureHost::new(Os::Linux), now).expect("system");
        let again = widget.collect(&FixtureHost::new(Os::Linux), now).expect("system");
        assert_eq!(again[0].data["boot_time"], samples[0].data["boot_time"], "kept while the clock is steady");
        widget.boot = Some(1);
        let stepped = widget.collect(&FixtureHost::new(Os::Linux), now).expect("system");
        assert_eq!(stepped[0].data["boot_time"], samples[0].data["boot_time"], "read again after a clock step");
        let d = &samples[0].data;
        let sum = d["uptime"].as_i64().zip(d["boot_time"].as_i64()).map(|(u, b)| u + b).expect("numbers");
        assert!((sum - now.as_secs()).abs() <= 5, "uptime + boot_time = {sum}, now = {}", now.as_secs());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn uptime_is_the_first_field_of_proc_uptime() {
        let before = uptime().expect("uptime");
        let text = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime");
        let after = uptime().expect("uptime");
        let seconds: u64 = text.split('.').next().and_then(|s| s.parse().ok()).expect("seconds");
        assert!(before <= seconds && seconds <= after, "{before} <= {seconds} <= {after}");
    }
}
