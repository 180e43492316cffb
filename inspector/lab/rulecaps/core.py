"""Fixtures of the transport rules: TCP stream, HTTP/1, HTTP/2 and gRPC framing."""

from __future__ import annotations

import gzip
import json
import random

from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame, PushPromiseFrame
from tritonclient.grpc import service_pb2 as pb

from inspector.lab.craft import CLIENT, Capture
from inspector.lab.h2wire import GrpcCall, grpc_frame
from inspector.lab.rulecaps.fixture import OUTSIDE, SERVER_IP, Fixture
from inspector.lab.traffic_http import GrpcSession, HttpSession, request_bytes, response_bytes
from inspector.lab.traffic_triton import SERVICE, Tensor, model_infer_request, model_infer_response

EMPTY_OK = response_bytes(200)


def _overlap(cap: Capture, rng: random.Random, evil: bool) -> None:
    """A request whose retransmission carries other bytes (evil) or the same bytes."""
    session = HttpSession(cap, rng, OUTSIDE, SERVER_IP, 8000)
    conv = session.conversation
    request = request_bytes("GET", "/v2/models/fraud/ready", "triton")
    seq = conv.seq[CLIENT]
    conv.send(CLIENT, request)
    conv.wait(0.0004)
    again = request.replace(b"fraud", b"evil!") if evil else request
    conv._emit(CLIENT, "PA", seq, conv.seq[1], again)  # the retransmission, as a sender's stack resends it
    conv.send(1, EMPTY_OK, think=0.002)
    session.close()


def _smuggling(cap: Capture, rng: random.Random, both: bool) -> None:
    session = HttpSession(cap, rng, OUTSIDE, SERVER_IP, 8000)
    if both:
        body = b"0\r\n\r\n" + request_bytes("GET", "/v2/repository/index", "triton")
        request = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: triton\r\nContent-Length: %d\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" % len(body)) + body
    else:
        request = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: triton\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n")
    session.exchange(request, EMPTY_OK)
    session.close()


def _bomb(cap: Capture, rng: random.Random, bomb: bool) -> None:
    session = HttpSession(cap, rng, OUTSIDE, SERVER_IP, 8000)
    if bomb:
        payload = b"\0" * (24 * 1024 * 1024)
    else:  # ordinary JSON: compresses well, nowhere near a bomb's ratio
        payload = json.dumps([{"id": i, "score": rng.random(), "label": f"class-{rng.randrange(1000)}"}
                              for i in range(3000)]).encode()
    packed = gzip.compress(payload, mtime=0)
    session.exchange(request_bytes("POST", "/v2/models/m/infer", "triton",
                                   [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], packed),
                     EMPTY_OK)
    session.close()


def _continuations(cap: Capture, rng: random.Random, frames: int) -> None:
    """One request whose header block (HPACK by hpack) is spread over `frames` CONTINUATION frames."""
    session = GrpcSession(cap, rng, OUTSIDE, SERVER_IP, 8001)
    headers = [(":method", "GET"), (":scheme", "http"), (":path", "/v2/health/ready"),
               (":authority", "triton:8001")] + [(f"x-pad-{i}", "v" * 40) for i in range(frames)]
    block = Encoder().encode(headers)
    piece = max(1, len(block) // (frames + 1))
    parts = [block[i:i + piece] for i in range(0, len(block), piece)]
    first = HeadersFrame(1, data=parts[0])
    first.flags.add("END_STREAM")
    out = first.serialize()
    for n, part in enumerate(parts[1:], 1):
        frame = ContinuationFrame(1, data=part)
        if n == len(parts) - 1:
            frame.flags.add("END_HEADERS")
        out += frame.serialize()
    session.conversation.send(CLIENT, out)
    session.close()


def _push_from_client(cap: Capture, rng: random.Random, evil: bool) -> None:
    """A health check, then (evil) a PUSH_PROMISE from the client, which only servers may send."""
    session = GrpcSession(cap, rng, OUTSIDE, SERVER_IP, 8000)
    stream = session.next_stream()
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/v2/health/ready"),
               (b":authority", b"triton:8000")]
    session.wire.request(stream, headers)
    session.wire.respond(stream, [(b":status", b"200"), (b"content-length", b"0")])
    session.flush()
    if evil:
        frame = PushPromiseFrame(stream, promised_stream_id=2, data=Encoder().encode(
            [(":method", "GET"), (":scheme", "http"), (":path", "/v2/repository/index"), (":authority", "triton")]))
        frame.flags.add("END_HEADERS")
        session.conversation.send(CLIENT, frame.serialize(), think=0.001)
    session.close()


def _resets(cap: Capture, rng: random.Random, cancelled: int, total: int = 25) -> None:
    """`total` requests 20 ms apart; the client cancels the first `cancelled` (RST_STREAM CANCEL)."""
    session = GrpcSession(cap, rng, OUTSIDE, SERVER_IP, 8000)
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/v2/models/fraud/ready"),
               (b":authority", b"triton:8000")]
    for n in range(total):
        stream = session.next_stream()
        session.wire.request(stream, headers)
        if n < cancelled:
            session.wire.reset(CLIENT, stream, 8)
        else:
            session.wire.respond(stream, [(b":status", b"200"), (b"content-length", b"0")])
        session.flush()
        session.wait(0.02)
    session.close()


