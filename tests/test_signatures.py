"""The shipped signature pack: layout, sid blocks, fixtures for every rule, fixtures pass."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from inspector.lab import rulecaps
from inspector.rules import load_config, load_rules, run_rule_tests
from inspector.rules.cli import analyze_captures

REPO = Path(__file__).resolve().parent.parent
SIGNATURES = REPO / "signatures"
FIXTURES = REPO / "tests" / "signatures"
RULE_FILES = sorted(SIGNATURES.rglob("*.yml"))
BLOCK_ROW = re.compile(r"^\| (\w+)[^|]*\| (\d+)-(\d+) \|$", re.MULTILINE)


def sid_blocks() -> dict[str, range]:
    text = (SIGNATURES / "README.md").read_text()
    return {m.group(1): range(int(m.group(2)), int(m.group(3)) + 1) for m in BLOCK_ROW.finditer(text)}


def test_pack_loads_with_the_default_config():
    ruleset = load_rules([SIGNATURES], load_config(None))
    assert len(ruleset) == len(RULE_FILES) >= 10


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.stem)
def test_rule_file_layout_and_sid_block(path):
    folder = path.parent.name
    assert re.fullmatch(rf"{folder}_[a-z0-9_]{{3,80}}\.yml", path.name), "name is <folder>_<what>.yml"
    document = yaml.safe_load(path.read_text())
    assert next(iter(document)) == "title", "title comes first"
    for key in ("id", "sid", "rev", "status", "level", "description", "references", "tags", "falsepositives"):
        assert document.get(key), f"{key} is required in the shipped pack"
    blocks = sid_blocks()
    assert folder in blocks, f"no sid block for {folder} in signatures/README.md"
    assert document["sid"] in blocks[folder]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.stem)
def test_every_rule_has_a_positive_and_a_negative_fixture(path):
    for kind in ("positive", "negative"):
        spec = yaml.safe_load((FIXTURES / path.stem / kind / "test.yaml").read_text())
        assert (FIXTURES / path.stem / kind / spec["pcap"]).is_file()
        sid = yaml.safe_load(path.read_text())["sid"]
        expected = [c["filter"]["count"] for c in spec["checks"]
                    if c["filter"]["match"].get("alert.signature_id") == sid]
        assert expected == ([1] if kind == "positive" else [0]) or (kind == "positive" and expected[0] >= 1)


def test_all_fixtures_pass():
    results = run_rule_tests(FIXTURES, analyze_captures)
    assert len(results) == 2 * len(RULE_FILES)
    failures = {str(r.path): r.failures for r in results if not r.ok}
    assert failures == {}


def test_a_fixture_check_can_fail(tmp_path):
    """The runner is not a rubber stamp: the positive capture with a count of 0 fails."""
    source = FIXTURES / "http_request_smuggling" / "positive"
    folder = tmp_path / "flipped"
    folder.mkdir()
    (folder / "input.pcap").write_bytes((source / "input.pcap").read_bytes())
    (folder / "test.yaml").write_text(
        f"pcap: input.pcap\nrules: [{SIGNATURES / 'http' / 'http_request_smuggling.yml'}]\n"
        "checks:\n  - filter: {count: 0, match: {event_type: alert, alert.signature_id: 2100001}}\n")
    (result,) = run_rule_tests(tmp_path, analyze_captures)
    assert not result.ok and "found 1" in result.failures[0]


def test_fixture_captures_are_reproducible(tmp_path):
    rulecaps.generate(tmp_path, SIGNATURES)
    for pcap in sorted(FIXTURES.rglob("input.pcap")):
        regenerated = tmp_path / pcap.relative_to(FIXTURES)
        assert regenerated.read_bytes() == pcap.read_bytes(), pcap
