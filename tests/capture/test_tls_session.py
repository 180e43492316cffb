"""The TLS session on real OpenSSL traffic: hellos, decryption with key logs, what cannot be.

Every connection here is made by OpenSSL on both ends (Python's ssl over memory BIOs, see
tls_traffic.py), its key log written by OpenSSL's keylog callback, and carried in a crafted TCP
capture through the whole offline pipeline (reader, flows, reassembly, router, TLS, HTTP).
"""

from __future__ import annotations

import random
import ssl
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tls_traffic import MemoryTls, contexts, write_pcap

from inspector.analyze import Analyzer
from inspector.capture.reader import DecryptionSecret
from inspector.capture.tls import DecryptedData, DecryptedGap, TlsSession
from inspector.capture.tls_keylog import CaptureKeys, KeyLog
from inspector.engine import Engine
from inspector.http import TO_CLIENT, TO_SERVER, SessionAnomaly
from inspector.lab.craft import CLIENT, SERVER
from inspector.lab.h2wire import GrpcCall, H2Wire
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.rawtcp import Transaction
from inspector.rules import load_rules

REQUEST = b"GET /api/status HTTP/1.1\r\nHost: models.internal\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready"
OPENSSL_NO_ENCRYPT_THEN_MAC = 1 << 19  # SSL_OP_NO_ENCRYPT_THEN_MAC


def http_over_tls(directory: Path, **kwargs) -> tuple[MemoryTls, Path]:
    client, server, keylog = contexts(directory, **kwargs)
    tls = MemoryTls(client, server).handshake()
    tls.send(CLIENT, REQUEST)
    tls.send(SERVER, RESPONSE)
    tls.close()
    assert tls.received == [RESPONSE, REQUEST]  # OpenSSL on both ends agreed
    return tls, keylog


def analyze(path: Path, *keylogs: Path, limits: Limits = DEFAULT_LIMITS, engine=None) -> tuple[Analyzer, list[dict]]:
    keylog = None
    if keylogs:
        keylog = KeyLog(limits)
        for file in keylogs:
            keylog.load(file)
    records: list[dict] = []
    analyzer = Analyzer(records.append, engine=engine, limits=limits, keylog=keylog)
    analyzer.analyze_file(path)
    return analyzer, records


def of_type(records: list[dict], event_type: str) -> list[dict]:
    return [r for r in records if r["event_type"] == event_type]


