//! Pure parsers for machine identity outputs, compiled and tested on every OS.

use crate::ParseError;

/// What `system_profiler SPHardwareDataType` says about the machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HardwareOverview {
    /// `Model Name`, e.g. `MacBook Pro`.
    pub model_name: Option<String>,
    /// `Model Identifier`, e.g. `MacBookPro18,3`.
    pub model_identifier: Option<String>,
    /// `Chip` (Apple silicon) or `Processor Name` (Intel).
    pub chip: Option<String>,
    /// `Serial Number (system)`.
    pub serial_number: Option<String>,
    /// `Hardware UUID`.
    pub hardware_uuid: Option<String>,
}

/// Parse the text form of `system_profiler SPHardwareDataType` (`Key: Value` lines, indented).
/// Requires at least a model identifier or a serial number, else the output is not the
/// hardware overview.
pub fn parse_sp_hardware(text: &str) -> Result<HardwareOverview, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut hw = HardwareOverview::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else { continue };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let slot = match key.trim() {
            "Model Name" => &mut hw.model_name,
            "Model Identifier" => &mut hw.model_identifier,
            "Chip" | "Processor Name" => &mut hw.chip,
            "Serial Number (system)" | "Serial Number" => &mut hw.serial_number,
            "Hardware UUID" => &mut hw.hardware_uuid,
            _ => continue,
        };
        slot.get_or_insert_with(|| value.to_string());
    }
    if hw.model_identifier.is_none() && hw.serial_number.is_none() {
        return Err(ParseError::MissingField("Model Identifier"));
    }
    Ok(hw)
}

/// Parse `scutil --get <Name>`: the name, or `None` when it prints `<Name>: not set`.
pub fn parse_scutil_get(text: &str) -> Result<Option<String>, ParseError> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).ok_or(ParseError::Empty)?;
    if line.ends_with(": not set") {
        return Ok(None);
    }
    Ok(Some(line.to_string()))
}

/// The GPU names (`Chipset Model`) of `system_profiler SPDisplaysDataType`, in order; an error
/// when the output is not the displays report.
pub fn parse_sp_displays(text: &str) -> Result<Vec<String>, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let names: Vec<String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Chipset Model:"))
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty() && !text.contains("Graphics/Displays:") {
        return Err(ParseError::Unrecognised("`Graphics/Displays:` with `Chipset Model:` lines"));
    }
    Ok(names)
}

/// The interface of the IPv4 default route from Linux `/proc/net/route` (destination and mask
/// both `00000000`), lowest metric first. `Ok(None)` when there is no default route.
pub fn parse_proc_net_route_default(text: &str) -> Result<Option<String>, ParseError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or(ParseError::Empty)?;
    if !header.starts_with("Iface") {
        return Err(ParseError::Unrecognised("a /proc/net/route header starting with Iface"));
    }
    let mut best: Option<(u64, String)> = None;
    for line in lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            continue;
        }
        if cols[1] != "00000000" || cols[7] != "00000000" {
            continue;
        }
        let metric: u64 = cols[6].parse().map_err(|_| ParseError::bad_value("Metric", cols[6]))?;
        if best.as_ref().is_none_or(|(m, _)| metric < *m) {
            best = Some((metric, cols[0].to_string()));
        }
    }
    Ok(best.map(|(_, iface)| iface))
}

