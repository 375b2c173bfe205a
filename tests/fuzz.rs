//! Property tests ("fuzzing" that runs in CI) of the agent's untrusted-input readers: the
//! envelope openers (v1 and v2), the spool reader (open, recovery, read, `inspect`, `verify`)
//! and the config loader. Random and mutated inputs never panic; a mutated sealed body never
//! opens to anything but the original; config errors name a field.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256, when unset). A longer run:
//! `PROPTEST_CASES=100000 cargo test --release --test integration fuzz::`. The command-output
//! parsers are fuzzed in the widgets crate (`widgets/fuzz.rs`).

use std::path::Path;

use fleet_agent::config::{Config, Env, FsyncPolicy, SpoolConfig};
use fleet_agent::spool::{self, Spool};
use fleet_widgets::{Level, SampleKind, Timestamp};
use fleet_wire::envelope;
use fleet_wire::keys::Key32;
use fleet_wire::record::Record;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::{write_config, TEST_KEY_B64};

fn key() -> Key32 {
    Key32::from_base64(TEST_KEY_B64).expect("test key")
}

/// Byte-level edits of a valid input.
fn mutate(base: &[u8], edits: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(op, at, value) in edits {
        let len = bytes.len().max(1);
        match op % 4 {
            0 => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= value.max(1);
                }
            }
            1 => bytes.insert(at % (bytes.len() + 1), value),
            2 => {
                let from = at % len;
                let to = (from + 1 + value as usize % 16).min(bytes.len());
                bytes.drain(from.min(to)..to);
            }
            _ => bytes.truncate(at % len),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..8)
}

// ---------------------------------------------------------------------------------------
// envelopes

fn open_everything(body: &[u8]) {
    let keys = [key()];
    let _ = envelope::open_v1(&keys[0], body);
    let _ = envelope::open_v2(&keys, body);
    if let Ok(object) = envelope::parse_object(body) {
        let _ = envelope::is_sealed(&object);
        let _ = envelope::open_v1_value(&keys[0], &object);
        let _ = envelope::open_v2_value(&keys, &object);
    }
}

proptest! {
    #[test]
    fn envelope_openers_take_random_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        open_everything(&body);
    }

    #[test]
    fn envelope_openers_take_random_json(value in json_value()) {
        open_everything(value.to_string().as_bytes());
    }

    #[test]
    fn a_mutated_v1_body_opens_to_the_original_or_not_at_all(plain in "[ -~]{0,200}", edits in edits()) {
        let k = key();
        let sealed = envelope::seal_v1(&k, plain.as_bytes()).expect("seal");
        let mutated = mutate(&sealed, &edits);
        open_everything(&mutated);
        if let Ok(opened) = envelope::open_v1(&k, &mutated) {
            prop_assert_eq!(opened, plain.as_bytes());
        }
    }

    #[test]
    fn a_mutated_v2_body_opens_to_the_original_or_not_at_all(
        plain in "[ -~]{0,200}", seq in any::<u64>(), edits in edits()
    ) {
        let k = key();
        let sealed = envelope::seal_v2(&k, "fuzz-machine", seq, plain.as_bytes()).expect("seal");
        let mutated = mutate(&sealed, &edits);
        open_everything(&mutated);
        if let Ok(opened) = envelope::open_v2(&[key()], &mutated) {
            prop_assert_eq!(opened.plaintext, plain.as_bytes());
            prop_assert_eq!(opened.machine_id, "fuzz-machine");
            prop_assert_eq!(opened.seq, seq);
        }
    }
}

// ---------------------------------------------------------------------------------------
// spool reader

fn record(n: u64) -> Record {
    Record {
        ts: Timestamp(1_763_800_000_000 + n as i64 * 1000).to_rfc3339(),
        widget: "cpu".into(),
        kind: SampleKind::Metric,
        level: Level::Info,
        message: String::new(),
        data: json!({"n": n}),
    }
}

fn spool_config(dir: &Path) -> SpoolConfig {
    SpoolConfig { dir: dir.to_path_buf(), max_bytes: 1 << 20, segment_bytes: 4096, fsync: FsyncPolicy::Never }
}

/// A valid spool (master key, two segments, a cursor) to mutate: its files, by name.
fn template() -> &'static Vec<(String, Vec<u8>)> {
    static FILES: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(&spool_config(dir.path())).expect("open");
        spool.append(&(0..30).map(record).collect::<Vec<_>>()).expect("append");
        let batch = spool.read_from(spool.acked_cursor(), 5, 1 << 20).expect("read");
        spool.ack(batch.next).expect("ack");
        drop(spool);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("file")))
            .collect();
        files.sort();
        assert!(files.iter().filter(|(n, _)| n.ends_with(".seg")).count() >= 2, "{files:?}");
        files
    })
}

/// Open, read everything (bounded), ack, reopen; plus the read-only views. Never panics.
fn exercise_spool(dir: &Path) {
    let _ = spool::inspect(dir);
    let _ = spool::verify(dir);
    if let Ok(mut spool) = Spool::open(&spool_config(dir)) {
        let mut at = spool.acked_cursor();
        for _ in 0..100 {
            match spool.read_from(at, 7, 4096) {
                Ok(batch) if !batch.records.is_empty() => {
                    at = batch.next;
                    let _ = spool.ack(at);
                }
                _ => break,
            }
        }
        let _ = spool.stats();
        let _ = spool.append(&[record(99)]);
    }
    let _ = Spool::open(&spool_config(dir)).map(|s| s.stats());
}

