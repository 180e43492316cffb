"""gRPC framing (GrpcFramer), observers, decompression, and the EVE `grpc` record."""

from __future__ import annotations

import base64
import gzip
import tracemalloc
import zlib

import pytest

from inspector import fields
from inspector.http import HttpExchange, HttpMessage
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.protocols.grpc import (
    STATUS_NAMES,
    GrpcFramer,
    GrpcMessage,
    grpc_kind,
    grpc_observer_for,
    grpc_record,
    split_path,
)


def frame(payload: bytes, flag: int = 0, length: int | None = None) -> bytes:
    return bytes([flag]) + (len(payload) if length is None else length).to_bytes(4, "big") + payload


def anomaly_events(framer: GrpcFramer) -> list[str]:
    return [a.event for a in framer.anomalies]


def run(chunks: list[bytes], **kwargs) -> GrpcFramer:
    framer = GrpcFramer(kwargs.pop("limits", DEFAULT_LIMITS), **kwargs)
    for chunk in chunks:
        framer.feed(chunk, 1.0)
    framer.end(2.0)
    return framer


def plain(payload: bytes) -> GrpcMessage:
    return GrpcMessage(length=len(payload), compressed=False, payload=payload, payload_truncated=False,
                       inspectable=True)


PAYLOADS = [b"\x0a\x05hello", b"", b"\x08\x96\x01", b"x" * 300]
STREAM = b"".join(frame(p) for p in PAYLOADS)


# --- framing --------------------------------------------------------------------------------------


def test_messages_counted_and_kept():
    framer = run([STREAM])
    assert framer.messages == [plain(p) for p in PAYLOADS]
    assert framer.lengths == [len(p) for p in PAYLOADS]
    assert (framer.message_count, framer.total_bytes, framer.compressed_count) == (4, 310, 0)
    assert framer.anomalies == [] and framer.inspectable


def test_every_split_point_gives_the_same_messages():
    """The 5-byte prefix and payloads split at every single and every pair of boundaries."""
    expected = [plain(p) for p in PAYLOADS]
    for i in range(len(STREAM) + 1):
        assert run([STREAM[:i], STREAM[i:]]).messages == expected
    short = b"".join(frame(p) for p in PAYLOADS[:3])
    for i in range(len(short) + 1):
        for j in range(i, len(short) + 1):
            assert run([short[:i], short[i:j], short[j:]]).messages == expected[:3]
    assert run([STREAM[i:i + 1] for i in range(len(STREAM))]).messages == expected


def test_truncated_message_at_end():
    """A prefix that promises 100 bytes, then the body ends after 10."""
    framer = run([frame(b"a" * 10, length=100)])
    assert anomaly_events(framer) == ["grpc_truncated_message"]
    assert framer.messages == [GrpcMessage(length=100, compressed=False, payload=b"a" * 10,
                                           payload_truncated=True, inspectable=True, complete=False)]
    assert (framer.message_count, framer.total_bytes) == (1, 100)


def test_end_inside_prefix():
    framer = run([frame(b"ok") + b"\x00\x00"])
    assert anomaly_events(framer) == ["grpc_truncated_message"]
    assert framer.message_count == 1


def test_length_over_the_limit_stops_parsing():
    framer = run([frame(b"ok"), b"\x00\x7f\xff\xff\xff" + b"z" * 50, frame(b"never")])
    assert anomaly_events(framer) == ["grpc_length_too_large"]
    assert framer.stopped and framer.lengths == [2]


def test_bad_compressed_flag_stops_parsing():
    framer = run([frame(b"ok"), frame(b"bad", flag=2), frame(b"never")])
    assert anomaly_events(framer) == ["grpc_bad_compressed_flag"]
    assert framer.lengths == [2]
    assert "0x02" in framer.anomalies[0].message and framer.anomalies[0].layer == "grpc"


