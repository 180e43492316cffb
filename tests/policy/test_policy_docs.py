"""docs/policy.md's examples stay true: the zone rule and the suppression load, the CLI usage lines
name options that exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from inspector import fields
from inspector.cli import build_parser
from inspector.rules.config import load_config
from inspector.rules.layers import known_event_types
from inspector.rules.schema import build_rule
from inspector.rules.testing import rule_document

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "policy.md").read_text()


def test_the_zone_rule_example_compiles():
    block = re.search(r"lists them\):\n\n```yaml\n(.*?)```", DOC, re.S).group(1)
    example = yaml.safe_load(block)
    catalogue = fields.catalogue()
    rule, problems = build_rule(rule_document(example["detection"], event=example["event"]), "docs/policy.md",
                                catalogue=catalogue, variables=load_config().variables,
                                known_events=known_event_types(catalogue))
    assert problems == [] and rule is not None


def test_the_suppression_example_loads(tmp_path):
    block = re.search(r"```yaml\n(suppress:\n.*?)```", DOC, re.S).group(1)
    site = tmp_path / "site.yaml"
    site.write_text(block)
    config = load_config(site)
    assert config.suppressions.silences(4600001, {"src_zone": "training", "policy": {"to_zone": "mlops"}})
    assert not config.suppressions.silences(4600001, {"src_zone": "training", "policy": {"to_zone": "storage"}})


def test_the_usage_lines_name_real_options():
    parser = build_parser()
    for command in (["policy", "check", "x", "--policy", "p", "--format", "markdown", "--top", "5", "--eve", "e"],
                    ["policy", "lint", "p", "--strict", "--format", "json"],
                    ["analyze", "x", "--policy", "p", "--metrics-textfile", "m"]):
        assert parser.parse_args(command)
