"""ClientHello / ServerHello parsing and the JA4, JA3 and JA3S fingerprints.

Hellos are built field by field (RFC 8446 §4.1.2 layout) so each JA4 rule of FoxIO's
technical_details/JA4.md can be checked on its own; the worked example of that document is
reproduced exactly. Real-world hellos are checked against FoxIO's and tshark's values in
test_tls_corpus.py.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.fields import catalogue
from inspector.http import SessionAnomaly
from inspector.protocols.tls import (
    HELLO_RETRY_RANDOM,
    HelloError,
    clienthello_events,
    is_grease,
    ja3_string,
    ja4,
    parse_client_hello,
    parse_server_hello,
    parse_sslv2_client_hello,
    tls_object,
    version_name,
)
from inspector.rawtcp import Transaction


def u16s(values: list[int]) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


def ext(ext_type: int, data: bytes = b"") -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def sni(name: bytes) -> bytes:
    entry = b"\x00" + struct.pack("!H", len(name)) + name
    return ext(0x0000, struct.pack("!H", len(entry)) + entry)


def alpn(*values: bytes) -> bytes:
    listed = b"".join(bytes([len(v)]) + v for v in values)
    return ext(0x0010, struct.pack("!H", len(listed)) + listed)


def sigalgs(values: list[int]) -> bytes:
    return ext(0x000D, struct.pack("!H", 2 * len(values)) + u16s(values))


def versions(values: list[int]) -> bytes:
    return ext(0x002B, bytes([2 * len(values)]) + u16s(values))


def selected(version: int) -> bytes:
    """A ServerHello's supported_versions: the one version chosen."""
    return ext(0x002B, struct.pack("!H", version))


def groups(values: list[int]) -> bytes:
    return ext(0x000A, struct.pack("!H", 2 * len(values)) + u16s(values))


def client_hello(ciphers: list[int], extensions: list[bytes] | None, *, version: int = 0x0303,
                 random: bytes = bytes(range(32)), session_id: bytes = b"") -> bytes:
    body = struct.pack("!H", version) + random + bytes([len(session_id)]) + session_id
    body += struct.pack("!H", 2 * len(ciphers)) + u16s(ciphers) + b"\x01\x00"
    if extensions is not None:
        block = b"".join(extensions)
        body += struct.pack("!H", len(block)) + block
    return body


def server_hello(cipher: int, extensions: list[bytes], *, version: int = 0x0303, random: bytes = b"\x11" * 32,
                 session_id: bytes = b"") -> bytes:
    block = b"".join(extensions)
    return (struct.pack("!H", version) + random + bytes([len(session_id)]) + session_id + struct.pack("!HB", cipher, 0)
            + struct.pack("!H", len(block)) + block)


# The worked example of JA4.md: t13d1516h2_8daaf6152771_e5627efa2ab1.
EXAMPLE_CIPHERS = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
                   0x009C, 0x009D, 0x002F, 0x0035]
EXAMPLE_SIGALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def example_extensions(grease: bool = False) -> list[bytes]:
    exts = [ext(0x001B, b"\x02\x00\x02"), sni(b"darksail.ai"), ext(0x0033, b"\x00\x00"), alpn(b"h2", b"http/1.1"),
            ext(0x4469, b"\x00\x03\x02h2"), ext(0x0017), ext(0x002D, b"\x01\x01"), sigalgs(EXAMPLE_SIGALGS),
            ext(0x0005, b"\x01\x00\x00\x00\x00"), ext(0x0023), ext(0x0012), versions([0x0304, 0x0303]),
            ext(0xFF01, b"\x00"), ext(0x000B, b"\x01\x00"), groups([0x001D, 0x0017, 0x0018]), ext(0x0015, b"\x00" * 4)]
    if grease:
        exts.insert(0, ext(0x0A0A))
        exts.append(ext(0xFAFA, b"\x00"))
    return exts


def test_ja4_worked_example_of_the_specification():
    hello = parse_client_hello(client_hello(EXAMPLE_CIPHERS, example_extensions()))
    assert ja4(hello) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    # both hashes from their raw strings, as the document gives them
    assert hashlib.sha256(b"002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
                          ).hexdigest()[:12] == "8daaf6152771"