CASES = [
    # (id, version, OpenSSL cipher string, options, expected suite, expected version)
    ("tls13-aes256gcm", ssl.TLSVersion.TLSv1_3, None, 0, "TLS_AES_256_GCM_SHA384", "TLS 1.3"),
    ("tls12-aes128gcm", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", 0,
     "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS 1.2"),
    ("tls12-chacha20", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", 0,
     "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS 1.2"),
    ("tls12-ccm", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-CCM", 0, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "TLS 1.2"),
    ("tls12-ccm8", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-CCM8", 0, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
     "TLS 1.2"),
    ("tls12-cbc-sha384-etm", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-SHA384", 0,
     "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "TLS 1.2"),
    ("tls12-cbc-sha1-mte", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA", OPENSSL_NO_ENCRYPT_THEN_MAC,
     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS 1.2"),
    ("tls11-cbc-etm", ssl.TLSVersion.TLSv1_1, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0", 0,
     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS 1.1"),
    ("tls10-cbc-chained-iv-etm", ssl.TLSVersion.TLSv1, "ECDHE-ECDSA-AES256-SHA:@SECLEVEL=0", 0,
     "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "TLSv1"),
]


@pytest.mark.parametrize(("case", "version", "ciphers", "options", "suite", "version_name"), CASES,
                         ids=[c[0] for c in CASES])
def test_openssl_connection_decrypts_to_the_same_http(tmp_path, case, version, ciphers, options, suite,
                                                      version_name):
    tls, keylog = http_over_tls(tmp_path, version=version, ciphers=ciphers, options=options)
    write_pcap(tmp_path / "c.pcap", tls.chunks)
    analyzer, records = analyze(tmp_path / "c.pcap", keylog)
    (handshake,) = of_type(records, "tls")
    assert handshake["app_proto"] == "tls" and handshake["tx_id"] == 0
    assert handshake["tls"]["version"] == version_name and handshake["tls"]["cipher_suite_name"] == suite
    assert handshake["tls"]["sni"] == "models.internal"
    extensions = handshake["tls"]["ja3s"]["string"].split(",")[2].split("-")
    assert ("22" in extensions) == (case.endswith("-etm"))  # encrypt_then_mac negotiated or refused
    (exchange,) = of_type(records, "http")
    assert exchange["http"]["url"] == "/api/status" and exchange["http"]["status"] == 200
    assert exchange["app_proto"] == "tls" and exchange["tx_id"] == 1
    assert exchange["decrypted"] == {"protocol": "tls", "version": version_name, "cipher_suite": suite,
                                     "sni": "models.internal", "ja4": handshake["tls"]["ja4"], "keys": "keylog"}
    counts = analyzer.stats.detection
    assert counts["tls_handshakes_decrypted"] == 1 and counts.get("tls_records_failed", 0) == 0
    assert counts["tls_records_application"] >= 2 and not of_type(records, "anomaly")


def test_grpc_over_tls_is_decrypted_and_rules_match_both_layers(tmp_path):
    """HTTP/2 (ALPN h2) carrying a gRPC call: a grpc record parsed from the plaintext, and rules on
    the gRPC call, on the handshake's SNI and on its JA4 all fire."""
    client, server, keylog = contexts(tmp_path, alpn=["h2"])
    tls = MemoryTls(client, server).handshake()
    wire = H2Wire()
    wire.grpc(1, GrpcCall(path="/inference.GRPCInferenceService/ModelInfer", requests=[b"\x0a\x06resnet"],
                          responses=[b"\x0a\x02ok"]))
    for side, data in wire.chunks:
        tls.send(side, data)
    tls.close()
    write_pcap(tmp_path / "grpc.pcap", tls.chunks, port=8001)
    _, plain = analyze(tmp_path / "grpc.pcap", keylog)
    ja4 = of_type(plain, "tls")[0]["tls"]["ja4"]
    rules = tmp_path / "rules"
    rules.mkdir()
    for sid, event, selection in ((9800001, "grpc", "grpc.method: ModelInfer"),
                                  (9800002, "tls", "tls.sni|endswith: .internal"),
                                  (9800003, "tls", f"tls.ja4: {ja4}"),
                                  (9800004, "tls", "tls.alpn: h2"),
                                  (9800005, "grpc", "decrypted.sni: models.internal")):
        (rules / f"r{sid}.yml").write_text(
            f"title: tls test {sid}\nid: 00000000-0000-4000-8000-{sid:012d}\nsid: {sid}\nstatus: test\n"
            f"level: high\nevent: {event}\ndetection:\n  selection:\n    {selection}\n  condition: selection\n")
    _, records = analyze(tmp_path / "grpc.pcap", keylog, engine=Engine(load_rules([rules])))
    (call,) = of_type(records, "triton")  # Triton's gRPC API: a triton record carrying its grpc layer
    assert call["grpc"]["method"] == "ModelInfer" and call["grpc"]["status"] == 0
    assert call["http"]["protocol"] == "HTTP/2" and call["decrypted"]["keys"] == "keylog"
    assert "alpn_selected" not in of_type(records, "tls")[0]["tls"]  # TLS 1.3 encrypts the server's choice
    assert sorted(a["alert"]["signature_id"] for a in of_type(records, "alert")) == [
        9800001, 9800002, 9800003, 9800004, 9800005]


def test_no_keys_gives_the_handshake_and_counts_what_stays_encrypted(tmp_path):
    tls, _ = http_over_tls(tmp_path)
    write_pcap(tmp_path / "c.pcap", tls.chunks)
    analyzer, records = analyze(tmp_path / "c.pcap")
    assert [r["event_type"] for r in records] == ["tls", "flow"]  # no key material given: nothing to report
    counts = analyzer.stats.detection
    assert counts["tls_handshakes_without_keys"] == 1 and counts["tls_records_not_decrypted"] > 0


def test_keys_for_other_sessions_report_keys_missing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tls, _ = http_over_tls(tmp_path / "a")
    _, other_keylog = http_over_tls(tmp_path / "b")
    write_pcap(tmp_path / "c.pcap", tls.chunks)
    analyzer, records = analyze(tmp_path / "c.pcap", other_keylog)
    (anomaly,) = of_type(records, "anomaly")
    assert anomaly["anomaly"]["layer"] == "tls" and anomaly["anomaly"]["event"] == "keys_missing"
    assert not of_type(records, "http") and analyzer.stats.detection["tls_handshakes_without_keys"] == 1


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_wrong_keys_fail_authentication_and_nothing_is_parsed(tmp_path, version):
    tls, keylog = http_over_tls(tmp_path, version=version)
    lines = []
    for line in keylog.read_text().splitlines():
        if line.startswith("#"):
            continue
        label, client_random, secret = line.split()
        lines.append(f"{label} {client_random} {'0' * len(secret)}")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("\n".join(lines) + "\n")
    write_pcap(tmp_path / "c.pcap", tls.chunks)
    analyzer, records = analyze(tmp_path / "c.pcap", wrong)
    assert not of_type(records, "http")  # never garbage parsed as HTTP
    (anomaly,) = of_type(records, "anomaly")
    assert anomaly["anomaly"]["event"] == "decryption_failed"
    assert "did not authenticate" in anomaly["anomaly"]["message"]
    counts = analyzer.stats.detection
    assert counts["tls_records_failed"] > 0 and "tls_records_decrypted" not in counts


def test_keys_from_a_pcapng_decryption_secrets_block(tmp_path):
    """A pcapng carrying the key log in a Decryption Secrets Block decrypts without --keylog."""
    from capture_builders import decryption_secrets, enhanced_packet, interface, section_header

    from inspector.capture.reader import open_capture

    tls, keylog = http_over_tls(tmp_path)
    write_pcap(tmp_path / "c.pcap", tls.chunks)
    blocks = [section_header(), interface(1, tsresol=6), decryption_secrets(0x544C534B, keylog.read_bytes())]
    frames = open_capture(tmp_path / "c.pcap")
    blocks += [enhanced_packet(0, round(frame.ts * 1_000_000), frame.data) for frame in frames]
    (tmp_path / "c.pcapng").write_bytes(b"".join(blocks))
    _, records = analyze(tmp_path / "c.pcapng")
    (exchange,) = of_type(records, "http")
    assert exchange["decrypted"]["keys"] == "pcapng" and exchange["http"]["status"] == 200
    # sharded, the reading worker passes the block on to the workers with the frames after it
    import subprocess
    import sys

    sharded = subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", str(tmp_path / "c.pcapng"), "-q",
                              "--workers", "2", "--shard", "flows", "--eve", str(tmp_path / "eve.json")],
                             cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert sharded.returncode == 0, sharded.stderr
    assert '"keys":"pcapng"' in (tmp_path / "eve.json").read_text()


def test_capture_keys_read_blocks_as_the_reader_meets_them():
    secrets: list[DecryptionSecret] = []
    keys = CaptureKeys(None, secrets, DEFAULT_LIMITS)
    random_hex = "ab" * 32
    assert not keys.available and keys.lookup(bytes.fromhex(random_hex)) is None
    secrets.append(DecryptionSecret(secrets_type=0x57474B4C, data=b"wireguard keys"))
    secrets.append(DecryptionSecret(secrets_type=0x544C534B, data=f"CLIENT_RANDOM {random_hex} {'cd' * 48}\n".encode()))
    found = keys.lookup(bytes.fromhex(random_hex))
    assert keys.available and found is not None and found.master_secret == bytes.fromhex("cd" * 48)
    assert found.source == "pcapng"


def _session_events(chunks: list[tuple[int, bytes]], keylog: Path | None, split) -> list:
    keys = None
    if keylog is not None:
        log = KeyLog(DEFAULT_LIMITS)
        log.load(keylog)
        keys = CaptureKeys(log, [], DEFAULT_LIMITS)
    session = TlsSession(DEFAULT_LIMITS, keys)
    events: list = []
    for side, data in chunks:
        for piece in split(data):
            events += session.receive_data(side, piece, 1.0)
    events += session.receive_eof(TO_SERVER, 2.0) + session.receive_eof(TO_CLIENT, 2.0)
    return events


def _merged(events: list) -> list:
    """Events with consecutive plaintext of one direction joined (its record boundaries differ
    with the way the stream was cut only in when events appear, not in their bytes)."""
    out: list = []
    for event in events:
        if isinstance(event, DecryptedData) and out and isinstance(out[-1], DecryptedData) \
                and out[-1].direction == event.direction:
            out[-1] = DecryptedData(direction=event.direction, data=out[-1].data + event.data, ts=event.ts)
        else:
            out.append(event)
    return out


def test_fed_whole_byte_by_byte_and_in_random_pieces(tmp_path):
    tls, keylog = http_over_tls(tmp_path)
    rng = random.Random(7)

    def random_pieces(data: bytes) -> list[bytes]:
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 5))) if len(data) > 1 else []
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]

    whole = _session_events(tls.chunks, keylog, lambda d: [d])
    for split in (lambda d: [d[i:i + 1] for i in range(len(d))], random_pieces):
        assert _merged(_session_events(tls.chunks, keylog, split)) == _merged(whole)
    plaintext = [e for e in whole if isinstance(e, DecryptedData)]
    assert b"".join(e.data for e in plaintext if e.direction == TO_SERVER) == REQUEST
    assert b"".join(e.data for e in plaintext if e.direction == TO_CLIENT) == RESPONSE
    (handshake,) = [e for e in whole if isinstance(e, Transaction)]
    assert handshake.event_type == "tls" and handshake.data["version"] == "TLS 1.3"


