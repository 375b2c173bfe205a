use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::host::strip_fixture_header;
use crate::{CommandOutput, FixtureHost, HostError, Os};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ping/testdata")
}

/// Every `ping--*.txt` fixture, sorted.
fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

/// What a fixture is expected to give: the parsed fields and the emitted data, or the error.
fn observed(text: &str) -> Value {
    match parse::parse_ping(strip_fixture_header(text)) {
        Ok(out) => json!({
            "transmitted": out.transmitted,
            "received": out.received,
            "duplicates": out.duplicates,
            "errors": out.errors,
            "stddev": out.stddev_ms,
            "replies_with_time": out.rtts_ms.len(),
            "sample": Measurement::from_command(&out).to_json("target"),
        }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

#[test]
fn every_fixture_matches_its_golden_file() {
    let files = fixtures();
    assert_eq!(files.len(), 36, "all 23 Linux and 13 macOS ping fixtures are copied");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("fixture");
        assert!(text.starts_with("# source: "), "{} keeps its source header", path.display());
        let got = observed(&text);
        let golden = path.with_extension("expected.json");
        if update {
            let pretty = serde_json::to_string_pretty(&got).expect("json") + "\n";
            std::fs::write(&golden, pretty).expect("write golden");
            continue;
        }
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&golden).expect("golden file exists"))
            .expect("golden is JSON");
        assert_eq!(got, want, "{}", path.display());
    }
}

#[test]
fn key_fixtures_have_the_published_numbers() {
    let parse = |name: &str| {
        let text = std::fs::read_to_string(testdata().join(name)).expect("fixture");
        parse::parse_ping(strip_fixture_header(&text))
    };
    let dup = parse("ping--busybox-dup-loss-alpine-pingparsing.txt").expect("busybox");
    assert_eq!((dup.transmitted, dup.received, dup.duplicates, dup.packet_loss), (10, 9, 2, 10.0));
    assert_eq!((dup.min_ms, dup.avg_ms, dup.max_ms, dup.stddev_ms), (Some(0.613), Some(0.930), Some(1.219), None));
    assert_eq!(dup.rtts_ms.len(), 9, "DUP! replies are not round trips of their own");

    let nan = parse("ping--single-nan-stddev-nodeping.txt").expect("nan stddev");
    assert_eq!((nan.received, nan.avg_ms, nan.stddev_ms), (1, Some(4.628), None));

    let lost = parse("ping--iputils-loss100-pipe-pingparsing.txt").expect("100% loss");
    assert_eq!((lost.transmitted, lost.received, lost.errors, lost.packet_loss), (5, 0, 5, 100.0));
    let m = Measurement::from_command(&lost);
    assert_eq!((m.avg_ms, m.jitter_ms), (None, None));

    let mac_dup = parse("ping--duplicates-broadcast-osx10.14.6-jc.txt").expect("macOS dup");
    assert_eq!((mac_dup.transmitted, mac_dup.received, mac_dup.duplicates), (2, 2, 13));
    assert_eq!(mac_dup.stddev_ms, Some(344.729));

    assert_eq!(
        parse("ping--error-permission-denied-nodeping.txt"),
        Err(crate::ParseError::bad_value("ping", "permission denied (are you root?)"))
    );

    let sendmsg = parse("ping--iputils-partial-loss-sendmsg-nodeping.txt").expect("sendmsg");
    assert_eq!((sendmsg.transmitted, sendmsg.received, sendmsg.packet_loss), (19, 11, 42.0));
    assert_eq!(sendmsg.max_ms, Some(797.744));
}

#[test]
fn every_prefix_garbage_and_huge_input_never_panic() {
    for path in fixtures() {
        let text = std::fs::read_to_string(&path).expect("fixture");
        let body = strip_fixture_header(&text);
        for end in (0..=body.len()).filter(|i| body.is_char_boundary(*i)) {
            let _ = parse::parse_ping(&body[..end]);
        }
    }
    for garbage in
        ["\0\u{1}\u{fffd}", "packets transmitted", "1 packets transmitted, x received", "rtt = //", "[", "[]"]
    {
        let _ = parse::parse_ping(garbage);
    }
    let line = "64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.5 ms\n";
    let mut huge = line.repeat(10 * 1024 * 1024 / line.len());
    huge.push_str("5 packets transmitted, 5 received, 0% packet loss\n");
    assert!(huge.len() >= 10 * 1024 * 1024);
    assert_eq!(parse::parse_ping(&huge).map(|o| o.received), Ok(5));
    assert!(parse::parse_ping(&"x".repeat(10 * 1024 * 1024)).is_err());
}

