//! `wifi`: the Wi-Fi link as a widget log (`widget_type` and message `wifi`): interface,
//! association, SSID (or that macOS redacted it), BSSID, RSSI, noise, SNR, channel, band,
//! width, transmit rate, PHY mode, security and a 0..100 quality score. A machine without a
//! Wi-Fi interface reports `Unsupported`.
//!
//! macOS, first that works: `wdutil info` (root only), legacy `airport -I` (before 14.4;
//! the 14.4+ stub does not count), `system_profiler SPAirPortDataType -json`. Linux:
//! interfaces from `/proc/net/wireless`, else `iw dev`; values from `iw dev <if> link`
//! (or `/proc/net/wireless` alone when `iw` is missing). See `README.md`.

pub mod parse;

use serde_json::{json, Value};

use crate::host::DEFAULT_COMMAND_TIMEOUT;
use crate::{no_options, CollectError, Host, HostError, Level, Os, Sample, Timestamp, Widget, WidgetSpec};
use parse::WifiInfo;

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "wifi",
    summary: "Wi-Fi SSID (or redacted), BSSID, RSSI/noise/SNR, channel, band, width, rate, security, quality",
    enabled_by_default: true,
    default_interval_s: Some(300),
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(WifiWidget),
};

/// Stateless: everything is read fresh.
pub struct WifiWidget;

/// `wdutil info` (needs root).
pub const WDUTIL: &[&str] = &["wdutil", "info"];
/// Legacy `airport -I`, by absolute path (it was never on `PATH`).
pub const AIRPORT: &[&str] =
    &["/System/Library/PrivateFrameworks/Apple80211.framework/Versions/Current/Resources/airport", "-I"];
/// `system_profiler SPAirPortDataType -json`.
pub const SYSTEM_PROFILER: &[&str] = &["system_profiler", "SPAirPortDataType", "-json"];
/// Linux wireless statistics.
pub const PROC_NET_WIRELESS: &str = "/proc/net/wireless";

/// A signal at or below this (dBm) makes the log entry a `warning`.
pub const WEAK_SIGNAL_DBM: i32 = -80;

fn parse_error(argv: &[&str], error: crate::ParseError) -> CollectError {
    CollectError::Parse { source: argv.join(" "), error }
}

/// Read the Wi-Fi link through `host`: `Ok(None)` when the machine has no Wi-Fi interface.
pub fn read_wifi(host: &dyn Host) -> Result<Option<WifiInfo>, CollectError> {
    match host.os() {
        Os::Macos => read_macos(host),
        Os::Linux => read_linux(host),
        Os::Other => Ok(None),
    }
}

fn read_macos(host: &dyn Host) -> Result<Option<WifiInfo>, CollectError> {
    // Errors of the earlier sources are only reported if no later source works.
    let mut first_error: Option<CollectError> = None;
    let mut note = |e: CollectError| {
        let missing = matches!(e, CollectError::Host(HostError::CommandNotFound(_)));
        if first_error.is_none() && !missing {
            first_error = Some(e);
        }
    };
    if host.is_root() {
        match host.run(WDUTIL, DEFAULT_COMMAND_TIMEOUT) {
            Ok(out) => match parse::parse_wdutil_info(&out.stdout) {
                Ok(info) => return Ok(Some(info)),
                Err(e) => note(parse_error(WDUTIL, e)),
            },
            Err(e) => note(e.into()),
        }
    }
    match host.run(AIRPORT, DEFAULT_COMMAND_TIMEOUT) {
        // The 14.4+ stub parses as `Unrecognised`: not available, not worth reporting.
        Ok(out) => match parse::parse_airport_info(&out.stdout) {
            Ok(info) => return Ok(Some(info)),
            Err(crate::ParseError::Unrecognised(_)) => {}
            Err(e) => note(parse_error(AIRPORT, e)),
        },
        Err(e) => note(e.into()),
    }
    match host.run(SYSTEM_PROFILER, DEFAULT_COMMAND_TIMEOUT) {
        Ok(out) => match parse::parse_sp_airport(&out.stdout) {
            Ok(info) => return Ok(info),
            Err(e) => note(parse_error(SYSTEM_PROFILER, e)),
        },
        Err(e) => note(e.into()),
    }
    // Nothing installed (a replay of a Mac without Wi-Fi) means no Wi-Fi to report.
    first_error.map_or(Ok(None), Err)
}

