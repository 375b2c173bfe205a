//! Pure parsers for Wi-Fi outputs, compiled and tested on every OS.
//!
//! macOS: `wdutil info` (WIFI section), legacy `airport -I`, `system_profiler
//! SPAirPortDataType -json` (and its text form, for systems without `-json`). Linux:
//! `/proc/net/wireless`, `iw dev` (interface list) and `iw dev <if> link`. Every parser
//! returns the one [`WifiInfo`] shape, so the widget reports the same fields whatever the
//! source.

use serde::Serialize;
use serde_json::Value;

use crate::ParseError;

/// A Wi-Fi band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Band {
    /// 2.4 GHz.
    #[serde(rename = "2.4GHz")]
    Ghz2_4,
    /// 5 GHz.
    #[serde(rename = "5GHz")]
    Ghz5,
    /// 6 GHz.
    #[serde(rename = "6GHz")]
    Ghz6,
}

impl Band {
    /// The wire name: `2.4GHz`, `5GHz` or `6GHz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Ghz2_4 => "2.4GHz",
            Band::Ghz5 => "5GHz",
            Band::Ghz6 => "6GHz",
        }
    }

    /// The band of a channel number when nothing else says (6 GHz channels overlap 5 GHz
    /// numbers, so those need an explicit band or frequency).
    pub fn from_channel(channel: u32) -> Option<Band> {
        match channel {
            1..=14 => Some(Band::Ghz2_4),
            32..=177 => Some(Band::Ghz5),
            _ => None,
        }
    }

    /// The band of a centre frequency in MHz.
    pub fn from_freq(mhz: f64) -> Option<Band> {
        match mhz as u32 {
            2400..=2500 => Some(Band::Ghz2_4),
            5150..=5925 => Some(Band::Ghz5),
            5926..=7125 => Some(Band::Ghz6),
            _ => None,
        }
    }

    /// Parse `2GHz`, `2.4GHz`, `5GHz`, `6GHz` (system_profiler) or `2g`/`5g`/`6g` (wdutil).
    fn from_label(label: &str) -> Option<Band> {
        match label.trim().to_ascii_lowercase().as_str() {
            "2ghz" | "2.4ghz" | "2g" => Some(Band::Ghz2_4),
            "5ghz" | "5g" => Some(Band::Ghz5),
            "6ghz" | "6g" => Some(Band::Ghz6),
            _ => None,
        }
    }
}

/// Channel number for a centre frequency in MHz.
pub fn channel_from_freq(mhz: f64) -> Option<u32> {
    let f = mhz.round() as u32;
    match f {
        2484 => Some(14),
        2412..=2472 => Some((f - 2407) / 5),
        5955..=7115 => Some((f - 5950) / 5),
        5160..=5885 => Some((f - 5000) / 5),
        _ => None,
    }
}

/// One Wi-Fi reading, whatever the source. dBm and Mbps are numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WifiInfo {
    /// Interface name (`en0`, `wlan0`); `None` when the tool does not say (`airport -I`).
    pub interface: Option<String>,
    /// Associated with a network.
    pub connected: bool,
    /// Network name; `None` when unknown or redacted.
    pub ssid: Option<String>,
    /// macOS 14+ printed `<redacted>` (no Location Services permission).
    pub ssid_redacted: bool,
    /// Access point MAC, lowercase, zero-padded.
    pub bssid: Option<String>,
    /// Signal strength in dBm.
    pub rssi: Option<i32>,
    /// Noise floor in dBm.
    pub noise: Option<i32>,
    /// Primary channel number.
    pub channel: Option<u32>,
    /// Band.
    pub band: Option<Band>,
    /// Channel width in MHz.
    pub channel_width_mhz: Option<u32>,
    /// Last transmit rate in Mbps.
    pub tx_rate: Option<f64>,
    /// `802.11n`, `802.11ac`, `802.11ax`, …
    pub phy_mode: Option<String>,
    /// `None` (open), `WPA2 Personal`, `WPA3 Personal`, …
    pub security: Option<String>,
    /// Which reader produced it: `wdutil`, `airport`, `system_profiler`, `iw`, `proc`.
    pub source: String,
}

