"""The shipped signature pack: layout, metadata, sid blocks, fixtures for every rule, the benign baseline.

* every rule is `signatures/<protocol>/<protocol>_<what>.yml` with Sigma metadata, a sid in its
  folder's block (signatures/README.md), unique id and sid, no retired sid, and a README row;
* every rule has a positive and a negative fixture (tests/signatures/<stem>/), they pass, and the
  captures regenerate byte for byte from inspector.lab.rulecaps;
* the benign baseline (Sigma's goodlog test): the whole pack over the corpus and the shipped
  captures raises exactly the alerts listed in signatures/known-false-positives.yaml.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from inspector.lab import rulecaps
from inspector.rules import load_config, load_rules, run_rule_tests
from inspector.rules.cli import analyze_captures
from inspector.rules.model import RuleSet

REPO = Path(__file__).resolve().parent.parent
SIGNATURES = REPO / "signatures"
FIXTURES = REPO / "tests" / "signatures"
RULE_FILES = sorted(SIGNATURES.rglob("*.yml"))
KNOWN_FILE = SIGNATURES / "known-false-positives.yaml"
BASELINE_CONFIG = FIXTURES / "baseline-site.yaml"
# pcaps/lab/ is attack traffic with ground truth: its alerts are scored against the truth (every
# alert on attack traffic, none on benign) by tests/lab/test_eval.py, not listed here.
SHIPPED_CAPTURES = sorted(p for p in (REPO / "pcaps").rglob("*.pcap") if "lab" not in p.relative_to(REPO).parts)
BLOCK_ROW = re.compile(r"^\| (\w+)[^|]*\| (\d+)-(\d+) \|$", re.MULTILINE)
RETIRED_ROW = re.compile(r"^\| (\d+) \| retired", re.MULTILINE)
RULE_ROW = re.compile(r"^\| (\d+) \| \[?([a-z0-9_]+/[a-z0-9_]+)", re.MULTILINE)
REASON = re.compile(r"(true|false) positive: \S")

Hits = Counter[tuple[int, str]]


def readme() -> str:
    return (SIGNATURES / "README.md").read_text()


def sid_blocks() -> dict[str, range]:
    return {m.group(1): range(int(m.group(2)), int(m.group(3)) + 1) for m in BLOCK_ROW.finditer(readme())}


def rule_documents() -> dict[Path, dict]:
    return {path: yaml.safe_load(path.read_text()) for path in RULE_FILES}


def test_pack_loads_with_the_default_config():
    ruleset = load_rules([SIGNATURES], load_config(None))
    assert len(ruleset) == len(RULE_FILES) >= 30


def test_the_known_alert_list_is_not_read_as_a_rule():
    assert KNOWN_FILE.is_file() and KNOWN_FILE.suffix == ".yaml"
    assert len(load_rules([SIGNATURES])) == len(RULE_FILES)


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.stem)
def test_rule_file_layout_metadata_and_sid_block(path):
    folder = path.parent.name
    assert re.fullmatch(rf"{folder}_[a-z0-9_]{{3,80}}\.yml", path.name), "name is <folder>_<what>.yml"
    document = yaml.safe_load(path.read_text())
    assert next(iter(document)) == "title", "title comes first"
    for key in ("id", "sid", "rev", "status", "level", "description", "references", "tags", "falsepositives"):
        assert document.get(key), f"{key} is required in the shipped pack"
    assert all(str(r).startswith("https://") for r in document["references"])
    assert any(t.startswith(("atlas.", "attack.")) for t in document["tags"]), "an ATLAS or ATT&CK tag"
    cves = {t.removeprefix("cve.") for t in document["tags"] if t.startswith("cve.")}
    text = f"{document['title']} {document['description']}"
    assert cves >= {c.removeprefix("CVE-") for c in re.findall(r"CVE-\d{4}-\d{4,}", text)}, "CVEs named are tagged"
    blocks = sid_blocks()
    assert folder in blocks, f"no sid block for {folder} in signatures/README.md"
    assert document["sid"] in blocks[folder]


def test_ids_and_sids_are_unique_and_retired_sids_stay_retired():
    documents = rule_documents()
    ids = Counter(d["id"] for d in documents.values())
    sids = Counter(d["sid"] for d in documents.values())
    assert [i for i, n in ids.items() if n > 1] == []
    assert [s for s, n in sids.items() if n > 1] == []
    retired = {int(m.group(1)) for m in RETIRED_ROW.finditer(readme())}
    assert retired >= {3100002, 3100004}
    assert retired.isdisjoint(sids)


def test_readme_lists_every_rule_with_its_sid():
    listed = {m.group(2): int(m.group(1)) for m in RULE_ROW.finditer(readme())}
    shipped = {f"{p.parent.name}/{p.stem}": d["sid"] for p, d in rule_documents().items()}
    assert listed == shipped


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.stem)
def test_every_rule_has_a_positive_and_a_negative_fixture(path):
    sid = yaml.safe_load(path.read_text())["sid"]
    for kind in ("positive", "negative"):
        spec = yaml.safe_load((FIXTURES / path.stem / kind / "test.yaml").read_text())
        assert (FIXTURES / path.stem / kind / spec["pcap"]).is_file()
        expected = [c["filter"]["count"] for c in spec["checks"]
                    if c["filter"]["match"].get("alert.signature_id") == sid]
        assert len(expected) == 1
        assert expected[0] >= 1 if kind == "positive" else expected[0] == 0
    assert (FIXTURES / path.stem / "README.md").is_file(), "a README says how the captures were made"


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


def test_rulecaps_fixtures_name_shipped_rules_and_their_sids():
    sids = {p.stem: d["sid"] for p, d in rule_documents().items()}
    assert {stem: f.sid for stem, f in rulecaps.FIXTURES.items()} == {s: sids[s] for s in rulecaps.FIXTURES}
    assert len(rulecaps.FIXTURES) >= 30


def test_fixture_folders_are_reproducible(tmp_path):
    """Every file rulecaps writes (captures, test.yaml, site.yaml, README) comes back byte for byte."""
    rulecaps.generate(tmp_path, SIGNATURES)
    for stem in rulecaps.FIXTURES:
        written = sorted(p.relative_to(tmp_path) for p in (tmp_path / stem).rglob("*") if p.is_file())
        shipped = sorted(p.relative_to(FIXTURES) for p in (FIXTURES / stem).rglob("*") if p.is_file())
        assert written == shipped, stem
        for relative in written:
            assert (tmp_path / relative).read_bytes() == (FIXTURES / relative).read_bytes(), relative


# -- the benign baseline ----------------------------------------------------------------------


def known_alerts() -> list[dict]:
    return yaml.safe_load(KNOWN_FILE.read_text())["known"]


def baseline_ruleset() -> RuleSet:
    return load_rules([SIGNATURES], load_config(BASELINE_CONFIG))


def baseline_hits(captures: list[tuple[str, Path]], ruleset: RuleSet) -> Hits:
    """(sid, capture name) -> alerts raised; each capture analyzed on its own."""
    hits: Hits = Counter()
    for name, path in captures:
        for record in analyze_captures([path], ruleset):
            if record["event_type"] == "alert":
                hits[(record["alert"]["signature_id"], name)] += 1
    return hits


def expected_hits(prefix: str) -> Hits:
    return Counter({(e["sid"], e["capture"]): e["count"] for e in known_alerts()
                    if e["capture"].startswith(prefix)})


def unexplained(hits: Hits, expected: Hits) -> dict[str, list[str]]:
    """Alerts not listed (or with another count), and listed alerts no longer raised."""
    return {"new or changed": [f"sid {sid} x{n} on {name}" for (sid, name), n in sorted(hits.items())
                               if expected.get((sid, name)) != n],
            "stale": [f"sid {sid} x{n} on {name}" for (sid, name), n in sorted(expected.items())
                      if (sid, name) not in hits]}


def test_known_alert_list_is_well_formed():
    entries = known_alerts()
    sids = {d["sid"] for d in rule_documents().values()}
    keys = Counter((e["sid"], e["capture"]) for e in entries)
    assert [k for k, n in keys.items() if n > 1] == []
    for entry in entries:
        assert set(entry) == {"sid", "capture", "count", "reason"}, entry
        assert entry["sid"] in sids, entry
        assert isinstance(entry["count"], int) and entry["count"] >= 1, entry
        assert REASON.match(entry["reason"]), entry
        assert entry["capture"].startswith(("corpus/", "pcaps/")), entry
        if entry["capture"].startswith("pcaps/"):
            assert (REPO / entry["capture"]).is_file(), entry


def test_benign_baseline_over_the_shipped_captures():
    captures = [(str(p.relative_to(REPO)), p) for p in SHIPPED_CAPTURES]
    assert len(captures) >= 20
    hits = baseline_hits(captures, baseline_ruleset())
    assert unexplained(hits, expected_hits("pcaps/")) == {"new or changed": [], "stale": []}


def test_benign_baseline_over_the_corpus(corpus_dir):
    with open(corpus_dir / "INVENTORY.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    captures = [(f"corpus/{row['local_path']}", corpus_dir / row["local_path"]) for row in rows]
    assert len(captures) >= 150
    hits = baseline_hits(captures, baseline_ruleset())
    assert unexplained(hits, expected_hits("corpus/")) == {"new or changed": [], "stale": []}


def test_the_baseline_comparison_reports_new_changed_and_stale_alerts():
    expected = Counter({(1, "a"): 2, (2, "b"): 1})
    hits = Counter({(1, "a"): 3, (3, "c"): 1})
    assert unexplained(hits, expected) == {"new or changed": ["sid 1 x3 on a", "sid 3 x1 on c"],
                                           "stale": ["sid 2 x1 on b"]}
