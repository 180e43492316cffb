"""EVE record construction: the common fields every record carries, flow and anomaly records.

The EVE shape is Suricata's, so SOC pipelines ingest it unchanged (ARCHITECTURE.md, contract):
`timestamp` (capture time offline, ISO 8601 with microseconds and UTC offset), `event_type`,
`flow_id`, `community_id`, `src_ip`, `src_port`, `dest_ip`, `dest_port`, `proto`, `app_proto`.
Source is the flow's client, destination its server, whatever the direction of the packet.

Values that do not exist are left out rather than written as null, as Suricata does (its schema
types these fields as integers and strings): records about a packet rather than a flow (a
truncated IP header) have no flow fields, and flows nothing recognised on UDP no `app_proto`.
When a segmentation policy is loaded (inspector.policy), the flow carries its zones and every
record of it `src_zone` and `dest_zone`; without a policy these fields are absent.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Protocol

from inspector.fields import ALL_EVENTS, declare


class FlowInfo(Protocol):
    """What a record needs to know about its flow (offline `Flow`, or the live path's).

    Optionally a `zones` attribute: (source zone, destination zone or None while unknown), set
    when a policy is loaded; base_record reads it with getattr."""

    flow_id: int
    community_id: str
    src_text: str
    dest_text: str
    client_port: int
    server_port: int
    app_proto: str

    @property
    def proto_name(self) -> str: ...


_EPOCH_PREFIX_CACHE: dict[int, str] = {}


def format_ts(ts: float) -> str:
    """`2026-11-25T18:07:00.123456+0000` (Suricata's format) for an epoch timestamp."""
    try:
        sec = int(ts)
        usec = round((ts - sec) * 1_000_000)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        elif usec < 0:
            sec, usec = sec - 1, usec + 1_000_000
        prefix = _EPOCH_PREFIX_CACHE.get(sec)
        if prefix is None:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            if len(_EPOCH_PREFIX_CACHE) > 4096:
                _EPOCH_PREFIX_CACHE.clear()
            _EPOCH_PREFIX_CACHE[sec] = prefix
    except (OverflowError, OSError, ValueError):
        # A corrupt capture timestamp (out of the platform's range): keep the record, say so.
        return "1970-01-01T00:00:00.000000+0000"
    return f"{prefix}.{usec:06d}+0000"


def base_record(flow: FlowInfo | None, event_type: str, ts: float) -> dict[str, Any]:
    """A record with the common fields; flowless records have only timestamp and event_type."""
    if flow is None:
        return {"timestamp": format_ts(ts), "event_type": event_type}
    record = {
        "timestamp": format_ts(ts),
        "event_type": event_type,
        "flow_id": flow.flow_id,
        "community_id": flow.community_id,
        "src_ip": flow.src_text,
        "src_port": flow.client_port,
        "dest_ip": flow.dest_text,
        "dest_port": flow.server_port,
        "proto": flow.proto_name,
    }
    if flow.app_proto:
        record["app_proto"] = flow.app_proto
    zones = getattr(flow, "zones", None)
    if zones is not None:
        record["src_zone"] = zones[0]
        if zones[1] is not None:
            record["dest_zone"] = zones[1]
    return record


def exception_site(exc: BaseException) -> str:
    """`TypeError at triton_grpc.py:171`: what an internal failure's anomaly names (the type and
    where it was raised, never the bytes that caused it)."""
    site = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__} at {site.filename.rsplit('/', 1)[-1]}:{site.lineno}"


def anomaly_record(flow: FlowInfo | None, ts: float, *, kind: str, layer: str, event: str,
                   message: str, **extra: Any) -> dict[str, Any]:
    """An `anomaly` record. `kind` is Suricata's anomaly type: decode, stream or applayer."""
    record = base_record(flow, "anomaly", ts)
    anomaly = {"type": kind, "layer": layer, "event": event, "message": message}
    anomaly.update({k: v for k, v in extra.items() if v is not None})
    record["anomaly"] = anomaly
    return record


declare(ALL_EVENTS, [
    ("timestamp", "timestamp", "Capture time (offline) or wall-clock time (live), ISO 8601 UTC."),
    ("event_type", "string", "Record type: a protocol name, alert, flow or anomaly."),
    ("flow_id", "integer", "Flow identifier, unique within a run."),
    ("community_id", "string", "Community ID v1 of the flow (same value as Zeek and Suricata)."),
    ("src_ip", "ip", "Client address of the flow."),
    ("src_port", "integer", "Client port (ICMP: type)."),
    ("dest_ip", "ip", "Server address of the flow."),
    ("dest_port", "integer", "Server port (ICMP: code)."),
    ("proto", "string", "Transport protocol: TCP, UDP, ICMP, IPv6-ICMP."),
    ("app_proto", "string", "Session protocol detected by content: http, http2, failed, ..."),
    ("tx_id", "integer", "Transaction number within the flow (transaction records and their alerts)."),
])

declare("flow", [
    ("flow.pkts_toserver", "integer", "Packets from client to server."),
    ("flow.pkts_toclient", "integer", "Packets from server to client."),
    ("flow.bytes_toserver", "integer", "Bytes on the wire from client to server."),
    ("flow.bytes_toclient", "integer", "Bytes on the wire from server to client."),
    ("flow.start", "timestamp", "Time of the flow's first packet."),
    ("flow.end", "timestamp", "Time of the flow's last packet."),
    ("flow.age", "integer", "Seconds between first and last packet."),
    ("flow.state", "string", "new, established or closed."),
    ("flow.reason", "string", "Why the flow record was written: closed, timeout, evicted, shutdown."),
    ("flow.alerted", "boolean", "True when an alert fired on the flow."),
    ("flow.gap_bytes", "integer", "Stream bytes missing from the capture (both directions)."),
])

declare("anomaly", [
    ("anomaly.type", "string", "decode (packet), stream (TCP) or applayer (protocol parser)."),
    ("anomaly.layer", "string", "Layer that saw it: ip, tcp, http1, http2, grpc, ..."),
    ("anomaly.event", "string", "Anomaly name, snake_case (e.g. overlap_mismatch, hpack_error)."),
    ("anomaly.message", "string", "Human-readable detail."),
    ("anomaly.stream_id", "integer", "HTTP/2 stream or HTTP/1 request index, when known."),
    ("anomaly.packet", "integer", "Frame number of the packet in the capture (decode anomalies)."),
])