impl WifiInfo {
    /// A reading that says only "not associated".
    pub fn disconnected(interface: Option<String>, source: &str) -> Self {
        WifiInfo {
            interface,
            connected: false,
            ssid: None,
            ssid_redacted: false,
            bssid: None,
            rssi: None,
            noise: None,
            channel: None,
            band: None,
            channel_width_mhz: None,
            tx_rate: None,
            phy_mode: None,
            security: None,
            source: source.to_string(),
        }
    }

    /// Signal-to-noise ratio in dB, when both are known.
    pub fn snr(&self) -> Option<i32> {
        Some(self.rssi?.saturating_sub(self.noise?))
    }

    /// 0..100 from RSSI: -100 dBm or weaker is 0, -50 dBm or stronger is 100, linear between
    /// (the common `2 × (RSSI + 100)` mapping). `None` when not connected or RSSI unknown.
    pub fn quality_score(&self) -> Option<u8> {
        let rssi = self.rssi.filter(|_| self.connected)?;
        Some((2 * (i64::from(rssi) + 100)).clamp(0, 100) as u8)
    }

    fn set_ssid(&mut self, raw: &str) {
        let raw = raw.trim();
        if raw == "<redacted>" {
            self.ssid = None;
            self.ssid_redacted = true;
        } else {
            self.ssid = Some(raw.to_string()).filter(|s| !s.is_empty());
        }
    }
}

/// A MAC address as lowercase, zero-padded `aa:bb:cc:dd:ee:ff`; `None` for anything else
/// (`<redacted>`, empty, masked `xx:xx`).
pub fn normalize_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut octets = Vec::with_capacity(6);
    for part in parts {
        let byte = (part.len() <= 2).then(|| u8::from_str_radix(part, 16).ok()).flatten()?;
        octets.push(format!("{byte:02x}"));
    }
    Some(octets.join(":"))
}

/// `-55 dBm` (or `-55`) to -55; values outside ±255 are not dBm readings.
fn dbm(text: &str) -> Option<i32> {
    text.trim().trim_end_matches("dBm").trim().parse().ok().filter(|v| (-255..=255).contains(v))
}

/// `145.0 Mbps`, `173.3 MBit/s`, `650` to Mbps.
fn mbps(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse::<f64>().ok().filter(|r| r.is_finite() && *r >= 0.0)
}

/// `11ax` → `802.11ax`; `802.11n` unchanged; `None`/empty → `None`.
fn phy_mode(text: &str) -> Option<String> {
    let t = text.trim();
    match t {
        "" | "None" => None,
        _ if t.starts_with("802.11") => Some(t.to_string()),
        _ if t.starts_with("11") => Some(format!("802.{t}")),
        _ => Some(t.to_string()),
    }
}

/// `spairport_security_mode_wpa2_personal` → `WPA2 Personal`; `…_none` → `None`.
fn sp_security(text: &str) -> Option<String> {
    let mode = text.trim().strip_prefix("spairport_security_mode_").unwrap_or(text.trim());
    if mode.is_empty() {
        return None;
    }
    let mut protocols = Vec::new();
    let mut words = Vec::new();
    for token in mode.split('_').filter(|t| !t.is_empty()) {
        if token.starts_with("wpa") || token == "wep" || token == "owe" {
            protocols.push(token.to_ascii_uppercase());
        } else {
            let mut chars = token.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase()).into_iter();
            words.push(first.chain(chars).collect::<String>());
        }
    }
    let mut name = protocols.join("/");
    if !words.is_empty() {
        if !name.is_empty() {
            name.push(' ');
        }
        name.push_str(&words.join(" "));
    }
    Some(name)
}

/// `airport -I`'s `link auth` → the names wdutil uses.
fn airport_security(text: &str) -> Option<String> {
    let name = match text.trim() {
        "" => return None,
        "none" | "open" => "None",
        "wpa-psk" => "WPA Personal",
        "wpa2-psk" => "WPA2 Personal",
        "wpa3-sae" | "sae" => "WPA3 Personal",
        "wpa" => "WPA Enterprise",
        "wpa2" => "WPA2 Enterprise",
        "wpa3" => "WPA3 Enterprise",
        other => other,
    };
    Some(name.to_string())
}

