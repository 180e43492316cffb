"""The shipped core captures (pcaps/core/) analyzed end to end against the generator's truth.

The truth file says what the generator put on the wire; these tests check the offline path
reports exactly that: every transaction with its fields, the anomalies provoked, the flows.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from inspector.analyze import Analyzer
from inspector.lab import corecaps

CORE = Path(__file__).resolve().parent.parent / "pcaps" / "core"
TRUTH = json.loads((CORE / "truth.json").read_text())
NOT_TRANSACTIONS = {"flow", "anomaly", "alert"}


def dotted(record: dict, path: str):
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return KeyError
        value = value[part]
    return value


def analyze(path: Path) -> tuple[Analyzer, list[dict]]:
    records: list[dict] = []
    analyzer = Analyzer(records.append)
    analyzer.analyze_file(path)
    return analyzer, records


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_capture_matches_truth(name):
    truth = TRUTH[name]
    analyzer, records = analyze(CORE / name)
    result = analyzer.stats.files[0]
    assert result.error is None
    assert result.packets == truth["packets"]

    transactions = [r for r in records if r["event_type"] not in NOT_TRANSACTIONS]
    assert len(transactions) == len(truth["transactions"]), [r["http"].get("url") for r in transactions]
    unmatched = list(transactions)
    for expected in truth["transactions"]:
        match = next((r for r in unmatched
                      if all(dotted(r, k) == v for k, v in expected.items())), None)
        assert match is not None, f"no record matches {expected}"
        unmatched.remove(match)

    flows = [r for r in records if r["event_type"] == "flow"]
    assert len(flows) == truth["flows"]
    anomalies = Counter(f"{r['anomaly']['layer']}.{r['anomaly']['event']}"
                        for r in records if r["event_type"] == "anomaly")
    assert anomalies == Counter(truth["anomalies"])


def test_every_record_has_the_common_fields():
    common = ("timestamp", "event_type", "flow_id", "community_id", "src_ip", "src_port", "dest_ip",
              "dest_port", "proto", "app_proto")
    for name in TRUTH:
        _, records = analyze(CORE / name)
        for record in records:
            assert all(key in record for key in common), record
            assert record["timestamp"].endswith("+0000") and len(record["timestamp"]) == 31
            json.dumps(record)  # serializable as is


def test_records_carry_no_secrets():
    _, records = analyze(CORE / "http2.pcap")
    text = json.dumps(records)
    assert "sk-test-0123456789abcdef" not in text
    assert "Bearer [redacted sha256:" in text


def test_midstream_flow_sides_found_by_content():
    _, records = analyze(CORE / "tcp-faults.pcap")
    midstream = [r for r in records if "http" in r and "midstream" in r["http"].get("url", "")]
    assert [(r["src_ip"], r["src_port"], r["dest_port"]) for r in midstream] == [("10.10.3.53", 1000, 8080)]


def test_generation_is_reproducible(tmp_path):
    truth = corecaps.generate(tmp_path)
    assert truth == TRUTH
    for name in TRUTH:
        assert (tmp_path / name).read_bytes() == (CORE / name).read_bytes(), name
