"""Load a policy file: strict validation, every problem with file and line, nothing half-loads.

The file (YAML, one document)::

    name: ml-cluster                  # optional, default: the file name
    description: ...                  # optional
    default: deny                     # required: deny (default-deny) or allow
    unknown_zone: outside             # optional, default "outside": the zone of addresses in no zone
    zones:
      - name: training
        plane: data                   # control | data | management
        cidrs: [10.10.0.0/16, "fd00:10::/48"]
        kubernetes: {namespace: training, labels: {app: trainer}}   # optional, documentation only
        description: ...
    rules:                            # first match wins
      - name: training-collectives
        from: training                # a zone, a list of zones, or any
        to: training
        protocols: [nccl, tcpstore]   # optional: EVE event types / app_proto values
        ports: [29500, 40000-40100]   # optional: ports or ranges
        action: allow                 # optional, default allow; or deny

Errors (all reported, with their line): unknown keys, missing or mistyped values, a plane or
action outside its list, CIDRs that do not parse or have host bits set, the same CIDR in two
zones, duplicate zone or rule names, rules naming zones that are not defined or protocols that
do not exist. YAML comes through inspector.rules.yamlsource (duplicate keys are errors too).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inspector import fields
from inspector.policy.model import ACTIONS, ALLOW, ANY, NOT_PROTOCOLS, PLANES, UNRECOGNISED, FlowRule, Policy, Zone
from inspector.rules.errors import RuleError
from inspector.rules.layers import known_event_types
from inspector.rules.yamlsource import line_of, load_yaml_file, load_yaml_text

DEFAULT_UNKNOWN_ZONE = "outside"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
_TOP_KEYS = ("name", "description", "default", "unknown_zone", "zones", "rules")
_ZONE_KEYS = ("name", "plane", "cidrs", "kubernetes", "description")
_K8S_KEYS = ("namespace", "labels")
_RULE_KEYS = ("name", "from", "to", "protocols", "ports", "action", "description")
#: app_proto values that are not event types.
_APP_PROTOS = frozenset({"http2", UNRECOGNISED})


class PolicyLoadError(Exception):
    """A policy that did not load; `errors` lists every problem, in file order."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors: tuple[RuleError, ...] = tuple(errors)
        count = len(self.errors)
        head = "\n".join(str(e) for e in self.errors[:20])
        super().__init__(f"{count} error{'s' if count != 1 else ''} in the policy:\n{head}")


