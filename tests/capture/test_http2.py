"""Http2Session against bytes produced by the real h2 library (and hand-built frames for the
malformed cases h2 refuses to send). Most transcripts are fed whole, byte by byte and in random
splits, and must give the same events every way."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable

import hpack
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived
from h2.settings import SettingCodes
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, SettingsFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.capture.http2 import PREFACE, Http2Session
from inspector.http import (
    TO_CLIENT,
    TO_SERVER,
    BodyReceived,
    HeadReceived,
    MessageEnded,
    SessionAnomaly,
    SessionEvent,
    StreamReset,
)
from inspector.limits import DEFAULT_LIMITS, Limits

Transcript = list[tuple[int, bytes]]

GRPC_REQUEST = [(":method", "POST"), (":scheme", "http"), (":authority", "models:8001"),
                (":path", "/inference.GRPCInferenceService/ModelInfer"),
                ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "5S")]
GRPC_RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]


def request_headers(method: str, path: str) -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "http"), (":authority", "h"), (":path", path)]


def grpc_frame(payload: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(payload).to_bytes(4, "big") + payload


class H2Pair:
    """An h2 client and server talking in memory; every byte either sends is recorded."""

    def __init__(self, *, upgrade: bool = False) -> None:
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transcript: Transcript = []
        if upgrade:
            settings_header = self.client.initiate_upgrade_connection()
            self.server.initiate_upgrade_connection(settings_header)
        else:
            self.client.initiate_connection()
            self.server.initiate_connection()
        self.pump()

    def pump(self) -> None:
        while True:
            moved = False
            for conn, peer, direction in ((self.client, self.server, TO_SERVER),
                                          (self.server, self.client, TO_CLIENT)):
                data = conn.data_to_send()
                if not data:
                    continue
                moved = True
                self.transcript.append((direction, data))
                for event in peer.receive_data(data):
                    if isinstance(event, DataReceived) and event.flow_controlled_length:
                        peer.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if not moved:
                return

    def send_body(self, conn: H2Connection, stream_id: int, data: bytes, *, end_stream: bool = False,
                  pad_length: int | None = None) -> None:
        """Send `data` in as many DATA frames as flow control and the frame size need."""
        overhead = pad_length + 1 if pad_length is not None else 0
        while True:
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size) - overhead
            size = min(room, len(data))
            if size <= 0 and data:
                self.pump()
                continue
            last = size == len(data)
            conn.send_data(stream_id, data[:size], end_stream=end_stream and last, pad_length=pad_length)
            data = data[size:]
            self.pump()
            if last:
                return

    def unary(self, path: str, request: bytes, response: bytes, status: str = "0") -> int:
        stream_id = self.client.get_next_available_stream_id()
        headers = [(k, path if k == ":path" else v) for k, v in GRPC_REQUEST]
        self.client.send_headers(stream_id, headers)
        self.send_body(self.client, stream_id, grpc_frame(request), end_stream=True)
        self.server.send_headers(stream_id, GRPC_RESPONSE)
        self.send_body(self.server, stream_id, grpc_frame(response))
        self.server.send_headers(stream_id, [("grpc-status", status)], end_stream=True)
        self.pump()
        return stream_id


# --- feeding and comparing ------------------------------------------------------------------------


def whole(data: bytes) -> Iterable[bytes]:
    yield data


def bytewise(data: bytes) -> Iterable[bytes]:
    return (data[i:i + 1] for i in range(len(data)))


def random_splits(seed: int) -> Callable[[bytes], Iterable[bytes]]:
    rng = random.Random(seed)

    def split(data: bytes) -> Iterable[bytes]:
        pos = 0
        while pos < len(data):
            step = rng.choice((1, 2, 3, 7, 9, 10, 50, 1000, 20000))
            yield data[pos:pos + step]
            pos += step
    return split


def feed(transcript: Transcript, split: Callable[[bytes], Iterable[bytes]] = whole, *,
         limits: Limits = DEFAULT_LIMITS, upgraded: bool = False, eof: bool = True) -> list[SessionEvent]:
    session = Http2Session(limits, upgraded=upgraded)
    events: list[SessionEvent] = []
    for n, (direction, data) in enumerate(transcript):
        for piece in split(data):
            events += session.receive_data(direction, piece, float(n))
    if eof:
        events += session.receive_eof(TO_SERVER, 1000.0)
        events += session.receive_eof(TO_CLIENT, 1000.0)
    return events


def summary(events: list[SessionEvent]) -> list[tuple]:
    """Events without timestamps, body chunks of one message merged."""
    out: list[tuple] = []
    for e in events:
        if isinstance(e, BodyReceived):
            if out and out[-1][0] == "body" and out[-1][1:3] == (e.stream_id, e.direction):
                out[-1] = ("body", e.stream_id, e.direction, out[-1][3] + e.data)
            else:
                out.append(("body", e.stream_id, e.direction, e.data))
        elif isinstance(e, HeadReceived):
            m = e.message
            out.append(("head", e.stream_id, e.direction, m.kind, m.method, m.scheme, m.authority, m.path,
                        m.status, tuple(m.headers), e.end_stream))
        elif isinstance(e, MessageEnded):
            out.append(("end", e.stream_id, e.direction, tuple(e.trailers), e.complete))
        elif isinstance(e, StreamReset):
            out.append(("reset", e.stream_id, e.direction, e.error_code))
        elif isinstance(e, SessionAnomaly):
            out.append(("anomaly", e.event, e.direction, e.stream_id))
    return out


def every_way(transcript: Transcript, **kwargs) -> list[tuple]:
    """Feed whole, byte by byte and in random splits; all must agree. Returns the summary."""
    expected = summary(feed(transcript, whole, **kwargs))
    assert summary(feed(transcript, bytewise, **kwargs)) == expected
    for seed in range(3):
        assert summary(feed(transcript, random_splits(seed), **kwargs)) == expected
    return expected


def anomalies(result: list[tuple]) -> list[str]:
    return [item[1] for item in result if item[0] == "anomaly"]


def of_kind(result: list[tuple], kind: str) -> list[tuple]:
    return [item for item in result if item[0] == kind]


# --- hand-built frames ----------------------------------------------------------------------------


def client_start(encoder_settings: dict[int, int] | None = None) -> bytes:
    frame = SettingsFrame(0)
    frame.settings = dict(encoder_settings or {})
    return PREFACE + frame.serialize()


def server_start() -> bytes:
    return SettingsFrame(0).serialize()


def headers_frame(stream_id: int, block: bytes, *, end_stream: bool = False, end_headers: bool = True,
                  pad_length: int = 0, priority: bool = False) -> bytes:
    frame = HeadersFrame(stream_id, block)
    if end_stream:
        frame.flags.add("END_STREAM")
    if end_headers:
        frame.flags.add("END_HEADERS")
    if pad_length:
        frame.flags.add("PADDED")
        frame.pad_length = pad_length
    if priority:
        frame.flags.add("PRIORITY")
        frame.depends_on, frame.stream_weight, frame.exclusive = 0, 15, False
    return frame.serialize()


def continuation_frame(stream_id: int, block: bytes, *, end_headers: bool = False) -> bytes:
    frame = ContinuationFrame(stream_id, block)
    if end_headers:
        frame.flags.add("END_HEADERS")
    return frame.serialize()


def data_frame(stream_id: int, data: bytes, *, end_stream: bool = False, pad_length: int = 0) -> bytes:
    frame = DataFrame(stream_id, data)
    if end_stream:
        frame.flags.add("END_STREAM")
    if pad_length:
        frame.flags.add("PADDED")
        frame.pad_length = pad_length
    return frame.serialize()


def raw_frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">BHBBI", len(payload) >> 16, len(payload) & 0xFFFF, ftype, flags, stream_id) + payload


def frames_in(transcript: Transcript, direction: int) -> list[tuple[int, int, int]]:
    """`(type, stream id, length)` of each frame one side sent (test-side check of what h2 did)."""
    data = b"".join(chunk for d, chunk in transcript if d == direction)
    pos = len(PREFACE) if data.startswith(PREFACE) else 0
    out = []
    while pos + 9 <= len(data):
        hi, lo, ftype, _flags, stream_id = struct.unpack_from(">BHBBI", data, pos)
        out.append((ftype, stream_id, hi << 16 | lo))
        pos += 9 + (hi << 16 | lo)
    return out


# --- normal traffic -------------------------------------------------------------------------------


def test_grpc_unary_call_gives_head_body_and_trailers():
    """A unary call: request head + one message + end; response head, body, grpc-status trailers."""
    pair = H2Pair()
    pair.unary("/inference.GRPCInferenceService/ModelInfer", b"\x0a\x05dense", b"\x0a\x02ok")
    result = every_way(pair.transcript)
    assert result == [
        ("head", 1, TO_SERVER, "request", "POST", "http", "models:8001",
         "/inference.GRPCInferenceService/ModelInfer", 0,
         (("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "5S")), False),
        ("body", 1, TO_SERVER, grpc_frame(b"\x0a\x05dense")),
        ("end", 1, TO_SERVER, (), True),
        ("head", 1, TO_CLIENT, "response", "", "", "", "", 200, (("content-type", "application/grpc"),),
         False),
        ("body", 1, TO_CLIENT, grpc_frame(b"\x0a\x02ok")),
        ("end", 1, TO_CLIENT, (("grpc-status", "0"),), True),
    ]


def test_head_event_fields():
    """HeadReceived carries a full HttpMessage: version, ts_start, direction and the stream id."""
    pair = H2Pair()
    pair.unary("/a.B/C", b"x", b"y")
    events = feed(pair.transcript)
    heads = [e for e in events if isinstance(e, HeadReceived)]
    assert [(h.stream_id, h.direction, h.message.version, h.message.kind) for h in heads] == [
        (1, TO_SERVER, "HTTP/2", "request"), (1, TO_CLIENT, "HTTP/2", "response")]
    assert heads[0].message.ts_start == heads[0].ts
    assert heads[0].message.content_type == "application/grpc"


def test_concurrent_streams_interleaved():
    """Five streams open at once, bodies interleaved, answered in reverse order."""
    pair = H2Pair()
    ids = []
    for n in range(5):
        stream_id = pair.client.get_next_available_stream_id()
        ids.append(stream_id)
        pair.client.send_headers(stream_id, [(":method", "POST"), (":scheme", "http"), (":authority", "h"),
                                             (":path", f"/svc.S/M{n}"), ("content-type", "application/grpc")])
    for round_ in range(3):
        for n, stream_id in enumerate(ids):
            pair.client.send_data(stream_id, grpc_frame(bytes([n, round_])), end_stream=round_ == 2)
    pair.pump()
    for n, stream_id in reversed(list(enumerate(ids))):
        pair.server.send_headers(stream_id, GRPC_RESPONSE)
        pair.server.send_data(stream_id, grpc_frame(bytes([n]) * (n + 1)))
        pair.server.send_headers(stream_id, [("grpc-status", str(n))], end_stream=True)
    pair.pump()
    result = every_way(pair.transcript)
    paths = {item[1]: item[7] for item in of_kind(result, "head") if item[2] == TO_SERVER}
    assert paths == {stream_id: f"/svc.S/M{n}" for n, stream_id in enumerate(ids)}
    requests: dict[int, bytes] = {}
    responses: dict[int, bytes] = {}
    for _, stream_id, direction, data in of_kind(result, "body"):
        target = requests if direction == TO_SERVER else responses
        target[stream_id] = target.get(stream_id, b"") + data
    assert requests == {stream_id: b"".join(grpc_frame(bytes([n, r])) for r in range(3))
                        for n, stream_id in enumerate(ids)}
    assert responses == {stream_id: grpc_frame(bytes([n]) * (n + 1)) for n, stream_id in enumerate(ids)}
    ends = {(item[1], item[2]): item[3] for item in of_kind(result, "end")}
    assert {sid: ends[(sid, TO_CLIENT)] for sid in ids} == {
        sid: (("grpc-status", str(n)),) for n, sid in enumerate(ids)}
    assert anomalies(result) == []


def test_large_body_across_many_frames():
    """300 KB in 16 KiB DATA frames (with flow control) streams through as body chunks."""
    pair = H2Pair()
    body = bytes(range(256)) * 1200
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_headers(stream_id, [(":method", "PUT"), (":scheme", "http"), (":authority", "s3"),
                                         (":path", "/bucket/key")])
    pair.send_body(pair.client, stream_id, body, end_stream=True)
    pair.server.send_headers(stream_id, [(":status", "200")], end_stream=True)
    pair.pump()
    for split in (whole, random_splits(1), random_splits(2)):
        events = feed(pair.transcript, split)
        received = b"".join(e.data for e in events if isinstance(e, BodyReceived))
        assert received == body
        assert summary(events)[-2:] == [("head", 1, TO_CLIENT, "response", "", "", "", "", 200, (), True),
                                        ("end", 1, TO_CLIENT, (), True)]
    session = Http2Session()
    for direction, data in pair.transcript:
        session.receive_data(direction, data, 0.0)
    assert session.frames_seen > len(body) // 16384


def test_data_padding_is_removed():
    """h2 pad_length on DATA frames: padding never reaches the body."""
    pair = H2Pair()
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_headers(stream_id, GRPC_REQUEST)
    pair.send_body(pair.client, stream_id, grpc_frame(b"A" * 100), pad_length=255)
    pair.send_body(pair.client, stream_id, grpc_frame(b"B" * 30000), pad_length=7, end_stream=True)
    pair.pump()
    result = every_way(pair.transcript)
    body = grpc_frame(b"A" * 100) + grpc_frame(b"B" * 30000)
    assert of_kind(result, "body") == [("body", 1, TO_SERVER, body)]


def test_headers_padding_and_priority():
    """A padded HEADERS frame with the PRIORITY flag (hand-built: h2 does not pad headers)."""
    encoder = hpack.Encoder()
    block = encoder.encode([(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/p")])
    transcript = [(TO_SERVER, client_start() + headers_frame(1, block, end_stream=True, pad_length=40,
                                                             priority=True)),
                  (TO_CLIENT, server_start())]
    result = every_way(transcript)
    assert result == [("head", 1, TO_SERVER, "request", "GET", "https", "a", "/p", 0, (), True),
                      ("end", 1, TO_SERVER, (), True)]


def test_continuation_split_header_block():
    """h2 splits a 40 KB header block into HEADERS + CONTINUATION frames; it comes back whole."""
    pair = H2Pair()
    big = [(f"x-big-{n}", chr(ord("a") + n) * 4000) for n in range(10)]
    pair.client.send_headers(1, [*GRPC_REQUEST, *big], end_stream=True)
    pair.pump()
    block_frames = [ftype for ftype, _, _ in frames_in(pair.transcript, TO_SERVER) if ftype in (1, 9)]
    assert block_frames[0] == 1 and len(block_frames) >= 2 and set(block_frames[1:]) == {9}
    result = every_way(pair.transcript)
    heads = of_kind(result, "head")
    assert len(heads) == 1
    assert heads[0][9][-10:] == tuple(big)
    assert anomalies(result) == []


def test_trailers_only_response():
    """A single HEADERS with END_STREAM and grpc-status: head and trailers carry the same fields."""
    pair = H2Pair()
    pair.client.send_headers(1, GRPC_REQUEST)
    pair.client.send_data(1, grpc_frame(b"\x01"), end_stream=True)
    pair.pump()
    fields = (("content-type", "application/grpc"), ("grpc-status", "7"),
              ("grpc-message", "blocked%20by%20policy"))
    pair.server.send_headers(1, [(":status", "200"), *fields], end_stream=True)
    pair.pump()
    result = every_way(pair.transcript)
    assert result[-2:] == [("head", 1, TO_CLIENT, "response", "", "", "", "", 200, fields, True),
                           ("end", 1, TO_CLIENT, fields, True)]


def test_end_stream_head_without_grpc_status_has_no_trailers():
    pair = H2Pair()
    pair.client.send_headers(1, request_headers("GET", "/"), end_stream=True)
    pair.pump()
    pair.server.send_headers(1, [(":status", "204")], end_stream=True)
    pair.pump()
    assert every_way(pair.transcript)[-1] == ("end", 1, TO_CLIENT, (), True)


def test_informational_response_before_final():
    """A 100 response is a head of its own; the message stays open for the final response."""
    pair = H2Pair()
    pair.client.send_headers(1, [*request_headers("POST", "/up"), ("expect", "100-continue")])
    pair.pump()
    pair.server.send_headers(1, [(":status", "100")])
    pair.client.send_data(1, b"payload", end_stream=True)
    pair.server.send_headers(1, [(":status", "201")], end_stream=True)
    pair.pump()
    result = every_way(pair.transcript)
    responses = [item for item in result if item[2] == TO_CLIENT]
    assert responses == [("head", 1, TO_CLIENT, "response", "", "", "", "", 100, (), False),
                         ("head", 1, TO_CLIENT, "response", "", "", "", "", 201, (), True),
                         ("end", 1, TO_CLIENT, (), True)]


def test_rst_stream_ends_open_messages_incomplete():
    """The client cancels mid-response: StreamReset, then the open response ends incomplete."""
    pair = H2Pair()
    pair.client.send_headers(1, GRPC_REQUEST, end_stream=True)
    pair.pump()
    pair.server.send_headers(1, GRPC_RESPONSE)
    pair.server.send_data(1, grpc_frame(b"partial"))
    pair.pump()
    pair.client.reset_stream(1, ErrorCodes.CANCEL)
    pair.pump()
    result = every_way(pair.transcript)
    assert result[-2:] == [("reset", 1, TO_SERVER, ErrorCodes.CANCEL), ("end", 1, TO_CLIENT, (), False)]


def test_frames_in_flight_after_reset_are_quiet():
    """The server's response crossing the client's RST_STREAM is normal, not an anomaly."""
    pair = H2Pair()
    pair.client.send_headers(1, GRPC_REQUEST, end_stream=True)
    pair.pump()
    reset = pair.client
    reset.reset_stream(1, ErrorCodes.CANCEL)
    rst_bytes = reset.data_to_send()
    pair.server.send_headers(1, GRPC_RESPONSE)
    pair.server.send_data(1, grpc_frame(b"late"), end_stream=True)
    late = pair.server.data_to_send()
    transcript = [*pair.transcript, (TO_SERVER, rst_bytes), (TO_CLIENT, late)]
    result = every_way(transcript)
    assert result[-1] == ("reset", 1, TO_SERVER, ErrorCodes.CANCEL)
    assert anomalies(result) == []


def test_goaway_with_error_is_an_anomaly():
    pair = H2Pair()
    pair.unary("/a.B/C", b"1", b"2")
    pair.server.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM, additional_data=b"too many pings")
    pair.pump()
    result = every_way(pair.transcript)
    assert result[-1] == ("anomaly", "goaway_error", TO_CLIENT, None)
    session = Http2Session()
    events = [e for d, data in pair.transcript for e in session.receive_data(d, data, 0.0)]
    assert "ENHANCE_YOUR_CALM" in events[-1].message and "too many pings" in events[-1].message


def test_goaway_without_error_is_quiet():
    pair = H2Pair()
    pair.unary("/a.B/C", b"1", b"2")
    pair.client.close_connection()
    pair.pump()
    assert anomalies(every_way(pair.transcript)) == []


def test_push_promise_request_and_pushed_response():
    """PUSH_PROMISE: the promised request is a TO_SERVER head with end_stream; its response follows."""
    pair = H2Pair()
    pair.client.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "site"),
                                 (":path", "/")], end_stream=True)
    pair.pump()
    pair.server.push_stream(1, 2, [(":method", "GET"), (":scheme", "https"), (":authority", "site"),
                                   (":path", "/style.css")])
    pair.server.send_headers(1, [(":status", "200")])
    pair.server.send_data(1, b"<html>", end_stream=True)
    pair.server.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    pair.server.send_data(2, b"body{}", end_stream=True)
    pair.pump()
    result = every_way(pair.transcript)
    assert [item for item in result if item[1] == 2] == [
        ("head", 2, TO_SERVER, "request", "GET", "https", "site", "/style.css", 0, (), True),
        ("end", 2, TO_SERVER, (), True),
        ("head", 2, TO_CLIENT, "response", "", "", "", "", 200, (("content-type", "text/css"),), False),
        ("body", 2, TO_CLIENT, b"body{}"),
        ("end", 2, TO_CLIENT, (), True),
    ]
    assert anomalies(result) == []


def test_dynamic_table_reuse_across_requests():
    """The second request's block is mostly table indexes; it decodes to the same headers."""
    pair = H2Pair()
    custom = [("x-session", "s" * 200), ("x-model", "resnet50")]
    for stream_id in (1, 3):
        pair.client.send_headers(stream_id, [*GRPC_REQUEST, *custom], end_stream=True)
        pair.pump()
    sizes = [length for ftype, _, length in frames_in(pair.transcript, TO_SERVER) if ftype == 1]
    assert sizes[1] < sizes[0] / 10
    heads = of_kind(every_way(pair.transcript), "head")
    assert heads[0][9] == heads[1][9]
    assert heads[1][9][-2:] == tuple(custom)


