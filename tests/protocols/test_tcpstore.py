"""PyTorch TCPStore (inspector.protocols.tcpstore): real torch 2.13 captures through the whole
pipeline, crafted old-numbering and malformed traffic, splits, detection, fields and a rule."""

from __future__ import annotations

import base64
import binascii
import json
import os
import pickle
import random
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rawtcp_support import analyze, conversations, first_bytes, leaf_paths, run_session, split

from inspector import fields
from inspector.engine import Engine
from inspector.lab import tcpstorecaps
from inspector.lab.ncclcaps import NcclWire
from inspector.lab.tcpstorecaps import NEW, OLD, StoreWire
from inspector.limits import DEFAULT_LIMITS
from inspector.protocols import tcpstore
from inspector.protocols.picklescan_lite import looks_like_pickle
from inspector.protocols.tcpstore import Session, describe_value, detect, guess_numbering
from inspector.rawtcp import SWAPPED
from inspector.rules import Config, load_config, load_rules

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "pcaps" / "clients"
CRAFTED = REPO / "pcaps" / "crafted"
REAL = ["tcpstore_libuv.pcap", "tcpstore_legacy.pcap", "tcpstore_rendezvous.pcap", "tcpstore_evasions.pcap"]


def q(name: str, **values):
    return {"query": name, "query_code": NEW[name], "numbering": "new", "validated": True, **values}


def key(k: str) -> dict:
    return {"key": k, "key_unprefixed": k[1:]} if k.startswith("/") else {"key": k}


def text(value: str, kind: str = "text") -> dict:
    return {"value_size": len(value), "value_kind": kind, "value_text": value}


def store_records(path: Path) -> list[dict]:
    records, _ = analyze([path])
    return [r for r in records if r["event_type"] == "tcpstore"]


def expected_queries(pid: int, port: int, libuv: bool) -> list[dict]:
    """What make_tcpstore.store_queries sends, query by query, with the replies torch's server gave."""
    hello = [q("VALIDATE", validate_magic="3c85f7ce"), q("PING", pid=pid, reply={"pid": pid})]
    wait = {"reply": {"code": 0, "status": "STOP_WAITING"}}
    out = hello + hello + [
        q("ADD", key="init/", add_amount=1, reply={"number": 1}),
        q("SET", **key("/model/name"), **text("resnet50")),
        q("WAIT", **key("/model/name"), keys=["/model/name"], key_count=1, **wait),
        q("GET", **key("/model/name"), reply=text("resnet50")),
        q("ADD", **key("/counter"), add_amount=5, reply={"number": 5}),
        q("COMPARE_SET", **key("/model/name"), expected_size=8, **text("resnet101"), reply=text("resnet101")),
        q("COMPARE_SET", **key("/fresh"), expected_size=0, **text("created"), reply=text("created")),
        q("WAIT", **key("/model/name"), keys=["/model/name"], key_count=1, **wait),
        q("CHECK", **key("/model/name"), keys=["/model/name", "/absent"], key_count=2,
          reply={"code": 1, "status": "NOT_READY"}),
        q("GETNUMKEYS", reply={"number": 4}),
        q("DELETE_KEY", **key("/counter"), reply={"number": 1}),
        q("MULTI_SET", **key("/shard/0"), keys=["/shard/0", "/shard/1"], key_count=2, value_size=12,
          value_kind="text", value_text="host-a"),
        q("WAIT", **key("/shard/0"), keys=["/shard/0", "/shard/1"], key_count=2, **wait),
        q("MULTI_GET", **key("/shard/0"), keys=["/shard/0", "/shard/1"], key_count=2,
          reply={"value_size": 12, "value_kind": "text", "value_text": "host-a", "value_count": 2}),
        q("APPEND", **key("/shard/0"), **text(":29500")),
    ]
    if libuv:
        out += [
            q("QUEUE_PUSH", **key("/jobs"), **text("job-1")),
            q("QUEUE_LEN", **key("/jobs"), reply={"number": 1}),
            q("WAIT", **key("/jobs"), keys=["/jobs"], key_count=1, **wait),
            q("QUEUE_POP", **key("/jobs"), reply={"number": 1, **text("job-1")}),
            q("QUEUE_POP", **key("/jobs"), reply={"number": 0}),
        ]
    out += [
        q("LIST_KEYS", reply={"key_count": 5, "keys": ["/shard/1", "/shard/0", "/fresh", "/model/name", "init/"]}),
        q("BARRIER", **key("/ready"), world_size=1, reply={"code": 0}),
        q("SET", **key("/default_pg/0"), value_size=128, value_kind="nccl_id",
          nccl_id={"root_addr": f"127.0.0.1:{port}", "magic": "5ee1c0dedeadbeef", "layout": "2.23+"}),
        q("SET", **key("/torch.rendezvous.evil"), value_size=40, value_kind="pickle",
          pickle_globals=["posix.system"], pickle_dangerous=["posix.system"], pickle_scan_complete=True),
        q("WAIT", **key("/never-set"), keys=["/never-set"], key_count=1, canceled=True),
        q("CANCEL_WAIT", reply={"code": 1, "status": "WAIT_CANCELED"}),
    ]
    return out