/// One line of `/proc/self/mountinfo` (see `proc_pid_mountinfo(5)`), the fields the disk list
/// needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    /// Field 4: the directory of the filesystem that is mounted here (`/` for the whole
    /// filesystem, a subdirectory for a bind mount).
    pub root: String,
    /// Field 5: where it is mounted.
    pub mount_point: String,
    /// After the `-` separator: the filesystem type.
    pub fstype: String,
    /// After the type: the mount source (`/dev/vda`, `tmpfs`, …).
    pub source: String,
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = u32::from(d[0] - b'0') * 64 + u32::from(d[1] - b'0') * 8 + u32::from(d[2] - b'0');
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `/proc/self/mountinfo`. Lines without the ` - ` separator are errors.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (left, right) = line.split_once(" - ").ok_or(ParseError::Unrecognised("mountinfo lines with ` - `"))?;
        let mut fields = left.split(' ');
        let root = fields.nth(3).ok_or(ParseError::MissingField("root"))?;
        let mount_point = fields.next().ok_or(ParseError::MissingField("mount point"))?;
        let mut after = right.split(' ');
        let fstype = after.next().filter(|t| !t.is_empty()).ok_or(ParseError::MissingField("filesystem type"))?;
        let source = after.next().ok_or(ParseError::MissingField("mount source"))?;
        mounts.push(Mount {
            root: unescape_mount_field(root),
            mount_point: unescape_mount_field(mount_point),
            fstype: fstype.to_string(),
            source: unescape_mount_field(source),
        });
    }
    Ok(mounts)
}

/// The mounts that are disks a person would name: a block device (`/dev/…`, not a loop
/// device's `squashfs` image) mounted whole (`root` is `/`), each device once (its first
/// mount). Bind mounts of a directory (systemd's `ReadOnlyPaths=`, `StateDirectory=`,
/// `PrivateTmp=`) and pseudo filesystems are left out.
pub fn real_disks(mounts: &[Mount]) -> Vec<&Mount> {
    let mut seen: Vec<&str> = Vec::new();
    let mut disks = Vec::new();
    for mount in mounts {
        if !mount.source.starts_with("/dev/") || mount.root != "/" || mount.fstype == "squashfs" {
            continue;
        }
        if seen.contains(&mount.source.as_str()) {
            continue;
        }
        seen.push(&mount.source);
        disks.push(mount);
    }
    disks
}

/// The processor's name from Linux `/proc/cpuinfo`: the first `model name` (x86), else
/// `Processor` / `cpu model` (older ARM, MIPS). `Ok(None)` when the kernel gives none.
pub fn parse_cpuinfo_model(text: &str) -> Result<Option<String>, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string()).filter(|v| !v.is_empty())
        })
    };
    Ok(value("model name").or_else(|| value("Processor")).or_else(|| value("cpu model")))
}

/// The distribution's name and version, from `os-release(5)` or `/etc/lsb-release`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OsRelease {
    /// `NAME` (`Debian GNU/Linux`) or `DISTRIB_ID`.
    pub name: Option<String>,
    /// `VERSION_ID` (`12`, `20.04`) or `DISTRIB_RELEASE`; rolling releases have none.
    pub version_id: Option<String>,
}

/// One shell-style value of an `os-release` or `lsb-release` line: surrounding double or
/// single quotes removed, backslash escapes inside double quotes resolved.
fn release_value(raw: &str) -> String {
    let raw = raw.trim();
    let quoted = |q: char| raw.len() >= 2 && raw.starts_with(q) && raw.ends_with(q);
    if quoted('\'') {
        return raw[1..raw.len() - 1].to_string();
    }
    let inner = if quoted('"') { &raw[1..raw.len() - 1] } else { raw };
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.extend(chars.next()),
            c => value.push(c),
        }
    }
    value
}

/// `KEY=value` lines: the value of the first `key` line, if not empty.
fn release_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.trim_start().strip_prefix(key)?.strip_prefix('=').map(release_value))
        .filter(|v| !v.is_empty())
}

/// Parse `/etc/os-release` (or `/usr/lib/os-release`): `NAME` and `VERSION_ID`. Lines that
/// are not `KEY=value` (comments, blanks) are skipped; a file with neither key is an error.
pub fn parse_os_release(text: &str) -> Result<OsRelease, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let release = OsRelease { name: release_field(text, "NAME"), version_id: release_field(text, "VERSION_ID") };
    if release == OsRelease::default() {
        return Err(ParseError::MissingField("NAME"));
    }
    Ok(release)
}

/// Parse `/etc/lsb-release`: `DISTRIB_ID` as the name, `DISTRIB_RELEASE` as the version.
pub fn parse_lsb_release(text: &str) -> Result<OsRelease, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let release =
        OsRelease { name: release_field(text, "DISTRIB_ID"), version_id: release_field(text, "DISTRIB_RELEASE") };
    if release == OsRelease::default() {
        return Err(ParseError::MissingField("DISTRIB_ID"));
    }
    Ok(release)
}