proptest! {
    #[test]
    fn the_spool_reader_takes_random_segment_files(
        segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..4),
        keep_key in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        if keep_key {
            let (name, bytes) = template().iter().find(|(n, _)| n == "master.key").expect("key file");
            std::fs::write(dir.path().join(name), bytes).expect("key");
        }
        for (i, bytes) in segments.iter().enumerate() {
            // Random bytes after a real header half the time, so frames get parsed too.
            let mut file = if i % 2 == 0 {
                template().iter().find(|(n, _)| n.ends_with(".seg")).expect("segment").1[..88].to_vec()
            } else {
                Vec::new()
            };
            file.extend_from_slice(bytes);
            std::fs::write(dir.path().join(format!("{:020}.seg", i + 1)), file).expect("segment");
        }
        exercise_spool(dir.path());
    }

    #[test]
    fn the_spool_reader_takes_mutated_spools(pick in any::<usize>(), edits in edits()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = template();
        let target = pick % files.len();
        for (i, (name, bytes)) in files.iter().enumerate() {
            let bytes = if i == target { mutate(bytes, &edits) } else { bytes.clone() };
            std::fs::write(dir.path().join(name), bytes).expect("write");
        }
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path().join("master.key"), std::fs::Permissions::from_mode(0o600));
        exercise_spool(dir.path());
    }
}

// ---------------------------------------------------------------------------------------
// config loader

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["v2", "atlas", "batch", "never", "127.0.0.1", "http://127.0.0.1:1", TEST_KEY_B64])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Real field names most of the time, so values reach the field checks.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "server_url", "api_key", "encryption_key", "verify_ssl", "interval", "machine_id", "protocol",
            "ca_file", "spool", "widgets", "log_level", "dir", "max_bytes", "segment_bytes", "fsync", "enabled",
            "jitter", "targets", "count", "ping", "speedtest", "cpu", "battery", "wifi", "disk", "processes",
        ]).prop_map(str::to_string),
        1 => "[a-z_]{1,10}",
    ]
}

/// A valid config with every section, to mutate.
fn valid_config() -> Value {
    json!({
        "server_url": "https://fleet.example.com:8443", "api_key": "k", "encryption_key": TEST_KEY_B64,
        "verify_ssl": true, "interval": 10, "machine_id": "fuzz-01", "protocol": "v2", "log_level": "info",
        "spool": {"dir": "/tmp/fleet-fuzz-spool", "max_bytes": 67108864, "segment_bytes": 1048576, "fsync": "batch"},
        "widgets": {"ping": {"targets": ["127.0.0.1"], "count": 1, "interval": 30}, "speedtest": {"enabled": false},
                    "cpu": {"jitter": 1}},
    })
}

/// Replace the value at a random path of `config` with `value` (or delete it).
fn replace_somewhere(config: &mut Value, path: &[usize], value: Option<Value>) {
    let mut at = config;
    for (depth, &step) in path.iter().enumerate() {
        let Value::Object(map) = at else { return };
        if map.is_empty() {
            return;
        }
        let name = map.keys().nth(step % map.len()).cloned().expect("a key");
        let last = depth + 1 == path.len() || !map[&name].is_object();
        if last {
            match value {
                Some(v) => map.insert(name, v),
                None => map.remove(&name),
            };
            return;
        }
        at = map.get_mut(&name).expect("present");
    }
}

fn load(text: &str) -> Result<Config, Vec<fleet_agent::config::ConfigError>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), "fuzz.json", text, 0o600);
    Config::load_with_env(Some(&path), &NoEnv)
}

/// Every error names a field (`field \`…\``), except syntax errors, which give a position.
fn check_errors(text: &str, result: &Result<Config, Vec<fleet_agent::config::ConfigError>>) {
    if let Err(errors) = result {
        assert!(!errors.is_empty(), "an error list is never empty");
        for error in errors {
            let message = error.to_string();
            let syntax = serde_json::from_str::<Value>(text).is_err() || !text.trim_start().starts_with('{');
            assert!(
                message.contains("field `") || (syntax && message.contains(" line ")),
                "error names no field: {message}\nconfig: {text}"
            );
        }
    }
}

proptest! {
    #[test]
    fn the_config_loader_takes_random_json(value in json_value()) {
        let text = value.to_string();
        check_errors(&text, &load(&text));
    }

    #[test]
    fn the_config_loader_takes_mutated_valid_configs(
        changes in prop::collection::vec((prop::collection::vec(any::<usize>(), 1..4), prop::option::of(json_value())), 1..4)
    ) {
        let mut config = valid_config();
        for (path, value) in changes {
            replace_somewhere(&mut config, &path, value);
        }
        let text = config.to_string();
        check_errors(&text, &load(&text));
    }

    #[test]
    fn the_config_loader_takes_mutated_text(edits in edits()) {
        let text = String::from_utf8_lossy(&mutate(valid_config().to_string().as_bytes(), &edits)).into_owned();
        check_errors(&text, &load(&text));
    }
}
