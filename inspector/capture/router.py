"""Per-flow stream router: detect the protocol by content, run its session, emit records.

Detection looks at the first bytes of each direction, never at ports (gRPC runs on 50051,
8001, 443 ...): the HTTP/2 client preface, an HTTP/1 request line or status line, or a raw-TCP
protocol's detector from `RAW_DETECTORS`. The bytes seen while deciding are replayed into the
chosen session. When the content shows that the side taken for the client is the server (a
capture that starts mid-connection), the flow's sides are swapped before anything is parsed.

One direction lost before the protocol is told (a capture gap, or TLS records that could not
be decrypted) does not end detection: it goes on with the other direction's bytes, and the gap
is replayed into the session where it happened; only a flow with nothing readable left is given
up (`gap_before_detection`). A flow that carried no application data at all has no app_proto
(counted as `no_application_data`, not as a detection failure).

An HTTP/1 connection upgraded to h2c continues in an HTTP/2 session; the upgrading request's
exchange continues as HTTP/2 stream 1.

TLS (`detect_tls`: a handshake record carrying a ClientHello or ServerHello) runs a
:class:`~inspector.capture.tls.TlsSession`, which reports one `tls` record per handshake. When
the capture's key log has the session's secrets, the plaintext it decrypts goes to a nested
router over the same flow, which detects HTTP/1, HTTP/2 or a raw-TCP protocol in it like any
cleartext stream; the records it makes carry a `decrypted` object (protocol, version, cipher
suite, SNI, JA4, where the keys came from) and share the flow's transaction numbering. The
flow's `app_proto` stays `tls`. Last of all detectors, `detect_tls_records` recognises a TLS
stream picked up after its handshake from its record layer alone (records chained exactly).

Tunnels: after an HTTP CONNECT answered 2xx, and after a SOCKS 4/4a/5 handshake (`detect_socks`,
`app_proto: socks`), the tunnelled bytes go to a nested router that detects what they carry
(TLS, HTTP ...); its records carry a `tunnel` object (protocol, and the SOCKS target).
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
from inspector.capture.socks import SocksHandshake, detect_socks
from inspector.capture.tls import DecryptedData, DecryptedGap, TlsSession
from inspector.capture.tls_keylog import CaptureKeys
from inspector.exchange import ExchangeBuilder
from inspector.http import TO_CLIENT, TO_SERVER, HttpExchange, SessionAnomaly
from inspector.limits import Limits
from inspector.rawtcp import SWAPPED, Transaction
from inspector.records import anomaly_record, base_record, exception_site

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP1_REQUEST = re.compile(rb"[A-Z][A-Z0-9_-]{1,19} [^\s]{1,8192} HTTP/1\.[019]\r?\n")
_HTTP1_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                  b"CONNECT ", b"TRACE ", b"PROPFIND ", b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ",
                  b"UNLOCK ", b"PROPPATCH ", b"REPORT ", b"SEARCH ", b"PURGE ", b"LINK ", b"UNLINK ")
_HTTP1_STATUS = re.compile(rb"HTTP/1\.[019] \d{3}[ \r\n]")

#: Bytes per direction after which a flow that matched nothing is left alone.
DETECTION_BYTES = 2048

#: Largest TLS record (RFC 5246 §6.2.3) and hello message length a detector accepts.
_TLS_MAX_RECORD = 16 * 1024 + 2048
_TLS_MIN_HELLO, _TLS_MAX_HELLO = 38, 128 * 1024
_SSL2_VERSIONS = frozenset({(0, 2), (3, 0), (3, 1), (3, 2), (3, 3)})


class RecordSink(Protocol):
    def emit(self, record: dict[str, Any], ts: float) -> None: ...


class StreamSession(Protocol):
    """What the router drives: a sans-IO session over both directions of a stream. A session may
    also have `counters` (name -> count), added to the run's stats when the flow ends."""

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


def _tls_hello(data: bytes) -> int | bool | None:
    """1 (ClientHello) or 2 (ServerHello) when `data` opens with a TLS handshake record carrying
    a hello, False when it does not, None when too few bytes say."""
    n = len(data)
    if not n:
        return None
    if data[0] & 0x80:  # SSL 2.0 record format: only a CLIENT-HELLO asking for SSL 2.0 or 3.0+
        if n < 5:
            return None
        length = ((data[0] & 0x7F) << 8) | data[1]
        return 1 if 27 <= length <= 1024 and data[2] == 1 and (data[3], data[4]) in _SSL2_VERSIONS else False
    if data[0] != 0x16 or (n > 1 and data[1] != 3) or (n > 2 and data[2] > 4):
        return False
    if n < 6:
        return None
    length = (data[3] << 8) | data[4]
    hello = data[5]
    if length < 1 or length > _TLS_MAX_RECORD or hello not in (1, 2):
        return False
    fragment = data[5:5 + length]
    if len(fragment) >= 4 and not _TLS_MIN_HELLO <= int.from_bytes(fragment[1:4], "big") <= _TLS_MAX_HELLO:
        return False
    if len(fragment) >= 6 and (fragment[4] != 3 or fragment[5] > 4):
        return False  # the hello's own version
    if len(fragment) < min(6, length):
        return None
    return hello


