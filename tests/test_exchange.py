"""The exchange builder: session events in, complete exchanges out (both paths use it)."""

import gzip
import zlib

from inspector.exchange import ExchangeBuilder
from inspector.http import (
    TO_CLIENT,
    TO_SERVER,
    BodyReceived,
    HeadReceived,
    HttpExchange,
    HttpMessage,
    MessageEnded,
    SessionAnomaly,
    StreamReset,
)
from inspector.limits import Limits


def request(path="/x", headers=None):
    return HttpMessage(kind="request", version="HTTP/1.1", method="POST", path=path, headers=headers or [])


def response(status=200, headers=None):
    return HttpMessage(kind="response", version="HTTP/1.1", status=status, headers=headers or [])


def gz_response():
    return response(headers=[("content-encoding", "gzip")])


def exchange_of(events, limits=None, factories=()):
    builder = ExchangeBuilder(limits or Limits(), factories)
    out = builder.feed(events) + builder.finish(9.0)
    exchanges = [o for o in out if isinstance(o, HttpExchange)]
    anomalies = [o for o in out if isinstance(o, SessionAnomaly)]
    return exchanges, anomalies


def test_request_response_with_bodies():
    events = [
        HeadReceived(stream_id=0, direction=TO_SERVER, message=request(), end_stream=False, ts=1.0),
        BodyReceived(stream_id=0, direction=TO_SERVER, data=b"ab", ts=1.0),
        BodyReceived(stream_id=0, direction=TO_SERVER, data=b"cd", ts=1.1),
        MessageEnded(stream_id=0, direction=TO_SERVER, trailers=[], ts=1.1),
        HeadReceived(stream_id=0, direction=TO_CLIENT, message=response(), end_stream=False, ts=1.2),
        BodyReceived(stream_id=0, direction=TO_CLIENT, data=b"ok", ts=1.3),
        MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[("x-t", "1")], ts=1.3),
    ]
    (ex,), anomalies = exchange_of(events)
    assert ex.request.body == b"abcd" and ex.request.body_length == 4 and ex.request.complete
    assert ex.response.body == b"ok" and ex.response.trailers == [("x-t", "1")]
    assert ex.request.ts_start == 1.0 and ex.response.ts_end == 1.3
    assert anomalies == []


def test_body_is_kept_up_to_the_cap_but_counted_whole():
    events = [HeadReceived(stream_id=0, direction=TO_SERVER, message=request(), end_stream=False, ts=1.0)]
    events += [BodyReceived(stream_id=0, direction=TO_SERVER, data=b"x" * 100, ts=1.0)] * 10
    events.append(MessageEnded(stream_id=0, direction=TO_SERVER, trailers=[], ts=1.0))
    (ex,), _ = exchange_of(events, Limits(body_keep_bytes=250))
    assert len(ex.request.body) == 250 and ex.request.body_length == 1000 and ex.request.body_truncated
    assert ex.response is None


def test_gzip_body_is_decoded():
    payload = b'{"inputs": []}' * 100
    packed = gzip.compress(payload)
    events = [HeadReceived(stream_id=0, direction=TO_CLIENT, message=gz_response(), end_stream=False, ts=1.0)]
    events += [BodyReceived(stream_id=0, direction=TO_CLIENT, data=packed[i:i + 7], ts=1.0)
               for i in range(0, len(packed), 7)]
    events.append(MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[], ts=1.0))
    (ex,), _ = exchange_of(events)
    assert ex.response.body == payload and ex.response.decoded == "gzip"
    assert ex.response.body_length == len(packed)


def test_raw_deflate_is_accepted_for_deflate():
    payload = b"hello deflate " * 10
    co = zlib.compressobj(wbits=-15)
    raw = co.compress(payload) + co.flush()
    head = response(headers=[("content-encoding", "deflate")])
    events = [HeadReceived(stream_id=0, direction=TO_CLIENT, message=head, end_stream=False, ts=1.0),
              BodyReceived(stream_id=0, direction=TO_CLIENT, data=raw, ts=1.0),
              MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[], ts=1.0)]
    (ex,), _ = exchange_of(events)
    assert ex.response.body == payload


def test_decompression_bomb_is_capped_and_reported():
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    events = [HeadReceived(stream_id=0, direction=TO_CLIENT, message=gz_response(), end_stream=False, ts=1.0),
              BodyReceived(stream_id=0, direction=TO_CLIENT, data=bomb, ts=1.0),
              MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[], ts=1.0)]
    (ex,), anomalies = exchange_of(events, Limits(body_keep_bytes=1 << 20))
    assert len(ex.response.body) == 1 << 20 and ex.response.body_truncated
    assert [a.event for a in anomalies] == ["decompression_bomb"]


def test_corrupt_gzip_is_an_anomaly_not_an_exception():
    events = [HeadReceived(stream_id=0, direction=TO_CLIENT, message=gz_response(), end_stream=False, ts=1.0),
              BodyReceived(stream_id=0, direction=TO_CLIENT, data=b"not gzip at all", ts=1.0),
              MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[], ts=1.0)]
    (ex,), anomalies = exchange_of(events)
    assert [a.event for a in anomalies] == ["content_decode_error"] and ex.response.body == b""


def test_interim_responses_and_reset():
    events = [
        HeadReceived(stream_id=3, direction=TO_SERVER, message=request(), end_stream=False, ts=1.0),
        HeadReceived(stream_id=3, direction=TO_CLIENT, message=response(100), end_stream=True, ts=1.1),
        StreamReset(stream_id=3, direction=TO_SERVER, error_code=8, ts=1.2),
    ]
    (ex,), _ = exchange_of(events)
    assert [m.status for m in ex.interim] == [100] and ex.response is None and ex.reset_code == 8