def test_header_table_size_raised_by_settings():
    """The client allows a 64 KiB table: the server's encoder uses more than 4096 bytes of it."""
    pair = H2Pair()
    pair.client.update_settings({SettingCodes.HEADER_TABLE_SIZE: 65536})
    pair.pump()
    many = [(f"x-h{n}", "v" * 900) for n in range(20)]  # ~18 KB: only fits the larger table
    for stream_id in (1, 3):
        pair.client.send_headers(stream_id, GRPC_REQUEST, end_stream=True)
        pair.pump()
        pair.server.send_headers(stream_id, [(":status", "200"), *many], end_stream=True)
        pair.pump()
    result = every_way(pair.transcript)
    responses = [item for item in of_kind(result, "head") if item[2] == TO_CLIENT]
    assert [item[9] for item in responses] == [tuple(many), tuple(many)]
    assert anomalies(result) == []
    capped = feed(pair.transcript, limits=Limits(max_hpack_table_size=8192))
    assert "hpack_error" in anomalies(summary(capped))


def test_header_table_size_lowered_to_zero():
    """The client disables the dynamic table; the server's encoder signals it and keeps working."""
    pair = H2Pair()
    pair.client.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
    pair.pump()
    for stream_id in (1, 3):
        pair.client.send_headers(stream_id, GRPC_REQUEST, end_stream=True)
        pair.pump()
        pair.server.send_headers(stream_id, [(":status", "200"), ("x-same", "value")], end_stream=True)
        pair.pump()
    result = every_way(pair.transcript)
    responses = [item for item in of_kind(result, "head") if item[2] == TO_CLIENT]
    assert [item[9] for item in responses] == [(("x-same", "value"),)] * 2
    assert anomalies(result) == []