/// Channel, band and width from the many spellings:
/// wdutil `1 (20 MHz, Active)`, `2g11/20`, `6g101 (160 MHz, Active)`;
/// system_profiler `149 (5GHz, 80MHz)`, `1,+1`, `6`; airport `36,80`, `157,1`.
fn parse_channel(text: &str) -> (Option<u32>, Option<Band>, Option<u32>) {
    let text = text.trim();
    let (head, paren) = match text.split_once('(') {
        Some((h, p)) => (h.trim(), Some(p.trim_end_matches(')'))),
        None => (text, None),
    };
    let mut band = None;
    let mut width = None;
    let mut spec = head;
    for prefix in ["2g", "5g", "6g"] {
        if let Some(rest) = spec.strip_prefix(prefix) {
            band = Band::from_label(prefix);
            spec = rest;
        }
    }
    let (number, suffix) = match spec.split_once(['/', ',']) {
        Some((n, s)) => (n, Some((spec.as_bytes().get(n.len()).copied(), s.trim()))),
        None => (spec, None),
    };
    let channel = number.trim().parse::<u32>().ok().filter(|c| *c > 0 && *c < 256);
    match suffix {
        // `/20`: the width itself (wdutil). `,80`: width (airport); `,1` / `,-1` / `,+1`: HT40
        // above/below.
        Some((Some(b'/'), w)) => width = w.parse().ok(),
        Some((_, "1" | "-1" | "+1")) => width = Some(40),
        Some((_, w)) => width = w.parse().ok().filter(|w| [20, 40, 80, 160, 320].contains(w)),
        None => {}
    }
    if let Some(paren) = paren {
        for part in paren.split(',') {
            let part = part.trim();
            if let Some(b) = Band::from_label(part) {
                band = Some(b);
            } else if let Some(mhz) = part.strip_suffix("MHz") {
                width = mhz.trim().parse().ok().or(width);
            }
        }
    }
    let band = band.or_else(|| channel.and_then(Band::from_channel));
    (channel, band, width)
}

/// Parse `wdutil info` (root only): the `WIFI` section's `Key : value` lines.
pub fn parse_wdutil_info(text: &str) -> Result<WifiInfo, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut section = "";
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        if line.starts_with(|c: char| !c.is_whitespace()) {
            let title = line.trim();
            if !title.starts_with('\u{2014}') && !title.starts_with('-') {
                section = title;
            }
            continue;
        }
        if section != "WIFI" {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let key = key.trim();
        if !key.is_empty() {
            fields.push((key, value.trim()));
        }
    }
    if fields.is_empty() {
        return Err(ParseError::Unrecognised("wdutil info output with a WIFI section"));
    }
    let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let interface = get("Interface Name").map(str::to_string).filter(|s| !s.is_empty());
    let power_on = get("Power").is_none_or(|p| !p.starts_with("Off"));
    let associated = get("Op Mode").is_some_and(|m| m != "None" && !m.is_empty())
        && get("SSID").is_some_and(|s| s != "None" && !s.is_empty());
    if get("RSSI").is_none() && get("Op Mode").is_none() {
        return Err(ParseError::MissingField("RSSI"));
    }
    if !power_on || !associated {
        return Ok(WifiInfo::disconnected(interface, "wdutil"));
    }
    let mut info = WifiInfo::disconnected(interface, "wdutil");
    info.connected = true;
    info.set_ssid(get("SSID").unwrap_or_default());
    info.bssid = get("BSSID").and_then(normalize_mac);
    info.rssi = get("RSSI").and_then(dbm).filter(|r| *r != 0);
    info.noise = get("Noise").and_then(dbm).filter(|n| *n != 0);
    info.tx_rate = get("Tx Rate").and_then(mbps);
    info.phy_mode = get("PHY Mode").and_then(phy_mode);
    info.security = get("Security").map(str::to_string).filter(|s| !s.is_empty());
    (info.channel, info.band, info.channel_width_mhz) = get("Channel").map(parse_channel).unwrap_or_default();
    Ok(info)
}

