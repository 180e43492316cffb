"""Decryption of real TLS captures (tls_captures/, made on loopback by Python's ssl, OpenSSL and
curl): what happens when a key log lacks one direction's secret or has a wrong one, after a
renegotiation, after a KeyUpdate, without the handshake, and the suites' names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tls_traffic import analyze_with_keylog

from inspector.analyze import Analyzer
from inspector.capture.tls_keylog import KeyLog
from inspector.limits import DEFAULT_LIMITS
from inspector.runstats import not_analysed

CAPTURES = Path(__file__).parent / "tls_captures"
T13_URLS = ["/v1/completions/c0r0", "/models/c0r1?q=1", "/v1/completions/c0r2", "/missing"]


def analyze(capture: str, keylog: Path | None) -> tuple[Analyzer, list[dict]]:
    return analyze_with_keylog(CAPTURES / capture, keylog)


def of_type(records: list[dict], event_type: str) -> list[dict]:
    return [r for r in records if r["event_type"] == event_type]


def keylog_without(tmp_path: Path, source: str, label: str, corrupt: bool = False) -> Path:
    """`source`'s key log with the `label` line removed (or its secret flipped)."""
    lines = []
    for line in (CAPTURES / source).read_text().splitlines():
        if line.startswith(label + " "):
            if not corrupt:
                continue
            name, client_random, secret = line.split()
            line = f"{name} {client_random} {secret[:-2]}{int(secret[-2:], 16) ^ 0xFF:02x}"
        lines.append(line)
    path = tmp_path / "edited.keys"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_whole_key_log_decrypts_both_directions():
    analyzer, records = analyze("t13.pcap", CAPTURES / "t13.keys")
    exchanges = of_type(records, "http")
    assert [r["http"]["url"] for r in exchanges] == T13_URLS
    assert [r["http"]["status"] for r in exchanges] == [200, 200, 200, 404]
    assert not of_type(records, "anomaly")
    assert "tls_handshakes_decrypted_in_part" not in analyzer.stats.detection


def test_without_the_servers_secret_the_requests_are_still_reported(tmp_path):
    """The server's NewSessionTickets come before the client's first request: the lost server
    side must not throw the decrypted client side away (it did: no http record at all)."""
    keys = keylog_without(tmp_path, "t13.keys", "SERVER_TRAFFIC_SECRET_0")
    analyzer, records = analyze("t13.pcap", keys)
    exchanges = of_type(records, "http")
    assert [r["http"]["url"] for r in exchanges] == T13_URLS
    assert all("status" not in r["http"] for r in exchanges)  # as a cleartext capture missing the responses
    assert all(r["decrypted"]["cipher_suite"] == "TLS_AES_256_GCM_SHA384" for r in exchanges)
    tls_anomalies = [r["anomaly"] for r in of_type(records, "anomaly") if r["anomaly"]["layer"] == "tls"]
    (missing,) = tls_anomalies
    client_random = of_type(records, "tls")[0]  # the handshake record precedes
    assert missing["event"] == "keys_missing" and "SERVER_TRAFFIC_SECRET_0" in missing["message"]
    assert "server's application data" in missing["message"] and client_random["tls"]["ja4"]
    assert len(missing["message"].split("client random ")[1].split(":")[0]) == 64
    counts = analyzer.stats.detection
    assert counts["tls_handshakes_decrypted_in_part"] == 1 and counts["tls_records_not_decrypted"] > 0
    assert "tls_inner_gap_before_detection" not in counts and counts["tls_inner_app_http"] == 1
    rows = dict((what, count) for what, count, _ in not_analysed(analyzer.stats))
    assert rows["TLS sessions decrypted in part (a side's keys missing or wrong)"] == 1


def test_without_the_clients_secret_the_responses_are_reported(tmp_path):
    keys = keylog_without(tmp_path, "t13.keys", "CLIENT_TRAFFIC_SECRET_0")
    _, records = analyze("t13.pcap", keys)
    assert [r["http"].get("status") for r in of_type(records, "http")] == [200, 200, 200, 404]
    assert all("url" not in r["http"] for r in of_type(records, "http"))
    events = [r["anomaly"]["event"] for r in of_type(records, "anomaly")]
    assert events.count("keys_missing") == 1 and events.count("response_without_request") == 4


def test_a_wrong_server_secret_fails_that_side_only(tmp_path):
    keys = keylog_without(tmp_path, "t13.keys", "SERVER_TRAFFIC_SECRET_0", corrupt=True)
    analyzer, records = analyze("t13.pcap", keys)
    assert [r["http"]["url"] for r in of_type(records, "http")] == T13_URLS
    (failed,) = [r["anomaly"] for r in of_type(records, "anomaly") if r["anomaly"]["layer"] == "tls"]
    assert failed["event"] == "decryption_failed" and "server:" in failed["message"]
    assert "client:" not in failed["message"] and "client random " in failed["message"]
    assert analyzer.stats.detection["tls_records_failed"] > 0