def test_grease_is_ignored_in_every_part():
    plain = parse_client_hello(client_hello(EXAMPLE_CIPHERS, example_extensions()))
    greased = parse_client_hello(client_hello([0x3A3A, *EXAMPLE_CIPHERS], example_extensions(grease=True)))
    assert ja4(greased) == ja4(plain)
    assert ja3_string(greased) == ja3_string(plain)
    assert [is_grease(v) for v in (0x0A0A, 0xFAFA, 0x1A1A, 0x0A1A, 0x0303)] == [True, True, True, False, False]


def test_ja4_version_from_supported_versions_else_the_hello():
    with_versions = parse_client_hello(client_hello([0x1301], [versions([0x7A7A, 0x0304, 0x0303])]))
    assert ja4(with_versions).startswith("t13i0101")
    legacy = parse_client_hello(client_hello([0x002F], [ext(0x0017)], version=0x0301))
    assert ja4(legacy).startswith("t10i0101")
    ssl3 = parse_client_hello(client_hello([0x002F], None, version=0x0300))
    assert ja4(ssl3) == "ts3i010000_" + hashlib.sha256(b"002f").hexdigest()[:12] + "_000000000000"
    draft = parse_client_hello(client_hello([0x1301], [versions([0x7F12])]))
    assert ja4(draft).startswith("t00i")


@pytest.mark.parametrize(("value", "expected"), [
    ((b"h2",), "h2"),
    ((b"http/1.1", b"h2"), "h1"),
    ((b"x",), "xx"),
    ((b"\xba\xad",), "99"),  # first byte above 0x7f: FoxIO's implementations and test vector
    ((b"/x",), "28"),  # other non-alphanumeric values: first and last characters of the value in hex
    ((b"a/",), "6f"),
    ((b"",), "00"),
    ((), "00"),
])
def test_ja4_alpn_characters(value, expected):
    hello = parse_client_hello(client_hello([0x1301], [alpn(*value)] if value else [ext(0x0017)]))
    assert ja4(hello)[8:10] == expected


def test_ja4_sni_counts_and_empty_parts():
    named = parse_client_hello(client_hello([0x1301], [sni(b"a.example")]))
    assert ja4(named) == "t12d0101" + "00_" + hashlib.sha256(b"1301").hexdigest()[:12] + "_000000000000"
    empty_name = parse_client_hello(client_hello([0x1301], [ext(0x0000)]))
    assert ja4(empty_name)[3] == "i"  # an empty server_name extension names no host (as FoxIO's ja4.py)
    bare = parse_client_hello(client_hello([], None))
    assert ja4(bare) == "t12i000000_000000000000_000000000000"
    no_sigalgs = parse_client_hello(client_hello([0x1301], [ext(0x0017), ext(0x000B, b"\x01\x00")]))
    assert ja4(no_sigalgs).endswith(hashlib.sha256(b"000b,0017").hexdigest()[:12])  # no trailing underscore
    many = parse_client_hello(client_hello(list(range(0x0100, 0x0100 + 120)), None))
    assert ja4(many)[4:6] == "99"


def test_ja3_string_and_hash():
    hello = parse_client_hello(client_hello([0x0A0A, 0x1301, 0xC02B], [
        ext(0x1A1A), sni(b"m.example"), groups([0x2A2A, 0x001D, 0x0017]), ext(0x000B, b"\x02\x00\x01")]))
    assert ja3_string(hello) == "771,4865-49195,0-10-11,29-23,0-1"
    obj = tls_object(hello, None)
    assert obj["ja3"] == {"hash": hashlib.md5(b"771,4865-49195,0-10-11,29-23,0-1").hexdigest(),
                          "string": "771,4865-49195,0-10-11,29-23,0-1"}
    assert obj["sni"] == "m.example"
    assert obj["cipher_suites"] == ["1301", "c02b"] and obj["extensions"] == ["0000", "000a", "000b"]
    assert obj["supported_groups"] == ["001d", "0017"] and obj["client_version"] == "TLS 1.2"
    assert "version" not in obj  # negotiated only when a ServerHello was seen


