"""TCP reassembly: ordering, retransmissions, overlaps (first wins), gaps, caps, wraparound."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.capture.tcp import TcpCounters, TcpDirection, seq_diff
from inspector.limits import Limits


class Recorder:
    """Collects what the reassembler hands on, in order."""

    def __init__(self):
        self.items = []

    def on_data(self, direction, data, ts):
        self.items.append(("data", bytes(data)))

    def on_gap(self, direction, length, ts):
        self.items.append(("gap", length))

    def on_eof(self, direction, ts):
        self.items.append(("eof",))

    def on_stream_anomaly(self, direction, event, message, ts):
        self.items.append(("anomaly", event))

    @property
    def data(self):
        return b"".join(i[1] for i in self.items if i[0] == "data")


def make(limits=None, isn=1000):
    rec = Recorder()
    counters = TcpCounters()
    d = TcpDirection(0, rec, limits or Limits(), counters)
    d.syn(isn)
    return d, rec, counters


def test_in_order_and_fin():
    d, rec, _ = make()
    d.segment(1001, b"hello ", False, 1.0)
    d.segment(1007, b"world", True, 1.1)
    assert rec.data == b"hello world"
    assert rec.items[-1] == ("eof",)


def test_out_of_order_is_reordered():
    d, rec, c = make()
    d.segment(1007, b"world", False, 1.0)
    assert rec.data == b""
    d.segment(1001, b"hello ", False, 1.1)
    assert rec.data == b"hello world"
    assert c.ooo_segments == 1


def test_fin_waits_for_missing_bytes():
    d, rec, _ = make()
    d.segment(1007, b"world", True, 1.0)
    assert ("eof",) not in rec.items
    d.segment(1001, b"hello ", False, 1.1)
    assert rec.items[-1] == ("eof",) and rec.data == b"hello world"


def test_retransmission_same_bytes_is_silent():
    d, rec, c = make()
    d.segment(1001, b"abcdef", False, 1.0)
    d.segment(1001, b"abcdef", False, 1.1)
    assert rec.data == b"abcdef"
    assert c.retransmissions == 1 and c.overlap_mismatches == 0


def test_overlap_with_different_bytes_first_wins_and_is_reported():
    d, rec, c = make()
    d.segment(1001, b"GET /benign", False, 1.0)
    d.segment(1005, b"/hacked and more", False, 1.1)
    # first copy kept for the overlapping range, new tail delivered
    assert rec.data == b"GET /benign" + b"/hacked and more"[7:]
    assert ("anomaly", "overlap_mismatch") in rec.items
    assert c.overlap_mismatches == 1


def test_overlapping_out_of_order_segments_disagreeing():
    d, rec, c = make()
    d.segment(1005, b"XXXX", False, 1.0)
    d.segment(1005, b"YYYYZZ", False, 1.1)
    d.segment(1001, b"abcd", False, 1.2)
    assert rec.data == b"abcdXXXXZZ"
    assert c.overlap_mismatches == 1


def test_partial_overlap_in_buffer_is_trimmed():
    d, rec, _ = make()
    d.segment(1004, b"defgh", False, 1.0)
    d.segment(1006, b"fghij", False, 1.0)
    d.segment(1001, b"abc", False, 1.0)
    assert rec.data == b"abcdefghij"


def test_gap_declared_when_peer_acks_unseen_bytes():
    d, rec, c = make()
    d.segment(1001, b"aaaa", False, 1.0)
    d.segment(1009, b"cccc", False, 1.1)  # 1005..1008 never captured
    d.peer_ack(1013, 1.2)
    assert rec.items == [("data", b"aaaa"), ("gap", 4), ("data", b"cccc")]
    assert c.gaps == 1 and c.gap_bytes == 4


def test_ack_without_buffered_data_is_not_a_gap():
    """Capture ordering can show an ACK before the data it acknowledges."""
    d, rec, c = make()
    d.segment(1001, b"aaaa", False, 1.0)
    d.peer_ack(1009, 1.1)
    d.segment(1005, b"bbbb", False, 1.2)
    assert rec.data == b"aaaabbbb" and c.gaps == 0


def test_out_of_order_cap_forces_a_gap():
    d, rec, c = make(Limits(max_out_of_order_bytes=10))
    d.segment(1001, b"a", False, 1.0)
    d.segment(1010, b"123456", False, 1.0)
    assert c.ooo_cap_hits == 0
    d.segment(1016, b"789012", False, 1.0)
    assert c.ooo_cap_hits == 1
    assert rec.items[:2] == [("data", b"a"), ("gap", 8)]
    assert rec.data == b"a123456789012"


def test_flush_declares_trailing_gaps_and_ends():
    d, rec, _ = make()
    d.segment(1001, b"ab", False, 1.0)
    d.segment(1010, b"zz", False, 1.0)
    d.flush(2.0)
    assert rec.items == [("data", b"ab"), ("gap", 7), ("data", b"zz"), ("eof",)]


def test_pickup_without_syn():
    rec = Recorder()
    counters = TcpCounters()
    d = TcpDirection(0, rec, Limits(), counters)
    d.segment(555, b"mid", False, 1.0)
    d.segment(558, b"stream", False, 1.1)
    assert rec.data == b"midstream" and counters.midstream_pickups == 1


def test_sequence_wraparound():
    d, rec, _ = make(isn=0xFFFFFFF0)
    d.segment(0xFFFFFFF1, b"0123456789abcdef", False, 1.0)  # crosses 2**32
    d.segment(0x00000001, b"XYZ", False, 1.1)
    assert rec.data == b"0123456789abcdefXYZ"
    assert seq_diff(5, 0xFFFFFFFE) == 7


def test_data_after_end_is_ignored():
    d, rec, _ = make()
    d.segment(1001, b"x", True, 1.0)
    d.segment(1003, b"late", False, 1.1)
    assert rec.data == b"x" and rec.items.count(("eof",)) == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.integers(0, 2**32 - 1), st.randoms(use_true_random=False),
       st.integers(1, 400))
def test_any_segmentation_and_order_gives_the_stream(payload, isn, rnd, mss):
    """Whatever the segmentation, order and duplication, the stream comes out whole."""
    d, rec, c = make(isn=isn)
    segments = [((isn + 1 + i) & 0xFFFFFFFF, payload[i:i + mss]) for i in range(0, len(payload), mss)]
    shuffled = segments + rnd.sample(segments, k=len(segments) // 3)  # some duplicates
    rnd.shuffle(shuffled)
    for seq, chunk in shuffled:
        d.segment(seq, chunk, False, 1.0)
    d.flush(2.0)
    assert rec.data == payload
    assert c.gaps == 0 and c.overlap_mismatches == 0


def test_random_garbage_never_raises():
    rnd = random.Random(3)
    d, _, _ = make()
    for _ in range(5000):
        d.segment(rnd.randrange(2**32), rnd.randbytes(rnd.randrange(0, 50)), rnd.random() < 0.01, 1.0)
        if rnd.random() < 0.05:
            d.peer_ack(rnd.randrange(2**32), 1.0)
    d.flush(2.0)


def test_syn_data_counts_when_acknowledged():
    """TCP Fast Open: the SYN-ACK acknowledges the SYN's data."""
    d, rec, _ = make()
    d.syn_data(b"GET / HTTP/1.1\r\n\r\n", 1.0)
    d.peer_ack(1001 + 18, 1.1)
    d.segment(1019, b"more", False, 1.2)
    assert rec.data == b"GET / HTTP/1.1\r\n\r\nmore"