fn read_linux(host: &dyn Host) -> Result<Option<WifiInfo>, CollectError> {
    let proc = match host.read_file(PROC_NET_WIRELESS) {
        Ok(text) => parse::parse_proc_net_wireless(&text)
            .map_err(|error| CollectError::Parse { source: PROC_NET_WIRELESS.to_string(), error })?,
        Err(HostError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut interfaces: Vec<String> = proc.iter().map(|p| p.interface.clone()).collect();
    if interfaces.is_empty() {
        interfaces = match host.run(&["iw", "dev"], DEFAULT_COMMAND_TIMEOUT) {
            Ok(out) => parse::parse_iw_dev(&out.stdout).map_err(|e| parse_error(&["iw", "dev"], e))?,
            Err(HostError::CommandNotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
    }
    let mut first: Option<WifiInfo> = None;
    for interface in &interfaces {
        let argv = ["iw", "dev", interface.as_str(), "link"];
        let stats = proc.iter().find(|p| &p.interface == interface);
        let mut info = match host.run(&argv, DEFAULT_COMMAND_TIMEOUT) {
            Ok(out) => parse::parse_iw_link(&out.stdout).map_err(|e| parse_error(&argv, e))?,
            Err(HostError::CommandNotFound(_)) => match stats {
                Some(stats) => from_proc(stats),
                None => continue,
            },
            Err(e) => return Err(e.into()),
        };
        info.interface.get_or_insert_with(|| interface.clone());
        if info.connected {
            info.noise = info.noise.or(stats.and_then(|s| s.noise));
            info.rssi = info.rssi.or(stats.and_then(|s| s.level));
            return Ok(Some(info));
        }
        first.get_or_insert(info);
    }
    Ok(first)
}

/// A reading from `/proc/net/wireless` alone (no `iw`): signal and noise, nothing else.
fn from_proc(stats: &parse::ProcWireless) -> WifiInfo {
    let mut info = WifiInfo::disconnected(Some(stats.interface.clone()), "proc");
    info.connected = stats.level.is_some();
    info.rssi = stats.level;
    info.noise = stats.noise;
    info
}

/// What Atlas's Wi-Fi monitor puts in `ssid` when macOS redacts it (`<redacted>` without
/// Location Services, since macOS 14), so its pages and analyzer show the same text.
pub const ATLAS_SSID_REDACTED: &str = "WiFi Connected (SSID hidden by macOS)";
/// What Atlas's Wi-Fi monitor puts in `ssid` when connected but the name is unknown.
pub const ATLAS_SSID_UNKNOWN: &str = "WiFi Connected";

/// Atlas's `signal_strength`: its 0..100 quality score (`atlas/network/monitors/wifi.py`),
/// steps of RSSI (≥ −50 dBm: 100, ≥ −60: 90, ≥ −67: 75, ≥ −70: 60, ≥ −80: 40, else 20), then
/// +10 for an SNR of 40 dB or more and −20 below 20 dB (no adjustment when the noise is
/// unknown). Its fleet analyzer reads a value under 60 as a weak signal. `None` when not
/// connected or the RSSI is unknown.
pub fn atlas_signal_strength(info: &WifiInfo) -> Option<u8> {
    let rssi = info.rssi.filter(|_| info.connected)?;
    let base: i32 = match rssi {
        r if r >= -50 => 100,
        r if r >= -60 => 90,
        r if r >= -67 => 75,
        r if r >= -70 => 60,
        r if r >= -80 => 40,
        _ => 20,
    };
    let score = match info.snr() {
        Some(snr) if snr >= 40 => (base + 10).min(100),
        Some(snr) if snr < 20 => (base - 20).max(0),
        _ => base,
    };
    u8::try_from(score).ok()
}

/// The `ssid` as sent: the name, or Atlas's text when connected without a readable name.
pub fn ssid_field(info: &WifiInfo) -> Option<String> {
    match (&info.ssid, info.connected, info.ssid_redacted) {
        (Some(ssid), _, _) => Some(ssid.clone()),
        (None, true, true) => Some(ATLAS_SSID_REDACTED.to_string()),
        (None, true, false) => Some(ATLAS_SSID_UNKNOWN.to_string()),
        (None, false, _) => None,
    }
}

/// The widget-log `data` object for a reading (unknown values left out by [`Sample::log`]).
pub fn to_json(info: &WifiInfo) -> Value {
    json!({
        "interface": info.interface,
        "connected": info.connected,
        "ssid": ssid_field(info),
        "ssid_redacted": info.ssid_redacted,
        "bssid": info.bssid,
        "rssi": info.rssi,
        "noise": info.noise,
        "snr": info.snr(),
        "channel": info.channel,
        "band": info.band.map(parse::Band::as_str),
        "channel_width_mhz": info.channel_width_mhz,
        "tx_rate": info.tx_rate,
        "phy_mode": info.phy_mode,
        "security": info.security,
        "quality_score": info.quality_score(),
        "signal_strength": atlas_signal_strength(info),
        "source": info.source,
    })
}

/// `warning` for a weak signal (at or below [`WEAK_SIGNAL_DBM`]), else `info`.
pub fn level(info: &WifiInfo) -> Level {
    match info.rssi {
        Some(rssi) if info.connected && rssi <= WEAK_SIGNAL_DBM => Level::Warning,
        _ => Level::Info,
    }
}

impl Widget for WifiWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        match read_wifi(host)? {
            Some(info) => Ok(vec![Sample::log("wifi", level(&info), "wifi", to_json(&info))]),
            None => Err(CollectError::Unsupported("no Wi-Fi interface".to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::fixture;
    use crate::FixtureHost;

    const W: &str = "wifi";
    const AIRPORT_KEY: &str =
        "/System/Library/PrivateFrameworks/Apple80211.framework/Versions/Current/Resources/airport -I";

    fn collect(host: &FixtureHost) -> Result<Vec<Sample>, CollectError> {
        WifiWidget.collect(host, Timestamp(0))
    }

    #[test]
    fn macos_root_uses_wdutil_and_reports_every_field() {
        let host = FixtureHost::new(Os::Macos)
            .with_command("wdutil info", &fixture(W, "wdutil-info--macos15-5ghz-wpa2-redacted-heatmapper.txt"));
        let samples = collect(&host).expect("wifi");
        assert_eq!(samples.len(), 1);
        let s = &samples[0];
        assert_eq!(
            (s.kind, s.name.as_str(), s.message.as_str(), s.level),
            (crate::SampleKind::Log, "wifi", "wifi", Level::Info)
        );
        assert_eq!(
            s.data,
            json!({
                "interface": "en0", "connected": true, "ssid": ATLAS_SSID_REDACTED, "ssid_redacted": true,
                "rssi": -79, "noise": -91, "snr": 12, "channel": 44, "band": "5GHz", "channel_width_mhz": 40,
                "tx_rate": 103.0, "phy_mode": "802.11ax", "security": "WPA2 Personal", "quality_score": 42,
                "signal_strength": 20, "source": "wdutil",
            })
        );
    }

    #[test]
    fn macos_non_root_skips_wdutil_and_the_airport_stub() {
        let host = FixtureHost::new(Os::Macos)
            .with_root(false)
            .with_command("wdutil info", &fixture(W, "wdutil-info--sonoma-6ghz-160mhz-wpa3-macadmins.txt"))
            .with_command(AIRPORT_KEY, &fixture(W, "airport-I--sonoma14.4-deprecated-stub-wifiloccontrol1.txt"))
            .with_command(
                "system_profiler SPAirPortDataType -json",
                &fixture(W, "system_profiler-SPAirPortDataType-json--macos15.5-connected-wpa2-heatmapper.txt"),
            );
        let data = &collect(&host).expect("wifi")[0].data;
        assert_eq!((data["source"].as_str(), data["ssid"].as_str()), (Some("system_profiler"), Some("SSID-7")));
        assert_eq!((data["rssi"].as_i64(), data["quality_score"].as_u64()), (Some(-58), Some(84)));
    }

    #[test]
    fn macos_legacy_airport_is_used_before_system_profiler() {
        let host = FixtureHost::new(Os::Macos)
            .with_root(false)
            .with_command(AIRPORT_KEY, &fixture(W, "airport-I--osx10.14.6-jc.txt"))
            .with_command("system_profiler SPAirPortDataType -json", "not consulted");
        let data = &collect(&host).expect("wifi")[0].data;
        assert_eq!((data["source"].as_str(), data["bssid"].as_str()), (Some("airport"), Some("3c:37:86:15:ad:f9")));
    }

    #[test]
    fn macos_without_wifi_is_unsupported_and_errors_are_typed() {
        let no_iface = FixtureHost::new(Os::Macos)
            .with_command("system_profiler SPAirPortDataType -json", "{\"SPAirPortDataType\": []}");
        assert!(collect(&no_iface).is_err_and(|e| e.is_unsupported()));
        assert!(collect(&FixtureHost::new(Os::Macos)).is_err_and(|e| e.is_unsupported()));
        let broken = FixtureHost::new(Os::Macos).with_command("system_profiler SPAirPortDataType -json", "{broken");
        assert!(matches!(
            collect(&broken),
            Err(CollectError::Parse { source, .. }) if source == "system_profiler SPAirPortDataType -json"
        ));
    }

    #[test]
    fn linux_proc_then_iw_link() {
        let host = FixtureHost::new(Os::Linux)
            .with_file("/proc/net/wireless", &fixture(W, "proc-net-wireless--telegraf-two-ifaces.txt"))
            .with_command("iw dev wlan0 link", &fixture(W, "iw-dev-link--5ghz-vht-full-rtl8812au42.txt"))
            .with_command("iw dev wlan1 link", "Not connected.\n");
        let s = &collect(&host).expect("wifi")[0];
        assert_eq!(s.level, Level::Info);
        assert_eq!(
            s.data,
            json!({
                "interface": "wlan0", "connected": true, "ssid": "xxx", "ssid_redacted": false,
                "rssi": -60, "channel": 60, "band": "5GHz", "channel_width_mhz": 20,
                "tx_rate": 173.3, "phy_mode": "802.11ac", "quality_score": 80, "signal_strength": 90, "source": "iw",
            })
        );
    }

    #[test]
    fn atlas_signal_strength_steps_and_snr_adjustment() {
        let mut info = WifiInfo::disconnected(Some("en0".into()), "wdutil");
        info.rssi = Some(-45);
        assert_eq!(atlas_signal_strength(&info), None, "not connected");
        assert_eq!(ssid_field(&info), None);
        info.connected = true;
        assert_eq!(ssid_field(&info).as_deref(), Some(ATLAS_SSID_UNKNOWN));
        info.ssid_redacted = true;
        assert_eq!(ssid_field(&info).as_deref(), Some(ATLAS_SSID_REDACTED));
        let cases = [
            (-45, None, 100),
            (-55, None, 90),
            (-65, None, 75),
            (-70, None, 60),
            (-75, None, 40),
            (-85, None, 20),
            (-55, Some(-95), 100),
            (-65, Some(-80), 55),
            (-85, Some(-90), 0),
        ];
        for (rssi, noise, expected) in cases {
            info.rssi = Some(rssi);
            info.noise = noise;
            assert_eq!(atlas_signal_strength(&info), Some(expected), "rssi {rssi} noise {noise:?}");
        }
    }

    #[test]
    fn weak_signal_is_a_warning() {
        let mut info = WifiInfo::disconnected(Some("en0".into()), "wdutil");
        info.rssi = Some(-80);
        assert_eq!(level(&info), Level::Info, "not connected");
        info.connected = true;
        assert_eq!(level(&info), Level::Warning);
        info.rssi = Some(-79);
        assert_eq!(level(&info), Level::Info);
    }

    #[test]
    fn linux_iw_dev_fallback_proc_only_and_unsupported() {
        let via_iw = FixtureHost::new(Os::Linux)
            .with_command("iw dev", &fixture(W, "iw-dev-info--ubuntu24.04-heatmapper.txt"))
            .with_command("iw dev wlp1s0 link", &fixture(W, "iw-dev-link--ubuntu24.04-2.4ghz-heatmapper.txt"));
        let data = &collect(&via_iw).expect("wifi")[0].data;
        assert_eq!((data["interface"].as_str(), data["channel"].as_u64()), (Some("wlp1s0"), Some(1)));
        let proc_only = FixtureHost::new(Os::Linux)
            .with_file("/proc/net/wireless", &fixture(W, "proc-net-wireless--telegraf-two-ifaces.txt"));
        let data = &collect(&proc_only).expect("wifi")[0].data;
        assert_eq!(
            (data["source"].as_str(), data["rssi"].as_i64(), data["interface"].as_str()),
            (Some("proc"), Some(-50), Some("wlan0"))
        );
        assert!(collect(&FixtureHost::new(Os::Linux)).is_err_and(|e| e.is_unsupported()));
    }
}