# --- real torch traffic through the pipeline -----------------------------------------------------


@pytest.mark.parametrize("name,libuv", [("tcpstore_libuv.pcap", True), ("tcpstore_legacy.pcap", False)])
def test_real_queries_every_type(name, libuv):
    """Both server backends of torch 2.13: each query, its reply, in order; the NCCL-id value and
    the os.system pickle are recognized."""
    records = store_records(CLIENTS / name)
    pid = records[1]["tcpstore"]["pid"]
    port = records[0]["dest_port"]
    assert {r["dest_port"] for r in records} == {port} and {r["app_proto"] for r in records} == {"tcpstore"}
    assert [r["tcpstore"] for r in records] == expected_queries(pid, port, libuv)
    assert len({r["src_port"] for r in records}) == 2  # the master's own client and the worker's


def test_real_rendezvous_base64_pickles():
    """torch.distributed.elastic's c10d rendezvous: the state is base64(pickle), scanned, never loaded."""
    records = [r["tcpstore"] for r in store_records(CLIENTS / "tcpstore_rendezvous.pcap")]
    rdzv_globals = ["torch.distributed.elastic.rendezvous.dynamic_rendezvous._RendezvousState",
                    "torch.distributed.elastic.rendezvous.dynamic_rendezvous._NodeDesc",
                    "datetime.datetime", "datetime.timezone", "datetime.timedelta"]
    assert [(r["query"], r.get("key")) for r in records[4:]] == [
        ("COMPARE_SET", "/torch.rendezvous.job42"), ("WAIT", "/torch.rendezvous.job42"),
        ("GET", "/torch.rendezvous.job42"), ("COMPARE_SET", "/torch.rendezvous.job42"),
        ("SET", "/torch.rendezvous.job42.0/MASTER_ADDR"), ("SET", "/torch.rendezvous.job42.0/MASTER_PORT"),
        ("WAIT", "/torch.rendezvous.job42.0/MASTER_ADDR"), ("GET", "/torch.rendezvous.job42.0/MASTER_ADDR"),
        ("WAIT", "/torch.rendezvous.job42.0/MASTER_PORT"), ("GET", "/torch.rendezvous.job42.0/MASTER_PORT"),
        ("COMPARE_SET", "/torch.rendezvous.job42"),
    ]
    first = records[4]
    assert first["key_unprefixed"] == "torch.rendezvous.job42"
    assert first["value_text"] == "Y2FuaW1hZGFt" == base64.b64encode(b"canimadam").decode()
    states = [r for r in records if r.get("value_kind") == "base64_pickle"]
    assert len(states) == 2
    for state in states:
        assert state["pickle_globals"] == rdzv_globals and state["pickle_dangerous"] == []
        assert state["reply"]["value_kind"] == "base64_pickle" and state["reply"]["pickle_globals"] == rdzv_globals
    assert records[8]["value_text"] == "localhost" and records[9]["value_kind"] == "int"


def _torch_python() -> str | None:
    for candidate in (os.environ.get("INSPECTOR_TORCH_PYTHON"), "/tmp/torchvenv/bin/python", sys.executable):
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", "import torch.distributed"], capture_output=True)
            if probe.returncode == 0:
                return candidate
    return None


def _shape(record: dict) -> tuple:
    """A record without what changes from run to run (pids, ports in values, pickle sizes)."""
    store = record["tcpstore"]
    return (store["query"], store.get("key"), store.get("value_kind"), (store.get("reply") or {}).get("status"),
            tuple(store.get("pickle_globals") or ()))