/// Parse legacy `airport -I` (macOS before 14.4). The 14.4+ deprecation stub, which prints
/// only a warning, is `Unrecognised`: the tool is "not available".
pub fn parse_airport_info(text: &str) -> Result<WifiInfo, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if text.trim() == "AirPort: Off" {
        return Ok(WifiInfo::disconnected(None, "airport"));
    }
    let fields: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty() && !k.contains(' ') || *k == "op mode" || *k == "link auth")
        .collect();
    let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    if get("agrCtlRSSI").is_none() && get("state").is_none() {
        return Err(ParseError::Unrecognised("airport -I fields (agrCtlRSSI, state, …)"));
    }
    let mut info = WifiInfo::disconnected(None, "airport");
    if get("state") != Some("running") {
        return Ok(info);
    }
    info.connected = true;
    info.set_ssid(get("SSID").unwrap_or_default());
    info.bssid = get("BSSID").and_then(normalize_mac);
    info.rssi = get("agrCtlRSSI").and_then(dbm).filter(|r| *r != 0);
    info.noise = get("agrCtlNoise").and_then(dbm).filter(|n| *n != 0);
    info.tx_rate = get("lastTxRate").and_then(mbps);
    info.security = get("link auth").and_then(airport_security);
    (info.channel, info.band, info.channel_width_mhz) = get("channel").map(parse_channel).unwrap_or_default();
    Ok(info)
}

/// Parse `system_profiler SPAirPortDataType -json`, or the text form when the output is not
/// JSON (macOS before 10.15 has no `-json`). `Ok(None)`: the Mac has no Wi-Fi interface.
pub fn parse_sp_airport(text: &str) -> Result<Option<WifiInfo>, ParseError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ParseError::Empty);
    }
    if trimmed.starts_with('{') {
        parse_sp_airport_json(trimmed)
    } else {
        parse_sp_airport_text(text)
    }
}

fn parse_sp_airport_json(text: &str) -> Result<Option<WifiInfo>, ParseError> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|_| ParseError::Unrecognised("a system_profiler -json SPAirPortDataType document"))?;
    let sections = doc.get("SPAirPortDataType").ok_or(ParseError::MissingField("SPAirPortDataType"))?;
    let interfaces = sections
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("spairport_airport_interfaces")?.as_array())
        .flatten();
    let Some(iface) = interfaces
        .into_iter()
        .find(|i| i.get("spairport_status_information").is_some() || i.get("spairport_wireless_card_type").is_some())
    else {
        return Ok(None);
    };
    let name = iface.get("_name").and_then(Value::as_str).map(str::to_string);
    let status = iface.get("spairport_status_information").and_then(Value::as_str).unwrap_or_default();
    let mut info = WifiInfo::disconnected(name, "system_profiler");
    let Some(net) = iface.get("spairport_current_network_information").filter(|_| status.ends_with("_connected"))
    else {
        return Ok(Some(info));
    };
    info.connected = true;
    let text_of = |key: &str| net.get(key).and_then(Value::as_str);
    info.set_ssid(text_of("_name").unwrap_or_default());
    info.bssid = text_of("spairport_network_bssid").and_then(normalize_mac);
    if let Some((signal, noise)) = text_of("spairport_signal_noise").and_then(|s| s.split_once('/')) {
        info.rssi = dbm(signal).filter(|r| *r != 0);
        info.noise = dbm(noise).filter(|n| *n != 0);
    }
    info.tx_rate = net.get("spairport_network_rate").and_then(|r| r.as_f64().or_else(|| mbps(r.as_str()?)));
    info.phy_mode = text_of("spairport_network_phymode").and_then(phy_mode);
    info.security = text_of("spairport_security_mode").and_then(sp_security);
    let channel = match net.get("spairport_network_channel") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    (info.channel, info.band, info.channel_width_mhz) = parse_channel(&channel);
    Ok(Some(info))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn parse_sp_airport_text(text: &str) -> Result<Option<WifiInfo>, ParseError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).peekable();
    let title = lines.peek().map(|l| l.trim()).unwrap_or_default();
    if title != "Wi-Fi:" && title != "AirPort:" {
        return Err(ParseError::Unrecognised("system_profiler SPAirPortDataType text (\"Wi-Fi:\")"));
    }
    // Find the first interface under `Interfaces:`.
    let mut iface: Option<(String, usize)> = None;
    let mut interfaces_indent = None;
    let mut status = None;
    let mut net_indent: Option<usize> = None;
    let mut info = WifiInfo::disconnected(None, "system_profiler");
    let mut net_fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        let depth = indent(line);
        let t = line.trim();
        if t == "Interfaces:" {
            interfaces_indent = Some(depth);
            continue;
        }
        let Some(list_depth) = interfaces_indent else { continue };
        match &iface {
            None => {
                if depth > list_depth && t.ends_with(':') && !t.contains(' ') {
                    iface = Some((t.trim_end_matches(':').to_string(), depth));
                }
                continue;
            }
            Some((_, if_depth)) if depth <= *if_depth => break,
            Some(_) => {}
        }
        if let Some(nd) = net_indent {
            if depth <= nd {
                net_indent = None;
            } else {
                if t.ends_with(':') && info.ssid.is_none() && !info.ssid_redacted && net_fields.is_empty() {
                    info.set_ssid(t.trim_end_matches(':'));
                } else if let Some((k, v)) = t.split_once(':') {
                    net_fields.push((k.trim().to_string(), v.trim().to_string()));
                }
                continue;
            }
        }
        if t == "Current Network Information:" {
            net_indent = Some(depth);
        } else if let Some(s) = t.strip_prefix("Status:") {
            status = Some(s.trim().to_string());
        }
    }
    let Some((name, _)) = iface else { return Ok(None) };
    info.interface = Some(name);
    if status.as_deref() != Some("Connected") {
        return Ok(Some(WifiInfo::disconnected(info.interface, "system_profiler")));
    }
    info.connected = true;
    let get = |name: &str| net_fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some((signal, noise)) = get("Signal / Noise").and_then(|s| s.split_once('/')) {
        info.rssi = dbm(signal).filter(|r| *r != 0);
        info.noise = dbm(noise).filter(|n| *n != 0);
    }
    info.tx_rate = get("Transmit Rate").and_then(mbps);
    info.phy_mode = get("PHY Mode").and_then(phy_mode);
    info.security = get("Security").map(str::to_string).filter(|s| !s.is_empty());
    info.bssid = get("BSSID").and_then(normalize_mac);
    (info.channel, info.band, info.channel_width_mhz) = get("Channel").map(parse_channel).unwrap_or_default();
    Ok(Some(info))
}

