"""Strict validation of one rule: each mistake gives its own clear error, with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inspector.rules import Config, load_rules
from inspector.rules.errors import RuleError, RuleLoadError
from inspector.rules.testing import rule_document

SEL = {"sel": {"http.url": "/x"}, "condition": "sel"}


@pytest.fixture
def file_errors(catalog, tmp_path):
    """file_errors(detection, extra keys) -> (path, text, errors) of loading that rule from a file."""

    def load(detection: dict, extra: dict) -> tuple[Path, str, list[RuleError]]:
        path = tmp_path / "rule.yml"
        text = yaml.safe_dump(rule_document(detection, **extra), sort_keys=False)
        path.write_text(text)
        with pytest.raises(RuleLoadError) as info:
            load_rules(path, Config(variables={"ADMIN_NETS": []}))
        return path, text, list(info.value.errors)

    return load


def assert_located(loaded: tuple[Path, str, list[RuleError]], message: str, anchor: str) -> None:
    """Some error carries `message`, the rule's file, and the line of the first `anchor` in it."""
    path, text, errors = loaded
    line = next(n for n, content in enumerate(text.splitlines(), 1) if anchor in content)
    found = [(e.file, e.line) for e in errors if message in e.message]
    assert found == [(str(path), line)], (errors, text)


