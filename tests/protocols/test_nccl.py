"""NCCL sockets (inspector.protocols.nccl): brief-derived captures of every version layout and
socket type through the whole pipeline, splits, malformed input, detection, fields and a rule.

No GPU and no NCCL here: the bytes come from inspector.lab.ncclcaps, an encoder written from the
wire brief (struct), carried in crafted TCP conversations.
"""

from __future__ import annotations

import json
import struct
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rawtcp_support import analyze, conversations, first_bytes, leaf_paths, run_session, split

from inspector import fields
from inspector.engine import Engine
from inspector.lab import ncclcaps
from inspector.lab.ncclcaps import COMM_ID_MAGIC, SOCKET_MAGIC, NcclWire
from inspector.limits import DEFAULT_LIMITS
from inspector.protocols.nccl import (
    Session,
    Start,
    classify_start,
    decode_rank_info,
    decode_sockaddr,
    decode_unique_id,
    detect,
    tag_flags,
    version_name,
)
from inspector.rawtcp import SWAPPED
from inspector.rules import Config, load_rules

REPO = Path(__file__).resolve().parents[2]
CRAFTED = REPO / "pcaps" / "crafted"
CAPTURES = ["nccl_bootstrap.pcap", "nccl_sockets.pcap", "nccl_malformed.pcap"]
W = NcclWire


def _canonical(items: list[dict]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)


# --- the captures through the pipeline ------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_captures_match_truth(name):
    truth = json.loads((CRAFTED / "nccl_truth.json").read_text())[name]
    records, analyzer = analyze([CRAFTED / name])
    nccl = [r for r in records if r["event_type"] == "nccl"]
    assert _canonical([r["nccl"] for r in nccl]) == _canonical(truth["records"])
    assert all(r["app_proto"] == "nccl" for r in nccl)
    anomalies = [f"{r['anomaly']['layer']}.{r['anomaly']['event']}" for r in records if r["event_type"] == "anomaly"]
    assert sorted(anomalies) == sorted(truth["anomalies"])
    assert analyzer.stats.flows == truth["flows"] and analyzer.stats.packets == truth["packets"]


def test_captures_regenerate_identically(tmp_path):
    ncclcaps.generate(tmp_path)
    for name in [*CAPTURES, "nccl_truth.json"]:
        assert (tmp_path / name).read_bytes() == (CRAFTED / name).read_bytes(), name


def test_every_layout_and_socket_type_is_covered():
    truth = json.loads((CRAFTED / "nccl_truth.json").read_text())
    records = [r for capture in truth.values() for r in capture["records"]]
    assert {r["version_layout"] for r in records if r["message"] == "rank_info"} == {
        "<=2.15", "2.16-2.22", "2.23-2.28", "2.29+"}
    assert {r["version_layout"] for r in records if r["message"] == "ring"} == {
        "<=2.15", "2.23", "2.24+", "head"}
    assert {r["socket_type"] for r in records} == {"bootstrap", "proxy", "net_socket", "net_ib", "ras", "unknown"}
    assert {r["magic_kind"] for r in records if r["handshake"]} == {"socket_magic", "comm_id_magic", "communicator"}
    assert {r["detection"] for r in records} == {"socket_magic", "handshake_message", "message_shape"}


def test_rank_info_record_in_full():
    records, _ = analyze([CRAFTED / "nccl_bootstrap.pcap"])
    rank_info = next(r for r in records if r["event_type"] == "nccl" and r["nccl"].get("message_size") == 176)
    assert rank_info["src_ip"] == "10.3.0.5" and rank_info["dest_port"] == 40001
    assert rank_info["nccl"] == {
        "handshake": True, "detection": "handshake_message", "socket_type": "bootstrap", "socket_type_code": 1,
        "magic": "0011223344556677", "magic_kind": "communicator", "message": "rank_info", "message_size": 176,
        "rank": 5, "nranks": 16, "iroot": 1, "nroots": 2, "offset": 8, "listen_addrs": ["10.3.0.5:41001"],
        "ring_connect_opaque": True, "version_layout": "2.29+"}


# --- the session fed in pieces ---------------------------------------------------------------------


CONVERSATIONS = [(f"{name}#{i}", chunks) for name in CAPTURES
                 for i, chunks in enumerate(conversations(CRAFTED / name))]


@pytest.mark.parametrize("name,chunks", CONVERSATIONS, ids=[n for n, _ in CONVERSATIONS])
def test_splits_give_the_same_events(name, chunks):
    whole = run_session(Session, split(chunks, "whole"))
    assert whole
    assert run_session(Session, split(chunks, "bytes")) == whole
    for seed in (1, 2, 3):
        assert run_session(Session, split(chunks, "random", seed)) == whole