GRPC_HEADERS = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", (SERVICE + "ModelInfer").encode()),
                (b":authority", b"triton:8001"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
GRPC_OK = [(b":status", b"200"), (b"content-type", b"application/grpc")]


def _infer_message(model: str) -> bytes:
    return model_infer_request(model, [Tensor(name="INPUT0", shape=(1, 3, 8, 8))]).SerializeToString(
        deterministic=True)


def _infer_answer(model: str) -> bytes:
    return grpc_frame(model_infer_response(model, [Tensor(name="OUTPUT0", shape=(1, 10))]).SerializeToString(
        deterministic=True))


def _snappy(cap: Capture, rng: random.Random, snappy: bool) -> None:
    """ModelInfer with grpc-encoding snappy (opaque bytes the inspector cannot read) or gzip."""
    session = GrpcSession(cap, rng, OUTSIDE, SERVER_IP, 8001)
    if snappy:
        opaque = rng.randbytes(200)
        body = b"\x01" + len(opaque).to_bytes(4, "big") + opaque
    else:
        body = grpc_frame(_infer_message("resnet"), compress=True)
    session.raw([*GRPC_HEADERS, (b"grpc-encoding", b"snappy" if snappy else b"gzip")], body, GRPC_OK,
                _infer_answer("resnet"), trailers=[(b"grpc-status", b"0")])
    session.close()


def _compressed_flag(cap: Capture, rng: random.Random, evil: bool) -> None:
    """A ModelInfer message marked compressed on a call that declared no grpc-encoding (evil), or plain."""
    session = GrpcSession(cap, rng, OUTSIDE, SERVER_IP, 8001)
    message = _infer_message("resnet")
    if evil:
        packed = gzip.compress(message, mtime=0)
        body = b"\x01" + len(packed).to_bytes(4, "big") + packed
    else:
        body = grpc_frame(message)
    session.raw(GRPC_HEADERS, body, GRPC_OK, _infer_answer("resnet"), trailers=[(b"grpc-status", b"0")])
    session.close()


def _failed_calls(cap: Capture, rng: random.Random, failures: int) -> None:
    """ModelMetadata for models that do not exist, 0.2 s apart: NOT_FOUND each time."""
    session = GrpcSession(cap, rng, OUTSIDE, SERVER_IP, 8001)
    for i in range(failures):
        request = pb.ModelMetadataRequest(name=f"model-{i}").SerializeToString(deterministic=True)
        session.call(GrpcCall(SERVICE + "ModelMetadata", [request], [], status=5, trailers_only=True,
                              message=f"Request for unknown model: 'model-{i}' is not found"))
        session.wait(0.2)
    session.close()


FIXTURES: dict[str, Fixture] = {
    "stream_overlap_mismatch": Fixture(
        sid=1002001, positive=lambda c, r: _overlap(c, r, True), negative=lambda c, r: _overlap(c, r, False),
        parsed=("triton", 1, 1),
        notes="A request retransmitted with one word changed; the near miss retransmits it unchanged."),
    "http_request_smuggling": Fixture(
        sid=2100001, positive=lambda c, r: _smuggling(c, r, True), negative=lambda c, r: _smuggling(c, r, False),
        parsed=("triton", 2, 1),
        notes="A POST with both Content-Length and Transfer-Encoding; the near miss is chunked only."),
    "http_decompression_bomb": Fixture(
        sid=2100002, positive=lambda c, r: _bomb(c, r, True), negative=lambda c, r: _bomb(c, r, False),
        parsed=("triton", 1, 1),
        notes="24 MiB of zeros gzip'd in a request body; the near miss gzips 190 KB of JSON."),
    "http2_header_flood": Fixture(
        sid=2110001, positive=lambda c, r: _continuations(c, r, 400),
        negative=lambda c, r: _continuations(c, r, 6), parsed=("triton", 0, 1),
        notes="A header block split over 400 CONTINUATION frames (hyperframe); the near miss uses 6."),
    "http2_protocol_violation": Fixture(
        sid=2110002, positive=lambda c, r: _push_from_client(c, r, True),
        negative=lambda c, r: _push_from_client(c, r, False), parsed=("triton", 1, 1),
        notes="An h2 health check, then a PUSH_PROMISE from the client (hyperframe); the near miss stops "
              "after the health check."),
    "http2_rapid_reset": Fixture(
        sid=2110003, positive=lambda c, r: _resets(c, r, 25), negative=lambda c, r: _resets(c, r, 19),
        parsed=("triton", 25, 25), config={"H2_RESET_RATE_COUNT": 20, "H2_RESET_RATE_WINDOW": "10s"},
        notes="25 h2 requests 20 ms apart, each cancelled with RST_STREAM CANCEL (count 20 in 10 s); the near "
              "miss cancels 19 and lets 6 complete."),
    "grpc_uninspectable_compression": Fixture(
        sid=2200001, positive=lambda c, r: _snappy(c, r, True), negative=lambda c, r: _snappy(c, r, False),
        parsed=("triton", 1, 1),
        notes="ModelInfer with grpc-encoding snappy; the near miss is gzip, which is inspected."),
    "grpc_malformed_message": Fixture(
        sid=2200003, positive=lambda c, r: _compressed_flag(c, r, True),
        negative=lambda c, r: _compressed_flag(c, r, False), parsed=("triton", 1, 1),
        notes="A ModelInfer message with the compressed flag on a call that declared no grpc-encoding; the near "
              "miss sends it uncompressed."),
    "grpc_failed_call_burst": Fixture(
        sid=2200002, positive=lambda c, r: _failed_calls(c, r, 50), negative=lambda c, r: _failed_calls(c, r, 49),
        parsed=("triton", 50, 49),
        notes="50 NOT_FOUND answers within a minute; the near miss stops at 49 (count 50/60s)."),
}