def _reframe(record_stream: bytes, sizes: list[int]) -> bytes:
    """The handshake bytes of the first record cut into records of `sizes` (as a TLS stack may)."""
    length = struct.unpack("!H", record_stream[3:5])[0]
    header, payload, rest = record_stream[:3], record_stream[5:5 + length], record_stream[5 + length:]
    out, pos = b"", 0
    for size in [*sizes, len(payload)]:
        piece = payload[pos:pos + size]
        if piece:
            out += header + struct.pack("!H", len(piece)) + piece
        pos += len(piece)
    return out + rest


def test_client_hello_split_across_records_and_segments(tmp_path):
    tls, keylog = http_over_tls(tmp_path)
    side, first = tls.chunks[0]
    assert side == CLIENT and first[0] == 0x16 and first[5] == 1
    split = [(CLIENT, _reframe(first, [3, 40, 100])), *tls.chunks[1:]]
    write_pcap(tmp_path / "whole.pcap", tls.chunks)
    write_pcap(tmp_path / "split.pcap", split)
    _, whole = analyze(tmp_path / "whole.pcap", keylog)
    _, pieces = analyze(tmp_path / "split.pcap", keylog)
    assert of_type(pieces, "tls")[0]["tls"] == of_type(whole, "tls")[0]["tls"]
    assert of_type(pieces, "http")[0]["http"]["status"] == 200
    # ... and the hello's first record cut in 1-byte TCP segments
    events = _session_events([(CLIENT, _reframe(first, [3, 40]))], None, lambda d: [d[i:i + 1] for i in range(len(d))])
    (handshake,) = [e for e in events if isinstance(e, Transaction)]
    assert handshake.data["ja4"] == of_type(whole, "tls")[0]["tls"]["ja4"]


