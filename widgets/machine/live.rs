//! What the OS says about this machine in process (not through `Host`: under `once --replay`
//! these still describe the live machine): names, versions, sizes, boot time and interface
//! addresses. One reader per OS behind [`LiveFacts::read`].
//!
//! Linux: `uname(2)` (hostname, kernel release, architecture), `/etc/os-release` (else
//! `/usr/lib/os-release`, then `/etc/lsb-release` for a field they lack), the `cpu` lines of
//! `/proc/stat` (logical CPUs), `/proc/cpuinfo` (physical cores), `/proc/meminfo` (memory),
//! the `btime` of `/proc/stat` (boot time) and `getifaddrs(3)` (addresses), each parsed by the
//! pure parsers of the widget that owns the file. Other OSes: `sysinfo`.

use std::net::IpAddr;

/// The live facts `machine_info` reports. `None` where the OS would not tell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveFacts {
    /// The hostname (`uname -n`; empty when unknown).
    pub hostname: String,
    /// Kernel release (`6.1.0-18-amd64`, `23.4.0`).
    pub kernel_release: Option<String>,
    /// The OS's own version: the product version on macOS (`14.4.1`), the distribution's
    /// `VERSION_ID` on Linux (`12`).
    pub os_version: Option<String>,
    /// The long OS name: `Linux (Debian GNU/Linux 12)`, `macOS 14.4.1 Sonoma`.
    pub long_os_name: Option<String>,
    /// `uname -m`: `x86_64`, `aarch64`, `arm64`.
    pub architecture: String,
    /// Physical cores.
    pub physical_cores: Option<usize>,
    /// Logical CPUs.
    pub logical_cpus: Option<usize>,
    /// Physical memory, bytes.
    pub total_memory: Option<u64>,
    /// Boot time, Unix seconds.
    pub boot_time: Option<u64>,
    /// Every interface address as `(interface, address)`, in the OS's order.
    pub addresses: Vec<(String, IpAddr)>,
}

/// The OS's `uname` of this machine: `(hostname, kernel release, architecture)`.
#[cfg(target_os = "linux")]
fn uname() -> (String, String, String) {
    let uts = rustix::system::uname();
    let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
    (text(uts.nodename()), text(uts.release()), text(uts.machine()))
}

/// The machine's hostname as the OS reports it (empty if unknown).
pub fn hostname() -> String {
    #[cfg(target_os = "linux")]
    {
        uname().0
    }
    #[cfg(not(target_os = "linux"))]
    {
        sysinfo::System::host_name().unwrap_or_default()
    }
}

impl LiveFacts {
    /// Read every fact now; what cannot be read is left `None` (empty).
    #[cfg(target_os = "linux")]
    pub fn read() -> LiveFacts {
        use super::parse::{long_os_name, parse_lsb_release, parse_os_release};
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let (hostname, kernel_release, architecture) = uname();
        let os_release = read("/etc/os-release")
            .or_else(|| read("/usr/lib/os-release"))
            .and_then(|text| parse_os_release(&text).ok())
            .unwrap_or_default();
        // Only a field os-release lacks is looked up in lsb-release (sysinfo's order).
        let lsb = if os_release.name.is_none() || os_release.version_id.is_none() {
            read("/etc/lsb-release").and_then(|text| parse_lsb_release(&text).ok()).unwrap_or_default()
        } else {
            Default::default()
        };
        let name = os_release.name.or(lsb.name);
        let version_id = os_release.version_id.or(lsb.version_id);
        let stat = read("/proc/stat");
        LiveFacts {
            hostname,
            kernel_release: Some(kernel_release),
            long_os_name: Some(long_os_name(name.as_deref(), version_id.as_deref())),
            os_version: version_id,
            architecture,
            physical_cores: crate::cpu::physical_core_count(),
            logical_cpus: stat
                .as_deref()
                .and_then(|text| crate::cpu::parse::parse_proc_stat_cpus(text).ok())
                .map(|stat| stat.cores.len()),
            total_memory: read("/proc/meminfo")
                .and_then(|text| crate::memory::parse::parse_meminfo(&text).ok())
                .map(|info| info.total),
            boot_time: stat.as_deref().and_then(|text| crate::system::parse::parse_proc_stat_btime(text).ok()),
            addresses: interface_addresses(),
        }
    }

    /// Read every fact now; what cannot be read is left `None` (empty).
    #[cfg(not(target_os = "linux"))]
    pub fn read() -> LiveFacts {
        use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};
        let kind = RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing());
        let system = System::new_with_specifics(kind).ok();
        let addresses = Networks::new_with_refreshed_list()
            .map(|networks| {
                networks
                    .iter()
                    .flat_map(|(name, data)| {
                        let name = name.to_string_lossy().into_owned();
                        data.ip_networks().iter().map(move |net| (name.clone(), net.addr))
                    })
                    .collect()
            })
            .unwrap_or_default();
        LiveFacts {
            hostname: hostname(),
            kernel_release: System::kernel_version().ok(),
            os_version: System::os_version().ok(),
            long_os_name: System::long_os_version().ok(),
            architecture: System::cpu_arch(),
            physical_cores: System::physical_core_count().ok(),
            logical_cpus: system.as_ref().map(|s| s.cpus().len()),
            total_memory: system.as_ref().map(System::total_memory),
            boot_time: System::boot_time().ok(),
            addresses,
        }
    }
}

/// Every IPv4 and IPv6 address of every interface, from `getifaddrs(3)` (what `sysinfo`
/// reads too); empty when the call fails.
#[cfg(target_os = "linux")]
fn interface_addresses() -> Vec<(String, IpAddr)> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    list.filter_map(|entry| {
        let address = entry.address?;
        let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => return None,
        };
        Some((entry.interface_name, ip))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_tells_every_fact() {
        let facts = LiveFacts::read();
        assert!(!facts.hostname.is_empty() && !facts.architecture.is_empty(), "{facts:?}");
        assert!(facts.kernel_release.as_deref().is_some_and(|k| !k.is_empty()), "{facts:?}");
        let threads = facts.logical_cpus.expect("logical CPUs");
        assert!(facts.physical_cores.is_some_and(|c| c >= 1 && c <= threads), "{facts:?}");
        assert!(facts.total_memory.is_some_and(|m| m > 0), "{facts:?}");
        assert!(facts.boot_time.is_some_and(|b| b > 1_000_000_000), "{facts:?}");
        assert!(facts.addresses.iter().all(|(name, _)| !name.is_empty()), "{facts:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reader_agrees_with_the_kernel_files() {
        let facts = LiveFacts::read();
        let file = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(facts.hostname, file("/proc/sys/kernel/hostname").trim());
        assert_eq!(facts.kernel_release.as_deref(), Some(file("/proc/sys/kernel/osrelease").trim()));
        assert_eq!(facts.architecture, std::env::consts::ARCH, "uname -m of an x86_64 or aarch64 build");
        let online = std::thread::available_parallelism().map(usize::from).ok();
        assert!(facts.logical_cpus >= online, "{:?} CPUs online, {online:?} usable", facts.logical_cpus);
        assert!(facts.long_os_name.as_deref().is_some_and(|n| n.starts_with("Linux")), "{facts:?}");
        // getifaddrs lists what the kernel's interface list has: every name is in /sys/class/net.
        for (name, _) in &facts.addresses {
            assert!(std::path::Path::new("/sys/class/net").join(name).exists(), "{name}");
        }
    }
}