def detect_tls(client: bytes, server: bytes) -> bool | str | None:
    """True when the client opens with a ClientHello (or, its hello missing from the capture, the
    server with a ServerHello); "swapped" when the sides are the other way round; None while
    too few bytes say; False otherwise. Conservative: a record header, a plausible length, a
    hello type, a plausible hello length and version, all in the first bytes."""
    forward = _tls_hello(client)
    if forward == 1:
        return True
    if forward == 2:
        return SWAPPED
    if forward is False:
        return False
    if client:
        return None
    backward = _tls_hello(server)
    if backward == 1:
        return SWAPPED
    if backward == 2:
        return True
    return backward


#: Record-layer recognition of a TLS stream whose handshake the capture missed: at least this many
#: consecutive record headers, chained exactly, in the two directions together, two in one of them.
_TLS_CHAIN_RECORDS = 3


def _tls_record_chain(data: bytes) -> tuple[int, int] | None:
    """(record headers seen, their version) walking `data` from its first byte as TLS records
    (content type 20-23, version 3.1-3.4, 1 to 2^14 + 2048 bytes), each header where the record
    before it ends; None when a header is not one or the versions differ."""
    pos, count, version = 0, 0, -1
    while len(data) - pos >= 5:
        if not 20 <= data[pos] <= 23 or data[pos + 1] != 3 or not 1 <= data[pos + 2] <= 4:
            return None
        length = (data[pos + 3] << 8) | data[pos + 4]
        if not 1 <= length <= _TLS_MAX_RECORD or version not in (-1, data[pos + 2]):
            return None
        version = data[pos + 2]
        count += 1
        pos += 5 + length
    if 0 < len(data) - pos < 5 and not 20 <= data[pos] <= 23:
        return None
    return count, version


def detect_tls_records(client: bytes, server: bytes) -> bool | None:
    """True when both directions so far are nothing but well-formed TLS records of one version,
    chained exactly, at least `_TLS_CHAIN_RECORDS` headers of them (two in one direction): a TLS
    connection picked up after its handshake. None while too few records say; False otherwise.
    Tried after every other detector, so it never takes a stream another recognises."""
    chains = [_tls_record_chain(client), _tls_record_chain(server)]
    if None in chains:
        return False
    (ours, version), (theirs, other) = chains  # type: ignore[misc]
    if ours and theirs and version != other:
        return False
    if ours + theirs >= _TLS_CHAIN_RECORDS and max(ours, theirs) >= 2:
        return True
    return None


class _SocksSession:
    """A SOCKS connection: both handshakes, then the tunnel's bytes to a nested router."""

    def __init__(self, outer: StreamRouter) -> None:
        self._outer = outer
        self._sides = (SocksHandshake(client=True), SocksHandshake(client=False))
        self._reported = False
        self.tunnel: StreamRouter | None = None

    def receive_data(self, direction: int, data: bytes, ts: float) -> list:
        side = self._sides[direction]
        rest = side.feed(data)
        if side.failed and not self._reported:
            self._reported = True
            return [SessionAnomaly(layer="socks", event="malformed_handshake", message=side.failed, ts=ts,
                                   direction=direction)]
        if not rest or any(s.refused for s in self._sides):
            return []
        if self.tunnel is None:
            client = self._sides[TO_SERVER]
            self.tunnel = self._outer.tunnel({"protocol": f"socks{client.version}", "target": client.target})
        self.tunnel.on_data(direction, rest, ts)
        return []

    def receive_gap(self, direction: int, length: int, ts: float) -> list:
        if self.tunnel is not None:
            self.tunnel.on_gap(direction, length, ts)
        return []

    def receive_eof(self, direction: int, ts: float) -> list:
        return []  # the router ends its tunnel router itself