#[test]
fn options_are_validated_and_unknown_keys_named() {
    let opts = |v: Value| v.as_object().cloned().expect("object");
    let config =
        PingConfig::from_options(&opts(json!({"targets": ["127.0.0.1", "example.org"], "count": 3, "timeout_s": 0.5})))
            .expect("valid");
    assert_eq!(config.targets, ["127.0.0.1", "example.org"]);
    assert_eq!((config.count, config.timeout), (3, Duration::from_millis(500)));
    assert_eq!(PingConfig::from_options(&opts(json!({}))), Ok(PingConfig::default()));
    assert_eq!(
        (SPEC.validate)(&opts(json!({"colour": 1}))),
        Err("unknown option `colour` (ping options: targets, count, timeout_s, tcp_port, window_s)".to_string())
    );
    for bad in [
        json!({"targets": []}),
        json!({"targets": ["-f"]}),
        json!({"targets": ["a b"]}),
        json!({"targets": "1.1.1.1"}),
        json!({"count": 0}),
        json!({"count": 101}),
        json!({"timeout_s": 0}),
        json!({"tcp_port": 70000}),
    ] {
        assert!((SPEC.validate)(&opts(bad.clone())).is_err(), "{bad}");
    }
}

#[test]
fn replay_uses_the_ping_command_and_levels_follow_loss() {
    let read = |name: &str| std::fs::read_to_string(testdata().join(name)).expect("fixture");
    let host = FixtureHost::new(Os::Linux).with_command("ping -c 5 *", &read("ping--iputils-localhost-nodeping.txt"));
    let mut widget = PingWidget::new(PingConfig { window: Duration::ZERO, ..PingConfig::default() });
    let samples = widget.collect(&host, Timestamp(0)).expect("collect");
    assert_eq!(samples.len(), 1);
    let s = &samples[0];
    assert_eq!((s.name.as_str(), s.message.as_str(), s.level), ("ping", "ping", Level::Info));
    assert_eq!(s.data["target"], "1.1.1.1");
    assert_eq!(s.data["method"], "command");
    assert_eq!(s.data["received"], 4);

    let lost = FixtureHost::new(Os::Linux)
        .with_command("ping *", &read("ping--iputils-loss100-unreachable-ubuntu22.04-jc.txt"));
    let samples = widget.collect(&lost, Timestamp(0)).expect("collect");
    assert_eq!(samples[0].level, Level::Warning);
    assert_eq!(samples[0].data["packet_loss"], 100.0);
    assert!(samples[0].data.get("latency").is_none(), "unknown numbers are left out, not null");

    // Real `ping` writes the permission error to stderr and exits 2.
    let denied = FixtureHost::new(Os::Macos).with_command_output(
        "ping *",
        CommandOutput {
            status: Some(2),
            stderr: strip_fixture_header(&read("ping--error-permission-denied-nodeping.txt")).to_string(),
            ..CommandOutput::default()
        },
    );
    let samples = widget.collect(&denied, Timestamp(0)).expect("collect");
    assert_eq!(samples[0].level, Level::Error);
    assert!(samples[0].data["error"].as_str().is_some_and(|e| e.contains("permission denied")), "{}", samples[0].data);

    let none = FixtureHost::new(Os::Linux);
    let samples = widget.collect(&none, Timestamp(0)).expect("collect");
    assert_eq!(samples[0].level, Level::Error);
    assert_eq!(samples[0].data["error"], HostError::CommandNotFound("ping".into()).to_string());
}

#[test]
fn jitter_is_the_mean_absolute_difference() {
    assert_eq!(jitter(&[]), None);
    assert_eq!(jitter(&[5.0]), Some(0.0));
    assert_eq!(jitter(&[1.0, 3.0, 2.0]), Some(1.5));
    let m = Measurement::from_rtts(Method::Tcp, &[Some(1.0), None, Some(3.0), None]);
    assert_eq!((m.sent, m.received, m.packet_loss), (4, 2, 50.0));
    assert_eq!((m.min_ms, m.avg_ms, m.max_ms, m.jitter_ms), (Some(1.0), Some(2.0), Some(3.0), Some(2.0)));
}

