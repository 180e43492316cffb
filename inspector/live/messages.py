"""mitmproxy's HTTP messages as the normalized `inspector.http.HttpMessage`, and exchanges built
from them with the shared `ExchangeBuilder`.

The live path gives the same builder the same messages as the offline HTTP sessions, with the
same body observers (`inspector.apps.OBSERVER_FACTORIES`), so gRPC framing, decompression and
every protocol layer parse identically: a whole message in one call (`ExchangeBuilder.whole`),
a streamed one as the session events HeadReceived, BodyReceived, MessageEnded. Bodies are fed
as mitmproxy holds them: transfer coding removed, content coding kept (`raw_content`; the
builder decodes gzip/deflate itself, capped). aws-chunked S3 uploads make `content` raise;
`raw_content` never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inspector.apps import OBSERVER_FACTORIES
from inspector.exchange import ExchangeBuilder
from inspector.http import (
    TO_CLIENT,
    TO_SERVER,
    BodyReceived,
    Headers,
    HeadReceived,
    HttpExchange,
    HttpMessage,
    MessageEnded,
    SessionAnomaly,
)
from inspector.limits import Limits

#: The one stream id of a live exchange (mitmproxy gives each request/response pair its own flow).
STREAM = 0


def header_list(headers: Any) -> Headers:
    """mitmproxy Headers (or None) as lower-case (name, value) pairs, latin-1 decoded."""
    if headers is None:
        return []
    return [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in headers.fields]


def http_version(version: str) -> str:
    return "HTTP/2" if version in ("HTTP/2.0", "HTTP/2") else version


def request_head(request: Any) -> HttpMessage:
    """The head of a mitmproxy Request as a normalized message (no body)."""
    return HttpMessage(kind="request", version=http_version(request.http_version),
                       headers=header_list(request.headers), method=request.method,
                       scheme=request.scheme, authority=request.host_header or request.authority or "",
                       path=request.path, ts_start=request.timestamp_start or 0.0)


def response_head(response: Any) -> HttpMessage:
    """The head of a mitmproxy Response as a normalized message (no body)."""
    return HttpMessage(kind="response", version=http_version(response.http_version),
                       headers=header_list(response.headers), status=response.status_code,
                       reason=response.reason or "", ts_start=response.timestamp_start or 0.0)


def fresh(head: HttpMessage) -> HttpMessage:
    """A copy of a head that a new builder may fill (builders write body and times into it)."""
    return HttpMessage(kind=head.kind, version=head.version, headers=list(head.headers), method=head.method,
                       scheme=head.scheme, authority=head.authority, path=head.path, status=head.status,
                       reason=head.reason, ts_start=head.ts_start)


def raw_body(message: Any) -> bytes:
    """The body as received (transfer coding removed, content coding kept); b"" when absent."""
    data = message.raw_content
    return data if data else b""


def new_builder(limits: Limits) -> ExchangeBuilder:
    return ExchangeBuilder(limits, OBSERVER_FACTORIES)


def split_results(results: list) -> tuple[HttpExchange | None, list[SessionAnomaly]]:
    """The (single) exchange and the anomalies among builder results."""
    exchange = None
    anomalies = []
    for item in results:
        if isinstance(item, HttpExchange):
            exchange = item
        elif isinstance(item, SessionAnomaly):
            anomalies.append(item)
    return exchange, anomalies


def request_exchange(limits: Limits, head: HttpMessage, body: bytes, trailers: Headers, ts_end: float,
                     *, complete: bool = True) -> tuple[HttpExchange, list[SessionAnomaly]]:
    """A request-only exchange (what is known before anything goes upstream)."""
    return _one_side(limits, TO_SERVER, head, body, trailers, ts_end, complete)


def response_exchange(limits: Limits, head: HttpMessage, body: bytes, trailers: Headers, ts_end: float,
                      *, complete: bool = True) -> tuple[HttpExchange, list[SessionAnomaly]]:
    """A response-only exchange, to be merged with its request's (see :func:`merge`)."""
    return _one_side(limits, TO_CLIENT, head, body, trailers, ts_end, complete)


def _one_side(limits: Limits, direction: int, head: HttpMessage, body: bytes, trailers: Headers, ts_end: float,
              complete: bool) -> tuple[HttpExchange, list[SessionAnomaly]]:
    builder = new_builder(limits)
    results = builder.whole(direction, fresh(head), body, trailers, ts_end, complete=complete, stream_id=STREAM)
    results += builder.finish(ts_end)
    exchange, anomalies = split_results(results)
    assert exchange is not None
    return exchange, anomalies


