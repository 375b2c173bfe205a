//! Tests of the utmp parser: published files against golden files and against coreutils'
//! `who`, records written here against `who`, and hostile bytes.

use std::path::{Path, PathBuf};

use chrono::{FixedOffset, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::golden::{BINARY_SUFFIX, GOLDEN_SUFFIX};
use crate::users::parse::parse_who;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("users").join("testdata")
}

/// Every binary fixture as (file name, bytes), each checked to have its source sidecar.
fn binary_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(testdata())
        .expect("testdata")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(BINARY_SUFFIX))
        .map(|name| {
            let sidecar = testdata().join(format!("{name}.md"));
            let text = std::fs::read_to_string(&sidecar).unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
            assert!(text.starts_with("# source: "), "{name}.md must start with its source");
            assert!(text.contains("\n# licence: "), "{name}.md must name the licence");
            let bytes = std::fs::read(testdata().join(&name)).expect("fixture");
            (name, bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "binary fixtures found: {}", out.len());
    out
}

/// What the golden file of a binary fixture holds: the parse, and the sessions (times in UTC).
fn render(bytes: &[u8]) -> Value {
    match parse_utmp(bytes, Layout::Compat32) {
        Ok(file) => json!({ "file": file, "sessions_utc": user_sessions(&file, &Utc, |_| true) }),
        Err(error) => json!({ "error": error.to_string() }),
    }
}

#[test]
fn fixtures_match_their_golden_files() {
    let update = std::env::var_os("FLEET_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, bytes) in binary_fixtures() {
        let actual = render(&bytes);
        let golden = testdata().join(format!("{name}{GOLDEN_SUFFIX}"));
        if update {
            std::fs::write(&golden, serde_json::to_string_pretty(&actual).expect("json") + "\n").expect("write");
            continue;
        }
        let expected: Value = std::fs::read_to_string(&golden)
            .map(|text| serde_json::from_str(&text).expect("golden json"))
            .unwrap_or_else(|_| json!(format!("missing {name}{GOLDEN_SUFFIX}")));
        if expected != actual {
            failures.push(format!("{name}:\n  expected {expected}\n  actual   {actual}"));
        }
    }
    assert!(failures.is_empty(), "golden mismatches:\n{}", failures.join("\n"));
}

#[test]
fn published_x11_terminals_are_six_sessions_and_logouts_are_not() {
    let bytes = std::fs::read(testdata().join("utmp--util-linux-wtmp-b-x11-terminals-and-logouts.bin")).expect("read");
    let file = parse_utmp(&bytes, Layout::Compat32).expect("parses");
    assert_eq!((file.records.len(), file.trailing_bytes), (10, 0));
    let sessions = user_sessions(&file, &Utc, |_| true);
    assert_eq!(sessions.len(), 6);
    let first = &sessions[0];
    assert_eq!(
        (first.name.as_str(), first.terminal.as_str(), first.host.as_deref(), first.started.as_deref()),
        ("kerolasa", "pts/1", Some(":0.0"), Some("2013-01-16T23:44:00"))
    );
    // Half an hour east, as `who` prints it under TZ=<+0530>-5:30.
    let east = FixedOffset::east_opt(5 * 3600 + 1800).expect("offset");
    assert_eq!(user_sessions(&file, &east, |_| true)[0].started.as_deref(), Some("2013-01-17T05:14:00"));
    // Only the processes still alive count, as `who` reads /run/utmp.
    let alive = user_sessions(&file, &Utc, |pid| pid == 31545);
    assert_eq!(alive.iter().map(|s| s.terminal.as_str()).collect::<Vec<_>>(), ["pts/1"]);
}

#[test]
fn every_record_type_but_user_process_is_left_out() {
    let bytes = std::fs::read(testdata().join("utmp--util-linux-wtmp-a-every-record-type.bin")).expect("read");
    let file = parse_utmp(&bytes, Layout::Compat32).expect("parses");
    let kinds: Vec<i16> = file.records.iter().map(|r| r.kind).collect();
    assert_eq!(&kinds[..10], &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    let names: Vec<String> = user_sessions(&file, &Utc, |_| true).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["user_process", "IPv4", "torvalds", "rick"]);
    assert_eq!(file.records[18].time, 2_147_483_647, "the last 32-bit second");
}

#[test]
fn an_incomplete_last_record_is_ignored_and_measured() {
    let mut bytes = std::fs::read(testdata().join("utmp--util-linux-wtmp-ipv6-login-and-logout.bin")).expect("read");
    let whole = parse_utmp(&bytes, Layout::Compat32).expect("parses");
    bytes.extend_from_within(..100);
    let cut = parse_utmp(&bytes, Layout::Compat32).expect("parses");
    assert_eq!((cut.records.clone(), cut.trailing_bytes), (whole.records, 100));
    assert_eq!(parse_utmp(&bytes[..383], Layout::Compat32).map(|f| (f.records.len(), f.trailing_bytes)), Ok((0, 383)));
    assert_eq!(parse_utmp(&[], Layout::Long64), Ok(UtmpFile { records: vec![], trailing_bytes: 0 }));
}

#[test]
fn a_record_type_past_accounting_is_not_this_layout() {
    let mut bytes = encode(&[Rec::user("alice", "pts/0", "", 1)], Layout::Compat32);
    bytes.extend(encode(&[Rec::user("bob", "pts/1", "", 1)], Layout::Compat32));
    bytes[384] = 0x00;
    bytes[385] = 0x07; // 1792
    assert_eq!(
        parse_utmp(&bytes, Layout::Compat32),
        Err(ParseError::BadValue { field: "ut_type", value: "record 1: 1792".to_string() })
    );
}

#[test]
fn both_layouts_read_what_they_write() {
    let records = [
        Rec::user("alice", "pts/0", "192.0.2.7", 1_700_000_059),
        Rec { kind: 8, pid: 77, ..Rec::user("", "pts/1", "", 1_700_000_100) },
    ];
    for layout in [Layout::Compat32, Layout::Long64] {
        let bytes = encode(&records, layout);
        assert_eq!(bytes.len(), 2 * layout.record_size());
        let file = parse_utmp(&bytes, layout).expect("parses");
        assert_eq!(file.records[0].user, "alice");
        assert_eq!(file.records[0].time, 1_700_000_059);
        assert_eq!((file.records[1].kind, file.records[1].pid), (8, 77));
        let sessions = user_sessions(&file, &Utc, |_| true);
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].started.as_deref(), Some("2023-11-14T22:14:00"));
    }
    // A 64-bit time past 2038 (aarch64), and the unsigned 32-bit one glibc reads since 2.41.
    let late = encode(&[Rec::user("a", "b", "", 4_102_444_800)], Layout::Long64);
    assert_eq!(parse_utmp(&late, Layout::Long64).expect("parses").records[0].time, 4_102_444_800);
    let wrapped = encode(&[Rec::user("a", "b", "", i64::from(u32::MAX))], Layout::Compat32);
    assert_eq!(parse_utmp(&wrapped, Layout::Compat32).expect("parses").records[0].time, 4_294_967_295);
    assert_eq!(started_text(4_294_967_295, &Utc).as_deref(), Some("2106-02-07T06:28:00"));
    assert_eq!(started_text(i64::MAX, &Utc), None);
    assert_eq!(started_text(-62_200_000_000, &Utc), None, "year -1 has no four-digit form");
}

