"""Offline counters in Prometheus text format, for node-exporter's textfile collector.

`inspector analyze --metrics-textfile /var/lib/node_exporter/textfile/inspector.prom` writes, at
the end of a run, the run's counters with the live exporter's metric names where they mean the
same thing (inspector.live.metrics.Metrics builds them, so the names cannot drift):

| metric | labels | offline meaning |
|---|---|---|
| inspector_transactions_total, inspector_requests_total | protocol | transaction records |
| inspector_alerts_total | sid, action | alerts (action is always `allowed` offline) |
| inspector_parse_anomalies_total | layer, event | anomaly records (decode, stream and parser) |
| inspector_eve_records_total | event_type | EVE records written |
| inspector_rules_loaded, inspector_rule_info | | the rule set used |
| inspector_policy_flows_total | from_zone, to_zone, app_proto, verdict | policy checks |

and what only a capture run has:

| metric | labels | |
|---|---|---|
| inspector_offline_packets_total | | packets read |
| inspector_offline_bytes_total | | frame bytes read |
| inspector_offline_dropped_total | | packets the captures say were dropped before being written (pcapng statistics) |
| inspector_offline_flows_total | app_proto | flows, by protocol (transport name when none) |
| inspector_offline_captures_total | status | capture files read whole (`ok`) or `damaged` |
| inspector_offline_decoder_total | counter | the EVE `stats` record's `decoder` counters |
| inspector_offline_tcp_total | counter | its `tcp` counters, with `flows_evicted`, `flows_timed_out` |
| inspector_offline_app_layer_total | counter | its `app_layer` counters (only those not zero) |
| inspector_offline_detect_total | counter | its `detect` counters (the rule engine's; not `rules_loaded`) |
| inspector_offline_run_seconds | | wall time of the run |
| inspector_offline_last_run_timestamp_seconds | | when the run ended (Unix time) |

The file holds one run's totals and is replaced atomically (written aside, then renamed), as
the textfile collector requires; the live-only metrics (blocks, latency, rate-limit backend ...)
are left out rather than written as zeros.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile
from prometheus_client.metrics import MetricWrapperBase

from inspector.live.metrics import Metrics
from inspector.runstats import detect_object

#: Attributes of inspector.live.metrics.Metrics an offline run fills (the rest are live-only).
SHARED_METRICS = ("requests", "transactions", "alerts", "anomalies", "eve_records", "rules_loaded", "rule_info",
                  "policy_flows")


def offline_registry(stats: Any, *, elapsed: float, rules: Iterable[Any] = (), policy: Any = None,
                     now: float | None = None) -> CollectorRegistry:
    """A registry holding one offline run's counters (`stats`: inspector.analyze.RunStats;
    `policy`: the run's PolicyMonitor, if any)."""
    metrics = Metrics()
    registry = metrics.registry
    for name, value in list(vars(metrics).items()):
        if isinstance(value, MetricWrapperBase) and name not in SHARED_METRICS:
            registry.unregister(value)
    for protocol, count in stats.transactions.items():
        metrics.transactions.labels(protocol).inc(count)
        metrics.requests.labels(protocol).inc(count)
    for (sid, _signature), count in stats.alerts.items():
        metrics.alerts.labels(str(sid), "allowed").inc(count)
    for name, count in stats.anomalies.items():
        layer, _, event = name.partition(".")
        metrics.anomalies.labels(layer, event).inc(count)
    for event_type, count in stats.records.items():
        metrics.eve_records.labels(event_type).inc(count)
    metrics.set_rules(rules)
    if policy is not None:
        for (from_zone, to_zone, app_proto), cell in policy.cells.items():
            if cell.allowed:
                metrics.policy_flows.labels(from_zone, to_zone, app_proto, "allowed").inc(cell.allowed)
            if cell.denied:
                metrics.policy_flows.labels(from_zone, to_zone, app_proto, "denied").inc(cell.denied)

    Counter("inspector_offline_packets", "Packets read from captures.", registry=registry).inc(stats.packets)
    Counter("inspector_offline_bytes", "Frame bytes read from captures.", registry=registry).inc(stats.frame_bytes)
    Counter("inspector_offline_dropped", "Packets the captures say their capturing host dropped (pcapng statistics).",
            registry=registry).inc(stats.dropped)
    flows = Counter("inspector_offline_flows", "Flows, by application protocol.", ["app_proto"], registry=registry)
    for app_proto, count in stats.flows_by_app.items():
        flows.labels(app_proto).inc(count)
    captures = Counter("inspector_offline_captures", "Capture files read whole (ok) or damaged.", ["status"],
                       registry=registry)
    captures.labels("ok").inc(sum(1 for f in stats.files if not f.error))
    captures.labels("damaged").inc(sum(1 for f in stats.files if f.error))
    for name, help_text, counts in (
            ("inspector_offline_decoder", "Packet decoder counters (frames not used, fragments ...).", stats.decode),
            ("inspector_offline_tcp", "TCP reassembly and flow table counters (gaps, evictions ...).", stats.tcp),
            ("inspector_offline_app_layer", "Stream router counters (protocols detected, flows not parsed, TLS).",
             stats.detection)):
        family = Counter(name, help_text, ["counter"], registry=registry)
        for counter, count in sorted(counts.items()):
            if count:
                family.labels(counter).inc(count)
    detect = detect_object(stats)
    if detect is not None:
        family = Counter("inspector_offline_detect", "Rule engine counters (matches, alerts suppressed by the site "
                         "config, rate windows).", ["counter"], registry=registry)
        for counter, count in sorted(detect.items()):
            if counter != "rules_loaded":
                family.labels(counter).inc(count)
    Gauge("inspector_offline_run_seconds", "Wall time of the run.", registry=registry).set(elapsed)
    Gauge("inspector_offline_last_run_timestamp_seconds", "When the run ended (Unix time).",
          registry=registry).set(time.time() if now is None else now)
    return registry


def write_textfile(path: str | Path, stats: Any, *, elapsed: float, rules: Iterable[Any] = (), policy: Any = None,
                   now: float | None = None) -> None:
    """Write the run's counters to `path` (atomically: a temporary file renamed over it)."""
    registry = offline_registry(stats, elapsed=elapsed, rules=rules, policy=policy, now=now)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(target), registry)
