//! Tests of the widget: which source each OS uses, the utmp reader's paths, limits and errors.

#[cfg(target_os = "linux")]
use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::golden::fixture;
use crate::FixtureHost;

#[cfg(target_os = "linux")]
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleet-users-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[cfg(target_os = "linux")]
/// One 384-byte `USER_PROCESS` record (x86_64 layout; the module doc of `utmp`).
fn record(user: &str, line: &str, host: &str, pid: i32, time: u32) -> Vec<u8> {
    let mut b = vec![0u8; 384];
    b[0..2].copy_from_slice(&utmp::USER_PROCESS.to_le_bytes());
    b[4..8].copy_from_slice(&pid.to_le_bytes());
    b[8..8 + line.len()].copy_from_slice(line.as_bytes());
    b[44..44 + user.len()].copy_from_slice(user.as_bytes());
    b[76..76 + host.len()].copy_from_slice(host.as_bytes());
    b[340..344].copy_from_slice(&time.to_le_bytes());
    b
}

fn data(widget: &mut UsersWidget, host: &dyn Host) -> Result<serde_json::Value, CollectError> {
    widget.collect(host, Timestamp(0)).map(|samples| samples[0].data.clone())
}

#[test]
fn macos_sessions_come_from_who_and_a_missing_who_is_an_error() {
    let host = FixtureHost::new(Os::Macos)
        .with_command("who", &fixture("users", "who--macos10.14.6-console-and-terminals-jc.txt"));
    let sessions = data(&mut UsersWidget::default(), &host).expect("users");
    assert_eq!(sessions[0], json!({"name": "kbrazil", "terminal": "console"}));
    let empty = FixtureHost::new(Os::Macos).with_command("who", "");
    assert_eq!(data(&mut UsersWidget::default(), &empty).expect("users"), json!([]));
    assert!(data(&mut UsersWidget::default(), &FixtureHost::new(Os::Macos)).is_err());
    let other = UsersWidget::default().collect(&FixtureHost::new(Os::Other), Timestamp(0));
    assert!(other.is_err_and(|e| e.is_unsupported()));
}

#[cfg(target_os = "linux")]
#[test]
fn linux_reads_utmp_without_running_who() {
    let dir = scratch("linux");
    let path = dir.join("utmp");
    let own = std::process::id() as i32;
    let mut bytes = record("alice", "pts/0", "192.0.2.7", own, 1_700_000_059);
    bytes.extend(record("bob", "tty1", "", 0, 1_600_000_000));
    std::fs::write(&path, bytes).expect("write");
    // No `who` in this host: the widget must not need it.
    let host = FixtureHost::new(Os::Linux);
    let mut widget = UsersWidget::with_utmp_paths(vec![path]);
    let started = |secs| utmp::started_text(secs, &chrono::Local);
    assert_eq!(
        data(&mut widget, &host).expect("users"),
        json!([
            {"name": "alice", "terminal": "pts/0", "host": "192.0.2.7", "started": started(1_700_000_059)},
            {"name": "bob", "terminal": "tty1", "started": started(1_600_000_000)},
        ])
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(target_os = "linux")]
#[test]
fn a_session_whose_process_is_gone_is_left_out_as_who_does() {
    let dir = scratch("pids");
    let path = dir.join("utmp");
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let gone = child.id() as i32;
    child.wait().expect("wait");
    let mut bytes = record("alive", "pts/0", "", std::process::id() as i32, 1_700_000_000);
    bytes.extend(record("gone", "pts/1", "", gone, 1_700_000_000));
    bytes.extend(record("init", "tty1", "", 1, 1_700_000_000));
    std::fs::write(&path, bytes).expect("write");
    let sessions = data(&mut UsersWidget::with_utmp_paths(vec![path]), &FixtureHost::new(Os::Linux)).expect("users");
    let names: Vec<&str> = sessions.as_array().expect("list").iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["alive", "init"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(target_os = "linux")]
#[test]
fn paths_are_tried_in_order_and_no_file_is_no_session() {
    let dir = scratch("paths");
    let host = FixtureHost::new(Os::Linux);
    let (missing, second) = (dir.join("run-utmp"), dir.join("var-run-utmp"));
    let mut widget = UsersWidget::with_utmp_paths(vec![missing.clone(), second.clone()]);
    assert_eq!(data(&mut widget, &host).expect("no file is no session"), json!([]));
    std::fs::write(&second, record("carol", "pts/2", "", 0, 1_700_000_000)).expect("write");
    assert_eq!(data(&mut widget, &host).expect("users")[0]["name"], "carol");
    std::fs::write(&missing, b"").expect("write");
    assert_eq!(data(&mut widget, &host).expect("the first path wins, empty"), json!([]));
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(target_os = "linux")]
#[test]
fn unreadable_oversized_or_foreign_files_are_errors_naming_the_path() {
    let dir = scratch("errors");
    let host = FixtureHost::new(Os::Linux);
    // A directory opens but cannot be read.
    let error = data(&mut UsersWidget::with_utmp_paths(vec![dir.clone()]), &host).expect_err("a directory");
    assert!(error.to_string().contains(&dir.display().to_string()), "{error}");
    let big = dir.join("big");
    std::fs::write(&big, vec![0u8; MAX_UTMP_BYTES + 384]).expect("write");
    let error = data(&mut UsersWidget::with_utmp_paths(vec![big.clone()]), &host).expect_err("too big");
    assert!(error.to_string().contains("1 MiB") && error.to_string().contains("big"), "{error}");
    let foreign = dir.join("foreign");
    std::fs::write(&foreign, vec![0xffu8; 384]).expect("write");
    let error = data(&mut UsersWidget::with_utmp_paths(vec![foreign]), &host).expect_err("not utmp");
    assert!(matches!(error, CollectError::Parse { error: ParseError::BadValue { field: "ut_type", .. }, .. }));
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(target_os = "linux")]
#[test]
fn an_incomplete_last_record_is_counted_and_the_whole_ones_reported() {
    let dir = scratch("partial");
    let path = dir.join("utmp");
    let mut bytes = record("dave", "pts/0", "", 0, 1_700_000_000);
    bytes.extend(&record("erin", "pts/1", "", 0, 1_700_000_000)[..200]);
    std::fs::write(&path, bytes).expect("write");
    let mut widget = UsersWidget::with_utmp_paths(vec![path]);
    let host = FixtureHost::new(Os::Linux);
    assert_eq!(data(&mut widget, &host).expect("users").as_array().map(Vec::len), Some(1));
    assert_eq!(data(&mut widget, &host).expect("users").as_array().map(Vec::len), Some(1));
    assert_eq!(widget.reader.partial_reads, 2);
    let _ = std::fs::remove_dir_all(dir);
}