/// The live machine, with sockets allowed; commands run without a timeout of their own (the
/// only one used here, `ping -c 3 127.0.0.1`, ends by itself).
struct LiveHost;

impl Host for LiveHost {
    fn os(&self) -> Os {
        Os::current()
    }
    fn read_file(&self, path: &str) -> Result<String, HostError> {
        Err(HostError::NotFound(path.to_string()))
    }
    fn list_dir(&self, path: &str) -> Result<Vec<String>, HostError> {
        Err(HostError::NotFound(path.to_string()))
    }
    fn run(&self, argv: &[&str], _timeout: Duration) -> Result<CommandOutput, HostError> {
        let out = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .map_err(|_| HostError::CommandNotFound(argv[0].to_string()))?;
        Ok(CommandOutput {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            truncated: false,
        })
    }
    fn network_allowed(&self) -> bool {
        true
    }
    fn is_root(&self) -> bool {
        false
    }
}

fn fast_config(targets: &[&str]) -> PingConfig {
    PingConfig {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        count: 3,
        timeout: Duration::from_secs(1),
        interval: Duration::from_millis(20),
        window: Duration::ZERO,
        ..PingConfig::default()
    }
}

#[test]
fn live_loopback_ping_uses_a_permitted_method() {
    let mut widget = PingWidget::new(fast_config(&["127.0.0.1"]));
    let samples = widget.collect(&LiveHost, Timestamp(0)).expect("collect");
    assert_eq!(samples.len(), 1);
    let d = &samples[0].data;
    eprintln!("live loopback ping: {d}");
    assert_eq!(d["target"], "127.0.0.1");
    let method = d["method"].as_str().unwrap_or("none");
    assert!(["icmp", "icmp_raw", "command", "tcp"].contains(&method), "{d}");
    if method == "tcp" {
        // Nothing listens on 443 here: refused connections still measure the round trip.
        assert_eq!(d["received"], 3, "{d}");
    } else {
        assert_eq!(samples[0].level, Level::Info, "{d}");
        assert_eq!((d["sent"].as_u64(), d["received"].as_u64()), (Some(3), Some(3)), "{d}");
        assert_eq!(d["packet_loss"], 0.0);
    }
    let (min, avg, max) = (d["min"].as_f64(), d["latency"].as_f64(), d["max"].as_f64());
    let (min, avg, max) = (min.expect("min"), avg.expect("latency"), max.expect("max"));
    assert!(0.0 <= min && min <= avg && avg <= max && max < 1000.0, "{d}");
    assert!(d["jitter"].as_f64().is_some_and(|j| j >= 0.0), "{d}");
}

#[test]
fn forced_tcp_method_times_connects_to_a_local_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = PingConfig { tcp_port: port, methods: vec![Method::Tcp], ..fast_config(&["127.0.0.1"]) };
    let result = measure(&LiveHost, &config, "127.0.0.1").expect("tcp works");
    assert_eq!(result.method, Method::Tcp);
    assert_eq!((result.sent, result.received, result.packet_loss), (3, 3, 0.0));
    assert!(result.min_ms.is_some_and(|m| m >= 0.0) && result.jitter_ms.is_some());
    let sample = sample_for("127.0.0.1", &Ok(result));
    assert_eq!(sample.data["method"], "tcp");
    drop(listener);
}

#[test]
fn icmp_sockets_that_cannot_open_fall_through_without_hanging() {
    // Only the socket methods, and an address that never answers within the (short) timeout or
    // a socket that is refused: either way the run ends and reports a method or an error.
    let config = PingConfig {
        methods: vec![Method::Icmp, Method::IcmpRaw],
        timeout: Duration::from_millis(200),
        ..fast_config(&["127.0.0.1"])
    };
    match measure(&LiveHost, &config, "127.0.0.1") {
        Ok(m) => assert!(matches!(m.method, Method::Icmp | Method::IcmpRaw)),
        Err(e) => assert!(e.contains("opening"), "{e}"),
    }
    // Under replay no socket is ever opened.
    assert_eq!(measure(&FixtureHost::new(Os::Linux), &config, "127.0.0.1"), Err("no method available".to_string()));
}

