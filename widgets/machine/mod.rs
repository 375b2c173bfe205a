//! `machine_info`: who this machine is. Hostname, OS, architecture, CPU and memory sizes,
//! boot time, local IP (found from the routing table and interface list: no packet is sent),
//! mounted disks, and where the OS gives them, computer name, serial number and model.
//!
//! Sources: `sysinfo` on both OSes; on Linux `/proc/net/route` and `/sys/class/dmi/id/*`
//! (the serial is readable by root only); on macOS `system_profiler SPHardwareDataType` and
//! `scutil --get ComputerName`. Collected hourly by default: it rarely changes and
//! `system_profiler` takes about a second.

pub mod parse;

use std::net::IpAddr;

use serde_json::{json, Value};
use sysinfo::{Disks, Networks, System};

use crate::host::DEFAULT_COMMAND_TIMEOUT;
use crate::network::is_loopback;
use crate::{no_options, CollectError, Host, Os, Sample, Timestamp, Widget, WidgetSpec};

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "machine_info",
    summary: "Hostname, OS, CPU/memory sizes, boot time, local IP, disks, serial, model",
    enabled_by_default: true,
    default_interval_s: Some(3600),
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(MachineWidget),
};

/// Stateless: everything is read fresh.
pub struct MachineWidget;

/// Identity fields that come from platform commands/files rather than `sysinfo`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlatformIdentity {
    /// User-visible computer name (macOS), else the hostname.
    pub computer_name: Option<String>,
    /// Hardware serial number.
    pub serial_number: Option<String>,
    /// Model identifier, e.g. `MacBookPro18,3` or the DMI product name.
    pub model: Option<String>,
    /// Chip or processor name (macOS).
    pub chip: Option<String>,
}

/// Read the identity fields through `host`: failures leave fields `None` (a laptop owner does
/// not need a serial for the agent to work).
pub fn platform_identity(host: &dyn Host) -> PlatformIdentity {
    let mut id = PlatformIdentity::default();
    match host.os() {
        Os::Macos => {
            if let Ok(out) = host.run(&["system_profiler", "SPHardwareDataType"], DEFAULT_COMMAND_TIMEOUT) {
                if let Ok(hw) = parse::parse_sp_hardware(&out.stdout) {
                    id.serial_number = hw.serial_number;
                    id.model = hw.model_identifier;
                    id.chip = hw.chip;
                }
            }
            if let Ok(out) = host.run(&["scutil", "--get", "ComputerName"], DEFAULT_COMMAND_TIMEOUT) {
                id.computer_name = parse::parse_scutil_get(&out.stdout).ok().flatten();
            }
        }
        Os::Linux => {
            let dmi = |name: &str| {
                host.read_file(&format!("/sys/class/dmi/id/{name}"))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty() && s != "None" && !s.starts_with("To be filled"))
            };
            id.serial_number = dmi("product_serial");
            id.model = dmi("product_name");
        }
        Os::Other => {}
    }
    id
}

/// The machine's LAN address: the first global IPv4 of the default-route interface (Linux,
/// from `/proc/net/route`), else of any non-loopback interface, preferring `en0`/`eth0`.
pub fn local_ip(host: &dyn Host, networks: &Networks) -> Option<IpAddr> {
    let default_iface = host
        .read_file("/proc/net/route")
        .ok()
        .and_then(|text| parse::parse_proc_net_route_default(&text).ok().flatten());
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(_) => false,
    };
    let mut candidates: Vec<(u8, String, IpAddr)> = networks
        .iter()
        .filter(|(name, _)| !is_loopback(name))
        .flat_map(|(name, data)| data.ip_networks().iter().map(move |net| (name.to_string_lossy(), net.addr)))
        .filter(|(_, ip)| usable(ip))
        .map(|(name, ip)| {
            let rank = if Some(&*name) == default_iface.as_deref() {
                0
            } else if name == "en0" || name == "eth0" {
                1
            } else {
                2
            };
            (rank, name.into_owned(), ip)
        })
        .collect();
    candidates.sort();
    candidates.first().map(|(_, _, ip)| *ip)
}

