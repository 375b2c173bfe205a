//! The test vectors printed in `docs/spool-format.md` and `docs/receiver-store.md`, held against
//! the real code both ways.
//!
//! Spool: the vector segment is built here from the documented layout alone (SHA-256, AES-256-GCM
//! with fixed keys and nonces, not the spool's own code), must equal `tests/vectors/spool.json`,
//! and must open with the real [`Spool`] to the same records; and a segment the real spool
//! writes must open with this independent reader. Receiver store: a fixed v2 batch, a v1 report
//! and v1 widget logs go through the real [`Store`]; the lines it writes, with `received_at`
//! blanked, must equal `tests/vectors/receiver-store.json`, as must the machine directory names.
//!
//! After a deliberate format change: `FLEET_WRITE_VECTORS=1 cargo test --test integration
//! docs_vectors` rewrites both JSON files; then update the docs from them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use fleet_agent::config::{FsyncPolicy, SpoolConfig};
use fleet_agent::spool::Spool;
use fleet_receiver::storage::{BatchOutcome, Storage};
use fleet_receiver::store::{self, FileStore};
use fleet_wire::record::{BatchBody, Record};

fn vector_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(name)
}

/// Compare `actual` with the committed vector file, or rewrite it under FLEET_WRITE_VECTORS=1.
fn check_or_write(name: &str, actual: &Value) {
    let path = vector_path(name);
    let text = serde_json::to_string_pretty(actual).expect("json") + "\n";
    if std::env::var_os("FLEET_WRITE_VECTORS").is_some_and(|v| v == "1") {
        std::fs::write(&path, text).expect("write vectors");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let committed: Value = serde_json::from_str(&committed).expect("committed vectors are JSON");
    assert_eq!(
        &committed,
        actual,
        "{} differs from what the code produces (FLEET_WRITE_VECTORS=1 rewrites it; then fix the docs)",
        path.display()
    );
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{key} is a string"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn seq_bytes(start: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| start.wrapping_add(i as u8)).collect()
}

fn seal(key: &[u8], nonce: &[u8], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
    let nonce = nonce.try_into().expect("12-byte nonce");
    cipher.encrypt(nonce, Payload { msg: plaintext, aad }).expect("seal")
}

fn open(key: &[u8], nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
    let nonce = nonce.try_into().expect("12-byte nonce");
    cipher.decrypt(nonce, Payload { msg: ciphertext, aad }).ok()
}

// ---------------------------------------------------------------------------------------------
// Spool (docs/spool-format.md)

/// The documented key id: the first 8 bytes of SHA-256("fleet-agent/spool-kid" || master key).
fn spool_key_id(master: &[u8]) -> [u8; 8] {
    let digest = Sha256::new().chain_update(b"fleet-agent/spool-kid").chain_update(master).finalize();
    digest[..8].try_into().expect("8 bytes")
}

/// The documented 28-byte header AAD: magic, version, reserved, segment id (LE), key id.
fn header_aad(segment_id: u64, key_id: &[u8; 8]) -> Vec<u8> {
    let mut aad = b"FLEETSPL".to_vec();
    aad.extend_from_slice(&[1, 0, 0, 0]);
    aad.extend_from_slice(&segment_id.to_le_bytes());
    aad.extend_from_slice(key_id);
    aad
}

/// The documented 25-byte record AAD: magic, version, segment id (LE), index (LE).
fn record_aad(segment_id: u64, index: u64) -> Vec<u8> {
    let mut aad = b"FLEETSPL".to_vec();
    aad.push(1);
    aad.extend_from_slice(&segment_id.to_le_bytes());
    aad.extend_from_slice(&index.to_le_bytes());
    aad
}

fn record_nonce(index: u64) -> Vec<u8> {
    let mut nonce = vec![0u8; 4];
    nonce.extend_from_slice(&index.to_be_bytes());
    nonce
}

/// One record frame: length, its complement, nonce, sealed JSON.
fn frame(data_key: &[u8], segment_id: u64, index: u64, json: &[u8]) -> Vec<u8> {
    let body = seal(data_key, &record_nonce(index), json, &record_aad(segment_id, index));
    let len = u32::try_from(body.len()).expect("small");
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&record_nonce(index));
    out.extend_from_slice(&body);
    out
}

