use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::host::strip_fixture_header;
use crate::{CommandOutput, FixtureHost, ParseError};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("speedtest/testdata")
}

fn fixture(name: &str) -> String {
    // The power-state fixtures belong to the battery widget, whose reader the gate uses.
    let dir = if name.starts_with("pmset") || name.starts_with("sys-class") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("battery/testdata")
    } else {
        testdata()
    };
    let text = std::fs::read_to_string(dir.join(name)).expect("fixture");
    assert!(text.starts_with("# source: "), "{name} keeps its source header");
    text
}

fn as_json(outcome: Result<ToolOutcome, ParseError>, method: Method) -> Value {
    match outcome {
        Ok(ToolOutcome::Result(r)) => result_json(&r, method),
        Ok(ToolOutcome::Failed(message)) => json!({ "failed": message }),
        Err(e) => json!({ "parse_error": e.to_string() }),
    }
}

#[test]
fn every_fixture_has_its_asserted_values() {
    let ookla = |name: &str| as_json(parse::parse_ookla(strip_fixture_header(&fixture(name))), Method::Ookla);
    let nq = |name: &str| {
        as_json(parse::parse_network_quality(strip_fixture_header(&fixture(name))), Method::NetworkQuality)
    };
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "speedtest-ookla-json--en0-2020-codecomment.txt",
            ookla("speedtest-ookla-json--en0-2020-codecomment.txt"),
            json!({"download": 92.38, "upload": 32.45, "ping": 29.88, "jitter": 0.14, "loaded_latency": null,
                   "responsiveness": null, "server": "Vodafone IT (Milan)", "bytes_down": 130498445u64,
                   "bytes_up": 42741437u64, "duration_s": 24.91, "method": "ookla"}),
        ),
        (
            "speedtest-ookla-json--en0-2024-packetloss-vn-soulevilx.txt",
            ookla("speedtest-ookla-json--en0-2024-packetloss-vn-soulevilx.txt"),
            json!({"download": 4.82, "upload": 23.11, "ping": 18.49, "jitter": 4.49, "loaded_latency": 535.12,
                   "responsiveness": null, "server": "DPTCLOUD.VN (Hồ Chi Minh)", "bytes_down": 6863460u64,
                   "bytes_up": 39069387u64, "duration_s": 26.16, "method": "ookla"}),
        ),
        (
            "speedtest-ookla-json--eth0-2022-iqm-persisted-codecomment.txt",
            ookla("speedtest-ookla-json--eth0-2022-iqm-persisted-codecomment.txt"),
            json!({"download": 677.36, "upload": 626.84, "ping": 1.36, "jitter": 0.06, "loaded_latency": 10.88,
                   "responsiveness": null, "server": "Inter.link GmbH (Berlin)", "bytes_down": 415605496u64,
                   "bytes_up": 684294663u64, "duration_s": 13.71, "method": "ookla"}),
        ),
        (
            // As published the poster's markdown `**` makes it invalid JSON.
            "speedtest-ookla-json--ipv6-2021-aidengilmartin15.txt",
            ookla("speedtest-ookla-json--ipv6-2021-aidengilmartin15.txt"),
            json!({"parse_error": "unrecognised output, expected Ookla speedtest JSON"}),
        ),
        (
            // The stored issue text is cut after `isp`: truncated JSON is a typed error.
            "speedtest-ookla-json-pretty--2024-raycast12423.txt",
            ookla("speedtest-ookla-json-pretty--2024-raycast12423.txt"),
            json!({"parse_error": "unrecognised output, expected Ookla speedtest JSON"}),
        ),
        (
            "networkQuality-c--error-offline-nsurl-1009-nqscanner.txt",
            nq("networkQuality-c--error-offline-nsurl-1009-nqscanner.txt"),
            json!({"failed": "networkQuality failed: NSURLErrorDomain -1009"}),
        ),
        (
            "networkQuality-c--macos27.0.1-en1-draft8-arrays-trimmed-edctest.txt",
            nq("networkQuality-c--macos27.0.1-en1-draft8-arrays-trimmed-edctest.txt"),
            json!({"download": 67.18, "upload": 110.66, "ping": 11.24, "jitter": 3.31, "loaded_latency": 316.42,
                   "responsiveness": 189.62, "server": null, "bytes_down": 121299311u64, "bytes_up": 214040574u64,
                   "duration_s": 15.24, "method": "networkquality"}),
        ),
        (
            "networkQuality-c--monterey-early-schema-nqscanner.txt",
            nq("networkQuality-c--monterey-early-schema-nqscanner.txt"),
            json!({"download": 5.81, "upload": 1.12, "ping": null, "jitter": null, "loaded_latency": 1666.67,
                   "responsiveness": 36.0, "server": null, "bytes_down": null, "bytes_up": null,
                   "duration_s": null, "method": "networkquality"}),
        ),
        (
            "networkQuality-c--sequential-macos27-en0-trimmed-activitycore.txt",
            nq("networkQuality-c--sequential-macos27-en0-trimmed-activitycore.txt"),
            json!({"download": 150.01, "upload": 40.52, "ping": 84.64, "jitter": null, "loaded_latency": 232.13,
                   "responsiveness": 258.47, "server": "defra1-edge-fx-010.aaplimg.com",
                   "bytes_down": 339224896u64, "bytes_up": 90832894u64, "duration_s": 45.47,
                   "method": "networkquality"}),
        ),
    ];
    for (name, got, want) in &cases {
        assert_eq!(got, want, "{name}");
    }
    // Every speed test fixture in testdata is in the table above.
    let mut listed: Vec<&str> = cases.iter().map(|(n, _, _)| *n).collect();
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(testdata())
        .expect("testdata")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("speedtest-") || n.starts_with("networkQuality"))
        .collect();
    on_disk.sort();
    assert_eq!(listed, on_disk);
}

