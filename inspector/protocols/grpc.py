"""gRPC over HTTP/2 (and gRPC-Web): message framing, decompression, and the EVE `grpc` record.

A gRPC body is a sequence of length-prefixed messages
(https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):

    Compressed-Flag (1 byte, 0 or 1)  Message-Length (4 bytes, big-endian)  Message (length bytes)

The status travels in the response trailers (`grpc-status`, `grpc-message`), or in the only
HEADERS frame of a "trailers-only" response. gRPC-Web (`application/grpc-web[+proto]`) uses the
same framing over any HTTP version and sends its trailers as a last frame whose flag has bit 0x80
set; `application/grpc-web-text` base64-encodes that stream. All three are handled here.

The exchange builder asks :func:`grpc_observer_for` for a :class:`GrpcFramer` per message head and
feeds it the body chunk by chunk, so a 64 MiB message streams past while only its length and a
prefix are kept. :func:`grpc_record` turns an exchange whose observations hold the two framers
(keys ``"grpc.request"`` and ``"grpc.response"``) into the EVE `grpc` object.
"""

from __future__ import annotations

import binascii
import functools
import re
import struct
import zlib
from dataclasses import dataclass
from urllib.parse import unquote

from inspector import fields
from inspector.http import Headers, HttpExchange, HttpMessage, SessionAnomaly, header
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.redact import redact_url

OBSERVATION_REQUEST = "grpc.request"
OBSERVATION_RESPONSE = "grpc.response"

#: How many message lengths a record lists per direction.
RECORD_LENGTHS = 64
#: grpc-message is cut to this many characters in the record.
RECORD_MESSAGE_CHARS = 1024

_PREFIX = struct.Struct(">BI")
_PREFIX_LEN = 5
_FLAG_COMPRESSED = 0x01
_FLAG_WEB_TRAILERS = 0x80
_DECOMPRESS_STEP = 64 * 1024

#: https://grpc.github.io/grpc/core/md_doc_statuscodes.html
STATUS_NAMES: dict[int, str] = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}

#: `/package.Service/Method`: one service segment and one method segment.
_PATH_RE = re.compile(r"/([^/?#]+)/([^/?#]+)")

#: Content codings we can undo, as zlib `wbits`.
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_IDENTITY = ("", "identity")


@dataclass(slots=True, kw_only=True)
class GrpcMessage:
    """One length-prefixed message, with a prefix of its payload kept (read-only by convention;
    not frozen, which would make each one 2.5x as costly to build).

    `payload` is decompressed when the message was compressed and the encoding is one we
    decode; `inspectable` is False when it still holds compressed or undecodable bytes.
    `payload_truncated` is True when `payload` is shorter than the (decompressed) message.
    """

    length: int
    compressed: bool
    payload: bytes
    payload_truncated: bool
    inspectable: bool
    #: False when the body ended before `length` bytes arrived.
    complete: bool = True


