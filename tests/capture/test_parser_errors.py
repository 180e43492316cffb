"""An exception out of a parser ends that flow's inspection, not the offline run.

Parsers must not raise on any input (the fuzzers hunt for the inputs that make them); when one
does, the analysis keeps every record written so far, names the exception and where it was
raised in an anomaly on the flow, counts it, and goes on with the other flows. No shipped parser
is known to raise, so the test makes one raise on purpose (a stand-in: the only mock here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import inspector.protocols.triton_grpc as triton_grpc
from fuzz.targets import TARGETS
from inspector.analyze import Analyzer
from inspector.capture.decode import PacketDecoder
from inspector.capture.flows import FlowTable

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


def _decoder_failing_on(number: int):
    original = PacketDecoder.decode

    def decode(self, frame):
        if frame.number == number:
            raise IndexError("a decoder bug")
        return original(self, frame)

    return decode


def test_a_frame_the_decoder_or_flow_table_fails_on_is_reported_and_the_run_goes_on(monkeypatch):
    clean, _ = _records(LAB / "mixed.pcap")
    monkeypatch.setattr(PacketDecoder, "decode", _decoder_failing_on(40))
    records, analyzer = _records(LAB / "mixed.pcap")
    failures = [r for r in records if r["event_type"] == "anomaly" and r["anomaly"]["event"] == "parser_error"]
    assert [(r["anomaly"]["layer"], r["anomaly"]["type"], r["anomaly"]["packet"]) for r in failures] == [
        ("inspector", "decode", 40)]
    assert "IndexError at test_parser_errors.py:" in failures[0]["anomaly"]["message"]
    assert analyzer.stats.detection["frame_errors"] == 1 and analyzer.stats.packets == 2851
    flows = [r for r in records if r["event_type"] == "flow"]
    assert len(flows) == len([r for r in clean if r["event_type"] == "flow"])

    original = FlowTable.packet

    def packet(self, p):
        if p.number in (41, 42):
            raise KeyError("a flow table bug")
        return original(self, p)

    monkeypatch.setattr(FlowTable, "packet", packet)
    records, analyzer = _records(LAB / "mixed.pcap")
    assert analyzer.stats.detection["frame_errors"] == 3  # frame 40 in the decoder, 41 and 42 in the table
    assert [r["anomaly"]["packet"] for r in records if r["event_type"] == "anomaly"
            and r["anomaly"]["event"] == "parser_error"] == [40, 41, 42]


def test_workers_report_a_failing_frame_once_as_one_process_does():
    """In a child process: the test process has threads, which a fork must not inherit."""
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from inspector.analyze import Analyzer
from inspector.capture.decode import PacketDecoder
from inspector.parallel import ParallelAnalyzer

original = PacketDecoder.decode
def decode(self, frame):
    if frame.number == 40:
        raise IndexError("a decoder bug")
    return original(self, frame)
PacketDecoder.decode = decode
capture = Path({str(LAB / "mixed.pcap")!r})
one, many = [], []
Analyzer(one.append).analyze_file(capture)
ParallelAnalyzer(many.append, 2, shard="flows").analyze_files([capture])
failures = sum(r["event_type"] == "anomaly" and r["anomaly"]["event"] == "parser_error" for r in many)
print(many == one, failures)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "1"], done.stdout + done.stderr


def test_without_containment_a_failing_frame_ends_the_run(monkeypatch):
    monkeypatch.setattr(PacketDecoder, "decode", _decoder_failing_on(40))
    with pytest.raises(IndexError):
        Analyzer(lambda record: None, contain_errors=False).analyze_file(LAB / "mixed.pcap")


def test_a_failure_on_every_frame_ends_the_run_after_a_hundred(monkeypatch):
    def decode(self, frame):
        raise IndexError("broken for every frame")

    monkeypatch.setattr(PacketDecoder, "decode", decode)
    records: list[dict] = []
    with pytest.raises(IndexError):
        Analyzer(records.append).analyze_file(LAB / "mixed.pcap")
    assert sum(r["event_type"] == "anomaly" for r in records) == 100  # the ones skipped before it stopped