#[test]
fn power_fixtures_give_the_battery_gate() {
    let pmset = |name: &str| {
        let host = FixtureHost::new(Os::Macos).with_command("pmset -g batt", &fixture(name));
        power::on_battery_percent(&host)
    };
    assert_eq!(pmset("pmset-g-batt--osx10.11.6-discharging-battstat2.txt"), Some(89.0));
    assert_eq!(pmset("pmset-g-batt--ac-charged-100pct-2026-sessionreport.txt"), None);
    assert_eq!(pmset("pmset-g-batt--desktop-no-battery-liquidprompt317.txt"), None);

    let bat = fixture("sys-class-power_supply-BAT0-uevent--thinkpad-energy-discharging-81pct-node_exporter.txt");
    let ac = fixture("sys-class-power_supply-AC-uevent--offline-procfs.txt");
    let linux = FixtureHost::new(Os::Linux)
        .with_file("/sys/class/power_supply/BAT0/uevent", &bat)
        .with_file("/sys/class/power_supply/AC/uevent", &ac);
    assert_eq!(power::on_battery_percent(&linux), Some(81.0));
    let plugged =
        linux.clone().with_file("/sys/class/power_supply/AC/uevent", "POWER_SUPPLY_NAME=AC\nPOWER_SUPPLY_ONLINE=1\n");
    assert_eq!(power::on_battery_percent(&plugged), None);
    assert_eq!(power::on_battery_percent(&FixtureHost::new(Os::Linux)), None, "no power_supply: desktop");

    // Below the threshold the widget skips without a sample; above it, it runs.
    let ookla = fixture("speedtest-ookla-json--eth0-2022-iqm-persisted-codecomment.txt");
    let host = linux.clone().with_command("speedtest -f json", &ookla);
    let config = SpeedtestConfig { method: Method::Ookla, min_battery_percent: 90.0, ..SpeedtestConfig::default() };
    assert_eq!(SpeedtestWidget::new(config.clone()).collect(&host, Timestamp(0)).map(|s| s.len()).ok(), Some(0));
    let config = SpeedtestConfig { min_battery_percent: 50.0, ..config };
    assert_eq!(SpeedtestWidget::new(config).collect(&host, Timestamp(0)).map(|s| s.len()).ok(), Some(1));
}

