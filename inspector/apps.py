"""HTTP-borne application protocols: one exchange in, one layered transaction record out.

Layers run in the order of `HTTP_LAYER_MODULES`, generic to specific; each may add its object
to the record, and the last one that does names the record's `event_type` (ARCHITECTURE.md:
"one record per transaction, not one per layer"). A layer is offered a record only while the
record's type so far is one its protocol rides on (`LAYER_PARENTS`): S3 claimed an exchange,
so TorchServe does not read `PUT /models/<key>` to a bucket named `models` as its own API; a
Triton `generate` call may still become an `llm` record. A gRPC call is `{"event_type": "grpc",
"http": {...}, "grpc": {...}}`; a Triton call over gRPC adds `"triton"` on top.

A layer module provides:

    LAYER = "triton"                                  # its event type and record key
    def build(ctx: LayerContext) -> dict | None: ...  # its object, or None: not this protocol

`ctx.exchange` is the normalized exchange (bodies capped, gRPC messages in
`exchange.observations["grpc.request"]` / `["grpc.response"]`), `ctx.record` the record built so
far (lower layers' objects included), and `ctx.anomaly(event, message)` reports malformed
input. A module that wants to see bodies as they stream also provides
`observer_for(message, limits) -> BodyObserver | None` (gRPC framing does).

Both paths use this: offline the stream router, live the mitmproxy addon.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from inspector.exchange import BodyObserver
from inspector.http import HttpExchange, HttpMessage
from inspector.limits import Limits
from inspector.protocols.http import http_object
from inspector.records import FlowInfo, base_record
from inspector.rules.layers import LAYER_PARENTS

#: HTTP-borne protocol modules, generic to specific.
HTTP_LAYER_MODULES = (
    "inspector.protocols.grpc",
    "inspector.protocols.triton",
    "inspector.protocols.s3",
    "inspector.protocols.feast",
    "inspector.protocols.ray",
    "inspector.protocols.torchserve",
    "inspector.protocols.mlflow",
    "inspector.protocols.ollama",
    "inspector.protocols.jupyter",
    "inspector.protocols.modelhub",
    "inspector.protocols.llm",
)


@dataclass(slots=True)
class LayerContext:
    """What a layer sees: the exchange, the record so far, and where to report anomalies."""

    exchange: HttpExchange
    record: dict[str, Any]
    anomalies: list[tuple[str, str, str]] = field(default_factory=list)  # (layer, event, message)
    layer: str = ""
    #: Per-exchange routing memo of :func:`inspector.protocols.webapi.route_request`: the routing
    #: path per (merge_slashes, decode_slash), and whether a layer already noted the path's routing.
    routed_paths: dict[tuple[bool, bool], str] | None = None
    routing_noted: bool = False

    def anomaly(self, event: str, message: str) -> None:
        self.anomalies.append((self.layer, event, message))


def _load(names: tuple[str, ...]) -> list[ModuleType]:
    return [importlib.import_module(name) for name in names]


_MODULES = _load(HTTP_LAYER_MODULES)
HTTP_LAYERS: list[tuple[str, Callable[[LayerContext], dict[str, Any] | None], frozenset[str]]] = [
    (module.LAYER, module.build, frozenset(LAYER_PARENTS.get(module.LAYER, ("http",)))) for module in _MODULES
]


def _observer_factory(module: ModuleType) -> Callable[[HttpMessage, Limits], tuple[str, BodyObserver] | None]:
    def factory(message: HttpMessage, limits: Limits) -> tuple[str, BodyObserver] | None:
        observer = module.observer_for(message, limits)
        return (module.LAYER, observer) if observer is not None else None

    return factory


OBSERVER_FACTORIES = tuple(_observer_factory(m) for m in _MODULES if hasattr(m, "observer_for"))


def transaction_record(flow: FlowInfo | None, exchange: HttpExchange,
                       layers: list | None = None) -> tuple[dict[str, Any], list]:
    """The layered EVE record of one exchange, and the anomalies its layers reported.

    `layers`: only these entries of HTTP_LAYERS (in their order) run; the live path uses it to
    build a cheaper record before a request goes upstream, with just what its block rules need.
    """
    record = base_record(flow, "http", exchange.ts)
    record["http"] = http_object(exchange)
    ctx = LayerContext(exchange, record)
    for name, build, rides_on in HTTP_LAYERS if layers is None else layers:
        if record["event_type"] not in rides_on:
            continue
        ctx.layer = name
        obj = build(ctx)
        if obj is not None:
            record[name] = obj
            record["event_type"] = name
    ctx.anomalies.extend(observer_anomalies(exchange))
    return record, ctx.anomalies


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