def test_declared_64_mib_message_streams_with_bounded_memory():
    """A 64 MiB message fed in 1 MiB chunks: counted, only 256 KiB kept, memory stays flat."""
    chunk = b"\x5a" * (1 << 20)
    framer = GrpcFramer()
    framer.feed(b"\x00" + (64 << 20).to_bytes(4, "big"), 0.0)
    tracemalloc.start()
    try:
        for _ in range(63):
            framer.feed(chunk, 0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert framer.message_count == 0  # still streaming: 1 MiB to go
    framer.feed(chunk + frame(b"next"), 0.0)
    framer.end(1.0)
    assert peak < DEFAULT_LIMITS.grpc_keep_message_bytes + 64 * 1024
    assert framer.lengths == [64 << 20, 4]
    assert framer.total_bytes == (64 << 20) + 4
    big = framer.messages[0]
    assert len(big.payload) == DEFAULT_LIMITS.grpc_keep_message_bytes and big.payload_truncated
    assert framer.messages[1] == plain(b"next")
    assert framer.anomalies == []


def test_only_the_first_messages_are_kept():
    limits = Limits(grpc_keep_messages=3, grpc_keep_message_bytes=4)
    framer = run([frame(bytes([n]) * 10) for n in range(100)], limits=limits)
    assert framer.message_count == 100
    assert len(framer.lengths) == 64
    assert [m.payload for m in framer.messages] == [bytes([n]) * 4 for n in range(3)]
    assert all(m.payload_truncated for m in framer.messages)


# --- compression ----------------------------------------------------------------------------------

MESSAGE = b"\x0a\x08resnet50" + b"\x12\x80\x02" + bytes(range(256))


@pytest.mark.parametrize(("encoding", "compress"), [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some peers send it
    ("GZIP", gzip.compress),
])
def test_compressed_messages_are_decompressed(encoding: str, compress):
    framer = run([frame(compress(MESSAGE), flag=1), frame(b"plain")], encoding=encoding)
    assert framer.messages[0] == GrpcMessage(length=len(compress(MESSAGE)), compressed=True, payload=MESSAGE,
                                             payload_truncated=False, inspectable=True)
    assert framer.messages[1] == plain(b"plain")
    assert framer.compressed_count == 1 and framer.anomalies == []


def test_compressed_flag_without_encoding():
    for encoding in (None, "identity"):
        framer = run([frame(gzip.compress(MESSAGE), flag=1)], encoding=encoding)
        assert anomaly_events(framer) == ["grpc_compressed_without_encoding"]
        assert framer.messages[0].inspectable is False
        assert framer.messages[0].payload == gzip.compress(MESSAGE)


def test_unsupported_encoding_is_kept_compressed():
    framer = run([frame(b"\xff\x06\x00\x00sNaPpY", flag=1)] * 3, encoding="snappy")
    assert anomaly_events(framer) == ["grpc_unsupported_encoding"]  # once per framer
    assert [m.inspectable for m in framer.messages] == [False] * 3
    assert framer.messages[0].payload == b"\xff\x06\x00\x00sNaPpY"


def test_corrupt_compressed_message():
    framer = run([frame(b"\x1f\x8b\x08\x00garbage-not-gzip", flag=1)], encoding="gzip")
    assert anomaly_events(framer) == ["grpc_decompression_error"]
    assert framer.messages[0].inspectable is False


def test_decompression_bomb_is_capped():
    """100 MB of zeros gzip'd (about 100 KB): inflating stops at max_decompressed_bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(100)) + compressor.flush()
    assert len(bomb) < DEFAULT_LIMITS.grpc_keep_message_bytes
    framer = run([frame(bomb, flag=1)], encoding="gzip")
    assert anomaly_events(framer) == ["grpc_decompression_bomb"]
    message = framer.messages[0]
    assert message.payload == bytes(DEFAULT_LIMITS.grpc_keep_message_bytes)
    assert message.payload_truncated and message.inspectable and message.length == len(bomb)


def test_large_but_legitimate_compressed_message_is_not_a_bomb():
    data = bytes(range(256)) * 4096  # 1 MiB, under max_decompressed_bytes
    framer = run([frame(gzip.compress(data), flag=1)], encoding="gzip")
    assert framer.anomalies == []
    assert framer.messages[0].payload == data[:DEFAULT_LIMITS.grpc_keep_message_bytes]
    assert framer.messages[0].payload_truncated


# --- gRPC-Web -------------------------------------------------------------------------------------

WEB_TRAILERS = b"grpc-status:7\r\ngrpc-message:denied%20here\r\n"


def test_grpc_web_trailer_frame():
    body = frame(b"\x0a\x01a") + frame(b"\x0a\x01b") + frame(WEB_TRAILERS, flag=0x80)
    for i in range(len(body) + 1):
        framer = run([body[:i], body[i:]], web=True)
        assert framer.lengths == [3, 3]
        assert framer.trailers == [("grpc-status", "7"), ("grpc-message", "denied%20here")]
        assert framer.anomalies == []


def test_grpc_web_text_base64_segments():
    """grpc-web-text: each frame base64-encoded on its own, padding in the middle of the body."""
    body = b"".join(base64.b64encode(f) for f in (frame(b"\x0a\x01a"), frame(b"\x0a\x02bc"),
                                                   frame(WEB_TRAILERS, flag=0x80)))
    assert b"=" in body[:-4]
    for i in range(len(body) + 1):
        framer = run([body[:i], body[i:]], text=True)
        assert [m.payload for m in framer.messages] == [b"\x0a\x01a", b"\x0a\x02bc"]
        assert ("grpc-status", "7") in framer.trailers


def test_grpc_web_text_bad_base64():
    framer = run([b"AAAA!!!!"], text=True)
    assert anomaly_events(framer) == ["grpc_web_text_invalid"]


def test_trailer_flag_is_bad_outside_grpc_web():
    assert anomaly_events(run([frame(WEB_TRAILERS, flag=0x80)])) == ["grpc_bad_compressed_flag"]


# --- observers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "kind"), [
    ("application/grpc", "grpc"),
    ("application/grpc+proto", "grpc"),
    ("Application/GRPC+json; charset=utf-8", "grpc"),
    ("application/grpc-web", "grpc-web"),
    ("application/grpc-web+proto", "grpc-web"),
    ("application/grpc-web-text", "grpc-web-text"),
    ("application/grpc-web-text+proto", "grpc-web-text"),
    ("application/grpcx", None),
    ("application/json", None),
    ("", None),
])
def test_grpc_kind(content_type: str, kind: str | None):
    assert grpc_kind(content_type) == kind


def test_observer_for_takes_the_message_encoding():
    request = HttpMessage(kind="request", version="HTTP/2", headers=[
        ("content-type", "application/grpc-web-text+proto"), ("grpc-encoding", "gzip")])
    framer = grpc_observer_for(request, Limits(grpc_keep_messages=2))
    assert framer is not None
    assert (framer.encoding, framer.web, framer.text) == ("gzip", True, True)
    assert framer.limits.grpc_keep_messages == 2
    assert grpc_observer_for(HttpMessage(kind="response", version="HTTP/2",
                                         headers=[("content-type", "text/html")])) is None


# --- the record -----------------------------------------------------------------------------------

REQUEST_HEADERS = [("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "100m"),
                   ("grpc-encoding", "gzip"), ("grpc-accept-encoding", "identity,deflate,gzip"),
                   ("user-agent", "grpc-python/1.81.1 grpc-c/50.0.0 (linux; chttp2)")]


def exchange(path: str = "/inference.GRPCInferenceService/ModelInfer", *, response_headers=None,
             trailers=None, request_body: bytes = b"", response_body: bytes = b"") -> HttpExchange:
    request = HttpMessage(kind="request", version="HTTP/2", method="POST", path=path, headers=REQUEST_HEADERS)
    response = HttpMessage(kind="response", version="HTTP/2", status=200,
                           headers=response_headers or [("content-type", "application/grpc")],
                           trailers=trailers or [])
    result = HttpExchange(request=request, response=response, stream_id=1)
    sides = (("grpc.request", request, request_body), ("grpc.response", response, response_body))
    for key, message, body in sides:
        framer = grpc_observer_for(message)
        assert framer is not None
        framer.feed(body, 0.0)
        framer.end(0.0)
        result.observations[key] = framer
    return result


def test_record_of_a_call():
    record = grpc_record(exchange(request_body=frame(gzip.compress(MESSAGE), flag=1) + frame(b"\x01"),
                                  response_body=frame(b"r" * 33),
                                  trailers=[("grpc-status", "0"), ("grpc-message", "")]))
    assert record == {
        "service": "inference.GRPCInferenceService",
        "method": "ModelInfer",
        "path": "/inference.GRPCInferenceService/ModelInfer",
        "content_type": "application/grpc",
        "encoding": "gzip",
        "accept_encoding": "identity,deflate,gzip",
        "status": 0,
        "status_name": "OK",
        "message": "",
        "timeout": "100m",
        "user_agent": "grpc-python/1.81.1 grpc-c/50.0.0 (linux; chttp2)",
        "request": {"messages": 2, "bytes": len(gzip.compress(MESSAGE)) + 1,
                    "lengths": [len(gzip.compress(MESSAGE)), 1], "compressed": 1},
        "response": {"messages": 1, "bytes": 33, "lengths": [33], "compressed": 0},
        "trailers_only": False,
    }


def test_record_of_a_trailers_only_response():
    status = [("grpc-status", "7"), ("grpc-message", "blocked%20by%20policy%3A%20%E2%9C%8B")]
    record = grpc_record(exchange(response_headers=[("content-type", "application/grpc"), *status],
                                  trailers=[("content-type", "application/grpc"), *status]))
    assert record is not None
    assert (record["status"], record["status_name"], record["message"], record["trailers_only"]) == (
        7, "PERMISSION_DENIED", "blocked by policy: \u270b", True)
    assert record["response"] == {"messages": 0, "bytes": 0, "lengths": [], "compressed": 0}


def test_record_status_from_grpc_web_trailers():
    result = exchange(response_headers=[("content-type", "application/grpc-web+proto")],
                      response_body=frame(b"ok") + frame(WEB_TRAILERS, flag=0x80))
    record = grpc_record(result)
    assert record is not None
    assert (record["status"], record["message"], record["trailers_only"]) == (7, "denied here", False)


def test_record_message_is_capped_and_odd_statuses():
    long_message = "x" * 5000
    record = grpc_record(exchange(trailers=[("grpc-status", "99"), ("grpc-message", long_message)]))
    assert record is not None
    assert (record["status"], record.get("status_name"), len(record["message"])) == (99, None, 1024)
    record = grpc_record(exchange(trailers=[("grpc-status", "OK")]))
    assert record is not None and "status" not in record
    assert STATUS_NAMES[16] == "UNAUTHENTICATED"


@pytest.mark.parametrize(("path", "service", "method"), [
    ("/pkg.Service/Method", "pkg.Service", "Method"),
    ("/Service/Method", "Service", "Method"),
    ("/pkg.Service/Method/extra", None, None),
    ("/pkg.Service", None, None),
    ("//Method", None, None),
    ("pkg.Service/Method", None, None),
    ("/pkg.Service/Method?x=1", None, None),
])
def test_split_path(path: str, service: str | None, method: str | None):
    assert split_path(path) == (service, method)


def test_malformed_path_keeps_path():
    record = grpc_record(exchange(path="/not-a-grpc-path"))
    assert record is not None
    assert record["path"] == "/not-a-grpc-path" and "service" not in record and "method" not in record


def test_record_without_response():
    result = exchange()
    result.response = None
    del result.observations["grpc.response"]
    record = grpc_record(result)
    assert record is not None
    assert ("status" not in record, record["trailers_only"]) == (True, False)  # absent, never null
    assert record["response"] == {"messages": 0, "bytes": 0, "lengths": [], "compressed": 0}


def test_not_grpc_gives_no_record():
    request = HttpMessage(kind="request", version="HTTP/1.1", method="GET", path="/",
                          headers=[("content-type", "text/plain")])
    assert grpc_record(HttpExchange(request=request, response=None, stream_id=0)) is None


def test_fields_are_declared():
    record = grpc_record(exchange(trailers=[("grpc-status", "2"), ("grpc-message", "boom")]))
    assert record is not None

    def paths(obj: dict, prefix: str) -> set[str]:
        out = set()
        for key, value in obj.items():
            name = f"{prefix}.{key}"
            out |= paths(value, name) if isinstance(value, dict) else {name}
        return out

    declared = {name: spec for name, spec in fields.catalogue().items() if name.startswith("grpc.")}
    assert set(declared) == paths(record, "grpc")
    assert declared["grpc.request.lengths"].type == "list[integer]"
    assert declared["grpc.status"].type == "integer"
    assert declared["grpc.trailers_only"].type == "boolean"
    assert all(spec.events == ("grpc",) and spec.description for spec in declared.values())
