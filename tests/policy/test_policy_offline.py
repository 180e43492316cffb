"""The policy in the offline pipeline, over every shipped capture: zones on every record of a
flow, one policy record per flow and protocol not allowed, where it belongs in the output."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from inspector.analyze import Analyzer, expand_paths
from inspector.policy import PolicyMonitor, load_policy_text
from inspector.policy.zones import ZoneMap

REPO = Path(__file__).resolve().parents[2]
CAPTURES = expand_paths([REPO / "pcaps", REPO / "tests" / "signatures"])
TRANSACTIONS_NOT = {"alert", "anomaly", "flow", "policy"}

POLICY = load_policy_text("""\
name: shipped-captures
default: deny
zones:
  - {name: clients, plane: data, cidrs: [10.10.0.0/16, "fd00:10::/48"]}
  - {name: inference, plane: data, cidrs: [10.20.0.0/16, "fd00:20::/48"]}
  - {name: training, plane: data, cidrs: [10.9.0.0/24]}
  - {name: loopback, plane: control, cidrs: [127.0.0.0/8, "::1/128"]}
rules:
  - {name: serving, from: clients, to: inference, protocols: [triton, grpc]}
  - {name: collectives, from: training, to: training, protocols: [tcpstore, nccl]}
  - {name: lab, from: loopback, to: loopback}
""", "shipped.yaml")


@pytest.fixture(scope="module")
def run() -> tuple[list[dict], PolicyMonitor]:
    records: list[dict] = []
    monitor = PolicyMonitor(POLICY)
    analyzer = Analyzer(records.append, policy=monitor)
    for path in CAPTURES:
        analyzer.analyze_file(path)
    return records, monitor


def test_every_record_of_a_flow_carries_the_zones_of_its_addresses(run):
    records, _ = run
    table = ZoneMap(POLICY.zones, POLICY.unknown_zone)
    with_flow = [r for r in records if "flow_id" in r]
    assert len(with_flow) > 1000
    assert [r for r in with_flow if (r["src_zone"], r["dest_zone"]) != (table.lookup(r["src_ip"]),
                                                                       table.lookup(r["dest_ip"]))] == []
    assert {r["src_zone"] for r in with_flow} == {"clients", "inference", "training", "loopback", "outside"}
    assert all("src_zone" not in r and "dest_zone" not in r for r in records if "flow_id" not in r)


def test_without_a_policy_there_are_no_zone_fields():
    records: list[dict] = []
    analyzer = Analyzer(records.append)
    for path in expand_paths([REPO / "pcaps" / "core"]):
        analyzer.analyze_file(path)
    assert records and not any("src_zone" in r or "dest_zone" in r or r["event_type"] == "policy" for r in records)


def test_one_policy_record_per_flow_and_protocol_right_after_what_triggered_it(run):
    records, monitor = run
    policy_at = [i for i, r in enumerate(records) if r["event_type"] == "policy"]
    keys = [(records[i]["flow_id"], records[i]["policy"]["app_proto"]) for i in policy_at]
    assert len(keys) == len(set(keys)) == monitor.flows_denied > 20
    for i in policy_at:
        record = records[i]
        before = next(r for r in reversed(records[:i]) if r["event_type"] != "alert")
        after_flow = next((j for j, r in enumerate(records) if r["event_type"] == "flow"
                           and r["flow_id"] == record["flow_id"]), None)
        if "tx_id" in record:  # checked at the flow's first transaction of that protocol
            assert (before["flow_id"], before["event_type"], before["tx_id"]) == (
                record["flow_id"], record["policy"]["app_proto"], record["tx_id"])
            first = next(r for r in records if r.get("flow_id") == record["flow_id"]
                         and r["event_type"] == record["policy"]["app_proto"])
            assert first is before
        else:  # no transaction at all: checked at the flow's end, before its flow record
            assert after_flow == i + 1
            assert not any(r.get("flow_id") == record["flow_id"] and r["event_type"] not in TRANSACTIONS_NOT
                           for r in records)


def test_checks_count_each_transaction_protocol_of_a_flow_and_each_flow_without_one(run):
    records, monitor = run
    flows = {r["flow_id"]: r for r in records if r["event_type"] == "flow"}
    protocols: dict[int, set[str]] = {}
    for r in records:
        if r["event_type"] not in TRANSACTIONS_NOT and "flow_id" in r:
            protocols.setdefault(r["flow_id"], set()).add(r["event_type"])
    expected = Counter()
    for flow_id, flow in flows.items():
        for protocol in protocols.get(flow_id) or {flow.get("app_proto") or "failed"}:
            expected[(flow["src_zone"], flow["dest_zone"], protocol)] += 1
    assert {k: c.allowed + c.denied for k, c in monitor.cells.items()} == dict(expected)


def test_the_core_captures_matrix():
    monitor = PolicyMonitor(POLICY)
    analyzer = Analyzer(lambda record: None, policy=monitor)
    for path in expand_paths([REPO / "pcaps" / "core"]):
        analyzer.analyze_file(path)
    # 8 Triton and 1 plain gRPC connections from clients are allowed; the OpenAI-style LLM call and
    # two plain HTTP requests to the model server are not (the policy allows triton and grpc only)
    assert {k: (c.allowed, c.denied, dict(c.rules)) for k, c in monitor.cells.items()} == {
        ("clients", "inference", "triton"): (8, 0, {"serving": 8}),
        ("clients", "inference", "grpc"): (1, 0, {"serving": 1}),
        ("clients", "inference", "http"): (0, 2, {"": 2}),
        ("clients", "inference", "llm"): (0, 1, {"": 1})}
