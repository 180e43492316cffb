"""The JSON schema of our EVE records, generated from the field catalogue.

The schema ships as `inspector/data/eve.schema.json` (JSON Schema 2020-12) for SOC pipelines
that validate what they ingest; a test regenerates it and fails when the committed file is stale:

    python -m inspector.sinks.eveschema > inspector/data/eve.schema.json

How it is built:

* every field of the catalogue (inspector.fields: the names rules match on) becomes a property
  at its JSON path; objects whose fields are declared are closed (`additionalProperties:
  false`), so a record field no parser declares fails validation, as Suricata's schema does for
  its own records; objects declared without fields (free-form maps such as
  `triton.parameters`) are open;
* top-level values are never null, with Suricata's types (`timestamp` a string matching
  Suricata's pattern, `flow_id` and ports integers, addresses and names strings): a value that
  does not exist is left out. Inside protocol objects a parser may write null for "absent",
  except in the fields Suricata's schema also defines (`SURICATA_FIELDS`: flow, http and
  anomaly fields), which keep Suricata's type exactly;
* `alert` (made by the engine, not a parser) is written out here, with Suricata's field types,
  and so is `stats` (the run's counters, inspector.runstats: not a field rules match on);
* conditions: every record has `timestamp` and `event_type`; a record with `flow_id` has the
  rest of the flow fields; alert, flow, anomaly, policy and stats records have their object.

A field declared as a list below a list of objects (`http.request_headers.name`, declared
`list[string]` because the path crosses a list) may be the element or a list of elements in
each object: both are accepted, except in Suricata's fields (one string per header).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from inspector.fields import FieldSpec, catalogue

SCHEMA_ID = "urn:inspector:eve-record"
#: Suricata's pattern for `timestamp` (etc/schema.json), which ours must also match.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+[+\-]\d+$"
FLOW_FIELDS = ("flow_id", "community_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto")
#: Fields below the top level that Suricata's EVE schema also defines: never null, so a record
#: keeps the type Suricata's consumers expect there (tests/test_eve_schema.py checks the types).
SURICATA_FIELDS = frozenset({
    "flow.pkts_toserver", "flow.pkts_toclient", "flow.bytes_toserver", "flow.bytes_toclient", "flow.start",
    "flow.end", "flow.age", "flow.state", "flow.reason", "flow.alerted",
    "http.hostname", "http.url", "http.http_method", "http.http_user_agent", "http.http_content_type",
    "http.http_refer", "http.http_port", "http.protocol", "http.status", "http.length", "http.redirect",
    "http.request_headers", "http.response_headers", "http.request_headers.name", "http.request_headers.value",
    "http.response_headers.name", "http.response_headers.value", "http.http2", "http.http2.stream_id",
    "anomaly.type", "anomaly.event", "anomaly.layer",
})
#: Record types whose object of the same name is required.
OBJECT_RECORDS = ("alert", "flow", "anomaly", "policy", "stats")

_SCALARS = {"string": "string", "ip": "string", "timestamp": "string", "integer": "integer", "number": "number",
            "boolean": "boolean"}
_LIST_ITEMS = {"list[string]": "string", "list[integer]": "integer", "list[object]": "object"}

#: The engine's alert object (inspector.engine): Suricata's fields, our metadata keys.
ALERT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The rule that fired (event_type alert).",
    "properties": {
        "action": {"type": "string", "enum": ["allowed", "blocked"],
                   "description": "allowed, or blocked (live sidecar, block rules)."},
        "gid": {"type": "integer", "description": "Always 1."},
        "signature_id": {"type": "integer", "description": "The rule's sid."},
        "rev": {"type": "integer", "description": "The rule's revision."},
        "signature": {"type": "string", "description": "The rule's title."},
        "category": {"type": "string", "description": "The rule's category, else '<events> <level>'."},
        "severity": {"type": "integer", "minimum": 1, "maximum": 4,
                     "description": "critical 1, high 2, medium 3, low and informational 4."},
        "metadata": {"type": "object", "description": "Rule metadata, lists of strings as Suricata writes them.",
                     "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
    "required": ["action", "gid", "signature_id", "rev", "signature", "category", "severity"],
    "additionalProperties": False,
}


_COUNTERS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}


def _counters(description: str, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object of integer counters: `names` fixed and required, or an open map of them."""
    if not names:
        return {**_COUNTERS, "description": description}
    return {"type": "object", "description": description,
            "properties": {name: {"type": "integer", "minimum": 0} for name in names},
            "required": list(names), "additionalProperties": False}


