"""FragmentReassembler: holes, overlaps (first wins), timeouts, caps, driven directly."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.capture.fragments import FRAGMENT_COUNTERS, FragmentReassembler
from inspector.limits import Limits

KEY = (4, b"\xc0\x00\x02\x01", b"\xc6\x33\x64\x07", 4242, 17)
PAYLOAD = bytes(range(256)) * 10  # 2,560 bytes
MAX = 0xFFFF - 20


class Recorder:
    """A reassembler with its counters and reported anomalies at hand."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.counters: dict[str, int] = {}
        self.reports: list[tuple[str, str, float, int]] = []
        self.reassembler = FragmentReassembler(limits or Limits(), self.counters,
                                               lambda *report: self.reports.append(report))

    def add(self, offset: int, data: bytes, more: bool, ts: float = 1.0, number: int = 1,
            key: tuple = KEY) -> tuple[bytes, int] | None:
        return self.reassembler.add(key, offset, data, more, ts, number, len(data) + 34, MAX)  # type: ignore[arg-type]

    @property
    def events(self) -> list[str]:
        return [report[0] for report in self.reports]


def pieces(payload: bytes, size: int) -> list[tuple[int, bytes, bool]]:
    cuts = list(range(0, len(payload), size))
    return [(start, payload[start:start + size], start + size < len(payload)) for start in cuts]


def test_counters_are_registered() -> None:
    recorder = Recorder()
    assert recorder.counters == dict.fromkeys(FRAGMENT_COUNTERS, 0)


def test_in_order_and_wire_bytes() -> None:
    recorder = Recorder()
    parts = pieces(PAYLOAD, 1000)
    results = [recorder.add(*part) for part in parts]
    assert results[:-1] == [None, None]
    assert results[-1] == (PAYLOAD, sum(len(data) + 34 for _, data, _ in parts))
    assert len(recorder.reassembler) == 0 and recorder.reports == []


def test_last_fragment_first() -> None:
    recorder = Recorder()
    parts = pieces(PAYLOAD, 512)
    assert [recorder.add(*part) for part in reversed(parts[1:])] == [None] * (len(parts) - 1)
    assert recorder.add(*parts[0]) == (PAYLOAD, sum(len(d) + 34 for _, d, _ in parts))


def test_a_hole_never_completes() -> None:
    recorder = Recorder()
    parts = pieces(PAYLOAD, 512)
    del parts[2]
    assert all(recorder.add(*part) is None for part in parts)
    assert len(recorder.reassembler) == 1
    recorder.reassembler.flush()
    assert recorder.counters["fragments_incomplete"] == 1 and len(recorder.reassembler) == 0


def test_identical_overlap_is_counted_not_reported() -> None:
    recorder = Recorder()
    recorder.add(0, PAYLOAD[:1000], True)
    recorder.add(800, PAYLOAD[800:1600], True)  # 200 bytes again, same content
    assert recorder.add(1600, PAYLOAD[1600:], False) == (PAYLOAD, 1000 + 800 + 960 + 3 * 34)
    assert recorder.counters["fragment_overlaps"] == 1 and recorder.reports == []


def test_different_overlap_keeps_the_first_bytes_and_reports() -> None:
    recorder = Recorder()
    recorder.add(8, b"B" * 16, True, number=1)
    recorder.add(0, b"A" * 32, True, number=2)  # covers the Bs on both sides
    result = recorder.add(32, b"C" * 8, False, number=3)
    assert result is not None and result[0] == b"A" * 8 + b"B" * 16 + b"A" * 8 + b"C" * 8
    assert recorder.reports == [("fragment_overlap", "fragment [0, 32) overlaps earlier fragments with "
                                 "different bytes; the earlier bytes are kept", 1.0, 2)]


def test_second_last_fragment_with_another_end_is_refused() -> None:
    recorder = Recorder()
    recorder.add(0, b"x" * 8, True)
    recorder.add(16, b"y" * 8, False)  # the datagram is 24 bytes; 8..16 still missing
    assert recorder.add(16, b"z" * 16, False, number=3) is None
    assert recorder.add(24, b"w" * 8, True, number=4) is None  # beyond the end
    assert recorder.events == ["fragment_inconsistent", "fragment_inconsistent"]
    assert recorder.counters["fragments_dropped"] == 2


def test_last_fragment_before_data_already_held_is_refused() -> None:
    recorder = Recorder()
    recorder.add(32, b"late" * 4, True)
    assert recorder.add(8, b"end!" * 2, False) is None
    assert recorder.events == ["fragment_inconsistent"]