def test_script_reproduces_the_captures(tmp_path):
    """Re-running make_tcpstore.py gives the same transactions as the committed captures."""
    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        pytest.skip("needs root and tcpdump to capture loopback traffic")
    python = _torch_python()
    if python is None:
        pytest.skip("no Python with torch (set INSPECTOR_TORCH_PYTHON; torch 2.13 CPU on Python 3.11 was used)")
    run = subprocess.run([python, str(CLIENTS / "make_tcpstore.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in REAL:
        fresh = [_shape(r) for r in store_records(tmp_path / name)]
        committed = [_shape(r) for r in store_records(CLIENTS / name)]
        assert fresh == committed, (name, [f for f in fresh if f not in committed],
                                    [c for c in committed if c not in fresh])


# --- crafted traffic (brief-derived) -------------------------------------------------------------


def _canonical(items: list[dict]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)


@pytest.mark.parametrize("name", ["tcpstore_old.pcap", "tcpstore_anomalies.pcap"])
def test_crafted_captures_match_truth(name):
    truth = json.loads((CRAFTED / "tcpstore_truth.json").read_text())[name]
    records, analyzer = analyze([CRAFTED / name])
    stores = [r for r in records if r["event_type"] == "tcpstore"]
    assert _canonical([r["tcpstore"] for r in stores]) == _canonical(truth["records"])
    anomalies = [f"{r['anomaly']['layer']}.{r['anomaly']['event']}" for r in records if r["event_type"] == "anomaly"]
    assert sorted(anomalies) == sorted(truth["anomalies"])
    assert analyzer.stats.flows == truth["flows"]
    assert analyzer.stats.packets == truth["packets"]


def test_crafted_captures_regenerate_identically(tmp_path):
    tcpstorecaps.generate(tmp_path)
    for name in ("tcpstore_old.pcap", "tcpstore_anomalies.pcap", "tcpstore_truth.json"):
        assert (tmp_path / name).read_bytes() == (CRAFTED / name).read_bytes(), name


def test_old_numbering_keeps_query_order_with_a_watch_socket():
    records = store_records(CRAFTED / "tcpstore_old.pcap")
    watch = [r["tcpstore"] for r in records if r["src_port"] != records[0]["src_port"]]
    assert [w.get("query") or w["watch_event"] for w in watch] == ["WATCH_KEY", "KEY_UPDATED", "KEY_DELETED"]
    main = [r["tcpstore"]["query"] for r in records if r["src_port"] == records[0]["src_port"]]
    assert main == ["ADD", "SET", "WAIT", "GET", "COMPARE_SET", "CHECK", "GETNUMKEYS", "DELETE_KEY", "MULTI_SET",
                    "MULTI_GET", "APPEND", "SET", "WAIT", "CANCEL_WAIT"]
    assert all(r["tcpstore"]["numbering"] == "old" and r["tcpstore"]["validated"] is False for r in records)


# --- the session fed in pieces ---------------------------------------------------------------------


def _all_conversations():
    convs = []
    for path in [CLIENTS / n for n in REAL] + [CRAFTED / "tcpstore_old.pcap", CRAFTED / "tcpstore_anomalies.pcap"]:
        convs += [(f"{path.name}#{i}", c) for i, c in enumerate(conversations(path))]
    return convs


CONVERSATIONS = _all_conversations()


@pytest.mark.parametrize("name,chunks", CONVERSATIONS, ids=[n for n, _ in CONVERSATIONS])
def test_splits_give_the_same_events(name, chunks):
    whole = run_session(Session, split(chunks, "whole"))
    assert whole
    assert run_session(Session, split(chunks, "bytes")) == whole
    for seed in (1, 2, 3):
        assert run_session(Session, split(chunks, "random", seed)) == whole


def test_large_value_is_streamed_not_held():
    """A 6 MiB SET is counted and described from its first 64 KiB; the reader holds little."""
    value = b"\x80\x04" + bytes(6 * 1024 * 1024)
    stream = StoreWire.validate() + bytes([NEW["SET"]]) + StoreWire.string("/big") + StoreWire.string(value)
    session = Session(DEFAULT_LIMITS)
    events = []
    for at in range(0, len(stream), 65536):
        events += session.receive_data(0, stream[at:at + 65536], 1.0)
        reader = session._readers[0]
        assert reader is None or reader.buffered < 65536
    records = [e.data for e in events]
    assert records[1]["value_size"] == len(value) and records[1]["value_kind"] == "pickle"


def test_pending_replies_are_reported_missing_at_eof():
    stream = StoreWire.validate() + bytes([NEW["WAIT"]]) + StoreWire.keys(["/x"]) + bytes([NEW["SET"]]) \
        + StoreWire.string("/y") + StoreWire.string("1")
    events = run_session(Session, [(0, stream, 1.0)])
    assert [e[2]["query"] for e in events] == ["VALIDATE", "WAIT", "SET"]
    assert events[1][2]["reply_missing"] is True and "reply" not in events[1][2]


def test_gap_gives_the_direction_up():
    session = Session(DEFAULT_LIMITS)
    events = session.receive_data(0, StoreWire.validate() + bytes([NEW["GET"]]) + StoreWire.string("/k"), 1.0)
    events += session.receive_gap(1, 100, 2.0)
    events += session.receive_data(1, StoreWire.string("v"), 3.0)
    kinds = [(type(e).__name__, getattr(e, "event", None)) for e in events]
    assert kinds == [("Transaction", None), ("SessionAnomaly", "stream_gap"), ("Transaction", None)]
    assert events[2].data["reply_missing"] is True


def test_a_server_gap_leaves_the_query_being_read_whole():
    """The client's query in progress is not the server direction's: a gap there does not cut it."""
    query = bytes([NEW["SET"]]) + StoreWire.string("/k") + StoreWire.string("hello world")
    session = Session(DEFAULT_LIMITS)
    events = session.receive_data(0, StoreWire.validate() + query[:14], 1.0)
    events += session.receive_gap(1, 10, 2.0)
    events += session.receive_data(0, query[14:], 3.0)
    events += session.receive_eof(0, 4.0) + session.receive_eof(1, 4.0)
    records = [e.data for e in events if hasattr(e, "data")]
    assert [r["query"] for r in records] == ["VALIDATE", "SET"]
    assert "truncated" not in records[1] and records[1]["value_text"] == "hello world"


@pytest.mark.parametrize("cut,fields", [
    (15, {}),  # inside the expected value's length: neither size known yet
    (21, {"expected_size": 4}),  # inside the expected value
    (35, {"expected_size": 4, "value_size": 9}),  # inside the new value: both sizes said
])
def test_compare_set_cut_short_says_the_sizes_read(cut, fields):
    query = bytes([NEW["COMPARE_SET"]]) + StoreWire.string("/k") + StoreWire.string("old!") \
        + StoreWire.string("new value")
    events = run_session(Session, [(0, StoreWire.validate() + query[:cut], 1.0)])
    assert events[-1][2] == q("COMPARE_SET", **key("/k"), **fields, truncated=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=64)), max_size=20))
