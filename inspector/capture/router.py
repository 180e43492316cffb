"""Per-flow stream router: detect the protocol by content, run its session, emit records.

Detection looks at the first bytes of each direction, never at ports (gRPC runs on 50051,
8001, 443 ...): the HTTP/2 client preface, an HTTP/1 request line or status line, or a raw-TCP
protocol's detector from `RAW_DETECTORS`. The bytes seen while deciding are replayed into the
chosen session. When the content shows that the side taken for the client is the server (a
capture that starts mid-connection), the flow's sides are swapped before anything is parsed.

An HTTP/1 connection upgraded to h2c continues in an HTTP/2 session; the upgrading request's
exchange continues as HTTP/2 stream 1.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from inspector.apps import OBSERVER_FACTORIES, transaction_record
from inspector.capture.flows import Flow
from inspector.capture.http1 import Http1Session
from inspector.capture.http2 import Http2Session
from inspector.exchange import ExchangeBuilder
from inspector.http import TO_CLIENT, TO_SERVER, HttpExchange, SessionAnomaly
from inspector.limits import Limits
from inspector.rawtcp import SWAPPED, Transaction
from inspector.records import anomaly_record, base_record

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP1_REQUEST = re.compile(rb"[A-Z][A-Z0-9_-]{1,19} [^\s]{1,8192} HTTP/1\.[019]\r?\n")
_HTTP1_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                  b"CONNECT ", b"TRACE ", b"PROPFIND ", b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ",
                  b"UNLOCK ", b"PROPPATCH ", b"REPORT ", b"SEARCH ", b"PURGE ", b"LINK ", b"UNLINK ")
_HTTP1_STATUS = re.compile(rb"HTTP/1\.[019] \d{3}[ \r\n]")

#: Bytes per direction after which a flow that matched nothing is left alone.
DETECTION_BYTES = 2048


class RecordSink(Protocol):
    def emit(self, record: dict[str, Any], ts: float) -> None: ...


class StreamSession(Protocol):
    """What the router drives: a sans-IO session over both directions of a stream."""

    def receive_data(self, direction: int, data: bytes, ts: float) -> list: ...
    def receive_gap(self, direction: int, length: int, ts: float) -> list: ...
    def receive_eof(self, direction: int, ts: float) -> list: ...


class Detection:
    """A detector's answer: which session to run, and whether the sides must be swapped."""

    __slots__ = ("app_proto", "make", "swap")

    def __init__(self, app_proto: str, make: Callable[[Limits], StreamSession], swap: bool = False):
        self.app_proto = app_proto
        self.make = make
        self.swap = swap


#: Raw-TCP protocol modules (the interface of inspector.rawtcp), tried in order after HTTP.
RAW_PROTOCOL_MODULES = (
    "inspector.protocols.nccl",
    "inspector.protocols.tcpstore",
)


def _raw_detector(module: ModuleType) -> Callable[[bytes, bytes], Detection | bool | None]:
    def detector(client: bytes, server: bytes) -> Detection | bool | None:
        answer = module.detect(client, server)
        if answer is True or answer == SWAPPED:
            return Detection(module.APP_PROTO, module.Session, swap=answer == SWAPPED)
        return answer  # None: undecided, False: not this protocol

    return detector


#: f(client_bytes, server_bytes) -> Detection, None (undecided) or False (no).
RAW_DETECTORS: list[Callable[[bytes, bytes], Detection | bool | None]] = [
    _raw_detector(importlib.import_module(name)) for name in RAW_PROTOCOL_MODULES
]


def _looks_like_request(data: bytes) -> bool | None:
    """True: an HTTP/1 request start; False: not one; None: too short to say."""
    if not data:
        return None
    if data.startswith(_HTTP1_METHODS):
        return True
    line_end = data.find(b"\n")
    if line_end == -1:
        if len(data) < 24 and any(m.startswith(data[:len(m)]) for m in _HTTP1_METHODS):
            return None
        return False
    return _HTTP1_REQUEST.match(data, 0, line_end + 1) is not None


