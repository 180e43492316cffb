"""The offline path against real captures from public projects (../shared/corpus).

Checked through the whole pipeline (reader, decoder, flows, reassembly, sessions, records):
- every capture runs without an uncaught exception, with dpkt's packet count;
- the four grpc-go captures: method paths, message counts and lengths each way, grpc-status;
- cleartext HTTP/1 and HTTP/2 captures: request lines and response statuses as tshark 4.0
  lists them in _groundtruth, except the differences listed below with their reason.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from inspector.analyze import Analyzer
from inspector.redact import redact_url

#: Captures where our reading differs from tshark's, and why (each checked by hand).
KNOWN_DIFFERENCES = {
    "arkime/http2-nghttp2.pcap": "tshark 4.0 misses the CONTINUATION-split request `GET /` "
                                 "(arkime's own .test lists both requests, as we do)",
    "ja4/latest.pcapng": "M-SEARCH requests are SSDP over UDP; HTTP is parsed over TCP only",
    "ja4/tls3.pcapng": "M-SEARCH requests are SSDP over UDP; HTTP is parsed over TCP only",
    "suricata-verify/http-request-invalid/input.pcap": "M-SEARCH requests are SSDP over UDP",
    "ndpi/fuzz-2006-09-29-28586.pcap": "a fuzzed capture (tshark marks 3 frames malformed): the "
                                       "parsers pair responses differently",
    "suricata-verify/dns-over-http2/dns_over_https.pcap": "a response arriving after the client reset "
                                                          "its stream is not reported as a transaction",
    "suricata-verify/http2-errorcode/input.pcap": "tshark does not dissect the HTTP/2 inside the CONNECT "
                                                  "tunnel (no decode-as); we see its extra 200",
    "zeek/http-261/variant-03-cl_negative.pcap": "Content-Length: -1 makes the direction unparseable: "
                                                 "the smuggled request behind it is not read (anomaly instead)",
    "zeek/http/methods.pcap": "tshark also counts HTTP/0.9-style and malformed request lines that we "
                              "report as invalid_request_line anomalies",
}

#: Packet counts that differ from dpkt's, and why.
COUNT_DIFFERENCES = {
    # The second record claims a 1,409,179,648-byte packet; dpkt returns the 141 bytes left in the
    # file as a packet, libpcap and we stop and report the damage.
    "suricata-verify/bug-6875-01/fuzz.pcap": 1,
}


def _inventory(corpus: Path) -> list[dict[str, str]]:
    with open(corpus / "INVENTORY.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _groundtruth(corpus: Path) -> dict:
    return json.loads((corpus / "_groundtruth" / "tshark_groundtruth.json").read_text())


def analyze(path: Path) -> tuple[Analyzer, list[dict]]:
    records: list[dict] = []
    analyzer = Analyzer(records.append)
    analyzer.analyze_file(path)
    return analyzer, records


def test_every_capture_runs_with_dpkt_packet_counts(corpus_dir):
    mismatches = {}
    for row in _inventory(corpus_dir):
        if row["file_type"] not in ("pcap", "pcapng"):
            continue
        analyzer, records = analyze(corpus_dir / row["local_path"])
        result = analyzer.stats.files[0]
        expected = COUNT_DIFFERENCES.get(row["local_path"], int(row["packets_dpkt"]))
        if result.packets != expected:
            mismatches[row["local_path"]] = (result.packets, expected)
        json.dumps(records)  # every record serializes
    assert mismatches == {}


GRPC_GO = ["Unary.pcapng", "Server Streaming.pcapng", "Client Streaming.pcapng", "Bidi Streaming.pcapng"]


@pytest.mark.parametrize("name", GRPC_GO)
def test_grpc_go_captures(corpus_dir, name):
    truth = _groundtruth(corpus_dir)[f"grpc-go-for-professionals/{name}"]["grpc"]
    _, records = analyze(corpus_dir / "grpc-go-for-professionals" / name)
    (call,) = [r for r in records if "grpc" in r and r["event_type"] != "alert"]
    grpc = call["grpc"]
    assert [grpc["path"]] == truth["paths"]
    assert grpc["request"]["messages"] == truth["msgs_client_to_server"]
    assert grpc["response"]["messages"] == truth["msgs_server_to_client"]
    assert grpc["request"]["lengths"] == truth["msg_lengths_c2s"]
    assert grpc["response"]["lengths"] == truth["msg_lengths_s2c"]
    assert grpc["request"]["compressed"] + grpc["response"]["compressed"] == truth["compressed_flag_counts"].get("1", 0)
    assert grpc["status"] == 0 and grpc["status_name"] == "OK"
    assert call["app_proto"] == "http2" and call["dest_port"] == 50051


def _cleartext_http(corpus: Path) -> list[str]:
    names = []
    for name, truth in sorted(_groundtruth(corpus).items()):
        if truth.get("keylog") or truth.get("pcapng_dsb"):
            continue  # HTTP inside TLS: tshark decrypted it with keys
        if "http1" in truth or "http2" in truth:
            names.append(name)
    return names


def _ours(records: list[dict]) -> tuple[list[str], list[str], Counter]:
    transactions = sorted((r for r in records if r["event_type"] not in ("flow", "anomaly", "alert") and "http" in r),
                          key=lambda r: r["timestamp"])
    h1 = [f"{r['http']['http_method']} {r['http']['url']}" for r in transactions
          if "http_method" in r["http"] and r["http"]["protocol"] != "HTTP/2"]
    h2 = [f"{r['http']['http_method']} {r['http']['url']}" for r in transactions
          if "http_method" in r["http"] and r["http"]["protocol"] == "HTTP/2"]
    statuses: Counter = Counter()
    for r in transactions:
        statuses.update(str(s) for s in r["http"].get("interim_status", []))
        if r["http"].get("status") is not None:
            statuses[str(r["http"]["status"])] += 1
    return h1, h2, statuses


def _redacted(lines: list[str]) -> list[str]:
    """tshark logs secrets; we redact secret query values (token=, api_key=, signatures)."""
    return [" ".join((method, redact_url(target))) for method, _, target in (line.partition(" ") for line in lines)]


def test_http_captures_match_tshark(corpus_dir):
    checked, differences = 0, {}
    for name in _cleartext_http(corpus_dir):
        truth = _groundtruth(corpus_dir)[name]
        _, records = analyze(corpus_dir / name)
        h1, h2, statuses = _ours(records)
        problems = []
        if "http1" in truth:
            t = truth["http1"]
            if len(h1) != t["requests"] or h1[:len(t["first_requests"])] != _redacted(t["first_requests"]):
                problems.append(f"HTTP/1 requests {h1[:8]} vs {t['first_requests']} ({t['requests']})")
        if "http2" in truth and sorted(h2) != sorted(_redacted(truth["http2"]["requests"])):
            problems.append(f"HTTP/2 requests {h2} vs {truth['http2']['requests']}")
        expected_statuses = Counter()
        for key in ("http1", "http2"):
            expected_statuses.update(truth.get(key, {}).get("status_counts", {}))
        if statuses != expected_statuses:
            problems.append(f"statuses {dict(statuses)} vs {dict(expected_statuses)}")
        if problems:
            differences[name] = problems
        checked += 1
    assert checked >= 50
    unexplained = {k: v for k, v in differences.items() if k not in KNOWN_DIFFERENCES}
    assert unexplained == {}
    stale = [k for k in KNOWN_DIFFERENCES if k not in differences]
    assert stale == [], "listed as different but now agree: remove from KNOWN_DIFFERENCES"


def test_nghttp2_continuation_requests_as_arkime_lists_them(corpus_dir):
    _, records = analyze(corpus_dir / "arkime" / "http2-nghttp2.pcap")
    _, h2, _ = _ours(records)
    assert sorted(h2) == ["GET /", "GET /stylesheets/screen.css"]
