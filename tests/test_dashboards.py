"""deploy/grafana and deploy/prometheus: the dashboard loads as Grafana expects it, and every
metric (and label) a dashboard panel or an alerting rule queries exists in the live exporter
(inspector.live.metrics) or the offline textfile (inspector.sinks.textfile)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from inspector.analyze import Analyzer
from inspector.live.metrics import Metrics
from inspector.sinks.textfile import offline_registry

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "inspector-dashboard.json"
PROMETHEUS = REPO / "deploy" / "prometheus"
METRIC = re.compile(r"\binspector_[a-z0-9_]+\b")
GROUPING = re.compile(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
#: Labels Prometheus attaches to every series it scrapes (prometheus.yml relabels add the rest).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "app", "deployment"}


def exported() -> dict[str, set[str]]:
    """Every sample name either exporter can write -> its label names."""
    names: dict[str, set[str]] = {}
    live = Metrics()
    analyzer = Analyzer(lambda r: None)
    analyzer.analyze_file(REPO / "pcaps" / "core" / "grpc.pcap")  # labelled offline series need samples
    registries = [live.registry, offline_registry(analyzer.stats, elapsed=0.0)]
    wrappers = {w._name: w for w in vars(live).values() if hasattr(w, "_labelnames")}
    for registry in registries:
        for family in registry.collect():
            suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[family.type]
            labels = set(wrappers[family.name]._labelnames) if family.name in wrappers else set()
            labels |= {key for sample in family.samples for key in sample.labels}
            for suffix in suffixes:
                extra = {"le"} if suffix == "_bucket" else set()
                names.setdefault(family.name + suffix, set()).update(labels | extra)
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS / "inspector-alerts.yml").read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


QUERIES = dashboard_queries() + alert_queries()


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[f"{w}:{i}" for i, (w, _) in enumerate(QUERIES)])
def test_every_queried_metric_and_label_exists(where, expr):
    names = exported()
    used = set(METRIC.findall(expr))
    assert used and used <= set(names), f"{where}: unknown metric(s) {sorted(used - set(names))}"
    labels = set().union(*(names[n] for n in used)) | TARGET_LABELS
    for group in GROUPING.findall(expr):
        wanted = {label.strip() for label in group.split(",") if label.strip()}
        assert wanted <= labels, f"{where}: unknown label(s) {sorted(wanted - labels)} in {expr}"
    matched = set(MATCHER.findall(expr))
    assert matched <= labels, f"{where}: unknown label(s) {sorted(matched - labels)}"
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")


def test_the_dashboard_covers_what_the_issue_asks_for():
    text = " ".join(expr for _, expr in dashboard_queries())
    for metric in ("inspector_alerts_total", "inspector_rule_info", "inspector_blocks_total",
                   "inspector_transactions_total", "inspector_inspection_seconds_bucket",
                   "inspector_parse_anomalies_total", "inspector_policy_flows_total"):
        assert metric in text
    assert "group_left (level)" in text  # alerts by severity: the rule's level joined on sid


def test_the_dashboard_json_is_a_grafana_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["id"] is None and dashboard["uid"] == "inspector-overview"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert METRIC.findall(variables["job"]["query"]["query"]) == ["inspector_eve_records_total"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y"))
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["y"] >= 0
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "table", "bargauge"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["refId"] and t["expr"] and t["datasource"] == panel["datasource"]
                                        for t in panel["targets"])
        assert all('job=~"$job"' in t["expr"] for t in panel["targets"])
    # no two panels overlap
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, panel["title"]
        cells |= area


def test_the_prometheus_config():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["inspector-sidecar", "inspector-static",
                                                                       "inspector-offline"]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file()
    sidecar = config["scrape_configs"][0]
    keep = [r for r in sidecar["relabel_configs"] if r.get("action") == "keep"]
    assert [r["source_labels"] for r in keep] == [["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                                                 ["__meta_kubernetes_pod_container_port_name"]]
    # the Kubernetes example names its metrics port as the scrape config expects
    manifest = (REPO / "deploy" / "kubernetes" / "triton-sidecar.yaml").read_text()
    assert "{name: metrics, containerPort: 9464}" in manifest and 'prometheus.io/scrape: "true"' in manifest