def test_upgraded_connection_expects_response_on_stream_1():
    """After `Upgrade: h2c` stream 1 already carried the HTTP/1 request; its response comes here."""
    pair = H2Pair(upgrade=True)
    pair.server.send_headers(1, [(":status", "200"), ("content-type", "text/plain")])
    pair.server.send_data(1, b"upgraded", end_stream=True)
    pair.pump()
    pair.client.send_headers(3, [(":method", "GET"), (":scheme", "http"), (":authority", "h"),
                                 (":path", "/next")], end_stream=True)
    pair.pump()
    assert pair.transcript[0][1].startswith(PREFACE)
    result = every_way(pair.transcript, upgraded=True)
    assert [item[:3] for item in result] == [
        ("head", 1, TO_CLIENT), ("body", 1, TO_CLIENT), ("end", 1, TO_CLIENT),
        ("head", 3, TO_SERVER), ("end", 3, TO_SERVER)]
    assert anomalies(result) == []


# --- capture problems -----------------------------------------------------------------------------


def open_grpc_call() -> H2Pair:
    pair = H2Pair()
    pair.client.send_headers(1, GRPC_REQUEST)
    pair.client.send_data(1, grpc_frame(b"req"))
    pair.pump()
    pair.server.send_headers(1, GRPC_RESPONSE)
    pair.server.send_data(1, grpc_frame(b"resp"))
    pair.pump()
    return pair