#: The run's counters (inspector.runstats, event_type stats): Suricata's stats shape, our names.
STATS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "What an offline run counted (event_type stats, the run's last record).",
    "properties": {
        "capture": _counters("Capture files, what they held, and the packets their capturing host says it "
                             "dropped (pcapng interface statistics).",
                             ("files", "files_damaged", "packets", "bytes", "dropped")),
        "decoder": _counters("Packet decoder counters that are not zero (frames not used, fragments ...)."),
        "flow": {"type": "object", "description": "Flows: how many, how they ended early, by protocol.",
                 "properties": {"total": {"type": "integer", "minimum": 0},
                                "evicted": {"type": "integer", "minimum": 0},
                                "timed_out": {"type": "integer", "minimum": 0},
                                "by_app": _counters("Flows by application protocol.")},
                 "required": ["total", "evicted", "timed_out", "by_app"], "additionalProperties": False},
        "tcp": _counters("TCP reassembly counters that are not zero (gaps, gap_bytes, retransmissions ...)."),
        "app_layer": _counters("Stream router counters that are not zero (protocols detected, flows not "
                               "parsed, TLS, parser errors)."),
        "detect": {"type": "object", "description": "The rule engine's counters (absent without rules): "
                   "rules_loaded, then those that are not zero. Each match is an alert, suppressed by the "
                   "site config (alerts_suppressed), or held by a rate window (rate_pending, rate_quiet).",
                   "properties": {name: {"type": "integer", "minimum": 0} for name in (
                       "rules_loaded", "alert", "matches", "alerts_suppressed", "rate_pending", "rate_quiet",
                       "rate_keys", "rate_keys_evicted")},
                   "required": ["rules_loaded"], "additionalProperties": False},
        "records": {"type": "object", "description": "Records written.",
                    "properties": {"transactions": _counters("Transaction records by protocol."),
                                   "anomalies": {"type": "integer", "minimum": 0},
                                   "alerts": {"type": "integer", "minimum": 0}},
                    "required": ["transactions", "anomalies", "alerts"], "additionalProperties": False},
    },
    "required": ["capture", "decoder", "flow", "tcp", "app_layer", "records"],
    "additionalProperties": False,
}


class _Node:
    """A JSON path in the making: its own spec (if declared) and its children."""

    __slots__ = ("children", "spec")

    def __init__(self) -> None:
        self.spec: FieldSpec | None = None
        self.children: dict[str, _Node] = {}


def build_schema(fields: Mapping[str, FieldSpec] | None = None) -> dict[str, Any]:
    """The schema for the catalogue `fields` (default: the complete catalogue)."""
    fields = catalogue() if fields is None else fields
    root = _Node()
    for name, spec in sorted(fields.items()):
        node = root
        for part in name.split("."):
            node = node.children.setdefault(part, _Node())
        node.spec = spec
    properties = {name: _property(node, name, top=True, in_list=False) for name, node in sorted(root.children.items())}
    properties["alert"] = ALERT_SCHEMA
    properties["stats"] = STATS_SCHEMA
    conditions: list[dict[str, Any]] = [
        {"if": {"properties": {"event_type": {"const": kind}}, "required": ["event_type"]},
         "then": {"required": [kind]}}
        for kind in OBJECT_RECORDS if kind in properties
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "inspector EVE record",
        "description": "One line of inspector's EVE JSON output (Suricata's EVE shape). Generated from the "
                       "field catalogue by inspector.sinks.eveschema; do not edit by hand.",
        "type": "object",
        "properties": properties,
        "required": ["timestamp", "event_type"],
        "dependentRequired": {"flow_id": [f for f in FLOW_FIELDS if f != "flow_id"]},
        "allOf": conditions,
        "additionalProperties": False,
    }


def _property(node: _Node, path: str, *, top: bool, in_list: bool) -> dict[str, Any]:
    spec = node.spec
    suricata = path in SURICATA_FIELDS
    top = top or suricata
    described: dict[str, Any] = {"description": spec.description} if spec is not None else {}
    if node.children or spec is None or spec.type in ("object", "list[object]"):
        shape = _object(node, path)
        if spec is not None and spec.type == "list[object]":
            result: dict[str, Any] = {"type": "array", "items": shape}
            if in_list:
                result = {"anyOf": [shape, result]}
        else:
            result = shape
        return {**described, **_nullable(result, top)}
    if spec.type in _SCALARS:
        result = {"type": _SCALARS[spec.type]}
        if spec.type == "timestamp":
            result["pattern"] = TIMESTAMP_PATTERN
        return {**described, **_nullable(result, top)}
    item = {"type": _LIST_ITEMS[spec.type]}
    if in_list and suricata:  # Suricata's own list fields hold one value per element
        return {**described, **item}
    result = {"type": "array", "items": _nullable(item, False)}
    if in_list:
        result = {"anyOf": [_nullable(item, False), result]}
    return {**described, **_nullable(result, top)}


def _object(node: _Node, path: str) -> dict[str, Any]:
    if not node.children:
        return {"type": "object"}
    list_children = node.spec is not None and node.spec.type == "list[object]"
    return {
        "type": "object",
        "properties": {name: _property(child, f"{path}.{name}", top=False, in_list=list_children)
                       for name, child in sorted(node.children.items())},
        "additionalProperties": False,
    }


def _nullable(schema: dict[str, Any], strict: bool) -> dict[str, Any]:
    """Below the top level a value may be null (a parser's "absent"), unless `strict`."""
    if strict:
        return schema
    if "type" in schema and isinstance(schema["type"], str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [*schema.get("anyOf", [schema]), {"type": "null"}]}


def schema_text(fields: Mapping[str, FieldSpec] | None = None) -> str:
    """The schema as the shipped file holds it."""
    return json.dumps(build_schema(fields), indent=2, sort_keys=True) + "\n"


def shipped_schema() -> dict[str, Any]:
    """The schema file shipped in the package (inspector/data/eve.schema.json)."""
    from importlib import resources

    return json.loads(resources.files("inspector").joinpath("data", "eve.schema.json").read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.stdout.write(schema_text())
