"""`inspector policy lint`: what a policy that loads can still get wrong.

The loader already refuses what cannot be meant (undefined zones, unknown protocols, bad or
duplicate CIDRs). Lint looks at a valid policy as a whole:

* errors
  - `unreachable-rule`: every flow the rule matches is decided first by earlier rules, at least
    one of them the other way: the rule never applies, and it does not do what it says.
* warnings
  - `redundant-rule`: earlier rules already decide all the rule's flows the same way.
  - `nested-zones`: a CIDR of one zone inside a CIDR of another. Longest prefix wins (the inner
    zone gets those addresses), which is often meant, sometimes a typo.
  - `unused-zone`: no rule names the zone (nor `any`): only the default decides its flows.
  - `outside-into-management`: an allow rule lets the unknown-address zone (or any zone) into a
    management-plane zone.
  - `nothing-denied`: default allow and no deny rule: no flow can be a violation.

Coverage is computed per (source zone, destination zone, protocol) of a rule: the earlier rules
that match all of it are found, and their port ranges merged. A rule for `triton` is covered by
an earlier rule for `http` (every Triton record rides on HTTP); a rule without protocols only by
earlier rules without protocols; a rule without ports only by earlier rules without ports.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from inspector.policy.model import ALLOW, DENY, FlowRule, Policy
from inspector.rules.layers import LAYER_PARENTS

ERROR, WARNING = "error", "warning"
_ANY_PROTOCOL = ""


@dataclass(frozen=True, slots=True)
class Finding:
    level: str
    code: str
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.level}: {self.message} [{self.code}]"


def lint_policy(policy: Policy) -> list[Finding]:
    """Every finding, errors and warnings, in file order."""
    findings = [*_nested_zones(policy), *_rule_coverage(policy), *_unused_zones(policy),
                *_outside_into_management(policy), *_nothing_denied(policy)]
    return sorted(findings, key=lambda f: (f.line, f.level != ERROR, f.code))


# -- zones ---------------------------------------------------------------------------------------


def _nested_zones(policy: Policy) -> list[Finding]:
    findings = []
    for outer, inner in itertools.permutations(policy.zones, 2):
        for big in outer.cidrs:
            for small in inner.cidrs:
                if big.version == small.version and big != small and small.subnet_of(big):  # type: ignore[arg-type]
                    findings.append(Finding(
                        WARNING, "nested-zones", policy.source, inner.line,
                        f"zone {inner.name!r} {small} lies inside zone {outer.name!r} {big}: those addresses "
                        f"are in {inner.name!r} (longest prefix wins)"))
    return findings


def _unused_zones(policy: Policy) -> list[Finding]:
    named: set[str] = set()
    wildcard = False
    for rule in policy.rules:
        for zones in (rule.sources, rule.destinations):
            if zones is None:
                wildcard = True
            else:
                named |= zones
    if wildcard:
        return []
    return [Finding(WARNING, "unused-zone", policy.source, zone.line,
                    f"zone {zone.name!r} is in no rule: only the default ({policy.default}) decides its flows")
            for zone in policy.zones if zone.name not in named]


def _outside_into_management(policy: Policy) -> list[Finding]:
    management = {zone.name for zone in policy.zones if zone.plane == "management"}
    findings = []
    for rule in policy.rules:
        if rule.action != ALLOW:
            continue
        from_outside = rule.sources is None or policy.unknown_zone in rule.sources
        targets = management if rule.destinations is None else management & rule.destinations
        if from_outside and targets:
            who = "any zone" if rule.sources is None else f"the unknown-address zone {policy.unknown_zone!r}"
            findings.append(Finding(WARNING, "outside-into-management", policy.source, rule.line,
                                    f"rule {rule.name!r} allows {who} into management-plane zone(s) "
                                    f"{', '.join(sorted(targets))}"))
    return findings


def _nothing_denied(policy: Policy) -> list[Finding]:
    if policy.default == ALLOW and not any(rule.action == DENY for rule in policy.rules):
        return [Finding(WARNING, "nothing-denied", policy.source, 0,
                        "default allow and no deny rule: no flow can be a violation")]
    return []


# -- rules ---------------------------------------------------------------------------------------


def _rule_coverage(policy: Policy) -> list[Finding]:
    findings = []
    zones = policy.zone_names
    for index, rule in enumerate(policy.rules):
        covering = _covering_rules(rule, policy.rules[:index], zones)
        if covering is None:
            continue
        names = ", ".join(repr(r.name) for r in covering)
        ending = "" if len(covering) > 1 else "s"
        if all(r.action == rule.action for r in covering):
            findings.append(Finding(WARNING, "redundant-rule", policy.source, rule.line,
                                    f"rule {rule.name!r} ({rule.describe()}) is redundant: {names} already "
                                    f"{'allow' if rule.action == ALLOW else 'deny'}{ending} all its flows"))
        else:
            findings.append(Finding(ERROR, "unreachable-rule", policy.source, rule.line,
                                    f"rule {rule.name!r} ({rule.describe()}) never applies: {names} "
                                    f"decide{ending} all its flows first (first match wins)"))
    return findings


def _covering_rules(rule: FlowRule, earlier: tuple[FlowRule, ...], zones: tuple[str, ...]) -> list[FlowRule] | None:
    """The earlier rules that together decide every flow `rule` matches, or None if some flow
    reaches it."""
    sources = sorted(rule.sources) if rule.sources is not None else zones
    destinations = sorted(rule.destinations) if rule.destinations is not None else zones
    protocols = sorted(rule.protocols) or [_ANY_PROTOCOL]
    used: dict[str, FlowRule] = {}
    for from_zone, to_zone, protocol in itertools.product(sources, destinations, protocols):
        candidates = [r for r in earlier
                      if (r.sources is None or from_zone in r.sources)
                      and (r.destinations is None or to_zone in r.destinations)
                      and _protocol_covered(protocol, r.protocols)]
        cover = _port_cover(rule.ports, candidates)
        if cover is None:
            return None
        for r in cover:
            used.setdefault(r.name, r)
    return sorted(used.values(), key=lambda r: r.line)


def _protocol_covered(protocol: str, by: frozenset[str]) -> bool:
    if not by:
        return True
    if protocol == _ANY_PROTOCOL:
        return False
    if protocol in by:
        return True
    return "http" in LAYER_PARENTS.get(protocol, ()) and "http" in by


def _port_cover(ports: tuple[tuple[int, int], ...], candidates: list[FlowRule]) -> list[FlowRule] | None:
    """The candidates (in rule order) that decide some of `ports` (empty: every port), when
    together they decide all of them; None otherwise."""
    deciding: list[FlowRule] = []
    for r in candidates:
        if not r.ports:
            deciding.append(r)
            return deciding
        if not ports or any(lo <= r_hi and r_lo <= hi for lo, hi in ports for r_lo, r_hi in r.ports):
            deciding.append(r)
    if not ports:
        return None
    ranges = sorted(rng for r in deciding for rng in r.ports)
    for low, high in ports:
        position = low
        for r_low, r_high in ranges:
            if r_low <= position <= r_high:
                position = r_high + 1
            if position > high:
                break
        if position <= high:
            return None
    return deciding
