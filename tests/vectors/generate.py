#!/usr/bin/env python3
"""Generate tests/vectors/v1.json and v2.json with Python `cryptography`, an implementation
independent of the Rust crates the agent uses (aes-gcm, hkdf, sha2).

    pip install cryptography
    python3 tests/vectors/generate.py        # rewrites v1.json and v2.json next to this file

Formats are those of wire/envelope.rs (docs/v2-protocol.md). Bodies are compact JSON with the
fields in the order the Rust sealer writes them, so tests compare them byte for byte.
Nonces are fixed here (test vectors only: a real sender never reuses a nonce).
"""
import base64
import hashlib
import json
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = "tests/vectors/generate.py (Python cryptography, independent of the Rust implementation)"


def b64(data):
    return base64.b64encode(data).decode()


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def kid(key):
    return hashlib.sha256(b"fleet-agent/kid" + key).hexdigest()[:16]


def batch_key(key, machine_id):
    info = b"batch:" + machine_id.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"fleet-agent/v2", info=info).derive(key)


def flip_last_byte(text):
    raw = bytearray(base64.b64decode(text))
    raw[-1] ^= 0x01
    return b64(bytes(raw))


def v1_vector(name, key, nonce, plaintext, source=SOURCE):
    ct = AESGCM(key).encrypt(nonce, plaintext.encode(), None)
    body = {"encrypted": True, "version": "1", "nonce": b64(nonce), "ciphertext": b64(ct)}
    return {
        "name": name,
        "source": source,
        "key": b64(key),
        "nonce": b64(nonce),
        "plaintext": plaintext,
        "ciphertext": b64(ct),
        "body": dumps(body),
        "expect": "ok",
    }


def v2_vector(name, key, machine_id, seq, nonce, plaintext, source=SOURCE):
    k = kid(key)
    bk = batch_key(key, machine_id)
    aad = "fleet-agent/v2\n%s\n%s\n%d" % (k, machine_id, seq)
    ct = AESGCM(bk).encrypt(nonce, plaintext.encode(), aad.encode())
    body = {
        "encrypted": True,
        "version": "2",
        "kid": k,
        "machine_id": machine_id,
        "seq": seq,
        "nonce": b64(nonce),
        "ciphertext": b64(ct),
    }
    return {
        "name": name,
        "source": source,
        "key": b64(key),
        "machine_id": machine_id,
        "seq": seq,
        "nonce": b64(nonce),
        "kid": k,
        "batch_key_hex": bk.hex(),
        "aad": aad,
        "plaintext": plaintext,
        "ciphertext": b64(ct),
        "body": dumps(body),
        "expect": "ok",
    }


def negative(vector, name, why, **changes):
    body = json.loads(vector["body"])
    body.update(changes)
    out = dict(vector)
    out.update({"name": name, "body": dumps(body), "expect": "decrypt_error", "why": why})
    return out


def main():
    key = bytes(range(32))
    key2 = bytes(range(0x20, 0x40))
    nonce = bytes(range(12))
    nonce2 = bytes([0xFF] * 12)
    design = SOURCE + "; the vector printed in docs/v2-protocol.md"
    v1_source = SOURCE + "; the v1 vector of docs/architecture.md (Atlas protocol)"

    v1_design = v1_vector("design", key, nonce, '{"machine_id":"vec-01","machine_info":{},"metrics":{}}', v1_source)
    v1 = [
        v1_design,
        v1_vector("empty-plaintext", key, nonce, ""),
        v1_vector(
            "widget-logs",
            key2,
            nonce2,
            dumps({"machine_id": "vec-02", "logs": [{"timestamp": "2026-11-22T13:00:00", "level": "info",
                                                      "widget_type": "ping", "message": "ok, \"quoted\"\nline",
                                                      "data": {"latency": 12.5, "packet_loss": 0, "target": "1.1.1.1"}}]}),
        ),
        v1_vector("unicode", key2, nonce, dumps({"machine_id": "münchen-01", "machine_info": {"name": "Zoë's Mac"},
                                                  "metrics": {}})),
        negative(v1_design, "tampered-tag", "last ciphertext byte (in the tag) flipped",
                 ciphertext=flip_last_byte(v1_design["ciphertext"])),
        negative(v1_design, "other-nonce", "nonce changed", nonce=b64(nonce2)),
    ]
    v1_wrong_key = dict(v1_design)
    v1_wrong_key.update({"name": "wrong-key", "key": b64(key2), "expect": "decrypt_error",
                         "why": "opened with another key"})
    v1.append(v1_wrong_key)

    v2_design = v2_vector(
        "design", key, "vec-01", 7, nonce,
        '{"machine_id":"vec-01","seq":7,"sent_at":"2026-11-22T00:00:00Z","records":[],"dropped":{"count":0}}',
        design,
    )
    v2 = [
        v2_design,
        v2_vector(
            "records-and-dropped", key2, "vec-02", 0, nonce2,
            dumps({"machine_id": "vec-02", "seq": 0, "sent_at": "2026-11-22T13:00:00Z",
                   "records": [{"ts": "2026-11-22T12:59:50.000Z", "widget": "cpu", "kind": "metric", "level": "info",
                                "message": "", "data": {"percent": 12.5}}],
                   "dropped": {"count": 3, "oldest": "2026-11-20T00:00:00.000Z",
                               "newest": "2026-11-21T00:00:00.000Z"}}),
        ),
        v2_vector(
            "max-seq-unicode-machine", key, "münchen-01", 18446744073709551615, nonce,
            dumps({"machine_id": "münchen-01", "seq": 18446744073709551615, "sent_at": "2026-11-22T00:00:00Z",
                   "records": [], "dropped": {"count": 0}}),
        ),
        negative(v2_design, "other-machine", "machine_id changed (AAD and batch key differ)", machine_id="vec-02"),
        negative(v2_design, "other-seq", "seq changed (AAD differs)", seq=8),
        negative(v2_design, "tampered-tag", "last ciphertext byte (in the tag) flipped",
                 ciphertext=flip_last_byte(v2_design["ciphertext"])),
    ]

    for name, vectors, what in [("v1.json", v1, "v1 (Atlas) envelopes"), ("v2.json", v2, "v2 batch envelopes")]:
        doc = {"description": "Known-answer vectors for %s, see wire/envelope.rs" % what, "vectors": vectors}
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2, ensure_ascii=False))
            f.write("\n")


if __name__ == "__main__":
    main()