def test_random_bytes_never_raise(pieces):
    session = Session(DEFAULT_LIMITS)
    for direction, data in pieces:
        session.receive_data(direction, data, 1.0)
    session.receive_gap(0, 5, 2.0)
    session.receive_eof(0, 3.0)
    session.receive_eof(1, 3.0)


_REAL_STREAM = next(c for _, c in CONVERSATIONS if len(c) > 10)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_traffic_never_raises(data):
    chunks = [(d, bytearray(b)) for d, b in _REAL_STREAM]
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(chunks) - 1))
        chunk = chunks[index][1]
        at = data.draw(st.integers(0, len(chunk) - 1))
        chunk[at] = data.draw(st.integers(0, 255))
    run_session(Session, [(d, bytes(b), 1.0) for d, b in chunks])


# --- numbering and detection ---------------------------------------------------------------------


def test_numbering_guess():
    assert guess_numbering(StoreWire.validate()) == ("new", True)
    assert guess_numbering(b"\x00\xce") is None
    old_add = bytes([OLD["ADD"]]) + StoreWire.string("init/") + StoreWire.i64(1)
    assert guess_numbering(old_add) == ("old", False)
    new_list = bytes([NEW["SET"]]) + StoreWire.string("/a") + StoreWire.string("b") + bytes([NEW["LIST_KEYS"]])
    assert guess_numbering(new_list) is None  # old COMPARE_SET still incomplete
    assert guess_numbering(new_list, final=True) == ("new", False)


@pytest.mark.parametrize("client,server,answer", [
    (b"\x00\xce\xf7\x85\x3c\x0d\x01\x02\x00\x00", b"", True),
    (b"\x00\xce\xf7", b"", None),
    (b"", b"\x00\xce\xf7\x85\x3c", SWAPPED),
    (bytes([3]) + StoreWire.string("init/") + StoreWire.i64(1), b"", True),
    (bytes([3]) + struct.pack("<Q", 5) + b"in", b"", None),
    (bytes([6]), b"", None),  # GETNUMKEYS alone proves nothing
    (bytes([0]) + StoreWire.string("/weights") + struct.pack("<Q", 1 << 20) + bytes(100), b"", True),  # big SET
    (b"GET / HTTP/1.1\r\n\r\n", b"", False),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), b"", False),
    (bytes([2]) + struct.pack("<Q", 1 << 40), b"", False),
    (bytes([1]) + StoreWire.string("has\x01control"), b"", False),
])
def test_detect(client, server, answer):
    assert detect(client, server) == answer