#[test]
fn unterminated_and_non_utf8_fields_read_as_who_shows_them() {
    let user = "u".repeat(32);
    let host = "h".repeat(256);
    let bytes = encode(&[Rec::user(&user, &"l".repeat(32), &host, 0)], Layout::Compat32);
    let file = parse_utmp(&bytes, Layout::Compat32).expect("parses");
    assert_eq!((file.records[0].user.len(), file.records[0].line.len(), file.records[0].host.len()), (32, 32, 256));
    let mut raw = Rec::user("", "tty1", "", 0);
    raw.user_bytes = b"j\xf6rg".to_vec();
    let file = parse_utmp(&encode(&[raw], Layout::Compat32), Layout::Compat32).expect("parses");
    assert_eq!(file.records[0].user, "j\u{fffd}rg");
}

/// A record to write: the fields `who` reads.
#[derive(Clone)]
struct Rec {
    kind: i16,
    pid: i32,
    line: String,
    user_bytes: Vec<u8>,
    host: String,
    time: i64,
}

impl Rec {
    fn user(user: &str, line: &str, host: &str, time: i64) -> Rec {
        Rec {
            kind: USER_PROCESS,
            pid: 4242,
            line: line.into(),
            user_bytes: user.as_bytes().to_vec(),
            host: host.into(),
            time,
        }
    }
}

