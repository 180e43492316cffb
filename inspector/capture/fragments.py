"""IP fragment reassembly: collect the fragments of one datagram and hand back its payload.

A datagram is keyed by (IP version, source, destination, identification, protocol). Each set keeps
a buffer and the list of byte ranges filled so far. Overlapping fragments keep the bytes that
arrived first; an overlap whose bytes disagree is reported (`fragment_overlap`), the classic IDS
evasion. Sets expire on capture time (Limits.fragment_timeout, counted from a set's first
fragment), their number is capped (Limits.max_fragment_sets, oldest evicted first) and so is the
size of one datagram (Limits.max_fragment_bytes, and what the IP header can express), and so are
the bytes held by all sets together (Limits.max_fragment_total_bytes, oldest evicted first).
"""

from __future__ import annotations

from collections.abc import Callable

from inspector.limits import Limits

__all__ = ["FRAGMENT_COUNTERS", "FragmentKey", "FragmentReassembler"]

FragmentKey = tuple[int, bytes, bytes, int, int]  # (ip version, src, dst, identification, protocol)
Report = Callable[[str, str, float, int], None]  # (event, message, ts, number)

FRAGMENT_COUNTERS = (
    "fragments_expired",  # sets dropped unfinished after fragment_timeout
    "fragment_sets_evicted",  # sets dropped unfinished because max_fragment_sets was reached
    "fragments_incomplete",  # sets still unfinished when the capture ended (flush)
    "fragment_overlaps",  # fragments that overlapped bytes already held (same or different bytes)
    "fragments_dropped",  # fragments refused: beyond the datagram's size or end, or a set given up
)


class _FragmentSet:
    __slots__ = ("buffer", "filled", "first_ts", "total", "wire_len")

    def __init__(self, first_ts: float) -> None:
        self.first_ts = first_ts
        self.buffer = bytearray()
        self.filled: list[tuple[int, int]] = []  # sorted, merged [start, stop) ranges held
        self.total = -1  # payload length, known once the last fragment (more=False) arrived
        self.wire_len = 0  # wire bytes of every fragment seen, for the reassembled packet


class FragmentReassembler:
    """Reassemble fragmented datagrams; counters and anomalies go to the structures given."""

    def __init__(self, limits: Limits, counters: dict[str, int], report: Report) -> None:
        self._timeout = limits.fragment_timeout
        self._max_sets = limits.max_fragment_sets
        self._max_bytes = limits.max_fragment_bytes
        self._max_total = limits.max_fragment_total_bytes
        self._held = 0  # bytes in every set's buffer
        self._counters = counters
        self._report = report
        self._sets: dict[FragmentKey, _FragmentSet] = {}  # insertion order = age
        for name in FRAGMENT_COUNTERS:
            counters.setdefault(name, 0)

    def __len__(self) -> int:
        return len(self._sets)

    def add(self, key: FragmentKey, offset: int, data: bytes, more: bool, ts: float, number: int,
            wire_len: int, max_payload: int) -> tuple[bytes, int] | None:
        """Add one fragment; return (payload, wire bytes of all its fragments) when the datagram is whole.

        ``offset`` is in bytes, ``more`` is the more-fragments flag, ``max_payload`` the largest
        payload the IP header can describe.
        """
        counters = self._counters
        sets = self._sets
        if sets:
            self.expire(ts)
        fragments = sets.get(key)
        if fragments is None:
            if len(sets) >= self._max_sets:
                self._drop(next(iter(sets)))
                counters["fragment_sets_evicted"] += 1
            fragments = sets[key] = _FragmentSet(ts)
        fragments.wire_len += wire_len
        start = offset
        stop = offset + len(data)
        limit = min(max_payload, self._max_bytes)
        if stop > limit:
            self._drop(key)
            counters["fragments_dropped"] += 1
            self._report("fragment_oversize", f"fragment ends at byte {stop} of a datagram limited to "
                         f"{limit} bytes; set dropped", ts, number)
            return None
        if fragments.total >= 0 and (stop > fragments.total or (not more and stop != fragments.total)):
            counters["fragments_dropped"] += 1
            self._report("fragment_inconsistent", f"fragment [{start}, {stop}) disagrees with the "
                         f"datagram length {fragments.total} given by the last fragment", ts, number)
            return None
        if not more:
            if fragments.filled and fragments.filled[-1][1] > stop:
                counters["fragments_dropped"] += 1
                self._report("fragment_inconsistent", f"last fragment ends at {stop} but bytes up to "
                             f"{fragments.filled[-1][1]} were already received", ts, number)
                return None
            fragments.total = stop
        if start < stop:
            before = len(fragments.buffer)
            self._merge(fragments, start, stop, data, ts, number)
            self._held += len(fragments.buffer) - before
        if fragments.total >= 0 and fragments.filled == [(0, fragments.total)]:
            self._drop(key)
            return bytes(fragments.buffer[:fragments.total]), fragments.wire_len
        while self._held > self._max_total and sets:
            oldest = next(iter(sets))
            self._drop(oldest)
            counters["fragment_sets_evicted"] += 1
            if oldest == key:
                break
        return None

    def _drop(self, key: FragmentKey) -> None:
        fragments = self._sets.pop(key, None)
        if fragments is not None:
            self._held -= len(fragments.buffer)

    def _merge(self, fragments: _FragmentSet, start: int, stop: int, data: bytes, ts: float,
               number: int) -> None:
        """Copy the bytes not held yet (first wins) and report overlaps whose bytes differ."""
        buffer = fragments.buffer
        if len(buffer) < stop:
            buffer.extend(bytes(stop - len(buffer)))
        pos = start
        overlapped = differ = False
        for held_start, held_stop in fragments.filled:
            if held_stop <= start or held_start >= stop:
                continue
            low, high = max(held_start, start), min(held_stop, stop)
            overlapped = True
            if buffer[low:high] != data[low - start:high - start]:
                differ = True
            if pos < low:
                buffer[pos:low] = data[pos - start:low - start]
            pos = max(pos, high)
        if pos < stop:
            buffer[pos:stop] = data[pos - start:]
        merged: list[tuple[int, int]] = []
        for held in sorted([*fragments.filled, (start, stop)]):
            if merged and held[0] <= merged[-1][1]:
                if held[1] > merged[-1][1]:
                    merged[-1] = (merged[-1][0], held[1])
            else:
                merged.append(held)
        fragments.filled = merged
        if overlapped:
            self._counters["fragment_overlaps"] += 1
            if differ:
                self._report("fragment_overlap", f"fragment [{start}, {stop}) overlaps earlier fragments "
                             "with different bytes; the earlier bytes are kept", ts, number)

    def expire(self, now: float) -> None:
        """Drop the sets whose first fragment is older than the timeout (capture time)."""
        sets = self._sets
        deadline = now - self._timeout
        while sets:
            key = next(iter(sets))
            if sets[key].first_ts >= deadline:
                break
            self._drop(key)
            self._counters["fragments_expired"] += 1

    def flush(self) -> None:
        """End of capture: count and drop every unfinished set."""
        self._counters["fragments_incomplete"] += len(self._sets)
        self._sets.clear()
        self._held = 0
