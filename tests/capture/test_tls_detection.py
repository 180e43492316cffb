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
