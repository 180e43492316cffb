"""TLS detection in the stream router: conservative, by the first bytes, never by the port."""

from __future__ import annotations

import ssl

import pytest
from tls_traffic import MemoryTls, contexts

from inspector.capture.router import H2_PREFACE, detect_tls
from inspector.lab.craft import CLIENT, SERVER
from inspector.protocols.nccl import SOCKET_MAGIC
from inspector.protocols.tcpstore import VALIDATE_PREFIX
from inspector.rawtcp import SWAPPED


@pytest.fixture(scope="module")
def first_flights(tmp_path_factory) -> dict[int, bytes]:
    """The first bytes each side of a real OpenSSL TLS 1.2 connection sent."""
    client, server, _ = contexts(tmp_path_factory.mktemp("tls"), version=ssl.TLSVersion.TLSv1_2)
    tls = MemoryTls(client, server).handshake()
    flights: dict[int, bytes] = {}
    for side, data in tls.chunks:
        flights.setdefault(side, data)
    return flights


def test_hellos_and_their_sides(first_flights):
    hello, answer = first_flights[CLIENT], first_flights[SERVER]
    assert detect_tls(hello, b"") is True
    assert detect_tls(hello, answer) is True
    assert detect_tls(b"", answer) is True  # the ClientHello is missing from the capture
    assert detect_tls(answer, b"") == SWAPPED  # the side taken for the client answers
    assert detect_tls(b"", hello) == SWAPPED
    for n in range(1, 11):  # too few bytes to say: the hello's own version is at bytes 9-10
        assert detect_tls(hello[:n], b"") is None
    assert detect_tls(hello[:11], b"") is True


def test_sslv2_format_client_hello():
    specs = bytes.fromhex("000039" "00002f" "030080")
    message = b"\x01\x03\x01" + len(specs).to_bytes(2, "big") + b"\x00\x00\x00\x20" + specs + bytes(32)
    assert detect_tls(bytes([0x80 | len(message) >> 8, len(message) & 0xFF]) + message, b"") is True


@pytest.mark.parametrize("opening", [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    H2_PREFACE,
    VALIDATE_PREFIX + b"\x00" * 8,
    SOCKET_MAGIC + b"\x01\x00\x00\x00",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"\x16\x03\x01\x02\x00\x0b\x00\x01\xfc",  # a handshake record that is no hello (Certificate)
    b"\x16\x03\x01\x02\x00\x01\x00\x00\x05\x03\x03",  # a ClientHello too short to be one
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x09\x09",  # a ClientHello with a version no stack sends
    b"\x16\x03\x01\xff\xff\x01\x00\x01\xfc\x03\x03",  # a record longer than TLS allows
    b"\x17\x03\x03\x00\x20" + b"\x00" * 32,  # application data: the handshake was not captured
    b"\x80\x2e\x02\x03\x01",  # an SSL 2.0 record that is not a CLIENT-HELLO
])
def test_other_protocols_are_not_tls(opening):
    assert detect_tls(opening, b"") is False
    assert detect_tls(b"", opening) is False


def test_tls_records_without_their_handshake_need_a_chain():
    """A stream picked up after its handshake is TLS when its records chain exactly: at least three
    headers (two in one direction), one version, content types 20-23."""
    from inspector.capture.router import detect_tls_records

    record = b"\x17\x03\x03\x00\x20" + b"\x5a" * 32
    assert detect_tls_records(record, b"") is None  # one record says too little
    assert detect_tls_records(record * 2, b"") is None
    assert detect_tls_records(record * 3, b"") is True
    assert detect_tls_records(record * 2, record) is True
    assert detect_tls_records(record, record) is None  # two directions, one record each: not yet
    alert = b"\x15\x03\x03\x00\x1a" + b"\x00" * 26
    assert detect_tls_records(record + record + alert, b"") is True
    assert detect_tls_records(record * 2 + b"\x17\x03\x01\x00\x20" + b"\x00" * 32, b"") is False  # versions differ
    assert detect_tls_records(record * 2, b"\x17\x03\x01\x00\x20" + b"\x00" * 32) is False
    assert detect_tls_records(record + b"\x18\x03\x03\x00\x01\x00" + record, b"") is False  # heartbeat: not 20-23
    assert detect_tls_records(record + b"GET / HTTP/1.1\r\n", b"") is False  # the chain breaks
    assert detect_tls_records(b"\x17\x03\x03\x00\x00" + record * 2, b"") is False  # an empty record
    for opening in (b"GET / HTTP/1.1\r\n\r\n", H2_PREFACE, b"SSH-2.0-OpenSSH_9.6\r\n", VALIDATE_PREFIX + bytes(8)):
        assert detect_tls_records(opening, b"") is False


def test_flows_without_any_payload_have_no_app_proto(tmp_path):
    """A refused connect and a connection closed without data carried no application data: no
    protocol to detect, which is not a detection failure (Suricata leaves app_proto out too)."""
    import random

    from inspector.analyze import Analyzer
    from inspector.lab.craft import Capture, TcpConversation

    capture = Capture()
    rng = random.Random(5)
    empty = TcpConversation(capture, ("10.0.0.1", 40000), ("10.0.0.2", 8000), 1_700_000_000.0, rng)
    empty.handshake()
    empty.close()
    refused = TcpConversation(capture, ("10.0.0.1", 40001), ("10.0.0.2", 8001), 1_700_000_001.0, rng)
    refused.reset()
    talking = TcpConversation(capture, ("10.0.0.1", 40002), ("10.0.0.2", 8002), 1_700_000_002.0, rng)
    talking.handshake()
    talking.send(CLIENT, b"\x00\x01binary nobody parses" * 4)
    talking.close()
    capture.write(tmp_path / "c.pcap")
    records: list[dict] = []
    analyzer = Analyzer(records.append)
    analyzer.analyze_file(tmp_path / "c.pcap")
    flows = {r["src_port"]: r for r in records if r["event_type"] == "flow"}
    assert "app_proto" not in flows[40000] and "app_proto" not in flows[40001]
    assert flows[40002]["app_proto"] == "failed"
    counts = analyzer.stats.detection
    assert counts["no_application_data"] == 2 and counts["unknown_protocol"] == 1
    assert analyzer.stats.flows_by_app == {"tcp": 2, "failed": 1}