#[test]
fn live_ipv6_loopback_when_the_machine_has_it() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let config = fast_config(&["::1"]);
    let m = measure(&LiveHost, &config, "::1").expect("some method works");
    eprintln!("live ::1 ping: {}", m.to_json("::1"));
    if matches!(m.method, Method::Icmp | Method::IcmpRaw) {
        assert_eq!((m.sent, m.received), (3, 3), "ICMPv6 echo replies are matched");
    }
}

/// A run result with `sent` requests, `got` round trips.
fn run_result(sent: usize, got: &[f64]) -> Result<Measurement, String> {
    let mut rtts: Vec<Option<f64>> = got.iter().copied().map(Some).collect();
    rtts.resize(sent, None);
    Ok(Measurement::from_rtts(Method::Icmp, &rtts))
}

#[test]
fn one_summary_per_target_per_window_at_interval_10s() {
    let mut widget = PingWidget::new(PingConfig { targets: vec!["a".into(), "b".into()], ..PingConfig::default() });
    let mut logs = Vec::new();
    // A day of runs every 10 s: 8,640 runs per target.
    for run in 0..8640i64 {
        let now = Timestamp(1_000_000 + run * 10_000);
        for index in 0..2 {
            let result =
                if run % 100 == 7 { run_result(5, &[]) } else { run_result(5, &[10.0, 12.0, 11.0, 10.0, 13.0]) };
            logs.extend(widget.record(index, now, &result));
        }
    }
    assert_eq!(logs.len(), 2 * 720, "720 summaries per target per day");
    let first = &logs[0].data;
    assert_eq!(
        (first["runs"].as_u64(), first["sent"].as_u64(), first["received"].as_u64()),
        (Some(12), Some(60), Some(55))
    );
    assert_eq!(first["packet_loss"], 8.333, "the lost run is in the summary");
    assert_eq!((first["min"].as_f64(), first["max"].as_f64()), (Some(10.0), Some(13.0)));
    assert_eq!(first["latency"], 11.2);
    // 11 answered runs: 44 pairs inside runs (sum 77) and 10 between one run's last reply and
    // the next answered run's first (|10 - 13| each): (77 + 30) / 54.
    assert_eq!(first["jitter"], 1.981);
    assert_eq!(first["window_s"], 120.0);
    assert_eq!(logs[0].level, Level::Info);
    assert!(logs.iter().all(|l| l.data["runs"] == 12));
}

#[test]
fn a_window_shorter_than_the_interval_logs_every_run_and_failures_are_errors() {
    let mut widget = PingWidget::new(PingConfig { targets: vec!["x".into()], ..PingConfig::default() });
    // Interval 300 s > window 120 s: the first run's window closes at the second run.
    let first = widget.record(0, Timestamp(0), &run_result(5, &[1.0]));
    assert!(first.is_empty());
    let second = widget.record(0, Timestamp(300_000), &Err("no route".into()));
    assert_eq!(second.len(), 2, "the old window, then this run's");
    assert_eq!((second[0].level, second[1].level), (Level::Info, Level::Error));
    assert_eq!(second[1].data["error"], "no route");
    assert!(second[1].data.get("latency").is_none() && second[1].data.get("packet_loss").is_none());
    let lost = widget.record(0, Timestamp(600_000), &run_result(5, &[]));
    assert_eq!((lost.len(), lost[0].level), (1, Level::Warning));
    assert_eq!(lost[0].data["packet_loss"], 100.0);
}

#[test]
fn window_option_is_validated() {
    let opts = |v: Value| v.as_object().cloned().expect("object");
    assert_eq!(
        PingConfig::from_options(&opts(json!({"window_s": 300}))).map(|c| c.window),
        Ok(Duration::from_secs(300))
    );
    assert_eq!(PingConfig::from_options(&opts(json!({"window_s": 0}))).map(|c| c.window), Ok(Duration::ZERO));
    assert!(PingConfig::from_options(&opts(json!({"window_s": -1}))).is_err());
    assert!(PingConfig::from_options(&opts(json!({"window_s": "2m"}))).is_err());
}

#[test]
fn flush_hands_over_the_open_window_once() {
    let mut widget = PingWidget::new(PingConfig { targets: vec!["a".into(), "b".into()], ..PingConfig::default() });
    assert!(widget.record(0, Timestamp(0), &run_result(5, &[1.0, 2.0])).is_empty());
    let flushed = widget.flush(Timestamp(1));
    assert_eq!(flushed.len(), 1, "only the target with runs");
    assert_eq!((flushed[0].data["target"].as_str(), flushed[0].data["runs"].as_u64()), (Some("a"), Some(1)));
    assert!(widget.flush(Timestamp(2)).is_empty());
}

