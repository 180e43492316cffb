"""What the fuzz targets share: the input encodings and the drivers that feed parsers.

A *conversation* input is a list of `(direction, bytes)` chunks in wire order, encoded as
`[direction byte][2-byte big-endian length][bytes]` repeated. Decoding is lenient (a length that
runs past the end takes what is left), so every byte string is a conversation and mutations of
the framing re-split the stream: the parsers see the same bytes in other chunk boundaries.

Records the drivers produce are serialized as the EVE writer does (a value JSON cannot hold is
a bug too) and, when the target asks for it, run through the shipped signature pack.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from inspector.apps import OBSERVER_FACTORIES, transaction_record
from inspector.capture.flows import Flow
from inspector.capture.packet import IPPROTO_TCP, SYN, Packet
from inspector.capture.router import StreamRouter
from inspector.exchange import ExchangeBuilder
from inspector.http import TO_CLIENT, TO_SERVER, HttpExchange, SessionAnomaly
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.rawtcp import Transaction
from inspector.records import anomaly_record, base_record
from inspector.sinks.eve import encode_record

Chunks = list[tuple[int, bytes]]

#: Only JSON's own types in a record (the standard library refuses bytes, sets, dataclasses, which
#: msgspec, the writer's encoder, would write in a form of its own).
_plain_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def serialize_like_eve(record: dict[str, Any]) -> None:
    """Raise where the EVE writer could not write `record`, or where it holds more than JSON's types."""
    _plain_json(record)
    encode_record(record).encode("utf-8")  # what the EVE writer writes: strict UTF-8 JSON

CLIENT_IP = bytes([10, 0, 0, 1])
SERVER_IP = bytes([10, 0, 0, 2])


def encode_chunks(chunks: Iterable[tuple[int, bytes]]) -> bytes:
    """A conversation as one fuzz input (chunks over 65535 bytes are split)."""
    out = bytearray()
    for direction, data in chunks:
        for start in range(0, max(len(data), 1), 0xFFFF):
            piece = data[start:start + 0xFFFF]
            out += struct.pack("!BH", direction & 1, len(piece)) + piece
    return bytes(out)


def decode_chunks(data: bytes) -> Chunks:
    """The chunks of a conversation input; never fails (see the module docstring)."""
    chunks: Chunks = []
    pos = 0
    end = len(data)
    while pos < end:
        direction = data[pos] & 1
        length = int.from_bytes(data[pos + 1:pos + 3], "big")
        piece = data[pos + 3:pos + 3 + length]
        pos += 3 + length
        if piece:
            chunks.append((direction, piece))
    return chunks


def make_flow(sport: int = 40000, dport: int = 8000, ts: float = 1_700_000_000.0) -> Flow:
    """A TCP flow object as the flow table makes it, seen from its SYN."""
    syn = Packet(ts, 1, 4, CLIENT_IP, SERVER_IP, IPPROTO_TCP, sport, dport, SYN, 0, 0, b"", 60)
    flow = Flow(syn, client_is_sender=True)
    flow.syn = True
    return flow


class RecordCheck:
    """A record sink that serializes every record like the EVE writer and, optionally, runs the
    rule engine over it. Counts records by event type (how deep the fuzzing reached)."""

    def __init__(self, engine: Any = None, keep: bool = False) -> None:
        self.engine = engine
        self.event_types: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []
        self._keep = keep

    def emit(self, record: dict[str, Any], ts: float) -> None:
        serialize_like_eve(record)
        self.event_types[record["event_type"]] += 1
        if self._keep:
            self.records.append(record)
        if self.engine is not None and record["event_type"] not in ("anomaly", "flow"):
            for alert in self.engine.process(record, ts).alerts:
                serialize_like_eve(alert)
                self.event_types["alert"] += 1


@lru_cache(maxsize=1)
def shipped_engine() -> Any:
    """The engine with the shipped signature pack (loaded once per process)."""
    from inspector.engine import Engine
    from inspector.rules import load_config, load_rules
    from inspector.rules.cli import default_rules_path

    config = load_config(None)
    return Engine(load_rules([str(default_rules_path())], config), config)


def run_router(data: bytes, sink: RecordCheck, limits: Limits = DEFAULT_LIMITS, dport: int = 8000) -> None:
    """A conversation through the stream router: detection, sessions, every layer, records."""
    flow = make_flow(dport=dport)
    router = StreamRouter(flow, sink, limits, {})
    ts = flow.start_ts
    for direction, piece in decode_chunks(data):
        ts += 0.001
        router.on_data(direction, piece, ts)
    for direction in (TO_SERVER, TO_CLIENT):
        router.on_eof(direction, ts)
    router.finish(ts)


def run_session(make_session: Callable[[Limits], Any], data: bytes, sink: RecordCheck,
                limits: Limits = DEFAULT_LIMITS, http: bool = False) -> None:
    """A conversation input through one session; see :func:`drive_session`."""
    drive_session(make_session, decode_chunks(data), sink, limits, http)


def drive_session(make_session: Callable[[Limits], Any], chunks: Iterable[tuple[int, bytes]], sink: RecordCheck,
                  limits: Limits = DEFAULT_LIMITS, http: bool = False) -> None:
    """Chunks (any iterable: a generator streams) through one session, no detection; HTTP
    sessions through the exchange builder and the HTTP layers, raw-TCP sessions' transactions
    as records."""
    flow = make_flow()
    session = make_session(limits)
    builder = ExchangeBuilder(limits, OBSERVER_FACTORIES) if http else None
    ts = flow.start_ts

    def handle(events: list) -> None:
        for item in builder.feed(events) if builder is not None else events:
            _emit(flow, item, sink, ts)

    for direction, piece in chunks:
        ts += 0.001
        handle(session.receive_data(direction, piece, ts))
    for direction in (TO_SERVER, TO_CLIENT):
        handle(session.receive_eof(direction, ts))
    if builder is not None:
        for item in builder.finish(ts):
            _emit(flow, item, sink, ts)


def _emit(flow: Flow, item: Any, sink: RecordCheck, ts: float) -> None:
    if isinstance(item, HttpExchange):
        record, anomalies = transaction_record(flow, item)
        sink.emit(record, ts)
        for layer, event, message in anomalies:
            sink.emit(anomaly_record(flow, ts, kind="applayer", layer=layer, event=event, message=message), ts)
    elif isinstance(item, Transaction):
        record = base_record(flow, item.event_type, item.ts or ts)
        record[item.event_type] = item.data
        sink.emit(record, ts)
    elif isinstance(item, SessionAnomaly):
        sink.emit(anomaly_record(flow, ts, kind="applayer", layer=item.layer, event=item.event,
                                 message=item.message), ts)
