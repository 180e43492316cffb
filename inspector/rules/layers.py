"""Protocol layers: which event types a record of a given type also carries.

One transaction makes one record, typed by its most specific protocol and carrying the object
of every layer below it: a Triton call over gRPC is `{"event_type": "triton", "http": {...},
"grpc": {...}, "triton": {...}}`. Two consequences for rules, both decided here:

* Validation: a rule for `event: triton` may name `grpc.*` and `http.*` fields, because a
  Triton record can carry them. The fields a rule may use are those whose catalogue entry lists
  one of the rule's event types *or one of their parents* (or `*`).
* Dispatch: a record is evaluated against the rules of its `event_type` and of every layer
  object it carries (a top-level key naming an event type, holding an object), so `event: grpc`
  rules keep working when a more specific parser claims the traffic.

Protocol issues extend :data:`LAYER_PARENTS` when they add a protocol that rides on another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from inspector.fields import ALL_EVENTS, FieldSpec

#: event type -> the event types whose objects its records may carry below it.
LAYER_PARENTS: dict[str, tuple[str, ...]] = {
    "http": (),
    "grpc": ("http",),
    "triton": ("grpc", "http"),
    "s3": ("http",),
    "feast": ("grpc", "http"),
    "llm": ("http", "triton", "ollama"),  # Triton generate and Ollama chat are LLM calls too
    "ollama": ("http",),
    "ray": ("http",),
    "torchserve": ("grpc", "http"),
    "mlflow": ("http",),
    "jupyter": ("http",),
    "modelhub": ("http",),
    "egress": (),  # the egress object rides on any record of the forward proxy (docs/egress.md)
    "tls": (),
    "nccl": (),
    "tcpstore": (),
}

#: Records that describe something other than a transaction. They are matched only by rules
#: for their own type, even when they carry a protocol object for context (an anomaly on an
#: HTTP stream may hold an `http` object: `event: http` rules must not fire on it twice).
STANDALONE_EVENT_TYPES = frozenset({"anomaly", "flow", "alert", "stats"})


def layer_closure(events: Iterable[str]) -> frozenset[str]:
    """The event types whose fields a rule for `events` may name: the events and their parents."""
    closure: set[str] = set()
    for event in events:
        closure.add(event)
        closure.update(LAYER_PARENTS.get(event, ()))
    return frozenset(closure)


def known_event_types(catalogue: Mapping[str, FieldSpec]) -> frozenset[str]:
    """Every event type a rule may name: those the catalogue's fields list, and the layer table's."""
    known: set[str] = set(STANDALONE_EVENT_TYPES - {"alert", "stats"})
    for event, parents in LAYER_PARENTS.items():
        known.add(event)
        known.update(parents)
    for spec in catalogue.values():
        known.update(e for e in spec.events if e != ALL_EVENTS)
    return frozenset(known)


def field_allowed(spec: FieldSpec, closure: frozenset[str]) -> bool:
    """Whether a record of one of the closure's event types can carry the field."""
    return ALL_EVENTS in spec.events or not closure.isdisjoint(spec.events)


def record_layers(record: Mapping[str, object], names: Iterable[str]) -> tuple[str, ...]:
    """The layers among `names` (in their order) that `record` has."""
    event_type = record.get("event_type")
    if event_type.__class__ is not str:
        event_type = None
    elif event_type in STANDALONE_EVENT_TYPES:
        return tuple(n for n in names if n == event_type)
    return tuple(
        n for n in names if n == event_type or isinstance(record.get(n), dict)
    )