/// Atlas reads at most 10,000 widget-log rows per machine for its 24 h analysis; at default
/// settings a machine must send at most ~1,500 a day. The widgets that log are wifi (one row
/// per run), ping (one row per target per window, proven above) and speedtest (one per run).
#[test]
fn default_widget_log_rows_per_day_stay_under_1500() {
    let day = 86_400;
    let interval = |name: &str| crate::find(name).and_then(|s| s.default_interval_s).expect(name);
    let wifi = day / interval("wifi");
    let speedtest = day / interval("speedtest");
    let config = PingConfig::default();
    let ping = config.targets.len() as u64 * day / config.window.as_secs();
    let total = wifi + speedtest + ping;
    eprintln!("rows a day at defaults: wifi {wifi} + ping {ping} + speedtest {speedtest} = {total}");
    assert!(total <= 1500, "{total} widget-log rows a day");
    let logging: Vec<&str> = ["wifi", "ping", "speedtest"].to_vec();
    for spec in crate::ALL {
        // Every other widget reports metrics or machine info (no rows): keep this list honest.
        let mut widget = (spec.build)(&Default::default());
        let host = FixtureHost::new(Os::Other);
        if let Ok(samples) = widget.collect(&host, Timestamp(0)) {
            for sample in samples {
                assert!(
                    sample.kind != crate::SampleKind::Log || logging.contains(&spec.name),
                    "{} writes widget logs: count it above",
                    spec.name
                );
            }
        }
    }
}

#[test]
fn every_listed_option_is_accepted() {
    let opts = |v: Value| v.as_object().cloned().expect("object");
    for option in super::OPTIONS {
        let problem = (SPEC.validate)(&opts(json!({ *option: null }))).err().unwrap_or_default();
        assert!(!problem.starts_with("unknown option"), "{option}: {problem}");
    }
    let problem = (SPEC.validate)(&opts(json!({"colour": 1}))).err().unwrap_or_default();
    assert!(problem.contains(&super::OPTIONS.join(", ")), "{problem}");
}

#[test]
fn window_jitter_pairs_consecutive_round_trips_across_runs() {
    let mut window = Window::default();
    window.add(Timestamp(0), &run_result(3, &[10.0, 10.0, 10.0]));
    window.add(Timestamp(10_000), &run_result(3, &[]));
    window.add(Timestamp(20_000), &run_result(3, &[30.0, 30.0]));
    let summary = window.take_summary("t", Duration::from_secs(120));
    // Pairs: 2 + 0 inside the first run (0 ms), 1 inside the third (0 ms), and the first run's
    // last reply against the third run's first (20 ms): a burst's packets cross the path
    // together, so the variation from run to run is what jitter sees.
    assert_eq!(summary.data["jitter"], 5.0);
    assert_eq!(summary.data["packet_loss"], 44.444);
    window.add(Timestamp(30_000), &run_result(3, &[20.0]));
    assert_eq!(window.take_summary("t", Duration::from_secs(120)).data["jitter"], 10.0, "carried into the next window");
}

#[test]
fn kernel_receive_timestamps_date_the_arrival_not_the_read() {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("udp socket");
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr").into()).expect("bind");
    let own = socket.local_addr().expect("local addr");
    assert!(probe::enable_receive_timestamps(&socket), "Linux gives SO_TIMESTAMPNS on UDP");
    // The kernel turns arrival stamping on for the whole host a moment after the first socket
    // asks (deferred work); a datagram that arrives before is stamped when it is read.
    std::thread::sleep(Duration::from_millis(50));
    let sent = std::time::SystemTime::now();
    socket.send_to(b"stamp me", &own).expect("send");
    std::thread::sleep(Duration::from_millis(150));
    let mut buf = [0u8; 64];
    let (len, stamp) = probe::receive_timestamped(&socket, &mut buf, true).expect("queued datagram");
    let read = std::time::SystemTime::now();
    assert_eq!(&buf[..len], b"stamp me");
    let stamp = stamp.expect("a kernel timestamp");
    let arrival =
        stamp.duration_since(sent).unwrap_or_else(|e| panic!("stamp {stamp:?} before the send {sent:?}: {e}"));
    assert!(arrival < Duration::from_millis(50), "arrived {arrival:?} after the send, on loopback");
    assert!(read.duration_since(stamp).expect("before the read") >= Duration::from_millis(140));
    let empty = probe::receive_timestamped(&socket, &mut buf, true);
    assert_eq!(empty.map_err(|e| e.kind()), Err(std::io::ErrorKind::WouldBlock), "never blocks when asked not to");
}