def test_gap_stops_that_direction_only():
    pair = open_grpc_call()
    session = Http2Session()
    for direction, data in pair.transcript:
        session.receive_data(direction, data, 1.0)
    events = session.receive_gap(TO_CLIENT, 1200, 2.0)
    assert summary(events) == [("anomaly", "gap", TO_CLIENT, None), ("end", 1, TO_CLIENT, (), False)]
    assert session.receive_data(TO_CLIENT, b"\x00\x00\x04\x00\x01\x00\x00\x00\x01ABCD", 3.0) == []
    pair.client.send_data(1, grpc_frame(b"more"), end_stream=True)
    later = pair.client.data_to_send()
    assert summary(session.receive_data(TO_SERVER, later, 4.0)) == [
        ("body", 1, TO_SERVER, grpc_frame(b"more")), ("end", 1, TO_SERVER, (), True)]
    assert session.receive_gap(TO_CLIENT, 10, 5.0) == []


def test_eof_ends_open_messages_incomplete():
    pair = open_grpc_call()
    result = summary(feed(pair.transcript))
    assert result[-2:] == [("end", 1, TO_SERVER, (), False), ("end", 1, TO_CLIENT, (), False)]


def test_eof_inside_a_frame_is_truncated_frame():
    pair = open_grpc_call()
    cut = [*pair.transcript[:-1], (pair.transcript[-1][0], pair.transcript[-1][1][:-3])]
    assert "truncated_frame" in anomalies(every_way(cut))