def test_detectors_claim_nothing_in_the_corpus(corpus_dir):
    """HTTP/1, HTTP/2, TLS, fuzzed and odd captures: never taken for TCPStore."""
    flows = 0
    for path in sorted(corpus_dir.rglob("*")):
        if not path.is_file() or not path.name.lower().endswith((".pcap", ".pcapng", ".cap")):
            continue
        try:
            starts = first_bytes(path)
        except Exception:  # damaged captures are another test's business
            continue
        for client, server in starts:
            flows += 1
            assert detect(client, server) not in (True, SWAPPED), (path, client[:32], server[:32])
    assert flows > 300
    records, _ = analyze([corpus_dir])
    assert not [r for r in records if r.get("app_proto") == "tcpstore" or r["event_type"] == "tcpstore"]


# --- values --------------------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (eval, ("1+1",))


def test_describe_values():
    assert describe_value(b"", 0) == {"value_size": 0, "value_kind": "empty"}
    assert describe_value(b"-42", 3) == {"value_size": 3, "value_kind": "int", "value_text": "-42"}
    assert describe_value("héllo".encode(), 6) == {"value_size": 6, "value_kind": "text", "value_text": "héllo"}
    assert describe_value(b"\x00\x01", 2) == {"value_size": 2, "value_kind": "binary"}
    evil = pickle.dumps(_Evil(), protocol=2)  # protocol 2 names Python 2's module
    assert describe_value(evil, len(evil))["pickle_dangerous"] == ["__builtin__.eval"]
    encoded = base64.b64encode(pickle.dumps(_Evil(), protocol=5))
    described = describe_value(encoded, len(encoded))
    assert (described["value_kind"], described["pickle_globals"]) == ("base64_pickle", ["builtins.eval"])
    # protocol 0/1 pickles have no marker: recognized by disassembling them (an evasion otherwise)
    for protocol in (0, 1):
        old = pickle.dumps(_Evil(), protocol=protocol)
        assert describe_value(old, len(old))["pickle_dangerous"] == ["__builtin__.eval"]
        encoded = base64.b64encode(old)
        assert describe_value(encoded, len(encoded))["value_kind"] == "base64_pickle"
    assert describe_value(b"hello.", 6)["value_kind"] == "text"  # opcodes, but no valid pickle
    # a prefix cut mid-way (value bigger than what is kept) is still recognized
    big = base64.b64encode(pickle.dumps([_Evil(), *range(50000)], protocol=4))
    assert describe_value(big[:1001], len(big))["pickle_globals"] == ["builtins.eval"]


def _base64_pickle_reference(prefix: bytes, complete: bool) -> bytes | None:
    """`_base64_pickle` before its head check: strip and decode every kept byte."""
    if len(prefix) < 8:
        return None
    usable = re.sub(rb"[^A-Za-z0-9+/=]+", b"", prefix)
    if len(usable) < 8:
        return None
    if not complete:
        usable = usable[:len(usable) // 4 * 4]
    try:
        decoded = base64.b64decode(usable)
    except (binascii.Error, ValueError):
        return None
    return decoded if looks_like_pickle(decoded, complete) else None


_PICKLES = [pickle.dumps(obj, protocol=protocol) for protocol in range(6)
            for obj in (_Evil(), [1, "a"], {"k": b"v"}, 7, None, "x" * 300)]


@st.composite
def _maybe_base64_values(draw) -> bytes:
    """Base64 of pickles or of pickle-like starts, with junk and "=" slipped in, cut or not; or
    bytes from an alphabet of base64 characters, padding and junk."""
    if draw(st.booleans()):
        raw = draw(st.sampled_from([*_PICKLES, b"\x95" + bytes(12), b"\x80\x06rest", b"(lp0\nI1\n."]))
        raw = raw[:draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=8))
        encoded = bytearray(base64.b64encode(raw))
        for _ in range(draw(st.integers(0, 6))):
            at = draw(st.integers(0, len(encoded)))
            encoded[at:at] = draw(st.sampled_from([b"=", b"==", b"\n", b" ", b"\x00", b"-_", b"\xff"]))
        return bytes(encoded[:draw(st.integers(0, len(encoded)))])
    alphabet = st.sampled_from(b"ABgo05+/===\n \x00\x80\x95(c.")
    return bytes(draw(st.lists(alphabet, max_size=120)))


