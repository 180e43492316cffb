"""HTTP/1.x session parser for captured traffic: both directions of one TCP connection in, events out.

:class:`Http1Session` is a passive, sans-IO observer. It is fed the reassembled bytes of each
direction (`receive_data`), the holes the capture left (`receive_gap`) and the ends of stream
(`receive_eof`), and returns the session events of :mod:`inspector.http` (`HeadReceived`,
`BodyReceived`, `MessageEnded`, `SessionAnomaly` with layer ``"http1"``). It never raises on
peer or capture input: what a strict peer would reject becomes an anomaly, and where framing is
lost the direction is given up (its later bytes are ignored).

Theory of operation
-------------------
* Each direction is a small state machine: ``HEAD`` (between messages), then the body framing
  of the message just read (``LENGTH``, ``CHUNK_SIZE``/``CHUNK_DATA``/``CHUNK_END``/``TRAILERS``,
  ``UNTIL_EOF``), back to ``HEAD``. ``RESYNC`` hunts for the next message start after a gap;
  ``DONE`` ignores everything (given up, closed or switched protocols).
* Requests are numbered in order: that number is the `stream_id` of the exchange. A final
  response takes the number of the oldest unanswered request (pipelining); a 1xx takes it
  without consuming it. A response with no request to pair with gets a fresh number and a
  ``response_without_request`` anomaly.
* Events per message: `HeadReceived` (``end_stream=True`` when no body follows), `BodyReceived`
  pieces, then `MessageEnded` (trailers; ``complete=False`` when a gap, a truncation or a framing
  error cut it short). A 1xx is a lone `HeadReceived` with ``end_stream=True``.
* Body length follows RFC 9112 §6.3. Transfer coding is removed (de-chunked); content coding is
  left to the exchange builder. Bodies pass through in the pieces they arrive in.
* Two waits couple the directions: after a request carrying ``Upgrade`` or a ``CONNECT``, client
  bytes wait for the response head (a ``101``/``2xx`` switches protocols and those bytes belong
  to the new one); a response with no unanswered request waits while a request head is half
  received. A direction released from a wait is parsed before the one that released it goes on,
  so the events do not depend on how the bytes were split into calls.
* Gaps: a hole inside a Content-Length body, a chunk's data or a close-delimited body is
  skipped by counting (the message ends incomplete); anywhere else the direction resynchronises
  on the next line that looks like a request line (or a status line), within a budget of
  16 x `Limits.max_header_bytes` skipped bytes.
* On a protocol switch (``101 Switching Protocols``, ``2xx`` to ``CONNECT``, or an HTTP/2
  connection preface in place of a request), `upgraded_to` names the new protocol and
  `leftover` holds each direction's bytes that follow; later data only grows `leftover`.
  For ``h2c`` the 101 is an interim head (no `MessageEnded`): the response continues as HTTP/2
  stream 1. Other switches end the exchange with the 101/2xx as its final response.
"""

from __future__ import annotations

import re
from collections import deque

from inspector.http import (
    TO_CLIENT,
    TO_SERVER,
    BodyGap,
    BodyReceived,
    Headers,
    HeadReceived,
    HttpMessage,
    MessageEnded,
    SessionAnomaly,
    SessionEvent,
)
from inspector.limits import DEFAULT_LIMITS, Limits

__all__ = ["ANOMALIES", "LAYER", "Http1Session"]

LAYER = "http1"

#: Every anomaly name this parser emits (SessionAnomaly.event), with when it fires.
ANOMALIES: dict[str, str] = {
    "invalid_request_line": "the start of a client message is not an HTTP/1 request line; direction given up",
    "http09_request": "an HTTP/0.9 request line (no version); not supported, direction given up",
    "unsupported_http_version": "an HTTP version other than 1.x; direction given up",
    "unknown_http_version": "HTTP/1.x with x other than 0 or 1; parsed as HTTP/1.1",
    "invalid_http_version": "a malformed request version starting with 1 (HTTP/1.); parsed as HTTP/1.1",
    "invalid_status_line": "the start of a server message is not a status line; direction given up",
    "header_too_large": "a head (or trailer section) longer than Limits.max_header_bytes; direction given up",
    "too_many_headers": "more than Limits.max_headers fields in a head; direction given up",
    "header_without_colon": "a field line without ':' (skipped)",
    "invalid_header_name": "an empty field name or one with characters outside the token set (skipped)",
    "header_whitespace_before_colon": "whitespace between field name and ':' (a smuggling vector; kept)",
    "header_control_characters": "control characters or a bare CR in a head",
    "obsolete_line_folding": "a field value continued on the next line (unfolded)",
    "multiple_host_headers": "more than one Host field",
    "te_and_cl": "Transfer-Encoding and Content-Length together (chunked wins; smuggling indicator)",
    "invalid_transfer_encoding": "a Transfer-Encoding that is not chunked-last (request: given up)",
    "conflicting_content_length": "Content-Length values that differ; direction given up",
    "invalid_content_length": "a Content-Length that is not a non-negative integer; direction given up",
    "content_length_overflow": "a Content-Length of more than 18 digits; direction given up",
    "chunk_line_too_long": "a chunk-size line longer than Limits.max_chunk_line; direction given up",
    "invalid_chunk_size": "a chunk-size that is not hexadecimal; direction given up",
    "chunk_size_overflow": "a chunk-size of more than 16 hex digits or above 2**63; direction given up",
    "invalid_chunk_terminator": "chunk data not followed by CRLF; direction given up",
    "too_many_pending_requests": "over Limits.max_pending_exchanges unanswered requests (oldest dropped)",
    "response_without_request": "a response with no request to pair with (capture started mid-connection?)",
    "gap": "bytes missing from the capture where framing cannot skip them; resynchronising",
    "resync_failed": "no message start found after a gap; direction given up",
    "truncated_message": "the stream ended in the middle of a message body",
    "internal_error": "a bug in this parser was caught; the session stops parsing",
}