def test_not_http2_gives_up_cleanly():
    session = Http2Session()
    events = session.receive_data(TO_SERVER, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1.0)
    assert summary(events) == [("anomaly", "missing_preface", TO_SERVER, None),
                               ("anomaly", "not_http2", TO_SERVER, None)]
    assert session.receive_data(TO_CLIENT, b"HTTP/1.1 200 OK\r\n\r\n", 2.0) == []
    assert session.receive_eof(TO_SERVER, 3.0) == []


def test_server_not_speaking_http2_gives_up():
    result = summary(feed([(TO_SERVER, client_start()), (TO_CLIENT, b"HTTP/1.1 400 Bad Request\r\n\r\n")]))
    assert result == [("anomaly", "not_http2", TO_CLIENT, None)]


def test_capture_starting_mid_connection_still_reads_frames():
    """No preface, but frames: one anomaly, then static-table headers still decode."""
    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/")])
    transcript = [(TO_SERVER, headers_frame(5, block, end_stream=True))]
    result = every_way(transcript)
    assert result == [("anomaly", "missing_preface", TO_SERVER, None),
                      ("head", 5, TO_SERVER, "request", "GET", "http", "", "/", 0, (), True),
                      ("end", 5, TO_SERVER, (), True)]


def test_missing_settings_first_is_noted():
    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/")])
    result = every_way([(TO_SERVER, PREFACE + headers_frame(1, block, end_stream=True))])
    assert anomalies(result) == ["missing_settings"]


