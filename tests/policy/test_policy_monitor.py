"""PolicyMonitor: one check per flow and protocol, flows without transactions at their end,
policy records, bounded state."""

from __future__ import annotations

from inspector.live.flowinfo import flow_info
from inspector.policy import PolicyMonitor, load_policy_text
from inspector.records import base_record

POLICY = load_policy_text("""\
name: unit
default: deny
zones:
  - {name: training, plane: data, cidrs: [10.10.0.0/16]}
  - {name: storage, plane: data, cidrs: [10.40.0.0/24]}
rules:
  - {name: collectives, from: training, to: training, protocols: [tcpstore]}
  - {name: no-ssh, action: deny, from: any, to: storage, ports: [22]}
  - {name: pulls, from: training, to: storage, protocols: [s3]}
""", "unit.yaml")


def flow(monitor: PolicyMonitor, src: str, dest: str, port: int, started: float = 1.0, app_proto: str = ""):
    info = flow_info((src, 40000), (dest, port), started, app_proto=app_proto)
    info.zones = monitor.zones(info.src_text, info.dest_text)
    return info


def transaction(info, event_type: str, tx_id: int = 0, **objects) -> dict:
    record = base_record(info, event_type, 2.0)
    record[event_type] = {}
    record.update(objects)
    record["tx_id"] = tx_id
    return record


def test_each_flow_is_checked_once_per_protocol():
    monitor = PolicyMonitor(POLICY)
    info = flow(monitor, "10.10.0.3", "10.40.0.9", 9000, app_proto="http")
    first = monitor.check_record(transaction(info, "s3", http={}))
    assert (first.from_zone, first.to_zone, first.app_proto, first.allowed, first.record) == (
        "training", "storage", "s3", True, None)
    assert monitor.check_record(transaction(info, "s3", 1, http={})) is None
    second = monitor.check_record(transaction(info, "http", 2))
    assert second.allowed is False and second.record["policy"]["app_proto"] == "http"
    assert monitor.check_record(transaction(info, "http", 3)) is None
    assert monitor.check_flow_end(info, 3.0) is None  # it had transactions: nothing more
    assert (monitor.flows_checked, monitor.flows_denied) == (2, 1)
    assert {k: (c.allowed, c.denied, dict(c.rules)) for k, c in monitor.cells.items()} == {
        ("training", "storage", "s3"): (1, 0, {"pulls": 1}),
        ("training", "storage", "http"): (0, 1, {"": 1})}


def test_the_policy_record():
    monitor = PolicyMonitor(POLICY)
    info = flow(monitor, "203.0.113.9", "10.40.0.9", 22, app_proto="failed")
    check = monitor.check_flow_end(info, 5.5)
    assert check.record == {
        "timestamp": "1970-01-01T00:00:05.500000+0000", "event_type": "policy", "flow_id": info.flow_id,
        "community_id": info.community_id, "src_ip": "203.0.113.9", "src_port": 40000, "dest_ip": "10.40.0.9",
        "dest_port": 22, "proto": "TCP", "app_proto": "failed", "src_zone": "outside", "dest_zone": "storage",
        "policy": {"verdict": "denied", "name": "unit", "rule": "no-ssh", "default": "deny",
                   "from_zone": "outside", "to_zone": "storage", "to_plane": "data", "app_proto": "failed",
                   "port": 22, "reason": "rule 'no-ssh' denies outside -> storage failed on port 22"}}
    assert monitor.violations.most_common() == [
        (("203.0.113.9", "10.40.0.9", 22, "outside", "storage", "failed", "no-ssh"), 1)]


def test_flows_without_transactions_are_checked_at_their_end_as_failed():
    monitor = PolicyMonitor(POLICY)
    info = flow(monitor, "10.10.0.3", "10.10.0.4", 29500)
    check = monitor.check_flow_end(info, 2.0)
    assert (check.app_proto, check.allowed) == ("failed", False)
    icmp = flow_info(("10.10.0.3", 8), ("10.10.0.4", 0), 1.0, proto=1)
    assert monitor.check_flow_end(icmp, 2.0).record["policy"].get("port") is None


def test_records_without_flow_or_zones_are_not_checked():
    monitor = PolicyMonitor(POLICY)
    assert monitor.check_record(base_record(None, "http", 1.0)) is None
    info = flow_info(("10.10.0.3", 40000), ("10.40.0.9", 9000), 1.0)
    info.zones = ("training", None)  # live: the upstream's address not known yet
    assert monitor.check_record(transaction(info, "s3", http={})) is None
    info.zones = ("training", "storage")
    assert monitor.check_record(transaction(info, "s3", http={})).allowed is True  # checked once known


def test_per_flow_state_and_itemised_violations_are_bounded():
    monitor = PolicyMonitor(POLICY, max_flows=2, max_violations=1)
    flows = [flow(monitor, f"10.10.0.{n}", "10.40.0.9", 80, started=n) for n in range(3)]
    for info in flows:
        assert monitor.check_record(transaction(info, "http")).allowed is False
    assert monitor.flows_evicted == 1
    assert monitor.check_record(transaction(flows[0], "http", 1)) is not None  # forgotten: checked again
    # the first violating client is itemised (twice now), the other two only counted
    assert list(monitor.violations.values()) == [2] and monitor.violations_untracked == 2