def test_syn_data_not_acknowledged_is_discarded():
    """A SYN-ACK acknowledging only the SYN: the data was refused, the client sends again."""
    d, rec, c = make()
    d.syn_data(b"\0" * 16, 1.0)
    d.peer_ack(1001, 1.1)
    d.segment(1001, b"GET / HTTP/1.1\r\n\r\n", False, 1.2)
    assert rec.data == b"GET / HTTP/1.1\r\n\r\n" and c.syn_data_ignored == 1


def test_syn_data_superseded_by_data_at_the_same_sequence():
    d, rec, c = make()
    d.syn_data(b"\0" * 16, 1.0)
    d.segment(1001, b"real", False, 1.2)
    assert rec.data == b"real" and c.syn_data_ignored == 1


def test_pickup_skips_bytes_the_peer_already_acknowledged():
    """A keep-alive probe (one old byte) seen first must not become the stream's first byte."""
    rec = Recorder()
    counters = TcpCounters()
    d = TcpDirection(0, rec, Limits(), counters)
    d.peer_ack(5000, 1.0)
    d.segment(4999, b"\x00", False, 1.1)  # keep-alive probe
    d.segment(5000, b"GET / HTTP/1.1\r\n", False, 1.2)
    assert rec.data == b"GET / HTTP/1.1\r\n"


def test_pickup_trims_a_partly_old_segment():
    rec = Recorder()
    d = TcpDirection(0, rec, Limits(), TcpCounters())
    d.peer_ack(100, 1.0)
    d.segment(96, b"oldXnew", False, 1.1)
    assert rec.data == b"new"


def test_keepalive_probe_with_a_garbage_byte_is_not_an_overlap():
    """Windows keep-alives resend one byte below the stream position, filled with garbage."""
    d, rec, c = make()
    d.segment(1001, b"hello", False, 1.0)
    d.segment(1005, b"\x00", False, 46.0)
    assert rec.data == b"hello" and c.keepalives == 1 and c.overlap_mismatches == 0
    d.segment(1006, b" world", False, 47.0)
    assert rec.data == b"hello world"


def test_a_snapped_tail_is_a_gap_at_once_and_the_fin_still_ends_the_stream():
    """The capture's snap length cut the last 300 bytes of each segment: each is a gap when it is
    next in order, nothing waits as out of order, and the FIN after the cut bytes ends the stream."""
    d, rec, c = make()
    d.segment(1001, b"a" * 100, False, 1.0, missing=300)
    d.segment(1401, b"b" * 100, True, 1.1, missing=300)
    assert rec.items == [("data", b"a" * 100), ("gap", 300), ("data", b"b" * 100), ("gap", 300), ("eof",)]
    assert (c.gaps, c.gap_bytes, c.ooo_segments) == (2, 600, 0)


def test_a_snapped_segment_out_of_order_leaves_its_tail_to_the_later_gap():
    d, rec, c = make()
    d.segment(1401, b"b" * 100, False, 1.0, missing=50)  # 1001..1400 not seen yet
    assert rec.items == [] and c.ooo_segments == 1
    d.segment(1001, b"a" * 400, False, 1.1)
    assert rec.items == [("data", b"a" * 400), ("data", b"b" * 100)]
    d.segment(1551, b"c", False, 1.2)  # waits behind the 50 cut bytes, as behind any hole
    assert rec.items[2:] == []
    d.peer_ack(1552, 1.3)  # the peer has everything: the hole is a gap
    assert rec.items[2:] == [("gap", 50), ("data", b"c")] and c.gap_bytes == 50


def test_a_headers_only_segment_is_all_gap_and_a_retransmission_of_it_adds_none():
    d, rec, c = make()
    d.segment(1001, b"", False, 1.0, missing=1448)
    d.segment(1001, b"", False, 1.1, missing=1448)  # the same segment again
    d.segment(2449, b"", False, 1.2, missing=100)
    assert rec.items == [("gap", 1448), ("gap", 100)] and c.gap_bytes == 1548