def merge(request_side: HttpExchange, response_side: HttpExchange | None) -> HttpExchange:
    """One exchange from a request-only and a response-only exchange."""
    if response_side is None:
        return request_side
    observations = dict(request_side.observations)
    observations.update(response_side.observations)
    return HttpExchange(request=request_side.request, response=response_side.response,
                        stream_id=request_side.stream_id, interim=list(response_side.interim),
                        reset_code=response_side.reset_code, observations=observations)


class StreamedMessage:
    """A message whose body streams past: fed chunk by chunk to its own builder, which keeps a
    capped prefix and runs the body observers over every byte. Once the builder wants no more
    of the bytes (the prefix is kept and no observer reads the body: a model pulled from S3),
    the rest is only counted, without an event per chunk; and where the transport holds the
    sender to a declared length, not even counted (:meth:`hand_back`)."""

    __slots__ = ("_ask_at", "_count", "_declared", "_fed", "_found", "_keep", "builder", "direction", "ended",
                 "head")

    def __init__(self, limits: Limits, direction: int, head: HttpMessage) -> None:
        self.builder = new_builder(limits)
        self.direction = direction
        self.head = fresh(head)
        self.ended = False
        self._count: Callable[[int], None] | None = None
        #: Body bytes fed, and at how many the builder is next asked whether it still wants them:
        #: once per kept-prefix size, from the first (an observed body never stops wanting them,
        #: and asking for every chunk cost a sixth of feeding a small one).
        self._fed = 0
        self._keep = self._ask_at = limits.body_keep_bytes
        self._declared: int | None = None  # set by hand_back: the body's length once it completes
        #: What the builder found while the body went by (a coding that does not decode, a
        #: decompression bomb), for :meth:`end`.
        self._found: list = self.builder.feed([HeadReceived(stream_id=STREAM, direction=direction,
                                                            message=self.head, end_stream=False,
                                                            ts=head.ts_start)])

    def feed(self, data: bytes, ts: float) -> None:
        if data and not self.ended:
            if self._count is not None:
                self._count(len(data))
                self._fed += len(data)
                return
            found = self.builder.feed([BodyReceived(stream_id=STREAM, direction=self.direction, data=data, ts=ts)])
            if found:
                self._found += found
            self._fed += len(data)
            if self._fed >= self._ask_at:
                self._count = self.builder.counter_for(STREAM, self.direction)
                self._ask_at = self._fed + self._keep

    @property
    def counting_only(self) -> bool:
        """Whether the bytes themselves are no longer wanted (only their number)."""
        return self._count is not None

    def hand_back(self, declared: int) -> bool:
        """Stop being fed: the rest of the body is not wanted (only counted) and the transport
        delivers `declared` body bytes in all or fails the message (mitmproxy's HTTP/1 reader of
        a Content-Length body). A message that then ends complete is counted to `declared`;
        one that fails keeps what was fed. False (keep feeding) while the bytes are wanted."""
        if self._count is None or self.ended or declared < self._fed:
            return False
        self._declared = declared
        return True

    def forget_found(self) -> None:
        """What the builder found so far was written by an inspection of the same bytes (a held
        first part): :meth:`end` reports only what it finds from here on."""
        self._found = []

    def end(self, trailers: Headers, ts: float, *, complete: bool = True) -> tuple[HttpExchange, list]:
        """End the message; the exchange (one side) and the anomalies seen."""
        results: list = self._found
        self._found = []
        if not self.ended:
            self.ended = True
            if complete and self._declared is not None and self._count is not None and self._declared > self._fed:
                self._count(self._declared - self._fed)  # the part forwarded without the sidecar
                self._fed = self._declared
            results += self.builder.feed([MessageEnded(stream_id=STREAM, direction=self.direction,
                                                       trailers=trailers, ts=ts, complete=complete)])
        results += self.builder.finish(ts)
        exchange, anomalies = split_results(results)
        if exchange is None:
            exchange = HttpExchange(request=self.head if self.direction == TO_SERVER else None,
                                    response=self.head if self.direction == TO_CLIENT else None,
                                    stream_id=STREAM)
        return exchange, anomalies
