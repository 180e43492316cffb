"""The run's counters: the EVE `stats` record `inspector analyze` writes last, the summary's
"Not analysed" rows and what they count, on a capture built to lose known amounts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jsonschema
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from inspector.analyze import NOT_TRANSACTIONS, Analyzer
from inspector.runstats import not_analysed, stats_record
from inspector.sinks.eveschema import shipped_schema

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
