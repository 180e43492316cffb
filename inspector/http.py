"""The normalized HTTP message both paths produce, and the events HTTP sessions emit.

Offline, the HTTP/1 and HTTP/2 session parsers (`inspector.capture.http1`, `.http2`) turn
reassembled stream bytes into the *session events* below. Live, the mitmproxy addon turns its
`HTTPFlow` hooks into the same events. `inspector.exchange.ExchangeBuilder` turns session events
into complete :class:`HttpExchange` objects, which every HTTP-borne protocol parser reads.
Nothing protocol-specific is written twice.

Header names are kept lower-case (HTTP/2 requires it; HTTP/1 names are folded); values are
`str` decoded as latin-1 so no byte is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Direction of bytes in a connection: from the client (originator) or from the server.
TO_SERVER = 0
TO_CLIENT = 1

Headers = list[tuple[str, str]]


def header(headers: Headers, name: str, default: str | None = None) -> str | None:
    """First value of header `name` (lower-case), or `default`."""
    for key, value in headers:
        if key == name:
            return value
    return default


@dataclass(slots=True)
class HttpMessage:
    """A request or a response, head and (capped) body, as seen on the wire."""

    kind: Literal["request", "response"]
    version: str  # "HTTP/1.0", "HTTP/1.1", "HTTP/2"
    headers: Headers = field(default_factory=list)
    method: str = ""  # requests
    scheme: str = ""  # requests, HTTP/2 :scheme
    authority: str = ""  # requests: :authority or Host
    path: str = ""  # requests: path and query as sent
    status: int = 0  # responses
    reason: str = ""  # responses, HTTP/1
    #: Body as decoded (transfer coding removed; content coding removed when `decoded`),
    #: kept up to the exchange builder's cap.
    body: bytes = b""
    #: Body bytes on the wire after transfer decoding (de-chunked), before content decoding.
    body_length: int = 0
    #: True when `body` holds fewer bytes than the message carried (cap hit or decode stopped).
    body_truncated: bool = False
    #: Content-Encoding that was removed from `body` ("gzip", "br", "gzip, br"), or "".
    decoded: str = ""
    #: Content-Encoding left on the body: one no decoder removes (`body` is then empty), or one
    #: whose stream did not decode (`body` holds what decoded before that); "" otherwise.
    encoded: str = ""
    trailers: Headers = field(default_factory=list)
    ts_start: float = 0.0
    ts_end: float = 0.0
    #: True when the message ended normally (end of stream / length reached).
    complete: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        return header(self.headers, name, default)

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").strip()


@dataclass(slots=True)
class HttpExchange:
    """One request and its final response (either may be missing when the capture lacks it)."""

    request: HttpMessage | None
    response: HttpMessage | None
    #: HTTP/2 stream id; for HTTP/1 the 0-based position of the request on the connection.
    stream_id: int
    #: 1xx responses that came before the final one (100-continue, 103).
    interim: list[HttpMessage] = field(default_factory=list)
    #: HTTP/2 RST_STREAM error code, when the stream was reset.
    reset_code: int | None = None
    #: Results of body observers, by name (e.g. "grpc" -> GrpcBodyObservation pair).
    observations: dict[str, object] = field(default_factory=dict)

    @property
    def ts(self) -> float:
        message = self.request or self.response
        return message.ts_start if message else 0.0


# --- session events (what an HTTP/1 or HTTP/2 session parser emits) -------------------------
# Events are read-only by convention. The three built per message are not frozen: a frozen
# dataclass's __init__ sets each field through object.__setattr__ and costs 2.5x as much, and
# tens of thousands are built per 40 MB of capture.


@dataclass(slots=True, kw_only=True)
class HeadReceived:
    """A request or response head; `message` holds no body yet. `end_stream`: no body follows."""

    stream_id: int
    direction: int
    message: HttpMessage
    end_stream: bool
    ts: float


@dataclass(slots=True, kw_only=True)
class BodyReceived:
    """A chunk of message body (transfer coding removed)."""

    stream_id: int
    direction: int
    data: bytes
    ts: float


@dataclass(slots=True, kw_only=True)
class BodyGap:
    """`length` bytes of a message body the capture missed (a TCP gap inside the body): the body
    goes on after them; the message ends incomplete."""

    stream_id: int
    direction: int
    length: int
    ts: float


@dataclass(slots=True, kw_only=True)
class MessageEnded:
    """End of a message in one direction, with trailers when there were any."""

    stream_id: int
    direction: int
    trailers: Headers
    ts: float
    #: False when the message stopped early (connection closed, reset, gap, parse error).
    complete: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset:
    """HTTP/2 RST_STREAM (either side)."""

    stream_id: int
    direction: int
    error_code: int
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionAnomaly:
    """Something malformed or unexpected on the wire. `event` is a snake_case name."""

    layer: str  # "http1", "http2", "grpc", ...
    event: str
    message: str
    ts: float
    direction: int | None = None
    stream_id: int | None = None


SessionEvent = HeadReceived | BodyReceived | BodyGap | MessageEnded | StreamReset | SessionAnomaly