fn os_name(os: Os) -> &'static str {
    match os {
        Os::Macos => "Darwin",
        Os::Linux => "Linux",
        Os::Other => "Other",
    }
}

impl Widget for MachineWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let system = System::new_with_specifics(
            sysinfo::RefreshKind::nothing()
                .with_memory(sysinfo::MemoryRefreshKind::nothing().with_ram())
                .with_cpu(sysinfo::CpuRefreshKind::nothing()),
        )
        .map_err(|e| CollectError::Other(format!("reading system information: {e}")))?;
        let networks = Networks::new_with_refreshed_list().ok();
        let disks: Vec<Value> = Disks::new_with_refreshed_list()
            .map(|disks| {
                disks
                    .iter()
                    .map(|d| {
                        json!({
                            "device": d.name().to_string_lossy(),
                            "mountpoint": d.mount_point().to_string_lossy(),
                            "fstype": d.file_system().to_string_lossy(),
                            "total": d.total_space(),
                            "removable": d.is_removable(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let identity = platform_identity(host);
        let hostname = System::host_name().unwrap_or_default();
        let data = json!({
            "hostname": hostname,
            "os": os_name(host.os()),
            "os_version": System::long_os_version().ok(),
            "kernel_version": System::kernel_version().ok(),
            "architecture": System::cpu_arch(),
            "cpu_count": System::physical_core_count().ok(),
            "cpu_threads": system.cpus().len(),
            "total_memory": system.total_memory(),
            "boot_time": System::boot_time().ok(),
            "local_ip": networks.as_ref().and_then(|n| local_ip(host, n)).map(|ip| ip.to_string()),
            "disks": disks,
            "computer_name": identity.computer_name.unwrap_or(hostname),
            "serial_number": identity.serial_number,
            "model": identity.model,
            "chip": identity.chip,
        });
        Ok(vec![Sample::machine_info(data)])
    }
}

/// The machine's hostname as the OS reports it (empty if unknown). The default `machine_id`.
pub fn hostname() -> String {
    System::host_name().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixtureHost;

    #[test]
    fn macos_identity_comes_from_system_profiler_and_scutil() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/machine/testdata/");
        let read = |name: &str| std::fs::read_to_string(format!("{dir}{name}")).unwrap_or_default();
        let host = FixtureHost::new(Os::Macos)
            .with_command(
                "system_profiler SPHardwareDataType",
                &read("system_profiler-SPHardwareDataType--m1pro-mbp18-3-ventura-mondoo1380.txt"),
            )
            .with_command(
                "scutil --get ComputerName",
                &read("scutil-get-ComputerName--default-name-curly-apostrophe-susam.txt"),
            );
        let id = platform_identity(&host);
        assert_eq!(id.serial_number.as_deref(), Some("GGJXG26P75"));
        assert_eq!(id.model.as_deref(), Some("MacBookPro18,3"));
        assert_eq!(id.computer_name.as_deref(), Some("Susam\u{2019}s MacBook Pro"));
    }

    #[test]
    fn linux_identity_comes_from_dmi() {
        let host = FixtureHost::new(Os::Linux)
            .with_file("/sys/class/dmi/id/product_serial", "PF2ABCDE\n")
            .with_file("/sys/class/dmi/id/product_name", "20XW0055GE\n");
        let id = platform_identity(&host);
        assert_eq!(id.serial_number.as_deref(), Some("PF2ABCDE"));
        assert_eq!(id.model.as_deref(), Some("20XW0055GE"));
    }

    #[test]
    fn live_collection_has_every_field() {
        let samples = MachineWidget.collect(&FixtureHost::new(Os::Linux), Timestamp(0)).expect("machine info");
        let d = &samples[0].data;
        assert_eq!(d["os"], "Linux");
        for key in ["hostname", "architecture", "computer_name"] {
            assert!(d[key].is_string(), "{key}");
        }
        for key in ["cpu_threads", "total_memory", "boot_time"] {
            assert!(d[key].is_u64(), "{key}");
        }
        assert!(d["disks"].is_array());
    }
}
