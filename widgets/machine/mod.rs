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
    /// Chip or processor name (macOS `Chip`/`Processor Name`, Linux `/proc/cpuinfo`).
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
                    id.serial_number = hw.serial_number.as_deref().and_then(parse::real_serial);
                    id.model = hw.model_identifier;
                    id.chip = hw.chip;
                }
            }
            if let Ok(out) = host.run(&["scutil", "--get", "ComputerName"], DEFAULT_COMMAND_TIMEOUT) {
                id.computer_name = parse::parse_scutil_get(&out.stdout).ok().flatten();
            }
        }
        Os::Linux => {
            let dmi = |name: &str| host.read_file(&format!("/sys/class/dmi/id/{name}")).ok();
            id.serial_number = dmi("product_serial").as_deref().and_then(parse::real_serial);
            id.model = dmi("product_name").as_deref().and_then(parse::real_serial);
            id.chip =
                host.read_file("/proc/cpuinfo").ok().and_then(|text| parse::parse_cpuinfo_model(&text).ok().flatten());
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
        let identity = platform_identity(host);
        let hostname = System::host_name().unwrap_or_default();
        // Atlas: `platform.mac_ver()[0]` on macOS, the kernel elsewhere, so a page printing
        // `os + " " + os_version` reads "Darwin 14.4.1" or "Linux 6.1.0-18-amd64".
        let os_version = match host.os() {
            Os::Macos => System::os_version().ok(),
            _ => System::kernel_version().ok(),
        };
        let local_ip = networks.as_ref().and_then(|n| local_ip(host, n)).map(|ip| ip.to_string());
        let data = json!({
            "hostname": hostname,
            "os": os_name(host.os()),
            "os_version": os_version,
            "os_name": System::long_os_version().ok(),
            "kernel_version": System::kernel_version().ok(),
            "architecture": System::cpu_arch(),
            "processor": identity.chip.clone(),
            "cpu_count": System::physical_core_count().ok(),
            "cpu_threads": system.cpus().len(),
            "total_memory": system.total_memory(),
            "boot_time": System::boot_time().ok(),
            // Atlas falls back to "localhost"; its pages build URLs from this field.
            "local_ip": local_ip.unwrap_or_else(|| "localhost".to_string()),
            "disks": disk_list(host),
            "network_interfaces": networks.as_ref().map(|n| network_interfaces(host, n)).unwrap_or_default(),
            "computer_name": identity.computer_name.unwrap_or(hostname),
            "serial_number": identity.serial_number,
            "model": identity.model,
            "chip": identity.chip,
            "gpu": gpu(host),
        });
        Ok(vec![Sample::machine_info(data)])
    }
}

/// The GPU as Atlas's agent reports it on macOS: `{name}` of the first `Chipset Model` of
/// `system_profiler SPDisplaysDataType` (plus `names` when there are several). `None` elsewhere
/// or when it cannot be read.
pub fn gpu(host: &dyn Host) -> Option<Value> {
    if host.os() != Os::Macos {
        return None;
    }
    let out = host.run(&["system_profiler", "SPDisplaysDataType"], DEFAULT_COMMAND_TIMEOUT).ok()?;
    let names = parse::parse_sp_displays(&out.stdout).ok()?;
    let first = names.first()?.clone();
    Some(if names.len() > 1 { json!({ "name": first, "names": names }) } else { json!({ "name": first }) })
}

/// Mounted disks as Atlas lists them (`{device, mountpoint, fstype, total, used, free}`, df
/// semantics). Linux: real block-device filesystems of `/proc/self/mountinfo` only (see
/// [`parse::real_disks`]); elsewhere `sysinfo`'s list.
pub fn disk_list(host: &dyn Host) -> Vec<Value> {
    let entry = |device: &str, mountpoint: &str, fstype: &str| {
        let usage = crate::disk::filesystem_usage(mountpoint).ok()?;
        Some(json!({
            "device": device, "mountpoint": mountpoint, "fstype": fstype,
            "total": usage.total, "used": usage.used, "free": usage.free, "percent": usage.percent,
        }))
    };
    if host.os() == Os::Linux {
        if let Ok(text) = host.read_file("/proc/self/mountinfo") {
            if let Ok(mounts) = parse::parse_mountinfo(&text) {
                return parse::real_disks(&mounts)
                    .into_iter()
                    .filter_map(|m| entry(&m.source, &m.mount_point, &m.fstype))
                    .collect();
            }
        }
    }
    Disks::new_with_refreshed_list()
        .map(|disks| {
            disks
                .iter()
                .filter_map(|d| {
                    entry(
                        &d.name().to_string_lossy(),
                        &d.mount_point().to_string_lossy(),
                        &d.file_system().to_string_lossy(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Interfaces with an address, as Atlas lists them: `{name, is_up, speed, addresses[{type,
/// address}]}` (`type` `IPv4`/`IPv6`, `speed` in Mbit/s, 0 when unknown). Linux reads
/// `is_up` (up and running) and `speed` from `/sys/class/net/<if>/`; elsewhere an interface
/// listed with an address is reported up, speed 0. Linux `is_up` is psutil's: `IFF_UP` in
/// `flags` and a link (`carrier` = 1).
pub fn network_interfaces(host: &dyn Host, networks: &Networks) -> Vec<Value> {
    let mut list: Vec<(String, Value)> = networks
        .iter()
        .filter(|(_, data)| !data.ip_networks().is_empty())
        .map(|(name, data)| {
            let name = name.to_string_lossy().into_owned();
            let addresses: Vec<Value> = data
                .ip_networks()
                .iter()
                .map(|net| {
                    let kind = if net.addr.is_ipv4() { "IPv4" } else { "IPv6" };
                    json!({ "type": kind, "address": net.addr.to_string() })
                })
                .collect();
            let sys = |file: &str| host.read_file(&format!("/sys/class/net/{name}/{file}")).ok();
            let (is_up, speed) = match host.os() {
                Os::Linux => (
                    parse::sysfs_if_running(sys("flags").as_deref(), sys("carrier").as_deref()),
                    sys("speed").and_then(|t| parse::parse_sysfs_speed(&t).ok()).unwrap_or(0),
                ),
                _ => (true, 0),
            };
            let value = json!({ "name": name, "is_up": is_up, "speed": speed, "addresses": addresses });
            (name, value)
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    list.into_iter().map(|(_, v)| v).collect()
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
