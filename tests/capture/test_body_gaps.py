"""Capture gaps inside message bodies: HTTP/2 steps over a hole inside a DATA payload and parses
on (a segment lost in a long-lived gRPC connection costs one call, not the rest of the
connection); the gRPC framer steps over a hole inside a message; what is kept of a body never
joins bytes from both sides of a hole; nothing the capture lost is reported as the peer's fault."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys

from inspector.apps import OBSERVER_FACTORIES
from inspector.capture.http2 import PREFACE, Http2Session
from inspector.exchange import ExchangeBuilder
from inspector.http import (
    TO_CLIENT,
    TO_SERVER,
    BodyGap,
    BodyReceived,
    HeadReceived,
    HttpExchange,
    HttpMessage,
    MessageEnded,
    SessionAnomaly,
)
from inspector.lab.craft import Capture
from inspector.lab.h2wire import GrpcCall, H2Wire, grpc_frame
from inspector.lab.traffic_http import GrpcSession
from inspector.lab.traffic_triton import Tensor, grpc_infer
from inspector.protocols.grpc import GrpcFramer

CALLS = 5
LOST_CALL = 1  # the second call's request loses a segment inside its first DATA frame
MSS = 1460


def _wire_with_one_call(body_size: int) -> H2Wire:
    wire = H2Wire()
    wire.grpc(1, GrpcCall(path="/inference.GRPCInferenceService/ModelInfer", requests=[b"\x01" * body_size],
                          responses=[b"ok"]))
    return wire


def _client_bytes(wire: H2Wire) -> bytes:
    return b"".join(data for side, data in wire.chunks if side == TO_SERVER)


def _server_bytes(wire: H2Wire) -> bytes:
    return b"".join(data for side, data in wire.chunks if side == TO_CLIENT)


def _data_frames(client: bytes) -> list[tuple[int, int]]:
    """(offset, payload length) of every DATA frame in the client's bytes (after the preface)."""
    frames, pos = [], len(PREFACE)
    while pos + 9 <= len(client):
        length = int.from_bytes(client[pos:pos + 3], "big")
        if client[pos + 3] == 0:  # DATA
            frames.append((pos, length))
        pos += 9 + length
    return frames


def _run(session: Http2Session, client: list[bytes | int]) -> list:
    events = []
    for item in client:
        events += (session.receive_gap(TO_SERVER, item, 1.0) if isinstance(item, int)
                   else session.receive_data(TO_SERVER, item, 1.0))
    return events


def test_a_gap_inside_a_data_payload_is_stepped_over():
    wire = _wire_with_one_call(40_000)  # three DATA frames
    client = _client_bytes(wire)
    frames = _data_frames(client)
    assert len(frames) == 3
    hole_at = frames[1][0] + 9 + 5000  # inside the payload of the second DATA frame
    session = Http2Session()
    events = _run(session, [client[:hole_at], 1000, client[hole_at + 1000:]])
    events += session.receive_data(TO_CLIENT, _server_bytes(wire), 2.0)
    assert [e for e in events if isinstance(e, SessionAnomaly)] == []
    gaps = [e for e in events if isinstance(e, BodyGap)]
    assert [(g.stream_id, g.direction, g.length) for g in gaps] == [(1, TO_SERVER, 1000)]
    body = sum(len(e.data) for e in events if isinstance(e, BodyReceived) and e.direction == TO_SERVER)
    assert body == len(grpc_frame(b"\x01" * 40_000)) - 1000
    assert [(e.direction, e.complete) for e in events if isinstance(e, MessageEnded)] == [
        (TO_SERVER, True), (TO_CLIENT, True)]  # the session ends it; the exchange builder marks the hole
    assert session.gaps_stepped_over == 1
    assert session.counters == {"http2_gaps_stepped_over": 1}  # what the router adds to the stats


def test_a_gap_over_a_frame_header_still_stops_the_direction():
    wire = _wire_with_one_call(40_000)
    client = _client_bytes(wire)
    hole_at = _data_frames(client)[2][0] - 4  # the last DATA frame's header falls in the hole
    session = Http2Session()
    events = _run(session, [client[:hole_at], 100, client[hole_at + 100:]])
    assert [e.event for e in events if isinstance(e, SessionAnomaly)] == ["gap"]
    assert session.gaps_stepped_over == 0 and session.counters == {}


