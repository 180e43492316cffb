"""The run's counters: the EVE `stats` record `inspector analyze` writes last, the summary's
"Not analysed" rows and what they count, on a capture built to lose known amounts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from inspector.analyze import NOT_TRANSACTIONS, Analyzer
from inspector.runstats import not_analysed, stats_record
from inspector.sinks.eveschema import build_schema, shipped_schema

REPO = Path(__file__).resolve().parent.parent
CLIENT, SERVER = "10.1.0.5", "10.1.0.9"
REQUEST = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: triton\r\nContent-Length: 300\r\n\r\n"
MISSING = 100  # body bytes the capture never shows
START = 1_767_225_600.0


def _tcp(sport: int, dport: int, flags: str, seq: int, ack: int, payload: bytes = b"", *, reverse: bool = False):
    src, dst = (SERVER, CLIENT) if reverse else (CLIENT, SERVER)
    return Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack) / payload


def _handshake(port: int, dport: int) -> list:
    return [_tcp(port, dport, "S", 999, 0), _tcp(dport, port, "SA", 4999, 1000, reverse=True),
            _tcp(port, dport, "A", 1000, 5000)]


def _lossy_capture(path: Path) -> None:
    """An HTTP/1 request whose body misses MISSING bytes (the server acknowledges past them), a
    connection in no protocol we parse, three ARP frames and one IPv4 header cut short."""
    body = bytes(range(100)) * 3
    http = _handshake(40000, 8080)
    seq = 1000
    http.append(_tcp(40000, 8080, "PA", seq, 5000, REQUEST + body[:100]))
    seq += len(REQUEST) + 100
    http.append(_tcp(40000, 8080, "PA", seq + MISSING, 5000, body[100 + MISSING:]))  # the segment before is lost
    end = seq + 300 - 100
    http.append(_tcp(8080, 40000, "A", 5000, end, reverse=True))  # acknowledges the lost bytes
    http.append(_tcp(8080, 40000, "PA", 5000, end, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", reverse=True))
    other = [*_handshake(40001, 9999), _tcp(40001, 9999, "PA", 1000, 5000, b"\x17\x00\xff" * 1000)]
    frames = http + other + [Ether() / ARP(psrc=CLIENT, pdst=SERVER) for _ in range(3)]
    frames.append(Ether(type=0x0800) / bytes(IP(src=CLIENT, dst=SERVER))[:10])
    for n, frame in enumerate(frames):
        frame.time = START + n * 0.01
    wrpcap(str(path), frames)


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_stats_record_counts_what_was_lost(tmp_path):
    capture = tmp_path / "lossy.pcap"
    _lossy_capture(capture)
    out = tmp_path / "eve.json"
    done = _analyze(str(capture), "--eve", str(out))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    record = records[-1]
    assert record["event_type"] == "stats" and [r for r in records if r["event_type"] == "stats"] == [record]
    jsonschema.validate(record, shipped_schema())
    stats = record["stats"]
    assert stats["capture"] == {"files": 1, "files_damaged": 0, "packets": 15, "bytes": capture.stat().st_size
                                - 24 - 16 * 15, "dropped": 0}
    assert stats["decoder"] == {"non_ip": 3, "truncated_ip": 1}
    assert stats["tcp"]["gaps"] == 1 and stats["tcp"]["gap_bytes"] == MISSING
    assert stats["app_layer"]["unknown_protocol"] == 1 and stats["app_layer"]["app_http"] == 1
    assert stats["flow"] == {"total": 2, "evicted": 0, "timed_out": 0, "by_app": {"failed": 1, "http": 1}}
    assert record["timestamp"] == "2026-01-01T00:00:00.140000+0000"  # the last packet's time
    summary = done.stdout
    assert "Not analysed" in summary
    for line in ("not IPv4 or IPv6", "IP packet cut short", f"1 ({MISSING:,} bytes)", "in no protocol we parse"):
        assert line in summary


def test_workers_write_the_same_stats_record(tmp_path):
    capture = tmp_path / "lossy.pcap"
    _lossy_capture(capture)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert _analyze(str(capture), "-q", "--eve", str(one)).returncode == 0
    assert _analyze(str(capture), "-q", "--eve", str(two), "--workers", "2", "--shard", "flows").returncode == 0
    assert one.read_text().splitlines()[-1] == two.read_text().splitlines()[-1]


def test_a_whole_capture_has_nothing_in_the_not_analysed_rows():
    written: list[dict] = []
    analyzer = Analyzer(written.append)
    analyzer.analyze_file(REPO / "pcaps" / "core" / "grpc.pcap")
    assert not_analysed(analyzer.stats) == []
    record = stats_record(analyzer.stats)
    assert record["stats"]["decoder"] == {} and record["stats"]["tcp"] == {}
    transactions = Counter(r["event_type"] for r in written if r["event_type"] not in NOT_TRANSACTIONS)
    assert record["stats"]["records"]["transactions"] == dict(sorted(transactions.items())) != {}


def test_an_empty_run_still_writes_its_record(tmp_path):
    empty = tmp_path / "empty.pcap"
    wrpcap(str(empty), [])
    out = tmp_path / "eve.json"
    assert _analyze(str(empty), "-q", "--eve", str(out)).returncode == 0
    (line,) = out.read_text().splitlines()
    record = json.loads(line)
    assert record["stats"]["capture"] == {"files": 1, "files_damaged": 0, "packets": 0, "bytes": 0, "dropped": 0}
    assert record["timestamp"] == "1970-01-01T00:00:00.000000+0000"  # no capture time to give it


# -- the rule engine's counters (`detect`) -----------------------------------------------------

LAB = REPO / "pcaps" / "lab"
EVERY_TRITON = """title: {title}
id: 5e0c7a8b-1d2e-4f3a-9b4c-{sid:012d}
sid: {sid}
status: test
level: low
event: triton
detection:
  sel:
    event_type: triton
  condition: sel