def test_http2_without_the_servers_secret_keeps_the_requests(tmp_path):
    keys = keylog_without(tmp_path, "h2_13.keys", "SERVER_TRAFFIC_SECRET_0")
    _, records = analyze("h2_13.pcap", keys)
    exchanges = of_type(records, "http")
    assert [(r["http"]["http_method"], r["http"]["url"]) for r in exchanges] == [
        ("POST", "/v1/models/a"), ("GET", "/missing/b"), ("PUT", "/v1/chat/completions?stream=false")]
    assert all(r["http"]["protocol"] == "HTTP/2" and "status" not in r["http"] for r in exchanges)
    _, whole = analyze("h2_13.pcap", CAPTURES / "h2_13.keys")
    assert [r["http"]["status"] for r in of_type(whole, "http")] == [200, 404, 200]


def test_renegotiation_is_not_reported_as_wrong_keys():
    analyzer, records = analyze("reneg.pcap", CAPTURES / "reneg.keys")
    assert [r["anomaly"]["event"] for r in of_type(records, "anomaly")] == ["renegotiation"]
    counts = analyzer.stats.detection
    assert counts["tls_records_after_renegotiation"] > 0 and "tls_records_failed" not in counts
    assert counts["tls_handshakes_decrypted"] == 1


def test_openssl_keyupdate_lines_are_valid_and_the_records_decrypt():
    log = KeyLog(DEFAULT_LIMITS)
    log.load(CAPTURES / "ku_K.keys")
    assert log.stats.malformed == 0 and log.stats.unused == 3  # EXPORTER_SECRET, CLIENT_/SERVER_TRAFFIC_SECRET_N
    analyzer, records = analyze("ku_K.pcap", CAPTURES / "ku_K.keys")
    counts = analyzer.stats.detection
    assert counts["tls_key_updates"] >= 2 and "tls_records_failed" not in counts
    assert of_type(records, "http")[0]["http"]["url"] == "/hello.json"


def test_a_flow_without_its_handshake_is_tls_and_said_so():
    analyzer, records = analyze("nohs.pcap", CAPTURES / "nohs.keys")
    flows = of_type(records, "flow")
    assert [f["app_proto"] for f in flows] == ["tls", "tls", "tls"]
    (missing,) = [r for r in of_type(records, "anomaly") if r["anomaly"]["event"] == "handshake_missing"]
    assert missing["src_port"] == 34942 and missing["anomaly"]["layer"] == "tls"
    counts = analyzer.stats.detection
    assert counts["tls_flows_without_handshake"] == 1 and "unknown_protocol" not in counts
    assert len(of_type(records, "http")) == 4  # the two whole connections still decrypt
    _, keyless = analyze("nohs.pcap", None)
    assert not of_type(keyless, "anomaly")  # no key material: a handshake-less flow is counted, not reported


@pytest.mark.parametrize(("capture", "name"), [
    ("o12_cam", "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA"),
    ("o12_psk", "TLS_PSK_WITH_AES_128_GCM_SHA256"),
    ("o12_null", "TLS_RSA_WITH_NULL_SHA256"),
])
def test_suites_have_their_iana_names(capture, name):
    _, records = analyze(f"{capture}.pcap", CAPTURES / f"{capture}.keys")
    assert of_type(records, "tls")[0]["tls"]["cipher_suite_name"] == name


def test_every_decrypted_suite_has_an_iana_name():
    from inspector.capture.tls_crypto import SUITES
    from inspector.protocols.tls import cipher_suite_name

    names = {code: cipher_suite_name(code) for code in SUITES}
    assert all(name.startswith("TLS_") for name in names.values()), names
    assert len(set(names.values())) == len(names)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", "--no-rules", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("content", "says"), [
    (b"", "the file is empty"),
    ("CLIENT_RANDOM aa bb\n".encode("utf-16"), "UTF-16"),
    (b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n", "PEM file"),
    (bytes(range(256)) * 4, "binary data"),
])
def test_a_key_log_without_secrets_is_warned_about_and_still_key_material(tmp_path, content, says):
    keylog = tmp_path / "bad.keys"
    keylog.write_bytes(content)
    eve = tmp_path / "eve.json"
    done = _cli(str(CAPTURES / "t13.pcap"), "--keylog", str(keylog), "--eve", str(eve))
    assert done.returncode == 0, done.stderr
    assert "gave no TLS secret" in done.stderr and says in done.stderr
    assert "key log secrets" in done.stdout  # the key log rows are shown
    assert '"event":"keys_missing"' in eve.read_text().replace(" ", "")


def test_the_summary_says_which_sessions_were_decrypted_on_one_side_only(tmp_path, capsys):
    from inspector.cli import main

    keys = keylog_without(tmp_path, "t13.keys", "SERVER_TRAFFIC_SECRET_0")
    assert main(["analyze", str(CAPTURES / "t13.pcap"), "--keylog", str(keys), "--eve", str(tmp_path / "e.json")]) == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in capsys.readouterr().out.splitlines() if line.count("│") >= 3}
    assert rows["decrypted"] == "1" and rows["of which one side only (its keys missing or wrong)"] == "1"
