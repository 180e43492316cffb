"""Helpers for the raw-TCP protocol tests (NCCL, TCPStore): conversations out of captures,
sessions fed in different splits, records through the whole pipeline."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.analyze import Analyzer
from inspector.capture.decode import PacketDecoder
from inspector.capture.packet import IPPROTO_TCP
from inspector.capture.reader import open_capture
from inspector.http import SessionAnomaly
from inspector.limits import DEFAULT_LIMITS
from inspector.rawtcp import Transaction

Chunks = list[tuple[int, bytes]]  # (direction, bytes) in the order they were on the wire

SYN, ACK = 0x02, 0x10


def conversations(path: str | Path) -> list[Chunks]:
    """Each TCP connection of a capture (opened by a SYN), its payloads in capture order."""
    reader = open_capture(path)
    decoder = PacketDecoder(DEFAULT_LIMITS)
    found: dict[tuple, Chunks] = {}
    try:
        for frame in reader:
            packet = decoder.decode(frame)
            if packet is None or packet.proto != IPPROTO_TCP:
                continue
            forward = (packet.src, packet.sport, packet.dst, packet.dport)
            backward = (packet.dst, packet.dport, packet.src, packet.sport)
            if packet.flags & SYN and not packet.flags & ACK:
                found[forward] = []
            if packet.payload:
                if forward in found:
                    found[forward].append((0, bytes(packet.payload)))
                elif backward in found:
                    found[backward].append((1, bytes(packet.payload)))
    finally:
        reader.close()
    return list(found.values())


def first_bytes(path: str | Path, limit: int = 2048) -> list[tuple[bytes, bytes]]:
    """(first bytes the first sender sent, first bytes of the other side) of every TCP flow."""
    reader = open_capture(path)
    decoder = PacketDecoder(DEFAULT_LIMITS)
    flows: dict[frozenset, tuple[tuple, list[bytearray]]] = {}
    try:
        for frame in reader:
            packet = decoder.decode(frame)
            if packet is None or packet.proto != IPPROTO_TCP:
                continue
            ends = ((packet.src, packet.sport), (packet.dst, packet.dport))
            key = frozenset(ends)
            if key not in flows:
                flows[key] = (ends[0], [bytearray(), bytearray()])
            origin, data = flows[key]
            side = data[0] if ends[0] == origin else data[1]
            if len(side) < limit:
                side += bytes(packet.payload[:limit - len(side)])
    finally:
        reader.close()
    return [(bytes(c), bytes(s)) for _, (c, s) in flows.values()]


def split(chunks: Chunks, mode: str, seed: int = 0) -> list[tuple[int, bytes, float]]:
    """The chunks cut whole, byte by byte or at random points; ts = index of the chunk cut."""
    rng = random.Random(seed)
    out = []
    for index, (direction, data) in enumerate(chunks):
        ts = float(index)
        if mode == "whole":
            out.append((direction, data, ts))
        elif mode == "bytes":
            out.extend((direction, data[i:i + 1], ts) for i in range(len(data)))
        else:
            at = 0
            while at < len(data):
                step = rng.randint(1, 64)
                out.append((direction, data[at:at + step], ts))
                at += step
    return out


def run_session(make: Callable[[Any], Any], pieces: list[tuple[int, bytes, float]],
                eof: bool = True) -> list[tuple]:
    """Feed a session; return its events as comparable tuples."""
    session = make(DEFAULT_LIMITS)
    events: list = []
    for direction, data, ts in pieces:
        events += session.receive_data(direction, data, ts)
    if eof:
        last = pieces[-1][2] if pieces else 0.0
        events += session.receive_eof(0, last)
        events += session.receive_eof(1, last)
    return [normalize(e) for e in events]


def normalize(event: Any) -> tuple:
    if isinstance(event, Transaction):
        return ("tx", event.event_type, event.data, event.ts)
    if isinstance(event, SessionAnomaly):
        return ("anomaly", event.layer, event.event, event.direction)
    raise AssertionError(f"unexpected event {event!r}")


def analyze(paths: list[str | Path], engine: Any = None) -> tuple[list[dict[str, Any]], Analyzer]:
    records: list[dict[str, Any]] = []
    analyzer = Analyzer(records.append, engine=engine, flow_records=False)
    for path in paths:
        analyzer.analyze_file(path)
    return records, analyzer


def leaf_paths(obj: dict[str, Any], prefix: str) -> set[str]:
    out: set[str] = set()
    for key, value in obj.items():
        name = f"{prefix}.{key}"
        out |= leaf_paths(value, name) if isinstance(value, dict) else {name}
    return out