/// glibc's `struct utmp` bytes for `records` (the module doc's table).
fn encode(records: &[Rec], layout: Layout) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let mut b = vec![0u8; layout.record_size()];
        b[0..2].copy_from_slice(&r.kind.to_le_bytes());
        b[4..8].copy_from_slice(&r.pid.to_le_bytes());
        let put = |b: &mut Vec<u8>, at: usize, width: usize, bytes: &[u8]| {
            let n = bytes.len().min(width);
            b[at..at + n].copy_from_slice(&bytes[..n]);
        };
        put(&mut b, 8, 32, r.line.as_bytes());
        put(&mut b, 40, 4, r.line.as_bytes().rsplit(|c| *c == b'/').next().unwrap_or_default());
        put(&mut b, 44, 32, &r.user_bytes);
        put(&mut b, 76, 256, r.host.as_bytes());
        match layout {
            Layout::Compat32 => b[340..344].copy_from_slice(&(r.time as u32).to_le_bytes()),
            Layout::Long64 => b[344..352].copy_from_slice(&r.time.to_le_bytes()),
        }
        out.extend(b);
    }
    out
}

/// `who FILE` (coreutils; no process check for a named file) in a locale that prints ISO
/// dates and in the zone `tz`, decoded as the agent decodes command output. `None` where
/// coreutils' `who` is not installed.
fn who(file: &Path, tz: &str) -> Option<Vec<crate::users::parse::Session>> {
    let out = std::process::Command::new("who")
        .arg(file)
        .env("TZ", tz)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(parse_who(&String::from_utf8_lossy(&out.stdout)).expect("who's output parses"))
}