def test_net_socket_payload_is_skipped_not_held():
    session = Session(DEFAULT_LIMITS)
    events = session.receive_data(0, W.handshake(SOCKET_MAGIC, 3) + b"\x00", 1.0)
    for _ in range(64):
        events += session.receive_data(0, bytes(65536), 2.0)
    events += session.receive_eof(0, 3.0) + session.receive_eof(1, 3.0)
    assert [e.data["message"] for e in events] == ["handshake"]
    assert session._readers[0].buffered == 0


def test_large_ring_slices_are_counted():
    magic = 0x42
    stream = W.handshake(magic, 1) + W.frame(W.sockaddr("10.0.0.1:1000") + bytes(76)) + W.frame(bytes(300_000))
    events = run_session(Session, [(0, stream, 1.0)])
    assert [e[2]["message"] for e in events] == ["ring", "summary"]
    assert events[1][2]["message_sizes"] == [104, 300_000]


def test_gap_stops_the_direction():
    session = Session(DEFAULT_LIMITS)
    events = session.receive_data(0, W.handshake(7, 1) + W.frame(W.sockaddr("10.0.0.1:1")), 1.0)
    events += session.receive_gap(0, 500, 2.0)
    events += session.receive_data(0, W.frame(b"x" * 28), 3.0)
    events += session.receive_eof(0, 4.0) + session.receive_eof(1, 4.0)
    assert [getattr(e, "event", None) or e.data["message"] for e in events] == ["stream_gap", "next_hop"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=80)), max_size=16))
def test_random_bytes_never_raise(pieces):
    session = Session(DEFAULT_LIMITS)
    for direction, data in pieces:
        session.receive_data(direction, data, 1.0)
    session.receive_gap(1, 3, 2.0)
    session.receive_eof(0, 3.0)
    session.receive_eof(1, 3.0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([c for _, c in CONVERSATIONS]), st.data())
def test_mutated_traffic_never_raises(chunks, data):
    mutable = [(d, bytearray(b)) for d, b in chunks]
    for _ in range(data.draw(st.integers(1, 6))):
        _, chunk = mutable[data.draw(st.integers(0, len(mutable) - 1))]
        chunk[data.draw(st.integers(0, len(chunk) - 1))] = data.draw(st.integers(0, 255))
    run_session(Session, [(d, bytes(b), 1.0) for d, b in mutable])
    assert detect(bytes(mutable[0][1]), b"") in (True, False, None, SWAPPED)


# --- decoding helpers ------------------------------------------------------------------------------


def test_sockaddr():
    assert decode_sockaddr(W.sockaddr("192.168.1.7:29500")) == "192.168.1.7:29500"
    assert decode_sockaddr(W.sockaddr("[fe80::1]:80")) == "[fe80::1]:80"
    assert decode_sockaddr(b"\x01\x00" + bytes(26)) is None  # AF_UNIX is not a peer address
    assert decode_sockaddr(W.sockaddr("10.0.0.1:0"), strict=True) is None
    dirty = bytearray(W.sockaddr("10.0.0.1:5"))
    dirty[9] = 1  # sin_zero not zero
    assert decode_sockaddr(bytes(dirty)) == "10.0.0.1:5" and decode_sockaddr(bytes(dirty), strict=True) is None


def test_rank_info_rejects_inconsistent_fields():
    good = W.rank_info(172, 3, 4, "10.0.0.1:1", "10.0.0.1:2", iroot=0, nroots=1)
    assert decode_rank_info(good, True)["rank"] == 3
    assert decode_rank_info(W.rank_info(172, 4, 4, "10.0.0.1:1", "10.0.0.1:2"), True) is None  # rank == nranks
    assert decode_rank_info(W.rank_info(172, 0, 4, "10.0.0.1:1", "10.0.0.1:2", iroot=1, nroots=1), True) is None
    assert decode_rank_info(W.rank_info(176, 0, 4, "10.0.0.1:1", "10.0.0.1:2", offset=9), True) is None
    assert decode_rank_info(W.rank_info(64, 0, 70000, "10.0.0.1:1", "10.0.0.1:2"), True) is None


def test_unique_id_and_small_helpers():
    assert decode_unique_id(W.unique_id(SOCKET_MAGIC, "10.1.2.3:4567")) == {
        "root_addr": "10.1.2.3:4567", "magic": "6c9d4bfcf2b94a56", "layout": "2.23+"}
    assert decode_unique_id(bytes(128)) is None and decode_unique_id(bytes(64)) is None
    assert version_name(22803) == "2.28.3" and version_name(23007) == "2.30.7"
    assert tag_flags(1 << 31 | 1 << 29 | 5) == ["connect", "commsplit"] and tag_flags(5) == []


# --- detection -------------------------------------------------------------------------------------