def detect_http(client: bytes, server: bytes) -> Detection | bool | None:
    """Detection, None (undecided: need more bytes) or False (not HTTP)."""
    for data, swap in ((client, False), (server, True)):
        if data.startswith(H2_PREFACE):
            return Detection("http2", lambda limits: Http2Session(limits), swap)
        if data and H2_PREFACE.startswith(data):
            return None
    request_client = _looks_like_request(client)
    if request_client:
        return Detection("http", lambda limits: Http1Session(limits))
    request_server = _looks_like_request(server)
    if request_server:
        return Detection("http", lambda limits: Http1Session(limits), swap=True)
    # A capture that starts after the request: a status line shows the server's side.
    if _HTTP1_STATUS.match(server):
        return Detection("http", lambda limits: Http1Session(limits))
    if _HTTP1_STATUS.match(client):
        return Detection("http", lambda limits: Http1Session(limits), swap=True)
    if request_client is None or request_server is None:
        return None
    return False


class _Tunnel:
    """What follows an upgrade we do not parse (websocket, CONNECT): bytes counted, not parsed."""

    def receive_data(self, direction: int, data: bytes, ts: float) -> list:
        return []

    def receive_gap(self, direction: int, length: int, ts: float) -> list:
        return []

    def receive_eof(self, direction: int, ts: float) -> list:
        return []


