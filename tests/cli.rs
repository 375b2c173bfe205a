//! The command line as a user meets it: exit codes, messages naming the file and field,
//! `once` output shape, `keygen`, `validate`, and `run` stopping on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::support::{agent, run, s, stderr, stdout, write_config, SAFE_WIDGETS, TEST_KEY_B64};

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("fleet-agent "));
    for command in ["run", "once", "keygen", "validate", "status"] {
        let out = run(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{command} --help");
        assert!(stdout(&out).contains(&format!("fleet-agent {command}")), "{command} help names itself");
    }
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["once", "--bogus"]).status.code(), Some(2));
}

#[test]
fn keygen_prints_32_random_bytes() {
    let first = run(&["keygen"]);
    let second = run(&["keygen"]);
    assert_eq!(first.status.code(), Some(0));
    let text = stdout(&first);
    assert_eq!(text.lines().count(), 1, "one line only");
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).expect("standard base64");
    assert_eq!(bytes.len(), 32);
    assert_ne!(text, stdout(&second), "two keys differ");
}

#[test]
fn once_prints_the_report_with_typed_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    // ping explicitly enabled (to loopback only): `once` runs it without --network.
    let widgets =
        r#""widgets":{"ping":{"enabled":true,"targets":["127.0.0.1"],"count":1},"speedtest":{"enabled":false}}"#;
    let config = write_config(dir.path(), "c.json", &format!(r#"{{"machine_id":"test-mid",{widgets}}}"#), 0o644);
    let out = run(&["once", "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let body: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(body["machine_id"], "test-mid");
    let info = &body["machine_info"];
    for key in ["hostname", "os", "architecture", "computer_name"] {
        assert!(info[key].is_string(), "machine_info.{key}: {}", info[key]);
    }
    for key in ["cpu_threads", "total_memory"] {
        assert!(info[key].is_u64(), "machine_info.{key}: {}", info[key]);
    }
    // Atlas sends boot_time as naive local ISO-8601 and never a null local_ip.
    assert!(info["boot_time"].is_string(), "machine_info.boot_time: {}", info["boot_time"]);
    assert!(info["disks"].is_array());
    assert!(info["local_ip"].is_string());
    let m = &body["metrics"];
    for (widget, key) in [("cpu", "percent"), ("memory", "percent"), ("disk", "percent")] {
        let v = m[widget][key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&v), "metrics.{widget}.{key} = {}", m[widget][key]);
    }
    for (widget, key) in [("memory", "total"), ("disk", "total"), ("network", "bytes_sent"), ("network", "bytes_recv")]
    {
        assert!(m[widget][key].is_u64(), "metrics.{widget}.{key}");
    }
    assert!(m["cpu"]["per_core"].is_array());
    assert!(m["processes"]["total"].is_u64());
    assert!(m["processes"]["top_cpu"].as_array().is_some_and(|a| a.len() <= 5));
    assert!(m["system"]["uptime"].is_u64());
    assert!(m.get("battery").is_some(), "battery is null or an object");
    let logs = body["widget_logs"].as_array().expect("widget_logs");
    let ping = logs.iter().find(|l| l["widget_type"] == "ping").expect("a ping entry");
    assert_eq!(ping["data"]["target"], "127.0.0.1");
    assert!(logs.iter().all(|l| l["widget_type"] != "speedtest"), "speedtest disabled by SAFE_WIDGETS");
}

#[test]
fn once_works_without_any_config() {
    // With no --config, the OS default path is used only if it exists; on CI it does not.
    // `once` itself is run with a config holding nothing but SAFE_WIDGETS: the default widgets
    // would ping 1.1.1.1 and run a speed test against speed.cloudflare.com.
    if !std::path::Path::new("/etc/fleet-agent/config.json").exists() {
        let out = agent().args(["validate"]).env("HOME", "/nonexistent").output().expect("runs");
        assert_eq!(
            (out.status.code(), stdout(&out).trim()),
            (Some(0), "ok (no config file at /etc/fleet-agent/config.json: built-in defaults)"),
            "stderr: {}",
            stderr(&out)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), "c.json", &format!("{{{SAFE_WIDGETS}}}"), 0o644);
        let out = agent().args(["once", "--config", s(&config)]).env("HOME", "/nonexistent").output().expect("runs");
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
        let body: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
        assert!(body["machine_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
}

#[test]
fn config_errors_name_the_file_and_field_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str, u32, &[&str])] = &[
        ("unknown.json", r#"{"server_url":"https://x","colour":"blue"}"#, 0o600, &["unknown field `colour`"]),
        ("badjson.json", r#"{"interval": 10,"#, 0o600, &["badjson.json"]),
        (
            "shortkey.json",
            r#"{"encryption_key":"c2hvcnQ="}"#,
            0o600,
            &["encryption_key", "5 bytes", "fleet-agent keygen"],
        ),
        ("alphabet.json", r#"{"encryption_key":"not base64!"}"#, 0o600, &["encryption_key", "' '"]),
        ("open.json", &format!(r#"{{"encryption_key":"{TEST_KEY_B64}"}}"#), 0o644, &["open.json", "0644"]),
        ("apikey.json", r#"{"api_key":"secret"}"#, 0o640, &["apikey.json", "0640"]),
        ("mid.json", r#"{"machine_id":""}"#, 0o600, &["machine_id", "empty"]),
        ("midlong.json", &format!(r#"{{"machine_id":"{}"}}"#, "m".repeat(129)), 0o600, &["machine_id", "129 bytes"]),
        ("midctl.json", r#"{"machine_id":"a\u0007b"}"#, 0o600, &["machine_id", "control"]),
        ("widget.json", r#"{"widgets":{"toaster":{}}}"#, 0o600, &["widgets.toaster"]),
        ("fsync.json", r#"{"spool":{"fsync":"maybe"}}"#, 0o600, &["spool.fsync"]),
        ("proto.json", r#"{"protocol":"v3"}"#, 0o600, &["protocol"]),
    ];
    for (name, json, mode, needles) in cases {
        let path = write_config(dir.path(), name, json, *mode);
        for command in ["validate", "once"] {
            let out = run(&[command, "--config", s(&path)]);
            assert_eq!(out.status.code(), Some(2), "{command} {name}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains(name), "{command} {name}: message names the file: {err}");
            for needle in *needles {
                assert!(err.contains(needle), "{command} {name}: expected {needle:?} in {err}");
            }
        }
    }
    let missing = dir.path().join("missing.json");
    let out = run(&["validate", "--config", s(&missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.json"));
}

#[test]
fn environment_key_overrides_and_is_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), "c.json", r#"{"machine_id":"m"}"#, 0o644);
    let out =
        agent().args(["validate", "--config", s(&path)]).env("FLEET_ENCRYPTION_KEY", "AAAA").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("FLEET_ENCRYPTION_KEY"), "{}", stderr(&out));
    let out = agent()
        .args(["validate", "--config", s(&path)])
        .env("FLEET_ENCRYPTION_KEY", TEST_KEY_B64)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn validate_reports_every_error_and_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_config(
        dir.path(),
        "good.json",
        &format!(
            r#"{{"server_url":"https://fleet.example:8443","api_key":"k","encryption_key":"{TEST_KEY_B64}",
               "verify_ssl":true,"interval":10,"machine_id":"laptop-1","protocol":"v2",
               "spool":{{"dir":"/tmp/x","max_bytes":67108864,"fsync":"batch"}},
               "widgets":{{"cpu":{{"enabled":true,"interval":5}},"processes":{{"enabled":false}}}},"log_level":"debug"}}"#
        ),
        0o600,
    );
    let out = run(&["validate", "--config", s(&good)]);
    assert_eq!((out.status.code(), stdout(&out).trim()), (Some(0), "ok"), "{}", stderr(&out));
    let bad = write_config(dir.path(), "bad.json", r#"{"interval":-1,"protocol":"x","log_level":"loud"}"#, 0o600);
    let out = run(&["validate", "--config", s(&bad)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for field in ["`interval`", "`protocol`", "`log_level`"] {
        assert!(err.contains(field), "{field} in {err}");
    }
}

#[test]
fn run_stops_on_sigterm_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let config = write_config(
        dir.path(),
        "c.json",
        &format!(r#"{{"machine_id":"t","interval":1,"spool":{{"dir":"{}"}},{SAFE_WIDGETS}}}"#, s(&spool)),
        0o600,
    );
    let mut child = agent()
        .args(["run", "--config", s(&config)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    let sent = Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(5), "run did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(sent.elapsed() < Duration::from_secs(1), "stopped in {:?}", sent.elapsed());
    assert_eq!(status.code(), Some(0));
}

#[test]
fn global_options_go_before_or_after_the_command_and_help_takes_a_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write_config(dir.path(), "bad.json", r#"{"protocol":"v9"}"#, 0o600);
    for args in [
        vec!["--config", s(&bad), "validate"],
        vec!["validate", "--config", s(&bad)],
        vec!["-v", "--config", s(&bad), "-q", "validate"],
        vec![&format!("--config={}", s(&bad)), "validate", "-vv"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("bad.json") && stderr(&out).contains("protocol"), "{args:?}: {}", stderr(&out));
    }
    let out = run(&["-v", "keygen"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for command in ["run", "once", "validate", "receive", "status", "spool", "keygen", "demo"] {
        let out = run(&["help", command]);
        assert_eq!(out.status.code(), Some(0), "help {command}");
        assert_eq!(stdout(&out), stdout(&run(&[command, "--help"])), "help {command} == {command} --help");
    }
    assert_eq!(run(&["help", "frobnicate"]).status.code(), Some(2));
    assert!(stdout(&run(&["help"])).contains("Commands:"));
}

#[test]
fn validate_lists_every_problem_in_plain_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hex = "00".repeat(32);
    // A readable-by-others file with a key, a type error, an unknown key, a hex key, a misspelt
    // widget option, a server_url with a path: all reported in one run.
    let json = format!(
        r#"{{"server_url":"https://fleet.example.com/api/fleet","encryption_key":"{hex}","interval":"ten",
            "colour":"blue","widgets":{{"ping":{{"targetz":["1.1.1.1"]}}}},"protocol":"v9"}}"#
    );
    let path = write_config(dir.path(), "many.json", &json, 0o644);
    let out = run(&["validate", "--config", s(&path)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "mode 0644",
        "field `interval`: must be a number of seconds, found string \"ten\"",
        "unknown field `colour`",
        "looks like hex",
        "fleet-agent keygen",
        "unknown option `targetz` (ping options: targets, count, timeout_s, tcp_port, window_s)",
        "enabled, interval and jitter",
        "without a path",
        "field `protocol`",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    assert!(!err.contains("f64"), "no serde type names: {err}");
    assert!(err.lines().all(|l| l.starts_with("error: ") && l.contains("many.json")), "each names the file:\n{err}");

    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let ca = write_config(dir.path(), "ca.json", &format!(r#"{{"ca_file":"{}"}}"#, s(&not_pem)), 0o600);
    let out = run(&["validate", "--config", s(&ca)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ca_file") && stderr(&out).contains("no PEM certificate"), "{}", stderr(&out));

    let creds =
        write_config(dir.path(), "creds.json", r#"{"server_url":"https://admin:hunter2@fleet.example.com"}"#, 0o600);
    let out = run(&["validate", "--config", s(&creds)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("credentials") && !stderr(&out).contains("hunter2"), "{}", stderr(&out));
}

#[test]
fn an_environment_variable_is_blamed_for_its_own_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), "fine.json", r#"{"machine_id":"m"}"#, 0o600);
    let hex = "ab".repeat(32);
    let out =
        agent().args(["validate", "--config", s(&path)]).env("FLEET_ENCRYPTION_KEY", &hex).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: environment variable FLEET_ENCRYPTION_KEY: looks like hex"), "{err}");
    assert!(!err.contains("fine.json"), "the file is not blamed: {err}");
}

#[test]
fn once_stays_off_the_network_unless_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    // ping enabled only by default (targets loopback so that --network stays on this machine).
    let config = write_config(dir.path(), "c.json", &format!(r#"{{"machine_id":"m",{SAFE_WIDGETS}}}"#), 0o600);
    let out = run(&["once", "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let body: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let logs = body["widget_logs"].as_array().expect("widget_logs");
    assert!(logs.iter().all(|l| l["widget_type"] != "ping"), "no ping without --network: {logs:?}");
    assert!(stderr(&out).contains("not running ping") && stderr(&out).contains("--network"), "{}", stderr(&out));

    let out = run(&["once", "--network", "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let body: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let logs = body["widget_logs"].as_array().expect("widget_logs");
    assert!(logs.iter().any(|l| l["widget_type"] == "ping"), "--network runs ping: {logs:?}");
}

#[test]
fn the_template_and_the_defaults_keep_the_speed_test_off() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.template.json"))
        .expect("template");
    let template: Value = serde_json::from_str(&template).expect("template is JSON");
    assert_eq!(template["widgets"]["speedtest"]["enabled"], Value::Bool(false), "opt-in, visible in the template");
    let config = fleet_agent::config::Config::load(None).map_err(|e| e.len()).expect("defaults");
    let speedtest = config.widgets.iter().find(|w| w.name == "speedtest").expect("speedtest");
    assert!(!speedtest.enabled, "the built-in default is off");
}

#[test]
fn an_error_cause_is_printed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("mkdir");
    std::fs::write(spool.join("sender.json"), "garbage").expect("write");
    let json = format!(
        r#"{{"machine_id":"m","server_url":"http://127.0.0.1:9","spool":{{"dir":"{}"}},{SAFE_WIDGETS}}}"#,
        s(&spool)
    );
    let config = write_config(dir.path(), "c.json", &json, 0o600);
    let out = run(&["run", "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("sender.json").count(), 1, "the cause once: {err}");
}

// ---------------------------------------------------------------------------------------
// signals at start-up (fault harness F6: a SIGHUP or SIGTERM in the first milliseconds of
// `run` ended it with the default action)

/// True once `pid` catches SIGHUP and SIGTERM (its `SigCgt` mask in /proc).
fn catches_hup_and_term(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let caught = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0);
    let bit = |signal: u32| 1u64 << (signal - 1);
    caught & bit(1) != 0 && caught & bit(15) != 0
}

/// `run` with a config at `config`, stderr into `log`.
fn start_run(config: &Path, log: &Path) -> crate::support::Proc {
    let log = std::fs::File::create(log).expect("log file");
    let child = agent().args(["run", "--config", s(config)]).stdout(Stdio::null()).stderr(log).spawn().expect("starts");
    crate::support::Proc { child }
}

fn quick_config_text(spool: &Path) -> String {
    format!(
        r#"{{"machine_id":"t","interval":0.2,"log_level":"debug","spool":{{"dir":"{}"}},{SAFE_WIDGETS}}}"#,
        s(spool)
    )
}

/// The config is a FIFO, so `run` blocks reading it (a slow start, made deterministic): the
/// handlers must already be there. A SIGHUP then does not kill it and it goes on to run
/// normally; a SIGTERM then stops it cleanly (exit 0) as soon as the config arrives.
#[test]
fn run_catches_sighup_and_sigterm_before_it_reads_its_config() {
    for signal in ["-HUP", "-TERM"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("c.json");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success(), "mkfifo");
        let log = dir.path().join("agent.log");
        let mut agent = start_run(&fifo, &log);
        let pid = agent.child.id();
        let installed = crate::support::wait_for(Duration::from_secs(5), || catches_hup_and_term(pid));
        let text = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
        assert!(installed, "{signal}: no handlers while the config is being read:\n{}", text(&log));
        agent.signal(signal);
        std::thread::sleep(Duration::from_millis(200));
        assert!(agent.child.try_wait().expect("try_wait").is_none(), "{signal} before the config killed run");
        // A writer in its own thread: opening a FIFO blocks until the agent reads it.
        let config = quick_config_text(&dir.path().join("spool"));
        let write = |fifo: PathBuf, config: String| std::thread::spawn(move || std::fs::write(&fifo, config));
        let writer = write(fifo.clone(), config.clone());
        if signal == "-HUP" {
            // The SIGHUP is handled once the loop runs: it reads the config again to reload.
            let started = || text(&log).contains("run: started");
            assert!(crate::support::wait_for(Duration::from_secs(10), started), "starts:\n{}", text(&log));
            assert!(write(fifo.clone(), config.clone()).join().expect("writer").is_ok(), "reloaded");
            let collected =
                || text(&log).contains("SIGHUP: configuration reloaded") && text(&log).contains("collected cpu ");
            assert!(
                crate::support::wait_for(Duration::from_secs(10), collected),
                "runs after a SIGHUP:\n{}",
                text(&log)
            );
            assert!(agent.child.try_wait().expect("try_wait").is_none(), "alive");
        }
        let status = if signal == "-TERM" {
            agent.wait(Duration::from_secs(10))
        } else {
            agent.terminate(Duration::from_secs(10))
        };
        assert_eq!(status.code(), Some(0), "{signal}: a clean stop:\n{}", text(&log));
        assert!(writer.join().expect("writer").is_ok(), "the config was read");
        assert!(!text(&log).contains("error"), "{signal}:\n{}", text(&log));
    }
}

/// A SIGHUP or SIGTERM sent the instant `run`'s handlers exist (before the spool is open and
/// the first cycle ran), a few times each: SIGHUP never kills, SIGTERM always stops with 0.
/// (Before `main` no process can catch anything: the dynamic loader's first milliseconds keep
/// the default actions; see signals.rs.)
#[test]
fn run_handles_sighup_and_sigterm_in_its_first_moments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "c.json", &quick_config_text(&dir.path().join("spool")), 0o600);
    for round in 0..5 {
        for signal in ["-HUP", "-TERM"] {
            let log = dir.path().join(format!("agent-{round}{signal}.log"));
            let mut agent = start_run(&config, &log);
            let pid = agent.child.id();
            let start = Instant::now();
            while !catches_hup_and_term(pid) {
                assert!(start.elapsed() < Duration::from_secs(5), "no handlers after 5 s");
                std::hint::spin_loop();
            }
            agent.signal(signal);
            let text = || std::fs::read_to_string(&log).unwrap_or_default();
            if signal == "-HUP" {
                std::thread::sleep(Duration::from_millis(300));
                assert!(
                    agent.child.try_wait().expect("try_wait").is_none(),
                    "round {round}: SIGHUP killed run:\n{}",
                    text()
                );
                assert_eq!(agent.terminate(Duration::from_secs(10)).code(), Some(0), "round {round}:\n{}", text());
            } else {
                assert_eq!(agent.wait(Duration::from_secs(10)).code(), Some(0), "round {round}: SIGTERM:\n{}", text());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// kept /proc files (widgets/procfs.rs `ProcFile`) across SIGHUP reloads

/// What the descriptors of `pid` point at (`/proc/PID/fd`), one entry per descriptor.
fn descriptor_targets(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).map(|t| t.to_string_lossy().into_owned()).collect()
}

/// The fixed per-cycle files the lean Linux readers keep open, as `/proc/PID/fd` names them
/// (`/proc/net` is `/proc/self/net`: the agent's own pid), with how many descriptors of `pid`
/// point at each. The kernel drops `/proc/PID/net` entries from its name cache at every
/// lookup, so a kept one may be named `… (deleted)`: it still reads the live file.
fn kept_files(pid: u32) -> Vec<(String, usize)> {
    let mut names: Vec<String> =
        ["/proc/stat", "/proc/loadavg", "/proc/meminfo", "/proc/diskstats"].into_iter().map(str::to_string).collect();
    for file in ["dev", "sockstat", "sockstat6"] {
        // `sockstat6` is missing where IPv6 is disabled.
        if Path::new("/proc/net").join(file).exists() {
            names.push(format!("/proc/{pid}/net/{file}"));
        }
    }
    let targets = descriptor_targets(pid);
    let named = |target: &String, name: &str| target.strip_suffix(" (deleted)").unwrap_or(target) == name;
    names.into_iter().map(|name| (name.clone(), targets.iter().filter(|t| named(t, &name)).count())).collect()
}

/// The cpu, memory, disk and network widgets keep each file they read every cycle open (one
/// descriptor per file, none for the files read hourly or per process), and a SIGHUP, which
/// builds every widget again, closes the old widgets' descriptors: after five reloads the
/// agent holds the same descriptors as before them.
#[test]
fn run_keeps_its_per_cycle_proc_files_open_once_and_sighup_leaks_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let json = format!(
        r#"{{"machine_id":"t","interval":0.2,"log_level":"debug","spool":{{"dir":"{}"}},"widgets":{{"ping":{{"enabled":false}},"speedtest":{{"enabled":false}}}}}}"#,
        s(&spool)
    );
    let config = write_config(dir.path(), "c.json", &json, 0o600);
    let log = dir.path().join("agent.log");
    let mut agent = start_run(&config, &log);
    let pid = agent.child.id();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let collected = |widget: &str| text().matches(&format!("collected {widget} (")).count();
    // Each widget's fresh instance has read its files once it has collected after a reload.
    let cycles_after = |reloads: usize| {
        let log = text();
        let Some((at, _)) = log.match_indices("SIGHUP: configuration reloaded").nth(reloads.wrapping_sub(1)) else {
            return reloads == 0 && ["cpu", "memory", "disk", "network"].iter().all(|w| collected(w) >= 2);
        };
        let rest = &log[at..];
        ["cpu", "memory", "disk", "network"].iter().all(|w| rest.contains(&format!("collected {w} (")))
    };
    assert!(crate::support::wait_for(Duration::from_secs(10), || cycles_after(0)), "collects:\n{}", text());
    // The fewest descriptors over a few looks: a spool file may be open for a moment.
    let fewest = || {
        (0..5)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(40));
                descriptor_targets(pid).len()
            })
            .min()
    };
    let before = kept_files(pid);
    let total_before = fewest();
    assert!(
        before.iter().all(|(_, n)| *n == 1),
        "each per-cycle file open exactly once: {before:?}\n{:?}",
        descriptor_targets(pid)
    );
    for reload in 1..=5 {
        agent.signal("-HUP");
        let reloaded = crate::support::wait_for(Duration::from_secs(10), || cycles_after(reload));
        assert!(reloaded, "reload {reload}:\n{}", text());
    }
    let after = kept_files(pid);
    let total_after = fewest();
    assert_eq!(after, before, "the same kept files after 5 reloads: {:?}", descriptor_targets(pid));
    assert_eq!(total_after, total_before, "no descriptor leaked: {:?}", descriptor_targets(pid));
    assert_eq!(agent.terminate(Duration::from_secs(10)).code(), Some(0), "{}", text());
    assert!(!text().contains("error"), "{}", text());
}
