"""Per-direction TCP reassembly: segments in capture order in, ordered stream bytes out.

One :class:`TcpDirection` per direction of a connection. It is fed segments (sequence number,
flags, payload) and calls its `StreamConsumer` with contiguous data, gaps and end of stream.

Policies (stated once, here):
- **Pickup.** Without a SYN the first data segment seen fixes the stream position, unless the
  peer already acknowledged a later position: bytes before it are old (a keep-alive probe, a
  retransmission) and are skipped.
- **Out of order.** Segments ahead of the expected sequence number wait in a bounded buffer
  (`Limits.max_out_of_order_bytes` / `max_out_of_order_segments`). When the buffer is full, when
  the peer acknowledges bytes we never saw, or when the flow ends, the missing range is declared a
  *gap*: the consumer is told its length and the waiting data follows.
- **Overlaps and retransmissions: first wins.** Bytes already delivered (or already waiting) are
  never replaced. When a retransmission carries different bytes for a range we still remember
  (the last `_RECENT_SEGMENTS` delivered segments), that is an `overlap_mismatch` anomaly: a classic
  IDS-evasion shape. A keep-alive probe (at most one byte, one below the expected sequence
  number; Windows fills it with garbage) is counted, not compared.
- **Data on a SYN** counts only once the peer acknowledges it (TCP Fast Open); a SYN-ACK that
  acknowledges just the SYN, or a data segment that reuses its sequence numbers, discards it.
- **End.** FIN ends the direction once every byte before it was delivered; RST ends both
  directions at once (the flow decides).

Sequence numbers wrap: all comparisons are modulo 2**32.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from inspector.limits import Limits

_MOD = 1 << 32
_HALF = 1 << 31
_RECENT_SEGMENTS = 16


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in sequence space."""
    d = (a - b) & 0xFFFFFFFF
    return d - _MOD if d >= _HALF else d


class StreamConsumer(Protocol):
    def on_data(self, direction: int, data: bytes, ts: float) -> None: ...
    def on_gap(self, direction: int, length: int, ts: float) -> None: ...
    def on_eof(self, direction: int, ts: float) -> None: ...
    def on_stream_anomaly(self, direction: int, event: str, message: str, ts: float) -> None: ...