def test_a_segment_lost_from_the_response_stops_decryption_there(tmp_path):
    client, server, keylog = contexts(tmp_path)
    tls = MemoryTls(client, server).handshake()
    tls.send(CLIENT, REQUEST)
    body = bytes(random.Random(3).randrange(256) for _ in range(9000))
    tls.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 9000\r\n\r\n" + body[:1000])  # one record
    tls.send(SERVER, body[1000:])  # the next record, one of whose segments the capture lost
    tls.close()
    body_chunk = max(n for n, (side, data) in enumerate(tls.chunks) if side == SERVER and len(data) > 8000)
    write_pcap(tmp_path / "gap.pcap", tls.chunks, drop=(body_chunk, 2))
    _, records = analyze(tmp_path / "gap.pcap", keylog)
    anomalies = {(r["anomaly"]["layer"], r["anomaly"]["event"]) for r in of_type(records, "anomaly")}
    assert ("tls", "stream_gap") in anomalies
    (exchange,) = of_type(records, "http")
    assert exchange["http"]["url"] == "/api/status" and exchange["http"]["status"] == 200
    assert exchange["http"]["response_complete"] is False


def test_caps_on_records_hellos_and_held_records():
    session = TlsSession(DEFAULT_LIMITS)
    events = session.receive_data(TO_SERVER, b"\x16\x03\x01\x50\x00" + b"\x01" * 20, 1.0)
    assert [e.event for e in events if isinstance(e, SessionAnomaly)] == ["record_too_long"]
    assert session.receive_data(TO_SERVER, b"\x16\x03\x01\x00\x10", 1.0) == []  # that direction is no longer read

    small = Limits(tls_max_handshake_bytes=64)
    session = TlsSession(small)
    hello = b"\x01\x00\x00\x80" + b"\x03\x03" + b"\x00" * 126
    events = session.receive_data(TO_SERVER, b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello, 1.0)
    assert [e.event for e in events if isinstance(e, SessionAnomaly)] == ["handshake_too_long"]

    held = Limits(tls_max_pending_bytes=100)
    session = TlsSession(held)
    for _ in range(3):  # application data before any ServerHello: held up to the cap, then counted
        session.receive_data(TO_SERVER, b"\x17\x03\x03\x00\x40" + b"\x00" * 64, 1.0)
    session.receive_eof(TO_SERVER, 2.0)
    session.receive_eof(TO_CLIENT, 2.0)
    assert session.counters["tls_records_not_decrypted"] == 3


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([TO_SERVER, TO_CLIENT]), st.binary(max_size=300)), max_size=12))
def test_random_streams_never_raise(chunks):
    session = TlsSession(DEFAULT_LIMITS, CaptureKeys(None, [], DEFAULT_LIMITS))
    for direction, data in chunks:
        if data[:1] == b"?":
            session.receive_gap(direction, 10, 1.0)
        else:  # '!' gives a handshake record header in front, to get past framing more often
            session.receive_data(direction, b"\x16\x03\x01" + data if data[:1] == b"!" else data, 1.0)
    session.receive_eof(TO_SERVER, 2.0)
    session.receive_eof(TO_CLIENT, 2.0)


