//! What the log holds: at `trace` not a byte of the API key, the transport key or a payload
//! (dependency targets are held at `warn`), and journal priorities when stderr is the journal.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use fleet_agent::sender::http::tls::fingerprint_text;

use crate::support::{
    agent, agent_config, s, start_receiver, stored_records, wait_for, Proc, SAFE_WIDGETS, TEST_KEY_B64,
};
use crate::tls::{self_signed_ca_true, start_tls_receiver};

/// Run the agent with `config` at `trace` until `records` arrived in `store`; its whole log.
/// `dependencies`: the value of `FLEET_LOG_DEPENDENCIES` (`None`: unset, the default `warn`).
fn trace_run(
    config: &std::path::Path,
    store: &std::path::Path,
    log: &std::path::Path,
    dependencies: Option<&str>,
) -> String {
    let file = std::fs::File::create(log).expect("log file");
    let mut cmd = agent();
    if let Some(level) = dependencies {
        cmd.env("FLEET_LOG_DEPENDENCIES", level);
    }
    let child = cmd
        .args(["-vv", "run", "--config", s(config)])
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("agent starts");
    let mut agent = Proc { child };
    let arrived = wait_for(Duration::from_secs(10), || {
        !stored_records(store, "test-machine").is_empty()
            || std::fs::read_dir(store.join("test-machine")).is_ok_and(|mut d| d.next().is_some())
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(agent.terminate(Duration::from_secs(8)).code(), Some(0));
    let text = std::fs::read_to_string(log).expect("log");
    assert!(arrived, "data arrived; log: {text}");
    text
}

/// `dependency_floor`: the most detailed level a dependency line may have.
fn assert_no_secret(log: &str, what: &str, dependency_floor: &str) {
    let key_hex: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
    for (secret, name) in [
        ("test-api-key", "the API key"),
        (TEST_KEY_B64, "the transport key (base64)"),
        (key_hex.as_str(), "the transport key (hex)"),
        ("per_core", "a payload field (cpu)"),
        ("load_avg", "a payload field (cpu)"),
        ("swap_total", "a payload field (memory)"),
    ] {
        assert!(!log.contains(secret), "{what}: {name} is in the log:\n{log}");
    }
    for line in log.lines() {
        let target = line.split_whitespace().nth(2).unwrap_or("");
        let ours = !(target.starts_with("fleet_http") || target.starts_with("rustls") || target.starts_with("webpki"));
        let level = line.split_whitespace().nth(1).unwrap_or("");
        let allowed: &[&str] =
            if dependency_floor == "DEBUG" { &["ERROR", "WARN", "INFO", "DEBUG"] } else { &["ERROR", "WARN"] };
        assert!(ours || allowed.contains(&level), "{what}: a dependency logs below {dependency_floor}: {line}");
    }
    assert!(log.contains("DEBUG"), "{what}: the log is at debug or more (not vacuous):\n{log}");
}

#[test]
fn a_trace_log_holds_no_key_and_no_payload() {
    let dir = tempfile::tempdir().expect("tempdir");

    // v2, sealed, over TLS with a pinned certificate.
    let identity = self_signed_ca_true(dir.path());
    let store = dir.path().join("store-tls");
    let (_receiver, url) = start_tls_receiver(&store, &identity);
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir(&tls_dir).expect("mkdir");
    // agent_config says `debug`; `-vv` makes it `trace`.
    let extra = format!(r#","server_cert_sha256":"{}""#, fingerprint_text(&identity.fingerprint));
    let config = agent_config(&tls_dir, "c.json", &url, Some(TEST_KEY_B64), "v2", &extra);
    let log = trace_run(&config, &store, &tls_dir.join("agent.log"), None);
    assert_no_secret(&log, "v2 over TLS", "WARN");
    assert!(log.contains("transport key id "), "the key id (not the key) is named at start:\n{log}");

    // Atlas over plain http to loopback, without a transport key: the bodies are plaintext on
    // the wire, and still not in the log, even with the dependencies asked for `trace` (they
    // get `debug` at most).
    let store = dir.path().join("store-atlas");
    let (_receiver, url) = start_receiver(&store, "127.0.0.1:0", "test-api-key", &[]);
    let atlas_dir = dir.path().join("atlas");
    std::fs::create_dir(&atlas_dir).expect("mkdir");
    let config = agent_config(&atlas_dir, "c.json", &url, None, "atlas", "");
    let log = trace_run(&config, &store, &atlas_dir.join("agent.log"), Some("trace"));
    assert_no_secret(&log, "atlas, unsealed", "DEBUG");
    assert!(log.contains("DEBUG fleet_http"), "the dependencies did log at debug:\n{log}");
}

#[test]
fn journal_lines_carry_priorities_only_when_stderr_is_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::support::write_config(
        dir.path(),
        "c.json",
        &format!(
            r#"{{"machine_id":"t","interval":0.5,"spool":{{"dir":"{}"}},{SAFE_WIDGETS}}}"#,
            s(&dir.path().join("spool"))
        ),
        0o600,
    );
    let run = |name: &str, stream_of: Option<&std::path::Path>| -> String {
        let log = dir.path().join(name);
        let file = std::fs::File::create(&log).expect("log");
        let identity = std::fs::metadata(stream_of.unwrap_or(&log)).expect("stat");
        let mut cmd = agent();
        cmd.args(["run", "--config", s(&config)]).stdout(std::process::Stdio::null()).stderr(file);
        cmd.env("JOURNAL_STREAM", format!("{}:{}", identity.dev(), identity.ino()));
        let mut agent = Proc { child: cmd.spawn().expect("starts") };
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(agent.terminate(Duration::from_secs(5)).code(), Some(0));
        std::fs::read_to_string(&log).expect("log")
    };
    let journal = run("journal.log", None);
    assert!(journal.lines().any(|l| l.starts_with("<4>WARN ") && l.contains("no server_url")), "{journal}");
    assert!(journal.lines().any(|l| l.starts_with("<6>INFO ")), "{journal}");
    assert!(journal.lines().all(|l| l.starts_with('<')), "every line prefixed, no timestamps: {journal}");
    let other = dir.path().join("other");
    std::fs::write(&other, "").expect("write");
    let plain = run("plain.log", Some(&other));
    assert!(plain.lines().all(|l| l.starts_with("20") && !l.starts_with('<')), "inherited variable, own file: {plain}");
}

#[test]
fn errors_printed_by_commands_carry_the_error_priority_in_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::support::write_config(dir.path(), "bad.json", r#"{"protocol":"v9","interval":-1}"#, 0o600);
    let log = dir.path().join("stderr");
    let file = std::fs::File::create(&log).expect("log");
    let identity = std::fs::metadata(&log).expect("stat");
    let out = agent()
        .args(["validate", "--config", s(&config)])
        .env("JOURNAL_STREAM", format!("{}:{}", identity.dev(), identity.ino()))
        .stderr(file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let text = std::fs::read_to_string(&log).expect("read");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.starts_with("<3>error: ")), "{text}");
    let plain = agent().args(["validate", "--config", s(&config)]).output().expect("runs");
    assert!(String::from_utf8_lossy(&plain.stderr).starts_with("error: "), "no prefix on a terminal or file");
}