def test_server_hello_fields_and_ja3s():
    client = parse_client_hello(client_hello([0x1301, 0x1302], [versions([0x0304])], session_id=b"\x05" * 32))
    tls13 = parse_server_hello(server_hello(0x1302, [selected(0x0304), ext(0x0033, b"\x00\x1d\x00\x00")],
                                            session_id=b"\x05" * 32))
    obj = tls_object(client, tls13)
    assert obj["version"] == "TLS 1.3" and obj["cipher_suite"] == "1302"
    assert obj["cipher_suite_name"] == "TLS_AES_256_GCM_SHA384"
    assert obj["ja3s"]["string"] == "771,4866,43-51" and obj["resumed"] is False
    resumed12 = parse_server_hello(server_hello(0xC02F, [alpn(b"h2"), ext(0x0016)], session_id=b"\x05" * 32))
    obj12 = tls_object(client, resumed12)
    assert obj12["version"] == "TLS 1.2" and obj12["resumed"] is True and obj12["alpn_selected"] == "h2"
    assert resumed12.encrypt_then_mac
    retry = parse_server_hello(server_hello(0x1301, [selected(0x0304)], random=HELLO_RETRY_RANDOM))
    assert retry.is_hello_retry and tls_object(client, retry)["hello_retry"] is True


def test_draft_server_hello_layout():
    """TLS 1.3 drafts (0x7fxx) had no session id or compression method in the ServerHello."""
    body = struct.pack("!H", 0x7F12) + b"\x22" * 32 + struct.pack("!HH", 0x1301, 6) + selected(0x7F12)
    hello = parse_server_hello(body)
    assert hello.cipher_suite == 0x1301 and hello.selected_version == 0x7F12
    assert version_name(hello.version) == "TLS 1.3 draft-18"


def test_sslv2_format_client_hello():
    specs = bytes.fromhex("010080" "000004" "00002f")
    challenge = bytes(range(16))
    message = b"\x01\x03\x01" + struct.pack("!HHH", len(specs), 0, len(challenge)) + specs + challenge
    hello = parse_sslv2_client_hello(message)
    assert hello.random == b"\x00" * 16 + challenge and hello.legacy_version == 0x0301
    assert ja4(hello) == "t10i000000_000000000000_000000000000"
    obj = tls_object(hello, None)
    assert obj["sslv2_hello"] is True and "ja3" not in obj
    with pytest.raises(HelloError):
        parse_sslv2_client_hello(b"\x04\x00\x02" + message[3:])


def test_truncated_hellos():
    full = client_hello(EXAMPLE_CIPHERS, example_extensions())
    for cut in (0, 10, 35, 40, 68):
        with pytest.raises(HelloError):
            parse_client_hello(full[:cut])
    partial = parse_client_hello(full[:-3])  # the last extension's data cut short: listed, flagged
    assert partial.truncated_extensions and len(partial.extensions) == 16
    events = clienthello_events(full[:-3], 5.0)
    assert isinstance(events[0], Transaction) and events[0].data["ja4"].startswith("t13d1516h2_")
    assert isinstance(events[1], SessionAnomaly) and events[1].event == "malformed_extensions"
    (anomaly,) = clienthello_events(full[:20], 5.0)
    assert anomaly.event == "malformed_client_hello" and "random" in anomaly.message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parsers_raise_only_hello_errors(data):
    for parse in (parse_client_hello, parse_server_hello, parse_sslv2_client_hello):
        try:
            hello = parse(data)
        except HelloError:
            continue
        tls_object(hello, None) if parse is not parse_server_hello else tls_object(None, hello)
    assert clienthello_events(data, 0.0)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_hellos_never_raise(data):
    full = bytearray(client_hello(EXAMPLE_CIPHERS, example_extensions(grease=True)))
    for _ in range(data.draw(st.integers(1, 6))):
        full[data.draw(st.integers(0, len(full) - 1))] = data.draw(st.integers(0, 255))
    for event in clienthello_events(bytes(full), 1.0):
        if isinstance(event, Transaction):
            assert len(event.data["ja4"]) == 36


def test_fields_are_declared():
    fields = catalogue()
    for name in ("tls.sni", "tls.ja4", "tls.ja3.hash", "tls.ja3.string", "tls.ja3s.hash", "tls.version",
                 "tls.alpn", "tls.cipher_suites", "tls.cipher_suite", "decrypted.protocol", "decrypted.sni"):
        assert name in fields, name
    assert fields["tls.alpn"].type == "list[string]" and fields["tls.ja4"].events == ("tls",)