# Direction states.
_HEAD = 0
_LENGTH = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_END = 4
_TRAILERS = 5
_UNTIL_EOF = 6
_RESYNC = 7
_DONE = 8

_IN_BODY = frozenset({_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_EOF})

# Grammar (RFC 9112 §3, §4; RFC 9110 §5.6.2), loosened where deployed peers are loose:
# several spaces between parts, trailing blanks, no reason phrase.
_TCHAR = r"-!#$%&'*+.^_`|~0-9A-Za-z"
_REQUEST_LINE = re.compile(rf"([{_TCHAR}]+) +([^\x00-\x20\x7f]+) +HTTP/([^\x00-\x20\x7f]*)[ \t]*")
_VERSION_1X = re.compile(r"1\.[0-9]")
_HTTP09_LINE = re.compile(rf"[{_TCHAR}]+ +[^\x00-\x20\x7f]+[ \t]*")
_STATUS_LINE = re.compile(r"HTTP/([0-9])\.([0-9]) +([0-9]{3})(?:[ \t]+(.*))?[ \t]*")
_TOKEN = re.compile(rf"[{_TCHAR}]+")
_FIELD_LINE = re.compile(rf"^([{_TCHAR}]+):[ \t]*(.*)$", re.MULTILINE)
_BAD_HEAD_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # after CRLF -> LF: a CR left is bare
_REQUEST_LINE_BYTES = re.compile(rf"[{_TCHAR}]+ +[^\x00-\x20\x7f]+ +HTTP/1\.[0-9][ \t]*\r?".encode())
_STATUS_LINE_BYTES = re.compile(rb"HTTP/1\.[0-9] +[0-9]{3}(?:[ \t].*)?\r?")
_NOT_CRLF = re.compile(rb"[^\r\n]")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_DIGITS = re.compile(r"[0-9]+")

