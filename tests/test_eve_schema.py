"""The shipped EVE JSON schema: current with the field catalogue, valid, met by every record the
shipped captures (and the corpus) produce, strict where it should be, and compatible with
Suricata's EVE schema for the fields both define.

Suricata's schema (OISF/suricata etc/schema.json, GPL-2.0) is not copied here. The expectations
below were written from reading it: each shared field's JSON type, the timestamp pattern, which
fields are required. What was checked, from its text:

* root: `event_type` (string) and `timestamp` (string matching
  `^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d+[+\\-]\\d+$`) required; `flow_id`, `src_port`,
  `dest_port`, `tx_id` integers; `src_ip`, `dest_ip`, `proto`, `app_proto`, `community_id` strings;
  no null allowed anywhere (no field's type includes null);
* `alert`: `action`, `category`, `signature` strings; `gid`, `rev`, `severity`, `signature_id`
  integers; `metadata` an object whose entries are arrays of strings. Suricata closes the
  metadata key set to what its rules' metadata keyword writes (affected_product, attack_target,
  created_at, deployment, signature_severity, tag, updated_at); ours are the rule's (rule_id,
  level, status, rule_action, tags, references): same shape, other names;
* `flow`: packet and byte counts and `age` integers, `start` / `end` / `state` / `reason`
  strings, `alerted` boolean;
* `http`: `hostname`, `url`, `http_method`, `http_user_agent`, `http_content_type`,
  `http_refer`, `protocol`, `redirect` strings; `http_port`, `status`, `length` integers;
  `request_headers` / `response_headers` arrays of {name, value} strings; `http2.stream_id`
  integer;
* `anomaly`: `type`, `event`, `layer` strings.

Suricata's schema also closes every object (`additionalProperties: false`), so our own objects
(`grpc`, `triton`, `policy` ...) and extra fields (`anomaly.message`, `flow.gap_bytes`,
`http.request_length` ...) are outside it by design: what is compatible is every field both
define, which SOC integrations map (docs/soc.md).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from inspector.analyze import Analyzer, expand_paths
from inspector.engine import Engine
from inspector.policy import PolicyMonitor, load_policy_text
from inspector.rules import load_config, load_rules, run_rule_tests
from inspector.rules.cli import analyze_captures, default_rules_path
from inspector.sinks.eveschema import SURICATA_FIELDS, build_schema, schema_text, shipped_schema

REPO = Path(__file__).resolve().parent.parent
SCHEMA_FILE = REPO / "inspector" / "data" / "eve.schema.json"
SURICATA_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+[+\-]\d+$"

#: Suricata's JSON type for each field both schemas define (see the module docstring).
SURICATA_TYPES: dict[str, str] = {
    "timestamp": "string", "event_type": "string", "flow_id": "integer", "community_id": "string",
    "src_ip": "string", "src_port": "integer", "dest_ip": "string", "dest_port": "integer", "proto": "string",
    "app_proto": "string", "tx_id": "integer",
    "alert.action": "string", "alert.gid": "integer", "alert.signature_id": "integer", "alert.rev": "integer",
    "alert.signature": "string", "alert.category": "string", "alert.severity": "integer", "alert.metadata": "object",
    "flow.pkts_toserver": "integer", "flow.pkts_toclient": "integer", "flow.bytes_toserver": "integer",
    "flow.bytes_toclient": "integer", "flow.start": "string", "flow.end": "string", "flow.age": "integer",
    "flow.state": "string", "flow.reason": "string", "flow.alerted": "boolean",
    "http.hostname": "string", "http.url": "string", "http.http_method": "string", "http.http_user_agent": "string",
    "http.http_content_type": "string", "http.http_refer": "string", "http.http_port": "integer",
    "http.protocol": "string", "http.status": "integer", "http.length": "integer", "http.redirect": "string",
    "http.request_headers": "array", "http.response_headers": "array", "http.http2.stream_id": "integer",
    "anomaly.type": "string", "anomaly.event": "string", "anomaly.layer": "string",
}
SURICATA_HEADER_ITEM = {"name": "string", "value": "string"}

SHIPPED_POLICY = load_policy_text("""\
default: deny
zones:
  - {name: clients, plane: data, cidrs: [10.10.0.0/16, "fd00:10::/48"]}
  - {name: inference, plane: data, cidrs: [10.20.0.0/16, "fd00:20::/48"]}
