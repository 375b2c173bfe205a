//! `security`: `metrics.security` as Atlas's agent reports it: `{firewall_enabled,
//! filevault_enabled, gatekeeper_enabled, sip_enabled}` booleans.
//!
//! macOS: `fdesetup status`, `/usr/libexec/ApplicationFirewall/socketfilterfw
//! --getglobalstate`, `spctl --status` and `csrutil status`, parsed by [`parse`]. A command
//! that fails or prints something unknown counts as `false` (Atlas's meaning: not shown as
//! protected) and is named in `unknown`. Linux: all four `false`, as Atlas's agent sends them
//! there (none of these macOS protections exists). Atlas's machine page shows SIP "Enabled"
//! when the field is missing, so the fields are always present.

pub mod parse;

use serde_json::{json, Value};

use crate::host::DEFAULT_COMMAND_TIMEOUT;
use crate::{no_options, CollectError, Host, Os, ParseError, Sample, Timestamp, Widget, WidgetSpec};
use parse::SipStatus;

/// Registry entry.
pub static SPEC: WidgetSpec = WidgetSpec {
    name: "security",
    summary: "Firewall, FileVault, Gatekeeper and SIP state (macOS; all false on Linux, as Atlas)",
    enabled_by_default: true,
    default_interval_s: Some(300),
    default_jitter_s: 0,
    validate: no_options,
    build: |_| Box::new(SecurityWidget),
};

/// `fdesetup status`.
pub const FDESETUP: &[&str] = &["fdesetup", "status"];
/// The application firewall's global state.
pub const SOCKETFILTERFW: &[&str] = &["/usr/libexec/ApplicationFirewall/socketfilterfw", "--getglobalstate"];
/// Gatekeeper.
pub const SPCTL: &[&str] = &["spctl", "--status"];
/// System Integrity Protection.
pub const CSRUTIL: &[&str] = &["csrutil", "status"];

/// Stateless: the four commands are run each time.
pub struct SecurityWidget;

/// Run `argv` and parse its standard output with `parse`; `None` when either fails.
fn read<T>(host: &dyn Host, argv: &[&str], parse: fn(&str) -> Result<T, ParseError>) -> Option<T> {
    let out = host.run(argv, DEFAULT_COMMAND_TIMEOUT).ok()?;
    parse(&out.stdout).ok()
}

/// The `metrics.security` object for macOS readings (`None` = could not be read).
pub fn security_json(
    firewall: Option<bool>,
    filevault: Option<bool>,
    gatekeeper: Option<bool>,
    sip: Option<SipStatus>,
) -> Value {
    let mut unknown = Vec::new();
    for (name, known) in [
        ("firewall", firewall.is_some()),
        ("filevault", filevault.is_some()),
        ("gatekeeper", gatekeeper.is_some()),
        ("sip", sip.is_some()),
    ] {
        if !known {
            unknown.push(name);
        }
    }
    let mut data = json!({
        "firewall_enabled": firewall.unwrap_or(false),
        "filevault_enabled": filevault.unwrap_or(false),
        "gatekeeper_enabled": gatekeeper.unwrap_or(false),
        "sip_enabled": sip == Some(SipStatus::Enabled),
        "sip_status": sip,
    });
    if let (Some(map), false) = (data.as_object_mut(), unknown.is_empty()) {
        map.insert("unknown".to_string(), json!(unknown));
    }
    data
}

impl Widget for SecurityWidget {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect(&mut self, host: &dyn Host, _now: Timestamp) -> Result<Vec<Sample>, CollectError> {
        let data = match host.os() {
            Os::Macos => security_json(
                read(host, SOCKETFILTERFW, parse::parse_firewall_global_state),
                read(host, FDESETUP, parse::parse_fdesetup_status),
                read(host, SPCTL, parse::parse_spctl_status),
                read(host, CSRUTIL, parse::parse_csrutil_status),
            ),
            _ => json!({
                "firewall_enabled": false, "filevault_enabled": false,
                "gatekeeper_enabled": false, "sip_enabled": false,
            }),
        };
        Ok(vec![Sample::metric("security", data)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::fixture;
    use crate::FixtureHost;

    const W: &str = "security";

    #[test]
    fn macos_reads_the_four_commands() {
        let host = FixtureHost::new(Os::Macos)
            .with_command("fdesetup status", &fixture(W, "fdesetup-status--on-security-checklist.txt"))
            .with_command(
                "/usr/libexec/ApplicationFirewall/socketfilterfw --getglobalstate",
                &fixture(W, "socketfilterfw-getglobalstate--enabled-state1-kolide.txt"),
            )
            .with_command("spctl --status", &fixture(W, "spctl-status--assessments-enabled-theinstructional.txt"))
            .with_command("csrutil status", &fixture(W, "csrutil-status--custom-configuration-osxlatitude.txt"));
        let data = &SecurityWidget.collect(&host, Timestamp(0)).expect("security")[0].data;
        assert_eq!(
            *data,
            json!({
                "firewall_enabled": true, "filevault_enabled": true, "gatekeeper_enabled": true,
                "sip_enabled": false, "sip_status": "custom",
            })
        );
    }

    #[test]
    fn macos_failures_count_as_off_and_are_named() {
        let host = FixtureHost::new(Os::Macos).with_command("spctl --status", "assessments disabled\n");
        let data = &SecurityWidget.collect(&host, Timestamp(0)).expect("security")[0].data;
        assert_eq!(data["sip_enabled"], false, "missing would read as Enabled on Atlas's page");
        assert_eq!(data["unknown"], json!(["firewall", "filevault", "sip"]));
    }

    #[test]
    fn linux_reports_all_false_as_atlas() {
        let data = &SecurityWidget.collect(&FixtureHost::new(Os::Linux), Timestamp(0)).expect("security")[0].data;
        assert_eq!(
            *data,
            json!({"firewall_enabled": false, "filevault_enabled": false, "gatekeeper_enabled": false, "sip_enabled": false})
        );
    }
}