#[test]
fn replay_uses_only_the_commands() {
    let nq = fixture("networkQuality-c--sequential-macos27-en0-trimmed-activitycore.txt");
    let mac = FixtureHost::new(Os::Macos).with_command("networkQuality -c", &nq);
    let mut widget = SpeedtestWidget::new(SpeedtestConfig { method: Method::NetworkQuality, ..Default::default() });
    let samples = widget.collect(&mac, Timestamp(0)).expect("collect");
    assert_eq!(samples.len(), 1);
    let s = &samples[0];
    assert_eq!((s.name.as_str(), s.message.as_str(), s.level), ("speedtest", "speedtest", Level::Info));
    assert_eq!(s.data["responsiveness"], 258.47);

    let offline = FixtureHost::new(Os::Macos)
        .with_command("networkQuality -c", &fixture("networkQuality-c--error-offline-nsurl-1009-nqscanner.txt"));
    let samples = widget.collect(&offline, Timestamp(0)).expect("collect");
    assert_eq!(samples[0].level, Level::Error);
    assert_eq!(samples[0].data["error"], "networkQuality failed: NSURLErrorDomain -1009");
    assert!(samples[0].data["download"].is_null());

    let garbage = FixtureHost::new(Os::Macos).with_command_output(
        "networkQuality -c",
        CommandOutput { status: Some(1), stdout: "oops".into(), ..CommandOutput::default() },
    );
    assert!(matches!(widget.collect(&garbage, Timestamp(0)), Err(CollectError::Parse { .. })));
    assert!(widget.collect(&FixtureHost::new(Os::Linux), Timestamp(0)).is_err_and(|e| e.is_unsupported()));
    assert!(widget.collect(&FixtureHost::new(Os::Macos), Timestamp(0)).is_err_and(|e| e.is_unsupported()));

    // The http method never touches the network under replay.
    let mut http = SpeedtestWidget::new(SpeedtestConfig::default());
    assert_eq!(http.collect(&FixtureHost::new(Os::Linux), Timestamp(0)).map(|s| s.len()).ok(), Some(0));
}

#[test]
fn parsers_survive_prefixes_garbage_and_huge_input() {
    for entry in std::fs::read_dir(testdata()).expect("testdata") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let body = strip_fixture_header(&text);
        for end in (0..=body.len()).filter(|i| body.is_char_boundary(*i)) {
            let _ = parse::parse_ookla(&body[..end]);
            let _ = parse::parse_network_quality(&body[..end]);
        }
    }
    for garbage in ["[]", "null", "{\"type\":\"result\",\"download\":{\"bandwidth\":-1}}", "{\"dl_throughput\":1e999}"]
    {
        let _ = parse::parse_ookla(garbage);
        let _ = parse::parse_network_quality(garbage);
    }
    let huge = format!("{{\"dl_throughput\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    assert!(parse::parse_network_quality(&huge).is_err());
    assert!(parse::parse_ookla(&huge).is_err());
    assert!(parse::parse_ookla(&"x".repeat(10 * 1024 * 1024)).is_err());
}

#[test]
fn options_are_validated_and_unknown_keys_named() {
    let opts = |v: Value| v.as_object().cloned().expect("object");
    let c = SpeedtestConfig::from_options(&opts(json!({"method": "ookla", "url": "http://127.0.0.1:8080/",
        "max_bytes": 1000000, "connections": 2, "min_battery_percent": 50})))
    .expect("valid");
    assert_eq!(
        (c.method, c.url.as_str(), c.max_bytes, c.connections),
        (Method::Ookla, "http://127.0.0.1:8080", 1000000, 2)
    );
    assert_eq!(SpeedtestConfig::from_options(&opts(json!({}))), Ok(SpeedtestConfig::default()));
    assert_eq!(
        (SPEC.validate)(&opts(json!({"speed": 1}))),
        Err("unknown option `speed` (speedtest options: method, url, max_bytes, connections, min_battery_percent)"
            .to_string())
    );
    for bad in [
        json!({"method": "fast"}),
        json!({"url": "ftp://x"}),
        json!({"url": "https://x/?a=1"}),
        json!({"max_bytes": 1}),
        json!({"connections": 0}),
        json!({"min_battery_percent": 101}),
    ] {
        assert!((SPEC.validate)(&opts(bad.clone())).is_err(), "{bad}");
    }
    assert_eq!(SPEC.default_interval_s, Some(21600));
}

/// A loopback Cloudflare-style server: `GET /__down?bytes=N` answers exactly N bytes (paced,
/// so the download lasts long enough for loaded-latency probes), `POST /__up` reads and counts
/// the body (Content-Length or chunked). Keep-alive; one thread per connection.
fn serve(uploaded: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64).flatten() {
            let uploaded = Arc::clone(&uploaded);
            std::thread::spawn(move || {
                let _ = handle(stream, &uploaded);
            });
        }
    });
    format!("http://{addr}")
}