# --- malformed input ------------------------------------------------------------------------------


def test_hpack_error_stops_header_decoding_but_not_data():
    """An undecodable block: hpack_error; later DATA on open streams still flows, new heads don't."""
    encoder = hpack.Encoder()
    request = encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C")])
    transcript = [
        (TO_SERVER, client_start() + headers_frame(1, request)),
        (TO_SERVER, headers_frame(3, b"\xff\xff\xff\x7f")),  # index far past the table
        (TO_SERVER, data_frame(1, b"still here", end_stream=True)),
        (TO_SERVER, headers_frame(5, encoder.encode([(":method", "GET"), (":path", "/x")]), end_stream=True)),
    ]
    result = every_way(transcript)
    assert result == [
        ("head", 1, TO_SERVER, "request", "POST", "http", "", "/a.B/C", 0, (), False),
        ("anomaly", "hpack_error", TO_SERVER, 3),
        ("body", 1, TO_SERVER, b"still here"),
        ("end", 1, TO_SERVER, (), True),
    ]


def test_hpack_error_on_trailers_ends_message_incomplete():
    encoder = hpack.Encoder()
    transcript = [
        (TO_SERVER, client_start() + headers_frame(1, encoder.encode(request_headers("POST", "/a")))),
        (TO_SERVER, headers_frame(1, b"\x3f\xff\xff\xff\xff\x0f", end_stream=True)),  # huge size update
    ]
    result = every_way(transcript)
    assert result[1:] == [("anomaly", "hpack_error", TO_SERVER, 1), ("end", 1, TO_SERVER, (), False)]


def test_header_list_too_large():
    pair = H2Pair()
    pair.client.send_headers(1, [*GRPC_REQUEST, ("x-big", "z" * 3000)], end_stream=True)
    pair.pump()
    result = every_way(pair.transcript, limits=Limits(max_header_list_size=2000))
    assert anomalies(result) == ["header_list_too_large"]
    assert of_kind(result, "head") == []


