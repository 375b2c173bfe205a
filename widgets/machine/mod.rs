//! `machine_info`: who this machine is. Hostname, OS, architecture, CPU and memory sizes,
//! boot time, local IP (found from the routing table and interface list: no packet is sent),
//! mounted disks, and where the OS gives them, computer name, serial number and model.
//!
//! Sources: the OS in process ([`live`]: on Linux `uname`, `/etc/os-release`, `/proc`,
//! `getifaddrs`; elsewhere `sysinfo`); on Linux `/proc/net/route` and `/sys/class/dmi/id/*`
//! (the serial is readable by root only); on macOS `system_profiler SPHardwareDataType` and
//! `scutil --get ComputerName`. Collected hourly by default: it rarely changes and
//! `system_profiler` takes about a second.

pub mod live;
pub mod parse;

use std::net::IpAddr;

use serde_json::{json, Value};

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

/// Identity fields that come from platform commands/files through `Host`.
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

/// Interface addresses grouped by interface: `(name, addresses)` in the order each name
/// first appears, each address once.
pub fn group_addresses(addresses: &[(String, IpAddr)]) -> Vec<(&str, Vec<IpAddr>)> {
    let mut groups: Vec<(&str, Vec<IpAddr>)> = Vec::new();
    for (name, ip) in addresses {
        let position = match groups.iter().position(|(n, _)| n == name) {
            Some(position) => position,
            None => {
                groups.push((name, Vec::new()));
                groups.len() - 1
            }
        };
        let list = &mut groups[position].1;
        if !list.contains(ip) {
            list.push(*ip);
        }
    }
    groups
}

/// The machine's LAN address: the first global IPv4 of the default-route interface (Linux,
/// from `/proc/net/route`), else of any non-loopback interface, preferring `en0`/`eth0`.
/// `addresses` are `(interface, address)` pairs ([`live::LiveFacts::addresses`]).
pub fn local_ip(host: &dyn Host, addresses: &[(String, IpAddr)]) -> Option<IpAddr> {
    let default_iface = host
        .read_file("/proc/net/route")
        .ok()
        .and_then(|text| parse::parse_proc_net_route_default(&text).ok().flatten());
    pick_local_ip(default_iface.as_deref(), addresses)
}

/// The choice [`local_ip`] makes, given the default-route interface.
pub fn pick_local_ip(default_iface: Option<&str>, addresses: &[(String, IpAddr)]) -> Option<IpAddr> {
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(_) => false,
    };
    let mut candidates: Vec<(u8, &str, IpAddr)> = addresses
        .iter()
        .filter(|(name, ip)| !is_loopback(std::ffi::OsStr::new(name)) && usable(ip))
        .map(|(name, ip)| {
            let rank = if Some(name.as_str()) == default_iface {
                0
            } else if name == "en0" || name == "eth0" {
                1
            } else {
                2
            };
            (rank, name.as_str(), *ip)
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
        let facts = live::LiveFacts::read();
        let identity = platform_identity(host);
        let local_ip = local_ip(host, &facts.addresses).map(|ip| ip.to_string());
        let data = machine_json(
            &facts,
            identity,
            host.os(),
            local_ip,
            disk_list(host),
            network_interfaces(host, &facts.addresses),
            gpu(host),
        );
        Ok(vec![Sample::machine_info(data)])
    }
}

/// The `machine_info` object from what was read. Atlas reads these names: do not rename.
pub fn machine_json(
    facts: &live::LiveFacts,
    identity: PlatformIdentity,
    os: Os,
    local_ip: Option<String>,
    disks: Vec<Value>,
    interfaces: Vec<Value>,
    gpu: Option<Value>,
) -> Value {
    // Atlas: `platform.mac_ver()[0]` on macOS, the kernel elsewhere, so a page printing
    // `os + " " + os_version` reads "Darwin 14.4.1" or "Linux 6.1.0-18-amd64".
    let os_version = match os {
        Os::Macos => facts.os_version.clone(),
        _ => facts.kernel_release.clone(),
    };
    json!({
        "hostname": facts.hostname,
        "os": os_name(os),
        "os_version": os_version,
        "os_name": facts.long_os_name,
        "kernel_version": facts.kernel_release,
        "architecture": facts.architecture,
        "processor": identity.chip.clone(),
        "cpu_count": facts.physical_cores,
        "cpu_threads": facts.logical_cpus,
        "total_memory": facts.total_memory,
        "boot_time": facts.boot_time,
        // Atlas falls back to "localhost"; its pages build URLs from this field.
        "local_ip": local_ip.unwrap_or_else(|| "localhost".to_string()),
        "disks": disks,
        "network_interfaces": interfaces,
        "computer_name": identity.computer_name.unwrap_or_else(|| facts.hostname.clone()),
        "serial_number": identity.serial_number,
        "model": identity.model,
        "chip": identity.chip,
        "gpu": gpu,
    })
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
    other_disks(entry)
}

