"""Checking traffic against a policy: zones for records, `policy` records for flows not allowed.

Both paths drive one :class:`PolicyMonitor`:

* zones: `zones(src_ip, dest_ip)` once per flow (offline when the flow table creates it, live
  when a client connection is seen); the flow keeps them and every record of the flow carries
  `src_zone` / `dest_zone` (inspector.records.base_record).
* verdicts: `check_record(record)` on each transaction record. A flow is checked once per
  protocol, at its first transaction of that protocol: the verdict needs the application
  protocol, and this is the earliest moment it is known (a connection may carry several, such
  as gRPC health checks and Triton inferences on one HTTP/2 connection: each is checked once).
  `check_flow_end(flow)` checks the flows that ended without any transaction (nothing
  recognised, or no complete exchange) as protocol `failed` (or the flow's app_proto).
* a check the policy does not allow gives a `policy` record; the engine sees it like any other
  record, so an ordinary rule (signatures/policy/) turns it into an alert that can be tuned,
  suppressed or made a block.

Per-flow state is bounded (`max_flows`, least recently checked evicted); the report counters
(`cells`, `violations`) are bounded by the policy's zones and protocols, and `max_violations`
distinct violating flows.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from inspector.policy.model import UNRECOGNISED, Decision, Policy, record_layers
from inspector.policy.zones import ZoneMap
from inspector.records import FlowInfo, base_record

DENIED = "denied"
_PORT_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
ALLOWED = "allowed"
#: Record fields copied from the triggering record into its policy record, in this order.
_COMMON = ("flow_id", "community_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto",
           "src_zone", "dest_zone")


class Check(NamedTuple):
    """One flow (or flow and protocol) checked: its zones, protocol, verdict, and the policy
    record when it is not allowed."""

    from_zone: str
    to_zone: str
    app_proto: str
    allowed: bool
    record: dict[str, Any] | None


class ViolationKey(NamedTuple):
    src_ip: str
    dest_ip: str
    dest_port: int | None
    from_zone: str
    to_zone: str
    app_proto: str
    rule: str  # rule name, or "" for the default


@dataclass
class Cell:
    """Flows seen from one zone to another with one protocol."""

    allowed: int = 0
    denied: int = 0
    rules: Counter = field(default_factory=Counter)  # deciding rule name ("" = default) -> flows


class PolicyMonitor:
    """Zones, verdicts and counts for one run (offline) or one sidecar (live)."""

    def __init__(self, policy: Policy, *, max_flows: int = 65536, max_violations: int = 10000) -> None:
        self.policy = policy
        self.zone_map = ZoneMap(policy.zones, policy.unknown_zone)
        self._protocols = policy.protocols
        self._checked: OrderedDict[int, set[str]] = OrderedDict()
        self._max_flows = max_flows
        self._max_violations = max_violations
        self.cells: dict[tuple[str, str, str], Cell] = {}
        self.violations: Counter[ViolationKey] = Counter()
        #: Violating flows not itemised because `max_violations` distinct ones were kept.
        self.violations_untracked = 0
        #: Flows whose per-flow state was evicted before they ended.
        self.flows_evicted = 0

    # -- zones -----------------------------------------------------------------------------------

    def zones(self, src_ip: str | None, dest_ip: str | None) -> tuple[str, str | None]:
        """(source zone, destination zone); the destination is None while its address is not
        known (a live upstream not yet connected)."""
        lookup = self.zone_map.lookup
        return lookup(src_ip), (lookup(dest_ip) if dest_ip is not None else None)

    # -- checks ----------------------------------------------------------------------------------

    def check_record(self, record: dict[str, Any]) -> Check | None:
        """Check a transaction record's flow for its protocol, once per flow and protocol.
        None when already checked (or the record has no flow or zones)."""
        flow_id = record.get("flow_id")
        from_zone, to_zone = record.get("src_zone"), record.get("dest_zone")
        if flow_id is None or from_zone is None or to_zone is None:
            return None
        app_proto = record["event_type"]
        checked = self._checked
        seen = checked.get(flow_id)
        if seen is None:
            if len(checked) >= self._max_flows:
                checked.popitem(last=False)
                self.flows_evicted += 1
            seen = checked[flow_id] = set()
        elif app_proto in seen:
            return None
        else:
            checked.move_to_end(flow_id)
        seen.add(app_proto)
        layers = record_layers(record, self._protocols)
        return self._check(record, from_zone, to_zone, app_proto, layers, record.get("dest_port"))

    def check_flow_end(self, flow: FlowInfo, ts: float) -> Check | None:
        """A flow ended: check it if no transaction of it was checked. Forgets the flow."""
        if self._checked.pop(flow.flow_id, None) is not None:
            return None
        zones = getattr(flow, "zones", None) or self.zones(flow.src_text, flow.dest_text)
        from_zone, to_zone = zones
        if to_zone is None:
            return None
        app_proto = flow.app_proto or UNRECOGNISED
        base = base_record(flow, "policy", ts)
        base["src_zone"], base["dest_zone"] = from_zone, to_zone
        port = flow.server_port if flow.proto_name in _PORT_PROTOCOLS else None  # ICMP: type/code, not ports
        return self._check(base, from_zone, to_zone, app_proto, frozenset({app_proto}), port)

    def forget(self, flow_id: int) -> None:
        self._checked.pop(flow_id, None)

    def _check(self, record: dict[str, Any], from_zone: str, to_zone: str, app_proto: str,
               layers: frozenset[str], port: int | None) -> Check:
        decision = self.policy.decide(from_zone, to_zone, layers, port)
        rule_name = decision.rule.name if decision.rule is not None else ""
        cell = self.cells.get((from_zone, to_zone, app_proto))
        if cell is None:
            cell = self.cells[(from_zone, to_zone, app_proto)] = Cell()
        cell.rules[rule_name] += 1
        if decision.allowed:
            cell.allowed += 1
            return Check(from_zone, to_zone, app_proto, True, None)
        cell.denied += 1
        key = ViolationKey(str(record.get("src_ip")), str(record.get("dest_ip")), port, from_zone, to_zone,
                           app_proto, rule_name)
        if key in self.violations or len(self.violations) < self._max_violations:
            self.violations[key] += 1
        else:
            self.violations_untracked += 1
        return Check(from_zone, to_zone, app_proto, False,
                     self._policy_record(record, decision, from_zone, to_zone, app_proto, port))

    # -- records ---------------------------------------------------------------------------------

    def _policy_record(self, source: dict[str, Any], decision: Decision, from_zone: str, to_zone: str,
                       app_proto: str, port: int | None) -> dict[str, Any]:
        policy = self.policy
        record: dict[str, Any] = {"timestamp": source["timestamp"], "event_type": "policy"}
        for key in _COMMON:
            value = source.get(key)
            if value is not None:
                record[key] = value
        info: dict[str, Any] = {"verdict": DENIED, "name": policy.name}
        if decision.rule is not None:
            info["rule"] = decision.rule.name
        info["default"] = policy.default
        info["from_zone"] = from_zone
        info["to_zone"] = to_zone
        from_plane, to_plane = policy.plane(from_zone), policy.plane(to_zone)
        if from_plane:
            info["from_plane"] = from_plane
        if to_plane:
            info["to_plane"] = to_plane
        info["app_proto"] = app_proto
        if port is not None:
            info["port"] = port
        info["reason"] = _reason(decision, from_zone, to_zone, app_proto, port, policy.default)
        record["policy"] = info
        tx_id = source.get("tx_id")
        if tx_id is not None:
            record["tx_id"] = tx_id
        return record

    # -- summary ---------------------------------------------------------------------------------

    def counts(self) -> tuple[Any, ...]:
        """What this monitor counted, for :meth:`add_counts` of another (a sharded run's workers)."""
        return self.cells, self.violations, self.violations_untracked, self.flows_evicted

    def add_counts(self, counts: tuple[Any, ...]) -> None:
        """Add another monitor's :meth:`counts` to this one's."""
        cells, violations, untracked, evicted = counts
        for key, cell in cells.items():
            mine = self.cells.get(key)
            if mine is None:
                self.cells[key] = cell
            else:
                mine.allowed += cell.allowed
                mine.denied += cell.denied
                mine.rules.update(cell.rules)
        self.violations.update(violations)
        self.violations_untracked += untracked
        self.flows_evicted += evicted

    @property
    def flows_checked(self) -> int:
        return sum(cell.allowed + cell.denied for cell in self.cells.values())

    @property
    def flows_denied(self) -> int:
        return sum(cell.denied for cell in self.cells.values())


def _reason(decision: Decision, from_zone: str, to_zone: str, app_proto: str, port: int | None,
            default: str) -> str:
    what = f"{from_zone} -> {to_zone} {app_proto}" + (f" on port {port}" if port is not None else "")
    if decision.rule is not None:
        return f"rule {decision.rule.name!r} denies {what}"
    return f"no rule allows {what} (default {default})"
