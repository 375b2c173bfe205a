//! `network`: cumulative byte, packet and error counters since boot, summed over every
//! interface except loopback.

use serde_json::json;
use sysinfo::Networks;

use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "network",
    summary: "Bytes/packets sent and received, errors: cumulative, summed over non-loopback interfaces",
    enabled_by_default: true,
    default_interval_s: None,
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(NetworkWidget::default()),
};

/// True for loopback interface names on Linux (`lo`) and macOS (`lo0`).
pub fn is_loopback(name: &std::ffi::OsStr) -> bool {
    name == "lo" || name.as_encoded_bytes().starts_with(b"lo0")
}

/// Holds the interface list between cycles.
#[derive(Default)]
pub struct NetworkWidget {
    networks: Option<Networks>,
}

impl Widget for NetworkWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let networks = match &mut self.networks {
            Some(networks) => {
                networks.refresh(true);
                networks
            }
            None => {
                let networks = Networks::new_with_refreshed_list()
                    .map_err(|e| CollectError::Other(format!("listing network interfaces: {e}")))?;
                self.networks.insert(networks)
            }
        };
        let mut sums = [0u64; 6];
        let mut interfaces = 0u32;
        for (_, data) in networks.iter().filter(|(name, _)| !is_loopback(name)) {
            interfaces += 1;
            let values = [
                data.total_transmitted(),
                data.total_received(),
                data.total_packets_transmitted(),
                data.total_packets_received(),
                data.total_errors_on_received(),
                data.total_errors_on_transmitted(),
            ];
            for (sum, value) in sums.iter_mut().zip(values) {
                *sum = sum.saturating_add(value);
            }
        }
        let data = json!({
            "bytes_sent": sums[0],
            "bytes_recv": sums[1],
            "packets_sent": sums[2],
            "packets_recv": sums[3],
            "errin": sums[4],
            "errout": sums[5],
            "interfaces": interfaces,
        });
        Ok(vec![Sample::metric("network", data)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixtureHost, Os};

    #[test]
    fn loopback_names_are_recognised() {
        let name = std::ffi::OsStr::new;
        assert!(is_loopback(name("lo")) && is_loopback(name("lo0")));
        assert!(!is_loopback(name("eth0")) && !is_loopback(name("en0")) && !is_loopback(name("lowpan0")));
    }

    #[test]
    fn counters_are_numbers() {
        let samples = NetworkWidget::default().collect(&FixtureHost::new(Os::Linux), Timestamp(0)).expect("network");
        for key in ["bytes_sent", "bytes_recv", "packets_sent", "packets_recv", "errin", "errout"] {
            assert!(samples[0].data[key].is_u64(), "{key}");
        }
    }
}