_TOKEN_BYTES = frozenset(_TCHAR.replace("0-9", "0123456789").replace(
    "A-Za-z", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz").encode())
_FRAMING_NAMES = frozenset({"content-length", "transfer-encoding", "host", "upgrade"})
_NO_BODY_STATUS = frozenset({204, 304})
_MAX_CL_DIGITS = 18
_MAX_CHUNK_HEX = 16
_CHUNK_SIZE_CAP = 1 << 63
_MAX_PUMP_ROUNDS = 100_000  # safety net: every round parses at least one head
_RESYNC_TAIL = 4096  # bytes kept while hunting for a message start (a partial start line)


class _Side:
    """Parse state of one direction."""

    __slots__ = ("buf", "buf_ts", "direction", "eof", "incomplete", "line_ok", "remaining",
                 "resync_budget", "resync_mid_line", "scan", "stalled", "state", "stream_id",
                 "switch_after")

    def __init__(self, direction: int) -> None:
        self.direction = direction
        self.state = _HEAD
        self.buf = bytearray()  # bytes received and not consumed yet
        self.buf_ts = 0.0  # capture time of the first byte in `buf`
        self.remaining = 0  # body or chunk bytes still expected
        self.stream_id = 0  # of the message being read
        self.incomplete = False  # a gap fell inside the current message
        self.scan = 0  # head bytes already searched for the blank line
        self.line_ok = False  # the start line of the head being received was checked
        self.eof = False
        self.stalled = False  # stopped waiting for the other direction
        self.switch_after = False  # request: Upgrade/CONNECT, wait for its response when it ends
        self.resync_budget = 0  # bytes that may still be skipped looking for a start line
        self.resync_mid_line = False  # resync buffer starts inside a line


#: RFC 9112 absolute-form: a request target that begins with `scheme://`.
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _blank_line(work: bytes | bytearray, scan: int, stop: int) -> tuple[int, int]:
    """The blank line ending a head or trailer section, searched in work[scan:stop]: (index of
    the last field line's LF, index just past the blank line), or (-1, -1) when not there yet.
    Bare-LF endings are accepted as well as CRLF ones, whichever comes first."""
    crlf = work.find(b"\n\r\n", scan, stop)
    lf = work.find(b"\n\n", scan, crlf + 1 if crlf >= 0 else stop)
    if lf >= 0:
        return lf, lf + 2
    if crlf >= 0:
        return crlf, crlf + 3
    return -1, -1


class Http1Session:
    """Both directions of one HTTP/1.x connection. See the module docstring."""

    __slots__ = ("_await_switch", "_client", "_dirty_head", "_events", "_leftover", "_leftover_closed",
                 "_limits", "_next_stream", "_pending", "_server", "_sides", "upgraded_to")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        #: Protocol the connection switched to ("h2c", "websocket", "tunnel", ...), or None.
        self.upgraded_to: str | None = None
        self._leftover: dict[int, list[bytes]] = {TO_SERVER: [], TO_CLIENT: []}
        self._leftover_closed: set[int] = set()
        self._server = _Side(TO_SERVER)  # bytes to the server: requests
        self._client = _Side(TO_CLIENT)  # bytes to the client: responses
        self._sides = (self._server, self._client)
        # Unanswered requests, oldest first: (stream_id, method, switch expected).
        self._pending: deque[tuple[int, str, bool]] = deque()
        self._next_stream = 0
        self._await_switch: int | None = None  # stream whose response may switch protocols
        self._events: list[SessionEvent] = []
        self._dirty_head = False  # the head being parsed has control characters

    # -- entry points ----------------------------------------------------------------------

    @property
    def leftover(self) -> dict[int, bytes]:
        """After a protocol switch: each direction's bytes that follow the HTTP/1 part.

        Read it once `upgraded_to` is set and feed the next protocol's parser directly from then
        on: data still given here only grows it, and gaps or ends given here are not recorded.
        """
        result = {}
        for direction, parts in self._leftover.items():
            joined = b"".join(parts)
            self._leftover[direction] = [joined] if joined else []
            result[direction] = joined
        return result

    def receive_data(self, direction: int, data: bytes, ts: float) -> list[SessionEvent]:
        """Bytes of one direction, in stream order."""
        if self.upgraded_to is not None:
            if data and direction not in self._leftover_closed:
                self._leftover[direction].append(bytes(data))
            return []
        events = self._events = []
        try:
            side = self._sides[direction]
            if side.state != _DONE and not side.eof and data:
                self._pump(side, bytes(data), ts)
        except Exception as exc:  # a bug of ours must not stop a capture run
            self._internal_error(exc, direction, ts)
        return events

    def receive_gap(self, direction: int, length: int, ts: float) -> list[SessionEvent]:
        """`length` bytes of one direction are missing from the capture."""
        if self.upgraded_to is not None:
            return []
        events = self._events = []
        try:
            side = self._sides[direction]
            if side.state != _DONE and not side.eof and length > 0:
                self._gap(side, length, ts)
                self._pump(side, b"", ts)
        except Exception as exc:
            self._internal_error(exc, direction, ts)
        return events

    def receive_eof(self, direction: int, ts: float) -> list[SessionEvent]:
        """One direction ended (FIN, RST or end of capture)."""
        if self.upgraded_to is not None:
            return []
        events = self._events = []
        try:
            side = self._sides[direction]
            if not side.eof:
                side.eof = True
                self._pump(side, b"", ts)
        except Exception as exc:
            self._internal_error(exc, direction, ts)
        return events

    # -- driving both directions -----------------------------------------------------------

    def _pump(self, side: _Side, data: bytes, ts: float) -> None:
        """Parse `side`, then whichever direction was waiting for what just happened."""
        self._process(side, data, ts)
        for _ in range(_MAX_PUMP_ROUNDS):
            for other in self._sides:
                if other.stalled and self.upgraded_to is None and not self._must_wait(other, len(other.buf)):
                    self._process(other, b"", ts)
                    break
            else:
                return

    def _must_wait(self, side: _Side, available: int) -> bool:
        """Must `side` hold its next head until the other direction has moved on?"""
        if side.state != _HEAD:
            return False
        if side.direction == TO_SERVER:
            # Bytes after an Upgrade/CONNECT request may belong to the next protocol.
            return self._await_switch is not None and self._client.state != _DONE
        if self._pending or side.eof or available > self._limits.max_header_bytes:
            return False
        # A response with nothing to answer while a request head is half received: wait for it.
        server = self._server
        return (server.state == _HEAD and not server.eof and not server.stalled
                and _NOT_CRLF.search(server.buf) is not None)

    def _process(self, side: _Side, data: bytes, ts: float) -> None:
        side.stalled = False
        buf = side.buf
        if buf:
            old = len(buf)
            buf += data
            work: bytes | bytearray = buf
        else:
            old = 0
            work = data
        pos = 0
        n = len(work)
        events = self._events
        direction = side.direction
        while pos < n:
            state = side.state
            if state in (_LENGTH, _CHUNK_DATA):
                take = side.remaining
                if take > n - pos:
                    take = n - pos
                piece = work[pos:pos + take]
                events.append(BodyReceived(stream_id=side.stream_id, direction=direction,
                                           data=piece if type(piece) is bytes else bytes(piece), ts=ts))
                pos += take
                side.remaining -= take
                if side.remaining == 0:
                    if state == _LENGTH:
                        self._end_message(side, ts)
                    else:
                        side.state = _CHUNK_END
            elif state == _HEAD:
                c = work[pos]
                if c == 13 or c == 10:  # CRLFs between messages are tolerated
                    match = _NOT_CRLF.search(work, pos)
                    if match is None:
                        pos = n
                        break
                    pos = match.start()
                if self._must_wait(side, n - pos):
                    side.stalled = True
                    break
                head_ts = side.buf_ts if pos < old else ts
                new_pos = self._read_head(side, work, pos, n, head_ts, ts)
                if new_pos < 0:
                    break
                pos = new_pos
                other = self._sides[1 - direction]
                if other.stalled and not self._must_wait(other, len(other.buf)):
                    # The other direction was waiting for this head: it goes first, so the
                    # outcome does not depend on how the bytes were split.
                    side.stalled = True
                    break
            elif state == _CHUNK_SIZE:
                new_pos = self._read_chunk_size(side, work, pos, n, ts)
                if new_pos < 0:
                    break
                pos = new_pos
            elif state == _CHUNK_END:
                c = work[pos]
                if c == 10:
                    pos += 1
                    side.state = _CHUNK_SIZE
                elif c == 13 and pos + 1 < n and work[pos + 1] == 10:
                    pos += 2
                    side.state = _CHUNK_SIZE
                elif c == 13 and pos + 1 == n:
                    break
                else:
                    self._anomaly("invalid_chunk_terminator", "chunk data not followed by CRLF",
                                  ts, direction, side.stream_id)
                    self._give_up(side, ts)
                    pos = n
            elif state == _TRAILERS:
                new_pos = self._read_trailers(side, work, pos, n, ts)
                if new_pos < 0:
                    break
                pos = new_pos
            elif state == _UNTIL_EOF:
                piece = work if pos == 0 else work[pos:]
                events.append(BodyReceived(stream_id=side.stream_id, direction=direction,
                                           data=piece if type(piece) is bytes else bytes(piece), ts=ts))
                pos = n
            elif state == _RESYNC:
                pos = self._resync(side, work, pos, n, ts)
                if side.state == _RESYNC:
                    break
            else:  # _DONE: given up, or the connection switched protocols
                pos = n
        # Keep what was not consumed.
        if self.upgraded_to is not None or side.state == _DONE:
            buf.clear()
        elif work is buf:
            if pos:
                del buf[:pos]
                if pos >= old:
                    side.buf_ts = ts
        elif pos < n:
            buf += work[pos:]
            side.buf_ts = ts
        if side.eof and not side.stalled and side.state != _DONE and self.upgraded_to is None:
            self._finish(side, ts)

    # -- heads -----------------------------------------------------------------------------

    def _read_head(self, side: _Side, work: bytes | bytearray, pos: int, n: int,
                   head_ts: float, ts: float) -> int:
        """Parse the head at `pos` if it is complete: its end, or -1 when more bytes are needed."""
        max_bytes = self._limits.max_header_bytes
        stop = min(n, pos + max_bytes + 3)
        last, end = _blank_line(work, pos + side.scan, stop)
        if last < 0 or last - pos > max_bytes:
            # Incomplete or too large. Junk is refused as soon as its start line shows; only the
            # bytes within the cap are looked at, so the verdict does not depend on the splits.
            if not side.line_ok and not self._start_line_plausible(side, work, pos, pos + side.scan, stop, ts):
                return n
            if last >= 0 or n - pos >= max_bytes + 3:  # no blank line starts within the cap
                self._anomaly("header_too_large", f"head longer than {max_bytes} bytes", ts,
                              side.direction)
                self._give_up(side, ts)
                return n
            side.scan = max(0, n - pos - 2)
            return -1
        side.scan = 0
        side.line_ok = False
        text = work[pos:last + 1].decode("latin-1")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        self._dirty_head = _BAD_HEAD_CHARS.search(text) is not None
        eol = text.find("\n")  # the head text ends with its last line's LF
        if side.direction == TO_SERVER:
            return self._on_request_head(side, text[:eol], text[eol + 1:], work, pos, end, n, head_ts, ts)
        return self._on_response_head(side, text[:eol], text[eol + 1:], work, end, n, head_ts, ts)

    def _start_line_plausible(self, side: _Side, work: bytes | bytearray, pos: int, scan: int, stop: int,
                              ts: float) -> bool:
        """Reject junk in `work[pos:stop]` before its head is complete; False when given up.

        No LF was in `work[pos:scan]` (searched by an earlier call), so the search resumes there.
        """
        if side.direction == TO_SERVER:
            ok = work[pos] in _TOKEN_BYTES
        else:
            prefix = bytes(work[pos:min(pos + 5, stop)])
            ok = b"HTTP/".startswith(prefix)
        eol = work.find(b"\n", scan, stop)
        if ok and eol >= 0:
            line = work[pos:eol].decode("latin-1")
            if line[-1:] == "\r":
                line = line[:-1]
            if side.direction == TO_SERVER:
                ok = _REQUEST_LINE.fullmatch(line) is not None
            else:
                ok = _STATUS_LINE.fullmatch(line) is not None
            if not ok:
                self._reject_start_line(side, line, ts)
                return False
            side.line_ok = True
            return True
        if not ok:
            line = work[pos:min(stop, pos + 64)].decode("latin-1")
            self._reject_start_line(side, line, ts)
            return False
        return True

    def _reject_start_line(self, side: _Side, line: str, ts: float) -> None:
        shown = line[:80]
        if side.direction == TO_CLIENT:
            self._anomaly("invalid_status_line", f"not a status line: {shown!r}", ts, TO_CLIENT)
        elif _HTTP09_LINE.fullmatch(line) and not line.split(" ", 1)[1].lstrip().startswith("HTTP/"):
            self._anomaly("http09_request", f"HTTP/0.9 request not supported: {shown!r}", ts, TO_SERVER)
        else:
            self._anomaly("invalid_request_line", f"not a request line: {shown!r}", ts, TO_SERVER)
        self._give_up(side, ts)

    def _parse_fields(self, fields: str, ts: float, direction: int, stream_id: int | None) -> Headers | None:
        """Field lines (each ending in LF) to (lower-case name, value) pairs; None: given up."""
        if self._dirty_head:
            self._anomaly("header_control_characters", "control character or bare CR in head", ts,
                          direction, stream_id)
        if not fields:
            return []
        count = fields.count("\n")
        if count > self._limits.max_headers:
            self._anomaly("too_many_headers", f"{count} field lines (max {self._limits.max_headers})",
                          ts, direction, stream_id)
            return None
        pairs = _FIELD_LINE.findall(fields)
        if len(pairs) == count:  # every line well formed: the common case, done in C
            return [(name.lower(), value.rstrip(" \t")) for name, value in pairs]
        lines = fields.split("\n")
        lines.pop()
        headers: Headers = []
        folded = False
        for line in lines:
            first = line[:1]
            if first == " " or first == "\t":
                if headers:
                    name, value = headers[-1]
                    more = line.strip(" \t")
                    headers[-1] = (name, f"{value} {more}" if value else more)
                    folded = True
                else:
                    self._anomaly("header_without_colon", f"continuation without field: {line[:80]!r}",
                                  ts, direction, stream_id)
                continue
            colon = line.find(":")
            if colon < 0:
                self._anomaly("header_without_colon", f"field line without colon: {line[:80]!r}", ts,
                              direction, stream_id)
                continue
            name = line[:colon]
            if name[-1:] in (" ", "\t"):
                self._anomaly("header_whitespace_before_colon", f"field name {name[:80]!r}", ts,
                              direction, stream_id)
                name = name.rstrip(" \t")
            if _TOKEN.fullmatch(name) is None:
                self._anomaly("invalid_header_name", f"field name {name[:80]!r}", ts, direction,
                              stream_id)
                continue
            headers.append((name.lower(), line[colon + 1:].strip(" \t")))
        if folded:
            self._anomaly("obsolete_line_folding", "field value continued on a new line", ts,
                          direction, stream_id)
        return headers

    def _on_request_head(self, side: _Side, start_line: str, fields: str, work: bytes | bytearray,
                         pos: int, end: int, n: int, head_ts: float, ts: float) -> int:
        match = _REQUEST_LINE.fullmatch(start_line)
        if match is None:
            self._reject_start_line(side, start_line, ts)
            return n
        method, target, version_text = match.groups()
        if version_text == "1.1":
            version = "HTTP/1.1"
        elif version_text == "1.0":
            version = "HTTP/1.0"
        elif version_text[:1] == "1":  # HTTP/1.2, or a garbled HTTP/1.: servers answer it as 1.1
            version = ""
        elif version_text == "2.0" and method == "PRI" and target == "*":
            # HTTP/2 with prior knowledge: the connection preface instead of a request.
            self._switch("h2c", bytes(work[pos:]), bytes(self._client.buf))
            return n
        else:
            self._anomaly("unsupported_http_version", f"request line {start_line[:80]!r}", ts, TO_SERVER)
            self._give_up(side, ts)
            return n
        stream_id = self._next_stream
        self._next_stream = stream_id + 1
        if not version:
            version = "HTTP/1.1"
            event = "unknown_http_version" if _VERSION_1X.fullmatch(version_text) else "invalid_http_version"
            self._anomaly(event, f"HTTP/{version_text[:20]} parsed as HTTP/1.1", ts, TO_SERVER, stream_id)
        headers = self._parse_fields(fields, ts, TO_SERVER, stream_id)
        if headers is None:
            self._give_up(side, ts)
            return n
        content_length = transfer_encoding = None
        host = upgrade = ""
        hosts = 0
        for name, value in headers:
            if name in _FRAMING_NAMES:
                if name == "content-length":
                    content_length = value if content_length is None else f"{content_length},{value}"
                elif name == "transfer-encoding":
                    transfer_encoding = (value if transfer_encoding is None
                                         else f"{transfer_encoding},{value}")
                elif name == "host":
                    hosts += 1
                    if hosts == 1:
                        host = value
                else:
                    upgrade = value
        if hosts > 1:
            self._anomaly("multiple_host_headers", f"{hosts} Host fields", ts, TO_SERVER, stream_id)
        scheme, authority = "http", host
        if method == "CONNECT":  # authority-form target; no scheme (as HTTP/2 has none)
            scheme, authority = "", target
        elif _ABSOLUTE_FORM.match(target):  # only a target that starts with a scheme, not /x?u=http://
            scheme, _, rest = target.partition("://")
            scheme = scheme.lower()
            cut = len(rest)
            for stop in "/?#":
                index = rest.find(stop)
                if 0 <= index < cut:
                    cut = index
            authority = rest[:cut]
        switch = method == "CONNECT" or bool(upgrade)
        pending = self._pending
        pending.append((stream_id, method, switch))
        if len(pending) > self._limits.max_pending_exchanges:
            dropped = pending.popleft()
            if dropped[0] == self._await_switch:
                self._await_switch = None
            self._anomaly("too_many_pending_requests",
                          f"more than {self._limits.max_pending_exchanges} unanswered requests; "
                          f"request {dropped[0]} will not be paired", ts, TO_SERVER, dropped[0])
        message = HttpMessage(kind="request", version=version, headers=headers, method=method,
                              scheme=scheme, authority=authority, path=target, ts_start=head_ts)
        side.stream_id = stream_id
        side.switch_after = switch
        body_state = self._framing(side, content_length, transfer_encoding, True, ts)
        self._events.append(HeadReceived(stream_id=stream_id, direction=TO_SERVER, message=message,
                                         end_stream=body_state == _HEAD, ts=ts))
        return self._start_body(side, body_state, end, n, ts)

    def _on_response_head(self, side: _Side, start_line: str, fields: str, work: bytes | bytearray,
                          end: int, n: int, head_ts: float, ts: float) -> int:
        match = _STATUS_LINE.fullmatch(start_line)
        if match is None or match.group(3)[0] == "0":
            self._reject_start_line(side, start_line, ts)
            return n
        major, minor, code, reason = match.groups()
        status = int(code)
        if major != "1":
            self._anomaly("unsupported_http_version", f"status line {start_line[:80]!r}", ts, TO_CLIENT)
            self._give_up(side, ts)
            return n
        version = "HTTP/1.0" if minor == "0" else "HTTP/1.1"
        pending = self._pending
        interim = status < 200 and status != 101
        if pending:
            stream_id, method, _ = pending[0] if interim else pending.popleft()
        else:
            stream_id, method = self._next_stream, ""
            self._next_stream += 1
            self._anomaly("response_without_request", f"status {status} with no request to answer",
                          ts, TO_CLIENT, stream_id)
            if interim:  # the final response that follows answers the same (unseen) request
                pending.append((stream_id, "", False))
        if minor not in ("0", "1"):
            self._anomaly("unknown_http_version", f"HTTP/1.{minor} parsed as HTTP/1.1", ts, TO_CLIENT,
                          stream_id)
        headers = self._parse_fields(fields, ts, TO_CLIENT, stream_id)
        if headers is None:
            self._give_up(side, ts)
            return n
        message = HttpMessage(kind="response", version=version, headers=headers, status=status,
                              reason=(reason or "").strip(" \t"), ts_start=head_ts)
        events = self._events
        side.stream_id = stream_id
        if interim:
            events.append(HeadReceived(stream_id=stream_id, direction=TO_CLIENT, message=message,
                                       end_stream=True, ts=ts))
            return end
        if self._await_switch is not None and stream_id >= self._await_switch:
            self._await_switch = None  # the client's next bytes are HTTP/1 again (or the new protocol)
        switched_to = None
        if status == 101:
            upgrade = ""
            for name, value in headers:
                if name == "upgrade":
                    upgrade = value
                    break
            switched_to = upgrade.split(",", 1)[0].strip(" \t").lower() or "unknown"
        elif method == "CONNECT" and status < 300:
            switched_to = "tunnel"
        if switched_to is not None:
            events.append(HeadReceived(stream_id=stream_id, direction=TO_CLIENT, message=message,
                                       end_stream=True, ts=ts))
            if switched_to != "h2c":  # h2c: the response goes on as HTTP/2 stream 1
                events.append(MessageEnded(stream_id=stream_id, direction=TO_CLIENT, trailers=[], ts=ts))
            self._switch(switched_to, bytes(self._server.buf), bytes(work[end:]))
            return n
        if method == "HEAD" or status in _NO_BODY_STATUS:
            body_state = _HEAD
        else:
            content_length = transfer_encoding = None
            for name, value in headers:
                if name == "content-length":
                    content_length = value if content_length is None else f"{content_length},{value}"
                elif name == "transfer-encoding":
                    transfer_encoding = (value if transfer_encoding is None
                                         else f"{transfer_encoding},{value}")
            body_state = self._framing(side, content_length, transfer_encoding, False, ts)
        events.append(HeadReceived(stream_id=stream_id, direction=TO_CLIENT, message=message,
                                   end_stream=body_state == _HEAD, ts=ts))
        return self._start_body(side, body_state, end, n, ts)

    def _framing(self, side: _Side, content_length: str | None, transfer_encoding: str | None,
                 is_request: bool, ts: float) -> int | None:
        """Body framing state per RFC 9112 §6.3; None when it is invalid (anomaly emitted)."""
        if transfer_encoding is None:
            if content_length is None:
                return _HEAD if is_request else _UNTIL_EOF
            if content_length.isascii() and content_length.isdigit() and len(content_length) <= _MAX_CL_DIGITS:
                side.remaining = length = int(content_length)  # the common case
                return _LENGTH if length else _HEAD
        direction, stream_id = side.direction, side.stream_id
        if transfer_encoding is not None:
            codings = [c.strip(" \t").lower() for c in transfer_encoding.split(",")]
            codings = [c for c in codings if c]
            if content_length is not None:
                self._anomaly("te_and_cl", f"Transfer-Encoding {transfer_encoding[:80]!r} with "
                              f"Content-Length {content_length[:40]!r}", ts, direction, stream_id)
            if codings and codings[-1] == "chunked":
                if codings.count("chunked") > 1:
                    self._anomaly("invalid_transfer_encoding", f"chunked applied twice: "
                                  f"{transfer_encoding[:80]!r}", ts, direction, stream_id)
                return _CHUNK_SIZE
            if codings != ["identity"]:
                self._anomaly("invalid_transfer_encoding", f"Transfer-Encoding {transfer_encoding[:80]!r}"
                              " does not end with chunked", ts, direction, stream_id)
                return None if is_request else _UNTIL_EOF
        if content_length is not None:
            length = -1
            for part in content_length.split(","):
                part = part.strip(" \t")
                if _DIGITS.fullmatch(part) is None:
                    self._anomaly("invalid_content_length", f"Content-Length {content_length[:80]!r}",
                                  ts, direction, stream_id)
                    return None
                if len(part) > _MAX_CL_DIGITS:
                    self._anomaly("content_length_overflow", f"Content-Length {content_length[:80]!r}",
                                  ts, direction, stream_id)
                    return None
                value = int(part)
                if length >= 0 and value != length:
                    self._anomaly("conflicting_content_length", f"Content-Length {content_length[:80]!r}",
                                  ts, direction, stream_id)
                    return None
                length = value
            side.remaining = length
            return _LENGTH if length > 0 else _HEAD
        return _HEAD if is_request else _UNTIL_EOF

    def _start_body(self, side: _Side, body_state: int | None, end: int, n: int, ts: float) -> int:
        if body_state is None:
            self._give_up(side, ts, message_open=True)
            return n
        if body_state == _HEAD:
            self._end_message(side, ts)
        else:
            side.state = body_state
            side.incomplete = False
        return end

    # -- chunked bodies --------------------------------------------------------------------

    def _read_chunk_size(self, side: _Side, work: bytes | bytearray, pos: int, n: int, ts: float) -> int:
        max_line = self._limits.max_chunk_line
        eol = work.find(b"\n", pos, min(n, pos + max_line + 1))
        if eol < 0:
            if n - pos > max_line:
                self._anomaly("chunk_line_too_long", f"chunk-size line longer than {max_line} bytes", ts,
                              side.direction, side.stream_id)
                self._give_up(side, ts)
                return n
            return -1
        semicolon = work.find(b";", pos, eol)  # chunk extensions are ignored
        size_text = bytes(work[pos:semicolon if semicolon >= 0 else eol]).strip(b" \t\r")
        if _HEX.fullmatch(size_text) is None:
            self._anomaly("invalid_chunk_size", f"chunk-size {size_text[:40]!r}", ts, side.direction,
                          side.stream_id)
            self._give_up(side, ts)
            return n
        size = int(size_text, 16) if len(size_text) <= _MAX_CHUNK_HEX else _CHUNK_SIZE_CAP
        if size >= _CHUNK_SIZE_CAP:
            self._anomaly("chunk_size_overflow", f"chunk-size {size_text[:40]!r}", ts, side.direction,
                          side.stream_id)
            self._give_up(side, ts)
            return n
        if size:
            side.state = _CHUNK_DATA
            side.remaining = size
        else:
            side.state = _TRAILERS
        return eol + 1

    def _read_trailers(self, side: _Side, work: bytes | bytearray, pos: int, n: int, ts: float) -> int:
        c = work[pos]
        if c == 10:  # no trailer fields
            self._end_message(side, ts)
            return pos + 1
        if c == 13:
            if pos + 1 == n:
                return -1
            if work[pos + 1] == 10:
                self._end_message(side, ts)
                return pos + 2
        max_bytes = self._limits.max_header_bytes
        last, end = _blank_line(work, pos + side.scan, min(n, pos + max_bytes + 3))
        if last < 0:
            if n - pos >= max_bytes + 3:  # no blank line can start within the cap
                self._anomaly("header_too_large", f"trailer section longer than {max_bytes} bytes", ts,
                              side.direction, side.stream_id)
                self._give_up(side, ts)
                return n
            side.scan = max(0, n - pos - 2)
            return -1
        side.scan = 0
        text = work[pos:last + 1].decode("latin-1")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        self._dirty_head = _BAD_HEAD_CHARS.search(text) is not None
        trailers = self._parse_fields(text, ts, side.direction, side.stream_id)
        if trailers is None:
            self._give_up(side, ts)
            return n
        self._end_message(side, ts, trailers)
        return end

    # -- message and direction ends ----------------------------------------------------------

    def _end_message(self, side: _Side, ts: float, trailers: Headers | None = None) -> None:
        self._events.append(MessageEnded(stream_id=side.stream_id, direction=side.direction,
                                         trailers=trailers or [], ts=ts, complete=not side.incomplete))
        side.state = _HEAD
        side.incomplete = False
        if side.switch_after:
            side.switch_after = False
            if any(entry[0] == side.stream_id for entry in self._pending):
                self._await_switch = side.stream_id

    def _give_up(self, side: _Side, ts: float, message_open: bool = False) -> None:
        """Stop parsing a direction whose framing is lost; an open message ends incomplete."""
        if message_open or side.state in _IN_BODY:
            self._events.append(MessageEnded(stream_id=side.stream_id, direction=side.direction,
                                             trailers=[], ts=ts, complete=False))
        side.state = _DONE
        side.switch_after = False
        side.buf.clear()

    def _finish(self, side: _Side, ts: float) -> None:
        """End of stream for `side`: close a close-delimited body, flag a truncated one."""
        state = side.state
        if state == _UNTIL_EOF:
            self._events.append(MessageEnded(stream_id=side.stream_id, direction=side.direction,
                                             trailers=[], ts=ts, complete=not side.incomplete))
        elif state in _IN_BODY:
            self._anomaly("truncated_message", "stream ended inside a message body", ts, side.direction,
                          side.stream_id)
            self._events.append(MessageEnded(stream_id=side.stream_id, direction=side.direction,
                                             trailers=[], ts=ts, complete=False))
        side.state = _DONE
        side.buf.clear()

    def _switch(self, protocol: str, to_server: bytes, to_client: bytes) -> None:
        self.upgraded_to = protocol
        self._leftover = {TO_SERVER: [to_server] if to_server else [],
                          TO_CLIENT: [to_client] if to_client else []}
        # A direction already given up or ended has no bytes for the next protocol.
        self._leftover_closed = {side.direction for side in self._sides if side.state == _DONE}
        for side in self._sides:
            side.state = _DONE
            side.stalled = False
            side.buf.clear()

    # -- gaps --------------------------------------------------------------------------------

    def _gap(self, side: _Side, length: int, ts: float) -> None:
        state = side.state
        if state in (_LENGTH, _CHUNK_DATA):
            side.incomplete = True
            self._events.append(BodyGap(stream_id=side.stream_id, direction=side.direction,
                                        length=min(length, side.remaining), ts=ts))
            if length < side.remaining:
                side.remaining -= length
                return
            if length == side.remaining:
                side.remaining = 0
                if state == _LENGTH:
                    self._end_message(side, ts)
                else:
                    side.state = _CHUNK_END
                return
            self._anomaly("gap", f"{length} bytes missing past the end of a body", ts, side.direction,
                          side.stream_id)
            self._end_message(side, ts)
        elif state == _UNTIL_EOF:
            side.incomplete = True
            self._events.append(BodyGap(stream_id=side.stream_id, direction=side.direction, length=length, ts=ts))
            return
        elif state == _RESYNC:
            side.buf.clear()
            side.resync_budget -= length
            side.resync_mid_line = False
            return
        elif state == _HEAD:
            self._anomaly("gap", f"{length} bytes missing where a head was expected", ts, side.direction)
        else:  # chunk-size line, chunk terminator or trailers: chunk framing is lost
            self._anomaly("gap", f"{length} bytes missing in chunked framing", ts, side.direction,
                          side.stream_id)
            side.incomplete = True
            self._end_message(side, ts)
        side.state = _RESYNC
        side.buf.clear()
        side.scan = 0
        side.line_ok = False
        side.stalled = False
        side.resync_budget = 16 * self._limits.max_header_bytes
        side.resync_mid_line = False

    def _resync(self, side: _Side, work: bytes | bytearray, pos: int, n: int, ts: float) -> int:
        """Look for the next start line after a gap: its offset (state HEAD), or the offset to keep from.

        A candidate is a whole line matching a request line (client side) or starting with a
        status line (server side). Lines longer than `_RESYNC_TAIL` are not candidates, so the
        outcome does not depend on how the bytes were split.
        """
        if side.direction == TO_SERVER:
            needle, pattern = b" HTTP/1.", _REQUEST_LINE_BYTES
        else:
            needle, pattern = b"HTTP/1.", _STATUS_LINE_BYTES
        mid_line = side.resync_mid_line
        hit = work.find(needle, pos, n)
        while hit >= 0:
            newline = work.rfind(b"\n", pos, hit)
            if newline >= 0 or not mid_line:
                line_start = newline + 1 if newline >= 0 else pos
                eol = work.find(b"\n", hit, n)
                if eol < 0:
                    break
                if ((needle[0] == 32 or line_start == hit) and eol - line_start <= _RESYNC_TAIL
                        and pattern.fullmatch(work, line_start, eol) is not None):
                    return self._skip_to(side, pos, line_start, True, n, ts)
            hit = work.find(needle, hit + 1, n)
        # Nothing yet: keep the last, unfinished line (a start line may be arriving).
        newline = work.rfind(b"\n", pos, n)
        keep = newline + 1 if newline >= 0 else pos
        if newline >= 0:
            mid_line = False
        if n - keep > _RESYNC_TAIL:  # too long to be a start line: keep only its end
            keep = n - len(needle)
            mid_line = True
        side.resync_mid_line = mid_line
        return self._skip_to(side, pos, keep, False, n, ts)

    def _skip_to(self, side: _Side, pos: int, offset: int, found: bool, n: int, ts: float) -> int:
        """Drop the bytes before `offset` from the resync budget; give up when it is spent."""
        side.resync_budget -= offset - pos
        if side.resync_budget < 0:
            self._anomaly("resync_failed", "no message start found after a gap", ts, side.direction)
            self._give_up(side, ts)
            return n
        if found:
            side.state = _HEAD
        return offset

    # -- events ------------------------------------------------------------------------------

    def _anomaly(self, event: str, message: str, ts: float, direction: int | None = None,
                 stream_id: int | None = None) -> None:
        self._events.append(SessionAnomaly(layer=LAYER, event=event, message=message, ts=ts,
                                           direction=direction, stream_id=stream_id))

    def _internal_error(self, exc: Exception, direction: int, ts: float) -> None:
        self._events.append(SessionAnomaly(layer=LAYER, event="internal_error",
                                           message=f"{type(exc).__name__}: {exc}", ts=ts,
                                           direction=direction))
        for side in self._sides:
            side.state = _DONE
            side.buf.clear()