@settings(max_examples=500, deadline=None)
@given(_maybe_base64_values(), st.booleans())
def test_base64_pickle_head_check_changes_nothing(value, complete):
    assert tcpstore._base64_pickle(value, complete) == _base64_pickle_reference(value, complete)


def test_base64_pickle_head_check_on_long_values():
    rng = random.Random(7)
    values = [os.urandom(65536), b"plain text, " * 5000, bytes(65536), b"\x00" * 4000 + b"gASV" * 100]
    values += [base64.b64encode(p) * 3 + bytes([rng.randrange(256) for _ in range(100)]) for p in _PICKLES]
    values += [b"=".join(base64.b64encode(p)[i:i + 3] for i in range(0, 400, 3)) for p in _PICKLES]
    for value in values:
        for complete in (True, False):
            assert tcpstore._base64_pickle(value, complete) == _base64_pickle_reference(value, complete)


@pytest.mark.parametrize("value,nccl_id", [
    (NcclWire.unique_id(0x0123456789ABCDEF, "10.0.0.1:29501"),
     {"root_addr": "10.0.0.1:29501", "magic": "efcdab8967452301", "layout": "2.23+"}),
    (NcclWire.unique_id(0x0123456789ABCDEF, "[fd00::1]:29501", nranks=64),
     {"root_addr": "[fd00::1]:29501", "magic": "efcdab8967452301", "layout": "2.29+", "nranks": 64}),
    (NcclWire.unique_id(1, "10.0.0.1:29501")[:100] + b"\x01" * 28,
     {"root_addr": "10.0.0.1:29501", "magic": "0100000000000000", "layout": "2.16-2.22"}),
    (NcclWire.sockaddr("10.0.0.9:1234").ljust(128, b"\0"), {"root_addr": "10.0.0.9:1234", "layout": "<=2.15"}),
])
def test_nccl_id_layouts(value, nccl_id):
    assert describe_value(value, 128) == {"value_size": 128, "value_kind": "nccl_id", "nccl_id": nccl_id}


def test_binary_128_bytes_is_not_an_id():
    assert describe_value(bytes(range(128)), 128)["value_kind"] == "binary"


# --- fields and rules ----------------------------------------------------------------------------


def test_fields_are_declared():
    records, _ = analyze([CLIENTS / n for n in REAL] + [CRAFTED / "tcpstore_old.pcap",
                                                       CRAFTED / "tcpstore_anomalies.pcap"])
    produced = set()
    for record in records:
        if record["event_type"] == "tcpstore":
            produced |= leaf_paths(record["tcpstore"], "tcpstore")
    declared = {name: spec for name, spec in fields.catalogue().items() if name.startswith("tcpstore.")}
    # ids with nranks (2.29+) and 2.16+ ids read back: declared, not in these captures
    unseen = {"tcpstore.nccl_id.nranks", "tcpstore.reply.nccl_id.magic", "tcpstore.reply.nccl_id.nranks"}
    assert produced <= set(declared)
    assert set(declared) - produced == unseen
    assert all(spec.events == ("tcpstore",) and spec.description for spec in declared.values())
    assert declared["tcpstore.keys"].type == "list[string]" and declared["tcpstore.validated"].type == "boolean"


RULES = {
    "delete.yml": """\
        title: TCPStore key deleted
        id: 6c1f8f0e-3f55-4a39-9d7e-0c8f4a1b2c01
        sid: 9900001
        rev: 1
        status: test
        level: medium
        event: tcpstore
        detection:
          selection:
            tcpstore.query: DELETE_KEY
          condition: selection
        """,
    "ncclid.yml": """\
        title: ncclUniqueId written to the store
        id: 6c1f8f0e-3f55-4a39-9d7e-0c8f4a1b2c02
        sid: 9900002
        rev: 1
        status: test
        level: high
        event: tcpstore
        detection:
          selection:
            tcpstore.nccl_id.root_addr|exists: true
          condition: selection
        """,
    "pickle.yml": """\
        title: Dangerous pickle written to a rendezvous key
        id: 6c1f8f0e-3f55-4a39-9d7e-0c8f4a1b2c03
        sid: 9900003
        rev: 1
        status: test
        level: critical
        event: tcpstore
        detection:
          selection:
            tcpstore.key_unprefixed|startswith: torch.rendezvous.
            tcpstore.pickle_dangerous|exists: true
          condition: selection
        """,
}