class _NestedSink:
    """Where a nested router's records go: numbered in the flow's transaction sequence, and
    stamped with what carried them (`decrypted` for TLS plaintext, `tunnel` for a tunnel)."""

    def __init__(self, outer: StreamRouter, key: str, describe: Callable[[], dict[str, Any]]) -> None:
        self._outer = outer
        self._key = key
        self._describe = describe

    def emit(self, record: dict[str, Any], ts: float) -> None:
        if "tx_id" in record:
            record["tx_id"] = self._outer.next_tx_id()
        record[self._key] = self._describe()
        self._outer.sink.emit(record, ts)


class _Forward:
    """The session of a flow whose bytes a tunnel's nested router parses."""

    def __init__(self, router: StreamRouter) -> None:
        self._router = router

    def receive_data(self, direction: int, data: bytes, ts: float) -> list:
        self._router.on_data(direction, data, ts)
        return []

    def receive_gap(self, direction: int, length: int, ts: float) -> list:
        self._router.on_gap(direction, length, ts)
        return []

    def receive_eof(self, direction: int, ts: float) -> list:
        return []  # the router ends its tunnel router itself


class _Tunnel:
    """What follows an upgrade we do not parse (websocket ...): bytes counted, not parsed."""

    def receive_data(self, direction: int, data: bytes, ts: float) -> list:
        return []

    def receive_gap(self, direction: int, length: int, ts: float) -> list:
        return []

    def receive_eof(self, direction: int, ts: float) -> list:
        return []


