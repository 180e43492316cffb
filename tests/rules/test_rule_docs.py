"""The examples in docs/rules.md load (rules against the default config, the config example too)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inspector.rules import load_config, load_rules

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
RULE_BLOCKS = [b for b in BLOCKS if b.startswith("title:")]


def test_the_doc_has_examples():
    assert len(RULE_BLOCKS) == 3
    assert any(b.startswith("vars:") for b in BLOCKS)


@pytest.mark.parametrize("block", RULE_BLOCKS, ids=lambda b: b.splitlines()[0])
def test_rule_examples_load(catalog, tmp_path, block):
    path = tmp_path / "rule.yml"
    path.write_text(block)
    (rule,) = load_rules(path)
    assert rule.title == block.splitlines()[0].removeprefix("title: ")


def test_config_example_loads(catalog, tmp_path):
    (block,) = [b for b in BLOCKS if b.startswith("vars:")]
    path = tmp_path / "site.yaml"
    path.write_text(block)
    config = load_config(path)
    assert config.variables["ADMIN_NETS"] == ["10.20.0.0/16", "192.168.50.10"]
    assert len(config.suppressions) == 2
