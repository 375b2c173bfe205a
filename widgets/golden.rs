//! Test helpers shared by the widgets' fixture tests: golden files and robustness loops.
//!
//! Every fixture `widgets/<widget>/testdata/<name>.txt` has a golden file
//! `<name>.txt.expected.json` beside it holding what the widget's parser makes of it (a value
//! or `{"error": "<ParseError display>"}`). Run the tests with `FLEET_UPDATE_GOLDEN=1` to
//! (re)write the golden files, then review the diff: they are the asserted values.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::host::strip_fixture_header;

/// The suffix of golden files.
pub const GOLDEN_SUFFIX: &str = ".expected.json";

/// The suffix of binary fixtures (the `users` widget's utmp files). They have no text header:
/// their source is in a sidecar `<name>.bin.md`, and their widget checks them itself.
pub const BINARY_SUFFIX: &str = ".bin";

fn testdata(widget: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(widget).join("testdata")
}

/// Every fixture of `widget` as (file name, content without the source header), sorted.
pub fn fixtures(widget: &str) -> Vec<(String, String)> {
    let dir = testdata(widget);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(GOLDEN_SUFFIX) && !name.ends_with(".md") && !name.ends_with(BINARY_SUFFIX))
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(text.starts_with("# source:"), "{name}: fixture must keep its source header");
            let body = strip_fixture_header(&text).to_string();
            (name, body)
        })
        .collect();
    out.sort();
    out
}

/// The content of one fixture (header stripped).
pub fn fixture(widget: &str, name: &str) -> String {
    let path = testdata(widget).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    strip_fixture_header(&text).to_string()
}