def test_rules_fire_end_to_end(tmp_path):
    import textwrap

    for name, text_ in RULES.items():
        (tmp_path / name).write_text(textwrap.dedent(text_))
    ruleset = load_rules(tmp_path, Config(variables={}))
    records, _ = analyze([CLIENTS / "tcpstore_libuv.pcap", CLIENTS / "tcpstore_rendezvous.pcap"],
                         engine=Engine(ruleset))
    alerts = [(r["alert"]["signature_id"], r["tcpstore"].get("key")) for r in records if r["event_type"] == "alert"]
    assert alerts == [(9900001, "/counter"), (9900002, "/default_pg/0"), (9900003, "/torch.rendezvous.evil")]
    assert tcpstore.APP_PROTO == "tcpstore"


# --- pickles written the ways pickle.loads still takes them -----------------------------------------


def test_every_evasion_of_the_pickle_scan_is_seen():
    """tcpstore_evasions.pcap (real torch 2.13 traffic, make_tcpstore.py): os.system pickles in every
    form pickle.loads (or torch's non-validating b64decode) accepts. Each write names the call,
    except the one padded past the 64 KiB kept (said: the scan did not reach its STOP) and the two
    APPENDed halves (the GET reading them back whole names it)."""
    config = load_config(None)
    records, _ = analyze([CLIENTS / "tcpstore_evasions.pcap"],
                         Engine(load_rules([REPO / "signatures" / "tcpstore"], config), config))
    writes = {r["tcpstore"]["key"]: r["tcpstore"] for r in records
              if r["event_type"] == "tcpstore" and r["tcpstore"]["query"] in ("SET", "MULTI_SET", "COMPARE_SET")}
    dangerous = {k.rsplit(".", 1)[-1]: w["pickle_dangerous"] for k, w in writes.items() if "pickle_dangerous" in w}
    assert dangerous == {
        "b64_newlines": ["posix.system"], "proto0_trailing": ["os.system"], "proto1_marker": ["os.system"],
        "proto0_marker": ["os.system"], "frame_first": ["os.system"], "split_strings": ["os.system"],
        "many_globals": ["os.system"], "padded": [], "pair_benign": ["posix.system"], "job42": ["posix.system"]}
    assert len(writes["/torch.rendezvous.x.many_globals"]["pickle_globals"]) == 32  # listed: capped
    padded = writes["/torch.rendezvous.x.padded"]
    assert (padded["value_kind"], padded["pickle_scan_complete"], padded["value_size"]) == ("pickle", False, 70050)
    (read_back,) = [r["tcpstore"] for r in records if r["event_type"] == "tcpstore" and r["tcpstore"]["query"] == "GET"]
    assert read_back["reply"]["pickle_dangerous"] == ["posix.system"]
    alerts = sorted((r["alert"]["signature_id"], r["tcpstore"]["key"].rsplit(".", 1)[-1])
                    for r in records if r["event_type"] == "alert" and r["alert"]["signature_id"] != 3600001)
    assert alerts == sorted([(3600002, name) for name in dangerous if name != "padded"]
                            + [(3600005, "padded"), (3600005, "appended"), (3600006, "appended")])


def test_pickle_scan_follows_the_stack_not_a_window():
    from inspector.protocols.picklescan_lite import looks_like_pickle, scan_pickle

    # memo round trips, DUP, a MARK popped, a tuple built between the two strings of a STACK_GLOBAL
    body = (b"\x8c\x02os\x94(N)0\x8c\x06system\x94" b"h\x00h\x01\x93" b"\x8c\x02id\x85R.")
    findings = scan_pickle(b"\x80\x04" + body)
    assert (findings.globals, findings.dangerous, findings.complete) == (["os.system"], ["os.system"], True)
    stacked = b"\x80\x04\x8c\x02os\x94(\x8c\x01x0\x8c\x06system\x94\x93\x8c\x02id\x85R."
    assert scan_pickle(stacked).globals == []  # "system" under a MARK is not the module's partner
    harmless = [f"builtins\n{n}\n".encode() for n in ("int", "str", "len", "abs") * 10]
    many = b"\x80\x02" + b"".join(b"c" + h + b"0" for h in dict.fromkeys(harmless)) + b"cposix\nsystem\n0N."
    found = scan_pickle(many)
    assert (found.dangerous, found.complete) == (["posix.system"], True)
    assert looks_like_pickle(b"cos\nsystem\n(S'id'\ntR.\n\x00junk", complete=True)  # bytes after STOP
    assert not looks_like_pickle(b"hello.", complete=True) and not looks_like_pickle(b"Sunday.", complete=True)