# (id, detection, extra rule keys, expected message fragment, text on the line the error must name)
DETECTION_ERRORS = [
    ("unknown-field", {"sel": {"http.uri": "/x"}, "condition": "sel"}, {},
     "unknown field 'http.uri' (did you mean 'http.url'?)", "http.uri:"),
    ("field-not-on-event", {"sel": {"grpc.method": "X"}, "condition": "sel"}, {},
     "field 'grpc.method' is not carried by http records (it is on: grpc)", "grpc.method:"),
    ("triton-field-on-grpc-rule", {"sel": {"triton.model": "X"}, "condition": "sel"}, {"event": "grpc"},
     "field 'triton.model' is not carried by grpc records", "triton.model:"),
    ("unknown-modifier", {"sel": {"http.url|contans": "x"}, "condition": "sel"}, {},
     "http.url: unknown modifier 'contans' (did you mean 'contains'?)", "http.url|contans:"),
    ("two-operators", {"sel": {"http.url|contains|startswith": "x"}, "condition": "sel"}, {},
     "modifiers contains and startswith cannot be combined", "http.url|contains|startswith:"),
    ("repeated-modifier", {"sel": {"http.url|contains|contains": "x"}, "condition": "sel"}, {},
     "a modifier is repeated", "contains|contains:"),
    ("exists-with-other", {"sel": {"http.url|exists|all": True}, "condition": "sel"}, {},
     "exists takes no other modifier", "exists|all:"),
    ("regex-flag-without-re", {"sel": {"http.url|contains|i": "x"}, "condition": "sel"}, {},
     "modifier i only applies to re", "contains|i:"),
    ("cased-with-re", {"sel": {"http.url|re|cased": "x"}, "condition": "sel"}, {},
     "cased does not apply to re (use re|i", "re|cased:"),
    ("cased-with-gt", {"sel": {"http.status|gt|cased": 1}, "condition": "sel"}, {},
     "cased does not apply to gt", "gt|cased:"),
    ("base64offset-without-contains", {"sel": {"http.url|base64offset": "x"}, "condition": "sel"}, {},
     "base64offset needs contains", "base64offset:"),
    ("base64-with-re", {"sel": {"http.url|base64|re": "x"}, "condition": "sel"}, {},
     "base64 does not apply to re", "base64|re:"),
    ("neq-all", {"sel": {"http.url|neq|all": ["a", "b"]}, "condition": "sel"}, {}, "drop all", "neq|all:"),
    ("bad-regex", {"sel": {"http.url|re": "(unclosed"}, "condition": "sel"}, {},
     "http.url|re: bad regular expression '(unclosed'", "http.url|re:"),
    ("bad-cidr", {"sel": {"src_ip|cidr": "10.0.0.0/33"}, "condition": "sel"}, {},
     "src_ip|cidr: bad CIDR '10.0.0.0/33'", "src_ip|cidr:"),
    ("ip-eq-network", {"sel": {"src_ip": "10.0.0.0/8"}, "condition": "sel"}, {},
     "'10.0.0.0/8' is not an IP address; for networks use src_ip|cidr", "src_ip:"),
    ("unknown-variable", {"sel": {"src_ip|cidr": "$ADMIN_NET"}, "condition": "sel"}, {},
     "unknown variable $ADMIN_NET (did you mean $ADMIN_NETS?)", "src_ip|cidr:"),
    ("string-for-integer", {"sel": {"http.status": "200"}, "condition": "sel"}, {},
     "http.status is integer: value '200' should be a number", "http.status:"),
    ("number-for-string", {"sel": {"http.url": 5}, "condition": "sel"}, {},
     "http.url is string: value 5 should be a string", "http.url:"),
    ("string-for-boolean", {"sel": {"grpc.compressed": "yes"}, "condition": "sel"}, {"event": "grpc"},
     "grpc.compressed is boolean: value 'yes' should be true or false", "grpc.compressed:"),
    ("bool-for-integer", {"sel": {"http.status": True}, "condition": "sel"}, {},
     "value True should be a number", "http.status:"),
    ("object-equality", {"sel": {"triton.log_settings": "x"}, "condition": "sel"}, {"event": "triton"},
     "field 'triton.log_settings' is an object: only exists applies", "triton.log_settings:"),
    ("gt-on-string-field", {"sel": {"http.url|gt": 5}, "condition": "sel"}, {},
     "field 'http.url' is string: gt applies to numbers", "http.url|gt:"),
    ("contains-on-number-field", {"sel": {"http.status|contains": "5"}, "condition": "sel"}, {},
     "field 'http.status' is integer: contains applies to strings", "http.status|contains:"),
    ("cidr-on-number-field", {"sel": {"src_port|cidr": "10.0.0.0/8"}, "condition": "sel"}, {},
     "cidr applies to IP addresses", "src_port|cidr:"),
    ("cidr-on-string-field", {"sel": {"http.hostname|cidr": "10.0.0.0/8"}, "condition": "sel"}, {},
     "field 'http.hostname' is string: cidr applies to IP addresses", "http.hostname|cidr:"),
    ("gt-string-value", {"sel": {"http.status|gt": "500"}, "condition": "sel"}, {},
     "http.status|gt needs a number, got '500'", "http.status|gt:"),
    ("null-with-contains", {"sel": {"http.url|contains": None}, "condition": "sel"}, {},
     "null is only allowed as a plain equality value", "http.url|contains:"),
    ("exists-not-bool", {"sel": {"http.url|exists": "yes"}, "condition": "sel"}, {},
     "http.url|exists takes true or false", "http.url|exists:"),
    ("empty-value-list", {"sel": {"http.url": []}, "condition": "sel"}, {}, "empty list of values", "http.url:"),
    ("map-value", {"sel": {"http.url": {"a": 1}}, "condition": "sel"}, {},
     "a field's value must be a scalar or a list of scalars", "http.url:"),
    ("nested-list-value", {"sel": {"http.url": [["a"]]}, "condition": "sel"}, {},
     "list values must be scalars", "- - a"),
    ("missing-field-name", {"sel": {"|contains": "x"}, "condition": "sel"}, {}, "missing field name", "|contains"),
    ("keyword-selection", {"sel": ["a", "b"], "condition": "sel"}, {},
     "keyword lists without a field are not supported", "sel:"),
    ("scalar-selection", {"sel": "x", "condition": "sel"}, {}, "selection 'sel' must be a map", "sel:"),
    ("empty-selection", {"sel": {}, "condition": "sel"}, {}, "empty selection map", "sel:"),
    ("unknown-selection", {"sel": {"http.url": "/"}, "condition": "sel and other"}, {},
     "condition: unknown selection 'other' (selections: sel)", "condition:"),
    ("bad-condition", {"sel": {"http.url": "/"}, "condition": "sel and"}, {},
     "condition: condition ends where a selection was expected", "condition:"),
    ("unused-selection", {"sel": {"http.url": "/"}, "spare": {"http.url": "/y"}, "condition": "sel"}, {},
     "selection 'spare' is not used by the condition", "spare:"),
    ("keyword-name", {"them": {"http.url": "/"}, "condition": "1 of them"}, {}, "bad selection name 'them'", "them:"),
    ("timeframe", {"sel": {"http.url": "/"}, "timeframe": "5m", "condition": "sel"}, {},
     "timeframe is not supported: use a rate: block", "timeframe:"),
    ("no-condition", {"sel": {"http.url": "/"}}, {}, "detection has no condition", "detection:"),
    ("condition-list", {"sel": {"http.url": "/"}, "condition": ["sel"]}, {},
     "condition must be one string", "condition:"),
    ("no-selection", {"condition": "sel"}, {}, "detection has no selection", "detection:"),
]


