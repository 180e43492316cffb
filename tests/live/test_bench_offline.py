"""benchmarks/bench_offline.py's sharding comparisons on a real shipped capture: the lines a
reader of the benchmark compares (the speed-up, each alternating pair, and what two independent
processes get from the machine) are printed with positive ratios."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.bench_offline import independent_pair, speedup

REPO = Path(__file__).resolve().parents[2]
CAPTURE = REPO / "pcaps" / "core" / "grpc.pcap"
_RATIO = r"(\d+\.\d\d)x"


def test_the_sharded_speed_up_prints_each_pair(capsys):
    speedup("one file", [CAPTURE], 2, 2)
    out = capsys.readouterr().out
    pairs = re.search(r"each alternating pair \(this machine's spread\): (.*)", out)
    assert pairs is not None, out
    assert [float(r) > 0 for r in re.findall(_RATIO, pairs.group(1))] == [True, True]


def test_two_independent_processes_are_timed_against_one(capsys):
    independent_pair(CAPTURE, 1)
    out = capsys.readouterr().out
    found = re.search(rf"two independent processes at once: .* {_RATIO} the work per second of one "
                      rf"\(each pair: {_RATIO}\)", out)
    assert found is not None, out
    assert float(found.group(1)) == float(found.group(2)) > 0  # one pair: its ratio is the median


def test_the_dpkt_baseline_and_the_rotation_read_a_pcapng_as_the_pcap(tmp_path):
    import dpkt

    from benchmarks.bench_offline import dpkt_loop, rotate

    copy = tmp_path / "grpc.pcapng"
    with open(CAPTURE, "rb") as source, open(copy, "wb") as out:
        reader = dpkt.pcap.Reader(source)
        writer = dpkt.pcapng.Writer(out, linktype=reader.datalink())
        for ts, buf in reader:
            writer.writepkt(buf, ts=ts)
    assert dpkt_loop(copy) == dpkt_loop(CAPTURE) > 0
    parts = rotate(copy, 2, tmp_path)
    assert sum(dpkt_loop(part) for part in parts) == dpkt_loop(CAPTURE)
