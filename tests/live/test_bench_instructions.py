"""benchmarks/bench_instructions.py: instruction counts of every process of a real `inspector
analyze` run under valgrind (skipped where valgrind is not installed)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from benchmarks.bench_instructions import empty_like, instructions

REPO = Path(__file__).resolve().parents[2]


def test_the_empty_capture_keeps_the_link_type(tmp_path):
    source = tmp_path / "sll2.pcap"
    source.write_bytes(struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 276))  # big-endian, Linux SLL2
    empty = empty_like(source, tmp_path / "empty.pcap")
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", empty.read_bytes())
    assert (magic, linktype) == (0xA1B2C3D4, 276) and len(empty.read_bytes()) == 24
    assert struct.unpack_from("<I", empty_like(REPO / "pcaps" / "core" / "grpc.pcap", tmp_path / "e2.pcap")
                              .read_bytes(), 20)[0] == 1


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_every_process_of_a_sharded_run_is_counted(tmp_path):
    capture = REPO / "pcaps" / "core" / "grpc.pcap"
    empty = empty_like(capture, tmp_path / "empty.pcap")
    instructions(empty, 2, "flows")  # bytecode compiled once, not inside one of the two runs
    analysis = instructions(capture, 2, "flows")
    baseline = instructions(empty, 2, "flows")
    assert len(analysis) == len(baseline) == 3  # the parent and its two workers (worker 0 reads)
    # A forked worker's count starts from its parent's at the fork. What the parent did before
    # forking moves by a few M from one environment to another (6 M more in an empty-capture run
    # under pytest in a fresh clone than outside it, in all three processes alike), so each
    # worker is taken relative to the parent, which cancels it: the workers' own analysis of
    # this capture is about 20 M instructions (worker 0 reads and feeds), the parent's part after
    # the fork about 1 M; a run's count moves by about 1 M with the scheduling.
    def workers_own(counts: list[int]) -> int:
        parent, *workers = counts
        return sum(worker - parent for worker in workers)

    assert workers_own(analysis) - workers_own(baseline) > 10_000_000