def known_protocols() -> frozenset[str]:
    """Protocol names a rule may use: the EVE transaction event types and the app_proto values."""
    return frozenset(known_event_types(fields.catalogue()) - NOT_PROTOCOLS) | _APP_PROTOS


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; PolicyLoadError lists every problem."""
    doc, problems = load_yaml_file(path)
    if problems:
        raise PolicyLoadError(problems)
    return build_policy(doc, str(path), default_name=Path(path).stem)


def load_policy_text(text: str, file: str = "<policy>") -> Policy:
    doc, problems = load_yaml_text(text, file)
    if problems:
        raise PolicyLoadError(problems)
    return build_policy(doc, file, default_name=Path(file).stem)


def build_policy(doc: Any, file: str, *, default_name: str = "policy",
                 protocols: frozenset[str] | None = None) -> Policy:
    builder = _Builder(file, protocols if protocols is not None else known_protocols())
    policy = builder.policy(doc, default_name)
    if builder.errors or policy is None:
        raise PolicyLoadError(sorted(builder.errors, key=lambda e: e.line))
    return policy


class _Builder:
    def __init__(self, file: str, protocols: frozenset[str]) -> None:
        self.file = file
        self.protocols = protocols
        self.errors: list[RuleError] = []

    def error(self, line: int, message: str) -> None:
        self.errors.append(RuleError(self.file, line, message))

    def unknown_keys(self, mapping: Mapping, allowed: tuple[str, ...], what: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.error(line_of(mapping, key, 0), f"unknown key {key!r} in {what} "
                           f"(expected: {', '.join(allowed)})")

    def string(self, mapping: Mapping, key: str, what: str, *, required: bool = False) -> str | None:
        value = mapping.get(key)
        line = line_of(mapping, key, getattr(mapping, "line", 0))
        if value is None:
            if required:
                self.error(line, f"{what}: {key} is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(line, f"{what}: {key} must be a non-empty string, not {value!r}")
            return None
        return value.strip()

    # -- the document ----------------------------------------------------------------------------

    def policy(self, doc: Any, default_name: str) -> Policy | None:
        if not isinstance(doc, dict):
            self.error(getattr(doc, "line", 1), "a policy is a mapping with default:, zones: and rules:")
            return None
        self.unknown_keys(doc, _TOP_KEYS, "the policy")
        name = self.string(doc, "name", "policy") or default_name
        description = self.string(doc, "description", "policy") or ""
        default = self.string(doc, "default", "policy", required=True)
        if default is not None and default not in ACTIONS:
            self.error(line_of(doc, "default", 0), f"default must be deny or allow, not {default!r}")
        unknown_zone = self.string(doc, "unknown_zone", "policy") or DEFAULT_UNKNOWN_ZONE
        if not _NAME.match(unknown_zone) or unknown_zone == ANY:
            self.error(line_of(doc, "unknown_zone", 0), f"unknown_zone {unknown_zone!r} is not a valid zone name")
        zones = self.zones(doc, unknown_zone)
        zone_names = {zone.name for zone in zones} | {unknown_zone}
        rules = self.rules(doc, zone_names)
        if self.errors or default is None:
            return None
        return Policy(name=name, default=default, unknown_zone=unknown_zone, zones=tuple(zones),
                      rules=tuple(rules), protocols=self.protocols, description=description, source=self.file)

    # -- zones -----------------------------------------------------------------------------------

    def zones(self, doc: Mapping, unknown_zone: str) -> list[Zone]:
        items = doc.get("zones")
        if not isinstance(items, list) or not items:
            self.error(line_of(doc, "zones", getattr(doc, "line", 1)), "zones: must be a non-empty list of zones")
            return []
        zones: list[Zone] = []
        seen_names: dict[str, int] = {}
        seen_cidrs: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[str, int]] = {}
        for index, item in enumerate(items):
            line = line_of(items, index, 0)
            zone = self.zone(item, line, unknown_zone)
            if zone is None:
                continue
            if zone.name in seen_names:
                self.error(zone.line, f"zone {zone.name!r} is defined twice (first at line {seen_names[zone.name]})")
                continue
            seen_names[zone.name] = zone.line
            for network in zone.cidrs:
                if network in seen_cidrs:
                    other, other_line = seen_cidrs[network]
                    self.error(zone.line, f"zone {zone.name!r}: {network} is also in zone {other!r} "
                               f"(line {other_line}): an address can be in one zone only")
                else:
                    seen_cidrs[network] = (zone.name, zone.line)
            zones.append(zone)
        return zones

    def zone(self, item: Any, line: int, unknown_zone: str) -> Zone | None:
        if not isinstance(item, dict):
            self.error(line, "a zone is a mapping with name:, plane: and cidrs:")
            return None
        line = getattr(item, "line", line)
        self.unknown_keys(item, _ZONE_KEYS, "a zone")
        name = self.string(item, "name", "zone", required=True)
        what = f"zone {name!r}" if name else "zone"
        if name is not None and (not _NAME.match(name) or name == ANY):
            self.error(line_of(item, "name", line), f"{what}: name must be letters, digits, '_', '-' or '.' "
                       f"(and not 'any')")
            name = None
        plane = self.string(item, "plane", what, required=name != unknown_zone)
        if plane is not None and plane not in PLANES:
            self.error(line_of(item, "plane", line), f"{what}: plane must be one of {', '.join(PLANES)}, "
                       f"not {plane!r}")
        cidrs = self.cidrs(item, what, line, required=name != unknown_zone)
        namespace, labels = self.kubernetes(item, what)
        description = self.string(item, "description", what) or ""
        if name is None:
            return None
        return Zone(name=name, plane=plane, cidrs=tuple(cidrs), namespace=namespace, labels=labels,
                    description=description, line=line)

    def cidrs(self, item: Mapping, what: str, line: int, *, required: bool) -> list:
        value = item.get("cidrs")
        key_line = line_of(item, "cidrs", line)
        if value is None:
            if required:
                self.error(key_line, f"{what}: cidrs is required (a list of networks)")
            return []
        values = value if isinstance(value, list) else [value]
        if required and not values:
            self.error(key_line, f"{what}: cidrs must list at least one network")
        networks = []
        for index, text in enumerate(values):
            entry_line = line_of(value, index, key_line)
            if not isinstance(text, str):
                self.error(entry_line, f"{what}: CIDR {text!r} must be a string such as 10.0.0.0/8")
                continue
            try:
                network = ipaddress.ip_network(text.strip(), strict=True)
            except ValueError as exc:
                hint = ""
                try:
                    hint = f"; did you mean {ipaddress.ip_network(text.strip(), strict=False)}?"
                except ValueError:
                    pass
                self.error(entry_line, f"{what}: {text!r} is not a network ({exc}){hint}")
                continue
            if network in networks:
                self.error(entry_line, f"{what}: {network} is listed twice")
                continue
            networks.append(network)
        return networks

    def kubernetes(self, item: Mapping, what: str) -> tuple[str | None, dict[str, str]]:
        value = item.get("kubernetes")
        if value is None:
            return None, {}
        line = line_of(item, "kubernetes", 0)
        if not isinstance(value, dict):
            self.error(line, f"{what}: kubernetes must be a mapping with namespace: and labels:")
            return None, {}
        self.unknown_keys(value, _K8S_KEYS, f"{what} kubernetes")
        namespace = self.string(value, "namespace", f"{what} kubernetes")
        labels = value.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str | int | float | bool)
                                                   for k, v in labels.items()):
            self.error(line_of(value, "labels", line), f"{what}: kubernetes labels must map names to values")
            labels = {}
        return namespace, {str(k): str(v) for k, v in labels.items()}

    # -- rules -----------------------------------------------------------------------------------

    def rules(self, doc: Mapping, zone_names: set[str]) -> list[FlowRule]:
        items = doc.get("rules")
        if items is None:
            return []
        if not isinstance(items, list):
            self.error(line_of(doc, "rules", 0), "rules: must be a list of flow rules")
            return []
        rules: list[FlowRule] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            line = line_of(items, index, 0)
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name:  # checked even when the rule has other errors
                if name in seen:
                    self.error(line, f"rule {name!r} is defined twice (first at line {seen[name]})")
                else:
                    seen[name] = line
            rule = self.rule(item, line, zone_names)
            if rule is None or (isinstance(name, str) and seen.get(name) != line):
                continue
            rules.append(rule)
        return rules

    def rule(self, item: Any, line: int, zone_names: set[str]) -> FlowRule | None:
        if not isinstance(item, dict):
            self.error(line, "a rule is a mapping with name:, from:, to: and protocols: or ports:")
            return None
        line = getattr(item, "line", line)
        self.unknown_keys(item, _RULE_KEYS, "a rule")
        name = self.string(item, "name", "rule", required=True)
        what = f"rule {name!r}" if name else "rule"
        action = self.string(item, "action", what) or ALLOW
        if action not in ACTIONS:
            self.error(line_of(item, "action", line), f"{what}: action must be allow or deny, not {action!r}")
        sources = self.zone_refs(item, "from", what, line, zone_names)
        destinations = self.zone_refs(item, "to", what, line, zone_names)
        protocols = self.protocol_refs(item, what, line)
        ports = self.ports(item, what, line)
        description = self.string(item, "description", what) or ""
        if name is None or sources is False or destinations is False:
            return None
        return FlowRule(name=name, action=action, sources=sources, destinations=destinations,
                        protocols=protocols, ports=ports, description=description, line=line)

    def zone_refs(self, item: Mapping, key: str, what: str, line: int,
                  zone_names: set[str]) -> frozenset[str] | bool | None:
        """The zones named under `key`; None for any; False when missing or wrong."""
        value = item.get(key)
        key_line = line_of(item, key, line)
        if value is None:
            self.error(key_line, f"{what}: {key} is required (a zone, a list of zones, or any)")
            return False
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            self.error(key_line, f"{what}: {key} must be a zone name, a list of zone names, or any")
            return False
        if ANY in values:
            if len(values) > 1:
                self.error(key_line, f"{what}: {key} lists 'any' with other zones: 'any' alone covers them")
            return None
        good = True
        for index, zone in enumerate(values):
            if zone not in zone_names:
                close = difflib.get_close_matches(zone, sorted(zone_names), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (zones: {', '.join(sorted(zone_names))})"
                self.error(line_of(value, index, key_line), f"{what}: zone {zone!r} is not defined{hint}")
                good = False
        return frozenset(values) if good else False

    def protocol_refs(self, item: Mapping, what: str, line: int) -> frozenset[str]:
        value = item.get("protocols")
        if value is None:
            return frozenset()
        key_line = line_of(item, "protocols", line)
        values = value if isinstance(value, list) else [value]
        names = []
        for index, protocol in enumerate(values):
            entry_line = line_of(value, index, key_line)
            if not isinstance(protocol, str) or not protocol:
                self.error(entry_line, f"{what}: protocol {protocol!r} must be a protocol name")
                continue
            if protocol not in self.protocols:
                close = difflib.get_close_matches(protocol, sorted(self.protocols), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.error(entry_line, f"{what}: unknown protocol {protocol!r}{hint} "
                           f"(known: {', '.join(sorted(self.protocols))})")
                continue
            names.append(protocol)
        if not values:
            self.error(key_line, f"{what}: protocols is empty (leave it out to allow any protocol)")
        return frozenset(names)

    def ports(self, item: Mapping, what: str, line: int) -> tuple[tuple[int, int], ...]:
        value = item.get("ports")
        if value is None:
            return ()
        key_line = line_of(item, "ports", line)
        values = value if isinstance(value, list) else [value]
        if not values:
            self.error(key_line, f"{what}: ports is empty (leave it out to allow any port)")
        ranges: list[tuple[int, int]] = []
        for index, entry in enumerate(values):
            entry_line = line_of(value, index, key_line)
            port_range = _port_range(entry)
            if port_range is None:
                self.error(entry_line, f"{what}: {entry!r} is not a port (1-65535) or a range such as 40000-40100")
                continue
            ranges.append(port_range)
        return tuple(sorted(ranges))


def _port_range(entry: Any) -> tuple[int, int] | None:
    if isinstance(entry, bool):
        return None
    if isinstance(entry, int):
        low = high = entry
    elif isinstance(entry, str):
        text = entry.strip()
        low_text, sep, high_text = text.partition("-")
        if not low_text.strip().isdigit() or (sep and not high_text.strip().isdigit()):
            return None
        low = int(low_text)
        high = int(high_text) if sep else low
    else:
        return None
    if not 0 < low <= high <= 65535:
        return None
    return low, high
