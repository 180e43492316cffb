"""Segmentation policy: zones, planes, allowed flows, and checking traffic against them.

AI clusters are split into planes (control, data, management) and zones (training, inference,
feature store, storage, management, outside). A policy file makes the intended flows explicit;
both paths check the traffic they see against it::

    policy file --load_policy--> Policy --PolicyMonitor--> zones on every record
                  (loader.py)    (model.py)   (monitor.py)   + a `policy` record per flow and
                                                               protocol the policy does not allow
                                                                    |
                                                  Engine (signatures/policy/) --> alerts

Modules:
    model.py     zones, flow rules, first-match decisions, the protocol layers of a record
    zones.py     longest-prefix zone lookup (IPv4 and IPv6), the live path's destination address
    loader.py    YAML loading with strict validation (file:line for every problem)
    lint.py      overlapping zones, unreachable and redundant rules, unused zones
    monitor.py   per-flow checks, policy records, counters for the report
    report.py    the segmentation report: zone matrix, top violating flows (table, Markdown, JSON)
    fields.py    src_zone, dest_zone and policy.* in the field catalogue
    cli.py       `inspector policy check|lint`

See docs/policy.md.
"""

from typing import TYPE_CHECKING

from inspector.lazyexports import lazy_exports

if TYPE_CHECKING:
    from inspector.policy.loader import PolicyLoadError, known_protocols, load_policy, load_policy_text
    from inspector.policy.model import Decision, FlowRule, Policy, Zone
    from inspector.policy.monitor import Check, PolicyMonitor

_LOADER, _MODEL, _MONITOR = "inspector.policy.loader", "inspector.policy.model", "inspector.policy.monitor"
__getattr__ = lazy_exports(__name__, {
    "PolicyLoadError": _LOADER, "known_protocols": _LOADER, "load_policy": _LOADER, "load_policy_text": _LOADER,
    "Decision": _MODEL, "FlowRule": _MODEL, "Policy": _MODEL, "Zone": _MODEL,
    "Check": _MONITOR, "PolicyMonitor": _MONITOR,
})

__all__ = [
    "Check",
    "Decision",
    "FlowRule",
    "Policy",
    "PolicyLoadError",
    "PolicyMonitor",
    "Zone",
    "known_protocols",
    "load_policy",
    "load_policy_text",
]
