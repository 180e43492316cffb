"""`analyze --metrics-textfile`: an offline run's counters in Prometheus text format, under the
live exporter's names where they mean the same thing."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from inspector.analyze import Analyzer, expand_paths
from inspector.cli import main
from inspector.engine import Engine
from inspector.live.metrics import Metrics
from inspector.policy import PolicyMonitor, load_policy
from inspector.rules import load_rules
from inspector.sinks.textfile import SHARED_METRICS, offline_registry, write_textfile

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "signatures" / "policy_flow_not_allowed" / "positive"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_run_s_counters_in_text_format(tmp_path):
    ruleset = load_rules([REPO / "signatures" / "policy"])
    monitor = PolicyMonitor(load_policy(FIXTURE / "policy.yaml"))
    analyzer = Analyzer(lambda record: None, engine=Engine(ruleset), policy=monitor)
    analyzer.analyze_file(FIXTURE / "input.pcap")
    path = tmp_path / "textfile" / "inspector.prom"
    write_textfile(path, analyzer.stats, elapsed=0.25, rules=ruleset.rules, policy=monitor, now=1767225600.0)
    got = samples(path.read_text())
    packets = analyzer.stats.packets
    assert got == {
        ("inspector_requests_total", (("protocol", "tcpstore"),)): 8.0,
        ("inspector_transactions_total", (("protocol", "tcpstore"),)): 8.0,
        ("inspector_alerts_total", (("action", "allowed"), ("sid", "4600001"))): 1.0,
        ("inspector_eve_records_total", (("event_type", "tcpstore"),)): 8.0,
        ("inspector_eve_records_total", (("event_type", "policy"),)): 1.0,
        ("inspector_eve_records_total", (("event_type", "alert"),)): 1.0,
        ("inspector_eve_records_total", (("event_type", "flow"),)): 2.0,
        ("inspector_rules_loaded", ()): 1.0,
        ("inspector_rule_info", (("level", "high"), ("rule_action", "alert"), ("severity", "2"), ("sid", "4600001"),
                                 ("signature", "Flow not allowed by the segmentation policy"))): 1.0,
        ("inspector_policy_flows_total", (("app_proto", "tcpstore"), ("from_zone", "inference"),
                                          ("to_zone", "training"), ("verdict", "denied"))): 1.0,
        ("inspector_policy_flows_total", (("app_proto", "tcpstore"), ("from_zone", "training"),
                                          ("to_zone", "training"), ("verdict", "allowed"))): 1.0,
        ("inspector_offline_packets_total", ()): float(packets),
        ("inspector_offline_bytes_total", ()): float(analyzer.stats.frame_bytes),
        ("inspector_offline_dropped_total", ()): 0.0,
        ("inspector_offline_flows_total", (("app_proto", "tcpstore"),)): 2.0,
        ("inspector_offline_captures_total", (("status", "ok"),)): 1.0,
        ("inspector_offline_captures_total", (("status", "damaged"),)): 0.0,
        ("inspector_offline_app_layer_total", (("counter", "app_tcpstore"),)): 2.0,
        ("inspector_offline_detect_total", (("counter", "alert"),)): 1.0,  # the stats record's detect object
        ("inspector_offline_detect_total", (("counter", "matches"),)): 1.0,
        ("inspector_offline_run_seconds", ()): 0.25,
        ("inspector_offline_last_run_timestamp_seconds", ()): 1767225600.0,
    }
    assert packets > 20 and not list(tmp_path.joinpath("textfile").glob("*.tmp*"))  # renamed into place


def test_shared_names_come_from_the_live_exporter_and_live_only_ones_stay_out():
    live = {family.name for family in Metrics().registry.collect()}
    stats = Analyzer(lambda record: None).stats
    offline = {family.name for family in offline_registry(stats, elapsed=0.0).collect()}
    shared = {getattr(Metrics(), name)._name for name in SHARED_METRICS}
    assert offline & live == shared
    assert offline - live == {"inspector_offline_packets", "inspector_offline_bytes", "inspector_offline_dropped",
                              "inspector_offline_flows",
                              "inspector_offline_captures", "inspector_offline_decoder", "inspector_offline_tcp",
                              "inspector_offline_app_layer", "inspector_offline_run_seconds",
                              "inspector_offline_last_run_timestamp_seconds"}
    assert "inspector_blocks" in live - offline and "inspector_ratelimit_backend_up" in live - offline


def test_analyze_option(tmp_path):
    path = tmp_path / "run.prom"
    assert main(["analyze", str(REPO / "pcaps" / "core"), "--no-rules", "-q", "--eve", str(tmp_path / "e.json"),
                 "--metrics-textfile", str(path)]) == 0
    got = samples(path.read_text())
    assert got[("inspector_transactions_total", (("protocol", "grpc"),))] == 1.0
    captures = len(expand_paths([REPO / "pcaps" / "core"]))
    assert got[("inspector_offline_captures_total", (("status", "ok"),))] == captures
    assert got[("inspector_rules_loaded", ())] == 0.0
