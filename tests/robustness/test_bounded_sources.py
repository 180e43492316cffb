"""Rotating sources through the offline Analyzer and the rate windows (benchmarks/bench_bounded.py
at a CI size): the flow table and the rate store evict, counted, and the steady attacker among
the rotating sources still alerts. No timing or memory assertions here: the benchmark prints those."""

from __future__ import annotations

import zlib

from benchmarks.bench_bounded import run
from inspector.limits import Limits
from inspector.protocols.grpc import GrpcFramer


def test_rotating_sources_evict_and_the_attacker_still_alerts(tmp_path):
    result = run(4000, max_flows=300, rate_keys=300, attacker_every=10, workdir=tmp_path)
    assert result.packets == 4 * (4000 + 400)
    assert result.flows_evicted == 4000 + 400 - 300  # every connection stays open: all but max_flows evicted
    assert result.rate_keys_held == 300
    assert result.rate_keys_evicted == 4000 + 1 - 300  # every rotating source and the attacker were keys
    assert result.attacker_alerts >= 1 and result.other_alerts == 0


def test_without_pressure_nothing_is_evicted(tmp_path):
    result = run(500, max_flows=10_000, rate_keys=10_000, attacker_every=20, workdir=tmp_path)
    assert result.flows_evicted == 0 and result.rate_keys_evicted == 0 and result.rate_keys_held == 501
    assert result.attacker_alerts == 0  # 25 requests: below the rule's count of 50


def test_deflate_stream_with_trailing_bytes_ends():
    """The hang the fuzzer found (fuzz/corpus/regressions/grpc_framing/): bytes after the end of
    a compressed message's deflate stream once kept the counting loop spinning."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    payload = packer.compress(bytes(range(256)) * 4) + packer.flush() + b"\x01\x00\x00\x00"
    framer = GrpcFramer(Limits(grpc_keep_message_bytes=256), encoding="deflate")
    framer.feed(b"\x01" + len(payload).to_bytes(4, "big") + payload, 1.0)
    framer.end(1.0)
    (message,) = framer.messages
    assert 0 < len(message.payload) <= 256 and bytes(range(256)).startswith(message.payload)
    assert message.payload_truncated and message.inspectable
    assert framer.anomalies == []
