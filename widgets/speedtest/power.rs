//! The battery gate of the speed test: "running on battery at N %" or not, from the battery
//! widget's own reader (one way to read the power state).

use crate::battery::read_battery;
use crate::Host;

/// The battery percentage when the machine runs on battery; `None` on mains power, without a
/// battery, or when the state cannot be read (a speed test then runs).
pub fn on_battery_percent(host: &dyn Host) -> Option<f64> {
    let reading = read_battery(host).ok().flatten()?;
    let on_battery = match reading.plugged {
        Some(plugged) => !plugged,
        // No adapter reported: discharging is the only sign of running on battery.
        None => reading.time_left.is_some() || reading.charging == Some(false) && reading.percent < 100.0,
    };
    on_battery.then_some(reading.percent)
}
