//! Pure parsers of the four macOS security commands Atlas's agent reads, compiled and tested
//! on every OS.

use crate::ParseError;

/// The first non-empty line, trimmed.
fn first_line(text: &str) -> Result<&str, ParseError> {
    text.lines().map(str::trim).find(|l| !l.is_empty()).ok_or(ParseError::Empty)
}

/// `fdesetup status`: `FileVault is On.` / `FileVault is Off.` (possibly followed by notes
/// such as deferred enablement), `Encryption in progress: …` (on: the disk is being
/// encrypted) or `Decryption in progress: …` (off).
pub fn parse_fdesetup_status(text: &str) -> Result<bool, ParseError> {
    let line = first_line(text)?;
    if line.starts_with("FileVault is On") || line.starts_with("Encryption in progress") {
        Ok(true)
    } else if line.starts_with("FileVault is Off") || line.starts_with("Decryption in progress") {
        Ok(false)
    } else {
        Err(ParseError::Unrecognised("`FileVault is On.` or `FileVault is Off.`"))
    }
}

/// `socketfilterfw --getglobalstate`: `Firewall is enabled. (State = 1)`, `Firewall is
/// disabled. (State = 0)`, or state 2 (block all incoming). On for any state above 0.
pub fn parse_firewall_global_state(text: &str) -> Result<bool, ParseError> {
    let line = first_line(text)?;
    if let Some((_, rest)) = line.split_once("(State = ") {
        let digits = rest.trim_end_matches(')').trim();
        let state: u32 = digits.parse().map_err(|_| ParseError::bad_value("State", digits))?;
        return Ok(state > 0);
    }
    if line.starts_with("Firewall is enabled") || line.starts_with("Firewall is blocking") {
        Ok(true)
    } else if line.starts_with("Firewall is disabled") {
        Ok(false)
    } else {
        Err(ParseError::Unrecognised("`Firewall is enabled. (State = 1)`"))
    }
}

/// `spctl --status`: `assessments enabled` / `assessments disabled` (Gatekeeper).
pub fn parse_spctl_status(text: &str) -> Result<bool, ParseError> {
    match first_line(text)? {
        "assessments enabled" => Ok(true),
        "assessments disabled" => Ok(false),
        _ => Err(ParseError::Unrecognised("`assessments enabled` or `assessments disabled`")),
    }
}

/// System Integrity Protection as `csrutil status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SipStatus {
    /// `status: enabled.`: every protection on.
    Enabled,
    /// `status: disabled.`
    Disabled,
    /// `enabled (Custom Configuration)` or `unknown (Custom Configuration)`: some
    /// protections turned off. Not reported as enabled.
    Custom,
}

/// `csrutil status`: `System Integrity Protection status: enabled.` / `disabled.` /
/// `… (Custom Configuration).` followed by the per-protection list.
pub fn parse_csrutil_status(text: &str) -> Result<SipStatus, ParseError> {
    let line = first_line(text)?;
    let status = line
        .strip_prefix("System Integrity Protection status:")
        .ok_or(ParseError::Unrecognised("`System Integrity Protection status: …`"))?
        .trim();
    if status.contains("Custom Configuration") {
        Ok(SipStatus::Custom)
    } else if status.starts_with("enabled") {
        Ok(SipStatus::Enabled)
    } else if status.starts_with("disabled") {
        Ok(SipStatus::Disabled)
    } else {
        Err(ParseError::bad_value("System Integrity Protection status", status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, result_json};

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        let command = name.split("--").next().unwrap_or("");
        match command {
            "fdesetup-status" => Some(result_json(parse_fdesetup_status(body))),
            "socketfilterfw-getglobalstate" => Some(result_json(parse_firewall_global_state(body))),
            "spctl-status" => Some(result_json(parse_spctl_status(body))),
            "csrutil-status" => Some(result_json(parse_csrutil_status(body))),
            _ => None,
        }
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("security", render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust(
            "security",
            |text| {
                let _ = parse_fdesetup_status(text);
                let _ = parse_firewall_global_state(text);
                let _ = parse_spctl_status(text);
                let _ = parse_csrutil_status(text);
            },
            render,
        );
    }

    #[test]
    fn transitional_and_foreign_outputs() {
        assert_eq!(parse_fdesetup_status("Encryption in progress: Percent completed = 12.3\n"), Ok(true));
        assert_eq!(parse_fdesetup_status("Decryption in progress: Percent completed = 80\n"), Ok(false));
        assert!(parse_fdesetup_status("FileVault ist aus.\n").is_err());
        assert_eq!(
            parse_firewall_global_state("Firewall is blocking all non-essential incoming connections. (State = 2)"),
            Ok(true)
        );
        assert!(parse_firewall_global_state("Firewall is enabled. (State = x)").is_err());
        assert_eq!(
            parse_csrutil_status("System Integrity Protection status: unknown (Custom Configuration).\n"),
            Ok(SipStatus::Custom)
        );
        assert_eq!(parse_spctl_status(""), Err(ParseError::Empty));
    }
}