/// The records of the vector, as the spool serializes them (serde_json of [`Record`]).
fn vector_records() -> Vec<Record> {
    let records = json!([
        {"ts": "2026-11-22T12:00:00.000Z", "widget": "cpu", "kind": "metric", "level": "info",
         "message": "", "data": {"percent": 12.5}},
        {"ts": "2026-11-22T12:00:10.000Z", "widget": "wifi", "kind": "log", "level": "warning",
         "message": "weak signal", "data": {"rssi": -78}},
    ]);
    serde_json::from_value(records).expect("records")
}

fn spool_config(dir: &Path) -> SpoolConfig {
    SpoolConfig { dir: dir.to_path_buf(), max_bytes: 64 << 20, segment_bytes: 1 << 20, fsync: FsyncPolicy::Batch }
}

fn read_all(dir: &Path) -> Vec<Record> {
    let mut spool = Spool::open(&spool_config(dir)).expect("the real spool opens it");
    let cursor = spool.acked_cursor();
    spool.read_from(cursor, 1000, 1 << 20).expect("read").records
}

#[test]
fn spool_vector_segment_matches_the_docs_and_opens_with_the_real_spool() {
    let master = seq_bytes(0x00, 32);
    let data_key = seq_bytes(0x20, 32);
    let wrap_nonce = seq_bytes(0x40, 12);
    let segment_id = 1u64;
    let kid = spool_key_id(&master);
    let mut header = header_aad(segment_id, &kid);
    header.extend_from_slice(&wrap_nonce);
    header.extend_from_slice(&seal(&master, &wrap_nonce, &data_key, &header_aad(segment_id, &kid)));
    assert_eq!(header.len(), 88);

    let records = vector_records();
    let mut frames = Vec::new();
    let mut frame_vectors = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let json = serde_json::to_string(record).expect("record JSON");
        let bytes = frame(&data_key, segment_id, index as u64, json.as_bytes());
        frame_vectors.push(json!({
            "index": index,
            "plaintext": json,
            "nonce_hex": hex(&record_nonce(index as u64)),
            "aad_hex": hex(&record_aad(segment_id, index as u64)),
            "frame_header_hex": hex(&bytes[..20]),
            "frame_hex": hex(&bytes),
        }));
        frames.extend_from_slice(&bytes);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let master_file = format!("{}\n", b64.encode(&master));
    let vector = json!({
        "description": "A spool segment (format version 1) with two records: docs/spool-format.md",
        "source": "tests/docs_vectors.rs: built from the documented layout with sha2 and aes-gcm directly, opened with the real Spool",
        "master_key_file": master_file,
        "key_id_hex": hex(&kid),
        "segment_file": "00000000000000000001.seg",
        "segment_id": segment_id,
        "data_key_hex": hex(&data_key),
        "wrap_nonce_hex": hex(&wrap_nonce),
        "header_aad_hex": hex(&header_aad(segment_id, &kid)),
        "header_hex": hex(&header),
        "frames": frame_vectors,
    });
    check_or_write("spool.json", &vector);
    // The document prints these bytes (32 hex digits a line).
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/spool-format.md")).expect("doc");
    let mut printed = vec![hex(&header)];
    printed.extend(frame_vectors.iter().map(|f| f["frame_hex"].as_str().expect("hex").to_string()));
    for bytes in printed {
        for chunk in bytes.as_bytes().chunks(32) {
            let line = std::str::from_utf8(chunk).expect("ascii");
            assert!(doc.lines().any(|l| l == line), "docs/spool-format.md lacks the vector line {line}");
        }
    }

    // The real spool reads the vector file back to the same records.
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    std::fs::create_dir(&spool_dir).expect("mkdir");
    std::fs::set_permissions(&spool_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for (name, bytes) in
        [("master.key", master_file.into_bytes()), ("00000000000000000001.seg", [header, frames].concat())]
    {
        std::fs::write(spool_dir.join(name), bytes).expect("write");
        std::fs::set_permissions(spool_dir.join(name), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    assert_eq!(read_all(&spool_dir), records, "the real spool reads the documented bytes");
}

#[test]
fn spool_segments_written_by_the_real_spool_follow_the_docs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = vector_records();
    {
        let mut spool = Spool::open(&spool_config(dir.path())).expect("open");
        spool.append(&records).expect("append");
        spool.sync().expect("sync");
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let master_text = std::fs::read_to_string(dir.path().join("master.key")).expect("master.key");
    assert!(master_text.ends_with('\n'));
    let master = b64.decode(master_text.trim_end()).expect("base64");
    assert_eq!(master.len(), 32);
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let path = segments.last().expect("a segment");
    let bytes = std::fs::read(path).expect("segment");
    let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
    assert_eq!(name.len(), 20, "20-digit zero-padded id");
    let segment_id: u64 = name.parse().expect("decimal id");

    // Header: magic, version, reserved, id, key id, wrap nonce, wrapped data key.
    assert_eq!(&bytes[0..8], b"FLEETSPL");
    assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
    assert_eq!(u64::from_le_bytes(bytes[12..20].try_into().expect("8")), segment_id);
    assert_eq!(&bytes[20..28], &spool_key_id(&master));
    let data_key = open(&master, &bytes[28..40], &bytes[40..88], &bytes[0..28]).expect("data key unwraps");

    // Frames: each authenticates at its place and holds the record's JSON.
    let mut offset = 88;
    for (index, record) in records.iter().enumerate() {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4"));
        assert_eq!(u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("4")), !len);
        assert_eq!(&bytes[offset + 8..offset + 20], record_nonce(index as u64).as_slice());
        let body = &bytes[offset + 20..offset + 20 + len as usize];
        let json = open(&data_key, &record_nonce(index as u64), body, &record_aad(segment_id, index as u64))
            .expect("frame authenticates");
        assert_eq!(serde_json::from_slice::<Record>(&json).expect("record JSON"), *record);
        offset += 20 + len as usize;
    }
    assert_eq!(offset, bytes.len(), "nothing after the frames");
}

// ---------------------------------------------------------------------------------------------
// Receiver store (docs/receiver-store.md)

/// Every line of a store file, `received_at` replaced by a placeholder.
fn lines_of(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let value: serde_json::Map<String, Value> = serde_json::from_str(line).expect("a JSON object per line");
            let at = value["received_at"].as_str().expect("received_at");
            assert!(at.ends_with('Z') && at.len() == 24, "received_at {at}: RFC 3339 UTC, milliseconds");
            // The line as stored (fields in the order written: sorted by name), the time blanked.
            let blanked = line.replacen(&format!(r#""received_at":"{at}""#), r#""received_at":"RECEIVED_AT""#, 1);
            assert_ne!(blanked, line, "received_at is written compactly");
            blanked
        })
        .collect()
}

#[test]
fn receiver_store_lines_match_the_docs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    // Rows as the receiver builds them, before sealing: a `--store-plaintext` store writes
    // them as they are (sealing: docs/receiver-store-sealing.md, tests/receiver_store.rs).
    let store = FileStore::open(&root, fleet_receiver::StoreKeys::plaintext()).expect("store opens");

    let batch: BatchBody = serde_json::from_value(json!({
        "machine_id": "vec-02", "seq": 0, "sent_at": "2026-11-22T13:00:00Z",
        "records": [
            {"ts": "2026-11-22T12:59:50.000Z", "widget": "cpu", "kind": "metric", "level": "info",
             "message": "", "data": {"percent": 12.5}},
            {"ts": "2026-11-22T12:59:55.000Z", "widget": "ping", "kind": "log", "level": "info",
             "message": "", "data": {"target": "127.0.0.1", "packet_loss": 0.0}}
        ],
        "dropped": {"count": 3, "oldest": "2026-11-20T00:00:00.000Z", "newest": "2026-11-21T00:00:00.000Z"}
    }))
    .expect("batch");
    store.append_batch(&batch, Some("a7ab0da568aa600d")).expect("stored");
    // The same (machine_id, seq) again: nothing written.
    assert!(matches!(
        store.append_batch(&batch, Some("a7ab0da568aa600d")).expect("duplicate"),
        BatchOutcome::Duplicate
    ));
    let report =
        json!({"machine_id": "vec 01", "machine_info": {"hostname": "vec"}, "metrics": {"cpu": {"percent": 3.0}}});
    store.append_report("vec 01", &report, true).expect("report");
    let log = json!({"timestamp": "2026-11-22T13:00:00", "level": "info", "widget_type": "wifi",
                     "message": "", "data": {"rssi": -60}});
    store.append_widget_logs("vec 01", &[log], false).expect("widget log");

    let long_id = "x".repeat(128).replace('x', "é");
    let long_id = &long_id[..long_id.char_indices().nth(60).map_or(long_id.len(), |(i, _)| i)];
    let names: Vec<Value> = ["mac-01", "Mac-01", "vec 01", ".hidden", "a/b", "Ünï", long_id]
        .iter()
        .map(|id| {
            let dir = store::dir_name(id);
            assert_eq!(store::machine_id_of(&dir).as_deref(), Some(*id), "{dir} maps back");
            json!({"machine_id": id, "dir": dir})
        })
        .collect();

    let vector = json!({
        "description": "Receiver store lines (received_at blanked) and machine directory names: docs/receiver-store.md",
        "source": "tests/docs_vectors.rs: written by the real receiver Store",
        "records_jsonl": lines_of(&root.join("vec-02").join(store::RECORDS_FILE)),
        "reports_jsonl": lines_of(&root.join("vec%2001").join(store::REPORTS_FILE)),
        "widget_logs_jsonl": lines_of(&root.join("vec%2001").join(store::WIDGET_LOGS_FILE)),
        "dir_names": names,
    });
    check_or_write("receiver-store.json", &vector);
    // The document prints every line and directory name.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/receiver-store.md")).expect("doc");
    for key in ["records_jsonl", "reports_jsonl", "widget_logs_jsonl"] {
        for line in vector[key].as_array().expect("lines") {
            let line = line.as_str().expect("line");
            assert!(doc.lines().any(|l| l == line), "docs/receiver-store.md lacks {line}");
        }
    }
    for name in &names {
        let row = format!("| `{}` | `{}` |", text(name, "machine_id"), text(name, "dir"));
        assert!(doc.contains(&row), "docs/receiver-store.md lacks {row}");
    }

    // Modes, as documented.
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("vec-02")), 0o700);
    assert_eq!(mode(&root.join("vec-02").join(store::RECORDS_FILE)), 0o600);
}