def test_the_exchange_counts_the_hole_and_ends_the_message_incomplete():
    wire = _wire_with_one_call(3000)
    client = _client_bytes(wire)
    hole_at = len(client) - 2000
    session = Http2Session()
    builder = ExchangeBuilder(session.limits, OBSERVER_FACTORIES)
    out = builder.feed(_run(session, [client[:hole_at], 500, client[hole_at + 500:]]))
    out += builder.feed(session.receive_data(TO_CLIENT, _server_bytes(wire), 2.0))
    (exchange,) = [item for item in out if isinstance(item, HttpExchange)]
    request = exchange.request
    whole = grpc_frame(b"\x01" * 3000)
    assert request is not None and not request.complete and not request.body_truncated
    assert request.body_length == len(whole)  # the hole counted in the length
    assert request.body == whole[:len(whole) - 2000] + whole[len(whole) - 1500:]  # the bytes around the hole
    grpc = exchange.observations["grpc.request"]
    assert (grpc.message_count, grpc.messages[0].complete, grpc.anomalies) == (1, False, [])


def test_a_content_encoded_body_keeps_what_was_decoded_before_a_hole():
    builder = ExchangeBuilder(limits=Http2Session().limits)
    head = HttpMessage(kind="request", version="HTTP/1.1", method="POST", path="/",
                       headers=[("content-encoding", "gzip"), ("content-type", "application/json")])
    encoded = gzip.compress(b'{"a": "' + b"x" * 5000 + b'"}', mtime=0)
    events = [HeadReceived(stream_id=0, direction=TO_SERVER, message=head, end_stream=False, ts=1.0),
              BodyReceived(stream_id=0, direction=TO_SERVER, data=encoded[:40], ts=1.0),
              BodyGap(stream_id=0, direction=TO_SERVER, length=10, ts=1.0),
              BodyReceived(stream_id=0, direction=TO_SERVER, data=encoded[50:], ts=1.0),
              MessageEnded(stream_id=0, direction=TO_SERVER, trailers=[], ts=1.0)]
    builder.feed(events)
    (exchange,) = [item for item in builder.finish(2.0) if isinstance(item, HttpExchange)]
    request = exchange.request
    assert request is not None and not request.complete and request.body_truncated
    assert b'{"a": "xxx'.startswith(request.body[:10]) and set(request.body[7:]) <= {ord("x")}


def test_the_grpc_framer_steps_over_a_hole_inside_a_message_only():
    framer = GrpcFramer()
    data = grpc_frame(b"a" * 100) + grpc_frame(b"b" * 50)
    framer.feed(data[:30], 1.0)
    framer.gap(40, 1.0)  # inside the first message
    framer.feed(data[70:], 1.0)
    framer.end(2.0)
    assert (framer.message_count, framer.lengths, framer.anomalies) == (2, [100, 50], [])
    first, second = framer.messages
    assert (first.complete, first.payload, second.complete) == (False, b"a" * 25, True)

    lost = GrpcFramer()
    lost.feed(data[:105], 1.0)  # the first message whole
    lost.gap(10, 1.0)  # the second message's prefix: where it starts is lost
    lost.feed(data[115:], 1.0)
    lost.end(2.0)
    assert (lost.message_count, lost.framing_lost, lost.anomalies) == (1, True, [])


def test_a_lost_segment_in_a_grpc_connection_costs_one_call(tmp_path):
    """Five Triton inferences on one h2c connection; one segment of the second request never
    reached the capture (inside a DATA frame). Every call is still reported, no anomaly blames the
    peer, and the damaged call's request is marked incomplete."""
    capture = Capture()
    session = GrpcSession(capture, random.Random(5), "10.20.0.5", "10.20.0.9", 8001)
    lost = False
    for n in range(CALLS):
        session.wire.grpc(session.next_stream(), grpc_infer("resnet", [Tensor(name="INPUT0", shape=(1, 10_000))],
                                                             request_id=str(n)))
        for side, data in session.wire.chunks[session._sent:]:
            lose = n == LOST_CALL and side == TO_SERVER and len(data) > 10 * MSS and not lost  # a whole DATA frame
            lost = lost or lose
            session.conversation.send(side, data, drop=3 if lose else None)  # segment 3: inside the payload
        session._sent = len(session.wire.chunks)
    assert lost
    session.close()
    path = tmp_path / "lost.pcap"
    capture.write(path)
    out = tmp_path / "eve.json"
    done = subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", str(path), "-q", "--eve", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    calls = [r for r in records if r["event_type"] == "triton"]
    assert [r["triton"].get("id") for r in calls] == [str(n) for n in range(CALLS)]
    assert [r["http"]["request_complete"] for r in calls] == [n != LOST_CALL for n in range(CALLS)]
    assert [r for r in records if r["event_type"] == "anomaly"] == []
    stats = records[-1]["stats"]
    assert stats["tcp"]["gaps"] == 1 and stats["tcp"]["gap_bytes"] == MSS
    assert stats["app_layer"]["http2_gaps_stepped_over"] == 1  # the run says it parsed on past it