def test_header_block_too_large_in_one_frame_and_across_continuations():
    encoder = hpack.Encoder()
    block = encoder.encode([(":method", "GET"), (":path", "/"), ("x-pad", "p" * 3000)])
    limits = Limits(max_header_bytes=1024)
    one_frame = [(TO_SERVER, client_start() + headers_frame(1, block, end_stream=True))]
    assert anomalies(every_way(one_frame, limits=limits)) == ["header_block_too_large"]
    pieces = [block[i:i + 500] for i in range(0, len(block), 500)]
    last = len(pieces) - 1
    split = client_start() + headers_frame(1, pieces[0], end_headers=False) + b"".join(
        continuation_frame(1, piece, end_headers=n == last) for n, piece in enumerate(pieces[1:], 1))
    result = every_way([(TO_SERVER, split)], limits=limits)
    assert anomalies(result) == ["header_block_too_large"]  # the rest of the block is skipped quietly


def test_continuation_flood():
    encoder = hpack.Encoder()
    block = encoder.encode([(":method", "GET"), (":path", "/"), ("x-pad", "p" * 400)])
    frames = headers_frame(1, block[:1], end_headers=False) + b"".join(
        continuation_frame(1, block[i:i + 1], end_headers=i == len(block) - 1) for i in range(1, len(block)))
    result = every_way([(TO_SERVER, client_start() + frames)])
    assert anomalies(result) == ["continuation_flood"]
    assert of_kind(result, "head") == []
    ok = every_way([(TO_SERVER, client_start() + frames)], limits=Limits(max_continuation_frames=1000))
    assert anomalies(ok) == [] and len(of_kind(ok, "head")) == 1


def test_continuation_interrupted_by_another_frame():
    encoder = hpack.Encoder()
    block = encoder.encode([(":method", "GET"), (":path", "/"), ("x-a", "b")])
    transcript = [(TO_SERVER, client_start() + headers_frame(1, block[:4], end_headers=False)
                   + data_frame(3, b"x") + continuation_frame(1, block[4:], end_headers=True))]
    result = every_way(transcript)
    assert [item[1] for item in of_kind(result, "anomaly")][:1] == ["continuation_expected"]
    assert of_kind(result, "head") == []


def test_stray_continuation():
    result = every_way([(TO_SERVER, client_start() + continuation_frame(1, b"\x82", end_headers=True))])
    assert anomalies(result) == ["unexpected_continuation"]


def test_bad_padding():
    frame = raw_frame(0x0, 0x08, 1, bytes([200]) + b"short")
    encoder = hpack.Encoder()
    transcript = [(TO_SERVER, client_start() + headers_frame(1, encoder.encode([(":method", "POST"),
                                                                                (":path", "/")])) + frame)]
    assert "bad_padding" in anomalies(every_way(transcript))


def test_too_many_streams_closes_the_oldest():
    pair = H2Pair()
    for stream_id in (1, 3, 5, 7, 9):
        pair.client.send_headers(stream_id, GRPC_REQUEST)
    pair.pump()
    result = every_way(pair.transcript, limits=Limits(max_streams_per_connection=3), eof=False)
    assert anomalies(result) == ["too_many_streams", "too_many_streams"]
    assert of_kind(result, "end") == [("end", 1, TO_SERVER, (), False), ("end", 3, TO_SERVER, (), False)]


def test_frame_over_the_limit_stops_the_direction():
    window_update, big_ping = raw_frame(0x8, 0, 0, b"\x00" * 4), raw_frame(0x6, 0, 0, b"x" * 2000)
    transcript = [(TO_SERVER, client_start() + window_update + big_ping)]
    result = every_way(transcript, limits=Limits(max_frame_bytes=1000))
    assert anomalies(result) == ["frame_too_large"]


def test_frame_over_peer_max_frame_size_is_noted():
    encoder = hpack.Encoder()
    transcript = [
        (TO_SERVER, client_start() + headers_frame(1, encoder.encode([(":method", "GET"), (":path", "/")]),
                                                   end_stream=True)),
        (TO_CLIENT, server_start() + headers_frame(1, hpack.Encoder().encode([(":status", "200")]))
         + data_frame(1, b"X" * 70000, end_stream=True)),
    ]
    result = every_way(transcript)
    assert anomalies(result) == ["frame_exceeds_max_size"]
    assert of_kind(result, "body") == [("body", 1, TO_CLIENT, b"X" * 70000)]


def test_unknown_frame_types_are_ignored():
    encoder = hpack.Encoder()
    transcript = [(TO_SERVER, client_start() + raw_frame(0xFA, 0xFF, 1, b"?" * 300) + headers_frame(
        1, encoder.encode([(":method", "GET"), (":path", "/")]), end_stream=True))]
    result = every_way(transcript)
    assert anomalies(result) == [] and len(of_kind(result, "head")) == 1


def test_same_block_bytes_after_a_table_change_decode_anew():
    """b"\\xbe" names the newest dynamic entry: decoded blocks are reused only while the table
    is unchanged."""
    encoder = hpack.Encoder()
    first = encoder.encode([(":method", "GET"), (":path", "/"), ("x-tenant", "alpha")])
    second = encoder.encode([(":method", "GET"), (":path", "/"), ("x-tenant", "beta")])
    newest = b"\x82\x84\xbe"  # :method GET, :path /, dynamic index 62
    transcript = [(TO_SERVER, client_start() + headers_frame(1, first, end_stream=True)
                   + headers_frame(3, newest, end_stream=True) + headers_frame(5, second, end_stream=True)
                   + headers_frame(7, newest, end_stream=True) + headers_frame(9, newest, end_stream=True))]
    heads = of_kind(every_way(transcript), "head")
    assert [head[9] for head in heads] == [(("x-tenant", "alpha"),)] * 2 + [(("x-tenant", "beta"),)] * 3


