"""Resumable parsing of one direction of a byte stream, for the raw-TCP protocol sessions.

A parser is written as a generator that yields what it needs next and receives it:

    def parse():
        code = (yield BEGIN_1)[0]        # one byte at a message boundary
        length = u64((yield 8))          # exactly 8 bytes
        head = yield Skip(length, 256)   # `length` bytes consumed, the first 256 returned
        while not ready():
            yield WAIT                   # stop here until the session calls resume()

:class:`StreamReader` drives it with whatever pieces the stream arrives in: whole, byte by
byte or split anywhere, the generator sees the same values. Large payloads are consumed
without being held (`Skip` keeps a prefix). A parser reports malformed input by raising
:class:`ParseError`; the reader then stops for good and keeps the error for the session to turn
into an anomaly event. Nothing here raises on peer input.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any


class ParseError(Exception):
    """Malformed input: `event` is the snake_case anomaly name, `message` the detail."""

    def __init__(self, event: str, message: str) -> None:
        super().__init__(message)
        self.event = event
        self.message = message


class Skip:
    """Consume `length` bytes; the generator receives the first `keep` of them."""

    __slots__ = ("keep", "length")

    def __init__(self, length: int, keep: int) -> None:
        self.length = length
        self.keep = keep


class Begin:
    """Exactly `size` bytes that start a message: the reader is idle while waiting for them."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


BEGIN_1 = Begin(1)

#: Yielded by a parser that waits for something outside this direction (a query to pair a
#: reply with): the reader holds the bytes until `resume()`.
WAIT: Any = object()

Parser = Generator[Any, Any, None]


class StreamReader:
    """Feeds one parsing generator with the bytes of one direction."""

    __slots__ = ("_buffer", "_kept", "_parser", "_request", "_skip_left", "consumed", "error", "finished")

    def __init__(self, parser: Parser) -> None:
        self._parser = parser
        self._buffer = bytearray()
        self._kept = bytearray()
        self._skip_left = -1
        #: Bytes handed to the parser so far.
        self.consumed = 0
        self.error: ParseError | None = None
        #: True once the parser returned or failed: later bytes are ignored.
        self.finished = False
        self._request: Any = None
        self._send(None)

    @property
    def idle(self) -> bool:
        """At a message boundary with nothing buffered (a stream ending here is not cut short)."""
        return self.finished or (isinstance(self._request, Begin) and not self._buffer)

    @property
    def waiting(self) -> bool:
        return self._request is WAIT and not self.finished

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed to the parser."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        self._buffer += data
        self._run()

    def resume(self) -> None:
        """Let a parser that yielded WAIT look again (the condition it waits for may hold)."""
        if self._request is WAIT and not self.finished:
            self._send(None)
            self._run()

    def stop(self) -> None:
        self.finished = True
        self._buffer.clear()
        self._parser.close()

    # -- driving -----------------------------------------------------------------------------

    def _send(self, value: Any) -> None:
        try:
            self._request = self._parser.send(value)
        except StopIteration:
            self.finished = True
            self._buffer.clear()
        except ParseError as error:
            self.error = error
            self.finished = True
            self._buffer.clear()

    def _run(self) -> None:
        buffer = self._buffer
        position = 0
        while not self.finished:
            request = self._request
            available = len(buffer) - position
            if request is WAIT:
                break
            if isinstance(request, Skip):
                if self._skip_left < 0:
                    self._skip_left = request.length
                    self._kept = bytearray()
                take = min(self._skip_left, available)
                room = request.keep - len(self._kept)
                if room > 0 and take:
                    self._kept += buffer[position:position + min(room, take)]
                position += take
                self.consumed += take
                self._skip_left -= take
                if self._skip_left:
                    break
                self._skip_left = -1
                kept = bytes(self._kept)
                self._kept = bytearray()
                self._send(kept)
                continue
            size = request.size if isinstance(request, Begin) else request
            if available < size:
                break
            chunk = bytes(buffer[position:position + size])
            position += size
            self.consumed += size
            self._send(chunk)
        if self.finished:
            buffer.clear()
        elif position:
            del buffer[:position]
