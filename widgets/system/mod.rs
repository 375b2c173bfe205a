//! `system`: uptime and boot time (seconds; boot time as Unix seconds).

use serde_json::json;
use sysinfo::System;

use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "system",
    summary: "Uptime (s) and boot time (Unix s)",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(SystemWidget),
};

/// Stateless: both values are read fresh each cycle.
pub struct SystemWidget;

impl Widget for SystemWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let uptime = System::uptime().map_err(|e| CollectError::Other(format!("reading uptime: {e}")))?;
        let boot = System::boot_time().map_err(|e| CollectError::Other(format!("reading boot time: {e}")))?;
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
        let samples = SystemWidget.collect(&FixtureHost::new(Os::Linux), now).expect("system");
        let d = &samples[0].data;
        let sum = d["uptime"].as_i64().zip(d["boot_time"].as_i64()).map(|(u, b)| u + b).expect("numbers");
        assert!((sum - now.as_secs()).abs() <= 5, "uptime + boot_time = {sum}, now = {}", now.as_secs());
    }
}
