"""The stream callables without a proxy: gRPC messages inspected one by one and forwarded intact
whatever the chunking; in-stream errors written at message boundaries; large bodies held back
for inspection then passed through."""

from __future__ import annotations

import random
import struct

import pytest
from live_sidecar import write_rule

from inspector.engine import Engine
from inspector.http import TO_SERVER, HttpMessage
from inspector.limits import Limits
from inspector.live.bodystream import HeldBodyStream
from inspector.live.flowinfo import flow_info
from inspector.live.grpcstream import GrpcRequestStream, GrpcResponseStream
from inspector.live.inspection import Connection, Decision, LiveInspector, LiveSettings
from inspector.live.messages import StreamedMessage
from inspector.live.metrics import Metrics
from inspector.protocols.protobuf import decode_fields, encode_field
from inspector.rules import load_rules

STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
SID_BIG = 9800001


def frame(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


def frames_of(data: bytes) -> list[bytes]:
    """Split a gRPC body into its payloads; asserts it is well framed."""
    out, pos = [], 0
    while pos < len(data):
        flag, length = struct.unpack_from(">BI", data, pos)
        assert flag == 0 and pos + 5 + length <= len(data)
        out.append(data[pos + 5:pos + 5 + length])
        pos += 5 + length
    return out


def splits(data: bytes, how: str, rng: random.Random) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(1, len(data)), min(12, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@pytest.fixture
def inspector(tmp_path):
    write_rule(tmp_path, SID_BIG, "Big stream message", "grpc", {"grpc.request.bytes|gt": 400}, action="block")
    ruleset = load_rules([tmp_path])
    written: list = []
    live = LiveInspector(Engine(ruleset, blocking=True), written.append, lambda: None, Metrics(), LiveSettings())
    live.written = written
    return live


def _head(path: str = STREAM_PATH) -> HttpMessage:
    return HttpMessage(kind="request", version="HTTP/2", method="POST", scheme="https", authority="triton:8001",
                       path=path, headers=[("content-type", "application/grpc"), ("te", "trailers")])


def _tx(inspector: LiveInspector):
    conn = Connection(info=flow_info(("10.0.0.5", 40000), ("10.0.0.9", 8001), 1.0, app_proto="http2"))
    return inspector.begin(conn, _head(), 1.0)


def _request(model: str, size: int) -> bytes:
    return encode_field(1, model) + encode_field(7, b"\x01" * size)


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
@pytest.mark.parametrize("hold", [1 << 20, 64])
def test_request_stream_forwards_allowed_messages_and_drops_blocked_ones(inspector, how, hold):
    payloads = [_request("simple", 16), _request("simple", 600), _request("simple", 32), b""]
    body = b"".join(frame(p) for p in payloads)
    aborted: list[str] = []
    stream = GrpcRequestStream(inspector, _tx(inspector), _head(), Limits(), lambda: 2.0, aborted.append,
                               hold_bytes=hold)
    out = bytearray()
    for chunk in splits(body, how, random.Random(7)):
        result = stream(chunk)
        assert isinstance(result, list)  # never b"": an empty chunk would end an HTTP/1 chunked body
        out += b"".join(result)
    out += b"".join(stream(b""))
    assert frames_of(bytes(out)) == [payloads[0], payloads[2], payloads[3]]
    assert (stream.messages, stream.blocked, aborted) == (4, 1, [])
    [error] = stream.injections
    assert decode_fields(frames_of(error)[0]) == [
        (1, 2, f"blocked by inspector: Big stream message (sid {SID_BIG})".encode())]  # error_message
    alerts = [r for r in inspector.written if r["event_type"] == "alert"]
    assert [a["alert"]["signature_id"] for a in alerts] == [SID_BIG]


def test_a_stream_without_an_error_field_is_aborted(inspector):
    aborted: list[str] = []
    stream = GrpcRequestStream(inspector, _tx(inspector), _head("/other.Service/Chat"), Limits(), lambda: 2.0,
                               aborted.append, hold_bytes=1 << 20)
    assert b"".join(stream(frame(_request("simple", 16)))) == frame(_request("simple", 16))
    assert stream(frame(_request("simple", 600))) == []
    assert aborted == [f"blocked by inspector: Big stream message (sid {SID_BIG})"]
    assert stream(frame(_request("simple", 16))) == []  # nothing more once aborted
    assert not stream.injections


def collect(result: bytes | list[bytes]) -> bytes:
    return result if isinstance(result, bytes) else b"".join(result)


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
def test_response_stream_injects_at_message_boundaries(inspector, how):
    request_stream = GrpcRequestStream(inspector, _tx(inspector), _head(), Limits(), lambda: 2.0, lambda r: None,
                                       hold_bytes=1 << 20)
    response_head = HttpMessage(kind="response", version="HTTP/2", status=200,
                                headers=[("content-type", "application/grpc")])
    stream = GrpcResponseStream(request_stream, response_head, Limits(), lambda: 3.0)
    answers = [b"answer-%d" % i * (i + 1) for i in range(3)]
    body = b"".join(frame(a) for a in answers)
    injected = frame(encode_field(1, "blocked"))
    out = bytearray()
    for index, chunk in enumerate(splits(body, how, random.Random(3))):
        out += collect(stream(chunk))
        if index == 0:  # a message was blocked while the first chunk passed
            request_stream.injections.append(injected)
    out += collect(stream(b""))
    payloads = frames_of(bytes(out))
    assert sorted(payloads) == sorted([*answers, frames_of(injected)[0]])
    assert stream.injected == 1


def test_response_stream_flushes_pending_errors_at_the_end(inspector):
    request_stream = GrpcRequestStream(inspector, _tx(inspector), _head(), Limits(), lambda: 2.0, lambda r: None,
                                       hold_bytes=1 << 20)
    response_head = HttpMessage(kind="response", version="HTTP/2", status=200,
                                headers=[("content-type", "application/grpc")])
    stream = GrpcResponseStream(request_stream, response_head, Limits(), lambda: 3.0)
    assert stream(frame(b"first")[:3]) == frame(b"first")[:3]
    request_stream.injections.append(frame(b"error"))
    assert b"".join(stream(frame(b"first")[3:])) == frame(b"first")[3:] + frame(b"error")
    request_stream.injections.append(frame(b"late"))
    assert stream(b"") == [frame(b"late")]


@pytest.mark.parametrize("verdict", ["allow", "block"])
def test_held_body_stream(verdict):
    seen: list[tuple[int, bool]] = []
    aborted: list[str] = []

    def inspect(held: bytes, complete: bool) -> Decision:
        seen.append((len(held), complete))
        return Decision(action=verdict, record={}, message="no")

    head = HttpMessage(kind="request", version="HTTP/1.1", method="PUT", path="/bucket/model.bin",
                       headers=[("content-length", "5000")])
    body = StreamedMessage(Limits(), TO_SERVER, head)
    stream = HeldBodyStream(body, inspect, aborted.append, lambda exc: False, lambda: 1.0, hold_bytes=1000)
    data = bytes(range(256)) * 20
    out = bytearray()
    for chunk in splits(data[:5000], "random", random.Random(1)):
        out += collect(stream(chunk))
    out += collect(stream(b""))
    assert seen[0][1] is False and seen[0][0] >= 1000 and len(seen) == 1
    exchange, _ = stream.end([], 2.0)
    if verdict == "allow":
        assert bytes(out) == data[:5000] and aborted == []
        assert exchange.request.body_length == 5000 and exchange.request.complete
    else:  # nothing forwarded, the transfer aborted; the record counts what came before the decision
        assert bytes(out) == b"" and aborted == ["no"]
        assert exchange.request.body_length == seen[0][0] and exchange.request.complete is False


def test_a_held_body_whose_settling_check_fails_is_held_whole(caplog):
    seen: list[int] = []

    def broken(held: bytes) -> int:
        raise ValueError("a bug")

    head = HttpMessage(kind="response", version="HTTP/1.1", status=200, headers=[("content-length", "5000")])
    stream = HeldBodyStream(StreamedMessage(Limits(), 1, head),
                            lambda held, complete: seen.append(len(held)) or Decision("allow", {}),
                            lambda reason: None, lambda exc: False, lambda: 1.0, hold_bytes=1000, settled_at=broken)
    out = b"".join(collect(stream(b"x" * 500)) for _ in range(10)) + collect(stream(b""))
    assert out == b"x" * 5000 and seen == [1000] and stream.ended_by == "prefix"
    assert "holding it whole" in caplog.text


def test_held_body_stream_inspects_a_small_body_whole():
    seen: list[tuple[int, bool]] = []
    head = HttpMessage(kind="request", version="HTTP/1.1", method="PUT", path="/b/k",
                       headers=[("transfer-encoding", "chunked")])
    stream = HeldBodyStream(StreamedMessage(Limits(), TO_SERVER, head),
                            lambda held, complete: seen.append((len(held), complete)) or Decision("allow", {}),
                            lambda reason: None, lambda exc: False, lambda: 1.0, hold_bytes=1000)
    assert stream(b"a" * 10) == [] and stream(b"b" * 10) == []
    assert stream(b"") == [b"a" * 10 + b"b" * 10]
    assert seen == [(20, True)]


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


@pytest.mark.parametrize(("headers", "body", "counts_only"), [
    # a model pulled from S3: past the kept prefix, the rest is only counted
    ([("content-type", "binary/octet-stream")], bytes(range(256)) * 400, True),
    # gzip: decoded up to the cap, then counted (the encoded length)
    ([("content-encoding", "gzip")], _gzip(bytes(range(256)) * 4000), True),
    # a body that does not decode as its coding says: reported, then counted
    ([("content-encoding", "br")], bytes(range(256)) * 400, True),
    # a coding nothing here removes: reported, nothing kept, counted from the start
    ([("content-encoding", "compress")], bytes(range(256)) * 400, True),
    # shorter than the kept prefix: every byte kept
    ([("content-type", "text/plain")], b"x" * 900, False),
    # a gRPC body: its observer reads every byte, so every chunk goes through the builder
    ([("content-type", "application/grpc")], b"".join(frame(bytes([i % 256]) * 300) for i in range(300)), False),
])
@pytest.mark.parametrize("chunk", [1000, 1024])  # 1024: a chunk ends exactly at the kept prefix's end
@pytest.mark.parametrize("hand_back", [False, True], ids=["fed-whole", "handed-back"])
def test_a_streamed_message_is_the_whole_message_whatever_it_skips(headers, body, counts_only, chunk, hand_back):
    """A body fed chunk by chunk gives the exchange the builder makes of the body whole (body
    kept, its length, truncation, decoding, the gRPC messages), whether or not the rest of it
    is only counted once nothing wants its bytes, or not fed at all once handed back to a
    transport that delivers the declared length; and it is counted only, or handed back, only
    then."""
    from inspector.live.messages import STREAM, new_builder

    limits = Limits(body_keep_bytes=4096)
    head = HttpMessage(kind="response", version="HTTP/2", status=200, headers=headers)
    streamed = StreamedMessage(limits, 1, head)
    handed_back_at = None
    for start in range(0, len(body), chunk):
        streamed.feed(body[start:start + chunk], 1.0)
        if hand_back and streamed.hand_back(len(body)):
            handed_back_at = start + chunk
            break
    assert (handed_back_at is not None) == (hand_back and counts_only)
    got, got_anomalies = streamed.end([], 2.0)
    whole = new_builder(limits).whole(1, HttpMessage(kind="response", version="HTTP/2", status=200,
                                                     headers=list(headers)), body, [], 2.0, stream_id=STREAM)
    want = next(item for item in whole if hasattr(item, "response"))
    for name in ("body", "body_length", "body_truncated", "decoded", "encoded", "complete"):
        assert getattr(got.response, name) == getattr(want.response, name), name
    assert got.observations.keys() == want.observations.keys()
    assert [a.event for a in got_anomalies] == [a.event for a in whole if not hasattr(a, "response")]
    if headers[0][1] == "application/grpc":
        framer, whole_framer = got.observations["grpc.response"], want.observations["grpc.response"]
        assert (framer.message_count, framer.total_bytes) == (300, 300 * 300)
        assert framer.messages == whole_framer.messages
    assert (streamed._count is not None) == counts_only


@pytest.mark.parametrize("held_part_inspected", [True, False])
@pytest.mark.parametrize("where", ["held part", "after it"])
def test_a_held_body_reports_each_finding_once(held_part_inspected, where):
    """A gzip body that stops decoding, in its held first part or after it: the anomaly is
    reported once, by the inspection of the held part when that looked at it, else when the
    body ends (no block rule could act on the held part, or its inspection failed)."""
    import os
    import zlib

    packer = zlib.compressobj(wbits=31)
    good = packer.compress(os.urandom(3000)) + packer.flush(zlib.Z_SYNC_FLUSH)  # incompressible: ~3000 bytes
    data = (b"\xff" * 64 + good) if where == "held part" else (good + b"\xff" * 64)
    head = HttpMessage(kind="response", version="HTTP/1.1", status=200, headers=[("content-encoding", "gzip")])
    stream = HeldBodyStream(StreamedMessage(Limits(), 1, head),
                            lambda held, complete: Decision("allow", {"event_type": "http"},
                                                            inspected=held_part_inspected),
                            lambda reason: None, lambda exc: False, lambda: 1.0, hold_bytes=1000)
    for start in range(0, len(data), 500):
        stream(data[start:start + 500])
    stream(b"")
    _, anomalies = stream.end([], 2.0)
    reported = [a.event for a in anomalies]
    if where == "held part" and held_part_inspected:
        assert reported == []  # the held part's inspection wrote it
    else:
        assert reported == ["content_decode_error"]


def test_a_handed_back_body_that_fails_keeps_what_was_fed():
    """Cut short after the hand-back (the transport failed the message): the length is what was
    fed, not the declared one; a declared length below what was fed is refused."""
    limits = Limits(body_keep_bytes=4096)
    head = HttpMessage(kind="response", version="HTTP/1.1", status=200, headers=[("content-length", "100000")])
    streamed = StreamedMessage(limits, 1, head)
    assert not streamed.hand_back(100_000)  # the kept prefix is still wanted
    for _ in range(6):
        streamed.feed(b"x" * 1000, 1.0)
    assert streamed.counting_only
    assert not streamed.hand_back(5_000)  # less than was fed: no transport delivers that
    assert streamed.hand_back(100_000)
    got, _ = streamed.end([], 2.0, complete=False)
    assert got.response.body_length == 6000 and got.response.complete is False