/// `ours` against `who`'s sessions. Where the C.UTF-8 locale is missing, coreutils falls back
/// to C and prints dates without a year (no `started`): then only the other fields are
/// compared, and the run says so.
fn assert_same_as_who(ours: &[crate::users::parse::Session], who: &[crate::users::parse::Session], what: &str) {
    if who.iter().all(|s| s.started.is_none()) && ours.iter().any(|s| s.started.is_some()) {
        eprintln!("note: {what}: `who` printed no ISO dates (no C.UTF-8 locale?): login times not compared");
        let strip = |list: &[crate::users::parse::Session]| {
            list.iter().cloned().map(|s| crate::users::parse::Session { started: None, ..s }).collect::<Vec<_>>()
        };
        assert_eq!(strip(ours), strip(who), "{what}");
    } else {
        assert_eq!(ours, who, "{what}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleet-utmp-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir.join("utmp")
}

#[test]
fn parser_agrees_with_who_on_the_published_files() {
    let mut compared = 0;
    for (name, bytes) in binary_fixtures() {
        let path = testdata().join(&name);
        let Some(expected) = who(&path, "UTC0") else {
            eprintln!("skipped: coreutils `who` is not installed");
            return;
        };
        let file = parse_utmp(&bytes, Layout::Compat32).expect("parses");
        assert_same_as_who(&user_sessions(&file, &Utc, |_| true), &expected, &name);
        compared += expected.len();
    }
    assert!(compared >= 10, "sessions compared: {compared}");
}

#[test]
fn parser_agrees_with_who_on_written_records() {
    let mut records = vec![
        Rec::user("alice", "pts/0", "192.0.2.7", 1_700_000_059),
        Rec::user("bob", "tty7", ":0", 1_600_000_000),
        Rec::user("carol", "pts/12", "laptop.example.net:10.0", 946_684_799),
        Rec::user("jörg", "pts/3", "", 1_234_567_890),
        Rec::user(&"u".repeat(32), &"l".repeat(32), &"h".repeat(256), 1_000_000_000),
        Rec::user("epoch", "ttyS0", "", 0),
        Rec::user("", "pts/9", "ghost", 1_700_000_000),
    ];
    let mut latin1 = Rec::user("", "pts/4", "", 1_700_000_000);
    latin1.user_bytes = b"j\xf6rg".to_vec();
    records.push(latin1);
    for kind in (0..=MAX_TYPE).filter(|k| *k != USER_PROCESS) {
        records.push(Rec { kind, ..Rec::user("other", "pts/5", "h", 1_700_000_000) });
    }
    let path = scratch("who");
    std::fs::write(&path, encode(&records, Layout::Compat32)).expect("write");
    let zones = [
        ("UTC0", FixedOffset::east_opt(0)),
        ("<+0530>-5:30", FixedOffset::east_opt(5 * 3600 + 1800)),
        ("<-0330>3:30", FixedOffset::west_opt(3 * 3600 + 1800)),
    ];
    let file = parse_utmp(&std::fs::read(&path).expect("read"), Layout::Compat32).expect("parses");
    for (tz, offset) in zones {
        let Some(expected) = who(&path, tz) else {
            eprintln!("skipped: coreutils `who` is not installed");
            return;
        };
        let ours = user_sessions(&file, &offset.expect("offset"), |_| true);
        assert_same_as_who(&ours, &expected, &format!("TZ={tz}"));
        assert_eq!(ours.len(), 7, "TZ={tz}");
    }
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

proptest! {
    #[test]
    fn any_bytes_parse_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..2000), long in any::<bool>()) {
        let layout = if long { Layout::Long64 } else { Layout::Compat32 };
        if let Ok(file) = parse_utmp(&bytes, layout) {
            prop_assert_eq!(file.records.len(), bytes.len() / layout.record_size());
            prop_assert_eq!(file.trailing_bytes, bytes.len() % layout.record_size());
            let _ = user_sessions(&file, &Utc, |pid| pid % 2 == 0);
        }
    }

    #[test]
    fn mutated_fixtures_parse_or_fail_without_panicking(
        pick in any::<usize>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..16),
        cut in any::<usize>(),
    ) {
        let all = binary_fixtures();
        let mut bytes = all[pick % all.len()].1.clone();
        for (at, value) in edits {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        for layout in [Layout::Compat32, Layout::Long64] {
            if let Ok(file) = parse_utmp(&bytes, layout) {
                let _ = user_sessions(&file, &FixedOffset::east_opt(3600).expect("offset"), |_| true);
            }
        }
    }
}

/// The non-zero lines of an `xxd` dump: (offset, bytes).
type DumpLines = Vec<(usize, Vec<u8>)>;

/// The `xxd` and `json` block pairs of `docs/utmp-format.md`'s test vectors.
fn documented_vectors() -> Vec<(DumpLines, Value)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/utmp-format.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let blocks: Vec<&str> = doc.split("```").collect();
    let mut out = Vec::new();
    for pair in blocks.windows(3) {
        let (Some(dump), Some(expected)) = (pair[0].strip_prefix("xxd\n"), pair[2].strip_prefix("json\n")) else {
            continue;
        };
        let lines = dump
            .lines()
            .map(|line| {
                let (offset, rest) = line.split_once(": ").expect("offset");
                let hex: String = rest[..39].split_whitespace().collect();
                let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"));
                (usize::from_str_radix(offset, 16).expect("offset"), bytes.collect())
            })
            .collect();
        out.push((lines, serde_json::from_str(expected).expect("vector json")));
    }
    out
}