/// `machine_info.os_name` on Linux, as `sysinfo` words it: `Linux (Debian GNU/Linux 12)`,
/// `Linux (Arch Linux)` without a version, `Linux (unknown 12)` with a version and no name,
/// `Linux` with neither.
pub fn long_os_name(name: Option<&str>, version_id: Option<&str>) -> String {
    match (name, version_id) {
        (name, Some(version)) => format!("Linux ({} {version})", name.unwrap_or("unknown")),
        (Some(name), None) => format!("Linux ({name})"),
        (None, None) => "Linux".to_string(),
    }
}

/// `IFF_UP` in `/sys/class/net/<if>/flags` (the kernel does not show `IFF_RUNNING` there).
const IFF_UP: u64 = 0x1;

/// Whether an interface is administratively up, from `/sys/class/net/<if>/flags` (`0x1003`).
/// Running (link present) is `/sys/class/net/<if>/carrier` = `1`, which the kernel refuses to
/// read (`EINVAL`) while the interface is down.
pub fn parse_sysfs_if_up(text: &str) -> Result<bool, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let hex = text.strip_prefix("0x").ok_or_else(|| ParseError::bad_value("flags", text))?;
    let flags = u64::from_str_radix(hex, 16).map_err(|_| ParseError::bad_value("flags", text))?;
    Ok(flags & IFF_UP != 0)
}

/// Whether an interface is up and has its link, as psutil's `net_if_stats().isup` says
/// (`IFF_UP` and `IFF_RUNNING`): `flags` and `carrier` are the contents of
/// `/sys/class/net/<if>/flags` and `carrier` (`None` when unreadable).
pub fn sysfs_if_running(flags: Option<&str>, carrier: Option<&str>) -> bool {
    flags.and_then(|f| parse_sysfs_if_up(f).ok()).unwrap_or(false) && carrier.is_some_and(|c| c.trim() == "1")
}

/// Link speed in Mbit/s from `/sys/class/net/<if>/speed`; 0 when the driver reports none
/// (`-1`), as psutil's `net_if_stats()` does.
pub fn parse_sysfs_speed(text: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let speed: i64 = text.parse().map_err(|_| ParseError::bad_value("speed", text))?;
    Ok(u64::try_from(speed).unwrap_or(0))
}

/// Serial numbers that firmware and hackintosh builders leave in place of a real one
/// (compared trimmed, case-insensitively, trailing dots ignored). Atlas deletes every other
/// machine reporting the same serial, so one of these would merge a fleet into one machine.
pub const PLACEHOLDER_SERIALS: &[&str] = &[
    "to be filled by o.e.m",
    "to be filled by oem",
    "not specified",
    "not applicable",
    "not available",
    "not provided",
    "default string",
    "default",
    "system serial number",
    "chassis serial number",
    "base board serial number",
    "serial number",
    "none",
    "null",
    "n/a",
    "na",
    "unknown",
    "invalid",
    "empty",
    "oem",
    "o.e.m",
    "sernum0",
    "0123456789",
    "123456789",
    "1234567890",
    "systemserialnumb",
    "unavailable",
];

/// True for a serial number that identifies nothing: empty, a known placeholder
/// ([`PLACEHOLDER_SERIALS`]), or one character repeated (`0`, `00000000`, `--`, `XXXXXXXX`,
/// `........`).
pub fn is_placeholder_serial(serial: &str) -> bool {
    let trimmed = serial.trim();
    let mut chars = trimmed.chars();
    let Some(first) = chars.next() else { return true };
    if chars.all(|c| c == first) {
        return true;
    }
    let normalized = trimmed.trim_end_matches('.').trim().to_lowercase();
    PLACEHOLDER_SERIALS.contains(&normalized.as_str())
}