"""
SUPPRESSED_NETS = "10.10.0.0/16"


def _detect_rules(tmp_path: Path) -> tuple[Path, Path]:
    """Two rules over every Triton record: a plain one, silenced for SUPPRESSED_NETS by the site
    config, and a rate rule (5 per client per hour)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "every.yml").write_text(EVERY_TRITON.format(title="every triton record", sid=9910001))
    (rules / "rate.yml").write_text(EVERY_TRITON.format(title="five triton records", sid=9910002)
                                    + "rate:\n  by: [src_ip]\n  count: 5\n  window: 1h\n")
    site = tmp_path / "site.yaml"
    site.write_text(f"suppress:\n  - sid: 9910001\n    src_ip: {SUPPRESSED_NETS}\n    reason: lab clients\n")
    return rules, site


def _expected_detect(captures: list[Path]) -> dict[str, int]:
    """What the two rules must count, from the Triton records a run without rules writes (each
    capture its own run of flows, as analyze reads them; a rate window spans the captures)."""
    import ipaddress

    per_client: Counter[str] = Counter()
    for capture in captures:
        written: list[dict] = []
        Analyzer(written.append).analyze_file(capture)
        per_client.update(r["src_ip"] for r in written if r["event_type"] == "triton")
    network = ipaddress.ip_network(SUPPRESSED_NETS)
    records = sum(per_client.values())
    suppressed = sum(n for ip, n in per_client.items() if ipaddress.ip_address(ip) in network)
    rate_alerts = sum(1 for n in per_client.values() if n >= 5)
    return {"rules_loaded": 2, "alert": records - suppressed + rate_alerts, "matches": 2 * records,
            "alerts_suppressed": suppressed, "rate_pending": sum(min(n, 4) for n in per_client.values()),
            "rate_quiet": sum(max(n - 5, 0) for n in per_client.values()), "rate_keys": len(per_client)}


@pytest.mark.parametrize("shard", ["flows", "files"])
def test_the_engine_counters_are_right_and_the_same_with_workers(tmp_path, shard):
    """Suppressed and rate-held matches are counted in the stats record, the summary and the
    textfile; with --workers (matches counted in the workers, rate windows in the parent) the
    numbers are one process's."""
    rules, site = _detect_rules(tmp_path)
    captures = [LAB / "mixed.pcap"]
    if shard == "files":  # two files to split: the same traffic again, a rate window across both
        captures.append(tmp_path / "again.pcap")
        captures[1].write_bytes(captures[0].read_bytes())
    expected = _expected_detect(captures)
    assert expected["alerts_suppressed"] == 30 * len(captures) and expected["rate_quiet"] > 0
    detects, summaries = [], []
    for workers in (1, 2):
        out, prom = tmp_path / f"eve{workers}.json", tmp_path / f"run{workers}.prom"
        done = _analyze(*map(str, captures), "--rules", str(rules), "--config", str(site), "--eve", str(out),
                        "--metrics-textfile", str(prom), "--workers", str(workers), "--shard", shard)
        assert done.returncode == 0, done.stderr
        record = json.loads(out.read_text().splitlines()[-1])
        jsonschema.validate(record, build_schema())
        detects.append(record["stats"]["detect"])
        assert record["stats"]["records"]["alerts"] == expected["alert"]
        summaries.append([line.split("│")[1:3] for line in done.stdout.splitlines()
                          if "rules" in line or "suppressed" in line or "rate:" in line])
        assert (f'inspector_offline_detect_total{{counter="alerts_suppressed"}} '
                f'{float(expected["alerts_suppressed"])}') in prom.read_text()
    assert detects == [expected, expected]
    assert [[cell.strip() for cell in row] for row in summaries[0]] == [
        ["rules", "2"], ["suppressed (site config)", f"{expected['alerts_suppressed']:,}"],
        ["rate: below count", f"{expected['rate_pending']:,}"],
        ["rate: after the alert", f"{expected['rate_quiet']:,}"]]
    assert summaries[1] == summaries[0]


def test_without_rules_there_is_no_detect_object(tmp_path):
    out = tmp_path / "eve.json"
    done = _analyze(str(REPO / "pcaps" / "core" / "grpc.pcap"), "--no-rules", "--eve", str(out))
    assert done.returncode == 0
    assert "detect" not in json.loads(out.read_text().splitlines()[-1])["stats"]
    assert "none (--no-rules)" in done.stdout


def test_the_detect_object_counts_the_work_on_a_last_file_that_did_not_open(tmp_path):
    """A capture that cannot be read still yields a `capture_damaged` anomaly, which the rules
    see: the stats record's matches include it even when that file is the run's last."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "damaged.yml").write_text(EVERY_TRITON.format(title="damaged capture", sid=9910003).replace(
        "event: triton", "event: anomaly").replace("event_type: triton", "anomaly.event: capture_damaged"))
    broken = tmp_path / "broken.pcap"
    broken.write_bytes(b"not a capture at all")
    out = tmp_path / "eve.json"
    done = _analyze(str(REPO / "pcaps" / "core" / "grpc.pcap"), str(broken), "--rules", str(rules), "--eve", str(out))
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    alerts = [r for r in records if r["event_type"] == "alert"]
    assert [a["alert"]["signature_id"] for a in alerts] == [9910003]
    assert records[-1]["stats"]["detect"]["matches"] == 1
