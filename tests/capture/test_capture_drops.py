"""Drops the capture itself reports (pcapng Interface Statistics Blocks, as dumpcap writes them):
counted in the run's stats record and shown among what was not analysed, with or without workers."""

from __future__ import annotations

import json
import subprocess
import sys

from capture_builders import enhanced_packet, interface, interface_statistics, section_header
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_drops_the_capture_reports_are_counted(tmp_path):
    frame = bytes(Ether() / IP(src="10.1.0.5", dst="10.1.0.9") / TCP(sport=40000, dport=8080, flags="S"))
    capture = tmp_path / "dropped.pcapng"
    capture.write_bytes(section_header() + interface(1) + enhanced_packet(0, 1_000_000, frame)
                        + interface_statistics(0, 2_000_000, ifrecv=1_000, ifdrop=37))
    out = tmp_path / "eve.json"
    done = _analyze(str(capture), "--eve", str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text().splitlines()[-1])
    assert record["stats"]["capture"]["dropped"] == 37
    assert "packets the capturing host dropped" in done.stdout
    two = tmp_path / "two.json"
    assert _analyze(str(capture), "-q", "--eve", str(two), "--workers", "2", "--shard", "flows").returncode == 0
    assert two.read_text().splitlines()[-1] == out.read_text().splitlines()[-1]
