"""Rows for the CLI: `inspector rules list` and `inspector fields`. Plain dicts of strings."""

from __future__ import annotations

from collections.abc import Mapping

from inspector import fields
from inspector.fields import FieldSpec
from inspector.rules.layers import field_allowed, layer_closure
from inspector.rules.model import RuleSet


def rules_table(ruleset: RuleSet) -> list[dict[str, object]]:
    """One row per rule, in sid order: sid, title, level, event, action, rate, file."""
    return [
        {
            "sid": rule.sid,
            "title": rule.title,
            "level": rule.level,
            "event": ",".join(rule.events),
            "action": rule.action,
            "rate": rule.rate.describe() if rule.rate else "",
            "file": rule.file,
        }
        for rule in ruleset.rules
    ]


def fields_table(catalogue: Mapping[str, FieldSpec] | None = None, *,
                 event: str | None = None) -> list[dict[str, str]]:
    """One row per field a rule may name, sorted: name, type, events, description.

    With `event`, only the fields a rule for that event type may name: its own, its parent
    layers' (a `triton` rule may use `grpc.*` and `http.*`) and the common ones.
    """
    if catalogue is None:
        catalogue = fields.catalogue()
    specs = sorted(catalogue.values(), key=lambda s: s.name)
    if event is not None:
        closure = layer_closure([event])
        specs = [s for s in specs if field_allowed(s, closure)]
    return [
        {"name": spec.name, "type": spec.type, "events": ",".join(spec.events),
         "description": spec.description}
        for spec in specs
    ]