def test_zero_length_last_fragment_marks_the_end() -> None:
    recorder = Recorder()
    assert recorder.add(0, b"a" * 16, True) is None
    assert recorder.add(16, b"", False) == (b"a" * 16, 16 + 34 + 34)


def test_keys_are_separate() -> None:
    recorder = Recorder()
    other = (4, KEY[1], KEY[2], KEY[3], 6)
    recorder.add(0, b"1" * 8, True)
    recorder.add(0, b"2" * 8, True, key=other)
    assert recorder.add(8, b"1" * 8, False) == (b"1" * 16, 84)
    assert recorder.add(8, b"2" * 8, False, key=other) == (b"2" * 16, 84)


def test_timeout_counts_from_the_first_fragment() -> None:
    recorder = Recorder(Limits(fragment_timeout=30.0))
    recorder.add(0, b"a" * 8, True, ts=100.0)
    recorder.add(8, b"b" * 8, True, ts=125.0)
    assert recorder.add(16, b"c" * 8, False, ts=130.0) == (b"a" * 8 + b"b" * 8 + b"c" * 8, 3 * 42)
    recorder.add(0, b"a" * 8, True, ts=200.0)
    recorder.add(8, b"b" * 8, True, ts=229.0)
    assert recorder.add(16, b"c" * 8, False, ts=230.5) is None  # the set from 200.0 expired first
    assert recorder.counters["fragments_expired"] == 1


def test_expire_on_demand() -> None:
    recorder = Recorder(Limits(fragment_timeout=5.0))
    recorder.add(0, b"a" * 8, True, ts=1.0, key=(4, b"a", b"b", 1, 17))
    recorder.add(0, b"a" * 8, True, ts=3.0, key=(4, b"a", b"b", 2, 17))
    recorder.reassembler.expire(7.0)
    assert len(recorder.reassembler) == 1 and recorder.counters["fragments_expired"] == 1


def test_set_cap_evicts_the_oldest() -> None:
    recorder = Recorder(Limits(max_fragment_sets=3))
    keys = [(4, b"a", b"b", ident, 17) for ident in range(5)]
    for key in keys:
        recorder.add(0, b"x" * 8, True, key=key)
    assert recorder.counters["fragment_sets_evicted"] == 2 and len(recorder.reassembler) == 3
    assert recorder.add(8, b"y" * 8, False, key=keys[0]) is None  # gone: starts again
    assert recorder.add(8, b"y" * 8, False, key=keys[4]) == (b"x" * 8 + b"y" * 8, 84)


def test_datagram_size_cap() -> None:
    recorder = Recorder(Limits(max_fragment_bytes=1000))
    recorder.add(0, b"x" * 800, True)
    assert recorder.add(800, b"y" * 400, False) is None
    assert recorder.events == ["fragment_oversize"]
    assert "limited to 1000 bytes" in recorder.reports[0][1]
    assert len(recorder.reassembler) == 0 and recorder.counters["fragments_dropped"] == 1


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(min_size=1, max_size=3000), data=st.data())
def test_any_split_in_any_order_with_duplicates_reassembles(payload: bytes, data: st.DataObject) -> None:
    """Fragments on 8-byte boundaries, shuffled and partly repeated, give the payload back exactly."""
    blocks = (len(payload) + 7) // 8
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(blocks - 1, 1)), max_size=20))))
    bounds = [0, *(cut * 8 for cut in cuts if cut * 8 < len(payload)), len(payload)]
    parts = [(start, payload[start:stop], stop < len(payload)) for start, stop in itertools.pairwise(bounds)]
    extra = data.draw(st.lists(st.sampled_from(parts), max_size=4))
    seed = data.draw(st.integers(0, 2**32))
    arrival = parts + extra
    random.Random(seed).shuffle(arrival)
    recorder = Recorder()
    results = [recorder.add(*part) for part in arrival]
    done = [result for result in results if result is not None]
    assert done and done[0][0] == payload
    assert recorder.reports == []


def test_total_fragment_bytes_are_capped_oldest_evicted_first() -> None:
    """Many unfinished datagrams cannot hold more than max_fragment_total_bytes together."""
    counters: dict[str, int] = {}
    reports: list[tuple] = []
    limits = Limits(max_fragment_total_bytes=100_000, max_fragment_sets=10_000)
    reassembler = FragmentReassembler(limits, counters, lambda *a: reports.append(a))
    for ident in range(100):  # each set: one 8-byte fragment at offset 40,000 -> a 40 KB buffer
        key = (4, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", ident, 17)
        assert reassembler.add(key, 40_000, b"x" * 8, True, 1.0, ident, 60, 65535) is None
    assert len(reassembler) == 2
    assert counters["fragment_sets_evicted"] == 98
