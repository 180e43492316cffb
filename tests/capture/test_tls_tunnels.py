"""TLS (and HTTP) inside tunnels: SOCKS 4/4a/5 and HTTP CONNECT, in the stream router."""

from __future__ import annotations

from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st
from tls_traffic import MemoryTls, analyze_with_keylog, contexts, write_pcap

from inspector.analyze import Analyzer
from inspector.capture.socks import SocksHandshake, detect_socks
from inspector.lab.craft import CLIENT, SERVER
from inspector.sinks.eveschema import build_schema

SOCKS5_GREETING = b"\x05\x02\x00\x02"
SOCKS5_REQUEST = b"\x05\x01\x00\x03\x0fmodels.internal\x20\xfb"  # CONNECT models.internal:8443
SOCKS5_REPLY = b"\x05\x00\x00\x01\x0a\x02\x00\x09\x20\xfb"


def _run(path: Path, keylog: Path | None = None) -> tuple[Analyzer, list[dict]]:
    return analyze_with_keylog(path, keylog)


def test_socks_detection_needs_the_servers_answer():
    assert detect_socks(SOCKS5_GREETING, b"") is None
    assert detect_socks(SOCKS5_GREETING, b"\x05\x00") is True
    assert detect_socks(SOCKS5_GREETING, b"\x05\x07") is False
    assert detect_socks(SOCKS5_GREETING, b"HTTP/1.1 400 Bad Request\r\n") is False
    socks4 = b"\x04\x01\x01\xbb\x5d\xb8\xd8\x77user\x00"
    assert detect_socks(socks4, b"\x00\x5a\x01\xbb\x5d\xb8\xd8\x77") is True
    assert detect_socks(socks4, b"\x00\x00") is False
    for other in (b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x00\x10\x01", b"\x05\x00", b"\x05\x03\x00\x09\x01",
                  b"\x04\x01\x00\x00\x01\x02\x03\x04\x00"):
        assert not detect_socks(other, b"\x05\x00\x00\x00"), other


def test_socks5_handshake_with_password_keeps_the_target_never_the_password():
    client = SocksHandshake(client=True)
    server = SocksHandshake(client=False)
    auth = b"\x01\x05alice\x06s3cret"
    stream = SOCKS5_GREETING + auth + SOCKS5_REQUEST + b"tunnelled"
    rest = b"".join(client.feed(stream[i:i + 1]) for i in range(len(stream)))  # byte by byte
    assert rest == b"tunnelled" and client.target == "models.internal:8443" and client.version == 5
    assert b"s3cret" not in repr(vars(client)).encode()
    assert server.feed(b"\x05\x02" + b"\x01\x00" + SOCKS5_REPLY + b"answer") == b"answer" and not server.refused
    refused = SocksHandshake(client=False)
    refused.feed(b"\x05\x02\x01\x01")
    assert refused.refused


def test_socks_corpus_captures_carry_tls_and_http(corpus_dir):
    _, records = _run(corpus_dir / "ja4" / "socks-https-example.pcap")
    tunnels = sorted((r["tunnel"]["protocol"], r["tunnel"]["target"], r["tls"]["sni"])
                     for r in records if r["event_type"] == "tls")
    assert tunnels == [("socks4", "93.184.216.119:443", "www.example.com"),
                       ("socks4", "www.example.com:443", "www.example.com"),  # SOCKS 4a: the name is sent
                       ("socks5", "93.184.216.119:443", "www.example.com")]
    assert {r["app_proto"] for r in records if r["event_type"] == "tls"} == {"socks"}
    _, records = _run(corpus_dir / "arkime" / "socks5-http-302-frag.pcap")
    (exchange,) = [r for r in records if r["event_type"] == "http"]
    assert exchange["http"]["status"] == 302 and exchange["tunnel"] == {"protocol": "socks5",
                                                                        "target": "www.google.com:80"}


def test_decrypted_tls_inside_socks5(tmp_path):
    client, server, keylog = contexts(tmp_path)
    tls = MemoryTls(client, server).handshake()
    tls.send(CLIENT, b"GET /api/status HTTP/1.1\r\nHost: models.internal\r\n\r\n")
    tls.send(SERVER, b"HTTP/1.1 204 No Content\r\n\r\n")
    tls.close()
    chunks = [(CLIENT, SOCKS5_GREETING), (SERVER, b"\x05\x00"), (CLIENT, SOCKS5_REQUEST), (SERVER, SOCKS5_REPLY),
              *tls.chunks]
    write_pcap(tmp_path / "socks.pcap", chunks, port=1080)
    analyzer, records = _run(tmp_path / "socks.pcap", keylog)
    handshake, exchange = [r for r in records if r["event_type"] in ("tls", "http")]
    assert handshake["tunnel"] == exchange["tunnel"] == {"protocol": "socks5", "target": "models.internal:8443"}
    assert exchange["http"]["status"] == 204 and exchange["decrypted"]["sni"] == "models.internal"
    assert [handshake["tx_id"], exchange["tx_id"]] == [0, 1]
    assert analyzer.stats.detection["tunnel_app_tls"] == 1
    # the TLS session's counters keep their names in a tunnel (no tunnel_ prefix)
    assert analyzer.stats.detection["tls_handshakes_decrypted"] == 1
    assert not any(name.startswith("tunnel_tls_") for name in analyzer.stats.detection)
    schema = build_schema()  # tls, decrypted and tunnel objects are declared fields: the records validate
    for record in records:
        jsonschema.validate(record, schema)


def test_tls_inside_an_http_connect_tunnel(tmp_path):
    client, server, keylog = contexts(tmp_path)
    tls = MemoryTls(client, server).handshake()
    tls.send(CLIENT, b"GET /api/status HTTP/1.1\r\nHost: models.internal\r\n\r\n")
    tls.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    connect = b"CONNECT models.internal:8443 HTTP/1.1\r\nHost: models.internal:8443\r\n\r\n"
    chunks = [(CLIENT, connect), (SERVER, b"HTTP/1.1 200 Connection established\r\n\r\n"), *tls.chunks]
    write_pcap(tmp_path / "connect.pcap", chunks, port=3128)
    _, records = _run(tmp_path / "connect.pcap", keylog)
    proxy, handshake, exchange = [r for r in records if r["event_type"] in ("tls", "http")]
    assert proxy["http"]["http_method"] == "CONNECT" and "tunnel" not in proxy
    assert handshake["tunnel"] == {"protocol": "http_connect", "target": "models.internal:8443"}
    assert exchange["http"]["url"] == "/api/status" and exchange["decrypted"]["keys"] == "keylog"
    assert [r["tx_id"] for r in (proxy, handshake, exchange)] == [0, 1, 2]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=80), st.booleans())
def test_socks_parsing_never_raises(client_bytes, server_bytes, socks5):
    prefix = SOCKS5_GREETING if socks5 else b"\x04\x01\x01\xbb"
    detect_socks(prefix + client_bytes, server_bytes)
    for side, data in ((SocksHandshake(client=True), prefix + client_bytes),
                       (SocksHandshake(client=False), server_bytes)):
        for i in range(0, len(data), 7):
            side.feed(data[i:i + 7])