class StreamRouter:
    """The flow handler the flow table drives for one TCP (or UDP) flow."""

    def __init__(self, flow: Flow, sink: RecordSink, limits: Limits, stats: dict[str, int],
                 tls_keys: CaptureKeys | None = None, *, nested: str = "", contain_errors: bool = False) -> None:
        """`tls_keys`: where TLS sessions look their secrets up. `nested`: "tls" when this router
        parses the plaintext of a TLS connection, "tunnel" when the bytes a tunnel carries (the
        flow's sides and app_proto are then settled already). `contain_errors` (the offline
        analysis): an exception out of a parser ends this flow's inspection with an anomaly
        naming it (see :meth:`_parser_failed`) instead of ending the run; without it (the fuzz
        harness, nested routers, whose containing router catches) the exception propagates."""
        self._contain = contain_errors
        self._flow = flow
        self._sink = sink
        self._limits = limits
        self._stats = stats
        self._tls_keys = tls_keys
        self._nested = nested
        self._stat_prefix = {"tls": "tls_inner_", "tunnel": "tunnel_"}.get(nested, "")
        self._tls: TlsSession | None = None
        self._inner: StreamRouter | None = None  # TLS plaintext's router, or a tunnel's
        self._connect_target = ""  # the last CONNECT request's authority
        # Input held while detecting, replayed into the session: bytes, or (int) bytes missing.
        self._pending: list[tuple[int, bytes | int, float]] = []
        self._pending_bytes = [b"", b""]
        self._lost = [False, False]  # each direction: bytes missing before its protocol was told
        self._session: StreamSession | None = None
        self._builder: ExchangeBuilder | None = None
        self._gave_up = False
        self._eof = [False, False]
        self._tx_id = 0
        self.gap_bytes = 0

    # -- flow handler interface --------------------------------------------------------------

    def on_data(self, direction: int, data: bytes, ts: float) -> None:
        try:
            session = self._session
            if session is not None:
                self._handle(session.receive_data(direction, data, ts), ts)
                self._after_session_input(ts)
                return
            if self._gave_up:
                return
            if self._lost[direction]:  # after a gap: not a stream start, detection goes on with the other side
                self._hold_gap(direction, len(data), ts)
                return
            self._pending.append((direction, data, ts))
            if len(self._pending_bytes[direction]) < DETECTION_BYTES:
                self._pending_bytes[direction] += data[:DETECTION_BYTES]
            self._detect(ts, final=False)
        except Exception as exc:
            self._parser_failed(exc, ts)

    def on_gap(self, direction: int, length: int, ts: float) -> None:
        self.gap_bytes += length
        try:
            if self._session is not None:
                self._handle(self._session.receive_gap(direction, length, ts), ts)
                return
            if not self._gave_up and length > 0:
                # One direction lost before detection (a capture gap, or TLS records that could not
                # be decrypted): detection goes on with the other; the session is told of the gap.
                self._hold_gap(direction, length, ts)
                if all(self._lost):
                    self._give_up("gap_before_detection")
        except Exception as exc:
            self._parser_failed(exc, ts)

    def _hold_gap(self, direction: int, length: int, ts: float) -> None:
        self._lost[direction] = True
        pending = self._pending
        if pending and pending[-1][0] == direction and isinstance(pending[-1][1], int):
            pending[-1] = (direction, pending[-1][1] + length, pending[-1][2])
        else:
            pending.append((direction, length, ts))

    def on_eof(self, direction: int, ts: float) -> None:
        self._eof[direction] = True
        try:
            if self._session is None and not self._gave_up and self._pending:
                self._detect(ts, final=True)
            if self._session is not None:
                self._handle(self._session.receive_eof(direction, ts), ts)
            if self._inner is not None:
                self._inner.on_eof(direction, ts)
        except Exception as exc:
            self._parser_failed(exc, ts)

    def on_stream_anomaly(self, direction: int, event: str, message: str, ts: float) -> None:
        self._stats["stream_anomalies"] = self._stats.get("stream_anomalies", 0) + 1
        self._sink.emit(anomaly_record(self._flow, ts, kind="stream", layer="tcp", event=event,
                                       message=message), ts)

    def on_datagram(self, direction: int, payload: bytes, ts: float) -> None:
        """UDP payloads: no datagram parsers yet; the flow record counts them."""

    def finish(self, ts: float) -> None:
        try:
            self._finish(ts)
        except Exception as exc:
            self._parser_failed(exc, ts)

    def _parser_failed(self, exc: Exception, ts: float) -> None:
        """An exception out of a parser (a bug: parsers must not raise on any input). The flow's
        inspection ends here, its records so far kept, and an anomaly names the exception and
        where it was raised; the run goes on with the other flows. Counted as `parser_errors`.
        Without containment (called from the `except` block) the exception goes on as raised."""
        if not self._contain:
            raise  # the exception the caller is handling
        where = exception_site(exc)
        self._stats["parser_errors"] = self._stats.get("parser_errors", 0) + 1
        self._session = self._builder = self._inner = self._tls = None
        self._pending = []
        self._gave_up = True
        self._sink.emit(anomaly_record(self._flow, ts, kind="applayer", layer="inspector", event="parser_error",
                                       message=f"inspection of this flow stopped: {where}"), ts)

    def _finish(self, ts: float) -> None:
        if self._session is None and not self._gave_up and self._pending:
            self._detect(ts, final=True)
        if self._session is None and not self._gave_up and not self._nested:
            # No application byte at all (a refused or empty connection): nothing to detect, which
            # is not a detection failure; like Suricata's, the flow record has no app_proto.
            self._flow.app_proto = ""
            self._stats["no_application_data"] = self._stats.get("no_application_data", 0) + 1
        session = self._session
        if session is not None:
            for direction in (TO_SERVER, TO_CLIENT):
                if not self._eof[direction]:
                    self._eof[direction] = True
                    self._handle(session.receive_eof(direction, ts), ts)
                    if self._inner is not None:
                        self._inner.on_eof(direction, ts)
        if self._inner is not None:
            self._inner.finish(ts)
        if session is not None:
            # A session's own counts (`counters`, optional): the TLS session's under their own names
            # wherever it runs, the others under this router's stat prefix.
            prefix = "" if session is self._tls else self._stat_prefix
            for name, count in getattr(session, "counters", {}).items():
                self._stats[prefix + name] = self._stats.get(prefix + name, 0) + count
        if self._builder is not None:
            self._emit_results(self._builder.finish(ts), ts)

    @property
    def sink(self) -> RecordSink:
        return self._sink

    def next_tx_id(self) -> int:
        """The flow's next transaction number (records of a nested router take theirs here)."""
        self._tx_id += 1
        return self._tx_id - 1

    def tunnel(self, description: dict[str, Any]) -> StreamRouter:
        """A nested router for the bytes a tunnel carries (SOCKS, HTTP CONNECT)."""
        stamp = {key: value for key, value in description.items() if value}
        self._inner = StreamRouter(self._flow, _NestedSink(self, "tunnel", lambda: dict(stamp)), self._limits,
                                   self._stats, self._tls_keys, nested="tunnel")
        self._stats["tunnels"] = self._stats.get("tunnels", 0) + 1
        return self._inner

    # -- detection ---------------------------------------------------------------------------

    def _detect(self, ts: float, final: bool) -> None:
        client, server = self._pending_bytes
        found = detect_http(client, server)
        if not isinstance(found, Detection) and not self._flow.syn and not self._nested:
            found = self._skip_keepalive_byte() or found
            client, server = self._pending_bytes
        undecided = found is None
        if not isinstance(found, Detection) and self._nested != "tls":
            tls = detect_tls(client, server)
            if tls is True or tls == SWAPPED:
                found = Detection("tls", self._tls_session, swap=tls == SWAPPED)
            undecided = undecided or tls is None
        if not isinstance(found, Detection) and not self._nested:
            socks = detect_socks(client, server)
            if socks:
                found = Detection("socks", lambda limits: _SocksSession(self))
            undecided = undecided or socks is None
        if not isinstance(found, Detection):
            found = None
            for detector in RAW_DETECTORS:
                answer = detector(client, server)
                if isinstance(answer, Detection):
                    found = answer
                    break
                undecided = undecided or answer is None
        if found is None and self._nested != "tls":
            records = detect_tls_records(client, server)
            if records:
                found = Detection("tls", lambda limits: self._tls_session(limits, handshake_seen=False))
            undecided = undecided or records is None
        if found is None:
            if final or len(client) >= DETECTION_BYTES or len(server) >= DETECTION_BYTES or not undecided:
                self._give_up("gap_before_detection" if any(self._lost) else "unknown_protocol")
            return
        self._start(found, ts)

    def _skip_keepalive_byte(self) -> Detection | None:
        """A flow picked up without its handshake may show a keep-alive probe first: one old
        byte (often 0x00) re-sent below the stream position. When dropping that single byte
        makes the direction recognizable, it was the probe."""
        for direction in (TO_SERVER, TO_CLIENT):
            first = next((item for item in self._pending if item[0] == direction), None)
            if first is None or isinstance(first[1], int) or len(first[1]) != 1:
                continue
            trial = list(self._pending_bytes)
            trial[direction] = trial[direction][1:]
            found = detect_http(trial[0], trial[1])
            if not isinstance(found, Detection):
                tls = detect_tls(trial[0], trial[1])
                if tls is True or tls == SWAPPED:
                    found = Detection("tls", self._tls_session, swap=tls == SWAPPED)
            if isinstance(found, Detection):
                self._pending.remove(first)
                self._pending_bytes = trial
                self._stats["keepalive_bytes_skipped"] = self._stats.get("keepalive_bytes_skipped", 0) + 1
                return found
        return None

    def _tls_session(self, limits: Limits, handshake_seen: bool = True) -> TlsSession:
        session = self._tls = TlsSession(limits, self._tls_keys, handshake_seen=handshake_seen)
        self._inner = StreamRouter(self._flow, _NestedSink(self, "decrypted", session.decryption_info), limits,
                                   self._stats, nested="tls")
        return session

    def _start(self, detection: Detection, ts: float) -> None:
        flow = self._flow
        pending = self._pending
        self._pending = []
        self._pending_bytes = [b"", b""]
        if detection.swap:
            if self._nested:  # the TLS handshake settled the sides: plaintext cannot swap them
                self._give_up("unknown_protocol")
                return
            flow.swap()
            self._eof.reverse()
            pending = [(1 - d, data, t) for d, data, t in pending]
            self._lost.reverse()
        if not self._nested:
            flow.app_proto = detection.app_proto
        stat = f"{self._stat_prefix}app_{detection.app_proto}"
        self._stats[stat] = self._stats.get(stat, 0) + 1
        self._session = detection.make(self._limits)
        if not (flow.syn or flow.synack):  # no handshake in the capture: the stream's start is unknown
            midstream = getattr(self._session, "picked_up_midstream", None)
            if midstream is not None:
                midstream()
        if detection.app_proto in ("http", "http2"):
            self._builder = ExchangeBuilder(self._limits, OBSERVER_FACTORIES)
        for direction, data, t in pending:
            if isinstance(data, int):
                self._handle(self._session.receive_gap(direction, data, t), t)
            else:
                self._handle(self._session.receive_data(direction, data, t), t)
            self._after_session_input(t)

    def _give_up(self, reason: str) -> None:
        self._gave_up = True
        self._pending = []
        self._pending_bytes = [b"", b""]
        reason = self._stat_prefix + reason
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
            if session.upgraded_to != "tunnel":
                self._session = _Tunnel()
                return
            tunnel = self.tunnel({"protocol": "http_connect", "target": self._connect_target})  # CONNECT 2xx
            self._session = _Forward(tunnel)
            for direction, data in session.leftover.items():
                if data:
                    tunnel.on_data(direction, data, ts)
            return
        h2 = Http2Session(self._limits, upgraded=True)
        self._session = h2
        if not self._nested:
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
        inner = self._inner
        if inner is not None:  # TLS: plaintext to the nested router, the rest to the sink, in order
            for item in events:
                if isinstance(item, DecryptedData):
                    inner.on_data(item.direction, item.data, item.ts)
                elif isinstance(item, DecryptedGap):
                    inner.on_gap(item.direction, item.length, item.ts)
                else:
                    self._emit_results([item], ts)
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
                if item.request is not None and item.request.method == "CONNECT":
                    self._connect_target = item.request.authority or item.request.path
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