@pytest.mark.parametrize(("detection", "extra", "message", "anchor"), [c[1:] for c in DETECTION_ERRORS],
                         ids=[c[0] for c in DETECTION_ERRORS])
def test_detection_error(file_errors, detection, extra, message, anchor):
    assert_located(file_errors(detection, extra), message, anchor)


# (id, extra or replaced rule keys, expected message fragment, text on the line the error must name)
TOP_LEVEL_ERRORS = [
    ("unknown-key", {"severity": "high"}, "unknown key 'severity'", "severity:"),
    ("logsource", {"logsource": {"product": "x"}}, "inspector rules use event: instead of logsource:", "logsource:"),
    ("bad-uuid", {"id": "not-a-uuid"}, "id must be a UUID", "id:"),
    ("sid-zero", {"sid": 0}, "sid must be an integer from 1 to 4294967295, got 0", "sid:"),
    ("sid-string", {"sid": "3100001"}, "sid must be an integer", "sid:"),
    ("sid-bool", {"sid": True}, "sid must be an integer", "sid:"),
    ("rev-zero", {"rev": 0}, "rev must be an integer from 1", "rev:"),
    ("bad-level", {"level": "severe"}, "level must be one of informational, low, medium, high, critical", "level:"),
    ("bad-status", {"status": "beta"}, "status must be one of stable, test, experimental, deprecated", "status:"),
    ("bad-action", {"action": "drop"}, "action must be one of alert, block; got 'drop'", "action:"),
    ("empty-title", {"title": "  "}, "title must be a non-empty string", "title:"),
    ("title-not-string", {"title": ["a"]}, "title must be a non-empty string", "title:"),
    ("bad-tag", {"tags": ["ATLAS.AML.T0049"]}, "tag 'ATLAS.AML.T0049' is not namespace.value", "ATLAS.AML.T0049"),
    ("tags-not-list", {"tags": "atlas.aml.t0049"}, "tags must be a list of strings", "tags:"),
    ("references-not-list", {"references": "https://x"}, "references must be a list of strings", "references:"),
    ("bad-date", {"date": "yesterday"}, "date must be a date YYYY-MM-DD", "date:"),
    ("impossible-date-quoted", {"date": "2026-13-45"}, "bad date '2026-13-45' in date: month must be in 1..12",
     "date:"),
    ("impossible-modified", {"modified": "2026/02/30"}, "bad date '2026/02/30' in modified: day is out of range",
     "modified:"),
    ("unknown-event", {"event": "trtion"}, "unknown event type 'trtion' (did you mean 'triton'?)", "event:"),
    ("event-not-string", {"event": 5}, "event must be an event type or a list of them", "event:"),
    ("event-twice", {"event": ["http", "http"]}, "event lists a type twice", "event:"),
    ("rate-not-map", {"rate": 5}, "rate must be a map with by:, count:, window:", "rate:"),
    ("rate-missing-count", {"rate": {"window": "60s"}}, "rate needs count:", "rate:"),
    ("rate-unknown-key", {"rate": {"count": 5, "window": "1m", "seconds": 5}},
     "unknown rate key 'seconds'", "seconds:"),
    ("rate-bad-window", {"rate": {"count": 5, "window": "60x"}},
     "rate window '60x' is not a duration like 60s, 5m, 1h", "window:"),
    ("rate-zero-window", {"rate": {"count": 5, "window": 0}}, "rate window must be positive", "window:"),
    ("rate-zero-count", {"rate": {"count": 0, "window": "1m"}}, "rate count must be an integer from 1", "count:"),
    ("rate-bool-count", {"rate": {"count": True, "window": "1m"}}, "rate count must be an integer", "count:"),
    ("rate-unknown-by", {"rate": {"by": ["src_addr"], "count": 5, "window": "1m"}},
     "rate by: unknown field 'src_addr'", "src_addr"),
    ("rate-by-object", {"rate": {"by": ["http.request_headers"], "count": 5, "window": "1m"}},
     "rate by: field 'http.request_headers' is an object", "- http.request_headers"),
    ("rate-by-wrong-event", {"rate": {"by": ["grpc.method"], "count": 5, "window": "1m"}},
     "rate by: field 'grpc.method' is not carried by http records", "- grpc.method"),
    ("rate-unknown-var", {"rate": {"count": "$NOPE", "window": "1m"}}, "unknown variable $NOPE", "count:"),
    ("rate-var-wrong-type", {"rate": {"count": "$ADMIN_NETS", "window": "1m"}},
     "rate count must be an integer from 1 to 1000000, got '$ADMIN_NETS' ($ADMIN_NETS is [])", "count:"),
]