def test_observers_see_every_chunk_and_are_attached():
    class Counter:
        def __init__(self):
            self.seen = 0
            self.ended = False

        def feed(self, data, ts):
            self.seen += len(data)

        def end(self, ts):
            self.ended = True

    def factory(message, limits):
        return ("count", Counter()) if message.kind == "request" else None

    events = [HeadReceived(stream_id=1, direction=TO_SERVER, message=request(), end_stream=False, ts=1.0)]
    events += [BodyReceived(stream_id=1, direction=TO_SERVER, data=b"y" * 1000, ts=1.0)] * 5
    events += [MessageEnded(stream_id=1, direction=TO_SERVER, trailers=[], ts=1.0),
               HeadReceived(stream_id=1, direction=TO_CLIENT, message=response(), end_stream=True, ts=1.1)]
    (ex,), _ = exchange_of(events, Limits(body_keep_bytes=10), (factory,))
    observer = ex.observations["count.request"]
    assert observer.seen == 5000 and observer.ended and "count.response" not in ex.observations


def test_response_without_request_and_unfinished_exchanges_are_emitted():
    events = [HeadReceived(stream_id=0, direction=TO_CLIENT, message=response(204), end_stream=True, ts=1.0),
              HeadReceived(stream_id=1, direction=TO_SERVER, message=request("/late"), end_stream=True, ts=2.0)]
    exchanges, _ = exchange_of(events)
    assert [(e.request is None, e.response.status if e.response else None) for e in exchanges] == [
        (True, 204), (False, None)]


def test_101_that_ends_the_response_is_final():
    """Websocket: the 101 is the response; the tunnel that follows is not HTTP."""
    events = [
        HeadReceived(stream_id=0, direction=TO_SERVER, message=request("/ws"), end_stream=True, ts=1.0),
        MessageEnded(stream_id=0, direction=TO_SERVER, trailers=[], ts=1.0),
        HeadReceived(stream_id=0, direction=TO_CLIENT, message=response(101), end_stream=True, ts=1.1),
        MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[], ts=1.1),
    ]
    (ex,), _ = exchange_of(events)
    assert ex.response.status == 101 and ex.interim == []


def test_a_reset_stream_keeps_what_its_observers_saw():
    """A gRPC call the client cancels mid-response (RST_STREAM): the messages that came before
    the reset are still counted (they were dropped once the exchange left the open ones)."""

    class Counter:
        def __init__(self):
            self.seen = 0

        def feed(self, data, ts):
            self.seen += len(data)

        def end(self, ts):
            pass

    def factory(message, limits):
        return ("count", Counter())

    events = [HeadReceived(stream_id=5, direction=TO_SERVER, message=request(), end_stream=True, ts=1.0),
              HeadReceived(stream_id=5, direction=TO_CLIENT, message=response(), end_stream=False, ts=1.1)]
    events += [BodyReceived(stream_id=5, direction=TO_CLIENT, data=b"m" * 105, ts=1.2)] * 5
    events.append(StreamReset(stream_id=5, direction=TO_SERVER, error_code=8, ts=1.3))
    (ex,), _ = exchange_of(events, factories=(factory,))
    assert ex.reset_code == 8 and ex.observations["count.response"].seen == 525
    assert not ex.response.complete and ex.response.body_length == 525


def test_a_101_response_is_complete_and_headers_past_the_cap_are_flagged():
    from inspector.protocols.http import MAX_LOGGED_HEADERS, http_object

    many = [(f"x-h{i}", "v") for i in range(MAX_LOGGED_HEADERS)] + [("x-last", "EVIL")]
    events = [
        HeadReceived(stream_id=0, direction=TO_SERVER, message=request("/ws", many), end_stream=True, ts=1.0),
        MessageEnded(stream_id=0, direction=TO_SERVER, trailers=[], ts=1.0),
        HeadReceived(stream_id=0, direction=TO_CLIENT, message=response(101), end_stream=True, ts=1.1),
        MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[], ts=1.1),
    ]
    (ex,), _ = exchange_of(events)
    obj = http_object(ex)
    assert obj["status"] == 101 and obj["response_complete"] is True
    assert obj["request_headers_cut"] is True and len(obj["request_headers"]) == MAX_LOGGED_HEADERS
    assert "response_headers_cut" not in obj


def test_trailers_reach_the_record():
    from inspector.protocols.http import http_object

    events = [
        HeadReceived(stream_id=0, direction=TO_SERVER, message=request(), end_stream=True, ts=1.0),
        HeadReceived(stream_id=0, direction=TO_CLIENT, message=response(), end_stream=False, ts=1.1),
        BodyReceived(stream_id=0, direction=TO_CLIENT, data=b"ok", ts=1.1),
        MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[("x-checksum", "deadbeef")], ts=1.2),
    ]
    (ex,), _ = exchange_of(events)
    assert http_object(ex)["response_trailers"] == [{"name": "x-checksum", "value": "deadbeef"}]


def test_an_h2c_upgrade_request_carries_the_stream_it_was_answered_on():
    from inspector.protocols.http import http_object

    upgraded = HttpExchange(request=request("/upg"), stream_id=1,
                            response=HttpMessage(kind="response", version="HTTP/2", status=200))
    obj = http_object(upgraded)
    assert (obj["protocol"], obj["http2"]) == ("HTTP/1.1", {"stream_id": 1})  # sent as HTTP/1.1
