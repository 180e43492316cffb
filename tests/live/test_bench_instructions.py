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
    # The analysis of this capture costs about 30 M instructions; a run's count moves by about
    # 1 M with the scheduling (the parent's waits), so only the total is compared, with room.
    assert sum(analysis) - sum(baseline) > 10_000_000
