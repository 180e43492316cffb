"""Large bodies streamed with bounded memory, their first part inspected before it is forwarded.

A model upload or a model pull can be gigabytes: mitmproxy must not buffer it. For a body over
the stream threshold (or of unknown length over HTTP/1) the addon sets a :class:`HeldBodyStream`
as the message's stream callable. It holds back the first `hold_bytes` (the part parsers look at:
file format, pickle opcodes, ...), has the exchange inspected as it stands, then forwards what it
held and everything after it without keeping it. Memory per flow stays near `2 x hold_bytes`
whatever the body's size. When nothing can block (no block rule, no blocking uninspectable
policy), the addon sets a :class:`PassThroughStream` instead: holding would only delay the body.
When the block rules read nothing the rest of the held part could change, the hold ends as soon
as the bytes held settle them (`settled_at`: a safetensors model's header, see
inspector.live.settle).

Past what the parsers keep, a body no parser reads further is only counted; where the transport
holds the sender to the declared length (an HTTP/1 answer with Content-Length), the stream hands
the rest back to mitmproxy (`hand_back`, which sets the message's `stream` to True): no Python
call per chunk for the rest of a model pull, and the length is complete when the message is.

A block decided on the held part drops it and everything after it, and aborts the transfer: the
message's head already went out (mitmproxy sends it when streaming starts), so the only way to
stop the server from waiting for the rest (a request), or the client from taking a partial body
as complete (a response), is to close the upstream connection; the client sees the request fail.
Blocks decided before a body starts streaming (heads, small bodies) get the protocol's block
response instead (see blocking.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from inspector.engine import BLOCK
from inspector.http import HttpExchange, SessionAnomaly
from inspector.live.inspection import Decision
from inspector.live.messages import StreamedMessage
from inspector.live.settle import SettledAt

logger = logging.getLogger("inspector.live")

#: f(held bytes, complete) -> the decision on the exchange as it stands.
Inspect = Callable[[bytes, bool], Decision]


class HeldBodyStream:
    """A stream callable for one message body (request or response).

    It returns lists of chunks, never `b""` for "nothing yet": mitmproxy forwards every returned
    chunk, and an empty chunk on an HTTP/1 chunked body is its terminator."""

    def __init__(self, body: StreamedMessage, inspect: Inspect, abort: Callable[[str], None],
                 on_error: Callable[[BaseException], bool], now: Callable[[], float], hold_bytes: int,
                 settled_at: SettledAt | None = None, ended: Callable[[str], None] | None = None,
                 hand_back: Callable[[], bool] | None = None) -> None:
        self.body = body
        #: Asked once, when the hold is over and the body only counted: True when mitmproxy takes
        #: the rest over (see the module docstring).
        self._hand_back = hand_back
        self.inspect = inspect
        self.abort = abort
        self.on_error = on_error
        self.now = now
        self.hold_bytes = hold_bytes
        self.decision: Decision | None = None
        self.blocked = False
        #: What ended the hold: "settled" (the held bytes settled the block rules, see
        #: inspector.live.settle), "prefix" (hold_bytes were in), "end" (the body ended first).
        self.ended_by = ""
        self._ended = ended
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._settled_at = settled_at
        #: Held length at which to ask `settled_at` (again); None: not before the full hold.
        self._ask_at: int | None = 0 if settled_at is not None else None

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if self.blocked:
            return []
        if data:
            self.body.feed(data, self.now())
        if self.decision is not None:
            if self._hand_back is not None and self.body.counting_only:  # asked once: that stays so
                self._hand_back()
                self._hand_back = None
            return data
        if data:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes < self.hold_bytes:
                if self._ask_at is not None and self._held_bytes >= self._ask_at and self._settled():
                    return self._decide(complete=False, ended_by="settled")
                return []
            return self._decide(complete=False, ended_by="prefix")
        return self._decide(complete=True, ended_by="end")

    def _settled(self) -> bool:
        """Whether the bytes held so far settle the block rules; else when to ask again."""
        assert self._settled_at is not None
        held = b"".join(self._held)
        self._held = [held]
        try:
            at = self._settled_at(held)
        except Exception:  # a bug: nothing is lost, the full hold decides
            logger.exception("inspector: cannot tell whether a held body settles the block rules; holding it whole")
            at = None
        if at is None or at >= self.hold_bytes:
            self._ask_at = None  # never before the full hold
            return False
        if at <= len(held):
            return True
        self._ask_at = at
        return False

    def _decide(self, *, complete: bool, ended_by: str) -> list[bytes]:
        self.ended_by = ended_by
        if self._ended is not None:
            self._ended(ended_by)
        held = b"".join(self._held)
        self._held = []
        self._held_bytes = 0
        try:
            decision = self.inspect(held, complete)
        except Exception as exc:  # the failure policy decides
            if self.on_error(exc):
                self._block("internal error")
                return []
            decision = Decision(action="allow", record={}, inspected=False)
        self.decision = decision
        if decision.inspected:  # what the held part showed is written: the body's end tells the rest
            self.body.forget_found()
        if decision.action == BLOCK:
            self._block(decision.message)
            return []
        return [held] if held else []

    def _block(self, reason: str) -> None:
        self.blocked = True
        self.abort(reason)

    def end(self, trailers: list, ts: float) -> tuple[HttpExchange, list[SessionAnomaly]]:
        return self.body.end(trailers, ts, complete=not self.blocked)


class PassThroughStream:
    """A stream callable for a streamed answer (server-sent events, JSON lines), and for any
    large body when nothing can block: every chunk is forwarded the moment it arrives and fed to
    the parsers; nothing is held back.

    Time to first token is what a streaming client wants, so nothing waits for an inspection:
    the answer is evaluated whole when it ends (see the addon), and a block rule that matches
    its content then can only alert, since the content already went out. Where no block rule and
    no blocking uninspectable policy are in force, holding a body's first part would only delay
    it: the inspection of that part could not act."""

    def __init__(self, body: StreamedMessage, now: Callable[[], float],
                 hand_back: Callable[[], bool] | None = None) -> None:
        self.body = body
        self.now = now
        self._hand_back = hand_back  # as HeldBodyStream's

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if not data:
            return []
        self.body.feed(data, self.now())
        if self._hand_back is not None and self.body.counting_only:
            self._hand_back()
            self._hand_back = None
        return data

    def end(self, trailers: list, ts: float) -> tuple[HttpExchange, list[SessionAnomaly]]:
        return self.body.end(trailers, ts)