// ---------------------------------------------------------------------------------------------
// README figures that drifted once (the widget defaults)

/// The `(name value, …)` list in the README config table row of `key`.
fn readme_defaults(key: &str) -> Vec<(String, u64)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let row = readme.lines().find(|l| l.starts_with(&format!("| `{key}` |"))).unwrap_or_else(|| panic!("no {key} row"));
    let inside = row.split_once('(').and_then(|(_, rest)| rest.split_once(')')).map(|(list, _)| list);
    let inside = inside.unwrap_or_else(|| panic!("{key}: no (widget value, …) list in {row}"));
    inside
        .split(", ")
        .map(|pair| {
            let (name, value) = pair.trim().split_once(' ').unwrap_or_else(|| panic!("{key}: {pair:?}"));
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("{key}: {pair:?}")))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn readme_widget_default_intervals_and_jitter_match_the_registry() {
    // Compared as sets: the README may list them in any order.
    let intervals: Vec<(String, u64)> = fleet_widgets::ALL
        .iter()
        .filter_map(|spec| spec.default_interval_s.map(|s| (spec.name.to_string(), s)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(readme_defaults("widgets.<name>.interval"), intervals, "README interval defaults");
    let jitters: Vec<(String, u64)> = fleet_widgets::ALL
        .iter()
        .filter(|spec| spec.default_jitter_s != 0)
        .map(|spec| (spec.name.to_string(), spec.default_jitter_s))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(readme_defaults("widgets.<name>.jitter"), jitters, "README jitter defaults");
}