rules:
  - {name: serving, from: clients, to: inference, protocols: [triton, grpc]}
""", "schema-test.yaml")


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(shipped_schema())


def _problems(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    validator = _validator()
    found = {(r["event_type"], "/".join(map(str, e.absolute_path)), e.message[:160])
             for r in records for e in validator.iter_errors(r)}
    return sorted(found)


def _analyze(paths: list[Path], engine: Engine | None = None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    analyzer = Analyzer(records.append, engine=engine, policy=PolicyMonitor(SHIPPED_POLICY))
    for path in paths:
        analyzer.analyze_file(path)
    return records


# -- the file ----------------------------------------------------------------------------------


def test_the_shipped_schema_is_current():
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "the field catalogue changed: regenerate with `python -m inspector.sinks.eveschema > "
        "inspector/data/eve.schema.json`")


def test_the_shipped_schema_is_a_valid_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(shipped_schema())


# -- records -----------------------------------------------------------------------------------


def test_every_record_of_the_shipped_captures_validates():
    ruleset = load_rules([default_rules_path()], load_config(None))
    records = _analyze(expand_paths([REPO / "pcaps"]), Engine(ruleset))
    kinds = {r["event_type"] for r in records}
    assert {"http", "grpc", "triton", "s3", "llm", "tcpstore", "nccl", "flow", "anomaly", "alert", "policy"} <= kinds
    assert _problems(records) == []


def test_every_record_of_the_rule_fixtures_validates():
    """Each fixture with its own rules, site config and policy: alerts of every shipped rule."""
    records: list[dict[str, Any]] = []

    def collect(paths: list[Path], ruleset: Any, **kwargs: Any) -> list[dict[str, Any]]:
        produced = analyze_captures(paths, ruleset, **kwargs)
        records.extend(produced)
        return produced

    results = run_rule_tests(REPO / "tests" / "signatures", collect)
    assert results and sum(1 for r in records if r["event_type"] == "alert") >= len(results) // 2
    assert _problems(records) == []


@pytest.mark.corpus
def test_every_record_of_the_corpus_validates(corpus_dir):
    records = _analyze(expand_paths([corpus_dir]))
    assert len(records) > 2000
    assert _problems(records) == []


# -- strictness --------------------------------------------------------------------------------


def _record() -> dict[str, Any]:
    return {"timestamp": "2026-01-01T00:00:02.001246+0000", "event_type": "http", "flow_id": 83374433276684,
            "community_id": "1:t9TVyjcP2zeeOkQbZTSsLv5VFo8=", "src_ip": "10.10.2.40", "src_port": 50619,
            "dest_ip": "10.20.1.7", "dest_port": 8001, "proto": "TCP", "app_proto": "http",
            "src_zone": "clients", "dest_zone": "inference",
            "http": {"hostname": "inference.local", "url": "/", "http_method": "GET", "status": 200,
                     "request_headers": [{"name": "host", "value": "inference.local"}]}, "tx_id": 0}


def _set(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    record = copy.deepcopy(record)
    *parents, last = path.split(".")
    target = record
    for part in parents:
        target = target[part]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return record


def test_a_good_record_validates():
    assert list(_validator().iter_errors(_record())) == []


@pytest.mark.parametrize(("path", "value", "message"), [
    ("surprise", 1, "Additional properties are not allowed ('surprise' was unexpected)"),
    ("http.surprise", 1, "Additional properties are not allowed ('surprise' was unexpected)"),
    ("flow_id", None, "None is not of type 'integer'"),
    ("src_port", "50619", "'50619' is not of type 'integer'"),
    ("timestamp", "2026-01-01 00:00:02", "'2026-01-01 00:00:02' does not match"),
    ("http.status", None, "None is not of type 'integer'"),  # Suricata's fields are never null
    ("dest_ip", KeyError, "'dest_ip' is a dependency of 'flow_id'"),
    ("event_type", KeyError, "'event_type' is a required property"),
    ("event_type", "alert", "'alert' is a required property"),
    ("event_type", "policy", "'policy' is a required property"),
])
def test_what_the_schema_refuses(path, value, message):
    errors = [e.message for e in _validator().iter_errors(_set(_record(), path, value))]
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_nested_protocol_values_may_be_null_but_not_mistyped():
    record = _set(_record(), "event_type", "grpc")
    record["grpc"] = {"service": "a.B", "method": "C", "encoding": None}
    assert list(_validator().iter_errors(record)) == []
    record["grpc"]["method"] = 7
    assert [e.message for e in _validator().iter_errors(record)] == ["7 is not of type 'string', 'null'"]


# -- Suricata compatibility ----------------------------------------------------------------------


def _definition(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        if node.get("type") == "array":
            node = node["items"]
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("path", sorted(SURICATA_TYPES))
def test_shared_fields_have_suricatas_type_and_are_never_null(path):
    definition = _definition(shipped_schema(), path)
    assert definition["type"] == SURICATA_TYPES[path]


def test_shared_timestamp_pattern_required_fields_and_containers():
    schema = shipped_schema()
    assert schema["properties"]["timestamp"]["pattern"] == SURICATA_TIMESTAMP
    assert {"timestamp", "event_type"} <= set(schema["required"])
    assert schema["properties"]["alert"]["properties"]["metadata"]["additionalProperties"] == {
        "type": "array", "items": {"type": "string"}}
    for headers in ("http.request_headers", "http.response_headers"):
        items = _definition(schema, headers)["items"]
        assert {name: items["properties"][name]["type"] for name in SURICATA_HEADER_ITEM} == SURICATA_HEADER_ITEM
    # the generator's list of Suricata fields is exactly the nested part of these expectations
    nested = {p for p in SURICATA_TYPES if "." in p and not p.startswith("alert.")}
    headers = {f"http.{side}_headers.{name}" for side in ("request", "response") for name in SURICATA_HEADER_ITEM}
    assert nested | headers | {"http.http2"} == SURICATA_FIELDS


def _suricata_subset_schema() -> dict[str, Any]:
    """Our expectations of Suricata's schema as a schema: the shared fields with Suricata's types,
    objects open to what Suricata does not know of."""
    root: dict[str, Any] = {"type": "object", "properties": {}, "required": ["timestamp", "event_type"]}
    for path, kind in SURICATA_TYPES.items():
        node = root
        *parents, last = path.split(".")
        for part in parents:
            node = node["properties"].setdefault(part, {"type": "object", "properties": {}})
        node["properties"][last] = {"type": kind}
    root["properties"]["timestamp"]["pattern"] = SURICATA_TIMESTAMP
    header = {"type": "object", "properties": {k: {"type": v} for k, v in SURICATA_HEADER_ITEM.items()}}
    for side in ("request_headers", "response_headers"):
        root["properties"]["http"]["properties"][side]["items"] = header
    root["properties"]["alert"]["properties"]["metadata"]["additionalProperties"] = {
        "type": "array", "items": {"type": "string"}}
    return root


def test_records_meet_suricatas_definitions_of_the_shared_fields():
    ruleset = load_rules([default_rules_path()], load_config(None))
    records = _analyze(expand_paths([REPO / "pcaps"]), Engine(ruleset))
    validator = jsonschema.Draft202012Validator(_suricata_subset_schema())
    assert sorted({e.message for r in records for e in validator.iter_errors(r)}) == []
    seen = {path for path in SURICATA_TYPES for r in records if _has(r, path)}
    assert seen >= set(SURICATA_TYPES) - {"http.redirect", "http.http_refer"}  # the shipped captures send neither


def _has(record: dict[str, Any], path: str) -> bool:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def test_schema_is_built_from_the_catalogue():
    from inspector.fields import FieldSpec

    fields = {"timestamp": FieldSpec("timestamp", "timestamp", "t", ("*",)),
              "event_type": FieldSpec("event_type", "string", "e", ("*",)),
              "x.items": FieldSpec("x.items", "list[object]", "i", ("x",)),
              "x.items.tags": FieldSpec("x.items.tags", "list[string]", "t", ("x",)),
              "x.free": FieldSpec("x.free", "object", "f", ("x",))}
    schema = build_schema(fields)
    assert schema["properties"]["x"] == {"type": "object", "additionalProperties": False, "properties": {
        "free": {"description": "f", "type": ["object", "null"]},
        "items": {"description": "i", "type": ["array", "null"], "items": {
            "type": "object", "additionalProperties": False, "properties": {
                "tags": {"description": "t", "anyOf": [{"type": ["string", "null"]},
                                                       {"type": "array", "items": {"type": ["string", "null"]}},
                                                       {"type": "null"}]}}}}}}
    assert re.fullmatch(schema["properties"]["timestamp"]["pattern"], "2026-01-01T00:00:00.000001+0000")