@pytest.mark.parametrize(("extra", "message", "anchor"), [c[1:] for c in TOP_LEVEL_ERRORS],
                         ids=[c[0] for c in TOP_LEVEL_ERRORS])
def test_top_level_error(file_errors, extra, message, anchor):
    assert_located(file_errors(SEL, extra), message, anchor)


def test_missing_required_keys_are_each_reported(catalog):
    from inspector.rules.layers import known_event_types
    from inspector.rules.schema import REQUIRED_KEYS, build_rule

    _, errors = build_rule({"description": "x"}, "f.yml", catalogue=catalog, variables={},
                           known_events=known_event_types(catalog))
    assert sorted(e.message for e in errors) == sorted(f"missing required key {k!r}" for k in REQUIRED_KEYS)


def test_all_errors_of_a_rule_are_collected(rule_errors):
    errors = rule_errors({"sel": {"http.uri": "/", "http.status|gt": "x", "src_ip|cidr": "nope"},
                          "condition": "sel or missing"}, level="loud", sid=-1)
    assert len(errors) == 6, errors  # sid, level, field, gt value, cidr, condition


def test_rate_variables_resolve(compile_rule):
    rule = compile_rule(SEL, rate={"by": ["src_ip"], "count": "$N", "window": "$W"}, variables={"N": 7, "W": "2m"})
    assert (rule.rate.count, rule.rate.window, rule.rate.describe()) == (7, 120.0, "7 in 2m by src_ip")


def test_valid_rule_keeps_metadata(compile_rule):
    rule = compile_rule(SEL, rev=3, tags=["atlas.aml.t0049", "cve.2024-0087"], references=["https://example.org"],
                        action="block", level="critical", date="2026/01/02", category="Model tampering",
                        event=["grpc", "http"])
    assert (rule.rev, rule.tags, rule.action, rule.severity, rule.date, rule.category, rule.events) == (
        3, ("atlas.aml.t0049", "cve.2024-0087"), "block", 1, "2026-01-02", "Model tampering", ("grpc", "http"))