@pytest.mark.parametrize("client,server,answer", [
    (W.handshake(SOCKET_MAGIC, 3), b"", True),
    (W.handshake(SOCKET_MAGIC, 9), b"", True),  # the public magic with a bad type: still NCCL (a DoS attempt)
    (W.handshake(SOCKET_MAGIC, 3)[:10], b"", None),
    (b"", W.handshake(SOCKET_MAGIC, 5), SWAPPED),
    (W.handshake(0x99, 1) + W.frame(W.rank_info(64, 0, 2, "10.0.0.1:1", "10.0.0.1:2")), b"", True),
    (W.handshake(0x99, 1) + struct.pack("<i", 64) + bytes(10), b"", None),
    (W.handshake(0x99, 1) + W.frame(bytes(64)), b"", False),  # rank 0 of 0 ranks, no address
    (W.handshake(COMM_ID_MAGIC, 1) + W.frame(W.sockaddr("10.0.0.1:9").ljust(128, b"\0")), b"", True),
    (W.handshake(0x99, 2) + W.proxy_request(1, 5, b"", 0, 1), b"", True),
    (W.handshake(0x99, 2) + W.proxy_request(1, 5, b"", 0, 1)[:10], b"", None),
    (W.handshake(0x99, 2) + struct.pack("<iQii", 40, 5, 0, 0), b"", False),
    (W.handshake(0x99, 5) + W.frame(W.ras_conninit(22600, "10.0.0.1:28028")), b"", True),
    (W.handshake(0x99, 3) + b"\x00", b"", False),  # net-socket with a custom magic: not claimed
    (W.frame(W.rank_info(64, 1, 8, "10.0.0.2:1", "10.0.0.2:2")), b"", True),  # <= 2.15 shape
    (W.frame(W.sockaddr("10.0.0.2:7")), b"", True),
    (W.frame(W.rank_info(64, 9, 8, "10.0.0.2:1", "10.0.0.2:2")), b"", False),
    (b"\x00\xce\xf7\x85\x3c\x0d" + bytes(20), b"", False),  # TCPStore VALIDATE
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", False),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(60), b"", False),
])
def test_detect(client, server, answer):
    assert detect(client, server) == answer


def test_classify_start():
    start = classify_start(W.handshake(COMM_ID_MAGIC, 1) + W.frame(W.sockaddr("10.0.0.1:9")))
    assert start == Start(handshake=True, detection="handshake_message", magic=struct.pack("<Q", COMM_ID_MAGIC),
                          type_code=1)


def test_detectors_claim_nothing_in_the_corpus(corpus_dir):
    """HTTP/1, HTTP/2, TLS, fuzzed and odd captures: never taken for NCCL."""
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
    assert not [r for r in records if r.get("app_proto") == "nccl" or r["event_type"] == "nccl"]


# --- fields and rules ------------------------------------------------------------------------------


def test_fields_are_declared():
    records, _ = analyze([CRAFTED / name for name in CAPTURES])
    produced = set()
    for record in records:
        if record["event_type"] == "nccl":
            produced |= leaf_paths(record["nccl"], "nccl")
    declared = {name: spec for name, spec in fields.catalogue().items() if name.startswith("nccl.")}
    assert produced == set(declared)
    assert all(spec.events == ("nccl",) and spec.description for spec in declared.values())
    assert declared["nccl.listen_addrs"].type == "list[string]" and declared["nccl.rank"].type == "integer"


RULE = """\
    title: NCCL handshake with the public magic and an unknown socket type
    id: 0b7a4f3e-58a4-4c1b-8e52-4f1f6a2d9c10
    sid: 9900101
    rev: 1
    status: test
    level: high
    event: nccl
    detection:
      selection:
        nccl.magic_kind: socket_magic
        nccl.socket_type: unknown
      condition: selection
    """
RULE_RANKS = """\
    title: NCCL rank announcing a listener outside 10.0.0.0/8
    id: 0b7a4f3e-58a4-4c1b-8e52-4f1f6a2d9c11
    sid: 9900102
    rev: 1
    status: test
    level: medium
    event: nccl
    detection:
      selection:
        nccl.message: rank_info
      inside:
        nccl.listen_addrs|startswith: "10."
      condition: selection and not inside
    """


def test_rules_fire_end_to_end(tmp_path):
    (tmp_path / "unknown.yml").write_text(textwrap.dedent(RULE))
    (tmp_path / "ranks.yml").write_text(textwrap.dedent(RULE_RANKS))
    ruleset = load_rules(tmp_path, Config(variables={}))
    records, _ = analyze([CRAFTED / name for name in CAPTURES], engine=Engine(ruleset))
    alerts = [(r["alert"]["signature_id"], r["nccl"].get("listen_addrs")) for r in records
              if r["event_type"] == "alert"]
    assert alerts == [(9900102, ["[fd00::2]:41001", "[fd00::2]:41002"]), (9900101, None)]