class TcpCounters:
    """Reassembly counters for a whole run (shared by every direction)."""

    __slots__ = (
        "gap_bytes",
        "gaps",
        "keepalives",
        "midstream_pickups",
        "ooo_cap_hits",
        "ooo_segments",
        "overlap_mismatches",
        "retransmissions",
        "syn_data_ignored",
    )

    def __init__(self) -> None:
        self.gaps = 0
        self.gap_bytes = 0
        self.keepalives = 0
        self.midstream_pickups = 0
        self.ooo_cap_hits = 0
        self.ooo_segments = 0
        self.overlap_mismatches = 0
        self.retransmissions = 0
        self.syn_data_ignored = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class TcpDirection:
    """Reassembly state of one direction of a TCP connection."""

    __slots__ = (
        "_consumer",
        "_counters",
        "_limits",
        "_ooo",
        "_ooo_bytes",
        "_recent",
        "_syn_data",
        "delivered",
        "direction",
        "ended",
        "fin_seq",
        "isn",
        "next_seq",
        "peer_acked",
    )

    def __init__(self, direction: int, consumer: StreamConsumer, limits: Limits,
                 counters: TcpCounters) -> None:
        self.direction = direction
        self._consumer = consumer
        self._limits = limits
        self._counters = counters
        self.isn: int | None = None
        self.next_seq: int | None = None  # next byte expected
        self.fin_seq: int | None = None  # sequence number of the FIN
        self.ended = False
        self.delivered = 0  # bytes delivered (gaps excluded)
        self._ooo: dict[int, bytes] = {}  # seq -> payload waiting for earlier bytes
        self._ooo_bytes = 0
        self._recent: deque[tuple[int, bytes]] = deque(maxlen=_RECENT_SEGMENTS)
        self._syn_data: tuple[bytes, float] | None = None  # data on our SYN, until the peer ACKs it
        self.peer_acked: int | None = None  # before pickup: the peer's latest ACK of our bytes

    # -- input -------------------------------------------------------------------------------

    def syn(self, seq: int) -> None:
        """A SYN (or SYN-ACK) from this direction fixes the initial sequence number."""
        if self.next_seq is None or (self.delivered == 0 and not self._ooo):
            self.isn = seq
            self.next_seq = (seq + 1) & 0xFFFFFFFF

    def syn_data(self, payload: bytes, ts: float) -> None:
        """Data carried on this direction's SYN: held until the peer says whether it took it."""
        if self._syn_data is None and self.delivered == 0:
            self._syn_data = (payload, ts)

    def _resolve_syn_data(self, accepted: bool) -> None:
        payload, ts = self._syn_data  # type: ignore[misc]
        self._syn_data = None
        if accepted and self.isn is not None:
            self.segment((self.isn + 1) & 0xFFFFFFFF, payload, False, ts)
        else:
            self._counters.syn_data_ignored += 1

    def segment(self, seq: int, payload: bytes, fin: bool, ts: float, missing: int = 0) -> None:
        """A segment with data and/or FIN (SYN handled by :meth:`syn`); `missing` bytes of its
        payload follow `payload` on the wire but not in the capture (its snap length cut them)."""
        if self._syn_data is not None and payload:
            # Our next data reusing the SYN's sequence space: the SYN data was not taken.
            self._resolve_syn_data(accepted=seq != self.next_seq)
        if self.ended:
            if payload:
                self._counters.retransmissions += 1
            return
        if self.next_seq is None:
            self._counters.midstream_pickups += 1
            acked = self.peer_acked
            if acked is not None and payload and seq_diff(acked, seq) > 0:
                # The peer already has bytes up to `acked`: what comes before is old.
                old = seq_diff(acked, seq)
                if old >= len(payload):
                    self._counters.retransmissions += 1
                    self.next_seq = acked
                    self._check_fin(ts)
                    return
                seq, payload = acked, payload[old:]
            self.next_seq = seq
        if fin:
            self.fin_seq = (seq + len(payload) + missing) & 0xFFFFFFFF
        if payload:
            offset = seq_diff(seq, self.next_seq)
            if offset == 0:
                self._deliver(seq, payload, ts)
                if self._ooo:
                    self._drain(ts)
            elif offset == -1 and len(payload) == 1:
                self._counters.keepalives += 1  # keep-alive probe: an old byte, often garbage
            elif offset < 0:
                self._retransmission(seq, payload, -offset, ts)
            else:
                self._hold(seq, payload, ts)
        if missing:
            self._snapped_tail((seq + len(payload)) & 0xFFFFFFFF, missing, ts)
        self._check_fin(ts)

    def _snapped_tail(self, start: int, length: int, ts: float) -> None:
        """Bytes from `start` the capture did not keep: a gap now when nothing before them is
        missing; otherwise the gap before them, declared later (peer's ACK, flow's end), covers them."""
        if self.ended or self.next_seq is None or seq_diff(start, self.next_seq) > 0:
            return
        self._gap_to((start + length) & 0xFFFFFFFF, ts)  # no gap when all of them arrived already
        if self._ooo:
            self._drain(ts)

    def peer_ack(self, ack: int, ts: float) -> None:
        """The other direction acknowledged up to `ack`: bytes we never saw are lost to us."""
        if self.next_seq is None:
            self.peer_acked = ack
            return
        if self._syn_data is not None:
            self._resolve_syn_data(accepted=seq_diff(ack, self.next_seq) > 0)
        if not self._ooo or self.next_seq is None:
            return
        first = min(self._ooo, key=lambda s: seq_diff(s, self.next_seq))  # type: ignore[arg-type]
        if seq_diff(ack, self.next_seq) > 0 and seq_diff(first, self.next_seq) > 0:
            self._gap_to(first, ts)
            self._drain(ts)
            self._check_fin(ts)

    def flush(self, ts: float) -> None:
        """The flow ends: declare what is missing, deliver what waits, end the stream."""
        if self._syn_data is not None:
            self._resolve_syn_data(accepted=True)  # nobody refused it
        while self._ooo and not self.ended:
            first = min(self._ooo, key=lambda s: seq_diff(s, self.next_seq))  # type: ignore[arg-type]
            self._gap_to(first, ts)
            self._drain(ts)
        self.end(ts)

    def end(self, ts: float) -> None:
        if not self.ended:
            self.ended = True
            self._ooo.clear()
            self._ooo_bytes = 0
            self._consumer.on_eof(self.direction, ts)

    # -- internals ---------------------------------------------------------------------------

    def _deliver(self, seq: int, payload: bytes, ts: float) -> None:
        self.next_seq = (seq + len(payload)) & 0xFFFFFFFF
        self.delivered += len(payload)
        self._recent.append((seq, payload))
        self._consumer.on_data(self.direction, payload, ts)

    def _retransmission(self, seq: int, payload: bytes, behind: int, ts: float) -> None:
        """A segment starting before next_seq: compare the old part, deliver any new tail."""
        self._counters.retransmissions += 1
        old_part = payload[:behind]
        if self._differs_from_recent(seq, old_part):
            self._counters.overlap_mismatches += 1
            self._consumer.on_stream_anomaly(
                self.direction, "overlap_mismatch",
                f"retransmitted bytes at seq {seq} differ from the bytes first seen (first wins)", ts)
        if len(payload) > behind:
            self._deliver(self.next_seq, payload[behind:], ts)  # type: ignore[arg-type]
            if self._ooo:
                self._drain(ts)

    def _differs_from_recent(self, seq: int, data: bytes) -> bool:
        for old_seq, old in self._recent:
            start = seq_diff(seq, old_seq)
            if start >= len(old) or start + len(data) <= 0:
                continue
            a_from = max(start, 0)
            a_to = min(start + len(data), len(old))
            b_from = a_from - start
            if old[a_from:a_to] != data[b_from:b_from + (a_to - a_from)]:
                return True
        return False

    def _hold(self, seq: int, payload: bytes, ts: float) -> None:
        waiting = self._ooo.get(seq)
        if waiting is not None:
            common = min(len(waiting), len(payload))
            if waiting[:common] != payload[:common]:
                self._counters.overlap_mismatches += 1
                self._consumer.on_stream_anomaly(
                    self.direction, "overlap_mismatch",
                    f"two out-of-order segments at seq {seq} carry different bytes (first wins)", ts)
            if len(payload) <= len(waiting):
                self._counters.retransmissions += 1
                return
            payload = waiting + payload[len(waiting):]
            self._ooo_bytes -= len(waiting)
        self._counters.ooo_segments += 1
        self._ooo[seq] = payload
        self._ooo_bytes += len(payload)
        limits = self._limits
        if self._ooo_bytes > limits.max_out_of_order_bytes or len(self._ooo) > limits.max_out_of_order_segments:
            self._counters.ooo_cap_hits += 1
            first = min(self._ooo, key=lambda s: seq_diff(s, self.next_seq))  # type: ignore[arg-type]
            self._gap_to(first, ts)
            self._drain(ts)

    def _gap_to(self, seq: int, ts: float) -> None:
        length = seq_diff(seq, self.next_seq)  # type: ignore[arg-type]
        if length <= 0:
            return
        self._counters.gaps += 1
        self._counters.gap_bytes += length
        self.next_seq = seq
        self._consumer.on_gap(self.direction, length, ts)

    def _drain(self, ts: float) -> None:
        """Deliver waiting segments that are now contiguous (trimming overlaps, first wins)."""
        ooo = self._ooo
        # Ordered once: next_seq only moves forward, so the order relative to it holds.
        for seq in sorted(ooo, key=lambda s: seq_diff(s, self.next_seq)):  # type: ignore[arg-type]
            offset = seq_diff(seq, self.next_seq)  # type: ignore[arg-type]
            if offset > 0:
                return
            payload = ooo.pop(seq)
            self._ooo_bytes -= len(payload)
            if -offset < len(payload):
                self._deliver(self.next_seq, payload[-offset:], ts)  # type: ignore[arg-type]

    def _check_fin(self, ts: float) -> None:
        if self.fin_seq is not None and self.next_seq == self.fin_seq and not self._ooo:
            self.end(ts)
