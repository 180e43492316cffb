"""TCPStore traffic torch 2.13 cannot produce, built byte-exact from the wire brief.

The real captures (pcaps/clients/tcpstore_*.pcap, made by pcaps/clients/make_tcpstore.py with
torch) all use the new numbering. This module encodes, with `struct`, what the brief
(../shared/reference/nccl-tcpstore-wire.md §4) and the pre-2.2 TCPStore.cpp it cites put on the
wire, and carries it in crafted TCP conversations (`inspector.lab.craft`):

* tcpstore_old.pcap - an old-numbering client (torch < 2.2, no VALIDATE): every old query type
  with its reply, a WAIT cancelled by CANCEL_WAIT, 128-byte ncclUniqueId values in the <= 2.15
  and 2.16-2.22 layouts, and a watch socket (WATCH_KEY, its registration, two notifications);
* tcpstore_anomalies.pcap - what a peer or a damaged capture can send: new-numbering queries
  without VALIDATE, a wrong VALIDATE magic, a lying key length, a value over the 8 MiB cap,
  an unknown query type, an absurd key count, a query cut by the end of the connection, reply
  bytes with no query waiting, a lying reply length.

`tcpstore_truth.json` lists the records and anomalies each must produce.

    python -m inspector.lab.tcpstorecaps pcaps/crafted
"""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation, generate_captures
from inspector.lab.ncclcaps import NcclWire

EPOCH = 1_767_225_600.0
MAGIC = 0x3C85F7CE

#: Query type numbers, transcribed from the brief's table (independently of the parser's).
OLD = {"SET": 0, "COMPARE_SET": 1, "GET": 2, "ADD": 3, "CHECK": 4, "WAIT": 5, "GETNUMKEYS": 6, "WATCH_KEY": 7,
       "DELETE_KEY": 8, "APPEND": 9, "MULTI_GET": 10, "MULTI_SET": 11, "CANCEL_WAIT": 12}
NEW = {"VALIDATE": 0, "SET": 1, "COMPARE_SET": 2, "GET": 3, "ADD": 4, "CHECK": 5, "WAIT": 6, "GETNUMKEYS": 7,
       "DELETE_KEY": 8, "APPEND": 9, "MULTI_GET": 10, "MULTI_SET": 11, "CANCEL_WAIT": 12, "PING": 13,
       "QUEUE_PUSH": 14, "QUEUE_POP": 15, "QUEUE_LEN": 16, "LIST_KEYS": 17, "BARRIER": 18}

Truth = dict[str, Any]


class StoreWire:
    """Encoders for TCPStore queries and replies (little-endian, `u64 len` + bytes strings)."""

    @staticmethod
    def string(data: bytes | str) -> bytes:
        raw = data.encode() if isinstance(data, str) else data
        return struct.pack("<Q", len(raw)) + raw

    @staticmethod
    def i64(value: int) -> bytes:
        return struct.pack("<q", value)

    @classmethod
    def keys(cls, keys: list[str]) -> bytes:
        return struct.pack("<Q", len(keys)) + b"".join(cls.string(k) for k in keys)

    @staticmethod
    def code(table: dict[str, int], name: str) -> bytes:
        return bytes([table[name]])

    @classmethod
    def validate(cls, magic: int = MAGIC) -> bytes:
        return b"\x00" + struct.pack("<I", magic)


S = StoreWire


def _conv(cap: Capture, rng: random.Random, client: str, start: float, server: str = "10.9.0.1") -> TcpConversation:
    return TcpConversation(cap, (client, rng.randrange(40000, 60000)), (server, 29500), start, rng).handshake()


def _exchange(conv: TcpConversation, query: bytes, reply: bytes = b"") -> None:
    conv.send(CLIENT, query, think=0.0003)
    if reply:
        conv.send(SERVER, reply, think=0.0002)


def _q(name: str, numbering: str = "old", validated: bool = False, **values: Any) -> dict[str, Any]:
    table = OLD if numbering == "old" else NEW
    return {"query": name, "query_code": table[name], "numbering": numbering, "validated": validated, **values}


def _key(key: str) -> dict[str, Any]:
    return {"key": key, "key_unprefixed": key[1:]} if key.startswith("/") else {"key": key}