#[test]
fn live_icmp_burst_answers_every_request_when_the_socket_opens() {
    for kind in [probe::IcmpSocket::Dgram, probe::IcmpSocket::Raw] {
        let timing = probe::Timing { count: 20, interval: Duration::from_millis(200), timeout: Duration::from_secs(1) };
        let started = std::time::Instant::now();
        match probe::icmp_echo("127.0.0.1".parse().expect("ip"), kind, timing) {
            Ok(rtts) => {
                assert_eq!(rtts.len(), 20);
                assert!(rtts.iter().all(|r| r.is_some_and(|ms| (0.0..50.0).contains(&ms))), "{kind:?}: {rtts:?}");
                // One burst: no 200 ms pacing between requests, no wait once all are answered.
                assert!(started.elapsed() < Duration::from_millis(500), "{kind:?} took {:?}", started.elapsed());
            }
            Err(e) => eprintln!("{kind:?} not available here: {e}"),
        }
    }
}

#[test]
fn the_rest_of_a_burst_is_gathered_with_one_pause_of_the_fastest_round_trip() {
    use burst::{Arrival, Burst, SentAt};
    let (wall, mono) = (std::time::SystemTime::now(), std::time::Instant::now());
    let mut b = Burst::new(5, b"token".to_vec(), Duration::from_secs(2));
    (0..5).for_each(|seq| b.sent(seq, SentAt { wall, mono }));
    let far = mono + Duration::from_secs(60);
    assert_eq!(probe::gather_pause(&b, false, false, far), None, "nothing in yet: block for the first reply");
    for (seq, ms) in [(1u16, 30u64), (0, 20)] {
        let arrival =
            Arrival { kernel: Some(wall + Duration::from_millis(ms)), read: mono + Duration::from_millis(40) };
        b.reply(&icmp::EchoReply { id: 0, seq, payload: b"token" }, arrival);
    }
    assert_eq!(b.fastest(), Some(Duration::from_millis(20)));
    assert_eq!(probe::gather_pause(&b, false, false, far), Some(Duration::from_millis(20)), "one more round trip");
    assert_eq!(probe::gather_pause(&b, false, true, far), None, "only once per burst");
    assert_eq!(probe::gather_pause(&b, true, false, far), None, "not after a wait that timed out");
    let soon = std::time::Instant::now() + Duration::from_millis(5);
    assert!(
        probe::gather_pause(&b, false, false, soon).is_some_and(|p| p <= Duration::from_millis(5)),
        "cut at the deadline"
    );
    assert_eq!(probe::gather_pause(&b, false, false, mono), None, "deadline passed");
}

#[test]
fn the_ping_command_gets_a_second_per_request_before_it_is_killed() {
    struct Recording(std::cell::Cell<Option<Duration>>);
    impl Host for Recording {
        fn os(&self) -> Os {
            Os::Linux
        }
        fn read_file(&self, path: &str) -> Result<String, HostError> {
            Err(HostError::NotFound(path.to_string()))
        }
        fn list_dir(&self, path: &str) -> Result<Vec<String>, HostError> {
            Err(HostError::NotFound(path.to_string()))
        }
        fn run(&self, _argv: &[&str], timeout: Duration) -> Result<CommandOutput, HostError> {
            self.0.set(Some(timeout));
            Err(HostError::CommandNotFound("ping".into()))
        }
        fn network_allowed(&self) -> bool {
            false
        }
        fn is_root(&self) -> bool {
            false
        }
    }
    let host = Recording(std::cell::Cell::new(None));
    let config = PingConfig { count: 100, methods: vec![Method::Command], ..PingConfig::default() };
    assert!(measure(&host, &config, "192.0.2.1").is_err());
    // `ping -c 100` runs 99 s at its 1 s spacing: 100 s + timeout 2 s + 5 s of grace.
    assert_eq!(host.0.get(), Some(Duration::from_secs(107)));
}