/// The live machine's disks when `Host` gave none (another OS replayed, or its
/// `/proc/self/mountinfo` unreadable): on Linux the live `/proc/self/mountinfo`, elsewhere
/// `sysinfo`'s list.
fn other_disks(entry: impl Fn(&str, &str, &str) -> Option<Value>) -> Vec<Value> {
    #[cfg(target_os = "linux")]
    {
        // Replaying another OS on Linux: the live machine's disks, as every live fact.
        let mut text = String::new();
        if crate::procfs::read_into("/proc/self/mountinfo", &mut text).is_err() {
            return Vec::new();
        }
        let Ok(mounts) = parse::parse_mountinfo(&text) else { return Vec::new() };
        parse::real_disks(&mounts).into_iter().filter_map(|m| entry(&m.source, &m.mount_point, &m.fstype)).collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        sysinfo::Disks::new_with_refreshed_list()
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
}

/// Interfaces with an address, as Atlas lists them: `{name, is_up, speed, addresses[{type,
/// address}]}` (`type` `IPv4`/`IPv6`, `speed` in Mbit/s, 0 when unknown). Linux reads
/// `is_up` (up and running) and `speed` from `/sys/class/net/<if>/`; elsewhere an interface
/// listed with an address is reported up, speed 0. Linux `is_up` is psutil's: `IFF_UP` in
/// `flags` and a link (`carrier` = 1).
pub fn network_interfaces(host: &dyn Host, addresses: &[(String, IpAddr)]) -> Vec<Value> {
    let mut list: Vec<(&str, Value)> = group_addresses(addresses)
        .into_iter()
        .map(|(name, ips)| {
            let addresses: Vec<Value> = ips
                .iter()
                .map(|ip| {
                    let kind = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                    json!({ "type": kind, "address": ip.to_string() })
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
            (name, json!({ "name": name, "is_up": is_up, "speed": speed, "addresses": addresses }))
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(b.0));
    list.into_iter().map(|(_, v)| v).collect()
}

/// The machine's hostname as the OS reports it (empty if unknown). The default `machine_id`.
pub fn hostname() -> String {
    live::hostname()
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

    #[test]
    fn addresses_group_by_interface_once_each() {
        let v4 = |s: &str| s.parse::<IpAddr>().expect("ip");
        let list = vec![
            ("lo".to_string(), v4("127.0.0.1")),
            ("eth0".to_string(), v4("10.0.0.5")),
            ("lo".to_string(), v4("::1")),
            ("eth0".to_string(), v4("10.0.0.5")),
        ];
        assert_eq!(
            group_addresses(&list),
            vec![("lo", vec![v4("127.0.0.1"), v4("::1")]), ("eth0", vec![v4("10.0.0.5")])]
        );
        let host = FixtureHost::new(Os::Macos);
        let interfaces = network_interfaces(&host, &list);
        assert_eq!(
            interfaces,
            vec![
                json!({"name": "eth0", "is_up": true, "speed": 0, "addresses": [{"type": "IPv4", "address": "10.0.0.5"}]}),
                json!({"name": "lo", "is_up": true, "speed": 0, "addresses": [
                    {"type": "IPv4", "address": "127.0.0.1"}, {"type": "IPv6", "address": "::1"}]}),
            ]
        );
    }

    #[test]
    fn local_ip_prefers_the_default_route_then_en0_eth0() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let list: Vec<(String, IpAddr)> = [
            ("lo", "127.0.0.1"),
            ("docker0", "172.17.0.1"),
            ("eth0", "169.254.1.1"),
            ("eth0", "192.168.1.20"),
            ("wlan0", "192.168.1.30"),
            ("wlan0", "fe80::1"),
        ]
        .iter()
        .map(|(n, a)| (n.to_string(), ip(a)))
        .collect();
        assert_eq!(pick_local_ip(Some("wlan0"), &list), Some(ip("192.168.1.30")));
        assert_eq!(pick_local_ip(None, &list), Some(ip("192.168.1.20")), "eth0, its link-local skipped");
        assert_eq!(pick_local_ip(None, &list[..1]), None, "loopback only");
    }

    #[test]
    fn json_has_atlas_names_and_os_version_by_os() {
        let facts = live::LiveFacts {
            hostname: "box".to_string(),
            kernel_release: Some("6.1.0-18-amd64".to_string()),
            os_version: Some("12".to_string()),
            long_os_name: Some("Linux (Debian GNU/Linux 12)".to_string()),
            architecture: "x86_64".to_string(),
            physical_cores: Some(4),
            logical_cpus: Some(8),
            total_memory: Some(16 << 30),
            boot_time: Some(1_700_000_000),
            addresses: Vec::new(),
        };
        let linux = machine_json(&facts, PlatformIdentity::default(), Os::Linux, None, vec![], vec![], None);
        assert_eq!(
            linux,
            json!({
                "hostname": "box", "os": "Linux", "os_version": "6.1.0-18-amd64",
                "os_name": "Linux (Debian GNU/Linux 12)", "kernel_version": "6.1.0-18-amd64",
                "architecture": "x86_64", "processor": null, "cpu_count": 4, "cpu_threads": 8,
                "total_memory": 17_179_869_184u64, "boot_time": 1_700_000_000, "local_ip": "localhost",
                "disks": [], "network_interfaces": [], "computer_name": "box", "serial_number": null,
                "model": null, "chip": null, "gpu": null,
            })
        );
        let mac = machine_json(&facts, PlatformIdentity::default(), Os::Macos, None, vec![], vec![], None);
        assert_eq!((&mac["os"], &mac["os_version"]), (&json!("Darwin"), &json!("12")));
    }
}
