"""An exception out of a parser ends that flow's inspection, not the offline run.

Parsers must not raise on any input (the fuzzers hunt for the inputs that make them); when one
does, the analysis keeps every record written so far, names the exception and where it was
raised in an anomaly on the flow, counts it, and goes on with the other flows. No shipped parser
is known to raise, so the test makes one raise on purpose (a stand-in: the only mock here)."""

from __future__ import annotations

from pathlib import Path

import pytest

import inspector.protocols.triton_grpc as triton_grpc
from fuzz.targets import TARGETS
from inspector.analyze import Analyzer

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "pcaps" / "lab"


def _records(path: Path) -> tuple[list[dict], Analyzer]:
    records: list[dict] = []
    analyzer = Analyzer(records.append)
    analyzer.analyze_file(path)
    return records, analyzer


def _broken(*args, **kwargs):
    raise ZeroDivisionError("a parser bug")


def test_a_raising_parser_ends_its_flows_inspection_and_the_run_goes_on(monkeypatch):
    clean, _ = _records(LAB / "mixed.pcap")
    monkeypatch.setattr(triton_grpc, "infer_request", _broken)  # ModelInfer requests now raise
    records, analyzer = _records(LAB / "mixed.pcap")

    failures = [r for r in records if r["event_type"] == "anomaly" and r["anomaly"]["event"] == "parser_error"]
    assert failures, "the exception was not reported"
    assert all(r["anomaly"]["layer"] == "inspector" and r["anomaly"]["type"] == "applayer" for r in failures)
    assert all("ZeroDivisionError at test_parser_errors.py:" in r["anomaly"]["message"] for r in failures)
    assert analyzer.stats.detection["parser_errors"] == len(failures)
    failed_flows = {r["flow_id"] for r in failures}
    # Every flow still gets its flow record, and the flows without ModelInfer their whole records.
    assert {r["flow_id"] for r in records if r["event_type"] == "flow"} == \
        {r["flow_id"] for r in clean if r["event_type"] == "flow"}
    untouched = [r for r in clean if r.get("flow_id") not in failed_flows and r["event_type"] != "flow"]
    assert untouched and all(r in records for r in untouched)


def test_without_containment_the_exception_propagates(monkeypatch):
    """The fuzz harness drives a router that does not contain: a raising parser is a crash there."""
    monkeypatch.setattr(triton_grpc, "infer_request", _broken)
    target = TARGETS["triton_grpc"]
    with pytest.raises(ZeroDivisionError):
        for seed in target.seeds():
            target.run(seed)


def test_the_capture_fuzz_target_sees_the_exception_too(monkeypatch):
    """The capture target drives the whole offline path through `Analyzer`, whose routers contain
    by default: the harness turns that off, or a parser crash found through a capture would be
    written as an anomaly and never reported by the fuzzer."""
    monkeypatch.setattr(triton_grpc, "infer_request", _broken)
    with pytest.raises(ZeroDivisionError):
        TARGETS["capture_reader"].run((LAB / "mixed.pcap").read_bytes())
