//! Property tests ("fuzzing" that runs in CI): every command-output parser takes any text
//! without panicking: random strings, random sequences of real fixture lines, and fixture
//! files with random byte-level mutations (flips, insertions, deletions, truncation). What a
//! parser returns for such input is not checked, only that it returns; what it derives from
//! a parse (battery readings, Wi-Fi quality) is computed too.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256, when unset). A longer run:
//! `PROPTEST_CASES=100000 cargo test --release -p fleet-widgets fuzz::`.

use std::path::Path;

use proptest::prelude::*;

use crate::battery::parse as battery;
use crate::cpu::parse as cpu;
use crate::disk::parse as disk;
use crate::machine::parse as machine;
use crate::network::parse as network;
use crate::ping::icmp;
use crate::ping::parse as ping;
use crate::processes::parse as processes;
use crate::security::parse as security;
use crate::speedtest::parse as speedtest;
use crate::system::parse as system;
use crate::temperature::parse as temperature;
use crate::users::parse as users;
use crate::wifi::parse as wifi;

/// Run every parser of `widget` on `text` (results dropped; a panic fails the property).
fn parse_all(widget: &str, text: &str) {
    match widget {
        "battery" => {
            let pmset = battery::parse_pmset_batt(text).ok();
            let ioreg = battery::parse_ioreg_battery(text).ok();
            let _ = battery::from_macos(pmset.as_ref(), ioreg.as_ref());
            if let Ok(supply) = battery::parse_power_supply_uevent(text) {
                let _ = battery::from_linux(&[supply.clone(), supply]);
            }
            let _ = battery::parse_online(text);
        }
        "wifi" => {
            for info in [
                wifi::parse_wdutil_info(text).ok(),
                wifi::parse_airport_info(text).ok(),
                wifi::parse_sp_airport(text).ok().flatten(),
                wifi::parse_iw_link(text).ok(),
            ]
            .into_iter()
            .flatten()
            {
                let _ = (info.snr(), info.quality_score());
            }
            let _ = wifi::parse_proc_net_wireless(text);
            let _ = wifi::parse_iw_dev(text);
            let _ = wifi::normalize_mac(text);
        }
        "ping" => {
            let _ = ping::parse_ping(text);
            let _ = icmp::parse_echo_reply(icmp::Family::V4, text.as_bytes());
            let _ = icmp::parse_echo_reply(icmp::Family::V6, text.as_bytes());
        }
        "speedtest" => {
            let _ = speedtest::parse_ookla(text);
            let _ = speedtest::parse_network_quality(text);
        }
        "machine" => {
            let _ = machine::parse_sp_hardware(text);
            let _ = machine::parse_scutil_get(text);
            let _ = machine::parse_proc_net_route_default(text);
            let _ = machine::parse_mountinfo(text).map(|m| machine::real_disks(&m).len());
            let _ = machine::parse_cpuinfo_model(text);
            let _ = machine::parse_sp_displays(text);
            let _ = machine::parse_sysfs_if_up(text);
            let _ = machine::sysfs_if_running(Some(text), Some(text));
            let _ = machine::parse_sysfs_speed(text);
            let _ = machine::real_serial(text);
            let _ = machine::parse_os_release(text);
            let _ = machine::parse_lsb_release(text);
        }
        "processes" => {
            let _ = processes::parse_proc_pid_stat(text);
            let _ = processes::parse_passwd(text);
            let _ = processes::parse_meminfo_total(text);
        }
        "network" => {
            let _ = network::parse_proc_net_dev(text);
            let _ = network::parse_sockstat(text);
        }
        "security" => {
            let _ = security::parse_fdesetup_status(text);
            let _ = security::parse_firewall_global_state(text);
            let _ = security::parse_spctl_status(text);
            let _ = security::parse_csrutil_status(text);
        }
        "users" => {
            let _ = users::parse_who(text);
        }
        "temperature" => {
            let _ = temperature::parse_zone_temp(text);
            let _ = temperature::parse_zone_type(text).map(|t| temperature::cpu_zone_rank(&t));
        }
        "cpu" => {
            if let Ok(stat) = cpu::parse_proc_stat_cpus(text) {
                let _ = crate::cpu::usage::per_core(&stat.cores, &stat.cores);
                let _ = crate::cpu::usage::percent(Some(&stat.total), &stat.total);
            }
            let _ = cpu::parse_loadavg(text);
            let _ = cpu::parse_cpuinfo_physical_cores(text);
        }
        "system" => {
            let _ = system::parse_proc_stat_btime(text);
        }
        "disk" => {
            let _ = disk::parse_diskstats(text, |name| name.len() % 2 == 0);
        }
        other => panic!("no parsers listed for {other}"),
    }
}

const WIDGETS: [&str; 11] =
    ["battery", "wifi", "ping", "speedtest", "machine", "processes", "network", "disk", "security", "cpu", "system"];

/// The fixture texts of every widget, as `(widget, text)` (read once).
fn fixtures() -> &'static [(&'static str, String)] {
    static ALL: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    ALL.get_or_init(read_fixtures)
}

fn read_fixtures() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for widget in WIDGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(widget).join("testdata");
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((widget, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    assert!(out.len() > 40, "fixtures found: {}", out.len());
    out
}

/// One byte-level edit.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    DuplicateLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, x)| Edit::Flip(at, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1..64usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        any::<usize>().prop_map(Edit::Truncate),
        any::<usize>().prop_map(Edit::DuplicateLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len().max(1);
        match *e {
            Edit::Flip(at, x) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= x;
                }
            }
            Edit::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Edit::Delete(at, n) => {
                let from = at % len;
                let to = (from + n).min(bytes.len());
                bytes.drain(from.min(to)..to);
            }
            Edit::Truncate(at) => bytes.truncate(at % len),
            Edit::DuplicateLine(at) => {
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let line = lines[at % lines.len()].to_vec();
                let pos = at % (bytes.len() + 1);
                bytes.splice(pos..pos, line.into_iter().chain([b'\n']));
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #[test]
    fn parsers_take_random_text(text in any::<String>(), widget in 0..WIDGETS.len()) {
        parse_all(WIDGETS[widget], &text);
    }

    #[test]
    fn parsers_take_mutated_fixtures(pick in any::<usize>(), edits in prop::collection::vec(edit(), 0..12)) {
        let all = fixtures();
        let (widget, text) = &all[pick % all.len()];
        let mutated = apply(text, &edits);
        parse_all(widget, &mutated);
        parse_all(widget, crate::host::strip_fixture_header(&mutated));
    }

    #[test]
    fn parsers_take_shuffled_fixture_lines(widget in 0..WIDGETS.len(), picks in prop::collection::vec(any::<usize>(), 0..40)) {
        let all = fixtures();
        let lines: Vec<&str> =
            all.iter().filter(|(w, _)| *w == WIDGETS[widget]).flat_map(|(_, t)| t.lines()).collect();
        let text: Vec<&str> = picks.iter().map(|i| lines[i % lines.len()]).collect();
        parse_all(WIDGETS[widget], &text.join("\n"));
    }
}
