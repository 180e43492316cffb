"""Entries of map fields in rules: `triton.parameters.<key>`, as the EVE record shows them.

A map is an object field the catalogue declares without sub-fields (its keys are the peer's:
request parameters). A rule names one entry by its key; the entry's type is the rule's values'
(strings, numbers or booleans), and it matches record values of that type only.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from inspector import fields
from inspector.analyze import Analyzer
from inspector.engine import Engine
from inspector.rules import RuleLoadError, load_rules
from inspector.rules.matchers import map_fields

REPO = Path(__file__).resolve().parents[2]


def _rule(directory: Path, sid: int, selection: str, event: str = "triton", extra: str = "") -> Path:
    path = directory / f"r{sid}.yml"
    path.write_text(f"title: map entry {sid}\nid: {uuid.uuid4()}\nsid: {sid}\nstatus: test\nlevel: low\n"
                    f"event: {event}\ndetection:\n  sel:\n    {selection}\n  condition: sel\n{extra}")
    return path


def _alerts(rules: Path, capture: str) -> dict[int, int]:
    engine = Engine(load_rules(rules))
    alerts: dict[int, int] = {}
    analyzer = Analyzer(lambda r: None, engine=engine)
    analyzer.analyze_file(REPO / "pcaps" / "clients" / capture)
    for (sid, _), count in analyzer.stats.alerts.items():
        alerts[sid] = count
    return alerts


def test_the_catalogue_declares_triton_parameters_as_its_map():
    assert "triton.parameters" in map_fields(fields.catalogue())
    assert "triton.log_settings" not in map_fields(fields.catalogue())  # declared with its sub-fields


def test_parameters_of_real_clients_match_by_key(tmp_path):
    """tritonclient's REST inferences ask for binary_data_output: true (2 of them); its generate
    call sends max_tokens 8; the model unload sends unload_dependents: false."""
    _rule(tmp_path, 9900001, "triton.parameters.binary_data_output: true")
    _rule(tmp_path, 9900002, "triton.parameters.max_tokens|gte: 8")
    _rule(tmp_path, 9900003, "triton.parameters.unload_dependents: false")
    _rule(tmp_path, 9900004, "triton.parameters.max_tokens: '8'")  # a string never equals the number 8
    _rule(tmp_path, 9900005, "triton.parameters.binary_data_output|exists: true")
    assert _alerts(tmp_path, "triton_rest.pcap") == {9900001: 2, 9900002: 1, 9900003: 1, 9900005: 2}


def test_a_parameter_can_key_a_rate_window(tmp_path):
    _rule(tmp_path, 9900011, "triton.parameters.binary_data_output: true",
          extra="rate:\n  by: [src_ip, triton.parameters.binary_data_output]\n  count: 2\n  window: 1h\n")
    assert _alerts(tmp_path, "triton_rest.pcap") == {9900011: 1}


@pytest.mark.parametrize(("selection", "event", "message"), [
    ("triton.parameters.a.b: 1", "triton",
     "triton.parameters is a map of key -> value: name one key (triton.parameters.<key>), not a path below it"),
    ("triton.parameters.stream: [true, 'yes']", "triton",
     "triton.parameters.stream: a map entry's values must be all strings, all numbers or all booleans"),
    ("triton.parameters.host|cidr: 10.0.0.0/8", "triton",
     "field 'triton.parameters.host' is a map entry: cidr applies to IP addresses"),
    ("triton.parameters.stream: true", "http",
     "field 'triton.parameters.stream' is not carried by http records (it is on: triton"),
    ("triton.parameters.temperature|gt: high", "triton", "triton.parameters.temperature|gt needs a number"),
])
def test_map_entry_mistakes_are_located(tmp_path, selection, event, message):
    path = _rule(tmp_path, 9900021, selection, event=event)
    with pytest.raises(RuleLoadError) as info:
        load_rules(path)
    assert [(e.file, e.line) for e in info.value.errors] == [(str(path), 9)]
    assert message in info.value.errors[0].message