def old_capture(cap: Capture, rng: random.Random) -> Truth:
    records: list[dict[str, Any]] = []
    t = EPOCH + 40
    conv = _conv(cap, rng, "10.9.0.2", t)
    o = OLD
    _exchange(conv, S.code(o, "ADD") + S.string("init/") + S.i64(1), S.i64(1))
    records.append(_q("ADD", key="init/", add_amount=1, reply={"number": 1}))
    _exchange(conv, S.code(o, "SET") + S.string("/model") + S.string("llama"))
    records.append(_q("SET", **_key("/model"), value_size=5, value_kind="text", value_text="llama"))
    _exchange(conv, S.code(o, "WAIT") + S.keys(["/model"]) + S.code(o, "GET") + S.string("/model"),
              b"\x00" + S.string("llama"))
    records.append(_q("WAIT", **_key("/model"), keys=["/model"], key_count=1,
                      reply={"code": 0, "status": "STOP_WAITING"}))
    records.append(_q("GET", **_key("/model"), reply={"value_size": 5, "value_kind": "text", "value_text": "llama"}))
    _exchange(conv, S.code(o, "COMPARE_SET") + S.string("/model") + S.string("llama") + S.string("mistral"),
              S.string("mistral"))
    records.append(_q("COMPARE_SET", **_key("/model"), expected_size=5, value_size=7, value_kind="text",
                      value_text="mistral",
                      reply={"value_size": 7, "value_kind": "text", "value_text": "mistral"}))
    _exchange(conv, S.code(o, "CHECK") + S.keys(["/model", "/x"]), b"\x01")
    records.append(_q("CHECK", **_key("/model"), keys=["/model", "/x"], key_count=2,
                      reply={"code": 1, "status": "NOT_READY"}))
    _exchange(conv, S.code(o, "GETNUMKEYS"), S.i64(2))
    records.append(_q("GETNUMKEYS", reply={"number": 2}))
    _exchange(conv, S.code(o, "DELETE_KEY") + S.string("/model"), S.i64(1))
    records.append(_q("DELETE_KEY", **_key("/model"), reply={"number": 1}))
    old_id = NcclWire.sockaddr("10.9.0.7:29501").ljust(128, b"\0")  # <= 2.15: sa28 at 0, zeros
    _exchange(conv, S.code(o, "MULTI_SET") + struct.pack("<Q", 2) + S.string("/a") + S.string("1")
              + S.string("/nccl") + S.string(old_id))
    records.append(_q("MULTI_SET", **_key("/a"), keys=["/a", "/nccl"], key_count=2, value_size=129,
                      value_kind="nccl_id", nccl_id={"root_addr": "10.9.0.7:29501", "layout": "<=2.15"}))
    _exchange(conv, S.code(o, "MULTI_GET") + S.keys(["/a", "/nccl"]), S.string("1") + S.string(old_id))
    records.append(_q("MULTI_GET", **_key("/a"), keys=["/a", "/nccl"], key_count=2,
                      reply={"value_size": 129, "value_kind": "nccl_id", "value_count": 2,
                             "nccl_id": {"root_addr": "10.9.0.7:29501", "layout": "<=2.15"}}))
    _exchange(conv, S.code(o, "APPEND") + S.string("/a") + S.string("2"))
    records.append(_q("APPEND", **_key("/a"), value_size=1, value_kind="int", value_text="2"))
    # NCCL 2.16-2.22 ids: bytes 40-127 are whatever was on the stack
    id_216 = (struct.pack("<Q", 0xC0FFEE0011223344) + NcclWire.sockaddr("10.9.0.7:35111")
              + bytes(4) + bytes(rng.randrange(256) for _ in range(88)))
    _exchange(conv, S.code(o, "SET") + S.string("/default_pg/0") + S.string(id_216))
    records.append(_q("SET", **_key("/default_pg/0"), value_size=128, value_kind="nccl_id",
                      nccl_id={"root_addr": "10.9.0.7:35111", "magic": "4433221100eeffc0", "layout": "2.16-2.22"}))
    _exchange(conv, S.code(o, "WAIT") + S.keys(["/late"]))
    conv.wait(0.3)
    _exchange(conv, S.code(o, "CANCEL_WAIT"), b"\x01")
    records.append(_q("WAIT", **_key("/late"), keys=["/late"], key_count=1, canceled=True))
    records.append(_q("CANCEL_WAIT", reply={"code": 1, "status": "WAIT_CANCELED"}))
    conv.close()

    # the callback socket of a worker that called watchKey("/model")
    watch = _conv(cap, rng, "10.9.0.3", t + 0.001)
    _exchange(watch, S.code(o, "WATCH_KEY") + S.string("/model"), b"\x03")
    records.append(_q("WATCH_KEY", **_key("/model"), reply={"code": 3, "status": "KEY_CALLBACK_REGISTERED"}))
    watch.send(SERVER, b"\x00" + S.string("/model") + S.string("llama") + S.string("mistral"), think=0.01)
    records.append({"numbering": "old", "validated": False, "watch_event": "KEY_UPDATED", **_key("/model"),
                    "value_size": 7, "value_kind": "text", "value_text": "mistral"})
    watch.send(SERVER, b"\x02" + S.string("/model") + S.string("mistral") + S.string(""), think=0.01)
    records.append({"numbering": "old", "validated": False, "watch_event": "KEY_DELETED", **_key("/model"),
                    "value_size": 0, "value_kind": "empty"})
    watch.close()
    return {"records": records, "anomalies": [], "flows": 2}