fn handle(stream: TcpStream, uploaded: &AtomicU64) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let (mut length, mut chunked) = (0u64, false);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("");
        if let Some(n) = target.strip_prefix("/__down?bytes=") {
            let n: u64 = n.parse().unwrap_or(0);
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Type: application/octet-stream\r\n\r\n");
            writer.write_all(head.as_bytes())?;
            let block = [0x5au8; 16 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                writer.write_all(&block[..k])?;
                left -= k as u64;
                std::thread::sleep(Duration::from_micros(300));
            }
        } else if target == "/__up" {
            let mut body = 0u64;
            if chunked {
                loop {
                    let mut size_line = String::new();
                    reader.read_line(&mut size_line)?;
                    let size = u64::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                    body += std::io::copy(&mut (&mut reader).take(size), &mut std::io::sink())?;
                    let mut crlf = String::new();
                    reader.read_line(&mut crlf)?;
                    if size == 0 {
                        break;
                    }
                }
            } else {
                body = std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
            }
            uploaded.fetch_add(body, Ordering::SeqCst);
            writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        } else {
            writer.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        }
        writer.flush()?;
    }
}

/// The live machine with sockets allowed and no battery (for the http method).
struct NetHost;

impl Host for NetHost {
    fn os(&self) -> Os {
        Os::Other
    }
    fn read_file(&self, path: &str) -> Result<String, HostError> {
        Err(HostError::NotFound(path.to_string()))
    }
    fn list_dir(&self, path: &str) -> Result<Vec<String>, HostError> {
        Err(HostError::NotFound(path.to_string()))
    }
    fn run(&self, argv: &[&str], _timeout: Duration) -> Result<CommandOutput, HostError> {
        Err(HostError::CommandNotFound(argv.first().copied().unwrap_or("").to_string()))
    }
    fn network_allowed(&self) -> bool {
        true
    }
    fn is_root(&self) -> bool {
        false
    }
}

#[test]
fn http_method_against_a_loopback_server_counts_exact_bytes() {
    let uploaded = Arc::new(AtomicU64::new(0));
    let url = serve(Arc::clone(&uploaded));
    let config = SpeedtestConfig {
        url: url.clone(),
        max_bytes: 12_000_000,
        connections: 3,
        phase_limit: Duration::from_secs(20),
        ..SpeedtestConfig::default()
    };
    let samples = SpeedtestWidget::new(config).collect(&NetHost, Timestamp(0)).expect("collect");
    assert_eq!(samples.len(), 1);
    let d = &samples[0].data;
    eprintln!("loopback speedtest: {d}");
    assert_eq!(samples[0].level, Level::Info, "{d}");
    assert_eq!(d["method"], "http");
    assert_eq!(d["bytes_down"], 8_000_000, "two thirds of max_bytes, exactly");
    assert_eq!(d["bytes_up"], 4_000_000);
    assert_eq!(uploaded.load(Ordering::SeqCst), 4_000_000, "the server received every uploaded byte");
    assert!(d["download"].as_f64().is_some_and(|x| x > 0.0), "{d}");
    assert!(d["upload"].as_f64().is_some_and(|x| x > 0.0), "{d}");
    assert!(d["ping"].as_f64().is_some_and(|x| x >= 0.0) && d["jitter"].as_f64().is_some_and(|x| x >= 0.0));
    assert!(d["loaded_latency"].is_null() || d["loaded_latency"].as_f64().is_some_and(|x| x >= 0.0));
    assert_eq!(d["server"], url.trim_start_matches("http://"));
    assert!(d["duration_s"].as_f64().is_some_and(|x| x > 0.0));
}

#[test]
fn http_method_reports_an_unreachable_server_as_an_error_sample() {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let config = SpeedtestConfig { url: format!("http://127.0.0.1:{port}"), ..SpeedtestConfig::default() };
    let samples = SpeedtestWidget::new(config).collect(&NetHost, Timestamp(0)).expect("collect");
    assert_eq!(samples[0].level, Level::Error);
    let error = samples[0].data["error"].as_str().unwrap_or("");
    assert!(error.starts_with("connecting for idle latency"), "{error}");
    assert!(samples[0].data["download"].is_null());
}

#[test]
fn every_listed_option_is_accepted() {
    let opts = |v: Value| v.as_object().cloned().expect("object");
    for option in super::OPTIONS {
        let problem = (SPEC.validate)(&opts(json!({ *option: null }))).err().unwrap_or_default();
        assert!(!problem.starts_with("unknown option"), "{option}: {problem}");
    }
    let problem = (SPEC.validate)(&opts(json!({"speed": 1}))).err().unwrap_or_default();
    assert!(problem.contains(&super::OPTIONS.join(", ")), "{problem}");
}
