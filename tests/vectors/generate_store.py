#!/usr/bin/env python3
"""Generate tests/vectors/store-rows.json with Python `cryptography`, independently of the Rust
crates the receiver uses: known-answer vectors for rows of the receiver's store sealed at rest
(format: docs/receiver-store-sealing.md, code: receiver/seal.rs).

    pip install cryptography
    python3 tests/vectors/generate_store.py   # rewrites store-rows.json next to this file

Stored lines are compact JSON with keys sorted (as serde_json's map writes them). Nonces are
fixed here (test vectors only: the receiver draws a fresh random nonce for every row).
"""
import base64
import hashlib
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CLEAR_FIELDS = ["received_at", "machine_id", "kind", "seq", "index", "records", "widget", "record_kind"]
KEY = bytes(range(0x40, 0x60))


def compact(value):
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def store_kid(key):
    return hashlib.sha256(b"fleet-agent store key id v1" + key).digest()[:8].hex()


def aad(file, line, clear):
    out = b"fleet-agent store row v1\x00" + file.encode() + b"\x00" + str(line).encode() + b"\x00"
    for name in CLEAR_FIELDS:
        if name in clear:
            out += name.encode() + b"=" + compact(clear[name]).encode() + b"\n"
    return out


def seal(key, file, line, row, nonce):
    clear = {k: v for k, v in row.items() if k in CLEAR_FIELDS}
    secret = {k: v for k, v in row.items() if k not in CLEAR_FIELDS}
    a = aad(file, line, clear)
    ciphertext = AESGCM(key).encrypt(nonce, compact(secret).encode(), a)
    stored = dict(clear)
    stored["store_kid"] = store_kid(key)
    stored["nonce"] = base64.b64encode(nonce).decode()
    stored["sealed"] = base64.b64encode(ciphertext).decode()
    return a, compact(stored)


ROWS = [
    ("record", "records.jsonl", 12, {
        "received_at": "2026-11-22T13:00:01.250Z", "machine_id": "mac-01", "kind": "record", "seq": 7,
        "index": 0, "widget": "ping", "record_kind": "log",
        "record": {"ts": "2026-11-22T13:00:00.000Z", "widget": "ping", "kind": "log", "level": "info",
                   "message": "ping 1.1.1.1", "data": {"latency": 12.5, "packet_loss": 0, "target": "1.1.1.1"}},
    }),
    ("batch", "records.jsonl", 13, {
        "received_at": "2026-11-22T13:00:01.250Z", "machine_id": "mac-01", "kind": "batch", "seq": 7,
        "records": 1, "kid": "d1c81e9b5253ca4a", "sent_at": "2026-11-22T13:00:01Z", "dropped": {"count": 0},
    }),
    ("widget-log", "widget-logs.jsonl", 0, {
        "received_at": "2026-11-22T13:00:02.000Z", "machine_id": "a b", "kind": "widget-log", "widget": "wifi",
        "e2ee": True, "log": {"timestamp": "2026-11-22T14:00:00", "level": "warning", "widget_type": "wifi",
                              "message": "weak signal é", "data": {"rssi": -80}},
    }),
    ("report", "reports.jsonl", 3, {
        "received_at": "2026-11-22T13:00:03.000Z", "machine_id": "mac-01", "kind": "report", "e2ee": True,
        "report": {"machine_id": "mac-01", "machine_info": {"hostname": "h"}, "metrics": {"cpu": {"percent": 12.5}}},
    }),
]


def main():
    vectors = []
    for i, (name, file, line, row) in enumerate(ROWS):
        nonce = bytes(range(i, i + 12))
        a, stored = seal(KEY, file, line, row, nonce)
        vectors.append({
            "name": name,
            "source": "tests/vectors/generate_store.py (Python cryptography, independent of the Rust implementation)",
            "key": base64.b64encode(KEY).decode(),
            "store_kid": store_kid(KEY),
            "file": file,
            "line": line,
            "nonce": base64.b64encode(nonce).decode(),
            "row": row,
            "aad_hex": a.hex(),
            "stored": stored,
        })
    doc = {"description": "Known-answer vectors for rows of the receiver's store sealed at rest, see docs/receiver-store-sealing.md",
           "vectors": vectors}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store-rows.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
