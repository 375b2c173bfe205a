//! Known-answer vectors for the sealed envelopes (`tests/vectors/*.json`, made by
//! `tests/vectors/generate.py` with Python `cryptography`): sealing reproduces each body byte for
//! byte, opening gives the plaintext back, and every negative vector fails opaquely.

use fleet_wire::envelope::{self, EnvelopeError};
use fleet_wire::keys::Key32;
use serde_json::Value;

fn load(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("vector file");
    let doc: Value = serde_json::from_str(&text).expect("vector JSON");
    let vectors = doc["vectors"].as_array().expect("vectors array").clone();
    for v in &vectors {
        assert!(v["source"].as_str().is_some_and(|s| s.contains("generate.py")), "{v}");
    }
    vectors
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("vector field {field}"))
}

fn nonce(v: &Value) -> [u8; 12] {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text(v, "nonce")).expect("nonce b64");
    bytes.try_into().expect("12 bytes")
}

#[test]
fn v1_vectors() {
    let vectors = load("v1.json");
    assert!(vectors.iter().any(|v| text(v, "name") == "design"));
    for v in vectors {
        let key = Key32::from_base64(text(&v, "key")).expect("key");
        let body = text(&v, "body").as_bytes();
        match text(&v, "expect") {
            "ok" => {
                let sealed = envelope::seal_v1_with_nonce(&key, nonce(&v), text(&v, "plaintext").as_bytes());
                assert_eq!(String::from_utf8_lossy(&sealed), text(&v, "body"), "{}", text(&v, "name"));
                let opened = envelope::open_v1(&key, body).expect("opens");
                assert_eq!(opened, text(&v, "plaintext").as_bytes(), "{}", text(&v, "name"));
            }
            _ => assert_eq!(envelope::open_v1(&key, body), Err(EnvelopeError::Decrypt), "{}", text(&v, "name")),
        }
    }
}

#[test]
fn v2_vectors() {
    let vectors = load("v2.json");
    assert!(vectors.iter().any(|v| text(v, "name") == "design"));
    for v in vectors {
        let name = text(&v, "name");
        let key = Key32::from_base64(text(&v, "key")).expect("key");
        assert_eq!(envelope::kid(&key), text(&v, "kid"), "{name}");
        let machine_id = text(&v, "machine_id");
        let seq = v["seq"].as_u64().expect("seq");
        let bk: String = envelope::batch_key(&key, machine_id).as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(bk, text(&v, "batch_key_hex"), "{name}");
        assert_eq!(envelope::v2_aad(text(&v, "kid"), machine_id, seq), text(&v, "aad").as_bytes(), "{name}");
        let body = text(&v, "body").as_bytes();
        match text(&v, "expect") {
            "ok" => {
                let sealed =
                    envelope::seal_v2_with_nonce(&key, machine_id, seq, nonce(&v), text(&v, "plaintext").as_bytes());
                assert_eq!(String::from_utf8_lossy(&sealed), text(&v, "body"), "{name}");
                let opened = envelope::open_v2(&[key], body).expect("opens");
                assert_eq!((opened.machine_id.as_str(), opened.seq), (machine_id, seq), "{name}");
                assert_eq!(opened.plaintext, text(&v, "plaintext").as_bytes(), "{name}");
            }
            _ => assert_eq!(envelope::open_v2(&[key], body), Err(EnvelopeError::Decrypt), "{name}"),
        }
    }
}