def test_request_anomalies():
    encoder = hpack.Encoder()
    transcript = [(TO_SERVER, client_start()
                   + headers_frame(1, encoder.encode([(":method", "GET")]), end_stream=True)  # no :path
                   + headers_frame(4, encoder.encode(request_headers("GET", "/even")), end_stream=True)
                   + data_frame(9, b"orphan")
                   + headers_frame(11, encoder.encode(request_headers("POST", "/t")))
                   + headers_frame(11, encoder.encode([("x-trailer", "1")]))  # trailers without END_STREAM
                   + headers_frame(1, encoder.encode(request_headers("GET", "/again")), end_stream=True)),
                  (TO_CLIENT, server_start() + headers_frame(11, hpack.Encoder().encode([(":status", "20x")]),
                                                             end_stream=True))]
    result = every_way(transcript)
    assert anomalies(result) == ["missing_pseudo_header", "bad_stream_id", "data_without_headers",
                                 "trailers_without_end_stream", "frame_on_closed_stream", "bad_status"]
    assert ("end", 11, TO_SERVER, (("x-trailer", "1"),), False) in result


def test_push_promise_from_client_is_an_anomaly():
    encoder = hpack.Encoder()
    promise = raw_frame(0x5, 0x4, 1, struct.pack(">I", 2) + encoder.encode(request_headers("GET", "/p")))
    assert anomalies(every_way([(TO_SERVER, client_start() + promise)])) == ["push_promise_from_client"]


def test_repeated_anomalies_are_capped():
    """A peer repeating one malformation is reported a few times and counted in full."""
    bad_ping = raw_frame(0x6, 0, 0, b"123")
    session = Http2Session()
    events = session.receive_data(TO_SERVER, client_start() + bad_ping * 50, 0.0)
    assert anomalies(summary(events)) == ["frame_size_error"] * 8
    assert session.anomaly_counts == {"frame_size_error": 50}


def test_bad_direction_is_an_anomaly_not_an_exception():
    session = Http2Session()
    assert summary(session.receive_data(7, b"x", 0.0)) == [("anomaly", "bad_direction", None, None)]


# --- never raises ---------------------------------------------------------------------------------


def rich_transcript() -> Transcript:
    pair = H2Pair()
    pair.client.update_settings({SettingCodes.HEADER_TABLE_SIZE: 8192})
    pair.unary("/a.B/C", b"q" * 40, b"r" * 70)
    pair.client.send_headers(3, [*GRPC_REQUEST, ("x-big", "b" * 20000)])
    pair.send_body(pair.client, 3, grpc_frame(b"s" * 3000), pad_length=9, end_stream=True)
    pair.pump()
    pair.server.send_headers(3, [*GRPC_RESPONSE, ("grpc-status", "5")], end_stream=True)
    pair.client.send_headers(5, GRPC_REQUEST)
    pair.pump()
    pair.client.reset_stream(5)
    pair.pump()
    pair.server.close_connection(error_code=ErrorCodes.PROTOCOL_ERROR)
    pair.pump()
    return pair.transcript


RICH = rich_transcript()


def test_rich_transcript_every_way():
    result = every_way(RICH)
    assert anomalies(result) == ["goaway_error"]
    assert [item[1] for item in of_kind(result, "head")] == [1, 1, 3, 5, 3]


def _feed_quietly(transcript: Transcript) -> list[SessionEvent]:
    events = feed(transcript)
    assert "internal_error" not in {e.event for e in events if isinstance(e, SessionAnomaly)}
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_random_bytes_after_preface_never_raise(client: bytes, server: bytes):
    _feed_quietly([(TO_SERVER, PREFACE + client), (TO_CLIENT, server)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_transcripts_never_raise(data: st.DataObject):
    """Flip, drop and insert bytes in a real transcript; the session must not raise or crash."""
    mutated: Transcript = []
    for direction, chunk in RICH:
        buf = bytearray(chunk)
        for _ in range(data.draw(st.integers(0, 3))):
            if not buf:
                break
            pos = data.draw(st.integers(0, len(buf) - 1))
            action = data.draw(st.sampled_from(("flip", "drop", "insert")))
            if action == "flip":
                buf[pos] ^= data.draw(st.integers(1, 255))
            elif action == "drop":
                del buf[pos:pos + data.draw(st.integers(1, 16))]
            else:
                buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        mutated.append((direction, bytes(buf)))
    _feed_quietly(mutated)


@pytest.mark.parametrize("length", [0, 1, 7, 9, 24, 33])
def test_truncated_transcripts_never_raise(length: int):
    _feed_quietly([(direction, chunk[:length]) for direction, chunk in RICH])