/// Compare `render(name, body)` for every fixture of `widget` with its golden file. `render`
/// returns `None` for a file it has no parser for, which fails the test (every fixture must
/// be covered). All mismatches are reported at once.
pub fn check_golden(widget: &str, render: impl Fn(&str, &str) -> Option<Value>) {
    let update = std::env::var_os("FLEET_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, body) in fixtures(widget) {
        let Some(actual) = render(&name, &body) else {
            failures.push(format!("{name}: no parser handles this fixture"));
            continue;
        };
        let golden = testdata(widget).join(format!("{name}{GOLDEN_SUFFIX}"));
        if update {
            let text = serde_json::to_string_pretty(&actual).unwrap_or_default() + "\n";
            std::fs::write(&golden, text).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
            continue;
        }
        let expected: Value = match std::fs::read_to_string(&golden) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", golden.display())),
            Err(_) => {
                failures.push(format!("{name}: missing {name}{GOLDEN_SUFFIX}"));
                continue;
            }
        };
        if expected != actual {
            failures.push(format!(
                "{name}:\n  expected {}\n  actual   {}",
                serde_json::to_string(&expected).unwrap_or_default(),
                serde_json::to_string(&actual).unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "golden mismatches:\n{}", failures.join("\n"));
}

/// A parse result as golden JSON: the value, or `{"error": "<display>"}`.
pub fn result_json<T: serde::Serialize>(result: Result<T, crate::ParseError>) -> Value {
    match result {
        Ok(value) => serde_json::to_value(value).unwrap_or(Value::Null),
        Err(error) => serde_json::json!({ "error": error.to_string() }),
    }
}

/// Feed hostile inputs to a widget's parsers, which must return, never panic (results are
/// discarded): `parse_any` (every parser) gets empty input, garbage, other-locale text, 10 MB,
/// and each fixture with its digits replaced by Arabic-Indic ones; `parse_as(fixture name,
/// text)` (the parser of that fixture, as in the golden test) gets prefixes of the fixture
/// (see [`truncation_points`]) and its CRLF form.
pub fn check_robust(
    widget: &str,
    parse_any: impl Fn(&str),
    parse_as: impl Fn(&str, &str) -> Option<serde_json::Value>,
) {
    let garbage = [
        "",
        "\n\n\n",
        "\u{0}\u{1}\u{fffd}\u{fffd}",
        "=====\n::::\n\"\" = \n<<<>>>\n",
        "{\"a\": [1, {\"b\": null}]}",
        "-InternalBattery-0\t%; ; : remaining\n",
        "Connected to (on )\n\tfreq: \n\tsignal: dBm\n",
        "Inter-| sta-|\n face |\n wlan0: x y z\n",
        "     agrCtlRSSI: -x\n        channel: ,\n",
        "<?xml version=\"1.0\"?><plist><array><dict><key>BatteryInstalled</key><integer>x</integer>",
        "Jetzt wird Strom bezogen von: 'Batteriebetrieb'\n -InternalBattery-0\t89 %; wird entladen; 4:47 verbleibend\n",
        "    RSSI                 : -55 dBm\n    Canal                : 36 (80 MHz)\n",
        // Out-of-range numbers must not overflow arithmetic.
        "Now drawing from 'Battery Power'\n -InternalBattery-0\t50%; discharging; 99999999999:99999999999 remaining\n",
        "\"AvgTimeToEmpty\" = 18446744073709551615\n\"AvgTimeToFull\" = 18446744073709551615\n\"CurrentCapacity\" = 18446744073709551615\n\"MaxCapacity\" = 101\n\"DesignCapacity\" = 1\n\"Temperature\" = 18446744073709551615\n\"ExternalConnected\" = No\n",
        "POWER_SUPPLY_STATUS=Charging\nPOWER_SUPPLY_ENERGY_NOW=18446744073709551615\nPOWER_SUPPLY_ENERGY_FULL=1\nPOWER_SUPPLY_ENERGY_FULL_DESIGN=0\nPOWER_SUPPLY_POWER_NOW=1\nPOWER_SUPPLY_TEMP=-9223372036854775808\nPOWER_SUPPLY_CURRENT_NOW=18446744073709551615\nPOWER_SUPPLY_VOLTAGE_NOW=18446744073709551615\n",
        "WIFI\n    Op Mode : STA\n    SSID : x\n    RSSI : 2147483647 dBm\n    Noise : -2147483648 dBm\n    Channel : 4294967295 (4294967295 MHz)\n    Tx Rate : 1e400 Mbps\n",
        "     agrCtlRSSI: 255\n    agrCtlNoise: -255\n          state: running\n        channel: 999999999999,-1\n",
        "Connected to 00:11:22:33:44:55 (on wlan0)\n\tfreq: 1e308\n\tsignal: -255 dBm\n\ttx bitrate: -1 MBit/s 99999999999MHz\n",
    ];
    for input in garbage {
        parse_any(input);
    }
    let big = "POWER_SUPPLY_CAPACITY=50\n     agrCtlRSSI: -50\n\"CycleCount\" = 5\n".repeat(10 * 1024 * 1024 / 60);
    parse_any(&big);
    for (name, body) in fixtures(widget) {
        for end in truncation_points(&body) {
            parse_as(&name, &body[..end]);
        }
        parse_as(&name, &body.replace('\n', "\r\n"));
        parse_any(&body.replace(|c: char| c.is_ascii_digit(), "\u{663}"));
    }
}

/// Where to cut a fixture: every char boundary of its first [`EVERY_BYTE_PREFIX`] bytes, then
/// at, just after, and in the middle of every line. The parsers are line-based, so this
/// reaches the same code as cutting every byte, which on the 10-17 KB fixtures costs tens of
/// seconds in a debug build (the work is quadratic in the fixture size).
pub fn truncation_points(body: &str) -> Vec<usize> {
    let mut points: Vec<usize> = body.char_indices().map(|(i, _)| i).take_while(|i| *i <= EVERY_BYTE_PREFIX).collect();
    let mut line_start = 0;
    for (i, _) in body.match_indices('\n') {
        points.extend([(line_start + i) / 2, i, i + 1]);
        line_start = i + 1;
    }
    points.retain(|p| *p <= body.len() && body.is_char_boundary(*p));
    points.sort_unstable();
    points.dedup();
    points
}

/// Fixtures are cut at every byte up to here.
pub const EVERY_BYTE_PREFIX: usize = 1024;