/// One line of `/proc/net/wireless`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcWireless {
    /// Interface name.
    pub interface: String,
    /// Link quality as the driver scales it.
    pub link: Option<f64>,
    /// Signal level in dBm (`None` when the driver reports no dBm value).
    pub level: Option<i32>,
    /// Noise in dBm (`None` for the driver's "not available" -256).
    pub noise: Option<i32>,
}

/// Parse `/proc/net/wireless`: two header lines, then `iface: status link level noise …`.
/// An empty list means no wireless interface is up.
pub fn parse_proc_net_wireless(text: &str) -> Result<Vec<ProcWireless>, ParseError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or(ParseError::Empty)?;
    if header.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if !header.starts_with("Inter-") {
        return Err(ParseError::Unrecognised("a /proc/net/wireless header starting with Inter-"));
    }
    let mut out = Vec::new();
    for line in lines {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name.is_empty() || name.contains(' ') || name == "face" {
            continue;
        }
        let cols: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| cols.get(i).and_then(|c| c.trim_end_matches('.').parse::<f64>().ok());
        let dbm_col = |i: usize| num(i).filter(|v| *v < 0.0 && *v > -256.0).map(|v| v as i32);
        out.push(ProcWireless { interface: name.to_string(), link: num(1), level: dbm_col(2), noise: dbm_col(3) });
    }
    Ok(out)
}

/// Parse `iw dev` (or `iw dev <if> info`): the names of managed (station) interfaces.
/// Empty output means no wireless device.
pub fn parse_iw_dev(text: &str) -> Result<Vec<String>, ParseError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut recognised = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("phy#") {
            recognised = true;
        } else if let Some(name) = t.strip_prefix("Interface ") {
            recognised = true;
            out.push((name.trim().to_string(), None));
        } else if let Some(kind) = t.strip_prefix("type ") {
            if let Some(last) = out.last_mut() {
                last.1 = Some(kind.trim().to_string());
            }
        }
    }
    if !recognised {
        return Err(ParseError::Unrecognised("iw dev output (\"Interface <name>\" lines)"));
    }
    Ok(out.into_iter().filter(|(_, kind)| kind.as_deref().is_none_or(|k| k == "managed")).map(|(n, _)| n).collect())
}

