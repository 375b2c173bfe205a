//! `network`: cumulative byte, packet, error and drop counters since boot, summed over every
//! interface (psutil's `net_io_counters()`: loopback included), and `connections`, the
//! number of IPv4/IPv6 TCP and UDP sockets (psutil's `len(net_connections())`).
//!
//! Linux: a lean reader of `/proc/net/dev` and `/proc/net/{tcp,tcp6,udp,udp6}` (pure
//! parsers in [`parse`]). Other OSes: `sysinfo` counters (no drops, no socket count: those
//! fields are left out rather than guessed).

pub mod parse;

use serde_json::{json, Value};

use crate::{no_options, CollectError, Host, Sample, Timestamp, Widget, WidgetSpec};
use parse::NetTotals;

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "network",
    summary: "Bytes/packets sent and received, errors, drops (all interfaces, cumulative); socket count",
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

/// `metrics.network` from the totals and, where known, the socket count.
pub fn network_json(totals: &NetTotals, drops_known: bool, connections: Option<u64>) -> Value {
    let mut data = json!({
        "bytes_sent": totals.bytes_sent,
        "bytes_recv": totals.bytes_recv,
        "packets_sent": totals.packets_sent,
        "packets_recv": totals.packets_recv,
        "errin": totals.errin,
        "errout": totals.errout,
        "interfaces": totals.interfaces,
    });
    if let Some(map) = data.as_object_mut() {
        if drops_known {
            map.insert("dropin".to_string(), json!(totals.dropin));
            map.insert("dropout".to_string(), json!(totals.dropout));
        }
        if let Some(count) = connections {
            map.insert("connections".to_string(), json!(count));
        }
    }
    data
}

/// Holds the reader's buffer (Linux) or interface list (elsewhere) between cycles.
#[derive(Default)]
pub struct NetworkWidget {
    buf: String,
    #[cfg(not(target_os = "linux"))]
    networks: Option<sysinfo::Networks>,
}

/// The socket tables psutil's `net_connections(kind="inet")` reads.
pub const SOCKET_TABLES: [&str; 4] = ["/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"];

impl NetworkWidget {
    #[cfg(target_os = "linux")]
    fn read(&mut self) -> Result<Value, CollectError> {
        use crate::procfs::read_into;
        let path = "/proc/net/dev";
        read_into(path, &mut self.buf).map_err(|e| CollectError::Other(format!("reading {path}: {e}")))?;
        let totals = parse::parse_proc_net_dev(&self.buf)
            .map_err(|error| CollectError::Parse { source: path.to_string(), error })?;
        // A table that cannot be read (IPv6 disabled) counts as empty; none readable: unknown.
        let mut connections = None;
        for table in SOCKET_TABLES {
            if read_into(table, &mut self.buf).is_ok() {
                if let Ok(rows) = parse::count_socket_rows(&self.buf) {
                    *connections.get_or_insert(0) += rows;
                }
            }
        }
        Ok(network_json(&totals, true, connections))
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&mut self) -> Result<Value, CollectError> {
        let _ = &self.buf;
        let networks = match &mut self.networks {
            Some(networks) => {
                networks.refresh(true);
                networks
            }
            None => {
                let networks = sysinfo::Networks::new_with_refreshed_list()
                    .map_err(|e| CollectError::Other(format!("listing network interfaces: {e}")))?;
                self.networks.insert(networks)
            }
        };
        let mut totals = NetTotals::default();
        for (_, data) in networks.iter() {
            totals.interfaces += 1;
            totals.bytes_sent = totals.bytes_sent.saturating_add(data.total_transmitted());
            totals.bytes_recv = totals.bytes_recv.saturating_add(data.total_received());
            totals.packets_sent = totals.packets_sent.saturating_add(data.total_packets_transmitted());
            totals.packets_recv = totals.packets_recv.saturating_add(data.total_packets_received());
            totals.errin = totals.errin.saturating_add(data.total_errors_on_received());
            totals.errout = totals.errout.saturating_add(data.total_errors_on_transmitted());
        }
        Ok(network_json(&totals, false, None))
    }
}

impl Widget for NetworkWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        Ok(vec![Sample::metric("network", self.read()?)])
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
    fn counters_are_numbers_with_atlas_names() {
        let samples = NetworkWidget::default().collect(&FixtureHost::new(Os::Linux), Timestamp(0)).expect("network");
        for key in ["bytes_sent", "bytes_recv", "packets_sent", "packets_recv", "errin", "errout", "dropin", "dropout"]
        {
            assert!(samples[0].data[key].is_u64(), "{key}");
        }
        assert!(samples[0].data["connections"].is_u64());
    }
}
