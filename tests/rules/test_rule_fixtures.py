"""The suricata-verify-style fixture checker, driven by a canned analyze_fn.

The stand-in for the offline pipeline returns fixed EVE records per capture name; the real
analyze_fn is the pipeline's. Everything else (test.yaml, rules, config, checks) runs for real.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from inspector.rules import Config, load_rules, run_rule_tests
from inspector.rules.fixtures import fixture_dirs

RULE = """\
title: gRPC server reflection
id: 9a1e6a8e-0000-4000-8000-0000000000f1
sid: 2200001
status: test
level: low
event: grpc
detection:
  selection:
    grpc.service|startswith: grpc.reflection.
  filter:
    src_ip|cidr: $ADMIN_NETS
  condition: selection and not filter
"""

ALERT = {"event_type": "alert", "alert": {"signature_id": 2200001, "metadata": {"level": ["low"]}},
         "grpc": {"service": "grpc.reflection.v1.ServerReflection"}}
CANNED = {
    "positive.pcap": [{"event_type": "grpc", "grpc": {"service": "grpc.reflection.v1.ServerReflection"}}, ALERT],
    "negative.pcap": [{"event_type": "grpc", "grpc": {"service": "inference.GRPCInferenceService"}}],
}


def fake_analyze(pcaps, ruleset):
    """Canned records per capture; asserts it was handed a loaded rule set."""
    assert [r.sid for r in ruleset] == [2200001]
    return [record for pcap in pcaps for record in CANNED[Path(pcap).name]]


def fixture(root: Path, name: str, test_yaml: str, pcaps=("positive.pcap", "negative.pcap")) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for pcap in pcaps:
        (folder / pcap).write_bytes(b"")
    (folder / "test.yaml").write_text(textwrap.dedent(test_yaml))
    return folder


@pytest.fixture
def ruleset(catalog, tmp_path):
    (tmp_path / "rule.yml").write_text(RULE)
    return load_rules(tmp_path / "rule.yml", Config(variables={"ADMIN_NETS": []}))


def test_passing_fixtures(ruleset, tmp_path):
    root = tmp_path / "fixtures"
    fixture(root, "grpc_reflection/positive", """\
        pcap: positive.pcap
        checks:
          - filter: {count: 1, match: {event_type: alert, alert.signature_id: 2200001}}
          - filter: {count: 1, match: {alert.metadata.level: low}}
          - filter: {count: 1, match: {alert.metadata.level.0: low, grpc.service: grpc.reflection.v1.ServerReflection}}
          - filter: {count: 2, match: {}}
        """)
    fixture(root, "grpc_reflection/negative", """\
        pcap: [negative.pcap]
        checks:
          - filter: {count: 0, match: {event_type: alert}}
        """)
    results = run_rule_tests(root, fake_analyze, ruleset)
    assert [(r.path.name, r.checks, r.failures) for r in results] == [("negative", 1, ()), ("positive", 4, ())]
    assert all(r.ok for r in results)


def test_failing_checks_say_why(ruleset, tmp_path):
    fixture(tmp_path, "f", """\
        pcap: [positive.pcap, negative.pcap]
        checks:
          - filter: {count: 0, match: {event_type: alert, alert.signature_id: 2200001}}
          - filter: {count: 1, match: {alert.signature_id: "2200001"}}
          - filter: {count: 1, match: {alert.nothing.here: 1}}
          - filter: {count: 3, match: {event_type: grpc}}
          - {count: 1}
          - filter: {count: -1}
          - filter: {count: 1, match: [a]}
          - filter: {count: 1, where: {}}
        """)
    (result,) = run_rule_tests(tmp_path, fake_analyze, ruleset)
    assert not result.ok and result.checks == 8
    assert result.failures == (
        "check 1: expected 0 record(s) matching {'event_type': 'alert', 'alert.signature_id': 2200001}, found 1",
        "check 2: expected 1 record(s) matching {'alert.signature_id': '2200001'}, found 0",
        "check 3: expected 1 record(s) matching {'alert.nothing.here': 1}, found 0",
        "check 4: expected 3 record(s) matching {'event_type': 'grpc'}, found 2",
        "check 5: a check is {filter: {count: N, match: {...}}}",
        "check 6: filter count: must be an integer >= 0",
        "check 7: filter match: must be a map of dotted.path: value",
        "check 8: unknown filter key(s) where",
    )


def test_broken_fixtures_fail_without_raising(ruleset, tmp_path):
    fixture(tmp_path, "a_missing_pcap", "pcap: gone.pcap\nchecks:\n  - filter: {count: 0}\n")
    fixture(tmp_path, "b_no_checks", "pcap: positive.pcap\n")
    fixture(tmp_path, "c_bad_yaml", "pcap: [positive.pcap\n")
    fixture(tmp_path, "d_unknown_key", "pcap: positive.pcap\nrule: x\nchecks:\n  - filter: {count: 0}\n")
    fixture(tmp_path, "e_not_a_map", "- pcap\n")

    def exploding(pcaps, rules):
        raise RuntimeError("pipeline broke")

    fixture(tmp_path, "f_pipeline_error", "pcap: positive.pcap\nchecks:\n  - filter: {count: 0}\n")
    results = {r.path.name: r.failures for r in run_rule_tests(tmp_path, fake_analyze, ruleset)}
    assert results["a_missing_pcap"] == (f"pcap: {tmp_path / 'a_missing_pcap' / 'gone.pcap'} does not exist",)
    assert results["b_no_checks"] == ("checks: must be a non-empty list",)
    assert results["c_bad_yaml"][0].startswith(f"{tmp_path / 'c_bad_yaml' / 'test.yaml'}:2: YAML syntax error")
    assert results["d_unknown_key"] == ("unknown key 'rule' in test.yaml",)
    assert results["e_not_a_map"] == ("test.yaml must be a map with pcap: and checks:",)
    (pipeline,) = run_rule_tests(tmp_path / "f_pipeline_error", exploding, ruleset)
    assert pipeline.failures == ("analysis failed: RuntimeError: pipeline broke",)


def test_fixture_with_its_own_rules_and_config(catalog, tmp_path):
    folder = fixture(tmp_path, "own", """\
        pcap: positive.pcap
        rules: [rule.yml]
        config: site.yaml
        checks:
          - filter: {count: 1, match: {event_type: alert}}
        """)
    (folder / "rule.yml").write_text(RULE)
    (folder / "site.yaml").write_text("vars:\n  ADMIN_NETS: [10.0.0.0/8]\n")
    seen = {}

    def analyze(pcaps, rules):
        seen["vars"] = rules.config.variables["ADMIN_NETS"]
        return fake_analyze(pcaps, rules)

    (result,) = run_rule_tests(tmp_path, analyze)
    assert result.ok and seen["vars"] == ["10.0.0.0/8"]
    (folder / "rule.yml").write_text(RULE.replace("level: low", "level: lowest"))
    (result,) = run_rule_tests(tmp_path, analyze)
    assert result.failures == (f"{folder / 'rule.yml'}:5: level must be one of informational, low, medium, high, "
                               "critical; got 'lowest'",)


def test_no_rules_anywhere(tmp_path):
    fixture(tmp_path, "x", "pcap: positive.pcap\nchecks:\n  - filter: {count: 0}\n")
    (result,) = run_rule_tests(tmp_path, fake_analyze)
    assert result.failures == ("no rules: the fixture names none and none were given",)


def test_fixture_dirs_are_sorted_and_recursive(tmp_path):
    for name in ("b", "a/deep", "c"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "test.yaml").write_text("x: 1\n")
    assert [p.relative_to(tmp_path).as_posix() for p in fixture_dirs(tmp_path)] == ["a/deep", "b", "c"]
