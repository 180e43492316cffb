"""HTTP-borne application protocols: one exchange in, one layered transaction record out.

Layers run from generic to specific; each may add its object to the record, and the last one
that does names the record's `event_type` (ARCHITECTURE.md: "one record per transaction, not
one per layer"). A gRPC call is `{"event_type": "grpc", "http": {...}, "grpc": {...}}`; a Triton
call over gRPC will add `"triton"` on top. Body observers (gRPC framing) are registered here too,
so the exchange builder feeds them whichever path produced the exchange.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inspector.exchange import BodyObserver
from inspector.http import HttpExchange, HttpMessage
from inspector.limits import Limits
from inspector.protocols import grpc
from inspector.protocols.http import http_object
from inspector.records import FlowInfo, base_record

#: (layer name, builder). A builder returns the layer's object or None when it does not apply.
LayerBuilder = Callable[[HttpExchange, dict[str, Any]], "dict[str, Any] | None"]


def _grpc_layer(exchange: HttpExchange, record: dict[str, Any]) -> dict[str, Any] | None:
    return grpc.grpc_record(exchange)


HTTP_LAYERS: list[tuple[str, LayerBuilder]] = [
    ("grpc", _grpc_layer),
]


def _grpc_observer(message: HttpMessage, limits: Limits) -> tuple[str, BodyObserver] | None:
    framer = grpc.grpc_observer_for(message, limits)
    return ("grpc", framer) if framer is not None else None


OBSERVER_FACTORIES = (_grpc_observer,)


def transaction_record(flow: FlowInfo | None, exchange: HttpExchange) -> dict[str, Any]:
    """The layered EVE record of one exchange."""
    record = base_record(flow, "http", exchange.ts)
    record["http"] = http_object(exchange)
    for name, build in HTTP_LAYERS:
        obj = build(exchange, record)
        if obj is not None:
            record[name] = obj
            record["event_type"] = name
    return record


def observer_anomalies(exchange: HttpExchange) -> list[tuple[str, str, str]]:
    """(layer, event, message) of every anomaly the body observers saw."""
    found = []
    for key, observer in exchange.observations.items():
        layer = key.split(".", 1)[0]
        for anomaly in getattr(observer, "anomalies", ()):
            event = getattr(anomaly, "event", None) or str(anomaly)
            message = getattr(anomaly, "message", "") or ""
            found.append((layer, event, message))
    return found
