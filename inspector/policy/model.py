"""The segmentation policy as data: zones, flow rules, and the decision for one flow.

A policy names zones (address ranges with a plane: control, data or management) and lists flow
rules in order. The first rule that matches a flow decides (`allow` or `deny`); a flow no rule
matches gets the policy's stated default. A rule matches a flow when its source zones contain the
flow's source zone, its destination zones the destination zone, one of its protocols is among
the flow's protocol layers (any protocol when it names none) and one of its port ranges holds the
destination port (any port when it names none).

Protocols are the EVE names: a record's `event_type` and the layer objects it carries, plus its
`app_proto`. A Triton call over gRPC has the layers `{triton, grpc, http, http2}`, so a rule for
`grpc` allows it, as an `event: grpc` rule matches it; `failed` is the protocol of a flow no
parser recognised.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PLANES = ("control", "data", "management")
ACTIONS = ("allow", "deny")
ALLOW, DENY = ACTIONS
#: The zone wildcard in rules.
ANY = "any"
#: The protocol of a flow no parser recognised (the EVE `app_proto` of such flows).
UNRECOGNISED = "failed"
#: Records that are not transactions: never the protocol of a flow.
NOT_PROTOCOLS = frozenset({"alert", "anomaly", "flow", "policy", "stats"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class Zone:
    """A named set of address ranges on one plane."""

    name: str
    plane: str | None
    cidrs: tuple[Network, ...] = ()
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowRule:
    """One entry of the rule list. `sources`/`destinations` None means any zone; empty
    `protocols` any protocol; empty `ports` any port."""

    name: str
    action: str
    sources: frozenset[str] | None
    destinations: frozenset[str] | None
    protocols: frozenset[str] = frozenset()
    ports: tuple[tuple[int, int], ...] = ()
    description: str = ""
    line: int = 0

    def matches(self, from_zone: str, to_zone: str, layers: frozenset[str], port: int | None) -> bool:
        if self.sources is not None and from_zone not in self.sources:
            return False
        if self.destinations is not None and to_zone not in self.destinations:
            return False
        if self.protocols and self.protocols.isdisjoint(layers):
            return False
        if self.ports:
            return port is not None and any(low <= port <= high for low, high in self.ports)
        return True

    def describe(self) -> str:
        """`from -> to, protocols, ports` in words, for messages."""
        def zones(names: frozenset[str] | None) -> str:
            return ANY if names is None else ",".join(sorted(names))

        parts = [f"{zones(self.sources)} -> {zones(self.destinations)}"]
        if self.protocols:
            parts.append("/".join(sorted(self.protocols)))
        if self.ports:
            parts.append("ports " + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ports))
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one flow: allowed or not, and the rule that decided (None: the
    default)."""

    allowed: bool
    rule: FlowRule | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A loaded, validated policy (see inspector.policy.loader)."""

    name: str
    default: str
    unknown_zone: str
    zones: tuple[Zone, ...]
    rules: tuple[FlowRule, ...]
    #: Every protocol name rules may use (the EVE event types and app_proto values known).
    protocols: frozenset[str]
    description: str = ""
    source: str = ""

    def zone(self, name: str) -> Zone | None:
        for zone in self.zones:
            if zone.name == name:
                return zone
        return None

    @property
    def zone_names(self) -> tuple[str, ...]:
        """Every zone a flow can be in: the defined ones, and the unknown-address zone."""
        names = tuple(zone.name for zone in self.zones)
        return names if self.unknown_zone in names else (*names, self.unknown_zone)

    def plane(self, zone_name: str) -> str | None:
        zone = self.zone(zone_name)
        return zone.plane if zone is not None else None

    def decide(self, from_zone: str, to_zone: str, layers: frozenset[str], port: int | None) -> Decision:
        """First matching rule wins; the default otherwise."""
        for rule in self.rules:
            if rule.matches(from_zone, to_zone, layers, port):
                return Decision(rule.action == ALLOW, rule)
        return Decision(self.default == ALLOW, None)


def record_layers(record: Mapping[str, object], protocols: Iterable[str] | frozenset[str]) -> frozenset[str]:
    """The protocol layers of a transaction record: its event type, the protocol objects it
    carries, its app_proto (`protocols`: the names that count as protocols)."""
    known = protocols if isinstance(protocols, frozenset) else frozenset(protocols)
    layers = {key for key, value in record.items() if value.__class__ is dict and key in known}
    event_type = record.get("event_type")
    if isinstance(event_type, str):
        layers.add(event_type)
    app_proto = record.get("app_proto")
    if isinstance(app_proto, str) and app_proto:
        layers.add(app_proto)
    return frozenset(layers)