def test_a_midstream_capture_does_not_invent_a_missing_validate(tmp_path):
    """A capture started after the clients connected (and validated): the first queries seen are
    not the connection's first, so nothing says VALIDATE was skipped."""
    from datetime import datetime

    from inspector.capture.reader import open_capture
    from inspector.lab.craft import write_pcap

    with open_capture(CLIENTS / "tcpstore_libuv.pcap") as reader:
        frames = [(frame[0], frame[2]) for frame in reader]
    records = store_records(CLIENTS / "tcpstore_libuv.pcap")
    first_set = next(r["timestamp"] for r in records if r["tcpstore"]["query"] == "SET")
    cut = datetime.strptime(first_set, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    later = [f for f in frames if f[0] >= cut - 1e-6]
    assert 0 < len(later) < len(frames)
    path = tmp_path / "midstream.pcap"
    write_pcap(path, later)
    seen, _ = analyze([path])
    stores = [r["tcpstore"] for r in seen if r["event_type"] == "tcpstore"]
    assert stores and stores[0]["query"] == "SET" and not any("validated" in s for s in stores)
    assert not [r for r in seen if r["event_type"] == "anomaly" and r["anomaly"]["event"] == "missing_validate"]
    full = [r["tcpstore"] for r in records]
    assert [s["query"] for s in stores] == [s["query"] for s in full[[s["query"] for s in full].index("SET"):]]


def test_values_past_the_libuv_limit_are_skipped_not_blinding():
    """The legacy server takes a 9 MiB value (torch 2.13, use_libuv=False, checked by hand); the
    libuv server refuses it. The query is reported, counted, skipped: what follows is parsed."""
    evil = base64.b64encode(pickle.dumps(_Evil(), protocol=4))
    client = (StoreWire.validate() + StoreWire.code(NEW, "SET") + StoreWire.string("/big")
              + StoreWire.string(bytes(9 << 20)) + StoreWire.code(NEW, "SET")
              + StoreWire.string("/torch.rendezvous.job42") + StoreWire.string(evil))
    events = run_session(Session, [(0, client[i:i + 65536], 1.0) for i in range(0, len(client), 65536)])
    assert ("anomaly", "tcpstore", "value_over_libuv_limit", 0) in events
    records = [e[2] for e in events if e[0] == "tx"]
    assert [(r["query"], r.get("value_size")) for r in records] == [("VALIDATE", None), ("SET", 9 << 20),
                                                                      ("SET", len(evil))]
    assert records[2]["pickle_dangerous"] == ["builtins.eval"]


def test_over_libuv_limit_reported_once_per_connection():
    """A MULTI_SET of many oversized keys and values: one anomaly of each kind, the first's message."""
    big_key, big_value = "k" * (9 << 10), bytes((8 << 20) + 1)
    pairs = [(f"/{i}{big_key}", big_value if i in (1, 2) else b"v") for i in range(40)]
    client = (StoreWire.validate() + StoreWire.code(NEW, "MULTI_SET") + struct.pack("<Q", len(pairs))
              + b"".join(StoreWire.string(k) + StoreWire.string(v) for k, v in pairs)
              + StoreWire.code(NEW, "SET") + StoreWire.string("/" + big_key * 2) + StoreWire.string("1"))
    session = Session(DEFAULT_LIMITS)
    out = []
    for i in range(0, len(client), 1 << 20):
        out += session.receive_data(0, client[i:i + (1 << 20)], 1.0)
    anomalies = [(a.event, a.message) for a in out if not hasattr(a, "event_type")]
    assert anomalies == [
        ("key_over_libuv_limit", f"key of {len(pairs[0][0])} bytes: the libuv server refuses more than 8192, "
         "the legacy server takes it (skipped, not kept)"),
        ("value_over_libuv_limit", f"value of {len(big_value)} bytes: the libuv server refuses more than 8388608, "
         "the legacy server takes it (skipped, not kept)")]
    queries = [e.data for e in out if hasattr(e, "event_type")]
    assert [(q["query"], q.get("key_count")) for q in queries] == [("VALIDATE", None), ("MULTI_SET", 40), ("SET", None)]