/// `serial`, trimmed, unless it is a placeholder.
pub fn real_serial(serial: &str) -> Option<String> {
    (!is_placeholder_serial(serial)).then(|| serial.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::strip_fixture_header;

    fn fixture(name: &str) -> String {
        let path = format!("{}/machine/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        strip_fixture_header(&text).to_string()
    }

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        use crate::golden::result_json;
        if name.starts_with("system_profiler-SPHardwareDataType") {
            Some(result_json(parse_sp_hardware(body).map(|hw| {
                serde_json::json!({
                    "model_name": hw.model_name, "model_identifier": hw.model_identifier, "chip": hw.chip,
                    "serial_number": hw.serial_number, "hardware_uuid": hw.hardware_uuid,
                })
            })))
        } else if name.starts_with("scutil-get") {
            Some(result_json(parse_scutil_get(body)))
        } else if name.starts_with("system_profiler-SPDisplaysDataType") {
            Some(result_json(parse_sp_displays(body)))
        } else if name.starts_with("proc-self-mountinfo") {
            Some(result_json(parse_mountinfo(body).map(|m| real_disks(&m).into_iter().cloned().collect::<Vec<_>>())))
        } else if name.starts_with("proc-cpuinfo") {
            Some(result_json(parse_cpuinfo_model(body)))
        } else if name.starts_with("sys-class-net-flags") {
            Some(result_json(parse_sysfs_if_up(body)))
        } else if name.starts_with("sys-class-net-speed") {
            Some(result_json(parse_sysfs_speed(body)))
        } else if name.starts_with("os-release") {
            Some(result_json(parse_os_release(body).map(|r| {
                let os_name = long_os_name(r.name.as_deref(), r.version_id.as_deref());
                serde_json::json!({ "name": r.name, "version_id": r.version_id, "os_name": os_name })
            })))
        } else {
            None
        }
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        crate::golden::check_golden("machine", render);
    }

    #[test]
    fn parsers_never_panic() {
        crate::golden::check_robust(
            "machine",
            |text| {
                let _ = parse_mountinfo(text).map(|m| real_disks(&m).len());
                let _ = parse_sp_displays(text);
                let _ = parse_cpuinfo_model(text);
                let _ = parse_sysfs_if_up(text);
                let _ = parse_sysfs_speed(text);
                let _ = is_placeholder_serial(text);
                let _ = parse_os_release(text);
                let _ = parse_lsb_release(text);
            },
            render,
        );
    }

    #[test]
    fn systemd_sandbox_bind_mounts_are_not_disks() {
        let mounts = parse_mountinfo(&fixture("proc-self-mountinfo--systemd-sandbox-bind-mounts-captured.txt"));
        let mounts = mounts.expect("parses");
        assert!(mounts.iter().any(|m| m.mount_point == "/etc/fleet-agent" && m.source == "/dev/vda"));
        let disks: Vec<&str> = real_disks(&mounts).iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(disks, vec!["/"]);
    }

    #[test]
    fn node_exporter_host_lists_root_boot_and_one_kubelet_volume() {
        let text = fixture("proc-self-mountinfo--lvm-root-boot-kubelet-node_exporter.txt");
        let mounts = parse_mountinfo(&text).expect("parses");
        let disks: Vec<(&str, &str)> =
            real_disks(&mounts).iter().map(|m| (m.source.as_str(), m.mount_point.as_str())).collect();
        assert_eq!(disks.len(), 3, "{disks:?}");
        assert_eq!(&disks[..2], &[("/dev/dm-2", "/"), ("/dev/sda3", "/boot")]);
        assert!(disks[2].1.contains("[vsanDatastore] bafb9e5a"), "\\040 decoded: {disks:?}");
    }

    #[test]
    fn gpu_names_in_order() {
        let two =
            parse_sp_displays(&fixture("system_profiler-SPDisplaysDataType--intel-uhd630-radeon560x-go-test.txt"));
        assert_eq!(two, Ok(vec!["Intel UHD Graphics 630".to_string(), "Radeon Pro 560X".to_string()]));
        let m4 = parse_sp_displays(&fixture("system_profiler-SPDisplaysDataType--m4-macbook-air-notes.txt"));
        assert_eq!(m4, Ok(vec!["Apple M4".to_string()]));
        assert_eq!(parse_sp_displays("Graphics/Displays:\n"), Ok(vec![]));
        assert!(parse_sp_displays("Hardware:\n").is_err());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let line = "36 35 98:0 / /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n";
        let mounts = parse_mountinfo(line).expect("parses");
        assert_eq!(mounts[0].mount_point, "/mnt/my disk");
        assert_eq!(parse_mountinfo("garbage\n"), Err(ParseError::Unrecognised("mountinfo lines with ` - `")));
    }

    #[test]
    fn interface_flags_and_speed() {
        assert_eq!(parse_sysfs_if_up("0x1003\n"), Ok(true));
        assert_eq!(parse_sysfs_if_up("0x1002\n"), Ok(false));
        assert!(sysfs_if_running(Some("0x9\n"), Some("1\n")), "lo");
        assert!(!sysfs_if_running(Some("0x1003\n"), Some("0\n")), "up, cable out");
        assert!(!sysfs_if_running(Some("0x82\n"), None), "down: carrier unreadable");
        assert_eq!(parse_sysfs_speed("-1\n"), Ok(0));
        assert_eq!(parse_sysfs_speed("1000\n"), Ok(1000));
        assert!(parse_sysfs_speed("fast").is_err());
    }

    /// One test per placeholder serial: each is refused, whatever its case.
    macro_rules! placeholder_tests {
        ($($test:ident => $serial:expr,)*) => {$(
            #[test]
            fn $test() {
                for variant in [$serial.to_string(), $serial.to_uppercase(), $serial.to_lowercase(), format!("  {}  ", $serial)] {
                    assert!(is_placeholder_serial(&variant), "{variant:?} must be refused");
                    assert_eq!(real_serial(&variant), None);
                }
            }
        )*};
    }

    placeholder_tests! {
        serial_to_be_filled_by_oem => "To Be Filled By O.E.M.",
        serial_to_be_filled_by_oem_no_dot => "To be filled by O.E.M",
        serial_to_be_filled_by_oem_letters => "To Be Filled By OEM",
        serial_not_specified => "Not Specified",
        serial_not_applicable => "Not Applicable",
        serial_not_available => "Not Available",
        serial_not_provided => "Not Provided",
        serial_default_string => "Default string",
        serial_default => "Default",
        serial_system_serial_number => "System Serial Number",
        serial_chassis_serial_number => "Chassis Serial Number",
        serial_base_board_serial_number => "Base Board Serial Number",
        serial_serial_number => "Serial Number",
        serial_none => "None",
        serial_null => "null",
        serial_n_a => "N/A",
        serial_na => "NA",
        serial_unknown => "Unknown",
        serial_invalid => "Invalid",
        serial_empty_word => "Empty",
        serial_oem => "OEM",
        serial_o_e_m => "O.E.M.",
        serial_sernum0 => "SerNum0",
        serial_0123456789 => "0123456789",
        serial_123456789 => "123456789",
        serial_1234567890 => "1234567890",
        serial_hackintosh_systemserialnumb => "SystemSerialNumb",
        serial_unavailable => "Unavailable",
        serial_zero => "0",
        serial_zeros => "00000000",
        serial_dashes => "--",
        serial_x_run => "XXXXXXXXXXXX",
        serial_dots => "........",
        serial_spaces_only => "   ",
        serial_empty => "",
    }

    #[test]
    fn real_serials_are_kept() {
        for serial in ["GGJXG26P75", "W8805BRDX89", "PF2ABCDE", "C02XK0AAJG5H", "5CG1234XYZ", "00000001"] {
            assert_eq!(real_serial(&format!(" {serial}\n")).as_deref(), Some(serial), "{serial}");
        }
    }

    #[test]
    fn hardware_overview_apple_silicon_ventura() {
        let hw =
            parse_sp_hardware(&fixture("system_profiler-SPHardwareDataType--m1pro-mbp18-3-ventura-mondoo1380.txt"));
        let hw = hw.expect("parses");
        assert_eq!(hw.model_name.as_deref(), Some("MacBook Pro"));
        assert_eq!(hw.model_identifier.as_deref(), Some("MacBookPro18,3"));
        assert_eq!(hw.chip.as_deref(), Some("Apple M1 Pro"));
        assert_eq!(hw.serial_number.as_deref(), Some("GGJXG26P75"));
        assert_eq!(hw.hardware_uuid.as_deref(), Some("30BD6509-4710-567C-826E-3AF2D66DBF35"));
    }

    #[test]
    fn hardware_overview_intel_snow_leopard() {
        let hw = parse_sp_hardware(&fixture("system_profiler-SPHardwareDataType--osx10.6-imac7-1-glpi.txt"));
        let hw = hw.expect("parses");
        assert_eq!(hw.model_identifier.as_deref(), Some("iMac7,1"));
        assert_eq!(hw.chip.as_deref(), Some("Intel Core 2 Duo"));
        assert_eq!(hw.serial_number.as_deref(), Some("W8805BRDX89"));
    }

    #[test]
    fn hardware_overview_rejects_garbage() {
        assert_eq!(parse_sp_hardware(""), Err(ParseError::Empty));
        assert_eq!(parse_sp_hardware("hello: world\n"), Err(ParseError::MissingField("Model Identifier")));
    }

    #[test]
    fn scutil_names_and_not_set() {
        let name = parse_scutil_get(&fixture("scutil-get-ComputerName--default-name-curly-apostrophe-susam.txt"));
        assert_eq!(name, Ok(Some("Susam\u{2019}s MacBook Pro".to_string())));
        let unset = parse_scutil_get(&fixture("scutil-get-ComputerName--not-set-mountainlion-redconfetti.txt"));
        assert_eq!(unset, Ok(None));
        assert_eq!(parse_scutil_get("\n"), Err(ParseError::Empty));
    }

    #[test]
    fn default_route_interface() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                     eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_proc_net_route_default(table), Ok(Some("eth0".to_string())));
        let no_default = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n";
        assert_eq!(parse_proc_net_route_default(no_default), Ok(None));
        assert!(parse_proc_net_route_default("garbage").is_err());
    }

    #[test]
    fn os_release_names_as_sysinfo_words_them() {
        let release = |name: &str| parse_os_release(&fixture(name)).expect("parses");
        let debian = release("os-release--debian12-captured.txt");
        assert_eq!(long_os_name(debian.name.as_deref(), debian.version_id.as_deref()), "Linux (Debian GNU/Linux 12)");
        let ubuntu = release("os-release--ubuntu20.04-node_exporter.txt");
        assert_eq!((ubuntu.name.as_deref(), ubuntu.version_id.as_deref()), (Some("Ubuntu"), Some("20.04")));
        let arch = release("os-release--arch-rolling-no-version-id-ruyisdk.txt");
        assert_eq!(arch, OsRelease { name: Some("Arch Linux".to_string()), version_id: None });
        assert_eq!(long_os_name(arch.name.as_deref(), None), "Linux (Arch Linux)");
        assert_eq!(long_os_name(None, Some("12")), "Linux (unknown 12)");
        assert_eq!(long_os_name(None, None), "Linux");
    }

    #[test]
    fn os_release_quoting_and_lsb_fallback() {
        // os-release(5): shell quoting, single or double, with backslash escapes.
        let text = "# comment\nNAME='Fancy \"OS\"'\nVERSION_ID=\"1.0 \\\"beta\\\"\"\nPRETTY_NAME=x\n";
        let release = parse_os_release(text).expect("parses");
        assert_eq!(release.name.as_deref(), Some("Fancy \"OS\""));
        assert_eq!(release.version_id.as_deref(), Some("1.0 \"beta\""));
        // PRETTY_NAME is not NAME.
        assert_eq!(parse_os_release("PRETTY_NAME=\"X 1\"\n"), Err(ParseError::MissingField("NAME")));
        // lsb-release's keys (Ubuntu's layout).
        let lsb = parse_lsb_release("DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n");
        assert_eq!(lsb, Ok(OsRelease { name: Some("Ubuntu".to_string()), version_id: Some("22.04".to_string()) }));
        assert_eq!(parse_lsb_release("\n"), Err(ParseError::Empty));
    }
}