class StreamRouter:
    """The flow handler the flow table drives for one TCP (or UDP) flow."""

    def __init__(self, flow: Flow, sink: RecordSink, limits: Limits, stats: dict[str, int]) -> None:
        self._flow = flow
        self._sink = sink
        self._limits = limits
        self._stats = stats
        self._pending: list[tuple[int, bytes, float]] = []
        self._pending_bytes = [b"", b""]
        self._session: StreamSession | None = None
        self._builder: ExchangeBuilder | None = None
        self._gave_up = False
        self._eof = [False, False]
        self._tx_id = 0
        self.gap_bytes = 0

    # -- flow handler interface --------------------------------------------------------------

    def on_data(self, direction: int, data: bytes, ts: float) -> None:
        session = self._session
        if session is not None:
            self._handle(session.receive_data(direction, data, ts), ts)
            self._after_session_input(ts)
            return
        if self._gave_up:
            return
        self._pending.append((direction, data, ts))
        if len(self._pending_bytes[direction]) < DETECTION_BYTES:
            self._pending_bytes[direction] += data[:DETECTION_BYTES]
        self._detect(ts, final=False)

    def on_gap(self, direction: int, length: int, ts: float) -> None:
        self.gap_bytes += length
        if self._session is not None:
            self._handle(self._session.receive_gap(direction, length, ts), ts)
            return
        if not self._gave_up:
            if self._pending:
                self._detect(ts, final=True)
            if self._session is not None:
                self._handle(self._session.receive_gap(direction, length, ts), ts)
            else:
                self._give_up("gap_before_detection")

    def on_eof(self, direction: int, ts: float) -> None:
        self._eof[direction] = True
        if self._session is None and not self._gave_up and self._pending:
            self._detect(ts, final=True)
        if self._session is not None:
            self._handle(self._session.receive_eof(direction, ts), ts)

    def on_stream_anomaly(self, direction: int, event: str, message: str, ts: float) -> None:
        self._stats["stream_anomalies"] = self._stats.get("stream_anomalies", 0) + 1
        self._sink.emit(anomaly_record(self._flow, ts, kind="stream", layer="tcp", event=event,
                                       message=message), ts)

    def on_datagram(self, direction: int, payload: bytes, ts: float) -> None:
        """UDP payloads: no datagram parsers yet; the flow record counts them."""

    def finish(self, ts: float) -> None:
        if self._session is None and not self._gave_up and self._pending:
            self._detect(ts, final=True)
        session = self._session
        if session is not None:
            for direction in (TO_SERVER, TO_CLIENT):
                if not self._eof[direction]:
                    self._eof[direction] = True
                    self._handle(session.receive_eof(direction, ts), ts)
        if self._builder is not None:
            self._emit_results(self._builder.finish(ts), ts)

    # -- detection ---------------------------------------------------------------------------

    def _detect(self, ts: float, final: bool) -> None:
        client, server = self._pending_bytes
        found = detect_http(client, server)
        if not isinstance(found, Detection) and not self._flow.syn:
            found = self._skip_keepalive_byte() or found
            client, server = self._pending_bytes
        undecided = found is None
        if not isinstance(found, Detection):
            found = None
            for detector in RAW_DETECTORS:
                answer = detector(client, server)
                if isinstance(answer, Detection):
                    found = answer
                    break
                undecided = undecided or answer is None
        if found is None:
            if final or len(client) >= DETECTION_BYTES or len(server) >= DETECTION_BYTES or not undecided:
                self._give_up("unknown_protocol")
            return
        self._start(found, ts)

    def _skip_keepalive_byte(self) -> Detection | None:
        """A flow picked up without its handshake may show a keep-alive probe first: one old
        byte (often 0x00) re-sent below the stream position. When dropping that single byte
        makes the direction recognizable, it was the probe."""
        for direction in (TO_SERVER, TO_CLIENT):
            first = next((item for item in self._pending if item[0] == direction), None)
            if first is None or len(first[1]) != 1:
                continue
            trial = list(self._pending_bytes)
            trial[direction] = trial[direction][1:]
            found = detect_http(trial[0], trial[1])
            if isinstance(found, Detection):
                self._pending.remove(first)
                self._pending_bytes = trial
                self._stats["keepalive_bytes_skipped"] = self._stats.get("keepalive_bytes_skipped", 0) + 1
                return found
        return None

    def _start(self, detection: Detection, ts: float) -> None:
        flow = self._flow
        pending = self._pending
        self._pending = []
        self._pending_bytes = [b"", b""]
        if detection.swap:
            flow.swap()
            self._eof.reverse()
            pending = [(1 - d, data, t) for d, data, t in pending]
        flow.app_proto = detection.app_proto
        self._stats[f"app_{detection.app_proto}"] = self._stats.get(f"app_{detection.app_proto}", 0) + 1
        self._session = detection.make(self._limits)
        if detection.app_proto in ("http", "http2"):
            self._builder = ExchangeBuilder(self._limits, OBSERVER_FACTORIES)
        for direction, data, t in pending:
            self._handle(self._session.receive_data(direction, data, t), t)
            self._after_session_input(t)

    def _give_up(self, reason: str) -> None:
        self._gave_up = True
        self._pending = []
        self._pending_bytes = [b"", b""]
        self._stats[reason] = self._stats.get(reason, 0) + 1

    def _after_session_input(self, ts: float) -> None:
        """Hand an HTTP/1 connection upgraded to h2c over to an HTTP/2 session; stop parsing
        after other upgrades (websocket, CONNECT tunnels), whose bytes are not HTTP."""
        session = self._session
        if not isinstance(session, Http1Session) or session.upgraded_to is None:
            return
        assert self._builder is not None
        if session.upgraded_to != "h2c":
            self._stats[f"upgrade_{session.upgraded_to}"] = self._stats.get(f"upgrade_{session.upgraded_to}", 0) + 1
            self._session = _Tunnel()
            return
        h2 = Http2Session(self._limits, upgraded=True)
        self._session = h2
        self._flow.app_proto = "http2"
        self._builder.alias_upgraded(1)
        leftover = session.leftover
        for direction in (TO_SERVER, TO_CLIENT):
            data = leftover.get(direction, b"")
            if data:
                self._handle(h2.receive_data(direction, data, ts), ts)

    # -- output ------------------------------------------------------------------------------

    def _handle(self, events: list, ts: float) -> None:
        if not events:
            return
        if self._builder is not None:
            self._emit_results(self._builder.feed(events), ts)
        else:
            self._emit_results(events, ts)

    def _emit_results(self, results: list, ts: float) -> None:
        sink = self._sink
        flow = self._flow
        for item in results:
            if isinstance(item, HttpExchange):
                record, anomalies = transaction_record(flow, item)
                record["tx_id"] = self._tx_id
                self._tx_id += 1
                at = item.ts or ts
                sink.emit(record, at)
                for layer, event, message in anomalies:
                    sink.emit(anomaly_record(flow, at, kind="applayer", layer=layer, event=event,
                                             message=message, stream_id=item.stream_id), at)
            elif isinstance(item, Transaction):
                record = base_record(flow, item.event_type, item.ts or ts)
                record[item.event_type] = item.data
                record["tx_id"] = self._tx_id
                self._tx_id += 1
                sink.emit(record, item.ts or ts)
            elif isinstance(item, SessionAnomaly):
                at = item.ts or ts
                sink.emit(anomaly_record(flow, at, kind="applayer", layer=item.layer, event=item.event,
                                         message=item.message, stream_id=item.stream_id), at)