class GrpcFramer:
    """Chunk-fed observer of one direction of one gRPC stream: `feed()` body bytes, then `end()`.

    Counts every message, keeps the first `limits.grpc_keep_messages` of them (at most
    `limits.grpc_keep_message_bytes` each) and never buffers more than that. Malformed framing is
    recorded in `anomalies` (layer "grpc", each event name once) and stops the parsing.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, *, encoding: str | None = None,
                 web: bool = False, text: bool = False) -> None:
        self.limits = limits
        #: The message's `grpc-encoding` (None when absent).
        self.encoding = encoding
        self.web = web or text
        self.text = text
        self.messages: list[GrpcMessage] = []
        self.lengths: list[int] = []
        self.message_count = 0
        #: Sum of the declared lengths of the messages seen (complete or not).
        self.total_bytes = 0
        self.compressed_count = 0
        #: gRPC-Web trailers (from the 0x80 frame), lower-case names.
        self.trailers: Headers = []
        self.anomalies: list[SessionAnomaly] = []
        self.stopped = False
        self.ended = False
        #: A capture gap outside a message stopped the counting (the counts cover what came before).
        self.framing_lost = False
        self._gapped = False  # the current message has a hole
        self._seen_anomalies: set[str] = set()
        self._prefix = bytearray()
        self._in_message = False
        self._flag = 0
        self._length = 0
        self._remaining = 0
        self._kept: bytearray | None = None
        self._keep_limit = 0
        self._base64_pending = bytearray()

    # --- public API ---------------------------------------------------------------------------

    def feed(self, data: bytes, ts: float) -> None:
        """Observe the next chunk of body bytes."""
        if self.stopped or self.ended or not data:
            return
        if self.text:
            data = self._from_base64(data, ts)
            if not data:
                return
        self._consume(data, ts)

    def gap(self, length: int, ts: float) -> None:
        """`length` body bytes the capture missed. Inside a message they are stepped over: the
        message is counted with its declared length, kept as far as the hole, and ends incomplete
        (not an anomaly: the peer sent it whole). Anywhere else (a prefix, past a message's end)
        where the next message starts is lost with them: counting stops there."""
        if self.stopped or self.ended or length <= 0:
            return
        if self.text or not self._in_message or length > self._remaining:
            self.stopped = True
            self.framing_lost = True
            return
        self._remaining -= length
        self._gapped = True
        if self._kept is not None:
            self._keep_limit = len(self._kept)  # nothing from after the hole joins what was kept
        if self._remaining == 0:
            self._finish_message(ts, complete=False)

    def end(self, ts: float) -> None:
        """The body ended; a message still missing bytes is recorded as truncated."""
        if self.ended:
            return
        self.ended = True
        if self.stopped:
            return
        if self._in_message:
            self._anomaly("grpc_truncated_message", f"body ended {self._remaining} bytes short of a "
                          f"{self._length}-byte message", ts)
            self._finish_message(ts, complete=False)
        elif self._prefix or self._base64_pending:
            self._anomaly("grpc_truncated_message", "body ended inside a message prefix", ts)

    @property
    def inspectable(self) -> bool:
        """True when every kept payload is plain (decompressed or never compressed)."""
        return all(message.inspectable for message in self.messages)

    # --- framing ------------------------------------------------------------------------------

    def _consume(self, data: bytes, ts: float) -> None:
        view = memoryview(data)  # slices of it are not copies
        pos = 0
        end = len(data)
        while pos < end and not self.stopped:
            if self._in_message:
                take = min(self._remaining, end - pos)
                kept = self._kept
                if kept is not None and len(kept) < self._keep_limit:
                    room = self._keep_limit - len(kept)
                    kept += view[pos:pos + min(take, room)]
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._finish_message(ts, complete=not self._gapped)
                continue
            if not self._prefix and end - pos >= _PREFIX_LEN:
                flag, length = _PREFIX.unpack_from(data, pos)
                pos += _PREFIX_LEN
            else:
                need = _PREFIX_LEN - len(self._prefix)
                self._prefix += data[pos:pos + need]
                pos += min(need, end - pos)
                if len(self._prefix) < _PREFIX_LEN:
                    return
                flag, length = _PREFIX.unpack(self._prefix)
                self._prefix.clear()
            self._start_message(flag, length, ts)

    def _start_message(self, flag: int, length: int, ts: float) -> None:
        allowed = flag in (0, 1) or (self.web and flag in (_FLAG_WEB_TRAILERS, _FLAG_WEB_TRAILERS | 1))
        if not allowed:
            self._anomaly("grpc_bad_compressed_flag", f"message flag byte is {flag:#04x}, not 0 or 1", ts)
            self.stopped = True
            return
        if length > self.limits.max_grpc_message_bytes:
            self._anomaly("grpc_length_too_large", f"message length {length} is over the limit "
                          f"of {self.limits.max_grpc_message_bytes}", ts)
            self.stopped = True
            return
        self._in_message = True
        self._gapped = False
        self._flag = flag
        self._length = length
        self._remaining = length
        if flag & _FLAG_WEB_TRAILERS:
            self._keep_limit = self.limits.max_header_bytes
            self._kept = bytearray()
        elif len(self.messages) < self.limits.grpc_keep_messages:
            self._keep_limit = self.limits.grpc_keep_message_bytes
            self._kept = bytearray()
        else:
            self._keep_limit = 0
            self._kept = None
        if length == 0:
            self._finish_message(ts, complete=True)

    def _finish_message(self, ts: float, *, complete: bool) -> None:
        self._in_message = False
        kept = self._kept
        self._kept = None
        if self._flag & _FLAG_WEB_TRAILERS:
            if kept is not None:
                self.trailers = _parse_web_trailers(bytes(kept))
            return
        compressed = bool(self._flag & _FLAG_COMPRESSED)
        length = self._length
        self.message_count += 1
        self.total_bytes += length
        if compressed:
            self.compressed_count += 1
        if len(self.lengths) < RECORD_LENGTHS:
            self.lengths.append(length)
        if kept is None:
            return
        payload = bytes(kept)
        truncated = len(payload) < length
        inspectable = True
        if compressed:
            payload, truncated, inspectable = self._decompress(payload, truncated, ts)
        self.messages.append(GrpcMessage(length=length, compressed=compressed, payload=payload,
                                         payload_truncated=truncated, inspectable=inspectable,
                                         complete=complete))

    # --- decompression ------------------------------------------------------------------------

    def _decompress(self, data: bytes, input_truncated: bool, ts: float) -> tuple[bytes, bool, bool]:
        """Return `(payload, payload_truncated, inspectable)` for a compressed message."""
        encoding = (self.encoding or "").strip().lower()
        if encoding in _IDENTITY:
            self._anomaly("grpc_compressed_without_encoding",
                          f"compressed message with grpc-encoding {self.encoding or 'absent'}", ts)
            return data, input_truncated, False
        wbits = _ZLIB_WBITS.get(encoding)
        if wbits is None:
            self._anomaly("grpc_unsupported_encoding", f"cannot decompress grpc-encoding {encoding!r}", ts)
            return data, input_truncated, False
        if encoding == "deflate" and not _looks_like_zlib(data):
            wbits = -zlib.MAX_WBITS  # raw deflate, as some implementations send
        keep = self.limits.grpc_keep_message_bytes
        cap = self.limits.max_decompressed_bytes
        try:
            inflater = zlib.decompressobj(wbits)
            payload = inflater.decompress(data, min(keep, cap + 1))
            produced = len(payload)
            tail = inflater.unconsumed_tail
            while tail and produced <= cap and not inflater.eof:  # count the rest without keeping it
                step = len(inflater.decompress(tail, min(_DECOMPRESS_STEP, cap + 1 - produced)))
                if not step and len(inflater.unconsumed_tail) == len(tail):
                    break  # no progress (zlib keeps the bytes after a stream's end as its tail)
                produced += step
                tail = inflater.unconsumed_tail
        except zlib.error as exc:
            self._anomaly("grpc_decompression_error", f"{encoding}: {exc}", ts)
            return data, input_truncated, False
        if produced > cap:
            self._anomaly("grpc_decompression_bomb", f"{encoding} message inflates past "
                          f"{cap} bytes from {len(data)} compressed bytes", ts)
            return payload[:keep], True, True
        if not inflater.eof and not input_truncated:
            self._anomaly("grpc_decompression_error", f"{encoding} stream ends early", ts)
        truncated = input_truncated or produced > len(payload) or not inflater.eof
        return payload, truncated, True

    # --- gRPC-Web text ------------------------------------------------------------------------

    def _from_base64(self, data: bytes, ts: float) -> bytes:
        pending = self._base64_pending
        pending += data.translate(None, b" \t\r\n")
        usable = len(pending) - len(pending) % 4
        if not usable:
            return b""
        chunk = bytes(pending[:usable])
        del pending[:usable]
        try:
            if b"=" not in chunk:
                return binascii.a2b_base64(chunk, strict_mode=True)
            # Each base64 segment ends in its own padding: decode group by group up to each '='.
            parts = []
            start = 0
            for group_end in range(4, usable + 1, 4):
                if chunk[group_end - 1] == 0x3D:  # "="
                    parts.append(binascii.a2b_base64(chunk[start:group_end], strict_mode=True))
                    start = group_end
            parts.append(binascii.a2b_base64(chunk[start:], strict_mode=True))
            return b"".join(parts)
        except binascii.Error as exc:
            self._anomaly("grpc_web_text_invalid", f"bad base64 in grpc-web-text body: {exc}", ts)
            self.stopped = True
            return b""

    def _anomaly(self, event: str, message: str, ts: float) -> None:
        if event in self._seen_anomalies:
            return
        self._seen_anomalies.add(event)
        self.anomalies.append(SessionAnomaly(layer="grpc", event=event, message=message, ts=ts))


def _looks_like_zlib(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _parse_web_trailers(block: bytes) -> Headers:
    trailers: Headers = []
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            trailers.append((name.strip().lower(), value.strip()))
    return trailers


# --- content types, observers -----------------------------------------------------------------


@functools.lru_cache(maxsize=512)  # every message head asks; the content types seen are few
def grpc_kind(content_type: str) -> str | None:
    """"grpc", "grpc-web" or "grpc-web-text" for a gRPC content type, else None."""
    base = content_type.split(";", 1)[0].strip().lower()
    for kind in ("grpc-web-text", "grpc-web", "grpc"):
        media = "application/" + kind
        if base == media or base.startswith(media + "+"):
            return kind
    return None


LAYER = "grpc"


def build(ctx: object) -> dict[str, object] | None:
    """The layer interface of inspector.apps: the `grpc` object of an exchange."""
    return grpc_record(ctx.exchange)  # type: ignore[attr-defined]


def observer_for(message: HttpMessage, limits: Limits = DEFAULT_LIMITS) -> GrpcFramer | None:
    """The body-observer interface of inspector.apps: a framer for gRPC bodies."""
    return grpc_observer_for(message, limits)


def grpc_observer_for(message: HttpMessage, limits: Limits = DEFAULT_LIMITS) -> GrpcFramer | None:
    """A framer for `message`'s body when its content type is gRPC or gRPC-Web, else None."""
    kind = grpc_kind(message.content_type)
    if kind is None:
        return None
    return GrpcFramer(limits, encoding=message.header("grpc-encoding"),
                      web=kind != "grpc", text=kind == "grpc-web-text")


# --- the EVE record ---------------------------------------------------------------------------


def split_path(path: str) -> tuple[str | None, str | None]:
    """`/pkg.Service/Method` -> `("pkg.Service", "Method")`; `(None, None)` when malformed."""
    match = _PATH_RE.fullmatch(path)
    if match is None:
        return None, None
    return match.group(1), match.group(2)


def _direction_record(framer: object) -> dict[str, object]:
    if not isinstance(framer, GrpcFramer):
        return {"messages": 0, "bytes": 0, "lengths": [], "compressed": 0}
    return {"messages": framer.message_count, "bytes": framer.total_bytes,
            "lengths": list(framer.lengths), "compressed": framer.compressed_count}


def _status_source(response: HttpMessage | None, framer: object) -> Headers:
    """Where grpc-status lives: trailers, else trailers-only headers, else gRPC-Web trailers."""
    if response is not None:
        if header(response.trailers, "grpc-status") is not None:
            return response.trailers
        if header(response.headers, "grpc-status") is not None:
            return response.headers
    if isinstance(framer, GrpcFramer) and header(framer.trailers, "grpc-status") is not None:
        return framer.trailers
    return []


def _parse_status(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 10 else None


def grpc_record(exchange: HttpExchange) -> dict[str, object] | None:
    """The EVE `grpc` object for `exchange`, or None when it is not a gRPC exchange."""
    request, response = exchange.request, exchange.response
    request_framer = exchange.observations.get(OBSERVATION_REQUEST)
    response_framer = exchange.observations.get(OBSERVATION_RESPONSE)
    if not (isinstance(request_framer, GrpcFramer) or isinstance(response_framer, GrpcFramer)
            or (request is not None and grpc_kind(request.content_type))
            or (response is not None and grpc_kind(response.content_type))):
        return None  # (most exchanges: checked without a generator, this runs for every HTTP record)
    path = request.path if request is not None else None
    service, method = split_path(path) if path is not None else (None, None)
    content_type = next((m.content_type for m in (request, response)
                         if m is not None and m.content_type), None)
    status_headers = _status_source(response, response_framer)
    status = _parse_status(header(status_headers, "grpc-status"))
    message = header(status_headers, "grpc-message")
    if message is not None:
        message = unquote(message, errors="replace")[:RECORD_MESSAGE_CHARS]
    record = {
        "service": service,
        "method": method,
        "path": redact_url(path) if path is not None else None,
        "content_type": content_type,
        "encoding": request.header("grpc-encoding") if request is not None else None,
        "accept_encoding": request.header("grpc-accept-encoding") if request is not None else None,
        "status": status,
        "status_name": STATUS_NAMES.get(status) if status is not None else None,
        "message": message,
        "timeout": request.header("grpc-timeout") if request is not None else None,
        "user_agent": request.header("user-agent") if request is not None else None,
        "request": _direction_record(request_framer),
        "response": _direction_record(response_framer),
        "trailers_only": response is not None and response.header("grpc-status") is not None,
    }
    return {name: value for name, value in record.items() if value is not None}  # absent, never null


def _direction_fields(side: str) -> list[tuple[str, str, str]]:
    return [
        (f"grpc.{side}.messages", "integer", f"Number of gRPC messages in the {side} body."),
        (f"grpc.{side}.bytes", "integer", f"Sum of the {side} messages' declared lengths, in bytes."),
        (f"grpc.{side}.lengths", "list[integer]",
         f"Declared length of each of the first {RECORD_LENGTHS} {side} messages."),
        (f"grpc.{side}.compressed", "integer", f"Number of {side} messages with the compressed flag set."),
    ]


fields.declare("grpc", [
    ("grpc.service", "string", "Service from the :path, e.g. inference.GRPCInferenceService."),
    ("grpc.method", "string", "Method from the :path, e.g. ModelInfer."),
    ("grpc.path", "string", "The request :path as sent."),
    ("grpc.content_type", "string", "Content-Type, e.g. application/grpc or application/grpc-web+proto."),
    ("grpc.encoding", "string", "The request's grpc-encoding (message compression), e.g. gzip."),
    ("grpc.accept_encoding", "string", "The request's grpc-accept-encoding."),
    ("grpc.status", "integer", "grpc-status from the response trailers (or trailers-only headers)."),
    ("grpc.status_name", "string", "Name of grpc.status, e.g. OK, PERMISSION_DENIED."),
    ("grpc.message", "string", f"grpc-message, percent-decoded, at most {RECORD_MESSAGE_CHARS} characters."),
    ("grpc.timeout", "string", "The request's grpc-timeout as sent, e.g. 100m."),
    ("grpc.user_agent", "string", "The request's User-Agent."),
    *_direction_fields("request"),
    *_direction_fields("response"),
    ("grpc.trailers_only", "boolean", "True when the response was a single HEADERS carrying grpc-status."),
])
