"""Session events -> complete HTTP exchanges: bodies capped, content decoded, observers fed.

Both paths use this builder: offline the HTTP/1 and HTTP/2 sessions feed it, live the mitmproxy
addon does. For each message head the registered *body observer* factories are asked whether
they want the body (gRPC does, for `application/grpc`); an observer sees every body chunk, so
framing is counted over the whole stream while only a bounded prefix of the body is kept.

Content-Encoding (`inspector.contentcoding`) is decoded into `HttpMessage.body` up to `Limits.body_keep_bytes`;
the ratio of decoded to encoded bytes is watched for decompression bombs.

A gap inside a body (`BodyGap`: bytes the capture missed) is counted in `body_length` and the
message ends incomplete (`complete` False, which parsers read as "what is here is not all that
was sent"). The kept body goes on with the bytes after the hole (a Triton request's tensor list
stays readable when the hole fell in its data), except a content-encoded one: decoding cannot
cross missing bytes, so it keeps what was decoded before the hole. Observers are told
(`gap(length, ts)`, when they have it: gRPC steps over a hole inside a message) or dropped (one
that cannot step over a hole would read what follows as its framing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from inspector.contentcoding import MAX_MEMBERS, ContentDecoder, DecodeError, content_decoder
from inspector.http import (
    TO_SERVER,
    BodyGap,
    BodyReceived,
    Headers,
    HeadReceived,
    HttpExchange,
    HttpMessage,
    MessageEnded,
    SessionAnomaly,
    SessionEvent,
    StreamReset,
)
from inspector.limits import Limits


class BodyObserver(Protocol):
    def feed(self, data: bytes, ts: float) -> None: ...
    def end(self, ts: float) -> None: ...


#: A factory looks at a message head and returns (name, observer) when it wants the body.
ObserverFactory = Callable[[HttpMessage, Limits], "tuple[str, BodyObserver] | None"]


class _BodyState:
    """Per-message body bookkeeping while it streams."""

    __slots__ = ("chunks", "decoder", "encoded_in", "gapped", "keeping", "kept", "observers")

    def __init__(self) -> None:
        self.gapped = False  # a hole in the body: the message is incomplete
        self.keeping = True  # False once content decoding stopped (hole, error, cap): nothing more is kept
        self.chunks: list[bytes] = []
        self.kept = 0
        self.decoder: ContentDecoder | None = None
        self.encoded_in = 0
        self.observers: list[tuple[str, BodyObserver]] = []


def _content_encoding(message: HttpMessage) -> str | None:
    """The Content-Encoding codings of `message`: several header lines are one comma-joined list
    (RFC 9110 §5.3), so two `gzip` lines are gzip applied twice."""
    first = message.header("content-encoding")
    if first is None:  # most messages: no second look at the headers
        return None
    values = [value for name, value in message.headers if name == "content-encoding"]
    return first if len(values) == 1 else ", ".join(values)


class ExchangeBuilder:
    """Assembles exchanges for one connection. Call :meth:`feed` with session events; complete
    exchanges and anomalies are returned."""

    def __init__(self, limits: Limits, observer_factories: tuple[ObserverFactory, ...] = ()) -> None:
        self._limits = limits
        self._factories = observer_factories
        self._open: dict[int, HttpExchange] = {}
        self._bodies: dict[tuple[int, int], _BodyState] = {}
        self._anomalies: list[SessionAnomaly] = []

    def feed(self, events: list[SessionEvent]) -> list[HttpExchange | SessionAnomaly]:
        out: list[HttpExchange | SessionAnomaly] = []
        for event in events:
            if isinstance(event, BodyReceived):
                self._body(event.stream_id, event.direction, event.data, event.ts)
            elif isinstance(event, BodyGap):
                self._body_gap(event.stream_id, event.direction, event.length, event.ts)
            elif isinstance(event, HeadReceived):
                self._head(event.stream_id, event.direction, event.message, event.end_stream, event.ts, out)
            elif isinstance(event, MessageEnded):
                self._end(event.stream_id, event.direction, event.trailers, event.ts, event.complete, out)
            elif isinstance(event, StreamReset):
                exchange = self._open.get(event.stream_id)
                if exchange is not None:
                    exchange.reset_code = event.error_code
                    self._close(event.stream_id, event.ts, out)
            else:
                out.append(event)
        if self._anomalies:
            out.extend(self._anomalies)
            self._anomalies.clear()
        return out

    def whole(self, direction: int, message: HttpMessage, body: bytes, trailers: Headers, ts_end: float, *,
              complete: bool = True, stream_id: int = 0) -> list[HttpExchange | SessionAnomaly]:
        """One whole message: what :meth:`feed` returns for its head, its body (if any) and its end
        (the live path, where mitmproxy hands over messages whole), without the events."""
        out: list[HttpExchange | SessionAnomaly] = []
        self._head(stream_id, direction, message, False, message.ts_start, out)
        if body:
            self._body(stream_id, direction, body, ts_end)
        self._end(stream_id, direction, trailers, ts_end, complete, out)
        if self._anomalies:
            out.extend(self._anomalies)
            self._anomalies.clear()
        return out

    def counter_for(self, stream_id: int, direction: int) -> Callable[[int], None] | None:
        """Once a message's body is past all it keeps and no observer reads it, a function that
        takes the length of more body and does what feeding that body would: count it (and mark
        the kept body truncated); None while the bytes themselves are still wanted. The live
        path streams gigabyte bodies through it without an event per chunk."""
        state = self._bodies.get((stream_id, direction))
        message = self._message(stream_id, direction)
        if (state is None or message is None or state.observers
                or (state.keeping and state.kept < self._limits.body_keep_bytes)):
            return None
        keeping = state.keeping  # past what it keeps: more of it truncates the kept body

        def count(length: int) -> None:
            message.body_length += length
            if keeping:
                message.body_truncated = True

        return count

    def alias(self, new_stream_id: int, old_stream_id: int) -> None:
        """Continue exchange `old_stream_id` under a new id (HTTP/1 -> h2c upgrade: stream 1)."""
        exchange = self._open.pop(old_stream_id, None)
        if exchange is not None:
            exchange.stream_id = new_stream_id
            self._open[new_stream_id] = exchange

    def alias_upgraded(self, new_stream_id: int) -> None:
        """After an h2c upgrade: the exchange answered by `101` continues as `new_stream_id`."""
        for stream_id, exchange in list(self._open.items()):
            if any(m.status == 101 for m in exchange.interim):
                self.alias(new_stream_id, stream_id)
                for direction in (TO_SERVER, 1 - TO_SERVER):
                    state = self._bodies.pop((stream_id, direction), None)
                    if state is not None:
                        self._bodies[(new_stream_id, direction)] = state
                return

    def finish(self, ts: float) -> list[HttpExchange | SessionAnomaly]:
        """Connection ended: every open exchange is emitted as it stands."""
        out: list[HttpExchange | SessionAnomaly] = []
        for stream_id in list(self._open):
            self._close(stream_id, ts, out)
        out.extend(self._anomalies)
        self._anomalies.clear()
        return out

    # -- internals ---------------------------------------------------------------------------

    def _head(self, stream_id: int, direction: int, message: HttpMessage, end_stream: bool, ts: float,
              out: list) -> None:
        message.ts_start = message.ts_start or ts
        exchange = self._open.get(stream_id)
        if direction == TO_SERVER:
            if exchange is not None:
                self._close(stream_id, ts, out)
            exchange = HttpExchange(request=message, response=None, stream_id=stream_id)
            self._open[stream_id] = exchange
        else:
            if exchange is None:
                exchange = HttpExchange(request=None, response=None, stream_id=stream_id)
                self._open[stream_id] = exchange
            if 100 <= message.status < 200:  # 100-continue, 101 (h2c continues), 103
                exchange.interim.append(message)
                return
            if exchange.response is not None:
                # A second final response on one stream: keep the first, note the oddity.
                out.append(SessionAnomaly(layer="http", event="duplicate_response",
                                          message=f"second response on stream {stream_id}",
                                          ts=ts, direction=direction, stream_id=stream_id))
                return
            exchange.response = message
        state = _BodyState()
        for factory in self._factories:
            made = factory(message, self._limits)
            if made is not None:
                state.observers.append(made)
        decoder = content_decoder(_content_encoding(message))
        if isinstance(decoder, ContentDecoder):
            state.decoder = decoder
            message.decoded = decoder.name
        elif decoder is not None:  # a coding nothing here removes: parsers must not read the body
            message.encoded = decoder.coding
            message.body_truncated = True
            state.keeping = False
            self._pending_anomaly(message, "content_encoding_unsupported",
                                  f"Content-Encoding {decoder.coding!r} is not decoded: the body is not inspected")
        self._bodies[(stream_id, direction)] = state
        if end_stream:
            message.complete = True
            message.ts_end = ts
            self._finish_body(stream_id, direction, message, ts, exchange)
            if direction != TO_SERVER:
                self._close(stream_id, ts, out)

    def _message(self, stream_id: int, direction: int) -> HttpMessage | None:
        exchange = self._open.get(stream_id)
        if exchange is None:
            return None
        return exchange.request if direction == TO_SERVER else exchange.response

    def _body(self, stream_id: int, direction: int, data: bytes, ts: float) -> None:
        state = self._bodies.get((stream_id, direction))
        message = self._message(stream_id, direction)
        if state is None or message is None:
            return
        message.body_length += len(data)
        for _, observer in state.observers:
            observer.feed(data, ts)
        if not state.keeping:
            return
        limit = self._limits.body_keep_bytes
        if state.kept >= limit:
            message.body_truncated = True
            return
        if state.decoder is not None:
            data = self._decode(state, message, data)
        if not data:
            return
        room = limit - state.kept
        if len(data) > room:
            data = data[:room]
            message.body_truncated = True
        state.chunks.append(data)
        state.kept += len(data)

    def _body_gap(self, stream_id: int, direction: int, length: int, ts: float) -> None:
        state = self._bodies.get((stream_id, direction))
        message = self._message(stream_id, direction)
        if state is None or message is None or length <= 0:
            return
        message.body_length += length
        state.gapped = True
        if state.decoder is not None:  # decoding cannot cross missing bytes: keep what it gave
            state.decoder = None
            state.keeping = False
            message.body_truncated = True
        kept = []
        for name, observer in state.observers:
            gap = getattr(observer, "gap", None)
            if gap is not None:
                gap(length, ts)
                kept.append((name, observer))
        state.observers = kept

    def _decode(self, state: _BodyState, message: HttpMessage, data: bytes) -> bytes:
        limits = self._limits
        room = min(limits.body_keep_bytes - state.kept, limits.max_decompressed_bytes - state.kept)
        state.encoded_in += len(data)
        decoder = state.decoder
        assert decoder is not None
        try:
            decoded = decoder.decompress(data, max(room, 1))
        except DecodeError:
            state.decoder = None
            state.keeping = False  # what decoded is kept; the rest is not mixed in encoded
            message.body_truncated = True
            message.encoded = message.decoded
            message.decoded = ""
            self._pending_anomaly(message, "content_decode_error",
                                  f"Content-Encoding {message.encoded} body does not decode after {state.kept} "
                                  "bytes")
            return b""
        if decoder.capped:
            # The cap stopped decoding: look at how much input made that much output.
            message.body_truncated = True
            produced = state.kept + len(decoded)
            consumed = state.encoded_in - decoder.unconsumed()
            if decoder.members_capped:  # what follows the last member decoded is not seen
                self._pending_anomaly(message, "content_members_capped",
                                      f"Content-Encoding {message.decoded} body has more than {MAX_MEMBERS} "
                                      f"gzip members or zstd frames: decoding stopped after {produced} bytes")
            if produced > limits.max_decompression_ratio * max(consumed, 1):
                self._pending_anomaly(message, "decompression_bomb",
                                      f"{state.encoded_in} encoded bytes expand past {produced} bytes")
            state.decoder = None
            state.keeping = False  # what decoded is kept; the rest is not mixed in encoded
        return decoded

    def _pending_anomaly(self, message: HttpMessage, event: str, text: str) -> None:
        self._anomalies.append(SessionAnomaly(layer="http", event=event, message=text,
                                              ts=message.ts_start))

    def _end(self, stream_id: int, direction: int, trailers: Headers, ts: float, complete: bool,
             out: list) -> None:
        message = self._message(stream_id, direction)
        if message is None:
            exchange = self._open.get(stream_id)
            if (direction != TO_SERVER and exchange is not None and exchange.interim
                    and exchange.interim[-1].status == 101):
                # A 101 that ends the response (websocket, other upgrades): it is the final one,
                # whole (a 101 has no body).
                response = exchange.response = exchange.interim.pop()
                response.complete = complete
                response.ts_end = response.ts_end or ts
                self._close(stream_id, ts, out)
            return
        message.trailers = list(trailers)
        state = self._bodies.get((stream_id, direction))
        message.complete = complete and not (state is not None and state.gapped)
        message.ts_end = ts
        self._finish_body(stream_id, direction, message, ts, self._open.get(stream_id))
        if direction != TO_SERVER:
            self._close(stream_id, ts, out)

    def _finish_body(self, stream_id: int, direction: int, message: HttpMessage, ts: float,
                     exchange: HttpExchange | None) -> None:
        """The body's bytes into `message`, its observers' findings into `exchange` (passed in:
        a reset or a connection's end has already taken the exchange out of the open ones)."""
        state = self._bodies.pop((stream_id, direction), None)
        if state is None:
            return
        if state.chunks:
            message.body = state.chunks[0] if len(state.chunks) == 1 else b"".join(state.chunks)
        for name, observer in state.observers:
            observer.end(ts)
            if exchange is not None:
                side = "request" if direction == TO_SERVER else "response"
                exchange.observations[f"{name}.{side}"] = observer

    def _close(self, stream_id: int, ts: float, out: list) -> None:
        exchange = self._open.pop(stream_id, None)
        if exchange is None:
            return
        for direction, message in ((TO_SERVER, exchange.request), (1 - TO_SERVER, exchange.response)):
            if message is not None and (stream_id, direction) in self._bodies:
                if not message.ts_end:
                    message.ts_end = ts
                self._finish_body(stream_id, direction, message, ts, exchange)
        out.append(exchange)
