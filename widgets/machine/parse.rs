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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::strip_fixture_header;

    fn fixture(name: &str) -> String {
        let path = format!("{}/machine/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        strip_fixture_header(&text).to_string()
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
}