/// Parse `iw dev <if> link`: `Not connected.` or `Connected to <bssid> (on <if>)` followed
/// by `SSID:`, `freq:`, `signal:`, `tx bitrate:` lines.
pub fn parse_iw_link(text: &str) -> Result<WifiInfo, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut info: Option<WifiInfo> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Not connected") {
            return Ok(WifiInfo::disconnected(None, "iw"));
        }
        if let Some(rest) = t.strip_prefix("Connected to ") {
            let (bssid, iface) = match rest.split_once(" (on ") {
                Some((b, i)) => (b, Some(i.trim_end_matches(')').trim().to_string())),
                None => (rest, None),
            };
            let mut new = WifiInfo::disconnected(iface, "iw");
            new.connected = true;
            new.bssid = normalize_mac(bssid);
            info = Some(new);
            continue;
        }
        let Some(info) = info.as_mut() else { continue };
        let Some((key, value)) = t.split_once(':') else { continue };
        let value = value.trim();
        match key.trim() {
            "SSID" => info.set_ssid(value),
            "freq" => {
                if let Ok(mhz) = value.split_whitespace().next().unwrap_or_default().parse::<f64>() {
                    info.channel = channel_from_freq(mhz);
                    info.band = Band::from_freq(mhz);
                }
            }
            "signal" => info.rssi = value.split_whitespace().next().and_then(dbm).filter(|r| *r != 0),
            "tx bitrate" => {
                info.tx_rate = mbps(value);
                let tokens: Vec<&str> = value.split_whitespace().collect();
                info.phy_mode = if tokens.iter().any(|t| t.starts_with("EHT-")) {
                    Some("802.11be")
                } else if tokens.iter().any(|t| t.starts_with("HE-")) {
                    Some("802.11ax")
                } else if tokens.iter().any(|t| t.starts_with("VHT-")) {
                    Some("802.11ac")
                } else if tokens.contains(&"MCS") {
                    Some("802.11n")
                } else {
                    None
                }
                .map(str::to_string);
                // iw names the width only above 20 MHz; an MCS rate without one is 20 MHz.
                info.channel_width_mhz = tokens
                    .iter()
                    .find_map(|t| t.strip_suffix("MHz").and_then(|w| w.parse().ok()))
                    .or(info.phy_mode.as_ref().map(|_| 20));
            }
            _ => {}
        }
    }
    info.ok_or(ParseError::Unrecognised("iw dev link output (\"Connected to …\" or \"Not connected.\")"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};
    use serde_json::json;

    const W: &str = "wifi";

    fn render(name: &str, body: &str) -> Option<Value> {
        let value = if name.starts_with("wdutil-info--") {
            result_json(parse_wdutil_info(body))
        } else if name.starts_with("airport-I--") {
            result_json(parse_airport_info(body))
        } else if name.starts_with("system_profiler-SPAirPortDataType") {
            result_json(parse_sp_airport(body))
        } else if name.starts_with("proc-net-wireless--") {
            result_json(parse_proc_net_wireless(body))
        } else if name.starts_with("iw-dev-info--") {
            result_json(parse_iw_dev(body))
        } else if name.starts_with("iw-dev-link--") {
            result_json(parse_iw_link(body))
        } else {
            return None;
        };
        Some(value)
    }

    #[test]
    fn every_fixture_matches_its_golden_file() {
        check_golden(W, render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust(
            W,
            |input| {
                let derived = |info: Result<WifiInfo, ParseError>| info.map(|i| (i.snr(), i.quality_score()));
                let _ = derived(parse_wdutil_info(input));
                let _ = derived(parse_airport_info(input));
                let _ = derived(parse_sp_airport(input).and_then(|i| i.ok_or(ParseError::Empty)));
                let _ = parse_proc_net_wireless(input);
                let _ = parse_iw_dev(input);
                let _ = derived(parse_iw_link(input));
            },
            render,
        );
    }

    #[test]
    fn wdutil_sonoma_6ghz_redacted_keeps_the_radio_values() {
        let info =
            parse_wdutil_info(&fixture(W, "wdutil-info--sonoma-6ghz-160mhz-wpa3-macadmins.txt")).expect("parses");
        assert_eq!(
            info,
            WifiInfo {
                interface: Some("en0".into()),
                connected: true,
                ssid: None,
                ssid_redacted: true,
                bssid: None,
                rssi: Some(-34),
                noise: Some(-92),
                channel: Some(101),
                band: Some(Band::Ghz6),
                channel_width_mhz: Some(160),
                tx_rate: Some(2401.0),
                phy_mode: Some("802.11ax".into()),
                security: Some("WPA3 Personal".into()),
                source: "wdutil".into(),
            }
        );
        assert_eq!((info.snr(), info.quality_score()), (Some(58), Some(100)));
    }

    #[test]
    fn wdutil_monterey_channel_format_and_plain_ssid() {
        let info = parse_wdutil_info(&fixture(W, "wdutil-info--macos12-5ghz-11ac-dfs-heatmapper.txt")).expect("parses");
        assert_eq!((info.ssid.as_deref(), info.ssid_redacted), (Some("SomeSSID-5"), false));
        assert_eq!(info.bssid.as_deref(), Some("fe:dc:ba:09:87:65"));
        assert_eq!((info.channel, info.band, info.channel_width_mhz), (Some(144), Some(Band::Ghz5), Some(40)));
        assert_eq!((info.rssi, info.noise, info.tx_rate), (Some(-61), Some(-96), Some(324.0)));
        assert_eq!(info.quality_score(), Some(78));
        let narrow = parse_wdutil_info(&fixture(W, "wdutil-info--macos15-2.4ghz-11ax-redacted-heatmapper.txt"));
        let narrow = narrow.expect("parses");
        assert_eq!((narrow.channel, narrow.band, narrow.channel_width_mhz), (Some(1), Some(Band::Ghz2_4), Some(20)));
        assert_eq!(narrow.security.as_deref(), Some("None"));
    }

    #[test]
    fn wdutil_not_associated() {
        let info = parse_wdutil_info(&fixture(W, "wdutil-info--not-associated-heatmapper.txt")).expect("parses");
        assert_eq!(info, WifiInfo::disconnected(Some("en0".into()), "wdutil"));
        assert_eq!(info.quality_score(), None);
    }

    #[test]
    fn airport_variants_and_the_deprecation_stub() {
        let info = parse_airport_info(&fixture(W, "airport-I--node-wifi-5ghz.txt")).expect("parses");
        assert_eq!(info.bssid.as_deref(), Some("31:23:03:1a:9f:1d"), "zero-padded");
        assert_eq!((info.channel, info.band, info.channel_width_mhz), (Some(36), Some(Band::Ghz5), Some(80)));
        assert_eq!((info.rssi, info.noise, info.tx_rate), (Some(-50), Some(-92), Some(650.0)));
        assert_eq!(info.security.as_deref(), Some("WPA2 Personal"));
        let ht40 = parse_airport_info(&fixture(W, "airport-I--telegraf-5ghz-ht40-empty-bssid.txt")).expect("parses");
        assert_eq!((ht40.channel, ht40.channel_width_mhz, ht40.bssid), (Some(157), Some(40), None));
        assert_eq!(ht40.ssid.as_deref(), Some("Foo Bar"));
        let stub = parse_airport_info(&fixture(W, "airport-I--sonoma14.4-deprecated-stub-wifiloccontrol1.txt"));
        assert_eq!(stub, Err(ParseError::Unrecognised("airport -I fields (agrCtlRSSI, state, …)")));
    }

    #[test]
    fn system_profiler_json_connected_off_and_old_channel_format() {
        let name = "system_profiler-SPAirPortDataType-json--macos15.5-iphone-hotspot-heatmapper.txt";
        let info = parse_sp_airport(&fixture(W, name)).expect("parses").expect("has Wi-Fi");
        assert_eq!((info.interface.as_deref(), info.ssid.as_deref()), (Some("en0"), Some("SSID-1")));
        assert_eq!((info.channel, info.band, info.channel_width_mhz), (Some(149), Some(Band::Ghz5), Some(80)));
        assert_eq!((info.rssi, info.noise, info.tx_rate), (Some(-55), Some(-95), Some(864.0)));
        assert_eq!((info.phy_mode.as_deref(), info.security.as_deref()), (Some("802.11ax"), Some("WPA2 Personal")));
        let old = "system_profiler-SPAirPortDataType-json--macos10.15.7-connected-heatmapper.txt";
        let old = parse_sp_airport(&fixture(W, old)).expect("parses").expect("has Wi-Fi");
        assert_eq!((old.interface.as_deref(), old.channel, old.band), (Some("en1"), Some(6), Some(Band::Ghz2_4)));
        assert_eq!((old.channel_width_mhz, old.security.as_deref()), (None, Some("None")));
        let off = "system_profiler-SPAirPortDataType-json--macos15.5-wifi-off-heatmapper.txt";
        let off = parse_sp_airport(&fixture(W, off)).expect("parses").expect("has Wi-Fi");
        assert_eq!(off, WifiInfo::disconnected(Some("en0".into()), "system_profiler"));
        assert_eq!(parse_sp_airport("{\"SPAirPortDataType\": []}"), Ok(None));
        assert_eq!(parse_sp_airport("{\"x\": 1}"), Err(ParseError::MissingField("SPAirPortDataType")));
    }

    #[test]
    fn system_profiler_text_redacted() {
        let name = "system_profiler-SPAirPortDataType--macos15.7.4-redacted-ssid-5ghz-trimmed-buntest.txt";
        let info = parse_sp_airport(&fixture(W, name)).expect("parses").expect("has Wi-Fi");
        assert_eq!((info.ssid, info.ssid_redacted, info.interface.as_deref()), (None, true, Some("en0")));
        assert_eq!((info.channel, info.band, info.channel_width_mhz), (Some(128), Some(Band::Ghz5), Some(80)));
        assert_eq!((info.rssi, info.noise, info.tx_rate), (Some(-70), Some(-90), Some(144.0)));
        assert_eq!(info.security.as_deref(), Some("WPA2/WPA3 Personal"));
    }

    #[test]
    fn linux_proc_iw_dev_and_link() {
        let proc = parse_proc_net_wireless(&fixture(W, "proc-net-wireless--telegraf-two-ifaces.txt")).expect("parses");
        assert_eq!(
            proc,
            vec![
                ProcWireless { interface: "wlan0".into(), link: Some(60.0), level: Some(-50), noise: None },
                ProcWireless { interface: "wlan1".into(), link: Some(70.0), level: Some(-39), noise: None },
            ]
        );
        assert_eq!(parse_iw_dev(&fixture(W, "iw-dev-info--ubuntu24.04-heatmapper.txt")), Ok(vec!["wlp1s0".into()]));
        let link = parse_iw_link(&fixture(W, "iw-dev-link--5ghz-vht-full-rtl8812au42.txt")).expect("parses");
        assert_eq!(
            (link.interface.as_deref(), link.bssid.as_deref(), link.ssid.as_deref()),
            (Some("wlan0"), None, Some("xxx"))
        );
        assert_eq!(
            (link.channel, link.band, link.rssi, link.tx_rate),
            (Some(60), Some(Band::Ghz5), Some(-60), Some(173.3))
        );
        assert_eq!((link.phy_mode.as_deref(), link.channel_width_mhz), (Some("802.11ac"), Some(20)));
        let decimal = parse_iw_link(&fixture(W, "iw-dev-link--ubuntu24.04-2.4ghz-heatmapper.txt")).expect("parses");
        assert_eq!(
            (decimal.channel, decimal.band, decimal.bssid.as_deref()),
            (Some(1), Some(Band::Ghz2_4), Some("fe:dc:ba:98:76:02"))
        );
        assert_eq!(parse_iw_link("Not connected.\n"), Ok(WifiInfo::disconnected(None, "iw")));
    }

    #[test]
    fn helpers() {
        assert_eq!(parse_channel("2g11/20"), (Some(11), Some(Band::Ghz2_4), Some(20)));
        assert_eq!(parse_channel("1,+1"), (Some(1), Some(Band::Ghz2_4), Some(40)));
        assert_eq!(parse_channel("6 (2GHz, 20MHz)"), (Some(6), Some(Band::Ghz2_4), Some(20)));
        assert_eq!(parse_channel("garbage"), (None, None, None));
        assert_eq!(channel_from_freq(5955.0), Some(1));
        assert_eq!(Band::from_freq(5955.0), Some(Band::Ghz6));
        assert_eq!(channel_from_freq(2484.0), Some(14));
        assert_eq!(normalize_mac("<redacted>"), None);
        assert_eq!(sp_security("spairport_security_mode_wpa2_wpa3_personal").as_deref(), Some("WPA2/WPA3 Personal"));
        assert_eq!(serde_json::to_value(Band::Ghz2_4).ok(), Some(json!("2.4GHz")));
    }
}