#[test]
fn documented_vectors_decode_as_stated() {
    let vectors = documented_vectors();
    assert_eq!(vectors.len(), 2);
    for (lines, expected) in vectors {
        let layout = if expected["layout"] == "Long64" { Layout::Long64 } else { Layout::Compat32 };
        let mut bytes = vec![0u8; layout.record_size()];
        for (at, chunk) in lines {
            bytes[at..at + chunk.len()].copy_from_slice(&chunk);
        }
        let file = parse_utmp(&bytes, layout).expect("parses");
        let record = serde_json::to_value(&file.records[0]).expect("json");
        for field in ["type", "pid", "line", "user", "host", "time"] {
            assert_eq!(record[field], expected[field], "{field}");
        }
        let session = serde_json::to_value(&user_sessions(&file, &Utc, |_| true)[0]).expect("json");
        assert_eq!(session, expected["session_utc"]);
        if layout == Layout::Compat32 {
            let fixture = std::fs::read(testdata().join("utmp--util-linux-wtmp-b-x11-terminals-and-logouts.bin"));
            assert_eq!(&fixture.expect("fixture")[..384], &bytes[..], "vector 1 is the fixture's first record");
        }
    }
}

/// The size and offsets glibc's own header gives `struct utmp` for the compiler's target, read
/// from the assembly `cc -S` makes of a few `offsetof`s; `None` when the compiler or the
/// target's glibc headers are missing.
fn glibc_layout(cc: &str) -> Option<(String, Vec<(String, usize)>)> {
    let machine = std::process::Command::new(cc).arg("-dumpmachine").output().ok()?;
    let machine = String::from_utf8_lossy(&machine.stdout).trim().to_string();
    let fields = [
        ("size", "sizeof(struct utmp)"),
        ("pid", "offsetof(struct utmp, ut_pid)"),
        ("line", "offsetof(struct utmp, ut_line)"),
        ("user", "offsetof(struct utmp, ut_user)"),
        ("host", "offsetof(struct utmp, ut_host)"),
        ("tv_sec", "offsetof(struct utmp, ut_tv.tv_sec)"),
        ("tv_sec_size", "sizeof(((struct utmp *)0)->ut_tv.tv_sec)"),
    ];
    let mut source = String::from("#include <utmp.h>\n#include <stddef.h>\n");
    for (name, expr) in fields {
        source.push_str(&format!("int layout_{name} = {expr};\n"));
    }
    let c = scratch(&format!("layout-{cc}")).with_file_name("layout.c");
    std::fs::write(&c, source).expect("write");
    let out = std::process::Command::new(cc).args(["-S", "-o", "-"]).arg(&c).output().ok()?;
    let _ = std::fs::remove_dir_all(c.parent().expect("dir"));
    if !out.status.success() {
        return None;
    }
    let asm = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut values = Vec::new();
    for (name, _) in fields {
        let label = format!("layout_{name}:");
        let after = asm.split(&label).nth(1)?;
        let value = after.split_whitespace().nth(1)?.parse().ok()?;
        values.push((name.to_string(), value));
    }
    Some((machine, values))
}

#[test]
fn layouts_match_glibc_headers() {
    let mut checked = 0;
    for cc in ["gcc", "aarch64-linux-gnu-gcc"] {
        let Some((machine, values)) = glibc_layout(cc) else {
            eprintln!("skipped: {cc} or its glibc headers are not installed");
            continue;
        };
        let layout = if machine.starts_with("aarch64") {
            Layout::Long64
        } else if machine.starts_with("x86_64") {
            Layout::Compat32
        } else {
            eprintln!("skipped: {cc} targets {machine}");
            continue;
        };
        let (tv_sec, tv_sec_size) = layout.tv_sec();
        let expected = [
            ("size", layout.record_size()),
            ("pid", PID_AT),
            ("line", LINE.0),
            ("user", USER.0),
            ("host", HOST.0),
            ("tv_sec", tv_sec),
            ("tv_sec_size", tv_sec_size),
        ];
        let expected: Vec<(String, usize)> = expected.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(values, expected, "{cc} ({machine})");
        checked += 1;
    }
    assert!(checked > 0 || !cfg!(target_os = "linux"), "no C compiler with glibc headers: nothing checked");
}
