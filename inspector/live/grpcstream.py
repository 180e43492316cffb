"""gRPC streams inspected message by message while they pass (ModelStreamInfer and the like).

A bidirectional stream cannot be buffered: the client waits for answers before it sends more,
so buffering hangs it. The addon sets `flow.request.stream` and `flow.response.stream` to the
callables below (mitmproxy's per-flow streaming): each chunk goes in, the bytes to forward come
out.

Requests: :class:`GrpcRequestStream` splits the body into length-prefixed messages and holds
each one back until it is complete (or its first `hold_bytes` arrived), then has it inspected on
its own, as a one-message exchange with the stream's headers, so every layer parses it as it
would a unary call (compressed messages are decompressed, capped, by the gRPC framer). An alert
rule fires at most once per stream, as offline where a stream is one transaction; block rules
are evaluated on every message, each blocked message alerts. An
allowed message is forwarded at once; a blocked one is dropped and an error message is queued
for the client: for Triton's ModelStreamInfer a `ModelStreamInferResponse{error_message}`.
Methods without a known error field abort the stream instead.

Responses: :class:`GrpcResponseStream` forwards what the server sends and writes queued error
messages at the next message boundary: with the server's next message, or when the stream ends.
(mitmproxy offers no way to write to an HTTP/2 stream between two server frames.)

Both sides also feed the stream's own builders, so the transaction record written at the end
describes the whole stream as offline analysis would.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

from inspector.engine import BLOCK
from inspector.http import TO_CLIENT, TO_SERVER, HttpMessage
from inspector.limits import Limits
from inspector.live.blocking import stream_error_message
from inspector.live.inspection import Decision, LiveInspector, Transaction
from inspector.live.messages import StreamedMessage, request_exchange

_PREFIX = struct.Struct(">BI")

#: The snapshot of a message cut at `hold_bytes` ends early on purpose: not an anomaly.
_SNAPSHOT_ARTIFACTS = frozenset({"grpc_truncated_message"})


class GrpcRequestStream:
    """The request-side stream callable of one gRPC stream."""

    def __init__(self, inspector: LiveInspector, tx: Transaction, head: HttpMessage, limits: Limits,
                 now: Callable[[], float], abort: Callable[[str], None], hold_bytes: int) -> None:
        self.inspector = inspector
        self.tx = tx
        self.head = head
        self.limits = limits
        self.now = now
        self.abort = abort
        self.hold_bytes = hold_bytes
        self.body = StreamedMessage(limits, TO_SERVER, head)
        #: Framed error messages waiting for the response stream.
        self.injections: deque[bytes] = deque()
        self.messages = 0
        self.blocked = 0
        self.aborted = False
        self._prefix = bytearray()
        self._held = bytearray()  # the current message, prefix included, while undecided
        self._remaining = 0  # payload bytes of the current message still to come
        self._in_message = False
        self._decided: str | None = None  # for the rest of the current message: "pass" or "drop"
        self._length = 0

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        try:
            return self._chunk(data)
        except Exception as exc:  # a bug of ours must not kill the stream: the failure policy decides
            if self.inspector.failed(exc, "gRPC stream inspection"):
                self._abort("internal error")
                return []
            self._decided = "pass"
            self._in_message = False
            released = bytes(self._held) + bytes(self._prefix) + data
            self._held.clear()
            self._prefix.clear()
            return released

    def _chunk(self, data: bytes) -> list[bytes]:
        if self.aborted:
            return []
        ts = self.now()
        if not data:  # end of the client's stream
            return self._end(ts)
        self.body.feed(data, ts)
        out: list[bytes] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end and not self.aborted:
            if not self._in_message:
                need = 5 - len(self._prefix)
                self._prefix += view[pos:pos + need]
                pos += min(need, end - pos)
                if len(self._prefix) < 5:
                    break
                _flag, length = _PREFIX.unpack(self._prefix)
                self._start(bytes(self._prefix), length)
                self._prefix.clear()
                if length == 0:
                    self._finish(out, ts)
                continue
            take = min(self._remaining, end - pos)
            piece = view[pos:pos + take]
            pos += take
            self._remaining -= take
            if self._decided == "pass":
                out.append(bytes(piece))
            elif self._decided is None:
                self._held += piece
                if self._remaining and len(self._held) >= self.hold_bytes:
                    self._decide(out, ts, complete=False)
            if self._remaining == 0:
                self._finish(out, ts)
        return out

    def _start(self, prefix: bytes, length: int) -> None:
        self._in_message = True
        self._length = length
        self._remaining = length
        self._decided = None
        self._held = bytearray(prefix)

    def _finish(self, out: list[bytes], ts: float) -> None:
        if self._decided is None:
            self._decide(out, ts, complete=True)
        self._in_message = False
        self._decided = None
        self._held = bytearray()

    def _decide(self, out: list[bytes], ts: float, *, complete: bool) -> None:
        self.messages += 1
        decision = self._inspect(bytes(self._held), ts, complete)
        if decision.action == BLOCK:
            self.blocked += 1
            self._decided = "drop"
            error = stream_error_message(self.head.path, decision.message)
            if error is None:
                self._abort(decision.message)
            else:
                self.injections.append(error)
        else:
            self._decided = "pass"
            out.append(bytes(self._held))
        self._held = bytearray()

    def _inspect(self, framed: bytes, ts: float, complete: bool) -> Decision:
        exchange, anomalies = request_exchange(self.limits, self.head, framed, [], ts)
        if not complete:
            for observer in exchange.observations.values():
                kept = [a for a in getattr(observer, "anomalies", ()) if a.event not in _SNAPSHOT_ARTIFACTS]
                if hasattr(observer, "anomalies"):
                    observer.anomalies = kept
        # An alert rule fires once per stream (as offline, where the stream is one transaction);
        # block rules look at every message.
        matched = set(self.tx.matched - self.inspector.block_sids())
        decision = self.inspector.inspect(self.tx, exchange, anomalies, "message", skip=matched)
        self.tx.matched |= matched
        return decision

    def _end(self, ts: float) -> list[bytes]:
        out: list[bytes] = []
        if self._in_message and self._decided is None and len(self._held) > 5:
            self._decide(out, ts, complete=False)  # the client stopped inside a message
        elif self._in_message and self._decided is None:
            out.append(bytes(self._held))
        if self._prefix:
            out.append(bytes(self._prefix))
            self._prefix.clear()
        return out

    def _abort(self, reason: str) -> None:
        if not self.aborted:
            self.aborted = True
            self.abort(reason)


class GrpcResponseStream:
    """The response-side stream callable: forwards, and writes queued error messages between
    the server's messages."""

    def __init__(self, request_stream: GrpcRequestStream | None, head: HttpMessage, limits: Limits,
                 now: Callable[[], float]) -> None:
        self.request_stream = request_stream
        self.now = now
        self.body = StreamedMessage(limits, TO_CLIENT, head)
        self.injected = 0
        self._prefix = bytearray()
        self._remaining = 0  # payload bytes of the current message still to come

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        injections = self.request_stream.injections if self.request_stream is not None else None
        ts = self.now()
        if not data:
            out = list(self._drain(injections)) if injections else []
            for piece in out:
                self.body.feed(piece, ts)
            return out or b""
        if not injections:
            self._track(data)
            self.body.feed(data, ts)
            return data
        out: list[bytes] = []
        if self._at_boundary():
            out.extend(self._drain(injections))
        # Forward up to each boundary inside the chunk, injecting there.
        pos = 0
        view = memoryview(data)
        while pos < len(data):
            step = self._advance(view, pos)
            out.append(bytes(view[pos:pos + step]))
            pos += step
            if self._at_boundary() and injections:
                out.extend(self._drain(injections))
        for piece in out:  # the record describes what the client received
            self.body.feed(piece, ts)
        return out

    def _drain(self, injections: deque[bytes]):
        while injections:
            self.injected += 1
            yield injections.popleft()

    def _at_boundary(self) -> bool:
        return self._remaining == 0 and not self._prefix

    def _track(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            pos += self._advance(view, pos)

    def _advance(self, view: memoryview, pos: int) -> int:
        """Consume bytes from `pos` up to the end of the current prefix or message; how many."""
        end = len(view)
        if self._remaining:
            take = min(self._remaining, end - pos)
            self._remaining -= take
            return take
        need = 5 - len(self._prefix)
        piece = view[pos:pos + need]
        self._prefix += piece
        if len(self._prefix) == 5:
            _, length = _PREFIX.unpack(self._prefix)
            self._prefix.clear()
            self._remaining = length
        return len(piece)