def test_default_category_and_severity(compile_rule):
    rule = compile_rule({"sel": {"triton.model": "m"}, "condition": "sel"}, event="triton", level="informational")
    assert (rule.category, rule.severity, rule.action, rule.rev) == ("triton informational", 4, "alert", 1)


def test_compile_error_is_rule_load_error(compile_rule):
    with pytest.raises(RuleLoadError) as info:
        compile_rule({"sel": {"http.nope": 1}, "condition": "sel"})
    assert [e.file for e in info.value.errors] == ["<test>"]


# A rule written by hand: YAML reads an unquoted 2026-13-45 as a timestamp (PyYAML's constructor
# raised ValueError on it, out of the loader, as a traceback).
DATED_RULE = """\
title: dated
id: b1ab60b1-b941-4a1f-9fb6-5d98ca0cc4e3
sid: 9220031
status: test
level: low
event: http
detection:
  s: {http.url: 2026-02-30}
  condition: s
date: DATE
"""


@pytest.mark.parametrize(("date", "problem"), [("2026-13-45", "month must be in 1..12"),
                                                ("2026-02-30", "day is out of range for month"),
                                                ("'2026-13-45'", "month must be in 1..12")])
def test_an_impossible_date_is_a_located_error(catalog, tmp_path, date, problem):
    path = tmp_path / "dated.yml"
    path.write_text(DATED_RULE.replace("DATE", date))
    with pytest.raises(RuleLoadError) as info:
        load_rules(path)
    assert [(e.file, e.line) for e in info.value.errors] == [(str(path), 10)]
    assert problem in info.value.errors[0].message and "bad date" in info.value.errors[0].message


def test_a_value_yaml_reads_as_a_date_is_the_text_written(catalog, tmp_path):
    """`http.url: 2026-02-30` (not a date) and `2026-01-02T10:00:00Z` (one) compare as written."""
    path = tmp_path / "dated.yml"
    path.write_text(DATED_RULE.replace("DATE", "2026-01-02").replace(
        "{http.url: 2026-02-30}", "{http.url: [2026-02-30, 2026-01-02T10:00:00Z]}"))
    (rule,) = load_rules(path)
    assert rule.date == "2026-01-02"
    assert rule.match({"event_type": "http", "http": {"url": "2026-02-30"}})
    assert rule.match({"event_type": "http", "http": {"url": "2026-01-02T10:00:00Z"}})
    assert not rule.match({"event_type": "http", "http": {"url": "2026-01-02T10:00:00+00:00"}})


def test_a_bad_date_fails_validate_without_a_traceback(tmp_path):
    """The command line, on the real catalogue: `rules validate` lists it and fails (1);
    `analyze --rules` refuses to start (2)."""
    import subprocess
    import sys

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "dated.yml").write_text(DATED_RULE.replace("DATE", "2026-13-45"))
    validate = subprocess.run([sys.executable, "-m", "inspector.cli", "rules", "validate", str(rules)],
                              capture_output=True, text=True, timeout=120)
    assert validate.returncode == 1 and "Traceback" not in validate.stderr
    assert f"{rules / 'dated.yml'}:10: bad date '2026-13-45' in date: month must be in 1..12" in validate.stdout
    capture = Path(__file__).resolve().parents[2] / "pcaps" / "core" / "http1.pcap"
    analyze = subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", str(capture), "--rules", str(rules),
                              "--eve", str(tmp_path / "eve.json")], capture_output=True, text=True, timeout=120)
    assert analyze.returncode == 2 and "Traceback" not in analyze.stderr
    assert "dated.yml:10: bad date '2026-13-45'" in analyze.stderr
