"""A capture taken with a snap length (`tcpdump -s N`): every frame longer than N keeps its first
N bytes and its length on the wire. The bytes cut are gaps in their streams, counted exactly; the
transactions whose heads fit are still parsed; nothing the capture lost is reported as malformed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from capture_builders import pcap_header, pcap_record

from inspector.capture.reader import open_capture

REPO = Path(__file__).resolve().parents[2]
CAPTURES = [REPO / "pcaps" / "clients" / "triton_rest.pcap", REPO / "pcaps" / "core" / "http1.pcap"]
SNAPLEN = 400  # the heads of these requests and responses fit, the larger bodies do not


def _snap(source: Path, target: Path, snaplen: int) -> int:
    """`source` rewritten as if captured with `snaplen`; returns the bytes cut."""
    reader = open_capture(source)
    records, cut = [], 0
    linktype = 1
    for frame in reader:
        linktype = frame.linktype
        sec = int(frame.ts)
        records.append(pcap_record(sec, round((frame.ts - sec) * 1e6), frame.data[:snaplen], wire_len=frame.wire_len))
        cut += max(0, len(frame.data) - snaplen)
    reader.close()
    target.write_bytes(pcap_header(snaplen=snaplen, linktype=linktype) + b"".join(records))
    return cut


def _records(capture: Path, out: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", str(capture), "-q", "--eve", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_snapped_capture_counts_what_was_cut_and_keeps_the_transactions(tmp_path, capture):
    snapped = tmp_path / "snapped.pcap"
    cut = _snap(capture, snapped, SNAPLEN)
    assert cut > 1_000  # the capture has frames to cut
    whole = _records(capture, tmp_path / "whole.json")
    part = _records(snapped, tmp_path / "part.json")
    stats, whole_stats = part[-1]["stats"], whole[-1]["stats"]
    frames_cut = sum(1 for frame in open_capture(capture) if len(frame.data) > SNAPLEN)
    assert stats["decoder"] == {**whole_stats["decoder"], "snapped": frames_cut}
    assert stats["tcp"].get("gap_bytes", 0) - whole_stats["tcp"].get("gap_bytes", 0) == cut
    assert stats["tcp"].get("ooo_segments", 0) == whole_stats["tcp"].get("ooo_segments", 0)  # none invented
    assert stats["records"]["transactions"] == whole_stats["records"]["transactions"]
    assert [r["flow"]["pkts_toserver"] for r in part if r["event_type"] == "flow"] == \
           [r["flow"]["pkts_toserver"] for r in whole if r["event_type"] == "flow"]
    new = {(r["anomaly"]["layer"], r["anomaly"]["event"]) for r in part if r["event_type"] == "anomaly"} - \
          {(r["anomaly"]["layer"], r["anomaly"]["event"]) for r in whole if r["event_type"] == "anomaly"}
    assert new <= {("http1", "gap"), ("triton", "triton_body_not_inspected")}, new  # losses, not lies
