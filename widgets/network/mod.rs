//! `network`: cumulative byte, packet, error and drop counters since boot, summed over every
//! interface (psutil's `net_io_counters()`: loopback included), and `connections`, the
//! number of IPv4/IPv6 TCP and UDP sockets (psutil's `len(net_connections())`); and
//! `metrics.vpn` (`{connected, vpn_client, interface_count, interfaces}`) from the tunnel
//! interfaces that are up (WireGuard, Tailscale, `tun`/`utun`, …).
//!
//! Linux: a lean reader of `/proc/net/dev` and `/proc/net/sockstat{,6}`, kept open between
//! cycles ([`crate::procfs::ProcFile`]; pure parsers in [`parse`]), and of the `flags` and
//! `carrier` of `/sys/class/net/NAME` for tunnel interfaces only (opened each time: the names
//! come and go). Other OSes: `sysinfo` counters (no drops, no socket count: those
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

/// `metrics.vpn` as Atlas's agent sends it: `{connected, vpn_client, interface_count,
/// interfaces}` from the tunnel interfaces that are up (`vpn_client` left out when the names
/// do not tell).
pub fn vpn_json(up_tunnels: &[String]) -> Value {
    let client = up_tunnels.iter().find_map(|name| parse::vpn_interface_kind(name).flatten());
    let mut data = json!({
        "connected": !up_tunnels.is_empty(),
        "interface_count": up_tunnels.len(),
        "interfaces": up_tunnels,
    });
    if let (Some(map), Some(client)) = (data.as_object_mut(), client) {
        map.insert("vpn_client".to_string(), json!(client));
    }
    data
}

/// Holds the reader's buffer and kept-open files (Linux) or interface list (elsewhere)
/// between cycles.
pub struct NetworkWidget {
    buf: String,
    /// `/proc/net/dev`.
    #[cfg(target_os = "linux")]
    dev: crate::procfs::ProcFile,
    /// [`SOCKSTAT_FILES`], in order.
    #[cfg(target_os = "linux")]
    sockstat: [crate::procfs::ProcFile; 2],
    #[cfg(not(target_os = "linux"))]
    networks: Option<sysinfo::Networks>,
}

#[cfg_attr(
    not(target_os = "linux"),
    expect(clippy::derivable_impls, reason = "derivable without the Linux kept files")
)]
impl Default for NetworkWidget {
    fn default() -> Self {
        NetworkWidget {
            buf: String::new(),
            #[cfg(target_os = "linux")]
            dev: crate::procfs::ProcFile::new("/proc/net/dev"),
            #[cfg(target_os = "linux")]
            sockstat: SOCKSTAT_FILES.map(crate::procfs::ProcFile::new),
            #[cfg(not(target_os = "linux"))]
            networks: None,
        }
    }
}

/// The socket counters that add up to what psutil's `net_connections(kind="inet")` lists.
pub const SOCKSTAT_FILES: [&str; 2] = ["/proc/net/sockstat", "/proc/net/sockstat6"];

impl NetworkWidget {
    #[cfg(target_os = "linux")]
    fn read(&mut self) -> Result<(Value, Value), CollectError> {
        let path = "/proc/net/dev";
        self.dev.read_into(&mut self.buf).map_err(|e| CollectError::Other(format!("reading {path}: {e}")))?;
        let totals = parse::parse_proc_net_dev(&self.buf)
            .map_err(|error| CollectError::Parse { source: path.to_string(), error })?;
        // Tunnels are rare: only their names cost a read of their flags.
        let up_tunnels: Vec<String> = parse::proc_net_dev_names(&self.buf)
            .filter(|name| parse::vpn_interface_kind(name).is_some())
            .filter(|name| {
                let read = |file: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{file}")).ok();
                crate::machine::parse::sysfs_if_running(read("flags").as_deref(), read("carrier").as_deref())
            })
            .map(str::to_string)
            .collect();
        // A file that cannot be read (IPv6 disabled) counts as empty; none readable: unknown.
        let mut connections = None;
        for file in &mut self.sockstat {
            if file.read_into(&mut self.buf).is_ok() {
                if let Ok(count) = parse::parse_sockstat(&self.buf) {
                    *connections.get_or_insert(0) += count;
                }
            }
        }
        Ok((network_json(&totals, true, connections), vpn_json(&up_tunnels)))
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&mut self) -> Result<(Value, Value), CollectError> {
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
        // A tunnel counts when it carries an IPv4 address (macOS keeps idle `utun`s around).
        let mut up_tunnels: Vec<String> = networks
            .iter()
            .filter(|(name, data)| {
                name.to_str().is_some_and(|name| parse::vpn_interface_kind(name).is_some())
                    && data.ip_networks().iter().any(|n| n.addr.is_ipv4())
            })
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        up_tunnels.sort();
        for (_, data) in networks.iter() {
            totals.interfaces += 1;
            totals.bytes_sent = totals.bytes_sent.saturating_add(data.total_transmitted());
            totals.bytes_recv = totals.bytes_recv.saturating_add(data.total_received());
            totals.packets_sent = totals.packets_sent.saturating_add(data.total_packets_transmitted());
            totals.packets_recv = totals.packets_recv.saturating_add(data.total_packets_received());
            totals.errin = totals.errin.saturating_add(data.total_errors_on_received());
            totals.errout = totals.errout.saturating_add(data.total_errors_on_transmitted());
        }
        Ok((network_json(&totals, false, None), vpn_json(&up_tunnels)))
    }
}

impl Widget for NetworkWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, _host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let (network, vpn) = self.read()?;
        Ok(vec![Sample::metric("network", network), Sample::metric("vpn", vpn)])
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
        assert_eq!(samples[1].name, "vpn");
        assert!(samples[1].data["connected"].is_boolean() && samples[1].data["interfaces"].is_array());
    }

    #[test]
    fn vpn_shape_is_atlas() {
        assert_eq!(vpn_json(&[]), json!({"connected": false, "interface_count": 0, "interfaces": []}));
        assert_eq!(
            vpn_json(&["wg0".to_string()]),
            json!({"connected": true, "vpn_client": "WireGuard", "interface_count": 1, "interfaces": ["wg0"]})
        );
    }
}
