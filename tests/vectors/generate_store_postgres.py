#!/usr/bin/env python3
"""Generate tests/vectors/store-rows-postgres.json with Python `cryptography`, independently of
the Rust crates the receiver uses: known-answer vectors for rows of the PostgreSQL store sealed
at rest (format: docs/receiver-store-postgres.md, code: receiver/postgres/rows.rs; the row
objects and the AAD construction are the file store's, docs/receiver-store-sealing.md, with
the table name for the file name and the row's id, or 0, for the line number).

    pip install cryptography
    python3 tests/vectors/generate_store_postgres.py   # rewrites store-rows-postgres.json here

`columns` are the row's columns as stored (bytea in hex, seq as the signed bigint of its 64
bits). Nonces are fixed here (test vectors only: the receiver draws a fresh one per row).
"""
import base64
import hashlib
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The row objects, key id and AAD construction are the file store's: one statement of them, in
# the file store's generator beside this one (the table name stands for the file name, the row's
# id for the line number).
from generate_store import CLEAR_FIELDS, KEY, aad, compact, store_kid


def signed64(n):
    return n - (1 << 64) if n >= (1 << 63) else n


def columns(table, row_id, row, nonce):
    clear = {k: v for k, v in row.items() if k in CLEAR_FIELDS}
    secret = {k: v for k, v in row.items() if k not in CLEAR_FIELDS}
    a = aad(table, row_id, clear)
    payload = AESGCM(KEY).encrypt(nonce, compact(secret).encode(), a)
    cols = {}
    if table in ("reports", "widget_logs"):
        cols["id"] = row_id
    if table == "records":
        cols["idx"] = row["index"]
        cols["widget"] = row["widget"]
        cols["record_kind"] = row["record_kind"]
    else:
        cols["machine_id"] = row["machine_id"]
        cols["received_at"] = row["received_at"]
    if table == "batches":
        cols["seq"] = signed64(row["seq"])
        cols["records"] = row["records"]
        cols["digest"] = row["digest"]
    if table == "widget_logs":
        cols["widget"] = row["widget"]
    cols["store_kid"] = store_kid(KEY)
    cols["nonce"] = nonce.hex()
    cols["payload"] = payload.hex()
    return a, cols


def records_digest(records):
    """docs/v2-protocol.md: SHA-256 of the records as compact JSON, members in this order,
    `data` members sorted."""
    canonical = [{k: (json.loads(compact(r[k])) if k == "data" else r[k])
                  for k in ("ts", "widget", "kind", "level", "message", "data")} for r in records]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


RECORD = {"ts": "2026-11-22T13:00:00.000Z", "widget": "ping", "kind": "log", "level": "info",
          "message": "ping 1.1.1.1", "data": {"latency": 12.5, "packet_loss": 0, "target": "1.1.1.1"}}
ROWS = [
    ("batch", "batches", 0, {
        "received_at": "2026-11-22T13:00:01.250Z", "machine_id": "mac-01", "kind": "batch", "seq": 7,
        "records": 1, "kid": "d1c81e9b5253ca4a", "sent_at": "2026-11-22T13:00:01Z", "dropped": {"count": 0},
        "digest": records_digest([RECORD]),
    }),
    ("record", "records", 0, {
        "received_at": "2026-11-22T13:00:01.250Z", "machine_id": "mac-01", "kind": "record", "seq": 7,
        "index": 0, "widget": "ping", "record_kind": "log",
        "record": RECORD,
    }),
    ("report", "reports", 42, {
        "received_at": "2026-11-22T13:00:03.000Z", "machine_id": "mac-01", "kind": "report", "e2ee": True,
        "report": {"machine_id": "mac-01", "machine_info": {"hostname": "h"}, "metrics": {"cpu": {"percent": 12.5}}},
    }),
    ("widget-log", "widget_logs", 5, {
        "received_at": "2026-11-22T13:00:02.000Z", "machine_id": "a b", "kind": "widget-log", "widget": "wifi",
        "e2ee": True, "log": {"timestamp": "2026-11-22T14:00:00", "level": "warning", "widget_type": "wifi",
                              "message": "weak signal é", "data": {"rssi": -80}},
    }),
    ("batch-highest-seq", "batches", 0, {
        "received_at": "2026-11-22T13:00:04.000Z", "machine_id": "mac-02", "kind": "batch",
        "seq": 18446744073709551615, "records": 0, "sent_at": "2026-11-22T13:00:04Z", "dropped": {"count": 3},
        "digest": records_digest([]),
    }),
]


def main():
    vectors = []
    for i, (name, table, row_id, row) in enumerate(ROWS):
        nonce = bytes(range(0x20 + i, 0x20 + i + 12))
        a, cols = columns(table, row_id, row, nonce)
        vectors.append({
            "name": name,
            "source": "tests/vectors/generate_store_postgres.py (Python cryptography, independent of the Rust implementation)",
            "key": base64.b64encode(KEY).decode(),
            "table": table,
            "row_id": row_id,
            "row": row,
            "aad_hex": a.hex(),
            "columns": cols,
        })
    doc = {
        "description": "Known-answer vectors for rows of the receiver's PostgreSQL store sealed at rest, "
                       "see docs/receiver-store-postgres.md",
        "vectors": vectors,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store-rows-postgres.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