def anomalies_capture(cap: Capture, rng: random.Random) -> Truth:
    records: list[dict[str, Any]] = []
    anomalies: list[str] = []
    t = EPOCH + 50
    n = NEW
    validate = S.validate()
    validate_record = _q("VALIDATE", "new", True, validate_magic="3c85f7ce")

    # new-numbering queries with no VALIDATE: what a hand-written client (or an attacker) sends
    conv = _conv(cap, rng, "10.9.1.2", t)
    _exchange(conv, S.code(n, "SET") + S.string("/evil") + S.string("x"))
    _exchange(conv, S.code(n, "DELETE_KEY") + S.string("/model"), S.i64(1))
    _exchange(conv, S.code(n, "LIST_KEYS"), S.i64(1) + S.string("/evil"))
    conv.close()
    records += [_q("SET", "new", **_key("/evil"), value_size=1, value_kind="text", value_text="x"),
                _q("DELETE_KEY", "new", **_key("/model"), reply={"number": 1}),
                _q("LIST_KEYS", "new", reply={"key_count": 1, "keys": ["/evil"]})]
    anomalies.append("tcpstore.missing_validate")

    # a VALIDATE with the wrong magic, then a query
    conv = _conv(cap, rng, "10.9.1.3", t + 0.01)
    _exchange(conv, S.validate(0xDEADBEEF) + S.code(n, "ADD") + S.string("init/") + S.i64(1), S.i64(1))
    conv.close()
    records += [_q("VALIDATE", "new", False, validate_magic="deadbeef"),
                _q("ADD", "new", False, key="init/", add_amount=1, reply={"number": 1})]
    anomalies.append("tcpstore.validate_magic_mismatch")

    # a key past the libuv server's 8 KiB limit (the legacy server takes it), cut by the close
    conv = _conv(cap, rng, "10.9.1.4", t + 0.02)
    _exchange(conv, validate + S.code(n, "SET") + struct.pack("<Q", 9000) + b"/" * 64)
    conv.close()
    records += [validate_record, _q("SET", "new", True, truncated=True)]
    anomalies += ["tcpstore.key_over_libuv_limit", "tcpstore.truncated_query"]

    # a value past the libuv server's 8 MiB limit, cut by the close: the query says its size
    conv = _conv(cap, rng, "10.9.1.5", t + 0.03)
    _exchange(conv, validate + S.code(n, "SET") + S.string("/big") + struct.pack("<Q", 16 << 20) + bytes(100))
    conv.close()
    records += [validate_record, _q("SET", "new", True, **_key("/big"), value_size=16 << 20, truncated=True)]
    anomalies += ["tcpstore.value_over_libuv_limit", "tcpstore.truncated_query"]

    # a key length past the parsing cap (1 MiB): not believed, the direction is given up
    conv = _conv(cap, rng, "10.9.1.11", t + 0.035)
    _exchange(conv, validate + S.code(n, "SET") + struct.pack("<Q", 1 << 40) + b"/" * 64)
    conv.close()
    records += [validate_record, _q("SET", "new", True, truncated=True)]
    anomalies.append("tcpstore.key_too_long")

    # an unknown query type
    conv = _conv(cap, rng, "10.9.1.6", t + 0.04)
    _exchange(conv, validate + b"\x40" + bytes(8))
    conv.close()
    records.append(validate_record)
    anomalies.append("tcpstore.unknown_query")

    # an absurd key count
    conv = _conv(cap, rng, "10.9.1.7", t + 0.05)
    _exchange(conv, validate + S.code(n, "MULTI_GET") + struct.pack("<Q", 1 << 40))
    conv.close()
    records += [validate_record, _q("MULTI_GET", "new", True, truncated=True)]
    anomalies.append("tcpstore.too_many_keys")

    # a query cut by the end of the connection
    conv = _conv(cap, rng, "10.9.1.8", t + 0.06)
    _exchange(conv, validate + S.code(n, "SET") + S.string("/k") + struct.pack("<Q", 100) + bytes(10))
    conv.close()
    records += [validate_record, _q("SET", "new", True, **_key("/k"), value_size=100, truncated=True)]
    anomalies.append("tcpstore.truncated_query")

    # reply bytes when no query waits for one
    conv = _conv(cap, rng, "10.9.1.9", t + 0.07)
    _exchange(conv, validate, b"\x00\x01\x02\x03")
    conv.close()
    records.append(validate_record)
    anomalies.append("tcpstore.reply_without_query")

    # a reply whose length lies: the GET keeps no reply, later queries are still read
    conv = _conv(cap, rng, "10.9.1.10", t + 0.08)
    _exchange(conv, validate + S.code(n, "GET") + S.string("/k"), struct.pack("<Q", 1 << 50) + bytes(8))
    _exchange(conv, S.code(n, "SET") + S.string("/k") + S.string("v"))
    conv.close()
    records += [validate_record, _q("GET", "new", True, **_key("/k"), reply_missing=True),
                _q("SET", "new", True, **_key("/k"), value_size=1, value_kind="text", value_text="v")]
    anomalies.append("tcpstore.value_too_large")
    return {"records": records, "anomalies": anomalies, "flows": 10}


CAPTURES: dict[str, Callable[[Capture, random.Random], Truth]] = {
    "tcpstore_old.pcap": old_capture,
    "tcpstore_anomalies.pcap": anomalies_capture,
}


def generate(out_dir: str | Path, seed: int = 13) -> dict[str, Truth]:
    """Write the crafted TCPStore captures and tcpstore_truth.json into `out_dir`; returns the truth."""
    return generate_captures(CAPTURES, out_dir, seed, "tcpstore_truth.json")


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else "pcaps/crafted")
