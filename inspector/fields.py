"""The field catalogue: every name a rule may match on, declared by the code that fills it.

"The log is the rule language": a field name is the dotted JSON path of a value in an EVE
record (`grpc.method` is `{"grpc": {"method": ...}}`). Paths go through lists without an index:
`triton.inputs.shape` names the `shape` of every element of `triton.inputs`.

An `object` field declared without sub-fields is a **map**: its keys come from the traffic
(`triton.parameters`, a request's parameters). The EVE schema leaves its keys open, and a rule
names one entry as `<map>.<key>` (inspector.rules.matchers.resolve_field).

Each parser module declares its fields at import time with :func:`declare`; :func:`catalogue`
imports every parser module and returns the complete table, which `inspector fields` prints and
the rule loader validates against.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

FIELD_TYPES = frozenset(
    {"string", "integer", "number", "boolean", "ip", "timestamp", "object",
     "list[string]", "list[integer]", "list[object]"}
)

#: Event types every record carries the common fields for.
ALL_EVENTS = "*"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of the catalogue."""

    name: str
    type: str
    description: str
    events: tuple[str, ...]

    @property
    def is_list(self) -> bool:
        return self.type.startswith("list[")


_CATALOGUE: dict[str, FieldSpec] = {}

#: Modules whose import declares fields: the records module and every protocol parser.
FIELD_MODULES = (
    "inspector.records",
    "inspector.protocols.http",
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
    "inspector.protocols.nccl",
    "inspector.protocols.tcpstore",
    "inspector.protocols.tls",
    "inspector.live.principal",
    "inspector.policy.fields",
    "inspector.anomaly.fields",
    "inspector.egress.fields",
)


def declare(events: str | tuple[str, ...], fields: list[tuple[str, str, str]]) -> None:
    """Declare fields `(name, type, description)` carried by the given event types.

    Declaring the same name again (from another event type) merges the event lists; the type
    must agree.
    """
    event_tuple = (events,) if isinstance(events, str) else tuple(events)
    for name, type_, description in fields:
        if type_ not in FIELD_TYPES:
            raise ValueError(f"field {name}: unknown type {type_!r}")
        known = _CATALOGUE.get(name)
        if known is None:
            _CATALOGUE[name] = FieldSpec(name, type_, description, event_tuple)
            continue
        if known.type != type_:
            raise ValueError(f"field {name} declared as {known.type} and {type_}")
        merged = known.events + tuple(e for e in event_tuple if e not in known.events)
        _CATALOGUE[name] = FieldSpec(name, type_, known.description, merged)


def catalogue() -> dict[str, FieldSpec]:
    """The complete catalogue, sorted by name."""
    for module in FIELD_MODULES:
        importlib.import_module(module)
    return dict(sorted(_CATALOGUE.items()))


def lookup(name: str) -> FieldSpec | None:
    """The spec of a field name, or None when no parser declares it."""
    return catalogue().get(name)