@pytest.fixture(scope="module")
def real_connection(tmp_path_factory) -> tuple[list[tuple[int, bytes]], Path]:
    directory = tmp_path_factory.mktemp("tls")
    tls, keylog = http_over_tls(directory, version=ssl.TLSVersion.TLSv1_2,
                                ciphers="ECDHE-ECDSA-AES128-SHA", options=OPENSSL_NO_ENCRYPT_THEN_MAC)
    return tls.chunks, keylog


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_real_connections_never_raise_and_never_yield_unauthenticated_bytes(real_connection, data):
    chunks, keylog = real_connection
    stream = [(side, bytearray(chunk)) for side, chunk in chunks]
    for _ in range(data.draw(st.integers(1, 4))):
        n = data.draw(st.integers(0, len(stream) - 1))
        chunk = stream[n][1]
        chunk[data.draw(st.integers(0, len(chunk) - 1))] ^= data.draw(st.integers(1, 255))
    events = _session_events([(side, bytes(chunk)) for side, chunk in stream], keylog, lambda d: [d])
    for event in events:
        if isinstance(event, DecryptedData):
            assert event.data in (REQUEST, RESPONSE)  # what authenticates is what was sent
        else:
            assert isinstance(event, Transaction | SessionAnomaly | DecryptedGap)
