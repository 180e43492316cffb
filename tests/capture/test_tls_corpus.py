"""TLS on the public corpus (../shared/corpus): fingerprints and decryption against ground truth.

* JA4 against FoxIO's own expected outputs (`ja4/expected-json/`) and FoxIO's ja4.py run with
  tshark (`_groundtruth/ja4-derived/`): every JA4 value of every capture the corpus holds.
* JA3 and JA3S against tshark 4.0 (`_groundtruth/tshark_groundtruth.json`).
* Decryption of every keyed capture (key log files and pcapng Decryption Secrets Blocks): the
  HTTP/1 and HTTP/2 requests and statuses tshark's decrypted view lists, upstream's record counts
  (voev-snet/tests.conf), and the application-data records tshark decrypted.
* Detection: no capture in which tshark saw no TLS handshake gets a `tls` record, and none of
  the project's own captures (HTTP, gRPC, ML protocols, TCPStore, NCCL) does.

Where we differ from the reference the reason is listed and checked by hand.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from tls_traffic import analyze_with_keylog

from inspector.analyze import expand_paths
from inspector.capture.tls_keylog import KeyLog
from inspector.limits import DEFAULT_LIMITS
from inspector.redact import redact_url

REPO = Path(__file__).resolve().parents[2]

#: JA4 values of the references that we do not produce, and why (none: all of them agree).
JA4_KNOWN_DIFFERENCES: dict[str, str] = {}

#: Client hellos tshark fingerprints that we do not, and why (per capture: how many).
JA3_KNOWN_DIFFERENCES = {
    "ja4/chrome-cloudflare-quic-with-secrets.pcapng": (1, "a QUIC (UDP) handshake: QUIC is not parsed"),
    "ja4/tls-handshake.pcapng": (5, "QUIC (UDP) handshakes (tshark lists 12 of its 84 hellos; these 5 are QUIC)"),
    "ja4/tls-sni.pcapng": (5, "QUIC (UDP) handshakes (tshark lists 12 of its 84 hellos; these 5 are QUIC)"),
    "ja4/tls3.pcapng": (6, "QUIC (UDP) handshakes"),
}

#: Keyed captures whose decrypted HTTP differs from tshark's view, and why.
DECRYPTION_KNOWN_DIFFERENCES = {
    "lbirchler-tls-decryption/tls2/dump.pcapng": "5 of 73 sessions use 1990s export suites (EXP-RC4-MD5, "
                                                 "EXP-DES-CBC-SHA ...), which are not decrypted: 68 requests",
    "lbirchler-tls-decryption/tls2/dsb-dump.pcapng": "the same capture with its keys embedded",
}

#: tshark's decrypted view misses responses that we decrypt: it lists the requests only.
RESPONSES_TSHARK_MISSES = {
    "pcap2har/firefox-tls13-facebook-dsb.pcapng": {"200": 5},  # its reassembly loses out-of-order segments
    "scapy/tls_nss_example.pcap": {"200": 2},
    "lbirchler-tls-decryption/tls2/dump.pcapng": {"200": 68},  # responses of `openssl s_server -www`
    "lbirchler-tls-decryption/tls2/dsb-dump.pcapng": {"200": 68},
}


def _groundtruth(corpus: Path) -> dict:
    return json.loads((corpus / "_groundtruth" / "tshark_groundtruth.json").read_text())


@cache
def _run(path: str, keylog: str | None = None) -> tuple[dict, tuple[dict, ...]]:
    analyzer, records = analyze_with_keylog(Path(path), Path(keylog) if keylog is not None else None)
    return dict(analyzer.stats.detection), tuple(records)


def _tls(records: tuple[dict, ...]) -> list[dict]:
    return [r for r in records if r["event_type"] == "tls"]


def _capture_of(corpus: Path, reference: Path) -> Path | None:
    """The capture a reference file describes: ja4/expected-json/<name>.json, or
    _groundtruth/ja4-derived/<dir>_<sub>_<name>.json (the path with / written _)."""
    name = reference.name[:-len(".json")]
    if reference.parent.name == "expected-json":
        return corpus / "ja4" / name
    for path in corpus.rglob("*"):
        if path.is_file() and str(path.relative_to(corpus)).replace("/", "_") == name:
            return path
    return None  # e.g. wireshark-notes: ground truth without its capture


def test_ja4_equals_foxio_for_every_capture(corpus_dir):
    references = sorted((corpus_dir / "ja4" / "expected-json").glob("*.json"))
    references += sorted((corpus_dir / "_groundtruth" / "ja4-derived").glob("*.json"))
    agreed, differences, captures = 0, {}, set()
    for reference in references:
        expected = [((e["src"], int(e["srcport"]), e["dst"], int(e["dstport"])), value)
                    for e in json.loads(reference.read_text())
                    for key, value in e.items() if key == "JA4" or key.startswith("JA4.")]
        capture = _capture_of(corpus_dir, reference)
        if not expected or capture is None:
            continue
        _, records = _run(str(capture))
        ours = Counter((r["src_ip"], r["src_port"], r["dest_ip"], r["dest_port"], r["tls"]["ja4"])
                       for r in _tls(records) if "ja4" in r["tls"])
        for endpoints, value in expected:
            if ours[(*endpoints, value)]:
                ours[(*endpoints, value)] -= 1
                agreed += 1
            else:
                differences.setdefault(str(capture.relative_to(corpus_dir)), []).append(value)
        captures.add(capture)
    assert len(captures) >= 45 and agreed == 336  # the JA4 values of the 46 captures the corpus holds
    assert sorted(differences) == sorted(JA4_KNOWN_DIFFERENCES), differences


def test_ja3_and_ja3s_equal_tshark(corpus_dir):
    checked, ja3s_checked, differences = 0, 0, {}
    for name, truth in sorted(_groundtruth(corpus_dir).items()):
        tls = truth.get("tls")
        if not tls or not (corpus_dir / name).is_file():
            continue
        _, records = _run(str(corpus_dir / name))
        ours = Counter(r["tls"]["ja3"]["hash"] for r in _tls(records) if "ja3" in r["tls"])
        ours_s = Counter(r["tls"]["ja3s"]["hash"] for r in _tls(records) if "ja3s" in r["tls"])
        expected = Counter(h["ja3"] for h in tls["client_hellos"] if h.get("ja3"))
        expected_s = Counter(h["ja3s"] for h in tls["server_hellos"] if h.get("ja3s"))
        missing = sum((expected - ours).values())
        missing_s = sum((expected_s - ours_s).values())
        checked += sum(expected.values()) - missing
        ja3s_checked += sum(expected_s.values()) - missing_s
        if missing:
            differences[name] = missing
        if missing_s:  # server hellos tshark did not fingerprint are the tunnels' and QUIC's
            assert name in JA3_KNOWN_DIFFERENCES, (name, expected_s - ours_s)
    assert {name: count for name, (count, _) in JA3_KNOWN_DIFFERENCES.items()} == differences
    assert checked == 101 and ja3s_checked >= 94


def _keyed(corpus: Path) -> list[tuple[str, dict]]:
    return [(name, truth) for name, truth in sorted(_groundtruth(corpus).items())
            if (truth.get("keylog") or truth.get("pcapng_dsb")) and (corpus / name).is_file()]


def _decrypted_http(records: tuple[dict, ...]) -> tuple[list[str], Counter]:
    transactions = sorted((r for r in records if "decrypted" in r and "http" in r and r["event_type"] != "anomaly"),
                          key=lambda r: r["timestamp"])
    requests = [f"{r['http']['http_method']} {r['http']['url']}" for r in transactions if "http_method" in r["http"]]
    statuses = Counter(str(r["http"]["status"]) for r in transactions if r["http"].get("status") is not None)
    return requests, statuses


def test_keyed_captures_decrypt_to_what_tshark_shows(corpus_dir):
    checked, differences = 0, {}
    for name, truth in _keyed(corpus_dir):
        keylog = str(corpus_dir / truth["keylog"]) if truth.get("keylog") else None  # as tshark was given
        counts, records = _run(str(corpus_dir / name), keylog)
        assert counts.get("tls_records_failed", 0) == 0, name
        requests, statuses = _decrypted_http(records)
        problems = []
        for key in ("http1", "http2"):
            if key not in truth:
                continue
            want = truth[key]
            listed = want["requests"] if key == "http2" else want["first_requests"]
            count = len(want["requests"]) if key == "http2" else want["requests"]
            listed = [" ".join((m, redact_url(t))) for m, _, t in (line.partition(" ") for line in listed)]
            mine = sorted(requests) if key == "http2" else requests[:len(listed)]
            if len(requests) != count or mine != (sorted(listed) if key == "http2" else listed):
                problems.append(f"{len(requests)} requests {requests[:4]} vs {count} {listed[:4]}")
        expected_statuses = Counter()
        for key in ("http1", "http2"):
            expected_statuses.update(truth.get(key, {}).get("status_counts", {}))
        expected_statuses.update(RESPONSES_TSHARK_MISSES.get(name, {}))
        if ("http1" in truth or "http2" in truth) and statuses != expected_statuses:
            problems.append(f"statuses {dict(statuses)} vs {dict(expected_statuses)}")
        if problems:
            differences[name] = problems
        checked += 1
    assert checked >= 23
    assert sorted(differences) == sorted(DECRYPTION_KNOWN_DIFFERENCES), differences
    counts, records = _run(str(corpus_dir / "lbirchler-tls-decryption/tls2/dump.pcapng"),
                           str(corpus_dir / "lbirchler-tls-decryption/tls2/premaster.txt"))
    assert _decrypted_http(records)[0] == ["GET /"] * 68
    assert counts["tls_handshakes_decrypted"] == 68 and counts["tls_handshakes_unsupported"] == 5


@pytest.mark.parametrize(("name", "records"), [
    ("TLS1_3_TLS_AES_128_CCM_SHA256", 18),
    ("TLS1_3_TLS_AES_128_GCM_SHA256", 18),
    ("TLS1_3_TLS_AES_256_GCM_SHA384", 18),
    ("TLS1_3_TLS_CHACHA20_POLY1305_SHA256", 18),
    ("mTLS1_3_RSA", 20),
])
def test_voev_snet_record_counts(corpus_dir, name, records):
    """Upstream (voev-snet/tests.conf) expects 18 decrypted records per TLS 1.3 capture, 20 with
    client certificates."""
    counts, _ = _run(str(corpus_dir / "voev-snet" / f"{name}.pcap"), str(corpus_dir / "voev-snet" / f"{name}.txt"))
    assert counts["tls_records_decrypted"] == records
    assert counts["tls_records_application"] == 10  # tshark: 10 frames of decrypted application data


@pytest.mark.parametrize("name", ["AES128-SHA256", "DHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                  "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"])
def test_voev_snet_tls12_application_records(corpus_dir, name):
    base = f"voev-snet/TLS1_2_{name}_auth"
    truth = _groundtruth(corpus_dir)[f"{base}.pcap"]["tls"]["decryption"]
    counts, _ = _run(str(corpus_dir / f"{base}.pcap"), str(corpus_dir / f"{base}.txt"))
    assert counts["tls_records_application"] == truth["frames_with_decrypted_appdata"]
    assert counts.get("tls_records_failed", 0) == 0 and counts["tls_handshakes_decrypted"] == 1


def test_secrets_blocks_decrypt_like_the_key_log(corpus_dir):
    base = corpus_dir / "lbirchler-tls-decryption" / "tls3"
    _, from_blocks = _run(str(base / "dsb-tls3.cryptohack.org.pcapng"))
    _, from_file = _run(str(base / "tls3.cryptohack.org.pcapng"), str(base / "keylogfile.txt"))
    assert _decrypted_http(from_blocks) == _decrypted_http(from_file) == (["GET /"], Counter({"200": 1}))
    assert {r["decrypted"]["keys"] for r in from_blocks if "decrypted" in r} == {"pcapng"}


def test_sessions_missing_from_the_secrets_block_are_reported(corpus_dir):
    """lbirchler's dsb-dump.pcapng embeds 70 of premaster.txt's secrets, not those of its three
    SSL 2.0-format hellos: those sessions are reported, the others decrypt as with the file."""
    base = corpus_dir / "lbirchler-tls-decryption" / "tls2"
    counts, records = _run(str(base / "dsb-dump.pcapng"))
    missing = [r for r in records if r["event_type"] == "anomaly" and r["anomaly"]["event"] == "keys_missing"]
    assert sorted(r["src_port"] for r in missing) == [39028, 39035, 39036]
    assert "4575c2fa383b34ff9c5aa53c27a31188a5cbd9976dd1cbee23124aba078bc2f1" in missing[0]["anomaly"]["message"]
    hellos = {r["src_port"]: r["tls"] for r in _tls(records)}
    assert all(hellos[port]["sslv2_hello"] for port in (39028, 39035, 39036))
    assert _decrypted_http(records)[0] == ["GET /"] * 67 and counts["tls_handshakes_decrypted"] == 67


#: Captures without a TLS handshake whose flows are TLS records all the same (recognised from the
#: record layer alone), and why.
HANDSHAKELESS_TLS = {
    "scapy/tls_new-session-ticket.pcap": "12 server sides of resumed TLS 1.2 handshakes from port 443: "
                                         "NewSessionTicket, ChangeCipherSpec and Finished records, no hello",
}


def test_no_tls_where_there_is_none(corpus_dir):
    """Conservative detection: captures in which tshark saw no TLS handshake, and every capture the
    project ships (HTTP, gRPC, Triton, S3, LLM, TCPStore, NCCL ...), have no TLS flow, except the
    captures of TLS records without their handshake listed above."""
    files = [corpus_dir / name for name, truth in sorted(_groundtruth(corpus_dir).items())
             if "tls" not in truth and (corpus_dir / name).is_file()]
    files += expand_paths([REPO / "pcaps"])
    assert len(files) >= 120
    claimed, handshakeless = {}, {}
    for path in files:
        counts, records = _run(str(path))
        if _tls(records) or counts.get("app_tls", 0) != counts.get("tls_flows_without_handshake", 0):
            claimed[str(path)] = counts.get("app_tls")
        if counts.get("tls_flows_without_handshake"):
            handshakeless[str(path.relative_to(corpus_dir))] = counts["tls_flows_without_handshake"]
    assert claimed == {}
    assert handshakeless == {"scapy/tls_new-session-ticket.pcap": 12}


@pytest.mark.parametrize("name", ["illustrated-tls12", "illustrated-tls13"])
def test_illustrated_tls_plaintext(corpus_dir, name):
    """The Illustrated TLS connections carry "ping" and "pong" (their pages show the plaintext)."""
    from inspector.capture.decode import PacketDecoder
    from inspector.capture.reader import open_capture
    from inspector.capture.tls import DecryptedData, TlsSession
    from inspector.capture.tls_keylog import CaptureKeys

    log = KeyLog(DEFAULT_LIMITS)
    log.load(corpus_dir / name / "keylog.txt")
    session = TlsSession(DEFAULT_LIMITS, CaptureKeys(log, [], DEFAULT_LIMITS))
    decoder = PacketDecoder(DEFAULT_LIMITS)
    plaintext = [b"", b""]
    client_port = None
    for frame in open_capture(corpus_dir / name / "capture.pcap"):
        packet = decoder.decode(frame)
        if packet is None or not packet.payload:
            continue
        client_port = client_port or packet.sport  # the client speaks first
        for event in session.receive_data(0 if packet.sport == client_port else 1, packet.payload, frame.ts):
            if isinstance(event, DecryptedData):
                plaintext[event.direction] += event.data
    assert plaintext == [b"ping", b"pong"]
